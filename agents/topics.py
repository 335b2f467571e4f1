"""Topic definitions and idempotent creation.

| topic                     | parts | cleanup | retention | why                                 |
|---------------------------|------:|---------|-----------|-------------------------------------|
| safetour.sensor-events.v1 | 8     | delete  | 7 days    | parallelism: up to 8 workers        |
| safetour.reports.v1       | 4     | delete  | 30 days   | human reports are evidence          |
| safetour.zones.v1         | 1     | compact | forever   | registry: latest record per zone_id |
| safetour.density.v1       | 8     | delete  | 1 day     | dashboards; keyed by zone_id        |
| safetour.alerts.v1        | 4     | delete  | 90 days   | audit trail of every alert          |
| safetour.alerts-cap.v1    | 4     | delete  | 90 days   | the same alerts as CAP 1.2 XML      |
| safetour.dlq.v1           | 4     | delete  | 14 days   | rejected input with reasons         |
| safetour.state.v1         | 1     | compact | forever   | worker snapshots for recovery       |
| safetour.notify-dlq.v1    | 1     | delete  | 30 days   | alerts a channel could not deliver  |
| safetour.acks.v1          | 1     | delete  | 90 days   | operators' acknowledgements (audit) |
| safetour.escalations.v1   | 1     | delete  | 30 days   | escalations sent (never repeated)    |
| safetour.health.v1        | 1     | delete  | 1 day     | worker heartbeats (dashboard banner) |
| safetour.shelves.v1       | 1     | delete  | 90 days   | zones shelved by operators (audit)  |
| safetour.by-zone.v1       | 8     | delete  | 7 days    | internal: input re-keyed by zone     |

Partition counts bound parallelism: a consumer group uses at most one worker per partition.

``by-zone`` is internal (agents/worker/router.py): every sensor message and report, re-keyed by zone
onto the partition ``streams.route.zone_partition`` picks, stamped (CreateTime) with its
original arrival. It has as many partitions as the sensor topic by default. Its partition
count is fixed once created: changing it remaps zones to other partitions (their state and
snapshots no longer match), so grow it only with a fresh state topic.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError

from schemas import SafetourError

from .config import Topics
from .kafka import KafkaConfig, KafkaTarget, KafkaUnreachable, as_config

log = logging.getLogger(__name__)

DAY_MS = 24 * 3600 * 1000
TOPIC_ALREADY_EXISTS = 36
TOPIC_AUTHORIZATION_FAILED = 29
DLQ_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
SENSOR_PARTITIONS = 8


class TopicError(SafetourError, RuntimeError):
    """Topics could not be created or described."""


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)
    replication: int = 1


def topic_specs(
    topics: Topics, *, replication: int = 1, by_zone_partitions: int | None = None
) -> list[TopicSpec]:
    """The topics of safetour; ``by_zone_partitions``: partitions of the internal by-zone
    topic (default: as many as the sensor topic)."""
    def spec(name: str, partitions: int, **config: str) -> TopicSpec:
        conf = {k.replace("_", "."): v for k, v in config.items()}
        return TopicSpec(name, partitions, conf, replication)

    return [
        # Input topics stamp each record with the broker's clock (LogAppendTime): its arrival,
        # the time no sender can fake, that readings and reports are judged by (README
        # "Input rules").
        spec(topics.sensor_events, SENSOR_PARTITIONS, cleanup_policy="delete",
             retention_ms=str(7 * DAY_MS), message_timestamp_type="LogAppendTime"),
        spec(topics.reports, 4, cleanup_policy="delete", retention_ms=str(30 * DAY_MS),
             message_timestamp_type="LogAppendTime"),
        spec(topics.zones, 1, cleanup_policy="compact", retention_ms="-1"),
        spec(topics.density, 8, cleanup_policy="delete", retention_ms=str(DAY_MS)),
        spec(topics.alerts, 4, cleanup_policy="delete", retention_ms=str(90 * DAY_MS)),
        spec(topics.alerts_cap, 4, cleanup_policy="delete", retention_ms=str(90 * DAY_MS)),
        spec(topics.dlq, 4, cleanup_policy="delete", retention_ms=str(14 * DAY_MS),
             max_message_bytes=str(DLQ_MAX_MESSAGE_BYTES)),
        spec(topics.notify_dlq, 1, cleanup_policy="delete", retention_ms=str(30 * DAY_MS)),
        spec(topics.acks, 1, cleanup_policy="delete", retention_ms=str(90 * DAY_MS)),
        spec(topics.escalations, 1, cleanup_policy="delete", retention_ms=str(30 * DAY_MS)),
        spec(topics.health, 1, cleanup_policy="delete", retention_ms=str(DAY_MS)),
        spec(topics.shelves, 1, cleanup_policy="delete", retention_ms=str(90 * DAY_MS)),
        # Snapshots are rewritten every few seconds: compact often so the topic stays small.
        spec(topics.state, 1, cleanup_policy="compact", retention_ms="-1",
             segment_ms=str(10 * 60 * 1000), min_cleanable_dirty_ratio="0.1"),
        # Internal: input re-keyed by zone. The router stamps each record with its original
        # arrival (CreateTime), so "recent" starts find it by time like the input topics.
        # Records carry their origin in headers: room above the input's 1 MiB.
        spec(topics.by_zone, by_zone_partitions or SENSOR_PARTITIONS, cleanup_policy="delete",
             retention_ms=str(7 * DAY_MS), message_timestamp_type="CreateTime",
             max_message_bytes=str(DLQ_MAX_MESSAGE_BYTES)),
    ]


async def create_topics(
    kafka: KafkaTarget, specs: Sequence[TopicSpec], *, wait_s: float | None = None
) -> dict[str, str]:
    """Create the topics that do not exist yet; return ``{name: "created" | "exists"}``.

    With ``wait_s``, retries while the broker is still starting, up to ``wait_s`` seconds;
    without, one attempt bounded by the connect timeout. Then
    :class:`~agents.kafka.KafkaUnreachable`.
    """
    cfg = as_config(kafka)
    retry = wait_s is not None
    deadline = time.monotonic() + (wait_s if wait_s is not None else cfg.connect_timeout_s)
    while True:
        admin = cfg.admin()
        try:
            await _start(cfg, admin, deadline)
            resp = await admin.create_topics(
                [NewTopic(s.name, s.partitions, s.replication, topic_configs=s.config)
                 for s in specs],
                timeout_ms=30000,
            )
            result: dict[str, str] = {}
            for name, code, *rest in resp.topic_errors:
                if code == 0:
                    result[name] = "created"
                elif code == TOPIC_ALREADY_EXISTS:
                    result[name] = "exists"
                else:
                    msg = rest[0] if rest else ""
                    raise TopicError(f"creating {name} failed: error {code} {msg}")
            await wait_for_leaders(admin, {s.name: s.partitions for s in specs}, deadline)
            return result
        except (KafkaUnreachable, KafkaConnectionError, KafkaError, OSError) as exc:
            if not retry or time.monotonic() > deadline:
                raise exc if isinstance(exc, KafkaUnreachable) else cfg.unreachable(exc) \
                    from None
            log.debug("broker not ready yet (%s); retrying", exc)
            await asyncio.sleep(0.5)
        finally:
            await admin.close()


async def _start(cfg: KafkaConfig, client: Any, deadline: float) -> None:
    """Start ``client`` within what is left until ``deadline``, at least one second, at
    most the connect timeout."""
    left = max(deadline - time.monotonic(), 1.0)
    if left >= cfg.connect_timeout_s:
        await cfg.start(client)
    else:
        await replace(cfg, connect_timeout_s=left).start(client)


async def wait_for_leaders(
    admin: AIOKafkaAdminClient, expected: dict[str, int], deadline: float
) -> None:
    """Until every partition of ``expected`` has a leader in the cluster metadata. A
    consumer that joins its group before that is assigned nothing, and would stay idle until
    its next metadata refresh (five minutes by default)."""
    while True:
        described = await admin.describe_topics(list(expected))
        ready = all(
            d["error_code"] == 0
            and len([p for p in d["partitions"] if p["leader"] >= 0]) == expected[d["topic"]]
            for d in described
        )
        if ready:
            return
        if time.monotonic() > deadline:
            raise TopicError(f"topics have no leaders yet: {sorted(expected)}")
        await asyncio.sleep(0.2)


async def wait_for_topics(
    kafka: KafkaTarget, names: Sequence[str], *, wait_s: float = 60.0
) -> None:
    """Wait until ``names`` exist with leaders (the worker calls this before joining)."""
    cfg = as_config(kafka)
    deadline = time.monotonic() + wait_s
    failure: BaseException | None = None
    next_log = 0.0  # the wait is logged once every 10 s, not at every retry
    while True:
        admin = cfg.admin()
        try:
            await _start(cfg, admin, deadline)
            described = await admin.describe_topics(list(names))
            counts = {d["topic"]: len(d["partitions"]) for d in described
                      if d["error_code"] == 0 and d["partitions"]}
            failure = None
            if len(counts) == len(names):
                await wait_for_leaders(admin, counts, deadline)
                return
        except (KafkaUnreachable, KafkaConnectionError, KafkaError, OSError) as exc:
            failure = exc
            if time.monotonic() >= next_log:
                log.info("waiting for Kafka at %s: %s", cfg.bootstrap, exc)
                next_log = time.monotonic() + 10.0
        finally:
            await admin.close()
        if time.monotonic() > deadline:
            if failure is not None:
                raise failure if isinstance(failure, KafkaUnreachable) else \
                    cfg.unreachable(failure)
            missing = sorted(set(names))
            raise TopicError(f"topics {missing} do not exist at {cfg.bootstrap}; run "
                             "`safetour topics create`")
        await asyncio.sleep(0.5)


async def list_topics(kafka: KafkaTarget) -> list[str]:
    cfg = as_config(kafka)
    async with cfg.running(cfg.admin()) as admin:
        try:
            return sorted(await admin.list_topics())
        except (KafkaError, OSError) as exc:
            raise cfg.unreachable(exc) from None


async def partitions_of(kafka: KafkaTarget, topic: str) -> list[int]:
    """Partition ids of ``topic``; raises :class:`TopicError` if it does not exist, and
    :class:`~agents.kafka.KafkaUnreachable` if the cluster cannot be reached."""
    cfg = as_config(kafka)
    async with cfg.running(cfg.admin()) as admin:
        try:
            (desc,) = await admin.describe_topics([topic])
        except (KafkaError, OSError) as exc:
            raise cfg.unreachable(exc) from None
    if desc["error_code"] == TOPIC_AUTHORIZATION_FAILED:
        raise TopicError(f"not authorized to read topic {topic} as {cfg.user or 'this client'}"
                         " (its ACLs: deploy/kafka/acls.json)")
    if desc["error_code"] != 0 or not desc["partitions"]:
        raise TopicError(f"topic {topic} does not exist; run `safetour topics create`")
    return sorted(p["partition"] for p in desc["partitions"])


async def seek_since(consumer: Any, tps: Sequence[Any], since_ms: int) -> None:
    """Position an assigned consumer at the first record at or after ``since_ms`` on each
    partition (the end where there is none): reading "the last N hours" of a topic."""
    starts = await consumer.offsets_for_times(dict.fromkeys(tps, since_ms))
    for tp in tps:
        found = starts.get(tp)
        if found is None:
            await consumer.seek_to_end(tp)
        else:
            consumer.seek(tp, found.offset)
