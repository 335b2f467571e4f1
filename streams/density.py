"""The windowed density engine: numba kernels over per-zone ring buffers (``kernels.py``).

Defaults (override per engine, or per zone with ``window_s`` / ``slide_s`` in the registry):

| setting      | default | meaning                                                          |
|--------------|---------|------------------------------------------------------------------|
| window       | 60 s    | density, flow and trend are computed over the last 60 s          |
| slide        | 5 s     | one output per zone every 5 s of event time (the emit tick)      |
| grace        | 10 s    | watermark = newest event time on the partition - 10 s            |
| idle         | 30 s    | a quiet partition's watermark follows the wall clock - idle      |
| lead         | 30 s    | a reading counts at most this far ahead of its arrival           |
| dedup depth  | 16      | event ids (and content hashes) remembered per sensor             |
| stale sensor | window  | a sensor with no reading in the window is listed as stale        |
| fresh within | 2 slides| a sensor's newest reading may be this old before confidence drops |

Event time that no sender can poison: every reading comes with its *arrival* (the broker
timestamp of its record, or offline the robust clock of ``streams/clock.py``). Its
*watermark time* is ``min(ts, arrival)``: a sensor whose clock runs fast cannot move the
watermark that the other sensors' readings are judged by. Its *placement time* is
``min(ts, arrival + lead)``: a reading up to ``lead`` ahead counts in its own bucket, one
further ahead (but within the pipeline's skew) counts at ``arrival + lead``.

Memory: with ``R`` ring slots (window/slide + grace/slide + lead/slide + 3 = 23 by default)
a zone costs ``R x 11 x 8`` bytes of ring + 160 bytes of zone fields = 2,184 bytes; a sensor
costs ``16 x 16 + 64`` = 320 bytes, and a camera, device counter or line counter another
``R x 3 x 8 + 48`` = 600 bytes (its per-sensor window: fusion per sensor; a line counter's
entries and exits, for the outflow and counter-flow of issue 16). 100,000 zones with a
camera, a line counter and a Wi-Fi counter each: about 495 MB (430 MB before issue 16).

Confidence of a window (``DensityUpdate.confidence``, 0..1, NaN when blind) = freshness x
agreement. Freshness: 1 - the mean, over the zone's listed sensors, of each one's stale share
of the window, ``clamp((age - tol) / (window - tol), 0, 1)`` with ``age`` = window end - its
newest reading (a sensor with none since the window start: 1) and ``tol`` = 2 slides.
Agreement (from the kernel, ``kernels.OF_AGREE``): ``1 / (1 + sigma / max(D, 1 p/m²))``, the
spread of the source kind's per-sensor values around the fused density ``D``.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

from schemas import Kind, Reason, Rejection, SensorEvent, Zone

from . import kernels as K
from .density_recovery import EngineRecovery
from .density_updates import EngineUpdates
from .engine import DensityUpdate
from .grid import GridStore, grid_total
from .kernels import F64, I64

DEFAULT_WINDOW_MS: Final = 60_000
DEFAULT_SLIDE_MS: Final = 5_000
DEFAULT_GRACE_MS: Final = 10_000
DEFAULT_IDLE_MS: Final = 30_000
DEFAULT_LEAD_MS: Final = 30_000
DEFAULT_DEDUP_DEPTH: Final = 16
MAX_UNLISTED_PER_ZONE: Final = 64
_SKEW_ALPHA: Final = 0.2
MAX_PARTITIONS: Final = 4096
GROUP_BY_ZONE_BYTES: Final = 8 << 20  # zone rings larger than this: process zone by zone
_HASH_MASK: Final = (1 << 62) - 1
_ROW_KINDS: Final = {Kind.OCCUPANCY: K.OCC, Kind.DEVICE_COUNT: K.DEV, Kind.LINE_COUNT: K.LINE}


def event_hash(event_id: str) -> int:
    """Stable 62-bit hash of an event id (the same in every process and run)."""
    b = event_id.encode()
    return ((zlib.crc32(b) << 31) ^ zlib.adler32(b)) & _HASH_MASK


_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xC2B2AE3D27D4EB4F)


def content_hashes(ts: I64, kind: npt.NDArray[np.int8], a: F64, b: F64, cov: F64) -> I64:
    """A 62-bit hash per reading of what it says (time, kind, counts, coverage): an event id
    repeated with the same content is a duplicate, with other content a conflict."""
    h = ts.astype(np.uint64) * _M1
    for col in (a, b, np.where(np.isnan(cov), -1.0, cov)):
        h = (h ^ col.view(np.uint64)) * _M2
    h ^= kind.astype(np.uint64) * _M1
    return (h >> np.uint64(2)).astype(np.int64)


def _grow(a: npt.NDArray[np.generic], n: int, fill: float) -> npt.NDArray[np.generic]:
    out = np.full((n, *a.shape[1:]), fill, dtype=a.dtype)
    out[: a.shape[0]] = a
    return out


class WindowedDensityEngine(EngineRecovery, EngineUpdates):
    """Event-time sliding windows per zone with watermarks, dedup, late output and fusion."""

    def __init__(
        self,
        zones: Iterable[Zone] = (),
        *,
        window_ms: int = DEFAULT_WINDOW_MS,
        slide_ms: int = DEFAULT_SLIDE_MS,
        grace_ms: int = DEFAULT_GRACE_MS,
        idle_ms: int = DEFAULT_IDLE_MS,
        lead_ms: int = DEFAULT_LEAD_MS,
        dedup_depth: int = DEFAULT_DEDUP_DEPTH,
        accept_unlisted: bool = False,
        max_slides_per_window: int | None = None,
        out_rows: int = 65_536,
        group_by_zone: bool | None = None,
    ) -> None:
        if slide_ms <= 0 or window_ms <= 0 or window_ms % slide_ms:
            raise ValueError("window_ms must be a positive multiple of slide_ms")
        if grace_ms < 0 or idle_ms < 0 or lead_ms < 0:
            raise ValueError("grace_ms, idle_ms and lead_ms must be >= 0")
        # Process batches zone by zone once the state outgrows the caches (None = decide by
        # size). Both orders give identical results; the tests run both.
        self.group_by_zone = group_by_zone
        self.window_ms = window_ms
        self.slide_ms = slide_ms
        self.grace_ms = grace_ms
        self.idle_ms = idle_ms
        self.lead_ms = lead_ms
        self.grid = GridStore()  # grid_count readings: cell densities (streams/grid.py)
        # Readings from sensors the registry does not list for their zone are refused
        # (unknown_sensor), unless the zone lists no sensors and this is set; then at most
        # MAX_UNLISTED_PER_ZONE of them per zone, so memory never grows with unknown ids.
        self.accept_unlisted = accept_unlisted
        # Zones may set a longer window (up to max_slides_per_window slides) and a longer
        # slide, never a shorter one: the ring is sized for the engine's slide and grace.
        self.max_k = max_slides_per_window or window_ms // slide_ms
        if window_ms // slide_ms > self.max_k:
            raise ValueError(f"window/slide may be at most {self.max_k} slides")
        self.ring_slots = (self.max_k + math.ceil(grace_ms / slide_ms)
                           + math.ceil(lead_ms / slide_ms) + 3)
        self.zone_index: dict[str, int] = {}
        self.zone_ids: list[str] = []
        self.zones: dict[str, Zone] = {}
        self.sensor_index: dict[str, int] = {}
        self.sensor_ids: list[str] = []
        self.zone_sensors: dict[int, list[int]] = {}
        self.zone_listed: dict[int, int] = {}  # zone -> sensors its registry entry lists
        self.zf: F64 = np.zeros((0, K.ZF_N))
        self.zi: I64 = np.zeros((0, K.ZI_N), dtype=np.int64)
        self.ring: F64 = np.zeros((0, self.ring_slots, K.R_FIELDS))
        self.sf: F64 = np.zeros((0, K.SF_N))
        self.si: I64 = np.zeros((0, K.SI_N), dtype=np.int64)
        self.dedup: I64 = np.zeros((0, dedup_depth), dtype=np.int64)
        self.dedup_c: I64 = np.zeros((0, dedup_depth), dtype=np.int64)
        # Per-sensor windows of cameras and device counters (kernels.X_*): one row each,
        # ``si[s, SI_ROW]``; rows of a zone listed in ``zr`` from ``zr_ptr[z]`` (rebuilt when
        # the registry or a sensor's row changes).
        self.n_rows = 0
        self.xr: F64 = np.zeros((0, self.ring_slots, K.X_FIELDS))
        self.xs: F64 = np.zeros((0, K.X_FIELDS))
        self.xk: I64 = np.zeros(0, dtype=np.int64)
        self.xw: F64 = np.zeros(0)  # line counters' rows: the counted passage's width, m (NaN)
        self._row_zone: I64 = np.zeros(0, dtype=np.int64)  # zone of each row in the CSR
        self.zr_ptr: I64 = np.zeros(1, dtype=np.int64)
        self.zr: I64 = np.zeros(0, dtype=np.int64)
        self._csr_dirty = True
        # Per partition: watermark base (newest event time, or its wall-clock extrapolation
        # while idle), newest real event time, and wall-clock time of the last arrival.
        self.p_max: I64 = np.full(MAX_PARTITIONS, K.NEVER, dtype=np.int64)
        self.p_event_max: I64 = np.full(MAX_PARTITIONS, K.NEVER, dtype=np.int64)
        self.p_wall: I64 = np.full(MAX_PARTITIONS, K.NEVER, dtype=np.int64)
        self._oi: I64 = np.zeros((out_rows, K.OI_COLS), dtype=np.int64)
        self._of: F64 = np.zeros((out_rows, K.OF_COLS))
        # Closed windows not yet emitted, as copies of the kernel's output rows.
        self._pending: list[tuple[I64, F64]] = []
        self._closed_wm: I64 = np.full(MAX_PARTITIONS, K.NEVER, dtype=np.int64)
        self._by_name: dict[int, list[int]] = {}
        self.late = 0
        self.duplicates = 0
        self.clamped = 0  # readings counted at arrival + lead (stamped further ahead)
        self.set_zones(zones)

    # -- registry ---------------------------------------------------------------------------
    def set_zones(self, zones: Iterable[Zone]) -> None:
        """Apply a registry (live): new zones are added, changed ones updated in place, and
        missing ones deactivated (their events are refused as ``unknown_zone``)."""
        new = {z.zone_id: z for z in zones}
        for zid, idx in self.zone_index.items():
            if zid not in new:
                self.zi[idx, K.ZI_ACTIVE] = 0
        for zone in new.values():
            self._put_zone(zone)
        self.zones = new
        self.grid.set_zones(new.values())

    def _put_zone(self, zone: Zone) -> None:
        slide = int(float(zone.extra.get("slide_s", self.slide_ms / 1000)) * 1000)  # type: ignore[arg-type]
        window = int(float(zone.extra.get("window_s", self.window_ms / 1000)) * 1000)  # type: ignore[arg-type]
        if slide < self.slide_ms or window % slide or window // slide > self.max_k:
            raise ValueError(
                f"zone {zone.zone_id}: window_s must be a multiple of slide_s, slide_s at "
                f"least {self.slide_ms / 1000:g} s, and at most {self.max_k} slides a window")
        idx = self.zone_index.get(zone.zone_id)
        if idx is None:
            idx = len(self.zone_ids)
            self.zone_index[zone.zone_id] = idx
            self.zone_ids.append(zone.zone_id)
            self.zone_sensors[idx] = []
            if idx >= self.zi.shape[0]:
                n = max(16, 2 * self.zi.shape[0])
                self.zf = _grow(self.zf, n, 0.0)  # type: ignore[assignment]
                self.zi = _grow(self.zi, n, 0)  # type: ignore[assignment]
                old = self.ring.shape[0]
                self.ring = _grow(self.ring, n, 0.0)  # type: ignore[assignment]
                self.ring[old:, :, K.R_MAX_TS] = -1.0
                self.ring[old:, :, K.R_DENS] = np.nan
            self.zi[idx, K.ZI_CLOSED] = K.NEVER
            self.zi[idx, K.ZI_LAST_TS] = K.NEVER
            self.zi[idx, K.ZI_EMPTY_SENT] = 1
        elif self.zi[idx, K.ZI_SLIDE] not in (0, slide):
            raise ValueError(f"zone {zone.zone_id}: slide cannot change while running")
        self.zf[idx, K.ZF_AREA] = zone.area_m2
        self.zi[idx, K.ZI_SLIDE] = slide
        self.zi[idx, K.ZI_K] = window // slide
        self.zi[idx, K.ZI_ACTIVE] = 1
        ndev = sum(1 for s in zone.sensors if s.kind is Kind.DEVICE_COUNT)
        self.zi[idx, K.ZI_NDEV] = max(1, ndev)
        listed = []
        for spec in zone.sensors:
            sidx = self._sensor(spec.sensor_id, idx)
            self.si[sidx, K.SI_ZONE] = idx
            self.si[sidx, K.SI_AUTO] = 0
            self.sf[sidx, K.SF_CALIB] = spec.calibration or 1.0
            self.sf[sidx, K.SF_COV] = spec.coverage_m2 or math.nan
            kind = _ROW_KINDS.get(spec.kind)
            if kind is not None:
                row = self._row(sidx, kind)
                self.xw[row] = spec.width_m or math.nan
            listed.append(sidx)
        # Sensors the entry no longer lists leave the zone; unlisted ones accepted earlier
        # stay only while the zone still lists none.
        keep = set(listed)
        for sidx in self.zone_sensors[idx]:
            if sidx not in keep:
                if self.si[sidx, K.SI_AUTO] and not listed:
                    listed.append(sidx)
                elif self.si[sidx, K.SI_ZONE] == idx:  # (it may have moved to another zone)
                    self.si[sidx, K.SI_ZONE] = -1
        self.zone_sensors[idx] = listed
        self.zone_listed[idx] = len(zone.sensors)
        self._by_name.pop(idx, None)
        self._csr_dirty = True

    def _row(self, s: int, kind: int) -> int:
        """Sensor ``s``'s per-sensor row, counting readings of ``kind`` (a new row, or its
        row emptied and turned to ``kind`` if it counted another kind)."""
        row = int(self.si[s, K.SI_ROW])
        if row >= 0:
            if self.xk[row] != kind:
                self.xk[row] = kind
                self.xr[row] = 0.0
                self.xs[row] = 0.0
            return row
        row = self.n_rows
        self.n_rows += 1
        if row >= self.xk.shape[0]:
            n = max(64, 2 * self.xk.shape[0])
            self.xr = _grow(self.xr, n, 0.0)  # type: ignore[assignment]
            self.xs = _grow(self.xs, n, 0.0)  # type: ignore[assignment]
            self.xk = _grow(self.xk, n, -1)  # type: ignore[assignment]
            self.xw = _grow(self.xw, n, math.nan)  # type: ignore[assignment]
            self._row_zone = _grow(self._row_zone, n, -1)  # type: ignore[assignment]
        self.xk[row] = kind
        self.xw[row] = math.nan
        self._row_zone[row] = self.si[s, K.SI_ZONE]  # (so the rebuild keeps what it gets)
        self.si[s, K.SI_ROW] = row
        self._csr_dirty = True
        return row

    def _rows_by_zone(self) -> None:
        """Rebuild the zone -> rows lists; a row whose sensor changed zones starts empty."""
        if not self._csr_dirty:
            return
        self._csr_dirty = False
        nz = len(self.zone_ids)
        ptr = np.zeros(max(nz, self.zi.shape[0]) + 1, dtype=np.int64)
        rows: list[int] = []
        zone_of = np.full(self.xk.shape[0], -1, dtype=np.int64)
        for z in range(nz):
            for s in self.zone_sensors[z]:
                row = int(self.si[s, K.SI_ROW])
                if row >= 0 and self.si[s, K.SI_ZONE] == z:
                    rows.append(row)
                    zone_of[row] = z
            ptr[z + 1] = len(rows)
        ptr[nz + 1:] = len(rows)
        moved = zone_of != self._row_zone
        self.xr[moved] = 0.0
        self.xs[moved] = 0.0
        self._row_zone = zone_of
        self.zr_ptr = ptr
        self.zr = np.array(rows, dtype=np.int64)

    def _sensor(self, sensor_id: str, zone_idx: int) -> int:
        idx = self.sensor_index.get(sensor_id)
        if idx is not None:
            return idx
        idx = len(self.sensor_ids)
        self.sensor_index[sensor_id] = idx
        self.sensor_ids.append(sensor_id)
        if idx >= self.si.shape[0]:
            n = max(64, 2 * self.si.shape[0])
            self.sf = _grow(self.sf, n, math.nan)  # type: ignore[assignment]
            self.si = _grow(self.si, n, 0)  # type: ignore[assignment]
            self.dedup = _grow(self.dedup, n, -1)  # type: ignore[assignment]
            self.dedup_c = _grow(self.dedup_c, n, -1)  # type: ignore[assignment]
        self.sf[idx, K.SF_CALIB] = 1.0
        self.sf[idx, K.SF_COV] = math.nan
        self.sf[idx, K.SF_SKEW] = math.nan
        self.si[idx, K.SI_ZONE] = zone_idx
        self.si[idx, K.SI_LAST_TS] = -1
        self.si[idx, K.SI_DPOS] = 0
        self.si[idx, K.SI_AUTO] = 0
        self.si[idx, K.SI_ROW] = -1
        return idx

    def _sensor_of(self, sensor_id: str, z: int, kind: Kind | None = None) -> int | None:
        """The sensor's index if it may report for zone ``z`` (see ``accept_unlisted``). An
        unlisted sensor accepted now gets a per-sensor row for ``kind`` (cameras, device
        counters); a listed sensor sending another kind than its registry entry's is counted
        by the zone sums only (its windows fall back to them)."""
        s = self.sensor_index.get(sensor_id)
        if s is not None and self.si[s, K.SI_ZONE] == z:
            return s
        if (not self.accept_unlisted or self.zone_listed.get(z, 0)
                or len(self.zone_sensors[z]) >= MAX_UNLISTED_PER_ZONE
                or (s is not None and self.si[s, K.SI_ZONE] >= 0)):
            return None
        if s is None:
            s = self._sensor(sensor_id, z)
        self.si[s, K.SI_ZONE] = z
        self.si[s, K.SI_AUTO] = 1
        self.zone_sensors[z].append(s)
        self._csr_dirty = True
        row_kind = _ROW_KINDS.get(kind) if kind is not None else None
        if row_kind is not None:
            self._row(s, row_kind)
        return s

    # -- processing -------------------------------------------------------------------------
    def ingest(
        self, events: Sequence[SensorEvent], partitions: Sequence[int] | None = None,
        wall_ms: int | None = None, arrivals: Sequence[int] | None = None,
    ) -> list[tuple[int, Rejection]]:
        """Add a batch (in arrival order); return ``(index in events, why)`` of those refused
        (unknown zone or sensor, late, an id reused with other content).

        ``arrivals``: each event's arrival time (the broker timestamp of its record, or the
        robust clock offline; see the module docstring); without them event time is trusted.
        ``wall_ms`` is the wall-clock time the batch arrived (for idleness); replay leaves it
        out and stays purely in event time.
        """
        refused: list[tuple[int, Rejection]] = []
        rows: list[int] = []
        zidx: list[int] = []
        sidx: list[int] = []
        zone_index = self.zone_index
        active = self.zi[:, K.ZI_ACTIVE]
        sensor_of = self._sensor_of
        for i, ev in enumerate(events):
            z = zone_index.get(ev.zone_id)
            if z is None or not active[z]:
                detail = f"zone {ev.zone_id!r} is not in the zone registry"
                refused.append((i, Rejection(Reason.UNKNOWN_ZONE, detail)))
                continue
            s = sensor_of(ev.sensor_id, z, ev.kind)
            if s is None:
                detail = f"sensor {ev.sensor_id!r} is not listed for zone {ev.zone_id!r}"
                refused.append((i, Rejection(Reason.UNKNOWN_SENSOR, detail)))
                continue
            if ev.kind is Kind.GRID_COUNT:
                off = self.grid.check(ev)
                if off is not None:
                    refused.append((i, off))
                    continue
            sidx.append(s)
            zidx.append(z)
            rows.append(i)
        if not rows:
            return refused
        evs = [events[i] for i in rows]
        n = len(evs)
        ev_zone = np.array(zidx, dtype=np.int32)
        ev_sensor = np.array(sidx, dtype=np.int32)
        ev_kind = np.fromiter((int(e.kind) for e in evs), dtype=np.int8, count=n)
        ev_raw = np.fromiter((e.ts_ms for e in evs), dtype=np.int64, count=n)
        ev_a = np.fromiter(
            (e.count if e.kind is Kind.OCCUPANCY else e.entries if e.kind is Kind.LINE_COUNT
             else e.devices if e.kind is Kind.DEVICE_COUNT else grid_total(e) for e in evs),
            dtype=np.float64, count=n)
        ev_b = np.fromiter((e.exits for e in evs), dtype=np.float64, count=n)
        ev_cov = np.fromiter((e.coverage_m2 or math.nan for e in evs), dtype=np.float64, count=n)
        ev_hash = np.fromiter((event_hash(e.event_id) for e in evs), dtype=np.int64, count=n)
        ev_chash = content_hashes(ev_raw, ev_kind, ev_a, ev_b, ev_cov)
        if arrivals is None:
            ev_ts, ev_eff = ev_raw, ev_raw
        else:
            arr = np.array([arrivals[i] for i in rows], dtype=np.int64)
            ev_eff = np.minimum(ev_raw, arr)
            ev_ts = np.minimum(ev_raw, arr + self.lead_ms)
            self.clamped += int(np.count_nonzero(ev_ts < ev_raw))
            self._observe_skew(ev_sensor, ev_raw - arr)
        if partitions is None:
            ev_part = np.zeros(n, dtype=np.int32)
        else:
            arrived_on = np.array([partitions[i] for i in rows], dtype=np.int32)
            ev_part = self._home_partitions(ev_zone, arrived_on)
            foreign = arrived_on != ev_part
            if foreign.any():
                # Read on another partition than its zone's (a producer keyed it otherwise):
                # that partition may be read far ahead or behind of the zone's own, so the
                # reading moves no clock; it counts if its bucket is open, placed at most the
                # lead ahead of its zone's clock (the ring's reach).
                home_clock = self.p_max[ev_part]
                known = foreign & (home_clock != K.NEVER)
                ev_ts = np.where(known, np.minimum(ev_ts, home_clock + self.lead_ms), ev_ts)
                ev_eff = np.where(foreign, K.NEVER, ev_eff)
        status = self.ingest_arrays(ev_zone, ev_sensor, ev_kind, ev_ts, ev_a, ev_b, ev_cov,
                                    ev_hash, ev_part, ev_eff=ev_eff, ev_chash=ev_chash)
        parts = np.unique(ev_part)
        np.maximum.at(self.p_event_max, ev_part, ev_eff)
        if wall_ms is not None:
            self.p_wall[parts] = wall_ms
        for j in np.flatnonzero(status == K.LATE).tolist():
            ev = evs[j]
            self.late += 1
            detail = (f"{ev.event_id}: event time {ev.ts_ms} is before the closed window of "
                      f"zone {ev.zone_id!r} (grace {self.grace_ms} ms)")
            refused.append((rows[j], Rejection(Reason.LATE, detail)))
        for j in np.flatnonzero(status == K.CONFLICT).tolist():
            ev = evs[j]
            detail = (f"{ev.event_id}: event id already seen from sensor {ev.sensor_id!r} with "
                      "other content; the first stands")
            refused.append((rows[j], Rejection(Reason.ID_CONFLICT, detail)))
        self.duplicates += int(np.count_nonzero(status == K.DUP))
        # Grid readings the kernels took (in time, not repeated): their cells to the store.
        for j in np.flatnonzero((ev_kind == K.GRID) & (status == K.OK)).tolist():
            self.grid.add(evs[j], int(self.zi[zidx[j], K.ZI_SLIDE]))
        return refused

    def _home_partitions(self, ev_zone: npt.NDArray[np.int32], ev_part: npt.NDArray[np.int32]
                         ) -> npt.NDArray[np.int32]:
        """Each reading counts on its zone's *home* partition: the one its first reading came
        on (or its snapshot's). A reading a producer keyed otherwise (another partitioner, a
        batch that mixes zones) must not judge the zone by another partition's clock, which a
        consumer may read far ahead of the zone's own."""
        if ev_part.shape[0] and (ev_part.min() < 0 or ev_part.max() >= MAX_PARTITIONS):
            raise ValueError(f"partition numbers must be in 0..{MAX_PARTITIONS - 1}")
        seen = self.zi[ev_zone, K.ZI_CLOSED] != K.NEVER
        if seen.all():
            home: npt.NDArray[np.int32] = self.zi[ev_zone, K.ZI_PART].astype(np.int32)
            return home
        zones, first = np.unique(ev_zone, return_index=True)
        first_part = np.zeros(self.zi.shape[0], dtype=np.int32)
        first_part[zones] = ev_part[first]
        return np.where(seen, self.zi[ev_zone, K.ZI_PART], first_part[ev_zone]).astype(np.int32)

    def _observe_skew(self, ev_sensor: npt.NDArray[np.int32], lag: I64) -> None:
        """Smooth each sensor's (event time - arrival): its clock offset plus delivery delay."""
        uniq, inv = np.unique(ev_sensor, return_inverse=True)
        sums = np.zeros(uniq.shape[0])
        np.add.at(sums, inv, lag.astype(np.float64))
        mean = sums / np.bincount(inv, minlength=uniq.shape[0])
        old = self.sf[uniq, K.SF_SKEW]
        self.sf[uniq, K.SF_SKEW] = np.where(np.isnan(old), mean,
                                           old + _SKEW_ALPHA * (mean - old))

    def ingest_arrays(
        self, ev_zone: npt.NDArray[np.int32], ev_sensor: npt.NDArray[np.int32],
        ev_kind: npt.NDArray[np.int8], ev_ts: I64, ev_a: F64, ev_b: F64, ev_cov: F64,
        ev_hash: I64, ev_part: npt.NDArray[np.int32], *, ev_eff: I64 | None = None,
        ev_chash: I64 | None = None,
    ) -> npt.NDArray[np.int8]:
        """The columnar entry point (also what the benchmark drives): one kernel call per
        batch, repeated only when the output buffer fills. ``ev_eff``: watermark times
        (default: the event times); ``ev_chash``: content hashes (default: none, so a repeated
        id is always a duplicate)."""
        n = ev_zone.shape[0]
        status = np.zeros(n, dtype=np.int8)
        pmax_at = np.empty(n, dtype=np.int64)
        order = np.empty(n, dtype=np.int64)
        group = self.group_by_zone
        if group is None:
            group = self.ring.nbytes > GROUP_BY_ZONE_BYTES
        eff = ev_ts if ev_eff is None else ev_eff
        chash = np.zeros(n, dtype=np.int64) if ev_chash is None else ev_chash
        self._rows_by_zone()
        K.arrival_kernel(ev_zone, ev_part, eff, self.p_max, len(self.zone_ids), pmax_at,
                         order, group)
        start = 0
        while True:
            start, n_out = K.ingest_kernel(
                ev_zone, ev_sensor, ev_kind, ev_ts, ev_a, ev_b, ev_cov, ev_hash, ev_part,
                pmax_at, order, status, start, self.zf, self.zi, self.ring, self.sf, self.si,
                self.dedup, self.grace_ms, self._oi, self._of, 0, chash, self.dedup_c,
                self.zr_ptr, self.zr, self.xk, self.xr, self.xs, self.xw,
            )
            self._collect(n_out)
            if start >= ev_zone.shape[0]:
                return status

    def advance(self, now_ms: int, partitions: Iterable[int] | None = None) -> None:
        """Wall-clock progress: a partition that received nothing for ``idle_ms`` of wall time
        moves its event-time clock on by the wall time that passed beyond ``idle_ms``, so a
        silent zone does not freeze at its last density. A partition being read as fast as it
        can be (a backlog, a replay) keeps arriving, so its history is never made late.

        ``partitions``: only these may move on (the worker passes those it knows are truly
        quiet: fetched up to their log end, recently); every other partition's idleness
        restarts at ``now_ms``, so a broker outage moves nothing on and the readings that
        producers buffered meanwhile are not made late. None: every partition (offline)."""
        seen = (self.p_wall > K.NEVER) & (self.p_event_max > K.NEVER)
        if partitions is not None:
            allowed = np.zeros(MAX_PARTITIONS, dtype=bool)
            allowed[[p for p in partitions if 0 <= p < MAX_PARTITIONS]] = True
            held = seen & ~allowed
            self.p_wall[held] = np.maximum(self.p_wall[held], now_ms)
            seen &= allowed
        quiet = now_ms - self.p_wall[seen] - self.idle_ms
        moved = self.p_event_max[seen] + np.maximum(quiet, 0)
        self.p_max[seen] = np.maximum(self.p_max[seen], moved)

    def partitions_in_use(self, lo: int, hi: int) -> list[int]:
        """The partitions in ``lo..hi-1`` with a clock or a zone they drive."""
        n = len(self.zone_ids)
        zp = self.zi[:n, K.ZI_PART][self.zi[:n, K.ZI_CLOSED] != K.NEVER]
        used = set(zp[(zp >= lo) & (zp < hi)].tolist())
        used.update((lo + np.flatnonzero(self.p_max[lo:hi] != K.NEVER)).tolist())
        return sorted(int(p) for p in used)

    def finish(self) -> None:
        """End of input: move every partition's clock past its last reading, so each window
        with data closes (offline replay)."""
        seen = self.p_event_max > K.NEVER
        horizon = self.max_k * int(self.zi[:, K.ZI_SLIDE].max(initial=self.slide_ms))
        self.p_max[seen] = self.p_event_max[seen] + self.grace_ms + horizon + self.slide_ms

    def stale_sensor_count(self) -> int:
        """Listed sensors of active zones with no reading in their zone's window."""
        n = len(self.sensor_ids)
        if n == 0:
            return 0
        zone = self.si[:n, K.SI_ZONE]
        listed = (zone >= 0) & (self.si[:n, K.SI_AUTO] == 0)
        zone = np.where(listed, zone, 0)
        active = listed & (self.zi[zone, K.ZI_ACTIVE] == 1)
        window = self.zi[zone, K.ZI_K] * self.zi[zone, K.ZI_SLIDE]
        horizon = self.zi[zone, K.ZI_OPEN_MS] - window
        return int(np.count_nonzero(active & (self.si[:n, K.SI_LAST_TS] < horizon)))

    def zone_clock_ms(self, zone_id: str) -> int | None:
        """The clock of the partition that drives ``zone_id`` (None before its first reading)."""
        z = self.zone_index.get(zone_id)
        if z is None or self.zi[z, K.ZI_CLOSED] == K.NEVER:
            return None
        v = int(self.p_max[self.zi[z, K.ZI_PART]])
        return None if v == K.NEVER else v

    def clock_ms(self) -> int | None:
        """The newest partition clock (watermark base, idle wall-time included), if any."""
        v = int(self.p_max.max())
        return None if v == K.NEVER else v

    def newest_event_ms(self) -> int:
        """The newest event time seen on any partition (or a very small number)."""
        return int(self.p_event_max.max())

    def emit_arrays(self) -> tuple[I64, F64]:
        """Windows closed since the previous call, as the kernels' output rows (columns
        ``kernels.OI_*`` and ``kernels.OF_*``), in close order."""
        # Zones never slide faster than the engine, so its slide bounds how often they close.
        wm = (self.p_max - self.grace_ms) // self.slide_ms
        if np.any(wm != self._closed_wm):
            self._closed_wm = wm
            self._rows_by_zone()
            start = 0
            while start < self.zi.shape[0]:
                start, n_out = K.close_kernel(start, self.zf, self.zi, self.ring, self.p_max,
                                              self.grace_ms, self._oi, self._of, 0,
                                              self.zr_ptr, self.zr, self.xk, self.xr, self.xs,
                                              self.xw)
                self._collect(n_out)
        pending, self._pending = self._pending, []
        if not pending:
            return np.zeros((0, K.OI_COLS), dtype=np.int64), np.zeros((0, K.OF_COLS))
        if len(pending) == 1:
            return pending[0]
        return np.concatenate([p[0] for p in pending]), np.concatenate([p[1] for p in pending])

    def emit(self) -> list[DensityUpdate]:
        """Windows closed since the previous call, in close order."""
        oi_a, of_a = self.emit_arrays()
        return self._updates(oi_a, of_a)

    def _collect(self, n: int) -> None:
        if n:
            self._pending.append((self._oi[:n].copy(), self._of[:n].copy()))

    # -- introspection ----------------------------------------------------------------------
    def state_bytes(self) -> int:
        arrays = (self.zf, self.zi, self.ring, self.sf, self.si, self.dedup, self.dedup_c,
                  self.xr, self.xs, self.xk)
        return sum(a.nbytes for a in arrays)

    def watermark(self, partition: int) -> int | None:
        v = int(self.p_max[partition])
        return None if v == K.NEVER else v - self.grace_ms
