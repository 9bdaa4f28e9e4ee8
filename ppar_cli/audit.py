"""`ppar audit`: does a face detector still find faces after anonymization?

Every frame of the original and of the anonymized video goes through the guard's detector at a low
threshold (lower than the guard's own, so the audit is the stricter judge). A frame leaks when a face
is found after anonymization where one was found before: an output detection overlapping an input
face box (at least 30% of its area inside it). Detections elsewhere in the output (the detector at a
low threshold firing on a chair in a half-black frame) are counted too, but as `face_frames_after`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .guard import detect_faces, load_centerface
from .video import VIDEO_EXTENSIONS, FrameReader, VideoError, probe


def _faces(path: Path, detector, threshold: float, max_side: int) -> list[np.ndarray]:
    """(k, 4) face boxes per frame."""
    return [detect_faces(detector, frame, threshold, max_side)
            for chunk in FrameReader(probe(path), backend="ffmpeg").chunks(32) for frame in chunk]


def _overlaps(after: np.ndarray, before: np.ndarray, min_inside: float = 0.3) -> bool:
    """Does any box of `after` have at least `min_inside` of its area inside a box of `before`?"""
    for a in after:
        area = max((a[2] - a[0]) * (a[3] - a[1]), 1e-6)
        for b in before:
            iw = min(a[2], b[2]) - max(a[0], b[0])
            ih = min(a[3], b[3]) - max(a[1], b[1])
            if iw > 0 and ih > 0 and iw * ih / area >= min_inside:
                return True
    return False


def audit_pair(original: Path, anonymized: Path, threshold: float = 0.1, max_side: int = 640, detector=None) -> dict:
    detector = detector or load_centerface()
    before = _faces(original, detector, threshold, max_side)
    after = _faces(anonymized, detector, threshold, max_side)
    if len(before) != len(after):
        raise VideoError(f"{anonymized}: {len(after)} frames, the original {original} has {len(before)}")
    had = np.array([len(b) > 0 for b in before])
    leaked = np.array([len(a) > 0 and _overlaps(a, b) for a, b in zip(after, before)])
    rec = {"original": str(original), "anonymized": str(anonymized), "frames": len(before),
           "detector": "centerface", "threshold": threshold,
           "face_frames_before": int(had.sum()), "face_frames_after": int(sum(len(a) > 0 for a in after)),
           "leaked_frames": int(leaked.sum()),
           "leak_rate": float(leaked.sum() / max(had.sum(), 1)),
           "leaked_frame_indices": np.flatnonzero(leaked).tolist()[:50]}
    scores = anonymized.with_suffix(".json")
    if scores.exists():
        try:
            rec["kept_fraction"] = json.loads(scores.read_text())["summary"]["kept_fraction"]
        except (ValueError, KeyError):
            pass
    return rec


def audit(original: str | os.PathLike, anonymized: str | os.PathLike, threshold: float = 0.1) -> list[dict]:
    """One record per video; folders are paired by relative path (OUT mirrors IN as .mp4)."""
    original, anonymized = Path(original), Path(anonymized)
    detector = load_centerface()
    if original.is_file():
        return [audit_pair(original, anonymized, threshold, detector=detector)]
    records = []
    for src in sorted(p for p in original.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS):
        dst = anonymized / src.relative_to(original).with_suffix(".mp4")
        try:
            if not dst.exists():
                raise VideoError(f"{dst}: no anonymized output for {src}")
            records.append(audit_pair(src, dst, threshold, detector=detector))
        except VideoError as e:
            records.append({"original": str(src), "anonymized": str(dst), "error": str(e)})
    return records
