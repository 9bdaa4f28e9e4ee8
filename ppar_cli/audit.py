"""`ppar audit`: does a face detector still find faces after anonymization?

Every frame of the original and of the anonymized video goes through the guard's detector at a low
threshold (lower than the guard's own, so the audit is the stricter judge). A frame leaks when a face
is found after anonymization in a frame where one was found before.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .guard import load_centerface
from .video import VIDEO_EXTENSIONS, FrameReader, VideoError, probe


def _face_frames(path: Path, detector, threshold: float, max_side: int) -> np.ndarray:
    """bool per frame: at least one face found."""
    found = []
    for chunk in FrameReader(probe(path)).chunks(32):
        for frame in chunk:
            H, W = frame.shape[:2]
            s = min(1.0, max_side / max(H, W))
            detector.in_shape = (max(32, int(round(W * s))), max(32, int(round(H * s))))
            dets, _ = detector(frame, threshold=threshold)
            found.append(len(dets) > 0)
    return np.array(found, bool)


def audit_pair(original: Path, anonymized: Path, threshold: float = 0.1, max_side: int = 640, detector=None) -> dict:
    detector = detector or load_centerface()
    before = _face_frames(original, detector, threshold, max_side)
    after = _face_frames(anonymized, detector, threshold, max_side)
    if len(before) != len(after):
        raise VideoError(f"{anonymized}: {len(after)} frames, the original {original} has {len(before)}")
    leaked = before & after
    rec = {"original": str(original), "anonymized": str(anonymized), "frames": int(len(before)),
           "detector": "centerface", "threshold": threshold,
           "face_frames_before": int(before.sum()), "face_frames_after": int(after.sum()),
           "leaked_frames": int(leaked.sum()),
           "leak_rate": float(leaked.sum() / max(before.sum(), 1)),
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
