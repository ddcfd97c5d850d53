"""``graphs()``: random well-typed float32 graphs grown from the registered builders."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import hypothesis
import numpy as np
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from ..graph import Graph, Value
from ..types import DType, TensorType
from . import builders as _builtin  # noqa: F401  (registers the built-in builders)
from .kit import BUILDERS, INPUT_BOUND, MAX_DIM, Builder, GraphKit
from .strategies import SEEDS

_BATCH, _CHANNELS, _SPATIAL = st.integers(1, 3), st.integers(1, 6), st.integers(1, 8)


def graphs(
    builders: Iterable[str] | None = None,
    *,
    min_steps: int = 1,
    max_steps: int = 6,
    batch: SearchStrategy = _BATCH,
    channels: SearchStrategy = _CHANNELS,
    spatial: SearchStrategy = _SPATIAL,
    max_inputs: int = 2,
    max_extra_outputs: int = 2,
) -> SearchStrategy[Graph]:
    """Random well-typed float32 graphs made of the named builders (all of ``BUILDERS`` when
    None); every result passes ``graph.verify()``.

    A graph starts from 1 to ``max_inputs`` graph inputs (rank 4 NCHW with ``channels`` and
    ``spatial`` sizes; sometimes rank 2 ``[batch, features]`` or rank 3, when a chosen builder
    handles those ranks), then applies ``min_steps`` to ``max_steps`` builders, each to an
    existing value it suits (the newest in half of the steps, so chains are common). Its
    outputs are the last value produced, the values builders asked to keep, and sometimes one or
    two intermediate values, so some values are read both by nodes and as graph outputs.
    ``batch`` may also draw a symbol name (``st.just("N")``) for a dynamic batch dimension;
    ``inputs()`` binds it to a size.
    """
    if isinstance(builders, str):
        raise TypeError("builders must be a list of builder names, not a string")
    names = list(BUILDERS) if builders is None else list(builders)
    unknown = [n for n in names if n not in BUILDERS]
    if unknown:
        raise KeyError(f"unknown builder(s) {', '.join(map(repr, unknown))}; registered: "
                       f"{', '.join(sorted(BUILDERS))}")
    if not names:
        raise ValueError("graphs() needs at least one builder")
    if not 0 <= min_steps <= max_steps:
        raise ValueError(f"need 0 <= min_steps <= max_steps, got {min_steps}, {max_steps}")
    return _graphs(tuple(names), min_steps, max_steps, batch, channels, spatial,
                   max(1, max_inputs), max_extra_outputs)


def _input_ranks(chosen: Sequence[Builder]) -> list[int]:
    """Ranks of graph inputs worth drawing for these builders, rank 4 first."""
    handled: set[int] = set()
    for b in chosen:
        handled |= set(b.ranks) if b.ranks is not None else {2, 3, 4}
    ranks = [r for r in (4, 2, 3) if r in handled]
    return ranks or sorted(r for r in handled if r >= 1)[:1] or [4]


def _input_shape(draw: Callable[..., Any], rank: int, batch: Any, channels: SearchStrategy,
                 spatial: SearchStrategy) -> tuple:
    if rank == 1:
        return (draw(st.integers(1, MAX_DIM)),)
    if rank == 2:
        return (batch, draw(st.integers(1, MAX_DIM)))
    nsp = rank - 2
    sizes = [draw(spatial) for _ in range(nsp)]
    if nsp > 2:  # keep rank-5 inputs small
        sizes = [min(s, 4) for s in sizes]
    return (batch, draw(channels), *sizes)


@st.composite
def _graphs(draw: Callable[..., Any], names: tuple[str, ...], min_steps: int, max_steps: int,
            batch: SearchStrategy, channels: SearchStrategy, spatial: SearchStrategy,
            max_inputs: int, max_extra_outputs: int) -> Graph:
    chosen = [BUILDERS[n] for n in names]
    graph = Graph("random")
    kit = GraphKit(graph, draw)
    ranks = _input_ranks(chosen)
    n_batch = draw(batch, label="batch")
    first = _input_shape(draw, draw(st.sampled_from(ranks)), n_batch, channels, spatial)
    x = graph.add_input("x0", TensorType(DType.F32, first))
    kit._offer(x, INPUT_BOUND)
    for k in range(1, draw(st.integers(1, max_inputs), label="inputs")):
        if draw(st.booleans()):
            shape = first
        else:
            rank = draw(st.sampled_from(ranks[1:] + ranks[:1]))
            shape = _input_shape(draw, rank, n_batch, channels, spatial)
        kit._offer(graph.add_input(f"x{k}", TensorType(DType.F32, shape)), INPUT_BOUND)

    last: Value | None = None
    for _ in range(draw(st.integers(min_steps, max_steps), label="steps")):
        candidates = kit.values()
        usable = [b for b in chosen if any(b.applies(kit, v) for v in candidates)]
        if not usable:
            break
        builder = draw(st.sampled_from(usable), label="builder")
        suitable = [v for v in candidates if builder.applies(kit, v)]
        # half the steps go on from the newest value, so chains (conv -> bn -> relu) are common
        value = suitable[0] if draw(st.booleans()) else draw(st.sampled_from(suitable))
        kit.rng = np.random.default_rng(draw(SEEDS))
        result = builder.build(kit, value)
        if result is not None:
            last = result
            kit._promote(result)
    hypothesis.assume(graph.nodes)

    outputs: list[Value] = []
    for v in ([last] if last is not None and not last.is_graph_input else []) + kit.kept:
        if all(v is not o for o in outputs):
            outputs.append(v)
    extra = [v for v in kit.values() if v.producer is not None
             and all(v is not o for o in outputs)]
    if extra and max_extra_outputs:
        outputs += draw(st.lists(st.sampled_from(extra), max_size=max_extra_outputs,
                                 unique_by=id), label="extra outputs")
    if not outputs:
        outputs = [kit.values(lambda v: v.producer is not None)[0]]
    graph.set_outputs(outputs)
    graph.verify()
    return graph


