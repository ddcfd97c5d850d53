"""The IR: SSA ``Value``s, ``Node``s in topological order, and the ``Graph`` that owns them.

Every edge edit goes through the mutation helpers (``Node.set_input``, ``replace_all_uses_with``,
``erase``, ``add_node(before=...)``), which keep each value's use-list exact; passes never touch
``_inputs`` or ``uses`` by hand. ``verify()`` checks all invariants and lists every problem.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
from collections.abc import Container, Iterable, Iterator, Sequence
from typing import Any

import networkx as nx
import numpy as np

from . import ops
from .errors import IRError, ShapeInferenceError, UnsupportedModelError, VerificationError
from .ops._schema import Ctx, InferError, Out, Unsupported
from .types import DType, QuantParams, TensorType


class Value:
    """An SSA value: produced by one node, or a graph input, or a constant (``data`` set)."""

    __slots__ = ("name", "type", "producer", "uses", "data", "sym", "graph")

    def __init__(self, name: str, type: TensorType, data: np.ndarray | None = None):
        self.name = name
        self.type = type
        self.producer: Node | None = None
        self.uses: list[tuple[Node, int]] = []
        self.data = data
        self.sym: tuple | None = None
        self.graph: Graph | None = None

    @property
    def is_constant(self) -> bool:
        return self.data is not None

    @property
    def is_graph_input(self) -> bool:
        return self.graph is not None and any(v is self for v in self.graph.inputs)

    @property
    def is_graph_output(self) -> bool:
        return self.graph is not None and any(v is self for v in self.graph.outputs)

    @property
    def users(self) -> list[Node]:
        """Distinct nodes that read this value, in use order."""
        seen: dict[int, Node] = {}
        for node, _ in self.uses:
            seen.setdefault(id(node), node)
        return list(seen.values())

    @property
    def shape(self) -> tuple:
        return self.type.shape

    @property
    def dtype(self) -> DType:
        return self.type.dtype

    def __repr__(self) -> str:
        return f"Value(%{self.name}: {self.type})"


class Node:
    """One op application. ``name`` is the stable debug handle: the user's layer name."""

    __slots__ = ("op", "_inputs", "outputs", "attrs", "name", "graph", "origins")

    def __init__(self, op: str, name: str, attrs: dict[str, Any] | None = None,
                 origins: Sequence[str] | None = None):
        self.op = op
        self.name = name
        self.attrs: dict[str, Any] = {k: _frozen(v) for k, v in (attrs or {}).items()}
        self._inputs: list[Value | None] = []
        self.outputs: list[Value] = []
        self.graph: Graph | None = None
        # The user's layer names this node computes: its own name when imported, the union of
        # the matched nodes' origins when a rewrite made it (a fused Conv{relu} keeps the conv,
        # bn and relu layers), so errors and reports can name what the user wrote.
        self.origins: tuple[str, ...] = tuple(origins) if origins else (name,)

    def merge_origins(self, *others: Sequence[str]) -> None:
        """Add the layer names in ``others`` to this node's origins (kept in first-seen order)."""
        self.origins = merged_origins(self.origins, *others)

    @property
    def inputs(self) -> tuple[Value | None, ...]:
        return tuple(self._inputs)

    @property
    def opdef(self) -> ops.OpDef:
        return ops.get(self.op)

    def set_input(self, index: int, value: Value | None) -> None:
        """Point operand ``index`` at ``value``, keeping both use-lists right. A value of
        another graph, or one computed from this node (a cycle), is refused with an
        ``IRError`` and nothing changes."""
        if value is not None and self.graph is not None:
            graph = self.graph
            if value.graph is not graph or graph._names.get(value.name) is not value:
                raise IRError(f"{self.describe()}: operand %{value.name} belongs to another "
                              f"graph, not {graph.name!r}")
            if graph._depends_on(value, [self]) is not None:
                raise IRError(f"{self.describe()} cannot read %{value.name}: it is computed "
                              f"from this node's output (the graph would get a cycle)")
        self._set_input(index, value)

    def _set_input(self, index: int, value: Value | None) -> None:
        old = self._inputs[index]
        if old is value:
            return
        if old is not None:
            _drop_use(old, self, index)
        self._inputs[index] = value
        if value is not None:
            value.uses.append((self, index))

    def replace_input(self, old: Value, new: Value | None) -> None:
        """Replace every operand that is ``old`` by ``new``."""
        for i, v in enumerate(self._inputs):
            if v is old:
                self.set_input(i, new)

    def describe(self) -> str:
        """How errors name this node: op, node name, the user's layers it came from when they
        are more than its name, and its first output."""
        out = f" -> %{self.outputs[0].name}" if self.outputs else ""
        layers = ""
        if self.origins != (self.name,):
            layers = f" (layers {', '.join(self.origins)})"
        return f"{self.op} node {self.name!r}{layers}{out}"

    def __repr__(self) -> str:
        return f"Node({self.describe()})"


def _frozen(value: Any) -> Any:
    """Attribute lists as tuples, so attributes hash and compare the same however given."""
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    return value


def merged_origins(*groups: Sequence[str]) -> tuple[str, ...]:
    """The layer names of ``groups`` in first-seen order, each once."""
    return tuple(dict.fromkeys(name for group in groups for name in group))


def _drop_use(value: Value, node: Node, index: int) -> None:
    for k, (n, i) in enumerate(value.uses):
        if n is node and i == index:
            del value.uses[k]
            return
    raise IRError(f"use-list of %{value.name} lost operand {index} of {node.describe()}")


class Graph:
    """Nodes in topological order, graph inputs and outputs, and named constants."""

    def __init__(self, name: str = "main"):
        self.name = name
        self.inputs: list[Value] = []
        self.outputs: list[Value] = []
        self.constants: dict[str, Value] = {}
        self.nodes: list[Node] = []
        # What passes record about the graph for later tools (e.g. why a node stays float);
        # carried by copy(), not part of the text form or of equality.
        self.metadata: dict[str, Any] = {}
        self._names: dict[str, Value] = {}
        self._node_names: set[str] = set()
        self._counter = itertools.count()

    # -- naming ---------------------------------------------------------------------------------

    def fresh_name(self, base: str = "v") -> str:
        """A value name not used yet in this graph, derived from ``base``."""
        return self._fresh(base or "v", self._names)

    def fresh_node_name(self, base: str) -> str:
        """A node name not used yet in this graph, derived from ``base``."""
        return self._fresh(base or "node", self._node_names)

    def _fresh(self, base: str, taken: Container[str]) -> str:
        candidate = base
        while candidate in taken:
            candidate = f"{base}_{next(self._counter)}"
        return candidate

    def value(self, name: str) -> Value:
        try:
            return self._names[name]
        except KeyError:
            raise IRError(f"graph {self.name!r} has no value %{name}") from None

    def has_value(self, name: str) -> bool:
        return name in self._names

    def values(self) -> Iterator[Value]:
        """Every value: inputs, constants, then node outputs in order."""
        yield from self.inputs
        yield from self.constants.values()
        for node in self.nodes:
            yield from node.outputs

    def _adopt(self, value: Value) -> Value:
        if value.name in self._names:
            raise IRError(f"value name %{value.name} is already used in graph {self.name!r}")
        value.graph = self
        self._names[value.name] = value
        return value

    def rename_value(self, value: Value, new_name: str) -> None:
        if self._names.get(value.name) is not value:
            raise IRError(f"%{value.name} does not belong to graph {self.name!r}")
        if new_name in self._names:
            raise IRError(f"value name %{new_name} is already used")
        del self._names[value.name]
        if value.name in self.constants:
            self.constants = {
                (new_name if k == value.name else k): v for k, v in self.constants.items()
            }
        value.name = new_name
        self._names[new_name] = value

    def rename_node(self, node: Node, new_name: str) -> None:
        """Give ``node`` another (unused) name; rewrites use it to hand a fused node the name
        of the user's layer it replaces."""
        if node.graph is not self:
            raise IRError(f"{node.describe()} does not belong to graph {self.name!r}")
        if new_name == node.name:
            return
        if new_name in self._node_names:
            raise IRError(f"node name {new_name!r} is already used in graph {self.name!r}")
        self._node_names.discard(node.name)
        node.name = new_name
        self._node_names.add(new_name)

    # -- building -------------------------------------------------------------------------------

    def add_input(self, name: str, type: TensorType) -> Value:
        value = self._adopt(Value(name, type))
        self.inputs.append(value)
        return value

    def add_constant(
        self, data: Any, name: str | None = None, quant: QuantParams | None = None
    ) -> Value:
        """A named constant; ``data`` is copied into a read-only array unless it is one."""
        if isinstance(data, np.ndarray) and not data.flags.writeable:
            array = data
        else:
            array = np.array(data)
            array.setflags(write=False)
        dtype = DType.from_numpy(array.dtype)
        value = Value(self.fresh_name(name or "const"), TensorType(dtype, array.shape, quant),
                      array)
        self._adopt(value)
        self.constants[value.name] = value
        return value

    def set_outputs(self, outputs: Sequence[Value]) -> None:
        """Make ``outputs`` the graph's outputs; values of another graph are refused."""
        for value in outputs:
            if value.graph is not self or self._names.get(value.name) is not value:
                raise IRError(f"graph output %{value.name} belongs to another graph, not "
                              f"{self.name!r}")
        self.outputs = list(outputs)

    def add_node(
        self,
        op: str,
        inputs: Sequence[Value | None],
        attrs: dict[str, Any] | None = None,
        *,
        name: str | None = None,
        outputs: Sequence[str] | int | None = None,
        before: Node | None = None,
        after: Node | None = None,
        types: Sequence[TensorType] | None = None,
        origins: Sequence[str] | None = None,
    ) -> Node:
        """Create a node, infer its output types, and insert it (at the end by default).

        ``outputs`` is a list of output names or a count (names are made fresh from the node
        name); ``types`` skips inference and sets the output types (used by parsers/importers
        that already know them; ``verify`` still checks them); ``origins`` are the user's layer
        names the node stands for (default: its own name). Everything is checked before the
        graph is touched: a refused call leaves the graph exactly as it was.
        """
        opdef = ops.get(op)
        if before is not None and after is not None:
            raise IRError(f"{op}: give either before= or after=, not both")
        anchor = before if before is not None else after
        position = len(self.nodes) if anchor is None else (
            self._index(anchor) + (0 if before is not None else 1))
        if attrs is not None and not isinstance(attrs, dict):
            raise IRError(f"{op}: attributes must be a dict of name -> value, got "
                          f"{type(attrs).__name__}")
        for value in inputs:
            if value is not None and not isinstance(value, Value):
                raise IRError(f"{op}: an operand must be a Value of this graph (or None), got "
                              f"{type(value).__name__}; add arrays with add_constant")
            if value is not None and (value.graph is not self
                                      or self._names.get(value.name) is not value):
                raise IRError(f"{op}: operand %{value.name} belongs to another graph, not "
                              f"{self.name!r}")
        node = Node(op, self.fresh_node_name(name or op.lower()), attrs, origins)
        if isinstance(outputs, int) or outputs is None:
            count = outputs if isinstance(outputs, int) else len(
                [o for o in opdef.outputs if not o.endswith("?")]
            ) or 1
            out_names = [node.name if k == 0 else f"{node.name}.{k}" for k in range(count)]
        else:
            out_names = list(outputs)
        if types is not None and len(types) != len(out_names):
            raise IRError(f"{node.describe()}: {len(types)} output types for "
                          f"{len(out_names)} outputs")
        node._inputs = list(inputs)
        try:
            if types is None:
                inferred = self._infer(node, len(out_names))
            else:
                inferred = [Out(t.dtype.value, t.shape) for t in types]
            if len(inferred) != len(out_names):
                raise IRError(f"{node.describe()}: {len(inferred)} output types for "
                              f"{len(out_names)} outputs")
            out_types = [TensorType(out.dtype, out.shape,
                                    types[k].quant if types is not None else None)
                         for k, out in enumerate(inferred)]
        finally:
            node._inputs = []
        # Nothing below can fail: the graph changes only now.
        node._inputs = list(inputs)
        for k, value in enumerate(node._inputs):
            if value is not None:
                value.uses.append((node, k))
        for out_name, out, out_type in zip(out_names, inferred, out_types):
            value = Value(self.fresh_name(out_name), out_type)
            value.sym = out.sym
            value.producer = node
            node.outputs.append(self._adopt(value))
        node.graph = self
        self._node_names.add(node.name)
        self.nodes.insert(position, node)
        return node

    def insert_before(self, anchor: Node, op: str, inputs: Sequence[Value | None],
                      attrs: dict[str, Any] | None = None, **kw: Any) -> Node:
        return self.add_node(op, inputs, attrs, before=anchor, **kw)

    def insert_after(self, anchor: Node, op: str, inputs: Sequence[Value | None],
                     attrs: dict[str, Any] | None = None, **kw: Any) -> Node:
        return self.add_node(op, inputs, attrs, after=anchor, **kw)

    def _index(self, node: Node) -> int:
        for i, n in enumerate(self.nodes):
            if n is node:
                return i
        raise IRError(f"{node.describe()} is not in graph {self.name!r}")

    # -- mutation -------------------------------------------------------------------------------

    def replace_all_uses_with(self, old: Value, new: Value, *, retype: bool = False,
                              exclude: Container[Node] = ()) -> None:
        """Every reader of ``old`` (nodes and graph outputs) reads ``new`` instead, except the
        nodes in ``exclude`` (how a node inserted after ``old`` keeps reading it).

        Refused with an ``IRError`` naming both values, before anything changes: a value from
        another graph; one of another type (dtype, shape or quantization) unless ``retype``
        says the change is intended; and one that depends on a reader it would redirect
        (``replace(y, Abs(y))`` would make ``%y = Abs(%y)``). When every reader moves, the node
        producing ``new`` now computes ``old``'s layer and inherits its origins.
        """
        if old is new:
            return
        for value in (old, new):
            if value.graph is not self or self._names.get(value.name) is not value:
                raise IRError(f"cannot replace %{old.name} by %{new.name}: %{value.name} "
                              f"belongs to another graph, not {self.name!r}")
        if not retype and old.type != new.type:
            raise IRError(f"cannot replace %{old.name}: {old.type} by %{new.name}: {new.type}: "
                          f"the types differ (pass retype=True if the change is intended)")
        redirected = [node for node, _ in old.uses if node not in exclude]
        cycle = self._depends_on(new, redirected)
        if cycle is not None:
            raise IRError(f"cannot replace %{old.name} by %{new.name}: %{new.name} depends on "
                          f"{cycle.describe()}, which reads %{old.name}; the graph would get a "
                          f"cycle")
        for node, index in list(old.uses):
            if node not in exclude:
                node._set_input(index, new)  # checked above, once for every reader
        self.outputs = [new if v is old else v for v in self.outputs]
        if not exclude and old.producer is not None and new.producer is not None:
            new.producer.merge_origins(old.producer.origins)  # it now computes that layer

    def _depends_on(self, value: Value, nodes: Sequence[Node]) -> Node | None:
        """The first of ``nodes`` that ``value`` is computed from (or produced by), else None."""
        targets = {id(n) for n in nodes}
        if not targets or value.producer is None:
            return None
        seen: set[int] = set()
        stack = [value.producer]
        while stack:
            node = stack.pop()
            if id(node) in targets:
                return node
            if id(node) in seen:
                continue
            seen.add(id(node))
            stack.extend(v.producer for v in node._inputs
                         if v is not None and v.producer is not None)
        return None

    def erase(self, node: Node) -> None:
        """Remove a node whose outputs nobody reads any more."""
        for out in node.outputs:
            if out.uses or out.is_graph_output:
                readers = ", ".join(n.describe() for n in out.users) or "the graph outputs"
                raise IRError(f"cannot erase {node.describe()}: %{out.name} is still read by "
                              f"{readers}")
        for index, value in enumerate(node._inputs):
            if value is not None:
                _drop_use(value, node, index)
        node._inputs = []
        del self.nodes[self._index(node)]
        for out in node.outputs:
            del self._names[out.name]
            out.graph = None
        self._node_names.discard(node.name)
        node.graph = None

    def erase_constant(self, value: Value) -> None:
        if value.uses or value.is_graph_output:
            raise IRError(f"cannot erase constant %{value.name}: it is still used")
        del self.constants[value.name]
        del self._names[value.name]
        value.graph = None

    def replace_with_constant(self, value: Value, data: np.ndarray) -> Value:
        """Make every reader of node output ``value`` read a new constant holding ``data``,
        whose shape must be ``value``'s or a refinement of it (known sizes for its symbols)."""
        array = np.asarray(data, dtype=value.dtype.np)
        shape = value.shape
        if array.ndim != len(shape) or any(isinstance(d, int) and d != n
                                           for d, n in zip(shape, array.shape)):
            raise IRError(f"cannot replace %{value.name}: {value.type} by a constant of shape "
                          f"{list(array.shape)}")
        const = self.add_constant(array, f"{value.name}.const", value.type.quant)
        self.replace_all_uses_with(value, const, retype=True)
        return const

    # -- inference ------------------------------------------------------------------------------

    def _infer(self, node: Node, n_outputs: int) -> list[Out]:
        opdef = ops.get(node.op)
        try:
            opdef.check_arity(len(node._inputs), n_outputs)
            attrs = opdef.full_attrs(node.attrs)
            ctx = Ctx(
                op=node.op,
                attrs=attrs,
                types=[None if v is None else (v.dtype.value, v.shape) for v in node._inputs],
                values=[None if v is None else (v.data if v.data is not None else v.sym)
                        for v in node._inputs],
                n_outputs=n_outputs,
            )
            outs = opdef.infer(ctx)
        except Unsupported as exc:
            raise UnsupportedModelError(f"{node.describe()}: {exc}",
                                        {node.op: [node.name]}) from None
        except InferError as exc:
            raise ShapeInferenceError(f"{node.describe()}: {exc}") from None
        except Exception as exc:  # a bad attribute value can break an inference function
            raise ShapeInferenceError(
                f"{node.describe()}: type inference failed: {type(exc).__name__}: {exc}") from exc
        if len(outs) < n_outputs:
            raise ShapeInferenceError(
                f"{node.describe()}: inference gave {len(outs)} outputs, node has {n_outputs}")
        return list(outs[:n_outputs])

    def infer_types(self) -> None:
        """Re-run type inference over every node in order, updating output types in place."""
        for node in self.nodes:
            outs = self._infer(node, len(node.outputs))
            for value, out in zip(node.outputs, outs):
                value.type = TensorType(out.dtype, out.shape, value.type.quant)
                value.sym = out.sym

    # -- queries --------------------------------------------------------------------------------

    def to_networkx(self) -> nx.MultiDiGraph:
        """Nodes as graph vertices, one edge per (producer output -> operand)."""
        g = nx.MultiDiGraph()
        for node in self.nodes:
            g.add_node(node)
        for node in self.nodes:
            for index, value in enumerate(node._inputs):
                if value is not None and value.producer is not None:
                    g.add_edge(value.producer, node, index=index, value=value.name)
        return g

    def toposort(self) -> None:
        """Reorder ``nodes`` topologically (stable: keeps the current order where it can)."""
        order = {id(n): i for i, n in enumerate(self.nodes)}
        g = self.to_networkx()
        if not nx.is_directed_acyclic_graph(g):
            cycle = nx.find_cycle(g)
            names = " -> ".join(edge[0].name for edge in cycle)
            raise IRError(f"graph {self.name!r} has a cycle: {names}")
        self.nodes = list(nx.lexicographical_topological_sort(g, key=lambda n: order[id(n)]))

    def dead_after(self, keep: Iterable[Value] = ()) -> dict[int, list[Value]]:
        """Liveness: node index -> the values that no later node reads once it has run (its
        last reader, or its producer when nothing reads it; -1 for graph inputs nobody reads).
        Constants, graph outputs and ``keep`` are never dead. Backends free memory by it."""
        kept = {id(v) for v in keep} | {id(v) for v in self.outputs}
        last: dict[int, tuple[Value, int]] = {id(v): (v, -1) for v in self.inputs}
        for index, node in enumerate(self.nodes):
            for value in node._inputs:
                if value is not None and not value.is_constant:
                    last[id(value)] = (value, index)
            for value in node.outputs:
                last.setdefault(id(value), (value, index))
        dead: dict[int, list[Value]] = {}
        for key, (value, index) in last.items():
            if key not in kept:
                dead.setdefault(index, []).append(value)
        return dead

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for node in self.nodes:
            counts[node.op] = counts.get(node.op, 0) + 1
        return counts

    def float_islands(self) -> list:
        """What computes in float between the quantized boundaries, as connected groups of
        nodes with the reason each stays float (``qcompiler.islands``); empty when the graph is
        integer from its input Quantize to its output Dequantize."""
        from .islands import float_islands

        return float_islands(self)

    def find_nodes(self, op: str) -> list[Node]:
        return [n for n in self.nodes if n.op == op]

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise IRError(f"graph {self.name!r} has no node named {name!r}")

    # -- verification ---------------------------------------------------------------------------

    def verify(self) -> None:
        """Check SSA, use-lists, order, types, shapes and quantization; raise listing all."""
        from .verify import graph_problems

        problems = graph_problems(self)
        if problems:
            head = f"graph {self.name!r} failed verification ({len(problems)} problem(s)):"
            raise VerificationError("\n  ".join([head, *problems]), problems)

    # -- copying, text and equality ---------------------------------------------------------------

    def copy(self) -> Graph:
        """A structural deep copy; constant arrays (read-only) are shared, not copied."""
        new = Graph(self.name)
        mapping: dict[int, Value] = {}
        for value in self.inputs:
            mapping[id(value)] = new.add_input(value.name, value.type)
        for value in self.constants.values():
            mapping[id(value)] = new.add_constant(value.data, value.name, value.type.quant)
            mapping[id(value)].sym = value.sym
        for node in self.nodes:
            attrs = {k: (v.copy() if isinstance(v, np.ndarray) else v)
                     for k, v in node.attrs.items()}
            twin = new.add_node(node.op, [None if v is None else mapping[id(v)]
                                          for v in node.inputs],
                                attrs, name=node.name, outputs=[v.name for v in node.outputs],
                                types=[v.type for v in node.outputs], origins=node.origins)
            for old, fresh in zip(node.outputs, twin.outputs):
                fresh.sym = old.sym
                mapping[id(old)] = fresh
        new.set_outputs([mapping[id(v)] for v in self.outputs])
        new.metadata = copy.deepcopy(self.metadata)
        return new

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Graph]:
        """Edits inside the block either all happen or, if the block raises, none do: the graph
        is restored to its state at entry (``Node`` and ``Value`` objects taken from it before
        then are stale after a rollback). A nested block is a savepoint: it rolls back to its
        own entry, and the outer block still can to its own."""
        snapshot = self.copy()
        try:
            yield self
        except BaseException:
            self._become(snapshot)
            raise

    def _become(self, other: Graph) -> None:
        """Take over ``other``'s whole state (its nodes and values now belong to ``self``)."""
        self.__dict__.update(other.__dict__)
        for value in self._names.values():
            value.graph = self
        for node in self.nodes:
            node.graph = self

    def to_text(self, inline_constants: bool | int = False) -> str:
        from .text import print_graph

        return print_graph(self, inline_constants)

    def constant_arrays(self) -> dict[str, np.ndarray]:
        return {name: v.data for name, v in self.constants.items()}

    def __str__(self) -> str:
        return self.to_text()

    def __repr__(self) -> str:
        return f"<Graph {self.name!r}: {len(self.nodes)} nodes, {len(self.constants)} constants>"

    def __eq__(self, other: object) -> bool:
        """Structural equality: the same inputs, constants (by content), nodes (op, name,
        attributes, operands, outputs and their types, origins) in the same order, outputs."""
        if not isinstance(other, Graph):
            return NotImplemented
        if self.name != other.name or len(self.nodes) != len(other.nodes):
            return False

        def signature(values: Sequence[Value | None]) -> list[tuple[str, TensorType] | None]:
            return [None if v is None else (v.name, v.type) for v in values]

        if (signature(self.inputs) != signature(other.inputs)
                or signature(self.outputs) != signature(other.outputs)
                or self.constants.keys() != other.constants.keys()):
            return False
        for name, value in self.constants.items():
            theirs = other.constants[name]
            if value.type != theirs.type or not _same_array(value.data, theirs.data):
                return False
        for a, b in zip(self.nodes, other.nodes):
            if (a.op, a.name, a.origins) != (b.op, b.name, b.origins):
                return False
            if signature(a.inputs) != signature(b.inputs):
                return False
            if signature(a.outputs) != signature(b.outputs):
                return False
            if a.attrs.keys() != b.attrs.keys() or not all(
                    _same_attr(a.attrs[k], b.attrs[k]) for k in a.attrs):
                return False
        return True

    __hash__ = None  # type: ignore[assignment]


def _same_array(a: np.ndarray, b: np.ndarray) -> bool:
    return (a.dtype == b.dtype and a.shape == b.shape
            and bool(np.array_equal(a, b, equal_nan=a.dtype.kind == "f")))


def _same_attr(a: Any, b: Any) -> bool:
    """Attribute values compared by content and kind (a tensor is not a list, 1 is not 1.0)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and _same_array(a, b)
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return (isinstance(a, (list, tuple)) and isinstance(b, (list, tuple))
                and len(a) == len(b) and all(_same_attr(x, y) for x, y in zip(a, b)))
    return type(a) is type(b) and a == b
