"""Per-partition snapshots in a compacted Kafka topic (``safetour.state.v1``).

Layout (``format`` 2). A snapshot of sensor-topic partition ``p`` for consumer group ``g`` has
its own id ``sid`` and is written as

1. chunks of at most ``CHUNK_BYTES`` under keys ``g/p/<sid>/<n>``, each acknowledged by the
   broker, then
2. a manifest under key ``g/p/<sid>`` (format, epoch, seq, offset, chunk count, SHA-256),
   acknowledged, then
3. tombstones for the chunks and manifests of snapshots older than the previous one (and of
   any half-written one found at restore), acknowledged.

No key of one snapshot is ever written by another, so a crash at any point leaves every
earlier complete snapshot intact: the reader takes the newest *complete* snapshot (manifest
present, every chunk present, hash equal) and falls back to the one before it.

Fencing: a new owner of a partition takes ``epoch = max epoch seen + 1`` when it restores, and
readers order snapshots by ``(epoch, seq)``. A worker that lost its partition (frozen,
partitioned away) and writes late keeps its old epoch, so readers never prefer its snapshot to
one of the new owner's.

The layout of format 1 (chunks ``g/p/<n>`` overwritten in place, manifest ``g/p``) is still
read, as epoch 0, so an upgrade resumes from the old snapshot; its keys are tombstoned after
the first new snapshot is acknowledged.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import orjson
from aiokafka import TopicPartition

from ..kafka import KafkaTarget, as_config

log = logging.getLogger(__name__)

CHUNK_BYTES = 900_000  # under Kafka's default 1 MiB message limit, with room for headers
FORMAT = 2
KEEP = 2  # complete snapshots kept per partition: the newest and the one before it

Send = Callable[[bytes, bytes | None], Awaitable[None]]
"""Write one record (``None``: a tombstone); returns once the broker acknowledged it."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    partition: int
    offset: int  # the next sensor-topic offset after the snapshot
    blob: bytes


@dataclass(frozen=True, slots=True)
class Ref:
    """A complete snapshot in the topic: what orders it and which keys it holds."""

    epoch: int
    seq: int
    sid: str
    keys: tuple[bytes, ...]  # chunks, then manifest


@dataclass(slots=True)
class Found:
    """What the topic holds for one partition."""

    partition: int
    candidates: list[tuple[Ref, Snapshot]] = field(default_factory=list)  # newest first
    max_epoch: int = -1  # highest epoch of any manifest seen (-1: none)
    garbage: list[bytes] = field(default_factory=list)  # keys of no complete snapshot

    @property
    def snapshot(self) -> Snapshot | None:
        return self.candidates[0][1] if self.candidates else None


@dataclass(slots=True)
class Lineage:
    """The writer's view of one partition it owns: its epoch, its last seq, the complete
    snapshots it knows of (oldest first) and the keys it still has to tombstone."""

    epoch: int
    seq: int = 0
    live: list[Ref] = field(default_factory=list)
    garbage: list[bytes] = field(default_factory=list)

    @classmethod
    def after(cls, found: Found | None, restored: Ref | None = None) -> Lineage:
        """The lineage of a new owner that found ``found`` and restored ``restored``: its
        epoch is above every epoch seen; every other snapshot is due for deletion once its
        own first snapshot is acknowledged."""
        if found is None:
            return cls(epoch=1)
        refs = sorted((r for r, _ in found.candidates), key=lambda r: (r.epoch, r.seq))
        return cls(epoch=max(found.max_epoch, 0) + 1, live=refs, garbage=list(found.garbage))


def _prefix(group: str, partition: int) -> str:
    return f"{group}/{partition}"


def _chunk_key(group: str, partition: int, sid: str, n: int) -> bytes:
    return f"{_prefix(group, partition)}/{sid}/{n}".encode()


def _manifest_key(group: str, partition: int, sid: str) -> bytes:
    return f"{_prefix(group, partition)}/{sid}".encode()


async def _all(sends: Iterable[Awaitable[None]]) -> None:
    """Await every send; the first failure is raised once all have settled."""
    results = await asyncio.gather(*sends, return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            raise r


async def write_snapshots(
    send: Send, group: str, snaps: Sequence[Snapshot], lineages: Mapping[int, Lineage]
) -> None:
    """Write ``snaps`` (one per partition, each partition's lineage in ``lineages``) in three
    acknowledged phases: chunks, manifests, then tombstones of what they replace. A failure
    raises: the snapshots written so far stay readable, the rest are as before."""
    plans: list[tuple[Snapshot, Lineage, Ref, bytes]] = []
    chunk_sends: list[Awaitable[None]] = []
    for snap in snaps:
        lin = lineages[snap.partition]
        seq = lin.seq + 1
        sid = f"s{lin.epoch}-{seq}-{uuid.uuid4().hex[:12]}"
        chunks = [snap.blob[i:i + CHUNK_BYTES]
                  for i in range(0, len(snap.blob), CHUNK_BYTES)] or [b""]
        keys = [_chunk_key(group, snap.partition, sid, n) for n in range(len(chunks))]
        chunk_sends += [send(k, c) for k, c in zip(keys, chunks, strict=True)]
        mkey = _manifest_key(group, snap.partition, sid)
        manifest = orjson.dumps({
            "format": FORMAT, "snapshot_id": sid, "partition": snap.partition,
            "epoch": lin.epoch, "seq": seq, "offset": snap.offset, "chunks": len(chunks),
            "sha256": hashlib.sha256(snap.blob).hexdigest(), "bytes": len(snap.blob),
        })
        plans.append((snap, lin, Ref(lin.epoch, seq, sid, (*keys, mkey)), manifest))
    await _all(chunk_sends)
    await _all(send(ref.keys[-1], manifest) for _, _, ref, manifest in plans)
    doomed: list[bytes] = []
    for _, lin, ref, _ in plans:
        lin.seq = ref.seq
        lin.live.append(ref)
        old, lin.live = lin.live[:-KEEP], lin.live[-KEEP:]
        # Manifests listed first; a manifest whose chunks went first is merely incomplete.
        doomed += [r.keys[-1] for r in old] + [k for r in old for k in r.keys[:-1]]
        doomed += lin.garbage
        lin.garbage = []
    await _all(send(k, None) for k in doomed)


async def write_snapshot(send: Send, group: str, snap: Snapshot, lineage: Lineage) -> None:
    await write_snapshots(send, group, [snap], {snap.partition: lineage})


def _parse_manifest(raw: bytes) -> dict[str, object] | None:
    try:
        m = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return m if isinstance(m, dict) else None


def choose_snapshots(
    records: Mapping[bytes, bytes], group: str, partitions: Iterable[int]
) -> dict[int, Found]:
    """From the live records of the state topic (key -> value, tombstones applied), what
    each of ``partitions`` has: its complete snapshots newest first by (epoch, seq), the
    highest epoch seen, and the keys of incomplete or superseded writes."""
    wanted = {p: Found(p) for p in partitions}
    manifests: dict[int, dict[str, tuple[bytes, dict[str, object]]]] = {}
    chunks: dict[int, dict[str, dict[int, bytes]]] = {}  # partition -> sid -> n -> key
    legacy_chunks: dict[int, dict[int, bytes]] = {}
    gp = f"{group}/".encode()
    for key in records:
        if not key.startswith(gp):
            continue
        parts = key[len(gp):].decode(errors="replace").split("/")
        if not parts[0].isdigit() or int(parts[0]) not in wanted:
            continue
        p = int(parts[0])
        if len(parts) == 1:  # format 1 manifest
            m = _parse_manifest(records[key])
            if m is not None:
                manifests.setdefault(p, {})[""] = (key, m)
        elif len(parts) == 2 and parts[1].isdigit():  # format 1 chunk
            legacy_chunks.setdefault(p, {})[int(parts[1])] = key
        elif len(parts) == 2:
            m = _parse_manifest(records[key])
            if m is not None:
                manifests.setdefault(p, {})[parts[1]] = (key, m)
            else:
                wanted[p].garbage.append(key)
        elif len(parts) == 3 and parts[2].isdigit():
            chunks.setdefault(p, {}).setdefault(parts[1], {})[int(parts[2])] = key
    for p, found in wanted.items():
        used: set[bytes] = set()
        refs: list[tuple[Ref, Snapshot]] = []
        for sid, (mkey, m) in manifests.get(p, {}).items():
            ref_snap = _assemble(records, p, sid, mkey, m, chunks.get(p, {}).get(sid, {}),
                                 legacy_chunks.get(p, {}))
            # Every manifest's epoch counts, complete or not: fencing must out-rank them all.
            epoch = 0 if sid == "" else m.get("epoch")
            if isinstance(epoch, int):
                found.max_epoch = max(found.max_epoch, epoch)
            if ref_snap is None:
                log.warning("partition %d: snapshot %s is incomplete or corrupt; skipped",
                            p, sid or "(format 1)")
                continue
            refs.append(ref_snap)
            used.update(ref_snap[0].keys)
        refs.sort(key=lambda rs: (rs[0].epoch, rs[0].seq), reverse=True)
        found.candidates = refs
        every = ([k for c in chunks.get(p, {}).values() for k in c.values()]
                 + list(legacy_chunks.get(p, {}).values())
                 + [k for k, _ in manifests.get(p, {}).values()])
        found.garbage += [k for k in every if k not in used]
    return wanted


def _assemble(
    records: Mapping[bytes, bytes], partition: int, sid: str, mkey: bytes,
    m: Mapping[str, object], chunks: Mapping[int, bytes], legacy: Mapping[int, bytes],
) -> tuple[Ref, Snapshot] | None:
    """The snapshot a manifest names, if every chunk is there and the hash matches."""
    n, offset, sha = m.get("chunks"), m.get("offset"), m.get("sha256")
    if not (isinstance(n, int) and n >= 1 and isinstance(offset, int) and offset >= 0
            and isinstance(sha, str)):
        return None
    parts: list[bytes] = []
    keys: list[bytes] = []
    if sid == "":  # format 1: chunks carry the snapshot id before a newline
        want = str(m.get("snapshot_id", "")).encode()
        for i in range(n):
            key = legacy.get(i)
            if key is None:
                return None
            got, _, body = records[key].partition(b"\n")
            if got != want:
                return None
            parts.append(body)
            keys.append(key)
        epoch, seq = 0, 0
    else:
        if m.get("format") != FORMAT:
            return None
        epoch_v, seq_v = m.get("epoch"), m.get("seq")
        if not (isinstance(epoch_v, int) and isinstance(seq_v, int)):
            return None
        epoch, seq = epoch_v, seq_v
        for i in range(n):
            key = chunks.get(i)
            if key is None:
                return None
            parts.append(records[key])
            keys.append(key)
    blob = b"".join(parts)
    if hashlib.sha256(blob).hexdigest() != sha:
        return None
    return Ref(epoch, seq, sid, (*keys, mkey)), Snapshot(partition, offset, blob)


async def read_snapshots(
    kafka: KafkaTarget, topic: str, group: str, partitions: Iterable[int]
) -> dict[int, Found]:
    """What the state topic holds for each of ``partitions`` (see :func:`choose_snapshots`)."""
    wanted = set(partitions)
    consumer = as_config(kafka).consumer(max_partition_fetch_bytes=4 << 20)
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
    return choose_snapshots(latest, group, wanted)


async def start_offsets(
    kafka: KafkaTarget, topic: str, partitions: Iterable[int], since_ms: int | None
) -> dict[int, int]:
    """Where to start each of ``partitions`` without a snapshot: the first offset whose
    timestamp (arrival, on the sensor topic) is at or after ``since_ms`` (the end if none
    is), or the log start for ``since_ms=None``."""
    tps = [TopicPartition(topic, p) for p in sorted(set(partitions))]
    if not tps:
        return {}
    consumer = as_config(kafka).consumer()
    await consumer.start()
    try:
        begin = await consumer.beginning_offsets(tps)
        if since_ms is None:
            return {tp.partition: begin[tp] for tp in tps}
        end = await consumer.end_offsets(tps)
        found = await consumer.offsets_for_times({tp: max(since_ms, 0) for tp in tps})
    finally:
        await consumer.stop()
    out = {}
    for tp in tps:
        hit = found.get(tp)
        out[tp.partition] = max(hit.offset if hit is not None else end[tp], begin[tp])
    return out
