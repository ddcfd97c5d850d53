"""``QuantConfig``: what post-training quantization does, checked when it is made.

A config is a dataclass that validates itself: an unknown value is a ``ConfigError`` naming the
field and the values it takes. It loads from a ``.json`` or ``.toml`` file (the CLI's
``--config``) where every key must be a field, and ``to_dict`` gives back what ``from_dict``
reads, so a config round-trips through a file::

    cfg = qc.QuantConfig(per_channel=False, exclude_layers=["fc2"])
    cfg = qc.QuantConfig.from_file("quant.toml")
    cfg.excluded(graph)        # {node: reason} for the nodes left in float

Exclusions name what the user wrote: a layer name (matched against each node's name and its
layer origins, so ``conv1_bnorm`` finds the Conv it was folded into), an op type, or a regular
expression that must match a whole layer name. An exclusion that matches nothing is an error,
never a silent no-op.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from . import ops
from .errors import ConfigError
from .graph import Graph, Node
from .ops.fixed_point import ROUNDINGS
from .ops.observe import OBSERVE
from .quant_ops import WEIGHTED
from .types import DType, QuantParams

MODES = ("static", "dynamic", "weight_only")
DTYPES = ("i8", "u8")
DTYPE_ALIASES = {"int8": "i8", "uint8": "u8"}

# The options each calibration method takes (``TensorStats.range(method, **options)``), with a
# check of each option's value that returns what is wrong with it (None when it is fine).
CALIBRATION_OPTIONS: dict[str, dict[str, Any]] = {
    "minmax": {},
    "moving_average": {},
    "percentile": {
        "percentile": lambda v: None if _is_number(v) and 0 < v <= 100
        else "a number in (0, 100]",
    },
    "entropy": {
        "num_quantized_bins": lambda v: None if isinstance(v, int) and not isinstance(v, bool)
        and v >= 2 else "an integer >= 2",
    },
    "mse": {},
}

_SHOWN = 8  # how many existing layer names an unmatched-exclusion error lists


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(
        value)


def _allowed(values: Any) -> str:
    return ", ".join(repr(v) for v in values)


@dataclass
class QuantConfig:
    """How to quantize a float graph; the defaults are the numerics contract's: int8 symmetric
    per-channel weights, int8 asymmetric per-tensor activations.

    ``overrides`` maps a tensor name to a fixed ``(lo, hi)`` range or to ``QuantParams``;
    ``cache`` is the calibration cache file (JSON, see ``qcompiler.calibration``).
    """

    mode: str = "static"
    weight_dtype: str = "i8"
    activation_dtype: str = "i8"
    weight_symmetric: bool = True
    activation_symmetric: bool = False
    per_channel: bool = True
    # Chosen by measurement (README, "Choosing a calibration method"; bench/quantization.py):
    # percentile is the most accurate or within a few test images of it on every model we
    # measured, while entropy, the best on one configuration, loses up to 23 dB elsewhere.
    calibration: str = "percentile"
    calibration_options: dict[str, Any] = field(default_factory=dict)
    reduce_range: bool = False
    overrides: dict[str, tuple[float, float] | QuantParams] = field(default_factory=dict)
    exclude_layers: list[str] = field(default_factory=list)
    exclude_op_types: list[str] = field(default_factory=list)
    exclude_regex: list[str] = field(default_factory=list)
    keep_first_float: bool = False
    keep_last_float: bool = False
    equalize: bool = False
    bias_correction: bool = False
    cache: str | None = None
    # Static mode: run ``lower-int`` so the result computes in integers from its input Quantize
    # to its output Dequantize (False keeps the QDQ form); ``rounding`` is how its integer ops
    # requantize: "fixed_point" (one rounding, the numerics contract's) or "float" (as
    # onnxruntime).
    lower: bool = True
    rounding: str = "fixed_point"

    def __post_init__(self) -> None:
        self.mode = _choice("mode", self.mode, MODES)
        self.weight_dtype = _dtype("weight_dtype", self.weight_dtype)
        self.activation_dtype = _dtype("activation_dtype", self.activation_dtype)
        for name in ("weight_symmetric", "activation_symmetric", "per_channel", "reduce_range",
                     "keep_first_float", "keep_last_float", "equalize", "bias_correction",
                     "lower"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got "
                                  f"{getattr(self, name)!r}")
        self.rounding = _choice("rounding", self.rounding, ROUNDINGS)
        self.calibration = _choice("calibration", self.calibration, tuple(CALIBRATION_OPTIONS))
        self.calibration_options = _calibration_options(self.calibration,
                                                        self.calibration_options)
        self.overrides = _overrides(self.overrides)
        self.exclude_layers = _strings("exclude_layers", self.exclude_layers)
        self.exclude_op_types = _strings("exclude_op_types", self.exclude_op_types)
        for op_type in self.exclude_op_types:
            if op_type not in ops.OPS:
                close = difflib.get_close_matches(op_type, ops.OPS, n=3)
                hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
                raise ConfigError(f"exclude_op_types: {op_type!r} is not an op type{hint}")
        self.exclude_regex = _strings("exclude_regex", self.exclude_regex)
        for pattern in self.exclude_regex:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigError(f"exclude_regex: {pattern!r} is not a regular expression: "
                                  f"{exc}") from None
        if self.cache is not None:
            if not isinstance(self.cache, (str, Path)):
                raise ConfigError(f"cache must be a file path or None, got {self.cache!r}")
            self.cache = str(self.cache)

    # -- files -----------------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QuantConfig:
        """A config from the mapping ``to_dict`` gives (or a parsed config file); every key
        must be a field."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"a quantization config must be a mapping of field names to "
                              f"values, got {type(data).__name__}")
        known = [f.name for f in fields(cls)]
        unknown = [key for key in data if key not in known]
        if unknown:
            hints = []
            for key in unknown:
                close = difflib.get_close_matches(str(key), known, n=1)
                hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ConfigError(f"unknown config key(s) {', '.join(hints)}; the fields are: "
                              f"{', '.join(known)}")
        return cls(**data)

    @classmethod
    def from_file(cls, path: str | Path) -> QuantConfig:
        """Read a config from a ``.json`` or ``.toml`` file (TOML needs Python 3.11+, whose
        standard library reads it)."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in (".json", ".toml"):
            raise ConfigError(f"cannot read config {str(path)!r}: a config file ends in .json "
                              f"or .toml")
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"cannot read config {str(path)!r}: no such file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read config {str(path)!r}: {exc}") from None
        data = _parse_json(path, text) if suffix == ".json" else _parse_toml(path, text)
        try:
            return cls.from_dict(data)
        except ConfigError as exc:
            raise ConfigError(f"config {str(path)!r}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict of every field; ``QuantConfig.from_dict`` reads it back equal."""
        data = asdict(self)
        data["overrides"] = {name: _override_to_json(value)
                             for name, value in self.overrides.items()}
        return data

    # -- resolving against a graph ---------------------------------------------------------------

    def excluded(self, graph: Graph) -> dict[Node, str]:
        """The nodes of ``graph`` this config leaves in float, each with the reason.

        Raises ``ConfigError`` naming every exclusion that matches no node (with a few of the
        graph's layer names, or its op types, to choose from).
        """
        reasons: dict[Node, list[str]] = {}
        unmatched: list[str] = []
        nodes = [n for n in graph.nodes if n.op != OBSERVE]  # observers compute nothing

        def exclude(matched: list[Node], reason: str, what: str) -> None:
            if not matched:
                unmatched.append(what)
            for node in matched:
                reasons.setdefault(node, []).append(reason)

        for layer in self.exclude_layers:
            exclude([n for n in nodes if layer in _layer_names(n)],
                    f"exclude_layers {layer!r}", f"layer {layer!r}")
        for op_type in self.exclude_op_types:
            exclude([n for n in nodes if n.op == op_type],
                    f"exclude_op_types {op_type!r}", f"op type {op_type!r}")
        for pattern in self.exclude_regex:
            regex = re.compile(pattern)
            exclude([n for n in nodes if any(regex.fullmatch(name)
                                                   for name in _layer_names(n))],
                    f"exclude_regex {pattern!r}", f"regex {pattern!r}")
        weighted = [n for n in nodes if n.op in WEIGHTED]
        if self.keep_first_float:
            exclude(weighted[:1], "keep_first_float", "keep_first_float (no Conv, Gemm or "
                                                      "MatMul in the graph)")
        if self.keep_last_float:
            exclude(weighted[-1:], "keep_last_float", "keep_last_float (no Conv, Gemm or "
                                                      "MatMul in the graph)")
        if unmatched:
            raise ConfigError(f"exclusion(s) matching nothing in graph {graph.name!r}: "
                              f"{'; '.join(unmatched)}. {_existing(nodes)}")
        return {node: "; ".join(why) for node, why in reasons.items()}

    def check_overrides(self, graph: Graph) -> None:
        """Raise ``ConfigError`` naming every override whose tensor ``graph`` does not have."""
        missing = [name for name in self.overrides if not graph.has_value(name)]
        if missing:
            known = [v.name for v in graph.values() if not v.is_constant][:_SHOWN]
            raise ConfigError(f"override(s) for tensor(s) that graph {graph.name!r} does not "
                              f"have: {_allowed(missing)}; its tensors include "
                              f"{_allowed(known)}")


def _layer_names(node: Node) -> tuple[str, ...]:
    return (node.name, *node.origins)


def _existing(nodes: list[Node]) -> str:
    layers: dict[str, None] = {}
    for node in nodes:
        layers.update(dict.fromkeys(_layer_names(node)))
    names = list(layers)
    more = f" (and {len(names) - _SHOWN} more)" if len(names) > _SHOWN else ""
    op_types = sorted({n.op for n in nodes})
    return (f"Its layers are {_allowed(names[:_SHOWN])}{more}; its op types are "
            f"{_allowed(op_types)}")


# -- validating fields ---------------------------------------------------------------------------


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {_allowed(allowed)}, got {value!r}")
    return value


def _dtype(name: str, value: Any) -> str:
    value = DTYPE_ALIASES.get(value, value) if isinstance(value, str) else value
    if value not in DTYPES:
        raise ConfigError(f"{name} must be one of {_allowed(DTYPES)} (or "
                          f"{_allowed(DTYPE_ALIASES)}), got {value!r}")
    return value


def _strings(name: str, value: Any) -> list[str]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not all(
            isinstance(v, str) for v in value):
        raise ConfigError(f"{name} must be a list of strings, got {value!r}")
    return list(value)


def _calibration_options(method: str, options: Any) -> dict[str, Any]:
    if not isinstance(options, Mapping):
        raise ConfigError(f"calibration_options must be a mapping of option names to values, "
                          f"got {options!r}")
    allowed = CALIBRATION_OPTIONS[method]
    for key, value in options.items():
        if key not in allowed:
            takes = f"takes {_allowed(allowed)}" if allowed else "takes no options"
            raise ConfigError(f"calibration_options: {key!r} is not an option of calibration "
                              f"{method!r}, which {takes}")
        problem = allowed[key](value)
        if problem:
            raise ConfigError(f"calibration_options: {key!r} of calibration {method!r} must be "
                              f"{problem}, got {value!r}")
    return dict(options)


def _overrides(overrides: Any) -> dict[str, tuple[float, float] | QuantParams]:
    if not isinstance(overrides, Mapping):
        raise ConfigError(f"overrides must be a mapping of tensor names to ranges or "
                          f"QuantParams, got {overrides!r}")
    return {name: _override(name, value) for name, value in overrides.items()}


def _override(name: str, value: Any) -> tuple[float, float] | QuantParams:
    if isinstance(value, QuantParams):
        params = value
    elif isinstance(value, Mapping):
        params = _params_from_json(name, value)
    elif (isinstance(value, (list, tuple)) and len(value) == 2
          and all(_is_number(v) for v in value)):
        lo, hi = float(value[0]), float(value[1])
        if lo > hi:
            raise ConfigError(f"overrides[{name!r}]: the range [{lo}, {hi}] has lo > hi")
        return (lo, hi)
    else:
        raise ConfigError(f"overrides[{name!r}] must be a range [lo, hi] of finite numbers or "
                          f"QuantParams (scale, zero_point, dtype, axis), got {value!r}")
    problems = params.problems()
    if problems or params.dtype.value not in DTYPES:
        problems = problems or [f"dtype must be one of {_allowed(DTYPES)}"]
        raise ConfigError(f"overrides[{name!r}]: invalid QuantParams {params}: "
                          f"{'; '.join(problems)}")
    return params


_PARAM_KEYS = ("scale", "zero_point", "dtype", "axis", "qmin", "qmax")


def _params_from_json(name: str, data: Mapping[str, Any]) -> QuantParams:
    unknown = [k for k in data if k not in _PARAM_KEYS]
    if unknown or "scale" not in data or "zero_point" not in data:
        raise ConfigError(f"overrides[{name!r}]: QuantParams need 'scale' and 'zero_point' "
                          f"(and optionally {_allowed(_PARAM_KEYS[2:])}), got keys "
                          f"{_allowed(data)}")
    dtype = _dtype(f"overrides[{name!r}].dtype", data.get("dtype", "i8"))
    try:
        return QuantParams(data["scale"], data["zero_point"], DType(dtype), data.get("axis"),
                           data.get("qmin"), data.get("qmax"))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"overrides[{name!r}]: invalid QuantParams: {exc}") from None


def _override_to_json(value: tuple[float, float] | QuantParams) -> Any:
    if isinstance(value, QuantParams):
        return {"scale": list(value.scale), "zero_point": list(value.zero_point),
                "dtype": value.dtype.value, "axis": value.axis, "qmin": value.qmin,
                "qmax": value.qmax}
    return list(value)


# -- reading files -------------------------------------------------------------------------------


def _parse_json(path: Path, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"cannot read config {str(path)!r}: invalid JSON at line "
                          f"{exc.lineno}, column {exc.colno}: {exc.msg}") from None


def _parse_toml(path: Path, text: str) -> Any:
    try:
        import tomllib
    except ImportError:  # Python 3.10: the standard library has no TOML reader
        raise ConfigError(f"cannot read config {str(path)!r}: reading TOML needs Python 3.11 "
                          f"or later (this is Python {sys.version_info.major}."
                          f"{sys.version_info.minor}); write the config as .json") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"cannot read config {str(path)!r}: invalid TOML: {exc}") from None
