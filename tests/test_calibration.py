"""Observe, insert-observers and calibration: observers keep the outputs bit-identical and are
idempotent; every form of calibration data gives the same statistics; wrong data is refused
before the model runs; the cache skips the model on a hit and recomputes on a miss."""

from __future__ import annotations

import json
import tracemalloc
from importlib import resources

import numpy as np
import pytest
from hypothesis import given
from qcompiler.passes.observe import activations, insert_observers, strip_observers

import qcompiler as qc
from qcompiler.calibration import (
    DEFAULT_BATCH,
    Calibration,
    calibrate,
    calibration_batches,
    graph_hash,
)
from qcompiler.interpreter import Interpreter
from qcompiler.observers import METHODS, TensorStats
from qcompiler.testing import assert_equivalent, graphs, pass_property
from qcompiler.types import DType, TensorType

EXAMPLES = resources.files("qcompiler.examples")
DATA = np.load(EXAMPLES / "digits.npz")
CALIB = DATA["calib_x"]  # 256 digits, f32[256,1,8,8]

TWO_INPUTS = """graph two(%a: f32[N,3], %b: f32[N,3]) {
  %s: f32[N,3] = Add(%a, %b) @add
  return %s
}"""
FIXED_BATCH = """graph fixed(%x: f32[4,3]) {
  %y: f32[4,3] = Relu(%x) @relu
  return %y
}"""
LOG = """graph log(%x: f32[N,3]) {
  %y: f32[N,3] = Log(%x) @log
  %z: f32[N,3] = Relu(%y) @relu
  return %z
}"""


@pytest.fixture(scope="module")
def digits():
    return qc.optimize(qc.load_onnx(EXAMPLES / "digits_convnet.onnx"))


@pytest.fixture
def runs(monkeypatch):
    """How many times an Interpreter ran a batch."""
    count = {"runs": 0}
    real = Interpreter.run

    def counting(self, feeds):
        count["runs"] += 1
        return real(self, feeds)

    monkeypatch.setattr(Interpreter, "run", counting)
    return count


def batches_of(x, size=DEFAULT_BATCH):
    return [{"image": x[i:i + size]} for i in range(0, len(x), size)]


# -- the Observe op and insert-observers ---------------------------------------------------------


def test_observe_is_an_identity_on_floats_only():
    g = qc.Graph("g")
    x = g.add_input("x", TensorType(DType.F32, ("N", 3)))
    node = g.add_node("Observe", [x])
    assert node.outputs[0].type == x.type
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert Interpreter(g).run_node(node, [a])[0] is a
    i = g.add_input("i", TensorType(DType.I64, (3,)))
    with pytest.raises(qc.ShapeInferenceError, match="only float activations are observed"):
        g.add_node("Observe", [i])


def test_insert_observers_on_the_demo_model(digits):
    result = qc.PassManager("insert-observers").run(digits)
    observed = result.graph
    assert result.stats == {"insert-observers: observers": 8}
    assert sorted(n.inputs[0].name for n in observed.find_nodes("Observe")) == sorted(
        ["image", "conv1_out", "conv2_out", "pool2", "conv3_out", "flat", "fc1_relu", "logits"])
    # every compute node reads observed values; the graph output keeps its name
    assert all(v.producer.op == "Observe" for n in observed.nodes if n.op != "Observe"
               for v in n.inputs if v is not None and not v.is_constant)
    assert [v.name for v in observed.outputs] == ["logits"]
    assert_equivalent(digits, observed, {"image": CALIB[:64]}, rtol=0, atol=0)
    again = qc.PassManager("insert-observers").run(observed)
    assert not again.changed and again.graph == observed
    stripped = observed.copy()
    assert strip_observers(stripped) == 8 and stripped == digits


# outputs bit-identical (tolerance 0) on random graphs, and the pass fired
test_insert_observers_keeps_the_outputs = pass_property("insert-observers", graphs(), rtol=0,
                                                        atol=0)


@given(graphs())
def test_insert_observers_is_idempotent_and_strip_undoes_it(graph):
    original = graph.copy()
    wanted = {v.name for v in activations(graph)}
    assert insert_observers(graph) == len(wanted) > 0
    assert {n.inputs[0].name for n in graph.find_nodes("Observe")} == wanted
    graph.verify()
    observed = graph.copy()
    assert insert_observers(graph) == 0 and graph == observed
    assert strip_observers(graph) == len(wanted)
    assert graph == original


def test_constants_and_integer_values_are_not_observed():
    g = qc.parse("""graph g(%x: f32[2,3], %i: i64[2]) {
  %w: f32[3,3] = const dense<[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]>
  %y: f32[2,3] = MatMul(%x, %w) @mm
  %s: i64[1] = Shape(%i) @shape
  return %y, %s
}""")
    insert_observers(g)
    assert [n.inputs[0].name for n in g.find_nodes("Observe")] == ["x", "y"]


# -- calibration data ----------------------------------------------------------------------------


def _same(a: Calibration, b: Calibration) -> None:
    assert set(a) == set(b)
    for name in a:
        assert a[name].to_dict() == b[name].to_dict(), name


def test_every_form_of_data_gives_the_same_statistics(digits, tmp_path):
    x = CALIB[:96]
    path = tmp_path / "calib.npz"
    np.savez(path, image=x, labels=DATA["calib_y"][:96])  # labels are not inputs: ignored
    reference = calibrate(digits, batches_of(x))
    assert (reference.samples, reference.batches) == (96, 3)
    for calib in (x, {"image": x}, path, str(path), np.load(path), tuple(batches_of(x)),
                  [b["image"] for b in batches_of(x)], iter(batches_of(x)),
                  (b["image"] for b in batches_of(x))):
        _same(calibrate(digits, calib), reference)


def test_calibration_observes_every_activation_and_leaves_the_graph_alone(digits):
    before = digits.copy()
    result = calibrate(digits, CALIB[:64])
    assert digits == before
    assert sorted(result) == sorted(v.name for v in activations(digits))
    # exact min/max against the values the interpreter computes on the same batches (a
    # batch of another size may round differently)
    seen = {}
    for batch in batches_of(CALIB[:64]):
        held = Interpreter(digits, keep=True)
        held.run(batch)
        for name in result:
            array = held.value(name)
            lo, hi = seen.get(name, (np.inf, -np.inf))
            seen[name] = (min(lo, float(array.min())), max(hi, float(array.max())))
    assert {name: result[name].range("minmax") for name in result} == seen


def test_merged_halves_equal_the_whole(digits):
    whole = calibrate(digits, batches_of(CALIB))
    merged = calibrate(digits, batches_of(CALIB[:128])).merge(
        calibrate(digits, batches_of(CALIB[128:])))
    assert (merged.samples, merged.batches) == (whole.samples, whole.batches) == (256, 8)
    assert set(merged) == set(whole)
    # the min/max and histogram states are identical, so is every range chosen from them (a
    # moving average depends on the batch order by design: its merge is a weighted mean)
    for name in whole:
        for part in ("minmax", "histogram"):
            assert getattr(merged[name], part).to_dict() == getattr(whole[name], part).to_dict()
    for method in METHODS:
        if method != "moving_average":
            assert merged["conv2_out"].range(method) == whole["conv2_out"].range(method), method


def test_calibration_json_round_trip(digits):
    result = calibrate(digits, CALIB[:32])
    back = Calibration.from_json(result.to_json())
    _same(back, result)
    assert (back.samples, back.batches) == (32, 1)
    for text, message in [("{", "invalid JSON at line 1"), ("[]", "not a qcompiler calibration"),
                          ('{"format": "qcompiler-calibration", "version": 9}',
                           "format version 9 is not the supported version 1")]:
        with pytest.raises(qc.CalibrationError, match=message):
            Calibration.from_json(text)


def test_fixed_batch_models_get_batches_of_their_size():
    g = qc.parse(FIXED_BATCH)
    x = np.arange(24, dtype=np.float32).reshape(8, 3)
    assert [b["x"].shape for b in calibration_batches(g, x)] == [(4, 3), (4, 3)]
    with pytest.raises(qc.CalibrationError, match="holds 6 samples, but the model's batch size "
                                                  "is fixed at 4"):
        list(calibration_batches(g, x[:6]))


def test_symbolic_batch_uses_the_default_size(digits):
    sizes = [len(b["image"]) for b in calibration_batches(digits, CALIB[:70])]
    assert sizes == [DEFAULT_BATCH, DEFAULT_BATCH, 70 - 2 * DEFAULT_BATCH]


# -- bad data: refused before the model runs -----------------------------------------------------


def _with(x, index, value):
    x = x.copy()
    x[index] = value
    return x


@pytest.mark.parametrize(("value", "what"), [(np.nan, "NaN"), (np.inf, "\\+Inf"),
                                             (-np.inf, "-Inf")])
def test_non_finite_data_names_the_input_and_the_sample(digits, runs, value, what):
    bad = _with(CALIB[:96], (37, 0, 2, 5), value)
    message = (f"calibration input 'image' holds {what} in sample 37 \\(batch 1, element "
               f"\\[5, 0, 2, 5\\]\\)")
    for calib in (bad, batches_of(bad)):
        with pytest.raises(qc.CalibrationError, match=message):
            calibrate(digits, calib)
    assert runs["runs"] == 0  # checked before anything ran


def test_a_generator_is_checked_batch_by_batch_and_nothing_is_cached(digits, runs, tmp_path):
    bad = _with(CALIB[:96], (70, 0, 0, 0), np.nan)
    cache = tmp_path / "calib.json"
    with pytest.raises(qc.CalibrationError, match="'image' holds NaN in sample 70 \\(batch 2"):
        calibrate(digits, iter(batches_of(bad)), cache=cache)
    assert runs["runs"] == 2 and not cache.exists()
    runs["runs"] = 0
    wrong = batches_of(CALIB[:64]) + [{"image": CALIB[:32].astype(np.float64)}]
    with pytest.raises(qc.CalibrationError, match="calibration batch 2: input 'image' must be "
                                                  "f32 \\(float32\\), got float64"):
        calibrate(digits, iter(wrong), cache=cache)
    assert runs["runs"] == 2 and not cache.exists()


def test_non_finite_values_computed_inside_the_graph_name_the_node(runs):
    g = qc.parse(LOG)
    x = np.ones((40, 3), np.float32)
    x[35, 1] = 0.0  # log(0) = -inf in the second batch
    with pytest.raises(qc.CalibrationError, match="%y \\(Log node 'log' -> %y\\) in calibration "
                                                  "batch 1 \\(samples 32 to 39\\)"):
        calibrate(g, x)
    assert runs["runs"] == 2


@pytest.mark.parametrize("calib", [[], iter([]), np.zeros((0, 1, 8, 8), np.float32),
                                   {"image": np.zeros((0, 1, 8, 8), np.float32)}],
                         ids=["list", "generator", "array", "mapping"])
def test_empty_calibration_data(digits, runs, calib):
    with pytest.raises(qc.CalibrationError, match="the calibration data is empty"):
        calibrate(digits, calib)
    assert runs["runs"] == 0


@pytest.mark.parametrize(("calib", "message"), [
    ([{"img": CALIB[:8]}], "calibration batch 0: unknown input\\(s\\) 'img'; the model's "
                           "inputs are: image \\(f32\\[N,1,8,8\\]\\)"),
    ({"image": CALIB[:8], "labels": DATA["calib_y"][:8]},
     "the calibration data: unknown input\\(s\\) 'labels'"),
    ([{"image": CALIB[:8]}, {"image": CALIB[:8].astype(np.float16)}],
     "calibration batch 1: input 'image' must be f32 \\(float32\\), got float16"),
    ([CALIB[:8, 0]], "calibration batch 0: input 'image' must have rank 4 "
                     "\\(f32\\[N,1,8,8\\]\\), got shape \\[8, 8, 8\\]"),
    (CALIB[:64, :, :4], "input 'image' must have shape f32\\[N,1,8,8\\], got \\[32, 1, 4, 8\\] "
                        "\\(dimension 2 is 4, not 8\\)"),
    ([{"image": CALIB[:8]}, {}], "calibration batch 1: input 'image' \\(f32\\[N,1,8,8\\]\\) is "
                                 "missing"),
    ([np.zeros((0, 1, 8, 8), np.float32)], "calibration batch 0 holds no samples"),
    (3.5, "must be an iterable of \\{input name: array\\} dicts, of arrays \\(single-input "
          "models\\), or a path to an .npz file; got float"),
])
def test_wrong_data_is_refused_before_the_model_runs(digits, runs, calib, message):
    with pytest.raises(qc.CalibrationError, match=message):
        calibrate(digits, calib)
    assert runs["runs"] == 0


def test_an_npz_without_the_inputs_lists_what_it_holds(digits, runs):
    with pytest.raises(qc.CalibrationError, match="digits.npz' has no array for input\\(s\\) "
                                                  "'image'; it holds 'calib_x', 'calib_y', "
                                                  "'test_x', 'test_y'"):
        calibrate(digits, str(EXAMPLES / "digits.npz"))
    with pytest.raises(qc.CalibrationError, match="no such file"):
        calibrate(digits, "missing.npz")
    assert runs["runs"] == 0


def test_arrays_need_a_single_input_model(runs):
    g = qc.parse(TWO_INPUTS)
    a = np.ones((4, 3), np.float32)
    for calib in ([a, a], a):
        with pytest.raises(qc.CalibrationError, match="fits a model with one input, but this "
                                                      "one has 2: a \\(f32\\[N,3\\]\\), b "
                                                      "\\(f32\\[N,3\\]\\)"):
            calibrate(g, calib)
    with pytest.raises(qc.CalibrationError, match="the inputs hold different numbers of "
                                                  "samples \\(a: 4, b: 3\\)"):
        calibrate(g, {"a": a, "b": a[:3]})
    assert runs["runs"] == 0
    result = calibrate(g, [{"a": a, "b": 2 * a}])
    assert [result[v].range("minmax") for v in "abs"] == [(1.0, 1.0), (2.0, 2.0), (3.0, 3.0)]
    assert result.samples == 4


# -- the cache -----------------------------------------------------------------------------------


def test_cache_hit_miss_and_stale_key(digits, runs, tmp_path):
    cache = tmp_path / "calib.json"
    first = calibrate(digits, CALIB[:64], cache=cache)
    assert runs["runs"] == 2 and cache.exists()
    # the same graph and data (another copy of each): no run
    hit = calibrate(digits.copy(), CALIB[:64].copy(), cache=cache)
    assert runs["runs"] == 2
    _same(hit, first)
    # other data: a miss, computed and written in place of the old entry
    other = calibrate(digits, CALIB[64:128], cache=cache)
    assert runs["runs"] == 4
    _same(calibrate(digits, CALIB[64:128], cache=cache), other)
    assert runs["runs"] == 4
    # another graph, or other bins: stale
    changed = digits.copy()
    changed.rename_node(changed.nodes[0], "renamed")
    calibrate(changed, CALIB[64:128], cache=cache)
    assert runs["runs"] == 6
    calibrate(changed, CALIB[64:128], cache=cache, bins=512)
    assert runs["runs"] == 8
    # a corrupt cache is recomputed and rewritten
    cache.write_text("{not json")
    calibrate(changed, CALIB[64:128], cache=cache, bins=512)
    assert runs["runs"] == 10
    assert json.loads(cache.read_text())["calibration"]["samples"] == 64
    assert [p.name for p in tmp_path.iterdir()] == ["calib.json"]  # no temporary files left


def test_a_generator_refreshes_the_cache_that_a_list_then_hits(digits, runs, tmp_path):
    cache = tmp_path / "calib.json"
    streamed = calibrate(digits, iter(batches_of(CALIB[:64])), cache=cache)
    assert runs["runs"] == 2
    _same(calibrate(digits, batches_of(CALIB[:64]), cache=cache), streamed)
    assert runs["runs"] == 2


def test_cache_that_cannot_be_written(digits, tmp_path):
    with pytest.raises(qc.SaveError, match="cannot write the calibration cache"):
        calibrate(digits, CALIB[:32], cache=tmp_path)  # a directory
    assert list(tmp_path.iterdir()) == []


def test_graph_hash_covers_constants(digits):
    changed = digits.copy()
    name = next(iter(changed.constants))
    const = changed.constants[name]
    const.data = np.array(const.data) + np.float32(1)
    assert changed.to_text() == digits.to_text() and graph_hash(changed) != graph_hash(digits)


# -- progress bar --------------------------------------------------------------------------------


def test_progress_bar_only_when_asked_or_on_a_terminal(digits, capsys):
    calibrate(digits, CALIB[:64])
    assert capsys.readouterr().err == ""  # stderr is not a terminal here
    calibrate(digits, CALIB[:64], progress=True)
    assert "calibrating" in capsys.readouterr().err


def test_tensor_stats_per_value_use_the_bins_asked_for(digits):
    result = calibrate(digits, CALIB[:32], bins=256)
    assert all(isinstance(s, TensorStats) for s in result.values())
    assert result.to_dict()["stats"]["image"] == result["image"].to_dict()


def test_memory_does_not_grow_with_the_number_of_batches():
    """A generator's batches are observed and dropped: the peak is that of one batch."""
    g = qc.parse(LOG)
    rng = np.random.default_rng(0)

    def stream(n):  # every batch spans [0.5, 2], so the histograms keep their span
        for _ in range(n):
            x = rng.uniform(0.5, 2.0, (256, 3)).astype(np.float32)
            x[0], x[1] = 0.5, 2.0
            yield {"x": x}

    calibrate(g, stream(2))  # one-time allocations (imports, caches) out of the way
    peaks = {}
    tracemalloc.start()
    try:
        for n in (10, 100):
            tracemalloc.reset_peak()
            start = tracemalloc.get_traced_memory()[0]
            assert calibrate(g, stream(n)).batches == n
            peaks[n] = tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()
    # Keeping the batches would add 90 * 3 KiB; the peaks measured differ by up to 16 KiB
    # either way (Python's own allocations), so the bound is 10 batches.
    assert peaks[100] < peaks[10] + 10 * 256 * 3 * 4, peaks
