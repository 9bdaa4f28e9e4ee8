"""Procedural PPAR benchmark: articulated people performing actions, privacy attributes rendered
where they live in real video, per-frame ground-truth masks, in the UCF101 layout.

Every video is a pure function of (seed, index), so a benchmark regenerates bit-identically and
any video can be rendered alone. Masks are per visible pixel: ``privacy`` marks head, hair, face,
neck and bare torso of every person (bare arms carry the action, so they are not marked);
``action`` marks limbs and torso while they move relative to the hips.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import threading
from concurrent.futures import ProcessPoolExecutor
from fractions import Fraction
from pathlib import Path

import numpy as np

from ppar_cli.core.config import MAX_IMAGE_SIZE, PRIVACY_ATTRIBUTES
from ppar_cli.errors import UsageError, check_counts
from ppar_cli.media.files import folder_or_new
from ppar_cli.research.people import ACTIONS, make_identities, render_video

ATTRIBUTES = PRIVACY_ATTRIBUTES
TEST_GROUPS = range(1, 8)  # UCF101 split 1: groups 1-7 test, 8-25 train
N_GROUPS = 25

def save_masks(path: Path, **masks: np.ndarray) -> None:
    """Bool (frames, H, W) masks, bit-packed along rows, in one compressed npz."""
    shape = next(iter(masks.values())).shape
    np.savez_compressed(path, shape=np.array(shape), **{k: np.packbits(v, axis=-1) for k, v in masks.items()})


# NumPy reads each .npy header with ast.literal_eval, which CPython 3.11 cannot run in two threads at
# once: a garbage collection in the middle lets the other thread in, and one of them fails with
# "SystemError: AST constructor recursion depth mismatch" (training's loader threads met it; 3.12 and
# 3.13 did not, in the same stress run). Masks are read one file at a time.
_NPZ_READ = threading.Lock()


def load_masks(path: str | os.PathLike, names: tuple[str, ...] = ("privacy", "action")) -> tuple[np.ndarray, ...]:
    """Ground-truth masks of a synthetic video, each bool (frames, H, W): by default (privacy, action);
    also "person" (every pixel of a person) in benchmarks generated since ppar 0.2. KeyError if absent."""
    with _NPZ_READ, np.load(path) as z:
        (F, H, W), packed = z["shape"], [z[k] for k in names]
    return tuple(np.unpackbits(p, axis=-1, count=W).astype(bool).reshape(F, H, W) for p in packed)


def video_name(index: int, action: int, group: int) -> str:
    cls = ACTIONS[action]
    return f"{cls}/v_{cls}_g{group:02d}_c{index:05d}.mp4"


def _job(args) -> dict:
    out, seed, index, n_ident, size, frames, fps = args
    from ppar_cli.media.encode import VideoWriter

    r = render_video(seed, index, make_identities(seed, n_ident), size, frames, fps)
    group = int(np.random.default_rng([seed, 3, index]).integers(1, N_GROUPS + 1))
    name = video_name(index, r["action_id"], group)
    dest = Path(out) / name
    dest.parent.mkdir(parents=True, exist_ok=True)
    w = VideoWriter(dest, size, size, Fraction(fps).limit_denominator(1001), crf=r["crf"], preset="fast")
    try:
        w.write(r["video"])
        w.commit()
    except BaseException:
        w.abort()
        raise
    save_masks(dest.with_suffix(".masks.npz"), privacy=r["privacy"], action=r["action"], person=r["person"])
    return {"name": name, "action": r["action_id"], "identity": r["identity"], "group": group, "attributes": r["attributes"]}


def generate(out: str | os.PathLike, videos: int, seed: int, size: int = 160, frames: int = 64, fps: float = 25,
             identities: int = 32, workers: int | None = None, progress=None, overwrite: bool = False) -> dict:
    """Write a benchmark to ``out``; returns its label index (also written as labels.json), with the
    number of test videos (UCF101 split 1's rule: groups 1-7) as ``test_videos``. A folder that is
    not empty (another benchmark, say) is written into only with ``overwrite``."""
    check_counts(videos=videos, identities=identities, workers=workers)
    # two frames at least: the people's speeds are differences between frames; a config's largest
    # image_size at most (--size 100000 asked numpy for 224 GiB)
    for name, value, low, high in (("frames", frames, 2, 100_000), ("size", size, 16, MAX_IMAGE_SIZE)):
        if not low <= value <= high:
            raise UsageError(f"must lie in {low}..{high}, got {value}", option=name)
    if not 0 < fps <= 1000:
        raise UsageError(f"must lie in (0, 1000], got {fps}", option="fps")
    out = Path(out)
    folder_or_new(out, "a folder for the benchmark")
    if not overwrite and out.is_dir() and any(out.iterdir()):
        raise UsageError(f"{out}: not empty (<overwrite> writes the benchmark into it anyway)")
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(str(out), seed, i, identities, size, frames, fps) for i in range(videos)]
    records = []
    # spawned, not forked: the caller may have threads (PyTorch's, a progress bar's), and a child
    # forked from a threaded process can inherit a lock held at that instant and hang (Python 3.12 warns)
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count(), mp_context=multiprocessing.get_context("spawn")) as ex:
        for rec in ex.map(_job, jobs, chunksize=4):
            records.append(rec)
            if progress:
                progress()
    (out / "classInd.txt").write_text("".join(f"{i + 1} {a}\n" for i, a in enumerate(ACTIONS)))
    train = [r for r in records if r["group"] not in TEST_GROUPS]
    test = [r for r in records if r["group"] in TEST_GROUPS]
    (out / "trainlist01.txt").write_text("".join(f"{r['name']} {r['action'] + 1}\n" for r in train))
    (out / "testlist01.txt").write_text("".join(f"{r['name']}\n" for r in test))
    # VP-UCF101 style label file (a dict of (1, 5) int arrays), read back through the restricted unpickler
    with open(out / "privacy_labels.pickle", "wb") as f:
        pickle.dump({r["name"]: np.array([r["attributes"]], dtype=np.int64) for r in records}, f)
    index = {"format": "ppar-synth/1", "seed": seed, "size": size, "frames": frames, "fps": fps,
             "actions": ACTIONS, "attributes": ATTRIBUTES, "identities": identities,
             "videos": {r["name"]: {k: r[k] for k in ("action", "identity", "group", "attributes")} for r in records}}
    (out / "labels.json").write_text(json.dumps(index, indent=1))
    return {**index, "test_videos": len(test)}
