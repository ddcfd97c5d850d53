"""The LLVM backend's data-movement kernels are bit-exact with the numpy kernels: copies
(Reshape, Flatten, Squeeze, Unsqueeze, Identity), Transpose, Slice, Concat, Split, Pad, Resize in
nearest mode and Gather on constant indices, over ranks 1 to 5, odd shapes, every permutation,
negative axes, starts, ends and steps, on 1-, 2- and 4-byte elements (random bytes, so every
bit pattern moves); on this CPU and baseline x86-64, one and two threads, guard bytes around
every buffer."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from llvm_harness import assert_native_exact
from qcompiler.backends.llvm import bound
from qcompiler.backends.llvm.kernels.movement import CHUNK
from qcompiler.backends.llvm.runtime import Program

from qcompiler.graph import Graph
from qcompiler.types import TensorType

EXAMPLES = max(12, settings.default.max_examples // 3)
DTYPES = {"i8": np.int8, "u8": np.uint8, "f32": np.float32, "f16": np.float16}
I64 = np.int64


def shapes(min_rank: int = 1, max_rank: int = 5, max_dim: int = 7):
    return st.sampled_from(range(min_rank, max_rank + 1)).flatmap(
        lambda rank: st.lists(st.integers(1, max_dim), min_size=rank, max_size=rank)
    ).map(tuple)


def data(shape: tuple, dtype: str, seed: int) -> np.ndarray:
    """Random bytes seen as ``dtype``."""
    np_type = np.dtype(DTYPES[dtype])
    count = int(np.prod(shape)) * np_type.itemsize
    raw = np.random.default_rng(seed).integers(0, 256, count, np.uint8)
    return raw.view(np_type).reshape(shape)


def run(op: str, xs: list[np.ndarray], constants: list, attrs: dict | None = None,
        outputs: int = 1) -> int:
    """Compare one ``op`` node (inputs ``xs``, then ``constants``: arrays or None) on the
    LLVM backend with the numpy backend; the number of runs compared."""
    g = Graph(op)
    inputs = [g.add_input(f"x{i}", TensorType(_code(x.dtype), x.shape))
              for i, x in enumerate(xs)]
    inputs += [None if c is None else g.add_constant(np.asarray(c), f"c{i}")
               for i, c in enumerate(constants)]
    node = g.add_node(op, inputs, attrs or {}, outputs=outputs)
    g.set_outputs(list(node.outputs))
    return assert_native_exact(g, [{f"x{i}": x for i, x in enumerate(xs)}])


def _code(dtype: np.dtype) -> str:
    return {np.dtype(v): k for k, v in DTYPES.items()}[np.dtype(dtype)]


def _check_seen(seen: Counter, features) -> None:
    for feature in features:
        assert seen[feature] > 0, (feature, seen)


dtypes = st.sampled_from(sorted(DTYPES))
seeds = st.integers(0, 2**16)


def test_copies_are_exact():
    seen = Counter()
    ops = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity")

    @settings(max_examples=EXAMPLES, deadline=None)
    @given(st.sampled_from(ops), shapes(), dtypes, seeds)
    @example("Reshape", (3, 200, 131), "f32", 1)  # several chunks
    @example("Unsqueeze", (2, 1, 3, 1, 4), "i8", 2)
    @example("Squeeze", (2, 1, 3, 1), "u8", 3)
    @example("Identity", (3, 1, 2), "f16", 4)
    @example("Flatten", (2, 3, 4), "f32", 5)
    def check(op, shape, dtype, seed):
        x = data(shape, dtype, seed)
        rank = len(shape)
        if op == "Reshape":
            constants, attrs = [np.array([-1, shape[-1]], I64)], {}
        elif op == "Flatten":
            constants, attrs = [], {"axis": seed % (2 * rank + 1) - rank}
        elif op == "Squeeze":
            ones = [a - rank for a, d in enumerate(shape) if d == 1]
            constants, attrs = [np.array(ones, I64) if ones else None], {}
        elif op == "Unsqueeze":
            constants, attrs = [np.array([0, -1], I64)], {}
        else:
            constants, attrs = [], {}
        assert run(op, [x], constants, attrs) == 3
        seen.update([op, dtype])
        seen["several chunks"] += x.nbytes > CHUNK

    check()
    _check_seen(seen, (*ops, *DTYPES, "several chunks"))


def test_transpose_is_exact():
    seen = Counter()

    @settings(max_examples=EXAMPLES, deadline=None)
    @given(shapes().flatmap(lambda s: st.tuples(st.just(s), st.permutations(range(len(s))))),
           dtypes, seeds, st.booleans())
    @example(((2, 3, 4, 5, 6), [4, 2, 0, 3, 1]), "i8", 1, False)
    @example(((1, 40, 30, 3), [0, 3, 1, 2]), "u8", 2, False)  # NHWC to NCHW
    @example(((67, 1300), [1, 0]), "i8", 3, False)
    @example(((7,), [0]), "f16", 4, True)
    @example(((2, 3, 4), [2, 0, 1]), "f32", 5, False)
    def check(case, dtype, seed, default):
        shape, perm = case
        attrs = {} if default else {"perm": list(perm)}
        assert run("Transpose", [data(shape, dtype, seed)], [], attrs) == 3
        seen.update([dtype, f"rank{len(shape)}", "default perm" if default else "perm"])
        seen["moves"] += list(perm) != sorted(perm) and not default

    check()
    _check_seen(seen, (*DTYPES, *(f"rank{r}" for r in range(1, 6)), "default perm", "perm",
                       "moves"))


@st.composite
def slices(draw):
    shape = draw(shapes())
    rank = len(shape)
    axes = draw(st.lists(st.integers(0, rank - 1), min_size=1, max_size=rank, unique=True))
    starts, ends, steps = [], [], []
    for a in axes:
        d = shape[a]
        starts.append(draw(st.sampled_from([0, 2**31, -(2**31)]) | st.integers(-d - 2, d + 2)))
        ends.append(draw(st.sampled_from([2**62, -(2**62)]) | st.integers(-d - 2, d + 2)))
        steps.append(draw(st.sampled_from([-3, -2, -1, 1, 2, 3])))
    negative_axes = draw(st.booleans())
    given_axes = [a - rank if negative_axes else a for a in axes]
    form = draw(st.sampled_from(["all", "no steps", "no axes"]))
    if form == "no axes":
        given_axes = list(range(len(axes)))
        axes = given_axes
    return shape, starts, ends, given_axes, steps, form


def test_slice_is_exact():
    seen = Counter()

    @settings(max_examples=EXAMPLES, deadline=None)
    @given(slices(), dtypes, seeds)
    @example(((3, 5, 2, 9, 4), [4, -1], [-7, 0], [-2, 1], [-2, -1], "all"), "f32", 1)
    @example(((4, 3, 6, 5), [1, 5], [2**62, -6], [-3, 2], [1, -2], "all"), "i8", 2)
    @example(((7,), [2], [6], [0], [1], "no steps"), "u8", 3)
    @example(((3, 4, 5), [1, 0], [3, -1], [0, 1], [1, 1], "no axes"), "f16", 4)
    @example(((4, 6), [0], [4], [-1], [2], "all"), "i8", 5)
    def check(case, dtype, seed):
        shape, starts, ends, axes, steps, form = case
        constants = [np.array(starts, I64), np.array(ends, I64)]
        if form != "no axes":
            constants.append(np.array(axes, I64))
        if form == "all":
            constants.append(np.array(steps, I64))
        assert run("Slice", [data(shape, dtype, seed)], constants) == 3
        seen.update([dtype, form, f"rank{len(shape)}"])
        seen["negative step"] += form == "all" and min(steps) < 0
        seen["negative axis"] += form != "no axes" and min(axes) < 0
        seen["negative start"] += min(starts) < 0

    check()
    _check_seen(seen, (*DTYPES, "all", "no steps", "no axes", "negative step",
                       "negative axis", "negative start", *(f"rank{r}" for r in range(1, 6))))


def _chunk_counts(n: int) -> list[int]:
    """The ``num_outputs`` that can split an axis of ``n``: chunks of ceil(n / k), the last
    one smaller but not empty."""
    return [k for k in range(1, n + 1) if (k - 1) * -(-n // k) < n]


@st.composite
def concats(draw):
    """A shape, an axis, the pieces' sizes on it, and how to split their concatenation:
    by those sizes, or into a ``num_outputs`` that can split it."""
    shape = draw(shapes())
    rank = len(shape)
    axis = draw(st.integers(-rank, rank - 1))
    sizes = draw(st.lists(st.integers(0, 4), min_size=1, max_size=4))
    if sum(sizes) == 0:
        sizes[0] = 1
    by_sizes = draw(st.booleans()) and len(sizes) > 1
    count = None if by_sizes else draw(st.sampled_from(_chunk_counts(sum(sizes))))
    return shape, axis, sizes, count


def test_concat_and_split_are_exact():
    seen = Counter()

    @settings(max_examples=EXAMPLES, deadline=None)
    @given(concats(), dtypes, seeds)
    @example(((2, 3, 4, 5, 6), -1, [2, 0, 3], None), "f32", 1)
    @example(((3,), 0, [4], 2), "i8", 2)
    @example(((2, 3), 1, [1, 2], 3), "u8", 3)
    @example(((2, 3, 4), -2, [1, 1], None), "f16", 4)
    @example(((1, 2, 3, 4), 3, [2, 2], 4), "i8", 5)
    def check(case, dtype, seed):
        shape, axis, sizes, count = case
        rank = len(shape)
        pieces = []
        for k, n in enumerate(sizes):
            piece = list(shape)
            piece[axis] = n
            pieces.append(data(tuple(piece), dtype, seed + k))
        assert run("Concat", pieces, [], {"axis": axis}) == 3
        whole = np.concatenate(pieces, axis=axis)
        if count is None:
            assert run("Split", [whole], [np.array(sizes, I64)], {"axis": axis},
                       outputs=len(sizes)) == 3
            seen["split sizes"] += 1
        else:
            assert run("Split", [whole], [None], {"axis": axis, "num_outputs": count},
                       outputs=count) == 3
            seen["num_outputs"] += 1
        seen.update([dtype, f"rank{rank}"])
        seen["empty piece"] += 0 in sizes
        seen["negative axis"] += axis < 0

    check()
    _check_seen(seen, (*DTYPES, "split sizes", "num_outputs", "empty piece", "negative axis",
                       *(f"rank{r}" for r in range(1, 6))))


@st.composite
def pads(draw):
    shape = draw(shapes(max_rank=4))
    mode = draw(st.sampled_from(["constant", "edge", "reflect", "wrap"]))
    rank = len(shape)
    axes = draw(st.one_of(st.none(), st.lists(st.integers(-rank, rank - 1), min_size=1,
                                              max_size=rank, unique_by=lambda a: a % rank)))
    padded = range(rank) if axes is None else [a % rank for a in axes]
    before, after = [], []
    for a in padded:
        d = shape[a]
        low = -(d // 2) if mode == "constant" else 0
        high = d - 1 if mode == "reflect" else 4
        before.append(draw(st.integers(low, high)))
        after.append(draw(st.integers(low, high)))
    return shape, mode, axes, before + after


def test_pad_is_exact():
    seen = Counter()

    @settings(max_examples=EXAMPLES, deadline=None)
    @given(pads(), dtypes, seeds, st.booleans())
    @example(((2, 5, 3), "constant", None, [0, -2, 1, 1, 2, -1]), "i8", 1, True)
    @example(((3, 4), "edge", [1], [1, 2]), "u8", 2, False)
    @example(((4, 5), "reflect", None, [1, 2, 0, 3]), "f32", 3, False)
    @example(((2, 3, 2), "wrap", [-1, 0], [1, 0, 2, 1]), "f16", 4, True)
    def check(case, dtype, seed, with_value):
        shape, mode, axes, widths = case
        constants = [np.array(widths, I64)]
        if mode == "constant" and with_value:
            constants.append(data((), dtype, seed + 1))
        elif axes is not None:
            constants.append(None)
        if axes is not None:
            constants.append(np.array(axes, I64))
        assert run("Pad", [data(shape, dtype, seed)], constants, {"mode": mode}) == 3
        seen.update([mode, dtype])
        seen["crop"] += min(widths) < 0
        seen["axes"] += axes is not None
        seen["value"] += mode == "constant" and with_value

    check()
    _check_seen(seen, ("constant", "edge", "reflect", "wrap", *DTYPES, "crop", "axes",
                       "value"))


COORDINATES = ("asymmetric", "half_pixel", "align_corners", "pytorch_half_pixel",
               "tf_half_pixel_for_nn", "half_pixel_symmetric")
NEAREST = ("floor", "round_prefer_floor", "round_prefer_ceil", "ceil")


@pytest.mark.parametrize("dtype", ["i8", "f32"])
def test_resize_forms_of_the_lowering_are_exact(dtype):
    """asymmetric/floor and half_pixel/round_prefer_floor, upsampling and downsampling."""
    x = data((2, 3, 5, 4), dtype, 1)
    for coordinates, nearest in (("asymmetric", "floor"), ("half_pixel", "round_prefer_floor")):
        for factors in ([1, 1, 2, 2], [1, 1, 1.5, 0.5], [1, 1, 0.6, 3]):
            attrs = {"mode": "nearest", "coordinate_transformation_mode": coordinates,
                     "nearest_mode": nearest}
            assert run("Resize", [x], [None, np.array(factors, np.float32)], attrs) == 3


@st.composite
def resizes(draw) -> tuple[tuple, list]:
    """A shape and a factor per axis (whole-number factors where an axis has one entry, so
    that no output axis is empty)."""
    shape = draw(shapes(max_rank=4))
    return shape, [draw(st.sampled_from([0.5, 0.6, 1, 1.5, 2, 3] if d > 1 else [1, 2, 3]))
                   for d in shape]


def test_resize_nearest_is_exact():
    seen = Counter()

    @settings(max_examples=EXAMPLES, deadline=None)
    @given(resizes(), st.sampled_from(COORDINATES), st.sampled_from(NEAREST), dtypes, seeds,
           st.booleans())
    @example(((3, 4, 5), [2, 0.6, 1.5]), "half_pixel_symmetric", "ceil", "u8", 1, True)
    @example(((3, 4, 5), [1, 0.6, 3]), "tf_half_pixel_for_nn", "round_prefer_ceil", "i8", 2,
             False)
    @example(((2, 3, 4), [1, 2, 0.5]), "asymmetric", "floor", "f32", 3, True)
    @example(((2, 5, 4), [1, 0.6, 1.5]), "half_pixel", "round_prefer_floor", "f16", 4, False)
    @example(((1, 3, 4), [2, 3, 0.5]), "align_corners", "floor", "i8", 5, True)
    @example(((2, 4, 3), [1, 1.5, 2]), "pytorch_half_pixel", "round_prefer_floor", "u8", 6,
             False)
    def check(case, coordinates, nearest, dtype, seed, by_scales):
        shape, factors = case
        attrs = {"mode": "nearest", "coordinate_transformation_mode": coordinates,
                 "nearest_mode": nearest}
        if by_scales:
            constants = [None, np.array(factors, np.float32)]
        else:
            sizes = [max(1, round(d * f)) for d, f in zip(shape, factors, strict=True)]
            constants = [None, None, np.array(sizes, I64)]
        assert run("Resize", [data(shape, dtype, seed)], constants, attrs) == 3
        seen.update([coordinates, nearest, dtype, "scales" if by_scales else "sizes"])

    check()
    _check_seen(seen, (*COORDINATES, *NEAREST, *DTYPES, "scales", "sizes"))


@st.composite
def gathers(draw):
    shape = draw(shapes(max_rank=4))
    rank = len(shape)
    return (shape, draw(st.integers(-rank, rank - 1)),
            draw(st.sampled_from([(), (3,), (2, 2)])), draw(st.sampled_from(["int64", "int32"])))


def test_gather_is_exact():
    seen = Counter()

    @settings(max_examples=EXAMPLES, deadline=None)
    @given(gathers(), dtypes, seeds)
    @example(((4, 5), -1, (2, 2), "int32"), "f32", 1)
    @example(((6,), 0, (), "int64"), "u8", 2)
    @example(((3, 4, 2), 1, (3,), "int64"), "f16", 3)
    @example(((2, 3), -2, (3,), "int32"), "i8", 4)
    def check(case, dtype, seed):
        shape, axis, index_shape, index_dtype = case
        d = shape[axis]
        rng = np.random.default_rng(seed)
        indices = rng.integers(-d, d, index_shape).astype(index_dtype)
        assert run("Gather", [data(shape, dtype, seed)], [indices], {"axis": axis}) == 3
        seen.update([dtype, f"indices rank {len(index_shape)}", indices.dtype.name])
        seen["negative index"] += bool((indices < 0).any())
        seen["negative axis"] += axis < 0

    check()
    _check_seen(seen, (*DTYPES, "indices rank 0", "indices rank 1", "indices rank 2", "int32",
                       "int64", "negative index", "negative axis"))


def _parts(op: str, xs: list[np.ndarray], constants: list, attrs: dict) -> list[int]:
    """The ``items`` of the calls of one ``op`` node, after checking it is exact."""
    assert run(op, xs, constants, attrs) == 3
    g = Graph(op)
    inputs = [g.add_input(f"x{i}", TensorType(_code(x.dtype), x.shape))
              for i, x in enumerate(xs)]
    inputs += [g.add_constant(np.asarray(c), f"c{i}") for i, c in enumerate(constants)]
    g.set_outputs(list(g.add_node(op, inputs, attrs).outputs))
    program = Program(bound(g, tuple(x.shape for x in xs)))
    return [call.items for segment in program.segments for _, call in segment.calls]


def test_large_copies_split_into_parts():
    """Long contiguous runs are cut into pieces and long strided rows into blocks, so that two
    threads share even a batch of one."""
    pieces = [data((1, 3, 100, 300), "f32", 1), data((1, 2, 100, 300), "f32", 2)]
    assert _parts("Concat", pieces, [], {"axis": 1}) == [6, 4]  # one block: 64 KiB chunks
    pieces = [data((2, 3, 100, 300), "f32", 1), data((2, 2, 100, 300), "f32", 2)]
    assert _parts("Concat", pieces, [], {"axis": 1}) == [12, 8]  # 360000 = 6 x 60000 bytes
    strided = data((140001,), "i8", 3)
    slicing = [np.array([0], I64), np.array([140001], I64), np.array([0], I64),
               np.array([2], I64)]
    assert _parts("Slice", [strided], slicing, {}) == [2]  # 70001 entries: 65536 + 4465
    flat = data((3, 200, 131), "f32", 4)
    # a reshape of a computed value is an alias of its bytes in the arena: nothing is copied
    assert _parts("Reshape", [flat], [np.array([-1], I64)], {}) == []
