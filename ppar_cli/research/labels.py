"""Privacy labels of the field: VP-UCF101 / VP-HMDB51 pickles (read without running pickle code,
every array's size checked before it is allocated) and PA-HMDB51's per-segment JSON."""
from __future__ import annotations

import io
import json
import math
import os
import pickle
from pathlib import Path

import numpy as np

from ppar_cli.core.config import PRIVACY_ATTRIBUTES, pickle_like
from ppar_cli.errors import DataError, reason

# Column order of the VP-UCF101 / VP-HMDB51 label arrays. The publisher does not document it;
# this order follows the STPrivacy paper's list and the columns' positive rates (0.91, 0.60, 0.90, 0.25, 0.25 on VP-UCF101).
VP_ATTRIBUTES = PA_ATTRIBUTES = list(PRIVACY_ATTRIBUTES)

MAX_LABEL_BYTES = 64 * 2**20  # the VP pickles are under 1 MB
MAX_ARRAY_ITEMS = 10**6  # per array; a label row has 5


class _CheckedArray:
    """Stands in for an ndarray while unpickling: its shape, dtype and byte count are checked
    before numpy allocates anything (a 90-byte pickle can ask for a 10^12-element array)."""

    def __init__(self, *args):
        self.args, self.array = args, None

    def __setstate__(self, state) -> None:
        try:
            _, shape, dtype, _, raw = state
            n = math.prod(int(d) for d in shape)
            ok = (isinstance(dtype, np.dtype) and not dtype.hasobject and isinstance(raw, bytes)
                  and all(int(d) >= 0 for d in shape) and n <= MAX_ARRAY_ITEMS and len(raw) == n * dtype.itemsize)
        except (TypeError, ValueError, OverflowError):
            ok = False
        if not ok:
            raise pickle.UnpicklingError("an array of unexpected shape, type or size")
        self.array = (getattr(np, "_core", None) or np.core).multiarray._reconstruct(*self.args)
        self.array.__setstate__(state)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Allows exactly the globals the VP label pickles need; anything else is refused unexecuted."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused global {module}.{name}")
        if name == "_reconstruct":
            return _CheckedArray
        return getattr(np, name)


def read_label_pickle(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """VP-UCF101 / VP-HMDB51 labels: ``"class/name.mp4" -> int array (A,)``, without running pickle
    code and with every array's size checked before it is allocated."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_LABEL_BYTES:
            raise DataError(f"{path}: {path.stat().st_size} bytes, too large for a privacy label pickle")
        data = _NumpyOnlyUnpickler(io.BytesIO(path.read_bytes())).load()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            OverflowError, MemoryError, RecursionError) as e:
        raise DataError(f"{path}: not a safe privacy label pickle ({str(e)[:200]})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a dict of label arrays, got {type(data).__name__}")
    out = {}
    for k, v in data.items():
        v = v.array if isinstance(v, _CheckedArray) else v
        try:
            row = np.asarray(v)
            if row.dtype.kind not in "biu" or row.size > 64:
                raise ValueError
            out[str(k)] = row.reshape(-1).astype(np.int64)
        except (ValueError, TypeError, OverflowError):
            raise DataError(f"{path}: the labels of {str(k)[:80]!r} are not a short row of integers") from None
    return out


def _stem_key(name: str) -> str:
    """Label keys name .mp4 files, split files name .avi: compare by class folder and stem."""
    p = Path(name)
    return f"{p.parent.name}/{p.stem}" if p.parent.name else p.stem


def read_pa_hmdb51(folder: str | os.PathLike) -> dict[str, dict]:
    """PA-HMDB51 (the dataset folder, its PrivacyAttributes folder, or one action's .json file):
    ``action/video.avi -> {attr: [(start, end, {values}), ...]}`` with 0-based inclusive frames."""
    folder = Path(folder)
    if (folder / "PrivacyAttributes").is_dir():
        folder = folder / "PrivacyAttributes"
    out = {}
    files = [folder] if folder.is_file() else sorted(folder.glob("*.json"))
    if not files:
        raise DataError(f"{folder}: no PA-HMDB51 .json files")
    for f in files:
        try:
            doc = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(f"{f}: cannot read as JSON ({reason(e)})") from None
        video = None
        try:
            for video, entry in doc.items():
                segs = {}
                for attr in PA_ATTRIBUTES:
                    segs[attr] = [(int(a), int(b), frozenset(v if isinstance(v, list) else [v]))
                                  for a, b, v in entry.get(attr, [])]
                out[f"{f.stem}/{video}"] = segs
        except (AttributeError, TypeError, ValueError):  # another JSON file (a pseudo-label index, say)
            where = f"its entry {str(video)[:80]!r} is" if video is not None else "it is"
            raise DataError(f"{f}: not PA-HMDB51 labels ({where} not video -> attribute -> [start, end, value] segments)") from None
    return out


def pa_clip_labels(segments: dict, start: int, end: int) -> np.ndarray:
    """Per-clip binary labels from PA-HMDB51 segments: positive when any covered frame has a non-zero value."""
    return np.array([float(any(a <= end and b >= start and v - {0} for a, b, v in segments[attr])) for attr in PA_ATTRIBUTES], np.float32)


def summarize_labels(path: str | os.PathLike) -> dict:
    """What `ppar labels` prints: format, number of videos, attribute names and positive rates."""
    path = Path(path)
    if path.is_dir() and (path / "labels.json").exists():
        path = path / "privacy_labels.pickle"
    if path.is_dir() and (path / "pseudo.json").exists():
        return _summarize_pseudo(path)
    if path.is_dir() or path.suffix.lower() == ".json":
        segs = read_pa_hmdb51(path)
        frames = {a: {} for a in PA_ATTRIBUTES}
        positive = {a: 0 for a in PA_ATTRIBUTES}
        total = {a: 0 for a in PA_ATTRIBUTES}
        for video in segs.values():
            for a in PA_ATTRIBUTES:
                for s, e, values in video[a]:
                    n = e - s + 1
                    total[a] += n
                    positive[a] += n if values - {0} else 0
                    for v in values:
                        frames[a][str(v)] = frames[a].get(str(v), 0) + n
        return {"format": "pa-hmdb51", "videos": len(segs), "attributes": PA_ATTRIBUTES,
                "positive_rate": {a: positive[a] / max(total[a], 1) for a in PA_ATTRIBUTES},
                "value_frames": {a: dict(sorted(frames[a].items())) for a in PA_ATTRIBUTES}}
    if path.is_file() and path.suffix.lower() not in (".pickle", ".pkl") and not pickle_like(path):
        raise DataError(f"{path}: not a label file ppar reads (a VP-UCF101 or VP-HMDB51 pickle, PA-HMDB51's folder "
                        f"or one of its .json files, or a folder `ppar synth` or `ppar pseudolabel` wrote)")
    labels = read_label_pickle(path)
    arr = np.stack(list(labels.values())) if labels else np.zeros((0, len(VP_ATTRIBUTES)))
    names = VP_ATTRIBUTES if arr.shape[1] == len(VP_ATTRIBUTES) else [f"attr{i}" for i in range(arr.shape[1])]
    return {"format": "vp-pickle", "videos": len(labels), "attributes": names,
            "positive_rate": {n: float(arr[:, i].mean()) if len(arr) else 0.0 for i, n in enumerate(names)}}


def _summarize_pseudo(root: Path) -> dict:
    """A `ppar pseudolabel` folder: its split, the share of pixels each mask covers, and the share
    of frames on which each teacher found someone (the README's coverage table), frame-weighted."""
    index = root / "pseudo.json"
    try:
        videos = json.loads(index.read_text())["videos"]
        frames = max(sum(v["frames"] for v in videos.values()), 1)
        shares = {m: sum(v[f"{m}_share"] * v["frames"] for v in videos.values()) / frames for m in ("privacy", "action")}
        found = {t: sum(v[f"{t}_frames"] for v in videos.values()) / frames for t in ("pose", "faces", "selfie", "any_person")}
        split = {s: sum(v["split"] == s for v in videos.values()) for s in ("train", "val")}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise DataError(f"{index}: not an index `ppar pseudolabel` wrote ({type(e).__name__}: {reason(e)})") from None
    return {"format": "pseudo", "videos": len(videos), "split": split, "attributes": ["privacy", "action"],
            "positive_rate": shares, "teacher_frames": found}
