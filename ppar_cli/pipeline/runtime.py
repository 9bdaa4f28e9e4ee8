"""How a process running ppar uses the machine: which device, how many PyTorch threads, glibc's
heap, and how quickly threads hand over the GIL. Nothing here imports PyTorch at import time."""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from ppar_cli.errors import UsageError
from ppar_cli.pipeline.options import check_device

if TYPE_CHECKING:
    import torch


def resolve_device(name: str) -> torch.device:
    """cpu, or cuda (the LOCAL_RANK-th GPU when launched by torchrun)."""
    import torch

    check_device(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("cuda: no CUDA GPU is available to PyTorch here (use cpu or auto)", option="device")
    if name == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
    return torch.device(name)


def gpu_may_be_here() -> bool:
    """False where PyTorch cannot see a CUDA GPU, told without importing it: Linux without NVIDIA's
    device nodes, macOS. Elsewhere only PyTorch knows (resolve_device)."""
    if sys.platform == "darwin":
        return False
    if sys.platform.startswith("linux"):
        return any(Path("/dev").glob("nvidia*"))
    return True


def cores() -> int:
    """The CPU cores this process may run on (its affinity, which a container or taskset narrows)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def local_processes() -> int:
    """The processes torchrun started together on this machine (LOCAL_WORLD_SIZE; 1 otherwise),
    which share its cores and memory: each anonymizes or trains on its share."""
    return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def process_cores() -> int:
    """This process's share of the cores (`cores`, among `local_processes`), at least one."""
    return max(1, cores() // local_processes())


VIDEO_BYTES = 3 * 2**30  # memory a video at once may take: one 3840x2160 video peaked at 2.7-3.0 GB, two at 4.8-5.4 (docs/speed.md)


def memory() -> int:
    """The memory this process may use: the machine's, or its cgroup's limit where lower (a container)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: memory does not limit the layout
        return 2**62
    for limit in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):  # cgroup v2, v1
        try:
            text = Path(limit).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


def memory_free() -> int:
    """The memory this process can still take: the machine's available memory (free, and cache
    it can reclaim), or what its cgroup's limit leaves where less (the cgroup's use less its
    inactive file cache, which the kernel reclaims before it kills)."""
    free = memory()
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = min(free, int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):  # not Linux: the total stands
        pass
    for root, limit, used, cache in (("/sys/fs/cgroup", "memory.max", "memory.current", "inactive_file"),  # v2, v1
                                     ("/sys/fs/cgroup/memory", "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")):
        try:
            texts = (Path(root) / limit).read_text().strip(), (Path(root) / used).read_text().strip()
            stat = dict(line.split() for line in (Path(root) / "memory.stat").read_text().splitlines() if line.count(" ") == 1)
        except (OSError, ValueError):
            continue
        if all(t.isdigit() for t in texts):
            free = min(free, int(texts[0]) - int(texts[1]) + int(stat.get(cache, 0)))
    return max(0, free)


def folder_layout(device: str, workers: int | None, jobs: int | None) -> tuple[int, int]:
    """(workers, jobs) for a folder: the user's, and for what is not given, the machine's.

    Where the model may run on a GPU (``device`` cuda, or auto with NVIDIA's devices here) it costs
    the CPU little, and a folder goes as fast as the cores decode and encode: a video at once for
    every core, 4 to a process (a process's videos share its GIL), or --jobs to a process. On an
    H100 machine with 16 cores, 4 workers of --jobs 4 were the fastest of the layouts tried for 16
    videos of 720p: 0.736 of a plain re-encode's speed, against 0.673 to 0.684 for 4 processes by
    --shard and 8 workers of --jobs 2, and 0.503 for one process of --jobs 8 (docs/speed.md, "On a GPU: one H100").
    Elsewhere the model's threads take the cores: one process of 2 videos, the fastest on 2 cores
    (docs/speed.md); CPU-only machines with many cores were not measured. Fewer where
    memory is short: a video at once for every VIDEO_BYTES, so that a folder of 4K video fits (a
    720p video takes about 0.5 GB). Processes that torchrun started together on this machine
    (LOCAL_WORLD_SIZE) share its cores and memory.
    """
    fits = max(1, memory() // local_processes() // VIDEO_BYTES)  # videos at once
    if not (device == "cuda" or (device == "auto" and gpu_may_be_here())):
        return workers or 1, jobs or min(2, fits)
    jobs = jobs or min(4, fits)
    return workers or max(1, min(64, process_cores() // jobs, fits // jobs)), jobs


def torch_threads(processes: int = 1) -> int:
    """PyTorch's CPU threads for each of ``processes`` anonymizing at once: a share of the cores the
    pipeline's other stages leave (the decoder, the face guard's two, the encoder's), at least one.
    On 2 cores a 640x360 run with the guard took a median 12.1 s with one thread against 13.1 s
    with two (three runs each), and as long with the guard off."""
    return max(1, (process_cores() // 2 - 1) // processes)


def decoder_threads(videos: int, share: float = 0.0) -> int:
    """FFmpeg's threads for a video's decoder when ``videos`` are anonymized at once by this run
    (in every worker process): a share of its cores (`process_cores`), at least one; for one
    video, FFmpeg's choice (0: about a thread per core, up to 16). A video that is more of the run
    than that (``share``: its part of the folder's bytes, jobs.byte_shares) gets its part of the
    cores, up to 16: the largest starts first, among as many videos as there are cores, and is
    the one left decoding alone at the folder's end, where on one thread it could hold the run
    while the other cores wait (an estimate; its measurement on the H200 is prepared in
    `benchmarks/gpu.py`'s docstring, not run).

    FFmpeg's choice for each of several videos put 16 decoding threads behind each of 16 videos on
    an H200 machine's 16 cores, where each worker's import of PyTorch, which nothing can be scored
    before, ended 8.3-8.9 s into the run against 5.8-6.6 s with a thread a video, in one call
    (3.9-4.9 s alone; docs/speed.md, "On an H200", "Ways to start, compared"; end to end within that
    call's noise). On this 2-core machine, with 2 fronts of 720p decoding meanwhile, `import
    torch` took 4.8-5.7 s with FFmpeg's choice and 2.8-3.8 s with a thread each (2.2-2.9 s alone),
    and the 2 videos decoded in 3.9-4.1 s against 4.3-4.7 s, with a twentieth of the involuntary
    context switches (one-off timings, benchmarks/gpu.py's 30 s clips). The threads a larger
    video adds are at most the cores, however the folder is made."""
    if videos <= 1:
        return 0
    return max(1, process_cores() // videos, min(16, round(process_cores() * share)))


def guard_threads(videos: int) -> int | None:
    """onnxruntime's threads for each face search when ``videos`` are anonymized at once in this
    process: one each when there are several, whose fronts then search in parallel. For one video,
    onnxruntime's default as before (None: a thread per physical core; two on this 2-core machine):
    one thread was not measured there, where a slower search could hold the video back.

    With several videos that default mostly switched contexts, each search waking and parking many
    threads around each operator: on an H100 machine (16 cores, 4 workers of --jobs 4, 16 videos of
    720p) the guard added 172 CPU-s to the 346 of a run without it, against 98 to 405 with one
    thread (two calls, each on its own machine), and the run with the guard went from 0.41 to 0.45
    of a plain re-encode's speed there (docs/speed.md, "On a GPU: one H100"). Several workers of one video each keep
    the default (not measured).
    """
    return 1 if videos > 1 else None


def flat_heap() -> None:
    """glibc's heap, tuned for frame-sized buffers and the model's activations.

    - Buffers up to 32 MiB (glibc's largest threshold; a 4K frame is 25 MB) come from the heap and
      are reused. With 1 MiB, every activation of the model (the stem's reach 38 MB for 32 frames)
      and every frame was a fresh mmap, faulted in page by page: 1.6 million page faults and 4.6 s
      of system time in a 14 s 640x360 run; 0.3 million and 2 s now. Only larger ones are mmapped.
    - The heaps grow in steps of 64 MiB and give back only what exceeds 256 MiB at their top,
      instead of glibc's 128 KiB, so the same memory serves window after window (each step
      measured by page faults and peak RSS in `benchmarks/bench.py --long 8`).
    - The threshold is set, not adaptive: glibc's adaptive one moved frame buffers into per-thread
      arenas that fragment, and peak memory crept up with the video's length (the same benchmark
      checks it: +12% from 10 s to 80 s at 1280x720, against +15% with the old 1 MiB).
    - Two arenas, not glibc's one per thread that allocates (up to 8 per core): memory freed in the
      threads' arenas crept up with the video's length. `benchmarks/bench.py --sizes 320x240
      --seconds 60 --long 16 --free-model ...` (docs/speed.md): peak RSS +12.4% from
      the 60 s clip to the 16-minute one with MALLOC_ARENA_MAX=64, +0.4% with two; no slower here.
      MALLOC_ARENA_MAX, when set, decides.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-2, 64 << 20)  # M_TOP_PAD
        libc.mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD
        if "MALLOC_ARENA_MAX" not in os.environ:
            libc.mallopt(-8, 2)  # M_ARENA_MAX
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


def trim_heap() -> None:
    """Hand the free pages of glibc's heaps back to the system (malloc_trim). After a burst of
    large temporaries that glibc's adaptive threshold put on the heap, smaller allocations that
    outlive them pin their pages: a ClipSet of 288 synthetic videos peaked at 1.36 GB without a
    trim after each video, 0.67 GB with (README, "ppar train"). Nothing where glibc is not."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def end_process(code: int = 0) -> NoReturn:
    """End this process now, with stdout and stderr flushed, instead of tearing the interpreter
    down. That teardown is mostly PyTorch's: 134 operator libraries whose finalizers each clear the
    cache of torch.ops, 0.2-0.3 s a process on 2 cores after PyTorch's import and a run (one-off:
    the time from the end of the work to the process's end). Only for a process whose work is done: every
    file closed, no thread of ppar's running (the `ppar` program, a worker process)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a reader that has gone (ppar ... | head): nothing left to say
            pass
    os._exit(code)


@contextlib.contextmanager
def model_threads():
    """PyTorch's threads for the model on the CPU (`torch_threads`), where it runs on the CPU and,
    on a GPU machine, while the GPU starts (gpu_start.py); restored afterwards. OMP_NUM_THREADS,
    when set (as for each of --workers' processes), decides instead."""
    import torch

    if "OMP_NUM_THREADS" in os.environ:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(torch_threads())
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def quick_gil_handoff():
    """Python's switch interval at 0.1 ms while videos are anonymized; restored afterwards.

    Each PyTorch operation gives up the GIL and must take it back, and while another thread runs
    Python that waits up to the switch interval (5 ms by default). The bundled model's forward pass
    on 4 windows took 116 ms alone on this 2-core machine, 10.0 s beside 8 threads running Python,
    and 1.1 s with 0.1 ms (`benchmarks/gpu.py --device cpu --quick --only contention`). On a GPU,
    where the operations themselves take microseconds, such waits are most of a pass, and a process
    with several videos (--jobs) has a decoder, a scorer and an encoder thread for each.

    It starts with the first fronts (api.anonymize_jobs), before PyTorch's import, which holds the
    GIL: a 720p front decoding meanwhile made 6 windows in the 3 s before the model took its first
    at 5 ms, 8 at 0.1 ms (one-off timing, one run each, start buffer 1 GiB).
    """
    before = sys.getswitchinterval()
    sys.setswitchinterval(min(before, 1e-4))
    try:
        yield
    finally:
        sys.setswitchinterval(before)
