"""aiokafka's ``seek_to_committed`` leaves a partition committed at offset 0 where it is;
faust relies on that seek to read again the records it dropped during a rebalance. Against
the real broker: the trap, and agents/worker/transport.py ``rewind_committed_zeros`` out of
it (what BatchingConsumer.seek_to_committed adds)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiokafka import TopicPartition

from agents.topics import TopicSpec, create_topics
from agents.worker.transport import rewind_committed_zeros

from .conftest import make_settings


def test_a_partition_committed_at_zero_reads_its_records_again(kafka: str,
                                                                tmp_path: Path) -> None:
    s = make_settings(kafka, tmp_path)
    topic = s.topics.prefix + "seek-zero"

    async def run() -> tuple[int, int, list[int]]:
        await create_topics(kafka, [TopicSpec(topic, 1)])
        async with s.kafka.running(s.kafka.producer()) as producer:
            for i in range(3):
                await producer.send_and_wait(topic, b"%d" % i)
        tp = TopicPartition(topic, 0)
        consumer = s.kafka.consumer(group_id=s.app_id, auto_offset_reset="earliest")
        consumer.assign([tp])
        async with s.kafka.running(consumer):
            await consumer.commit({tp: 0})  # a start committed before the records came
            got = await consumer.getmany(tp, timeout_ms=10_000)  # read, then dropped
            assert [r.offset for r in got[tp]] == [0, 1, 2]
            committed = await consumer.seek_to_committed()
            after_aiokafka = await consumer.position(tp)
            rewind_committed_zeros(committed, consumer.seek)
            after_ours = await consumer.position(tp)
            again = await consumer.getmany(tp, timeout_ms=10_000)
            return after_aiokafka, after_ours, [r.offset for r in again[tp]]

    after_aiokafka, after_ours, again = asyncio.run(run())
    assert after_aiokafka == 3  # aiokafka: still past the records (the trap)
    assert after_ours == 0
    assert again == [0, 1, 2]
