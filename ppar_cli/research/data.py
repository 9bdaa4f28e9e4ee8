"""Benchmark readers (UCF101/HMDB51 splits, VP-UCF101/VP-HMDB51 pickles, PA-HMDB51 JSON, the
synthetic benchmark, plain CSV) behind one :class:`Benchmark` API, and clip sampling for training.

Splits stay clean: every reader builds train and test from the split files of one split only,
and :func:`Benchmark.check_disjoint` refuses any overlap (the paper's reference loaders mix them).
"""
from __future__ import annotations

import csv
import json
import os
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ppar_cli.core.clips import cell_edges, resize_frames, sample_clip, slab_index
from ppar_cli.core.config import PRIVACY_ATTRIBUTES
from ppar_cli.errors import DataError
from ppar_cli.media.decode import FrameReader
from ppar_cli.media.probe import VideoInfo, probe
from ppar_cli.pipeline.runtime import memory, memory_free, process_cores, trim_heap
from ppar_cli.research.labels import (
    PA_ATTRIBUTES,
    VP_ATTRIBUTES,
    _stem_key,
    pa_clip_labels,
    read_label_pickle,
    read_pa_hmdb51,
)
from ppar_cli.research.synth import load_masks


@dataclass
class Item:
    path: Path
    action: int
    attributes: np.ndarray | None = None  # float32 (A,), 0/1
    masks: Path | None = None  # synthetic ground truth
    identity: int | None = None
    segments: dict | None = None  # PA-HMDB51 per-frame labels: clip labels depend on the window

    @property
    def key(self) -> str:
        return f"{self.path.parent.name}/{self.path.name}"


@dataclass
class Benchmark:
    actions: list[str]
    attributes: list[str]
    train: list[Item] = field(default_factory=list)
    test: list[Item] = field(default_factory=list)
    source: str = ""

    def check_disjoint(self) -> None:
        overlap = {i.key for i in self.train} & {i.key for i in self.test}
        if overlap:
            raise DataError(f"{self.source}: {len(overlap)} videos are in both train and test (e.g. {sorted(overlap)[0]})")


def read_ucf101(root: str | os.PathLike, split: int = 1, labels: str | os.PathLike | None = None,
                splits_dir: str | os.PathLike | None = None) -> Benchmark:
    """UCF101 layout: ``classInd.txt``, ``trainlist0N.txt``, ``testlist0N.txt`` (labels optional)."""
    root = Path(root)
    sd = Path(splits_dir) if splits_dir else root
    try:
        classes = [line.split()[1] for line in (sd / "classInd.txt").read_text().splitlines() if line.strip()]
        train_lines = (sd / f"trainlist{split:02d}.txt").read_text().splitlines()
        test_lines = (sd / f"testlist{split:02d}.txt").read_text().splitlines()
    except (OSError, IndexError) as e:
        raise DataError(f"{sd}: not a UCF101 split folder ({e})") from None
    index = {c: i for i, c in enumerate(classes)}
    priv = {_stem_key(k): v for k, v in read_label_pickle(labels).items()} if labels else {}
    meta = {}
    if (root / "labels.json").exists():  # the synthetic benchmark's own index: identities, attribute names
        meta = json.loads((root / "labels.json").read_text())
    bench = Benchmark(classes, meta.get("attributes", VP_ATTRIBUTES), source=str(root))
    for lines, bucket in ((train_lines, bench.train), (test_lines, bench.test)):
        for line in lines:
            if not line.strip():
                continue
            rel = line.split()[0]
            cls = rel.split("/")[0]
            if cls not in index:
                raise DataError(f"{sd}: video {rel} has a class not in classInd.txt")
            p = root / rel
            attrs = priv.get(_stem_key(rel))
            info = meta.get("videos", {}).get(rel, {})
            if attrs is None and "attributes" in info:
                attrs = np.array(info["attributes"])
            masks = p.with_suffix(".masks.npz")
            bucket.append(Item(p, index[cls], None if attrs is None else attrs.astype(np.float32),
                               masks if masks.exists() else None, info.get("identity")))
    bench.check_disjoint()
    return bench


def read_synth(root: str | os.PathLike) -> Benchmark:
    root = Path(root)
    return read_ucf101(root, 1, root / "privacy_labels.pickle" if (root / "privacy_labels.pickle").exists() else None)


def read_pseudo(root: str | os.PathLike) -> Benchmark:
    """Real videos with pseudo masks (`ppar pseudolabel`): train and val as the labeller split them
    (val is the test side), actions named by each video's top folder (fight, noFight, asl, ...)."""
    root = Path(root)
    meta = json.loads((root / "pseudo.json").read_text())
    index, videos = meta["videos"], root / meta.get("root", "")
    actions = sorted({name.split("/")[0] if "/" in name else "video" for name in index})
    bench = Benchmark(actions, list(PRIVACY_ATTRIBUTES), source=str(root))
    for name, rec in sorted(index.items()):
        item = Item(Path(rec["source"]) if "source" in rec else videos / name, actions.index(name.split("/")[0] if "/" in name else "video"),
                    masks=root / (name + ".masks.npz"))
        (bench.test if rec["split"] == "val" else bench.train).append(item)
    missing = [str(i.path) for i in bench.train + bench.test if not i.path.exists()]
    if missing:
        raise DataError(f"{root}: {len(missing)} source videos are missing (e.g. {missing[0]})")
    return bench


def read_hmdb51(root: str | os.PathLike, splits_dir: str | os.PathLike, split: int = 1,
                labels: str | os.PathLike | None = None) -> Benchmark:
    """HMDB51: ``<action>_test_split{N}.txt`` lines ``video.avi 0|1|2`` (1 train, 2 test, 0 unused)."""
    root, sd = Path(root), Path(splits_dir)
    files = sorted(sd.glob(f"*_test_split{split}.txt"))
    if not files:
        raise DataError(f"{sd}: no *_test_split{split}.txt files")
    actions = [f.name[: -len(f"_test_split{split}.txt")] for f in files]
    pa = None
    if labels and Path(labels).is_dir():  # PA-HMDB51 folder: per-frame labels
        pa = {_stem_key(k): v for k, v in read_pa_hmdb51(labels).items()}
    priv = {_stem_key(k): v for k, v in read_label_pickle(labels).items()} if labels and pa is None else {}
    bench = Benchmark(actions, PA_ATTRIBUTES if pa is not None else VP_ATTRIBUTES, source=str(sd))
    for a, f in enumerate(files):
        for line in f.read_text().splitlines():
            parts = line.split()
            if len(parts) < 2 or parts[1] not in ("1", "2"):
                continue
            rel = f"{actions[a]}/{parts[0]}"
            if pa is not None and _stem_key(rel) not in pa:
                continue  # PA-HMDB51 labels 515 of HMDB51's videos; the others have no privacy labels
            attrs = priv.get(_stem_key(rel))
            item = Item(root / rel, a, None if attrs is None else attrs.astype(np.float32),
                        segments=pa.get(_stem_key(rel)) if pa is not None else None)
            (bench.train if parts[1] == "1" else bench.test).append(item)
    bench.check_disjoint()
    return bench


def read_csv(path: str | os.PathLike) -> Benchmark:
    """Users' own data: ``path,action,attr1,...`` with a header; an optional ``split`` column (train/test).
    Written by hand or by a spreadsheet (which may start the file with a byte-order mark): a row that
    does not fit is named with its line and the problem, not met later as a traceback."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows = [(reader.line_num, r) for r in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: cannot read as CSV ({e})") from None
    header = reader.fieldnames or []
    if "path" not in header or "action" not in header:
        raise DataError(f"{path}: CSV needs a header with at least path,action")
    attrs = [c for c in header if c not in ("path", "action", "split")]
    actions = sorted({r["action"] for _, r in rows if r["action"] is not None})
    bench = Benchmark(actions, attrs, source=str(path))
    for line, r in rows:
        if None in r or None in r.values():  # DictReader's marks of a row longer or shorter than the header
            raise DataError(f"{path}: line {line}: {'more' if None in r else 'fewer'} fields than the header's {len(header)}")
        try:
            values = [float(r[a]) for a in attrs]
        except ValueError:
            raise DataError(f"{path}: line {line}: attributes are numbers (1 present, 0 absent), got "
                            f"{', '.join(f'{a}={r[a]!r}' for a in attrs)}") from None
        split = r.get("split") or "train"
        if split not in ("train", "test"):
            raise DataError(f"{path}: line {line}: split is train or test, got {split!r}")
        item = Item(path.parent / r["path"], actions.index(r["action"]), np.array(values, np.float32) if attrs else None)
        (bench.test if split == "test" else bench.train).append(item)
    bench.check_disjoint()
    return bench


def combine(benches: list[Benchmark]) -> Benchmark:
    """Several benchmarks trained on together: their action classes side by side (renumbered), the
    privacy attributes they share. Videos without privacy labels leave the privacy head untrained."""
    if len({tuple(b.attributes) for b in benches}) > 1:
        raise DataError("the benchmarks name different privacy attributes: " + "; ".join(b.source for b in benches))
    actions: list[str] = []
    out = Benchmark(actions, benches[0].attributes, source=",".join(b.source for b in benches))
    for b in benches:
        offset = len(actions)
        actions += [a if a not in actions else f"{Path(b.source).name}/{a}" for a in b.actions]
        for split in ("train", "test"):
            getattr(out, split).extend(replace(it, action=it.action + offset) for it in getattr(b, split))
    return out


def open_benchmark(data: str | os.PathLike, fmt: str = "auto", split: int = 1, labels: str | os.PathLike | None = None,
                   splits_dir: str | os.PathLike | None = None) -> Benchmark:
    data = Path(data)
    if not data.exists():
        raise DataError(f"{data}: no such file or directory")
    if fmt == "auto":
        if data.is_file() and data.suffix == ".csv":
            fmt = "csv"
        elif (data / "labels.json").exists():
            fmt = "synth"
        elif (data / "pseudo.json").exists():
            fmt = "pseudo"
        elif ((Path(splits_dir) if splits_dir else data) / "classInd.txt").exists():
            fmt = "ucf101"
        elif splits_dir and list(Path(splits_dir).glob("*_test_split*.txt")):
            fmt = "hmdb51"
        else:
            raise DataError(f"{data}: cannot tell the benchmark format (no labels.json of `ppar synth`, pseudo.json of "
                            f"`ppar pseudolabel` or classInd.txt of UCF101, no HMDB51 *_test_split*.txt in the splits "
                            f"folder, not a .csv); pass --format: ucf101, hmdb51, synth, pseudo or csv")
    if fmt == "synth":
        return read_synth(data)
    if fmt == "pseudo":
        return read_pseudo(data)
    if fmt == "ucf101":
        return read_ucf101(data, split, labels, splits_dir)
    if fmt == "hmdb51":
        return read_hmdb51(data, splits_dir or data, split, labels)
    if fmt == "csv":
        return read_csv(data)
    raise DataError(f"unknown format {fmt!r}")


# ---------------------------------------------------------------------------------------------
# Clips for training and evaluation: decoded once at model resolution through the same decoder
# as `ppar anonymize`, sampled as windows of clip_span source frames.

def decode_resized(path: str | os.PathLike, size: int, max_frames: int | None = None, info: VideoInfo | None = None) -> np.ndarray:
    """All frames (up to max_frames) of a video, resized to size x size: uint8 (F, size, size, 3).
    ``info``: the video's, if probed already."""
    out = []
    n = 0
    for chunk in FrameReader(info or probe(path)).chunks(64):
        out.append(resize_frames(torch.from_numpy(np.ascontiguousarray(chunk)), size).numpy())
        n += len(chunk)
        if max_frames and n >= max_frames:
            break
    if not out:
        raise DataError(f"{path}: no frames")
    return np.concatenate(out)[:max_frames]


def cell_counts(masks: np.ndarray, gh: int, gw: int) -> np.ndarray:
    """bool (F, H, W) -> int32 (F, gh, gw) pixels per tubelet cell, with the anonymizer's cell mapping."""
    F_, H, W = masks.shape
    rows = np.add.reduceat(masks.astype(np.int32), cell_edges(H, gh)[:-1], axis=1)
    return np.add.reduceat(rows, cell_edges(W, gw)[:-1], axis=2)


def window_counts(counts: np.ndarray, start: int, cfg) -> np.ndarray:
    """Per-frame cell counts (F, gh, gw) -> per-tubelet counts (N,) of the window at ``start``."""
    win = counts[start:start + cfg.clip_span]
    out = np.zeros(cfg.grid, np.int64)
    np.add.at(out, slab_index(len(win), cfg), win)
    return out.reshape(-1)


def random_crop(rng: np.random.Generator, size: int, min_scale: float) -> tuple[int, int, int, int]:
    """A box (y0, y1, x0, x1) inside a size x size frame, each side between min_scale and 1 of the
    frame's, anywhere in it: the same box for every frame of a clip, as a camera's zoom and pan."""
    lo = min(size, max(1, int(np.ceil(min_scale * size))))
    h, w = (int(v) for v in rng.integers(lo, size + 1, 2))
    y0, x0 = int(rng.integers(size - h + 1)), int(rng.integers(size - w + 1))
    return y0, y0 + h, x0, x0 + w


def _masks(item: Item, cfg, crops: bool) -> tuple | None:
    """A video's ground truth as training reads it (None without any): privacy and action pixels
    per frame and tubelet cell, both masks bit-packed at their own resolution (``crops``), and
    person pixels at model resolution (None in benchmarks made before person masks existed)."""
    if item.masks is None:
        return None
    _, gh, gw = cfg.grid
    p, a = load_masks(item.masks)
    packed = (np.packbits(p, axis=-1), np.packbits(a, axis=-1), p.shape[2]) if crops else None
    try:
        person = torch.from_numpy(load_masks(item.masks, ("person",))[0]).float().unsqueeze(1)
        person = F.adaptive_max_pool2d(person, cfg.image_size)[:, 0].bool().numpy()
    except KeyError:
        person = None
    return cell_counts(p, gh, gw), cell_counts(a, gh, gw), packed, person


class VideoFrames:
    """A video's frames at model resolution, decoded from its file each time a window is sliced
    out (``frames[start:stop]``), the pixels :func:`decode_resized` gives: for benchmarks too large
    to hold (UCF101's training videos at the base preset's 224 px are about 260 GB)."""

    def __init__(self, path: str | os.PathLike, size: int):
        self.path, self.size = Path(path), size
        self.info = FrameReader(probe(path)).info  # decord counts the frames where it reads the file
        self.count = self.info.num_frames if self.info.num_frames is not None else len(self.info.frame_times().known)

    def __len__(self) -> int:
        return self.count

    @property
    def nbytes(self) -> int:
        """What holding them would take."""
        return self.count * self.size * self.size * 3

    def __getitem__(self, window: slice) -> np.ndarray:
        start, stop, _ = window.indices(self.count)
        # one decoder thread: ClipSet.batches reads a batch's windows on every core at once
        frames = FrameReader(self.info, threads=1).window(start, stop)
        if not len(frames):  # fewer frames decode than the container lists: its last ones
            frames = FrameReader(self.info, threads=1).window(0, stop)[start - stop:]
        if not len(frames):
            raise DataError(f"{self.path}: no frames decode")
        return resize_frames(torch.from_numpy(frames), self.size).numpy()


class ClipSet:
    """Videos of one split at model resolution, with labels and (synthetic) mask counts.

    The frames of as many videos as ``hold`` bytes allow are decoded once and held in memory
    (None: as many as leave a quarter of the machine's memory free); the others are
    :class:`VideoFrames`, read from their files window by window. Either gives the same clips.
    ``crops``: also keep the masks at their own resolution (bit-packed), so that :meth:`counts` can
    follow a cropped clip (training's ``--crop-scale``)."""

    def __init__(self, items: list[Item], cfg, progress=None, crops: bool = False, hold: int | None = None):
        self.items, self.cfg = items, cfg
        self.priv, self.act, self.person, self.packed = [], [], [], []
        budget = hold if hold is not None else memory_free() - memory() // 4
        with ThreadPoolExecutor(process_cores()) as pool:  # decoding, resizing and pooling release the GIL
            videos = list(pool.map(lambda it: VideoFrames(it.path, cfg.image_size), items))
            held, fits = 0, []
            for v in videos:
                fits.append(held + v.nbytes <= budget)
                held += v.nbytes * fits[-1]

            def load(it: Item, v: VideoFrames, fit: bool):
                frames, masks = decode_resized(v.path, cfg.image_size, info=v.info) if fit else v, _masks(it, cfg, crops)
                trim_heap()  # the full-size masks and decoded frames just freed
                return frames, masks

            self.frames: list[np.ndarray | VideoFrames] = []
            for frames, masks in pool.map(load, items, videos, fits):
                self.frames.append(frames)
                if masks is not None:
                    priv, act, packed, person = masks
                    self.priv.append(priv)
                    self.act.append(act)
                    if crops:
                        self.packed.append(packed)
                    if person is not None:
                        self.person.append(person)
                if progress:
                    progress()
        self.has_masks = len(self.priv) == len(items)
        self.has_person = len(self.person) == len(items)

    def __len__(self) -> int:
        return len(self.items)

    def starts(self, i: int, rng: np.random.Generator | None) -> int:
        """A random window start (training) or the centred one (evaluation)."""
        room = max(0, len(self.frames[i]) - self.cfg.clip_span)
        return int(rng.integers(room + 1)) if rng is not None else room // 2

    def windows(self, i: int, n: int) -> list[int]:
        """n evenly spaced window starts (n = 1: the centred one), for evaluation."""
        room = max(0, len(self.frames[i]) - self.cfg.clip_span)
        return [room // 2] if n == 1 else sorted({int(round(room * j / (n - 1))) for j in range(n)})

    @property
    def has_attributes(self) -> bool:
        return all(it.attributes is not None or it.segments is not None for it in self.items)

    def attributes(self, i: int, start: int) -> np.ndarray:
        """Privacy labels of one window: per video, or from the frames it covers (PA-HMDB51)."""
        it = self.items[i]
        if it.segments is not None:
            return pa_clip_labels(it.segments, start, start + self.cfg.clip_span - 1)
        return it.attributes

    def clip(self, i: int, start: int, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
        """uint8 (T, S, S, 3); with a box (from :func:`random_crop`), that part of it resized to S x S."""
        out = sample_clip(self.frames[i][start:start + self.cfg.clip_span], self.cfg)
        if box is None:
            return out
        y0, y1, x0, x1 = box
        return resize_frames(torch.from_numpy(np.ascontiguousarray(out[:, y0:y1, x0:x1])), self.cfg.image_size).numpy()

    def batches(self, plan: Iterable[tuple[Sequence[int], Sequence[int], Sequence]], ahead: int = 2) -> Iterator[np.ndarray]:
        """The stacked clips of each (indices, starts, boxes) of ``plan``, in its order, read up
        to ``ahead`` batches in advance by threads, so that a GPU does not wait on videos read
        from their files."""
        with ThreadPoolExecutor(process_cores()) as pool:
            pending: deque = deque()
            for idx, starts, boxes in plan:
                pending.append([pool.submit(self.clip, i, s, b) for i, s, b in zip(idx, starts, boxes)])
                if len(pending) > ahead:
                    yield np.stack([f.result() for f in pending.popleft()])
            while pending:
                yield np.stack([f.result() for f in pending.popleft()])

    def person_clip(self, i: int, start: int) -> np.ndarray:
        """bool (T, S, S): pixels of any person in the frames the model sees (any overlap at model resolution)."""
        return sample_clip(self.person[i][start:start + self.cfg.clip_span], self.cfg)

    def counts(self, i: int, start: int, box: tuple[int, int, int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Per-tubelet (privacy, action) mask pixels of a window; with a box, of the cropped clip
        (the box, given in model pixels, is taken at the masks' own resolution)."""
        if box is None:
            return window_counts(self.priv[i], start, self.cfg), window_counts(self.act[i], start, self.cfg)
        *packed, width = self.packed[i]
        S, (_, gh, gw) = self.cfg.image_size, self.cfg.grid
        H = packed[0].shape[1]
        y0, y1, x0, x1 = (round(v * n / S) for v, n in zip(box, (H, H, width, width)))
        out = []
        for bits in packed:
            m = np.unpackbits(bits[start:start + self.cfg.clip_span], axis=-1, count=width).astype(bool)
            out.append(window_counts(cell_counts(m[:, y0:y1, x0:x1], gh, gw), 0, self.cfg))
        return out[0], out[1]
