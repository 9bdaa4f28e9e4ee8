"""A folder's videos spread over worker processes (``workers`` > 1), each doing ``jobs`` videos at
once as a one-process run would.

Why processes: videos in one process share its GIL, which every PyTorch call gives up and takes
back. On an H100 machine 4 processes of ``--jobs 4`` anonymized a folder twice as fast as one
process of ``--jobs 8`` (CHANGELOG.md, "On one H100 (0.3.5)"); this runs that layout from one command.

This process hands the folder's videos out one at a time, the largest first, to whichever worker
asks for its next, so a long video holds up only its own worker. Each worker writes its own
outputs, appends to the one manifest (a line per write), and sends its progress, warnings and
errors here. This process imports no PyTorch. Interrupted (Ctrl-C, SIGTERM), it tells each
worker to stop at its next window, as one process would, and waits for them to clean up; killed
outright, the workers are stopped the same way (Linux). A worker that dies leaves the videos it
had in hand failed, with the reason, while the others go on with the rest.
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

from ppar_cli.core.config import weights_sha256
from ppar_cli.errors import PparError
from ppar_cli.pipeline.jobs import Job, largest_first
from ppar_cli.pipeline.manifest import append_manifest
from ppar_cli.pipeline.options import FileResult, Options, Reporter
from ppar_cli.pipeline.runtime import end_process, torch_threads

STOP_SECONDS = 60  # after the stop signal a worker finishes its window and cleans up; then it is killed


def run_workers(jobs: list[Job], opts: Options, weights: Path | None, reporter: Reporter) -> list[FileResult]:
    """Anonymize ``jobs`` (a folder's, checked by `anonymize`) in ``opts.workers`` processes."""
    n = min(opts.workers, len(jobs))
    ctx = multiprocessing.get_context("spawn")  # not fork: a forked PyTorch, CUDA above all, is not safe
    # One pipe per worker, not a shared queue: a worker killed in the middle of a message then
    # damages only its own pipe (its end closes, so reading stops there), never the others' sends.
    # The videos are handed out here, one at a time to the worker that asks (a pipe each way), not
    # from a count shared under a lock, which a worker killed while holding it would hold forever.
    pipes = [ctx.Pipe(duplex=False) for _ in range(n)]
    orders = [ctx.Pipe(duplex=False) for _ in range(n)]
    procs = [ctx.Process(target=_work, name=f"ppar-worker-{k}", daemon=True,
                         args=(jobs, replace(opts, workers=1), weights, pipes[k][1], orders[k][0], k,
                               torch_threads(n), n))  # the workers share the cores
             for k in range(n)]
    reading = {r: k for k, (r, _) in enumerate(pipes)}
    results: dict[Path, FileResult] = {}
    owner: dict[int, int] = {}  # video index -> the worker it was handed to
    errors: list[PparError] = []
    said: list[str] = []
    stopping = threading.Event()
    order = largest_first(jobs)

    def handle(event: tuple, k: int) -> None:
        kind, *args = event
        if kind == "next":  # the index of the next video, or None when there is none or the batch stops
            i = order[len(owner)] if len(owner) < len(order) and not stopping.is_set() else None
            if i is not None:
                owner[i] = k
            try:
                orders[k][1].send(i)
            except OSError:  # the worker has gone: its video, if any, is failed below
                pass
        elif kind == "start_file":
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
        stopping.set()
        for p in procs:
            if p.is_alive():
                p.terminate()

    def pump(until: float = float("inf")) -> None:
        """Events until every worker's pipe has closed (it has exited: all it sent is read), or ``until``."""
        while reading and time.monotonic() < until:
            for r in multiprocessing.connection.wait(list(reading), timeout=0.1):
                try:
                    event = r.recv()
                except Exception:  # noqa: BLE001 -- closed (the worker exited or was killed), or a message
                    del reading[r]  # cut by Ctrl-C here: nothing more is read from it, and it says so
                    r.close()
                    continue
                handle(event, reading[r])

    try:
        for p, (_, w), (r, _) in zip(procs, pipes, orders):
            p.start()
            w.close()  # the worker holds the only sending end: its exit closes the pipe
            r.close()
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
        for r, w in pipes + orders:
            r.close()
            w.close()
    for message in said:
        warnings.warn(message, stacklevel=3)
    if errors:
        raise errors[0]
    sha = ""
    for i, job in enumerate(jobs):  # a worker that died (killed, out of memory) reported no more
        if job.src not in results:
            sha, k = sha or weights_sha256(weights), owner.get(i)
            results[job.src] = FileResult(job.src, job.dst, "failed", error=(
                f"{job.src}: its worker process ended (exit code {procs[k].exitcode}) before this video was done"
                if k is not None else f"{job.src}: not started: every worker process ended (exit codes "
                f"{', '.join(str(p.exitcode) for p in procs)})"))
            append_manifest(opts.manifest, results[job.src], sha, opts)
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


def _work(jobs: list[Job], opts: Options, weights: Path | None, pipe, orders, k: int, threads: int, workers: int) -> None:
    """Worker k: the videos of ``jobs`` that the parent hands it (``orders``), on GPU k
    (modulo the GPUs there are) unless torchrun already gave the process one (LOCAL_RANK). SIGINT
    is left to the parent (a terminal's Ctrl-C reaches every process of the group), which sends
    SIGTERM once; a second stop signal cannot interrupt the cleanup."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    forward = _Forward(pipe)

    def stop(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if forward.sending:
            forward.stop_after = True
        else:
            raise KeyboardInterrupt

    asking = threading.Lock()

    def take() -> int | None:  # from any of the worker's video threads, one question at a time
        with asking:
            forward.put("next")
            try:
                return orders.recv()
            except (EOFError, OSError):  # the parent has gone: this worker is being stopped
                return None

    signal.signal(signal.SIGTERM, stop)
    _stop_with_parent()
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))  # before PyTorch is imported
    os.environ.setdefault("LOCAL_RANK", str(k))  # runtime.resolve_device's GPU
    try:
        try:
            from ppar_cli.pipeline.api import anonymize_jobs

            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                anonymize_jobs(jobs, opts, weights, forward, take, processes=workers)
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
    except (OSError, AttributeError):  # not Linux: a worker whose parent is killed finishes the videos
        return  # in hand (asking for the next finds the parent gone)
    if os.getppid() == 1:  # the parent died before that took effect
        os.kill(os.getpid(), signal.SIGTERM)
