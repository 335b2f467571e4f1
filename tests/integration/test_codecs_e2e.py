"""Every Kafka compression codec, end to end: kcat (librdkafka) compresses, the worker reads.

One worker, five zones that are alike in every way: each codec's surge goes to its own zone on
its own partition (watermarks are per partition), so the alerts of every codec must equal
those of the uncompressed run. A second worker runs without cramjam, as a machine missing the
codec libraries would: an lz4 batch must not stop it, and the good surge after it still alerts.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiokafka.codec
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.consumer import fetcher as kafka_fetcher

from agents.config import Settings
from agents.kafka_safety import install_safe_fetch, undecodable_info
from agents.topics import create_topics, topic_specs

from .conftest import KCAT, make_settings, payloads, poll_until, start_worker, stop_worker
from .test_alerting_e2e import SCRIPT

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
LIFECYCLE = [("raised", "elevated"), ("escalated", "high"), ("escalated", "critical"),
             ("deescalated", "high"), ("resolved", "normal")]


def write_registry(path: Path, zone_ids: list[str]) -> Path:
    """Zones identical but for their ids: a standing crowd, 600 m², one camera on 300 m²."""
    zones = [{"zone_id": z, "name": {"th": z, "en": z}, "area_m2": 600, "crowd": "standing",
              "sensors": [{"sensor_id": f"{z}-cam", "kind": "occupancy", "coverage_m2": 300}]}
             for z in zone_ids]
    path.write_bytes(orjson.dumps({"zones": zones}))
    return path


def surge(zone_id: str, t0: int, first_second: int = 0) -> list[bytes]:
    """The scripted surge of the alerting test (calm, elevated, high, critical, high, calm)."""
    lines, t = [], first_second
    for seconds, density in SCRIPT:
        for _ in range(seconds):
            lines.append(orjson.dumps({
                "event_id": f"{zone_id}-{t}", "sensor_id": f"{zone_id}-cam", "zone_id": zone_id,
                "kind": "occupancy", "ts": t0 + t * 1000, "count": round(density * 300)}))
            t += 1
    return lines


def kcat_publish(kafka: str, topic: str, partition: int, key: str, codec: str,
                 lines: list[bytes]) -> None:
    """One message a line, compressed by kcat (librdkafka) with ``codec``."""
    subprocess.run(
        [KCAT, "-b", kafka, "-P", "-t", topic, "-p", str(partition), "-k", key, "-z", codec,
         "-X", "linger.ms=50"],
        input=b"\n".join(lines) + b"\n", check=True, timeout=60)


def lifecycles(s: Settings, zone_ids: list[str]) -> dict[str, list[tuple[str, str]]] | None:
    """Each zone's (status, level) sequence, once every zone's episode has resolved."""
    by_zone: dict[str, list[tuple[str, str]]] = {z: [] for z in zone_ids}
    for a in payloads(s.bootstrap, s.topics.alerts):
        if a["zone_id"] in by_zone:
            by_zone[a["zone_id"]].append((a["status"], a["level"]))
    done = all(seq and seq[-1][0] == "resolved" for seq in by_zone.values())
    return by_zone if done else None


@pytest.fixture(scope="module")
def codec_stack(kafka: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    tmp = tmp_path_factory.mktemp("codecs")
    s = make_settings(kafka, tmp)
    asyncio.run(create_topics(kafka, topic_specs(s.topics)))
    zones = write_registry(tmp / "zones.json", [f"codec-{c}" for c in CODECS])
    proc = start_worker(s, tmp / "worker.log", SAFETOUR_ZONES=str(zones))
    try:
        yield s
    finally:
        stop_worker(proc)


async def read_partition(kafka: str, topic: str, partition: int) -> list[Any]:
    """Every record of one partition, through aiokafka in this process."""
    tp = TopicPartition(topic, partition)
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka, group_id=None,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        out: list[Any] = []
        while await consumer.position(tp) < end:
            out += (await consumer.getmany(tp, timeout_ms=1000)).get(tp, [])
        return out
    finally:
        await consumer.stop()


def test_every_codec_gives_the_alerts_of_the_uncompressed_run(
    codec_stack: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = codec_stack
    t0 = (int(time.time()) - 2 * 3600) * 1000
    for partition, codec in enumerate(CODECS):
        zone_id = f"codec-{codec}"
        kcat_publish(s.bootstrap, s.topics.sensor_events, partition, zone_id, codec,
                     surge(zone_id, t0))
    zone_ids = [f"codec-{c}" for c in CODECS]
    seqs = poll_until(lambda: lifecycles(s, zone_ids), timeout=60,
                      what="every codec's episode to resolve",
                      log=s.state_dir / "worker.log")
    assert seqs["codec-none"] == LIFECYCLE
    assert {c: seqs[f"codec-{c}"] for c in CODECS} == {c: LIFECYCLE for c in CODECS}
    assert payloads(s.bootstrap, s.topics.dlq) == []

    # kcat really compressed each partition with its codec: a reader without any codec
    # library decodes partition 0 and sees nothing but undecodable batches elsewhere.
    monkeypatch.setattr(kafka_fetcher, "PartitionRecords", kafka_fetcher.PartitionRecords)
    install_safe_fetch()
    for name in ("has_gzip", "has_snappy", "has_lz4", "has_zstd"):
        monkeypatch.setattr(aiokafka.codec, name, lambda: False)
    n = len(surge("x", 0))
    for partition, codec in enumerate(CODECS):
        recs = asyncio.run(read_partition(s.bootstrap, s.topics.sensor_events, partition))
        infos = [undecodable_info(r) for r in recs]
        if codec == "none":
            assert len(recs) == n
            assert infos == [None] * n
            continue
        assert all(info is not None for info in infos), codec
        skipped = sorted((first, last) for _, first, last in filter(None, infos))
        assert skipped[0][0] == 0, codec
        assert skipped[-1][1] == n - 1, codec
        assert all(b[0] == a[1] + 1 for a, b in itertools.pairwise(skipped)), codec


@pytest.fixture(scope="module")
def no_cramjam_stack(
    kafka: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Settings, subprocess.Popen[bytes], Path]]:
    """A worker on a machine without cramjam (aiokafka then has no snappy, lz4 or zstd), and
    on partition 0: an lz4 batch of three readings, then the good surge uncompressed."""
    tmp = tmp_path_factory.mktemp("nocramjam")
    hide = tmp / "hide"
    hide.mkdir()
    (hide / "cramjam.py").write_text('raise ImportError("cramjam hidden by the test")\n')
    s = make_settings(kafka, tmp)
    asyncio.run(create_topics(kafka, topic_specs(s.topics)))
    zones = write_registry(tmp / "zones.json", ["good-zone"])
    log = tmp / "worker.log"
    pythonpath = ":".join(p for p in (str(hide), os.environ.get("PYTHONPATH")) if p)
    proc = start_worker(s, log, SAFETOUR_ZONES=str(zones), PYTHONPATH=pythonpath)
    try:
        t0 = (int(time.time()) - 2 * 3600) * 1000
        early = surge("good-zone", t0 - 10_000)[:3]
        kcat_publish(s.bootstrap, s.topics.sensor_events, 0, "good-zone", "lz4", early)
        kcat_publish(s.bootstrap, s.topics.sensor_events, 0, "good-zone", "none",
                     surge("good-zone", t0))
        yield s, proc, log
    finally:
        stop_worker(proc)


def test_an_lz4_batch_without_cramjam_neither_stops_the_worker_nor_the_good_surge(
    no_cramjam_stack: tuple[Settings, subprocess.Popen[bytes], Path],
) -> None:
    s, proc, log = no_cramjam_stack
    seqs = poll_until(lambda: lifecycles(s, ["good-zone"]), timeout=60, proc=proc, log=log,
                      what="the good surge's episode to resolve")
    assert seqs["good-zone"] == LIFECYCLE
    assert proc.poll() is None
    text = log.read_text(errors="replace")
    # The codec really was missing, and the batch at offsets 0-2 was skipped, said once.
    assert text.count("skipped the record batch at offsets 0-2") == 1
    assert "Libraries for lz4 compression codec not found" in text


def test_the_undecodable_batch_is_dead_lettered_once(
    no_cramjam_stack: tuple[Settings, subprocess.Popen[bytes], Path],
) -> None:
    """Needs the pipeline's handling of the sentinel (Reason.UNDECODABLE, streams/)."""
    s, proc, log = no_cramjam_stack

    def dead_letters() -> list[dict[str, Any]]:
        return payloads(s.bootstrap, s.topics.dlq)

    (rec,) = poll_until(dead_letters, timeout=60, proc=proc, log=log, what="the DLQ record")
    assert rec["reason"] == "undecodable"
    assert "Libraries for lz4 compression codec not found" in rec["detail"]
    assert "0-2" in rec["detail"]
    assert (rec["source"]["topic"], rec["source"]["partition"], rec["source"]["offset"]) == (
        s.topics.sensor_events, 0, 2)
