"""QuantConfig: defaults, validation of every field, JSON/TOML files, exclusions resolved on a
graph (by layer name, op type, regex, first/last weighted layer) and unmatched ones refused."""

from __future__ import annotations

import json
import sys
from importlib import resources

import numpy as np
import pytest

import qcompiler as qc
from qcompiler.config import CALIBRATION_OPTIONS, QuantConfig
from qcompiler.observers import METHODS, TensorStats
from qcompiler.types import DType, QuantParams

EXAMPLES = resources.files("qcompiler.examples")


@pytest.fixture(scope="module")
def digits():
    """The demo model after the float passes: Conv{relu} x2, MaxPool, Conv{relu}, Flatten,
    Gemm{relu}, Gemm; the Convs remember their BatchNormalization and Relu layers."""
    return qc.optimize(qc.load_onnx(EXAMPLES / "digits_convnet.onnx"))


def test_defaults_are_the_numerics_contract():
    cfg = QuantConfig()
    assert (cfg.mode, cfg.weight_dtype, cfg.activation_dtype) == ("static", "i8", "i8")
    assert cfg.weight_symmetric and cfg.per_channel and not cfg.activation_symmetric
    assert not (cfg.reduce_range or cfg.equalize or cfg.bias_correction)
    assert cfg.calibration in CALIBRATION_OPTIONS and cfg.cache is None


def test_the_methods_are_the_observers():
    assert tuple(CALIBRATION_OPTIONS) == METHODS


@pytest.mark.parametrize("method", METHODS)
def test_every_accepted_option_is_one_the_stats_take(method):
    """Each method's options, as the config accepts them, choose a range from real stats."""
    options = {"percentile": {"percentile": 99.9}, "entropy": {"num_quantized_bins": 64}}.get(
        method, {})
    cfg = QuantConfig(calibration=method, calibration_options=options)
    stats = TensorStats(bins=256).observe(np.linspace(-1, 3, 1000, dtype=np.float32))
    lo, hi = stats.range(cfg.calibration, **cfg.calibration_options)
    assert -1 <= lo < hi <= 3
    assert set(options) == set(CALIBRATION_OPTIONS[method])


def test_dtype_aliases_are_normalised():
    cfg = QuantConfig(weight_dtype="int8", activation_dtype="uint8")
    assert (cfg.weight_dtype, cfg.activation_dtype) == ("i8", "u8")


@pytest.mark.parametrize(("fields", "message"), [
    ({"mode": "fast"}, "mode must be one of 'static', 'dynamic', 'weight_only', got 'fast'"),
    ({"weight_dtype": "i16"}, "weight_dtype must be one of 'i8', 'u8'"),
    ({"activation_dtype": DType.I32}, "activation_dtype must be one of 'i8', 'u8'"),
    ({"per_channel": "yes"}, "per_channel must be true or false, got 'yes'"),
    ({"equalize": 1}, "equalize must be true or false, got 1"),
    ({"calibration": "kl"}, "calibration must be one of 'minmax', 'moving_average'"),
    ({"calibration": "minmax", "calibration_options": {"percentile": 99.9}},
     "'percentile' is not an option of calibration 'minmax', which takes no options"),
    ({"calibration": "percentile", "calibration_options": {"pct": 99.9}},
     "'pct' is not an option of calibration 'percentile', which takes 'percentile'"),
    ({"calibration": "percentile", "calibration_options": {"percentile": 120}},
     "'percentile' of calibration 'percentile' must be a number in \\(0, 100\\], got 120"),
    ({"calibration": "entropy", "calibration_options": {"num_quantized_bins": 1.5}},
     "'num_quantized_bins' of calibration 'entropy' must be an integer >= 2, got 1.5"),
    ({"calibration_options": [1]}, "calibration_options must be a mapping"),
    ({"overrides": [("x", (0, 1))]}, "overrides must be a mapping"),
    ({"overrides": {"x": (1.0, -1.0)}},
     "overrides\\['x'\\]: the range \\[1.0, -1.0\\] has lo > hi"),
    ({"overrides": {"x": (0.0, float("inf"))}}, "must be a range \\[lo, hi\\] of finite numbers"),
    ({"overrides": {"x": "wide"}}, "overrides\\['x'\\] must be a range"),
    ({"overrides": {"x": QuantParams(0.1, 300, DType.I8)}}, "zero point 300 is outside"),
    ({"overrides": {"x": QuantParams(0.1, 0, DType.I32)}}, "dtype must be one of 'i8', 'u8'"),
    ({"overrides": {"x": {"scale": 0.1}}}, "QuantParams need 'scale' and 'zero_point'"),
    ({"overrides": {"x": {"scale": -0.1, "zero_point": 0}}}, "scale -0.1 is not a positive"),
    ({"exclude_layers": "conv1"}, "exclude_layers must be a list of strings, got 'conv1'"),
    ({"exclude_regex": ["conv[", "x"]}, "exclude_regex: 'conv\\[' is not a regular expression"),
    ({"exclude_op_types": ["conv"]}, "'conv' is not an op type; did you mean 'Conv'"),
    ({"cache": 3}, "cache must be a file path or None, got 3"),
])
def test_invalid_values_name_the_field_and_what_it_takes(fields, message):
    with pytest.raises(qc.ConfigError, match=message):
        QuantConfig(**fields)


def test_to_dict_round_trips_through_json(tmp_path):
    cfg = QuantConfig(
        mode="static", activation_dtype="u8", per_channel=False, calibration="percentile",
        calibration_options={"percentile": 99.99}, reduce_range=True,
        overrides={"conv1_out": (0.0, 6.0),
                   "flat": QuantParams(0.05, 3, DType.U8),
                   "w": QuantParams((0.1, 0.2), (0, 0), DType.I8, axis=0, qmin=-127, qmax=127)},
        exclude_layers=["fc2"], exclude_op_types=["MaxPool"], exclude_regex=["conv[23].*"],
        keep_first_float=True, equalize=True, bias_correction=True, cache=str(tmp_path / "c"))
    path = tmp_path / "quant.json"
    path.write_text(json.dumps(cfg.to_dict()))
    assert QuantConfig.from_file(path) == cfg
    assert QuantConfig.from_dict(cfg.to_dict()) == cfg


HAS_TOML = sys.version_info >= (3, 11)
NO_TOML = "reading TOML needs Python 3.11 or later"


def test_toml_file(tmp_path):
    path = tmp_path / "quant.toml"
    path.write_text('activation_dtype = "uint8"\ncalibration = "percentile"\n'
                    'exclude_layers = ["fc2"]\n[calibration_options]\npercentile = 99.9\n'
                    '[overrides]\nimage = [0.0, 16.0]\n'
                    'flat = {scale = 0.5, zero_point = 0, dtype = "u8"}\n')
    if not HAS_TOML:
        with pytest.raises(qc.ConfigError, match=NO_TOML):
            QuantConfig.from_file(path)
        return
    cfg = QuantConfig.from_file(path)
    assert cfg == QuantConfig(activation_dtype="u8", calibration="percentile",
                              calibration_options={"percentile": 99.9}, exclude_layers=["fc2"],
                              overrides={"image": (0.0, 16.0),
                                         "flat": QuantParams(0.5, 0, DType.U8)})


def test_toml_without_a_reader_says_which_python_it_needs(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tomllib", None)  # as on Python 3.10: import fails
    path = tmp_path / "quant.toml"
    path.write_text('mode = "static"\n')
    with pytest.raises(qc.ConfigError, match=f"{NO_TOML} .*write the config as .json"):
        QuantConfig.from_file(path)


@pytest.mark.parametrize(("name", "text", "message"), [
    ("quant.json", '{"mode": "static", "per_chanel": false}',
     "unknown config key\\(s\\) 'per_chanel' \\(did you mean 'per_channel'\\?\\); the fields "
     "are: mode, "),
    ("quant.json", '{"mode": "static",}',
     "invalid JSON at line 1, column 19: Expecting property name"),
    ("quant.json", '[1, 2]', "must be a mapping of field names to values, got list"),
    ("quant.json", '{"mode": "int4"}', "quant.json': mode must be one of"),
    ("quant.toml", 'mode = "static"\nmode = "dynamic"\n', "invalid TOML"),
    ("quant.yaml", "mode: static", "a config file ends in .json or .toml"),
    ("quant.json", b"\xff\xfe{}", "cannot read config"),
])
def test_bad_config_files(tmp_path, name, text, message):
    if name.endswith(".toml") and not HAS_TOML:
        message = NO_TOML
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(qc.ConfigError, match=message):
        QuantConfig.from_file(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(qc.ConfigError, match="no such file"):
        QuantConfig.from_file(tmp_path / "nope.json")


# -- exclusions ----------------------------------------------------------------------------------


def _excluded(cfg, graph):
    return {node.name: reason for node, reason in cfg.excluded(graph).items()}


def test_nothing_excluded_by_default(digits):
    assert QuantConfig().excluded(digits) == {}


def test_exclusion_by_layer_name_finds_fused_layers(digits):
    # conv2_bnorm was folded into conv2_conv: the user's name still finds it
    cfg = QuantConfig(exclude_layers=["conv2_bnorm", "fc2"])
    assert _excluded(cfg, digits) == {"conv2_conv": "exclude_layers 'conv2_bnorm'",
                                      "fc2": "exclude_layers 'fc2'"}


def test_exclusion_by_op_type_and_regex(digits):
    cfg = QuantConfig(exclude_op_types=["Gemm"], exclude_regex=["conv[13]_relu"])
    assert _excluded(cfg, digits) == {
        "conv1_conv": "exclude_regex 'conv[13]_relu'", "conv3_conv": "exclude_regex "
        "'conv[13]_relu'", "fc1": "exclude_op_types 'Gemm'", "fc2": "exclude_op_types 'Gemm'"}


def test_regex_matches_whole_names_only(digits):
    with pytest.raises(qc.ConfigError, match="regex 'conv'"):
        QuantConfig(exclude_regex=["conv"]).excluded(digits)


def test_keep_first_and_last_float_and_reasons_accumulate(digits):
    cfg = QuantConfig(keep_first_float=True, keep_last_float=True, exclude_layers=["fc2"])
    assert _excluded(cfg, digits) == {"conv1_conv": "keep_first_float",
                                      "fc2": "exclude_layers 'fc2'; keep_last_float"}


def test_exclusions_ignore_observers(digits):
    observed = qc.PassManager("insert-observers").run(digits).graph
    cfg = QuantConfig(exclude_layers=["conv1_relu"], exclude_op_types=["Conv"])
    assert _excluded(cfg, observed) == {
        "conv1_conv": "exclude_layers 'conv1_relu'; exclude_op_types 'Conv'",
        "conv2_conv": "exclude_op_types 'Conv'", "conv3_conv": "exclude_op_types 'Conv'"}


def test_unmatched_exclusions_are_errors_listing_what_exists(digits):
    cfg = QuantConfig(exclude_layers=["conv9", "fc2"], exclude_op_types=["Softmax"],
                      exclude_regex=["dense.*"])
    with pytest.raises(qc.ConfigError) as info:
        cfg.excluded(digits)
    message = str(info.value)
    assert ("exclusion(s) matching nothing in graph 'digits_convnet': layer 'conv9'; op type "
            "'Softmax'; regex 'dense.*'. Its layers are 'conv1_conv', 'conv1_bnorm', "
            "'conv1_relu', 'conv2_conv'") in message
    assert "(and 6 more); its op types are 'Conv', 'Flatten', 'Gemm', 'MaxPool'" in message


def test_keep_first_float_without_a_weighted_layer_is_an_error():
    g = qc.parse("graph g(%x: f32[2,3]) {\n  %y: f32[2,3] = Relu(%x) @relu\n  return %y\n}")
    with pytest.raises(qc.ConfigError, match="keep_first_float \\(no Conv, Gemm or MatMul"):
        QuantConfig(keep_first_float=True).excluded(g)


def test_overrides_must_name_tensors_of_the_graph(digits):
    QuantConfig(overrides={"flat": (0.0, 4.0), "image": (0.0, 16.0)}).check_overrides(digits)
    with pytest.raises(qc.ConfigError, match="override\\(s\\) for tensor\\(s\\) that graph "
                                             "'digits_convnet' does not have: 'flatten'; its "
                                             "tensors include 'image', 'conv1_out'"):
        QuantConfig(overrides={"flatten": (0.0, 4.0)}).check_overrides(digits)
