"""onnx's own backend node tests, run through qcompiler and compared with their stored outputs.

The installed onnx wheel ships no ``backend/test/data/node`` folder, so the cases are generated
from ``onnx.backend.test.case.node`` (models and data sets in memory). Every case whose op types
are all in the op registry runs: it is imported with ``qc.from_onnx``, compiled with the numpy
backend and run on every data set. Models outside the importer's opsets (9 to 21) are converted
with ``onnx.version_converter`` first, as a user would; a model the converter cannot convert
must be refused by ``from_onnx`` as it stands.

``onnx_node_refusals`` is the one list of cases that do not pass, with the reason; it is exact:
a listed case that passes fails here, and so does an unlisted case that does not.
"""

from __future__ import annotations

import collections
import warnings
from functools import cache

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper, version_converter
from onnx_node_refusals import DATA_FAULTS, FAULTS_ELSEWHERE, REFUSED
from op_check import is_exact

import qcompiler as qc
from qcompiler import ops

MIN_OPSET, MAX_OPSET = 9, 21
# Measured over the passing float cases: the largest difference is 1.5e-5 on a sum of
# magnitude 220 (6.8e-8 relative), the largest relative one 4.5e-5 on a value of 5e-3 (2.4e-7
# absolute), and 1.9e-6 on 0.51 (BatchNormalization); every element is within a third of
# ATOL + RTOL * |expected|.
RTOL, ATOL = 1e-5, 1e-6
# float16 outputs (the four fp16 attention tests, values up to 0.99): ours and onnxruntime both
# differ from the stored outputs by at most 4.9e-4 (2^-11, one f16 ulp in [0.5, 1)), anywhere
# in the output; the bound is twice that.
F16_RTOL, F16_ATOL = 2.0**-10, 2.0**-10


@cache
def all_cases() -> dict[str, object]:
    from onnx.backend.test.case import node

    with warnings.catch_warnings():  # the generators divide by zero on purpose
        warnings.simplefilter("ignore")
        return {c.name: c for c in node.collect_testcases(None) if c.kind == "node"}


def op_types(model: onnx.ModelProto) -> set[str]:
    return {n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}"
            for n in model.graph.node}


def in_scope(model: onnx.ModelProto) -> bool:
    """Every op of the model is registered (Constant nodes become constants)."""
    return op_types(model) <= set(ops.OPS)


SCOPE = sorted(name for name, case in all_cases().items() if in_scope(case.model))


def opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
                MAX_OPSET)


@cache
def converted_case(name: str) -> onnx.ModelProto | None:
    return converted(all_cases()[name].model)


def converted(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """The model at an opset the importer reads, or None when onnx cannot convert it."""
    version = opset(model)
    if MIN_OPSET <= version <= MAX_OPSET:
        return model
    try:
        return version_converter.convert_version(model, min(max(version, MIN_OPSET), MAX_OPSET))
    except Exception:  # onnx's converter raises bare RuntimeErrors and asserts
        return None


def arrays(values) -> list[np.ndarray]:
    return [numpy_helper.to_array(v) if isinstance(v, onnx.TensorProto) else np.asarray(v)
            for v in values]


def data_sets(case) -> list[tuple[dict[str, np.ndarray], list[np.ndarray]]]:
    names = [vi.name for vi in case.model.graph.input]
    return [(dict(zip(names, arrays(inputs), strict=True)), arrays(outputs))
            for inputs, outputs in case.data_sets]


def exact(model: onnx.ModelProto) -> bool:
    """Whether every node is exact (``op_check.is_exact``): then outputs must be equal."""
    def attrs(node: onnx.NodeProto) -> dict:
        values = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        return {k: v.decode() if isinstance(v, bytes) else v for k, v in values.items()}

    return all(n.domain in ("", "ai.onnx") and is_exact(n.op_type, attrs(n))
               for n in model.graph.node)


def mismatch(model: onnx.ModelProto, got: dict[str, np.ndarray],
             expected: list[np.ndarray]) -> str:
    """Why ``got`` differs from the stored outputs, or "" when it agrees."""
    for vi, ref in zip(model.graph.output, expected, strict=True):
        out = got[vi.name]
        if out.dtype != ref.dtype or out.shape != ref.shape:
            return f"{vi.name}: {out.dtype}{list(out.shape)} vs {ref.dtype}{list(ref.shape)}"
        if ref.dtype.kind == "f" and not exact(model):
            rtol, atol = (F16_RTOL, F16_ATOL) if ref.dtype == np.float16 else (RTOL, ATOL)
            ok = np.allclose(out, ref, rtol=rtol, atol=atol, equal_nan=True)
        else:
            ok = np.array_equal(out, ref, equal_nan=ref.dtype.kind == "f")
        if not ok:
            return f"{vi.name} differs from the stored output"
    return ""


def outcome(name: str) -> tuple[str, str]:
    """("pass", ""), ("refused", the UnsupportedModelError's features), ("error", a
    QCompilerError) or ("mismatch", what differs). Other exceptions propagate."""
    case = all_cases()[name]
    model = converted_case(name)
    try:
        graph = qc.from_onnx(case.model if model is None else model)
    except qc.UnsupportedModelError as exc:
        return "refused", f"{'; '.join(sorted(exc.unsupported))}: {exc}"
    except qc.QCompilerError as exc:
        return "error", f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    assert model is not None, "an opset outside 9..21 must be refused"
    exe = qc.compile(graph, backend="numpy")
    for feeds, expected in data_sets(case):
        with np.errstate(all="ignore"):
            why = mismatch(model, exe.run(feeds), expected)
        if why:
            return "mismatch", why
    return "pass", ""


@pytest.mark.parametrize("name", SCOPE)
def test_node_case(name: str) -> None:
    kind, detail = outcome(name)
    if name in REFUSED:
        assert kind == "refused" and REFUSED[name] in detail, (
            f"{name} is listed as refused ({REFUSED[name]}) but gave {kind}: {detail}")
    elif name in FAULTS_ELSEWHERE:
        assert kind in ("error", "mismatch"), f"{name} now gives {kind}: update the list"
        assert FAULTS_ELSEWHERE[name].split(":")[0] in detail, detail
    elif name in DATA_FAULTS:
        assert kind == "mismatch", f"{name} now gives {kind}: update the list"
    else:
        assert kind == "pass", f"{name}: {kind}: {detail}"


@pytest.mark.parametrize("name", sorted(DATA_FAULTS))
def test_data_faults_are_faults_for_onnxruntime_too(name: str) -> None:
    """A stored output we do not reproduce counts as a fault in the data only when
    onnxruntime does not reproduce it either."""
    case = all_cases()[name]
    session = ort.InferenceSession(case.model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    names = [o.name for o in case.model.graph.output]
    for feeds, expected in data_sets(case):
        got = dict(zip(names, session.run(names, feeds), strict=True))
        assert mismatch(case.model, got, expected), f"onnxruntime reproduces {name}"


def test_the_lists_name_only_cases_in_scope() -> None:
    listed = set(REFUSED) | set(DATA_FAULTS) | set(FAULTS_ELSEWHERE)
    assert sorted(listed - set(SCOPE)) == []
    assert len(listed) == len(REFUSED) + len(DATA_FAULTS) + len(FAULTS_ELSEWHERE)


def test_every_case_loads_or_is_refused() -> None:
    """All node cases, in scope or not: a graph or an UnsupportedModelError, never another
    exception. Prints the counts."""
    counts: collections.Counter[str] = collections.Counter()
    for name, case in all_cases().items():
        try:
            qc.from_onnx(case.model)
            counts["load as they stand"] += 1
        except qc.UnsupportedModelError:
            counts["refused as they stand"] += 1
        except qc.QCompilerError as exc:
            assert name in FAULTS_ELSEWHERE, f"{name}: {type(exc).__name__}: {exc}"
            counts["known faults elsewhere"] += 1
    by_reason = collections.Counter(reason.split(":")[0] for reason in REFUSED.values())
    listed = len(REFUSED) + len(DATA_FAULTS) + len(FAULTS_ELSEWHERE)
    passing = [n for n in SCOPE if n not in REFUSED and n not in DATA_FAULTS
               and n not in FAULTS_ELSEWHERE]
    n_exact = sum(exact(converted_case(n)) for n in passing)
    print(f"\nonnx node cases: {len(all_cases())}; with registered ops: {len(SCOPE)}; "
          f"pass: {len(SCOPE) - listed}; refused: {len(REFUSED)}; data faults: "
          f"{len(DATA_FAULTS)}; faults elsewhere: {len(FAULTS_ELSEWHERE)}; passing cases "
          f"compared exactly: {n_exact}")
    for reason, n in by_reason.most_common():
        print(f"  refused, {reason}: {n}")
    print("  " + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
