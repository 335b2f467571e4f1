"""Per-partition snapshots in a compacted Kafka topic (``safetour.state.v1``).

A snapshot of sensor-topic partition ``p`` for consumer group ``g`` is written as chunks of at
most ``CHUNK_BYTES`` (keys ``g/p/<n>``) followed by a manifest (key ``g/p``) naming the
snapshot id, the number of chunks, their SHA-256 and the next offset to read. The manifest is
written last, so a reader never sees half a snapshot: it takes the newest manifest and the
chunks with the same snapshot id. Compaction keeps the newest record per key.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

log = logging.getLogger(__name__)

CHUNK_BYTES = 900_000  # under Kafka's default 1 MiB message limit, with room for headers

Send = Callable[[bytes, bytes], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Snapshot:
    partition: int
    offset: int  # the next sensor-topic offset after the snapshot
    blob: bytes


def _key(group: str, partition: int, chunk: int | None = None) -> bytes:
    base = f"{group}/{partition}"
    return (base if chunk is None else f"{base}/{chunk}").encode()


async def write_snapshot(send: Send, group: str, snap: Snapshot) -> None:
    sid = uuid.uuid4().hex
    chunks = [snap.blob[i:i + CHUNK_BYTES] for i in range(0, len(snap.blob), CHUNK_BYTES)]
    for n, chunk in enumerate(chunks or [b""]):
        await send(_key(group, snap.partition, n), sid.encode() + b"\n" + chunk)
    manifest = {"snapshot_id": sid, "offset": snap.offset, "chunks": max(len(chunks), 1),
                "sha256": hashlib.sha256(snap.blob).hexdigest(), "bytes": len(snap.blob)}
    await send(_key(group, snap.partition), orjson.dumps(manifest))


async def read_snapshots(
    bootstrap: str, topic: str, group: str, partitions: Iterable[int]
) -> dict[int, Snapshot]:
    """The newest complete snapshot of each of ``partitions`` (absent: none yet)."""
    wanted = set(partitions)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, max_partition_fetch_bytes=4 << 20)
    await consumer.start()
    latest: dict[bytes, bytes] = {}
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        prefix = f"{group}/".encode()
        while await consumer.position(tp) < end:
            batches = await consumer.getmany(tp, timeout_ms=1000)
            for rec in batches.get(tp, []):
                if rec.key is not None and rec.key.startswith(prefix):
                    if rec.value is None:
                        latest.pop(rec.key, None)
                    else:
                        latest[rec.key] = rec.value
    finally:
        await consumer.stop()
    out: dict[int, Snapshot] = {}
    for p in wanted:
        raw = latest.get(_key(group, p))
        if raw is None:
            continue
        m = orjson.loads(raw)
        parts: list[bytes] = []
        for n in range(m["chunks"]):
            chunk = latest.get(_key(group, p, n), b"")
            sid, _, body = chunk.partition(b"\n")
            if sid.decode() != m["snapshot_id"]:
                break
            parts.append(body)
        blob = b"".join(parts)
        if len(parts) != m["chunks"] or hashlib.sha256(blob).hexdigest() != m["sha256"]:
            log.warning("snapshot of partition %d is incomplete or corrupt; replaying the "
                        "partition from its start instead", p)
            continue
        out[p] = Snapshot(p, int(m["offset"]), blob)
    return out
