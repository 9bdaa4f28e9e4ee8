"""Scoring windows of video with the model: the one place clips meet the device.

Both `ppar anonymize` and `ppar eval` go through :func:`score_clips`, so the two see the same
kept masks, including with hysteresis, where each window's pruning leans towards the tubelets
its predecessor kept (less flicker at the same kept fraction).
"""
from __future__ import annotations

import contextlib
import threading
import warnings
import weakref
from typing import Callable, Sequence

import numpy as np
import torch

from ppar_cli.core.clips import prepare_clips
from ppar_cli.core.model import Output, PPARModel


# One model call at a time on a GPU, when several videos are anonymized at once (--jobs): the flags
# that exact_fp32 sets are global, so calls overlapping in time would restore them under each other.
_ONE_AT_A_TIME = threading.Lock()


def score_clips(model: PPARModel, clips: torch.Tensor, keep_ratio: float, device: torch.device,
                lambda_priv: float | None = None, hysteresis: float = 0.0,
                follows: np.ndarray | None = None, prev_kept: torch.Tensor | None = None) -> Output:
    """Run the model on uint8 clips (B, T, H, W, 3) sampled at the clip stride; outputs on the CPU.

    With ``hysteresis`` > 0, window b gets a bonus of that many score standard deviations on the
    tubelets kept by the window it follows: window b-1 where ``follows[b]`` (default: all, a
    stream of consecutive windows), and ``prev_kept`` (gt, gh, gw) for b = 0. The windows then run
    one after another, since each needs its predecessor's kept mask.

    On a GPU each pass is replayed from a CUDA graph (`graphed`); without hysteresis the batch is
    padded with empty clips to the smallest graph already captured that holds it, else to a power of
    two, so that a few graphs serve every batch size (`graph_batch`).
    """
    # On the CPU those flags mean nothing, and the videos' calls overlap: each has its own threads.
    exact = exact_fp32() if device.type == "cuda" else contextlib.nullcontext()
    with exact, torch.inference_mode(), torch.autocast(device.type, enabled=False):
        if device.type == "cuda":  # page-locked, so the copy overlaps the previous batch's kernels
            clips = clips.pin_memory()
        x = prepare_clips(clips.to(device, non_blocking=True), model.cfg)
        graphs = device.type in GRAPH_DEVICES

        def run(x: torch.Tensor, sticky: torch.Tensor | None = None) -> Output:
            return model(x, keep_ratio=keep_ratio, lambda_priv=lambda_priv, sticky=sticky)

        def key(*shapes: tuple) -> tuple:
            return shapes, x.device, keep_ratio, lambda_priv, model.training

        def forward(*inputs: torch.Tensor) -> Output:
            if not graphs:
                return run(*inputs)
            return Output(*graphed(model, key(*(tuple(t.shape) for t in inputs)), run, *inputs))

        if hysteresis <= 0:
            B = len(x)
            if graphs and B < (padded := graph_batch(model, B, lambda n: key((n, *x.shape[1:])))):
                x = torch.cat([x, x.new_zeros((padded - B, *x.shape[1:]))])
            out = Output(*(t[:B] for t in forward(x)))
        else:
            follows = np.ones(len(x), bool) if follows is None else follows
            prev = prev_kept.to(device) if prev_kept is not None else None
            parts = []
            for b in range(len(x)):
                sticky = [hysteresis * prev.reshape(1, -1).float()] if follows[b] and prev is not None else []
                parts.append(forward(x[b:b + 1], *sticky))
                prev = parts[-1].kept[0]
            out = Output(*(torch.cat(ts) for ts in zip(*parts)))
        return Output(*(t.float().cpu() if t.is_floating_point() else t.cpu() for t in out))


GRAPH_DEVICES = ("cuda",)  # where passes are replayed from graphs (the tests add the CPU, with a stand-in `capture`)
# owner (a model, the face detector's network) -> {key: replay, or None where the pass runs eagerly;
# ("pool", device): the memory pool its graphs there share}
_GRAPHS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def graph_batch(owner: object, B: int, key_of: Callable[[int], tuple]) -> int:
    """The batch that B clips are padded to on a GPU: that of the smallest graph of ``owner``'s
    already captured (``key_of(batch)``) that holds them, else the power of two at or above B.
    So a video's last, shorter batch replays the graph of its full ones: on an H200 a capture for
    it (a slow eager warm-up beside the other videos' threads, then the capture) held a worker's
    last passes 1.9-3.7 s at the end of its videos, where padding costs the GPU microseconds."""
    graphs, size = _GRAPHS.get(owner, {}), 1 << (B - 1).bit_length()
    return next((n for n in (size << k for k in range(24)) if graphs.get(key_of(n)) is not None), size)


def graphed(owner: object, key: tuple, run: Callable[..., Sequence[torch.Tensor]],
            *inputs: torch.Tensor) -> list[torch.Tensor]:
    """run(*inputs) on a GPU, replayed from a CUDA graph of it captured the first time ``owner``
    meets ``key`` (which must hold the inputs' shapes and device and whatever else ``run`` bakes in).

    Why: an eager pass launches each of its hundreds of kernels from Python, giving up the GIL and
    taking it back for each, and beside a process's other video threads each taking-back waits its
    turn: on an H200 a worker's eager passes took seconds each, one after another under the lock.
    16 clips of 1280x720 ran at 0.83 of a re-encode eagerly and 0.90 replayed, 0.80 and 0.95 with
    the face guard, whose searches are replayed too (benchmarks/gpu.py, docs/speed.md, "On an H200").

    The first replay is checked against the eager pass on the same inputs (the capture's warm-up);
    a key whose capture fails or whose replay differs runs eagerly from then on (with a warning),
    giving the same outputs slower. The outputs are the caller's (copies of the graph's, which its
    next replay overwrites). An owner's graphs share one memory pool (an eval sweep of 9 keep
    ratios has as many graphs), which is safe because they never replay at once and each replay's
    outputs are copied before another replays. The caller holds scoring's lock (`exact_fp32`): a
    capture records every kernel the process launches meanwhile."""
    graphs = _GRAPHS.setdefault(owner, {})
    device = inputs[0].device
    if key not in graphs:
        try:
            if ("pool", device) not in graphs:
                graphs["pool", device] = torch.cuda.graph_pool_handle() if device.type == "cuda" else None
            replay, eager = capture(run, inputs, graphs["pool", device])
            same = all(torch.equal(a, b) for a, b in zip(replay(*inputs), eager))
        except Exception as e:  # noqa: BLE001 -- an operation or a PyTorch build that cannot be captured: eager
            graphs[key] = None
            warnings.warn(f"a CUDA graph of the {type(owner).__name__} could not be captured ({type(e).__name__}: "
                          f"{str(e)[:200]}); its passes run one kernel launch at a time (slower)", stacklevel=3)
            return list(run(*inputs))
        graphs[key] = replay if same else None
        if not same:
            warnings.warn(f"the CUDA graph of the {type(owner).__name__} gave other outputs than its eager pass; "
                          "its passes run one kernel launch at a time (slower)", stacklevel=3)
        return list(eager)
    replay = graphs[key]
    return list(run(*inputs)) if replay is None else [t.clone() for t in replay(*inputs)]


def capture(run: Callable[..., Sequence[torch.Tensor]], inputs: Sequence[torch.Tensor], pool: object
            ) -> tuple[Callable[..., Sequence[torch.Tensor]], Sequence[torch.Tensor]]:
    """run's kernels on the inputs' GPU as a CUDA graph: a function that copies its inputs into the
    graph's and replays it, and the eager pass's outputs on ``inputs``. That pass is the warm-up,
    on a side stream outside the capture (the allocator, cuBLAS's workspaces, lazily loaded
    kernels), as PyTorch's documentation asks; `make_graphed_callables` does three, but each is a
    slow eager pass at a worker's start, the first replay is checked against this one (`graphed`),
    and nothing in these networks tunes itself over passes."""
    with torch.cuda.device(inputs[0].device):
        static = [t.clone() for t in inputs]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            eager = run(*static)
        torch.cuda.current_stream().wait_stream(side)
        for t in eager:  # used on the current stream from here: their memory waits for its work too
            t.record_stream(torch.cuda.current_stream())
        graph = torch.cuda.CUDAGraph()
        # thread_local: a CUDA call that another video's thread makes meanwhile outside scoring's
        # lock (the free of its page-locked clips) must not fail that video; it cannot join this
        # capture, whose kernels all come from this thread
        with torch.cuda.graph(graph, pool=pool, capture_error_mode="thread_local"):
            outputs = run(*static)

    def replay(*given: torch.Tensor) -> Sequence[torch.Tensor]:
        for s, t in zip(static, given):
            s.copy_(t)
        graph.replay()
        return outputs
    return replay, eager


@contextlib.contextmanager
def exact_fp32():
    """Full fp32 on every device, so a GPU keeps the tubelets the CPU keeps. The kept set is a top-k
    over scores that differ by little (near-ties): on an H100, bf16 autocast flipped 1.3% of the
    decisions and TF32 (PyTorch's default in cuDNN's convolutions) 0.1% (benchmarks/gpu.py), while
    the bundled model in fp32 still scores 5,000 clips a second there. The face guard's searches on
    a GPU run under it too. One caller at a time: the flags are global."""
    with _ONE_AT_A_TIME:
        saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        try:
            yield
        finally:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
