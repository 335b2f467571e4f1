"""Pure-Python twin of ``streams/kernels.py``: the same model, written plainly.

Buckets live in a dict keyed by bucket index instead of a ring, zones and sensors are small
objects instead of array rows. The parity tests run random streams through both and require
the same rows (integers equal, floats to 1e-12 relative). It is also the baseline of the
kernel benchmark.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

LINE, OCC, DEV, GRID = 0, 1, 2, 3
OK, LATE, DUP, CONFLICT = 0, 1, 2, 3
AGREE_FLOOR = 1.0


@dataclass(slots=True)
class Bucket:
    cam_count: float = 0.0
    cam_cov: float = 0.0
    line_in: float = 0.0
    line_out: float = 0.0
    line_n: int = 0
    dev_occ: float = 0.0
    dev_n: int = 0
    n: int = 0
    max_ts: int = -1
    dens: float = math.nan
    cam_n: int = 0
    # Per sensor (by index): [sum, coverage, n] of its readings of its own kind.
    cams: dict[int, list[float]] = field(default_factory=dict)
    devs: dict[int, list[float]] = field(default_factory=dict)
    lines: dict[int, list[float]] = field(default_factory=dict)  # [entries, exits, n]


@dataclass(slots=True)
class ZoneState:
    area: float
    slide: int
    k: int
    ndev: int
    closed: int | None = None
    part: int = 0
    line_occ: float = 0.0
    last_b: int | None = None
    empty_sent: bool = True  # the last emitted window had no readings (or none was emitted)
    buckets: dict[int, Bucket] = field(default_factory=dict)


@dataclass(slots=True)
class SensorState:
    calib: float
    cov: float
    depth: int
    kind: int | None = None  # the kind counted per sensor (OCC, DEV, LINE), or None
    width: float = math.nan  # line counters: the counted passage's width, m
    last_ts: int = -1
    recent: list[tuple[int, int]] = field(default_factory=list)  # (id hash, content hash)


Row = tuple[int, int, int, int, int, float, float, float, float, float, float, float, float,
            float]
"""(zone, end_ms, src, fresh_ms, n_readings, occupancy, density, trend, flow, agreement,
outflow, outflow per m per s, counter-flow per m per min, counter-flow balance)"""


def line_flows(lines: dict[int, list[float]], widths: dict[int, float], minutes: float
               ) -> tuple[float, float, float, float]:
    """(exits per minute, exits per metre per second, counter-flow per metre per minute,
    its balance) from each line counter's window [entries, exits, n]."""
    out = out_w = width = 0.0
    best: tuple[float, float] | None = None
    for s in sorted(lines):
        e_in, e_out, n = lines[s]
        if n <= 0:
            continue
        out += e_out
        w = widths.get(s, math.nan)
        if w > 0:
            out_w += e_out
            width += w
            m = min(e_in, e_out) / w / minutes
            if best is None or m > best[0]:
                hi = max(e_in, e_out)
                best = (m, min(e_in, e_out) / hi if hi > 0 else 0.0)
    pms = out_w / width / (minutes * 60) if width > 0 else math.nan
    xflow, xbal = best if best is not None else (math.nan, math.nan)
    return out / minutes, pms, xflow, xbal


def fuse(per: dict[int, list[float]], kind: int, n_zone: int, scale: float
         ) -> tuple[float, float]:
    """Per-sensor fusion of one kind over merged per-sensor sums: (density, agreement), or
    NaN, NaN when the sums do not hold all ``n_zone`` readings (fall back to zone sums)."""
    vals: list[tuple[float, float]] = []  # (weight, value)
    for a, cov, n in per.values():
        if n <= 0:
            continue
        if kind == OCC:
            vals.append((cov / n, a / cov))
        else:
            vals.append((1.0, a / n * scale))
    if sum(n for _, _, n in per.values()) != n_zone or not vals:
        return math.nan, math.nan
    wsum = sum(w for w, _ in vals)
    d = sum(w * v for w, v in vals) / wsum
    sigma = math.sqrt(sum(w * (v - d) ** 2 for w, v in vals) / wsum)
    return d, 1.0 / (1.0 + sigma / max(d, AGREE_FLOOR))


def fuse_bucket(bucket: dict[int, list[float]], window: dict[int, list[float]], kind: int,
                n_bucket: int, n_window: int, scale: float) -> float:
    """A bucket's fused density: each sensor with readings in the window at its bucket value,
    or its window value if it has none in the bucket, weighted as in the window."""
    pairs: list[tuple[float, float]] = []
    for s, (a, cov, n) in window.items():
        if n <= 0:
            continue
        own = bucket.get(s)
        ba, bcov, bn = own if own is not None and own[2] > 0 else (a, cov, n)
        if kind == OCC:
            pairs.append((cov / n, ba / bcov))
        else:
            pairs.append((1.0, ba / bn * scale))
    if (sum(v[2] for v in bucket.values()) != n_bucket
            or sum(v[2] for v in window.values()) != n_window or not pairs):
        return math.nan
    return sum(w * v for w, v in pairs) / sum(w for w, _ in pairs)


class TwinEngine:
    def __init__(self, grace: int) -> None:
        self.grace = grace
        self.zones: dict[int, ZoneState] = {}
        self.sensors: dict[int, SensorState] = {}
        self.p_max: dict[int, int] = {}

    def _close(self, zi: int, z: ZoneState, c: int, out: list[Row]) -> None:
        window = [z.buckets.get(c - j, Bucket()) for j in range(z.k)]
        cur = window[0]
        cams: dict[int, list[float]] = {}
        devs: dict[int, list[float]] = {}
        lines: dict[int, list[float]] = {}
        for b in window:
            for per, merged in ((b.cams, cams), (b.devs, devs), (b.lines, lines)):
                for s, v in per.items():
                    acc = merged.setdefault(s, [0.0, 0.0, 0.0])
                    for f in range(3):
                        acc[f] += v[f]
        cam_n = sum(b.cam_n for b in window)
        scale = z.ndev / z.area
        b_cam = math.nan
        if cur.cam_cov > 0:
            b_cam = fuse_bucket(cur.cams, cams, OCC, cur.cam_n, cam_n, scale)
            if math.isnan(b_cam):
                b_cam = cur.cam_count / cur.cam_cov
        cam_count = sum(b.cam_count for b in window)
        cam_cov = sum(b.cam_cov for b in window)
        line_in = sum(b.line_in for b in window)
        line_n = sum(b.line_n for b in window)
        dev_occ = sum(b.dev_occ for b in window)
        dev_n = sum(b.dev_n for b in window)
        n = sum(b.n for b in window)
        max_ts = max(b.max_ts for b in window)
        if cur.cam_cov > 0:
            z.line_occ = b_cam * z.area
        elif cur.line_n > 0:
            z.line_occ = max(0.0, z.line_occ + cur.line_in - cur.line_out)
        if cur.cam_cov > 0:
            cur.dens = b_cam
        elif line_n > 0:
            cur.dens = z.line_occ / z.area
        elif cur.dev_n > 0:
            cur.dens = fuse_bucket(cur.devs, devs, DEV, cur.dev_n, dev_n, scale)
            if math.isnan(cur.dens):
                cur.dens = cur.dev_occ / cur.dev_n * scale
        else:
            cur.dens = math.nan
        if c not in z.buckets:
            z.buckets[c] = cur
        agree = 1.0
        if cam_cov > 0:
            (dens, agree), src = fuse(cams, OCC, cam_n, scale), OCC
            if math.isnan(dens):
                dens, agree = cam_count / cam_cov, 1.0
        elif line_n > 0:
            dens, src = z.line_occ / z.area, LINE
        elif dev_n > 0:
            (dens, agree), src = fuse(devs, DEV, dev_n, scale), DEV
            if math.isnan(dens):
                dens, agree = dev_occ / dev_n * scale, 1.0
        else:
            dens, agree, src = math.nan, math.nan, -1
        emit = not (n == 0 and z.empty_sent)
        z.empty_sent = n == 0
        if emit:
            pts = [(-j * z.slide / 60000.0, b.dens) for j, b in enumerate(window)
                   if not math.isnan(b.dens)]
            trend = math.nan
            if len(pts) >= 2:
                m = float(len(pts))
                sx = sum(x for x, _ in pts)
                sy = sum(y for _, y in pts)
                sxx = sum(x * x for x, _ in pts)
                sxy = sum(x * y for x, y in pts)
                den = m * sxx - sx * sx
                if den > 0:
                    trend = (m * sxy - sx * sy) / den
            end = (c + 1) * z.slide
            minutes = z.k * z.slide / 60000.0
            widths = {s: self.sensors[s].width for s in lines}
            out.append((zi, end, src, end - max_ts if max_ts >= 0 else -1, n,
                        dens * z.area, dens, trend, line_in / minutes, agree,
                        *line_flows(lines, widths, minutes)))
        z.buckets.pop(c - z.k + 1, None)
        z.closed = c

    def _close_upto(self, zi: int, z: ZoneState, target: int, out: list[Row]) -> None:
        assert z.closed is not None
        while z.closed < target:
            if z.empty_sent and (z.last_b is None or z.closed >= z.last_b + z.k - 1):
                z.buckets.clear()  # history before a jump never reaches a later window
                z.closed = target
                break
            self._close(zi, z, z.closed + 1, out)

    def ingest(
        self, events: list[tuple[int, int, int, int, float, float, float, int, int, int, int]],
        out: list[Row],
    ) -> list[int]:
        """events: (zone, sensor, kind, ts, a, b, coverage, hash, partition, watermark time,
        content hash) -> statuses."""
        statuses = []
        for zi, si, kind, ts, a, b, cov, h, p, eff, ch in events:
            self.p_max[p] = max(self.p_max.get(p, eff), eff)
            z = self.zones[zi]
            target = (self.p_max[p] - self.grace) // z.slide - 1
            if z.closed is None:
                z.closed = target
                z.empty_sent = True
            z.part = p
            self._close_upto(zi, z, target, out)
            s = self.sensors[si]
            ids = [c for i, c in s.recent if i == h]
            if ids:
                statuses.append(DUP if ch in ids else CONFLICT)
                continue
            bucket = ts // z.slide
            if bucket <= z.closed:
                statuses.append(LATE)
                continue
            s.recent.append((h, ch))
            if len(s.recent) > s.depth:
                s.recent.pop(0)
            if kind == GRID:  # counted by the grid store, in no bucket sum
                s.last_ts = max(s.last_ts, ts)
                statuses.append(OK)
                continue
            bk = z.buckets.setdefault(bucket, Bucket())
            per = bk.cams if kind == OCC else bk.lines if kind == LINE else bk.devs
            mine = per.setdefault(si, [0.0, 0.0, 0.0]) if s.kind == kind else [0.0] * 3
            if kind == OCC:
                c = cov if cov > 0 else (s.cov if s.cov > 0 else z.area)
                bk.cam_count += a
                bk.cam_cov += c
                bk.cam_n += 1
                mine[0] += a
                mine[1] += c
            elif kind == LINE:
                bk.line_in += a
                bk.line_out += b
                bk.line_n += 1
                mine[0] += a
                mine[1] += b
            else:
                bk.dev_occ += a * s.calib
                bk.dev_n += 1
                mine[0] += a * s.calib
            mine[2] += 1
            bk.n += 1
            bk.max_ts = max(bk.max_ts, ts)
            s.last_ts = max(s.last_ts, ts)
            z.last_b = bucket if z.last_b is None else max(z.last_b, bucket)
            statuses.append(OK)
        return statuses

    def close_all(self, out: list[Row]) -> None:
        for zi in sorted(self.zones):
            z = self.zones[zi]
            if z.closed is None:
                continue
            target = (self.p_max[z.part] - self.grace) // z.slide - 1
            self._close_upto(zi, z, target, out)


# -- grid density (twins of ``streams/grid_kernels.py``) ---------------------------------------
def bin_points(points: list[tuple[float, float]], olat: float, olon: float, m_lat: float,
               m_lon: float, cell_m: float, rows: int, cols: int) -> list[int]:
    """Each (lat, lon) point's row-major cell, -1 off the grid."""
    out = []
    for lat, lon in points:
        r = math.floor((lat - olat) * m_lat / cell_m)
        c = math.floor((lon - olon) * m_lon / cell_m)
        out.append(r * cols + c if 0 <= r < rows and 0 <= c < cols else -1)
    return out


def window_cells(sums: list[list[float]], reads: list[float], areas: list[float]
                 ) -> tuple[list[float], int, float]:
    """Cell densities of a window (mean count per reading / area), the densest cell and its
    density ((-1, NaN) without one)."""
    n = sum(reads)
    dens = [math.nan if n <= 0 or a <= 0 else sum(b[c] for b in sums) / n / a
            for c, a in enumerate(areas)]
    best, best_d = -1, math.nan
    for c, d in enumerate(dens):
        if not math.isnan(d) and (best < 0 or d > best_d):
            best, best_d = c, d
    return dens, best, best_d


# -- Theil-Sen slope (twin of ``streams/slope_kernels.py``) ------------------------------------
SEN_Z = 1.645


def theil_sen(points: Sequence[tuple[int, float]]) -> tuple[float, float, float, float] | None:
    """Theil–Sen over ``(ts_ms, value)`` points: (slope per second, fitted value at the newest
    point, the slope's ~90 % bounds); None with fewer than 3 points or no time spread."""
    n = len(points)
    if n < 3:
        return None
    t0 = points[-1][0]
    xs = [(t - t0) / 1000.0 for t, _ in points]
    ys = [v for _, v in points]
    slopes = sorted((ys[j] - ys[i]) / (xs[j] - xs[i])
                    for i in range(n) for j in range(i + 1, n) if xs[j] != xs[i])
    if not slopes:
        return None
    m = len(slopes)
    mid = slopes[m // 2] if m % 2 else (slopes[m // 2 - 1] + slopes[m // 2]) / 2
    c = SEN_Z * math.sqrt(n * (n - 1) * (2 * n + 5) / 18)
    lo = slopes[max(0, math.floor((m - c) / 2))]
    hi = slopes[min(m - 1, math.ceil((m + c) / 2))]
    rest = sorted(y - mid * x for x, y in zip(xs, ys, strict=True))
    k = len(rest)
    now = rest[k // 2] if k % 2 else (rest[k // 2 - 1] + rest[k // 2]) / 2
    return mid, now, lo, hi
