"""Many independent runs: in this process, in local worker processes or on a Dask cluster,
with an on-disk cache that makes an interrupted sweep resumable (docs/sweeps.md).

`run_many(fn, payloads, ...)` is the one way a command fans work out. A payload is a plain
JSON-able dict (a run's full config dict and what to measure); `fn(payload)` is a
module-level function returning a plain JSON-able dict. The result of a run depends on its
payload alone, so the results are byte-identical whatever the executor, the number of
workers, the order runs finish in, or whether they came from the cache:

- every result, computed here, in a worker process, on a Dask worker or read from the
  cache, goes through the same exact JSON round trip (`_normalize`): Python writes a float
  with the shortest repr that reads back to the same float64, and NaN, Infinity and
  -Infinity are written and read back explicitly; ints stay ints, tuples become lists;
- workers get payloads only, never objects of this process, and regenerate their data
  from the seeds in the config; an input file (a data file) is named by its path and its
  SHA-256, checked once per worker process (`verify_inputs`): a worker that sees another
  file under that path fails the run instead of measuring another data set;
- results come back in payload order.

Backends. `jobs=1`, no scheduler: one after the other in this process. `jobs=J`: J local
worker processes (`shutdown.run_parallel`: Ctrl-C/SIGTERM stop every worker). `scheduler=
"local"`: a `distributed.LocalCluster` started for the run (J workers if J > 1, else one per
core this process may use), closed at the end; `scheduler="tcp://host:port"`: a running
Dask scheduler, whose workers must have the same lstm-diag version installed (checked per
task). Dask resubmits the tasks of a worker that dies to the other workers (up to
`distributed.scheduler.allowed-failures` deaths per task) and retries a task that raised
`RETRIES` times.

Cache. `cache=DIR` keeps each finished run as DIR/<2 hex>/<sha256>.json, keyed by the
SHA-256 of the canonical JSON of (the function's name, lstm_diag.__version__, the payload).
Entries are written by this process only (workers never see the folder), atomically
(temporary file + rename, setup/outputs.py), so concurrent sweeps sharing a folder are safe.
An entry is trusted only if it parses, names the same key and payload, and its result's
checksum matches; anything else is recomputed with a warning.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import InputError, InputWarning

CACHE_FORMAT = 1
RETRIES = 2  # of a task that raised on a Dask worker (a lost worker's tasks are resubmitted anyway)
DASK_EXTRA = "pip install 'lstm-diag[dask]'"
OnDone = Callable[[int, dict, bool], None]  # (payload index, result, came from the cache)


# ----------------------------------------------------------------------------- encoding


def encode(obj: Any, sort_keys: bool = False) -> str:
    """JSON text of a plain JSON-able value, keys in their order, NaN/Infinity written out.
    Raises InputError for anything that is not plain JSON data (numpy scalars, objects...)."""
    try:
        return json.dumps(obj, sort_keys=sort_keys, separators=(",", ":"), allow_nan=True)
    except (TypeError, ValueError) as e:
        raise InputError(f"a run's payload or result is not plain JSON data: {e}") from None


def canonical(obj: Any) -> str:
    """The one text of a JSON-able value whatever its keys' order: what keys are hashed from."""
    return encode(obj, sort_keys=True)


def _decode(text: str) -> Any:
    # explicit: json reads back exactly the NaN / Infinity / -Infinity tokens it writes
    return json.loads(text, parse_constant=_CONSTANTS.__getitem__)


_CONSTANTS = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


def _normalize(result: Any) -> Any:
    """The result as the cache gives it back (keys in the same order): every backend returns this."""
    return _decode(encode(result))


def _fn_name(fn: Callable) -> str:
    return f"{fn.__module__}:{getattr(fn, '__qualname__', repr(fn))}"


def run_key(fn: Callable, payload: dict) -> str:
    """SHA-256 of (function, tool version, payload): the run's identity in the cache."""
    from .. import __version__

    text = canonical({"fn": _fn_name(fn), "version": __version__, "payload": payload})
    return hashlib.sha256(text.encode()).hexdigest()


# -------------------------------------------------------------------------------- cache


class RunCache:
    """Finished runs on disk, one file each, sharded in 256 folders by the key's first byte."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise InputError(f"{self.folder}: the cache must be a folder; this is a file")

    def path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, fn: Callable, payload: dict) -> dict | None:
        """The cached result, or None (missing; or untrustworthy: warned and ignored)."""
        key = run_key(fn, payload)
        p = self.path(key)
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as e:
            return self._distrust(p, f"unreadable ({e.__class__.__name__})")
        try:
            entry = _decode(text)
            ok = isinstance(entry, dict) and entry.get("format") == CACHE_FORMAT and entry.get("key") == key
            ok = ok and entry.get("payload") == payload  # (configs hold no NaN: == is exact here)
            result = entry["result"] if ok else None
            ok = ok and isinstance(result, dict) and entry.get("sha256") == _digest(result)
        except (ValueError, KeyError, TypeError, InputError):
            ok = False
        if not ok:
            return self._distrust(p, "corrupt or incomplete")
        return result

    def put(self, fn: Callable, payload: dict, result: dict) -> None:
        from ..setup.outputs import atomic_write_text

        key = run_key(fn, payload)
        entry = {"format": CACHE_FORMAT, "key": key, "fn": _fn_name(fn), "payload": payload}
        entry |= {"sha256": _digest(result), "result": result}
        # no fsync: an entry lost or torn in a power cut fails its checks and is recomputed
        atomic_write_text(self.path(key), encode(entry) + "\n", sync=False)

    def _distrust(self, p: Path, why: str) -> None:
        warnings.warn(f"cache entry {p}: {why}; the run is computed again", InputWarning, stacklevel=3)
        return None


def _digest(result: Any) -> str:
    return hashlib.sha256(encode(result).encode()).hexdigest()  # the result's text as stored


# ------------------------------------------------------------------------------- inputs

_verified: dict[tuple, str] = {}  # (path, size, mtime_ns) -> sha256, per process


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, memoized per process while its size and mtime stay the same."""
    p = Path(path)
    try:
        st = p.stat()
        stamp = (str(p), st.st_size, st.st_mtime_ns)
        if stamp not in _verified:
            h = hashlib.sha256()
            with p.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
            _verified[stamp] = h.hexdigest()
    except OSError as e:
        raise InputError(f"{p}: cannot read ({e.strerror or e.__class__.__name__})") from None
    return _verified[stamp]


def fingerprint_inputs(fields: dict[str, str | None]) -> dict[str, dict]:
    """{field: {"path", "sha256"}} of the input files a run reads (None fields left out):
    part of the payload, so the cache key changes with the file's content."""
    return {f: {"path": str(p), "sha256": file_sha256(p)} for f, p in fields.items() if p is not None}


def verify_inputs(inputs: dict[str, dict]) -> None:
    """On the worker: each input file is the one the sweep was planned with."""
    for field, spec in inputs.items():
        got = file_sha256(spec["path"])
        if got != spec["sha256"]:
            raise InputError(
                f"{field}: {spec['path']} on this worker is not the file the sweep was planned with "
                f"(sha256 {got[:12]}… instead of {spec['sha256'][:12]}…); give every worker the same file"
            )


# ---------------------------------------------------------------------------- run_many


def run_many(
    fn: Callable[[dict], dict],
    payloads: Sequence[dict],
    *,
    jobs: int = 1,
    scheduler: str | None = None,
    cache: RunCache | str | Path | None = None,
    on_done: OnDone | None = None,
    on_start: Callable[[], None] | None = None,
) -> list[dict]:
    """[fn(p) for p in payloads], in payload order, by the chosen backend (module docstring).

    `on_done(index, result, cached)` is called in this process as each run finishes
    (cached runs first); `on_start()` once the workers exist, before any `on_done` (start
    a progress display there, so no display thread runs while workers are forked).
    """
    if isinstance(cache, (str, Path)):
        cache = RunCache(cache)
    results: list[dict | None] = [None] * len(payloads)
    hits: list[int] = []
    if cache is not None:
        for k, p in enumerate(payloads):
            results[k] = cache.get(fn, p)
            if results[k] is not None:
                hits.append(k)
    todo = [k for k in range(len(payloads)) if results[k] is None]

    def started() -> None:
        if on_start is not None:
            on_start()
        for k in hits:
            if on_done is not None:
                on_done(k, results[k], True)  # type: ignore[arg-type]

    def finished(position: int, result: dict) -> None:
        k = todo[position]
        results[k] = result = _normalize(result)
        if cache is not None:
            cache.put(fn, payloads[k], result)
        if on_done is not None:
            on_done(k, result, False)

    missing = [payloads[k] for k in todo]
    if scheduler is not None and missing:
        _on_dask(fn, missing, scheduler, jobs, finished, started)
    elif jobs > 1 and len(missing) > 1:
        _on_processes(fn, missing, jobs, finished, started)
    else:
        started()
        for position, p in enumerate(missing):
            finished(position, fn(p))
    return results  # type: ignore[return-value]


def _on_processes(fn, payloads, jobs, finished, started) -> None:
    from .shutdown import run_parallel

    # run_parallel reports in completion order: each result carries its position
    items = [(fn, k, p) for k, p in enumerate(payloads)]
    run_parallel(_tagged_call, items, jobs, lambda r: finished(*r), started)


def _tagged_call(item: tuple) -> tuple[int, dict]:
    fn, k, payload = item
    return k, fn(payload)


# ---------------------------------------------------------------------------------- dask


def require_distributed():
    """The `distributed` module, or InputError naming the extra to install."""
    try:
        import distributed
    except ImportError:
        raise InputError(f"--scheduler needs Dask's distributed package: {DASK_EXTRA}") from None
    return distributed


def local_workers(jobs: int) -> int:
    """Workers of `--scheduler local`: `jobs` if above 1, else the cores this process may use."""
    if jobs > 1:
        return jobs
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def in_flight(jobs: int, scheduler: str | None) -> int:
    """Runs executing at once in this machine's memory (for the memory budget): `jobs`
    processes, the workers of a LocalCluster, or none but the results for a remote scheduler."""
    if scheduler == "local":
        return local_workers(jobs)
    return 1 if scheduler is not None else jobs


def _dask_task(payload: dict, fn: Callable, version: str) -> dict:
    """What a Dask worker runs: the same tool version, then fn (exceptions go back to the client)."""
    from .. import __version__

    if version != __version__:
        raise InputError(
            f"a Dask worker has lstm-diag {__version__}, this client {version}: install the same"
        )
    return fn(payload)


@contextlib.contextmanager
def dask_client(scheduler: str, jobs: int, runs: int) -> Iterator[Any]:
    """A Client of the scheduler at `scheduler`, or of a LocalCluster started for the run in
    its own session (features/local_cluster.py), closed at the end whatever happens: a
    signal during the teardown waits until it is done."""
    from . import local_cluster
    from .shutdown import signals_blocked

    distributed = require_distributed()
    logging.getLogger("distributed").setLevel(logging.CRITICAL)  # errors reach the user as exceptions
    server = client = None
    try:
        if scheduler == "local":
            server = local_cluster.ClusterProcess(min(local_workers(jobs), max(1, runs)))
            scheduler = server.address
        client = _connect(distributed, scheduler)
        yield client
    finally:
        # Ctrl-C again is deferred (or, if another thread receives it, makes stop() kill at once)
        with signals_blocked():
            try:
                if client is not None:
                    with contextlib.suppress(Exception):
                        client.close(timeout=5)
            finally:
                if server is not None:
                    server.stop()


def _connect(distributed, address: str):
    try:
        return distributed.Client(address, timeout="10s")
    except (OSError, TimeoutError, ValueError) as e:
        raise InputError(f"--scheduler {address}: cannot reach a Dask scheduler there ({e})") from None


def _on_dask(fn, payloads, scheduler, jobs, finished, started) -> None:
    from .. import __version__

    distributed = require_distributed()
    with dask_client(scheduler, jobs, len(payloads)) as client:
        futures = client.map(_dask_task, payloads, fn=fn, version=__version__, pure=False, retries=RETRIES)
        try:
            index = {f.key: k for k, f in enumerate(futures)}
            started()
            for fut in distributed.as_completed(futures):
                finished(index[fut.key], fut.result())
        finally:
            with contextlib.suppress(Exception):
                client.cancel(futures)
