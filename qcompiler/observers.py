"""Streaming observers: what calibration remembers about a tensor, in memory that does not grow
with the number of batches, and that merges across processes.

- ``MinMaxObserver``: exact min/max, per tensor or per channel along ``axis``.
- ``MovingAverageMinMaxObserver``: ``m += momentum * (batch_m - m)`` per batch (onnxruntime's
  ``averaging_constant``), the first batch setting ``m``.
- ``HistogramObserver``: a histogram whose bins have a power-of-two width ``2^k`` and sit at
  multiples of it (bin ``i`` is ``[i 2^k, (i + 1) 2^k)``). When the data outgrows ``bins`` bins,
  ``k`` grows by one and each pair of neighbours merges into one bin exactly, so the histogram
  is a function of the data alone, not of the order or the split of the batches: ``k`` is the
  smallest exponent, no finer than float32 resolution at the largest magnitude, for which
  ``[min, max]`` spans at most ``bins`` bins. From it, ranges are chosen by percentile, entropy
  (KL divergence, TensorRT-style, as onnxruntime's ``HistogramCollector``) or minimal expected
  squared quantization error ("mse", rounding and clipping, for the given qmin/qmax).
- ``TensorStats``: the three together, so one calibration run serves every method in
  ``METHODS`` and any later config.

``a.merge(b)`` folds ``b``'s state into ``a``: for min/max and histograms the result equals
observing the concatenated data (bit-identical counts and ranges). A moving average depends on
order by design; its merge takes the mean of the two averages weighted by their numbers of
batches (commutative and associative, so any split merges to the same value, which is not the
value of one sequential pass). ``to_dict`` / ``from_dict`` round-trip the state exactly through
JSON.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from .errors import CalibrationError, ConfigError
from .quant_math import params_from_range

METHODS = ("minmax", "moving_average", "percentile", "entropy", "mse")
HISTOGRAM_METHODS = ("minmax", "percentile", "entropy", "mse")
_OPTIONS = {"minmax": (), "percentile": ("percentile",), "entropy": ("num_quantized_bins",),
            "mse": ()}
# The MSE search evaluates its candidates on the histogram merged down to this many bins.
MSE_BINS = 512

# The histogram's bins are never finer than 2^-24 of the largest magnitude (float32's
# resolution), so bin indices stay below 2^24 and constant data has a well-defined width.
_RESOLUTION_BITS = 24
# The exponent of an all-zero histogram: below the floor of any nonzero float64 (2^-1074 - 24).
_ZERO_EXPONENT = -1100


def _prefix(context: str | None) -> str:
    return f"{context}: " if context else ""


def _batch_range(x, axis: int | None, context: str | None):
    """``(min, max, array)`` of a batch (per channel along ``axis``), or None when it is empty;
    a NaN or Inf is a ``CalibrationError`` saying how many there are and where the first is."""
    array = np.asarray(x)
    if array.dtype.kind not in "fiu":
        raise CalibrationError(f"{_prefix(context)}cannot observe a tensor of dtype "
                               f"{array.dtype}")
    if axis is not None:
        if not -array.ndim <= axis < array.ndim:
            raise CalibrationError(f"{_prefix(context)}channel axis {axis} is out of range for "
                                   f"a tensor of shape {list(array.shape)}")
        axis %= array.ndim
    if array.size == 0:
        return None
    others = None if axis is None else tuple(d for d in range(array.ndim) if d != axis)
    # + 0.0 turns -0.0 into 0.0: min(0.0, -0.0) would otherwise depend on the order of batches
    if axis is None:  # Python floats: np.all on numpy scalars keeps allocating (numpy 2.x)
        lo, hi = float(array.min()) + 0.0, float(array.max()) + 0.0
        finite = math.isfinite(lo) and math.isfinite(hi)
    else:
        lo, hi = array.min(axis=others) + 0.0, array.max(axis=others) + 0.0
        finite = bool(np.isfinite(lo).all() and np.isfinite(hi).all())
    if not finite:
        bad = ~np.isfinite(array)
        first = np.unravel_index(int(np.argmax(bad)), array.shape)
        raise CalibrationError(f"{_prefix(context)}{int(bad.sum())} NaN or Inf values in "
                               f"calibration data (first at index {list(map(int, first))} of a "
                               f"tensor of shape {list(array.shape)})")
    if axis is None:
        return lo, hi, array
    return lo.astype(np.float64), hi.astype(np.float64), array


class Observer:
    """Shared machinery: the kind registry for ``from_dict`` and the type check of ``merge``."""

    kind: ClassVar[str] = ""
    _kinds: ClassVar[dict[str, type[Observer]]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        Observer._kinds[cls.kind] = cls

    def _check_mergeable(self, other: Observer, *fields: str) -> None:
        if type(other) is not type(self):
            raise CalibrationError(f"cannot merge a {type(other).__name__} into a "
                                   f"{type(self).__name__}")
        for name in fields:
            if getattr(self, name) != getattr(other, name):
                raise CalibrationError(f"cannot merge {type(self).__name__}s with different "
                                       f"{name}: {getattr(self, name)} and "
                                       f"{getattr(other, name)}")

    @classmethod
    def from_dict(cls, d: dict) -> Observer:
        """The observer ``d`` (from ``to_dict``) describes, of the kind it names (which must be
        ``cls`` or a subclass)."""
        try:
            kind = Observer._kinds[d["kind"]]
            if not issubclass(kind, cls):
                raise ValueError(f"a {kind.__name__} is not a {cls.__name__}")
            return kind._from_dict(d)
        except (KeyError, TypeError, ValueError) as exc:
            raise CalibrationError(f"malformed observer state ({exc!r}): {str(d)[:200]}") from exc

    @classmethod
    def _from_dict(cls, d: dict) -> Observer:
        raise NotImplementedError


def _to_json(v):
    if v is None or isinstance(v, float):
        return v
    return [float(e) for e in v]


def _from_json(v):
    if v is None or isinstance(v, (int, float)):
        return None if v is None else float(v)
    return np.array(v, dtype=np.float64)


class MinMaxObserver(Observer):
    """Exact running min and max, per tensor or per channel along ``axis``."""

    kind = "minmax"

    def __init__(self, axis: int | None = None):
        self.axis = axis
        self.min: float | np.ndarray | None = None
        self.max: float | np.ndarray | None = None
        self.batches = 0

    def observe(self, x, *, context: str | None = None) -> MinMaxObserver:
        got = _batch_range(x, self.axis, context)
        if got is not None:
            self._combine(got[0], got[1], 1, context)
        return self

    def _combine(self, lo, hi, batches: int, context: str | None = None) -> None:
        if self.min is None:
            self.min, self.max = lo, hi
        else:
            if np.shape(lo) != np.shape(self.min):
                raise CalibrationError(f"{_prefix(context)}{np.size(lo)} channels along axis "
                                       f"{self.axis}, earlier batches had {np.size(self.min)}")
            self.min, self.max = self._fold(self.min, lo), self._fold_max(self.max, hi)
        self.batches += batches

    def _fold(self, old, new):
        return min(old, new) if self.axis is None else np.minimum(old, new)

    def _fold_max(self, old, new):
        return max(old, new) if self.axis is None else np.maximum(old, new)

    def merge(self, other: MinMaxObserver) -> MinMaxObserver:
        self._check_mergeable(other, "axis")
        if other.min is not None:
            self._combine(other.min, other.max, other.batches)
        return self

    def range(self) -> tuple[Any, Any]:
        if self.min is None:
            raise CalibrationError("no data was observed: the range is unknown")
        return self.min, self.max

    @property
    def nbytes(self) -> int:
        """Bytes of the numeric state: two floats, or two per channel; never more batches."""
        return 16 if self.axis is None or self.min is None else self.min.nbytes * 2

    def to_dict(self) -> dict:
        return {"kind": self.kind, "axis": self.axis, "min": _to_json(self.min),
                "max": _to_json(self.max), "batches": self.batches}

    @classmethod
    def _from_dict(cls, d: dict) -> MinMaxObserver:
        obs = cls(d["axis"])
        obs.min, obs.max, obs.batches = _from_json(d["min"]), _from_json(d["max"]), d["batches"]
        return obs


class MovingAverageMinMaxObserver(MinMaxObserver):
    """Min and max averaged over batches: ``m += momentum * (batch_m - m)``."""

    kind = "moving_average"

    def __init__(self, momentum: float = 0.01, axis: int | None = None):
        if not 0 < momentum <= 1:
            raise ConfigError(f"moving-average momentum must be in (0, 1], got {momentum}")
        super().__init__(axis)
        self.momentum = momentum

    def _fold(self, old, new):
        return old + self.momentum * (new - old)

    _fold_max = _fold

    def merge(self, other: MovingAverageMinMaxObserver) -> MovingAverageMinMaxObserver:
        """The mean of both averages weighted by their numbers of batches (order cannot be
        recovered from two averages; see the module docstring)."""
        self._check_mergeable(other, "axis", "momentum")
        if other.min is None:
            return self
        if self.min is None:
            self.min, self.max, self.batches = other.min, other.max, other.batches
            return self
        total = self.batches + other.batches
        self.min = (self.min * self.batches + other.min * other.batches) / total
        self.max = (self.max * self.batches + other.max * other.batches) / total
        self.batches = total
        return self

    def to_dict(self) -> dict:
        return {**super().to_dict(), "momentum": self.momentum}

    @classmethod
    def _from_dict(cls, d: dict) -> MovingAverageMinMaxObserver:
        obs = cls(d["momentum"], d["axis"])
        obs.min, obs.max, obs.batches = _from_json(d["min"]), _from_json(d["max"]), d["batches"]
        return obs


def _exponent_floor(amax: float) -> int:
    """The finest bin exponent for data whose largest magnitude is ``amax``."""
    if amax == 0:
        return _ZERO_EXPONENT
    return math.frexp(amax)[1] - _RESOLUTION_BITS


def _span(lo: float, hi: float, k: int) -> tuple[int, int]:
    """Indices of the bins of width 2^k holding ``lo`` and ``hi``."""
    return math.floor(math.ldexp(lo, -k)), math.floor(math.ldexp(hi, -k))


def _fitting_exponent(lo: float, hi: float, k: int, bins: int) -> int:
    """The smallest exponent >= k at which [lo, hi] spans at most ``bins`` bins."""
    if hi > lo:  # a width below (hi - lo) / bins cannot fit: start from its exponent
        k = max(k, math.frexp((hi - lo) / bins)[1] - 1)
    while True:
        first, last = _span(lo, hi, k)
        if last - first < bins:
            return k
        k += 1


class HistogramObserver(Observer):
    """A histogram of power-of-two-aligned bins (at most ``bins`` of them) with exact min and
    max; see the module docstring. ``range`` chooses a range by ``METHODS``' histogram methods."""

    kind = "histogram"

    def __init__(self, bins: int = 2048):
        if not isinstance(bins, int) or bins < 2:
            raise ConfigError(f"a histogram needs at least 2 bins, got {bins!r}")
        self.bins = bins
        self.min: float | None = None
        self.max: float | None = None
        self.count = 0
        self.exponent = _ZERO_EXPONENT
        self.offset = 0                       # index of the first bin
        self.counts = np.zeros(0, np.int64)   # counts of bins offset, offset + 1, ...

    # --- building -------------------------------------------------------------------------

    def observe(self, x, *, context: str | None = None) -> HistogramObserver:
        got = _batch_range(x, None, context)
        if got is None:
            return self
        lo, hi, array = got
        k = _fitting_exponent(lo, hi, _exponent_floor(max(-lo, hi)), self.bins)
        first, last = _span(lo, hi, k)
        index = np.floor(np.ldexp(array.astype(np.float64).reshape(-1), -k)).astype(np.int64)
        batch = HistogramObserver(self.bins)
        batch._set(lo, hi, array.size, k, first,
                   np.bincount(index - first, minlength=last - first + 1).astype(np.int64))
        return self.merge(batch)

    def merge(self, other: HistogramObserver) -> HistogramObserver:
        self._check_mergeable(other, "bins")
        if other.count == 0:
            return self
        if self.count == 0:
            self._set(other.min, other.max, other.count, other.exponent, other.offset,
                      other.counts.copy())
            return self
        lo, hi = min(self.min, other.min), max(self.max, other.max)
        k = _fitting_exponent(lo, hi, max(self.exponent, other.exponent), self.bins)
        first, last = _span(lo, hi, k)
        counts = (self._rebinned(k, first, last - first + 1)
                  + other._rebinned(k, first, last - first + 1))
        self._set(lo, hi, self.count + other.count, k, first, counts)
        return self

    def _set(self, lo, hi, count, exponent, offset, counts) -> None:
        self.min, self.max, self.count = lo, hi, count
        self.exponent, self.offset, self.counts = exponent, offset, counts

    @property
    def width(self) -> float:
        """The width of a bin."""
        return math.ldexp(1.0, self.exponent)

    @property
    def edges(self) -> np.ndarray:
        """The ``len(counts) + 1`` bin edges (exact in float64)."""
        idx = np.arange(self.offset, self.offset + self.counts.size + 1, dtype=np.float64)
        return np.ldexp(idx, self.exponent)

    @property
    def nbytes(self) -> int:
        """Bytes of the numeric state: at most ``bins`` counts and the min and max."""
        return self.counts.nbytes + 16

    def to_dict(self) -> dict:
        return {"kind": self.kind, "bins": self.bins, "min": self.min, "max": self.max,
                "count": self.count, "exponent": self.exponent, "offset": self.offset,
                "counts": self.counts.tolist()}

    @classmethod
    def _from_dict(cls, d: dict) -> HistogramObserver:
        obs = cls(d["bins"])
        obs._set(_from_json(d["min"]), _from_json(d["max"]), int(d["count"]),
                 int(d["exponent"]), int(d["offset"]), np.array(d["counts"], dtype=np.int64))
        if obs.counts.sum() != obs.count or obs.counts.size > obs.bins:
            raise ValueError("counts do not add up to count or exceed bins")
        return obs

    # --- choosing a range -----------------------------------------------------------------

    def range(self, method: str = "percentile", *, dtype: str = "i8", symmetric: bool = False,
              reduce_range: bool = False, **options) -> tuple[float, float]:
        """The range ``method`` chooses (one of ``HISTOGRAM_METHODS``), inside [min, max].

        Options: ``percentile`` (default 99.999, onnxruntime's: keep that share of the values,
        cutting half the rest on each side, or of |x| when ``symmetric``); entropy's
        ``num_quantized_bins`` (default 128, onnxruntime's; like TensorRT's, it assumes data
        around 0); mse has none. The result is the data's range once clipped to the chosen
        thresholds.
        """
        if method not in _OPTIONS:
            raise ConfigError(f"unknown histogram range method {method!r}; expected one of "
                              f"{', '.join(HISTOGRAM_METHODS)}")
        unknown = set(options) - set(_OPTIONS[method])
        if unknown:
            raise ConfigError(f"unknown option(s) {', '.join(sorted(unknown))} for the "
                              f"{method!r} range; it takes "
                              f"{', '.join(_OPTIONS[method]) or 'none'}")
        if self.count == 0:
            raise CalibrationError("no data was observed: the range is unknown")
        choose = {"minmax": self._minmax, "percentile": self._percentile_range,
                  "entropy": self._entropy_range, "mse": self._mse_range}[method]
        return choose(dtype=dtype, symmetric=symmetric, reduce_range=reduce_range, **options)

    def _minmax(self, *, dtype, symmetric, reduce_range) -> tuple[float, float]:
        return self.min, self.max

    def clipped(self, lo: float, hi: float) -> tuple[float, float]:
        """The range of the data once clipped to ``[lo, hi]``: inside [min, max], and
        ``lo <= hi`` even when all the data lies beyond one threshold."""
        return min(max(self.min, lo), hi), min(max(self.max, lo), hi)

    def percentile(self, q: float, *, absolute: bool = False) -> float:
        """The ``q``-th percentile (0..100) of the data (of |x| when ``absolute``), placed
        linearly within the bin it falls in: within one bin width of numpy's where the data is
        dense."""
        if not 0 <= q <= 100:
            raise ConfigError(f"percentile must be in [0, 100], got {q}")
        index = np.arange(self.offset, self.offset + self.counts.size, dtype=np.int64)
        counts = self.counts
        lo, hi = self.min, self.max
        if absolute:  # fold: bin -i-1 of x is bin i of |x| (0 is an edge)
            index, inverse = np.unique(np.where(index < 0, -index - 1, index),
                                       return_inverse=True)
            counts = np.bincount(inverse, weights=self.counts).astype(np.int64)
            lo, hi = max(0.0, self.min, -self.max), max(-self.min, self.max)
        keep = counts > 0
        index, counts = index[keep], counts[keep]
        # numpy's linear definition: position (N - 1) q / 100 in the sorted data, between the
        # values of ranks floor + 1 and floor + 2; the values of a bin are taken as spread
        # evenly across it, and the extremes are known exactly. Interpolating between the two
        # ranks (not inside one bin) keeps a sparse tail's last value: the 99.999th percentile
        # of 48 values is their maximum, not the bin edge of the one before it.
        position = (self.count - 1) * q / 100.0
        if position <= 0 or position >= self.count - 1:
            return lo if position <= 0 else hi
        cumulative = np.cumsum(counts)

        def ranked(rank: int) -> float:  # the estimated value of 1-based rank ``rank``
            if rank <= 1 or rank >= self.count:
                return lo if rank <= 1 else hi
            j = min(int(np.searchsorted(cumulative, rank, side="left")), counts.size - 1)
            inside = (rank - (cumulative[j] - counts[j]) - 0.5) / counts[j]
            return min(max(math.ldexp(float(index[j]) + inside, self.exponent), lo), hi)

        below = math.floor(position)
        a, b = ranked(below + 1), ranked(below + 2)
        return a + (position - below) * (b - a)

    def _percentile_range(self, *, dtype, symmetric, reduce_range,
                          percentile: float = 99.999) -> tuple[float, float]:
        if symmetric:
            t = self.percentile(percentile, absolute=True)
            return self.clipped(-t, t)
        cut = (100.0 - percentile) / 2
        return self.percentile(cut), self.percentile(100.0 - cut)

    def _rebinned(self, k: int, first: int, size: int) -> np.ndarray:
        """The counts at the coarser exponent ``k``, as ``size`` bins from index ``first``."""
        counts = np.zeros(size, np.int64)
        if k == self.exponent:
            counts[self.offset - first:self.offset - first + self.counts.size] = self.counts
            return counts
        index = np.arange(self.offset, self.offset + self.counts.size, dtype=np.int64)
        # beyond a shift of 63 every index is 0 or -1 anyway
        index = (index >> min(k - self.exponent, 63)) - first
        # the indices do not decrease: sum the runs of equal ones
        starts = np.concatenate([[0], np.flatnonzero(np.diff(index)) + 1])
        counts[index[starts]] = np.add.reduceat(self.counts, starts)
        return counts

    def coarsened(self, max_bins: int) -> tuple[np.ndarray, int, int]:
        """``(counts, first index, exponent)``: neighbours merged until at most ``max_bins``."""
        k, first, last = self.exponent, self.offset, self.offset + self.counts.size - 1
        while last - first >= max_bins:
            k, first, last = k + 1, first >> 1, last >> 1
        return self._rebinned(k, first, last - first + 1), first, k

    def symmetric_counts(self, max_bins: int) -> tuple[np.ndarray, int]:
        """Counts of ``2 B`` bins centred on 0 (``B`` each side, ``2 B <= max_bins`` after
        merging neighbours where needed) and the exponent of their width."""
        k, first, last = self.exponent, self.offset, self.offset + self.counts.size - 1
        while max(-first, last + 1) * 2 > max_bins:
            k, first, last = k + 1, first >> 1, last >> 1
        half = max(-first, last + 1)
        return self._rebinned(k, -half, 2 * half), k

    def _entropy_range(self, *, dtype, symmetric, reduce_range,
                       num_quantized_bins: int = 128) -> tuple[float, float]:
        counts, k = self.symmetric_counts(max(self.bins, num_quantized_bins))
        half = counts.size // 2
        if half < num_quantized_bins // 2:  # too few bins to search: the whole range
            return self.min, self.max
        start, end = kl_threshold(counts, num_quantized_bins)
        return self.clipped(math.ldexp(start - half, k), math.ldexp(end - half, k))

    def _mse_range(self, *, dtype, symmetric, reduce_range) -> tuple[float, float]:
        return mse_range(self, dtype=dtype, symmetric=symmetric, reduce_range=reduce_range)


def kl_threshold(hist: np.ndarray, num_quantized_bins: int = 128) -> tuple[int, int]:
    """The slice ``[start, end)`` of the symmetric histogram ``hist`` (zero at the edge
    ``len(hist) // 2``) whose clipped distribution, quantized to ``num_quantized_bins`` levels,
    has the least KL divergence from the original: TensorRT's entropy calibration exactly as
    onnxruntime's ``HistogramCollector.get_entropy_threshold`` computes it (slices of ``i`` bins
    left and ``i + 1`` right of zero, eps-smoothing, float32 divergence, the first minimum),
    vectorised within each candidate."""
    hist = np.asarray(hist, dtype=np.int64)
    n, zero = hist.size, hist.size // 2
    nq = num_quantized_bins
    cumulative = np.concatenate([[0], np.cumsum(hist)])
    total = int(cumulative[-1])
    best, best_div = None, None
    for i in range(nq // 2, zero + 1):
        start, end = zero - i, min(zero + i + 1, n)
        sliced = hist[start:end]
        p = sliced.copy()
        p[0] += cumulative[start]
        p[-1] += total - cumulative[end]
        nonzero = (p != 0).astype(np.int64)
        merged = sliced.size // nq
        whole = nq * merged
        quantized = sliced[:whole].reshape(nq, merged).sum(axis=1)
        quantized[-1] += sliced[whole:].sum()
        norm = nonzero[:whole].reshape(nq, merged).sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            level = np.where(norm != 0, quantized / np.maximum(norm, 1), 0).astype(np.int64)
        q = np.zeros(p.size, np.int64)
        q[:whole] = np.repeat(level, merged)
        div = _divergence(p, q)
        if best_div is None or div < best_div:
            best, best_div = (start, end), div
    return best


def _smooth(p: np.ndarray, eps: float = 0.0001) -> np.ndarray | None:
    """onnxruntime's ``smooth_distribution``: zeros become eps, taken off the nonzeros, in
    float32 (bit for bit: adding ``float32(eps)`` or ``float32(-eps1)`` once); None when all
    are zero, or when so many are that onnxruntime's assertion ``eps1 < 1`` would fail."""
    zero = p == 0
    n_zeros = int(np.count_nonzero(zero))
    n_nonzeros = p.size - n_zeros
    if not n_nonzeros:
        return None
    eps1 = eps * float(n_zeros) / float(n_nonzeros)
    if eps1 >= 1.0:
        return None
    return p.astype(np.float32) + np.where(zero, np.float32(eps), np.float32(-eps1))


def _divergence(p: np.ndarray, q: np.ndarray) -> np.float32:
    """KL(p || q) of the smoothed distributions in float32, as onnxruntime computes it;
    infinite when either cannot be smoothed. Smoothed entries are positive, so no term needs
    onnxruntime's special cases for zeros."""
    ps, qs = _smooth(p), _smooth(q)
    if ps is None or qs is None:
        return np.float32(np.inf)
    pk = ps / np.sum(ps)
    qk = qs / np.sum(qs)
    return np.sum(pk * np.log(pk / qk)).astype(np.float32)


# --- MSE-optimal range ----------------------------------------------------------------------

def _sawtooth_integral(u: np.ndarray) -> np.ndarray:
    """``G(u) = integral_0^u (t - round(t))^2 dt + 1/24`` (one period integrates to 1/12)."""
    r = np.floor(u + 0.5)
    return r / 12.0 + ((u - r) ** 3 + 0.125) / 3.0


def _antiderivative(x, low, high, scale):
    """An antiderivative in ``x`` of the squared error of the clamped grid quantizer."""
    inner = np.clip(x, low, high)
    rounding = scale ** 3 * (_sawtooth_integral(inner / scale) - _sawtooth_integral(low / scale))
    below = (np.minimum(x, low) - low) ** 3 / 3.0
    above = (np.maximum(x, high) - high) ** 3 / 3.0
    return below + rounding + above


def expected_error(lo, hi, counts, low, high, scale) -> np.ndarray:
    """Total squared quantization error of data with ``counts[j]`` values spread uniformly
    over ``[lo[j], hi[j]]`` (a point when equal), for each candidate quantizer (one row each
    of the column vectors ``low``, ``high``, ``scale``): the multiples of ``scale`` from ``low``
    to ``high``, values outside clamped to them. Exact for that spread, rounding ties aside."""
    width = hi - lo
    spread = np.where(width > 0, (_antiderivative(hi, low, high, scale)
                                  - _antiderivative(lo, low, high, scale))
                      / np.where(width > 0, width, 1.0), 0.0)
    point = _point_error(lo, low, high, scale)
    return (counts * np.where(width > 0, spread, point)).sum(axis=-1)


def _point_error(x, low, high, scale):
    inner = np.clip(x, low, high)
    grid = low + np.rint((inner - low) / scale) * scale
    return np.where(x < low, (x - low) ** 2, np.where(x > high, (x - high) ** 2,
                                                      (x - grid) ** 2))


def mse_range(hist: HistogramObserver, *, dtype: str = "i8", symmetric: bool = False,
              reduce_range: bool = False) -> tuple[float, float]:
    """The range whose quantization parameters (``params_from_range`` for the scheme) give the
    least expected squared error over the histogram (values uniform within each bin, clipped
    to [min, max]; quantized values clamped to the scheme's [qmin, qmax], which is what
    ``reduce_range`` means): a grid search over clipping points, then a finer one around the
    best. The coarse grids use the histogram merged down to ``MSE_BINS`` bins, the last,
    finest one the whole histogram."""
    supports = {fine: _support(hist, hist.bins if fine else MSE_BINS) for fine in (False, True)}

    def cost(lows: np.ndarray, highs: np.ndarray, fine: bool) -> np.ndarray:
        lo, hi, counts = supports[fine]
        p = params_from_range(lows, highs, dtype=dtype, symmetric=symmetric,
                              reduce_range=reduce_range, axis=0)
        scale = np.array(p.scale)
        zero = np.array(p.zero_point)
        low = (scale * (p.qmin - zero))[:, None]
        high = (scale * (p.qmax - zero))[:, None]
        out = np.empty(lows.size)
        for chunk in range(0, lows.size, 64):
            part = slice(chunk, chunk + 64)
            out[part] = expected_error(lo, hi, counts, low[part], high[part], scale[part, None])
        return out

    if symmetric:
        amax = max(-hist.min, hist.max)
        if amax == 0:
            return hist.min, hist.max
        f = _search_1d(lambda t, fine: cost(-amax * t, amax * t, fine))
        return hist.clipped(-amax * f, amax * f)
    neg, pos = min(hist.min, 0.0), max(hist.max, 0.0)
    if neg == 0 or pos == 0:
        f = _search_1d(lambda t, fine: cost(neg * t, pos * t, fine))
        return hist.clipped(neg * f, pos * f)
    a, b = _search_2d(lambda ta, tb, fine: cost(neg * ta, pos * tb, fine))
    return hist.clipped(neg * a, pos * b)


def _support(hist: HistogramObserver, max_bins: int):
    """``(lo, hi, counts)`` of the nonempty bins (merged down to ``max_bins``), each bin
    narrowed to [min, max]."""
    counts, first, k = hist.coarsened(max_bins)
    edges = np.ldexp(np.arange(first, first + counts.size + 1, dtype=np.float64), k)
    keep = counts > 0
    lo = np.maximum(edges[:-1], hist.min)[keep]
    hi = np.minimum(edges[1:], hist.max)[keep]
    return lo, hi, counts[keep].astype(np.float64)


def _search_1d(cost, points: int = 64) -> float:
    """The fraction in (0, 1] of least cost: a coarse grid, then a fine grid around its best."""
    grid = np.arange(1, points + 1) / points
    best = grid[int(np.argmin(cost(grid, False)))]
    fine = np.clip(best + np.linspace(-1, 1, 2 * points + 1) / points, 1.0 / points**2, 1.0)
    return float(fine[int(np.argmin(cost(fine, True)))])


def _search_2d(cost, points: int = 16, rounds: int = 4) -> tuple[float, float]:
    """Fractions (a, b) in (0, 1]^2 of least cost: a grid, then finer grids around the best
    point of the previous one, the last one fine."""
    center, step = np.array([0.5, 0.5]), 0.5
    for round_ in range(rounds):
        axis = np.linspace(-1, 1, points + 1) * step
        ta, tb = np.meshgrid(np.clip(center[0] + axis, 1e-6, 1.0),
                             np.clip(center[1] + axis, 1e-6, 1.0), indexing="ij")
        costs = cost(ta.reshape(-1), tb.reshape(-1), round_ == rounds - 1)
        i = int(np.argmin(costs))
        center = np.array([ta.reshape(-1)[i], tb.reshape(-1)[i]])
        step = 2 * step / points
    return float(center[0]), float(center[1])


class TensorStats(Observer):
    """What calibration keeps per activation: exact min/max, the moving-average min/max and a
    histogram, so a range can be chosen later by any method in ``METHODS``."""

    kind = "tensor_stats"

    def __init__(self, bins: int = 2048, momentum: float = 0.01):
        self.minmax = MinMaxObserver()
        self.moving_average = MovingAverageMinMaxObserver(momentum)
        self.histogram = HistogramObserver(bins)

    @property
    def bins(self) -> int:
        return self.histogram.bins

    def observe(self, x, *, context: str | None = None) -> TensorStats:
        self.minmax.observe(x, context=context)
        self.moving_average.observe(x, context=context)
        self.histogram.observe(x, context=context)
        return self

    def merge(self, other: TensorStats) -> TensorStats:
        self._check_mergeable(other, "bins")
        self.minmax.merge(other.minmax)
        self.moving_average.merge(other.moving_average)
        self.histogram.merge(other.histogram)
        return self

    def range(self, method: str = "minmax", *, dtype: str = "i8", symmetric: bool = False,
              reduce_range: bool = False, **options) -> tuple[float, float]:
        """The range ``method`` (one of ``METHODS``) chooses; see ``HistogramObserver.range``
        for the options of the histogram methods."""
        if method not in METHODS:
            raise ConfigError(f"unknown calibration method {method!r}; expected one of "
                              f"{', '.join(METHODS)}")
        if method in ("minmax", "moving_average"):
            if options:
                raise ConfigError(f"the {method!r} range takes no options, got "
                                  f"{', '.join(options)}")
            return getattr(self, method).range()
        return self.histogram.range(method, dtype=dtype, symmetric=symmetric,
                                    reduce_range=reduce_range, **options)

    @property
    def nbytes(self) -> int:
        """Bytes of the numeric state of the three observers."""
        return self.minmax.nbytes + self.moving_average.nbytes + self.histogram.nbytes

    def to_dict(self) -> dict:
        return {"kind": self.kind, "minmax": self.minmax.to_dict(),
                "moving_average": self.moving_average.to_dict(),
                "histogram": self.histogram.to_dict()}

    @classmethod
    def _from_dict(cls, d: dict) -> TensorStats:
        stats = cls.__new__(cls)
        stats.minmax = MinMaxObserver._from_dict(d["minmax"])
        stats.moving_average = MovingAverageMinMaxObserver._from_dict(d["moving_average"])
        stats.histogram = HistogramObserver._from_dict(d["histogram"])
        return stats
