"""The zone router: every sensor message and report re-keyed by zone, onto a partition of the
internal by-zone topic that safetour picks itself (the way Kafka Streams repartitions).

Why: integrators key by ``zone_id``, but clients hash keys differently (librdkafka: CRC32,
Java and aiokafka: murmur2), and a gateway batch may mix zones. Read straight from the input
topics, one zone's readings and reports would reach several partitions, hence several workers
and snapshots. After this router, a zone's every reading and report is on exactly one
partition of the by-zone topic: ``zone_partition(zone_id, n)``.

Rules (pure: no faust, no aiokafka; :class:`Router` turns one consumed message into the
records to write):

- ``zone_partition(zone_id, n) = zlib.crc32(zone_id as UTF-8) % n``: stable across versions,
  processes and platforms, and safetour's own (never the producer's partitioner). Changing
  ``n`` (the by-zone topic's partition count) remaps zones: it is fixed once created.
- A sensor message whose items all name one zone is forwarded with its value unchanged.
- A gateway batch that mixes zones is split into one sub-batch per zone (a JSON array of the
  original items, the shape the input contract accepts), in the order the zones first appear.
  Each sub-batch carries ``safetour-items`` (a JSON array: each item's index in the original
  message), so stage 2 reports a rejected item by its index in the ORIGINAL message. Items
  that name no zone (not an object, no ``zone_id`` string) form one more sub-batch on the
  fallback partition.
- A report goes to the partition of its zone: by ``zone_id`` (hashed, registry or not), or by
  lat/lon inside a zone polygon of the registry (``streams.alerts.report_zone``).
- Everything that cannot be routed (an undecodable sentinel, a tombstone, not JSON, too large,
  an empty or too long batch, no zone, a report off every polygon, a schema error of a report)
  is forwarded unchanged to the fallback partition, ``source partition % n``, where stage 2
  dead-letters it with today's reasons. So does a split whose sub-batch would exceed
  ``MAX_MESSAGE_BYTES`` once re-encoded (it would be rejected there for a size the sender did
  not send).
- Zone ids are hashed, not checked against the registry: a sensor reading for a zone the
  registry does not hold (yet) still lands where that zone will live, and stage 2 decides.
- The router never dead-letters, never raises on input, and never drops a message: every
  message gives at least one record.
- Every record carries ``safetour-origin`` (``streams.records.origin_header``: its kind,
  source topic, partition, offset, timestamp, key and headers), so stage 2's DLQ record names
  the message the integrator sent, and its record timestamp is the original arrival (the input
  topics' LogAppendTime), so time-based starts work on the by-zone topic too.

What stage 2 sees of a split batch: one message per zone, each dead-lettered on its own; a
batch with rejected items in k zones gives k DLQ records that name the same source offset,
each with the items of its zone (``value_b64``: that sub-batch, ``index``: original indices).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import orjson

from schemas import MAX_BATCH_EVENTS, MAX_MESSAGE_BYTES, Rejection, Zone, decode_report

from .alerts import report_zone
from .records import ITEMS_HEADER, Consumed, origin_header, undecodable

SENSOR = "sensor"
REPORT = "report"
MAX_ZONE_ID = 64  # sensor-event.v1.json: zone_id is 1..64 characters


def zone_partition(zone_id: str, partitions: int) -> int:
    """The by-zone partition of ``zone_id``: CRC-32 (zlib, IEEE) of its UTF-8 bytes, modulo
    the partition count. Safetour's own choice, independent of any producer's partitioner."""
    if partitions <= 0:
        raise ValueError(f"partitions must be > 0, got {partitions}")
    return zlib.crc32(zone_id.encode("utf-8", "surrogatepass")) % partitions


class RoutedRecord(NamedTuple):
    """One record to write to the by-zone topic."""

    partition: int
    key: bytes | None  # the zone id (unroutable input: its original key)
    value: bytes | None
    timestamp_ms: int | None  # the original arrival (None: the producer stamps it)
    headers: list[tuple[str, bytes]]


def _zone_of(item: Any) -> str | None:
    if not isinstance(item, dict):
        return None
    zid = item.get("zone_id")
    if isinstance(zid, str) and 1 <= len(zid) <= MAX_ZONE_ID:
        return zid
    return None


class Router:
    """Routes consumed messages of the sensor and reports topics to by-zone records.

    ``zones``: the registry (reports located by lat/lon); ``partitions``: of the by-zone
    topic; ``reports_topic``: messages of this topic are routed as reports, all others as
    sensor messages (or say which with :meth:`route_sensor` / :meth:`route_report`).
    """

    def __init__(self, zones: Iterable[Zone], partitions: int, *, reports_topic: str) -> None:
        if partitions <= 0:
            raise ValueError(f"partitions must be > 0, got {partitions}")
        self.partitions = partitions
        self.reports_topic = reports_topic
        self.set_zones(zones)

    def set_zones(self, zones: Iterable[Zone]) -> None:
        """A new registry (the live zones topic): reports by lat/lon follow it."""
        self._zones = {z.zone_id: z for z in zones}

    def partition_of(self, zone_id: str) -> int:
        return zone_partition(zone_id, self.partitions)

    def route(self, msg: Consumed) -> list[RoutedRecord]:
        """The records to write for ``msg`` (at least one)."""
        if msg.topic == self.reports_topic:
            return self.route_report(msg)
        return self.route_sensor(msg)

    def route_batch(self, messages: Sequence[Consumed]) -> list[RoutedRecord]:
        """:meth:`route` of each message, in order."""
        out: list[RoutedRecord] = []
        for m in messages:
            out.extend(self.route(m))
        return out

    # -- the two kinds ----------------------------------------------------------------------
    def route_sensor(self, msg: Consumed) -> list[RoutedRecord]:
        value = msg.value
        if value is None or undecodable(msg) is not None or len(value) > MAX_MESSAGE_BYTES:
            return [self._fallback(msg, SENSOR)]
        try:
            doc = orjson.loads(value)
        except orjson.JSONDecodeError:
            return [self._fallback(msg, SENSOR)]
        if isinstance(doc, dict):
            zid = _zone_of(doc)
            return [self._forward(msg, SENSOR, zid) if zid else self._fallback(msg, SENSOR)]
        if not isinstance(doc, list) or not 0 < len(doc) <= MAX_BATCH_EVENTS:
            return [self._fallback(msg, SENSOR)]
        groups: dict[str | None, list[int]] = {}
        for i, item in enumerate(doc):
            groups.setdefault(_zone_of(item), []).append(i)
        if len(groups) == 1:
            (zid,) = groups
            return [self._forward(msg, SENSOR, zid) if zid else self._fallback(msg, SENSOR)]
        return self._split(msg, doc, groups)

    def route_report(self, msg: Consumed) -> list[RoutedRecord]:
        if undecodable(msg) is not None:
            return [self._fallback(msg, REPORT)]
        rep = decode_report(msg.value)
        if isinstance(rep, Rejection):
            return [self._fallback(msg, REPORT)]
        zid = rep.zone_id if rep.zone_id is not None else report_zone(rep, self._zones)
        if zid is None:
            return [self._fallback(msg, REPORT)]
        return [self._forward(msg, REPORT, zid)]

    # -- records ----------------------------------------------------------------------------
    def _fallback_partition(self, msg: Consumed) -> int:
        return msg.partition % self.partitions

    @staticmethod
    def _timestamp(msg: Consumed) -> int | None:
        ts = msg.timestamp
        return ts if ts is not None and ts > 0 else None

    def _forward(self, msg: Consumed, kind: str, zone_id: str) -> RoutedRecord:
        return RoutedRecord(self.partition_of(zone_id), zone_id.encode("utf-8", "surrogatepass"),
                            msg.value, self._timestamp(msg), [origin_header(kind, msg)])

    def _fallback(self, msg: Consumed, kind: str) -> RoutedRecord:
        return RoutedRecord(self._fallback_partition(msg), msg.key, msg.value,
                            self._timestamp(msg), [origin_header(kind, msg)])

    def _split(
        self, msg: Consumed, doc: list[Any], groups: dict[str | None, list[int]]
    ) -> list[RoutedRecord]:
        origin = origin_header(SENSOR, msg)
        ts = self._timestamp(msg)
        out: list[RoutedRecord] = []
        for zid, idx in groups.items():
            try:
                value = orjson.dumps([doc[i] for i in idx])
            except (orjson.JSONEncodeError, TypeError):
                return [self._fallback(msg, SENSOR)]
            if len(value) > MAX_MESSAGE_BYTES:
                return [self._fallback(msg, SENSOR)]
            headers = [origin, (ITEMS_HEADER, orjson.dumps(idx))]
            if zid is None:
                out.append(RoutedRecord(self._fallback_partition(msg), msg.key, value, ts,
                                        headers))
            else:
                out.append(RoutedRecord(self.partition_of(zid),
                                        zid.encode("utf-8", "surrogatepass"), value, ts,
                                        headers))
        return out
