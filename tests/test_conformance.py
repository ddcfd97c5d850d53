"""Conformance: the PyTorch-exported models shipped inside the onnx package.

Every model under onnx/backend/test/data/pytorch-converted and pytorch-operator that uses only
supported ops must import, compile with the numpy backend and reproduce its stored outputs.
The models that use what qcompiler deliberately leaves out (float64 tensors) must be refused
with an ``UnsupportedModelError`` that names the reason, as listed in ``UNSUPPORTED``; the
summary test prints the counts and fails when fewer models ran than ``MIN_RUN``.

Most of these models are opset 6, below the importer's range (9 to 21), so they are upgraded
to opset 9 with ``onnx.version_converter`` first (see ``upgrade``).
"""

from __future__ import annotations

import collections
from functools import cache
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper, version_converter

import qcompiler as qc

DATA = Path(onnx.__file__).parent / "backend" / "test" / "data"
SUITES = ("pytorch-converted", "pytorch-operator")
MODELS = sorted(p for suite in SUITES for p in (DATA / suite).iterdir() if p.is_dir())

# Models refused on purpose, with the reason the error must give. Everything else must run.
UNSUPPORTED = {
    "test_operator_add_broadcast": "dtype double",
    "test_operator_add_size1_broadcast": "dtype double",
    "test_operator_add_size1_right_broadcast": "dtype double",
    "test_operator_add_size1_singleton_broadcast": "dtype double",
    "test_operator_addconstant": "dtype double",
}
# Models that run (117 in all); it must never go down.
MIN_RUN = 112


def upgrade(model: onnx.ModelProto) -> onnx.ModelProto:
    """Bring a model below opset 9 to opset 9.

    onnx's converter leaves one opset-6 idiom behind: PRelu with a 1-D slope of C values
    applied per channel (axis 1). From opset 7 the slope broadcasts numpy-style instead, so the
    channel-wise slope must be shaped [C, 1, ..., 1]; this does that for constant slopes.
    """
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset >= 9:
        return model
    old_ranks = {vi.name: len(vi.type.tensor_type.shape.dim) for vi in model.graph.input}
    model = version_converter.convert_version(model, 9)
    inits = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type != "PRelu" or node.input[1] not in inits:
            continue
        slope = numpy_helper.to_array(inits[node.input[1]])
        rank = old_ranks.get(node.input[0], 0)
        if slope.ndim == 1 and slope.size > 1 and rank > 2:
            reshaped = slope.reshape((slope.size,) + (1,) * (rank - 2))
            inits[node.input[1]].CopyFrom(numpy_helper.from_array(reshaped, node.input[1]))
            for vi in model.graph.input:
                if vi.name == node.input[1]:
                    vi.type.tensor_type.shape.ClearField("dim")
                    for d in reshaped.shape:
                        vi.type.tensor_type.shape.dim.add().dim_value = d
    return model


def data_sets(folder: Path, model: onnx.ModelProto) -> list[tuple[dict, list[np.ndarray]]]:
    """(feeds, expected outputs) per test_data_set_*; inputs are the non-initializer inputs."""
    inits = {t.name for t in model.graph.initializer}
    names = [vi.name for vi in model.graph.input if vi.name not in inits]
    sets = []
    for ds in sorted(folder.glob("test_data_set_*")):
        inputs = [numpy_helper.to_array(onnx.load_tensor(str(f)))
                  for f in sorted(ds.glob("input_*.pb"))]
        outputs = [numpy_helper.to_array(onnx.load_tensor(str(f)))
                   for f in sorted(ds.glob("output_*.pb"))]
        sets.append((dict(zip(names, inputs, strict=True)), outputs))
    return sets


@cache
def imported(folder: Path) -> tuple[onnx.ModelProto, qc.Graph | None, str]:
    """(upgraded model, graph or None, why it is unsupported)."""
    model = upgrade(onnx.load(str(folder / "model.onnx")))
    try:
        return model, qc.from_onnx(model), ""
    except qc.UnsupportedModelError as exc:
        return model, None, ", ".join(sorted(exc.unsupported))


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("folder", MODELS, ids=[f"{p.parent.name}/{p.name}" for p in MODELS])
def test_model_matches_stored_outputs(folder: Path) -> None:
    model, graph, why = imported(folder)
    if folder.name in UNSUPPORTED:
        assert graph is None and why == UNSUPPORTED[folder.name]
        return
    assert graph is not None, f"{folder.name} was refused: {why}"
    exe = qc.compile(graph, backend="numpy")
    for feeds, expected in data_sets(folder, model):
        got = exe.run(feeds)
        for vi, ref in zip(model.graph.output, expected, strict=True):
            assert got[vi.name].shape == ref.shape, vi.name
            np.testing.assert_allclose(got[vi.name], ref, rtol=1e-4, atol=1e-5,
                                       err_msg=f"{folder.name}: output {vi.name}")


def test_enough_models_run() -> None:
    skipped: dict[str, list[str]] = collections.defaultdict(list)
    ran = 0
    for folder in MODELS:
        _, graph, why = imported(folder)
        if graph is None:
            skipped[why].append(folder.name)
        else:
            ran += 1
    print(f"\nconformance: {ran} of {len(MODELS)} models ran, "
          f"{len(MODELS) - ran} refused as unsupported")
    for why, names in sorted(skipped.items()):
        print(f"  refused ({why}): {', '.join(names)}")
    assert ran >= MIN_RUN, f"only {ran} conformance models ran, expected at least {MIN_RUN}"
