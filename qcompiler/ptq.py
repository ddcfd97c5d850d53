"""Post-training quantization: ``qc.quantize(graph, calib, config)`` from float graph to QDQ.

The steps (DESIGN.md, "Passes"), each a pass or a function that can also be run alone:

1. ``canonicalize,fold-bn,fuse`` on a copy of the graph (the graph given is left as it was);
2. ``equalize`` when ``config.equalize``;
3. calibration (``qcompiler.calibration.calibrate``): observers on every float activation, the
   data streamed through the Interpreter, ranges cached when ``config.cache`` names a file;
4. ``quantize``: Q/DQ per the config and the calibrated ranges;
5. ``bias-correct`` when ``config.bias_correction``: each quantized layer's bias shifted by the
   mean error of its output against the float graph on the calibration data;
6. ``cancel-qdq``: DQ -> Q pairs and Q -> DQ islands removed, Relu/Clip absorbed.

``mode="dynamic"`` and ``mode="weight_only"`` skip calibration: weights become int8 and
activations are quantized per run (dynamic) or stay float (weight-only).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from .config import QuantConfig
from .errors import ConfigError
from .graph import Graph
from .pass_manager import PassManager

FLOAT_PIPELINE = "canonicalize,fold-bn,fuse"

Calib = Iterable[Mapping[str, np.ndarray]] | Iterable[np.ndarray] | str | Path


def quantize(graph: Graph, calib: Calib | None = None,
             config: QuantConfig | None = None, *, progress: bool | None = None) -> Graph:
    """The quantized (QDQ) form of ``graph`` per ``config`` (default ``QuantConfig()``),
    calibrated on ``calib``; the graph given is not changed."""
    config = QuantConfig() if config is None else config
    if not isinstance(config, QuantConfig):
        raise ConfigError(f"config must be a qc.QuantConfig, got {type(config).__name__}")
    g = PassManager(FLOAT_PIPELINE).run(graph.copy()).graph
    config.check_overrides(g)  # the config's own errors, before any calibration work
    config.excluded(g)
    if config.equalize:
        g = PassManager("equalize").run(g).graph
    if config.mode != "static":
        from qcompiler.passes.dynamic import dynamic_pass

        return PassManager([dynamic_pass(config), "canonicalize"]).run(g).graph
    from .calibration import calibrate

    calibration = calibrate(g, calib, cache=config.cache, progress=progress)
    from qcompiler.passes.quantize import Quantize

    q = PassManager([Quantize(config, calibration)]).run(g.copy()).graph
    if config.bias_correction:
        from qcompiler.passes.bias_correct import BiasCorrect

        q = PassManager([BiasCorrect(g, calib)]).run(q).graph
    return PassManager("cancel-qdq,canonicalize").run(q).graph
