"""numba kernels of the windowed density engine: one call per batch, never one per event.

Model (the same in the pure-Python twin, ``streams/kernels_py.py``):

Event time is cut into buckets of one *slide* (``slide_ms``, per zone). A zone keeps a ring of
``R`` bucket accumulators. A *window* is the last ``K`` closed buckets, ``[start, end)`` with
``end = (c + 1) * slide`` for the newest closed bucket ``c``. Each partition has a watermark
``wm = max event time seen on it - grace``; a bucket closes when ``wm`` reaches its end, and
every close emits that zone's window (an *emit tick* every slide).

Per event (in arrival order): raise its partition's watermark; close the zone's buckets up to
it; drop it as a duplicate if its ``event_id`` hash is among the sensor's last ``D``; refuse it
as late if its bucket is already closed; otherwise add it to its bucket.

Closing bucket ``c`` of a zone:
- line occupancy: re-anchored to the cameras' estimate when the bucket has camera readings
  (drift correction), else ``max(0, occupancy + entries - exits)``;
- bucket density (for the trend): cameras fused per sensor (below; a sensor with readings
  in the window but none in the bucket counts at its window value); else the line
  occupancy / area while a line counter reported in the window; else Wi-Fi/BLE fused per
  sensor, the same way; else NaN;
- window density, same precedence over the whole window: cameras, then line counters, then
  device counters (fusion rule: the most direct measurement present wins);
- fusion per sensor (cameras and device counters), so a sensor that reports more often does
  not weigh more: each sensor's value over the bucket or window first, from its own sums
  (``xr``/``xs``, one row per sensor): a camera's ``d_s = sum(count) / sum(coverage)`` with
  weight ``w_s = sum(coverage) / n_s`` (its mean coverage), the zone ``sum(w_s d_s) /
  sum(w_s)``; a device counter's ``mean(devices x calibration)``, the zone the mean of those
  over the sensors that reported, x number of device sensors / area. Should the rows not
  hold every reading the zone sums hold (a snapshot of the earlier layout, a sensor that
  changed kind), that window falls back to the zone sums (``sum(count) / sum(coverage)``,
  ``mean(devices x calibration)`` per reading);
- agreement: ``1 / (1 + sigma / max(D, AGREE_FLOOR))`` over the source kind's sensors, with
  ``sigma`` the ``w_s``-weighted standard deviation of the ``d_s`` around the zone's ``D``
  (device counters: equal weights, ``d_s`` their zone estimates); 1 for line counters, one
  sensor, or the fallback; NaN when blind;
- trend: least-squares slope of the bucket densities in the window, persons/m² per minute;
- flow: entries per minute over the window; freshness: ``end`` - newest reading in the window;
- outflow (issue 16): exits per minute over the window, from the line counters' own rows
  (``xk == LINE``: ``X_A`` entries, ``X_COV`` exits); the specific outflow, persons per metre
  per second, over the counters with a width (``xw[row]``, metres; NaN when none has one);
  counter-flow: over those counters, the largest ``min(entries, exits)`` per metre per
  minute, and that counter's balance ``min / max`` (NaN when none).

A window with no readings is emitted only right after a window that had some (density NaN:
the zone went blind), so silence is reported once, and never before a zone's first data. A
zone whose ring is empty jumps straight to the watermark, so a long silence costs O(1).

State layout: struct-of-arrays in plain numpy (see ``streams/density.py`` for sizes).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit

# Event kinds (schemas.Kind codes).
LINE = 0
OCC = 1
DEV = 2
GRID = 3  # grid cells: moves the clocks, is deduplicated and judged late, counts in no sum

# Event status codes.
OK = 0
LATE = 1
DUP = 2  # the sensor's event id was seen before, with the same content: a repeat
CONFLICT = 3  # the sensor's event id was seen before, with other content

NEVER = np.iinfo(np.int64).min // 4  # "no bucket closed yet" / "no event time yet"
F64 = npt.NDArray[np.float64]  # the engine's float and int arrays (the layouts below)
I64 = npt.NDArray[np.int64]

# Zone float fields zf[z, ...]
ZF_AREA = 0
ZF_LINE_OCC = 1
# Running sums over the zone's current window (closed buckets c-k+1 .. c): a close adds the
# new bucket and subtracts the one leaving, instead of re-adding k buckets. Presence is
# judged by the reading counts (exact integers), never by a float sum that may keep residue.
ZF_S_CAM_COUNT = 2
ZF_S_CAM_COV = 3
ZF_S_CAM_N = 4
ZF_S_LINE_IN = 5
ZF_S_LINE_N = 6
ZF_S_DEV_OCC = 7
ZF_S_DEV_N = 8
ZF_S_READS = 9
ZF_N = 10
# Zone int fields zi[z, ...]
ZI_SLIDE = 0  # slide (bucket) length in ms
ZI_K = 1  # buckets per window
ZI_NDEV = 2  # device sensors configured (>= 1)
ZI_CLOSED = 3  # newest closed bucket index, or NEVER
ZI_PART = 4  # partition whose watermark drives the zone
ZI_LAST_TS = 5  # newest event time holding data, or NEVER
ZI_EMPTY_SENT = 6  # 1 unless the last emitted window had readings (so: quiet, say nothing)
ZI_ACTIVE = 7  # 1 if the zone is in the registry
ZI_OPEN_MS = 8  # start of the oldest open bucket: (closed + 1) * slide
ZI_OPEN_SLOT = 9  # ring slot of that bucket: (closed + 1) % R
ZI_N = 10
# The hot path divides nothing: lateness is ``ts < open_ms``, the next close is due when the
# watermark reaches ``open_ms + slide``, and an event's slot is found by stepping from
# ``open_slot`` (at most grace/slide + 2 steps).
# Ring fields ring[z, slot, ...]
R_CAM_COUNT = 0
R_CAM_COV = 1
R_LINE_IN = 2
R_LINE_OUT = 3
R_LINE_N = 4
R_DEV_OCC = 5
R_DEV_N = 6
R_MAX_TS = 7
R_DENS = 8
R_READS = 9
R_CAM_N = 10
R_FIELDS = 11
# Per-sensor rows (cameras and device counters; ``si[s, SI_ROW]``): per bucket ``xr[row,
# slot, ...]`` (the zone's slot numbering) and the running window sums ``xs[row, ...]``;
# ``xk[row]`` is the kind the row counts (a reading of another kind is counted by the zone
# sums only, and makes its windows fall back to them).
X_A = 0  # camera: sum(count); device counter: sum(devices x calibration); line: entries
X_COV = 1  # camera: sum(coverage); line counter: exits
X_N = 2  # readings
X_FIELDS = 3
AGREE_FLOOR = 1.0  # p/m²: disagreement below this density is measured against it
# Sensor float fields sf[s, ...]
SF_CALIB = 0
SF_COV = 1
SF_SKEW = 2  # smoothed (event time - arrival) of the sensor's readings, ms (Python side only)
SF_N = 3
# Sensor int fields si[s, ...]
SI_ZONE = 0
SI_LAST_TS = 1
SI_DPOS = 2
SI_AUTO = 3  # 1 if the sensor was not listed by the registry (accepted unlisted)
SI_ROW = 4  # its per-sensor row (cameras, device counters), or -1
SI_N = 5
# Output int columns oi[n, ...]
OI_ZONE = 0
OI_END = 1
OI_SRC = 2  # kind used for the window density, -1 if none
OI_FRESH = 3  # ms since the newest reading in the window, -1 if none
OI_N = 4  # readings in the window
OI_COLS = 5
# Output float columns of[n, ...]
OF_OCC = 0
OF_DENS = 1
OF_TREND = 2
OF_FLOW = 3
OF_AGREE = 4  # agreement of the source kind's sensors, 0..1 (NaN when blind)
OF_OUT = 5  # exits per minute over the window (line counters' rows)
OF_OUT_PMS = 6  # exits per metre of counted width per second (NaN: no counter with a width)
OF_XFLOW = 7  # counter-flow: max over counters of min(entries, exits) per metre per minute
OF_XBAL = 8  # that counter's min(entries, exits) / max(entries, exits)
OF_COLS = 9


@njit(cache=True, nogil=True)
def _set_closed(zi: np.ndarray, z: int, c: int, r: int) -> None:
    zi[z, ZI_CLOSED] = c
    zi[z, ZI_OPEN_MS] = (c + 1) * zi[z, ZI_SLIDE]
    zi[z, ZI_OPEN_SLOT] = (c + 1) % r


@njit(cache=True, nogil=True)
def _clear_slot(ring: np.ndarray, z: int, slot: int) -> None:
    for f in range(R_FIELDS):
        ring[z, slot, f] = 0.0
    ring[z, slot, R_MAX_TS] = -1.0
    ring[z, slot, R_DENS] = np.nan


@njit(cache=True, nogil=True)
def _clear_rows(z: int, zr_ptr: np.ndarray, zr: np.ndarray, xr: np.ndarray,
                xs: np.ndarray) -> None:
    for j in range(zr_ptr[z], zr_ptr[z + 1]):
        row = zr[j]
        for f in range(X_FIELDS):
            xs[row, f] = 0.0
            for slot in range(xr.shape[1]):
                xr[row, slot, f] = 0.0


@njit(cache=True, nogil=True)
def _fuse(z: int, zr_ptr: np.ndarray, zr: np.ndarray, xk: np.ndarray, x: np.ndarray,
          kind: int, n_zone: float, scale: float) -> tuple[float, float]:
    """Fused density and agreement of the rows of ``kind`` of zone ``z`` from sums ``x``
    (``xs``, or one slot of ``xr``); NaN, NaN when they do not hold all ``n_zone`` readings
    of the zone sums (fall back). ``scale``: device counters' ``ndev / area``."""
    num = 0.0
    den = 0.0
    n = 0.0
    m = 0
    for j in range(zr_ptr[z], zr_ptr[z + 1]):
        row = zr[j]
        xn = x[row, X_N]
        if xk[row] == kind and xn > 0.5:
            n += xn
            m += 1
            if kind == OCC:
                num += x[row, X_A] / xn
                den += x[row, X_COV] / xn
            else:
                num += x[row, X_A] / xn * scale
                den += 1.0
    if n != n_zone or not den > 0.0:
        return np.nan, np.nan
    d = num / den
    if m == 1:
        return d, 1.0
    var = 0.0
    for j in range(zr_ptr[z], zr_ptr[z + 1]):
        row = zr[j]
        xn = x[row, X_N]
        if xk[row] == kind and xn > 0.5:
            if kind == OCC:
                w = x[row, X_COV] / xn
                e = x[row, X_A] / x[row, X_COV] - d
            else:
                w = 1.0
                e = x[row, X_A] / xn * scale - d
            var += w * e * e
    sigma = np.sqrt(var / den)
    return d, 1.0 / (1.0 + sigma / max(d, AGREE_FLOOR))


@njit(cache=True, nogil=True)
def _fuse_bucket(z: int, zr_ptr: np.ndarray, zr: np.ndarray, xk: np.ndarray, xr: np.ndarray,
                 xs: np.ndarray, slot: int, kind: int, n_bucket: float, n_window: float,
                 scale: float) -> float:
    """The bucket's fused density: every sensor of ``kind`` with readings in the window, at
    its bucket value if it reported in the bucket, else at its window value (a sensor that
    reports less often than once a bucket neither vanishes from buckets nor swings the
    trend), with its window weight. NaN when the rows miss readings (fall back)."""
    num = 0.0
    den = 0.0
    nb = 0.0
    nw = 0.0
    for j in range(zr_ptr[z], zr_ptr[z + 1]):
        row = zr[j]
        xn = xs[row, X_N]
        if xk[row] != kind or xn < 0.5:
            continue
        nw += xn
        bn = xr[row, slot, X_N]
        nb += bn
        if kind == OCC:
            w = xs[row, X_COV] / xn
            v = (xr[row, slot, X_A] / xr[row, slot, X_COV] if bn > 0.5
                 else xs[row, X_A] / xs[row, X_COV])
        else:
            w = 1.0
            v = (xr[row, slot, X_A] / bn if bn > 0.5 else xs[row, X_A] / xn) * scale
        num += w * v
        den += w
    if nb != n_bucket or nw != n_window or not den > 0.0:
        return np.nan
    return num / den


@njit(cache=True, nogil=True)
def _line_flows(z: int, zr_ptr: np.ndarray, zr: np.ndarray, xk: np.ndarray, xs: np.ndarray,
                xw: np.ndarray, minutes: float, of: np.ndarray, n_out: int) -> None:
    """Outflow, specific outflow and counter-flow of the window (see the module docstring)
    from the line counters' window sums, into output row ``n_out``."""
    out = 0.0
    out_w = 0.0
    width = 0.0
    xflow = np.nan
    xbal = np.nan
    for j in range(zr_ptr[z], zr_ptr[z + 1]):
        row = zr[j]
        if xk[row] != LINE or xs[row, X_N] < 0.5:
            continue
        e_in = xs[row, X_A]
        e_out = xs[row, X_COV]
        out += e_out
        w = xw[row]
        if w > 0.0:
            out_w += e_out
            width += w
            lo = min(e_in, e_out)
            hi = max(e_in, e_out)
            m = lo / w / minutes
            if np.isnan(xflow) or m > xflow:
                xflow = m
                xbal = lo / hi if hi > 0.0 else 0.0
    of[n_out, OF_OUT] = out / minutes
    of[n_out, OF_OUT_PMS] = out_w / width / (minutes * 60.0) if width > 0.0 else np.nan
    of[n_out, OF_XFLOW] = xflow
    of[n_out, OF_XBAL] = xbal


@njit(cache=True, nogil=True)
def _close_bucket(
    z: int, c: int, zf: np.ndarray, zi: np.ndarray, ring: np.ndarray,
    oi: np.ndarray, of: np.ndarray, n_out: int,
    zr_ptr: np.ndarray, zr: np.ndarray, xk: np.ndarray, xr: np.ndarray, xs: np.ndarray,
    xw: np.ndarray,
) -> int:
    """Close bucket ``c`` of zone ``z``; maybe emit its window into row ``n_out``."""
    r = ring.shape[1]
    k = zi[z, ZI_K]
    slide = zi[z, ZI_SLIDE]
    area = zf[z, ZF_AREA]
    slot = zi[z, ZI_OPEN_SLOT]  # bucket c is the oldest open one
    # Window sums over buckets c-k+1 .. c: the running sums plus bucket c.
    zf[z, ZF_S_CAM_COUNT] += ring[z, slot, R_CAM_COUNT]
    zf[z, ZF_S_CAM_COV] += ring[z, slot, R_CAM_COV]
    zf[z, ZF_S_CAM_N] += ring[z, slot, R_CAM_N]
    zf[z, ZF_S_LINE_IN] += ring[z, slot, R_LINE_IN]
    zf[z, ZF_S_LINE_N] += ring[z, slot, R_LINE_N]
    zf[z, ZF_S_DEV_OCC] += ring[z, slot, R_DEV_OCC]
    zf[z, ZF_S_DEV_N] += ring[z, slot, R_DEV_N]
    zf[z, ZF_S_READS] += ring[z, slot, R_READS]
    for j in range(zr_ptr[z], zr_ptr[z + 1]):
        row = zr[j]
        for f in range(X_FIELDS):
            xs[row, f] += xr[row, slot, f]
    cam_count = zf[z, ZF_S_CAM_COUNT]
    cam_cov = zf[z, ZF_S_CAM_COV]
    line_in = zf[z, ZF_S_LINE_IN]
    dev_occ = zf[z, ZF_S_DEV_OCC]
    dev_n = zf[z, ZF_S_DEV_N]
    n_readings = zf[z, ZF_S_READS]
    has_cam = zf[z, ZF_S_CAM_N] > 0.5
    has_line = zf[z, ZF_S_LINE_N] > 0.5
    has_dev = dev_n > 0.5
    # Newest reading in the window: in the newest bucket that has one.
    max_ts = -1.0
    sj = slot
    for _ in range(k):
        if ring[z, sj, R_READS] > 0.0:
            max_ts = ring[z, sj, R_MAX_TS]
            break
        sj = sj - 1 if sj > 0 else r - 1
    # The bucket's cameras, fused per sensor (or from the zone sums: see _fuse).
    ndev = zi[z, ZI_NDEV]
    dev_scale = ndev / area
    b_cam = np.nan
    if ring[z, slot, R_CAM_COV] > 0.0:
        b_cam = _fuse_bucket(z, zr_ptr, zr, xk, xr, xs, slot, OCC, ring[z, slot, R_CAM_N],
                             zf[z, ZF_S_CAM_N], 0.0)
        if np.isnan(b_cam):
            b_cam = ring[z, slot, R_CAM_COUNT] / ring[z, slot, R_CAM_COV]
    # Line occupancy as of the end of bucket c.
    if ring[z, slot, R_CAM_COV] > 0.0:
        zf[z, ZF_LINE_OCC] = b_cam * area
    elif ring[z, slot, R_LINE_N] > 0.0:
        occ = zf[z, ZF_LINE_OCC] + ring[z, slot, R_LINE_IN] - ring[z, slot, R_LINE_OUT]
        zf[z, ZF_LINE_OCC] = occ if occ > 0.0 else 0.0
    # Bucket density, for the trend.
    if ring[z, slot, R_CAM_COV] > 0.0:
        d = b_cam
    elif has_line:
        d = zf[z, ZF_LINE_OCC] / area
    elif ring[z, slot, R_DEV_N] > 0.0:
        d = _fuse_bucket(z, zr_ptr, zr, xk, xr, xs, slot, DEV, ring[z, slot, R_DEV_N], dev_n,
                         dev_scale)
        if np.isnan(d):
            d = ring[z, slot, R_DEV_OCC] / ring[z, slot, R_DEV_N] * dev_scale
    else:
        d = np.nan
    ring[z, slot, R_DENS] = d
    # Window density by precedence, with the agreement of its sensors.
    agree = 1.0
    if has_cam:
        dens, agree = _fuse(z, zr_ptr, zr, xk, xs, OCC, zf[z, ZF_S_CAM_N], 0.0)
        if np.isnan(dens):
            dens, agree = cam_count / cam_cov, 1.0
        src = OCC
    elif has_line:
        dens = zf[z, ZF_LINE_OCC] / area
        src = LINE
    elif has_dev:
        dens, agree = _fuse(z, zr_ptr, zr, xk, xs, DEV, dev_n, dev_scale)
        if np.isnan(dens):
            dens, agree = dev_occ / dev_n * dev_scale, 1.0
        src = DEV
    else:
        dens = np.nan
        agree = np.nan
        src = -1
    emit = True
    if n_readings == 0.0:
        if zi[z, ZI_EMPTY_SENT] == 1:
            emit = False
        zi[z, ZI_EMPTY_SENT] = 1
    else:
        zi[z, ZI_EMPTY_SENT] = 0
    if emit:
        # Least-squares slope of bucket densities over the window (x in minutes).
        sx = 0.0
        sy = 0.0
        sxx = 0.0
        sxy = 0.0
        m = 0.0
        step = slide / 60000.0
        sj = slot
        for j in range(k):
            y = ring[z, sj, R_DENS]
            sj = sj - 1 if sj > 0 else r - 1
            if not np.isnan(y):
                x = -j * step
                sx += x
                sy += y
                sxx += x * x
                sxy += x * y
                m += 1.0
        den = m * sxx - sx * sx
        trend = (m * sxy - sx * sy) / den if m >= 2.0 and den > 0.0 else np.nan
        end = (c + 1) * slide
        oi[n_out, OI_ZONE] = z
        oi[n_out, OI_END] = end
        oi[n_out, OI_SRC] = src
        oi[n_out, OI_FRESH] = end - np.int64(max_ts) if max_ts >= 0.0 else -1
        oi[n_out, OI_N] = np.int64(n_readings)
        of[n_out, OF_OCC] = dens * area
        of[n_out, OF_DENS] = dens
        of[n_out, OF_TREND] = trend
        of[n_out, OF_FLOW] = line_in / (k * slide / 60000.0)
        of[n_out, OF_AGREE] = agree
        if has_line:
            _line_flows(z, zr_ptr, zr, xk, xs, xw, k * slide / 60000.0, of, n_out)
        else:
            of[n_out, OF_OUT] = 0.0
            of[n_out, OF_OUT_PMS] = np.nan
            of[n_out, OF_XFLOW] = np.nan
            of[n_out, OF_XBAL] = np.nan
        n_out += 1
    # The oldest bucket leaves the window: out of the sums, and its slot is free for bucket
    # c - k + 1 + r.
    old = slot - k + 1
    old = old if old >= 0 else old + r
    if n_readings - ring[z, old, R_READS] < 0.5:
        for f in range(ZF_S_CAM_COUNT, ZF_N):  # window now empty: exact zeros, no residue
            zf[z, f] = 0.0
    else:
        zf[z, ZF_S_CAM_COUNT] -= ring[z, old, R_CAM_COUNT]
        zf[z, ZF_S_CAM_COV] -= ring[z, old, R_CAM_COV]
        zf[z, ZF_S_CAM_N] -= ring[z, old, R_CAM_N]
        zf[z, ZF_S_LINE_IN] -= ring[z, old, R_LINE_IN]
        zf[z, ZF_S_LINE_N] -= ring[z, old, R_LINE_N]
        zf[z, ZF_S_DEV_OCC] -= ring[z, old, R_DEV_OCC]
        zf[z, ZF_S_DEV_N] -= ring[z, old, R_DEV_N]
        zf[z, ZF_S_READS] -= ring[z, old, R_READS]
    for j in range(zr_ptr[z], zr_ptr[z + 1]):
        row = zr[j]
        if xs[row, X_N] - xr[row, old, X_N] < 0.5:
            for f in range(X_FIELDS):
                xs[row, f] = 0.0
        else:
            for f in range(X_FIELDS):
                xs[row, f] -= xr[row, old, f]
        for f in range(X_FIELDS):
            xr[row, old, f] = 0.0
    _clear_slot(ring, z, old)
    zi[z, ZI_CLOSED] = c
    zi[z, ZI_OPEN_MS] += slide
    zi[z, ZI_OPEN_SLOT] = slot + 1 if slot + 1 < r else 0
    return n_out


@njit(cache=True, nogil=True)
def _close_upto(
    z: int, target: int, zf: np.ndarray, zi: np.ndarray, ring: np.ndarray,
    oi: np.ndarray, of: np.ndarray, n_out: int,
    zr_ptr: np.ndarray, zr: np.ndarray, xk: np.ndarray, xr: np.ndarray, xs: np.ndarray,
    xw: np.ndarray,
) -> int:
    r = ring.shape[1]
    while zi[z, ZI_CLOSED] < target:
        closed = zi[z, ZI_CLOSED]
        last_ts = zi[z, ZI_LAST_TS]
        # Nothing left in the ring and the empty window already reported: jump.
        if zi[z, ZI_EMPTY_SENT] == 1 and (
            last_ts == NEVER or closed >= last_ts // zi[z, ZI_SLIDE] + zi[z, ZI_K] - 1
        ):
            # No readings remain, but closed buckets may still hold carried densities: clear
            # every slot, or they would alias into the windows after the jump.
            for slot in range(r):
                _clear_slot(ring, z, slot)
            for f in range(ZF_S_CAM_COUNT, ZF_N):
                zf[z, f] = 0.0
            _clear_rows(z, zr_ptr, zr, xr, xs)
            _set_closed(zi, z, target, r)
            break
        n_out = _close_bucket(z, closed + 1, zf, zi, ring, oi, of, n_out,
                              zr_ptr, zr, xk, xr, xs, xw)
    return n_out


@njit(cache=True, nogil=True)
def arrival_kernel(
    ev_zone: np.ndarray, ev_part: np.ndarray, ev_ts: np.ndarray, p_max: np.ndarray,
    n_zones: int, pmax_at: np.ndarray, order: np.ndarray, group: bool,
) -> None:
    """First pass over a batch, in arrival order: the partition clock each event saw on
    arrival (``pmax_at``), and a stable order of the events grouped by zone (``order``).

    ``ev_ts`` here is each event's *watermark time*: its event time, but never later than its
    arrival (or, without one, the robust clock), so no sensor's fast clock moves the
    watermark that the other sensors' readings are judged by.

    Zones share nothing but their partition's clock, so processing a batch zone by zone, each
    event with the clock it saw, gives exactly the sequential result, while the zone state is
    walked in memory order instead of at random (a cache miss per reading at 100k zones).
    Without ``group`` the order is the arrival order (best while the state fits in cache).
    """
    n = ev_zone.shape[0]
    for i in range(n):
        p = ev_part[i]
        p_max[p] = max(p_max[p], ev_ts[i])
        pmax_at[i] = p_max[p]
    if not group:
        for i in range(n):
            order[i] = i
        return
    counts = np.zeros(n_zones + 1, dtype=np.int64)
    for i in range(n):
        counts[ev_zone[i] + 1] += 1
    for z in range(n_zones):
        counts[z + 1] += counts[z]
    for i in range(n):
        z = ev_zone[i]
        order[counts[z]] = i
        counts[z] += 1


@njit(cache=True, nogil=True)
def ingest_kernel(
    ev_zone: np.ndarray, ev_sensor: np.ndarray, ev_kind: np.ndarray, ev_ts: np.ndarray,
    ev_a: np.ndarray, ev_b: np.ndarray, ev_cov: np.ndarray, ev_hash: np.ndarray,
    ev_part: np.ndarray, pmax_at: np.ndarray, order: np.ndarray, status: np.ndarray,
    start: int, zf: np.ndarray, zi: np.ndarray, ring: np.ndarray,
    sf: np.ndarray, si: np.ndarray, dedup: np.ndarray, grace: int,
    oi: np.ndarray, of: np.ndarray, n_out: int, ev_chash: np.ndarray, dedup_c: np.ndarray,
    zr_ptr: np.ndarray, zr: np.ndarray, xk: np.ndarray, xr: np.ndarray, xs: np.ndarray,
    xw: np.ndarray,
) -> tuple[int, int]:
    """Process events ``order[start:]`` (see :func:`arrival_kernel`); return (next position,
    rows written). Stops early, to be called again, when the output buffer might overflow.
    """
    n = ev_zone.shape[0]
    cap = oi.shape[0]
    r = ring.shape[1]
    depth = dedup.shape[1]
    for ii in range(start, n):
        if n_out + r + 2 > cap:
            return ii, n_out
        i = order[ii]
        z = ev_zone[i]
        p = ev_part[i]
        ts = ev_ts[i]
        slide = zi[z, ZI_SLIDE]
        wm = pmax_at[i] - grace
        if zi[z, ZI_CLOSED] == NEVER:
            # First sight: nothing to report until its first bucket closes.
            _set_closed(zi, z, wm // slide - 1, r)
            zi[z, ZI_EMPTY_SENT] = 1
        zi[z, ZI_PART] = p
        if wm >= zi[z, ZI_OPEN_MS] + slide:  # the oldest open bucket is due
            n_out = _close_upto(z, wm // slide - 1, zf, zi, ring, oi, of, n_out,
                                zr_ptr, zr, xk, xr, xs, xw)
        s = ev_sensor[i]
        h = ev_hash[i]
        # No early exit: a branch-free scan vectorises (a duplicate is the rare case).
        ch = ev_chash[i]
        hits = 0
        same = 0
        for j in range(depth):
            hit = dedup[s, j] == h
            hits += hit
            same += hit & (dedup_c[s, j] == ch)
        if hits:
            status[i] = DUP if same else CONFLICT
            continue
        t = ts - zi[z, ZI_OPEN_MS]
        if t < 0:
            status[i] = LATE
            continue
        pos = si[s, SI_DPOS]
        dedup[s, pos] = h
        dedup_c[s, pos] = ch
        si[s, SI_DPOS] = pos + 1 if pos + 1 < depth else 0
        slot = zi[z, ZI_OPEN_SLOT]
        while t >= slide:
            t -= slide
            slot = slot + 1 if slot + 1 < r else 0
        kind = ev_kind[i]
        if kind == GRID:  # its cells are counted by the grid store (streams/grid.py)
            si[s, SI_LAST_TS] = max(si[s, SI_LAST_TS], ts)
            status[i] = OK
            continue
        row = si[s, SI_ROW]
        if row >= 0 and xk[row] != kind:
            row = -1
        if kind == OCC:
            cov = ev_cov[i]
            if not cov > 0.0:
                cov = sf[s, SF_COV]
            if not cov > 0.0:
                cov = zf[z, ZF_AREA]
            ring[z, slot, R_CAM_COUNT] += ev_a[i]
            ring[z, slot, R_CAM_COV] += cov
            ring[z, slot, R_CAM_N] += 1.0
            if row >= 0:
                xr[row, slot, X_A] += ev_a[i]
                xr[row, slot, X_COV] += cov
                xr[row, slot, X_N] += 1.0
        elif kind == LINE:
            ring[z, slot, R_LINE_IN] += ev_a[i]
            ring[z, slot, R_LINE_OUT] += ev_b[i]
            ring[z, slot, R_LINE_N] += 1.0
            if row >= 0:
                xr[row, slot, X_A] += ev_a[i]
                xr[row, slot, X_COV] += ev_b[i]
                xr[row, slot, X_N] += 1.0
        else:
            occ = ev_a[i] * sf[s, SF_CALIB]
            ring[z, slot, R_DEV_OCC] += occ
            ring[z, slot, R_DEV_N] += 1.0
            if row >= 0:
                xr[row, slot, X_A] += occ
                xr[row, slot, X_N] += 1.0
        ring[z, slot, R_READS] += 1.0
        ring[z, slot, R_MAX_TS] = max(ring[z, slot, R_MAX_TS], ts)
        si[s, SI_LAST_TS] = max(si[s, SI_LAST_TS], ts)
        zi[z, ZI_LAST_TS] = max(zi[z, ZI_LAST_TS], ts)
        status[i] = OK
    return n, n_out


@njit(cache=True, nogil=True)
def close_kernel(
    start: int, zf: np.ndarray, zi: np.ndarray, ring: np.ndarray, p_max: np.ndarray,
    grace: int, oi: np.ndarray, of: np.ndarray, n_out: int,
    zr_ptr: np.ndarray, zr: np.ndarray, xk: np.ndarray, xr: np.ndarray, xs: np.ndarray,
    xw: np.ndarray,
) -> tuple[int, int]:
    """Close every active zone up to its partition's watermark, zones ``start..``."""
    nz = zi.shape[0]
    cap = oi.shape[0]
    r = ring.shape[1]
    for z in range(start, nz):
        if zi[z, ZI_ACTIVE] == 0 or zi[z, ZI_CLOSED] == NEVER:
            continue
        if n_out + r + 2 > cap:
            return z, n_out
        p = zi[z, ZI_PART]
        target = (p_max[p] - grace) // zi[z, ZI_SLIDE] - 1
        n_out = _close_upto(z, target, zf, zi, ring, oi, of, n_out, zr_ptr, zr, xk, xr, xs,
                            xw)
    return nz, n_out
