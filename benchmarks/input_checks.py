"""What the input checks of docs/bad-input.md cost on ordinary inputs, one check at a time.

    python benchmarks/input_checks.py            # a table, microseconds per call
    python benchmarks/input_checks.py --json

Each row times one check in this process (the modules already imported: import time is
not a per-input cost), as the median of --repeats rounds of the best of 5 loops, next to
the work it guards where there is one (a plain `yaml.safe_load`, `np.load`), so that the
check's own share shows. Inputs: configs/default.yaml, a --set value, the weights and
data of tests/fixtures/l1_T1_mse_last (small .npz files), a float64 -> float32 cast of a
(128, 64) array, an output path in a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import timeit
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lstm_diag.errors import preview  # noqa: E402
from lstm_diag.formats import budget  # noqa: E402
from lstm_diag.formats.npz import open_npz  # noqa: E402
from lstm_diag.report import inert  # noqa: E402
from lstm_diag.setup.bounded_yaml import load_yaml, read_text_capped  # noqa: E402
from lstm_diag.setup.config import load_config  # noqa: E402
from lstm_diag.setup.outputs import check_target, into_folder  # noqa: E402
from lstm_diag.setup.problem import check_memory, memory_parts  # noqa: E402
from lstm_diag.setup.weights import cast_checked  # noqa: E402

CONFIG = ROOT / "configs" / "default.yaml"
CASE = ROOT / "tests" / "fixtures" / "l1_T1_mse_last"


def per_call(fn, repeats: int) -> float:
    """Median over rounds of the best of 5 loops, in microseconds per call."""
    timer = timeit.Timer(fn)
    n, _ = timer.autorange()
    n = max(1, n // 5)
    rounds = [min(timer.repeat(5, n)) / n * 1e6 for _ in range(repeats)]
    return statistics.median(rounds)


def rows(repeats: int) -> list[tuple[str, str, float]]:
    """(group, what, microseconds per call)."""
    text = CONFIG.read_text()
    cfg = load_config(CONFIG)[0]
    w64 = np.random.default_rng(0).normal(size=(128, 64))
    w32 = w64.astype(np.float32)
    tmp = Path(tempfile.mkdtemp())
    out = tmp / "r.json"

    def npz_headers():
        open_npz(CASE / "weights.npz", "weights")

    def npz_read_all():
        f = open_npz(CASE / "weights.npz", "weights")
        for k in f.info:
            f.arrays[k]

    def np_load_all():
        with np.load(CASE / "weights.npz") as z:
            for k in z.files:
                z[k]

    timed = [
        ("config", "read_text_capped: size cap, regular file, NUL, UTF-8", lambda: read_text_capped(CONFIG)),
        ("config", "  for comparison: Path.read_text()", lambda: CONFIG.read_text()),
        ("config", "load_yaml(text): aliases, depth, nodes, duplicates", lambda: load_yaml(text, "c")),
        ("config", "  for comparison: yaml.safe_load(text)", lambda: yaml.safe_load(text)),
        ("config", "load_yaml('64'): one --set value", lambda: load_yaml("64", "--set")),
        ("config", "load_config(default.yaml): all of the above + validation", lambda: load_config(CONFIG)),
        ("config", "preview(value) in a message", lambda: preview("a value of moderate length, 40 chars")),
        ("npz", "open_npz(weights): directory + every header + ratio checks", npz_headers),
        ("npz", "open_npz + read every member", npz_read_all),
        ("npz", "  for comparison: np.load + read every member", np_load_all),
        ("budget", "memory_limit(): RAM, RLIMIT_AS, cgroup", budget.memory_limit),
        ("budget", "memory_parts(config): the plan from sizes", lambda: memory_parts(cfg)),
        ("budget", "check_memory(config): plan + limit", lambda: check_memory(cfg)),
        ("cast", "cast_checked f64 -> f32 (128 x 64)", lambda: cast_checked(w64, "float32", CONFIG, "w")),
        ("cast", "  for comparison: astype(float32)", lambda: w64.astype(np.float32)),
        ("cast", "cast_checked f32 -> f32 (no cast)", lambda: cast_checked(w32, "float32", CONFIG, "w")),
        ("outputs", "check_target(path)", lambda: check_target(out)),
        ("outputs", "into_folder: a folder? a file in the way?", lambda: into_folder(out, "x")),
        ("inert", "inert.plain(path)", lambda: inert.plain(str(out))),
        ("inert", "inert.markdown(path)", lambda: inert.markdown(str(out))),
    ]  # fmt: skip
    return [(g, what, per_call(fn, repeats)) for g, what, fn in timed]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5, help="rounds per row [5]")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    result = rows(args.repeats)
    if args.json:
        print(json.dumps([{"group": g, "check": w, "us": round(t, 2)} for g, w, t in result], indent=1))
        return 0
    for g, what, t in result:
        print(f"{g:8} {what:68} {t:10.1f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
