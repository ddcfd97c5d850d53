"""The backend registry: qc.compile, qc.load and the CLI find backends by name, so a new one
plugs in by registering itself."""

from __future__ import annotations

import numpy as np
import pytest
from qcompiler.backends import Backend, available_backends, get_backend, register_backend
from qcompiler.backends.numpy import NumpyExecutable

import qcompiler as qc
from qcompiler import backends, cli
from qcompiler.graph import Graph
from qcompiler.types import TensorType


def tiny() -> Graph:
    g = Graph("tiny")
    x = g.add_input("x", TensorType("f32", (2,)))
    g.set_outputs([g.add_node("Relu", [x], name="relu").outputs[0]])
    return g


class ScaledExecutable(NumpyExecutable):
    """A toy backend with one option: the numpy backend's outputs times ``scale``."""

    def __init__(self, graph: Graph, scale: float):
        super().__init__(graph)
        self.backend, self.options = "scaled", {"scale": scale}

    def _execute(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        return [r * np.float32(self.options["scale"]) for r in super()._execute(arrays)]


@pytest.fixture
def scaled(monkeypatch: pytest.MonkeyPatch) -> Backend:
    backend = Backend("scaled", ScaledExecutable, "numpy, scaled", {"scale": 1.0})
    monkeypatch.setitem(backends._REGISTRY, "scaled", backend)
    return backend


X = {"x": np.array([-1.0, 2.0], np.float32)}


def test_numpy_is_registered():
    assert "numpy" in available_backends()
    assert get_backend("numpy").compile is NumpyExecutable


def test_a_registered_backend_compiles_saves_and_loads_by_name(scaled, tmp_path):
    exe = qc.compile(tiny(), backend="scaled", scale=3.0)
    np.testing.assert_array_equal(exe.run(X)["relu"], [0.0, 6.0])
    exe.save(tmp_path / "m.qcx")
    loaded = qc.load(tmp_path / "m.qcx")
    assert type(loaded) is ScaledExecutable and loaded.options == {"scale": 3.0}
    np.testing.assert_array_equal(loaded.run(X)["relu"], [0.0, 6.0])


def test_unknown_options_are_refused_with_the_known_ones(scaled):
    with pytest.raises(qc.BackendError, match="no option.*speed.*its options: scale"):
        qc.compile(tiny(), backend="scaled", speed=2)
    with pytest.raises(qc.BackendError, match="numpy backend has no option.*scale.*none"):
        qc.compile(tiny(), backend="numpy", scale=2)
    with pytest.raises(qc.BackendError, match=r"option scale=\[2\] must be a string, number"):
        qc.compile(tiny(), backend="scaled", scale=[2])


def test_unknown_backends_list_the_registered_ones(scaled):
    with pytest.raises(qc.BackendError, match="unknown backend 'tpu'; the registered backends "
                                              "are: llvm, numpy, scaled"):
        qc.compile(tiny(), backend="tpu")


def test_a_file_saved_by_a_backend_that_is_not_registered_here(scaled, tmp_path, monkeypatch):
    qc.compile(tiny(), backend="scaled").save(tmp_path / "m.qcx")
    monkeypatch.delitem(backends._REGISTRY, "scaled")
    with pytest.raises(qc.ModelLoadError, match=r"saved by the 'scaled' backend, which is not "
                                                r"available here.*backends are: llvm, numpy\)"):
        qc.load(tmp_path / "m.qcx")


def test_registering_another_backend_under_a_taken_name_is_refused():
    with pytest.raises(qc.BackendError, match="'numpy' is already registered"):
        register_backend(Backend("numpy", NumpyExecutable, "again"))


def test_the_cli_offers_the_registered_backends(scaled, capsys, tmp_path):
    from importlib import resources

    model = str(resources.files("qcompiler.examples") / "digits_convnet.onnx")
    assert cli.main(["compile", model, "-o", str(tmp_path / "m.qcx"), "--backend",
                     "scaled"]) == 0
    assert qc.load(tmp_path / "m.qcx").backend == "scaled"
    with pytest.raises(SystemExit):
        cli.main(["compile", "--help"])
    assert "{llvm,numpy,scaled}" in capsys.readouterr().out


