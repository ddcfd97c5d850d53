"""The LLVM runtime: schedule, arena, fallbacks, threads, guards, and the backend's contract."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from llvm_harness import assert_native_exact
from qcompiler.backends.llvm import bound
from qcompiler.backends.llvm.kernel import Buffer, Call, Context, Int, emitter
from qcompiler.backends.llvm.runtime import Program

import qcompiler as qc
from qcompiler.errors import BackendError
from qcompiler.graph import Graph
from qcompiler.types import TensorType


def _lookups(rows="N") -> Graph:
    rng = np.random.default_rng(0)
    g = Graph("luts")
    x = g.add_input("x", TensorType("i8", (rows, 7)))
    first = g.add_node("LookupTable", [x, g.add_constant(
        rng.integers(0, 256, 256).astype(np.uint8), "t1")])
    second = g.add_node("LookupTable", [first.outputs[0], g.add_constant(
        rng.integers(-128, 128, 256).astype(np.int8), "t2")])
    g.set_outputs([second.outputs[0], first.outputs[0], x])
    return g


def _codes(rows: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-128, 128, (rows, 7)).astype(np.int8)


def test_a_native_graph_is_one_segment_and_exact():
    g = _lookups()
    compared = assert_native_exact(g, [{"x": _codes(n, n)} for n in (0, 1, 5, 300)])
    assert compared == 12
    program = Program(bound(g, ((5, 7),)))
    assert len(program.steps) == 1 and not program.fallbacks


def test_more_threads_than_cores_stay_exact():
    # 8 threads on a 2-core machine, rows split into uneven and empty slices: every thread
    # passes every barrier and the outputs are exact. (That waiters yield their core rather
    # than spin is a matter of speed, which tests do not time.)
    g = _lookups()
    feeds = [{"x": _codes(n, n)} for n in (3, 8, 301)]
    assert assert_native_exact(g, feeds, targets=("host",), threads=(8,)) == 3


def test_a_segment_with_little_work_runs_on_the_calling_thread_alone(monkeypatch):
    """Handing out a few microseconds of work to other threads costs more than it saves: such
    a segment never reaches the thread pool; one with enough work is split; both give the
    numpy backend's outputs."""
    from qcompiler.backends.llvm import runtime

    small = Program(bound(_lookups(), ((5, 7),)), threads=2)
    assert small.segments[0].work < runtime.PARALLEL_WORK
    submitted = []
    monkeypatch.setattr(small._pool, "submit", lambda *a: submitted.append(a))
    got = small.run([_codes(5)])  # code built for two threads, run by one
    assert not submitted
    small.close()
    want = qc.compile(_lookups()).run({"x": _codes(5)})
    for value, array in zip(_lookups().outputs, got, strict=True):
        np.testing.assert_array_equal(array, want[value.name])
    rows = runtime.PARALLEL_WORK // 14 + 1  # two lookups of 7 columns: 14 elements a row
    large = Program(bound(_lookups(), ((rows, 7),)), threads=2)
    assert large.segments[0].work >= runtime.PARALLEL_WORK
    calls = []
    submit = large._pool.submit
    monkeypatch.setattr(large._pool, "submit", lambda *a: calls.append(a) or submit(*a))
    got = large.run([_codes(rows)])
    assert len(calls) == 1
    large.close()
    want = qc.compile(_lookups()).run({"x": _codes(rows)})
    for value, array in zip(_lookups().outputs, got, strict=True):
        np.testing.assert_array_equal(array, want[value.name])


def test_nodes_without_a_kernel_run_their_numpy_kernel_between_segments():
    g = Graph("mixed")
    x = g.add_input("x", TensorType("f32", ("N", 7)))
    erf = g.add_node("Erf", [x])
    q = g.add_node("QuantizeLinear", [erf.outputs[0], g.add_constant(np.float32(0.05), "s"),
                                      g.add_constant(np.int8(3), "zp")])
    lut = g.add_node("LookupTable", [q.outputs[0], g.add_constant(
        np.arange(256).astype(np.uint8)[::-1].copy(), "t")])
    g.set_outputs([lut.outputs[0]])
    exe = qc.compile(g, backend="llvm")
    x = np.random.default_rng(1).normal(size=(9, 7)).astype(np.float32)
    np.testing.assert_array_equal(exe(x), qc.compile(g)(x))
    assert [f.node.op for f in exe.fallbacks()] == ["Erf"]
    assert "no LLVM kernel" in exe.fallbacks()[0].reason


def test_concurrent_runs_share_one_executable():
    g = _lookups()
    exe, ref = qc.compile(g, backend="llvm", threads=2), qc.compile(g)
    bad = []

    def work(seed: int) -> None:
        for i in range(100):
            x = _codes(64, seed * 1000 + i)
            if not all(np.array_equal(a, b) for a, b in zip(exe(x), ref(x))):
                bad.append(i)

    workers = [threading.Thread(target=work, args=(s,)) for s in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert bad == []


def test_guards_catch_a_kernel_writing_past_its_output():
    def overrun(name: str) -> str:
        return f"""
define void @{name}(i64 %begin, i64 %end, ptr %y, i64 %n) {{
  %past = getelementptr i8, ptr %y, i64 %n
  store i8 1, ptr %past
  ret void
}}"""

    @emitter("Overrun.test")
    def emit(node, ctx: Context):
        fn = ctx.function("overrun", (), overrun)
        count = int(np.prod(node.outputs[0].shape))
        return [Call(fn, (Buffer(node.outputs[0].name), Int(count)))]

    g = _lookups(rows=3)
    node = g.nodes[0]
    node.op = "Overrun.test"  # the first lookup's kernel writes one byte past its output
    program = Program(g, check=True)
    with pytest.raises(BackendError, match="outside"):
        program.run([_codes(3)])


def test_threads_must_be_a_whole_number():
    with pytest.raises(BackendError, match="threads"):
        qc.compile(_lookups(), backend="llvm", threads=0)


def test_compiled_code_is_cached_and_a_damaged_entry_is_compiled_again(tmp_path, monkeypatch):
    monkeypatch.setenv("QCOMPILER_CACHE_DIR", str(tmp_path))
    g = bound(_lookups(), ((6, 7),))
    x = [_codes(6)]
    first = Program(g)
    expected = first.run(x)
    assert not first.cached and len(list(tmp_path.glob("*.o"))) == 1
    second = Program(bound(_lookups(), ((6, 7),)))
    assert second.cached and second.cache_key == first.cache_key
    for a, b in zip(second.run(x), expected, strict=True):
        np.testing.assert_array_equal(a, b)
    assert Program(g, threads=2).cache_key != first.cache_key  # the arena differs
    entry = tmp_path / f"{first.cache_key}.o"
    entry.write_bytes(entry.read_bytes()[:-7])  # truncated
    third = Program(g)
    assert not third.cached
    for a, b in zip(third.run(x), expected, strict=True):
        np.testing.assert_array_equal(a, b)
    assert Program(g).cached  # replaced by a whole entry


def _parallel_convs(count: int = 4, weights: np.ndarray | None = None,
                    copies: bool = False) -> Graph:
    """``count`` equal convolutions of one input: many workspace blocks of equal sizes; with
    ``weights``, every convolution's weights are that array (one object), or copies of it."""
    rng = np.random.default_rng(1)
    g = Graph("convs")
    x = g.add_input("x", TensorType("u8", (1, 6, 9, 9)))
    outs = []
    for i in range(count):
        w = (rng.integers(-128, 128, (5, 6, 3, 3)).astype(np.int8) if weights is None
             else weights.copy() if copies else weights)
        node = g.add_node("IntConv", [x, g.add_constant(w, f"w{i}"),
                                      g.add_constant(np.float64(1e-3)),
                                      g.add_constant(np.uint8(7)), g.add_constant(np.int8(0))],
                          {"pads": (1, 1, 1, 1)})
        outs.append(node.outputs[0])
    g.set_outputs(outs)
    return g


@pytest.mark.parametrize("check", [False, True])
def test_a_graph_is_laid_out_the_same_by_every_compilation(tmp_path, monkeypatch, check):
    """The arena's offsets are baked into the machine code that the cache shares between
    processes: two compilations of one graph (both alive, so nothing of this process such as
    an object's id can coincide) must place every block, workspaces included, at the same
    offsets, and the code loaded from the cache must run exactly, guards intact."""
    monkeypatch.setenv("QCOMPILER_CACHE_DIR", str(tmp_path))
    first = Program(bound(_parallel_convs(), ((1, 6, 9, 9),)), check=check)
    second = Program(bound(_parallel_convs(), ((1, 6, 9, 9),)), check=check)
    assert not first.cached and second.cached
    assert len([n for n in first.plan.offsets if n.startswith("scratch.")]) >= 8
    assert first.plan.offsets == second.plan.offsets
    assert sorted(first._scratch_at.values()) == sorted(second._scratch_at.values())
    x = [np.random.default_rng(2).integers(0, 256, (1, 6, 9, 9)).astype(np.uint8)]
    for a, b in zip(first.run(x), second.run(x), strict=True):
        np.testing.assert_array_equal(a, b)
    first.close()
    second.close()


@pytest.mark.parametrize("first_shared", [True, False])
def test_equal_constants_are_laid_out_alike_whether_or_not_they_are_one_array(
        tmp_path, monkeypatch, first_shared):
    """The cache key sees constants by name and bytes: a graph whose layers share one weight
    array and the same graph with copies of it have one key, so they must have one constants
    layout (the offsets are baked into the shared code), and each must run exactly with the
    code the other compiled."""
    monkeypatch.setenv("QCOMPILER_CACHE_DIR", str(tmp_path))
    w = np.random.default_rng(3).integers(-128, 128, (5, 6, 3, 3)).astype(np.int8)
    w.setflags(write=False)  # kept as it is by add_constant: one object for every layer

    first = _parallel_convs(2, w, copies=not first_shared)
    second = _parallel_convs(2, w, copies=first_shared)
    compiled = Program(bound(first, ((1, 6, 9, 9),)))
    loaded = Program(bound(second, ((1, 6, 9, 9),)))
    assert not compiled.cached and loaded.cached
    assert compiled.constants.size == loaded.constants.size
    x = np.random.default_rng(4).integers(0, 256, (1, 6, 9, 9)).astype(np.uint8)
    want = qc.compile(second).run({"x": x})
    for value, got in zip(second.outputs, loaded.run([x]), strict=True):
        np.testing.assert_array_equal(got, want[value.name])
    compiled.close()
    loaded.close()


def test_a_program_specialised_differently_never_loads_another_ones_code(tmp_path,
                                                                         monkeypatch):
    """The cache key holds the program's segment functions (kernels and offsets), not only the
    graph: the same graph emitted another way (here Winograd's channel threshold moved, so its
    convolutions take the im2col GEMM) must compile its own code, and run exactly."""
    from qcompiler.backends.llvm.kernels import winograd

    monkeypatch.setenv("QCOMPILER_CACHE_DIR", str(tmp_path))
    winograd_program = Program(bound(_parallel_convs(2), ((1, 6, 9, 9),)))
    monkeypatch.setattr(winograd, "MIN_CHANNELS", 10**9)
    gemm_program = Program(bound(_parallel_convs(2), ((1, 6, 9, 9),)))
    names = [{call.function.name.rsplit("_", 1)[0] for segment in p.segments
              for _, call in segment.calls} for p in (winograd_program, gemm_program)]
    assert names == [{"qc_int_conv_winograd"}, {"qc_int_conv_pmaddwd"}]
    assert not gemm_program.cached and gemm_program.cache_key != winograd_program.cache_key
    x = np.random.default_rng(5).integers(0, 256, (1, 6, 9, 9)).astype(np.uint8)
    want = qc.compile(_parallel_convs(2)).run({"x": x})
    for program in (winograd_program, gemm_program):
        for value, got in zip(_parallel_convs(2).outputs, program.run([x]), strict=True):
            np.testing.assert_array_equal(got, want[value.name])
        program.close()


def test_the_cache_can_be_off(monkeypatch, tmp_path):
    monkeypatch.setenv("QCOMPILER_CACHE_DIR", "off")
    g = bound(_lookups(), ((2, 7),))
    assert not Program(g).cached and not Program(g).cached
    monkeypatch.setenv("QCOMPILER_CACHE_DIR", str(tmp_path / "file"))
    (tmp_path / "file").write_text("not a directory")
    assert not Program(g).cached  # unwritable: compiled every time, no error


def test_reshapes_alias_their_input_and_keep_it_alive():
    g = Graph("aliases")
    x = g.add_input("x", TensorType("i8", (4, 6)))
    flat = g.add_node("Flatten", [x], {"axis": 0}).outputs[0]
    table = g.add_constant(np.arange(256).astype(np.uint8)[::-1].copy(), "t")
    lut = g.add_node("LookupTable", [x, table]).outputs[0]
    shaped = g.add_node("Reshape", [lut, g.add_constant(np.array([3, 8]), "shape")]).outputs[0]
    again = g.add_node("Unsqueeze", [shaped, g.add_constant(np.array([0]), "axes")]).outputs[0]
    last = g.add_node("LookupTable", [again, table]).outputs[0]
    g.set_outputs([last, flat, again])
    program = Program(g)
    assert program.where[again.name] == program.where[lut.name]
    assert program.where[flat.name] == program.where[x.name]
    assert not program.fallbacks and len(program.segments) == 1
    assert assert_native_exact(g, [{"x": _codes(4, 3)[:, :6]}]) == 3
