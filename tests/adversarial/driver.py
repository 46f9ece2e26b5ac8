"""Adversarial driver: every class of hostile or unlucky input of docs/bad-input.md, each
case run as its own `python -m lstm_diag` process under a memory cap, and checked as its
class requires.

    python tests/adversarial/driver.py                 # all cases, 2 GB address-space cap
    python tests/adversarial/driver.py --only yaml,npz --cap-mb 1024 --format json

Per case: the exit code (2 for bad input or environment, with one `error: ...` line on
stderr and no traceback; 0 where the input is odd but valid; 130/143 on signals), the
wall time (under --seconds), the process's peak memory (ru_maxrss of the command's own
process; a cap of RLIMIT_AS and, for the full-disk cases, RLIMIT_FSIZE), that no file in
the sandbox changed except the outputs the case names (no temporary file left, no file
clobbered, no symlink followed), and that no process of the case's session is left.

Not part of `make test` (53 processes: about 1.5 minutes of CPU); `make adversarial`
runs it. Exit 0 if every case behaves, 1 otherwise. Needs only the runtime dependencies;
cases for optional readers (h5py, safetensors) are skipped, with a reason, when missing.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import pickle
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
CASE = ROOT / "tests" / "fixtures" / "l1_T1_mse_last"  # a small, valid weights + data pair
TORCHFILES = ROOT / "tests" / "fixtures_torchfile"
# a file name with terminal escapes (set title, bell), a newline + heading, a tag, an image, mathtext
HOSTILE = "x\x1b]0;owned\x07\n## head <script>alert(1)<\\script> ![](http:e.x) $x^2$"


@dataclass
class Case:
    name: str
    group: str  # the class of docs/bad-input.md it belongs to
    args: list[str]  # after `python -m lstm_diag`
    codes: tuple[int, ...] = (2,)
    needle: str = ""  # must appear in the error line (exit 2) or on stderr
    outputs: tuple[str, ...] = ()  # sandbox paths the case may create or change
    fsize: int | None = None  # RLIMIT_FSIZE for the run (EFBIG)
    signals: tuple[int, ...] = ()  # sent to the process group once workers run
    check: Callable[[Path, subprocess.CompletedProcess], str | None] | None = None  # extra; "" ok
    needs: str = ""  # an optional module the case needs
    slow: float = 1.0  # its time limit is this many times --seconds (figures: 3)


@dataclass
class Outcome:
    case: Case
    code: int | None
    seconds: float
    peak_mb: float
    problems: list[str] = field(default_factory=list)
    skipped: str = ""


# ----------------------------------------------------------------------------- inputs


def laughs(levels: int, width: int = 9) -> str:
    lines = ['l0: &l0 ["lol"]']
    lines += [f"l{k}: &l{k} [" + ",".join([f"*l{k - 1}"] * width) + "]" for k in range(1, levels)]
    return "\n".join(lines) + f"\nmodel:\n  init: *l{levels - 1}\n"


def flow_laughs(levels: int, width: int = 9) -> str:
    """The same in one flow-style value, for --set: [&l0 [lol, ...], &l1 [*l0, ...], ...]."""
    defs = ["&l0 [" + ",".join(["lol"] * width) + "]"]
    defs += [f"&l{k} [" + ",".join([f"*l{k - 1}"] * width) + "]" for k in range(1, levels)]
    return "[" + ", ".join(defs) + "]"


def npz_declaring(path: Path, members: dict[str, tuple], mode: str = "w") -> Path:
    """Honest zero-filled members (float64), deflated: tiny on disk, huge when read."""
    with zipfile.ZipFile(path, mode, compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, shape in members.items():
            head = io.BytesIO()
            np.lib.format.write_array_header_1_0(
                head, {"descr": "<f8", "fortran_order": False, "shape": shape}
            )
            left = int(np.prod(shape)) * 8
            with zf.open(name + ".npy", "w", force_zip64=True) as fh:
                fh.write(head.getvalue())
                chunk = bytes(min(left, 16 * 2**20))
                while left > 0:
                    fh.write(chunk[: min(left, len(chunk))])
                    left -= len(chunk)
    return path


def npz_lying(path: Path, name: str, shape: tuple, actual: np.ndarray) -> Path:
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": "<f8", "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(name + ".npy", head.getvalue() + actual.astype("<f8").tobytes())
    return path


def arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def make_inputs(box: Path, todo: list[Case]) -> None:
    """The input files of the cases, in the sandbox `box`; the large ones (seconds to
    compress) only when a case in `todo` uses them."""
    used = " ".join(" ".join(c.args) for c in todo)
    w, d = arrays(CASE / "weights.npz"), arrays(CASE / "data.npz")
    np.savez(box / "w.npz", **w)
    np.savez(box / "d.npz", **d)
    (box / "ok.yaml").write_text((CASE / "config.yaml").read_text().replace(str(CASE), str(box)))
    (box / "laughs.yaml").write_text(laughs(9))
    (box / "wide.yaml").write_text(laughs(3, 200))
    (box / "deep.yaml").write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    if "big.yaml" in used:
        (box / "big.yaml").write_text("seed: 1\nnote: '" + "x" * (50 * 2**20) + "'\n")
    (box / "list.yaml").write_text("compare:\n  init: [" + "a," * 300_000 + "a]\n")
    (box / "dup.yaml").write_text("data:\n  seq_len: 5\n  seq_len: 7\n")
    (box / "dupsec.yaml").write_text("model: {}\ndata: {}\nmodel: {hidden_size: 3}\n")
    (box / "python.yaml").write_text("seed: !!python/object/apply:os.system ['touch pwned']\n")
    (box / "nul.yaml").write_text("seed: 1\n\x00\n")
    (box / f"{HOSTILE}.yaml").write_text("data: {seq_len: 6, batch_size: 2}\nmodel: {hidden_size: 3}\n")
    (box / "cost_$x^$.yaml").write_text("data: {seq_len: 6, batch_size: 2}\nmodel: {hidden_size: 3}\n")
    (box / "text.npz").write_text("this is a text file, not weights\n")
    (box / "pickle.npz").write_bytes(pickle.dumps({"weight_ih_l0": [1, 2]}))
    np.save(box / "single.npy", np.zeros(3))
    (box / "trunc.npz").write_bytes(b"PK\x03\x04garbage")
    with zipfile.ZipFile(box / "notnpy.npz", "w") as zf:
        zf.writestr("x.npy", b"not an npy member")
    npz_lying(box / "liar.npz", "x", (10**6, 10**6), np.zeros(5))  # claims 8 TB
    if "bomb.npz" in used:
        npz_declaring(box / "bomb.npz", {"x": (1000, 100, 3000), "y": (1000, 1)})  # 2.4 GB in ~10 MB
    if "extra.npz" in used:
        np.savez(box / "extra.npz", **w)
        npz_declaring(box / "extra.npz", {"unused": (2000, 10**5)}, mode="a")  # 1.6 GB declared, never read
    big = dict(d)
    big["x"] = big["x"].astype(np.float64)
    big["x"].flat[0] = 1e300  # overflows float32
    np.savez(box / "overflow.npz", **big)
    (box / "keep.jsonl").write_text('{"step": 1}\n')
    (box / "victim.txt").write_text("keep me\n")
    (box / "link.jsonl").symlink_to(box / "victim.txt")
    (box / "report.json").write_text("previous report\n")
    (box / "afile").write_text("a file, not a folder\n")
    try:
        import h5py

        with h5py.File(box / "cyclic.weights.h5", "w") as f:
            g = f.create_group("layers/lstm")
            g["cell"] = h5py.SoftLink("/layers/lstm")
        with h5py.File(box / "external.weights.h5", "w") as f:
            f.create_group("layers")
            f["layers/lstm"] = h5py.ExternalLink("/etc/passwd", "/")
    except ImportError:
        pass


# ----------------------------------------------------------------------------- cases


def _no_raw(*needles: str):
    def check(box: Path, r: subprocess.CompletedProcess) -> str | None:
        out = r.stdout + r.stderr
        bad = [n for n in needles if n in out]
        return f"output holds {bad!r} raw" if bad else None

    return check


def _file_is(rel: str, text: str):
    def check(box: Path, r: subprocess.CompletedProcess) -> str | None:
        got = (box / rel).read_text() if (box / rel).exists() else None
        return None if got == text else f"{rel} is {got!r:.60}, expected {text!r:.60}"

    return check


def _json_inside(rel: str):
    def check(box: Path, r: subprocess.CompletedProcess) -> str | None:
        p = box / rel
        if not p.is_file():
            return f"{rel} was not written"
        json.loads(p.read_text())
        return None

    return check


def cases(box: Path) -> list[Case]:
    weights = lambda p: ["--set", f"model.weights={box / p}"]  # noqa: E731
    data = lambda p: ["--set", "data.task=file", "--set", f"data.path={box / p}"]  # noqa: E731
    small = ["--set", "data.seq_len=6", "--set", "data.batch_size=2", "--set", "model.hidden_size=3"]
    return [
        # memory from small inputs: refused from sizes, before allocation
        Case("billion laughs in a config", "yaml", ["analyze", str(box / "laughs.yaml")], needle="expands"),
        Case("wide aliases in a config", "yaml", ["analyze", str(box / "wide.yaml")], needle="expands"),
        Case(
            "billion laughs via --set",
            "yaml",
            ["analyze", "--set", "model.init=" + flow_laughs(9)],
            needle="expands",
        ),
        Case("5,000 nested brackets", "yaml", ["analyze", str(box / "deep.yaml")], needle="nest"),
        Case("a 50 MB config", "yaml", ["analyze", str(box / "big.yaml")], needle="limit"),
        Case("300,000 values in a list", "yaml", ["analyze", str(box / "list.yaml")], needle="values"),
        Case(
            "a 100 KB list via --set",
            "yaml",
            ["analyze", "--set", "compare.init=[" + "a," * 50_000 + "a]"],
            needle="values",
        ),  # one argument may not exceed 128 KB (Linux MAX_ARG_STRLEN)
        Case("/dev/zero as the config", "yaml", ["analyze", "/dev/zero"]),
        Case("/dev/zero as weights", "npz", ["analyze", *weights("/dev/zero")]),
        Case("hidden_size 12000", "budget", ["analyze", "--set", "model.hidden_size=12000"], needle="limit"),
        Case("input_size 1e8", "budget", ["analyze", "--set", "model.input_size=100000000"], needle="limit"),
        Case("compare --seeds 1e8", "budget", ["compare", "--seeds", "100000000"], needle="compare.seeds"),
        Case(
            "train, 4 settings of a large model",
            "budget",
            ["train", "--set", "model.hidden_size=30000", "--steps", "1"],
            needle="train.clip",
        ),
        Case("an .npz bomb (2.4 GB in 10 MB)", "npz", ["analyze", *data("bomb.npz")], needle="bomb.npz"),
        Case("an .npz header claiming 8 TB", "npz", ["analyze", *data("liar.npz")], needle="declares"),
        Case(
            "an unused 1.6 GB extra array",
            "npz",
            ["analyze", *weights("extra.npz"), *data("d.npz")],
            codes=(0,),
        ),
        # silent reinterpretation: refused, naming what
        Case("duplicate keys", "reinterpret", ["analyze", str(box / "dup.yaml")], needle="lines 2 and 3"),
        Case(
            "a second model: section", "reinterpret", ["analyze", str(box / "dupsec.yaml")], needle="'model'"
        ),
        Case(
            "!!python tag",
            "reinterpret",
            ["analyze", str(box / "python.yaml")],
            needle="YAML",
            check=lambda b, r: "code ran" if (b / "pwned").exists() else None,
        ),
        Case(
            "1e300 into float32",
            "reinterpret",
            ["analyze", *weights("w.npz"), *data("overflow.npz"), "--set", "dtype=float32"],
            needle="x",
        ),
        Case("gradcheck --tol nan", "reinterpret", ["gradcheck", "--tol", "nan"], needle="--tol"),
        Case("train --lr inf", "reinterpret", ["train", "--lr", "inf"], needle="--lr"),
        # wrong exit codes of the past: now exit 2 with one line
        Case("--set .=3", "exit", ["analyze", "--set", ".=3"]),
        Case("a NUL byte in a config", "exit", ["analyze", str(box / "nul.yaml")], needle="NUL"),
        Case("a text file as weights", "exit", ["analyze", *weights("text.npz")], needle="text.npz"),
        Case("a pickle as weights", "exit", ["analyze", *weights("pickle.npz")], needle="pickle"),
        Case("a single .npy as weights", "exit", ["analyze", *weights("single.npy")], needle=".npy"),
        Case("a truncated zip", "exit", ["analyze", *weights("trunc.npz")], needle="zip"),
        Case("a member that is not .npy", "exit", ["analyze", *data("notnpy.npz")], needle="notnpy.npz"),
        Case("a missing weights file", "exit", ["analyze", *weights("nope.npz")], needle="nope.npz"),
        Case("a folder as the config", "exit", ["analyze", str(box)], needle="is a directory"),
        # the new readers
        Case(
            "a .pt that runs code",
            "readers",
            ["analyze", "--set", f"model.weights={TORCHFILES / 'malicious_exec.pt'}"],
            check=lambda b, r: "pwned" if (b / "pwned").exists() else None,
        ),
        Case(
            "a .pt calling os.system",
            "readers",
            ["analyze", "--set", f"model.weights={TORCHFILES / 'malicious_system.pt'}"],
        ),
        Case(
            "GRU weights",
            "readers",
            ["analyze", "--set", f"model.weights={TORCHFILES / 'gru.pt'}"],
            needle="GRU",
        ),
        Case("a TorchScript archive", "readers", ["inspect", str(TORCHFILES / "torchscript.pt")]),
        Case(
            "a safetensors header lying about sizes",
            "readers",
            ["inspect", str(TORCHFILES / "lying_header.safetensors")],
            needs="safetensors",
        ),
        Case("an HDF5 soft-link cycle", "readers", ["inspect", str(box / "cyclic.weights.h5")], needs="h5py"),
        Case("an HDF5 external link", "readers", ["inspect", str(box / "external.weights.h5")], needs="h5py"),
        # outputs that never destroy what was there
        Case(
            "--metrics kept on bad weights",
            "outputs",
            ["train", "--steps", "2", "--metrics", str(box / "keep.jsonl"), *weights("nope.npz")],
            check=_file_is("keep.jsonl", '{"step": 1}\n'),
        ),
        Case(
            "--metrics onto a symlink",
            "outputs",
            ["train", "--steps", "2", "--clip", "none", "--metrics", str(box / "link.jsonl"), *small],
            codes=(0,),
            outputs=("link.jsonl",),
            check=_file_is("victim.txt", "keep me\n"),
        ),
        Case(
            "-o onto a full disk (/dev/full)",
            "outputs",
            ["analyze", *small, "-o", "/dev/full"],
            needle="no space",
        ),
        Case(
            "-o /dev/stdout",
            "outputs",
            ["analyze", *small, "--format", "json", "-o", "/dev/stdout"],
            codes=(0,),
            check=lambda b, r: (
                None
                if Path("/dev/stdout").is_symlink() or not Path("/dev/stdout").is_file()
                else "/dev/stdout was replaced by a file"
            ),
        ),
        Case(
            "-o past the file-size limit (EFBIG)",
            "outputs",
            ["analyze", *small, "--format", "json", "-o", str(box / "report.json")],
            fsize=2000,
            needle="too large",
            check=_file_is("report.json", "previous report\n"),
        ),
        Case(
            "-o out/newdir/ (a trailing slash)",
            "outputs",
            ["analyze", *small, "--no-dynamics", "--format", "json", "-o", f"{box}/newdir/"],
            codes=(0,),
            outputs=("newdir", "newdir/lstm-diag-analyze.json"),
            check=_json_inside("newdir/lstm-diag-analyze.json"),
        ),
        Case(
            "-o through a file as folder",
            "outputs",
            ["analyze", *small, "-o", f"{box}/afile/r.txt"],
            needle="afile",
        ),
        # injection: everything displayed is inert
        Case(
            "escapes in a path (the error line)",
            "inert",
            ["analyze", *weights(HOSTILE)],
            check=_no_raw("\x1b", "\x07", "\n## head"),
        ),
        Case(
            "escapes and markdown in a config name (markdown)",
            "inert",
            ["analyze", str(box / f"{HOSTILE}.yaml"), "--no-dynamics", "--format", "markdown"],
            codes=(0,),
            check=_no_raw("\x1b", "\x07", "<script>", "\n## head", "![]("),
        ),
        Case(
            "escapes in a config name (table)",
            "inert",
            ["analyze", str(box / f"{HOSTILE}.yaml"), "--no-dynamics"],
            codes=(0,),
            check=_no_raw("\x1b", "\x07"),
        ),
        Case(
            "mathtext in a config name (plot)",
            "inert",
            [
                "plot",
                str(box / "cost_$x^$.yaml"),
                "--dpi",
                "30",
                "-o",
                str(box / "figs"),
                "--set",
                "diagnostics.dynamics=false",
            ],
            codes=(0,),
            outputs=("figs", "figs/*"),
            slow=3,
        ),
        # clean shutdown of parallel work: real signals to the process group
        Case("compare -j2, Ctrl-C", "signals", _compare_long(), codes=(130,), signals=(signal.SIGINT,)),
        Case(
            "compare -j2, Ctrl-C twice",
            "signals",
            _compare_long(),
            codes=(130,),
            signals=(signal.SIGINT, signal.SIGINT),
        ),
        Case("compare -j2, SIGTERM", "signals", _compare_long(), codes=(143,), signals=(signal.SIGTERM,)),
        Case(
            "train, SIGTERM",
            "signals",
            ["train", "--steps", "100000", "--clip", "none", "--set", "data.seq_len=20"],
            codes=(143,),
            signals=(signal.SIGTERM,),
        ),
    ]


def _compare_long() -> list[str]:
    return ["compare", "--jobs", "2", "--seeds", "50", "--init", "pytorch", "--set", "data.seq_len=400",
            "--set", "diagnostics.dynamics=false"]  # fmt: skip


# ----------------------------------------------------------------------------- running


def snapshot(box: Path) -> dict[str, tuple]:
    out = {}
    for p in sorted(box.rglob("*")):
        rel = str(p.relative_to(box))
        if p.is_symlink():
            out[rel] = ("link", os.readlink(p))
        elif p.is_file():
            st = p.stat()
            small = st.st_size < 2**20
            out[rel] = (
                "file",
                hashlib.sha256(p.read_bytes()).hexdigest() if small else (st.st_size, st.st_mtime_ns),
            )
        elif p.is_dir():
            out[rel] = ("dir",)
        else:
            out[rel] = ("other", p.stat().st_mode)
    return out


def _allowed(rel: str, outputs: tuple[str, ...]) -> bool:
    from fnmatch import fnmatch

    return any(rel == o or fnmatch(rel, o) for o in outputs)


def _session(sid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] != "Z":
                out.append(int(d.name))
    return out


def _limits(cap: int, fsize: int | None) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    return apply


def _wait_for_workers(pid: int, seconds: float) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline and len(_session(pid)) < 3:  # the command and two workers
        time.sleep(0.05)
    time.sleep(0.3)


def run_case(case: Case, box: Path, cap: int, limit_s: float) -> Outcome:
    if case.needs:
        try:
            __import__(case.needs)
        except ImportError:
            return Outcome(case, None, 0.0, 0.0, skipped=f"{case.needs} is not installed")
    limit_s = case.slow * limit_s
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "1", "COLUMNS": "100"}
    before = snapshot(box)
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "lstm_diag", *case.args],
        cwd=box, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True, preexec_fn=_limits(cap, case.fsize),
    )  # fmt: skip
    streams = [_reader(proc.stdout), _reader(proc.stderr)]
    if case.signals:
        if case.args[0] == "compare":
            _wait_for_workers(proc.pid, 30)
        else:  # the command's progress is on stderr once its handlers are in place
            deadline = time.time() + 30
            while time.time() < deadline and not streams[1][1]:
                time.sleep(0.05)
            time.sleep(0.5)
        t0 = time.perf_counter()  # the time that counts: from the first signal
        for s in case.signals:
            os.killpg(proc.pid, s)
            time.sleep(0.1)
    status, usage = _wait4(proc.pid, max(limit_s * 3, 30))
    seconds = time.perf_counter() - t0
    for thread, _ in streams:
        thread.join(5)
    out, err = (b"".join(chunks).decode(errors="replace") for _, chunks in streams)
    code = os.waitstatus_to_exitcode(status)
    r = subprocess.CompletedProcess(case.args, code, out, err)
    time.sleep(0.2)
    left = _session(proc.pid)
    for pid in left:  # ours: the case's own session
        os.kill(pid, signal.SIGKILL)
    return Outcome(
        case, code, seconds, usage.ru_maxrss / 1024, _problems(case, r, box, before, seconds, limit_s, left)
    )


def _reader(stream) -> tuple[threading.Thread, list[bytes]]:
    chunks: list[bytes] = []

    def read() -> None:
        for block in iter(lambda: stream.read1(65536), b""):
            chunks.append(block)

    t = threading.Thread(target=read, daemon=True)
    t.start()
    return t, chunks


def _wait4(pid: int, timeout: float):
    """(status, rusage) of the command's own process; killed (with its group) past `timeout`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            return status, usage
        time.sleep(0.02)
    os.killpg(pid, signal.SIGKILL)
    _, status, usage = os.wait4(pid, 0)
    return status, usage


def _problems(case, r, box, before, seconds, limit_s, left) -> list[str]:
    problems = []
    if r.returncode not in case.codes:
        problems.append(f"exit {r.returncode}, expected {'/'.join(map(str, case.codes))}")
    if "Traceback" in r.stderr:
        problems.append("a traceback on stderr")
    lines = r.stderr.strip().splitlines()
    if r.returncode not in case.codes and lines:
        problems.append(f"stderr ends: {lines[-1][:200]!r}")
    if r.returncode == 2:
        if lines and lines[0].startswith("Usage: ") and lines[-1].startswith("Error: "):
            lines = lines[-1:]  # click's usage error: the usage, then one line naming the option
        if len(lines) != 1 or not lines[0].lower().startswith("error: "):
            problems.append(f"stderr is not one 'error:' line: {r.stderr.strip()[:200]!r}")
        elif case.needle and case.needle not in lines[0]:
            problems.append(f"the error line does not name {case.needle!r}: {lines[0][:200]!r}")
        if len(lines[0] if lines else "") > 600:
            problems.append(f"the error line is {len(lines[0])} characters")
    if seconds > limit_s:
        problems.append(f"took {seconds:.1f} s (limit {limit_s:g} s)")
    after = snapshot(box)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    changed = [k for k in changed if not _allowed(k, case.outputs)]
    if changed:
        problems.append(f"files changed: {changed[:5]}")
    if left:
        problems.append(f"{len(left)} processes left: {left}")
    if case.check is not None:
        extra = case.check(box, r)
        if extra:
            problems.append(extra)
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    ap.add_argument("--cap-mb", type=int, default=2048, help="RLIMIT_AS of every case, in MB [2048]")
    ap.add_argument("--seconds", type=float, default=10.0, help="wall time a case may take [10]")
    ap.add_argument(
        "--only", default="", help="comma-separated groups (yaml, npz, budget, ...) or name words"
    )
    ap.add_argument("--format", choices=("table", "json"), default="table")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lstm-diag-adversarial-") as tmp:
        box = Path(tmp)
        wanted = [w for w in args.only.split(",") if w]
        todo = [c for c in cases(box) if not wanted or any(w == c.group or w in c.name for w in wanted)]
        t0 = time.perf_counter()
        make_inputs(box, todo)
        print(f"inputs made in {time.perf_counter() - t0:.1f} s in {box}", file=sys.stderr)
        results = []
        for c in todo:
            o = run_case(c, box, args.cap_mb * 2**20, args.seconds)
            results.append(o)
            if args.format == "table":
                mark = "skip" if o.skipped else ("ok" if not o.problems else "FAIL")
                print(f"{mark:4} {c.group:11} {c.name[:44]:44} exit {o.code!s:>4} {o.seconds:5.1f} s "
                      f"{o.peak_mb:6.0f} MB  {'; '.join(o.problems) or o.skipped}")  # fmt: skip
    bad = [o for o in results if o.problems]
    if args.format == "json":
        doc = [
            {"name": o.case.name, "group": o.case.group, "exit": o.code, "seconds": round(o.seconds, 3),
             "peak_mb": round(o.peak_mb, 1), "problems": o.problems, "skipped": o.skipped}
            for o in results
        ]  # fmt: skip
        print(json.dumps(doc, indent=1))
    ran = [o for o in results if not o.skipped]
    print(f"{len(ran) - len(bad)} of {len(ran)} cases behave ({len(results) - len(ran)} skipped); "
          f"slowest {max((o.seconds for o in ran), default=0):.1f} s", file=sys.stderr)  # fmt: skip
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
