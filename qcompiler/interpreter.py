"""The Interpreter: a graph run node by node on the op registry's numpy reference kernels.

It is the one way qcompiler evaluates a graph outside a compiled backend: constant folding
evaluates single nodes through ``run_node``, and observers and calibration watch a run through
hooks. In the style of ``torch.fx.Interpreter`` it is meant to be subclassed (override
``run_node``, ``before_node`` or ``after_node``) and also takes hook callables::

    def observe(interp, node, outputs):       # after each node: read its results
        ranges[node.name] = float(np.abs(outputs[0]).max())

    qc.Interpreter(graph, after=observe).run({"image": x})

A hook is called as ``hook(interpreter, node, arrays)`` (the node's operands before it runs,
its results after) and returns None to go on or ``STOP`` to end the run there (``stop_after``
names a node to end after). ``interpreter.replace(value, array)`` makes later readers (and, from
a ``before`` hook, the node itself) read another array; the graph is never changed.

Values are freed once their last reader has run (graph outputs and ``keep`` values are not),
so a run over a big graph holds only what later nodes still need.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import numpy as np

from .errors import ExecutionError, IRError, QCompilerError
from .executable import checked_feeds, input_specs
from .graph import Graph, Node, Value

STOP = object()
"""Returned by a hook (or ``before_node``/``after_node``): end the run here."""

Hook = Callable[["Interpreter", Node, list], object]


class Interpreter:
    """Run ``graph`` node by node, in its node order, with hooks before and after each node.

    ``keep`` is True (hold every value), or a value name or names to hold after their last
    reader (graph outputs are always held);
    ``stop_after`` is the name of a node after which the run ends.
    """

    def __init__(self, graph: Graph, *, before: Hook | Sequence[Hook] = (),
                 after: Hook | Sequence[Hook] = (), keep: bool | Collection[str] = False,
                 stop_after: str | None = None):
        self.graph = graph
        self.before_hooks = [before] if callable(before) else list(before)
        self.after_hooks = [after] if callable(after) else list(after)
        if isinstance(keep, str):
            keep = [keep]
        if not isinstance(keep, (bool, Collection)):
            raise IRError(f"keep must be True, False, a value name or names, not {keep!r}")
        self.keep = keep if isinstance(keep, bool) else {graph.value(n).name for n in keep}
        self.stop_after = graph.node(stop_after) if stop_after is not None else None
        self.stopped_at: Node | None = None
        self._env: dict[Value, np.ndarray] = {}

    # -- running the graph ------------------------------------------------------------------------

    def run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Run on ``feeds`` ({input name: array}, checked like ``Executable.run``).

        Returns {output name: array}; a run that stopped early returns instead every value
        held at that point (the last node's results, what later nodes would still read, and the
        kept values), by name.
        """
        arrays = checked_feeds(input_specs(self.graph), feeds)
        self._env = dict(zip(self.graph.inputs, arrays))
        self.stopped_at = None
        dead_after = {} if self.keep is True else self.graph.dead_after(
            self.graph.value(name) for name in self.keep or ())
        for value in dead_after.get(-1, ()):
            self._env.pop(value, None)
        for index, node in enumerate(self.graph.nodes):
            if self.before_node(node, self._operands(node)) is STOP:
                self.stopped_at = node
                return self.held
            results = self.run_node(node, self._operands(node))
            self._env.update(zip(node.outputs, results))
            if self.after_node(node, results) is STOP or node is self.stop_after:
                self.stopped_at = node
                return self.held
            for value in dead_after.get(index, ()):
                self._env.pop(value, None)
        return {v.name: self.value(v) for v in self.graph.outputs}

    def run_node(self, node: Node, inputs: Sequence[np.ndarray | None]) -> list[np.ndarray]:
        """Evaluate one node on operand arrays: its kernel's results, one array per output.

        This is the single-node entry point (constant folding evaluates nodes through it); a
        kernel that fails raises ``ExecutionError`` naming the node, its op and its operands.
        """
        opdef = node.opdef
        try:
            result = opdef.kernel(*inputs, **opdef.full_attrs(node.attrs))
        except QCompilerError:
            raise
        except Exception as exc:
            raise _node_failure(node, inputs, exc) from exc
        results = list(result) if isinstance(result, (tuple, list)) else [result]
        if len(results) < len(node.outputs):
            raise ExecutionError(f"{node.describe()}: its kernel returned {len(results)} "
                                 f"output(s) for {len(node.outputs)}")
        # numpy reductions of 0-d operands give scalars: hand back arrays
        return [np.asarray(r) for r in results[:len(node.outputs)]]

    def before_node(self, node: Node, inputs: list[np.ndarray | None]) -> object:
        """Called before ``node`` runs with its operands; ``STOP`` ends the run before it.
        Calls the ``before`` hooks in order (stopping at the first that returns ``STOP``)."""
        return _call_hooks(self.before_hooks, self, node, inputs)

    def after_node(self, node: Node, outputs: list[np.ndarray]) -> object:
        """Called after ``node`` ran with its results; ``STOP`` ends the run after it.
        Calls the ``after`` hooks in order (stopping at the first that returns ``STOP``)."""
        return _call_hooks(self.after_hooks, self, node, outputs)

    # -- values -----------------------------------------------------------------------------------

    def value(self, value: Value | str) -> np.ndarray:
        """The array ``value`` (a Value or a value name) holds now in this run."""
        if isinstance(value, str):
            value = self.graph.value(value)
        if value in self._env:
            return self._env[value]
        if value.data is not None:
            return value.data
        raise IRError(f"%{value.name} holds no array: it was not computed yet, or it was freed "
                      "after its last reader ran (pass keep=True or keep=[name] to hold it)")

    def replace(self, value: Value | str, array: np.ndarray) -> None:
        """Make every later read of ``value`` (a node output, graph input or constant, or its
        name) give ``array``, which must have the value's dtype and shape; the graph itself is
        not changed."""
        if isinstance(value, str):
            value = self.graph.value(value)
        if value.graph is not self.graph:
            raise IRError(f"%{value.name} does not belong to graph {self.graph.name!r}")
        array = np.asarray(array)
        fits = array.dtype == value.dtype.np and array.ndim == len(value.shape) and all(
            not isinstance(d, int) or d == n for d, n in zip(value.shape, array.shape))
        if not fits:
            raise IRError(f"cannot replace %{value.name}: {value.type} by an array of "
                          f"{array.dtype}{list(array.shape)}")
        self._env[value] = array

    @property
    def held(self) -> dict[str, np.ndarray]:
        """Every array this run holds now, by value name (constants only when replaced)."""
        return {v.name: a for v, a in self._env.items()}

    def _operands(self, node: Node) -> list[np.ndarray | None]:
        return [None if v is None else self.value(v) for v in node.inputs]


def _call_hooks(hooks: list[Hook], interp: Interpreter, node: Node, arrays: list) -> object:
    for hook in hooks:
        if hook(interp, node, arrays) is STOP:
            return STOP
    return None


def _node_failure(node: Node, inputs: Sequence[np.ndarray | None],
                  exc: Exception) -> ExecutionError:
    """The node with its layers, its operands' dtypes and shapes, and the cause."""
    operands = [f"%{v.name}: {a.dtype}{list(a.shape)}"
                for v, a in zip(node.inputs, inputs)
                if v is not None and isinstance(a, np.ndarray)]
    shown = f" with operands {', '.join(operands)}" if operands else ""
    return ExecutionError(f"{node.describe()} failed{shown}: {type(exc).__name__}: {exc}")
