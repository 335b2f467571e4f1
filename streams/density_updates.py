"""The windowed density engine's closed windows as :class:`~streams.engine.DensityUpdate`s.

A mixin of :class:`~streams.density.WindowedDensityEngine`: the kernel's output rows (one
per closed window) become updates with the zone's sensors, stale sensors, their ages, the
skewed clocks and the confidence (freshness x agreement, ``streams/density.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from . import kernels as K
from .engine import DensityUpdate
from .grid import GridStore
from .kernels import F64, I64

SKEW_FLAG_MS: Final = 3_000  # a sensor this far off its zone's median skew is "skewed"
SOURCE_NAMES: Final = {K.LINE: "line_count", K.OCC: "occupancy", K.DEV: "device_count"}
FRESH_SLIDES: Final = 2  # a sensor's newest reading may be this many slides old: fresh


class EngineUpdates:
    """Building the updates of closed windows over the engine's arrays (declared here, set
    by the engine's ``__init__``)."""

    zone_ids: list[str]
    sensor_ids: list[str]
    zone_sensors: dict[int, list[int]]
    zi: I64
    si: I64
    sf: F64
    grid: GridStore
    _by_name: dict[int, list[int]]

    def _sensors_by_name(self, z: int) -> list[int]:
        """The zone's sensors in name order (cached; a new sensor invalidates it)."""
        zs = self.zone_sensors[z]
        cached = self._by_name.get(z)
        if cached is None or len(cached) != len(zs):
            cached = sorted(zs, key=self.sensor_ids.__getitem__)
            self._by_name[z] = cached
        return cached

    def _updates(self, oi_a: I64, of_a: F64) -> list[DensityUpdate]:
        out: list[DensityUpdate] = []
        if not oi_a.shape[0]:
            return out
        oi = oi_a.tolist()
        of = of_a.tolist()
        # Plain Python values, read once a call: numpy item access per update cost more than
        # the rest. Newest-reading times: all of them when the batch touches many zones, else
        # only those of the zones it closed (a registry of 100,000 zones, a small batch).
        by_name = self._sensors_by_name
        wanted = [by_name(row[0]) for row in oi]
        n_sensors = len(self.sensor_ids)
        n_wanted = sum(len(w) for w in wanted)
        last_ts: Any
        if n_sensors <= 4 * n_wanted:
            last_ts = self.si[:n_sensors, K.SI_LAST_TS].tolist()
        else:
            flat = [x for w in wanted for x in w]
            last_ts = dict(zip(flat, self.si[flat, K.SI_LAST_TS].tolist(), strict=True))
        n_zones = len(self.zone_ids)
        span: list[int] = (self.zi[:n_zones, K.ZI_K] * self.zi[:n_zones, K.ZI_SLIDE]).tolist() \
            if n_zones <= 4 * len(oi) else []
        names, zone_ids = self.sensor_ids, self.zone_ids
        zi = self.zi
        auto = self.si[:n_sensors, K.SI_AUTO].tolist()
        skew = self.sf[:n_sensors, K.SF_SKEW].tolist()
        append = out.append
        grids, grid_window = self.grid.has_any(), self.grid.window
        for k, ((z, end, src, fresh, nread),
                (occ, dens, trend, flow, agree, outflow, out_pms, xflow, xbal)) in enumerate(
                zip(oi, of, strict=True)):
            window = span[z] if span else int(zi[z, K.ZI_K] * zi[z, K.ZI_SLIDE])
            start = end - window
            tol = FRESH_SLIDES * int(zi[z, K.ZI_SLIDE])
            spread = window - tol
            stale_sum = 0.0
            n_listed = 0
            # Sensors with a reading since the window start (newest reading per sensor; a
            # sensor whose only readings are newer than the window end is listed too), and
            # the zone's other sensors, stale; both in name order.
            seen: list[str] = []
            ages: list[int] = []
            stale: list[str] = []
            for s in wanted[k]:
                t = last_ts[s]
                if t >= start:
                    if nread:
                        seen.append(names[s])
                        ages.append(end - t)
                    if not auto[s]:
                        n_listed += 1
                        age = end - t
                        if age > tol:
                            stale_sum += min(1.0, (age - tol) / spread) if spread > 0 else 1.0
                elif not auto[s]:  # unlisted sensors accepted earlier are never "stale"
                    stale.append(names[s])
                    n_listed += 1
                    stale_sum += 1.0
            conf = agree * (1.0 - stale_sum / n_listed) if n_listed else agree
            u = DensityUpdate(zone_ids[z], start, end, occ, dens, tuple(seen), trend, flow,
                              fresh, SOURCE_NAMES.get(src), nread, tuple(stale),
                              tuple(ages), _skewed(wanted[k], skew, names), conf, outflow,
                              out_pms, xflow, xbal)
            gw = grid_window(u.zone_id, start, end, int(zi[z, K.ZI_SLIDE])) if grids else None
            append(u if gw is None else u._replace(
                hot_cell=gw.hot_cell, hot_density=gw.hot_density, cells=gw.densities))
        return out

    def skewed_sensors(self) -> list[tuple[str, float]]:
        """Every sensor whose clock is off its zone's median by more than SKEW_FLAG_MS:
        ``(sensor_id, seconds ahead (+) or behind (-))``."""
        skew = self.sf[:len(self.sensor_ids), K.SF_SKEW].tolist()
        out: list[tuple[str, float]] = []
        for z in range(len(self.zone_ids)):
            if self.zi[z, K.ZI_ACTIVE]:
                out += _skewed(self.zone_sensors[z], skew, self.sensor_ids)
        return out


def _skewed(sensors: Sequence[int], skew: Sequence[float], names: Sequence[str]
            ) -> tuple[tuple[str, float], ...]:
    """Sensors whose smoothed (event time - arrival) is off the zone's median by more than
    SKEW_FLAG_MS: a clock consistently fast (+) or slow (-). Delivery delay is common to a
    zone's sensors, so the median takes it out."""
    vals = [(s, skew[s]) for s in sensors if skew[s] == skew[s]]  # not NaN
    if len(vals) < 2:
        return ()
    ordered = sorted(v for _, v in vals)
    mid = ordered[(len(ordered) - 1) // 2]
    return tuple((names[s], round((v - mid) / 1000, 1)) for s, v in vals
                 if abs(v - mid) > SKEW_FLAG_MS)
