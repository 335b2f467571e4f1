"""numba kernel of the Theil–Sen slope (the alarm's robust fits); twin in ``kernels_py.py``.

:func:`theil_sen_fit` fits the points ``start, start + step, ...`` of a zone's record
history (``ts`` int64 milliseconds, ``values`` float64), so that a caller fits a suffix of
its history, thinned, without building a list: ``xs`` are seconds before the newest fitted
point; the slope is the median of the pairwise slopes (pairs with equal times skipped); its
~90 % bounds are Sen's (1968) ranks ``(m -+ SEN_Z sqrt(n (n - 1) (2 n + 5) / 18)) / 2`` of the
``m`` sorted slopes; ``now`` is the median of ``y - slope x`` (the fitted value at the newest
point). The same arithmetic, in the same order, as the twin ``kernels_py.theil_sen``: the
results are the same floats.

Status ``NONFINITE``: a value or a pairwise slope is not finite (NaN, an overflow). Python's
``sorted`` orders NaN by where it falls, which no other sort reproduces, so the caller fits
those points with the twin instead (the behaviour before the kernel).

:func:`theil_sen` (``(ts_ms, value)`` points) and :func:`fit_points` (arrays) wrap the kernel
as :class:`Slope`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from numba import njit

from .kernels_py import theil_sen as twin_theil_sen

FIT = 0  # a fit: (slope, now, lo, hi)
NONE = 1  # fewer than 3 points, or no two at different times
NONFINITE = 2  # a value or a slope is not finite: fit with the twin

SEN_Z = 1.645
"""Two-sided 90 %: the slope's bounds are the 5th and 95th percentile ranks of Sen's test."""


@njit(cache=True, nogil=True)
def theil_sen_fit(ts: np.ndarray, values: np.ndarray, start: int, step: int
                  ) -> tuple[int, float, float, float, float]:
    """Theil–Sen over points ``start::step`` of (``ts``, ``values``): (status, slope per
    second, fitted value at the newest point, slope's lower and upper bound)."""
    nan = math.nan
    total = ts.shape[0]
    n = (total - start + step - 1) // step if start < total else 0
    if n < 3:
        return NONE, nan, nan, nan, nan
    t0 = ts[start + (n - 1) * step]
    xs = np.empty(n, dtype=np.float64)
    ys = np.empty(n, dtype=np.float64)
    for k in range(n):
        i = start + k * step
        xs[k] = (ts[i] - t0) / 1000.0
        v = values[i]
        if not math.isfinite(v):
            return NONFINITE, nan, nan, nan, nan
        ys[k] = v
    slopes = np.empty(n * (n - 1) // 2, dtype=np.float64)
    m = 0
    for i in range(n):
        for j in range(i + 1, n):
            if xs[j] != xs[i]:
                s = (ys[j] - ys[i]) / (xs[j] - xs[i])
                if not math.isfinite(s):
                    return NONFINITE, nan, nan, nan, nan
                slopes[m] = s
                m += 1
    if m == 0:
        return NONE, nan, nan, nan, nan
    srt = np.sort(slopes[:m])
    mid = srt[m // 2] if m % 2 else (srt[m // 2 - 1] + srt[m // 2]) / 2
    c = SEN_Z * math.sqrt(n * (n - 1) * (2 * n + 5) / 18)
    lo = srt[max(0, math.floor((m - c) / 2))]
    hi = srt[min(m - 1, math.ceil((m + c) / 2))]
    rest = np.empty(n, dtype=np.float64)
    for k in range(n):
        rest[k] = ys[k] - mid * xs[k]
    rest.sort()
    now = rest[n // 2] if n % 2 else (rest[n // 2 - 1] + rest[n // 2]) / 2
    return FIT, mid, now, lo, hi


@dataclass(frozen=True, slots=True)
class Slope:
    """A Theil–Sen fit: the median pairwise slope (per second), the fitted value at the
    newest point, and the slope's ~90 % confidence bounds (Sen 1968)."""

    slope: float
    now: float
    lo: float
    hi: float


def theil_sen(points: Sequence[tuple[int, float]]) -> Slope | None:
    """Theil–Sen over ``(ts_ms, value)`` points: robust to a few outliers (a camera's
    glitch, a burst of duplicates). None with fewer than 3 points or no time spread."""
    n = len(points)
    if n < 3:
        return None
    ts = np.fromiter((t for t, _ in points), np.int64, n)
    values = np.fromiter((v for _, v in points), np.float64, n)
    return fit_points(ts, values, 0, 1)


def fit_points(ts: npt.NDArray[np.int64], values: npt.NDArray[np.float64], start: int,
               step: int) -> Slope | None:
    """Theil–Sen over points ``start::step`` (the kernel; its twin on non-finite input)."""
    status, mid, now, lo, hi = theil_sen_fit(ts, values, start, step)
    if status == FIT:
        # Python floats: uncompiled (NUMBA_DISABLE_JIT=1) the kernel yields numpy scalars,
        # which orjson refuses in an alert.
        return Slope(float(mid), float(now), float(lo), float(hi))
    if status == NONE:
        return None
    fit = twin_theil_sen(list(zip(ts[start::step].tolist(), values[start::step].tolist(),
                                  strict=True)))
    return None if fit is None else Slope(*fit)
