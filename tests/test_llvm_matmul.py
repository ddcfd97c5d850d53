"""The LLVM backend's IntMatMul kernel against the numpy backend's IntMatMul, bit for bit
(tests/llvm_harness: this CPU and baseline x86-64, 1 and 2 threads, guard bytes): drawn shapes
not multiple of the tile, A of rank 1, 2 and 3 (batched, the weight shared), int8/uint8 codes
in and out, a and b zero points, bias, per-column and per-tensor multipliers, both roundings,
qmin/qmax clamps, weights at their limits (pair sums beyond int16), weights whose pairs fit the
u8 x s8 pair instruction at its bound (the layer then runs it) and accumulators next to the
int32 limits; each feature and kernel counted. A product of two activations or a batched weight runs
through numpy, with the reason."""

from __future__ import annotations

from collections import Counter

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from llvm_harness import assert_native_exact, pair_safe_codes
from qcompiler.backends.llvm import bound
from qcompiler.backends.llvm.runtime import Program
from qcompiler.backends.llvm.target import host

from qcompiler.graph import Graph
from qcompiler.types import TensorType

DTYPES = {np.int8: "i8", np.uint8: "u8"}
INT32_MAX = 2**31 - 1
PRODUCTS = 3  # IntMatMul nodes per drawn graph


def codes(rng, dtype, shape, extreme: bool = False) -> np.ndarray:
    """Codes of ``dtype``: only its two limits when ``extreme``, else any."""
    info = np.iinfo(dtype)
    if extreme:
        return rng.choice(np.array([info.min, info.max], dtype), shape)
    return rng.integers(info.min, int(info.max) + 1, shape).astype(dtype)


@st.composite
def products(draw, seen: Counter):
    """One IntMatMul: (A's shape and dtype, the node's constant inputs, its attrs)."""
    size = st.one_of(st.integers(1, 40), st.sampled_from([3, 4, 5, 15, 16, 17, 33, 65]))
    k, n = draw(size, label="K"), draw(size, label="N")
    rank = draw(st.sampled_from([1, 2, 2, 3]), label="rank of A")
    lead = {1: (), 2: (draw(size),), 3: (draw(st.integers(1, 3)), draw(size))}[rank]
    a_dtype = draw(st.sampled_from([np.int8, np.uint8]), label="a dtype")
    b_dtype = draw(st.sampled_from([np.int8, np.int8, np.uint8]), label="b dtype")
    y_dtype = draw(st.sampled_from([np.int8, np.uint8]), label="y dtype")
    style = draw(st.sampled_from(["any", "limits", "pairs at the bound"]), label="weights")
    extreme = style == "limits"
    b_zp = draw(st.sampled_from(["none", "scalar", "per column"]), label="b zero point")
    a_zp = draw(st.booleans(), label="a zero point")
    per_column = draw(st.booleans(), label="per-column multiplier")
    rounding = draw(st.sampled_from(["fixed_point", "float"]), label="rounding")
    clamp = draw(st.booleans(), label="clamp")
    near_limits = draw(st.booleans(), label="accumulator near the int32 limits")
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    b = codes(rng, b_dtype, (k, n), extreme)
    bz = None if b_zp == "none" else codes(rng, b_dtype, () if b_zp == "scalar" else (n,))
    if style == "pairs at the bound":  # the u8 x s8 pair instruction may run
        b, bz = pair_safe_codes(rng, b_dtype, n, k, b_zp.replace("column", "channel"))
        b = np.ascontiguousarray(b.T)
    az = codes(rng, a_dtype, ()) if a_zp else None
    centred = b.astype(np.int64) - (0 if bz is None else np.asarray(bz, np.int64))
    widest = max(-int(np.iinfo(a_dtype).min), int(np.iinfo(a_dtype).max))
    reach = widest * np.abs(centred).sum(axis=0)
    if a_zp:  # the folded term: - a_zero_point * sum_k b
        reach += abs(int(az)) * np.abs(b.astype(np.int64)).sum(axis=0)
    if near_limits:
        bias = (rng.choice([-1, 1], n) * (INT32_MAX - reach)).astype(np.int32)
    else:
        bias = rng.integers(-(2**20), 2**20, n).astype(np.int32) if draw(
            st.booleans(), label="bias") else None
    mult = rng.uniform(0.5, 60.0, n if per_column else ()) / max(1, int(np.median(reach)))
    if near_limits:
        mult = mult / 2**12
    inputs = {"b": b, "multiplier": mult, "y_zero_point": codes(rng, y_dtype, ()),
              "bias": bias, "a_zero_point": az, "b_zero_point": bz}
    attrs = {"rounding": rounding}
    if clamp:
        info = np.iinfo(y_dtype)
        lo = int(rng.integers(info.min, int(info.max) - 10))
        attrs.update(qmin=lo, qmax=int(rng.integers(lo, int(info.max) + 1)))
    for feature in (f"rank {rank}", rounding, f"a {a_dtype.__name__}", f"y {y_dtype.__name__}",
                    f"b {b_dtype.__name__}", f"b zp {b_zp}"):
        seen[feature] += 1
    seen["a zero point"] += a_zp
    seen["extreme weights"] += extreme
    seen["pair-safe weights"] += style == "pairs at the bound"
    seen["per-column multiplier"] += per_column
    seen["per-tensor multiplier"] += not per_column
    seen["clamp"] += clamp
    seen["near int32 limits"] += near_limits
    seen["N not a multiple of 16"] += n % 16 != 0
    return (*lead, k), a_dtype, inputs, attrs


def matmul_graph(cases, rng) -> tuple[Graph, dict]:
    """One graph with every case as an IntMatMul of its own input, and a feed."""
    g = Graph("products")
    feed, outs = {}, []
    for i, (shape, a_dtype, inputs, attrs) in enumerate(cases):
        a = g.add_input(f"a{i}", TensorType(DTYPES[a_dtype], shape))
        feed[a.name] = codes(rng, a_dtype, shape)
        operands = [a] + [None if inputs[name] is None else
                          g.add_constant(np.asarray(inputs[name]), f"{name}{i}")
                          for name in ("b", "multiplier", "y_zero_point", "bias",
                                       "a_zero_point", "b_zero_point")]
        outs.append(g.add_node("IntMatMul", operands, attrs).outputs[0])
    g.set_outputs(outs)
    return g, feed


def test_int_matmul_is_the_numpy_backends_bit_for_bit():
    seen, compared = Counter(), Counter()

    @settings(max_examples=max(10, settings.default.max_examples // 3), deadline=None)
    @given(st.lists(products(seen), min_size=PRODUCTS, max_size=PRODUCTS),
           st.integers(0, 2**32 - 1))
    def check(cases, seed):
        graph, feed = matmul_graph(cases, np.random.default_rng(seed))
        compared["runs"] += assert_native_exact(graph, [feed], native=["IntMatMul"],
                                                functions=seen)

    check()
    assert compared["runs"] >= 3 * 10
    features = ["rank 1", "rank 2", "rank 3", "fixed_point", "float", "a int8", "a uint8",
                "y int8", "y uint8", "b int8", "b uint8", "b zp none", "b zp scalar",
                "b zp per column", "a zero point", "extreme weights", "per-column multiplier",
                "per-tensor multiplier", "clamp", "near int32 limits", "N not a multiple of 16",
                "pair-safe weights", "qc_int_matmul_pmaddwd",
                *(["qc_int_matmul_pmaddubsw"] if host().has("avx2") else [])]
    assert not [f for f in features if not seen[f]], seen


def test_two_activations_and_batched_weights_run_through_numpy_with_the_reason():
    g = Graph("unhandled")
    a = g.add_input("a", TensorType("i8", (4, 8)))
    b = g.add_input("b", TensorType("i8", (8, 5)))
    rest = [g.add_constant(np.float64(0.01)), g.add_constant(np.int8(0))]
    two = g.add_node("IntMatMul", [a, b, *rest])
    batched = g.add_node("IntMatMul", [a, g.add_constant(np.ones((2, 8, 5), np.int8)), *rest])
    g.set_outputs([two.outputs[0], batched.outputs[0]])
    program = Program(bound(g, ((4, 8), (8, 5))))
    reasons = [f.reason for f in program.fallbacks]
    program.close()
    assert len(reasons) == 2
    assert "two activations" in reasons[0] and "3-D" in reasons[1]
