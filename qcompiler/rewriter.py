"""Declarative rewrite rules: a pattern over the IR, a ``check`` that says why it refuses, and a
rewrite that edits through a ``Rewriter``.

A pattern is rooted at the last node of the structure it describes and names its operands::

    conv = Op(CONV_LIKE, Var("x"), Const("w"), Opt(Const("b")), name="conv", one_use=True)
    rule = Rule("conv-bn", Op("BatchNormalization", conv, Const("gamma"), Const("beta"),
                              Const("mean"), Const("var"), name="bn"),
                rewrite=fold, check=no_activation)

``Op`` matches the producer of a value by op type (one or several), operand structure
(``commutative=True`` tries both operand orders of a binary op), attribute values and, with
``one_use=True``, that nothing else reads its output. ``Var`` matches any value (a name used
twice must bind the same value), ``Const`` a constant (optionally one whose elements all equal
``value``), ``Opt`` an operand that may be absent. Every refusal, by the pattern or by the
rule's ``check``, is a readable reason; ``apply_rules(..., refusals=...)`` collects them, which
is how ``explain`` answers "why didn't my rule fire".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import QCompilerError, RewriteError
from .graph import Graph, Node, Value, merged_origins
from .pass_manager import Pass, PassResult


def short(node: Node) -> str:
    """How reasons name a node: its op and the user's layer name."""
    return f"{node.op} {node.name!r}"


class _Refused(Exception):
    """A pattern refusal; ``structural`` when the IR simply has another shape there (a
    different op, an input instead of a node), as opposed to a failed constraint."""

    def __init__(self, reason: str, depth: int, structural: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.depth = depth
        self.structural = structural


class Match:
    """What a pattern bound: ``m["conv"]`` is a matched ``Node``, ``m["w"]`` a ``Value``."""

    def __init__(self, graph: Graph, root: Node):
        self.graph = graph
        self.root = root
        self.bindings: dict[str, Any] = {}
        self.nodes: list[Node] = []
        self._best: _Refused | None = None  # the deepest refusal met while searching

    def __getitem__(self, key: str) -> Any:
        return self.bindings[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.bindings.get(key, default)

    def const(self, key: str) -> np.ndarray:
        """The array of a bound constant."""
        value = self.bindings[key]
        if not isinstance(value, Value) or value.data is None:
            raise RewriteError(f"pattern binding {key!r} is not a constant")
        return value.data

    def _snapshot(self) -> tuple[dict[str, Any], int]:
        return dict(self.bindings), len(self.nodes)

    def _restore(self, snap: tuple[dict[str, Any], int]) -> None:
        self.bindings = dict(snap[0])
        del self.nodes[snap[1]:]

    def _note(self, refused: _Refused) -> None:
        if self._best is None or refused.depth > self._best.depth:
            self._best = refused

    def _detached(self) -> Match:
        """A copy holding the current bindings (the search may still rewind this one)."""
        m = Match(self.graph, self.root)
        m.bindings, m.nodes = dict(self.bindings), list(self.nodes)
        return m


class Pattern:
    """Base class of pattern elements.

    ``matches`` yields once for every way ``value`` matches, with that way's bindings in ``m``,
    and leaves ``m`` as it found it between ways and when done; it raises ``_Refused`` (or
    records refusals with ``m._note`` and yields nothing) when there is no way. Matching is a
    backtracking search: a later operand that disagrees with an earlier binding makes the
    earlier operands try their other ways (the other order of a commutative op).
    """

    def matches(self, value: Value | None, m: Match, where: str, depth: int) -> Iterator[None]:
        raise NotImplementedError

    def _bind(self, name: str | None, obj: Any, m: Match, where: str, depth: int) -> None:
        if name is None:
            return
        bound = m.bindings.get(name, _UNBOUND)
        if bound is _UNBOUND:
            m.bindings[name] = obj
        elif bound is not obj:
            raise _Refused(f"{where} is {_ref(obj)} but {name!r} is already {_ref(bound)}", depth)


_UNBOUND = object()


def _reader(node: Node, value: Value) -> str:
    """A reader of ``value`` for refusal messages (``Mul 'sq' twice`` for ``Mul(x, x)``)."""
    times = sum(1 for n, _ in value.uses if n is node)
    return short(node) + ("" if times == 1 else " twice" if times == 2 else f" {times} times")


def _attr_key(value: Any) -> Any:
    """Attribute values compared by content: lists, tuples and arrays alike."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return tuple(_attr_key(v) for v in value)
    return value


def _ref(obj: Any) -> str:
    if isinstance(obj, Node):
        return short(obj)
    if isinstance(obj, Value):
        return f"%{obj.name}"
    return "absent"


@dataclass(frozen=True)
class Var(Pattern):
    """Any present value, bound to ``name``."""

    name: str | None = None

    def matches(self, value: Value | None, m: Match, where: str, depth: int) -> Iterator[None]:
        if value is None:
            raise _Refused(f"{where} is absent", depth)
        yield from _bound(self, self.name, value, m, where, depth)


@dataclass(frozen=True)
class Const(Pattern):
    """A constant; with ``value``, one whose elements all equal it (relative tolerance
    ``rtol``, so 0.16666667 and 1/6 in float32 both match ``1/6``)."""

    name: str | None = None
    value: float | None = None
    rtol: float = 1e-6

    def matches(self, value: Value | None, m: Match, where: str, depth: int) -> Iterator[None]:
        if value is None:
            raise _Refused(f"{where} is absent", depth)
        if value.data is None:
            origin = f"comes from {short(value.producer)}" if value.producer else "is an input"
            raise _Refused(f"{where} %{value.name} {origin}, not a constant", depth, True)
        if self.value is not None:
            data = value.data
            ok = data.size > 0 and data.dtype.kind in "fiu" and np.allclose(
                data, self.value, rtol=self.rtol, atol=0.0)
            if not ok:
                shown = np.array2string(data.reshape(-1)[:4], separator=", ")
                raise _Refused(f"{where} %{value.name} is {shown}, not {self.value:g}", depth)
        yield from _bound(self, self.name, value, m, where, depth)


@dataclass(frozen=True)
class Opt(Pattern):
    """An operand that may be absent (bound to None) or match ``pattern``."""

    pattern: Pattern

    def matches(self, value: Value | None, m: Match, where: str, depth: int) -> Iterator[None]:
        if value is not None:
            yield from self.pattern.matches(value, m, where, depth)
            return
        snap = m._snapshot()
        name = getattr(self.pattern, "name", None)
        if name is not None:
            m.bindings.setdefault(name, None)
        yield
        m._restore(snap)


ANY = Var()  # any present operand, not bound


class Op(Pattern):
    """A node of one of ``ops`` producing the value, with operands matching ``operands``.

    Node operands past the pattern's must be absent unless the pattern ends with ``...``;
    ``attrs`` maps attribute names to required values (defaults included) or predicates.
    """

    def __init__(self, ops: str | Sequence[str], *operands: Any, name: str | None = None,
                 one_use: bool = False, commutative: bool = False,
                 attrs: dict[str, Any] | None = None):
        self.ops = (ops,) if isinstance(ops, str) else tuple(ops)
        self.rest = bool(operands) and operands[-1] is Ellipsis
        self.operands: tuple[Pattern | None, ...] = tuple(
            operands[:-1] if self.rest else operands)
        if commutative and len(self.operands) != 2:
            raise ValueError("commutative patterns must have exactly two operands")
        self.name = name
        self.one_use = one_use
        self.commutative = commutative
        self.attrs = dict(attrs or {})

    def __repr__(self) -> str:
        return f"Op({'|'.join(self.ops)}, name={self.name!r})"

    @property
    def wanted(self) -> str:
        return " or ".join(self.ops)

    def matches(self, value: Value | None, m: Match, where: str, depth: int) -> Iterator[None]:
        if value is None:
            raise _Refused(f"{where} is absent, not the output of {self.wanted}", depth, True)
        node = value.producer
        if node is None:
            kind = "a constant" if value.is_constant else "a graph input"
            raise _Refused(f"{where} %{value.name} is {kind}, not the output of {self.wanted}",
                           depth, True)
        if node.op not in self.ops:
            raise _Refused(f"{where} %{value.name} comes from {short(node)}, not "
                           f"{self.wanted}", depth, True)
        if value is not node.outputs[0]:
            raise _Refused(f"{where} %{value.name} is not the first output of {short(node)}",
                           depth)
        if self.one_use and (len(value.uses) != 1 or value.is_graph_output):
            names = [_reader(n, value) for n in value.users] + (
                ["the graph outputs"] if value.is_graph_output else [])
            count = len(value.uses) + value.is_graph_output
            raise _Refused(f"%{value.name} (output of {short(node)}) has {count} readers "
                           f"({', '.join(names)}); the rewrite needs it to have one", depth)
        yield from self.matches_node(node, m, depth)

    def matches_node(self, node: Node, m: Match, depth: int = 0) -> Iterator[None]:
        """Every way ``node`` matches this pattern (see ``Pattern.matches``)."""
        if node.op not in self.ops:
            raise _Refused(f"{short(node)} is not {self.wanted}", depth)
        full = node.opdef.full_attrs(node.attrs)
        for key, want in self.attrs.items():
            have = full.get(key)
            if callable(want):
                if not want(have):
                    raise _Refused(f"{short(node)} has {key}={have!r}, which the pattern's "
                                   "predicate refuses", depth)
            elif _attr_key(have) != _attr_key(want):
                raise _Refused(f"{short(node)} has {key}={have!r}, not {want!r}", depth)
        inputs = list(node.inputs)
        n = len(self.operands)
        extra = [v for v in inputs[n:] if v is not None]
        if extra and not self.rest:
            raise _Refused(f"{short(node)} has {len([v for v in inputs if v is not None])} "
                           f"operands, the pattern expects {n}", depth)
        inputs = (inputs + [None] * n)[:n]
        orders = [(0, 1), (1, 0)] if self.commutative else [tuple(range(n))]
        for order in orders:
            operands = [(pattern, inputs[i], f"operand {i} of {short(node)}")
                        for pattern, i in zip(self.operands, order)]
            for _ in _each(operands, 0, m, depth + 1):
                snap = m._snapshot()
                try:
                    self._bind(self.name, node, m, short(node), depth)
                except _Refused as refused:
                    m._note(refused)
                    continue
                m.nodes.append(node)
                yield
                m._restore(snap)


def _bound(pattern: Pattern, name: str | None, obj: Any, m: Match, where: str,
           depth: int) -> Iterator[None]:
    """The one way a leaf matches: ``obj`` bound to ``name`` (undone when resumed)."""
    snap = m._snapshot()
    pattern._bind(name, obj, m, where, depth)
    yield
    m._restore(snap)


def _each(operands: list[tuple[Pattern | None, Value | None, str]], k: int, m: Match,
          depth: int) -> Iterator[None]:
    """Every way operands ``k:`` match together, each (pattern, value, where); refusals are
    noted in ``m``. A ``None`` pattern wants the operand absent."""
    if k == len(operands):
        yield
        return
    pattern, value, where = operands[k]
    try:
        if pattern is None:
            if value is not None:
                raise _Refused(f"{where} is present, the pattern expects none", depth)
            yield from _each(operands, k + 1, m, depth)
            return
        for _ in pattern.matches(value, m, where, depth):
            yield from _each(operands, k + 1, m, depth)
    except _Refused as refused:
        m._note(refused)


@dataclass(frozen=True)
class Rule:
    """A rewrite: ``pattern`` (rooted at an ``Op``), an optional ``check`` returning a reason
    to refuse (``None`` to go ahead; any string, even ``""``, refuses), and
    ``rewrite(rewriter, match)``."""

    name: str
    pattern: Op
    rewrite: Callable[[Rewriter, Match], None]
    check: Callable[[Match], str | None] | None = None


@dataclass(frozen=True)
class Refusal:
    """A candidate node that ``rule`` left alone, and why."""

    rule: str
    node: str  # Node.describe() at the time
    reason: str
    structural: bool = False  # the IR has another shape there, no constraint failed

    def __str__(self) -> str:
        return f"{self.rule}: {self.node}: {self.reason}"


def match(rule: Rule, graph: Graph, node: Node) -> Match | Refusal:
    """Match ``rule`` at ``node``: the ``Match`` if the pattern matches and the check agrees
    (with the first way of matching that it agrees with), else a ``Refusal`` saying why not:
    the check's reason if the pattern matched, else the pattern's deepest refusal."""
    m = Match(graph, node)
    check_reason = None
    try:
        for _ in rule.pattern.matches_node(node, m):
            reason = rule.check(m) if rule.check is not None else None
            if reason is None:
                return m._detached()
            check_reason = check_reason or reason or "the rule's check refused (no reason given)"
    except _Refused as refused:
        m._note(refused)
    if check_reason:
        return Refusal(rule.name, node.describe(), check_reason)
    assert m._best is not None
    return Refusal(rule.name, node.describe(), m._best.reason, m._best.structural)


class Rewriter:
    """The edits of one rewrite. New nodes go before the matched root (so every operand they can
    read is already defined); ``replace`` redirects readers; ``finish`` erases what the match
    left dead and hands the new values and nodes the names of what they replaced."""

    def __init__(self, graph: Graph, m: Match):
        self.graph = graph
        self.match = m
        self.inserted: list[Node] = []
        self._node_names: list[tuple[Node, str]] = []
        self._renames: list[tuple[Value, str, bool]] = []
        self._replaced: list[Value] = []
        self._constant_names: list[tuple[Value, str]] = []

    def add(self, op: str, inputs: Sequence[Value | None], attrs: dict[str, Any] | None = None,
            *, name: str | None = None) -> Value:
        """Insert a node before the root and return its first output. ``name`` (default: the
        root's name) is the node's name once the nodes it replaces are gone."""
        wanted = name or self.match.root.name
        node = self.graph.add_node(op, inputs, attrs, name=wanted, before=self.match.root,
                                   origins=merged_origins(*(n.origins for n in self.match.nodes)))
        self.inserted.append(node)
        self._node_names.append((node, wanted))
        return node.outputs[0]

    def constant(self, data: Any, name: str) -> Value:
        """A new constant, named ``name`` once the constants it replaces are gone."""
        value = self.graph.add_constant(data, name)
        self._constant_names.append((value, name))
        return value

    def replace(self, old: Value, new: Value, *, retype: bool = False) -> None:
        """Every reader of ``old`` reads ``new``; a value this rewrite created (or one that now
        stands for a graph output) takes ``old``'s name. Refused, as by
        ``Graph.replace_all_uses_with``, when ``new`` is of another type (unless ``retype``),
        from another graph, or computed from a reader of ``old``."""
        was_output = old.is_graph_output
        self.graph.replace_all_uses_with(old, new, retype=retype)
        self._renames.append((new, old.name, was_output))
        self._replaced.append(old)

    def finish(self) -> None:
        g = self.graph
        candidates = {id(n): n for n in self.match.nodes}
        for value in self._replaced:
            if value.producer is not None:
                candidates[id(value.producer)] = value.producer
        order = {id(n): i for i, n in enumerate(g.nodes)}
        operands: list[Value] = []
        for node in sorted((n for n in candidates.values() if n.graph is g),
                           key=lambda n: -order[id(n)]):
            if any(v.uses or v.is_graph_output for v in node.outputs):
                continue
            operands.extend(v for v in node.inputs if v is not None)
            g.erase(node)
        for value in operands:
            if value.is_constant and value.graph is g and not value.uses \
                    and not value.is_graph_output:
                g.erase_constant(value)
        for value, wanted in self._constant_names:
            if value.graph is g and value.name != wanted and not g.has_value(wanted):
                g.rename_value(value, wanted)
        made = {id(v) for n in self.inserted for v in n.outputs}
        made.update(id(v) for v, _ in self._constant_names)
        for new, old_name, was_output in self._renames:  # after the constants: these win
            if new.graph is not g or new.name == old_name or g.has_value(old_name):
                continue
            if id(new) in made or was_output:
                if new.is_graph_input:
                    raise RewriteError(f"graph output %{old_name} would become graph input "
                                       f"%{new.name}")
                g.rename_value(new, old_name)
        for node, wanted in self._node_names:
            if node.graph is g and node.name != wanted and wanted not in g._node_names:
                g.rename_node(node, wanted)


def apply_rules(graph: Graph, rules: Sequence[Rule], *, refusals: list[Refusal] | None = None,
                max_sweeps: int = 50) -> dict[str, int]:
    """Apply ``rules`` over the graph until none fires; return how often each fired.

    Nodes are visited in order; at each node the rules rooted at its op are tried in the given
    order and the first that matches fires. Refusals are appended to ``refusals`` (once each,
    and only where the rule did not fire at that node in a later sweep). If a rewrite fails,
    the ``RewriteError`` leaves ``graph`` as it was before the call.
    """
    with graph.transaction():
        return _apply_rules(graph, rules, refusals, max_sweeps)


def _apply_rules(graph: Graph, rules: Sequence[Rule], refusals: list[Refusal] | None,
                 max_sweeps: int) -> dict[str, int]:
    by_op: dict[str, list[Rule]] = {}
    for rule in rules:
        for op in rule.pattern.ops:
            by_op.setdefault(op, []).append(rule)
    counts: dict[str, int] = {}
    found_refusals: dict[Refusal, None] = {}
    fired: set[tuple[str, str]] = set()
    for _ in range(max_sweeps):
        changed = False
        for node in list(graph.nodes):
            if node.graph is not graph:
                continue
            for rule in by_op.get(node.op, ()):
                found = match(rule, graph, node)
                if isinstance(found, Refusal):
                    found_refusals.setdefault(found)
                    continue
                fired.add((rule.name, node.describe()))
                _rewrite(graph, rule, found)
                counts[rule.name] = counts.get(rule.name, 0) + 1
                changed = True
                break
        if not changed:
            if refusals is not None:  # a refusal the rule overcame later is no reason
                known = set(refusals)
                refusals.extend(r for r in found_refusals if (r.rule, r.node) not in fired
                                and r not in known)
            return counts
    raise RewriteError(f"rules {', '.join(r.name for r in rules)} still fired after "
                       f"{max_sweeps} sweeps; two rules probably undo each other")


def _rewrite(graph: Graph, rule: Rule, m: Match) -> None:
    where = m.root.describe()
    rw = Rewriter(graph, m)
    try:
        rule.rewrite(rw, m)
        rw.finish()
    except QCompilerError as exc:
        raise RewriteError(f"rule {rule.name!r} on {where}: {exc}", rule.name,
                           m.root.name) from exc
    except Exception as exc:
        raise RewriteError(f"rule {rule.name!r} crashed on {where}: {type(exc).__name__}: "
                           f"{exc}", rule.name, m.root.name) from exc


@dataclass
class RewritePass(Pass):
    """A pass made of rule phases: each phase's rules run to a fixpoint before the next.

    Subclasses implement ``phases()``. ``run`` puts the refusals that matter (a constraint or a
    check failed) in ``PassResult.notes``; ``explain(graph, verbose=True)`` also lists the
    candidates whose structure simply differs from the pattern.
    """

    def phases(self) -> list[list[Rule]]:
        raise NotImplementedError(f"pass {self.name!r} does not implement phases()")

    def run(self, graph: Graph) -> PassResult:
        stats, refusals = self.apply(graph)
        return PassResult(graph, bool(stats), stats,
                          [str(r) for r in refusals if not r.structural])

    def apply(self, graph: Graph) -> tuple[dict[str, int], list[Refusal]]:
        """Run the phases on ``graph`` in place: (how often each rule fired, every refusal)."""
        refusals: list[Refusal] = []
        stats: dict[str, int] = {}
        with graph.transaction():  # a failing phase undoes the phases before it too
            for rules in self.phases():
                for name, count in _apply_rules(graph, rules, refusals, 50).items():
                    stats[name] = stats.get(name, 0) + count
        return stats, refusals

    def explain(self, graph: Graph, verbose: bool = False) -> list[str]:
        """Why candidates were left alone, from a run on a copy of ``graph``; ``verbose`` adds
        candidates whose structure simply differs from the pattern."""
        _, refusals = self.apply(graph.copy())
        return [str(r) for r in refusals if verbose or not r.structural]


__all__ = ["ANY", "Const", "Match", "Op", "Opt", "Pattern", "Refusal", "Rewriter", "Rule",
           "RewritePass", "Var", "apply_rules", "match", "short"]
