"""Evaluation of a frozen anonymizer on benchmark clips: the `quick` protocol.

Every method turns the test clips into anonymized pixels (at model resolution); the frozen model
then reads them with all tokens kept, and its heads give action top-1 and privacy cMAP / macro F1.
On the synthetic benchmark the tubelet methods also report ground-truth privacy pixels removed and
action pixels kept. Results across methods and keep ratios form a utility/privacy trade-off whose
Pareto frontier and sweet spots `report.py` names.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ppar_cli.core.model import PPARModel, keep_counts
from ppar_cli.core.scoring import score_clips
from ppar_cli.core.weights import LoadedWeights, load_weights
from ppar_cli.errors import DataError, UsageError, check_counts
from ppar_cli.media.files import folder_or_new
from ppar_cli.pipeline.runtime import memory, memory_free, resolve_device
from ppar_cli.pipeline.fill import smooth_fill
from ppar_cli.pipeline.options import Options
from ppar_cli.pipeline.scoremap import flicker
from ppar_cli.research.data import Benchmark, ClipSet, Item
from ppar_cli.research.report import RESULT_FILES, aggregate, label, write_results
from ppar_cli.research.metrics import (
    attention_mass,
    by_chunks,
    oracle_keep,
    motion_metrics,
    pixel_metrics,
    privacy_metrics,
    random_keep,
    static_keep,
    tubelet_motion,
)

TUBELET_METHODS = ("ppar", "random", "static", "oracle")  # static: ppar's most kept grid positions, the same everywhere
PIXEL_METHODS = ("raw", "blur", "downsample2", "downsample4", "blacken")  # blacken: every person pixel, from ground truth
METHODS = TUBELET_METHODS + PIXEL_METHODS


def score_batches(model: PPARModel, clips: np.ndarray, keep_ratio: float, device: torch.device, batch_size: int = 32,
              lambda_priv: float | None = None, hysteresis: float = 0.0, follows: np.ndarray | None = None) -> dict:
    """Model outputs over uint8 clips (B, T, S, S, 3), concatenated as numpy arrays; "a_act" and
    "a_priv" are (B, pruning blocks, N). follows[b]: window b comes right after window b-1 of the
    same video (for hysteresis)."""
    outs, prev = [], None
    follows = np.zeros(len(clips), bool) if follows is None else follows
    for b in range(0, len(clips), batch_size):
        o = score_clips(model, torch.from_numpy(clips[b:b + batch_size]), keep_ratio, device, lambda_priv,
                        hysteresis, follows[b:b + batch_size], prev)
        prev = o.kept[-1]
        outs.append({"action": o.action_logits, "privacy": o.privacy_logits.sigmoid(),
                     "keep": o.kept.reshape(len(o.kept), -1), "a_act": o.a_act, "a_priv": o.a_priv})
    return {k: torch.cat([o[k] for o in outs]).numpy() for k in outs[0]}


def tubelet_pixels(keep: np.ndarray, cfg) -> np.ndarray:
    """(B, N) tubelet keep -> (B, T, S, S, 1) pixel keep at model resolution."""
    t, p, _ = cfg.tubelet
    g = keep.reshape(len(keep), *cfg.grid)
    return g.repeat(t, 1).repeat(p, 2).repeat(p, 3)[..., None]


def pixel_anonymize(method: str, clips: np.ndarray) -> np.ndarray:
    if method == "raw":
        return clips
    B, T, S, _, _ = clips.shape
    flat = clips.reshape(B * T, S, S, 3)
    if method == "blur":
        return smooth_fill(flat, "blur", (1, 1)).reshape(clips.shape)
    k = int(method.removeprefix("downsample"))
    x = torch.from_numpy(flat).permute(0, 3, 1, 2).float()
    x = F.interpolate(F.avg_pool2d(x, k), size=(S, S), mode="bilinear", align_corners=False)
    return x.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy().reshape(clips.shape)


@dataclass
class Windows:
    """Evaluation windows of a ClipSet at model resolution, with every label and mask they carry."""
    raw: np.ndarray  # uint8 (B, T, S, S, 3)
    actions: np.ndarray  # (B,)
    attrs: np.ndarray | None  # (B, attributes)
    identities: np.ndarray | None  # (B,) synthetic benchmark only
    priv: np.ndarray | None  # (B, N) ground-truth privacy pixels per tubelet
    act: np.ndarray | None  # (B, N) ground-truth action pixels per tubelet
    person: np.ndarray | None  # bool (B, T, S, S) ground-truth person pixels
    follows: np.ndarray  # bool (B,): window b starts where window b-1 of the same video ends
    # ppar's outputs without hysteresis per (model, keep, lambda): the static baseline reuses its pass
    scored: dict = field(default_factory=dict, repr=False)

    def score(self, model: PPARModel, keep: float, device: torch.device, lambda_priv: float | None) -> dict:
        key = (model, keep, lambda_priv)
        if key not in self.scored:
            self.scored[key] = score_batches(model, self.raw, keep, device, lambda_priv=lambda_priv)
        return self.scored[key]

    @classmethod
    def of(cls, clips: ClipSet, per_video: int) -> "Windows":
        ws = [(i, s) for i in range(len(clips)) for s in clips.windows(i, per_video)]
        span = clips.cfg.clip_span
        follows = np.array([b > 0 and ws[b - 1] == (i, s - span) for b, (i, s) in enumerate(ws)], bool)
        counts = [clips.counts(i, s) for i, s in ws] if clips.has_masks else None
        ids = [clips.items[i].identity for i, _ in ws]
        raw = next(clips.batches([([i for i, _ in ws], [s for _, s in ws], [None] * len(ws))]))
        return cls(raw, np.array([clips.items[i].action for i, _ in ws]),
                   np.stack([clips.attributes(i, s) for i, s in ws]) if clips.has_attributes else None,
                   np.array(ids) if all(v is not None for v in ids) else None,
                   np.stack([c[0] for c in counts]) if counts else None, np.stack([c[1] for c in counts]) if counts else None,
                   np.stack([clips.person_clip(i, s) for i, s in ws]) if clips.has_person else None, follows)


def anonymize_windows(model: PPARModel, w: Windows, method: str, keep: float | None, rng: np.random.Generator,
                      device=torch.device("cpu"), lambda_priv: float | None = None,
                      hysteresis: float = 0.0) -> tuple[np.ndarray, dict]:
    """Anonymized pixels of every window by one method, and what can be measured on the way
    (the tubelet methods' ground-truth pixel metrics, ppar's attention mass on privacy tubelets at
    its first pruning block (scripts/block_scores.py shows the others), flicker between consecutive
    windows)."""
    cfg = model.cfg
    rec: dict = {}
    if method in TUBELET_METHODS:
        k = keep_counts(cfg.num_tokens, keep, 1)[0]
        if method == "ppar":
            out = (w.score(model, keep, device, lambda_priv) if hysteresis <= 0 else
                   score_batches(model, w.raw, keep, device, lambda_priv=lambda_priv, hysteresis=hysteresis, follows=w.follows))
            mask = out["keep"]
            rec["lambda_priv"] = cfg.lambda_priv if lambda_priv is None else lambda_priv
            rec["hysteresis"] = hysteresis
            if w.priv is not None:
                rec["a_priv_on_privacy"] = attention_mass(out["a_priv"][:, 0], w.priv)
                rec["a_act_on_privacy"] = attention_mass(out["a_act"][:, 0], w.priv)
                rec["privacy_token_share"] = float((w.priv > 0).mean())
        elif method == "static":
            kept = w.score(model, keep, device, lambda_priv)["keep"]
            mask = np.repeat(static_keep(kept, k)[None], len(w.raw), 0)
        elif method == "oracle":
            mask = np.stack([oracle_keep(p, a, k) for p, a in zip(w.priv, w.act)])
        else:
            mask = np.stack([random_keep(cfg.num_tokens, k, rng) for _ in range(len(w.raw))])
        if w.priv is not None:
            rec.update(pixel_metrics(mask, w.priv, w.act))
        rec.update(motion_metrics(mask, tubelet_motion(w.raw, cfg)))
        if w.follows.any():
            rec["flicker"] = flicker(mask, w.follows)
        return by_chunks(lambda raw, keep: raw * tubelet_pixels(keep, cfg), w.raw, mask), rec
    if method == "blacken":
        return by_chunks(lambda raw, person: raw * ~person[..., None], w.raw, w.person), rec
    return w.raw if method == "raw" else by_chunks(lambda raw: pixel_anonymize(method, raw), w.raw), rec


def quick_protocol(model: PPARModel, clips: ClipSet, methods=METHODS, keeps=(0.3, 0.5, 0.7), device=torch.device("cpu"),
             seed: int = 0, progress=None, clips_per_video: int = 1, lambda_priv: float | None = None,
             hysteresis: float = 0.0, privacy: bool = True) -> list[dict]:
    """The quick protocol: one record per (method, keep) over evenly spaced windows of every test video.
    lambda_priv overrides the weights' privacy weight in the ppar score; hysteresis is ppar's, as in
    `ppar anonymize` (it acts only between back-to-back windows, e.g. 2 per 64-frame synthetic video).
    privacy: False where the weights' privacy head names other attributes than the benchmark's labels."""
    cfg = model.cfg
    model.eval()
    w = Windows.of(clips, clips_per_video)
    rng = np.random.default_rng(seed)
    records = []
    for method, keep in runs(methods, keeps, w.priv is not None, w.person is not None):
        anon, extra = anonymize_windows(model, w, method, keep, rng, device, lambda_priv, hysteresis)
        out = score_batches(model, anon, 1.0, device)
        rec = {"method": method, "keep": keep, **extra, "action_top1": float((out["action"].argmax(1) == w.actions).mean())}
        if w.attrs is not None and privacy:
            rec.update(privacy_metrics(out["privacy"], w.attrs, cfg.attributes))
        records.append(rec)
        if progress:
            progress()
    return records


def runs(methods, keeps, has_masks: bool, has_person: bool) -> list[tuple[str, float | None]]:
    """(method, keep) pairs to evaluate: every keep for tubelet methods, once for pixel methods;
    oracle needs ground-truth masks and blacken person masks."""
    ok = lambda m: (m != "oracle" or has_masks) and (m != "blacken" or has_person)  # noqa: E731
    return [(m, k) for m in methods if ok(m) for k in (keeps if m in TUBELET_METHODS else (None,))]


def validation_record(model: PPARModel, clips: ClipSet, device=torch.device("cpu")) -> dict:
    """The per-epoch validation of training: raw and ppar at keep 0.5, flattened into one record."""
    res = {}
    for rec in quick_protocol(model, clips, ("raw", "ppar", "random", "oracle"), (0.5,), device):
        tag = label(rec)
        for k, v in rec.items():
            if k not in ("method", "keep", "per_attribute_ap"):
                res[f"{tag}/{k}"] = v
    return res


MAX_KEEPS = 101  # a sweep of 0.01 over 0..1; 0.1:0.9:0.0001 asked for 8,001 evaluations of each method


def parse_keeps(text: str) -> list[float]:
    """Keep ratios, each once: a list "0.3,0.5" or a sweep "start:stop:step"."""
    try:
        if ":" in text:
            a, b, step = (float(v) for v in text.split(":"))
            n = int(round((b - a) / step)) + 1
            if n > MAX_KEEPS:
                many = f"{n:,}" if n < 10**6 else "millions of"
                raise UsageError(f"{text!r} is {many} keep ratios; give at most {MAX_KEEPS} (a step of 0.01 over 0..1)",
                                 option="keeps")
            keeps = [round(a + i * step, 6) for i in range(n)]
        else:
            keeps = [float(v) for v in text.split(",")]
    except (ValueError, ZeroDivisionError, OverflowError):
        keeps = []
    if not keeps or any(not 0 <= k <= 1 for k in keeps):
        raise UsageError(f"{text!r}: give keep ratios in [0, 1] as 0.3,0.5 or a sweep 0.1:0.9:0.1", option="keeps")
    return list(dict.fromkeys(keeps))


@dataclass
class Evaluation:
    records: list[dict]  # one per (method, keep)
    spots: dict  # named sweet spots of the trade-off
    test_videos: int
    notes: list[str]  # what the figures do not say (also in results.json)


def evaluate_benchmark(data: Path, weights: Path | None = None, format: str = "auto", split: int = 1,
                       labels: Path | None = None, splits: Path | None = None, protocol: str = "quick",
                       methods: tuple[str, ...] = METHODS, keeps: tuple[float, ...] = (0.3, 0.5, 0.7), epochs: int = 8,
                       max_videos: int | None = None, max_train_videos: int | None = None, clips_per_video: int = 1,
                       lambda_priv: float | None = None, hysteresis: float = 0.0, out: Path = Path("results"),
                       progress: Callable[[str, int], Callable[[], None]] | None = None, seeds: tuple[int, ...] = (0,),
                       device: str = "auto", train_windows: int = 4, overwrite: bool = False) -> Evaluation:
    """`ppar eval` as a function: a benchmark's test split under every method and keep ratio, by the
    quick or the full protocol; writes results.json, results.csv and tradeoff.png into ``out``, where
    an earlier evaluation's are replaced only with ``overwrite`` (refused before any work otherwise).
    ``progress(stage, total)`` returns a callback advanced once per step of that stage."""
    from ppar_cli.research.data import open_benchmark

    if protocol not in ("quick", "full"):
        raise UsageError(f"must be quick or full, got {protocol!r}", option="protocol")
    # 0 once meant "all" (max_videos), "1" (clips_per_video) or a traceback (epochs)
    check_counts(epochs=epochs, max_videos=max_videos, max_train_videos=max_train_videos, clips_per_video=clips_per_video,
                 train_windows=train_windows)
    Options(lambda_priv=lambda_priv, hysteresis=hysteresis).validate()  # ppar's scoring, as `ppar anonymize` takes it
    folder_or_new(Path(out), "a folder for the results")
    earlier = [name for name in RESULT_FILES if (Path(out) / name).exists()]
    if earlier and not overwrite:
        raise UsageError(f"{out}: holds an earlier evaluation's {', '.join(earlier)}; <overwrite> replaces them, "
                         f"or give another <out>")
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise UsageError(f"unknown {', '.join(unknown) or '(none given)'} (choose from {', '.join(METHODS)})", option="methods")
    tick = progress or (lambda stage, total: None)
    w = load_weights(weights)
    bench = open_benchmark(data, format, split, labels, splits)
    items = bench.test[:max_videos] if max_videos else bench.test
    train_items = bench.train[:max_train_videos] if max_train_videos else bench.train
    if not items or (protocol == "full" and not train_items):
        raise DataError(f"{bench.source}: no {'test' if not items else 'training'} videos"
                        + (" (in a CSV, rows with split=test)" if not items else ""))
    notes, privacy = quick_labels(w, bench, items) if protocol == "quick" else ([], True)
    # Each protocol holds its windows twice (raw, and anonymized by one method at a time): refused
    # here, before hours of decoding, where they would not fit
    windows = len(items) * clips_per_video + (len(train_items) * train_windows if protocol == "full" else 0)
    cfg, free = w.model.cfg, memory_free()
    need = 2 * windows * cfg.frames * cfg.image_size ** 2 * 3
    if need > free:
        fewer = "<max_videos>, <max_train_videos>, <clips_per_video> or <train_windows>" if protocol == "full" else "<max_videos> or <clips_per_video>"
        raise UsageError(f"the {protocol} protocol holds up to {windows} windows at {cfg.image_size} px twice (raw and anonymized), "
                         f"about {need / 2**30:.1f} GiB, and {free / 2**30:.1f} GiB are free: lower {fewer}")
    clips = ClipSet(items, cfg, progress=tick("decoding test videos", len(items)), hold=memory_free() - memory() // 4 - need)
    n_runs = len(runs(methods, keeps, clips.has_masks, clips.has_person))
    dev = resolve_device(device)
    w.model.to(dev)
    per_seed = []
    if protocol == "quick":
        advance = tick("methods", n_runs * len(seeds))
        for seed in seeds:
            per_seed.append(quick_protocol(w.model, clips, methods, keeps, dev, seed=seed, progress=advance,
                                           clips_per_video=clips_per_video, lambda_priv=lambda_priv,
                                           hysteresis=hysteresis, privacy=privacy))
    else:
        from ppar_cli.research.full_protocol import full_protocol

        test_w = Windows.of(clips, clips_per_video)
        del clips  # the windows hold what is needed of its frames
        train_w = Windows.of(ClipSet(train_items, cfg, progress=tick("decoding training videos", len(train_items)),
                                     hold=memory_free() - memory() // 4 - need), train_windows)
        advance = tick("methods (training fresh models)", n_runs * len(seeds))
        for seed in seeds:
            per_seed.append(full_protocol(w.model, train_w, test_w, methods, keeps, epochs=epochs, cache=out / "cache",
                                          lambda_priv=lambda_priv, seed=seed, progress=advance, device=dev))
    records = aggregate(per_seed)
    spots = write_results(records, out, f"{w.path.name} on {data} ({protocol} protocol, {len(items)} test videos)", METHODS,
                          notes)
    return Evaluation(records, spots, len(items), notes)


def quick_labels(w: LoadedWeights, bench: Benchmark, items: list[Item]) -> tuple[list[str], bool]:
    """The quick protocol reads the weights' own heads, which mean something only for the labels
    they were trained on, by index: notes where the benchmark names others, and whether the privacy
    figures can be made (a benchmark with other attributes gave an IndexError, or figures by the
    wrong names)."""
    def few(names: list[str]) -> str:
        return ", ".join(names[:4]) + (f", ... ({len(names)})" if len(names) > 4 else "")

    cfg, notes = w.model.cfg, []
    if cfg.actions != bench.actions:
        notes.append(f"{w.path.name} was trained on other actions ({few(cfg.actions)}) than {bench.source} has "
                     f"({few(bench.actions)}): the quick protocol's action top-1 compares unrelated labels; "
                     f"--protocol full trains a fresh action model on the benchmark's own")
    labelled = any(i.attributes is not None or i.segments is not None for i in items)
    privacy = not labelled or cfg.attributes == bench.attributes
    if not privacy:
        notes.append(f"{w.path.name}'s privacy head names other attributes ({few(cfg.attributes)}) than {bench.source} "
                     f"labels ({few(bench.attributes)}): no privacy figures by the quick protocol; --protocol full "
                     f"trains a fresh attacker on the benchmark's own")
    return notes, privacy
