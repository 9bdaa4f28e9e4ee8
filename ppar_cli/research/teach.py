"""Pseudo ground truth on real footage, from pretrained teachers that ship inside packages
(`pip install "ppar[teach]"`; nothing is downloaded): mediapipe's pose (33 keypoints and a person
mask, one person), selfie segmentation (every person near enough) and full-range face detection
(every visible face), and OpenCV's DIS optical flow (code, no weights).

Per frame, at most ``MASK_SIDE`` pixels on the long side:
  privacy  every head: face boxes grown to the whole head (hair, ears, the back of a turned head),
           and the head that pose keypoints 0-10 outline, sized by the shoulders;
  person   pose's mask or the selfie mask, or, for a person only a face detector saw (small people
           far away), a body box below the head;
  action   moving pixels (flow above ``MOTION_PX``) of a person, and of pose's limbs and hands,
           minus privacy: what carries the action, not who does it.
Masks go to ``NAME.masks.npz`` in the synthetic benchmark's format, so one reader trains on both.
The composition (``compose``) is plain NumPy and tested without the teachers.
"""
from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ppar_cli.errors import UsageError, internal_error
from ppar_cli.media.decode import FrameReader
from ppar_cli.media.files import atomic_path, folder_or_new
from ppar_cli.media.probe import VideoError, probe, video_files
from ppar_cli.research.synth import save_masks

MASK_SIDE = 320  # masks at most this long side: ample for a 14x14 grid
TEACH_SIDE = 960  # the teachers look at frames this large: small faces far away need the pixels
FACE_THRESHOLD = 0.2  # CenterFace's: low, as a missed head costs more than a hidden chair
MOTION_PX = 0.6  # flow magnitude, in mask pixels per frame, above which a pixel moves
HEAD_GROW = (0.35, 0.6, 0.25)  # face box grown by these fractions: sides, top (hair), bottom (chin, neck)
LIMBS = [(11, 13), (13, 15), (12, 14), (14, 16), (23, 25), (25, 27), (24, 26), (26, 28), (11, 12), (23, 24),
         (11, 23), (12, 24)]
HANDS = (15, 16, 17, 18, 19, 20, 21, 22)  # wrists and finger keypoints
VISIBLE = 0.5  # pose keypoint visibility above which it counts


@dataclass
class Evidence:
    """What the teachers found in one frame, in mask pixels."""

    faces: np.ndarray  # (k, 4) x0, y0, x1, y1
    keypoints: np.ndarray | None  # (33, 3) x, y, visibility; None when pose found nobody
    pose_mask: np.ndarray | None  # float (H, W) person probability from pose
    selfie_mask: np.ndarray  # float (H, W)
    flow: np.ndarray  # float (H, W) flow magnitude to the previous frame


@dataclass
class Coverage:
    """How often each teacher found someone: the report the issue asks for, per clip and in total."""

    frames: int = 0
    pose: int = 0
    faces: int = 0
    selfie: int = 0
    any_person: int = 0
    per_clip: dict = field(default_factory=dict)


def _ellipse(shape: tuple[int, int], box) -> np.ndarray:
    H, W = shape
    x0, y0, x1, y1 = box
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, max((x1 - x0) / 2, 0.5), max((y1 - y0) / 2, 0.5)
    ys, xs = np.ogrid[:H, :W]
    return ((xs + 0.5 - cx) / rx) ** 2 + ((ys + 0.5 - cy) / ry) ** 2 <= 1


def _segment(shape: tuple[int, int], a, b, width: float) -> np.ndarray:
    """Pixels within width/2 of the segment a-b."""
    H, W = shape
    ys, xs = np.mgrid[:H, :W].astype(np.float32) + 0.5
    ab = np.subtract(b, a, dtype=np.float32)
    t = np.clip(((xs - a[0]) * ab[0] + (ys - a[1]) * ab[1]) / max(float(ab @ ab), 1e-6), 0, 1)
    return (xs - a[0] - t * ab[0]) ** 2 + (ys - a[1] - t * ab[1]) ** 2 <= (width / 2) ** 2


def head_boxes(faces: np.ndarray, keypoints: np.ndarray | None) -> list[tuple[float, float, float, float]]:
    """Whole heads: each face box grown (HEAD_GROW), and pose's head keypoints 0-10 (which also see
    a profile or the back of a head) grown to a head sized from the shoulder width."""
    heads = []
    for x0, y0, x1, y1 in faces:
        w, h = x1 - x0, y1 - y0
        heads.append((x0 - HEAD_GROW[0] * w, y0 - HEAD_GROW[1] * h, x1 + HEAD_GROW[0] * w, y1 + HEAD_GROW[2] * h))
    if keypoints is not None:
        head = keypoints[:11][keypoints[:11, 2] > VISIBLE, :2]
        shoulders = keypoints[[11, 12]]
        if len(head):
            size = np.linalg.norm(shoulders[0, :2] - shoulders[1, :2]) * 0.45 if (shoulders[:, 2] > VISIBLE).all() else 0
            cx, cy = head.mean(0)
            half = max(size, np.ptp(head[:, 0]) * 0.8, np.ptp(head[:, 1]) * 0.8, 4.0)
            heads.append((cx - half, cy - 1.2 * half, cx + half, cy + 0.9 * half))
    return heads


def compose(ev: Evidence, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(privacy, action, person) bool masks of one frame from what the teachers found."""
    privacy = np.zeros(shape, bool)
    heads = head_boxes(ev.faces, ev.keypoints)
    for box in heads:
        privacy |= _ellipse(shape, box)
    person = ev.selfie_mask > 0.5
    if ev.pose_mask is not None:
        person |= ev.pose_mask > 0.5
    for x0, y0, x1, y1 in ev.faces:  # people only a face detector saw: a body below the head
        w, h = x1 - x0, y1 - y0
        body = (x0 - 1.0 * w, y0, x1 + 1.0 * w, y1 + 6.5 * h)
        if not person[int(max(y1, 0)):int(max(y1 + h, 0)), int(max(x0, 0)):int(max(x1, 0))].any():
            person |= _box(shape, body)
    person |= privacy
    moving = ev.flow > MOTION_PX
    limbs = np.zeros(shape, bool)
    kp = ev.keypoints
    if kp is not None:
        width = max(3.0, 0.18 * float(np.linalg.norm(kp[11, :2] - kp[12, :2])))
        for a, b in LIMBS:
            if kp[a, 2] > VISIBLE and kp[b, 2] > VISIBLE:
                limbs |= _segment(shape, kp[a, :2], kp[b, :2], width)
        for i in HANDS:
            if kp[i, 2] > VISIBLE:
                limbs |= _ellipse(shape, (kp[i, 0] - width, kp[i, 1] - width, kp[i, 0] + width, kp[i, 1] + width))
    action = ((person | limbs) & moving) & ~privacy
    return privacy, action, person


def _box(shape: tuple[int, int], box) -> np.ndarray:
    H, W = shape
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    m = np.zeros(shape, bool)
    m[max(y0, 0):max(min(y1, H), 0), max(x0, 0):max(min(x1, W), 0)] = True
    return m


class Teachers:
    """mediapipe's models and OpenCV's flow, one instance per video (pose tracks across frames)."""

    def __init__(self):
        from ppar_cli.faces.detectors import CenterFace, FacesUnavailable

        try:
            import cv2
            import mediapipe as mp

            # CenterFace (the guard's detector) finds the small faces mediapipe's models miss: without
            # it the masks would silently hide fewer heads, so it is required, as the other teachers are
            self.centerface = CenterFace(FACE_THRESHOLD, TEACH_SIDE)
        except (ImportError, FacesUnavailable) as e:
            raise UsageError(f"pseudo-labelling needs the teacher models: pip install 'ppar[teach]' ({e})") from None
        self.cv2, self.mp = cv2, mp
        self.pose = mp.solutions.pose.Pose(static_image_mode=False, model_complexity=1, enable_segmentation=True)
        self.selfie = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=1)
        self.faces = mp.solutions.face_detection.FaceDetection(model_selection=1, min_detection_confidence=0.4)
        self.flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
        self.prev = None

    def __call__(self, big: np.ndarray, small: np.ndarray) -> Evidence:
        """``big``: the frame at TEACH_SIDE for the detectors; ``small``: at MASK_SIDE, the masks' grid."""
        H, W = small.shape[:2]
        big = np.ascontiguousarray(big)
        pose = self.pose.process(big)
        kp = None
        if pose.pose_landmarks is not None:
            kp = np.array([(p.x * W, p.y * H, p.visibility) for p in pose.pose_landmarks.landmark], np.float32)
        faces = []
        for d in self.faces.process(big).detections or []:
            b = d.location_data.relative_bounding_box
            faces.append((b.xmin * W, b.ymin * H, (b.xmin + b.width) * W, (b.ymin + b.height) * H))
        scale = W / big.shape[1]
        faces += [tuple(v * scale for v in box[:4]) for box in self.centerface(big)]
        rgb = np.ascontiguousarray(small)
        gray = self.cv2.cvtColor(rgb, self.cv2.COLOR_RGB2GRAY)
        if self.prev is None:
            mag = np.zeros((H, W), np.float32)
        else:
            f = self.flow.calc(self.prev, gray, None)
            mag = np.hypot(f[..., 0], f[..., 1])
        self.prev = gray
        resize = lambda m: self.cv2.resize(m, (W, H), interpolation=self.cv2.INTER_AREA)  # noqa: E731
        return Evidence(np.array(faces, np.float32).reshape(-1, 4), kp,
                        None if pose.segmentation_mask is None else resize(pose.segmentation_mask),
                        resize(self.selfie.process(big).segmentation_mask), mag)

    def close(self) -> None:
        for m in (self.pose, self.selfie, self.faces):
            m.close()


def pseudolabel_video(src: Path, dst: Path, coverage: Coverage) -> dict:
    """Masks of every frame of ``src`` into ``dst`` (.masks.npz); returns the clip's record."""
    import torch

    from ppar_cli.core.clips import resize_frames

    info = probe(src)

    def fit(side: int) -> tuple[int, int]:
        s = min(1.0, side / max(info.width, info.height))
        return max(1, round(info.height * s)), max(1, round(info.width * s))

    (h, w), big_hw = fit(MASK_SIDE), fit(TEACH_SIDE)
    teachers = Teachers()
    masks: dict[str, list] = {"privacy": [], "action": [], "person": []}
    found = {"frames": 0, "pose": 0, "faces": 0, "selfie": 0, "any_person": 0}
    try:
        for chunk in FrameReader(info, backend="ffmpeg").chunks(16):
            frames = torch.from_numpy(np.ascontiguousarray(chunk))
            big, small = resize_frames(frames, big_hw).numpy(), resize_frames(frames, (h, w)).numpy()
            for b, rgb in zip(big, small):
                ev = teachers(b, rgb)
                p, a, q = compose(ev, (h, w))
                for k, v in zip(masks, (p, a, q)):
                    masks[k].append(v)
                found["frames"] += 1
                found["pose"] += ev.keypoints is not None
                found["faces"] += len(ev.faces) > 0
                found["selfie"] += bool((ev.selfie_mask > 0.5).any())
                found["any_person"] += bool(q.any())
    finally:
        teachers.close()
    if not found["frames"]:
        raise VideoError(f"{src}: no frame decodes")
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_masks(dst, **{k: np.stack(v) for k, v in masks.items()})
    for k, v in found.items():
        setattr(coverage, k, getattr(coverage, k) + v)
    return {"frames": found["frames"], "mask_size": [h, w], **{f"{k}_frames": v for k, v in found.items() if k != "frames"},
            "privacy_share": float(np.mean([m.mean() for m in masks["privacy"]])),
            "action_share": float(np.mean([m.mean() for m in masks["action"]]))}


def split_of(name: str, val_fraction: float) -> str:
    """A stable train/val assignment from the file's relative name (the same on every machine)."""
    return "val" if zlib.crc32(name.encode()) % 1000 < val_fraction * 1000 else "train"


def pseudolabel(inp: Path, out: Path, val_fraction: float = 0.2, progress=None) -> dict:
    """Pseudo masks for every video under ``inp`` into ``out`` (mirrored, NAME.masks.npz), and
    ``out/pseudo.json``: per video its split, frames and teacher coverage, and under "failed" each
    video that could not be labelled, with why (the others go on). Resumes: videos whose masks
    exist are not redone, failed ones are tried again; a rerun with another IN_DIR or --val, which
    would mix two label sets, is refused before any work."""
    inp, out = Path(inp), Path(out)
    if not inp.is_dir():
        raise UsageError(f"{inp}: {'not a folder of videos' if inp.exists() else 'no such file or directory'}")
    folder_or_new(out, "a folder for the masks")
    index_path = out / "pseudo.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {"format": "ppar-pseudo/1", "videos": {}}
    # the videos' folder relative to the masks' (kept beside a checkout, ../shared stays found)
    root = os.path.relpath(inp.resolve(), out.resolve())
    differ = []  # what a rerun changed (runs before 0.3.25 recorded no --val: resumed unchecked)
    if "root" in index and (out / index["root"]).resolve() != inp.resolve():
        differ.append(f"IN_DIR {(out / index['root']).resolve()} there")
    if index.get("val", val_fraction) != val_fraction:
        differ.append(f"--val {index['val']:g} there, {val_fraction:g} now")
    if differ:
        raise UsageError(f"{out}: holds the pseudo labels of another run ({', '.join(differ)}); give the same ones to "
                         f"resume it, or another OUT_DIR")
    failed: dict[str, str] = {}  # this run's: a video failed before is tried again
    index.update(root=root, val=val_fraction, failed=failed)
    coverage = Coverage()
    for src in video_files(inp):
        name = src.relative_to(inp).as_posix()
        dst = out / (name + ".masks.npz")
        if name not in index["videos"] or not dst.exists():
            try:
                index["videos"][name] = {"split": split_of(name, val_fraction), **pseudolabel_video(src, dst, coverage)}
            except VideoError as e:
                failed[name] = str(e)
            except Exception as e:  # a bug: this video fails, the others go on
                failed[name] = f"{src}: {internal_error(e)}"
            index_path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(index_path) as tmp:  # after every video, whole: a rerun resumes, a reader never sees half
                tmp.write_text(json.dumps(index, indent=1))
        if progress:
            progress()
    return index
