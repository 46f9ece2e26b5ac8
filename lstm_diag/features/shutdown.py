"""Clean shutdown: termination signals as exceptions, and worker pools that stop when asked.

Every command runs inside `shutdown_signals()` (commands/common.handle_errors): SIGTERM
and SIGHUP raise `Terminated` in the main thread, so `finally` blocks run (temporary
files removed, partial metrics named, workers stopped) and the command exits 128 + the
signal's number (143 for SIGTERM), as Ctrl-C exits 130.

`run_parallel` is the one way to fan work out to processes (compare, sweeps): results
in submission order, and on Ctrl-C (once or twice), SIGTERM or any error every worker
is terminated (SIGTERM, then SIGKILL after a grace period), none left behind, within
about two seconds; the exception then propagates unchanged.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..errors import InputError

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
GRACE_SECONDS = 1.5  # between SIGTERM and SIGKILL for a worker that does not stop


class Terminated(BaseException):
    """A termination signal (SIGTERM, SIGHUP), raised where the main thread was."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
        self.signame = signal.Signals(signum).name


_received: list[int] = []


def _raise(signum, frame):
    _received.append(signum)
    raise Terminated(signum)


@contextlib.contextmanager
def shutdown_signals() -> Iterator[None]:
    """SIGTERM/SIGHUP -> `Terminated` inside the block (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _raise) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _worker_init(initializer: Callable[[], None] | None) -> None:
    """Workers leave Ctrl-C and termination to the parent, which stops them itself."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_DFL)
    if initializer is not None:
        initializer()


@contextlib.contextmanager
def signals_blocked() -> Iterator[None]:
    """No KeyboardInterrupt/Terminated while the pool is being torn down (a second Ctrl-C
    during cleanup would otherwise leave workers behind); delivered right after."""
    mask = {signal.SIGINT, *STOP_SIGNALS}
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, mask)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def stop_workers(processes: Sequence[Any]) -> None:
    """Terminate, wait up to GRACE_SECONDS, kill what is left, reap everything."""
    for p in processes:
        with contextlib.suppress(Exception):
            p.terminate()
    deadline = time.monotonic() + GRACE_SECONDS
    for p in processes:
        with contextlib.suppress(Exception):
            p.join(max(0.0, deadline - time.monotonic()))
    for p in processes:
        with contextlib.suppress(Exception):
            if p.is_alive():
                p.kill()
                p.join(1.0)


def run_parallel(
    fn: Callable[[Any], Any],
    items: Sequence[Any],
    jobs: int,
    on_done: Callable[[Any], None] | None = None,
    on_start: Callable[[], None] | None = None,
    initializer: Callable[[], None] | None = None,
) -> list[Any]:
    """[fn(item) for item in items] in up to `jobs` worker processes, in item order;
    `on_done(result)` as each finishes (in the parent). See the module docstring."""
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    results: list[Any] = [None] * len(items)
    pool = ProcessPoolExecutor(
        max_workers=max(1, min(jobs, len(items))), initializer=_worker_init, initargs=(initializer,)
    )
    seen = len(_received)
    try:
        index = {pool.submit(fn, item): k for k, item in enumerate(items)}
        if on_start is not None:
            on_start()
        pending = set(index)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in sorted(done, key=index.__getitem__):
                results[index[fut]] = fut.result()
                if on_done is not None:
                    on_done(results[index[fut]])
    except BaseException as e:
        with signals_blocked():
            stop_workers(list((getattr(pool, "_processes", None) or {}).values()))
            manager = getattr(pool, "_executor_manager_thread", None)  # shutdown() forgets it
            pool.shutdown(wait=False, cancel_futures=True)
            _join_manager(manager)
        if isinstance(e, BrokenProcessPool):
            if len(_received) > seen:  # the workers died of the signal the parent got too
                raise Terminated(_received[-1]) from None
            raise InputError(
                "a worker process died (killed by the system: out of memory?); rerun with fewer --jobs"
            ) from None
        raise
    pool.shutdown(wait=True)
    return results


def _join_manager(thread: threading.Thread | None, timeout: float = 2.0) -> None:
    """Wait for a stopped pool's management thread (it notices the dead workers at once).
    Otherwise the interpreter's exit hook for process pools can write to the thread's
    wake-up pipe while the thread is closing it (CPython 3.11 takes no lock there) and print
    "Exception ignored ... OSError: [Errno 9] Bad file descriptor" after Ctrl-C."""
    if thread is not None and thread.is_alive():
        thread.join(timeout)


def alive(pids: Sequence[int]) -> list[int]:
    """The pids among `pids` that still exist (for tests and diagnostics)."""
    out = []
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        except PermissionError:
            pass
        out.append(pid)
    return out
