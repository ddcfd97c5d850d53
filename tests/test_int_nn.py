"""IntConv and IntMatMul (qcompiler/ops/int_nn.py) against oracles written from the integer op
set's contract (notes: int_contract.md):

- a plain int64 loop oracle (no BLAS, no numpy broadcasting), bit-exact, both roundings, on
  hypothesis-drawn shapes, zero points, multipliers and clamps, with ties and saturation drawn
  on purpose and counted;
- accumulators within 2^20 of 2^31 - 1 stay exact, one past it raises naming the op;
- onnxruntime's and onnx.reference's QLinearConv / QLinearMatMul fed the same quantized
  problem: at most one step apart, the mismatch rate printed. onnxruntime has no QLinearConv
  nor QLinearMatMul for int8 x with uint8 weights (NOT_IMPLEMENTED); those pairs are only
  checked against onnx.reference;
- the ops in graphs: inference, refusals naming the node, text round trip, the numpy backend
  and its standalone export bit-exact with the kernels.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import onnx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from op_check import infer, ir_attrs, refuse
from ort_helpers import onnx_type, session

import qcompiler as qc
from qcompiler import ops
from qcompiler.errors import ShapeInferenceError, UnsupportedModelError
from qcompiler.types import DType, TensorType

I8, U8 = np.int8, np.uint8
INT32_MAX = 2**31 - 1

# ---------------------------------------------------------------------------------------------
# The oracle: the contract's formulas with Python ints, one output at a time.


def rescale_oracle(terms: list[int], multipliers: list[float], rounding: str) -> tuple[int, bool]:
    """R(sum_i v_i * M_i) as the contract defines it, and whether the value was a tie.

    fixed_point: t from the largest multiplier (frexp; an M0 that rounds to 2^31 gives t - 1;
    t > 62 flushes everything to 0), M0_i = round_half_even(M_i * 2^t), then
    floor((sum v_i * M0_i + 2^(t-1)) / 2^t). float: float32 products summed in float32 in
    order, rounded half to even."""
    if rounding == "float":
        total = np.float32(0)
        for k, (v, m) in enumerate(zip(terms, multipliers)):
            part = np.float32(np.float32(v) * np.float32(m))
            total = part if k == 0 else np.float32(total + part)
        return int(np.rint(total)), float(total) % 1 == 0.5
    top = max(multipliers)
    if top == 0:
        return 0, False
    frac, exp = math.frexp(top)
    shift = 31 - exp - (round(frac * 2**31) == 2**31)
    if shift > 62:
        return 0, False
    total = sum(v * round(m * 2.0**shift) for v, m in zip(terms, multipliers))
    return (total + 2 ** (shift - 1)) >> shift, total % 2**shift == 2 ** (shift - 1)


def clamp_oracle(value: int, zero_point: int, qmin: int, qmax: int) -> tuple[int, bool]:
    y = value + zero_point
    return min(max(y, qmin), qmax), not qmin <= y <= qmax


def conv_geometry(spatial, kernel, strides, dilations, pads, auto_pad):
    """Padding before each axis and output sizes, from the ONNX Conv spec."""
    rank = len(spatial)
    begin, out = [], []
    for i in range(rank):
        span = (kernel[i] - 1) * dilations[i] + 1
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            o = -(-spatial[i] // strides[i])
            total = max(0, (o - 1) * strides[i] + span - spatial[i])
            b = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
        else:
            b, e = (0, 0) if auto_pad == "VALID" else (pads[i], pads[rank + i])
            o = (spatial[i] + b + e - span) // strides[i] + 1
        begin.append(b)
        out.append(o)
    return begin, out


@dataclass
class Stats:
    """What the drawn cases exercised, counted over a whole property test."""

    counts: Counter = field(default_factory=Counter)

    def add(self, tie: bool, saturated: bool) -> None:
        self.counts["outputs"] += 1
        self.counts["ties"] += tie
        self.counts["saturated"] += saturated


def conv_oracle(case: dict, rounding: str, stats: Stats | None = None) -> np.ndarray:
    x, w = case["x"], case["w"]
    a = case["attrs"]
    n, c, *spatial = x.shape
    m, cg, *kernel = w.shape
    group = a["group"]
    mg = m // group
    begin, out = conv_geometry(spatial, kernel, a["strides"], a["dilations"], a["pads"],
                               a["auto_pad"])
    xzp, yzp = int(case["x_zero_point"]), int(case["y_zero_point"])
    qmin, qmax = case["range"]
    y = np.zeros((n, m, *out), case["y_zero_point"].dtype)
    for b, co in itertools.product(range(n), range(m)):
        g = co // mg
        for p in np.ndindex(*out):
            sum_xw = sum_x = 0
            for ci in range(cg):
                for tap in np.ndindex(*kernel):
                    pos = [p[i] * a["strides"][i] - begin[i] + tap[i] * a["dilations"][i]
                           for i in range(len(spatial))]
                    inside = all(0 <= q < s for q, s in zip(pos, spatial))
                    xv = int(x[(b, g * cg + ci, *pos)]) if inside else xzp
                    sum_xw += xv * int(w[(co, ci, *tap)])
                    sum_x += xv
            acc = _channel(case["bias"], co) + sum_xw - _channel(case["w_zero_point"], co) * sum_x
            assert -(2**31) <= acc <= INT32_MAX
            terms, mults = [acc], [float(_channel(case["multiplier"], co))]
            if case["z"] is not None:
                terms.append(int(case["z"][(b, co, *p)]) - int(case["z_zero_point"]))
                mults.append(float(case["z_multiplier"]))
            value, tie = rescale_oracle(terms, mults, rounding)
            y[(b, co, *p)], saturated = clamp_oracle(value, yzp, qmin, qmax)
            if stats:
                stats.add(tie, saturated)
    return y


def _channel(param: np.ndarray | None, c: int) -> int | float:
    if param is None:
        return 0
    return param.item() if param.ndim == 0 else param[c].item()


def matmul_oracle(case: dict, rounding: str, stats: Stats | None = None) -> np.ndarray:
    a, b = case["a"], case["b"]
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
    rows, depth, cols = a2.shape[-2], a2.shape[-1], b2.shape[-1]
    azp = _channel(case["a_zero_point"], 0)
    yzp = int(case["y_zero_point"])
    qmin, qmax = case["range"]
    y = np.zeros((*batch, rows, cols), case["y_zero_point"].dtype)
    for idx in np.ndindex(*batch):
        ai = tuple(i if d > 1 else 0 for i, d in zip(idx[len(idx) - a2.ndim + 2:], a2.shape))
        bi = tuple(i if d > 1 else 0 for i, d in zip(idx[len(idx) - b2.ndim + 2:], b2.shape))
        for r, col in itertools.product(range(rows), range(cols)):
            sum_ab = sum(int(a2[(*ai, r, k)]) * int(b2[(*bi, k, col)]) for k in range(depth))
            sum_a = sum(int(a2[(*ai, r, k)]) for k in range(depth))
            sum_b = sum(int(b2[(*bi, k, col)]) for k in range(depth))
            acc = (_channel(case["bias"], col) + sum_ab
                   - _channel(case["b_zero_point"], col) * sum_a - azp * sum_b)
            assert -(2**31) <= acc <= INT32_MAX
            value, tie = rescale_oracle([acc], [float(_channel(case["multiplier"], col))],
                                        rounding)
            y[(*idx, r, col)], saturated = clamp_oracle(value, yzp, qmin, qmax)
            if stats:
                stats.add(tie, saturated)
    if b.ndim == 1:
        y = y[..., 0]
    if a.ndim == 1:
        y = y[..., 0, :] if b.ndim > 1 else y[..., 0]
    return y


# ---------------------------------------------------------------------------------------------
# Strategies. Data comes from a numpy generator seeded by hypothesis; the parameters that steer
# the numerics (zero points at the limits, multipliers with ties, M > 1, tiny M, clamps) are
# drawn by hypothesis itself.

# multipliers that make ties (few significant bits), typical ones, M > 1, tiny (< 2^-32)
MULTIPLIERS = st.one_of(
    st.builds(lambda k, odd: odd * 2.0**-k, st.integers(1, 9), st.sampled_from([1, 3, 5])),
    st.floats(1e-4, 5e-2),
    st.sampled_from([1.0, 1.5, 3.0, 17.25]),
    st.sampled_from([1e-10, 2.0**-33, 3e-11]),
)


DATA = ["uniform", "extremes", "small"]


def codes(rng: np.random.Generator, dtype, shape, data: str = "uniform") -> np.ndarray:
    """Random codes of ``dtype``: uniform, mostly the dtype's limits (``"extremes"``: large
    accumulators, saturation) or a few codes near 0 (``"small"``: accumulators small enough
    for the dyadic multipliers to land on ties without saturating)."""
    info = np.iinfo(dtype)
    if data == "small":
        return rng.integers(0 if dtype is U8 else -3, 6 if dtype is U8 else 3, shape,
                            endpoint=True).astype(dtype)
    values = rng.integers(info.min, info.max, shape, endpoint=True)
    if data == "extremes":
        limits = rng.choice([info.min, info.max], shape)
        values = np.where(rng.random(shape) < 0.8, limits, values)
    return values.astype(dtype)


def zero_point(draw, dtype) -> np.ndarray:
    info = np.iinfo(dtype)
    special = [info.min, info.max, 0 if dtype is I8 else 128]
    value = draw(st.one_of(st.sampled_from(special), st.integers(info.min, info.max)))
    return np.array(value, dtype)


def multipliers(draw, channels: int, per_channel: bool) -> np.ndarray:
    if not per_channel:
        return np.array(draw(MULTIPLIERS), np.float64)
    return np.array([draw(MULTIPLIERS) for _ in range(channels)], np.float64)


def fitted(multiplier: np.ndarray, data: str, depth: int) -> np.ndarray:
    """Multipliers below 1 scaled by a power of two (ties stay ties) so that sums of ``depth``
    products of full-range codes mostly land inside the 8-bit range; small codes keep them,
    and so does M >= 1 (it saturates full-range sums: its exact cases come with small codes)."""
    if data == "small":
        return multiplier
    return np.where(multiplier >= 1, multiplier, multiplier * 2.0 ** -round(math.log2(depth * 64)))


def output_range(draw, dtype, y_zp: np.ndarray) -> tuple[int | None, int | None]:
    """None (the dtype's limits), a fused Relu (qmin = y_zero_point) or a drawn clamp."""
    info = np.iinfo(dtype)
    kind = draw(st.sampled_from(["full", "relu", "clip"]))
    if kind == "full":
        return None, None
    if kind == "relu":
        return int(y_zp), None
    return (draw(st.integers(info.min, int(y_zp))),  # a Clip's bounds around real 0
            draw(st.integers(int(y_zp), info.max)))


def _qrange(qmin, qmax, dtype) -> tuple[int, int]:
    info = np.iinfo(dtype)
    return (info.min if qmin is None else qmin, info.max if qmax is None else qmax)


@st.composite
def conv_cases(draw) -> dict:
    rank = draw(st.sampled_from([1, 2, 2, 3]))
    layout = draw(st.sampled_from(["plain", "grouped", "depthwise"]))
    if layout == "depthwise":
        c = draw(st.integers(1, 4))
        group, cg, mg = c, 1, draw(st.integers(1, 2))
    else:
        group = 1 if layout == "plain" else draw(st.integers(2, 3))
        cg, mg = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        c = cg * group
    m = mg * group
    sizes = [1, 3] if rank == 3 else [1, 3, 5]
    kernel = [draw(st.sampled_from(sizes)) for _ in range(rank)]
    strides = [draw(st.integers(1, 3)) for _ in range(rank)]
    dilations = [draw(st.integers(1, 2)) for _ in range(rank)]
    auto_pad = draw(st.sampled_from(["NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]))
    pads = [draw(st.integers(0, 2)) for _ in range(2 * rank)]
    spatial = []
    for i in range(rank):
        span = (kernel[i] - 1) * dilations[i] + 1
        need = span if auto_pad == "VALID" else 1
        if auto_pad == "NOTSET":
            need = max(1, span - pads[i] - pads[rank + i])
        spatial.append(draw(st.integers(need, need + (2 if rank == 3 else 5))))
    n = draw(st.integers(1, 2))
    x_dtype, w_dtype, y_dtype = (draw(st.sampled_from([I8, U8])) for _ in range(3))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    data = draw(st.sampled_from(DATA))
    y_zp = zero_point(draw, y_dtype)
    qmin, qmax = output_range(draw, y_dtype, y_zp)
    case = {
        "x": codes(rng, x_dtype, (n, c, *spatial), data),
        "w": codes(rng, w_dtype, (m, cg, *kernel), data),
        "multiplier": fitted(multipliers(draw, m, draw(st.booleans())), data,
                             cg * math.prod(kernel)),
        "x_zero_point": zero_point(draw, x_dtype),
        "y_zero_point": y_zp,
        "bias": draw(st.sampled_from([None, "small", "large"])),
        "w_zero_point": draw(st.sampled_from([None, "scalar", "per channel"])),
        "z": None, "z_zero_point": None, "z_multiplier": None,
        "attrs": {"auto_pad": auto_pad, "dilations": dilations, "group": group,
                  "kernel_shape": kernel, "pads": pads if auto_pad == "NOTSET" else [],
                  "strides": strides, "qmin": qmin, "qmax": qmax},
        "range": _qrange(qmin, qmax, y_dtype),
    }
    if case["bias"] is not None:
        limit = 2**12 if case["bias"] == "small" else 2**26
        case["bias"] = rng.integers(-limit, limit, m).astype(np.int32)
    if case["w_zero_point"] == "scalar":
        case["w_zero_point"] = zero_point(draw, w_dtype)
    elif case["w_zero_point"] is not None:
        case["w_zero_point"] = np.array([zero_point(draw, w_dtype) for _ in range(m)], w_dtype)
    if draw(st.booleans()):
        _, out = conv_geometry(spatial, kernel, strides, dilations, pads, auto_pad)
        z_dtype = draw(st.sampled_from([I8, U8]))
        case.update(z=codes(rng, z_dtype, (n, m, *out), data),
                    z_zero_point=zero_point(draw, z_dtype),
                    z_multiplier=np.array(draw(MULTIPLIERS), np.float64))
    return case


CONV_INPUTS = ["x", "w", "multiplier", "x_zero_point", "y_zero_point", "bias", "w_zero_point",
               "z", "z_zero_point", "z_multiplier"]
MATMUL_INPUTS = ["a", "b", "multiplier", "y_zero_point", "bias", "a_zero_point", "b_zero_point"]


@st.composite
def matmul_cases(draw) -> dict:
    depth = draw(st.integers(1, 24))
    rows, cols = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    batch = [draw(st.sampled_from([1, 2, 3])) for _ in range(draw(st.integers(0, 2)))]
    a_shape = [*batch[draw(st.integers(0, len(batch))):], rows, depth]
    b_shape = [*(draw(st.sampled_from([1, d])) for d in batch), depth, cols]
    if draw(st.integers(0, 5)) == 0:
        a_shape = [depth]
    if draw(st.integers(0, 5)) == 0:
        b_shape = [depth]
    columns = b_shape[-1] if len(b_shape) > 1 else 1
    a_dtype, b_dtype, y_dtype = (draw(st.sampled_from([I8, U8])) for _ in range(3))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    data = draw(st.sampled_from(DATA))
    y_zp = zero_point(draw, y_dtype)
    qmin, qmax = output_range(draw, y_dtype, y_zp)
    per_column = draw(st.booleans())
    case = {
        "a": codes(rng, a_dtype, a_shape, data),
        "b": codes(rng, b_dtype, b_shape, data),
        "multiplier": fitted(multipliers(draw, columns, per_column), data, depth),
        "y_zero_point": y_zp,
        "bias": draw(st.sampled_from([None, rng.integers(-2**12, 2**12, columns, np.int32),
                                      np.array(rng.integers(-2**12, 2**12), np.int32)])),
        "a_zero_point": draw(st.sampled_from([None, zero_point(draw, a_dtype)])),
        "b_zero_point": draw(st.sampled_from([
            None, zero_point(draw, b_dtype),
            np.array([zero_point(draw, b_dtype) for _ in range(columns)], b_dtype)])),
        "attrs": {"qmin": qmin, "qmax": qmax},
        "range": _qrange(qmin, qmax, y_dtype),
    }
    return case


def run_kernel(op_type: str, case: dict, names: list[str], rounding: str) -> np.ndarray:
    opdef = ops.get(op_type)
    attrs = opdef.full_attrs(ir_attrs({**case["attrs"], "rounding": rounding}))
    return opdef.kernel(*(case[k] for k in names), **attrs)


def inferred(op_type: str, case: dict, names: list[str]) -> TensorType:
    """The output type the IR infers, the data inputs as graph inputs, the rest constants."""
    inputs = [case[k] for k in names]
    while inputs[-1] is None:
        inputs.pop()
    data = {0, 1, 7} if op_type == "IntConv" else {0, 1}
    constants = [i for i in range(len(inputs)) if i not in data]
    return infer(op_type, inputs, case["attrs"], constant_inputs=constants)[0]


def check_against_oracle(op_type, case, names, oracle, stats: dict[str, Stats]) -> None:
    for rounding in ("fixed_point", "float"):
        got = run_kernel(op_type, case, names, rounding)
        want = oracle(case, rounding, stats[rounding])
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want, err_msg=rounding)
    t = inferred(op_type, case, names)
    assert t.dtype.np == got.dtype and t.shape == got.shape


def assert_exercised(stats: dict[str, Stats]) -> None:
    """Both roundings met exact ties, saturated outputs and outputs within the clamp."""
    for rounding, s in stats.items():
        print(f"{rounding}: {dict(s.counts)}")
        assert s.counts["ties"] > 0 and s.counts["saturated"] > 0, rounding
        assert s.counts["outputs"] - s.counts["saturated"] >= 100, rounding  # and in range


def test_int_conv_is_bit_exact_with_the_loop_oracle():
    stats = {"fixed_point": Stats(), "float": Stats()}
    layouts = Counter()

    @given(conv_cases())
    def check(case):
        a = case["attrs"]
        layouts["depthwise" if a["group"] == case["x"].shape[1] > 1 else
                "grouped" if a["group"] > 1 else "plain"] += 1
        layouts["residual"] += case["z"] is not None
        layouts["M > 1"] += bool(np.any(case["multiplier"] > 1))
        layouts["tiny M"] += bool(np.any(case["multiplier"] < 2.0**-32))
        check_against_oracle("IntConv", case, CONV_INPUTS, conv_oracle, stats)

    check()
    print(dict(layouts))
    assert all(layouts[k] for k in ("depthwise", "grouped", "plain", "residual", "M > 1",
                                    "tiny M"))
    assert_exercised(stats)


def test_int_matmul_is_bit_exact_with_the_loop_oracle():
    stats = {"fixed_point": Stats(), "float": Stats()}
    kinds = Counter()

    @given(matmul_cases())
    def check(case):
        kinds["batched"] += case["a"].ndim > 2 or case["b"].ndim > 2
        kinds["1-D"] += case["a"].ndim == 1 or case["b"].ndim == 1
        kinds["both zero points"] += (case["a_zero_point"] is not None
                                      and case["b_zero_point"] is not None)
        check_against_oracle("IntMatMul", case, MATMUL_INPUTS, matmul_oracle, stats)

    check()
    print(dict(kinds))
    assert all(kinds.values()) and len(kinds) == 3
    assert_exercised(stats)


def conv_case(x, w, attrs: dict, **params) -> dict:
    """An IntConv case: the operands not given are absent (zero points 0 of x's dtype)."""
    m = w.shape[0]
    case = {"x": x, "w": w, "multiplier": np.full(m, 2.0**-10),
            "x_zero_point": np.array(0, x.dtype), "y_zero_point": np.array(0, I8),
            "bias": None, "w_zero_point": None, "z": None, "z_zero_point": None,
            "z_multiplier": None}
    case.update(params)
    rank = x.ndim - 2
    full = {"group": 1, "pads": [0] * 2 * rank, "strides": [1] * rank, "dilations": [1] * rank,
            "kernel_shape": list(w.shape[2:]), "auto_pad": "NOTSET", "qmin": None,
            "qmax": None}
    full.update(attrs)
    case["attrs"] = full
    case["range"] = _qrange(full["qmin"], full["qmax"], case["y_zero_point"].dtype)
    return case


@pytest.mark.parametrize("block", [1, 40, 700])
def test_blocks_of_images_and_of_rows_give_the_exact_result(block, monkeypatch):
    """The im2col runs in blocks of images, or of output rows of one image, of at most
    ``int_nn._BLOCK`` values; a tiny bound splits these small cases every way."""
    from qcompiler.ops import int_nn

    monkeypatch.setattr(int_nn, "_BLOCK", block)
    rng = np.random.default_rng(block)
    for n, spatial, kernel, strides, group in [(3, (7, 6), (3, 3), (2, 1), 1),
                                                (2, (9,), (3,), (1,), 2),
                                                (2, (4, 5, 3), (3, 1, 3), (1, 2, 1), 1)]:
        rank = len(spatial)
        x = codes(rng, U8, (n, 2 * group, *spatial))
        w = codes(rng, I8, (3 * group, 2, *kernel))
        attrs = {"group": group, "strides": list(strides), "pads": [1] * rank + [0] * rank}
        _, out = conv_geometry(spatial, kernel, strides, [1] * rank, attrs["pads"], "NOTSET")
        case = conv_case(x, w, attrs, x_zero_point=np.array(77, U8),
                         bias=rng.integers(-999, 999, 3 * group).astype(np.int32),
                         z=codes(rng, I8, (n, 3 * group, *out)),
                         z_zero_point=np.array(-9, I8), z_multiplier=np.array(0.75))
        for rounding in ("fixed_point", "float"):
            np.testing.assert_array_equal(run_kernel("IntConv", case, CONV_INPUTS, rounding),
                                          conv_oracle(case, rounding))


def test_the_oracle_rounds_ties_as_the_contract_says():
    """The oracle itself on hand-computed values: fixed point rounds half toward +inf, float
    half to even; M0 rounding to 2^31 shifts one less; M < 2^-32 flushes."""
    assert rescale_oracle([-3], [0.5], "fixed_point") == (-1, True)
    assert rescale_oracle([3], [0.5], "fixed_point") == (2, True)
    assert rescale_oracle([-3], [0.5], "float") == (-2, True)
    assert rescale_oracle([5], [0.5], "float") == (2, True)
    assert rescale_oracle([3, -2], [0.5, 0.5], "fixed_point") == (1, True)  # 1.5 - 1 = 0.5
    assert rescale_oracle([2**30], [1 - 2.0**-40], "fixed_point") == (2**30, False)
    assert rescale_oracle([2**31 - 1], [2.0**-33], "fixed_point") == (0, False)


# ---------------------------------------------------------------------------------------------
# Accumulators near the int32 limit.

NEAR = 33025  # 33025 * 255 * 255 = 2^31 - 1 - 33022: the largest all-255 uint8 dot product


def _near_limit_matmul(depth: int, bias: int | None = None):
    rng = np.random.default_rng(depth)
    a = np.full((2, depth), 255, U8)
    b = np.full((depth, 3), 255, U8)
    a[1, rng.integers(0, depth, 50)] = rng.integers(0, 255, 50)  # an inexact float32 sum
    case = {"a": a, "b": b, "multiplier": np.array([2.0**-24, 3e-9, 1e-7]),
            "y_zero_point": np.array(-5, I8),
            "bias": None if bias is None else np.array(bias, np.int32),
            "a_zero_point": None, "b_zero_point": None, "attrs": {"qmin": None, "qmax": None},
            "range": (-128, 127)}
    return case


@pytest.mark.parametrize("rounding", ["fixed_point", "float"])
def test_an_accumulator_within_2_20_of_the_int32_limit_stays_exact(rounding):
    case = _near_limit_matmul(NEAR)
    top = NEAR * 255 * 255
    assert INT32_MAX - 2**20 < top <= INT32_MAX
    got = run_kernel("IntMatMul", case, MATMUL_INPUTS, rounding)
    np.testing.assert_array_equal(got, matmul_oracle(case, rounding))
    # and a bias that brings a small product to the limit
    small = _near_limit_matmul(4, bias=INT32_MAX - 4 * 255 * 255)
    got = run_kernel("IntMatMul", small, MATMUL_INPUTS, rounding)
    np.testing.assert_array_equal(got, matmul_oracle(small, rounding))
    # the conv of 1321 channels of 5x5 all-255 windows: the same 33025-term sum
    x = np.full((1, 1321, 5, 5), 255, U8)
    w = np.full((2, 1321, 5, 5), 255, U8)
    w[1, :3] = 0
    conv = conv_case(x, w, {}, multiplier=np.array(2.0**-24), bias=np.array([0, 7], np.int32))
    np.testing.assert_array_equal(run_kernel("IntConv", conv, CONV_INPUTS, rounding),
                                  conv_oracle(conv, rounding))


@pytest.mark.parametrize("depth", [1032, 1033])
def test_sums_at_the_float32_limit_stay_exact(depth):
    """128 * 127 * K is just below 2^24 for K = 1032 (the sums may run in float32) and above
    it for K = 1033 (float64): both exact, with mixed signs so that partial sums vary."""
    rng = np.random.default_rng(depth)
    a = np.full((3, depth), -128, I8)
    b = np.full((depth, 2), -127, I8)
    a[1] = rng.choice([-128, 127], depth)
    b[:, 1] = rng.choice([-127, 127], depth)
    case = {"a": a, "b": b, "multiplier": np.array([2.0**-17, 1e-5]),
            "y_zero_point": np.array(0, I8), "bias": np.array([0, -3], np.int32),
            "a_zero_point": None, "b_zero_point": None, "attrs": {"qmin": None, "qmax": None},
            "range": (-128, 127)}
    for rounding in ("fixed_point", "float"):
        np.testing.assert_array_equal(run_kernel("IntMatMul", case, MATMUL_INPUTS, rounding),
                                      matmul_oracle(case, rounding))


def test_an_accumulator_past_the_int32_limit_raises_naming_the_op():
    with pytest.raises(ValueError, match=r"IntMatMul: the int32 accumulator overflows .*"
                                         r"2147515650"):
        run_kernel("IntMatMul", _near_limit_matmul(NEAR + 1), MATMUL_INPUTS, "fixed_point")
    with pytest.raises(ValueError, match=r"IntMatMul: the int32 accumulator overflows"):
        run_kernel("IntMatMul", _near_limit_matmul(4, bias=INT32_MAX - 4 * 255 * 255 + 1),
                   MATMUL_INPUTS, "fixed_point")
    # negative side: a zero point term pushing below -2^31
    low = _near_limit_matmul(NEAR)
    low.update(a_zero_point=np.array(255, U8), bias=np.array(-(2**31) + 1, np.int32))
    with pytest.raises(ValueError, match=r"IntMatMul: the int32 accumulator overflows"):
        run_kernel("IntMatMul", low, MATMUL_INPUTS, "fixed_point")
    g = _conv_graph(np.full((1, 1322, 5, 5), 255, U8), np.full((1, 1322, 5, 5), 255, U8))
    with pytest.raises(qc.ExecutionError, match=r"IntConv node 'conv'.*IntConv: the int32 "
                                                r"accumulator overflows"):
        qc.compile(g).run({"x": np.full((1, 1322, 5, 5), 255, U8)})


def _conv_graph(x: np.ndarray, w: np.ndarray) -> qc.Graph:
    g = qc.Graph("overflow")
    xv = g.add_input("x", TensorType(DType.from_numpy(x.dtype), x.shape))
    consts = [g.add_constant(v, k) for v, k in [
        (w, "w"), (np.array(2.0**-24), "m"), (np.array(0, x.dtype), "xzp"),
        (np.array(0, I8), "yzp")]]
    g.set_outputs(g.add_node("IntConv", [xv, *consts], name="conv").outputs)
    return g


# ---------------------------------------------------------------------------------------------
# Cross-checks against onnxruntime and onnx.reference (QLinearConv, QLinearMatMul).


@dataclass
class Mismatch:
    differ: int = 0
    total: int = 0

    saturated: int = 0

    def add(self, ours: np.ndarray, theirs: np.ndarray) -> None:
        apart = np.abs(ours.astype(np.int64) - theirs.astype(np.int64))
        assert apart.max(initial=0) <= 1, f"{apart.max()} steps apart"
        self.differ += int(np.count_nonzero(apart))
        self.total += apart.size
        info = np.iinfo(ours.dtype)
        self.saturated += int(np.count_nonzero((theirs == info.min) | (theirs == info.max)))


def _scales(draw, channels: int | None) -> np.ndarray:
    # dyadic scales make exact ties, where the two roundings part
    scale = st.one_of(st.floats(1e-3, 0.1), st.sampled_from([2.0**-2, 2.0**-3, 2.0**-4]))
    scale = scale.map(np.float32)
    if channels is None:
        return np.array(draw(scale), np.float32)
    return np.array([draw(scale) for _ in range(channels)], np.float32)


def _peers(model: onnx.ModelProto, feeds: dict, ort_ok: bool,
           reference_ok: bool = True) -> dict[str, np.ndarray]:
    out = {}
    if reference_ok:
        out["onnx.reference"] = ReferenceEvaluator(model).run(None, feeds)[0]
    if ort_ok:
        out["onnxruntime"] = session(model).run(None, feeds)[0]
    return out


def _qlinear_model(op_type: str, inputs: list[np.ndarray], attrs: dict) -> onnx.ModelProto:
    names = [f"in{i}" for i in range(len(inputs))]
    graph = helper.make_graph(
        [helper.make_node(op_type, names, ["y"], **attrs)], "g",
        [helper.make_tensor_value_info("in0", onnx_type(inputs[0].dtype), inputs[0].shape)],
        [helper.ValueInfoProto(name="y")],
        initializer=[numpy_helper.from_array(v, k) for k, v in zip(names[1:], inputs[1:])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    return model


def output_scale(draw, in_scale: np.ndarray, w_scale: np.ndarray, depth: int) -> np.float32:
    """An output scale that keeps most outputs of a K-term product of random codes inside
    the 8-bit range: ``s_in * s_w * 2^round(8 + 0.6 log2(K))``, times 1 (dyadic inputs then
    give exact ties) or a factor that is not a power of two."""
    factor = draw(st.sampled_from([1.0, 1.0, 1.37, 0.61]))
    power = 2.0 ** round(8 + 0.6 * math.log2(depth))
    return np.float32(float(in_scale) * float(np.max(w_scale)) * power * factor)


def middle_zero_point(draw, dtype) -> np.ndarray:
    """An output zero point near the middle of the range, so that most outputs are not clamped."""
    middle = 0 if dtype is I8 else 128
    return np.array(middle + draw(st.integers(-30, 30)), dtype)


def peer_weights(rng: np.random.Generator, x_dtype, w_dtype, shape) -> np.ndarray:
    """Weights for the peer cross-checks. onnxruntime multiplies uint8 x by int8 weights with
    int16 pair sums that saturate (x86 ``vpmaddubsw`` without VNNI, see
    ``test_onnxruntime_saturates_uint8_times_int8_pairs``): there the weights stay within
    [-64, 63], where no pair can saturate; elsewhere they span the full range."""
    if x_dtype is U8 and w_dtype is I8:
        return rng.integers(-64, 63, shape, endpoint=True).astype(I8)
    return codes(rng, w_dtype, shape)


def fold_conv_bias(bias, w, x_zp, w_zp) -> np.ndarray:
    """QLinearConv's bias for IntConv: ``bias - x_zp * sum_k w[c,k] + K * x_zp * w_zp[c]``
    over each output channel's whole kernel (K = C/group * prod(kernel)); IntConv pads with
    x_zp and subtracts its own ``w_zp * sum_k x_pad`` term."""
    m = w.shape[0]
    w_sums = w.reshape(m, -1).astype(np.int64).sum(axis=1)
    depth = w[0].size
    folded = bias.astype(np.int64) - int(x_zp) * w_sums + depth * int(x_zp) * np.broadcast_to(
        w_zp.astype(np.int64), (m,))
    return folded.astype(np.int32)


@st.composite
def qlinear_conv_cases(draw):
    x_dtype = draw(st.sampled_from([I8, U8]))
    w_dtype = draw(st.sampled_from([I8, U8]))
    group = draw(st.sampled_from([1, 1, 2, "depthwise"]))
    c = draw(st.integers(1, 4)) * (2 if group == 2 else 1)
    group = c if group == "depthwise" else group
    m = group * draw(st.integers(1, 4))
    rank = draw(st.sampled_from([1, 2, 2]))
    kernel = [draw(st.sampled_from([1, 3, 5])) for _ in range(rank)]
    spatial = [draw(st.integers(k, k + 14)) for k in kernel]
    attrs = {"group": group, "kernel_shape": kernel,
             "strides": [draw(st.integers(1, 2)) for _ in range(rank)],
             "pads": [draw(st.integers(0, 2)) for _ in range(2 * rank)]}
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    per_channel = draw(st.booleans())
    x = codes(rng, x_dtype, (draw(st.integers(1, 2)), c, *spatial))
    w = peer_weights(rng, x_dtype, w_dtype, (m, c // group, *kernel))
    w_zp = (np.array([zero_point(draw, w_dtype) for _ in range(m)], w_dtype) if per_channel
            else zero_point(draw, w_dtype))
    x_scale, w_scale = _scales(draw, None), _scales(draw, m if per_channel else None)
    params = {"x_scale": x_scale, "x_zp": zero_point(draw, x_dtype),
              "w_scale": w_scale, "w_zp": w_zp,
              "y_scale": output_scale(draw, x_scale, w_scale, w[0].size),
              "y_zp": middle_zero_point(draw, x_dtype),
              "bias": rng.integers(-2000, 2000, m).astype(np.int32)}
    return x, w, attrs, params


def test_int_conv_agrees_with_qlinear_conv_within_one_step():
    tallies = {(peer, r): Mismatch() for peer in ("onnxruntime", "onnx.reference")
               for r in ("fixed_point", "float")}
    refused = Counter()

    @given(qlinear_conv_cases())
    def check(case):
        x, w, attrs, p = case
        ort_ok = not (x.dtype == I8 and w.dtype == U8)
        refused["onnxruntime (int8 x, uint8 w)"] += not ort_ok
        # onnx.reference reshapes a per-channel w_scale to 4-D: 2-D convolutions only
        reference_ok = p["w_scale"].ndim == 0 or x.ndim == 4
        refused["onnx.reference (per-channel w_scale, 1-D conv)"] += not reference_ok
        model = _qlinear_model("QLinearConv", [
            x, p["x_scale"], p["x_zp"], w, p["w_scale"], p["w_zp"], p["y_scale"], p["y_zp"],
            p["bias"]], attrs)
        peers = _peers(model, {"in0": x}, ort_ok, reference_ok)
        multiplier = (p["x_scale"].astype(np.float64) * p["w_scale"].astype(np.float64)
                      / np.float64(p["y_scale"]))
        case = {"x": x, "w": w, "multiplier": multiplier, "x_zero_point": p["x_zp"],
                "y_zero_point": p["y_zp"], "w_zero_point": p["w_zp"],
                "bias": fold_conv_bias(p["bias"], w, p["x_zp"], p["w_zp"]), "z": None,
                "z_zero_point": None, "z_multiplier": None,
                "attrs": {**attrs, "auto_pad": "NOTSET", "dilations": [], "qmin": None,
                          "qmax": None}}
        tally_against_peers("IntConv", case, CONV_INPUTS, peers, tallies)

    check()
    report_tallies("IntConv", "QLinearConv", tallies)
    print(f"refused: {dict(refused)}")


def tally_against_peers(op_type: str, case: dict, names: list, peers: dict,
                        tallies: dict) -> None:
    """Our op in both roundings against each peer's output: counted in ``tallies``."""
    for rounding in ("fixed_point", "float"):
        ours = run_kernel(op_type, case, names, rounding)
        for peer, theirs in peers.items():
            assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
            tallies[peer, rounding].add(ours, theirs)


def report_tallies(op_type: str, peer_op: str, tallies: dict) -> None:
    """Print each mismatch rate; at least 1000 outputs must have been compared inside the
    output range (not clamped) per peer and rounding."""
    for (peer, rounding), t in tallies.items():
        print(f"{op_type} vs {peer} {peer_op} ({rounding}): {t.differ}/{t.total} outputs "
              f"differ by 1 ({t.saturated} at a limit)")
        assert t.total - t.saturated >= 1000  # outputs compared within the range


@st.composite
def qlinear_matmul_cases(draw):
    a_dtype = draw(st.sampled_from([I8, U8]))
    b_dtype = draw(st.sampled_from([I8, U8]))
    depth, rows, cols = (draw(st.integers(1, 40)), draw(st.integers(1, 40)),
                         draw(st.integers(1, 16)))
    batch = [draw(st.integers(1, 3))] if draw(st.booleans()) else []
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    per_column = draw(st.booleans())
    a = codes(rng, a_dtype, (*batch, rows, depth))
    b = peer_weights(rng, a_dtype, b_dtype, (depth, cols))
    b_zp = (np.array([zero_point(draw, b_dtype) for _ in range(cols)], b_dtype) if per_column
            else zero_point(draw, b_dtype))
    a_scale, b_scale = _scales(draw, None), _scales(draw, cols if per_column else None)
    params = {"a_scale": a_scale, "a_zp": zero_point(draw, a_dtype),
              "b_scale": b_scale, "b_zp": b_zp,
              "y_scale": output_scale(draw, a_scale, b_scale, depth),
              "y_zp": middle_zero_point(draw, a_dtype)}
    return a, b, params


def test_int_matmul_agrees_with_qlinear_matmul_within_one_step():
    """QLinearMatMul computes (a - a_zp) @ (b - b_zp): IntMatMul's formula lacks the
    ``K * a_zp * b_zp`` term, which goes into its bias (per column with per-column b_zp)."""
    tallies = {(peer, r): Mismatch() for peer in ("onnxruntime", "onnx.reference")
               for r in ("fixed_point", "float")}
    per_column = Counter()

    @given(qlinear_matmul_cases())
    def check(case):
        a, b, p = case
        ort_ok = not (a.dtype == I8 and b.dtype == U8)
        per_column[p["b_zp"].ndim] += 1
        model = _qlinear_model("QLinearMatMul", [
            a, p["a_scale"], p["a_zp"], b, p["b_scale"], p["b_zp"], p["y_scale"], p["y_zp"]],
            {})
        peers = _peers(model, {"in0": a}, ort_ok)
        depth = a.shape[-1]
        bias = depth * int(p["a_zp"]) * p["b_zp"].astype(np.int64)
        case = {"a": a, "b": b, "y_zero_point": p["y_zp"], "bias": bias.astype(np.int32),
                "multiplier": (p["a_scale"].astype(np.float64) * p["b_scale"].astype(np.float64)
                               / np.float64(p["y_scale"])),
                "a_zero_point": p["a_zp"], "b_zero_point": p["b_zp"],
                "attrs": {"qmin": None, "qmax": None}}
        tally_against_peers("IntMatMul", case, MATMUL_INPUTS, peers, tallies)

    check()
    report_tallies("IntMatMul", "QLinearMatMul", tallies)
    assert per_column[0] and per_column[1]


def test_fixed_point_and_onnxruntime_part_exactly_on_ties():
    """M = 1/2: every odd accumulator is a tie. Fixed point rounds it half up,
    onnxruntime half to even, so they differ by one exactly where floor(acc / 2) is even;
    the float rounding agrees with onnxruntime everywhere."""
    rng = np.random.default_rng(5)
    half, one = np.float32(0.5), np.float32(1.0)
    zero = np.array(0, I8)
    a = codes(rng, I8, (40, 7), "small")
    b = codes(rng, I8, (7, 6), "small")
    x = codes(rng, I8, (2, 3, 6, 6), "small")
    w = codes(rng, I8, (4, 3, 3, 3), "small")
    checks = [
        ("QLinearMatMul", [a, half, zero, b, one, zero, one, zero], {},
         "IntMatMul", MATMUL_INPUTS, {"a": a, "b": b, "bias": None, "a_zero_point": None,
                                      "b_zero_point": None, "attrs": {"qmin": None,
                                                                      "qmax": None}},
         a.astype(np.int64) @ b.astype(np.int64)),
        ("QLinearConv", [x, half, zero, w, one, zero, one, zero], {},
         "IntConv", CONV_INPUTS, conv_case(x, w, {}),
         ReferenceEvaluator(_qlinear_model("Conv", [x.astype(np.float32),
                                                    w.astype(np.float32)], {})).run(
             None, {"in0": x.astype(np.float32)})[0].astype(np.int64)),
    ]
    for peer_op, inputs, attrs, op_type, names, case, acc in checks:
        theirs = session(_qlinear_model(peer_op, inputs, attrs)).run(None, {"in0": inputs[0]})[0]
        case.update(multiplier=np.array(0.5), y_zero_point=zero)
        fixed = run_kernel(op_type, case, names, "fixed_point")
        floating = run_kernel(op_type, case, names, "float")
        ties = acc % 2 == 1
        part = ties & (np.floor_divide(acc, 2) % 2 == 0)
        np.testing.assert_array_equal(floating, theirs)
        np.testing.assert_array_equal(fixed.astype(np.int64) - theirs, part.astype(np.int64))
        assert 0 < part.sum() < ties.sum() and not np.any((theirs == -128) | (theirs == 127))
        print(f"{op_type} vs onnxruntime {peer_op} on ties: {part.sum()}/{part.size} outputs "
              f"differ by 1 ({ties.sum()} ties)")


def test_onnxruntime_saturates_uint8_times_int8_pairs():
    """uint8 x int8 products summed in int16 pairs: 183 * -123 + 254 * -91 = -45623 saturates
    to -32768 in onnxruntime on x86 without VNNI (DESIGN.md, "Numerics contract"). IntConv and
    IntMatMul stay exact, as onnx.reference does; onnxruntime's answer is printed."""
    f = np.float32
    x = np.array([183, 254], U8).reshape(1, 2, 1)
    w = np.array([-123, -91], I8).reshape(1, 2, 1)
    conv_inputs = [x, f(0.0625), np.array(0, U8), w, f(0.0625), np.array(-128, I8), f(1.0),
                   np.array(0, U8), np.array([-1102], np.int32)]
    a = np.array([[255, 255]], U8)
    b = np.array([[-128], [-128]], I8)
    mm_inputs = [a, f(1), np.array(0, U8), b, f(1), np.array(0, I8), f(1024), np.array(128, U8)]
    for op_type, inputs, attrs in [("QLinearConv", conv_inputs, {}),
                                   ("QLinearMatMul", mm_inputs, {})]:
        model = _qlinear_model(op_type, inputs, attrs)
        peers = _peers(model, {"in0": inputs[0]}, ort_ok=True)
        if op_type == "QLinearConv":
            case = conv_case(x, w, {}, multiplier=np.array(2.0**-8),
                             y_zero_point=inputs[7], w_zero_point=inputs[5],
                             bias=fold_conv_bias(inputs[8], w, 0, inputs[5]))
            ours, want = (run_kernel("IntConv", case, CONV_INPUTS, "float"),
                          conv_oracle(case, "float"))
        else:
            case = {"a": a, "b": b, "multiplier": np.array(2.0**-10), "y_zero_point": inputs[7],
                    "bias": None, "a_zero_point": None, "b_zero_point": None,
                    "attrs": {"qmin": None, "qmax": None}, "range": (0, 255)}
            ours, want = (run_kernel("IntMatMul", case, MATMUL_INPUTS, "float"),
                          matmul_oracle(case, "float"))
        np.testing.assert_array_equal(ours, want)
        np.testing.assert_array_equal(peers["onnx.reference"], want)
        print(f"{op_type} uint8 x int8: exact {want.ravel().tolist()}, onnxruntime "
              f"{peers['onnxruntime'].ravel().tolist()}")


# ---------------------------------------------------------------------------------------------
# The ops in graphs: inference, refusals, text, the numpy backend and its standalone export.


def _int_graph(rounding: str = "fixed_point") -> tuple[qc.Graph, dict]:
    """u8 image -> IntConv (grouped, strided, fused Relu clamp, residual-free) -> IntConv
    (depthwise with a fused residual) -> Flatten -> IntMatMul (per-column zero points)."""
    rng = np.random.default_rng(9)
    g = qc.Graph("int_nn")
    x = g.add_input("x", TensorType("u8", ("N", 4, 9, 9)))
    k = {
        "w1": codes(rng, I8, (6, 2, 3, 3)), "m1": np.linspace(1e-3, 4e-3, 6),
        "xzp": np.array(131, U8), "yzp1": np.array(-3, I8),
        "b1": rng.integers(-500, 500, 6).astype(np.int32), "wzp1": np.array(2, I8),
        "w2": codes(rng, I8, (6, 1, 3, 3)), "m2": np.array(0.01),
        "b2": rng.integers(-500, 500, 6).astype(np.int32), "zzp": np.array(-3, I8),
        "zm": np.array(0.5), "yzp2": np.array(4, I8),
        "b": codes(rng, I8, (150, 5)), "m3": np.full(5, 4e-4), "yzp3": np.array(0, I8),
        "bzp": np.arange(5).astype(I8), "azp": np.array(4, I8),
    }
    c = {name: g.add_constant(v, name) for name, v in k.items()}
    attrs = {"rounding": rounding}
    y1 = g.add_node("IntConv", [x, c["w1"], c["m1"], c["xzp"], c["yzp1"], c["b1"], c["wzp1"]],
                    {**attrs, "group": 2, "strides": [2, 2], "pads": [1, 1, 1, 1],
                     "qmin": -3}, name="conv1").outputs[0]
    y2 = g.add_node("IntConv", [y1, c["w2"], c["m2"], c["yzp1"], c["yzp2"], c["b2"], None, y1,
                                c["zzp"], c["zm"]],
                    {**attrs, "group": 6, "auto_pad": "SAME_UPPER"}, name="conv2").outputs[0]
    flat = g.add_node("Flatten", [y2], name="flat").outputs[0]
    y3 = g.add_node("IntMatMul", [flat, c["b"], c["m3"], c["yzp3"], None, c["azp"], c["bzp"]],
                    {**attrs, "qmin": -100, "qmax": 100}, name="fc").outputs[0]
    g.set_outputs([y3])
    return g, k


def _direct(k: dict, x: np.ndarray, rounding: str) -> np.ndarray:
    """The graph of ``_int_graph`` computed by calling the kernels directly."""
    conv, mm = ops.get("IntConv"), ops.get("IntMatMul")
    y1 = conv.kernel(x, k["w1"], k["m1"], k["xzp"], k["yzp1"], k["b1"], k["wzp1"],
                     **conv.full_attrs({"rounding": rounding, "group": 2, "strides": (2, 2),
                                        "pads": (1, 1, 1, 1), "qmin": -3}))
    y2 = conv.kernel(y1, k["w2"], k["m2"], k["yzp1"], k["yzp2"], k["b2"], None, y1, k["zzp"],
                     k["zm"], **conv.full_attrs({"rounding": rounding, "group": 6,
                                                 "auto_pad": "SAME_UPPER"}))
    return mm.kernel(y2.reshape(len(x), -1), k["b"], k["m3"], k["yzp3"], None, k["azp"],
                     k["bzp"], **mm.full_attrs({"rounding": rounding, "qmin": -100,
                                                "qmax": 100}))


@pytest.mark.parametrize("rounding", ["fixed_point", "float"])
def test_the_numpy_backend_and_its_standalone_export_run_the_integer_ops(rounding, tmp_path):
    from test_numpy_backend import run_standalone

    g, k = _int_graph(rounding)
    assert [v.type for v in g.outputs] == [TensorType("i8", ("N", 5))]
    x = codes(np.random.default_rng(1), U8, (3, 4, 9, 9))
    want = _direct(k, x, rounding)
    exe = qc.compile(g, backend="numpy")
    got = exe.run({"x": x})["fc"]
    np.testing.assert_array_equal(got, want)
    assert len(np.unique(want)) > 10  # not a collapsed output
    folder = exe.export_python(tmp_path / "int_nn")
    np.savez(tmp_path / "in.npz", x=x)
    done = run_standalone(folder / "model.py", tmp_path / "in.npz", tmp_path / "out.npz")
    assert done.returncode == 0, done.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "out.npz")["fc"], want)


def test_the_text_form_round_trips():
    g, k = _int_graph()
    text = str(g)
    assert 'IntConv(' in text and 'IntMatMul(' in text and "qmin = -3" in text
    back = qc.parse(text, {name: v for name, v in k.items() if v.size > 8})
    assert back == g and str(back) == text


def _conv_operands(**changes) -> list:
    operands = {"x": ("u8", (1, 2, 5, 5)), "w": np.ones((3, 2, 3, 3), I8),
                "multiplier": np.array(0.01), "x_zero_point": np.array(3, U8),
                "y_zero_point": np.array(0, I8), "bias": None, "w_zero_point": None,
                "z": None, "z_zero_point": None, "z_multiplier": None}
    operands.update(changes)
    values = [operands[k] for k in CONV_INPUTS]
    while values[-1] is None:
        values.pop()
    return values


@pytest.mark.parametrize(("changes", "attrs", "match"), [
    ({"x": ("f32", (1, 2, 5, 5))}, {}, "x must be i8 or u8, got f32"),
    ({"multiplier": np.array(0.01, np.float32)}, {}, "multiplier must be f64, got f32"),
    ({"multiplier": ("f64", ())}, {}, "multiplier must be a constant"),
    ({"multiplier": np.array([0.1, 0.2])}, {}, r"multiplier must have shape \(\) or \[3\]"),
    ({"multiplier": np.array(-0.5)}, {}, "multiplier must be finite and >= 0"),
    ({"multiplier": np.array(2.0**30)}, {}, "does not fit the fixed-point form"),
    ({"x_zero_point": np.array(3, I8)}, {}, "x_zero_point must be u8"),
    ({"x_zero_point": np.array([3], U8)}, {}, r"x_zero_point must have shape \(\)"),
    ({"w_zero_point": np.zeros(2, I8)}, {}, r"w_zero_point must have shape \(\) or \[3\]"),
    ({"bias": np.zeros(3, np.int64)}, {}, "bias must be i32"),
    ({"y_zero_point": np.array(0, np.int32)}, {}, "y_zero_point must be i8 or u8"),
    ({}, {"qmin": 5, "qmax": 4}, r"clamp \[qmin, qmax\] = \[5, 4\]"),
    ({}, {"qmax": 200}, r"within i8's \[-128, 127\]"),
    ({"w": np.ones((3, 1, 3, 3), I8)}, {}, "W has 1 input channels per group"),
    ({"z": ("i8", (1, 3, 3, 3))}, {}, "needs z, z_zero_point and z_multiplier together"),
    ({"z": ("i8", (1, 3, 5, 5)), "z_zero_point": np.array(0, I8),
      "z_multiplier": np.array(0.5)}, {}, r"residual z\[1, 3, 5, 5\] must have the output "
                                          r"shape \[1, 3, 3, 3\]"),
])
def test_int_conv_refuses_malformed_nodes_naming_them(changes, attrs, match):
    refuse("IntConv", _conv_operands(**changes), attrs, ShapeInferenceError, match)


def test_an_unknown_rounding_is_unsupported():
    refuse("IntConv", _conv_operands(), {"rounding": "half_down"}, UnsupportedModelError,
           r"rounding='half_down' is not supported")
    refuse("IntMatMul", [("i8", (2, 3)), np.ones((3, 4), I8), np.array(0.1), np.array(0, I8)],
           {"rounding": "stochastic"}, UnsupportedModelError, "rounding='stochastic'")


@pytest.mark.parametrize(("operands", "match"), [
    ([("i8", (2, 3)), np.ones((4, 5), I8), np.array(0.1), np.array(0, I8)],
     r"A\[2, 3\] has 3 columns but B\[4, 5\] has 4 rows"),
    ([("i8", (2, 3)), np.ones((3, 5), I8), np.ones(4), np.array(0, I8)],
     r"multiplier must have shape \(\) or \[5\]"),
    ([("i8", (2, 3)), np.ones((3, 5), I8), np.array(0.1), np.array(0, I8), None,
      np.array(0, U8)], "a_zero_point must be i8"),
    ([("i8", (2, 3)), np.ones((3, 5), I8), np.array(0.1), np.array(0, I8), None, None,
      np.zeros(3, I8)], r"b_zero_point must have shape \(\) or \[5\]"),
    ([("i8", (2, 3)), np.ones((3, 5), I8), np.array(0.1), np.array(0, I8),
      np.zeros((2, 5), np.int32)], r"bias must have shape \(\) or \[5\]"),
])
def test_int_matmul_refuses_malformed_nodes_naming_them(operands, match):
    refuse("IntMatMul", operands, {}, ShapeInferenceError, match)


