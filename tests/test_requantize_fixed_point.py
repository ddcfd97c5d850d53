"""Requantize with ``rounding = "fixed_point"``: every int8 and uint8 input, per tensor and per
axis, bit-exact with an oracle in exact rational arithmetic, and at most one step from the
``"float"`` rounding (QuantizeLinear(DequantizeLinear(x)))."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

import qcompiler as qc
from qcompiler import quant_math
from qcompiler.onnx_export import to_onnx
from qcompiler.types import TensorType

# (name, x_scale, y_scale) as float32 scales; M = x_scale / y_scale.
SCALES = [
    ("tiny 2^-33", 2.0**-20, 2.0**13),
    ("tiny 2e-10", 1e-6, 5000.0),
    ("2^-20", 2.0**-10, 2.0**10),
    ("0.3", 0.03, 0.1),
    ("0.5 ties", 0.05, 0.1),
    ("0.999999", 0.999999, 1.0),
    ("M0 nearest 2^31", 1 - 2.0**-24, 1.0),
    ("1.0", 0.37, 0.37),
    ("1.5 ties", 0.75, 0.5),
    ("3.0", 0.3, 0.1),
    ("255 saturating", 255.0, 1.0),
]
# (x zero point, y zero point) for int8; shifted by 128 for a uint8 side.
ZERO_POINTS = [(0, 0), (17, -5), (-128, 127)]
DTYPES = [np.int8, np.uint8]


def _multiplier(x_scale, y_scale) -> float:
    """M as the op computes it: the float32 scales divided in float64."""
    return float(np.float64(np.float32(x_scale)) / np.float64(np.float32(y_scale)))


def _oracle(x, x_zero: int, y_zero: int, m: float, dtype) -> np.ndarray:
    """``clamp(y_zero + floor((x - x_zero) * M0 / 2^t + 1/2))`` in exact rationals."""
    m0, shift = quant_math.fixed_point_multiplier(m)
    exact = Fraction(m0, 2**shift)
    info = np.iinfo(dtype)
    out = [min(max(y_zero + math.floor((int(v) - x_zero) * exact + Fraction(1, 2)), info.min),
               info.max) for v in x]
    return np.array(out, dtype)


def _shift(zero: int, dtype) -> int:
    return zero + 128 if dtype is np.uint8 else zero


def _graph(x_dtype, shape, x_scale, x_zero, y_scale, y_zero, axis=1,
           rounding="fixed_point") -> qc.Graph:
    g = qc.Graph("requantize")
    x = g.add_input("x", TensorType(qc.DType.from_numpy(x_dtype), shape))
    operands = [x] + [g.add_constant(np.asarray(a), n) for a, n in
                      [(x_scale, "x_scale"), (x_zero, "x_zero"), (y_scale, "y_scale"),
                       (y_zero, "y_zero")]]
    g.set_outputs([g.add_node("Requantize", operands, {"axis": axis, "rounding": rounding},
                              name="rq").outputs[0]])
    return g


def _every(dtype) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.arange(info.min, info.max + 1).astype(dtype)


def _steps_apart(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int64) - b.astype(np.int64))


@pytest.mark.parametrize("x_dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("y_dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("zeros", ZERO_POINTS, ids=str)
def test_per_tensor_every_input_matches_the_exact_oracle(x_dtype, y_dtype, zeros) -> None:
    """Each scale pair through ``qc.compile``: bit-exact with the rational oracle, within one
    step of the float rounding (the mismatch rate is printed)."""
    x = _every(x_dtype)
    x_zero, y_zero = _shift(zeros[0], x_dtype), _shift(zeros[1], y_dtype)
    ties = 0
    for name, xs, ys in SCALES:
        args = (np.float32(xs), x_dtype(x_zero), np.float32(ys), y_dtype(y_zero))
        fixed = qc.compile(_graph(x_dtype, (256,), *args)).run({"x": x})["rq"]
        floating = qc.compile(_graph(x_dtype, (256,), *args, rounding="float")).run({"x": x})["rq"]
        m = _multiplier(xs, ys)
        assert fixed.dtype == y_dtype
        np.testing.assert_array_equal(fixed, _oracle(x, x_zero, y_zero, m, y_dtype), err_msg=name)
        apart = _steps_apart(fixed, floating)
        assert apart.max() <= 1, name
        print(f"{x_dtype.__name__}->{y_dtype.__name__} zp {zeros} M={m:.9g} ({name}): "
              f"{np.count_nonzero(apart)}/{apart.size} outputs differ from float rounding")
        products = (x.astype(np.int64) - x_zero) * m
        ties += np.count_nonzero(products - np.floor(products) == 0.5)
    assert ties  # the grid really drew exact ties


def test_tiny_multipliers_flush_to_the_zero_point_and_large_ones_saturate() -> None:
    x = _every(np.int8)
    for xs, ys in [(2.0**-20, 2.0**13), (1e-6, 5000.0)]:
        assert _multiplier(xs, ys) < 2.0**-32
        assert quant_math.fixed_point_multiplier(_multiplier(xs, ys)) == (0, 0)
        g = _graph(np.int8, (256,), np.float32(xs), np.int8(9), np.float32(ys), np.int8(-4))
        assert (qc.compile(g).run({"x": x})["rq"] == -4).all()
    g = _graph(np.int8, (256,), np.float32(255.0), np.int8(0), np.float32(1.0), np.int8(0))
    y = qc.compile(g).run({"x": x})["rq"]
    assert y[0] == -128 and y[-1] == 127 and y[128] == 0 and (y[129:] == 127).all()


def test_half_way_products_round_toward_plus_infinity() -> None:
    """M = 0.5 exactly: -3 * 0.5 = -1.5 rounds to -1, 3 * 0.5 = 1.5 to 2 (float rounding gives
    -2 and 2, half to even)."""
    x = np.array([-3, -1, 1, 3, 5], np.int8)
    args = (np.float32(0.05), np.int8(0), np.float32(0.1), np.int8(0))
    fixed = qc.compile(_graph(np.int8, (5,), *args)).run({"x": x})["rq"]
    floating = qc.compile(_graph(np.int8, (5,), *args, rounding="float")).run({"x": x})["rq"]
    assert fixed.tolist() == [-1, 0, 1, 2, 3]
    assert floating.tolist() == [-2, 0, 0, 2, 2]


def test_the_m0_rollover_matches_the_oracle() -> None:
    """An M0 that rounds to 2^31 rolls over to 2^30 with a shift one smaller. The ratio of two
    float32 scales never gets that close to a power of two (p/q with 24-bit p, q is at least
    2^-24 away), so the op cannot meet it; the maths it runs is checked on float64 M."""
    for m in (1 - 2.0**-33, 0.5 - 2.0**-35, 2 - 2.0**-32):
        m0, shift = quant_math.fixed_point_multiplier(m)
        assert m0 == 2**30 and Fraction(m0, 2**shift) == Fraction(2) ** round(math.log2(m))
        acc = np.arange(-255, 256, dtype=np.int64)
        exact = Fraction(m0, 2**shift)
        want = [math.floor(int(a) * exact + Fraction(1, 2)) for a in acc]
        assert quant_math.requantize(acc, m0, shift).tolist() == want


@pytest.mark.parametrize("x_dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("y_dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("axis", [0, 1])
def test_per_axis_every_input_matches_the_exact_oracle(x_dtype, y_dtype, axis) -> None:
    """One channel per scale pair of the grid, with per-channel zero points."""
    n = len(SCALES)
    rng = np.random.default_rng(n + axis)
    xi, yi = np.iinfo(x_dtype), np.iinfo(y_dtype)
    x_scale = np.array([xs for _, xs, _ in SCALES], np.float32)
    y_scale = np.array([ys for _, _, ys in SCALES], np.float32)
    x_zero = rng.integers(xi.min, xi.max, n, endpoint=True).astype(x_dtype)
    y_zero = rng.integers(yi.min, yi.max, n, endpoint=True).astype(y_dtype)
    x = np.repeat(_every(x_dtype)[:, None], n, axis=1)
    x = x.T.copy() if axis == 0 else x
    g = _graph(x_dtype, x.shape, x_scale, x_zero, y_scale, y_zero, axis=axis)
    g2 = qc.parse(str(g))
    assert g2 == g
    fixed = qc.compile(g2).run({"x": x})["rq"]
    floating = qc.compile(_graph(x_dtype, x.shape, x_scale, x_zero, y_scale, y_zero, axis=axis,
                                 rounding="float")).run({"x": x})["rq"]
    for c, (name, xs, ys) in enumerate(SCALES):
        got = np.take(fixed, c, axis=axis)
        want = _oracle(np.take(x, c, axis=axis), int(x_zero[c]), int(y_zero[c]),
                       _multiplier(xs, ys), y_dtype)
        np.testing.assert_array_equal(got, want, err_msg=name)
    apart = _steps_apart(fixed, floating)
    assert apart.max() <= 1
    print(f"per axis {axis} {x_dtype.__name__}->{y_dtype.__name__}: "
          f"{np.count_nonzero(apart)}/{apart.size} outputs differ from float rounding")


def test_the_text_form_round_trips_and_infers_the_output_type() -> None:
    g = _graph(np.uint8, (4, 3), np.float32(0.1), np.uint8(128), np.float32(0.2), np.int8(0))
    assert 'rounding = "fixed_point"' in str(g)
    h = qc.parse(str(g))
    assert h == g and h.outputs[0].type == TensorType("i8", (4, 3))


def test_an_unknown_rounding_is_an_error_naming_the_node() -> None:
    with pytest.raises(qc.QCompilerError, match=r"'rq'.*rounding='half_down'.*fixed_point"):
        _graph(np.int8, (3,), np.float32(0.1), np.int8(0), np.float32(0.2), np.int8(0),
               rounding="half_down")


def test_onnx_export_refuses_fixed_point_rounding_naming_the_node() -> None:
    g = _graph(np.int8, (3,), np.float32(0.1), np.int8(0), np.float32(0.2), np.int8(0))
    with pytest.raises(qc.ExportError, match=r"Requantize.*'rq'"):
        to_onnx(g)


def test_a_standalone_export_runs_fixed_point_rounding_with_numpy_alone(tmp_path) -> None:
    """The exported program carries the kernels; fixed-point rounding must come with them."""
    from test_numpy_backend import run_standalone

    g = _graph(np.int8, (256,), np.float32(0.05), np.int8(3), np.float32(0.1), np.int8(-7))
    x = _every(np.int8)
    want = qc.compile(g).run({"x": x})["rq"]
    folder = qc.compile(g).export_python(tmp_path / "rq")
    np.savez(tmp_path / "in.npz", x=x)
    done = run_standalone(folder / "model.py", tmp_path / "in.npz", tmp_path / "out.npz")
    assert done.returncode == 0, done.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "out.npz")["rq"], want)
