"""features/executor.py: run_many's backends give the same bytes; the cache is exact, never
trusted when damaged, and makes an interrupted sweep resumable (issue 18, items 3-4).

Tests that start a Dask LocalCluster are marked `slow` (seconds of start-up each on a loaded
machine): `make test-slow` and CI (.ci/run) run them; they skip without `distributed`.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pytest
from conftest import run, start

from lstm_diag.errors import InputError, InputWarning
from lstm_diag.features import executor as E
from lstm_diag.features.shutdown import alive

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--set", "model.hidden_size=4", "--set", "model.input_size=3", "--set", "data.batch_size=2"]
SMALL += ["--set", "data.seq_len=12", "--set", "diagnostics.dynamics=false", "--set", "engine=numpy"]
SWEEP = ["compare", "--init", "pytorch,chrono", "--seeds", "3", "--format", "json", *SMALL]


def square(payload: dict) -> dict:
    """A module-level run for the unit tests: plain data in, plain data out."""
    x = payload["x"]
    return {
        "x": x,
        "square": x * x,
        "b": {"z": 1, "a": 2},
        "special": [math.nan, math.inf, -math.inf, -0.0, 5e-324, 0.1 + 0.2],
    }


def _same(a, b) -> bool:
    return E.canonical(a) == E.canonical(b)  # NaN == NaN here, as in the JSON


# ----------------------------------------------------------------------------- run_many


def test_in_process_and_processes_give_the_same_results_in_payload_order():
    payloads = [{"x": k} for k in range(7)]
    seen = []
    one = E.run_many(square, payloads, on_done=lambda k, r, cached: seen.append((k, cached)))
    two = E.run_many(square, payloads, jobs=2)
    assert [r["x"] for r in one] == list(range(7)) and _same(one, two)
    assert sorted(seen) == [(k, False) for k in range(7)]


def test_results_round_trip_exactly_special_floats_included():
    (r,) = E.run_many(square, [{"x": 3}])
    nan, inf, ninf, nzero, tiny, third = r["special"]
    assert math.isnan(nan) and inf == math.inf and ninf == -math.inf
    assert math.copysign(1, nzero) == -1 and tiny == 5e-324 and third == 0.1 + 0.2
    assert isinstance(r["square"], int)
    assert list(r) == ["x", "square", "b", "special"] and list(r["b"]) == ["z", "a"]  # keys keep their order


def test_a_result_that_is_not_plain_json_is_refused():
    with pytest.raises(InputError, match="not plain JSON data"):
        E.run_many(_not_plain, [{"x": 1}])


def _not_plain(payload):
    return {"x": object()}


# -------------------------------------------------------------------------------- cache


def test_cache_hits_are_reported_and_identical(tmp_path):
    payloads = [{"x": k} for k in range(5)]
    first = E.run_many(square, payloads, cache=tmp_path)
    entries = sorted(tmp_path.glob("*/*.json"))
    assert len(entries) == 5 and all(p.parent.name == p.name[:2] for p in entries)
    seen = []
    again = E.run_many(
        square, payloads + [{"x": 9}], cache=tmp_path, on_done=lambda k, r, c: seen.append((k, c))
    )
    assert _same(again[:5], first) and again[5]["square"] == 81
    assert json.dumps(again[:5]) == json.dumps(first)  # keys in the same order too
    assert sorted(seen) == [(k, k < 5) for k in range(6)]


def test_the_key_covers_payload_function_and_version(tmp_path, monkeypatch):
    import lstm_diag

    key = E.run_key(square, {"x": 1})
    assert key == E.run_key(square, {"x": 1}) and key != E.run_key(square, {"x": 2})
    assert key != E.run_key(_not_plain, {"x": 1})
    monkeypatch.setattr(lstm_diag, "__version__", "0.0.0-other")
    assert key != E.run_key(square, {"x": 1})


@pytest.mark.parametrize(
    "damage",
    [
        lambda t: t[: len(t) // 2],  # a partial write
        lambda t: "",  # an empty file
        lambda t: t.replace('"square":4', '"square":5'),  # a changed number: checksum
        lambda t: t.replace('"x":2}', '"x":3}', 1),  # another payload under this key
        lambda t: "\udcff",  # not UTF-8
    ],
)
def test_a_damaged_entry_is_recomputed_with_a_warning(tmp_path, damage):
    cache = E.RunCache(tmp_path)
    (good,) = E.run_many(square, [{"x": 2}], cache=cache)
    (p,) = tmp_path.glob("*/*.json")
    p.write_bytes(damage(p.read_text()).encode("utf-8", "surrogateescape"))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        seen = []
        (again,) = E.run_many(square, [{"x": 2}], cache=cache, on_done=lambda k, r, c: seen.append(c))
    assert seen == [False] and _same(again, good)
    assert [x.category for x in w] == [InputWarning] and "computed again" in str(w[0].message)
    assert E.RunCache(tmp_path).get(square, {"x": 2}) is not None  # rewritten whole


def test_a_file_in_place_of_the_cache_folder_is_exit_2(tmp_path):
    (tmp_path / "c").write_text("")
    r = run(*SWEEP, "--set", f"compare.cache={tmp_path / 'c'}")
    assert (
        r.exit_code == 2
        and r.stderr == f"error: {tmp_path / 'c'}: the cache must be a folder; this is a file\n"
    )
    assert run(*SWEEP, "--cache", tmp_path / "c").exit_code == 2  # the flag: click's own check


def test_concurrent_writers_share_a_cache(tmp_path):
    """Four processes fill one cache with overlapping runs at once: every entry is whole."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from lstm_diag.features.executor import run_many\n"
        "run_many(dict, [{'x': k, 'pad': 'x' * 20000} for k in range(40)], cache=sys.argv[2])\n"
    )
    args = [sys.executable, "-c", code, str(ROOT), str(tmp_path)]
    procs = [subprocess.Popen(args) for _ in range(4)]
    assert [p.wait(timeout=60) for p in procs] == [0] * 4
    cache = E.RunCache(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert all(cache.get(dict, {"x": k, "pad": "x" * 20000})["x"] == k for k in range(40))
    assert len(list(tmp_path.glob("*/*.json"))) == 40 and not list(tmp_path.glob("*/.*"))  # no temp files


# ------------------------------------------------------------------------------- inputs


def test_an_input_file_is_part_of_the_key_and_checked_on_the_worker(tmp_path):
    f = tmp_path / "d.bin"
    f.write_bytes(b"one")
    inputs = E.fingerprint_inputs({"data.path": str(f), "model.weights": None})
    assert list(inputs) == ["data.path"]
    E.verify_inputs(inputs)
    time.sleep(0.01)
    f.write_bytes(b"two")  # another file under the same path
    assert E.fingerprint_inputs({"data.path": str(f)}) != inputs
    with pytest.raises(InputError, match="data.path: .* is not the file the sweep was planned with"):
        E.verify_inputs(inputs)


# ---------------------------------------------------------------------- compare, the CLI


def test_compare_with_a_cache_gives_the_same_document_and_counts(tmp_path):
    plain = run(*SWEEP)
    first = run(*SWEEP, "--cache", tmp_path / "c")
    again = run(*SWEEP, "--jobs", "2", "--cache", tmp_path / "c")
    assert plain.exit_code == first.exit_code == again.exit_code == 0, again.output
    assert plain.stdout == first.stdout == again.stdout
    assert first.stderr.rstrip().endswith("0 cached, 6 computed")
    assert again.stderr.rstrip().endswith("6 cached, 0 computed")


def test_memory_budget_counts_the_runs_in_flight(monkeypatch):
    from lstm_diag.errors import ConfigError
    from lstm_diag.features import compare as C
    from lstm_diag.formats import budget
    from lstm_diag.setup.config import load_config
    from lstm_diag.setup.problem import memory_parts

    cfg, _ = load_config(None, ["data.seq_len=2000", "data.batch_size=64", "model.hidden_size=256"])
    specs = cfg.compare.init_specs[:1]
    one = sum(memory_parts(cfg, "compare", runs=1, jobs=1).values())
    monkeypatch.setattr(budget, "memory_limit", lambda: int(one * 4))
    C.plan(cfg, specs, 8, None, jobs=2)  # two analyses in flight fit
    with pytest.raises(ConfigError, match="this compare needs about"):
        C.plan(cfg, specs, 8, None, jobs=8)


def test_scheduler_without_distributed_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    r = run(*SWEEP, "--scheduler", "local")
    assert r.exit_code == 2 and r.stdout == ""
    assert (
        r.stderr.strip()
        == "error: --scheduler needs Dask's distributed package: pip install 'lstm-diag[dask]'"
    )


def test_jobs_with_a_scheduler_address_is_refused_not_ignored():
    r = run(*SWEEP, "--scheduler", "tcp://10.0.0.1:8786", "--jobs", "4")
    assert r.exit_code == 2
    assert r.stderr == (
        "error: --jobs: 4 workers cannot be chosen on the Dask scheduler tcp://10.0.0.1:8786 "
        "(its cluster has its own workers); leave jobs at 1\n"
    )


@pytest.mark.parametrize("address", ["tcp://a b:1", "", "tcp://host:"])
def test_a_bad_scheduler_address_is_exit_2_naming_the_field(address):
    r = run(*SWEEP, "--scheduler", address)
    assert r.exit_code == 2 and r.stderr.startswith("error: --scheduler: 'local' (a Dask LocalCluster")


# ------------------------------------------------------------------ signals, resumption


LONGER_SETS = ["data.seq_len=100", "diagnostics.dynamics=false", "engine=numpy", "model.hidden_size=16"]
LONGER = ["compare", "--init", "pytorch", "--seeds", "16", "--format", "json"]
LONGER += [a for s in LONGER_SETS for a in ("--set", s)]


@pytest.mark.parametrize("jobs", ["1", pytest.param("2", marks=pytest.mark.slow)])
def test_an_interrupted_sweep_resumes_from_the_cache_with_identical_output(tmp_path, jobs):
    cache = tmp_path / "cache"
    proc = start(tmp_path, *LONGER, "--jobs", jobs, "--cache", cache)
    deadline = time.time() + 60
    while time.time() < deadline and len(list(cache.glob("*/*.json"))) < 3:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C at a terminal
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and out == b"", err.decode()
    kept = len(list(cache.glob("*/*.json")))
    assert 3 <= kept < 16, "the sweep was not interrupted mid-way"
    assert not list(cache.glob("*/.*")), "a temporary file was left in the cache"
    resumed = run(*LONGER, "--cache", cache)
    assert resumed.exit_code == 0, resumed.output
    assert resumed.stderr.rstrip().endswith(f"{kept} cached, {16 - kept} computed")
    assert resumed.stdout == run(*LONGER).stdout


# ---------------------------------------------------------------------------------- Dask


def _cluster(n: int = 2):
    distributed = pytest.importorskip("distributed", reason="Dask sweeps need the dask extra")
    import logging

    return distributed.LocalCluster(
        n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
        silence_logs=logging.CRITICAL,
    )  # fmt: skip


@pytest.mark.slow
def test_same_bytes_with_jobs_1_jobs_2_and_a_local_dask_cluster():
    pytest.importorskip("distributed", reason="Dask sweeps need the dask extra")
    sweep = [*SWEEP, "--set", "model.hidden_size=64", "--set", "data.seq_len=40"]
    one = run(*sweep)
    two = run(*sweep, "--jobs", "2")
    dask = run(*sweep, "--scheduler", "local", "--jobs", "2")
    assert one.exit_code == two.exit_code == dask.exit_code == 0, dask.output
    assert one.stdout == two.stdout == dask.stdout
    assert "on a Dask LocalCluster of 2 worker(s)" in dask.stderr


@pytest.mark.slow
def test_a_worker_killed_mid_sweep_costs_only_its_runs():
    """A real LocalCluster of 2 worker processes; one is SIGKILLed once the sweep is under
    way; Dask reruns its task elsewhere and the document is the one of --jobs 1."""
    from lstm_diag.features import compare as C
    from lstm_diag.report.jsonout import dumps
    from lstm_diag.setup.config import load_config

    cfg, _ = load_config(None, [*LONGER_SETS, "seed=5"])
    specs = cfg.compare.init_specs[:1]
    runs = C.plan(cfg, specs, 16, None)
    reference = dumps(C.compare(cfg, specs, 16, runs=runs))
    with _cluster() as cluster:
        pids = [n.process.pid for n in cluster.workers.values()]
        killed = []

        def kill_one(run, cached):
            if not killed:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])

        doc = C.compare(cfg, specs, 16, runs=runs, scheduler=cluster.scheduler_address, on_done=kill_one)
        assert killed and not alive(killed)
        assert dumps(doc) == reference


def _descendants(root: int) -> list[int]:
    out, todo = [], [root]
    while todo:
        parent = todo.pop()
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    stat = (d / "stat").read_text()
                except OSError:
                    continue
                if int(stat.rpartition(")")[2].split()[1]) == parent:
                    out.append(int(d.name))
                    todo.append(int(d.name))
    return out


@pytest.mark.slow
@pytest.mark.parametrize(
    "signals, code, when",
    [
        ([signal.SIGINT], 130, "running"),
        ([signal.SIGINT, signal.SIGINT], 130, "running"),
        ([signal.SIGTERM], 143, "running"),
        ([signal.SIGINT], 130, "starting"),  # workers spawning: none may see it or be left
    ],
)
def test_a_dask_sweep_stops_on_signals_and_closes_its_cluster(tmp_path, signals, code, when):
    pytest.importorskip("distributed", reason="Dask sweeps need the dask extra")
    scratch = set(Path(tempfile.gettempdir()).glob("lstm-diag-dask-*"))
    proc = start(tmp_path, *LONGER, "--seeds", "200", "--scheduler", "local", "--jobs", "2")
    deadline = time.time() + 120
    started = 1 if when == "starting" else 3  # the cluster process, then its 2 workers
    cluster: list[int] = []
    while time.time() < deadline and len(cluster) < started:
        cluster = [
            p for p in _descendants(proc.pid) if "local_cluster" in _cmdline(p) or "spawn" in _cmdline(p)
        ]
        time.sleep(0.05)
    assert len(cluster) >= started, "the Dask cluster never started"
    time.sleep(3 if when == "running" else 1)
    cluster = [p for p in _descendants(proc.pid) if "local_cluster" in _cmdline(p) or "spawn" in _cmdline(p)]
    for s in signals:
        os.killpg(proc.pid, s)  # as a terminal does: the whole process group
        time.sleep(0.1)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err.decode()
    assert err.decode().strip() in ("interrupted", "terminated (SIGTERM)")  # no worker traceback
    time.sleep(0.5)
    assert [p for p in alive(cluster) if _state(p) != "Z"] == []
    assert set(Path(tempfile.gettempdir()).glob("lstm-diag-dask-*")) <= scratch  # workers' folders removed


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return "gone"
