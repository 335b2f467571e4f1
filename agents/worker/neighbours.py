"""Neighbours driven by other workers: follow the density topic for the spill-over.

Zones are keyed to partitions by zone id, so one worker may drive a zone A but not its
neighbour B (the registry's ``neighbours``). A's spill-over (``streams/spillover.py``) needs
B's newest density record (its density, trend and the line flows of B's boundary counters).
Every worker therefore reads every partition of ``safetour.density.v1`` without a consumer
group, from its end (only what is new matters), and hands each record of a zone that
neighbours one of the registry's to its alert tracker (:meth:`AlertTracker.neighbour_record`).
Event time is aligned there: a neighbour record further than ``stale_s`` (30 s) from A's
window is ignored, so a follower that lags, or a neighbour whose worker died, gives no
spill-over rather than a wrong one. A record that is not a density record is counted and
skipped: the follower never stops on one. A neighbour whose records have stopped is said,
not silent: :class:`StaleNeighbours` (the worker's gauges pass) logs it and counts it in
``safetour_stale_neighbours``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from streams.alerts import AlertTracker
from streams.spillover import density_from_record

from ..config import Settings
from ..kafka import follow_topic
from ..metrics import Metrics

log = logging.getLogger(__name__)


def apply_density_records(records: Sequence[Any], tracker: AlertTracker,
                          metrics: Metrics | None = None, *,
                          driven_here: Callable[[str], bool] | None = None) -> dict[str, int]:
    """Hand a fetch of density records to ``tracker``; counts by outcome (kept: a
    neighbour's and newer than the one held; ignored; bad: not a density record).

    A record is judged by its key (the zone id the worker keyed it by) before its value is
    parsed: a zone that neighbours none of the registry's, or one this worker drives itself
    (``driven_here``: its own copy reached the tracker first), is ignored unread. Most of a
    one-worker deployment's density topic is its own output, and parsing it cost about 5% of
    the worker's time. A record without a key is parsed and judged by its zone_id."""
    counts = {"kept": 0, "ignored": 0, "bad": 0}
    follows = tracker.follows
    for rec in records:
        key = rec.key
        if key is not None:
            zone_id = key.decode("utf-8", "replace")
            if not follows(zone_id) or (driven_here is not None and driven_here(zone_id)):
                counts["ignored"] += 1
                continue
        try:
            doc = orjson.loads(rec.value) if rec.value is not None else None
        except orjson.JSONDecodeError:
            doc = None
        u = density_from_record(doc) if isinstance(doc, dict) else None
        if u is None:
            counts["bad"] += 1
        elif tracker.neighbour_record(u):
            counts["kept"] += 1
        else:
            counts["ignored"] += 1
    if metrics is not None:
        for outcome, n in counts.items():
            if n:
                metrics.neighbour_records.labels(outcome).inc(n)
    if counts["bad"]:
        log.warning("density topic: %d records that are not density records skipped",
                    counts["bad"])
    return counts


@dataclass(slots=True)
class StaleNeighbours:
    """Says when a neighbour's density records stop (its worker died, this follower lags):
    ``safetour_stale_neighbours`` counts the (zone, neighbour) pairs whose spill-over is
    paused (:meth:`AlertTracker.stale_neighbours`), and a warning names the neighbours that
    went stale, once, and an info line those that are back."""

    pairs: set[tuple[str, str]] = field(default_factory=set)

    def update(self, tracker: AlertTracker, metrics: Metrics) -> None:
        now = set(tracker.stale_neighbours())
        metrics.stale_neighbours.set(len(now))
        gone, back = now - self.pairs, self.pairs - now
        if gone:
            log.warning("spill-over paused: no density record of neighbour(s) %s within "
                        "%.0f s of the zones next to them (%d zone pairs; a neighbour's "
                        "worker stopped, or this follower lags)", _names(gone),
                        tracker.spill_config.stale_s, len(now))
        if back:
            log.info("spill-over resumed: density records of neighbour(s) %s are fresh "
                     "again", _names(back))
        self.pairs = now


def _names(pairs: set[tuple[str, str]], most: int = 5) -> str:
    zones = sorted({n for _, n in pairs})
    more = f" and {len(zones) - most} more" if len(zones) > most else ""
    return ", ".join(zones[:most]) + more


async def follow_neighbours(settings: Settings, tracker: AlertTracker,
                            metrics: Metrics | None = None,
                            started: asyncio.Event | None = None, *,
                            driven_here: Callable[[str], bool] | None = None) -> None:
    """Follow the density topic from its end for ever (``started`` is set once the
    consumer is positioned; ``driven_here``: see :func:`apply_density_records`)."""

    async def apply(records: Sequence[Any]) -> None:
        apply_density_records(records, tracker, metrics, driven_here=driven_here)

    await follow_topic(settings.kafka, settings.topics.density, apply, from_start=False,
                       started=started)
