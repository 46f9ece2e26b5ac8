"""From a validated config to arrays: parameters (init scheme or weight file) and data.

Seeds: `seed` is split into independent streams for initialization and data, so
changing the init scheme never changes the data batch (compare relies on it).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..core import tasks as data_mod
from ..core.engine import Spec
from ..core.schemes import InitOptions, init_params
from ..errors import ConfigError, InputError
from ..formats import budget
from ..formats.npz import read_npz
from .config import Config
from .datafile import DataSet, load_data
from .guard import verify
from .weights import SELECTORS, apply_what_ifs, load_weights


@dataclass
class Problem:
    """Everything one analysis runs on."""

    config: Config
    spec: Spec
    params: dict[str, np.ndarray]  # with `embedding.weight` (V, I) when x holds token ids
    x: np.ndarray  # (B, T, I), or token ids (B, T)
    y: np.ndarray  # targets; the upstream mode: dL/dh_t (B, T, H)
    h0: np.ndarray | None = None  # (L, B, H) initial states; None: zero
    c0: np.ndarray | None = None
    data: DataSet | None = None  # the data file as read (None: a generated task)

    @property
    def loss(self) -> str:
        return self.config.loss.type

    @property
    def target(self) -> str:
        """Where the loss acts; the upstream mode's dh is per step: "all"."""
        return "all" if self.loss == "upstream" else self.config.loss.target

    @property
    def notes(self) -> list[str]:
        """What a person should know about how the inputs were read (stderr)."""
        return [] if self.data is None else list(self.data.notes)

    @property
    def what_ifs(self) -> list[str]:
        return self.config.model.what_ifs()

    def engine_args(self) -> tuple:
        """(params, spec, x, y, loss, target, h0, c0): what engine.run takes."""
        return self.params, self.spec, self.x, self.y, self.loss, self.target, self.h0, self.c0


def spec_of(config: Config) -> Spec:
    m = config.model
    return Spec(
        m.input_size, m.hidden_size, m.num_layers, m.output_size, m.bidirectional, m.proj_size, m.bias
    )


def rngs(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """(init rng, data rng), independent streams of one seed."""
    init_seq, data_seq = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(init_seq), np.random.default_rng(data_seq)


def make_params(
    config: Config, rng: np.random.Generator, embedding: bool = False
) -> dict[str, np.ndarray]:
    """Drawn by the init scheme, or loaded (model.weights) with the what-ifs applied; no head
    in the upstream mode; `embedding.weight` too when the data holds token ids."""
    m, spec = config.model, spec_of(config)
    if m.weights is not None:
        head = config.loss.type != "upstream"
        picks = {k: getattr(m, k) for k in SELECTORS}
        params = load_weights(
            m.weights, spec, config.dtype, with_head=head, with_embedding=embedding, **picks
        )
        return apply_what_ifs(params, m, spec.num_layers)
    if embedding:
        raise ConfigError(
            "model.weights: the data file holds token ids (tokens); they need the model's embedding, "
            "from a weights file that holds it"
        )
    if config.loss.type == "upstream":
        raise ConfigError("model.weights: the upstream mode analyses your model's LSTM: give its weights")
    options = InitOptions(t_max=config.chrono_t_max(), gain=m.gain)
    return init_params(
        m.scheme,
        spec,
        rng,
        config.dtype,
        options,
        forget_bias=m.forget_bias,
        recurrent_scale=m.recurrent_scale,
    )


def make_data(config: Config, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A generated batch (x, y) of data.task (not "file": see `load_data`)."""
    d, spec = config.data, spec_of(config)
    x, y = data_mod.generate(
        d.task,
        rng,
        d.batch_size,
        d.seq_len,
        spec.input_size,
        spec.output_size,
        config.loss.type,
        config.loss.target,
    )
    y = y.astype(config.dtype) if config.loss.type == "mse" else y.astype(np.int64)
    return x.astype(config.dtype), y


def estimated_bytes(config: Config, T: int | None = None, B: int | None = None, mode: str = "full") -> int:
    """Rough peak memory of one analysis, in bytes.

    full: per layer and step the forward keeps 4H gates and c, h, tanh c (H each); backward
    adds 4H for dL/dz and about 4H more of dL/dc, dL/dh and temporaries; diagnostics one
    more gate-sized temporary: ~20 (T B H) numbers per layer. checkpoint: the same for one
    segment of ~sqrt(T) steps, plus the states at segment starts. Both: the data, 3 (T B I).
    """
    m, d = config.model, config.data
    itemsize = 4 if config.dtype == "float32" else 8
    T = d.seq_len if T is None else T
    B = d.batch_size if B is None else B
    H = m.hidden_size
    data = 3 * T * B * max(m.input_size, m.output_size)
    steps = T if mode == "full" else 2 * (int(T**0.5) + 1)
    return itemsize * (20 * steps * B * H * m.num_layers + data)


def dynamics_bytes(config: Config, T: int | None = None, B: int | None = None) -> int:
    """Peak extra memory of the Jacobian/Lyapunov analysis: it works one layer at a time, in
    the model's dtype, on the first diagnostics.dynamics_samples samples of the batch and the
    last diagnostics.lyapunov_steps steps, with ~11 numbers per (t, sample, unit) (local
    derivatives a, f, d, d_{t-1} and the work arrays), in float32 with diagnostics.dynamics_dtype
    float32."""
    T = config.data.seq_len if T is None else T
    if config.diagnostics.lyapunov_steps is not None:
        T = min(T, config.diagnostics.lyapunov_steps)
    B = config.data.batch_size if B is None else B
    S = min(config.diagnostics.dynamics_samples, B)
    itemsize = 4 if "float32" in (config.dtype, config.diagnostics.dynamics_dtype) else 8
    return itemsize * 11 * T * S * config.model.hidden_size


def physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


OPTIMIZER_STATE = {"sgd": 0, "momentum": 1, "adam": 2}  # arrays of the parameters' size
RUN_OVERHEAD = 32 * 1024  # a compare run's plan and result as Python objects, beyond its curves
RESULT_BYTES_PER_STEP = 100  # per step and layer: the run's norm curves as Python floats
# One analysis's Python objects beyond its arrays, per unit (layer x direction) and per step
# and unit: measured on a tiny model (B = 2, H = 3), peak RSS grew by ~110 KB per layer at
# T = 4 and ~2.5 KB per step at one layer, where `estimated_bytes` counts ~1 KB of arrays.
UNIT_OVERHEAD = 128 * 1024
STEP_OVERHEAD = 2 * 1024


def parameter_count(config: Config) -> int:
    """Numbers in the model's parameters (head included), in closed form: layers after the
    first have the same shapes, so two layers are enumerated and the rest multiplied, and a
    config asking for 10^12 layers is priced without listing them."""
    spec = spec_of(config)

    def count(layers: int) -> int:
        return sum(math.prod(shape) for shape in replace(spec, num_layers=layers).param_shapes().values())

    if spec.num_layers <= 2:
        return count(spec.num_layers)
    one, two = count(1), count(2)
    return two + (spec.num_layers - 2) * (two - one)


def memory_parts(
    config: Config, command: str = "analyze", runs: int = 1, jobs: int = 1, held: int | None = None
) -> dict[str, int]:
    """Planned peak bytes, by what drives them (keys name the config fields), from sizes alone.

    analyze/plot/report/gradcheck: parameters and their gradients, the forward/backward
    caches (`estimated_bytes`) and the dynamics section; with data.batches > 1 (analyze),
    one batch's caches at a time plus every batch's summary. train: per clip setting its
    parameters, gradients and optimizer state, and one step's caches (data.batch_size is
    the minibatch; `held`: the sequences kept in memory, a data file's all, else the
    minibatch). compare: `jobs` analyses at once, plus every run's plan and result kept
    until the end (seeds x runs).
    """
    d = config.diagnostics
    itemsize = 4 if config.dtype == "float32" else 8
    P = parameter_count(config) * itemsize
    mode = "full" if d.memory == "full" or command == "train" else "checkpoint"
    m, dc = config.model, config.data
    step_data = itemsize * 3 * dc.seq_len * dc.batch_size * max(m.input_size, m.output_size)
    caches = estimated_bytes(config, mode=mode) - step_data
    data = step_data if held is None else itemsize * 3 * dc.seq_len * held * max(m.input_size, m.output_size)
    dyn = dynamics_bytes(config)
    if not (mode == "full" and d.dynamics and dyn <= d.memory_budget_mb * 2**20) or command == "train":
        dyn = 0
    units = m.num_layers * (2 if m.bidirectional else 1)
    results = units * (UNIT_OVERHEAD + STEP_OVERHEAD * dc.seq_len)
    parts = {
        "model.input_size x model.hidden_size x model.num_layers (parameters)": 2 * P,
        "model.num_layers x data.seq_len (per-layer results)": results,
        "data.batch_size x data.seq_len x model.input_size (data)": data,
        "data.batch_size x data.seq_len x model.hidden_size x model.num_layers (caches)": caches,
        "diagnostics.dynamics_samples x data.seq_len x model.hidden_size (dynamics)": dyn,
    }
    if command == "train":
        settings = len(config.clip_settings)
        state = OPTIMIZER_STATE.get(config.train.optimizer, 2)
        parts["model.* x train.clip settings x train.optimizer (parameters and optimizer state)"] = P * (
            1 + settings * (2 + state)
        )
        parts.pop("model.input_size x model.hidden_size x model.num_layers (parameters)")
    if command == "analyze" and dc.batches > 1:  # one batch at a time; each batch's summary kept
        per_batch = RUN_OVERHEAD + RESULT_BYTES_PER_STEP * dc.seq_len * units
        parts["data.batches x data.seq_len x model.num_layers (per-batch results)"] = dc.batches * per_batch
    if command == "compare":
        workers = max(1, min(jobs, runs))
        parts = {k: v * workers for k, v in parts.items()}
        per_run = RUN_OVERHEAD + RESULT_BYTES_PER_STEP * config.data.seq_len * config.model.num_layers
        parts["compare.seeds x compare.init x compare.seq_lens (per-run results)"] = runs * per_run
    return parts


def check_memory(
    config: Config,
    command: str = "analyze",
    runs: int = 1,
    jobs: int = 1,
    source: str = "",
    held: int | None = None,
) -> None:
    """Exit 2 before anything is allocated if the plan needs more than the memory budget
    (formats/budget.py: 80% of RAM, of `ulimit -v` and of a cgroup limit), naming the
    largest part's fields (or `source`, the data file whose shape set them)."""
    m, dc = config.model, config.data
    if None in (dc.batch_size, dc.seq_len, m.input_size, m.hidden_size, m.output_size):
        return  # sizes a file decides: checked again from its headers before it is read
    parts = memory_parts(config, command, runs, jobs, held)
    need, limit = sum(parts.values()), budget.memory_limit()
    if need > limit:
        top = max(parts, key=parts.__getitem__)
        what = top
        if source and "(data)" in top:
            what = f"{source}: x's shape"
        elif source and "caches" in top:
            what = f"{source}: x's shape with model.hidden_size x model.num_layers"
        raise ConfigError(
            f"{what}: this {command} needs about {budget.human(need)} "
            f"({budget.human(parts[top])} for this part); "
            f"limit {budget.human(limit)}; make it smaller"
        )


def _check_file_budget(config: Config) -> None:
    """The memory estimate with the data file's (B, T) as its headers declare them."""
    shape = _file_shape(config)
    if shape is None:
        return  # load_data names what is missing
    B, T = shape
    if config.data.batch_size is not None:
        _check_file_length(config, B)
    if B > 0 and T > 0:
        whole = {"data.batch_size": B, "data.seq_len": T, "data.batch_index": 0}
        check_memory(config.patched(whole), source=str(config.data.path))


def _file_shape(config: Config) -> tuple[int, int] | None:
    """(B, T) of the data file's x (or tokens) from its header, before any array is read;
    None when load_data will name what is missing."""
    from ..formats.npz import open_npz

    info = open_npz(config.data.path, "data").info
    main = "x" if "x" in info else "tokens" if "tokens" in info else None
    if main is None or len(info[main].shape) < 2:
        return None
    B, T = (int(s) for s in info[main].shape[:2])
    return (T, B) if config.data.layout == "time_major" else (B, T)


def check_train_memory(config: Config) -> None:
    """train's plan before anything is allocated: per clip setting the parameters, gradients
    and optimizer state; one minibatch's caches; the data held, a data file's every
    sequence (its sizes from the file's header)."""
    from .config import DEFAULT_BATCH_SIZE

    if config.data.task != "file":
        check_memory(config, "train")
        return
    shape = _file_shape(config)
    if shape is not None and min(shape) > 0:
        N, T = shape
        bs = min(config.data.batch_size or DEFAULT_BATCH_SIZE, N)
        minibatch = config.patched({"data.batch_size": bs, "data.seq_len": min(config.data.seq_len or T, T)})
        check_memory(minibatch, "train", source=str(config.data.path), held=N)


def build(config: Config, budget: bool = True) -> Problem:
    """Parameters and data for a config: one batch (data.batch_index). A data file's sizes are
    used unless data.batch_size / data.seq_len are given (setup/datafile.py).
    `budget=False`: the caller checked its own plan (train: `check_train_memory`)."""
    if config.data.batches > 1:
        raise ConfigError(
            f"data.batches: {config.data.batches} batches are read by analyze, plot and report; this "
            "command runs on one batch (data.batch_index picks which)"
        )
    return next(problems(config, budget))


def problems(config: Config, budget: bool = True) -> Iterator[Problem]:
    """One Problem per batch: data.batches consecutive batches from data.batch_index, the same
    parameters (drawn or read once), each with its config's data.batch_index set to the batch
    and data.batches to 1, so that `build(problem.config)` alone makes the same problem.

    Generated tasks: batch k is the k-th draw from the seed's data stream (the batch train
    draws at step k + 1). Data files: sequences k B .. (k+1) B - 1, the file read once; a file
    with fewer than (batch_index + batches) B sequences is refused before anything is read.
    Sizes, memory and the file's length are checked before the first batch is made."""
    d = config.data
    init_rng, data_rng = rngs(config.seed)
    first = d.batch_index
    indices = range(first, first + d.batches)

    def one(k: int) -> Config:
        return config.patched({"data.batch_index": k, "data.batches": 1}) if d.batches > 1 else config

    if d.task != "file":
        if budget:
            check_memory(config)
        params = make_params(config, init_rng)
        for _ in range(first):
            make_data(config, data_rng)  # the stream's earlier batches, drawn and dropped
        for k in indices:
            x, y = make_data(config, data_rng)
            yield Problem(config=one(k), spec=spec_of(config), params=params, x=x, y=y)
        return
    if budget:
        _check_file_budget(config)  # from the data file's headers, before any array is read
    arrays = read_npz(Path(d.path), "data")
    params = None
    for k in indices:
        problem, params = _file_problem(one(k), arrays, params, init_rng, budget)
        yield problem


def _check_file_length(config: Config, B: int) -> None:
    """data.batches x data.batch_size sequences from data.batch_index must be in the file."""
    d = config.data
    need = (d.batch_index + d.batches) * d.batch_size
    if d.batches > 1 and need > B:
        raise ConfigError(
            f"data.batches: {d.batches} batches of {d.batch_size} sequences from batch {d.batch_index} "
            f"need {need} sequences; {d.path} holds {B}"
        )


def _file_problem(
    config: Config, arrays: dict, params: dict | None, init_rng, budget: bool = True
) -> tuple[Problem, dict]:
    """The Problem of one batch of a data file (its arrays already read); the parameters are
    made on the first call and passed back for the next ones."""
    data = load_data(config, spec_of(config), arrays)
    config = config.patched({"data.batch_size": data.batch, "data.seq_len": data.steps})
    if budget:
        check_memory(config)
    if params is None:
        params = make_params(config, init_rng, embedding=data.tokens is not None)
    x = data.x
    if data.tokens is not None:
        E = params["embedding.weight"]
        if data.tokens.max() >= E.shape[0]:
            raise InputError(
                f"{data.path}: tokens hold id {int(data.tokens.max())}, the embedding has "
                f"{E.shape[0]} rows (ids 0..{E.shape[0] - 1})"
            )
        x = data.tokens
        data.info["embedding"] = list(E.shape)
    y = data.dh if config.loss.type == "upstream" else data.y
    problem = Problem(config, spec_of(config), params, x, y, h0=data.h0, c0=data.c0, data=data)
    verify(problem)
    return problem, params
