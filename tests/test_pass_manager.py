"""The pass infrastructure: pipeline strings, the pass registry, and the PassManager contract
(works on a copy, verifies after every pass, names the pass and the node on failure, fixpoint,
records, IR dumps, explanations)."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pytest
import zoo
from qcompiler.passes.canonicalize import Canonicalize
from qcompiler.passes.fold_bn import FoldBatchNorm

import qcompiler as qc
from qcompiler.errors import PassError, PipelineError, RewriteError
from qcompiler.graph import Graph
from qcompiler.pass_manager import (
    PASSES,
    Pass,
    PassManager,
    PassResult,
    available_passes,
    get_pass,
    parse_pipeline,
    register_pass,
)
from qcompiler.rewriter import Op, RewritePass, Rule, Var
from qcompiler.types import TensorType

# -- toy passes (registered per test by the ``registry`` fixture) --------------------------------


@dataclass
class Toy(Pass):
    """Does nothing; it has one option of every kind a pipeline string can spell."""

    name = "toy"
    items: tuple[str, ...] = ()
    other: int = 0
    flag: bool = False
    ratio: float = 0.5
    label: str = "x"
    limit: int | None = None

    def run(self, graph: Graph) -> PassResult:
        return PassResult(graph, False)


@dataclass
class PeelNeg(Pass):
    """Removes the first Neg node, if any (so a fixpoint needs one round per Neg); a graph
    output keeps its name."""

    name = "peel-neg"

    def run(self, graph: Graph) -> PassResult:
        for node in graph.nodes:
            if node.op == "Neg":
                out, src = node.outputs[0], node.inputs[0]
                graph.replace_all_uses_with(out, src)
                graph.erase(node)
                if out.name != src.name and src.producer is not None and src.is_graph_output:
                    graph.rename_value(src, out.name)
                return PassResult(graph, True, {"peeled": 1})
        return PassResult(graph, False)


@dataclass
class AlwaysChanged(Pass):
    """Claims a change every time: a fixpoint never comes."""

    name = "always-changed"

    def run(self, graph: Graph) -> PassResult:
        return PassResult(graph, True)


@dataclass
class BreakIR(Pass):
    """Breaks the IR the way buggy passes do: ``dangling`` drops node 'r1' from the node list
    without erasing it (its reader reads an undefined value), ``type`` gives node 'r2' a wrong
    output type, ``uses`` corrupts a use-list without naming a node."""

    name = "break-ir"
    how: str = "dangling"

    def run(self, graph: Graph) -> PassResult:
        if self.how == "dangling":
            graph.nodes.remove(graph.node("r1"))
        elif self.how == "type":
            graph.node("r2").outputs[0].type = TensorType("f32", (9,))
        else:
            graph.inputs[0].uses.append(graph.inputs[0].uses[0])
        return PassResult(graph, True)


@dataclass
class Crash(Pass):
    """Fails like a bug: a KeyError while looking at a node."""

    name = "crash"

    def run(self, graph: Graph) -> PassResult:
        return {}[graph.nodes[0].name]


@dataclass
class NotAResult(Pass):
    name = "not-a-result"

    def run(self, graph: Graph) -> PassResult:
        return graph  # type: ignore[return-value]


def _explode(rw, m):
    raise ValueError("the rewrite is broken")


@dataclass
class Exploding(RewritePass):
    """A rule-based pass whose rewrite raises on every Relu."""

    name = "exploding"

    def phases(self) -> list[list[Rule]]:
        return [[Rule("explode", Op("Relu", Var("x")), _explode)]]


TOYS = [Toy, PeelNeg, AlwaysChanged, BreakIR, Crash, NotAResult, Exploding]


@pytest.fixture
def registry():
    """Registers the toy passes for one test and restores the registry afterwards."""
    available_passes()  # load the built-in passes before taking the snapshot
    saved = dict(PASSES)
    for cls in TOYS:
        register_pass(cls)
    yield PASSES
    PASSES.clear()
    PASSES.update(saved)


def relu_chain() -> Graph:
    """x -> Relu r1 -> Relu r2 -> Neg n1 -> Neg n2, returned."""
    return qc.parse("""graph chain(%x: f32[2,3]) {
  %r1: f32[2,3] = Relu(%x) @r1
  %r2: f32[2,3] = Relu(%r1) @r2
  %n1: f32[2,3] = Neg(%r2) @n1
  %n2: f32[2,3] = Neg(%n1) @n2
  %n3: f32[2,3] = Neg(%n2) @n3
  return %n3
}
""")


def conv_two_readers() -> Graph:
    """A Conv whose output the BatchNormalization and a Relu both read."""
    return qc.parse("""graph g(%x: f32[1,2,3,3]) {
  %w: f32[2,2,1,1] = const dense<[1.0, 2.0, 3.0, 4.0]>
  %gamma: f32[2] = const dense<[1.0, 8.0]>
  %beta: f32[2] = const dense<[1.0, -1.0]>
  %mean: f32[2] = const dense<[4.0, 0.5]>
  %var: f32[2] = const dense<[3.0, 15.0]>
  %conv: f32[1,2,3,3] = Conv(%x, %w) @conv
  %side: f32[1,2,3,3] = Relu(%conv) @side
  %bn: f32[1,2,3,3] = BatchNormalization(%conv, %gamma, %beta, %mean, %var) {epsilon = 1.0} @bn
  return %bn, %side
}
""")


# -- pipeline strings ---------------------------------------------------------------------------


def test_pipeline_names_passes_in_order():
    passes = parse_pipeline("canonicalize,fold-bn")
    assert passes == [Canonicalize(), FoldBatchNorm()]
    assert parse_pipeline("  canonicalize ,\tfold-bn ") == passes


def test_pipeline_options_are_converted_to_the_declared_types():
    (p,) = parse_pipeline("canonicalize{cse=false dce=true}")
    assert p == Canonicalize(cse=False, dce=True)
    assert p.cse is False and p.dce is True and p.fold is True


def test_list_options_and_every_option_type(registry):
    (p,) = parse_pipeline("toy{items=a,b,c other=3}")
    assert p == Toy(items=("a", "b", "c"), other=3)
    assert type(p.items) is tuple and type(p.other) is int
    (p,) = parse_pipeline("toy{ratio=0.25 label=hello items=one flag=yes}")
    assert p == Toy(items=("one",), flag=True, ratio=0.25, label="hello")
    assert type(p.ratio) is float
    assert parse_pipeline("toy{items=}")[0].items == ()
    # commas inside braces separate list values, commas outside separate passes
    assert parse_pipeline("toy{items=a,b},fold-bn,toy") == [Toy(items=("a", "b")),
                                                             FoldBatchNorm(), Toy()]
    assert parse_pipeline("toy{}") == [Toy()]


def test_optional_options(registry):
    assert parse_pipeline("toy{limit=3}")[0].limit == 3
    assert parse_pipeline("toy{limit=None}")[0].limit is None
    with pytest.raises(PipelineError, match=r"option limit='many': expected int or NoneType"):
        parse_pipeline("toy{limit=many}")


@pytest.mark.parametrize("spelling, value", [
    ("true", True), ("True", True), ("1", True), ("yes", True), ("on", True), ("ON", True),
    ("false", False), ("FALSE", False), ("0", False), ("no", False), ("off", False),
])
def test_bool_spellings(spelling, value):
    (p,) = parse_pipeline(f"fold-bn{{standalone={spelling}}}")
    assert p.standalone is value


@pytest.mark.parametrize("make", [
    Canonicalize, lambda: Canonicalize(cse=False, fold=False), lambda: FoldBatchNorm(False),
    lambda: Toy(items=("a", "b", "c"), other=3), lambda: Toy(items=(), flag=True, ratio=0.125),
    lambda: Toy(label="hello", other=-2), lambda: Toy(limit=7),
])
def test_str_of_a_pass_round_trips_through_parse_pipeline(registry, make):
    p = make()
    assert parse_pipeline(str(p)) == [p]


def test_str_of_a_pass_lists_only_non_default_options(registry):
    assert str(Canonicalize()) == "canonicalize"
    assert str(Canonicalize(cse=False)) == "canonicalize{cse=false}"
    assert str(Toy(items=("a", "b"), other=3)) == "toy{items=a,b other=3}"
    pm = PassManager([Canonicalize(dce=False), "fold-bn{standalone=off}"])
    assert pm.pipeline == "canonicalize{dce=false},fold-bn{standalone=false}"
    assert PassManager(pm.pipeline).passes == pm.passes


def test_unknown_pass_suggests_the_closest_name():
    with pytest.raises(PipelineError, match=r"unknown pass 'fold_bn'; did you mean 'fold-bn'\?"):
        parse_pipeline("canonicalize,fold_bn")
    with pytest.raises(PipelineError, match="registered: .*canonicalize.*fold-bn"):
        parse_pipeline("zzzzzz")


def test_unknown_option_lists_the_valid_ones():
    with pytest.raises(PipelineError) as info:
        parse_pipeline("canonicalize{cse=false fuse=true}")
    message = str(info.value)
    assert "'canonicalize' has no option(s) fuse" in message
    assert "options: fold, identities, cse, dce" in message
    with pytest.raises(PipelineError, match="options: standalone"):
        get_pass("fold-bn", stand_alone=False)


@pytest.mark.parametrize("pipeline, words", [
    ("canonicalize{cse=maybe}", ["canonicalize", "cse='maybe'", "true or false"]),
    ("toy{other=three}", ["toy", "other='three'"]),
    ("toy{ratio=1/2}", ["toy", "ratio='1/2'"]),
    ("toy{other=1.5}", ["toy", "other='1.5'"]),
])
def test_bad_option_values(registry, pipeline, words):
    with pytest.raises(PipelineError) as info:
        parse_pipeline(pipeline)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("pipeline, match", [
    ("canonicalize{cse=false", "unclosed '{'"),
    ("canonicalize{cse=false,fold-bn", "unclosed '{'"),
    ("canonicalize}", "unmatched '}'"),
    ("canonicalize{a={b=1}}", "nested '{'"),
    ("canonicalize,,fold-bn", "empty pass name"),
    ("canonicalize,", "empty pass name"),
    (",fold-bn", "empty pass name"),
    ("", "empty pass name"),
    ("{cse=false}", "empty pass name"),
    ("canonicalize{cse=false cse=true}", "option 'cse' is given twice"),
    ("canonicalize{cse}", "option 'cse' must be key=value"),
    ("canonicalize{=true}", "must be key=value"),
    ("canonicalize{cse=false}x", "options must end with '}'"),
])
def test_malformed_pipelines(pipeline, match):
    with pytest.raises(PipelineError, match=match):
        parse_pipeline(pipeline)


def test_pipeline_errors_are_qcompiler_errors():
    assert issubclass(PipelineError, qc.QCompilerError)
    with pytest.raises(qc.QCompilerError):
        PassManager("no-such-pass")
    with pytest.raises(PipelineError, match="the pipeline is empty"):
        PassManager([])
    with pytest.raises(PipelineError, match="must be a pass name or a Pass, got 42"):
        PassManager(["canonicalize", 42])


def test_a_user_pass_is_registered_and_run_by_name(registry):
    @register_pass
    @dataclass
    class DropDoubleNeg(Pass):
        """Neg(Neg(x)) -> x, written against the Graph API."""

        name = "drop-double-neg"
        keep_outputs: bool = True

        def run(self, graph: Graph) -> PassResult:
            removed = 0
            for node in list(graph.nodes):
                inner = node.inputs[0].producer if node.op == "Neg" else None
                if node.graph is graph and inner is not None and inner.op == "Neg":
                    graph.replace_all_uses_with(node.outputs[0], inner.inputs[0])
                    graph.erase(node)
                    removed += 1
            return PassResult(graph, bool(removed), {"double-neg": removed} if removed else {})

    assert "drop-double-neg" in available_passes()
    assert parse_pipeline("drop-double-neg{keep_outputs=false}") == [DropDoubleNeg(False)]
    g = relu_chain()
    result = PassManager("drop-double-neg,canonicalize").run(g)
    assert result.stats["drop-double-neg: double-neg"] == 1
    assert [n.op for n in result.graph.nodes] == ["Relu", "Relu", "Neg"]
    result.graph.verify()


def test_registering_another_class_under_a_taken_name_fails(registry):
    @dataclass
    class Impostor(Pass):
        name = "fold-bn"

    with pytest.raises(ValueError, match="a pass named 'fold-bn' is already registered"):
        register_pass(Impostor)
    assert PASSES["fold-bn"] is FoldBatchNorm
    assert register_pass(FoldBatchNorm) is FoldBatchNorm  # the same class again is fine


def test_redefining_a_pass_replaces_it(registry):
    """Running a notebook cell that defines a pass twice must not fail."""
    def define(k: int) -> type[Pass]:
        @dataclass
        class Mine(Pass):
            name = "mine"
            k: int = 0
        Mine.version = k
        return register_pass(Mine)

    first, second = define(1), define(2)
    assert first is not second and PASSES["mine"] is second

    class NotAPass:
        name = "not-a-pass"

    with pytest.raises(TypeError, match="expects a Pass subclass"):
        register_pass(NotAPass)

    @dataclass
    class BadName(Pass):
        name = "bad name"

    with pytest.raises(ValueError, match="must be non-empty letters"):
        register_pass(BadName)


# -- the PassManager ----------------------------------------------------------------------------


def test_pass_manager_never_mutates_the_callers_graph():
    g = qc.from_onnx(zoo.resnet_bottleneck())
    text = str(g)
    constants = {name: data.copy() for name, data in g.constant_arrays().items()}
    snapshot = g.copy()
    result = PassManager("canonicalize,fold-bn").run(g)
    assert result.changed and result.graph is not g
    assert "BatchNormalization" not in str(result.graph)
    assert str(g) == text and g == snapshot
    assert g.constant_arrays().keys() == constants.keys()
    for name, data in constants.items():
        np.testing.assert_array_equal(g.constants[name].data, data)
    g.verify()


def test_a_broken_input_graph_is_not_blamed_on_the_first_pass():
    g = relu_chain()
    g.node("r1").outputs[0].type = TensorType("f32", (5,))
    with pytest.raises(qc.VerificationError, match="%r1 is typed f32\\[5\\]"):
        PassManager("canonicalize").run(g)
    assert PassManager("canonicalize", verify=False).run(g).graph is not g


def test_each_pass_is_verified_and_a_dangling_use_names_the_pass_and_the_node(registry):
    with pytest.raises(PassError) as info:
        PassManager("canonicalize,break-ir").run(relu_chain())
    err = info.value
    assert err.pass_name == "break-ir"
    assert err.node == "r2"  # the node that reads the value nobody defines any more
    assert err.passes_run == ("canonicalize",)
    assert "pass 'break-ir' left an invalid graph (after canonicalize)" in str(err)
    assert "reads %r1 before it is defined" in str(err)
    assert isinstance(err.__cause__, qc.VerificationError)


def test_a_wrong_type_names_the_node(registry):
    with pytest.raises(PassError) as info:
        PassManager("break-ir{how=type}").run(relu_chain())
    assert info.value.pass_name == "break-ir" and info.value.node == "r2"
    assert "%r2 is typed f32[9] but Relu gives f32[2,3]" in str(info.value)
    assert info.value.passes_run == ()


def test_a_problem_that_names_no_node_leaves_node_unset(registry):
    with pytest.raises(PassError, match="use-list of %x is out of date") as info:
        PassManager("break-ir{how=uses}").run(relu_chain())
    assert info.value.node is None


def test_verify_false_lets_a_broken_graph_through(registry):
    result = PassManager("break-ir{how=type}", verify=False).run(relu_chain())
    assert result.graph.node("r2").outputs[0].shape == (9,)
    with pytest.raises(qc.VerificationError):
        result.graph.verify()


def test_a_crashing_pass_names_itself_and_the_passes_that_ran(registry):
    with pytest.raises(PassError) as info:
        PassManager("canonicalize,fold-bn,crash").run(relu_chain())
    err = info.value
    assert err.pass_name == "crash"
    assert err.passes_run == ("canonicalize", "fold-bn")
    assert "pass 'crash' crashed (after canonicalize, fold-bn): KeyError: 'r1'" in str(err)
    assert isinstance(err.__cause__, KeyError)


def test_a_pass_must_return_a_pass_result(registry):
    with pytest.raises(PassError, match="'not-a-result' returned Graph, not a PassResult"):
        PassManager("not-a-result").run(relu_chain())


def test_a_failing_rewrite_names_the_users_layer(registry):
    g = qc.parse("""graph g(%x: f32[4]) {
  %y: f32[4] = Relu(%x) @"encoder/block.3/act"
  return %y
}
""")
    with pytest.raises(PassError) as info:
        PassManager("exploding").run(g)
    err = info.value
    assert err.pass_name == "exploding"
    assert err.node == "encoder/block.3/act"
    assert "rule 'explode' crashed on Relu node 'encoder/block.3/act'" in str(err)
    assert "ValueError: the rewrite is broken" in str(err)
    assert isinstance(err.__cause__, RewriteError) and err.__cause__.rule == "explode"


def test_fixpoint_repeats_the_pipeline_until_nothing_changes(registry):
    once = PassManager("peel-neg").run(relu_chain())
    assert once.graph.op_counts()["Neg"] == 2
    pm = PassManager("peel-neg,canonicalize", fixpoint=True)
    result = pm.run(relu_chain())
    assert "Neg" not in result.graph.op_counts()
    assert result.stats == {"peel-neg: peeled": 3}
    rounds = [(r.name, r.round, r.changed) for r in pm.records]
    assert rounds == [("peel-neg", 1, True), ("canonicalize", 1, False),
                      ("peel-neg", 2, True), ("canonicalize", 2, False),
                      ("peel-neg", 3, True), ("canonicalize", 3, False),
                      ("peel-neg", 4, False), ("canonicalize", 4, False)]


def test_fixpoint_warns_when_max_rounds_is_reached(registry):
    pm = PassManager("always-changed", fixpoint=True, max_rounds=3)
    with pytest.warns(UserWarning, match="still changed the graph after 3 rounds"):
        result = pm.run(relu_chain())
    assert result.changed and [r.round for r in pm.records] == [1, 2, 3]


def test_records_and_report_list_each_pass_with_its_changes():
    g = qc.from_onnx(zoo.resnet_bottleneck())
    pm = PassManager("canonicalize,fold-bn")
    result = pm.run(g)
    assert result.stats == {"fold-bn: fold-into-producer": 3}
    canon, fold = pm.records
    assert (canon.name, canon.changed, canon.stats) == ("canonicalize", False, {})
    assert (fold.name, fold.changed, fold.stats) == ("fold-bn", True, {"fold-into-producer": 3})
    assert (fold.nodes_before, fold.nodes_after) == (10, 7)
    assert fold.seconds >= 0
    lines = pm.report().splitlines()
    assert lines[0].split() == ["pass", "round", "ms", "nodes", "changes"]
    assert lines[1].split()[0] == "canonicalize" and lines[1].split()[-1] == "-"
    assert lines[2].startswith("fold-bn") and lines[2].endswith("10->7      fold-into-producer x3")


def test_print_ir_after_a_named_pass():
    stream = io.StringIO()
    result = PassManager("canonicalize,fold-bn", print_ir_after="fold-bn",
                         stream=stream).run(conv_two_readers())
    text = stream.getvalue()
    assert text.startswith("// ----- IR after fold-bn (round 1) -----\n")
    assert text.count("// ----- IR after") == 1
    assert str(result.graph) in text


def test_print_ir_after_all_passes_and_a_list(registry):
    stream = io.StringIO()
    PassManager("canonicalize,fold-bn{standalone=false}", print_ir_after="all",
                stream=stream).run(conv_two_readers())
    headers = [line for line in stream.getvalue().splitlines() if line.startswith("//")]
    assert headers == ["// ----- IR after canonicalize (round 1) -----",
                       "// ----- IR after fold-bn{standalone=false} (round 1) -----"]
    stream = io.StringIO()
    PassManager("peel-neg,canonicalize", fixpoint=True, print_ir_after=["peel-neg"],
                stream=stream).run(relu_chain())
    assert stream.getvalue().count("// ----- IR after peel-neg (round") == 4


def test_print_ir_after_a_pass_the_pipeline_does_not_run():
    with pytest.raises(PipelineError, match="print_ir_after names fuse, which the pipeline "
                                            "'canonicalize,fold-bn' does not run"):
        PassManager("canonicalize,fold-bn", print_ir_after="fuse")
    with pytest.raises(PipelineError, match="names fold_bn"):
        PassManager("fold-bn", print_ir_after=["fold-bn", "fold_bn"])


def test_explain_collects_the_refusals_per_pass():
    pm = PassManager("canonicalize,fold-bn", explain=True)
    pm.run(conv_two_readers())
    assert set(pm.explanations) == {"canonicalize", "fold-bn"}
    assert pm.explanations["canonicalize"] == []
    (note,) = pm.explanations["fold-bn"]
    assert note.startswith("fold-into-producer: BatchNormalization node 'bn' -> %bn: ")
    assert "%conv (output of Conv 'conv') has 2 readers" in note
    quiet = PassManager("canonicalize,fold-bn")
    quiet.run(conv_two_readers())
    assert quiet.explanations == {}


def test_pipelines_from_pass_objects_classes_and_strings():
    pm = PassManager([Canonicalize(cse=False), FoldBatchNorm, "canonicalize{dce=false}"])
    assert [type(p) for p in pm.passes] == [Canonicalize, FoldBatchNorm, Canonicalize]
    assert PassManager(FoldBatchNorm()).pipeline == "fold-bn"
    g = qc.optimize(conv_two_readers(), "fold-bn")
    assert "BatchNormalization" not in str(g)
