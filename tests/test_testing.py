"""qcompiler.testing: every builder makes verified, runnable graphs; inputs and quant_params
draw what they promise; assert_equivalent's tolerances and messages; pass_property catches a
wrong pass and passes a correct one."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import Phase, find, given, settings
from hypothesis import strategies as st

import qcompiler.testing as qt
from qcompiler.graph import Graph, Value
from qcompiler.pass_manager import Pass, PassResult, register_pass
from qcompiler.types import DType, QuantParams, TensorType

# The builders the kit promises, and an op each one's structure must contain.
REQUIRED = {
    "conv": "Conv", "conv_transpose": "ConvTranspose", "gemm": "Gemm", "matmul": "MatMul",
    "flatten": "Flatten", "global_average_pool": "GlobalAveragePool", "max_pool": "MaxPool",
    "average_pool": "AveragePool", "bn": "BatchNormalization",
    "conv_bn": "BatchNormalization", "conv_transpose_bn": "BatchNormalization",
    "gemm_bn": "BatchNormalization", "matmul_bn": "BatchNormalization", "relu": "Relu",
    "clip": "Clip", "leaky_relu": "LeakyRelu", "hard_sigmoid": "HardSigmoid",
    "hard_swish": "HardSwish", "sigmoid": "Sigmoid", "tanh": "Tanh",
    "hard_swish_decomposed": "Clip", "hard_sigmoid_decomposed": "Clip", "add_const": "Add",
    "mul_const": "Mul", "sub_const": "Sub", "div_const": "Div", "bias_add": "Add",
    "conv_mul_const": "Mul", "residual_add": "Add", "add": "Add", "mul": "Mul",
    "identity": "Identity", "dropout": "Dropout", "duplicate": None,
    "constant_subexpression": None, "shape_subgraph": "Reshape", "multi_use": None,
    "transpose": "Transpose", "reshape": "Reshape", "concat": "Concat", "softmax": "Softmax",
    "producer_chain": None,
}
# Builders whose first op must read the output of one of these producers.
FOLLOWS = {
    "conv_bn": ("BatchNormalization", {"Conv"}),
    "conv_transpose_bn": ("BatchNormalization", {"ConvTranspose"}),
    "gemm_bn": ("BatchNormalization", {"Gemm"}),
    "matmul_bn": ("BatchNormalization", {"MatMul"}),
    "bias_add": ("Add", {"Conv", "Gemm", "MatMul"}),
    "conv_mul_const": ("Mul", {"Conv"}),
    "residual_add": ("Add", {"Conv"}),
}
QUICK = settings(database=None, phases=[Phase.generate], max_examples=300)
# 41 builders: at most 100 examples each even under the thorough profile (every pass test
# draws from them again), so that the file stays well under a minute.
PER_BUILDER = settings(max_examples=min(settings.default.max_examples, 100))


def test_every_required_builder_is_registered():
    assert set(REQUIRED) <= set(qt.BUILDERS)
    for name in REQUIRED:
        assert qt.BUILDERS[name].doc, f"builder {name} has no docstring"


def _follows(g: Graph, op: str, producers: set[str]) -> bool:
    return any(any(v is not None and v.producer is not None and v.producer.op in producers
                   for v in n.inputs) for n in g.find_nodes(op))


@pytest.mark.parametrize("name", sorted(REQUIRED))
@PER_BUILDER
@given(data=st.data())
def test_builder_makes_verified_runnable_graphs(name, data):
    g = data.draw(qt.graphs(builders=[name], max_steps=3), label="graph")
    g.verify()
    assert g.outputs
    if REQUIRED[name]:
        assert REQUIRED[name] in g.op_counts(), str(g)
    if name in FOLLOWS:
        assert _follows(g, *FOLLOWS[name]), str(g)
    feeds = data.draw(qt.inputs(g), label="inputs")
    out = qt.run_graph(g, feeds)
    assert list(out) == [v.name for v in g.outputs]
    for v in g.outputs:
        array = out[v.name]
        assert array.dtype == v.dtype.np and array.ndim == v.type.rank
        assert all(d == s for d, s in zip(v.shape, array.shape) if isinstance(d, int))
        assert np.isfinite(array).all(), f"{v.name} is not finite in\n{g}"


def test_graphs_reach_the_structures_passes_care_about():
    """Features that must be reachable: each is found within a few hundred examples."""
    def has(op, pred=lambda n: True):
        return lambda g: any(pred(n) for n in g.find_nodes(op))

    cases = [
        (["conv"], has("Conv", lambda n: n.attrs.get("group", 1) == n.inputs[0].shape[1] > 1)),
        (["clip"], has("Clip", lambda n: len(n.inputs) == 2)),
        (["gemm"], has("Gemm", lambda n: n.attrs.get("transA") == 1 and len(n.inputs) == 3)),
        (["hard_swish_decomposed"],
         has("Mul", lambda n: any(v.producer is not None and v.producer.op == "Div"
                                  for v in n.inputs))),
        (["dropout"], has("Dropout", lambda n: len(n.outputs) == 2)),
        (["relu", "conv"], lambda g: any(v.uses for v in g.outputs)),
        (["relu"], lambda g: len(g.inputs) == 2),
    ]
    for builders, predicate in cases:
        find(qt.graphs(builders=builders), predicate, settings=QUICK)


def test_graphs_with_a_symbolic_batch_run():
    @settings(max_examples=20, database=None)
    @given(data=st.data())
    def check(data):
        g = data.draw(qt.graphs(batch=st.just("N"), max_steps=4))
        assert g.inputs[0].shape[0] == "N"
        feeds = data.draw(qt.inputs(g))
        sizes = {a.shape[0] for name, a in feeds.items()
                 if g.value(name).shape[0] == "N"}
        assert len(sizes) == 1
        for array in qt.run_graph(g, feeds).values():
            assert np.isfinite(array).all()

    check()


def test_builder_registry_is_open_and_checked():
    @qt.register_builder("test_swish", ranks=(2, 3, 4))
    def swish(kit: qt.GraphKit, x: Value) -> Value:
        """x * sigmoid(x)."""
        return kit.node("Mul", [x, kit.node("Sigmoid", [x])])

    try:
        g = find(qt.graphs(builders=["test_swish"], max_steps=1), lambda g: True, settings=QUICK)
        assert g.op_counts() == {"Sigmoid": 1, "Mul": 1}
        with pytest.raises(ValueError, match="already registered"):
            qt.register_builder("test_swish")(swish)
    finally:
        del qt.BUILDERS["test_swish"]
    with pytest.raises(KeyError, match="unknown builder.*'nope'"):
        qt.graphs(builders=["conv", "nope"])


def test_importing_qcompiler_does_not_import_hypothesis():
    code = ("import sys, qcompiler, qcompiler.api, qcompiler.graph; "
            "assert 'hypothesis' not in sys.modules, 'hypothesis was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_hypothesis_is_a_clear_import_error():
    code = ("import sys; sys.modules['hypothesis'] = None\n"
            "try:\n    import qcompiler.testing\n"
            "except ImportError as exc:\n    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout
    assert "pip install qcompiler[test]" in out


# ---------------------------------------------------------------------------------------------
# inputs and quant_params


def mixed_inputs_graph() -> Graph:
    g = Graph("mixed")
    for name, dtype, shape in [("a", "f32", ("N", 3, 2)), ("b", "i64", (4,)),
                               ("c", "u8", ("N", "M")), ("d", "bool", (2, "M"))]:
        g.add_input(name, TensorType(dtype, shape))
    g.set_outputs([g.add_node("Relu", [g.inputs[0]]).outputs[0]])
    return g


@given(data=st.data())
def test_inputs_have_the_graph_input_shapes_and_dtypes(data):
    g = mixed_inputs_graph()
    low, high = data.draw(st.sampled_from([(-4.0, 4.0), (0.0, 1.0), (-0.5, 2.5)]))
    feeds = data.draw(qt.inputs(g, low=low, high=high))
    assert list(feeds) == ["a", "b", "c", "d"]
    n, m = feeds["c"].shape
    assert feeds["a"].shape == (n, 3, 2) and feeds["d"].shape == (2, m)
    for name, array in feeds.items():
        assert array.dtype == g.value(name).dtype.np
        if array.dtype != np.bool_:
            assert low <= array.min() and array.max() <= high


def test_inputs_draw_every_distribution():
    g = mixed_inputs_graph()
    strategy = qt.inputs(g)
    find(strategy, lambda f: not f["a"].any(), settings=QUICK)  # all zeros
    find(strategy, lambda f: np.all(f["a"] * 2 == np.round(f["a"] * 2))
         and len(np.unique(f["a"])) < f["a"].size, settings=QUICK)  # grid with ties


@pytest.mark.parametrize("dtype", ["i8", "u8"])
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("symmetric", [False, True])
@given(data=st.data())
def test_quant_params_are_valid_in_every_flavour(dtype, per_channel, symmetric, data):
    channels = data.draw(st.integers(1, 6))
    q = data.draw(qt.quant_params(dtype=dtype, per_channel=per_channel, channels=channels,
                                  symmetric=symmetric))
    assert isinstance(q, QuantParams) and q.problems() == []
    assert q.dtype == DType(dtype) and q.per_channel == per_channel
    assert len(q.scale) == (channels if per_channel else 1)
    assert all(1e-4 <= s <= 1e2 for s in q.scale)
    if symmetric and dtype == "i8":
        assert set(q.zero_point) == {0} and (q.qmin, q.qmax) == (-127, 127)
    if symmetric and dtype == "u8":
        assert set(q.zero_point) == {128}


@given(qt.quant_params())
def test_quant_params_drawn_freely_are_valid(q):
    assert q.problems() == []


# ---------------------------------------------------------------------------------------------
# assert_equivalent


def unary_graph(op: str, shape=(2, 3), const=None, attrs=None, dtype="f32", out_types=None,
                name="y") -> Graph:
    """x -> op(x[, const]) named ``name``."""
    g = Graph(op)
    x = g.add_input("x", TensorType(dtype, shape))
    operands = [x] if const is None else [x, g.add_constant(np.asarray(const), "c")]
    y = g.add_node(op, operands, attrs, outputs=[name], types=out_types).outputs[0]
    g.set_outputs([y])
    g.verify()
    return g


def conv_graph(scale: float = 1.0) -> Graph:
    rng = np.random.default_rng(0)
    g = Graph("conv")
    x = g.add_input("x", TensorType("f32", (1, 2, 4, 4)))
    w = g.add_constant((rng.normal(0, 0.5, (3, 2, 3, 3)) * scale).astype(np.float32), "w")
    y = g.add_node("Conv", [x, w], {"pads": (1, 1, 1, 1)}, outputs=["y"]).outputs[0]
    g.set_outputs([y])
    return g


X = {"x": np.random.default_rng(1).uniform(-1, 1, (1, 2, 4, 4)).astype(np.float32)}


def test_identical_graphs_are_equivalent():
    g = conv_graph()
    qt.assert_equivalent(g, g.copy(), X)


def test_a_perturbed_constant_fails_beyond_the_tolerance_and_passes_within():
    with pytest.raises(AssertionError) as info:
        qt.assert_equivalent(conv_graph(), conv_graph(1.001), X)
    message = str(info.value)
    for part in ["output 'y'", "max |g1 - g2| =", "> tolerance", "worst at index (0, ",
                 "g1 = ", "g2 = ", "out of tolerance"]:
        assert part in message, message
    qt.assert_equivalent(conv_graph(), conv_graph(1 + 2e-7), X)
    qt.assert_equivalent(conv_graph(), conv_graph(1.001), X, rtol=1e-2)


def test_tolerance_is_relative_to_the_largest_magnitude():
    big = {"x": np.array([[1000.0, 1e-3, 0.0]], np.float32)}
    small = {"x": np.array([[1.0, 1e-3, 0.0]], np.float32)}
    g1 = unary_graph("Add", (1, 3), np.zeros(3, np.float32))
    g2 = unary_graph("Add", (1, 3), np.array([0, 1e-3, 0], np.float32))
    # 1e-3 is 100% of the element but 1e-6 of the tensor's largest magnitude
    qt.assert_equivalent(g1, g2, big)
    with pytest.raises(AssertionError, match=r"worst at index \(0, 1\).*1/3 elements"):
        qt.assert_equivalent(g1, g2, small)


def with_quant(g: Graph, quant: QuantParams | None) -> Graph:
    """The graph's output retyped with ``quant`` (how a fake-quantized output is typed)."""
    y = g.outputs[0]
    y.type = TensorType(y.dtype, y.shape, quant)
    g.verify()
    return g


def test_steps_on_float_outputs_use_the_output_scale_of_g2():
    feeds = {"x": np.zeros((1, 3), np.float32)}
    g1 = unary_graph("Add", (1, 3), np.zeros(3, np.float32))
    g2 = unary_graph("Add", (1, 3), np.array([0.09, -0.18, 0.27], np.float32))
    per_tensor = QuantParams((0.1,), (0,))
    qt.assert_equivalent(g1, with_quant(g2, per_tensor), feeds, steps=3)
    with pytest.raises(AssertionError, match=r"index \(0, 2\)"):
        qt.assert_equivalent(g1, g2, feeds, steps=2)
    per_channel = QuantParams((0.1, 0.2, 0.3), (0, 0, 0), axis=1)
    qt.assert_equivalent(g1, with_quant(g2, per_channel), feeds, steps=1)
    qt.assert_equivalent(g1, with_quant(g2, None), feeds, steps=1, scale=0.3)
    with pytest.raises(AssertionError):
        qt.assert_equivalent(g1, g2, feeds, steps=1, scale=0.1)
    with pytest.raises(ValueError, match="no QuantParams.*pass scale="):
        qt.assert_equivalent(g1, with_quant(g2, None), feeds, steps=1)


def test_steps_on_integer_outputs_count_quantization_steps():
    def quantize(zero_point: int) -> Graph:
        g = Graph("q")
        x = g.add_input("x", TensorType("f32", (4,)))
        scale = g.add_constant(np.float32(0.5), "scale")
        zero = g.add_constant(np.int8(zero_point), "zero")
        y = g.add_node("QuantizeLinear", [x, scale, zero], outputs=["y"]).outputs[0]
        g.set_outputs([y])
        return g

    feeds = {"x": np.array([-1.0, 0.0, 0.25, 3.0], np.float32)}
    qt.assert_equivalent(quantize(0), quantize(0), feeds)
    with pytest.raises(AssertionError, match="exact"):
        qt.assert_equivalent(quantize(0), quantize(1), feeds)
    qt.assert_equivalent(quantize(0), quantize(1), feeds, steps=1)
    with pytest.raises(AssertionError, match="max \\|g1 - g2\\| = 2 > tolerance 1"):
        qt.assert_equivalent(quantize(0), quantize(2), feeds, steps=1)


def test_output_names_shapes_and_dtypes_must_match():
    feeds = {"x": np.ones((2, 3), np.float32)}
    g = unary_graph("Relu")
    with pytest.raises(AssertionError, match=r"different outputs.*missing from g2: \['y'\]"):
        qt.assert_equivalent(g, unary_graph("Relu", name="z"), feeds)
    reshaped = unary_graph("Reshape", const=np.array([3, 2], np.int64))
    with pytest.raises(AssertionError, match=r"g1 gives float32\[2, 3\] but g2 gives "
                                             r"float32\[3, 2\]"):
        qt.assert_equivalent(g, reshaped, feeds)
    cast = unary_graph("Cast", attrs={"to": 10})
    with pytest.raises(AssertionError, match=r"but g2 gives float16\[2, 3\]"):
        qt.assert_equivalent(g, cast, feeds)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_nans_must_sit_at_the_same_places():
    feeds = {"x": np.array([[1.0, np.nan, 2.0, np.inf]], np.float32)}
    qt.assert_equivalent(unary_graph("Identity", (1, 4)), unary_graph("Relu", (1, 4)), feeds)
    # 0 * x is NaN for x = inf but 0 on the reference side
    g2 = unary_graph("Mul", (1, 4), np.zeros(4, np.float32))
    g1 = unary_graph("Mul", (1, 4), np.array([0, 0, 0, 1], np.float32))
    g1_out = {"x": np.array([[1.0, 2.0, 3.0, 0.0]], np.float32)}
    qt.assert_equivalent(g1, g2, g1_out)
    with pytest.raises(AssertionError, match=r"index \(0, 3\): g1 = inf, g2 = nan"):
        qt.assert_equivalent(g1, g2, {"x": np.array([[1.0, 2.0, 3.0, np.inf]], np.float32)})


# ---------------------------------------------------------------------------------------------
# pass_property, with toy passes


@register_pass
@dataclass
class RemoveIdentity(Pass):
    """A correct pass: Identity nodes whose output is not a graph output disappear."""

    name = "test-remove-identity"

    def run(self, graph: Graph) -> PassResult:
        changed = False
        for node in list(graph.nodes):
            if node.op == "Identity" and not node.outputs[0].is_graph_output:
                graph.replace_all_uses_with(node.outputs[0], node.inputs[0])
                graph.erase(node)
                changed = True
        return PassResult(graph, changed)


@register_pass
@dataclass
class ScaleConvWeights(Pass):
    """A wrong pass: it scales every Conv weight by 1.01."""

    name = "test-scale-conv-weights"

    def run(self, graph: Graph) -> PassResult:
        for node in graph.find_nodes("Conv"):
            w = node.inputs[1]
            node.set_input(1, graph.add_constant(w.data * np.float32(1.01), w.name))
        return PassResult(graph, bool(graph.find_nodes("Conv")))


test_pass_property_of_a_correct_pass = qt.pass_property(
    "test-remove-identity", qt.graphs(builders=["identity", "relu", "conv", "multi_use"]))


def test_pass_property_takes_pass_objects_and_settings():
    # every drawn graph has an Identity, so the pass fires in any 7 examples
    check = qt.pass_property([RemoveIdentity()], qt.graphs(builders=["identity"]),
                             settings=settings(max_examples=7, database=None))
    assert check.__name__ == "pass_property[test-remove-identity]"
    assert check._hypothesis_internal_use_settings.max_examples == 7
    check()


def test_pass_property_catches_a_wrong_pass():
    check = qt.pass_property(ScaleConvWeights(), qt.graphs(builders=["conv"]),
                             settings=settings(database=None, phases=[Phase.generate]))
    with pytest.raises(AssertionError, match=r"max \|g1 - g2\|"):
        check()


@register_pass
@dataclass
class DoNothing(Pass):
    """A pass that never changes anything: a property test of it proves nothing."""

    name = "test-do-nothing"

    def run(self, graph: Graph) -> PassResult:
        return PassResult(graph, False)


def test_pass_property_fails_when_the_pass_never_fired():
    check = qt.pass_property("test-do-nothing", qt.graphs(builders=["relu"]),
                             settings=settings(max_examples=5, database=None))
    with pytest.raises(AssertionError, match=r"test-do-nothing never changed the graph in 5 "
                                             r"examples"):
        check()
    assert check.firing.examples == 5 and check.firing.changed == 0


def test_pass_property_reports_how_often_the_pass_fired():
    check = qt.pass_property("fold-bn", qt.graphs(builders=["conv_bn", "bn"]),
                             settings=settings(max_examples=10, database=None))
    check()
    firing = check.firing
    assert firing.examples == 10
    assert 0 < firing.changed <= 10
    assert set(firing.rules) <= {"fold-bn: fold-into-producer", "fold-bn: scale-shift"}
    assert sum(firing.rules.values()) >= firing.changed
    summary = firing.summary()
    assert summary.startswith(f"fold-bn changed the graph in {firing.changed} of 10 examples")
    for rule, count in firing.rules.items():
        assert f"{rule} in {count}" in summary
    check()  # a second run counts afresh
    assert check.firing.examples == 10


def test_pass_property_can_require_every_rule():
    assert qt.rule_names("fold-bn") == ("fold-bn: fold-into-producer", "fold-bn: scale-shift")
    assert qt.rule_names("canonicalize,fold-bn") == qt.rule_names("fold-bn")
    check = qt.pass_property("fold-bn", qt.graphs(builders=["bn"]),
                             must_fire=qt.rule_names("fold-bn"),
                             settings=settings(max_examples=5, database=None))
    with pytest.raises(AssertionError, match=r"fold-bn: fold-into-producer never fired in 5 "
                                             r"examples"):
        check()


def test_pass_property_settings_given_after_the_fact_apply():
    check = settings(max_examples=3, database=None)(
        qt.pass_property("fold-bn", qt.graphs(builders=["conv_bn"])))
    check()
    assert check.firing.examples == 3
