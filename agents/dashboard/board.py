"""What every dashboard page sees (:class:`Board`): the zones with their level, density,
sparkline, heat map and shelf, the alert and ack feed that reconnecting pages replay, and the
freshness that decides the stale banner. Pure state: the Kafka follower
(agents/dashboard/follower.py) feeds it, the web handlers (agents/dashboard/handlers.py and
the event stream, agents/dashboard/events.py) read it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from schemas import Ack, Thresholds, Zone, encode_ack, format_ts
from streams import LEVEL_NAMES, MOVING_DEFAULTS, STANDING_DEFAULTS, resolve_thresholds

from ..shelves import Shelf, Shelves
from .heatmap import HeatMaps

__all__ = ["FEED_MAX", "RECENT_ALERTS", "SPARK_POINTS", "STALE_S", "Board", "FeedEvent"]

log = logging.getLogger(__name__)

FEED_MAX = 5000  # alerts and acks kept for replay to reconnecting pages
SPARK_POINTS = 60  # density points a zone keeps for its sparkline (5 min at a 5 s slide)
RECENT_ALERTS = 300  # alerts sent to a page on a fresh connect
STALE_S = 30.0  # no heartbeat and no density this long: the banner (SAFETOUR_DASHBOARD_STALE_S)


@dataclass(slots=True)
class FeedEvent:
    seq: int
    kind: str  # "alert" | "ack"
    data: bytes  # JSON


@dataclass
class Board:
    """What every page sees: zones with level and density, the alert feed and the acks.
    Pure state (no Kafka, no HTTP): the consumer feeds it, the web handlers read it."""

    zones: list[Zone]
    boot: str = field(default_factory=lambda: secrets.token_hex(4))
    feed_max: int = FEED_MAX
    _seq: int = 0
    _feed: deque[FeedEvent] = field(default_factory=deque)
    _subscribers: set[asyncio.Queue[tuple[FeedEvent | None, str, bytes]]] = field(
        default_factory=set)
    level: dict[str, str] = field(default_factory=dict)
    alert_of_zone: dict[str, str] = field(default_factory=dict)
    density: dict[str, deque[tuple[str, float | None]]] = field(default_factory=dict)
    # Each zone's newest density confidence (0..1; None when blind or not given).
    confidence: dict[str, float | None] = field(default_factory=dict)
    # Zones with a grid: their cells' bounds and newest densities (agents/dashboard/heatmap.py).
    heat: HeatMaps = field(default_factory=HeatMaps, init=False)
    _zone_by_id: dict[str, Zone] = field(default_factory=dict, init=False)
    # Operators' shelves (agents/shelves.py), and the shelf each zone was last shown with:
    # one that ended by itself is announced once (expire_shelves).
    shelves: Shelves = field(default_factory=Shelves)
    _shown_shelf: dict[str, Shelf] = field(default_factory=dict)
    alerts: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    acks: dict[str, Ack] = field(default_factory=dict)
    # Freshness: wall clock (injectable), when data (a heartbeat or a density record) last
    # arrived, and why Kafka cannot be read, if it cannot.
    clock: Callable[[], float] = time.time
    stale_s: float = STALE_S
    started_at: float = field(default=0.0, init=False)
    last_data_at: float | None = None
    kafka_error: str | None = None
    workers: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    # The level thresholds of standing and moving crowds the alarm uses (SAFETOUR_*_LEVELS),
    # which a zone of the registry may override: the sparkline's threshold lines.
    standing: Thresholds = STANDING_DEFAULTS
    moving: Thresholds = MOVING_DEFAULTS

    def __post_init__(self) -> None:
        self.started_at = self.clock()
        for z in self.zones:
            self.level.setdefault(z.zone_id, "normal")
            self.density.setdefault(z.zone_id, deque(maxlen=SPARK_POINTS))
        self._zone_by_id = {z.zone_id: z for z in self.zones}
        self.heat = HeatMaps.of(self.zones)

    def thresholds(self, z: Zone) -> dict[str, float] | None:
        """The zone's level thresholds, p/m² (None if they do not rise: no lines drawn)."""
        try:
            t = resolve_thresholds(z.crowd, z.thresholds,
                                   self.standing if z.crowd == "standing" else self.moving)
        except ValueError:
            return None
        return {"elevated": t.elevated, "high": t.high, "critical": t.critical}

    # -- input ---------------------------------------------------------------------------
    def on_alert(self, alert: Mapping[str, Any]) -> None:
        zone, level = str(alert.get("zone_id")), str(alert.get("level"))
        if level not in LEVEL_NAMES or "alert_id" not in alert:
            log.warning("dashboard: ignoring a malformed alert %r", alert.get("alert_id"))
            return
        if alert.get("exercise") is not True:  # a drill never changes a real zone's level
            self.level[zone] = "normal" if alert.get("status") == "resolved" else level
            self.alert_of_zone[zone] = str(alert["alert_id"])
        self.alerts[str(alert["alert_id"])] = alert
        self._add("alert", orjson.dumps(alert))

    def on_ack(self, ack: Ack) -> None:
        self.acks.setdefault(ack.alert_id, ack)  # the first acknowledgement stands
        self._add("ack", encode_ack(ack))

    def on_density(self, d: Mapping[str, Any], ts_ms: int | None = None) -> None:
        self.saw_data(ts_ms)
        zone = str(d.get("zone_id"))
        if zone not in self.density:
            return
        point = (str(d.get("window_end")), d.get("density"))
        self.density[zone].append(point)
        conf = d.get("confidence")
        self.confidence[zone] = float(conf) if isinstance(conf, int | float) else None
        event: dict[str, Any] = {"zone_id": zone, "point": point,
                                 "confidence": self.confidence[zone]}
        if self.heat.has_grid(zone):  # its cells, or null: no heat map (none, or misfit)
            now = self.clock()
            at = now if ts_ms is None else min(ts_ms / 1000, now)
            cells = self.heat.on_record(zone, d, at)
            event["cells"] = None if cells is None else self.heat.fresh(zone, now, self.stale_s)
        self._publish(None, "density", orjson.dumps(event))

    def expire_cells(self) -> None:
        """Take away (and tell every page) each heat map older than the staleness limit: a
        zone whose grid went quiet shows no cells of minutes ago as if they were now."""
        for zone in self.heat.expire(self.clock(), self.stale_s):
            self._publish(None, "cells", orjson.dumps({"zone_id": zone, "cells": None}))

    def on_shelf(self, zone: str, shelf: Shelf | None) -> None:
        """A shelves record of ``zone``: a shelf (until its ``until``) or None (unshelved)."""
        self.shelves.put(zone, shelf)
        self._announce_shelf(zone)

    def shelf_of(self, zone: str) -> Shelf | None:
        """The shelf that holds on ``zone`` now, by the board's clock."""
        return self.shelves.active(zone, self.clock())

    def expire_shelves(self) -> None:
        """Announce (once) each shelf shown that has ended by itself at its ``until``."""
        for zone in list(self._shown_shelf):
            self._announce_shelf(zone)

    def _announce_shelf(self, zone: str) -> None:
        now = self.shelf_of(zone)
        if now == self._shown_shelf.get(zone):
            return
        if now is None:
            self._shown_shelf.pop(zone, None)
        else:
            self._shown_shelf[zone] = now
        self._publish(None, "shelf", orjson.dumps(
            {"zone_id": zone, "shelf": None if now is None else now.to_json()}))

    def on_heartbeat(self, hb: Mapping[str, Any], ts_ms: int | None = None) -> None:
        self.workers[str(hb["worker_id"])] = hb
        self.saw_data(ts_ms)

    # -- freshness -----------------------------------------------------------------------
    def saw_data(self, ts_ms: int | None = None) -> None:
        """Data from the pipeline, produced at ``ts_ms`` (its Kafka timestamp; now if
        unknown, never later than now): records replayed from before count as old."""
        now = self.clock()
        at = now if ts_ms is None else min(ts_ms / 1000, now)
        was_stale = self.is_stale()
        if self.last_data_at is None or at > self.last_data_at:
            self.last_data_at = at
        if was_stale and not self.is_stale():  # data is back: tell the pages at once
            self._publish(None, "health", self.health())

    def kafka_failed(self, error: str | None) -> None:
        """The follower cannot read Kafka (``error``), or can again (None)."""
        changed = (error is None) != (self.kafka_error is None)
        self.kafka_error = error
        if changed:
            self._publish(None, "health", self.health())

    def silent_s(self) -> float:
        """Seconds since the newest data (since the board started, if none yet)."""
        since = self.started_at if self.last_data_at is None else self.last_data_at
        return max(self.clock() - since, 0.0)

    def is_stale(self) -> bool:
        return self.kafka_error is not None or self.silent_s() > self.stale_s

    def health(self) -> bytes:
        last = self.last_data_at
        return orjson.dumps({
            "stale": self.is_stale(), "silent_s": round(self.silent_s()),
            "stale_after_s": self.stale_s, "kafka_ok": self.kafka_error is None,
            "last_data": None if last is None else format_ts(round(last * 1000)),
            "workers": sorted(self.workers)})

    # -- output --------------------------------------------------------------------------
    def state(self) -> bytes:
        return orjson.dumps({"boot": self.boot, "stale_after_s": self.stale_s, "zones": [{
            "zone_id": z.zone_id, "name": {"th": z.name_th, "en": z.name_en},
            "area_m2": z.area_m2, "crowd": z.crowd, "estimated": z.area_estimated,
            "polygon": z.polygon, "level": self.level[z.zone_id],
            "thresholds": self.thresholds(z), "density": list(self.density[z.zone_id]),
            "confidence": self.confidence.get(z.zone_id),
            "grid": self.heat.grids.get(z.zone_id),
            "cells": self.heat.fresh(z.zone_id, self.clock(), self.stale_s),
            "shelf": None if (sh := self.shelf_of(z.zone_id)) is None else sh.to_json(),
        } for z in self.zones]})

    def replay(self, last_event_id: str | None) -> list[FeedEvent]:
        """Feed events after ``last_event_id`` (``boot:seq``); all of them (the newest
        RECENT_ALERTS alerts, with every ack) if the id is from another run of the server,
        missing, or older than what is kept."""
        boot, _, seq = (last_event_id or "").partition(":")
        if boot == self.boot and seq.isdigit():
            after = int(seq)
            if not self._feed or self._feed[0].seq <= after + 1:
                return [e for e in self._feed if e.seq > after]
        alerts = [e for e in self._feed if e.kind == "alert"][-RECENT_ALERTS:]
        first = alerts[0].seq if alerts else 0
        return [e for e in self._feed if e.seq >= first or e.kind == "ack"]

    def event_id(self, e: FeedEvent) -> str:
        return f"{self.boot}:{e.seq}"

    @contextlib.contextmanager
    def subscribe(self) -> Any:
        q: asyncio.Queue[tuple[FeedEvent | None, str, bytes]] = asyncio.Queue(maxsize=10_000)
        self._subscribers.add(q)
        try:
            yield q
        finally:
            self._subscribers.discard(q)

    def end_streams(self) -> None:
        """Every open event stream ends (the server is stopping)."""
        self._publish(None, "end", b"")

    def _add(self, kind: str, data: bytes) -> None:
        self._seq += 1
        e = FeedEvent(self._seq, kind, data)
        self._feed.append(e)
        while len(self._feed) > self.feed_max:
            self._feed.popleft()
        self._publish(e, kind, data)

    def _publish(self, e: FeedEvent | None, kind: str, data: bytes) -> None:
        for q in list(self._subscribers):
            try:
                q.put_nowait((e, kind, data))
            except asyncio.QueueFull:  # a stuck page: it reconnects and replays
                self._subscribers.discard(q)

