"""Prometheus metrics of a safetour worker, defined in one place.

Every metric lives on the :class:`Metrics` object built for one registry (tests pass their
own; the worker uses a fresh :class:`prometheus_client.CollectorRegistry`, never the global
one). Names follow Prometheus conventions: base units, ``_total`` for counters.

| metric                                   | type      | labels            |
|------------------------------------------|-----------|-------------------|
| safetour_events_in_total                 | counter   | topic, kind       |
| safetour_dead_letters_total              | counter   | topic, reason     |
| safetour_late_events_total               | counter   |                   |
| safetour_duplicates_total                | counter   |                   |
| safetour_clamped_events_total            | counter   |                   |
| safetour_skewed_sensors                  | gauge     |                   |
| safetour_sensor_clock_skew_max_seconds   | gauge     |                   |
| safetour_batch_messages                  | histogram |                   |
| safetour_batch_processing_seconds        | histogram |                   |
| safetour_end_to_end_latency_seconds      | histogram | clock (event, append) |
| safetour_alerts_total                    | counter   | level, status, reason |
| safetour_zones_tracked                   | gauge     |                   |
| safetour_stale_sensors                   | gauge     |                   |
| safetour_watermark_lag_seconds           | gauge     | partition         |
| safetour_consumer_lag_messages           | gauge     | topic, partition  |
| safetour_snapshots_total                 | counter   |                   |
| safetour_snapshot_bytes                  | gauge     | partition         |
| safetour_ready                           | gauge     |                   |
| safetour_zone_density_persons_per_square_meter | gauge | zone (see below)  |
| safetour_zone_hot_cell_density_persons_per_square_meter | gauge | zone (grid zones) |
| safetour_zone_outflow_per_m_s            | gauge     | zone (see below)  |
| safetour_indicator_alerts_total          | counter   | reason            |
| safetour_zone_inflow_from_neighbour_per_min | gauge | zone, neighbour (see below) |
| safetour_neighbour_records_total         | counter   | outcome (kept, ignored, bad) |
| safetour_stale_neighbours                | gauge     |                   |
| safetour_notifier_deliveries_total       | counter   | channel           |
| safetour_notifier_retries_total          | counter   | channel           |
| safetour_notifier_failures_total         | counter   | channel           |
| safetour_internal_rejects_total          | counter   | topic, consumer   |
| safetour_last_output_timestamp_seconds   | gauge     |                   |
| safetour_notify_queue_length             | gauge     | channel           |
| safetour_notifier_duplicates_total       | counter   | channel           |
| safetour_notify_shelved_total            | counter   | channel           |

Per-zone series only while the registry is small: zone counts reach 100,000 and each would be
a series. ``SAFETOUR_ZONE_METRICS_MAX`` (default 500) is the switch: with more zones than that
the per-zone gauges are not exported, and zone densities are read from ``safetour.density.v1``.
``safetour_zone_outflow_per_m_s``: the newest window's exits per metre of counted width per
second (zones with a line counter that has a ``width_m``; no series while the newest record
says null: the counter stopped); ``safetour_zone_inflow_from_neighbour_per_min``: the newest
window's entries over the boundary counters into the zone, counters the neighbour owns read
from the neighbour's density record; ``safetour_indicator_alerts_total``:
episodes raised or escalated by an indicator beyond density (reason ``rate_of_rise``,
``flow_breakdown``, ``counter_flow``, ``hotspot``, ``spillover``:
``streams.BEYOND_DENSITY_REASONS``; statuses :data:`INDICATOR_STATUSES`): a hot spot that
escalates an episode open on density counts.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120)
BATCH_BUCKETS = (1, 10, 50, 100, 500, 1000, 2000, 5000)
INDICATOR_STATUSES = frozenset({"raised", "escalated"})
"""Statuses of the alerts counted in ``safetour_indicator_alerts_total``."""
SECONDS_BUCKETS = (0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events_in = Counter("safetour_events_in", "Readings and reports decoded",
                                 ["topic", "kind"], registry=r)
        self.dead_letters = Counter("safetour_dead_letters", "Inputs sent to the DLQ",
                                    ["topic", "reason"], registry=r)
        self.late = Counter("safetour_late_events", "Readings later than the grace",
                            registry=r)
        self.duplicates = Counter("safetour_duplicates", "Duplicate readings dropped",
                                  registry=r)
        self.clamped = Counter("safetour_clamped_events",
                               "Readings stamped more than the lead ahead of their arrival, "
                               "counted at arrival + lead", registry=r)
        self.skewed_sensors = Gauge("safetour_skewed_sensors",
                                    "Sensors whose clock is off their zone's median by more "
                                    "than 3 s", registry=r)
        self.max_clock_skew = Gauge("safetour_sensor_clock_skew_max_seconds",
                                    "Largest clock offset of a skewed sensor from its zone's "
                                    "median", registry=r)
        self.batch_messages = Histogram("safetour_batch_messages", "Messages per batch",
                                        buckets=BATCH_BUCKETS, registry=r)
        self.batch_seconds = Histogram("safetour_batch_processing_seconds",
                                       "Time to process one batch (decode to outputs)",
                                       buckets=SECONDS_BUCKETS, registry=r)
        self.latency = Histogram(
            "safetour_end_to_end_latency_seconds",
            "From event time (clock=event) or broker append time (clock=append) of the "
            "newest input to the alert being published", ["clock"],
            buckets=LATENCY_BUCKETS, registry=r)
        self.alerts = Counter("safetour_alerts", "Alerts published",
                              ["level", "status", "reason"], registry=r)
        self.zones = Gauge("safetour_zones_tracked", "Zones in the registry", registry=r)
        self.stale_sensors = Gauge("safetour_stale_sensors",
                                   "Registered sensors with no reading in their window",
                                   registry=r)
        self.watermark_lag = Gauge("safetour_watermark_lag_seconds",
                                   "Wall clock minus the partition's watermark",
                                   ["partition"], registry=r)
        self.consumer_lag = Gauge("safetour_consumer_lag_messages",
                                  "Messages between the log end and what was processed",
                                  ["topic", "partition"], registry=r)
        self.snapshots = Counter("safetour_snapshots", "Recovery snapshots written",
                                 registry=r)
        self.snapshot_bytes = Gauge("safetour_snapshot_bytes",
                                    "Size of the newest snapshot", ["partition"], registry=r)
        self.ready = Gauge("safetour_ready", "1 when the worker is ready (see /readyz)",
                           registry=r)
        self.notifier_deliveries = Counter("safetour_notifier_deliveries",
                                           "Alerts delivered", ["channel"], registry=r)
        self.notifier_retries = Counter("safetour_notifier_retries", "Delivery retries",
                                        ["channel"], registry=r)
        self.notifier_failures = Counter("safetour_notifier_failures",
                                         "Alerts dead-lettered after their last retry",
                                         ["channel"], registry=r)
        self.internal_rejects = Counter(
            "safetour_internal_rejects",
            "Malformed records on safetour's own topics (alerts, acks, health) that a "
            "notifier, the escalator or the dashboard skipped", ["topic", "consumer"],
            registry=r)
        self.last_output = Gauge(
            "safetour_last_output_timestamp_seconds",
            "Wall-clock time (epoch seconds) the worker last published a density or alert "
            "record", registry=r)
        self.zone_density = Gauge("safetour_zone_density_persons_per_square_meter",
                                  "Newest window density per zone (small registries only)",
                                  ["zone"], registry=r)
        self.zone_hot_cell_density = Gauge(
            "safetour_zone_hot_cell_density_persons_per_square_meter",
            "Newest window density of the densest grid cell per zone with a grid (small "
            "registries only); hot-spot episodes are "
            "safetour_indicator_alerts_total{reason=\"hotspot\"}",
            ["zone"], registry=r)
        self.zone_outflow = Gauge("safetour_zone_outflow_per_m_s",
                                  "Newest window's exits per metre of counted width per second "
                                  "(small registries only)", ["zone"], registry=r)
        self.indicator_alerts = Counter("safetour_indicator_alerts",
                                        "Alerts raised or escalated by an "
                                        "indicator beyond density (reminders excluded)",
                                        ["reason"], registry=r)
        self.zone_inflow = Gauge(
            "safetour_zone_inflow_from_neighbour_per_min",
            "Persons per minute into a zone over its boundary counters with a neighbour, "
            "newest window (zone graph; small registries only)", ["zone", "neighbour"],
            registry=r)
        self.neighbour_records = Counter(
            "safetour_neighbour_records", "Density records of other workers' zones read for "
            "spill-over: kept (a neighbour's, newer), ignored, bad", ["outcome"], registry=r)
        self.stale_neighbours = Gauge(
            "safetour_stale_neighbours", "(zone, neighbour) pairs whose spill-over is paused: "
            "the neighbour's newest density record is missing or more than stale_s (event "
            "time) behind the zone's window (its worker stopped, or the follower lags)",
            registry=r)
        self.notify_queue_length = Gauge(
            "safetour_notify_queue_length",
            "Alerts a notify channel holds: queued, waiting for a retry, or in flight",
            ["channel"], registry=r)
        self.notifier_duplicates = Counter(
            "safetour_notifier_duplicates",
            "Alerts skipped as repeats of an (alert_id, seq) already taken", ["channel"],
            registry=r)
        self.notify_shelved = Counter(
            "safetour_notify_shelved",
            "Alerts a notify channel held back because their zone was shelved (below "
            "critical; agents/delivery/shelving.py)", ["channel"], registry=r)

    def count_rejections(self, topic: str, reasons: Iterable[tuple[str, int]]) -> None:
        for reason, n in reasons:
            self.dead_letters.labels(topic, reason).inc(n)
            if reason == "late":
                self.late.inc(n)
