"""Training: action cross-entropy on the action CLS + privacy BCE on the privacy CLS (through gradient
reversal with the DANN ramp when cfg.grl), pruning active, AdamW with warm-up and cosine decay.

Read top to bottom. Runs on one process, or on many under `torchrun` (DistributedDataParallel, rank 0
logs and saves). Every epoch leaves a resumable checkpoint in the run folder: the model as
safetensors, the optimizer state as safetensors, and a JSON of the counters. No pickles.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from ppar_cli.core.clips import prepare_clips
from ppar_cli.core.config import PRESETS, PPARConfig, read_metadata, unreadable
from ppar_cli.core.model import PPARModel
from ppar_cli.core.weights import save_weights
from ppar_cli.errors import DataError, UsageError
from ppar_cli.media.files import atomic_path, folder_or_new
from ppar_cli.pipeline.runtime import local_processes, memory, memory_free
from ppar_cli.research.args import TrainArgs
from ppar_cli.research.data import Benchmark, ClipSet, combine, open_benchmark, random_crop
from ppar_cli.research.evaluate import validation_record
from ppar_cli.research.metrics import tubelet_motion
from ppar_cli.research.pretrained import init_from_pretrained


def grl_coeff(progress: float) -> float:
    """DANN ramp 2/(1+exp(-10p)) - 1, p = training progress in [0, 1]."""
    return 2.0 / (1.0 + math.exp(-10.0 * min(progress, 1.0))) - 1.0


def lr_at(step: int, total: int, warmup: int, args: TrainArgs) -> float:
    if step < warmup:
        return args.lr * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return args.lr * (args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(p, 1.0))))


def build_config(args: TrainArgs, actions: list[str], attributes: list[str]) -> PPARConfig:
    if args.config in PRESETS:
        base = dict(PRESETS[args.config])
    else:
        path = Path(args.config)
        base = json.loads(path.read_text()) if path.suffix == ".json" else json.loads(read_metadata(path)[0].to_json())
    base.update(args.overrides)
    base.update(actions=actions, attributes=attributes)
    unknown = sorted(set(base) - set(PPARConfig.__dataclass_fields__))
    if unknown:
        raise ValueError(f"unknown config field(s): {', '.join(unknown)}")
    return PPARConfig(**base)


def _load_stem(model: PPARModel, path: Path) -> None:
    """Pretrained stem weights (safetensors) into the model's per-frame stem; a mismatch is an error."""
    if model.embed.stem is None:
        raise ValueError(f"{path}: this config has no pretrained stem (stem={model.cfg.stem})")
    try:
        state = load_file(str(path))
    except Exception as e:  # noqa: BLE001 -- safetensors raises its own error types
        raise DataError(unreadable(path, e)) from None
    missing, unexpected = model.embed.stem.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: stem tensors do not match (missing {missing[:3]}, unexpected {unexpected[:3]})")


def mask_attention_loss(attn: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of (B, n_prune, N) attention to the ground-truth pixel share of the live tubelets.

    pixels: (B, N) mask pixels per tubelet. Clips without mask pixels carry no target and are skipped.
    """
    target = pixels.unsqueeze(1) * (attn > 0)
    total = target.sum(-1, keepdim=True)
    ce = -(target / total.clamp_min(1) * attn.clamp_min(1e-8).log()).sum(-1)
    valid = (total.squeeze(-1) > 0).float()
    return (ce * valid).sum() / valid.sum().clamp_min(1)


def separation_loss(attn: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """Mean attention mass of (B, n_prune, N) ``attn`` on the tubelets where the other mask has pixels."""
    return (attn * (other > 0).unsqueeze(1)).sum(-1).mean()


def rank_loss(a_act: torch.Tensor, a_priv: torch.Tensor, pixels: torch.Tensor, lambda_priv: float) -> torch.Tensor:
    """The score anonymize ranks by, s = a_act - lambda * a_priv over (B, n_prune, N), standardised
    over each map's live tubelets: a softplus pushes every tubelet with action pixels (and none of
    privacy) above the map's median, every one with privacy pixels below it. ``pixels``: (B, 2, N),
    privacy then action pixels per tubelet. The attention terms shape each CLS alone; this one
    their difference, the ranking anonymize uses (tried on real footage: README, "A ranking term")."""
    live = a_act > 0
    s = a_act - lambda_priv * a_priv
    n = live.sum(-1, keepdim=True).clamp_min(1)
    mean = (s * live).sum(-1, keepdim=True) / n
    z = (s - mean) / (((s - mean) ** 2 * live).sum(-1, keepdim=True) / n).sqrt().clamp_min(1e-12)
    median = torch.where(live, z, torch.nan).nanmedian(-1, keepdim=True).values.detach()
    priv = (pixels[:, 0] > 0).unsqueeze(1) & live
    act = (pixels[:, 1] > 0).unsqueeze(1) & live & ~priv
    terms = F.softplus(median - z) * act + F.softplus(z - median) * priv
    return terms.sum() / (act | priv).sum().clamp_min(1)


def _save_checkpoint(run: Path, model: PPARModel, opt: torch.optim.Optimizer, state: dict) -> None:
    tensors = {}
    for i, s in enumerate(opt.state_dict()["state"].values()):
        for k, v in s.items():
            tensors[f"{i}.{k}"] = v.detach().cpu().float().reshape(-1) if torch.is_tensor(v) else torch.tensor([float(v)])
    # state.json is written last: a run interrupted mid-save resumes from the previous epoch's counters
    with atomic_path(run / "optim.safetensors") as tmp:
        save_file(tensors, str(tmp))
    save_weights(model, run / "checkpoint.safetensors", {"state": state})
    with atomic_path(run / "state.json") as tmp:
        tmp.write_text(json.dumps(state))


def _load_checkpoint(run: Path, model: PPARModel, opt: torch.optim.Optimizer) -> dict:
    state = json.loads((run / "state.json").read_text())
    model.load_state_dict(load_file(str(run / "checkpoint.safetensors")))
    flat = load_file(str(run / "optim.safetensors"))
    sd = opt.state_dict()
    params = [p for g in opt.param_groups for p in g["params"]]
    for i, p in enumerate(params):
        sd["state"][i] = {"step": flat[f"{i}.step"].reshape(()),
                          "exp_avg": flat[f"{i}.exp_avg"].view_as(p), "exp_avg_sq": flat[f"{i}.exp_avg_sq"].view_as(p)}
    opt.load_state_dict(sd)
    return state


# Arguments a resumed run may change: where its results go, how much of it runs now, on how many
# threads, how much it evaluates. The data, labels, split, config and init are compared by what
# they give (run_identity), not by their spelling: a run moved to another machine still resumes.
FREE_ON_RESUME = {"out", "overwrite", "run_dir", "stop_after", "threads", "max_eval", "data", "format", "labels", "splits_dir",
                  "split", "config", "overrides", "init", "init_stem", "init_inflation"}
WHOLE = ("config", "training videos and labels")  # run_identity's parts named when they differ, not shown


def run_identity(args: TrainArgs, cfg: PPARConfig, bench: Benchmark) -> dict:
    """What makes a run this run: its schedule and losses, its model config, and a digest of its
    training videos with their actions and privacy labels. A rerun into the same run folder must
    match, or it would continue another run's checkpoint on other data or settings."""
    same = {k: v for k, v in asdict(args).items() if k not in FREE_ON_RESUME}
    videos = sorted((i.key, i.action, None if i.attributes is None else i.attributes.tolist()) for i in bench.train)
    digest = hashlib.sha256(json.dumps([bench.actions, bench.attributes, videos]).encode()).hexdigest()[:16]
    return {**same, "config": json.loads(cfg.to_json()), "training videos and labels": digest}


def check_resume(run: Path, state: dict, identity: dict) -> None:
    """Refuse to resume ``run`` with arguments that make another run (runs saved before 0.3.24
    recorded none and resume unchecked)."""
    saved = state.get("identity")
    if saved is None:
        return
    def what(k: str) -> str:
        if k == "config" and isinstance(saved.get(k), dict):  # name the fields: a config is long
            was, now = saved[k], identity[k]
            return ", ".join(f"config {f} {was.get(f)} there, {now.get(f)} now" for f in sorted(set(was) | set(now))
                             if was.get(f) != now.get(f))
        return k if k in WHOLE else f"<{k}> {saved.get(k)} there, {identity[k]} now"

    # an argument added since the run was saved had its default then (its key is missing there)
    saved = {**{k: v for k, v in asdict(TrainArgs(data="")).items() if k not in FREE_ON_RESUME}, **saved}
    differ = [k for k in identity if saved.get(k) != identity[k]]
    if differ:
        said = ", ".join(what(k) for k in differ)
        raise UsageError(f"{run}: holds a run started with other arguments ({said}); give the same ones to resume it, "
                         f"or another <run_dir>")


def train(args: TrainArgs, log=print, progress: Callable[[str, int], Callable[[], None]] | None = None) -> dict:
    """Train (or resume) and return the last epoch's metrics. ``progress(stage, total)`` returns a
    callback advanced once per step of that stage (the videos decoded, each epoch's batches), as
    `ppar eval`'s. On CUDA the kernels are deterministic for the run's duration only: what runs
    afterwards in the same process (`ppar paper` evaluates there) may use kernels that have no
    deterministic form and would raise."""
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        return _train(args, log, progress)
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def _train(args: TrainArgs, log=print, progress: Callable[[str, int], Callable[[], None]] | None = None) -> dict:
    args.validate()
    # -- processes: one, or many under torchrun ------------------------------------------------
    ddp = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    if ddp:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        rank, world = 0, 1
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        # Deterministic kernels, so that a seed gives one result and a resumed run equals the
        # uninterrupted one, as on the CPU. On an H100 a resumed run ended 0.03 away from the
        # uninterrupted one after 8 epochs; with warn_only=True, 0.02, and the one kernel PyTorch
        # warned about was cuDNN's attention backward, which picks a deterministic algorithm only
        # when warn_only is False; required outright, 0.0 (benchmarks/gpu.py, train). cuBLAS needs
        # its workspace fixed before its first call.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    master = rank == 0
    tick = progress if progress is not None and master else (lambda stage, total: lambda: None)
    run, out = Path(args.run_dir), Path(args.out)
    # checked now, not after hours of training
    if out.is_dir():
        raise UsageError(f"{out}: a folder; <out> names the weights file to write")
    if out.exists() and not args.overwrite:
        raise UsageError(f"{out}: already exists (<overwrite> replaces it)")
    folder_or_new(run, "a run folder")

    # -- data and model ---------------------------------------------------------------------------
    sources = [d for d in str(args.data).split(",") if d]
    bench = combine([open_benchmark(d, args.format, args.split, args.labels, args.splits_dir) for d in sources])
    for split, why in (("train", ""), ("test", ": every epoch is evaluated on the test split (in a CSV, rows with split=test)")):
        if not getattr(bench, split):
            raise DataError(f"{bench.source}: no {split} videos{why}")
    if args.uses_masks and any(i.masks is None for i in bench.train):
        raise UsageError("<mask_weight>, <separation_weight>, <motion_weight> and <rank_weight> need ground-truth masks (synthetic or pseudo)")
    cfg = build_config(args, bench.actions, bench.attributes)
    identity = run_identity(args, cfg, bench)
    if (run / "state.json").exists():  # before the videos are decoded, which can take minutes
        check_resume(run, json.loads((run / "state.json").read_text()), identity)
    torch.manual_seed(args.seed)
    model = PPARModel(cfg)
    if args.init_stem:
        _load_stem(model, Path(args.init_stem))
    init_report = None
    if args.init and not (run / "state.json").exists():  # a resumed run has its weights already
        init_report = init_from_pretrained(model, args.init, args.init_inflation)
    if master:  # once the arguments and the files they name are known to be good: a mistake leaves no run folder
        run.mkdir(parents=True, exist_ok=True)
    if args.init_stem:
        log(f"stem from {args.init_stem}")
    if init_report is not None:
        log(f"init {json.dumps(init_report)}")
    model = model.to(device)
    log(f"config {cfg.to_json()}")
    log(f"decoding {len(bench.train)} train / {len(bench.test)} test videos at {cfg.image_size}px")
    # the ranks on this machine (torchrun's LOCAL_WORLD_SIZE) each hold every video they can: a share of the memory each
    share = (memory_free() - memory() // 4) // local_processes()
    train_set = ClipSet(bench.train, cfg, crops=args.crop_scale < 1, hold=share,
                        progress=tick("decoding training videos", len(bench.train)))
    test_items = bench.test[: args.max_eval] if args.max_eval else bench.test
    test_set = ClipSet(test_items, cfg, progress=tick("decoding test videos", len(test_items))) if master else None
    has_privacy = train_set.has_attributes

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "pos" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 or "pos" in n]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.999))
    steps_per_epoch = math.ceil(len(train_set) / world / (args.batch_size * args.accum))
    total, warmup = steps_per_epoch * args.epochs, int(steps_per_epoch * args.warmup_epochs)
    state = {"epoch": 0, "step": 0, "history": [], "init": init_report, "identity": identity}
    if (run / "state.json").exists():
        state = _load_checkpoint(run, model, opt)
        state.setdefault("identity", identity)  # a run saved before 0.3.24 is checked from here on
        log(f"resumed from {run} at epoch {state['epoch']}")
    net = torch.nn.parallel.DistributedDataParallel(model) if ddp else model
    scaler_ctx = dict(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    metrics_log = run / "metrics.jsonl"

    # -- the loop ---------------------------------------------------------------------------------
    last = args.epochs if args.stop_after is None else min(args.epochs, state["epoch"] + args.stop_after)
    for epoch in range(state["epoch"], last):
        rng = np.random.default_rng([args.seed, epoch])  # a function of (seed, epoch): resume is exact
        order = rng.permutation(len(train_set))
        # Every rank takes the same number of clips (the first few repeat, as DistributedSampler
        # pads): ranks with more batches than others would wait forever in DDP's all-reduce.
        order = np.resize(order, -(-len(order) // world) * world)[rank::world]
        model.train()
        t0, seen, sums = time.perf_counter(), 0, {"loss": 0.0, "action": 0.0, "privacy": 0.0, "overlap": 0.0, "mask": 0.0, "separation": 0.0, "motion": 0.0, "rank": 0.0}
        micro = args.batch_size
        batches = [order[i:i + micro] for i in range(0, len(order), micro)]
        draws = []  # the epoch's random windows, crops and mirrors, drawn first so that its clips can be read ahead
        for idx in batches:
            starts = [train_set.starts(i, rng) for i in idx]
            boxes = [random_crop(rng, cfg.image_size, args.crop_scale) if args.crop_scale < 1 else None for _ in idx]
            draws.append((idx, starts, boxes, rng.random(len(idx)) < 0.5))
        step = tick(f"epoch {epoch + 1}/{args.epochs}", len(batches))
        for bi, ((idx, starts, boxes, flip), clips) in enumerate(zip(draws, train_set.batches(d[:3] for d in draws))):
            clips[flip] = clips[flip][:, :, :, ::-1]  # mirror: every action here is left-right symmetric
            x = prepare_clips(torch.from_numpy(clips).to(device), cfg)
            y = torch.tensor([train_set.items[i].action for i in idx], device=device)
            progress = (epoch + bi / len(batches)) / args.epochs
            with torch.autocast(**scaler_ctx):
                out = net(x, grl_coeff=grl_coeff(progress) if cfg.grl else None)
            loss_a = F.cross_entropy(out.action_logits.float(), y)
            loss = loss_a
            if has_privacy:
                z = torch.from_numpy(np.stack([train_set.attributes(i, s) for i, s in zip(idx, starts)])).to(device)
                loss_p = F.binary_cross_entropy_with_logits(out.privacy_logits.float(), z)
                loss = loss + loss_p
                sums["privacy"] += loss_p.item() * len(idx)
            if args.overlap_weight:
                overlap = (out.a_act * out.a_priv).sum(-1).mean() * cfg.num_tokens
                loss = loss + args.overlap_weight * overlap
                sums["overlap"] += overlap.item() * len(idx)
            if args.uses_masks:
                counts = [train_set.counts(i, s, b) for i, s, b in zip(idx, starts, boxes)]
                px = torch.from_numpy(np.stack([np.stack(c) for c in counts])).float().view(len(idx), 2, *cfg.grid)
                px[flip] = px[flip].flip(-1)  # the masks follow the mirrored clips
                px = px.flatten(2).to(device)
                terms = {}  # only the terms asked for are computed
                if args.mask_weight:
                    terms["mask"] = mask_attention_loss(out.a_priv, px[:, 0]) + mask_attention_loss(out.a_act, px[:, 1])
                if args.separation_weight:
                    terms["separation"] = separation_loss(out.a_act, px[:, 0]) + separation_loss(out.a_priv, px[:, 1])
                if args.motion_weight:
                    motion = torch.from_numpy(tubelet_motion(clips, cfg)).to(device) * (px[:, 0] == 0)
                    terms["motion"] = mask_attention_loss(out.a_act, motion)
                if args.rank_weight:
                    terms["rank"] = rank_loss(out.a_act, out.a_priv, px, cfg.lambda_priv)
                for name, value in terms.items():
                    loss = loss + getattr(args, f"{name}_weight") * value
                    sums[name] += value.item() * len(idx)
            (loss / args.accum).backward()
            if (bi + 1) % args.accum == 0 or bi + 1 == len(batches):
                for g in opt.param_groups:
                    g["lr"] = lr_at(state["step"], total, warmup, args)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                opt.zero_grad(set_to_none=True)
                state["step"] += 1
            sums["loss"] += loss.item() * len(idx)
            sums["action"] += loss_a.item() * len(idx)
            seen += len(idx)
            step()
        rec = {"epoch": epoch + 1, "step": state["step"], "lr": opt.param_groups[0]["lr"],
               "clips_per_s": seen / (time.perf_counter() - t0), **{f"train_{k}": v / max(seen, 1) for k, v in sums.items()}}
        state["epoch"] = epoch + 1
        if master:
            model.eval()
            rec.update(validation_record(model, test_set, device=device))
            state["history"].append(rec)
            with open(metrics_log, "a") as f:
                f.write(json.dumps(rec) + "\n")
            _save_checkpoint(run, model, opt, state)
            log(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in rec.items() if not isinstance(v, dict)}))
        if ddp:
            dist.barrier()

    final = state["history"][-1] if state["history"] else {}
    if master and state["epoch"] >= args.epochs:
        save_weights(model, args.out, {"data": str(args.data), "format": args.format, "epochs": args.epochs,
                                       "label_set": "+".join(sorted({Path(d).name for d in sources})),
                                       "init": state.get("init"),
                                       "seed": args.seed, "args": asdict(args), "metrics": final,
                                       "code_version": _code_version()})
        log(f"saved {args.out}")
    if ddp:  # every rank waits for rank 0's final save: a group torn down under a working peer can abort it
        dist.barrier()
        dist.destroy_process_group()
    return final


def _code_version() -> str:
    from ppar_cli import __version__

    try:
        import subprocess

        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent).stdout.strip()
    except OSError:
        rev = ""
    return f"{__version__}+{rev}" if rev else __version__
