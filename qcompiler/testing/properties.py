"""``pass_property``: a pipeline turned into a ready-made hypothesis test."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

import hypothesis
import numpy as np
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from ..graph import Graph
from .equivalence import assert_equivalent
from .graph_strategy import graphs as _default_graphs
from .strategies import inputs as _default_inputs


def pass_property(
    pipeline: Any,
    graphs: SearchStrategy[Graph] | None = None,
    *,
    inputs: Callable[[Graph], SearchStrategy[Mapping[str, np.ndarray]]] | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-6,
    steps: float | None = None,
    settings: hypothesis.settings | None = None,
) -> Callable[[], None]:
    """A hypothesis test that a pipeline keeps the numbers: assign it to a ``test_*`` name.

        test_fold_bn = pass_property("fold-bn", graphs(builders=["conv", "conv_bn", "bn"]))

    Each example draws a graph (from ``graphs``, default ``graphs()``) and feeds for it (from
    ``inputs(graph)``, default ``qcompiler.testing.inputs``), runs
    ``PassManager(pipeline).run(graph)``, checks the result verifies and that the pass left its
    input graph unchanged, and calls ``assert_equivalent(before, after, feeds, rtol=, atol=,
    steps=)`` where ``before`` is a copy taken before the pass. ``pipeline`` is anything
    ``PassManager`` takes (a pipeline string, or a list of names / Pass objects) or one Pass.
    The active hypothesis profile applies unless ``settings`` is given. Every example records
    whether the pass changed the graph (``hypothesis.event``), so
    ``pytest --hypothesis-show-statistics`` tells how often it fired.
    """
    graph_strategy = graphs if graphs is not None else _default_graphs()
    make_inputs = inputs if inputs is not None else _default_inputs
    label = _pipeline_label(pipeline)
    caller = sys._getframe(1)

    @hypothesis.given(st.data())
    def run(data: st.DataObject) -> None:
        from ..pass_manager import PassManager

        graph = data.draw(graph_strategy, label="graph")
        before = graph.copy()
        feeds = data.draw(make_inputs(before), label="inputs")
        result = PassManager(pipeline).run(graph)
        hypothesis.event(f"{label}: " + ("changed the graph" if result.changed
                                         else "left the graph unchanged"))
        assert graph == before, (
            f"{label} mutated the graph it was given (PassManager must work on a copy)")
        result.graph.verify()
        assert_equivalent(before, result.graph, feeds, rtol=rtol, atol=atol, steps=steps)

    run.__name__ = run.__qualname__ = f"pass_property[{label}]"
    run.__module__ = caller.f_globals.get("__name__", __name__)
    # Distinguish the example-database entries of tests made by this one function.
    run.hypothesis.inner_test._hypothesis_internal_add_digest = (
        f"{label}@{caller.f_code.co_filename}:{caller.f_lineno}".encode())
    return settings(run) if settings is not None else run


def _pipeline_label(pipeline: Any) -> str:
    """How events and test names spell a pipeline: its string, or its passes joined by ','."""
    if isinstance(pipeline, str):
        return pipeline
    items = pipeline if isinstance(pipeline, (list, tuple)) else [pipeline]
    names = [getattr(item, "name", item.__name__) if isinstance(item, type) else str(item)
             for item in items]
    return ",".join(names)


