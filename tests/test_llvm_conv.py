"""The LLVM backend's IntConv kernels (im2col GEMM and depthwise) against the numpy backend's
IntConv, bit for bit (tests/llvm_harness: this CPU and baseline x86-64, 1 and 2 threads, guard
bytes around every buffer): drawn 1-D and 2-D shapes not multiple of any tile, kernels 1x1,
3x3, 7x7 and odd sizes, strides, dilations, explicit pads and auto_pad, groups and depthwise
(with a channel multiplier), int8/uint8 codes, weight zero points, per-channel and per-tensor
multipliers, both roundings, qmin/qmax clamps, the fused residual, weights at the int8 limits
(pair sums beyond int16: where the saturating u8*s8 pair instruction would be wrong) and
accumulators next to the int32 limits. Each drawn example holds several convolutions in one
graph (one compile for all of them); every feature is counted. The quantized digits model
runs its IntConv and IntMatMul nodes natively, bit for bit, in both roundings."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from llvm_harness import assert_native_exact, pair_safe_codes
from qcompiler.backends.llvm import bound
from qcompiler.backends.llvm.kernels import conv, pointwise, winograd
from qcompiler.backends.llvm.kernels.conv import conv_operands, geometry
from qcompiler.backends.llvm.runtime import Program
from qcompiler.backends.llvm.target import host

import qcompiler as qc
from qcompiler.errors import BackendError
from qcompiler.graph import Graph
from qcompiler.types import TensorType

DTYPES = {np.int8: "i8", np.uint8: "u8"}
INT32_MAX = 2**31 - 1
LAYERS = 4  # convolutions per drawn graph


def kernels(graph: Graph, shapes) -> list[str]:
    """The kernels the program compiled for ``shapes`` calls (``Program.kernels``), in order."""
    program = Program(bound(graph, tuple(shapes)))
    names = [name for names in program.kernels.values() for name in names]
    program.close()
    return names


def codes(rng, dtype, shape, extreme: bool = False) -> np.ndarray:
    """Codes of ``dtype``: only its two limits when ``extreme``, else any."""
    info = np.iinfo(dtype)
    if extreme:
        return rng.choice(np.array([info.min, info.max], dtype), shape)
    return rng.integers(info.min, int(info.max) + 1, shape).astype(dtype)


def scalar(rng, dtype):
    return dtype(codes(rng, dtype, ()))


def drawn_operands(draw, seen: Counter, w_shape: tuple[int, ...], attrs: dict):
    """An IntConv's operands for weights of ``w_shape`` ([M, C/group, *kernel]): x's dtype,
    the node's inputs as arrays or None, z's dtype or None; the rounding and clamp go into
    ``attrs``, the features into ``seen``."""
    m = w_shape[0]
    x_dtype = draw(st.sampled_from([np.int8, np.uint8]), label="x dtype")
    w_dtype = draw(st.sampled_from([np.int8, np.int8, np.uint8]), label="w dtype")
    y_dtype = draw(st.sampled_from([np.int8, np.uint8]), label="y dtype")
    style = draw(st.sampled_from(["any", "int8 limits", "pairs at the bound"]), label="weights")
    extreme = style == "int8 limits"
    w_zp = draw(st.sampled_from(["none", "scalar", "per channel"]), label="w zero point")
    per_channel = draw(st.booleans(), label="per-channel multiplier")
    rounding = draw(st.sampled_from(["fixed_point", "float"]), label="rounding")
    clamp = draw(st.booleans(), label="qmin/qmax clamp")
    residual = draw(st.booleans(), label="residual")
    near_limits = draw(st.booleans(), label="accumulator near the int32 limits")
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    w = codes(rng, w_dtype, w_shape, extreme)
    wz = None if w_zp == "none" else codes(rng, w_dtype, () if w_zp == "scalar" else (m,))
    if style == "pairs at the bound":  # the u8 x s8 pair instruction may run: pairs_fit
        w, wz = pair_safe_codes(rng, w_dtype, m, int(np.prod(w_shape[1:])), w_zp)
        w = w.reshape(w_shape)
    centred = w.reshape(m, -1).astype(np.int64) - (0 if wz is None else
                                                   np.asarray(wz, np.int64).reshape(-1, 1))
    widest = max(-int(np.iinfo(x_dtype).min), int(np.iinfo(x_dtype).max))
    bound_ = widest * np.abs(centred).sum(axis=1)
    if near_limits:  # every accumulator may reach within the window of +-(2^31 - 1)
        bias = (rng.choice([-1, 1], m) * (INT32_MAX - bound_)).astype(np.int32)
    else:
        bias = None if draw(st.booleans(), label="no bias") else rng.integers(
            -(2**20), 2**20, m).astype(np.int32)
    scale = 1.0 / max(1, int(np.median(bound_)))
    mult = (rng.uniform(0.5, 60.0, m if per_channel else ()) * scale)
    if near_limits:
        mult = mult / 2**12
    inputs = {"w": w, "multiplier": mult, "x_zero_point": scalar(rng, x_dtype),
              "y_zero_point": scalar(rng, y_dtype), "bias": bias, "w_zero_point": wz}
    z_dtype = None
    if residual:
        z_dtype = draw(st.sampled_from([np.int8, np.uint8]), label="z dtype")
        inputs.update(z_zero_point=scalar(rng, z_dtype), z_multiplier=np.float64(
            rng.uniform(0.05, 2.0)))
    attrs["rounding"] = rounding
    if clamp:
        info = np.iinfo(y_dtype)
        lo = int(rng.integers(info.min, int(info.max) - 10))
        attrs.update(qmin=lo, qmax=int(rng.integers(lo, int(info.max) + 1)))
    for feature in (rounding, f"x {x_dtype.__name__}", f"y {y_dtype.__name__}", f"w zp {w_zp}"):
        seen[feature] += 1
    seen["extreme weights"] += extreme
    seen["pair-safe weights"] += style == "pairs at the bound"
    seen["per-channel multiplier"] += per_channel
    seen["per-tensor multiplier"] += not per_channel
    seen["clamp"] += clamp
    seen["residual"] += residual
    seen["near int32 limits"] += near_limits
    return x_dtype, inputs, z_dtype


@st.composite
def layers(draw, seen: Counter):
    """One IntConv: (x's shape and dtype, the node's inputs as arrays or None, its attrs, z's
    dtype or None); features counted in ``seen``."""
    rank = draw(st.sampled_from([2, 2, 2, 1]), label="rank")
    kind = draw(st.sampled_from(["dense", "grouped", "depthwise"]), label="kind")
    kernel = draw(st.sampled_from([1, 3, 7, 2, 5]), label="kernel")
    group = {"dense": 1, "grouped": draw(st.integers(2, 3)),
             "depthwise": draw(st.integers(1, 9))}[kind]
    cg = 1 if kind == "depthwise" else draw(st.integers(1, 5))
    mg = draw(st.sampled_from([1, 2, 3])) if kind == "depthwise" else draw(st.integers(1, 19))
    c, m = cg * group, mg * group
    strides = tuple(draw(st.integers(1, 3)) for _ in range(rank))
    dilations = tuple(draw(st.sampled_from([1, 1, 2])) for _ in range(rank))
    spatial = tuple((kernel - 1) * d + draw(st.integers(1, 12)) for d in dilations)
    n = draw(st.integers(1, 2))
    padding = draw(st.sampled_from(["pads", "SAME_UPPER", "SAME_LOWER", "VALID"]),
                   label="padding")
    attrs = {"group": group, "strides": strides, "dilations": dilations,
             "kernel_shape": (kernel,) * rank}
    if padding == "pads":
        attrs["pads"] = tuple(draw(st.integers(0, kernel - 1 if kernel > 1 else 1))
                              for _ in range(2 * rank))
    else:
        attrs["auto_pad"] = padding
    x_dtype, inputs, z_dtype = drawn_operands(draw, seen, (m, cg) + (kernel,) * rank, attrs)
    for feature in (f"rank {rank}", kind, f"kernel {kernel}", padding):
        seen[feature] += 1
    seen["strided"] += any(s > 1 for s in strides)
    seen["dilated"] += any(d > 1 for d in dilations)
    seen["channel multiplier"] += kind == "depthwise" and mg > 1
    return (n, c, *spatial), x_dtype, inputs, attrs, z_dtype


def conv_graph(cases, rng) -> tuple[Graph, dict]:
    """One graph with every case as an IntConv of its own inputs, and a feed."""
    g = Graph("convs")
    feed, outs = {}, []
    for i, (shape, x_dtype, inputs, attrs, z_dtype) in enumerate(cases):
        x = g.add_input(f"x{i}", TensorType(DTYPES[x_dtype], shape))
        feed[x.name] = codes(rng, x_dtype, shape)
        operands = [x] + [None if inputs.get(name) is None else
                          g.add_constant(np.asarray(inputs[name]), f"{name}{i}")
                          for name in ("w", "multiplier", "x_zero_point", "y_zero_point",
                                       "bias", "w_zero_point")]
        if z_dtype is not None:
            z_shape = output_shape(shape, x_dtype, inputs, attrs)
            z = g.add_input(f"z{i}", TensorType(DTYPES[z_dtype], z_shape))
            feed[z.name] = codes(rng, z_dtype, z_shape)
            operands += [z, g.add_constant(np.asarray(inputs["z_zero_point"]), f"zz{i}"),
                         g.add_constant(np.asarray(inputs["z_multiplier"]), f"zm{i}")]
        outs.append(g.add_node("IntConv", operands, attrs).outputs[0])
    g.set_outputs(outs)
    return g, feed


def output_shape(shape, x_dtype, inputs, attrs) -> tuple[int, ...]:
    """The IntConv's output shape, as the op's inference gives it."""
    g = Graph("shape")
    x = g.add_input("x", TensorType(DTYPES[x_dtype], shape))
    operands = [x] + [g.add_constant(np.asarray(inputs[name])) for name in
                      ("w", "multiplier", "x_zero_point", "y_zero_point")]
    return tuple(g.add_node("IntConv", operands, attrs).outputs[0].shape)


def im2col_windows(g) -> set[str]:
    """Which of the im2col's two paths a GEMM convolution's pixels take: a window inside the
    image (copied unchecked) and one on the border (each tap checked)."""
    if g.c == g.group:  # depthwise: no im2col
        return set()
    rows = [0 <= o * g.sh - g.ph and o * g.sh - g.ph + (g.kh - 1) * g.dh < g.h
            for o in range(g.oh)]
    cols = [0 <= o * g.sw - g.pw and o * g.sw - g.pw + (g.kw - 1) * g.dw < g.w
            for o in range(g.ow)]
    kinds = {"im2col window inside"} if any(rows) and any(cols) else set()
    return kinds | ({"im2col window on the border"} if not (all(rows) and all(cols)) else set())


STORE_LOOPS = {conv.WIDE: "store wide", conv.SHORT: "store short",
               conv.GENERAL: "store general"}


def store_loops(node) -> set[str]:
    """Which of the "fixed_point" store's three loops the node's channels take (``conv.WIDE``:
    a shift of 32 or more; ``conv.SHORT``: a smaller one, the accumulator clamped; else the
    general int64 loop)."""
    if node.attrs.get("rounding", "fixed_point") != "fixed_point":
        return set()
    loops = conv_operands(node, node.inputs[1].shape[0]).rescale.consts[3]
    return {STORE_LOOPS[int(mode)] for mode in loops[:, 2]}


def test_int_conv_is_the_numpy_backends_bit_for_bit():
    seen, compared = Counter(), Counter()

    @settings(max_examples=max(8, settings.default.max_examples // 4), deadline=None)
    @given(st.lists(layers(seen), min_size=LAYERS, max_size=LAYERS), st.integers(0, 2**32 - 1))
    def check(cases, seed):
        graph, feed = conv_graph(cases, np.random.default_rng(seed))
        compared["runs"] += assert_native_exact(graph, [feed], native=["IntConv"],
                                                functions=seen)
        for node in graph.nodes:
            seen.update(im2col_windows(geometry(node)))
            seen.update(store_loops(node))

    check()
    assert compared["runs"] >= 3 * 8
    features = ["rank 1", "rank 2", "dense", "grouped", "depthwise", "kernel 1", "kernel 3",
                "kernel 7", "kernel 2", "kernel 5", "pads", "SAME_UPPER", "SAME_LOWER", "VALID",
                "fixed_point", "float", "x int8", "x uint8", "y int8", "y uint8",
                "w zp none", "w zp scalar", "w zp per channel", "strided", "dilated",
                "extreme weights", "per-channel multiplier", "per-tensor multiplier", "clamp",
                "residual", "near int32 limits", "channel multiplier",
                "im2col window inside", "im2col window on the border", "store wide",
                "store short", "pair-safe weights", "qc_int_conv_pmaddwd",
                *(["qc_int_conv_pmaddubsw"] if host().has("avx2") else [])]
    assert not [f for f in features if not seen[f]], seen


@st.composite
def winograd_layers(draw, seen: Counter):
    """One 3x3 stride-1 IntConv that the Winograd kernel computes (``winograd.applies``):
    output sizes odd and even, from 2x2 to several bands of tiles, every padding, odd and even
    channel counts, both x dtypes, weight zero points and weights at the int8 limits, both
    roundings, the fused residual, clamps and accumulators next to the int32 limits."""
    c = draw(st.one_of(st.integers(winograd.MIN_CHANNELS, 9), st.integers(10, 40)), label="C")
    m = draw(st.one_of(st.integers(1, 20), st.integers(21, 40)), label="M")
    size = st.one_of(st.integers(2, 11), st.integers(12, 30))
    padding = draw(st.sampled_from(["pads", "SAME_UPPER", "SAME_LOWER", "VALID"]),
                   label="padding")
    attrs = {"group": 1, "strides": (1, 1), "dilations": (1, 1), "kernel_shape": (3, 3)}
    if padding == "pads":
        pads = tuple(draw(st.integers(0, 2)) for _ in range(4))
        attrs["pads"] = pads
    else:
        attrs["auto_pad"] = padding
        pads = (0,) * 4 if padding == "VALID" else (1,) * 4
    # the input size that gives a drawn output size (at least 2 by 2)
    spatial = tuple(max(1, draw(size) + 2 - pads[i] - pads[i + 2]) for i in range(2))
    x_dtype, inputs, z_dtype = drawn_operands(draw, seen, (m, c, 3, 3), attrs)
    seen[padding] += 1
    seen["odd C"] += c % 2
    seen["M beyond one GEMM panel"] += m > 16
    return (draw(st.integers(1, 2)), c, *spatial), x_dtype, inputs, attrs, z_dtype


def test_the_winograd_convolution_is_the_numpy_backends_bit_for_bit():
    """Every drawn layer runs the Winograd kernel (its function is in the program) and gives
    the numpy backend's IntConv outputs bit for bit on this CPU (1 and 2 threads) and on
    baseline x86-64; the tiles' edges and bands are counted."""
    seen, compared = Counter(), Counter()

    @settings(max_examples=max(8, settings.default.max_examples // 4), deadline=None)
    @given(st.lists(winograd_layers(seen), min_size=3, max_size=3), st.integers(0, 2**32 - 1))
    def check(cases, seed):
        graph, feed = conv_graph(cases, np.random.default_rng(seed))
        for node in graph.nodes:
            g = geometry(node)
            assert winograd.applies(g, conv_operands(node, g.m)), g
            tiles_wide, tiles_high = -(-g.ow // 2), -(-g.oh // 2)
            seen["odd output width"] += g.ow % 2
            seen["even output width"] += g.ow % 2 == 0
            seen["odd output height"] += g.oh % 2
            # bands: one thread's (about winograd.TILES tiles) and two threads' (the harness
            # runs both; with one image, each thread gets bands of its own)
            seen["several bands"] += winograd.band_rows(tiles_wide, tiles_high) < tiles_high
            seen["bands for two threads"] += (winograd.band_rows(tiles_wide, tiles_high, g.n, 2)
                                              < tiles_high)
        names = kernels(graph, (feed[v.name].shape for v in graph.inputs))
        assert set(names) == {"qc_int_conv_winograd"}, names
        compared["runs"] += assert_native_exact(graph, [feed], native=["IntConv"])

    check()
    assert compared["runs"] >= 3 * 8
    features = ["pads", "SAME_UPPER", "SAME_LOWER", "VALID", "fixed_point", "float", "x int8",
                "x uint8", "w zp none", "w zp scalar", "w zp per channel", "odd C",
                "extreme weights", "residual", "clamp", "near int32 limits",
                "M beyond one GEMM panel", "odd output width", "even output width",
                "odd output height", "several bands", "bands for two threads"]
    assert not [f for f in features if not seen[f]], seen


@pytest.mark.parametrize("x_dtype", [np.uint8, np.int8])
def test_winograd_takes_a_layer_up_to_its_int32_bound_and_refuses_one_past_it(x_dtype):
    """Weights all 127 and codes all at x's widest value (255, or -128): the kernel's bound is
    4 * 9 * C * 127 * |x| <= 2^31 - 1. The widest C within it runs Winograd and the next one
    the im2col GEMM, both exactly; the centre pixel (all 9 taps inside) is offset by the bias
    to a small code, so an error in its sum shows."""
    widest = 255 if x_dtype == np.uint8 else -128
    limit = INT32_MAX // (4 * 9 * 127 * abs(widest))
    for c, kernel in ((limit, "winograd"), (limit + 1, "pmaddwd")):
        centre = 9 * c * 127 * widest  # the centre pixel's sum
        g = Graph("edge")
        x = g.add_input("x", TensorType(DTYPES[x_dtype], (1, c, 3, 3)))
        node = g.add_node("IntConv", [
            x, g.add_constant(np.full((2, c, 3, 3), 127, np.int8)),
            g.add_constant(np.float64(0.25)), g.add_constant(x_dtype(0)),
            g.add_constant(np.int8(0)), g.add_constant(np.full(2, -centre + 100, np.int32))],
            {"pads": (1, 1, 1, 1)})
        g.set_outputs([node.outputs[0]])
        assert winograd.applies(geometry(node), conv_operands(node, 2)) == (kernel == "winograd")
        names = kernels(g, [(1, c, 3, 3)])
        assert names == [f"qc_int_conv_{kernel}"]
        feed = {"x": np.full((1, c, 3, 3), widest, x_dtype)}
        assert qc.compile(g).run(feed)[node.outputs[0].name][0, :, 1, 1].tolist() == [25, 25]
        assert assert_native_exact(g, [feed], native=["IntConv"]) == 3


def _pointwise_geometry(width: int) -> conv.Geometry:
    """A 1-D 1x1 convolution's geometry over ``width`` pixels."""
    return conv.Geometry(1, 2, 1, width, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, width)


@st.composite
def pointwise_layers(draw, seen: Counter):
    """One 1x1 IntConv that the pointwise kernel computes (``pointwise.applies``): 1-D and 2-D,
    odd and even channel counts, pixel counts that fill whole item panels and ones that end in
    a partial panel and a partial 16-pixel group, one and two images, both x dtypes, weight
    zero points and weights at the int8 limits, both roundings, the fused residual, clamps and
    accumulators next to the int32 limits."""
    # one input channel is a depthwise convolution (its own kernel): C >= 2
    c = draw(st.one_of(st.integers(2, 9), st.integers(10, 70)), label="C")
    m = draw(st.one_of(st.integers(1, 20), st.integers(21, 40)), label="M")
    rank = draw(st.sampled_from([2, 2, 1]), label="rank")
    if rank == 2:
        spatial = draw(st.sampled_from([(4, 4), (16, 2), (8, 6), (15, 17), (16, 17), (9, 30),
                                        (20, 20), (7, 33)]), label="image")
    else:
        spatial = (draw(st.one_of(st.sampled_from([16, 32, 48]), st.integers(16, 300).filter(
            lambda w: pointwise.applies(_pointwise_geometry(w))))),)
    attrs = {"group": 1, "kernel_shape": (1,) * rank,
             "strides": (1,) * rank, "dilations": draw(st.sampled_from([(1,), (2,)])) * rank}
    if draw(st.booleans(), label="explicit zero pads"):
        attrs["pads"] = (0,) * (2 * rank)
    else:
        attrs["auto_pad"] = draw(st.sampled_from(["VALID", "SAME_UPPER", "NOTSET"]))
    x_dtype, inputs, z_dtype = drawn_operands(draw, seen, (m, c) + (1,) * rank, attrs)
    out = int(np.prod(spatial))
    seen[f"rank {rank}"] += 1
    seen["odd C"] += c % 2
    seen["M beyond one GEMM panel"] += m > 4 * 4
    seen["whole item panels"] += out % pointwise.PIXELS == 0
    seen["partial 16-pixel group"] += out % 16 != 0
    return (draw(st.integers(1, 2)), c, *spatial), x_dtype, inputs, attrs, z_dtype


def test_the_pointwise_convolution_is_the_numpy_backends_bit_for_bit():
    """Every drawn 1x1 layer runs the pointwise kernel (its function is in the program) and
    gives the numpy backend's IntConv outputs bit for bit on this CPU (1 and 2 threads) and on
    baseline x86-64; the store's loops are counted."""
    seen, compared = Counter(), Counter()

    @settings(max_examples=max(8, settings.default.max_examples // 4), deadline=None)
    @given(st.lists(pointwise_layers(seen), min_size=3, max_size=3), st.integers(0, 2**32 - 1))
    def check(cases, seed):
        graph, feed = conv_graph(cases, np.random.default_rng(seed))
        for node in graph.nodes:
            assert pointwise.applies(geometry(node)), geometry(node)
            seen.update(store_loops(node))
        names = kernels(graph, (feed[v.name].shape for v in graph.inputs))
        assert set(names) == {"qc_int_conv_pointwise"}, names
        compared["runs"] += assert_native_exact(graph, [feed], native=["IntConv"])

    check()
    assert compared["runs"] >= 3 * 8
    features = ["rank 1", "rank 2", "odd C", "M beyond one GEMM panel",
                "whole item panels", "partial 16-pixel group", "fixed_point", "float",
                "x int8", "x uint8", "w zp none", "w zp scalar", "w zp per channel",
                "extreme weights", "residual", "clamp", "near int32 limits", "store wide",
                "store short"]
    assert not [f for f in features if not seen[f]], seen


def test_a_1x1_layer_with_few_pixels_keeps_the_im2col_gemm():
    """49 pixels fill four 16-pixel columns of the pointwise GEMM at 77%: the im2col GEMM,
    whose tile is filled by channels, takes the layer (and so does a padded or strided 1x1)."""
    for shape, attrs, kernel in (((1, 8, 7, 7), {}, "pmaddwd"),
                                 ((1, 8, 16, 16), {}, "pointwise"),
                                 ((1, 8, 16, 16), {"strides": (2, 2)}, "pmaddwd"),
                                 ((1, 8, 16, 16), {"pads": (1, 1, 1, 1)}, "pmaddwd")):
        g = _single_conv(shape, (4, 8, 1, 1), **attrs)
        names = kernels(g, [shape])
        assert names == [f"qc_int_conv_{kernel}"], attrs
        assert assert_native_exact(g, [{"x": codes(np.random.default_rng(1), np.uint8, shape)}],
                                   native=["IntConv"]) == 3


def _sweep_layer(g: Graph, i: int, m: int, multiplier: float, z_multiplier: float, x, z):
    """A 1x1 IntConv of the one-channel x (codes 0..255 along the pixels) with weights 1 and a
    residual z, whose ``m`` channels' biases put their accumulators across the store's
    accumulator bounds (``conv._loops``), the last two's at int32's limits."""
    rescale = conv.rescale_constants(m, np.full(m, multiplier), np.uint8(128), "fixed_point",
                                     None, None, np.uint8(0), np.float64(z_multiplier))
    loops = rescale.consts[3]
    span = np.iinfo(np.int32)
    centres = [int(loops[c, c % 2]) for c in range(m)]  # acc_low or acc_high
    centres[-2:] = [int(span.min) + 100, int(span.max) - 100]  # at int32's limits
    bias = np.array([min(max(v - 128, span.min), span.max - 255) for v in centres],
                    np.int64).astype(np.int32)  # the accumulators: bias + 0..255
    for c in range(m):
        if loops[c, 2] == conv.SHORT and c < m - 2:  # the sweep crosses the bound
            assert bias[c] < loops[c, c % 2] <= int(bias[c]) + 255, (c, bias[c], loops[c])
    node = g.add_node("IntConv", [
        x, g.add_constant(np.ones((m, 1, 1, 1), np.int8), f"w{i}"),
        g.add_constant(np.full(m, multiplier), f"m{i}"), g.add_constant(np.uint8(0), f"xz{i}"),
        g.add_constant(np.uint8(128), f"yz{i}"), g.add_constant(bias, f"b{i}"), None, z,
        g.add_constant(np.uint8(0), f"zz{i}"), g.add_constant(np.float64(z_multiplier),
                                                               f"zm{i}")], {})
    return node, {int(mode) for mode in loops[:, 2]}


def test_the_store_loops_are_exact_across_their_accumulator_bounds():
    """Every pair of an accumulator (256 consecutive values across a channel's ``acc_low`` or
    ``acc_high``, and at int32's limit) and a residual code (all 256), for multipliers that
    give each of the store's three loops: the shift >= 32 (WIDE), a shift below 32 with the
    clamped accumulator (SHORT: the usual one of a fused residual) and the int64 loop
    (GENERAL: multipliers so large that the clamp's bound does not hold), bit for bit."""
    shape = (1, 1, 256, 256)
    g = Graph("sweep")
    x = g.add_input("x", TensorType("u8", shape))
    z = g.add_input("z", TensorType("u8", (1, 8, 256, 256)))
    outputs, modes = [], set()
    for i, (multiplier, z_multiplier) in enumerate(((1e-3, 0.01), (1e-3, 0.7), (0.02, 3.5),
                                                    (4.0, 0.5), (1.5, 1.0), (2.0**20, 2.0**28),
                                                    (0.3, 2.0**-20))):
        node, used = _sweep_layer(g, i, 8, multiplier, z_multiplier, x, z)
        outputs.append(node.outputs[0])
        modes |= used
    g.set_outputs(outputs)
    pixels = np.arange(256 * 256)
    feed = {"x": (pixels % 256).astype(np.uint8).reshape(shape),
            "z": np.broadcast_to((pixels // 256).astype(np.uint8).reshape(1, 1, 256, 256),
                                 (1, 8, 256, 256)).copy()}
    assert assert_native_exact(g, [feed], native=["IntConv"]) == 3
    assert modes == {conv.WIDE, conv.SHORT, conv.GENERAL}, modes


def _single_conv(shape, w_shape, **attrs) -> Graph:
    rng = np.random.default_rng(0)
    g = Graph("conv")
    x = g.add_input("x", TensorType("u8", shape))
    node = g.add_node("IntConv", [x, g.add_constant(codes(rng, np.int8, w_shape)),
                                  g.add_constant(np.float64(1e-4)),
                                  g.add_constant(np.uint8(3)), g.add_constant(np.int8(0))],
                      attrs)
    g.set_outputs([node.outputs[0]])
    return g


@pytest.mark.parametrize("w_shape, group, strides, kernel", [
    ((8, 4, 3, 3), 1, (2, 2), "pmaddwd"), ((8, 4, 3, 3), 1, (1, 1), "winograd"),
    ((4, 1, 3, 3), 4, (1, 1), "depthwise_i16")])
def test_the_host_code_uses_exact_products_only(w_shape, group, strides, kernel):
    program = Program(bound(_single_conv((1, 4, 9, 9), w_shape, group=group, strides=strides),
                            ((1, 4, 9, 9),)))
    assembly = program.assembly()
    names = [call.function.name for segment in program.segments for _, call in segment.calls]
    program.close()
    assert not program.fallbacks
    assert names == [f"qc_int_conv_{kernel}_{names[0].rsplit('_', 1)[1]}"]
    assert "pmaddubsw" not in assembly
    if group == 1:  # the GEMM's 16-bit pair products
        assert "vpmaddwd" in assembly


def test_a_3d_convolution_runs_through_numpy_with_the_reason():
    g = _single_conv((1, 2, 4, 4, 4), (3, 2, 1, 1, 1))
    program = Program(bound(g, ((1, 2, 4, 4, 4),)))
    reasons = [f.reason for f in program.fallbacks]
    kernels_ = program.kernels
    program.close()
    assert len(reasons) == 1 and "3-D" in reasons[0]
    assert list(kernels_.values()) == [["numpy"]]


EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize("rounding", ["fixed_point", "float"])
def test_a_quantized_model_runs_its_convolutions_and_products_natively(rounding):
    data = dict(np.load(EXAMPLES / "digits.npz"))
    lowered = qc.quantize(qc.load_onnx(EXAMPLES / "digits_convnet.onnx"), [data["calib_x"]],
                          qc.QuantConfig(rounding=rounding), progress=False)
    assert lowered.op_counts()["IntConv"] == 3 and lowered.op_counts()["IntMatMul"] == 2
    feed = {lowered.inputs[0].name: data["calib_x"][:5]}
    assert assert_native_exact(lowered, [feed], native=["IntConv", "IntMatMul"]) == 3


def test_a_reduce_range_model_runs_the_pair_instruction_on_its_products():
    """``QuantConfig(reduce_range=True)`` (symmetric weights, the default) keeps weights within
    [-64, 63], so every pair fits the u8 x s8 pair instruction: on an AVX2 host the digits
    model's two IntMatMul run it (its convolutions are Winograd and depthwise layers; the
    GEMM-path convolutions are counted in the property test above), and the model is still
    the numpy backend's bit for bit; with full-range weights neither does."""
    data = dict(np.load(EXAMPLES / "digits.npz"))
    feed_x = data["calib_x"][:5]
    kinds = {}
    for narrow in (True, False):
        lowered = qc.quantize(qc.load_onnx(EXAMPLES / "digits_convnet.onnx"),
                              [data["calib_x"]], qc.QuantConfig(reduce_range=narrow),
                              progress=False)
        functions: Counter[str] = Counter()
        assert assert_native_exact(lowered, [{lowered.inputs[0].name: feed_x}],
                                   native=["IntConv", "IntMatMul"], functions=functions) == 3
        kinds[narrow] = functions
    pairs = 2 if host().has("avx2") else 0
    assert kinds[True]["qc_int_matmul_pmaddubsw"] == pairs
    assert kinds[True]["qc_int_matmul_pmaddwd"] == 2 - pairs
    # what a user sees: exe.kernels(), per node, for the shapes compiled last
    exe = qc.compile(lowered, backend="llvm")  # (full-range weights: the last one lowered)
    with pytest.raises(BackendError, match="nothing compiled yet"):
        exe.kernels()
    exe.run({lowered.inputs[0].name: feed_x})
    ops = {node.name: node.op for node in lowered.nodes}
    by_node = exe.kernels()
    assert list(by_node) == list(ops)
    assert [by_node[n] for n, op in ops.items() if op == "IntMatMul"] == [
        ["qc_int_matmul_pmaddwd"]] * 2
    assert all(by_node[n] == [] for n, op in ops.items() if op in ("Flatten", "Reshape"))
    assert exe.kernels(((1, *feed_x.shape[1:]),)) == by_node  # another shape set, same choice
    assert not any(name.endswith("pmaddubsw") for name in kinds[False]), kinds[False]
