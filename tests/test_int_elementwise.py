"""IntAdd, IntMul, IntAveragePool and IntGlobalAveragePool against oracles written from the
integer op contract, not from the kernels:

- a loop oracle in Python integers (fixed point: ``M0_i`` and the shared shift ``t`` derived
  with ``Fraction``; float: float32 scalars), bit-exact on hypothesis-drawn shapes, parameters
  and attributes, both rounding modes; the strategies aim at ties and saturation and count them;
- exhaustive: every int8 (and uint8) pair through IntAdd and IntMul for a grid of multipliers,
  bit-exact with the exact rational value of the fixed-point definition and within one step
  of the real-valued result;
- the peer: onnxruntime's com.microsoft QLinearAdd, QLinearMul, QLinearAveragePool,
  QLinearGlobalAveragePool, and QLinearSigmoid / QLinearLeakyRelu against LookupTable, at most
  one step apart, with the mismatch rate printed;
- the ops through ``qc.compile`` and a standalone numpy export, bit-exact with the kernels.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from onnx import helper
from op_check import infer, refuse
from ort_helpers import node_model, session

import qcompiler as qc
from qcompiler import ops, qdq
from qcompiler.lut import make_table
from qcompiler.types import QuantParams, TensorType

ROUNDINGS = ("fixed_point", "float")
DTYPES = (np.int8, np.uint8)
# Multipliers, drawn group by group so that each regime comes up: ties (0.5, 0.25, 1.5), M > 1
# up to saturation, tiny ones that flush to zero (< 2^-32) or nearly, M0 close to 2^31, any.
MULTIPLIERS = st.sampled_from([
    st.sampled_from([0.5, 0.25, 1.5]),
    st.sampled_from([3.0, 255.0, 1000.0]),
    st.sampled_from([2.0**-33, 1e-10, 2.0**-20]),
    st.sampled_from([1.0, 1 / 255, 1 - 2.0**-24]),
    st.floats(1e-4, 8.0),
]).flatmap(lambda group: group)


# -- the oracle: the contract's formulas, one element at a time in Python integers -------------


@functools.cache
def contract_fixed_point(multipliers: tuple[float, ...]) -> tuple[tuple[int, ...], int]:
    """``(M0_i, t)``: ``t`` from the largest multiplier as a Q0.31 ``M0`` in [2^30, 2^31)
    (``M0 == 2^31`` rolls over to 2^30, one bit less of shift), every ``M0_i`` the multiplier
    times ``2^t`` rounded half to even; all zero when ``t`` would exceed 62 or M is 0."""
    top = max(multipliers)
    if top == 0:
        return (0,) * len(multipliers), 0
    frac, exp = math.frexp(top)
    if round(Fraction(frac) * 2**31) == 2**31:
        exp += 1
    shift = 31 - exp
    if shift > 62:
        return (0,) * len(multipliers), 0
    return tuple(round(Fraction(m) * 2**shift) for m in multipliers), shift


def oracle_rescale(values: list[int], multipliers: list[float], rounding: str,
                   stats: Counter) -> int:
    """``R(sum_i v_i * M_i)`` as the contract defines both roundings; counts exact ties."""
    if rounding == "fixed_point":
        m0s, shift = contract_fixed_point(tuple(multipliers))
        if shift == 0:
            return 0
        total = sum(v * m for v, m in zip(values, m0s, strict=True))
        stats["tie fixed_point"] += total % 2**shift == 2 ** (shift - 1)
        return math.floor(Fraction(total, 2**shift) + Fraction(1, 2))
    total = None
    for v, m in zip(values, multipliers, strict=True):
        part = np.float32(v) * np.float32(m)
        total = part if total is None else np.float32(total + part)
    stats["tie float"] += total - np.floor(total) == 0.5
    return int(np.rint(total))


def oracle_saturate(r: int, zero_point: int, qmin: int, qmax: int, stats: Counter) -> int:
    y = zero_point + r
    stats["saturated low"] += y < qmin
    stats["saturated high"] += y > qmax
    return min(max(y, qmin), qmax)


def clamp_range(dtype, qmin, qmax) -> tuple[int, int]:
    info = np.iinfo(dtype)
    return (info.min if qmin is None else qmin), (info.max if qmax is None else qmax)


def oracle_binary(op_type: str, a, b, a_zp: int, b_zp: int, multipliers: list[float],
                  y_zp: np.ndarray, rounding: str, qmin, qmax, stats: Counter) -> np.ndarray:
    lo, hi = clamp_range(y_zp.dtype, qmin, qmax)
    a, b = np.broadcast_arrays(a, b)
    out = np.empty(a.shape, y_zp.dtype)
    for idx in np.ndindex(a.shape):
        va, vb = int(a[idx]) - a_zp, int(b[idx]) - b_zp
        values = [va, vb] if op_type == "IntAdd" else [va * vb]
        r = oracle_rescale(values, multipliers, rounding, stats)
        out[idx] = oracle_saturate(r, int(y_zp), lo, hi, stats)
    return out


def pool_geometry(size: int, k: int, s: int, d: int, begin: int, end: int, auto_pad: str,
                  ceil_mode: int) -> tuple[int, int, int]:
    """(output length, pad before, pad after) of one axis, as the ONNX AveragePool spec says."""
    span = (k - 1) * d + 1
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        out = -(-size // s)
        total = max(0, (out - 1) * s + span - size)
        begin = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
        return out, begin, total - begin
    if auto_pad == "VALID":
        begin = end = 0
    room = size + begin + end - span
    out = (-(-room // s) if ceil_mode else room // s) + 1
    if ceil_mode and (out - 1) * s >= size + begin:  # no window starts in the end padding
        out -= 1
    return out, begin, end


def oracle_pool(x: np.ndarray, x_zp: int, multiplier: float, y_zp: np.ndarray, attrs: dict,
                stats: Counter) -> np.ndarray:
    """IntAveragePool window by window: the sum of ``x - x_zp`` over the taps inside x, the
    count of taps inside x (and inside the explicit pads iff count_include_pad)."""
    a = ops.get("IntAveragePool").full_attrs(attrs)
    nsp = x.ndim - 2
    kernel = a["kernel_shape"]
    strides = a["strides"] or (1,) * nsp
    dilations = a["dilations"] or (1,) * nsp
    pads = a["pads"] or (0,) * (2 * nsp)
    geometry = [pool_geometry(x.shape[2 + i], kernel[i], strides[i], dilations[i], pads[i],
                              pads[nsp + i], a["auto_pad"], a["ceil_mode"]) for i in range(nsp)]
    lo, hi = clamp_range(y_zp.dtype, a["qmin"], a["qmax"])
    out = np.empty(x.shape[:2] + tuple(g[0] for g in geometry), y_zp.dtype)
    for idx in np.ndindex(out.shape):
        n, c, pos = idx[0], idx[1], idx[2:]
        acc = count = 0
        for tap in np.ndindex(*kernel):
            where = [pos[i] * strides[i] - geometry[i][1] + tap[i] * dilations[i]
                     for i in range(nsp)]
            inside = all(0 <= w < x.shape[2 + i] for i, w in enumerate(where))
            in_pads = all(-geometry[i][1] <= w < x.shape[2 + i] + geometry[i][2]
                          for i, w in enumerate(where))
            if inside:
                acc += int(x[(n, c, *where)]) - x_zp
            count += inside or (a["count_include_pad"] and in_pads)
        stats["count below kernel"] += count < math.prod(kernel)
        m = multiplier / count if count else 0.0
        r = oracle_rescale([acc], [m], a["rounding"], stats)
        out[idx] = oracle_saturate(r, int(y_zp), lo, hi, stats)
    return out


def oracle_global_pool(x, x_zp: int, multiplier: float, y_zp, rounding: str, qmin, qmax,
                       stats: Counter) -> np.ndarray:
    lo, hi = clamp_range(y_zp.dtype, qmin, qmax)
    count = math.prod(x.shape[2:])
    out = np.empty(x.shape[:2] + (1,) * (x.ndim - 2), y_zp.dtype)
    for n, c in np.ndindex(x.shape[:2]):
        acc = sum(int(v) - x_zp for v in x[n, c].reshape(-1))
        r = oracle_rescale([acc], [multiplier / count], rounding, stats)
        out[n, c] = oracle_saturate(r, int(y_zp), lo, hi, stats)
    return out


# -- running an op: its inferred type, then its kernel -----------------------------------------


def run_op(op_type: str, inputs: list[np.ndarray], attrs: dict, n_data: int) -> np.ndarray:
    """The kernel's result; the type the IR infers (data inputs as graph inputs, the rest as
    constants) must be the result's."""
    (inferred,) = infer(op_type, inputs, attrs, constant_inputs=range(n_data, len(inputs)))
    opdef = ops.get(op_type)
    y = opdef.kernel(*inputs, **opdef.full_attrs(attrs))
    assert inferred.dtype.np == y.dtype and inferred.shape == y.shape
    return y


# -- strategies ------------------------------------------------------------------------------


def limits(dtype) -> tuple[int, int]:
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def zero_points(dtype) -> st.SearchStrategy[int]:
    low, high = limits(dtype)
    return st.one_of(st.sampled_from([low, high, (low + high + 1) // 2]),
                     st.integers(low, high))


def codes(dtype, shape, zero_point: int) -> st.SearchStrategy[np.ndarray]:
    """Codes of ``dtype``, favouring its limits (saturation) and the codes next to the zero
    point (small centred values: with M = 0.5, 0.25 or 1.5 they make ties)."""
    low, high = limits(dtype)
    favoured = sorted({min(max(zero_point + d, low), high) for d in (-2, -1, 1, 2)} | {low, high})
    return hnp.arrays(dtype, shape, elements=st.one_of(st.sampled_from(favoured),
                                                       st.integers(low, high)))


@st.composite
def clamps(draw, dtype) -> tuple[int | None, int | None]:
    """qmin/qmax: mostly the dtype's limits (None), sometimes a narrower clamp."""
    low, high = limits(dtype)
    qmin = draw(st.one_of(st.none(), st.integers(low, high)))
    qmax = draw(st.one_of(st.none(), st.integers(low if qmin is None else qmin, high)))
    return qmin, qmax


@st.composite
def pool_attrs(draw, dilations: bool = True) -> tuple[tuple, dict]:
    """(x shape, IntAveragePool attributes): 1-D or 2-D, every attribute drawn."""
    nsp = draw(st.integers(1, 2))
    auto_pad = draw(st.sampled_from(["NOTSET", "NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER",
                                     "VALID"]))
    kernel = [draw(st.integers(1, 3)) for _ in range(nsp)]
    strides = [draw(st.integers(1, 3)) for _ in range(nsp)]
    dil = [draw(st.integers(1, 2)) if dilations else 1 for _ in range(nsp)]
    spans = [(k - 1) * d + 1 for k, d in zip(kernel, dil)]
    pads = [draw(st.integers(0, s - 1)) for s in spans * 2] if auto_pad == "NOTSET" else []
    sizes = []
    for i, span in enumerate(spans):
        extra = draw(st.integers(0, 4))
        padded = pads[i] + pads[nsp + i] if pads else 0
        sizes.append(max(1, extra + (0 if auto_pad.startswith("SAME") else span - padded)))
    attrs = {"kernel_shape": tuple(kernel), "strides": tuple(strides), "auto_pad": auto_pad,
             "ceil_mode": draw(st.integers(0, 1)),
             "count_include_pad": draw(st.integers(0, 1))}
    if dilations:
        attrs["dilations"] = tuple(dil)
    if pads:
        attrs["pads"] = tuple(pads)
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), *sizes)
    return shape, attrs


def assert_reached(stats: Counter, *keys: str) -> None:
    """The strategies really produced each of ``keys`` (ties, saturation, ...)."""
    missing = [k for k in keys if not stats[k]]
    assert not missing, f"never reached: {missing} ({dict(stats)})"


# -- bit-exact with the oracle on drawn cases --------------------------------------------------


@pytest.mark.parametrize("op_type", ["IntAdd", "IntMul"])
def test_binary_ops_match_the_oracle(op_type):
    stats = Counter()
    n_multipliers = 2 if op_type == "IntAdd" else 1

    def compare(a, b, zero_points, dtypes, multipliers, qmin, qmax):
        (ta, tb, ty), (a_zp, b_zp, y_zp) = dtypes, zero_points
        inputs = [a, b, ta(a_zp), tb(b_zp), *map(np.float64, multipliers), ty(y_zp)]
        inputs = [np.asarray(v) for v in inputs]
        for rounding in ROUNDINGS:
            got = run_op(op_type, inputs, {"rounding": rounding, "qmin": qmin, "qmax": qmax}, 2)
            want = oracle_binary(op_type, a, b, a_zp, b_zp, multipliers, inputs[-1], rounding,
                                 qmin, qmax, stats)
            np.testing.assert_array_equal(got, want, err_msg=rounding)
        stats["M > 1"] += max(multipliers) > 1
        stats["M < 2^-32"] += min(multipliers) < 2.0**-32
        stats["broadcast"] += a.shape != b.shape

    @given(data=st.data())
    def check(data):
        shapes = data.draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=4,
                                                             max_side=4))
        dtypes = [data.draw(st.sampled_from(DTYPES)) for _ in range(3)]
        zps = [data.draw(zero_points(t)) for t in dtypes]
        a = data.draw(codes(dtypes[0], shapes.input_shapes[0], zps[0]))
        b = data.draw(codes(dtypes[1], shapes.input_shapes[1], zps[1]))
        multipliers = [data.draw(MULTIPLIERS) for _ in range(n_multipliers)]
        compare(a, b, zps, dtypes, multipliers, *data.draw(clamps(dtypes[2])))

    check()
    # the flushing regime, always (what hypothesis draws moves with the constants it collects)
    a = np.arange(-128, 128, dtype=np.int8).reshape(16, 16)
    compare(a, a[:1], (3, -2, 5), (np.int8, np.int8, np.uint8), [2.0**-33] * n_multipliers,
            0, 255)
    check()
    assert_reached(stats, "tie fixed_point", "tie float", "saturated low", "saturated high",
                   "M > 1", "M < 2^-32", "broadcast")


def test_average_pool_matches_the_oracle():
    stats = Counter()

    @given(data=st.data())
    def check(data):
        shape, attrs = data.draw(pool_attrs())
        tx, ty = data.draw(st.sampled_from(DTYPES)), data.draw(st.sampled_from(DTYPES))
        x_zp, y_zp = data.draw(zero_points(tx)), ty(data.draw(zero_points(ty)))
        x = data.draw(codes(tx, shape, x_zp))
        multiplier = data.draw(MULTIPLIERS)
        qmin, qmax = data.draw(clamps(ty))
        inputs = [x, np.asarray(tx(x_zp)), np.asarray(np.float64(multiplier)), np.asarray(y_zp)]
        for rounding in ROUNDINGS:
            full = {**attrs, "rounding": rounding, "qmin": qmin, "qmax": qmax}
            got = run_op("IntAveragePool", inputs, full, 1)
            want = oracle_pool(x, x_zp, multiplier, inputs[3], full, stats)
            np.testing.assert_array_equal(got, want, err_msg=rounding)
        stats["ceil_mode"] += attrs["ceil_mode"]
        stats["count_include_pad"] += attrs["count_include_pad"]

    check()
    assert_reached(stats, "tie fixed_point", "tie float", "saturated low", "saturated high",
                   "count below kernel", "ceil_mode", "count_include_pad")


def test_global_average_pool_matches_the_oracle():
    stats = Counter()

    @given(data=st.data())
    def check(data):
        shape = data.draw(hnp.array_shapes(min_dims=3, max_dims=4, max_side=5))
        tx, ty = data.draw(st.sampled_from(DTYPES)), data.draw(st.sampled_from(DTYPES))
        x_zp, y_zp = data.draw(zero_points(tx)), ty(data.draw(zero_points(ty)))
        x = data.draw(codes(tx, shape, x_zp))
        # half a step per unit of the sum, whatever the count: odd sums are ties
        count = math.prod(shape[2:])
        per_count = st.sampled_from([0.5, 1.5]).map(lambda m: m * count)
        multiplier = data.draw(st.sampled_from([MULTIPLIERS, per_count]).flatmap(lambda s: s))
        qmin, qmax = data.draw(clamps(ty))
        inputs = [x, np.asarray(tx(x_zp)), np.asarray(np.float64(multiplier)), np.asarray(y_zp)]
        for rounding in ROUNDINGS:
            got = run_op("IntGlobalAveragePool", inputs,
                         {"rounding": rounding, "qmin": qmin, "qmax": qmax}, 1)
            want = oracle_global_pool(x, x_zp, multiplier, inputs[3], rounding, qmin, qmax,
                                      stats)
            np.testing.assert_array_equal(got, want, err_msg=rounding)

    check()
    assert_reached(stats, "tie fixed_point", "tie float", "saturated low", "saturated high")


def test_a_window_over_padding_alone_gives_the_zero_point():
    """count_include_pad = 0 and a window that reads only padding: count 0, y = y_zp (the
    float AveragePool gives 0 there, which is y_zp once quantized)."""
    x = np.array([[[100]]], np.int8)
    attrs = {"kernel_shape": (2,), "dilations": (3,), "pads": (2, 2)}
    inputs = [x, np.asarray(np.int8(-5)), np.asarray(np.float64(0.5)), np.asarray(np.int8(7))]
    for rounding in ROUNDINGS:
        y = run_op("IntAveragePool", inputs, {**attrs, "rounding": rounding}, 1)
        assert y.tolist() == [[[7, 7]]]
        np.testing.assert_array_equal(y, oracle_pool(x, -5, 0.5, inputs[3], attrs, Counter()))


# -- exhaustive over every 8-bit pair ----------------------------------------------------------

# (a multiplier, b multiplier) for IntAdd; IntMul takes the first as its multiplier.
MULTIPLIER_GRID = [(0.5, 0.5), (1.0, 1.0), (0.3, 0.7), (3.0, 0.01), (255.0, 1.0),
                   (2.0**-20, 2.0**-25), (1e-10, 0.4), (0.999999, 1e-3), (2.0**-33, 2.0**-40),
                   (1 / 255, 1 / 127)]
# (a, b, y) zero points as int8; shifted by 128 for uint8.
ZERO_POINTS = [(0, 0, 0), (-128, 127, -128), (17, -3, 127)]


def every_pair(dtype) -> tuple[np.ndarray, np.ndarray]:
    """a as a row, b as a column: their broadcast is every (a, b) pair."""
    low, high = limits(dtype)
    codes_ = np.arange(low, high + 1).astype(dtype)
    return codes_[None, :], codes_[:, None]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("op_type", ["IntAdd", "IntMul"])
def test_every_pair_is_the_exact_fixed_point_value(op_type, dtype):
    """``floor(sum v_i * M0_i / 2^t + 1/2)`` in exact rationals, within one step of
    ``round(y_zp + sum v_i * M_i)`` in reals; the float rounding within one step too."""
    a, b = every_pair(dtype)
    shift = 128 if dtype is np.uint8 else 0
    off_real = Counter()
    for k, multipliers in enumerate(MULTIPLIER_GRID):
        za, zb, zy = (z + shift for z in ZERO_POINTS[k % len(ZERO_POINTS)])
        ms = list(multipliers if op_type == "IntAdd" else multipliers[:1])
        inputs = [np.asarray(v) for v in (a, b, dtype(za), dtype(zb), *map(np.float64, ms),
                                          dtype(zy))]
        got = {r: run_op(op_type, inputs, {"rounding": r}, 2) for r in ROUNDINGS}
        m0s, t = contract_fixed_point(tuple(ms))
        va, vb = a.astype(object) - za, b.astype(object) - zb
        terms = [va, vb] if op_type == "IntAdd" else [va * vb]
        total = sum(v * m for v, m in zip(terms, m0s, strict=True))
        # floor(total / 2^t + 1/2) = floor((2 total + 2^t) / 2^(t+1)), in Python integers
        exact = (2 * total + 2**t) // 2 ** (t + 1) if t else np.zeros((256, 256), object)
        low, high = limits(dtype)
        want = np.clip((exact + zy).astype(np.int64), low, high)
        np.testing.assert_array_equal(got["fixed_point"], want, err_msg=str(multipliers))
        real = sum(v.astype(np.float64) * m for v, m in zip(terms, ms, strict=True))
        rounded = np.clip(np.rint(real + zy), low, high)
        for rounding, y in got.items():
            apart = np.abs(y.astype(np.float64) - rounded)
            assert apart.max() <= 1, (rounding, multipliers)
            off_real[rounding] += int(np.count_nonzero(apart))
    for rounding in ROUNDINGS:
        print(f"{op_type} ({rounding}, {dtype.__name__}) vs the real-valued result: "
              f"{off_real[rounding]}/{256 * 256 * len(MULTIPLIER_GRID)} outputs differ by 1")


# -- the peer: onnxruntime's com.microsoft QLinear* ops ----------------------------------------


def run_microsoft(op_type: str, inputs: list, attrs: dict | None = None) -> np.ndarray:
    """One com.microsoft node in onnxruntime; every input but the first (and B of the binary
    ops, input 3) is an initializer."""
    data = {0, 3} if op_type in ("QLinearAdd", "QLinearMul") else {0}
    constants = [i for i in range(len(inputs)) if i not in data]
    model = node_model(op_type, [np.asarray(v) for v in inputs], attrs,
                       constant_inputs=constants)
    model.graph.node[0].domain = "com.microsoft"
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    feeds = {f"in{i}": np.asarray(inputs[i]) for i in sorted(data)}
    (y,) = session(model).run(None, feeds)
    return y


def steps_apart(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int64) - b.astype(np.int64))


class Mismatches:
    """Per (rounding, dtype): outputs compared and outputs one step apart from the peer."""

    def __init__(self) -> None:
        self.differ, self.total = Counter(), Counter()

    def add(self, key: tuple[str, str], ours: np.ndarray, peer: np.ndarray, what: str) -> None:
        assert ours.dtype == peer.dtype and ours.shape == peer.shape, what
        apart = steps_apart(ours, peer)
        assert apart.max(initial=0) <= 1, f"{what}: {apart.max()} steps apart"
        self.differ[key] += int(np.count_nonzero(apart))
        self.total[key] += apart.size

    def report(self, ours: str, peer: str) -> None:
        for rounding, dtype in sorted(self.total):
            print(f"{ours} vs onnxruntime {peer} ({rounding}, {dtype}): "
                  f"{self.differ[rounding, dtype]}/{self.total[rounding, dtype]} outputs "
                  f"differ by 1")


# (a scale, a zp, b scale, b zp, y scale, y zp) as float32 scales and int8 zero points
PEER_PARAMS = [(0.1, 3, 0.05, -7, 0.2, 1), (0.02, -128, 0.02, 127, 0.03, 0),
               (0.5, 0, 0.25, 0, 0.125, -20), (0.003, 10, 0.7, -100, 0.05, 127),
               (1.0, 0, 1.0, 0, 2.0, 0)]


@pytest.mark.parametrize("op_type, peer", [("IntAdd", "QLinearAdd"), ("IntMul", "QLinearMul")])
def test_binary_ops_against_onnxruntime(op_type, peer):
    """Every 8-bit pair for each parameter set, int8 and uint8."""
    seen = Mismatches()
    for dtype in DTYPES:
        a, b = every_pair(dtype)
        shift = 128 if dtype is np.uint8 else 0
        for sa, za, sb, zb, sy, zy in PEER_PARAMS:
            za, zb, zy = (dtype(z + shift) for z in (za, zb, zy))
            sa, sb, sy = map(np.float32, (sa, sb, sy))
            peer_y = run_microsoft(peer, [a, sa, za, b, sb, zb, sy, zy])
            if op_type == "IntAdd":
                ms = [np.float64(sa) / np.float64(sy), np.float64(sb) / np.float64(sy)]
            else:
                ms = [np.float64(sa) * np.float64(sb) / np.float64(sy)]
            for rounding in ROUNDINGS:
                inputs = [np.asarray(v) for v in (a, b, za, zb, *ms, zy)]
                ours = run_op(op_type, inputs, {"rounding": rounding}, 2)
                seen.add((rounding, dtype.__name__), ours, peer_y, f"{op_type} {sa, sb, sy}")
    seen.report(op_type, peer)


def test_onnxruntime_rounds_after_adding_the_output_zero_point():
    """Why the float rounding differs from QLinearAdd/QLinearMul on ties: onnxruntime computes
    ``round_half_even(sum + y_zp)``, the contract (as QuantizeLinear) ``round_half_even(sum) +
    y_zp``; with an odd zero point every tie lands on the other side."""
    a, b = every_pair(np.int8)
    sa, sb, sy = np.float32(0.1), np.float32(0.05), np.float32(0.2)  # ratios 0.5 and 0.25
    total = (a.astype(np.float32) - 3) * np.float32(0.5) + (b.astype(np.float32) + 7) * 0.25
    ties = total - np.floor(total) == 0.5
    for y_zp in (0, 1, -3):
        peer_y = run_microsoft("QLinearAdd", [a, sa, np.int8(3), b, sb, np.int8(-7), sy,
                                              np.int8(y_zp)])
        np.testing.assert_array_equal(peer_y, np.clip(np.rint(total + y_zp), -128, 127))
        inputs = [np.asarray(v) for v in (a, b, np.int8(3), np.int8(-7), 0.5, 0.25,
                                          np.int8(y_zp))]
        ours = run_op("IntAdd", inputs, {"rounding": "float"}, 2)
        differ = ours != peer_y
        assert ties.any() and np.array_equal(differ, ties if y_zp % 2 else np.zeros_like(ties))


def test_average_pool_against_onnxruntime():
    """Drawn windows (onnxruntime's QLinearAveragePool has no dilations; channels_last = 0 is
    the NCHW layout ours has)."""
    seen = Mismatches()

    @given(data=st.data())
    def check(data):
        shape, attrs = data.draw(pool_attrs(dilations=False))
        shape = (2, 16, *shape[2:])  # more channels: more outputs compared per window
        dtype = data.draw(st.sampled_from(DTYPES))
        x_zp, y_zp = dtype(data.draw(zero_points(dtype))), dtype(data.draw(zero_points(dtype)))
        x = data.draw(codes(dtype, shape, int(x_zp)))
        sx, sy = np.float32(data.draw(st.floats(1e-3, 1.0))), np.float32(
            data.draw(st.floats(1e-2, 1.0)))  # onnxruntime refuses sx / (sy * count) >= 256
        peer_y = run_microsoft("QLinearAveragePool", [x, sx, x_zp, sy, y_zp],
                               {**attrs, "channels_last": 0})
        multiplier = np.float64(sx) / np.float64(sy)
        for rounding in ROUNDINGS:
            inputs = [np.asarray(v) for v in (x, x_zp, multiplier, y_zp)]
            ours = run_op("IntAveragePool", inputs, {**attrs, "rounding": rounding}, 1)
            seen.add((rounding, dtype.__name__), ours, peer_y, f"{shape} {attrs}")

    check()
    seen.report("IntAveragePool", "QLinearAveragePool")


def test_global_average_pool_against_onnxruntime():
    seen = Mismatches()

    @given(data=st.data())
    def check(data):
        shape = data.draw(hnp.array_shapes(min_dims=3, max_dims=4, min_side=1, max_side=7))
        dtype = data.draw(st.sampled_from(DTYPES))
        x_zp, y_zp = dtype(data.draw(zero_points(dtype))), dtype(data.draw(zero_points(dtype)))
        x = data.draw(codes(dtype, shape, int(x_zp)))
        sx, sy = np.float32(data.draw(st.floats(1e-3, 1.0))), np.float32(
            data.draw(st.floats(1e-2, 1.0)))  # onnxruntime refuses sx / (sy * count) >= 256
        peer_y = run_microsoft("QLinearGlobalAveragePool", [x, sx, x_zp, sy, y_zp],
                               {"channels_last": 0})
        multiplier = np.float64(sx) / np.float64(sy)
        for rounding in ROUNDINGS:
            inputs = [np.asarray(v) for v in (x, x_zp, multiplier, y_zp)]
            ours = run_op("IntGlobalAveragePool", inputs, {"rounding": rounding}, 1)
            seen.add((rounding, dtype.__name__), ours, peer_y, str(shape))

    check()
    seen.report("IntGlobalAveragePool", "QLinearGlobalAveragePool")
    x = np.zeros((1, 2, 4), np.int8)
    with pytest.raises(Exception, match="parameter out of computation range"):
        run_microsoft("QLinearGlobalAveragePool", [x, np.float32(1100), np.int8(0),
                                                   np.float32(1), np.int8(0)],
                      {"channels_last": 0})


# (input scale, zero point, output scale, zero point) as int8; uint8 zero points shifted by 128
LUT_PARAMS = [(0.05, 0, 1 / 256, -128), (0.1, -128, 0.02, 0), (0.02, 127, 0.01, 5),
              (2.0**-4, 7, 2.0**-7, -3)]


@pytest.mark.parametrize("op_type, peer, attrs",
                         [("Sigmoid", "QLinearSigmoid", {}),
                          ("LeakyRelu", "QLinearLeakyRelu", {"alpha": 0.01}),
                          ("LeakyRelu", "QLinearLeakyRelu", {"alpha": 0.3})])
def test_lookup_tables_against_onnxruntime(op_type, peer, attrs):
    """LookupTable with ``make_table`` on every code, against onnxruntime's own op."""
    seen = Mismatches()
    for dtype in DTYPES:
        shift = 128 if dtype is np.uint8 else 0
        x = every_pair(dtype)[0][0]
        for s_in, z_in, s_out, z_out in LUT_PARAMS:
            name = "i8" if dtype is np.int8 else "u8"
            p_in = qdq.exact_params(QuantParams((s_in,), (z_in + shift,), name))
            p_out = qdq.exact_params(QuantParams((s_out,), (z_out + shift,), name))
            table = make_table(op_type, p_in, p_out, attrs)
            ours = run_op("LookupTable", [x, table], {}, 1)
            peer_y = run_microsoft(peer, [x, np.float32(s_in), dtype(z_in + shift),
                                          np.float32(s_out), dtype(z_out + shift)], attrs)
            seen.add(("table", dtype.__name__), ours, peer_y, f"{op_type} {s_in, s_out}")
    seen.report(f"LookupTable({op_type}{attrs or ''})", peer)


# -- through qc.compile and a standalone numpy export ------------------------------------------


def integer_graph() -> tuple[qc.Graph, dict]:
    """a (int8) + b (uint8) -> IntAdd -> IntAveragePool (float rounding) -> IntMul with itself
    -> IntGlobalAveragePool, every op with its own parameters."""
    g = qc.Graph("integer")
    a = g.add_input("a", TensorType("i8", (2, 3, 7, 6)))
    b = g.add_input("b", TensorType("u8", (3, 1, 6)))

    def const(value, name):
        return g.add_constant(np.asarray(value), name)

    add = g.add_node("IntAdd", [a, b, const(np.int8(-128), "a_zp"), const(np.uint8(128), "b_zp"),
                                const(0.37, "a_m"), const(0.3, "b_m"), const(np.int8(4), "add_zp")],
                     {"qmin": 4}, name="add").outputs[0]
    pool = g.add_node("IntAveragePool", [add, const(np.int8(4), "pool_in_zp"),
                                         const(0.8, "pool_m"), const(np.uint8(3), "pool_zp")],
                      {"kernel_shape": (3, 2), "strides": (2, 2), "pads": (1, 0, 1, 1),
                       "ceil_mode": 1, "count_include_pad": 1, "rounding": "float"},
                      name="pool").outputs[0]
    mul = g.add_node("IntMul", [pool, pool, const(np.uint8(3), "m_a_zp"),
                                const(np.uint8(3), "m_b_zp"), const(0.004, "mul_m"),
                                const(np.int8(-60), "mul_zp")], name="mul").outputs[0]
    gap = g.add_node("IntGlobalAveragePool", [mul, const(np.int8(-60), "gap_in_zp"),
                                              const(2.5, "gap_m"), const(np.uint8(128), "gap_zp")],
                     {"qmax": 200}, name="gap").outputs[0]
    g.set_outputs([pool, gap])
    rng = np.random.default_rng(3)
    feeds = {"a": rng.integers(-128, 128, (2, 3, 7, 6)).astype(np.int8),
             "b": rng.integers(0, 256, (3, 1, 6)).astype(np.uint8)}
    return g, feeds


def direct(g: qc.Graph, feeds: dict) -> dict:
    """The graph's nodes run by calling their kernels one after the other."""
    values = dict(feeds) | {name: c.data for name, c in g.constants.items()}
    for node in g.nodes:
        opdef = ops.get(node.op)
        (values[node.outputs[0].name],) = [opdef.kernel(*(values[v.name] for v in node.inputs),
                                                        **opdef.full_attrs(dict(node.attrs)))]
    return {v.name: values[v.name] for v in g.outputs}


def test_compiled_and_exported_programs_are_bit_exact_with_the_kernels(tmp_path):
    from test_numpy_backend import run_standalone

    g, feeds = integer_graph()
    want = direct(g, feeds)
    assert np.unique(want["gap"]).size > 1  # not collapsed to one code
    exe = qc.compile(g, backend="numpy")
    got = exe.run(feeds)
    assert set(got) == set(want)
    for name in want:
        assert got[name].dtype == want[name].dtype
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    folder = exe.export_python(tmp_path / "integer")
    np.savez(tmp_path / "in.npz", **feeds)
    done = run_standalone(folder / "model.py", tmp_path / "in.npz", tmp_path / "out.npz")
    assert done.returncode == 0, done.stderr
    with np.load(tmp_path / "out.npz") as out:
        for name in want:
            np.testing.assert_array_equal(out[name], want[name], err_msg=name)


def test_text_form_round_trips():
    g, _ = integer_graph()
    text = str(g)
    assert 'IntAveragePool(' in text and 'rounding = "float"' in text and "f64[]" in text
    back = qc.parse(text, {name: c.data for name, c in g.constants.items()})
    assert back == g and str(back) == text


# -- refusals name the node --------------------------------------------------------------------


def add_operands(**change) -> list:
    ops_ = {"a": ("i8", (2, 3)), "b": ("u8", (3,)), "a_zp": np.int8(0), "b_zp": np.uint8(128),
            "a_m": np.float64(0.5), "b_m": np.float64(0.25), "y_zp": np.int8(0)}
    return list((ops_ | change).values())


@pytest.mark.parametrize("change, attrs, match", [
    ({"a": ("i32", (2, 3))}, {}, "a must be i8 or u8, got i32"),
    ({"b_zp": np.int8(0)}, {}, "b_zero_point must be u8 .*got i8"),
    ({"b_zp": np.array([128, 128], np.uint8)}, {}, r"b_zero_point must have shape \(\), got \[2\]"),
    ({"a_zp": ("i8", ())}, {}, "a_zero_point must be a constant"),
    ({"a_m": np.float32(0.5)}, {}, "a_multiplier must be f64, got f32"),
    ({"b_m": np.float64(-1.0)}, {}, r"b_multiplier must be finite and >= 0, got -1.0"),
    ({"b_m": np.float64(2.0**30)}, {}, r"b_multiplier 1073741824.0 does not fit the fixed-point"),
    ({"b": ("u8", (4,))}, {}, "do not broadcast"),
    ({}, {"qmin": 5, "qmax": 4}, r"\[qmin, qmax\] = \[5, 4\] must be a non-empty range"),
    ({}, {"qmax": 128}, r"within i8's \[-128, 127\]"),
])
def test_int_add_refuses_bad_operands_naming_the_node(change, attrs, match):
    refuse("IntAdd", add_operands(**change), attrs, qc.ShapeInferenceError, match)


def test_an_unknown_rounding_is_unsupported():
    refuse("IntMul", [("i8", (3,)), ("i8", (3,)), np.int8(0), np.int8(0), np.float64(0.1),
                      np.int8(0)], {"rounding": "half_down"}, qc.UnsupportedModelError,
           "rounding='half_down' is not supported")


def test_a_pool_whose_int32_sum_could_overflow_is_refused():
    refuse("IntAveragePool", [("u8", (1, 1, 4000, 4000)), np.uint8(0), np.float64(1.0),
                              np.uint8(0)], {"kernel_shape": (3000, 3000)},
           qc.ShapeInferenceError, "a sum of 9000000 values of up to 255 .*overflow")
