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

Partition counts bound parallelism: a consumer group uses at most one worker per partition.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError

from schemas import SafetourError

from .config import Topics

log = logging.getLogger(__name__)

DAY_MS = 24 * 3600 * 1000
TOPIC_ALREADY_EXISTS = 36
DLQ_MAX_MESSAGE_BYTES = 4 * 1024 * 1024


class TopicError(SafetourError, RuntimeError):
    """Topics could not be created or described."""


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)
    replication: int = 1


def topic_specs(topics: Topics, *, replication: int = 1) -> list[TopicSpec]:
    def spec(name: str, partitions: int, **config: str) -> TopicSpec:
        conf = {k.replace("_", "."): v for k, v in config.items()}
        return TopicSpec(name, partitions, conf, replication)

    return [
        # Input topics stamp each record with the broker's clock (LogAppendTime): its arrival,
        # the time no sender can fake, that readings and reports are judged by (README
        # "Input rules").
        spec(topics.sensor_events, 8, cleanup_policy="delete", retention_ms=str(7 * DAY_MS),
             message_timestamp_type="LogAppendTime"),
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
        # Snapshots are rewritten every few seconds: compact often so the topic stays small.
        spec(topics.state, 1, cleanup_policy="compact", retention_ms="-1",
             segment_ms=str(10 * 60 * 1000), min_cleanable_dirty_ratio="0.1"),
    ]


async def create_topics(
    bootstrap: str, specs: Sequence[TopicSpec], *, wait_s: float = 60.0
) -> dict[str, str]:
    """Create the topics that do not exist yet; return ``{name: "created" | "exists"}``.

    Retries while the broker is still starting, up to ``wait_s`` seconds.
    """
    deadline = time.monotonic() + wait_s
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
        try:
            await admin.start()
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
        except (KafkaConnectionError, KafkaError, OSError) as exc:
            if time.monotonic() > deadline:
                raise TopicError(f"cannot reach Kafka at {bootstrap}: {exc!r}") from exc
            log.info("broker not ready yet (%r); retrying", exc)
            await asyncio.sleep(0.5)
        finally:
            await admin.close()


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


async def wait_for_topics(bootstrap: str, names: Sequence[str], *, wait_s: float = 60.0) -> None:
    """Wait until ``names`` exist with leaders (the worker calls this before joining)."""
    deadline = time.monotonic() + wait_s
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            await admin.start()
            described = await admin.describe_topics(list(names))
            counts = {d["topic"]: len(d["partitions"]) for d in described
                      if d["error_code"] == 0 and d["partitions"]}
            if len(counts) == len(names):
                await wait_for_leaders(admin, counts, deadline)
                return
        except (KafkaConnectionError, KafkaError, OSError) as exc:
            log.info("waiting for Kafka at %s: %r", bootstrap, exc)
        finally:
            await admin.close()
        if time.monotonic() > deadline:
            missing = sorted(set(names))
            raise TopicError(f"topics {missing} do not exist at {bootstrap}; run "
                             "`safetour topics create`")
        await asyncio.sleep(0.5)


async def list_topics(bootstrap: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await admin.start()
        return sorted(await admin.list_topics())
    finally:
        await admin.close()


async def partitions_of(bootstrap: str, topic: str) -> list[int]:
    """Partition ids of ``topic``; raises :class:`TopicError` if it does not exist."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await admin.start()
        (desc,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
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
