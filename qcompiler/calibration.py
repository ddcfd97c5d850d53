"""Calibration: run a float graph over data and keep statistics of every float activation.

``calibrate(graph, calib)`` runs a copy of the graph with ``Observe`` nodes (inserted by the
``insert-observers`` pass when the graph has none) on the ``Interpreter``; a hook after each
Observe node feeds its array to that value's ``TensorStats``, which keep exact min/max,
moving-average min/max and a histogram in memory that does not grow with the data, so every
calibration method can pick its range afterwards from the same run. The result is a
``Calibration``: a mapping from value name to ``TensorStats``.

``calib`` is one of:

- an iterable of ``{input_name: array}`` dicts, one per batch (a name the model does not have
  is an error), or of arrays when the model has a single input;
- a path to an ``.npz`` file (or an ``np.load`` result) holding one array per model input,
  samples along axis 0; arrays that are not model inputs (labels, say) are ignored;
- a mapping of input name to such an array, or a single array for a single-input model.

Data held whole (the last two kinds, and lists and tuples of batches) is split along axis 0 into
batches the model accepts: its batch size when the model fixes one, else ``DEFAULT_BATCH``. It
is checked completely (names, dtypes and shapes as ``Executable.run`` checks them, finite
values, at least one sample) before the model runs once; a generator's batches are checked each
before it runs. NaN or Inf is an error naming the input and the sample.

``cache=path`` keeps the result in a JSON file keyed by a sha256 of the graph (its text and
constants), of the data (every batch's arrays, hashed as they stream) and of ``bins``: a run
with the same graph and data reads it instead of running the model. The statistics serve every
calibration method, so a new config reuses the cache. Data that can be read twice (held whole,
or a list or tuple) is hashed before anything runs, so a hit skips the model; a generator can be
read only once, so it always runs and then refreshes the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from .errors import CalibrationError
from .executable import input_specs
from .graph import Graph, Node
from .input_check import InputCheckError, InputSpec, check_feeds, read_feeds
from .interpreter import Interpreter
from .observers import TensorStats
from .ops.observe import OBSERVE
from .paths import atomic_file

DEFAULT_BATCH = 32  # samples per batch when the model's batch dimension is symbolic
FORMAT = "qcompiler-calibration"
FORMAT_VERSION = 1

Batch = dict[str, np.ndarray]


# -- data --------------------------------------------------------------------------------------


class CalibrationData:
    """The validated batches of ``calib`` for ``graph``; iterating yields ``{name: array}``.

    ``reiterable`` data (held whole, a list or a tuple) is checked completely when first
    iterated and can be iterated again; other iterables are read once, each batch checked
    before it is yielded. An empty set raises ``CalibrationError`` once iteration ends.
    """

    def __init__(self, graph: Graph, calib: Any):
        self.specs = input_specs(graph)
        self._raw, self.reiterable = _raw_batches(self.specs, calib)
        self._checked: list[Batch] | None = None

    def __len__(self) -> int:
        if not self.reiterable:
            raise TypeError("the number of batches of a generator is not known in advance")
        return len(self._raw)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Batch]:
        if not self.reiterable:
            return _checked_batches(self.specs, self._raw)
        if self._checked is None:
            self._checked = list(_checked_batches(self.specs, self._raw))
        return iter(self._checked)


def calibration_batches(graph: Graph, calib: Any) -> Iterator[Batch]:
    """The batches of ``calib`` as feeds for ``graph``, checked (see the module docstring)."""
    return iter(CalibrationData(graph, calib))


def _raw_batches(specs: list[InputSpec], calib: Any) -> tuple[Iterable[Any], bool]:
    """The unchecked batches of ``calib`` and whether they can be iterated again."""
    if isinstance(calib, (str, os.PathLike)):
        arrays = read_feeds(calib, CalibrationError)
        return _split(specs, arrays, f"calibration file {str(calib)!r}", extra_ok=True), True
    if isinstance(calib, np.lib.npyio.NpzFile):
        return _split(specs, calib, "the .npz calibration data", extra_ok=True), True
    if isinstance(calib, Mapping):
        return _split(specs, calib, "the calibration data", extra_ok=False), True
    if isinstance(calib, np.ndarray):
        name = _single_input(specs, "a single array")
        return _split(specs, {name: calib}, "the calibration array", extra_ok=False), True
    if isinstance(calib, Sequence):
        return list(calib), True
    if isinstance(calib, Iterable):
        return calib, False
    raise CalibrationError(f"calibration data must be an iterable of {{input name: array}} "
                           f"dicts, of arrays (single-input models), or a path to an .npz "
                           f"file; got {type(calib).__name__}")


def _single_input(specs: list[InputSpec], what: str) -> str:
    if len(specs) != 1:
        names = ", ".join(f"{s.name} ({s.describe()})" for s in specs) or "none"
        raise CalibrationError(f"calibration data given as {what} fits a model with one input, "
                               f"but this one has {len(specs)}: {names}; give "
                               f"{{input name: array}} dicts")
    return specs[0].name


def _split(specs: list[InputSpec], arrays: Mapping[str, Any], where: str, *,
           extra_ok: bool) -> list[Batch]:
    """Whole data sets (samples along axis 0), one per input, cut into batches that fit.
    Only the inputs' arrays are read (an ``np.load`` result reads each from the file)."""
    names = [s.name for s in specs]
    held = ", ".join(repr(k) for k in arrays) or "no arrays"
    unknown = [k for k in arrays if k not in names]
    if unknown and not extra_ok:
        raise CalibrationError(f"{where}: unknown input(s) {', '.join(map(repr, unknown))}; "
                               f"the model's inputs are: {_expected(specs)}")
    missing = [n for n in names if n not in arrays]
    if missing:
        raise CalibrationError(f"{where} has no array for input(s) "
                               f"{', '.join(map(repr, missing))}; it holds {held}; the "
                               f"model's inputs are: {_expected(specs)}")
    data = {spec.name: np.asarray(arrays[spec.name]) for spec in specs}
    counts = {}
    for spec in specs:
        array = data[spec.name]
        if array.ndim == 0 or not spec.shape:
            raise CalibrationError(f"{where}: input {spec.name!r} ({spec.describe()}) needs "
                                   f"samples along axis 0, got shape {list(array.shape)}; "
                                   f"give a list of {{input name: array}} batches instead")
        counts[spec.name] = array.shape[0]
    if len(set(counts.values())) > 1:
        raise CalibrationError(f"{where}: the inputs hold different numbers of samples "
                               f"({', '.join(f'{k}: {v}' for k, v in counts.items())})")
    total = next(iter(counts.values()), 0)
    fixed = _fixed_batch(specs)
    size = fixed or DEFAULT_BATCH
    if fixed and total % fixed:
        raise CalibrationError(f"{where} holds {total} samples, but the model's batch size is "
                               f"fixed at {size} ({_expected(specs)}): give a multiple of "
                               f"{size}")
    return [{name: array[start:start + size] for name, array in data.items()}
            for start in range(0, total, size)]


def _fixed_batch(specs: list[InputSpec]) -> int | None:
    """The model's batch size when an input fixes its first dimension, else None."""
    return next((s.shape[0] for s in specs if s.shape and isinstance(s.shape[0], int)), None)


def _expected(specs: list[InputSpec]) -> str:
    return ", ".join(f"{s.name} ({s.describe()})" for s in specs) or "none"


def _checked_batches(specs: list[InputSpec], raw: Iterable[Any]) -> Iterator[Batch]:
    """Each batch checked before it is yielded; an empty set is an error at the end."""
    offset = 0
    count = 0
    for index, item in enumerate(raw):
        batch = _checked(specs, item, index, offset)
        offset += _samples(batch)
        count += 1
        yield batch
    if count == 0:
        raise CalibrationError("the calibration data is empty: give at least one batch")


def _checked(specs: list[InputSpec], item: Any, index: int, offset: int) -> Batch:
    """One batch as feeds: names, dtypes and shapes as ``Executable.run`` checks them, at
    least one sample, finite values (else an error naming the input and the sample)."""
    if not isinstance(item, Mapping):
        item = {_single_input(specs, f"{type(item).__name__}s (batch {index})"): item}
    try:
        arrays = check_feeds(specs, item)
    except InputCheckError as exc:
        raise CalibrationError(f"calibration batch {index}: {exc}") from None
    batch = {spec.name: array for spec, array in zip(specs, arrays)}
    if _samples(batch) == 0:
        raise CalibrationError(f"calibration batch {index} holds no samples")
    for name, array in batch.items():
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            where = tuple(int(i) for i in np.argwhere(~np.isfinite(array))[0])
            bad = array[where]
            what = "NaN" if np.isnan(bad) else ("+Inf" if bad > 0 else "-Inf")
            sample = offset + where[0] if where else offset
            raise CalibrationError(f"calibration input {name!r} holds {what} in sample {sample} "
                                   f"(batch {index}, element {list(where)}): calibration needs "
                                   f"finite values")
    return batch


def _samples(batch: Batch) -> int:
    """How many samples a batch holds: the first dimension of its first input of rank >= 1."""
    return next((a.shape[0] for a in batch.values() if a.ndim), 1)


# -- the result --------------------------------------------------------------------------------


class Calibration(Mapping[str, TensorStats]):
    """What calibration measured: value name -> ``TensorStats``, and how many samples and
    batches it saw. ``merge`` combines calibrations of parts of a data set."""

    def __init__(self, stats: Mapping[str, TensorStats], *, samples: int, batches: int):
        self._stats = dict(stats)
        self.samples = samples
        self.batches = batches

    def __getitem__(self, name: str) -> TensorStats:
        return self._stats[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._stats)

    def __len__(self) -> int:
        return len(self._stats)

    def __repr__(self) -> str:
        return (f"Calibration({len(self)} values, {self.samples} samples in {self.batches} "
                f"batches)")

    def merge(self, other: Calibration) -> Calibration:
        """This calibration combined with one of the same graph on other data (in place)."""
        if set(self) != set(other):
            differ = sorted(set(self) ^ set(other))
            raise CalibrationError(f"cannot merge calibrations of different graphs: the values "
                                   f"{', '.join(differ[:8])} are observed in only one")
        for name, stats in self._stats.items():
            stats.merge(other[name])
        self.samples += other.samples
        self.batches += other.batches
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": FORMAT_VERSION, "samples": self.samples,
                "batches": self.batches,
                "stats": {name: stats.to_dict() for name, stats in self._stats.items()}}

    @classmethod
    def from_dict(cls, data: Any) -> Calibration:
        if not (isinstance(data, dict) and data.get("format") == FORMAT):
            raise CalibrationError(f"not a qcompiler calibration (no \"format\": {FORMAT!r})")
        if data.get("version") != FORMAT_VERSION:
            raise CalibrationError(f"calibration format version {data.get('version')!r} is not "
                                   f"the supported version {FORMAT_VERSION}")
        try:
            stats = {name: TensorStats.from_dict(d) for name, d in data["stats"].items()}
            return cls(stats, samples=int(data["samples"]), batches=int(data["batches"]))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CalibrationError(f"malformed calibration: {type(exc).__name__}: "
                                   f"{exc}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> Calibration:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CalibrationError(f"malformed calibration: invalid JSON at line {exc.lineno}, "
                                   f"column {exc.colno}: {exc.msg}") from None
        return cls.from_dict(data)


# -- calibrating -------------------------------------------------------------------------------


def calibrate(graph: Graph, calib: Any, *, bins: int = 2048,
              cache: str | os.PathLike[str] | None = None,
              progress: bool | None = None) -> Calibration:
    """Statistics of every float activation of ``graph`` over ``calib`` (see the module
    docstring); ``graph`` is not changed. Observers are inserted (on a copy) when it has none.

    ``bins`` is the histogram size of each ``TensorStats``; ``cache`` a JSON file read when its
    key matches and (re)written atomically otherwise; ``progress`` shows a progress bar (by
    default only when stderr is a terminal).
    """
    from qcompiler.passes.observe import insert_observers

    observed = graph.copy()
    if not observed.find_nodes(OBSERVE):
        insert_observers(observed)
    data = CalibrationData(observed, calib)
    graph_digest = graph_hash(observed)
    data_digest = None
    if cache is not None and data.reiterable:
        data_digest = _data_hash(data)
        hit = _read_cache(cache, _cache_key(graph_digest, data_digest, bins))
        if hit is not None:
            return hit
    result, streamed = _run(observed, data, bins, progress, hashed=data_digest is None)
    if cache is not None:
        _write_cache(cache, _cache_key(graph_digest, data_digest or streamed, bins), result)
    return result


def _run(graph: Graph, data: CalibrationData, bins: int, progress: bool | None, *,
         hashed: bool) -> tuple[Calibration, str]:
    """Run ``graph`` over the batches, feeding each Observe node's array to its stats;
    returns the calibration and (when ``hashed``) the digest of the data as it streamed."""
    observers = graph.find_nodes(OBSERVE)
    stats = {node.inputs[0].name: TensorStats(bins=bins) for node in observers}
    where = {"batch": 0, "first": 0, "samples": 0}

    def observe(interp: Interpreter, node: Node, arrays: list[np.ndarray]) -> None:
        if node.op != OBSERVE:
            return
        name = node.inputs[0].name
        last = where["first"] + where["samples"] - 1
        # what a non-finite value computed inside the graph is reported with
        context = (f"%{name} ({_made_by(node)}) in calibration batch {where['batch']} "
                   f"(samples {where['first']} to {last})")
        stats[name].observe(arrays[0], context=context)

    interpreter = Interpreter(graph, after=observe)
    digest = hashlib.sha256()
    total = len(data) if data.reiterable else None
    batches = 0
    with tqdm(data, total=total, desc="calibrating", unit="batch", leave=False,
              disable=None if progress is None else not progress) as bar:
        for batch in bar:
            where.update(batch=batches, first=where["first"] + where["samples"],
                         samples=_samples(batch))
            if hashed:
                _hash_batch(digest, batch)
            interpreter.run(batch)
            batches += 1
    samples = where["first"] + where["samples"]
    return Calibration(stats, samples=samples, batches=batches), digest.hexdigest()


def _made_by(node: Node) -> str:
    """The producer of the value an Observe node observes, as errors name it."""
    producer = node.inputs[0].producer
    return producer.describe() if producer is not None else "a graph input"


# -- the cache ---------------------------------------------------------------------------------


def graph_hash(graph: Graph) -> str:
    """A sha256 of ``graph``: its text form and the bytes of its constants."""
    digest = hashlib.sha256(graph.to_text().encode("utf-8"))
    for name, array in sorted(graph.constant_arrays().items()):
        _hash_array(digest, name, array)
    return digest.hexdigest()


def _data_hash(batches: Iterable[Batch]) -> str:
    digest = hashlib.sha256()
    for batch in batches:
        _hash_batch(digest, batch)
    return digest.hexdigest()


def _hash_batch(digest: Any, batch: Batch) -> None:
    for name, array in batch.items():
        _hash_array(digest, name, array)


def _hash_array(digest: Any, name: str, array: np.ndarray) -> None:
    digest.update(json.dumps([name, array.dtype.str, list(array.shape)]).encode("utf-8"))
    digest.update(np.ascontiguousarray(array).data)


def _cache_key(graph_digest: str, data_digest: str, bins: int) -> str:
    return hashlib.sha256(json.dumps([FORMAT_VERSION, graph_digest, data_digest, bins])
                          .encode("utf-8")).hexdigest()


def _read_cache(path: str | os.PathLike[str], key: str) -> Calibration | None:
    """The cached calibration when the file holds one under ``key``; None for a missing,
    unreadable or stale file (it is rewritten after the run)."""
    try:
        entry = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(entry, dict) or entry.get("key") != key:
            return None
        return Calibration.from_dict(entry["calibration"])
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, CalibrationError):
        return None


def _write_cache(path: str | os.PathLike[str], key: str, result: Calibration) -> None:
    """Write the cache entry beside ``path`` and rename it into place, so the file is whole
    or not changed at all."""
    path = Path(path)
    entry = json.dumps({"key": key, "calibration": result.to_dict()})
    with atomic_file(path, "write the calibration cache") as file:
        file.write(entry.encode("utf-8"))
