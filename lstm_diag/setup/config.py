"""Configuration: YAML in, a validated `Config` out. Inputs are checked here, once.

Every error is a `ConfigError` whose message names the field and what would be
valid, e.g. `model.hidden_size: must be a positive integer, got 0`.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from ..core.clipping import ClipSetting, parse_clip
from ..core.schemes import SCHEMES, InitSpec, parse_init_specs, unsupported_layout
from ..errors import ConfigError, preview
from . import weights as weights_mod
from .bounded_yaml import load_yaml, read_text_capped


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


class ModelConfig(_Section):
    input_size: int = Field(8, gt=0)
    hidden_size: int = Field(32, gt=0)
    num_layers: int = Field(1, gt=0)
    output_size: int = Field(1, gt=0)
    bidirectional: bool = False
    proj_size: int = Field(0, ge=0)
    bias: bool = True
    init: str | None = None  # None: "pytorch" for a drawn model; the loaded weights as they are
    forget_bias: float | None = None
    t_max: float | None = Field(None, gt=2)
    gain: float = 1.0
    recurrent_scale: float = 1.0
    weights: str | None = None
    weights_key: str | None = None  # the checkpoint section holding the state dict ("model")
    lstm: str | None = None  # which LSTM in the weights file (a prefix: "encoder.rnn")
    head: str | None = None  # which linear layer is the head ("fc", "decoder")
    embedding: str | None = None  # which matrix is the embedding ("embed")

    @property
    def scheme(self) -> str:
        """The init scheme of a drawn model: `init`, else PyTorch's default."""
        return self.init or "pytorch"

    def what_ifs(self) -> list[str]:
        """What is changed on loaded weights (model.weights), in words; empty without weights.
        The rules are docs/what-if.md's: forget bias, then gain, then recurrent scale."""
        if self.weights is None:
            return []
        out = []
        if self.forget_bias is not None:
            out.append(f"forget bias {self.forget_bias:g} on loaded weights")
        if self.gain != 1.0:
            out.append(f"gain {self.gain:g} on loaded weights (every LSTM weight matrix ×{self.gain:g})")
        if self.recurrent_scale != 1.0:
            out.append(
                f"recurrent scale {self.recurrent_scale:g} on loaded weights (W_hh ×{self.recurrent_scale:g})"
            )
        return out

    @model_validator(mode="after")
    def _known_scheme(self):
        if self.init is not None and self.init not in SCHEMES:
            raise ValueError(_choice_message("init", self.init, SCHEMES))
        for name in ("weights_key", "lstm", "head", "embedding"):
            if getattr(self, name) is not None and self.weights is None:
                raise ValueError(f"model.{name}: picks arrays in a weights file; set model.weights too")
        if self.proj_size >= self.hidden_size:
            raise ValueError(
                f"model.proj_size: must be smaller than model.hidden_size ({self.hidden_size}), "
                f"as nn.LSTM requires; got {self.proj_size}"
            )
        if self.weights is None:
            problem = unsupported_layout(self.init, self.proj_size, self.bias)
            if problem:
                raise ValueError(f"model.init: {problem}")
        if not self.bias and self.forget_bias is not None:
            raise ValueError(
                "model.forget_bias: the model has no biases (model.bias is false); remove forget_bias"
            )
        return self


class DataConfig(_Section):
    task: Literal["random", "adding", "copy", "file"] = "random"
    # None: 16 and 100 for a generated task, the file's sizes for a data file (given: the
    # first batch_size samples and seq_len steps of the file are analysed).
    batch_size: int | None = Field(None, gt=0)
    seq_len: int | None = Field(None, gt=0)
    path: str | None = None
    layout: Literal["batch_first", "time_major"] = "batch_first"
    # Which batch: a data file's sequences batch_index*batch_size onwards; a generated task's
    # batch_index-th batch of the seed's data stream (the batch train draws at step batch_index+1).
    batch_index: int = Field(0, ge=0)
    # analyze (plot, report): this many consecutive batches from batch_index, same weights,
    # reported as median [IQR] and verdicts by majority (docs/batches.md).
    batches: int = Field(1, gt=0)

    # The model's own loss on this data (from PyTorch/Keras/ONNX): the forward pass must
    # reproduce it, or the run stops (setup/guard.py).
    expected_loss: float | None = None

    @model_validator(mode="after")
    def _finite_expected_loss(self):
        if self.expected_loss is not None and not math.isfinite(self.expected_loss):
            raise ValueError(f"data.expected_loss: must be a finite number, got {self.expected_loss}")
        if self.task == "file" and self.batch_size is None and (self.batches > 1 or self.batch_index > 0):
            field = "data.batches" if self.batches > 1 else "data.batch_index"
            raise ValueError(
                f"{field}: splitting the data file into batches needs data.batch_size "
                "(sequences per batch), e.g. --set data.batch_size=16"
            )
        if self.expected_loss is not None and self.batches > 1:
            raise ValueError(
                "data.expected_loss: is one batch's loss; with data.batches > 1 leave it out "
                "(logits in the file are checked on every batch)"
            )
        return self


class LossConfig(_Section):
    type: Literal["mse", "cross_entropy", "upstream"] = "mse"
    target: Literal["last", "all"] = "last"
    ignore_index: int = -100  # cross_entropy: targets equal to this are left out, as F.cross_entropy


class DiagnosticsConfig(_Section):
    saturation_threshold: float = Field(0.1, gt=0, lt=0.5)
    vanishing_ratio: float = Field(1e-3, gt=0, lt=1)
    exploding_ratio: float = Field(1e3, gt=1)
    stuck_fraction: float = Field(0.9, gt=0, le=1)
    saturated_gate_fraction: float = Field(0.5, gt=0, le=1)
    memory: Literal["auto", "full", "checkpoint"] = "auto"
    memory_budget_mb: float = Field(2048, gt=0)
    dynamics: bool = True
    lyapunov_k: int = Field(8, gt=0)
    lyapunov_steps: int | None = Field(256, gt=1)  # the Lyapunov sweep: the last this many steps (null: all)
    window: int = Field(20, gt=0)
    window_k: int = Field(0, ge=0)  # 0: the window product is off by default (its cost, docs/dynamics.md §7)
    dynamics_samples: int = Field(4, gt=0)
    norm_points: int = Field(32, gt=0)  # 64 before issue 19 (cost: docs/dynamics.md §7)
    # the Jacobians' dtype: float32 (half the cost for a float64 model; docs/dynamics.md §7) or the model's
    dynamics_dtype: Literal["float32", "model"] = "float32"

    @model_validator(mode="after")
    def _window_used(self):
        default = type(self).model_fields["window"].default
        if self.window_k == 0 and self.window != default:
            raise ValueError(
                f"diagnostics.window: {self.window} has no effect while diagnostics.window_k is 0 (the "
                "window product is off by default); set diagnostics.window_k too, e.g. 4"
            )
        return self


class ClippingConfig(_Section):
    mode: Literal["none", "norm", "value", "agc"] = "none"
    max_norm: float = Field(1.0, gt=0)
    clip_value: float = Field(1.0, gt=0)
    clipping: float = Field(0.01, gt=0)


class TrainConfig(_Section):
    """`lstm-diag train` (docs/train.md); CLI flags override these."""

    steps: int = Field(200, gt=0)
    optimizer: Literal["sgd", "momentum", "adam"] = "sgd"
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    clip: str | list[str] = "none,norm:1.0,value:0.1,agc:0.01"
    log_every: int = Field(10, gt=0)
    snapshot_every: int | None = Field(None, gt=0)  # docs/train.md, "Snapshots"
    metrics: str | None = None
    save_weights: str | None = None
    plots: str | None = None

    @model_validator(mode="after")
    def _valid(self):
        try:
            parse_clip(self.clip)
        except ValueError as e:
            raise ValueError(f"train.clip: {e}") from None
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"train.betas: each must be in [0, 1), got {list(self.betas)}")
        return self


# local, host, host:port, tcp://host:port, tls://[::1]:8786
SCHEDULER = re.compile(r"local|([a-z]+://)?(\[[0-9A-Fa-f:.]+\]|[^\s/:\[\]]+)(:\d+)?")


class CompareConfig(_Section):
    """`lstm-diag compare` (docs/compare.md); CLI flags override these."""

    init: str | list[str] = "pytorch,keras,orthogonal,chrono"
    seeds: int = Field(5, gt=0)
    jobs: int = Field(1, gt=0)
    scheduler: str | None = None  # Dask: "local" (a LocalCluster for the run) or a scheduler address
    cache: str | None = None  # folder of finished runs (features/executor.py)
    seq_lens: int | str | list[int] | None = None
    train_steps: int = Field(0, ge=0)
    plots: str | None = None
    grid: dict[str, Any] | None = None  # field -> values: the sweep's axes (docs/compare.md)
    _init_specs: list[InitSpec] = PrivateAttr(default_factory=list)
    _seq_len_list: list[int] | None = PrivateAttr(default=None)
    _grid_axes: list[tuple[str, list]] = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _valid(self):
        if self.scheduler is not None and not SCHEDULER.fullmatch(self.scheduler):
            raise ValueError(
                "compare.scheduler: 'local' (a Dask LocalCluster for the run) or a scheduler "
                f"address such as tcp://host:8786, got {preview(self.scheduler)}"
            )
        if self.scheduler not in (None, "local") and self.jobs > 1:
            raise ValueError(
                f"compare.jobs: {self.jobs} workers cannot be chosen on the Dask scheduler "
                f"{self.scheduler} (its cluster has its own workers); leave jobs at 1"
            )
        try:
            self._init_specs = parse_init_specs(self.init)
        except ValueError as e:
            raise ValueError(f"compare.init: {e}") from None
        if self.seq_lens is not None:
            try:
                self._seq_len_list = parse_seq_lens(self.seq_lens)
            except ValueError as e:
                raise ValueError(f"compare.seq_lens: {e}") from None
        if self.grid is not None:
            try:
                self._grid_axes = parse_grid(self.grid, self.train_steps)
            except ValueError as e:
                raise ValueError(f"compare.grid: {e}") from None
        if self.seq_lens is not None and any(f == "data.seq_len" for f, _ in self._grid_axes):
            raise ValueError(
                "compare.seq_lens: sweeps data.seq_len, and so does the grid axis data.seq_len; "
                "give the lengths once (e.g. only --grid data.seq_len=50,200)"
            )
        return self

    @property
    def grid_axes(self) -> list[tuple[str, list]]:
        """`grid` parsed: (dotted field, its values) per axis, in the order given."""
        return [(f, list(v)) for f, v in self._grid_axes]

    @property
    def init_specs(self) -> list[InitSpec]:
        """`init`, parsed (validation parsed it once)."""
        return list(self._init_specs)

    @property
    def seq_len_list(self) -> list[int] | None:
        """`seq_lens` parsed: sorted distinct lengths, or None for data.seq_len."""
        return None if self._seq_len_list is None else list(self._seq_len_list)


class Config(_Section):
    seed: int = Field(0, ge=0)
    dtype: Literal["float32", "float64"] = "float64"
    engine: Literal["numpy", "fast", "auto"] = "auto"  # step loops: NumPy, or fused numba kernels
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    diagnostics: DiagnosticsConfig = Field(default_factory=DiagnosticsConfig)
    clipping: ClippingConfig = Field(default_factory=ClippingConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    compare: CompareConfig = Field(default_factory=CompareConfig)
    _clip_settings: list[ClipSetting] = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self):
        m, d, lo = self.model, self.data, self.loss
        _check_data(d, lo)
        _check_model(m, d, lo)
        if d.task == "adding":
            if d.seq_len < 2:
                raise ValueError(f"data.seq_len: the adding task needs at least 2 steps, got {d.seq_len}")
            _need("model.input_size", m.input_size, 2, "the adding task feeds (value, marker)")
            _need("model.output_size", m.output_size, 1, "the adding task predicts one sum")
            _need("loss.type", lo.type, "mse", "the adding task is a regression")
            _need("loss.target", lo.target, "last", "the adding task has one target")
        elif d.task == "copy":
            _need("model.input_size", m.input_size, 10, "the copy task is one-hot over 10 symbols")
            _need("model.output_size", m.output_size, 10, "the copy task predicts 10 symbols")
            _need("loss.type", lo.type, "cross_entropy", "the copy task classifies symbols")
            _need("loss.target", lo.target, "all", "the copy task has a target at every step")
            if d.seq_len < 21:
                raise ValueError(f"data.seq_len: the copy task needs at least 21 steps, got {d.seq_len}")
        elif d.task == "file" and d.path is None:
            raise ValueError("data.path: task 'file' needs the path of an .npz with x and y")
        if lo.type == "cross_entropy" and m.output_size < 2 and m.weights is None:
            raise ValueError(
                f"model.output_size: cross_entropy needs at least 2 classes, got {m.output_size}"
            )
        if m.scheme == "chrono" and m.t_max is None:
            if d.task == "file":
                raise ValueError("model.t_max: chrono init with a data file needs t_max (in steps)")
            if d.seq_len <= 2:
                raise ValueError(
                    f"model.t_max: chrono init needs t_max > 2; data.seq_len is {d.seq_len}, set t_max"
                )
        c = self.clipping
        try:
            self._clip_settings = parse_clip(
                self.train.clip, {"norm": c.max_norm, "value": c.clip_value, "agc": c.clipping}
            )
        except ValueError as e:  # e.g. 'norm' and 'norm:2' with clipping.max_norm 2
            raise ValueError(f"train.clip: {e}") from None
        return self

    @property
    def clip_settings(self) -> list[ClipSetting]:
        """`train.clip` parsed; a bare mode takes its threshold from the clipping section."""
        return list(self._clip_settings)

    def chrono_t_max(self) -> float:
        """Chrono's T_max: model.t_max, else the sequence length."""
        return self.model.t_max if self.model.t_max is not None else float(self.data.seq_len)

    def patched(self, overrides: Mapping[str, Any]) -> Config:
        """A copy with `overrides` applied and validated again, e.g.
        `config.patched({"train.steps": 5, "seed": 3})`.

        Keys are dotted field paths; values are Python values (not YAML text). A bad
        value raises `ConfigError` with the field's own message, exactly as in a file:
        `train.steps: must be a positive integer, got 0`. Paths are kept as given.
        """
        if not overrides:
            return self
        raw = self.model_dump()
        for key, value in overrides.items():
            apply_override(raw, key.split("."), value, what=key)
        picks = {k.split(".", 1)[1] for k in overrides if k.startswith("model.")}
        if picks & {"weights", *weights_mod.SELECTORS}:  # another weights file: its sizes
            if "loss.target" not in overrides:
                raw["loss"].pop("target", None)  # the new file's head decides (Keras/ONNX)
            _fill_from_weights(raw, picks)
        try:
            return Config.model_validate(raw)
        except ValidationError as err:
            raise ConfigError(format_validation_error(err)) from None


DEFAULT_BATCH_SIZE, DEFAULT_SEQ_LEN = 16, 100  # of a generated task


def _check_data(d: DataConfig, lo: LossConfig) -> None:
    """Fields that only apply to a data file, and the generated task's default sizes."""
    if d.task != "file":
        if d.path is not None:
            raise ValueError(f"data.path: is read with data.task: file, not with task {d.task!r}")
        if d.layout != "batch_first":
            raise ValueError(f"data.layout: applies to a data file (data.task: file), got {d.layout!r}")
        if d.expected_loss is not None:
            raise ValueError(
                "data.expected_loss: your model's loss on a data file (data.task: file), "
                f"checked by the forward pass; a generated task has none, got {d.expected_loss:g}"
            )
        if lo.type == "upstream":
            raise ValueError(
                "loss.type: upstream needs dL/dh from your model in a data file "
                "(data.task: file with an array dh); see lstm_diag.capture"
            )
        # Filled in here, so that everything downstream reads sizes: not "given" any more.
        d.batch_size = DEFAULT_BATCH_SIZE if d.batch_size is None else d.batch_size
        d.seq_len = DEFAULT_SEQ_LEN if d.seq_len is None else d.seq_len
    if lo.ignore_index != -100 and lo.type != "cross_entropy":
        raise ValueError(f"loss.ignore_index: applies to cross_entropy targets, not to loss.type {lo.type!r}")
    if lo.type == "upstream" and lo.target != "last":
        raise ValueError(
            "loss.target: in the upstream mode the array dh says where the loss acts; leave loss.target unset"
        )


def _check_model(m: ModelConfig, d: DataConfig, lo: LossConfig) -> None:
    """Init fields that would do nothing are refused, never ignored."""
    if m.weights is not None and m.init is not None:
        raise ValueError(
            f"model.init: {m.init!r} would replace the loaded weights (model.weights) by a new draw; "
            "drop model.init to analyse the weights (what-ifs: model.forget_bias, model.recurrent_scale, "
            "model.gain), or drop model.weights to analyse the scheme"
        )
    if m.weights is None and m.gain != 1.0 and m.scheme != "identity":
        raise ValueError(
            f"model.gain: scales the identity init's recurrent blocks (or, with model.weights, every "
            f"loaded weight matrix); init {m.scheme!r} has no gain, got {m.gain:g}"
        )
    if m.t_max is not None and (m.weights is not None or m.scheme != "chrono"):
        what = "loaded weights" if m.weights is not None else f"init {m.scheme!r}"
        raise ValueError(f"model.t_max: is chrono init's T_max; {what} take none, got {m.t_max:g}")


def _need(field, got, want, why):
    if got != want:
        raise ValueError(f"{field}: must be {want!r} ({why}), got {preview(got)}")


def _choice_message(field, got, choices):
    close = difflib.get_close_matches(str(got)[:100], list(choices), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"model.{field}: unknown scheme {preview(got)}{hint}; one of {', '.join(choices)}"


def parse_seq_lens(value: int | str | Sequence[int]) -> list[int]:
    """'50,200,1000' (or a list, or one int) -> sorted distinct positive ints."""
    if isinstance(value, int):
        items: list[Any] = [value]
    elif isinstance(value, str):
        items = [v.strip() for v in value.split(",")]
    else:
        items = list(value)
    out: list[int] = []
    for v in items:
        try:
            n = int(v) if not isinstance(v, float) else math.nan
        except (TypeError, ValueError):
            n = math.nan
        if isinstance(n, float) or n <= 0:
            raise ValueError(
                f"each sequence length must be a positive integer, got {preview(v)}; e.g. 50,200,1000"
            )
        out.append(n)
    if len(set(out)) != len(out):
        raise ValueError(f"a sequence length is listed twice in {preview(value)}")
    return sorted(out)


# Fields that are no axis of a sweep, and why (compare.grid; docs/compare.md).
GRID_REFUSED = {
    "seed": "the seeds are the sweep's replicates: use --seeds N (compare.seeds)",
    "engine": "the engine decides how the numbers are computed, not what is measured (numpy and "
    "fast agree to ~1e-12); time engines with benchmarks/, or run compare once per --engine",
    "model.init": "the init scheme is compare's own axis: use --init (compare.init), "
    "e.g. --init pytorch,chrono:t_max=500",
    "model.weights": "compare draws each run's weights from an init scheme; use analyze for a weights file",
    "model.weights_key": "it picks arrays in a weights file, and compare draws its weights from init schemes",
    "model.lstm": "it picks arrays in a weights file, and compare draws its weights from init schemes",
    "model.head": "it picks arrays in a weights file, and compare draws its weights from init schemes",
    "model.embedding": "it picks arrays in a weights file, and compare draws its weights from init schemes",
    "data.expected_loss": "it is the check of one data file's loss, not a setting to sweep",
    "diagnostics.memory": "it chooses how BPTT keeps its caches (full or checkpointed), not what is "
    "measured: every number is the same",
    "diagnostics.memory_budget_mb": "it is a memory limit, not a setting of the runs",
    "train.steps": "compare trains each run for --train-steps K steps (compare.train_steps)",
    "train.clip": "compare trains with the clipping: section's mode; sweep clipping.mode "
    "(and clipping.max_norm, clipping.clip_value, clipping.clipping) instead",
    "train.log_every": "it only sets how often train logs; compare keeps no training log",
    "train.metrics": "it is an output file, not a setting of the runs",
    "train.save_weights": "it is an output file, not a setting of the runs",
    "train.plots": "it is an output folder, not a setting of the runs",
}
TRAINING_ONLY = ("train.",)  # act only when compare trains the runs (--train-steps K > 0)


def config_fields(model: type[BaseModel] | None = None, prefix: str = "") -> list[str]:
    """Every dotted field path of the config, e.g. `model.hidden_size`."""
    out: list[str] = []
    for name, info in (model or Config).model_fields.items():
        sub = info.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            out += config_fields(sub, f"{prefix}{name}.")
        else:
            out.append(prefix + name)
    return out


def _flat_grid(grid: Mapping, prefix: str = "") -> list[tuple[str, Any]]:
    """{model: {forget_bias: [..]}} and {model.forget_bias: [..]} alike -> [(path, values)]."""
    out: list[tuple[str, Any]] = []
    for key, value in grid.items():
        if not isinstance(key, str) or not all(KEY_PART.fullmatch(k) for k in key.split(".")):
            raise ValueError(f"{preview(key)}: expected a dotted field name, e.g. model.forget_bias")
        if isinstance(value, Mapping):
            out += _flat_grid(value, f"{prefix}{key}.")
        else:
            out.append((prefix + key, value))
    return out


def grid_values(text: Any, field: str) -> list:
    """An axis' values: a list, one scalar, or text '0,1,3' (each item read as YAML, as
    --set reads a value; '[[0.9, 0.99], [0.5, 0.9]]' for values that hold commas)."""
    if isinstance(text, str):
        source = f"grid {field}"
        if text.strip().startswith("["):
            text = yaml_load(text, source)
        else:
            text = [yaml_load(v, source) if v.strip() else "" for v in text.split(",")]
    values = list(text) if isinstance(text, (list, tuple)) else [text]
    if not values:
        raise ValueError(f"{field}: no values; give at least one, e.g. {field}=1,2")
    return values


def parse_grid(grid: Mapping, train_steps: int = 0) -> list[tuple[str, list]]:
    """The grid's axes [(field, values)], in the order given; a field that is no axis
    (GRID_REFUSED, compare.*, train.* without training) is refused with the reason.
    The values themselves are validated by `Config.patched`, run by run (compare.plan)."""
    known = config_fields()
    axes: list[tuple[str, list]] = []
    for field, raw in _flat_grid(grid):
        if field not in known:
            close = difflib.get_close_matches(field[:100], known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown config field {preview(field)}{hint}")
        if field in GRID_REFUSED:
            raise ValueError(f"{field} is no sweep axis: {GRID_REFUSED[field]}")
        if field.startswith("compare."):
            raise ValueError(f"{field} is no sweep axis: it is a setting of the sweep itself, not of a run")
        if field.startswith(TRAINING_ONLY) and train_steps == 0:
            raise ValueError(
                f"{field} acts only when compare trains each run: add --train-steps K "
                "(compare.train_steps), or leave the axis out"
            )
        values = grid_values(raw, field)
        if any(f == field for f, _ in axes):
            raise ValueError(f"{field} is given twice")
        axes.append((field, values))
    return axes


PATH_FIELDS = (
    ("model", "weights"),
    ("data", "path"),
    ("train", "metrics"),
    ("train", "save_weights"),
    ("train", "plots"),
    ("compare", "plots"),
    ("compare", "cache"),
)


# ---------------------------------------------------------------------------- loading


def yaml_load(text: str, source: str = "YAML"):
    """YAML through the one bounded loader (setup/bounded_yaml.py): no objects, no duplicate
    keys, nesting, aliases and expanded size bounded."""
    return load_yaml(text, source)


def read_yaml(path: Path) -> dict:
    """Parse a YAML config file safely and within bounds; errors name the line and column."""
    text = read_text_capped(path)
    raw = load_yaml(text, str(path))
    if raw is None:  # an empty file is a failed write far more often than a wish for the defaults
        what = "its top level is null" if _has_content(text) else "the file is empty (or only comments)"
        raise ConfigError(
            f"{path}: no settings: {what}; leave CONFIG out for the built-in default, or write {{}}"
        )
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(raw).__name__}")
    return raw


def _has_content(text: str) -> bool:
    """Whether YAML text holds anything but blank lines, comments and document markers."""
    lines = (ln.split("#", 1)[0].strip() for ln in text.splitlines())
    return any(ln not in ("", "---", "...") for ln in lines)


KEY_PART = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def parse_override(item: str) -> tuple[list[str], Any]:
    """`a.b=value` -> (["a", "b"], value); the value is read as YAML (1e-3, true, null)."""
    key, sep, value = item.partition("=")
    keys = key.strip().split(".")
    if not sep or not all(KEY_PART.fullmatch(k) for k in keys):
        raise ConfigError(
            f"--set {preview(item)}: expected KEY=VALUE with KEY a dotted field name, "
            "e.g. model.hidden_size=64"
        )
    source = f"--set {'.'.join(keys)}"
    try:
        parsed = yaml_load(value, source) if value.strip() else ""
    except ConfigError as e:
        if "refused" in str(e) or "duplicate key" in str(e):
            raise  # a bound: never fall back to the raw text
        parsed = value
    return keys, parsed


def apply_override(raw: dict, keys: list[str], value: Any, what: str | None = None) -> None:
    """Set raw[k0][k1]...[kn] = value, creating sections; `what` names the override in errors."""
    node = raw
    what = what or f"--set {'.'.join(keys)}"
    for depth, k in enumerate(keys[:-1]):
        child = node.setdefault(k, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{what}: {'.'.join(keys[: depth + 1])} is not a section")
        node = child
    node[keys[-1]] = value


def _resolve_paths(raw: dict, base: Path) -> None:
    for section, key in PATH_FIELDS:
        sec = raw.get(section)
        if isinstance(sec, dict) and isinstance(sec.get(key), str):
            sec[key] = _resolved(sec[key], f"{section}.{key}", base)
    grid = raw.get("compare", {}).get("grid") if isinstance(raw.get("compare"), dict) else None
    if isinstance(grid, dict):  # a data.path axis: each file, as data.path would be
        nested = grid.get("data")
        holder, key = (nested, "path") if isinstance(nested, dict) else (grid, "data.path")
        values = holder.get(key)
        if isinstance(values, str):
            values = values.split(",")
        if isinstance(values, list):
            holder[key] = [_resolved(v, "compare.grid data.path", base) if isinstance(v, str) else v
                           for v in values]  # fmt: skip


def _resolved(path: str, what: str, base: Path) -> str:
    """`path` made absolute against `base` (a config file's folder, or the working directory)."""
    if "\x00" in path:
        raise ConfigError(f"{what}: a path cannot contain a NUL character")
    try:
        p = Path(path.strip() if what.startswith("compare.grid") else path).expanduser()
    except RuntimeError:  # ~name of a user this machine does not have, or no home folder
        head = path.split("/", 1)[0]
        raise ConfigError(f"{what}: cannot expand {head!r}: no such user or home folder") from None
    folder = "/" if path.endswith("/") else ""  # `out/` names a folder: keep the slash
    return str(p if p.is_absolute() else (base / p).resolve()) + folder


def format_validation_error(err: ValidationError) -> str:
    """The first problem as one line: `field.path: message, got value`."""
    e = err.errors()[0]
    loc = ".".join(str(p) for p in e["loc"])
    kind, msg, got = e["type"], e["msg"], e.get("input")
    if kind == "extra_forbidden":  # the path from the loc tuple: an unknown key may hold dots
        *parents, key = [str(p) for p in e["loc"]]
        model = Config
        for part in parents:
            model = model.model_fields[part].annotation
        close = difflib.get_close_matches(key[:100], list(model.model_fields), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        known = ", ".join(model.model_fields)
        return f"{preview_loc(loc)}: unknown key{hint}; known keys here: {known}"
    if kind == "value_error":
        return msg.removeprefix("Value error, ")
    if kind == "greater_than" and e.get("ctx", {}).get("gt") == 0 and isinstance(got, int):
        return f"{loc}: must be a positive integer, got {preview(got)}"
    if kind == "model_type":
        return f"{loc}: must be a section (a mapping), got {preview(got)}"
    msg = msg.replace("Input should be", "must be")
    msg = msg.split(", got ")[0]  # we say what we got ourselves
    msg = preview(msg, 200)[1:-1] if len(msg) > 200 else msg
    return f"{loc}: {msg[0].lower()}{msg[1:]}, got {preview(got)} ({type(got).__name__})"


def preview_loc(loc: str) -> str:
    """A field path for a message; an unknown key may be any text, so it is cut too."""
    return loc if len(loc) <= 80 and loc.isprintable() else preview(loc)


def load_config(
    source: str | Path | Mapping | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> tuple[Config, Path | None]:
    """Load and validate a config. Returns the config and the file it came from.

    source: a YAML path, an already parsed mapping, or None for the built-in default
    (the fields' defaults, written out in configs/default.yaml).
    Relative paths in a file resolve against its folder; in a mapping or in
    overrides, against the working directory.
    """
    origin: Path | None = None
    if source is None:
        raw = {}
    elif isinstance(source, Mapping):
        raw = _deep_copy(source)
    else:
        origin = Path(source)
        raw = read_yaml(origin)
        _resolve_paths(raw, origin.resolve().parent)
    # model fields the user gave (not the built-in default's): they must agree with weights
    given = set(raw["model"]) if source is not None and isinstance(raw.get("model"), dict) else set()
    for item in overrides:
        keys, value = parse_override(item)
        apply_override(raw, keys, value)
        if len(keys) == 2 and keys[0] == "model":
            given.add(keys[1])
    _resolve_paths(raw, Path.cwd())
    _fill_from_weights(raw, given)
    try:
        return Config.model_validate(raw), origin
    except ValidationError as err:
        raise ConfigError(format_validation_error(err)) from None


def _target_from_file(raw: dict, loaded) -> None:
    """Keras and ONNX files say whether their head reads the last step or every step:
    loss.target follows the file unless the config sets it, and a config that says
    otherwise is refused (the analysis would be of another model's loss)."""
    target = getattr(loaded.converted, "target", None)
    loss = raw.setdefault("loss", {})
    if target is None or not isinstance(loss, dict) or loss.get("type") == "upstream":
        return
    if loss.get("target", target) != target:
        reads = "every step" if target == "all" else "the last step"
        raise ConfigError(
            f"loss.target: the config says {preview(loss['target'])}, but the model in "
            f"{Path(str(loaded.path)).name} applies its head to {reads} (loss.target: {target}); "
            "remove loss.target or set it to that"
        )
    loss["target"] = target


def _fill_from_weights(raw: dict, given: set[str]) -> None:
    """With model.weights, the sizes come from the arrays: a size the config gives must
    agree (else ConfigError naming both values); the others are filled in."""
    m = raw.get("model")
    if not isinstance(m, dict) or not isinstance(m.get("weights"), str):
        return
    selection = {k: m.get(k) for k in weights_mod.SELECTORS if isinstance(m.get(k), str)}
    loaded, found = weights_mod.find_model(m["weights"], **selection)
    problem = weights_mod.unsupported_layout(found)
    if problem:
        raise ConfigError(f"model.weights: {problem}")
    _target_from_file(raw, loaded)
    loss = raw.get("loss")
    if not (isinstance(loss, dict) and loss.get("type") == "upstream"):
        found.need_head()  # the losses need the model's linear head
    name = Path(m["weights"]).name
    for key, value in weights_mod.model_fields(found).items():
        if key not in ModelConfig.model_fields:
            continue
        if key in given and m.get(key) != value and type(m.get(key)) is type(value):
            raise ConfigError(
                f"model.{key}: the config says {m[key]}, but the weights in {name} have {value} "
                f"({found.lstm.describe()}); remove model.{key} or fix it"
            )
        if key not in given:
            m[key] = value


def _deep_copy(m: Mapping) -> dict:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in m.items()}
