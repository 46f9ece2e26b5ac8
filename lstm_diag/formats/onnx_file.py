"""ONNX models: every `LSTM` node, the initializers feeding it, an embedding before, a head after.

The ONNX `LSTM` operator (its definition in the onnx/onnx repository, onnx/defs/rnn/defs.cc;
docs/formats.md) stores W [D, 4H, I], R [D, 4H, H] and B [D, 8H] (input biases, then
recurrent biases) with the gate blocks in the order i, o, f, c; D = 2 for
direction="bidirectional" (forward first). PyTorch's order is i, f, g, o, so block j of
nn.LSTM is ONNX block ONNX_BLOCK[j]: i <- 0, f <- 2, g <- 3, o <- 1.

What is read, and what is refused (never ignored):
- W, R, B, P, sequence_lens, initial_h, initial_c: initializers, or Constant nodes, seen
  through Identity and Cast nodes. W and R must be constant; B may be absent (zero).
- Refused: peepholes P unless every entry is zero (a zero peephole adds exactly 0, so the
  equations are PyTorch's); activations other than Sigmoid, Tanh, Tanh; activation_alpha /
  activation_beta; clip (any value: it changes the forward pass wherever |z| > clip);
  input_forget=1; direction="reverse" alone (nn.LSTM has no reverse-only layer);
  sequence_lens unless absent or one constant length; initial states that are non-zero
  constants or computed (a graph input is accepted: zero unless data.h0/c0 say otherwise).
- layout=1 (batch-first X, Y) is read like layout=0.
- Stacked LSTM nodes are followed from one node's Y to the next node's X through
  Squeeze, Transpose, Reshape (merging the two directions) and Identity.
- An embedding: a Gather of a constant (V, I) matrix by a graph input, feeding the first
  LSTM's X (through Transpose/Identity).
- A head: Gemm (alpha = beta = 1), or MatMul followed by Add of a constant, reading the top
  LSTM's output either at the last step (Gather index -1 or Slice [-1:] on the time axis, or
  Y_h of a one-direction LSTM, also h_n[-1] as a Concat of every layer's Y_h then Gather -1)
  or at every step, through Squeeze/Transpose/Reshape, and
  ending the graph (an output, or a Softmax/LogSoftmax that is one). Anything else after the
  LSTM means no head: the notes say what was found instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.names import EMBEDDING_WEIGHT, HEAD_BIAS, HEAD_WEIGHT
from ..errors import InputError
from .converted import Converted, check_size, check_stacked, float_array, lstm_name, need, reorder_blocks

ONNX_BLOCK = [0, 2, 3, 1]  # PyTorch block j (i, f, g, o) <- ONNX block (i, o, f, c)
MAX_ONNX_BYTES = 2 * 2**30  # protobuf's own limit for one message
DEFAULT_ACTIVATIONS = ["Sigmoid", "Tanh", "Tanh"]
PASS = ("Identity", "Cast")  # nodes a constant is seen through


def read_onnx(path: str | Path):
    """An ONNX model as a LoadedFile of PyTorch-named arrays (see formats/loaded.py)."""
    from .loaded import from_converted

    return from_converted(Path(path), "onnx", convert_onnx(path))


def convert_onnx(path: str | Path) -> Converted:
    p = Path(path)
    onnx = need("onnx", "onnx", p)
    size = p.stat().st_size
    if size > MAX_ONNX_BYTES:
        raise InputError(f"{p}: {size / 2**30:.1f} GiB; an ONNX model is at most 2 GiB (protobuf's limit)")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError and friends: the file is not a ModelProto
        raise InputError(f"{p}: not a valid ONNX model ({e.__class__.__name__}: {str(e)[:200]})") from None
    graph = Graph(model.graph, p, onnx, _inferred_dims(model, onnx))
    conv = Converted()
    nodes = [n for n in model.graph.node if n.op_type == "LSTM"]
    if not nodes:
        ops = sorted({n.op_type for n in model.graph.node})
        kinds = [o for o in ("GRU", "RNN", "Scan", "Loop") if o in ops]
        hint = f" (it has {', '.join(kinds)})" if kinds else ""
        raise InputError(f"{p}: no LSTM node in the ONNX graph{hint}; ops: {', '.join(ops[:20])}")
    stack = graph.chain(nodes)
    opsets = ", ".join(f"{o.domain or 'ai.onnx'} {o.version}" for o in model.opset_import)
    conv.source = (
        f"ONNX model (opset {opsets}): {len(stack)} LSTM node(s) "
        f"{', '.join(repr(n.name or n.output[0]) for n in stack)}; "
        "W [D, 4H, I], R [D, 4H, H], B [D, 8H], gates i, o, f, c"
    )
    directions = {graph.direction(n) for n in stack}
    if len(directions) > 1:
        raise InputError(
            f"{p}: the LSTM nodes mix directions ({', '.join(sorted(directions))}); nn.LSTM "
            "(and the engine) has one bidirectional setting for all layers"
        )
    width = graph.embedding(stack[0], conv)
    H = None
    for k, node in enumerate(stack):
        width, H = graph.lstm(node, k, width, H, conv)
    graph.head(stack[-1], width, conv)
    return conv


@dataclass
class Flow:
    """A tensor on its way from an LSTM output: which axis is what.
    Labels: "T" time, "T1" a time axis sliced to its last step, "B" batch, "D" direction,
    "H" hidden, "F" features (D and H merged, or H alone)."""

    name: str
    axes: list[str]
    last: bool  # only the last step is left


def _inferred_dims(model, onnx) -> dict[str, list[int | None]]:
    """Static dimensions of the graph's tensors by ONNX shape inference (None: unknown), so that
    a Reshape to explicit sizes (PyTorch's dynamo exporter writes [T, B, D*H]) can be followed."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # inference is a help, not a requirement
        return {}
    dims = {}
    for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        shape = vi.type.tensor_type.shape
        dims[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in shape.dim]
    return dims


class Graph:
    def __init__(self, graph, p: Path, onnx, dims: dict[str, list[int | None]] | None = None):
        self.g, self.p, self.onnx = graph, p, onnx
        self.dims = dims or {}
        self.init = {t.name: t for t in graph.initializer}
        self.producer = {o: n for n in graph.node for o in n.output if o}
        self.consumers: dict[str, list] = {}
        for n in graph.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.inputs = {v.name for v in graph.input} - set(self.init)
        self.outputs = {v.name for v in graph.output}
        self.H = 0  # hidden size of the LSTM whose output is being followed

    # ------------------------------------------------------------------ constants

    def const(self, name: str, depth: int = 0) -> np.ndarray | None:
        """The value of a tensor when it is a constant (initializer, Constant, through Identity/Cast)."""
        if name in self.init:
            t = self.init[name]
            if t.data_location == self.onnx.TensorProto.EXTERNAL:
                raise InputError(
                    f"{self.p}: initializer {name!r} is stored in an external file, which "
                    "lstm-diag does not read (save the model with its weights inside)"
                )
            check_size(tuple(t.dims), max(1, np.dtype(self._np_type(t.data_type)).itemsize), self.p, name)
            return self.onnx.numpy_helper.to_array(t)
        node = self.producer.get(name)
        if node is None or depth > 16:
            return None
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    return self.onnx.numpy_helper.to_array(a.t)
                if a.name in ("value_float", "value_int", "value_floats", "value_ints"):
                    return np.asarray(self.onnx.helper.get_attribute_value(a))
            return None
        if node.op_type in PASS:
            v = self.const(node.input[0], depth + 1)
            if v is not None and node.op_type == "Cast":
                to = next(a.i for a in node.attribute if a.name == "to")
                v = v.astype(self._np_type(to))
            return v
        return None

    def _np_type(self, code: int):
        try:
            return self.onnx.helper.tensor_dtype_to_np_dtype(code)
        except Exception:
            return np.float32

    def weight(self, node, index: int, what: str) -> np.ndarray | None:
        name = node.input[index] if len(node.input) > index else ""
        if not name:
            return None
        v = self.const(name)
        if v is None:
            raise InputError(
                f"{self.p}: LSTM node {self._name(node)}: {what} ({name!r}) is computed at run "
                "time, not a constant in the file; lstm-diag reads weights stored in the model"
            )
        return float_array(v, self.p, f"{self._name(node)} {what}")

    @staticmethod
    def _name(node) -> str:
        return repr(node.name or node.output[0])

    # ------------------------------------------------------------------ LSTM nodes

    def attrs(self, node) -> dict[str, Any]:
        return {a.name: self.onnx.helper.get_attribute_value(a) for a in node.attribute}

    def lstm(self, node, k: int, width: int | None, H: int | None, conv: Converted) -> tuple[int, int]:
        """One LSTM node as nn.LSTM layer k: checks, then the arrays; (output width, H)."""
        at, who = self.attrs(node), f"{self.p}: LSTM node {self._name(node)}"
        direction = at.get("direction", b"forward")
        direction = direction.decode() if isinstance(direction, bytes) else direction
        D = {"forward": 1, "bidirectional": 2}.get(direction)
        if D is None:
            raise InputError(
                f"{who}: direction={direction!r}: a reverse-only LSTM has no nn.LSTM equivalent "
                "(nn.LSTM's reverse direction exists only with a forward one)"
            )
        acts = [a.decode() if isinstance(a, bytes) else a for a in at.get("activations", [])]
        if acts and acts != DEFAULT_ACTIVATIONS * D:
            raise InputError(f"{who}: activations={acts}; the LSTM equations need {DEFAULT_ACTIVATIONS * D}")
        for name in ("activation_alpha", "activation_beta"):
            if name in at:
                raise InputError(f"{who}: {name}={at[name]} is set, which the LSTM equations do not have")
        if "clip" in at:
            raise InputError(
                f"{who}: clip={at['clip']}: the cell clips its pre-activations to ±{at['clip']}, "
                "which nn.LSTM and lstm-diag do not; export without clip"
            )
        if at.get("input_forget", 0):
            raise InputError(
                f"{who}: input_forget=1 couples the input and forget gates, which nn.LSTM does not"
            )
        W, R, B = self.weight(node, 1, "W"), self.weight(node, 2, "R"), self.weight(node, 3, "B")
        if W is None or R is None:
            raise InputError(f"{who}: W and R are required inputs")
        h = R.shape[-1] if R.ndim == 3 else -1
        if W.ndim != 3 or R.ndim != 3 or W.shape[:2] != (D, 4 * h) or R.shape != (D, 4 * h, h):
            raise InputError(f"{who}: W {W.shape} and R {R.shape} do not match [D={D}, 4H, I] and [D, 4H, H]")
        if "hidden_size" in at and at["hidden_size"] != h:
            raise InputError(f"{who}: hidden_size={at['hidden_size']} but R has shape {R.shape}")
        if B is not None and B.shape != (D, 8 * h):
            raise InputError(f"{who}: B {B.shape}, expected [D={D}, 8H={8 * h}]")
        check_stacked(who, h, H, f"W {W.shape}", W.shape[2], width)
        self._peepholes(node, who)
        self._sequence_lens(node, who, conv)
        for index, what in ((5, "initial_h"), (6, "initial_c")):
            self._initial(node, index, what, who, conv)
        for d in range(D):  # direction 1 is nn.LSTM's reverse
            conv.put(
                lstm_name("weight_ih", k, d),
                reorder_blocks(W[d], ONNX_BLOCK),
                f"W {node.input[1]!r}[{d}] (4H, I), blocks i, o, f, c -> i, f, g, o",
            )
            conv.put(
                lstm_name("weight_hh", k, d),
                reorder_blocks(R[d], ONNX_BLOCK),
                f"R {node.input[2]!r}[{d}] (4H, H), blocks reordered",
            )
            if B is None:
                z = np.zeros(4 * h, W.dtype)
                conv.put(lstm_name("bias_ih", k, d), z, "zeros (the node has no B)")
                conv.put(lstm_name("bias_hh", k, d), z.copy(), "zeros (the node has no B)")
            else:
                conv.put(
                    lstm_name("bias_ih", k, d),
                    reorder_blocks(B[d, : 4 * h], ONNX_BLOCK),
                    f"B {node.input[3]!r}[{d}, :4H] (Wb), blocks reordered",
                )
                conv.put(
                    lstm_name("bias_hh", k, d),
                    reorder_blocks(B[d, 4 * h :], ONNX_BLOCK),
                    f"B {node.input[3]!r}[{d}, 4H:] (Rb), blocks reordered",
                )
        return D * h, h

    def _peepholes(self, node, who: str) -> None:
        if len(node.input) <= 7 or not node.input[7]:
            return
        P = self.const(node.input[7])
        if P is None:
            raise InputError(f"{who}: P (peepholes) is computed at run time; nn.LSTM has no peepholes")
        if np.any(P != 0):
            raise InputError(
                f"{who}: P (peepholes) is set (max |P| = {np.max(np.abs(P)):.3g}): the gates also "
                "read the cell state, which nn.LSTM and lstm-diag do not model"
            )

    def _sequence_lens(self, node, who: str, conv: Converted) -> None:
        if len(node.input) <= 4 or not node.input[4]:
            return
        lens = self.const(node.input[4])
        if lens is None:
            raise InputError(
                f"{who}: sequence_lens is a graph input (sequences of different lengths); "
                "lstm-diag analyses sequences of one length: export without sequence_lens"
            )
        if lens.size and np.all(lens == lens.flat[0]):
            conv.notes.append(
                f"{self._name(node)}: sequence_lens = {int(lens.flat[0])} for every sequence; "
                "the data must have that many steps"
            )
            return
        raise InputError(
            f"{who}: sequence_lens holds different lengths {sorted(set(lens.tolist()))[:5]}; "
            "lstm-diag analyses sequences of one length"
        )

    def _initial(self, node, index: int, what: str, who: str, conv: Converted) -> None:
        if len(node.input) <= index or not node.input[index]:
            return
        name = node.input[index]
        for _ in range(16):  # Expand / Tile of a zero constant is zero, whatever the shape
            producer = self.producer.get(name)
            if producer is None or producer.op_type not in ("Expand", "Tile", "Identity", "Cast", "Reshape"):
                break
            name = producer.input[0]
        producer = self.producer.get(name)
        value = self.const(name)
        if value is None and producer is not None and producer.op_type == "ConstantOfShape":
            attr = self.attrs(producer).get("value")
            value = self.onnx.numpy_helper.to_array(attr) if attr is not None else np.zeros(1)
        if value is not None:
            if np.any(value != 0):
                raise InputError(
                    f"{who}: {what} is a non-zero constant; lstm-diag starts from zero states "
                    "unless the data file gives h0/c0"
                )
            return
        if name in self.inputs:
            conv.notes.append(
                f"{self._name(node)}: {what} is the graph input {name!r}; analysed from zero "
                "states unless the data file gives h0/c0"
            )
            return
        raise InputError(
            f"{who}: {what} is computed by a {producer.op_type if producer else '?'} node; "
            "lstm-diag cannot tell which initial state the model uses"
        )

    # ------------------------------------------------------------------ structure

    def chain(self, nodes: list) -> list:
        """The LSTM nodes bottom-up: each node's X comes from the previous node's Y."""
        below = {}
        for n in nodes:
            src = self._source(n.input[0])
            below[id(n)] = src
        bottoms = [n for n in nodes if below[id(n)] is None or below[id(n)].op_type != "LSTM"]
        if len(bottoms) != 1:
            names = ", ".join(self._name(n) for n in bottoms)
            raise InputError(
                f"{self.p}: {len(bottoms)} separate LSTM stacks start at {names}; lstm-diag reads one"
            )
        stack = bottoms
        while True:
            above = [n for n in nodes if below[id(n)] is stack[-1]]
            if not above:
                break
            if len(above) > 1:
                raise InputError(f"{self.p}: the output of {self._name(stack[-1])} feeds several LSTM nodes")
            stack.append(above[0])
        if len(stack) != len(nodes):
            left = [self._name(n) for n in nodes if n not in stack]
            raise InputError(f"{self.p}: LSTM nodes {', '.join(left)} are not part of one stack")
        for lower, upper in zip(stack, stack[1:], strict=False):
            self._check_link(lower, upper)
        return stack

    def _source(self, name: str):
        """The node a tensor comes from, looking through layout-only nodes."""
        for _ in range(16):
            node = self.producer.get(name)
            if node is None or node.op_type not in ("Squeeze", "Transpose", "Reshape", "Identity"):
                return node
            name = node.input[0]
        return None

    def _layout(self, node) -> int:
        return int(self.attrs(node).get("layout", 0))

    def _y_axes(self, node) -> list[str]:
        return ["B", "T", "D", "H"] if self._layout(node) else ["T", "D", "B", "H"]

    def _check_link(self, lower, upper) -> None:
        """The path from lower's Y to upper's X must hand over (T, B, D*H) in upper's layout."""
        D = 2 if self.direction(lower) == "bidirectional" else 1
        R = self.const(lower.input[2])
        self.H = R.shape[-1] if R is not None else 0
        flow = self.follow(Flow(lower.output[0], self._y_axes(lower), False), D, stop=upper)
        want = ["B", "T", "F"] if self._layout(upper) else ["T", "B", "F"]
        if flow is None or flow.axes != want or flow.name != upper.input[0]:
            got = "?" if flow is None else flow.axes
            raise InputError(
                f"{self.p}: between LSTM nodes {self._name(lower)} and {self._name(upper)} the "
                f"sequence is rearranged in a way lstm-diag does not follow ({got})"
            )

    def direction(self, node) -> str:
        d = self.attrs(node).get("direction", b"forward")
        return d.decode() if isinstance(d, bytes) else d

    def follow(self, flow: Flow, D: int, stop=None) -> Flow | None:
        """Walk a tensor through layout-only nodes while it has one consumer (Shape nodes aside);
        stop before `stop` or before the first node that is not layout-only."""
        for _ in range(32):
            users = [n for n in self.consumers.get(flow.name, []) if n.op_type != "Shape"]
            if len(users) != 1 or users[0] is stop:
                return flow
            nxt = self._step(users[0], flow, D)
            if nxt is None:
                return flow
            flow = nxt
        return flow

    def _step(self, node, flow: Flow, D: int) -> Flow | None:
        """The labels after one layout-only node, or None if it is not one."""
        axes, op = list(flow.axes), node.op_type
        out = node.output[0]
        if op == "Identity":
            return Flow(out, axes, flow.last)
        if op == "Squeeze":
            squeeze = self._axes_arg(node, 1)
            if squeeze is None:
                return None
            squeeze = sorted(a % len(axes) for a in squeeze)
            if any(axes[a] not in ("D", "T1") or (axes[a] == "D" and D != 1) for a in squeeze):
                return None
            last = flow.last or any(axes[a] == "T1" for a in squeeze)
            kept = [x for j, x in enumerate(axes) if j not in squeeze]
            if "D" not in kept and kept[-1] == "H":
                kept[-1] = "F"  # one direction: the features are h
            return Flow(out, kept, last)
        if op == "Transpose":
            perm = self.attrs(node).get("perm", list(range(len(axes)))[::-1])
            return Flow(out, [axes[j] for j in perm], flow.last)
        if op == "Reshape":
            return self._reshape(node, flow, D)
        if op == "Gather":
            axis = self.attrs(node).get("axis", 0) % len(axes)
            idx = self.const(node.input[1])
            if idx is None or idx.ndim != 0:
                return None
            kept = axes[:axis] + axes[axis + 1 :]
            if kept and kept[-1] == "H" and "D" not in kept:
                kept[-1] = "F"
            if axes[axis] == "T" and int(idx) == -1:  # out[:, -1]: the last step
                return Flow(out, kept, True)
            if axes[axis] == "D" and D == 1 and int(idx) in (0, -1):  # h_n[0] of one layer
                return Flow(out, kept, flow.last)
            if axes[axis] == "LD" and int(idx) == -1:  # h_n[-1]: the top layer's final state
                return Flow(out, kept, flow.last)
            return None
        if op == "Concat":
            return self._concat_final_states(node, flow, D)
        if op == "Slice":
            return self._slice(node, flow)
        return None

    def _concat_final_states(self, node, flow: Flow, D: int) -> Flow | None:
        """nn.LSTM's h_n: the Y_h of every layer concatenated on the direction axis, ours last."""
        axis = self.attrs(node).get("axis", 0) % len(flow.axes)
        if flow.axes[axis] != "D" or D != 1 or node.input[-1] != flow.name:
            return None
        for name in node.input:
            producer = self._source(name)
            if producer is None or producer.op_type != "LSTM" or not self._through_layout(name, producer):
                return None
        axes = list(flow.axes)
        axes[axis] = "LD"
        return Flow(node.output[0], axes, flow.last)

    def _through_layout(self, name: str, lstm) -> bool:
        """Whether a tensor is an LSTM's Y_h seen through layout-only nodes."""
        for _ in range(16):
            if name == lstm.output[1]:
                return True
            node = self.producer.get(name)
            if node is None or node.op_type not in ("Squeeze", "Transpose", "Reshape", "Identity"):
                return False
            name = node.input[0]
        return False

    def _axes_arg(self, node, index: int) -> list[int] | None:
        if len(node.input) > index and node.input[index]:
            v = self.const(node.input[index])
            return None if v is None else [int(a) for a in np.atleast_1d(v)]
        a = self.attrs(node).get("axes")
        return None if a is None else [int(x) for x in a]

    def _reshape(self, node, flow: Flow, D: int) -> Flow | None:
        """A Reshape that merges the trailing (D, H) axes into F and keeps the others (0, or their
        own size as shape inference knows it)."""
        shape, axes = self.const(node.input[1]), flow.axes
        if shape is None or self.attrs(node).get("allowzero", 0) or axes[-1] not in ("H", "F"):
            return None
        shape = [int(s) for s in np.atleast_1d(shape)]
        keep = len(shape) - 1
        known = self.dims.get(node.input[0], [])
        if axes[keep:] not in (["D", "H"], ["F"]) or len(known) not in (0, len(axes)):
            return None
        for j, s in enumerate(shape[:keep]):  # 0 copies the axis; an explicit size must be the axis'
            if s != 0 and not (known and known[j] == s):
                return None
        if shape[-1] not in (-1, D * self.H):
            return None
        return Flow(node.output[0], axes[:keep] + ["F"], flow.last)

    def _slice(self, node, flow: Flow) -> Flow | None:
        starts, ends = self.const(node.input[1]), self.const(node.input[2])
        axes = self._axes_arg(node, 3) if len(node.input) > 3 else list(range(len(flow.axes)))
        steps = self.const(node.input[4]) if len(node.input) > 4 and node.input[4] else None
        if starts is None or ends is None or axes is None or (steps is not None and np.any(steps != 1)):
            return None
        labels = list(flow.axes)
        for a, s, e in zip(axes, np.atleast_1d(starts), np.atleast_1d(ends), strict=False):
            a %= len(labels)
            if labels[a] == "T" and int(s) == -1 and int(e) >= 2**31 - 1:
                labels[a] = "T1"
            else:
                return None
        return Flow(node.output[0], labels, flow.last)

    # ------------------------------------------------------------------ embedding and head

    def embedding(self, first, conv: Converted) -> int | None:
        """A Gather of a constant (V, I) matrix by a graph input, feeding the first LSTM's X."""
        node = self._source(first.input[0])
        if node is None:
            return None
        if node.op_type != "Gather" or self.attrs(node).get("axis", 0) != 0:
            conv.notes.append(
                f"the first LSTM's input X is computed by a {node.op_type} node: x in the data "
                "must be what reaches the LSTM"
            )
            return None
        E = self.const(node.input[0])
        if E is None or E.ndim != 2 or node.input[1] not in self.inputs:
            conv.notes.append("the first LSTM's input comes from a Gather that is not an embedding lookup")
            return None
        E = float_array(E, self.p, f"embedding {node.input[0]!r}")
        conv.put(
            EMBEDDING_WEIGHT, E, f"Gather of {node.input[0]!r} (V, I) by input {node.input[1]!r}, as is"
        )
        return E.shape[1]

    def head(self, top, width: int, conv: Converted) -> None:
        """A linear head on the top LSTM: Gemm, or MatMul (+ Add), ending the graph."""
        D = 2 if self.direction(top) == "bidirectional" else 1
        self.H = width // D
        layout = self._layout(top)
        starts = [Flow(top.output[0], self._y_axes(top), False)]
        if len(top.output) > 1 and top.output[1] and D == 1:
            starts.append(Flow(top.output[1], ["B", "D", "H"] if layout else ["D", "B", "H"], True))
        elif len(top.output) > 1 and top.output[1] and self.consumers.get(top.output[1]):
            conv.notes.append(
                "the bidirectional top LSTM's final states Y_h are used: the reverse direction's "
                "is its state at t=1, not a head lstm-diag reads"
            )
        used = [f for f in starts if any(n.op_type != "Shape" for n in self.consumers.get(f.name, []))]
        if len(used) != 1:
            what = "nothing" if not used else "both Y and Y_h"
            conv.notes.append(f"no head read: the top LSTM's outputs go to {what}")
            return
        flow = self.follow(used[0], D)
        users = [n for n in self.consumers.get(flow.name, []) if n.op_type != "Shape"]
        if len(users) != 1 or users[0].op_type not in ("Gemm", "MatMul"):
            ops = ", ".join(n.op_type for n in users) or "the graph's output"
            conv.notes.append(
                f"no head read: after the top LSTM (axes {flow.axes}) comes {ops}, not a "
                "Gemm/MatMul; use the upstream-gradient mode for other heads"
            )
            return
        if (
            flow.axes not in (["B", "F"], ["B", "T", "F"], ["T", "B", "F"])
            or flow.axes == ["B", "F"]
            and not flow.last
        ):
            conv.notes.append(f"no head read: the head reads the LSTM output arranged as {flow.axes}")
            return
        self._linear(users[0], flow, width, conv)

    def _linear(self, node, flow: Flow, width: int, conv: Converted) -> None:
        at = self.attrs(node)
        if node.op_type == "Gemm":
            if at.get("alpha", 1.0) != 1.0 or at.get("beta", 1.0) != 1.0 or at.get("transA", 0):
                conv.notes.append("no head read: a Gemm with alpha/beta != 1 or transA")
                return
            W = self.const(node.input[1])
            W = None if W is None else (W if at.get("transB", 0) else W.T)  # (O, F)
            b = self.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
            end = node.output[0]
            origin = f"Gemm {self._name(node)}: B {node.input[1]!r}" + (
                "" if at.get("transB") else " transposed"
            )
        else:
            W = self.const(node.input[1])
            W = None if W is None else W.T  # MatMul's (F, O) -> (O, F)
            end, b = node.output[0], None
            origin = f"MatMul {self._name(node)}: {node.input[1]!r} (F, O) transposed"
            adds = [n for n in self.consumers.get(end, []) if n.op_type != "Shape"]
            if len(adds) == 1 and adds[0].op_type == "Add":
                other = [i for i in adds[0].input if i != end]
                b = self.const(other[0]) if len(other) == 1 else None
                if b is not None:
                    end = adds[0].output[0]
        if W is None or W.ndim != 2 or W.shape[1] != width:
            conv.notes.append(
                f"no head read: {node.op_type} {self._name(node)} has no constant (O, {width}) weight"
            )
            return
        O = W.shape[0]
        if b is not None and b.size not in (1, O):
            conv.notes.append(f"no head read: the head's bias has shape {b.shape}")
            return
        tail = self._tail(end)
        if tail is None:
            conv.notes.append(
                f"no head read: the output of {node.op_type} {self._name(node)} goes on to more "
                "layers; use the upstream-gradient mode for other heads"
            )
            return
        W = float_array(W, self.p, "the head's weight")
        conv.put(HEAD_WEIGHT, np.ascontiguousarray(W), origin)
        if b is None:
            conv.put(HEAD_BIAS, np.zeros(O, W.dtype), "zeros (the head has no bias)")
        else:
            conv.put(
                HEAD_BIAS,
                float_array(np.broadcast_to(b, (O,)).copy(), self.p, "the head's bias"),
                "the head's bias (O), as is",
            )
        conv.target = "last" if flow.last else "all"
        if flow.axes[0] == "T":
            conv.notes.append("the head's output is time-major (T, B, O); logits in the data are (B, T, O)")
        if tail:
            conv.head_activation = tail.lower()
            conv.notes.append(f"the head is followed by {tail}: read as loss.type cross_entropy's softmax")

    def _tail(self, name: str) -> str | None:
        """'' if the tensor is a graph output, 'Softmax'/'LogSoftmax' if one of those makes it one."""
        if name in self.outputs:
            return ""
        users = self.consumers.get(name, [])
        if (
            len(users) == 1
            and users[0].op_type in ("Softmax", "LogSoftmax")
            and users[0].output[0] in self.outputs
        ):
            return users[0].op_type
        if len(users) == 1 and users[0].op_type == "Identity":
            return self._tail(users[0].output[0])
        return None
