"""The Theil–Sen kernel against its pure-Python twin and an independent numpy reference.

Run twice by scripts/test: with the JIT (numba-compiled) and with NUMBA_DISABLE_JIT=1 (the
kernel source runs as Python).
"""

from __future__ import annotations

import math
import random

import numpy as np
import orjson
import pytest

from streams import kernels_py as KP
from streams import slope_kernels as SK
from streams.alarm import Trend
from streams.slope_kernels import Slope, fit_points, theil_sen

pytestmark = pytest.mark.kernels

T0 = 1_771_150_000_000

Points = list[tuple[int, float]]


def same(a: float, b: float) -> bool:
    """Equal to 1e-12 relative, NaN equal to NaN."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b or math.isclose(a, b, rel_tol=1e-12, abs_tol=0.0)


def same_fit(a: Slope | None, b: tuple[float, float, float, float] | Slope | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    other = (b.slope, b.now, b.lo, b.hi) if isinstance(b, Slope) else b
    return all(same(x, y) for x, y in zip((a.slope, a.now, a.lo, a.hi), other, strict=True))


def random_points(rng: random.Random, n: int, *, ties: bool = False,
                  dup_ts: bool = False) -> Points:
    """Increasing times with jitter (equal ones with ``dup_ts``), a noisy rise with outliers;
    with ``ties``, values on a coarse grid (many equal pairwise slopes)."""
    out: Points = []
    t = T0 + rng.randrange(0, 10_000)
    for _ in range(n):
        t += 0 if dup_ts and rng.random() < 0.3 else rng.choice([1000, 5000, 5000, 10_000, 7321])
        v = 1.0 + 0.01 * (t - T0) / 1000 + rng.gauss(0, 0.2)
        if rng.random() < 0.1:
            v += rng.choice([-3.0, 5.0])  # a camera's glitch
        out.append((t, round(v, 1) if ties else v))
    return out


def reference(points: Points) -> tuple[float, float, float, float] | None:
    """Theil–Sen by brute force in numpy: every pair, np.median, Sen's ranks."""
    if len(points) < 3:
        return None
    ts = np.array([t for t, _ in points], dtype=np.int64)
    y = np.array([v for _, v in points], dtype=np.float64)
    x = (ts - ts[-1]) / 1000.0
    i, j = np.triu_indices(len(points), k=1)
    keep = x[j] != x[i]
    if not keep.any():
        return None
    slopes = np.sort((y[j] - y[i])[keep] / (x[j] - x[i])[keep])
    m, n = len(slopes), len(points)
    mid = float(np.median(slopes))
    c = 1.645 * math.sqrt(n * (n - 1) * (2 * n + 5) / 18)
    lo = float(slopes[max(0, math.floor((m - c) / 2))])
    hi = float(slopes[min(m - 1, math.ceil((m + c) / 2))])
    return mid, float(np.median(y - mid * x)), lo, hi


@pytest.mark.parametrize("seed", range(40))
def test_the_kernel_matches_its_twin_and_the_reference(seed: int) -> None:
    rng = random.Random(seed)
    for n in (3, 4, 5, 6, 12, 20, 24, 40):
        for ties, dup_ts in ((False, False), (True, False), (False, True), (True, True)):
            pts = random_points(rng, n, ties=ties, dup_ts=dup_ts)
            fit = theil_sen(pts)
            assert same_fit(fit, KP.theil_sen(pts)), (n, ties, dup_ts)
            assert same_fit(fit, reference(pts)), (n, ties, dup_ts)


def test_the_kernel_is_bit_for_bit_the_twin_on_random_input() -> None:
    rng = random.Random(7)
    for _ in range(300):
        pts = random_points(rng, rng.randrange(3, 41), ties=rng.random() < 0.3,
                            dup_ts=rng.random() < 0.3)
        fit, twin = theil_sen(pts), KP.theil_sen(pts)
        assert (fit is None) == (twin is None)
        if fit is not None and twin is not None:
            assert (fit.slope, fit.now, fit.lo, fit.hi) == twin


@pytest.mark.parametrize("n", [0, 1, 2, 3])
def test_small_inputs(n: int) -> None:
    pts = [(T0 + 5000 * i, 1.0 + 0.5 * i) for i in range(n)]
    fit = theil_sen(pts)
    assert same_fit(fit, KP.theil_sen(pts))
    if n < 3:
        assert fit is None
    else:
        assert fit is not None
        assert (fit.slope, fit.now, fit.lo, fit.hi) == (0.1, 2.0, 0.1, 0.1)


def test_no_time_spread_is_no_fit_and_equal_times_are_skipped() -> None:
    assert theil_sen([(T0, 1.0), (T0, 2.0), (T0, 3.0)]) is None
    # Two points at one time: only the pairs across times count.
    pts = [(T0, 1.0), (T0, 3.0), (T0 + 1000, 2.0)]
    fit = theil_sen(pts)
    assert fit is not None
    assert same_fit(fit, KP.theil_sen(pts))
    assert (fit.lo, fit.slope, fit.hi) == (-1.0, 0.0, 1.0)  # slopes -1 and +1


# 1e308 overflows a pairwise difference on purpose; with NUMBA_DISABLE_JIT=1 numpy says so.
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 1e308])
def test_non_finite_input_fits_as_the_twin_does(bad: float) -> None:
    """NaN, infinities, and slopes that overflow: the same result as before the kernel (the
    twin's, whose sort order of NaN no other sort reproduces)."""
    rng = random.Random(3)
    for _ in range(30):
        pts = random_points(rng, rng.randrange(3, 25))
        k = rng.randrange(len(pts))
        pts[k] = (pts[k][0], bad)
        if bad == 1e308:
            pts[(k + 1) % len(pts)] = (pts[(k + 1) % len(pts)][0], -1e308)
        ts = np.array([t for t, _ in pts], dtype=np.int64)
        vs = np.array([v for _, v in pts], dtype=np.float64)
        assert SK.theil_sen_fit(ts, vs, 0, 1)[0] == SK.NONFINITE
        assert same_fit(theil_sen(pts), KP.theil_sen(pts))


def test_start_and_step_fit_those_points() -> None:
    rng = random.Random(11)
    pts = random_points(rng, 40)
    ts = np.array([t for t, _ in pts], dtype=np.int64)
    vs = np.array([v for _, v in pts], dtype=np.float64)
    for start in range(0, 41, 3):
        for step in (1, 2, 3, 7):
            assert same_fit(fit_points(ts, vs, start, step), KP.theil_sen(pts[start::step]))


def old_thin(points: Points, n: int) -> Points:
    """The alarm's thinning before the kernel: at most ``n``, the newest kept."""
    step = -(-len(points) // n)
    return points[::-1][::step][::-1]


def test_trend_fits_the_points_it_fitted_before() -> None:
    """``Trend.fit_since`` (bisect, start and step over the arrays) fits what the list-based
    code did: the records at or after ``since``, thinned the same way."""
    rng = random.Random(5)
    trend = Trend(300_000, 10_000, 60_000)
    t = T0
    for _ in range(200):
        t += rng.choice([5000, 5000, 10_000, 15_000])
        trend.add(t, 1.0 + 0.01 * (t - T0) / 1000 + rng.gauss(0, 0.3))
        pts = trend.points
        for back in (30_000, 60_000, 90_000, 180_000, 240_000, 1_000_000):
            recent = [p for p in pts if p[0] >= t - back]
            assert same_fit(trend.fit_since(t - back), KP.theil_sen(recent))
            for max_points in (5, 20):
                assert same_fit(trend.fit_since(t - back, max_points),
                                KP.theil_sen(old_thin(recent, max_points)))


def test_a_new_record_is_not_fitted_from_the_memo() -> None:
    trend = Trend(300_000, 0, 60_000)
    for i in range(6):
        trend.add(T0 + 5000 * i, 1.0 + 0.1 * i)
    before = trend.fit_since(T0)
    assert before is not None
    assert same(before.slope, 0.02)
    trend.add(T0 + 30_000, 5.0)  # same number of records in reach would hit a stale memo
    after = trend.fit_since(T0)
    assert same_fit(after, KP.theil_sen(trend.points))
    assert after is not None
    assert after != before


def test_a_fit_is_python_floats_that_json_takes() -> None:
    """Alerts carry the fit; orjson refuses numpy scalars, which the uncompiled kernel
    (NUMBA_DISABLE_JIT=1, the second pass of the suite) returns. Failed before the fix."""
    fit = theil_sen([(T0 + 5000 * i, 1.0 + 0.1 * i) for i in range(6)])
    assert fit is not None
    assert all(type(v) is float for v in (fit.slope, fit.now, fit.lo, fit.hi))
    values = [fit.slope, fit.now, fit.lo, fit.hi]
    assert orjson.loads(orjson.dumps(values)) == values
