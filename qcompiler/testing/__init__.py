"""Property-testing kit: hypothesis strategies for graphs, inputs and quantization parameters, and
the equivalence checks that qcompiler's own pass tests use, for testing your passes the same way.

    from qcompiler.testing import graphs, pass_property

    test_fold_bn = pass_property("fold-bn", graphs(builders=["conv", "conv_bn", "bn", "relu"]))

``graphs()`` draws random well-typed float32 graphs: one or two graph inputs, then a few random
*builders*, each of which takes an existing value that suits it and adds one or a few nodes
(``conv_bn`` adds a Conv and the BatchNormalization after it, ``hard_swish_decomposed`` the
Add/Clip/Mul/Div chain exporters write). Builders live in ``BUILDERS``; pick the structures your
pass cares about by name, or register your own with ``@register_builder``. ``inputs(graph)``
draws feeds for a graph, ``assert_equivalent`` compares two graphs' outputs (float tolerance or
quantization steps), and ``pass_property`` turns a pipeline into a ready-made hypothesis test.

The modules, one concern each:

    kit             GraphKit, Builder, BUILDERS, register_builder (what builders work with)
    builders        the built-in builders (registered on import)
    graph_strategy  graphs()
    strategies      inputs(), quant_params()
    equivalence     run_graph(), assert_equivalent()
    properties      pass_property(), rule_names(), Firing
    qdq_graphs      qdq_graphs(), qdq_params(): random graphs in the QDQ form
    light_models    randomized(), light_model(): the onnx package's light CNNs, random weights

hypothesis is a test extra: ``import qcompiler`` never imports it, this package does.
"""

from __future__ import annotations

try:
    import hypothesis  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "qcompiler.testing needs hypothesis, which is a test extra: "
        "pip install qcompiler[test]"
    ) from exc

from .equivalence import assert_equivalent, run_graph
from .graph_strategy import graphs
from .kit import BUILDERS, Builder, GraphKit, register_builder
from .properties import Firing, pass_property, rule_names
from .qdq_graphs import qdq_graphs, qdq_params
from .strategies import DISTRIBUTIONS, inputs, quant_params

__all__ = [
    "BUILDERS", "DISTRIBUTIONS", "Builder", "Firing", "GraphKit", "assert_equivalent", "graphs",
    "inputs", "pass_property", "qdq_graphs", "qdq_params", "quant_params", "register_builder",
    "rule_names", "run_graph",
]
