"""Golden IR-text pass tests: "IR text in, pipeline, IR text out", one small file per case.

A case is a file ``tests/golden/<pass>/<case>.ir``::

    // RUN: fold-bn
    # What the case checks, and why the expected numbers are right (any number of '#' lines:
    # '#' starts a comment in the IR text form).
    graph g(%x: f32[1,2,3,3]) {
      %w: f32[2,2,1,1] = const dense<[1.0, 2.0, 3.0, 4.0]>
      ...
      return %y
    }
    // CHECK:
    graph g(%x: f32[1,2,3,3]) {
      ...
    }

- The first line is ``// RUN: <pipeline>``: any pipeline string ``PassManager`` accepts.
- Everything up to the ``// CHECK:`` line is the input graph in the text form
  (``qcompiler.parse``), with every constant inline (``dense<[...]>``).
- Everything after it is the expected result, exactly as
  ``result.graph.to_text(inline_constants=True)`` prints it.

``check(path)`` parses the input, runs ``PassManager(pipeline).run`` on it and compares the
printed result with the expected text exactly. It also runs both graphs with the numpy backend
on random inputs and requires ``max|a - b| <= 1e-5 * max(1, max|ref|)``, so an expected text
whose numbers are wrong cannot pass, and checks that the expected text parses back to itself.

With ``QC_UPDATE_GOLDEN=1`` in the environment, ``check`` rewrites the expected part of the file
from what the pipeline prints now instead of comparing (the RUN line and the input are kept
byte for byte). Read the diff before committing: golden numbers are checked by hand.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import qcompiler as qc
from qcompiler.graph import Graph
from qcompiler.pass_manager import PassManager
from qcompiler.testing import assert_equivalent

ROOT = Path(__file__).parent / "golden"
RUN = "// RUN:"
CHECK = "// CHECK:"
UPDATE = os.environ.get("QC_UPDATE_GOLDEN", "") not in ("", "0")


@dataclass
class Case:
    path: Path
    pipeline: str
    source: str  # the input graph's text (with its comments)
    expected: str
    head: str  # the file up to and including the CHECK line, kept as is by updates


def cases(directory: str) -> list[Path]:
    """The case files under ``tests/golden/<directory>``, sorted by name."""
    return sorted((ROOT / directory).glob("*.ir"))


def parametrize(directory: str):
    """``@golden.parametrize("fold-bn")`` on ``def test_golden(path)``: one test per case."""
    paths = cases(directory)
    assert paths, f"no golden cases in {ROOT / directory}"
    return pytest.mark.parametrize("path", paths, ids=[p.stem for p in paths])


def load(path: Path) -> Case:
    text = Path(path).read_text()
    first, _, rest = text.partition("\n")
    if not first.startswith(RUN):
        raise ValueError(f"{path}: the first line must be '{RUN} <pipeline>', not {first!r}")
    lines = rest.splitlines(keepends=True)
    marks = [i for i, line in enumerate(lines) if line.strip() == CHECK]
    if len(marks) != 1:
        raise ValueError(f"{path}: needs exactly one '{CHECK}' line, found {len(marks)}")
    k = marks[0]
    head = first + "\n" + "".join(lines[:k + 1])
    return Case(Path(path), first[len(RUN):].strip(), "".join(lines[:k]),
                "".join(lines[k + 1:]), head)


def run(case: Case) -> tuple[Graph, Graph]:
    """(input graph, result graph) of a case."""
    graph = qc.parse(case.source)
    return graph, PassManager(case.pipeline).run(graph).graph


def check(path: Path) -> None:
    case = load(path)
    before, after = run(case)
    actual = after.to_text(inline_constants=True)
    if UPDATE:
        if actual != case.expected:
            case.path.write_text(case.head + actual)
    else:
        assert actual.rstrip() == case.expected.rstrip(), (
            f"{case.path.name}: '{case.pipeline}' printed\n{actual}\nexpected\n{case.expected}"
            f"(QC_UPDATE_GOLDEN=1 rewrites the expected text; check the numbers by hand)")
        assert qc.parse(case.expected).to_text(inline_constants=True) == actual
    assert_same_outputs(before, after)


def assert_same_outputs(before: Graph, after: Graph, seed: int = 0) -> None:
    """Both graphs give the same outputs on random inputs (symbolic dims bound to 2)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for value in before.inputs:
        shape = tuple(d if isinstance(d, int) else 2 for d in value.shape)
        if value.dtype.is_integer:
            feeds[value.name] = rng.integers(-3, 4, shape).astype(value.dtype.np)
        else:
            feeds[value.name] = rng.uniform(-2, 2, shape).astype(value.dtype.np)
    assert_equivalent(before, after, feeds, rtol=1e-5, atol=1e-5)  # 1e-5 * max(1, max|ref|)
