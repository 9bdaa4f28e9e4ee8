"""`ppar audit`: do face detectors still find faces after anonymization, and do they still look
like the person?

The original and the anonymized video are decoded side by side. Every frame goes through each
detector: CenterFace (at the guard's threshold by default; lower is stricter) and dlib's HOG
detector, a second judge of a different kind. A frame leaks for a detector when it finds a face
after anonymization where it found one before: an output box with at least 30% of its area inside
an input face box. Detections elsewhere (CenterFace at a low threshold firing on a chair in a
half-black frame) are counted as `face_frames_after`, not as leaks.

Identity: on every ``identity_stride``-th frame, the first detector's confident input faces
(CenterFace: score 0.5 or more, since a chair kept unchanged would match itself) of at least 40 px
(below that dlib's descriptor tells people apart poorly) are described by dlib's face descriptor in
the original and at the same place in the output. A match (distance below 0.6, dlib's same-person
threshold) means what is left there still identifies the person, whether or not a detector fires
on it. A flat output region (black or mean fill: pixel standard deviation under 8) carries no
identity and counts as `blank`: measured, the descriptor of a black square lies within 0.6 of a
blurry 50 px face.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ppar_cli.faces.detectors import (
    SAME_PERSON,
    FaceDescriptor,
    FacesUnavailable,
    check_threshold,
    load_detectors,
)
from ppar_cli.media.decode import FrameReader
from ppar_cli.media.probe import VideoError, VideoInfo, probe
from ppar_cli.pipeline.jobs import plan_jobs


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


def _region(frame: np.ndarray, box: np.ndarray) -> np.ndarray:
    x0, y0, x1, y1 = np.clip(box[:4].round().astype(int), 0, [frame.shape[1], frame.shape[0]] * 2)
    return frame[y0:y1, x0:x1]


def _frame_pairs(original: VideoInfo, anonymized: Path):
    a = (f for chunk in FrameReader(original, backend="ffmpeg").chunks(32) for f in chunk)
    b = (f for chunk in FrameReader(probe(anonymized), backend="ffmpeg").chunks(32) for f in chunk)
    n_a = n_b = 0
    for fa, fb in itertools.zip_longest(a, b):
        n_a, n_b = n_a + (fa is not None), n_b + (fb is not None)
        if fa is not None and fb is not None:
            yield fa, fb
    if n_a != n_b:
        raise VideoError(f"{anonymized}: {n_b} frames, the original {original.path} has {n_a}")


MIN_FACE = 40  # pixels, the shorter side of the faces the identity check describes
FLAT = 8.0  # pixel standard deviation under which an output region is blank


def audit_pair(original: Path, anonymized: Path, detectors: list, identity: FaceDescriptor | None = None,
               identity_stride: int = 5, progress: Callable[[str, int | None], Callable[[], None]] | None = None) -> dict:
    info = probe(original)
    advance = progress(original.name, info.listed_frames()) if progress is not None else lambda: None
    per = {d.name: {"before": [], "after": [], "leaked": [], "confident": []} for d in detectors}
    checked = matched = blank = 0
    distances: list[float] = []
    frames = 0
    for i, (before, after) in enumerate(_frame_pairs(info, anonymized)):
        frames += 1
        advance()
        faces_in = []
        for d in detectors:
            b, a = d(before), d(after)
            per[d.name]["before"].append(len(b))
            per[d.name]["after"].append(len(a))
            leaked = len(a) > 0 and _overlaps(a, b)
            per[d.name]["leaked"].append(leaked)
            per[d.name]["confident"].append(leaked and _overlaps(a, b[b[:, 4] >= d.confident]))
            faces_in.append(b)
        if identity is not None and i % identity_stride == 0:
            f = faces_in[0]  # the first detector's confident, large enough faces
            boxes = f[(f[:, 4] >= detectors[0].confident) & (np.minimum(f[:, 2] - f[:, 0], f[:, 3] - f[:, 1]) >= MIN_FACE)]
            if len(boxes):
                flat = np.array([_region(after, b).std() < FLAT for b in boxes])
                d = np.linalg.norm(identity.describe(before, boxes) - identity.describe(after, boxes), axis=1)
                checked, blank = checked + len(d), blank + int(flat.sum())
                matched += int(((d < SAME_PERSON) & ~flat).sum())
                distances += d[~flat].tolist()
    if frames == 0:
        raise VideoError(f"{original}: no decodable frames")
    rec = {"original": str(original), "anonymized": str(anonymized), "frames": frames, "detectors": {}}
    for d in detectors:
        before, after, leaked, confident = (np.array(per[d.name][k]) for k in ("before", "after", "leaked", "confident"))
        rec["detectors"][d.name] = {
            "threshold": getattr(d, "threshold", None), "max_side": d.max_side,
            "face_frames_before": int((before > 0).sum()), "face_frames_after": int((after > 0).sum()),
            "leaked_frames": int(leaked.sum()), "leak_rate": float(leaked.sum() / max((before > 0).sum(), 1)),
            "leaked_frame_indices": np.flatnonzero(leaked).tolist(),
            # leaks of input boxes the detector is sure of (CenterFace: 0.5), apart from low-score boxes
            # on hands and furniture that a low threshold also finds
            "confident_leaked_frames": int(confident.sum()),
            "faces_per_frame": {"before": before.tolist(), "after": after.tolist()}}
    rec["leak_rate"] = max(r["leak_rate"] for r in rec["detectors"].values())
    if identity is not None:
        rec["identity"] = {"checked": checked, "blank": blank, "matches": matched, "threshold": SAME_PERSON,
                           "min_distance": round(min(distances), 4) if distances else None}
    scores = anonymized.with_suffix(".json")
    if scores.exists():
        with contextlib.suppress(ValueError, KeyError):
            rec["kept_fraction"] = json.loads(scores.read_text())["summary"]["kept_fraction"]
    return rec


def audit(original: str | os.PathLike | Sequence[str | os.PathLike], anonymized: str | os.PathLike, threshold: float = 0.1,
          detectors: str = "all", identity: str = "auto", identity_stride: int = 5,
          max_side: int | None = None, progress: Callable[[str, int | None], Callable[[], None]] | None = None) -> list[dict]:
    """One record per video, paired as `ppar anonymize` names its outputs (a folder's by relative
    path, several inputs' in the folder ``anonymized``: :func:`~ppar_cli.pipeline.jobs.plan_jobs`).
    ``progress(stage, total)`` returns a callback advanced once per frame of that video.

    detectors: comma-separated names or "all" (every installed one); threshold is CenterFace's.
    identity: "auto" (when face-recognition-models is installed), "on" or "off".
    max_side: CenterFace sees frames at most this long; None (the default): at full size, so the
    audit finds the small faces the guard, at 640 px, can miss.
    """
    check_threshold(threshold, "threshold")
    dets = load_detectors([n.strip() for n in detectors.split(",")], threshold, max_side)
    ident = None
    if identity != "off":
        try:
            ident = FaceDescriptor()
        except FacesUnavailable:
            if identity == "on":
                raise
    records = []
    for job in plan_jobs(original, anonymized, writes=False):  # the pairing `ppar anonymize` wrote
        src, dst = job.src, job.dst
        try:
            if not dst.exists():
                raise VideoError(f"{dst}: no anonymized output for {src}")
            records.append(audit_pair(src, dst, dets, ident, identity_stride, progress))
        except VideoError as e:
            records.append({"original": str(src), "anonymized": str(dst), "error": str(e)})
    return records
