"""Post-training quantization: ``qc.quantize(graph, calib, config)`` from float graph to QDQ.

The steps (DESIGN.md, "Passes"), each a pass or a function that can also be run alone:

1. ``canonicalize,fold-bn,fuse`` on a copy of the graph (the graph given is left as it was);
2. ``equalize`` when ``config.equalize``;
3. calibration (``qcompiler.calibration.calibrate``): observers on every float activation, the
   data streamed through the Interpreter, ranges cached when ``config.cache`` names a file;
4. ``quantize``: Q/DQ per the config and the calibrated ranges;
5. ``bias-correct`` when ``config.bias_correction``: each quantized layer's bias shifted by the
   mean error of its output against the float graph on the calibration data;
6. ``cancel-qdq``: DQ -> Q pairs and Q -> DQ islands removed, Relu/Clip absorbed;
7. ``lower-int`` unless ``config.lower`` is False: integer ops from the input Quantize to the
   output Dequantize (what stays float: ``Graph.float_islands()``).

``mode="dynamic"`` and ``mode="weight_only"`` skip calibration: weights become int8 and
activations are quantized per run (dynamic) or stay float (weight-only).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from .config import QuantConfig
from .errors import CalibrationError, ConfigError, QuantizationError
from .graph import Graph
from .ops.fixed_point import ROUNDINGS
from .pass_manager import PassManager

# Only clamps are fused into a Conv/Gemm/MatMul: an integer op applies them as its output
# clamp, while any other activation (HardSwish, LeakyRelu...) becomes a lookup table that needs
# its input quantized on its own.
FLOAT_PIPELINE = "canonicalize,fold-bn,fuse{activations=relu,clip}"
# What ``lower`` runs before lower-int on a QDQ graph made elsewhere: its Relu/Clip fused into
# the op they follow (its Q then clamps them), its Q/DQ pairs cancelled.
LOWER_PIPELINE = ("canonicalize", "fuse{activations=relu,clip}", "cancel-qdq")
# Ops of a graph that is quantized already (a QDQ model): quantizing it again would stack a
# second set of Q/DQ nodes on the first.
QUANTIZED_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "Requantize"})

Calib = Iterable[Mapping[str, np.ndarray]] | Iterable[np.ndarray] | str | Path


def quantize(graph: Graph, calib: Calib | None = None,
             config: QuantConfig | None = None, *, progress: bool | None = None) -> Graph:
    """The quantized (QDQ) form of ``graph`` per ``config`` (default ``QuantConfig()``),
    calibrated on ``calib``; the graph given is not changed."""
    config = QuantConfig() if config is None else config
    if not isinstance(config, QuantConfig):
        raise ConfigError(f"config must be a qc.QuantConfig, got {type(config).__name__}")
    quantized = [n for n in graph.nodes if n.op in QUANTIZED_OPS]
    if quantized:
        raise QuantizationError(f"graph {graph.name!r} is already quantized: "
                                f"{quantized[0].describe()}; a QDQ graph is lowered to "
                                f"integer ops with qc.lower, not quantized again")
    g = PassManager(FLOAT_PIPELINE).run(graph.copy()).graph
    config.check_overrides(g)  # the config's own errors, before any calibration work
    config.excluded(g)
    if config.equalize:
        g = PassManager("equalize").run(g).graph
    if config.mode != "static":
        from qcompiler.passes.dynamic import dynamic_pass

        return PassManager([dynamic_pass(config), "canonicalize"]).run(g).graph
    if calib is None:
        raise CalibrationError(f"static quantization of graph {graph.name!r} needs calibration "
                               f"data (qc.quantize's calib, the CLI's --calib): batches of "
                               f"inputs {', '.join(v.name for v in g.inputs)}, or use "
                               f"QuantConfig(mode='dynamic') or mode='weight_only'")
    from qcompiler.passes.quantize import Quantize

    Quantize(config).check(g)  # an override that would be ignored, before calibration work
    from .calibration import CalibrationData, calibrate

    if config.bias_correction and not CalibrationData(g, calib).reiterable:
        calib = list(calib)  # bias correction reads the data again; a generator reads once
    calibration = calibrate(g, calib, cache=config.cache, progress=progress)
    q = PassManager([Quantize(config, calibration)]).run(g.copy()).graph
    if config.bias_correction:
        from qcompiler.passes.bias_correct import BiasCorrect

        q = PassManager([BiasCorrect(g, calib)]).run(q).graph
    q = PassManager("cancel-qdq,canonicalize").run(q).graph
    if config.lower:
        from qcompiler.passes.lower_int import LowerInt

        q = PassManager([LowerInt(config.rounding), "canonicalize"]).run(q).graph
    return q


def lower(graph: Graph, rounding: str = "fixed_point") -> Graph:
    """``qc.lower``: a QDQ graph (made elsewhere) through ``LOWER_PIPELINE`` with ``rounding``;
    the graph given is not changed."""
    from qcompiler.passes.lower_int import LowerInt

    if rounding not in ROUNDINGS:
        raise ConfigError(f"rounding must be one of {', '.join(map(repr, ROUNDINGS))}, got "
                          f"{rounding!r}")
    if not any(n.op in QUANTIZED_OPS for n in graph.nodes):
        raise QuantizationError(f"graph {graph.name!r} has no QuantizeLinear, "
                                f"DequantizeLinear or Requantize node to lower; a float graph "
                                f"is quantized (and lowered) with qc.quantize")
    return PassManager([*LOWER_PIPELINE, LowerInt(rounding), "canonicalize"]).run(graph).graph
