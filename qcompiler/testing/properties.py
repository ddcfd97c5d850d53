"""``pass_property``: a pipeline turned into a ready-made hypothesis test."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import numpy as np
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from ..graph import Graph
from ..pass_manager import PassManager, PassResult
from ..rewriter import RewritePass
from .equivalence import assert_equivalent
from .graph_strategy import graphs as _default_graphs
from .strategies import inputs as _default_inputs


@dataclass
class Firing:
    """How often a ``pass_property``'s pipeline fired over the examples of its last run:
    ``changed`` examples out of ``examples`` changed the graph, and ``rules[name]`` examples
    fired the rule ``name`` (a key of ``PassResult.stats``, such as ``"fuse: residual-add"``)."""

    pipeline: str
    examples: int = 0
    changed: int = 0
    rules: Counter[str] = field(default_factory=Counter)

    def record(self, result: PassResult) -> None:
        self.examples += 1
        self.changed += bool(result.changed)
        self.rules.update(name for name, count in result.stats.items() if count)

    def summary(self) -> str:
        """``"fuse changed the graph in 27 of 30 examples; fuse: bias-add in 9, ..."``."""
        text = f"{self.pipeline} changed the graph in {self.changed} of {self.examples} examples"
        if self.rules:
            text += "; " + ", ".join(f"{rule} in {n}" for rule, n in sorted(self.rules.items()))
        return text

    def problem(self, must_fire: bool | Iterable[str]) -> str | None:
        """Why this run proved too little for ``must_fire``, or None."""
        if must_fire is True and not self.changed:
            return (f"{self.pipeline} never changed the graph in {self.examples} examples, so "
                    "the property proved nothing: draw graphs it applies to (builders=...)")
        if must_fire is True or must_fire is False:
            return None
        idle = [rule for rule in must_fire if not self.rules[rule]]
        if idle:
            return (f"{', '.join(idle)} never fired in {self.examples} examples, so the "
                    f"property proved nothing about {'it' if len(idle) == 1 else 'them'}: "
                    f"draw graphs the rules apply to ({self.summary()})")
        return None


def rule_names(pipeline: Any) -> tuple[str, ...]:
    """The rules of the pipeline's rule-based passes, spelled as ``PassResult.stats`` keys
    (``"fold-bn: fold-into-producer"``), for ``pass_property(..., must_fire=)``: read from the
    passes, so a new rule is required as soon as it exists."""
    names: dict[str, None] = {}
    for p in PassManager(pipeline).passes:
        if isinstance(p, RewritePass):
            for rules in p.phases():
                names.update((f"{p.name}: {rule.name}", None) for rule in rules)
    return tuple(names)


def pass_property(
    pipeline: Any,
    graphs: SearchStrategy[Graph] | None = None,
    *,
    inputs: Callable[[Graph], SearchStrategy[Mapping[str, np.ndarray]]] | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-6,
    steps: float | None = None,
    must_fire: bool | Iterable[str] = True,
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
    The active hypothesis profile applies unless ``settings`` is given (or ``@settings`` is
    applied to the returned test).

    A property proves something only about what happened, so the test also counts how often
    the pipeline fired: the returned test's ``firing`` (a ``Firing``) holds the counts of its
    last run, every example records a ``hypothesis.event`` per rule that fired (see
    ``pytest --hypothesis-show-statistics``), and the test fails when the pipeline never
    changed the graph (``must_fire=True``, the default), or when one of the rules named by
    ``must_fire`` (``PassResult.stats`` keys; ``rule_names(pipeline)`` for all) never fired.
    ``must_fire=False`` turns the check off.
    """
    graph_strategy = graphs if graphs is not None else _default_graphs()
    make_inputs = inputs if inputs is not None else _default_inputs
    label = _pipeline_label(pipeline)
    caller = sys._getframe(1)
    required = must_fire if isinstance(must_fire, bool) else tuple(must_fire)

    @hypothesis.given(st.data())
    def examples(data: st.DataObject) -> None:
        graph = data.draw(graph_strategy, label="graph")
        before = graph.copy()
        feeds = data.draw(make_inputs(before), label="inputs")
        result = PassManager(pipeline).run(graph)
        test.firing.record(result)
        hypothesis.event(f"{label}: " + ("changed the graph" if result.changed
                                         else "left the graph unchanged"))
        for name, count in result.stats.items():
            if count:
                hypothesis.event(f"fired {name}")
        assert graph == before, (
            f"{label} mutated the graph it was given (PassManager must work on a copy)")
        result.graph.verify()
        assert_equivalent(before, result.graph, feeds, rtol=rtol, atol=atol, steps=steps)

    def test() -> None:
        test.firing = Firing(label)
        # settings applied to this function after it was made reach the hypothesis test
        examples._hypothesis_internal_use_settings = test._hypothesis_internal_use_settings
        examples()
        problem = test.firing.problem(required)
        if problem:
            raise AssertionError(problem)

    if settings is not None:
        examples = settings(examples)
    test.firing = Firing(label)
    test.hypothesis = examples.hypothesis
    test.is_hypothesis_test = True  # pytest's hypothesis plugin reports its statistics
    test._hypothesis_internal_use_settings = examples._hypothesis_internal_use_settings
    test.__name__ = test.__qualname__ = f"pass_property[{label}]"
    test.__module__ = caller.f_globals.get("__name__", __name__)
    # Distinguish the example-database entries of tests made by this one function.
    examples.hypothesis.inner_test._hypothesis_internal_add_digest = (
        f"{label}@{caller.f_code.co_filename}:{caller.f_lineno}".encode())
    return test


def _pipeline_label(pipeline: Any) -> str:
    """How events and test names spell a pipeline: its string, or its passes joined by ','."""
    if isinstance(pipeline, str):
        return pipeline
    items = pipeline if isinstance(pipeline, (list, tuple)) else [pipeline]
    names = [getattr(item, "name", item.__name__) if isinstance(item, type) else str(item)
             for item in items]
    return ",".join(names)


