"""A folder's videos spread over worker processes (``workers`` > 1), each doing ``jobs`` videos at
once as a one-process run would.

Why processes: videos in one process share its GIL, which every PyTorch call gives up and takes
back. On an H100 machine 4 processes of ``--jobs 4`` anonymized a folder twice as fast as one
process of ``--jobs 8`` (README, "On one H100 (0.3.5)"); this runs that layout from one command.

Each worker is `anonymize` on a shard of the folder: it writes its own outputs and appends to the
one manifest (a line per write), and sends its progress, warnings and errors here. This process
imports no PyTorch. Interrupted (Ctrl-C, SIGTERM), it tells each worker to stop at its next
window, as one process would, and waits for them to clean up; killed outright, the workers are
stopped the same way (Linux). A worker that dies leaves its unfinished videos failed, with the
reason, while the others go on.
"""
from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
import warnings
from dataclasses import replace
from pathlib import Path

from ppar_cli.core.config import DEFAULT_WEIGHTS, sha256_of
from ppar_cli.errors import PparError
from ppar_cli.pipeline.jobs import Job
from ppar_cli.pipeline.manifest import append_manifest
from ppar_cli.pipeline.options import FileResult, Options, Reporter
from ppar_cli.pipeline.runtime import end_process, torch_threads

STOP_SECONDS = 60  # after the stop signal a worker finishes its window and cleans up; then it is killed


def run_workers(inp: Path, out: Path, opts: Options, weights: Path | None, jobs: list[Job], manifest: Path,
                reporter: Reporter) -> list[FileResult]:
    """Anonymize ``jobs`` (this process's share of the folder ``inp``) in ``opts.workers`` processes."""
    n = min(opts.workers, len(jobs))
    ctx = multiprocessing.get_context("spawn")  # not fork: a forked PyTorch, CUDA above all, is not safe
    # One pipe per worker, not a shared queue: a worker killed in the middle of a message then
    # damages only its own pipe (its end closes, so reading stops there), never the others' sends.
    pipes = [ctx.Pipe(duplex=False) for _ in range(n)]
    a, b = opts.shard or (0, 1)  # worker k takes every n-th of this process's jobs: jobs[k::n]
    procs = [ctx.Process(target=_work, name=f"ppar-worker-{k}", daemon=True,
                         args=(inp, out, replace(opts, workers=1, shard=(a + k * b, b * n), manifest=manifest),
                               weights, pipes[k][1], k, torch_threads(n)))  # the workers share the cores
             for k in range(n)]
    reading = [r for r, _ in pipes]
    reporter.start_batch(len(jobs))
    results: dict[Path, FileResult] = {}
    errors: list[PparError] = []
    said: list[str] = []

    def handle(event: tuple) -> None:
        kind, *args = event
        if kind == "start_file":
            reporter.start_file(*args)
        elif kind == "advance":
            reporter.advance(*args)
        elif kind == "end_file":
            results[args[0].src] = args[0]
            reporter.end_file(args[0])
        elif kind == "warning" and args[0] not in said:
            said.append(args[0])
        elif kind == "error":  # the batch stops, as in one process: say so to the other workers too
            errors.append(args[0])
            stop()

    def stop() -> None:
        """Each worker stops at its next window and cleans up (SIGTERM: see _work)."""
        for p in procs:
            if p.is_alive():
                p.terminate()

    def pump(until: float = float("inf")) -> None:
        """Events until every worker's pipe has closed (it has exited: all it sent is read), or ``until``."""
        while reading and time.monotonic() < until:
            for r in multiprocessing.connection.wait(reading, timeout=0.1):
                try:
                    event = r.recv()
                except Exception:  # noqa: BLE001 -- closed (the worker exited or was killed), or a message
                    reading.remove(r)  # cut by Ctrl-C here: nothing more is read from it, and it says so
                    r.close()
                    continue
                handle(event)

    try:
        for p, (_, w) in zip(procs, pipes):
            p.start()
            w.close()  # the worker holds the only sending end: its exit closes the pipe
        pump()
    except BaseException:  # Ctrl-C or SIGTERM here: each worker stops at its next window and cleans up
        stop()
        pump(time.monotonic() + STOP_SECONDS)
        for p in procs:
            if p.is_alive():
                p.kill()
        raise
    finally:
        for p in procs:
            p.join(timeout=STOP_SECONDS)
        for r, w in pipes:
            r.close()
            w.close()
    for message in said:
        warnings.warn(message, stacklevel=3)
    if errors:
        raise errors[0]
    for i, job in enumerate(jobs):  # a worker that died (killed, out of memory) reported no more
        if job.src not in results:
            results[job.src] = FileResult(job.src, job.dst, "failed", error=(
                f"{job.src}: its worker process ended (exit code {procs[i % n].exitcode}) before this video was done"))
            append_manifest(manifest, results[job.src], sha256_of(weights or DEFAULT_WEIGHTS), opts)
            reporter.end_file(results[job.src])
    return [results[job.src] for job in jobs]


class _Forward:
    """A worker's progress, sent to the parent process (its reporter draws the bars), one message
    at a time from the worker's several video threads. A stop signal that arrives while the main
    thread is in the middle of a message takes effect once the message is whole (``stop_after``):
    half a message would garble the pipe."""

    def __init__(self, pipe):
        self.pipe, self.lock = pipe, threading.Lock()
        self.sending = self.stop_after = False

    def put(self, *event) -> None:
        main = threading.current_thread() is threading.main_thread()  # where signal handlers run
        with self.lock:
            self.sending = main
            try:
                self.pipe.send(event)
            except OSError:  # the parent stopped listening (it is stopping every worker): carry on to the cleanup
                pass
            finally:
                self.sending = False
        if main and self.stop_after:
            raise KeyboardInterrupt

    def start_batch(self, n_files: int) -> None:  # the parent counts the whole batch
        pass

    def start_file(self, src: Path, total_frames: int | None) -> None:
        self.put("start_file", src, total_frames)

    def advance(self, src: Path, frames: int) -> None:
        self.put("advance", src, frames)

    def end_file(self, result: FileResult) -> None:
        self.put("end_file", result)


def _work(inp: Path, out: Path, opts: Options, weights: Path | None, pipe, k: int, threads: int) -> None:
    """Worker k: `anonymize` on its shard, on GPU k (modulo the GPUs there are) unless torchrun
    already gave the process one (LOCAL_RANK). SIGINT is left to the parent (a terminal's Ctrl-C
    reaches every process of the group), which sends SIGTERM once; a second stop signal cannot
    interrupt the cleanup."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    forward = _Forward(pipe)

    def stop(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if forward.sending:
            forward.stop_after = True
        else:
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    _stop_with_parent()
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))  # before PyTorch is imported
    os.environ.setdefault("LOCAL_RANK", str(k))  # runtime.resolve_device's GPU
    try:
        try:
            from ppar_cli.pipeline.api import anonymize

            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                anonymize(inp, out, opts, weights, forward)
            for w in caught:
                forward.put("warning", str(w.message))
        except PparError as e:
            forward.put("error", e)
        finally:  # done: a stop signal must not interrupt the exit
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
    except KeyboardInterrupt:
        pass
    end_process()  # all sent; PyTorch's teardown would only hold up the run's end


def _stop_with_parent() -> None:
    """SIGTERM when the parent process dies, even by SIGKILL (Linux), so no worker goes on alone."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: a worker whose parent is killed finishes its share
        return
    if os.getppid() == 1:  # the parent died before that took effect
        os.kill(os.getpid(), signal.SIGTERM)
