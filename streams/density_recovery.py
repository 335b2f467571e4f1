"""The windowed density engine's partitions changing hands: snapshot, restore, drop.

A mixin of :class:`~streams.density.WindowedDensityEngine`: a snapshot is the state of every
zone a partition drives (its ring, fields, sensors, dedup and per-sensor windows) as plain
numpy arrays, no pickles; a restore puts it back, with the registry winning for
configuration and a poisoned clock (ahead of the wall clock by more than the lead) dropped;
a dropped partition (its owner changed) is forgotten, so nothing of it is emitted again.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from schemas import Kind

from . import kernels as K
from .kernels import F64, I64

log = logging.getLogger(__name__)


class EngineRecovery:
    """:meth:`snapshot`, :meth:`restore` and :meth:`drop_partition` over the engine's
    arrays (declared here, set by the engine's ``__init__``)."""

    zone_ids: list[str]
    zone_index: dict[str, int]
    sensor_ids: list[str]
    zone_sensors: dict[int, list[int]]
    zf: F64
    zi: I64
    ring: F64
    sf: F64
    si: I64
    dedup: I64
    dedup_c: I64
    xr: F64
    xs: F64
    xk: I64
    p_max: I64
    p_event_max: I64
    p_wall: I64
    _closed_wm: I64
    _pending: list[tuple[I64, F64]]
    ring_slots: int
    grace_ms: int
    lead_ms: int

    if TYPE_CHECKING:
        def _row(self, s: int, kind: int) -> int: ...
        def _rows_by_zone(self) -> None: ...
        def _sensor_of(self, sensor_id: str, z: int, kind: Kind | None = None
                       ) -> int | None: ...

    def drop_partition(self, partition: int) -> list[str]:
        """Forget ``partition`` (its owner changed): the zones whose home partition it is go
        back to the state of a zone never seen (windows, pending closes, their sensors'
        dedup and clocks), and the partition's clocks are cleared, so nothing of it is ever
        emitted again here. Returns the zones dropped."""
        n = len(self.zone_ids)
        zones = np.flatnonzero(
            (self.zi[:n, K.ZI_PART] == partition) & (self.zi[:n, K.ZI_CLOSED] != K.NEVER))
        for z in zones.tolist():
            self.zf[z, K.ZF_LINE_OCC:] = 0.0
            for f in (K.ZI_PART, K.ZI_OPEN_MS, K.ZI_OPEN_SLOT):
                self.zi[z, f] = 0
            self.zi[z, K.ZI_CLOSED] = K.NEVER
            self.zi[z, K.ZI_LAST_TS] = K.NEVER
            self.zi[z, K.ZI_EMPTY_SENT] = 1
            self.ring[z] = 0.0
            self.ring[z, :, K.R_MAX_TS] = -1.0
            self.ring[z, :, K.R_DENS] = np.nan
            for s in self.zone_sensors[z]:
                row = self.si[s, K.SI_ROW]
                if row >= 0:
                    self.xr[row] = 0.0
                    self.xs[row] = 0.0
                self.si[s, K.SI_LAST_TS] = -1
                self.si[s, K.SI_DPOS] = 0
                self.dedup[s] = -1
                self.dedup_c[s] = -1
                self.sf[s, K.SF_SKEW] = math.nan
        if zones.size and self._pending:
            gone = np.zeros(max(n, 1), dtype=bool)
            gone[zones] = True
            kept = [(oi[~gone[oi[:, 0]]], of[~gone[oi[:, 0]]]) for oi, of in self._pending]
            self._pending = [(oi, of) for oi, of in kept if oi.shape[0]]
        if 0 <= partition < len(self.p_max):  # MAX_PARTITIONS
            self.p_max[partition] = K.NEVER
            self.p_event_max[partition] = K.NEVER
            self.p_wall[partition] = K.NEVER
            self._closed_wm[partition] = K.NEVER
        return [self.zone_ids[z] for z in zones.tolist()]

    def snapshot(self, partition: int) -> dict[str, npt.NDArray[Any]]:
        """The state of every zone driven by ``partition``, as plain arrays (no pickles)."""
        n = len(self.zone_ids)
        zones = np.flatnonzero(
            (self.zi[:n, K.ZI_PART] == partition) & (self.zi[:n, K.ZI_CLOSED] != K.NEVER))
        sensors = [s for z in zones for s in self.zone_sensors[int(z)]]
        rows = self.si[sensors, K.SI_ROW] if sensors else np.zeros(0, dtype=np.int64)
        have = rows >= 0
        x_kind = np.full(len(sensors), -1, dtype=np.int64)
        x_kind[have] = self.xk[rows[have]]
        xr = np.zeros((len(sensors), self.ring_slots, K.X_FIELDS))
        xr[have] = self.xr[rows[have]]
        xs = np.zeros((len(sensors), K.X_FIELDS))
        xs[have] = self.xs[rows[have]]
        return {
            "zone_ids": np.array([self.zone_ids[z] for z in zones], dtype=str),
            "zf": self.zf[zones], "zi": self.zi[zones], "ring": self.ring[zones],
            "sensor_ids": np.array([self.sensor_ids[s] for s in sensors], dtype=str),
            "sensor_zones": np.array(
                [self.zone_ids[int(self.si[s, K.SI_ZONE])] for s in sensors], dtype=str),
            "si": self.si[sensors], "dedup": self.dedup[sensors],
            "dedup_c": self.dedup_c[sensors], "sf": self.sf[sensors],
            # Per-sensor windows (absent from snapshots of the earlier layout): the row's kind
            # (-1: no row), its buckets and window sums.
            "x_kind": x_kind, "xr": xr, "xs": xs,
            "partition": np.array([partition, self.p_max[partition],
                                   self.p_event_max[partition], self.ring_slots,
                                   self.grace_ms], dtype=np.int64),
        }

    def restore(self, snap: dict[str, npt.NDArray[Any]], now_ms: int | None = None) -> int:
        """Put back a :meth:`snapshot`; return how many zones were restored. The registry
        wins for configuration (areas, calibration); zones no longer in it are skipped.

        ``now_ms`` (wall clock, live): a snapshot whose clock runs ahead of it by more than
        the lead was poisoned (an earlier version let one future reading move a watermark);
        its zones and clocks are dropped, so a restart heals it."""
        partition, p_max, p_event_max, ring_slots, grace = (int(v) for v in snap["partition"])
        if now_ms is not None and max(p_max, p_event_max) > now_ms + self.lead_ms:
            log.warning("snapshot of partition %d has a clock ahead of the wall clock by %d s; "
                        "its state is dropped", partition, (p_max - now_ms) // 1000)
            return 0
        if ring_slots != self.ring_slots or grace != self.grace_ms:
            log.warning("snapshot of partition %d was taken with another window/grace "
                        "configuration; starting that partition from empty state", partition)
            return 0
        restored = 0
        for row, zid in enumerate(snap["zone_ids"].tolist()):
            z = self.zone_index.get(zid)
            if z is None or not self.zi[z, K.ZI_ACTIVE]:
                log.warning("snapshot zone %r is not in the registry; skipped", zid)
                continue
            saved = snap["zi"][row]
            if saved[K.ZI_SLIDE] != self.zi[z, K.ZI_SLIDE] or saved[K.ZI_K] != self.zi[z, K.ZI_K]:
                log.warning("zone %r changed its window since the snapshot; not restored", zid)
                continue
            self.zf[z, K.ZF_LINE_OCC:] = snap["zf"][row][K.ZF_LINE_OCC:]
            for f in (K.ZI_CLOSED, K.ZI_PART, K.ZI_LAST_TS, K.ZI_EMPTY_SENT, K.ZI_OPEN_MS,
                      K.ZI_OPEN_SLOT):
                self.zi[z, f] = saved[f]
            self.ring[z] = snap["ring"][row]
            restored += 1
        self._rows_by_zone()  # (rows of sensors that moved zones are emptied first)
        for row, (sid, zid) in enumerate(zip(snap["sensor_ids"].tolist(),
                                             snap["sensor_zones"].tolist(), strict=True)):
            z = self.zone_index.get(zid)
            if z is None:
                continue
            s = self._sensor_of(sid, z)
            if s is None:
                continue
            self.si[s, K.SI_LAST_TS] = snap["si"][row][K.SI_LAST_TS]
            self.si[s, K.SI_DPOS] = snap["si"][row][K.SI_DPOS]
            self.dedup[s] = snap["dedup"][row]
            if "dedup_c" in snap:
                self.dedup_c[s] = snap["dedup_c"][row]
                self.sf[s, K.SF_SKEW] = snap["sf"][row][K.SF_SKEW]
            # Its per-sensor window; without one (a snapshot of the earlier layout) the row
            # starts empty and the windows holding restored buckets use the zone sums.
            kind = int(snap["x_kind"][row]) if "x_kind" in snap else -1
            x = int(self.si[s, K.SI_ROW])
            if kind >= 0 and (x < 0 or self.xk[x] == kind):
                x = self._row(s, kind)
                self.xr[x] = snap["xr"][row]
                self.xs[x] = snap["xs"][row]
            elif x >= 0:
                self.xr[x] = 0.0
                self.xs[x] = 0.0
        self.p_max[partition] = max(int(self.p_max[partition]), p_max)
        self.p_event_max[partition] = max(int(self.p_event_max[partition]), p_event_max)
        # Idleness restarts now (live), so a partition whose input stopped before a restart
        # still moves on by wall time and its zones still go blind; offline it waits for the
        # next arrival.
        self.p_wall[partition] = K.NEVER if now_ms is None else now_ms
        return restored
