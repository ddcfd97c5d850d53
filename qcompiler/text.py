"""The text form of the IR: one line per node, parseable back into an equal graph.

    graph digits(%image: f32[N,1,8,8]) {
      %conv1_w: f32[12,1,3,3] = const @conv1_w
      %axes: i64[1] = const dense<[0]>
      %conv1_c: f32[N,12,8,8] = Conv(%image, %conv1_w, %conv1_b) {group = 1} @"conv1"
      %y: f32[N,24,8,8] = Conv(%conv1_c, %w2) {activation = "Relu"} @conv2 from [conv2, bn2, relu2]
      return %logits
    }

A node whose layer origins are more than its own name lists them after ``from``.
Constants are printed by reference (``@name``, resolved from the ``constants`` mapping given to
``parse``) or inline (``dense<[...]>``); small ones are always inline. Floats are printed in their
shortest round-tripping form, so ``parse(print(g)) == g`` holds exactly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from . import ops
from .errors import IRError, ParseError
from .graph import Graph, Value
from .types import DType, QuantParams, TensorType

INLINE_LIMIT = 16  # constants with at most this many elements are always printed inline
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
_VALUE_IDENT = re.compile(r"^(?:[A-Za-z_][A-Za-z0-9_.]*|[0-9]+)$")


# -- printing ------------------------------------------------------------------------------------


def _name(name: str, pattern: re.Pattern[str] = _VALUE_IDENT) -> str:
    return name if pattern.match(name) else json.dumps(name)


def _value_ref(value: Value | None) -> str:
    return "none" if value is None else "%" + _name(value.name)


def _float(x: float) -> str:
    return repr(float(x))


def _scalar(x: Any, dtype: np.dtype) -> str:
    if dtype.kind == "b":
        return "true" if x else "false"
    if dtype.kind == "f":
        return str(x)  # numpy's shortest repr that round-trips for this float width
    return str(int(x))


def format_type(t: TensorType) -> str:
    dims = ",".join(str(d) if isinstance(d, int) else _name(d, _IDENT) for d in t.shape)
    text = f"{t.dtype}[{dims}]"
    if t.quant is not None:
        text += " " + format_quant(t.quant, t.dtype)
    return text


def format_quant(q: QuantParams, dtype: DType | None = None) -> str:
    parts = []
    if q.axis is not None:
        parts.append(f"axis={q.axis}")
    if q.axis is None:
        parts.append(f"scale={_float(q.scale[0])}")
        parts.append(f"zero_point={q.zero_point[0]}")
    else:
        parts.append("scale=[" + ", ".join(_float(s) for s in q.scale) + "]")
        parts.append("zero_point=[" + ", ".join(str(z) for z in q.zero_point) + "]")
    if dtype is None or q.dtype != dtype:
        parts.append(f"dtype={q.dtype}")
    parts.append(f"qmin={q.qmin}")
    parts.append(f"qmax={q.qmax}")
    return "q(" + ", ".join(parts) + ")"


def format_dense(array: np.ndarray) -> str:
    flat = array.reshape(-1)
    return "dense<[" + ", ".join(_scalar(x, array.dtype) for x in flat) + "]>"


def format_attr(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return _float(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, np.ndarray):
        t = TensorType(DType.from_numpy(value.dtype), value.shape)
        return f"tensor<{format_type(t)}: {format_dense(value)[6:-1]}>"
    if isinstance(value, QuantParams):
        return format_quant(value)
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(format_attr(v) for v in value) + "]"
    raise TypeError(f"attribute value {value!r} of type {type(value).__name__} has no text form")


def print_graph(g: Graph, inline_constants: bool | int = False) -> str:
    limit = INLINE_LIMIT if inline_constants is False else (
        None if inline_constants is True else int(inline_constants))
    args = ", ".join(f"{_value_ref(v)}: {format_type(v.type)}" for v in g.inputs)
    lines = [f"graph {_name(g.name, _IDENT)}({args}) {{"]
    for value in g.constants.values():
        data = value.data
        inline = limit is None or data.size <= limit
        body = format_dense(data) if inline else "@" + _name(value.name)
        lines.append(f"  {_value_ref(value)}: {format_type(value.type)} = const {body}")
    for node in g.nodes:
        outs = ", ".join(f"{_value_ref(v)}: {format_type(v.type)}" for v in node.outputs)
        ins = ", ".join(_value_ref(v) for v in node.inputs)
        line = f"  {outs} = {node.op}({ins})"
        if node.attrs:
            items = ", ".join(f"{k} = {format_attr(v)}" for k, v in sorted(node.attrs.items()))
            line += " {" + items + "}"
        line += " @" + _name(node.name)
        if node.origins != (node.name,):
            line += " from [" + ", ".join(_name(o) for o in node.origins) + "]"
        lines.append(line)
    lines.append("  return " + ", ".join(_value_ref(v) for v in g.outputs))
    lines.append("}")
    return "\n".join(lines) + "\n"


# -- parsing -------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<ws>[ \t]+|\#[^\n]*)
  | (?P<nl>\n)
  | (?P<str>"(?:[^"\\]|\\.)*")
  | (?P<num>[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?(?![A-Za-z0-9_.]))
  | (?P<word>[-+]?[A-Za-z_][A-Za-z0-9_.]*|[0-9][A-Za-z0-9_.]*)
  | (?P<punct>->|[%@(){}\[\]<>,:=])
    """,
    re.VERBOSE,
)


class _Tokens:
    def __init__(self, text: str):
        self.toks: list[tuple[str, str, int, int]] = []
        pos, line, col0 = 0, 1, 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if not m:
                raise ParseError(f"line {line}, column {pos - col0 + 1}: unexpected "
                                 f"character {text[pos]!r}")
            kind = m.lastgroup
            if kind == "nl":
                line, col0 = line + 1, m.end()
            elif kind != "ws":
                self.toks.append((kind, m.group(), line, pos - col0 + 1))
            pos = m.end()
        self.toks.append(("eof", "", line, pos - col0 + 1))
        self.i = 0

    def peek(self) -> tuple[str, str, int, int]:
        return self.toks[self.i]

    def next(self) -> tuple[str, str, int, int]:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def error(self, message: str) -> ParseError:
        _, text, line, col = self.peek()
        return ParseError(f"line {line}, column {col}: {message} (at {text or 'end of input'!r})")

    def expect(self, text: str) -> None:
        if self.peek()[1] != text:
            raise self.error(f"expected {text!r}")
        self.i += 1

    def accept(self, text: str) -> bool:
        if self.peek()[1] == text and self.peek()[0] != "str":
            self.i += 1
            return True
        return False

    def literal(self, convert: Callable[[str], Any], what: str) -> Any:
        """The next token converted by ``convert`` (``json.loads``, ``int``...), consumed; a
        token it refuses (a bad escape, an out-of-range number) is a ``ParseError`` there."""
        try:
            value = convert(self.peek()[1])
        except (ValueError, OverflowError) as exc:
            raise self.error(f"bad {what}: {exc}") from None
        self.i += 1
        return value

    def name(self) -> str:
        kind, text, _, _ = self.peek()
        if kind == "str":
            return self.literal(json.loads, "quoted name")
        if kind in ("word", "num"):
            self.i += 1
            return text
        raise self.error("expected a name")


def parse(text: str, constants: Mapping[str, np.ndarray] | None = None) -> Graph:
    """Parse the text form back into a ``Graph``.

    Constants printed by reference (``@name``) are looked up in ``constants``; a missing one is
    a ``ParseError`` naming it. Output types are taken from the text and then checked by
    ``verify()``, so a hand-edited graph with a wrong type is reported, not trusted.
    """
    toks = _Tokens(text)
    constants = constants or {}
    if toks.next()[1] != "graph":
        raise ParseError("line 1: a graph starts with 'graph NAME('")
    g = Graph(toks.name())
    toks.expect("(")

    def graph_input() -> None:
        name = _value_name(toks)
        toks.expect(":")
        g.add_input(name, _type(toks))

    _items(toks, ")", graph_input)
    toks.expect("{")
    while True:
        if toks.accept("return"):
            outs = []
            while toks.peek()[1] == "%":
                outs.append(_lookup(g, toks, _value_name(toks)))
                if not toks.accept(","):
                    break
            g.set_outputs(outs)
            toks.expect("}")
            break
        _statement(g, toks, constants)
    if toks.peek()[0] != "eof":
        raise toks.error("text after the end of the graph")
    _restore_sym(g)
    g.verify()
    return g


def _restore_sym(g: Graph) -> None:
    """Recompute the known contents of shape tensors, which the text form does not spell out."""
    for node in g.nodes:
        outs = g._infer(node, len(node.outputs))
        for value, out in zip(node.outputs, outs):
            value.sym = out.sym


def _value_name(toks: _Tokens) -> str:
    toks.expect("%")
    return toks.name()


def _lookup(g: Graph, toks: _Tokens, name: str) -> Value:
    if not g.has_value(name):
        raise toks.error(f"%{name} is not defined")
    return g.value(name)


def _statement(g: Graph, toks: _Tokens, constants: Mapping[str, np.ndarray]) -> None:
    names, types = [], []
    while True:
        names.append(_value_name(toks))
        toks.expect(":")
        types.append(_type(toks))
        if not toks.accept(","):
            break
    toks.expect("=")
    if toks.accept("const"):
        if len(names) != 1:
            raise toks.error("a const defines one value")
        t = types[0]
        if toks.accept("@"):
            ref = toks.name()
            if ref not in constants:
                raise toks.error(f"constant @{ref} is not in the constants given to parse()")
            data = np.asarray(constants[ref])
        else:
            data = _dense(toks, t)
        if data.dtype != t.dtype.np or tuple(data.shape) != t.shape:
            raise toks.error(f"constant %{names[0]} is typed {t} but holds "
                             f"{data.dtype}{list(data.shape)}")
        value = g.add_constant(data, names[0], t.quant)
        if value.name != names[0]:
            raise toks.error(f"%{names[0]} is defined twice")
        return
    op_at = toks.i
    op = toks.name()
    try:
        ops.get(op)
    except KeyError as exc:  # UnknownOpError: named at the op, with the closest names
        toks.i = op_at
        raise toks.error(str(exc)) from None
    toks.expect("(")
    inputs = _items(toks, ")", lambda: None if toks.accept("none") else
                    _lookup(g, toks, _value_name(toks)))
    attrs = _fields(toks, "}") if toks.accept("{") else {}
    toks.expect("@")
    node_name = toks.name()
    origins = None
    if toks.accept("from"):
        toks.expect("[")
        origins = _items(toks, "]", toks.name)
        if not origins:
            raise toks.error(f"node {node_name!r} comes from an empty list of layers")
    for name in names:
        if g.has_value(name):
            raise toks.error(f"%{name} is defined twice")
    node = g.add_node(op, inputs, attrs, name=node_name, outputs=names, types=types,
                      origins=origins)
    if node.name != node_name:
        raise toks.error(f"node name {node_name!r} is used twice")


def _type(toks: _Tokens) -> TensorType:
    dtype_text = toks.name()
    try:
        dtype = DType(dtype_text)
    except ValueError:
        raise toks.error(f"unknown dtype {dtype_text!r}") from None
    toks.expect("[")

    def dim() -> int | str:
        if toks.peek()[0] == "num":
            return toks.literal(int, "dimension")
        return toks.name()

    dims = _items(toks, "]", dim)
    quant = None
    if toks.peek()[1] == "q" and toks.toks[toks.i + 1][1] == "(":
        toks.next()
        quant = _quant(toks, dtype)
    try:
        return TensorType(dtype, tuple(dims), quant)
    except IRError as exc:
        raise toks.error(str(exc)) from None


def _quant(toks: _Tokens, dtype: DType | None) -> QuantParams:
    toks.expect("(")
    fields = _fields(toks, ")")
    try:
        if "dtype" in fields:
            fields["dtype"] = DType(fields["dtype"])
        elif dtype is not None:
            fields["dtype"] = dtype
        return QuantParams(**fields)
    except (TypeError, ValueError) as exc:
        raise toks.error(f"bad quantization parameters: {exc}") from None


def _dense(toks: _Tokens, t: TensorType) -> np.ndarray:
    toks.expect("dense")
    toks.expect("<")
    items = _list(toks)
    toks.expect(">")
    return _array(toks, items, t)


def _array(toks: _Tokens, items: list[Any], t: TensorType) -> np.ndarray:
    if not t.is_static:
        raise toks.error(f"a constant needs a static shape, not {t}")
    try:
        data = np.array(items, dtype=t.dtype.np) if items else np.zeros(0, t.dtype.np)
        return data.reshape(t.shape)
    except (ValueError, OverflowError) as exc:
        raise toks.error(f"values do not fit {t}: {exc}") from None


MAX_NESTING = 32  # lists in attributes and constants nest at most this deep


def _list(toks: _Tokens, depth: int = 0) -> list[Any]:
    if depth >= MAX_NESTING:
        raise toks.error(f"lists nest more than {MAX_NESTING} deep")
    toks.expect("[")
    return _items(toks, "]", lambda: _attr(toks, depth + 1))


def _items(toks: _Tokens, close: str, item: Callable[[], Any]) -> list[Any]:
    """Comma-separated ``item()``s up to and including the ``close`` token."""
    items = []
    while not toks.accept(close):
        items.append(item())
        if not toks.accept(","):
            toks.expect(close)
            break
    return items


def _fields(toks: _Tokens, close: str) -> dict[str, Any]:
    """Comma-separated ``key = value`` pairs up to and including ``close``."""
    fields: dict[str, Any] = {}

    def field() -> None:
        key = toks.name()
        toks.expect("=")
        fields[key] = _attr(toks)

    _items(toks, close, field)
    return fields


def _attr(toks: _Tokens, depth: int = 0) -> Any:
    kind, text, _, _ = toks.peek()
    if text == "[" and kind == "punct":
        return tuple(_list(toks, depth))
    if kind == "str":
        return toks.literal(json.loads, "string")
    if kind == "num":
        return toks.literal(float if any(c in text for c in ".eE") else int, "number")
    if text in ("true", "false"):
        toks.next()
        return text == "true"
    if text in ("nan", "inf", "-inf", "+inf"):
        toks.next()
        return float(text)
    if text == "tensor":
        toks.next()
        toks.expect("<")
        t = _type(toks)
        toks.expect(":")
        data = _array(toks, _list(toks), t)
        toks.expect(">")
        return data
    if text == "q":
        toks.next()
        return _quant(toks, None)
    if kind == "word":
        toks.next()
        return text
    raise toks.error("expected an attribute value")
