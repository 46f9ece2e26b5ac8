"""Benchmark: how fast a sweep runs on each executor, and what each costs per run (docs/sweeps.md).

    make bench-sweep
    .venv/bin/python benchmarks/sweep.py --rounds 5 --tiny 400 --small 60

Two fixed sweeps of `compare` runs (features/compare.execute, through executor.run_many,
exactly as `lstm-diag compare` runs them):

  tiny   H = 4, T = 12, B = 2, no dynamics, NumPy engine: a run costs well under a
         millisecond of compute, so the time per run is the executor's own overhead;
  small  the built-in default config (H = 32, T = 100, B = 16, with the dynamics section):
         a realistic small run, for runs per second per worker.

Executors: local-1 (in this process), local-2 (2 worker processes, `--jobs 2`), dask-1 and
dask-2 (a LocalCluster of 1 or 2 single-threaded worker processes, `--scheduler local`).
Each round runs every executor once, in turn (alternating, so load drifts affect all
alike); the table shows medians over rounds of:

  start     seconds until the workers exist (pool created, or cluster process started and
            the client connected); paid once per sweep
  runs/s    runs per second once started
  per run   wall time x workers / runs: worker-milliseconds each run occupies (on a loaded
            machine the workers share the cores with everything else: this grows with load)
  CPU/run   CPU time of every process involved (this one, the workers, the cluster process
            with its scheduler) / runs: what a run costs in CPU, robust to the load
  overhead  CPU/run minus local-1's CPU/run: what the executor adds to each run (scheduling,
            serialization, transport, the cache-free result round trip), CPU-milliseconds

and, once: the JSON size of one run's result, the size of its cache entry, cache writes and
reads per second, and the peak memory (RSS) of a worker process. The machine may be shared
and loaded: the first lines say how many cores and the load average at the start.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lstm_diag.features import compare as C  # noqa: E402
from lstm_diag.features import executor as E  # noqa: E402
from lstm_diag.setup.config import load_config  # noqa: E402

SWEEPS = {
    "tiny": ["model.input_size=3", "model.hidden_size=4", "data.batch_size=2", "data.seq_len=12"]
    + ["diagnostics.dynamics=false", "engine=numpy"],
    "small": ["engine=numpy"],  # the built-in default config otherwise
}
EXECUTORS = ("local-1", "local-2", "dask-1", "dask-2")


def payloads(sweep: str, runs: int) -> list[dict]:
    """`runs` compare runs: the pytorch scheme over `runs` seeds (distinct weights and data)."""
    cfg, _ = load_config(None, SWEEPS[sweep])
    plan = C.plan(cfg, cfg.compare.init_specs[:1], runs, None)
    return [C.payload(r) for r in plan]


def cpu_tree(root: int) -> float:
    """CPU seconds (user + system) used so far by `root` and every live process below it,
    plus the reaped children of this process (a worker pool shut down before the end)."""
    tick = os.sysconf("SC_CLK_TCK")
    stats = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            stats[int(d.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)  # ppid, cpu
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    total, todo = reaped.ru_utime + reaped.ru_stime, [root]
    while todo:
        pid = todo.pop()
        total += stats.get(pid, (0, 0.0))[1]
        todo += [p for p, (ppid, _) in stats.items() if ppid == pid]
    return total


def timed(fn, jobs: list[dict], workers: int, scheduler: str | None, tree: int) -> tuple[float, float, float]:
    """(seconds to start, seconds to run, CPU seconds to run) of one sweep on one executor;
    the CPU time is every process's involved (this one, workers, the cluster process)."""
    t0 = time.perf_counter()
    marks: list[tuple[float, float]] = []

    def started():
        marks.append((time.perf_counter(), cpu_tree(tree)))

    E.run_many(fn, jobs, jobs=workers, scheduler=scheduler, on_start=started)
    t1, c1 = time.perf_counter(), cpu_tree(tree)
    return marks[0][0] - t0, t1 - marks[0][0], c1 - marks[0][1]


def one_round(work: dict[str, list[dict]], rows: dict) -> None:
    from lstm_diag.features.local_cluster import ClusterProcess

    for name in EXECUTORS:
        kind, n = name.split("-")
        n = int(n)
        start = 0.0
        server = None
        if kind == "dask":
            t0 = time.perf_counter()
            server = ClusterProcess(n)
            start = time.perf_counter() - t0  # plus the client's connection, counted below
        try:
            for sweep, jobs in work.items():
                s, wall, cpu = timed(C.execute, jobs, n, server.address if server else None, os.getpid())
                rows.setdefault((sweep, name), []).append((start + s, wall, n, len(jobs), cpu))
        finally:
            if server is not None:
                server.stop()


def sizes(work: dict[str, list[dict]]) -> dict:
    """Result and cache-entry sizes of one run per sweep; cache writes and reads per second."""
    out = {}
    with tempfile.TemporaryDirectory() as d:
        for sweep, jobs in work.items():
            result = C.execute(jobs[0])
            cache = E.RunCache(d)
            t0 = time.perf_counter()
            for p in jobs:
                cache.put(C.execute, p, result)
            t1 = time.perf_counter()
            for p in jobs:
                cache.get(C.execute, p)
            t2 = time.perf_counter()
            entry = cache.path(E.run_key(C.execute, jobs[0])).stat().st_size
            out[sweep] = {
                "result_bytes": len(json.dumps(result)),
                "entry_bytes": entry,
                "writes_per_s": len(jobs) / (t1 - t0),
                "reads_per_s": len(jobs) / (t2 - t1),
            }
    return out


def worker_rss_mb(work: dict[str, list[dict]]) -> dict:
    """Peak RSS of a worker process after running the small sweep (local-2 and dask-2)."""
    import distributed

    from lstm_diag.features.local_cluster import ClusterProcess

    jobs = work["small"]
    E.run_many(C.execute, jobs, jobs=2)
    local = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    server = ClusterProcess(2)
    try:
        E.run_many(C.execute, jobs, scheduler=server.address)
        with distributed.Client(server.address) as client:
            peaks = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    finally:
        server.stop()
    return {"local-2": local, "dask-2": max(peaks.values())}


def report(rows: dict, extra: dict, rss: dict) -> None:
    base = {}
    head = ("sweep", "executor", "runs", "start s", "runs/s", "per run ms", "CPU/run ms", "overhead ms")
    print("{:6} {:8} {:>5} {:>8} {:>8} {:>11} {:>11} {:>12}".format(*head))
    for (sweep, name), rs in sorted(rows.items(), key=lambda kv: (kv[0][0], EXECUTORS.index(kv[0][1]))):
        start = statistics.median(r[0] for r in rs)
        rate = statistics.median(r[3] / r[1] for r in rs)
        per_run = statistics.median(1000 * r[1] * r[2] / r[3] for r in rs)
        cpu = statistics.median(1000 * r[4] / r[3] for r in rs)
        if name == "local-1":
            base[sweep] = cpu
        over = cpu - base.get(sweep, cpu)
        cells = (sweep, name, rs[0][3], start, rate, per_run, cpu, over)
        print("{:6} {:8} {:5d} {:8.2f} {:8.1f} {:11.2f} {:11.2f} {:12.2f}".format(*cells))
    for sweep, e in extra.items():
        print(
            f"{sweep}: result {e['result_bytes'] / 1024:.1f} KiB/run as JSON, cache entry "
            f"{e['entry_bytes'] / 1024:.1f} KiB; cache {e['writes_per_s']:.0f} writes/s, "
            f"{e['reads_per_s']:.0f} reads/s"
        )
    print("peak RSS per worker (small sweep): " + ", ".join(f"{k} {v:.0f} MB" for k, v in rss.items()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="rounds; medians over them [3]")
    ap.add_argument("--tiny", type=int, default=200, help="runs in the tiny sweep [200]")
    ap.add_argument("--small", type=int, default=40, help="runs in the small sweep [40]")
    args = ap.parse_args(argv)
    E.require_distributed()
    print(f"{os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f} at the start; {args.rounds} rounds")
    work = {"tiny": payloads("tiny", args.tiny), "small": payloads("small", args.small)}
    C.execute(work["small"][0])  # imports and first-call costs out of the first round
    rows: dict = {}
    for k in range(args.rounds):
        one_round(work, rows)
        print(f"round {k + 1}/{args.rounds} done (load {os.getloadavg()[0]:.1f})", file=sys.stderr)
    report(rows, sizes(work), worker_rss_mb(work))
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
