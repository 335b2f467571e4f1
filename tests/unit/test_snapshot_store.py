"""Snapshots survive a crash at any point of their write (agents/worker/state.py).

The state topic is modelled as what compaction keeps of it: a dict of key -> value, with a
send that can be made to fail after k acknowledged sends (the worker dies there)."""

from __future__ import annotations

import asyncio
import copy
import hashlib

import orjson
import pytest

from agents.worker import state
from agents.worker.state import Lineage, Snapshot, choose_snapshots, write_snapshot

GROUP = "g"


class Crash(Exception):
    pass


class CompactedTopic:
    def __init__(self) -> None:
        self.records: dict[bytes, bytes] = {}
        self.sent = 0
        self.fail_after: int | None = None

    async def send(self, key: bytes, value: bytes | None) -> None:
        if self.fail_after is not None and self.sent >= self.fail_after:
            raise Crash(f"killed after {self.sent} sends")
        self.sent += 1
        if value is None:
            self.records.pop(key, None)
        else:
            self.records[key] = value


def snap(n: int, partition: int = 0) -> Snapshot:
    blob = hashlib.sha256(str(n).encode()).digest() + bytes([n]) * 50  # 82 bytes: 4 chunks
    return Snapshot(partition, 1000 * n, blob)


def read(topic: CompactedTopic, partition: int = 0) -> Snapshot | None:
    return choose_snapshots(topic.records, GROUP, [partition])[partition].snapshot


def write(topic: CompactedTopic, s: Snapshot, lineage: Lineage) -> None:
    asyncio.run(write_snapshot(topic.send, GROUP, s, lineage))


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state, "CHUNK_BYTES", 25)


def test_a_crash_at_every_point_of_a_write_leaves_the_new_or_the_previous_snapshot() -> None:
    topic = CompactedTopic()
    lineage = Lineage.after(None)
    for n in (1, 2, 3):  # history, so the write also has older snapshots to tombstone
        write(topic, snap(n), lineage)
    assert read(topic) == snap(3)
    probe = copy.deepcopy(topic)
    write(probe, snap(4), copy.deepcopy(lineage))
    sends = probe.sent - topic.sent
    assert sends == 4 + 1 + 5  # four chunks, the manifest, the tombstones of snapshot 2
    for k in range(sends + 1):
        t, lin = copy.deepcopy(topic), copy.deepcopy(lineage)
        t.fail_after = t.sent + k
        if k < sends:
            with pytest.raises(Crash):
                write(t, snap(4), lin)
        else:
            write(t, snap(4), lin)
        got = read(t)
        assert got in (snap(3), snap(4)), f"crash after {k} sends: {got}"
        if k >= 5:  # the manifest was acknowledged: the new snapshot is the one
            assert got == snap(4)
        # The restarted worker resumes, writes on, and no key of a torn write stays behind.
        t.fail_after = None
        found = choose_snapshots(t.records, GROUP, [0])[0]
        assert found.snapshot is not None
        new = Lineage.after(found)
        assert new.epoch == 2
        for n in (5, 6):
            write(t, snap(n), new)
        assert read(t) == snap(6)
        assert len(t.records) == 2 * 5  # two complete snapshots of 4 chunks and a manifest


def legacy_write(topic: CompactedTopic, s: Snapshot, sid: str) -> None:
    """The format 1 layout: chunks ``g/p/<n>`` overwritten in place, manifest ``g/p``."""
    async def go() -> None:
        chunks = [s.blob[i:i + 25] for i in range(0, len(s.blob), 25)]
        for n, c in enumerate(chunks):
            await topic.send(f"{GROUP}/{s.partition}/{n}".encode(), sid.encode() + b"\n" + c)
        manifest = {"snapshot_id": sid, "offset": s.offset, "chunks": len(chunks),
                    "sha256": hashlib.sha256(s.blob).hexdigest(), "bytes": len(s.blob)}
        await topic.send(f"{GROUP}/{s.partition}".encode(), orjson.dumps(manifest))

    asyncio.run(go())


def test_the_old_layout_loses_its_only_snapshot_to_a_crash() -> None:
    """Why the layout changed: overwriting chunks in place, a crash after one send leaves
    no readable snapshot, and the worker replayed the partition from offset 0."""
    topic = CompactedTopic()
    legacy_write(topic, snap(1), "a")
    assert read(topic) == snap(1)  # format 1 is still read (an upgrade resumes from it)
    topic.fail_after = topic.sent + 1
    with pytest.raises(Crash):
        legacy_write(topic, snap(2), "b")
    assert read(topic) is None


def test_an_upgrade_resumes_from_a_format_1_snapshot_and_then_removes_it() -> None:
    topic = CompactedTopic()
    legacy_write(topic, snap(1), "a")
    found = choose_snapshots(topic.records, GROUP, [0])[0]
    assert found.snapshot == snap(1)
    assert found.candidates[0][0].epoch == 0
    lineage = Lineage.after(found)
    assert lineage.epoch == 1
    write(topic, snap(2), lineage)
    assert read(topic) == snap(2)
    write(topic, snap(3), lineage)
    legacy = {f"{GROUP}/0".encode()} | {f"{GROUP}/0/{n}".encode() for n in range(4)}
    assert not legacy & set(topic.records)  # the format 1 keys are gone
    assert read(topic) == snap(3)


def test_a_late_writer_that_lost_its_partition_is_fenced() -> None:
    """A worker frozen past its session timeout wakes up and keeps writing snapshots of the
    partition the group gave to another worker: readers still pick the new owner's."""
    topic = CompactedTopic()
    zombie = Lineage.after(None)
    write(topic, snap(1), zombie)
    owner = Lineage.after(choose_snapshots(topic.records, GROUP, [0])[0])
    assert owner.epoch == zombie.epoch + 1
    write(topic, snap(2), owner)
    for n in (7, 8, 9):  # later, with higher offsets and more seqs: still out-ranked
        write(topic, snap(n), zombie)
        assert read(topic) == snap(2)
    write(topic, snap(3), owner)
    assert read(topic) == snap(3)
    # The next owner out-ranks both.
    third = Lineage.after(choose_snapshots(topic.records, GROUP, [0])[0])
    assert third.epoch == owner.epoch + 1


def test_a_corrupt_newest_snapshot_falls_back_to_the_one_before() -> None:
    topic = CompactedTopic()
    lineage = Lineage.after(None)
    write(topic, snap(1), lineage)
    write(topic, snap(2), lineage)
    chunk = next(k for k in sorted(topic.records) if b"-2-" in k and k.endswith(b"/1"))
    topic.records[chunk] = b"x" * 25
    found = choose_snapshots(topic.records, GROUP, [0])[0]
    assert found.snapshot == snap(1)
    assert found.max_epoch == 1


def test_partitions_and_groups_do_not_mix() -> None:
    topic = CompactedTopic()
    write(topic, snap(1, partition=0), Lineage.after(None))
    write(topic, snap(2, partition=1), Lineage.after(None))
    asyncio.run(write_snapshot(topic.send, "other", snap(3, partition=0), Lineage.after(None)))
    found = choose_snapshots(topic.records, GROUP, [0, 1, 2])
    assert found[0].snapshot == snap(1, 0)
    assert found[1].snapshot == snap(2, 1)
    assert found[2].snapshot is None
    assert found[2].max_epoch == -1
