"""`--scheduler local`: a Dask LocalCluster in a process and session of its own.

Why its own session: a terminal sends Ctrl-C to its whole foreground process group. Worker
processes in the command's group would each get it too, and die with a traceback (or
half-start) while the command is trying to cancel the runs and close them. Started with
`start_new_session=True`, the cluster process and its workers never see the terminal's
signals: the command alone receives Ctrl-C and SIGTERM, at any moment, start-up
included, and closes the cluster.

The cluster lives as long as its stdin: `stop` closes it (so does the kernel when the
command dies, even of SIGKILL), and the cluster process closes the cluster, which ends
its workers, and exits. Its output (Dask's logs) goes nowhere; the one line it writes on
stdout is the scheduler's address, or `error: ...`.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from ..errors import InputError

GRACE_SECONDS = 3.0  # for the cluster to close itself (idle workers), before its workers are killed
STOP_SECONDS = 20.0  # for the cluster process to end, before the command kills it


class ClusterProcess:
    """The running cluster process: its scheduler's `address`, and `stop()`."""

    def __init__(self, n_workers: int):
        root = str(Path(__file__).resolve().parents[2])  # the folder lstm_diag is imported from
        path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
        self.scratch = tempfile.mkdtemp(prefix="lstm-diag-dask-")  # the workers' folders
        self.proc = subprocess.Popen(
            [sys.executable, "-m", __name__, str(n_workers), self.scratch],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": path},
            start_new_session=True,
        )
        try:
            line = self.proc.stdout.readline().decode(errors="replace").strip()  # type: ignore[union-attr]
        except BaseException:  # Ctrl-C while it starts: nothing to close gracefully
            self.stop(at_once=True)
            raise
        if not line or line.startswith("error:"):
            self.stop(at_once=True)
            why = line.removeprefix("error:").strip() or f"it exited with code {self.proc.returncode}"
            raise InputError(f"--scheduler local: the Dask LocalCluster did not start: {why}")
        self.address = line

    def stop(self, at_once: bool = False) -> None:
        """Close stdin and wait for the cluster process to close the cluster; `at_once`,
        after STOP_SECONDS, or when interrupted meanwhile (Ctrl-C again), SIGKILL its process
        group: it and its workers, nothing else. The scratch folder is removed in every case;
        an interruption is raised again once all is done."""
        import shutil
        import signal

        with contextlib.suppress(OSError):
            self.proc.stdin.close()  # type: ignore[union-attr]
        interrupted: BaseException | None = None
        try:
            self.proc.wait(0 if at_once else STOP_SECONDS)
        except subprocess.TimeoutExpired:
            pass
        except BaseException as e:  # KeyboardInterrupt, Terminated: stop at once
            interrupted = e
        if self.proc.returncode is None:
            with contextlib.suppress(OSError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: pgid == its pid
            self.proc.wait()
        with contextlib.suppress(OSError):
            self.proc.stdout.close()  # type: ignore[union-attr]
        shutil.rmtree(self.scratch, ignore_errors=True)
        if interrupted is not None:
            raise interrupted


def serve(n_workers: int, scratch: str) -> int:
    """The cluster process: start the cluster, print its address, wait for EOF, close it."""
    import logging
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # closes the cluster (finally below)
    logging.getLogger("distributed").setLevel(logging.CRITICAL)
    try:
        import distributed

        cluster = distributed.LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.CRITICAL,
            local_directory=scratch,
        )
    except Exception as e:  # one line for the command to show
        print(f"error: {type(e).__name__}: {e}".replace("\n", " "), flush=True)
        return 1
    try:
        print(cluster.scheduler_address, flush=True)
        sys.stdin.buffer.read()  # until the command closes stdin, or dies
    finally:
        _close(cluster)
    return 0


def _close(cluster) -> None:
    """Close the cluster: gracefully if its workers stop within GRACE_SECONDS (idle ones do),
    else by SIGKILL to the workers still alive (a cancelled run can take minutes). Should
    even that hang, the whole process group (this process and its workers only: the session
    is its own) is killed."""
    import multiprocessing
    import signal
    import threading

    last_resort = threading.Timer(4 * GRACE_SECONDS, os.killpg, (os.getpgid(0), signal.SIGKILL))
    last_resort.daemon = True
    last_resort.start()
    with contextlib.suppress(Exception):
        cluster.close(timeout=GRACE_SECONDS)
    for worker in multiprocessing.active_children():
        with contextlib.suppress(Exception):
            worker.kill()
            worker.join(GRACE_SECONDS)
    last_resort.cancel()


if __name__ == "__main__":
    code = serve(int(sys.argv[1]), sys.argv[2])
    os._exit(code)  # the cluster is closed: skip distributed's exit hooks (seconds of waiting for nothing)
