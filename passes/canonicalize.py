"""``canonicalize``: the cleanup every pipeline starts with.

Repeats until nothing changes: constant folding (including the ``Shape -> Gather -> Concat``
chains whose contents inference already knows, and Reshape targets built from a dynamic batch,
which become constants with a 0 "copy this dimension" entry; results much larger than their
operands stay ops, see ``qcompiler.folding``; stored types are refined from inference as
operands become constant), Identity and inference-mode Dropout removal, a variadic ``Sum``
spelled as the chain of ``Add`` it computes, common subexpression elimination (equal ops on
the same operands with equal attributes, and constants with equal contents), and dead-code
elimination.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from qcompiler.folding import FOLD_LIMIT, NEVER_FOLD, eliminate_dead_code, fold_constants
from qcompiler.graph import Graph, Node, Value
from qcompiler.ops._schema import UNKNOWN
from qcompiler.pass_manager import Pass, PassResult, register_pass
from qcompiler.rewriter import ANY, Match, Op, Opt, Refusal, Rewriter, Rule, Var, apply_rules

_MAX_ROUNDS = 20


def keeps_names(out: Value, src: Value) -> str | None:
    """Why ``out`` cannot be replaced by ``src`` without losing a graph output's name (None
    when it can); shared by the passes that remove nodes."""
    if out.is_graph_output and (src.is_graph_input or src.is_graph_output):
        kind = "graph input" if src.is_graph_input else "graph output"
        return (f"%{out.name} is a graph output and %{src.name} is a {kind}; the node keeps "
                "both names apart")
    return None


def _check_identity(m: Match) -> str | None:
    return keeps_names(m.root.outputs[0], m["x"])


def _remove_identity(rw: Rewriter, m: Match) -> None:
    rw.replace(m.root.outputs[0], m["x"])


def _read_mask(dropout: Node) -> Value | None:
    """Dropout's mask output when something reads it (inference mode: all true)."""
    if len(dropout.outputs) > 1:
        mask = dropout.outputs[1]
        if mask.uses or mask.is_graph_output:
            return mask
    return None


def _check_dropout(m: Match) -> str | None:
    mask = _read_mask(m.root)
    if mask is not None and not mask.type.is_static:
        return f"its mask %{mask.name} is read and has the dynamic shape {mask.type}"
    return keeps_names(m.root.outputs[0], m["x"])


def _remove_dropout(rw: Rewriter, m: Match) -> None:
    mask = _read_mask(m.root)
    if mask is not None:
        rw.replace(mask, rw.constant(np.ones(mask.shape, dtype=np.bool_), f"{mask.name}.const"))
    rw.replace(m.root.outputs[0], m["x"])


def _sum_to_adds(rw: Rewriter, m: Match) -> None:
    """``Sum(x1, ..., xn)`` as ``Add(...Add(x1, x2)..., xn)``: the Sum kernel adds left to
    right, so the chain is bit-identical (opset-9 exporters spell residual adds as Sum);
    ``Sum(x)`` is ``x``."""
    total = m.root.inputs[0]
    for k, value in enumerate(m.root.inputs[1:], start=1):
        last = k == len(m.root.inputs) - 1
        total = rw.add("Add", [total, value], name=None if last else f"{m.root.name}.{k}")
    rw.replace(m.root.outputs[0], total)


def _check_sum(m: Match) -> str | None:
    if len(m.root.inputs) == 1:  # an identity
        return keeps_names(m.root.outputs[0], m.root.inputs[0])
    return None


IDENTITY = Rule("remove-identity", Op("Identity", Var("x")), _remove_identity, _check_identity)
DROPOUT = Rule("remove-dropout", Op("Dropout", Var("x"), Opt(ANY), Opt(ANY)), _remove_dropout,
               _check_dropout)
SUM = Rule("sum-to-add", Op("Sum", ANY, ...), _sum_to_adds, _check_sum)


def make_reshapes_static(graph: Graph, refusals: list[Refusal]) -> int:
    """Give Reshapes whose target is computed from symbolic dimensions (``x.view(x.size(0),
    -1)`` on a dynamic batch: ``[N, -1]``) a constant target, with 0 ("copy the input's
    dimension") where the target names the data's own dimension at the same position.
    Returns how many were changed; the shape subgraph is then dead."""
    changed = 0
    for node in graph.nodes:
        if node.op != "Reshape":
            continue
        data, target = node.inputs
        if target.is_constant or target.sym is None or all(isinstance(d, int)
                                                           for d in target.sym):
            continue
        entries = list(target.sym)
        if node.opdef.full_attrs(node.attrs)["allowzero"]:
            refusals.append(Refusal("static-reshape", node.describe(),
                                    "it has allowzero=1, so a 0 would not copy a dimension"))
            continue
        for k, d in enumerate(entries):
            if isinstance(d, int):
                continue
            if d == UNKNOWN or k >= len(data.shape) or data.shape[k] != d:
                refusals.append(Refusal(
                    "static-reshape", node.describe(),
                    f"entry {k} of its target %{target.name} is {d}, which is not dimension "
                    f"{k} of %{data.name} {list(data.shape)}"))
                break
            entries[k] = 0
        else:
            const = graph.add_constant(np.array(entries, np.int64), f"{node.name}.shape")
            node.set_input(1, const)
            changed += 1
    return changed


# Binary ops whose operands commute bit for bit (IEEE addition and multiplication are
# commutative; a Sum of three is not, its rounding depends on the order).
COMMUTATIVE = frozenset({"Add", "Mul", "Max", "Min"})


def _node_key(node: Node) -> tuple | None:
    """Nodes with equal keys compute the same outputs (attributes compared with their defaults
    filled in, so ``group = 1`` spelled out or not makes no difference)."""
    if node.op in NEVER_FOLD:
        return None
    full = node.opdef.full_attrs(node.attrs)
    attrs = tuple(sorted((k, _hashable(v)) for k, v in full.items()))
    operands = tuple(id(v) if v is not None else None for v in node.inputs)
    if node.op in COMMUTATIVE:
        operands = tuple(sorted(operands))
    return node.op, operands, attrs, len(node.outputs)


def _hashable(value: object) -> object:
    if isinstance(value, np.ndarray):
        return value.dtype.str, value.shape, value.tobytes()
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    return value


def eliminate_common_subexpressions(graph: Graph, refusals: list[Refusal]) -> int:
    """Merge constants with equal contents, then nodes equal to an earlier one."""
    merged = 0
    constants: dict[tuple, Value] = {}
    for value in list(graph.constants.values()):
        key = _hashable(value.data), value.type.quant
        first = constants.setdefault(key, value)
        if first is value:
            continue
        if value.is_graph_output:
            continue
        graph.replace_all_uses_with(value, first)
        graph.erase_constant(value)
        merged += 1
    seen: dict[tuple, Node] = {}
    for node in list(graph.nodes):
        key = _node_key(node)
        if key is None:
            continue
        first = seen.setdefault(key, node)
        if first is node:
            continue
        if any(v.is_graph_output for v in node.outputs):
            refusals.append(Refusal("cse", node.describe(),
                                    f"it repeats {first.describe()} but its output is a graph "
                                    "output with a name of its own"))
            continue
        for mine, theirs in zip(node.outputs, first.outputs, strict=True):
            graph.replace_all_uses_with(mine, theirs)
        graph.erase(node)
        merged += 1
    return merged


@register_pass
@dataclass
class Canonicalize(Pass):
    """Constant folding, Identity/Dropout removal, CSE and dead-code elimination to a fixpoint.

    ``fold_limit``: results up to this many bytes always fold, larger ones only when at most
    ``FOLD_GROWTH`` times their operands (None: every size folds)."""

    name = "canonicalize"
    fold: bool = True
    identities: bool = True
    cse: bool = True
    dce: bool = True
    fold_limit: int | None = FOLD_LIMIT

    def run(self, graph: Graph) -> PassResult:
        stats: dict[str, int] = {}
        refusals: list[Refusal] = []

        def count(key: str, n: int) -> int:
            if n:
                stats[key] = stats.get(key, 0) + n
            return n

        for _ in range(_MAX_ROUNDS):
            changed = 0
            if self.fold:
                changed += count("folded", fold_constants(graph, self.fold_limit))
                changed += count("static-reshape", make_reshapes_static(graph, refusals))
            if self.identities:
                fired = apply_rules(graph, [IDENTITY, DROPOUT, SUM], refusals=refusals)
                for rule, n in fired.items():
                    changed += count(rule, n)
            if self.cse:
                changed += count("cse", eliminate_common_subexpressions(graph, refusals))
            if self.dce:
                changed += count("dead", eliminate_dead_code(graph))
            if not changed:
                break
        else:
            warnings.warn(f"canonicalize still changed graph {graph.name!r} after "
                          f"{_MAX_ROUNDS} rounds; stopping there", stacklevel=2)
        notes = list(dict.fromkeys(str(r) for r in refusals))
        return PassResult(graph, bool(stats), stats, notes)
