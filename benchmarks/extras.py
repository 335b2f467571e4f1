"""Latency at half load, memory and cost per reading against zone count, recovery after
kill -9: the rows of the benchmark beyond throughput."""

from __future__ import annotations

import asyncio
import itertools
import math
import signal
import statistics
import time
import urllib.request
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from agents.topics import partitions_of
from schemas import parse_ts

from . import data, e2e

if TYPE_CHECKING:
    from .__main__ import Bench


def pct(xs: Sequence[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, math.ceil(q * len(xs)) - 1)]


def wait_ready(port: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError("worker not ready")


async def _produce_live(bootstrap: str, topic: str, readings: list[dict[str, Any]],
                        rate: float, seconds: float) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=2, acks=1)
    await producer.start()
    sent = 0
    source = itertools.cycle(readings)
    try:
        t0 = time.monotonic()
        while (elapsed := time.monotonic() - t0) < seconds:
            due = int(elapsed * rate)
            now_ms = int(time.time() * 1000)
            while sent < due:
                r = next(source)
                ev = dict(r, ts=now_ms, event_id=f"live-{sent}")
                await producer.send(topic, orjson.dumps(ev), key=ev["zone_id"].encode())
                sent += 1
            await asyncio.sleep(0.005)
        await producer.flush()
    finally:
        await producer.stop()
    return sent


async def _raw_latency(bootstrap: str, topic: str, stop: asyncio.Event) -> list[float]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False)
    await consumer.start()
    lat: list[float] = []
    try:
        tps = [TopicPartition(topic, p) for p in await partitions_of(bootstrap, topic)]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=100, max_records=10_000)
            now = time.time() * 1000
            for records in batches.values():
                lat.extend(now - r.timestamp for r in records)
    finally:
        await consumer.stop()
    return lat


def latency(bench: Bench) -> None:
    a = bench.args
    rate = bench.res.median("safetour", "single") / 2
    if math.isnan(rate) or rate <= 0:
        rate = 1000.0
    rate = min(rate, a.max_live_rate)
    seconds = 25.0 if a.smoke else 45.0  # the first window closes after slide + grace
    ds = data.build(a.zones, 5000)
    registry = data.write_registry(ds.zones, bench.state / "zones-live.json")
    topic = f"bench-{bench.run_id}.live.single"
    asyncio.run(e2e.ensure_topic(bench.bootstrap, topic))
    env = e2e.safetour_env(bench.bootstrap, topic, registry, bench.state, SAFETOUR_IDLE_S="30")
    w = asyncio.run(e2e.start_safetour(bench.bootstrap, env, bench.state / "live.log"))
    try:
        wait_ready(env["SAFETOUR_WEB_PORT"], 120)

        async def go() -> tuple[int, list[float]]:
            stop = asyncio.Event()
            raw = asyncio.create_task(_raw_latency(bench.bootstrap, topic, stop))
            await asyncio.sleep(1)
            sent = await _produce_live(bench.bootstrap, topic, ds.readings, rate, seconds)
            await asyncio.sleep(2)
            stop.set()
            return sent, await raw

        started = time.time() * 1000
        sent, raw = asyncio.run(go())
        outs = asyncio.run(e2e.observe(bench.bootstrap, w.out_topic, quiet_s=3,
                                       timeout_s=30, proc=w.proc))
    finally:
        w.stop()
    ours = [app - (we + bench.grace_ms) for app, we in outs.records
            if we + bench.grace_ms >= started + 1000]
    bench.res.latency = {
        "rate": sent / seconds, "seconds": seconds, "outputs": len(ours),
        "raw_p50": pct(raw, 0.5), "raw_p99": pct(raw, 0.99),
        "p50": pct(ours, 0.5), "p99": pct(ours, 0.99), "samples": ours, "raw_samples": raw,
    }
    e2e_say(f"latency at {sent / seconds:,.0f} readings/s: raw p50/p99 "
            f"{pct(raw, .5):.0f}/{pct(raw, .99):.0f} ms; safetour p50/p99 "
            f"{pct(ours, .5):.0f}/{pct(ours, .99):.0f} ms over {len(ours):,} outputs")


def e2e_say(msg: str) -> None:
    from .__main__ import say  # noqa: PLC0415

    say(msg)


def scale(bench: Bench) -> None:
    a = bench.args
    points = (100,) if a.smoke else (100, 10_000, 100_000)  # the smoke: the harness, once
    for zones in points:
        readings = max(a.scale_readings, zones * 12)  # ~50 s of event time at 100k zones
        ds, topics, registry = bench.dataset(zones, readings, f"z{zones}")
        rates, rss = [], []
        for _ in range(1 if a.smoke else a.reps):
            # From readiness to the last output: at 100,000 zones the input spans too little
            # event time for the steady-state rate (every window closes at the end).
            r, peak, _outs = bench.safetour(topics["single"], ds, registry, label=f"z{zones}",
                                           timeout_s=a.timeout * 2, since_ready=True)
            rates.append(r)
            rss.append(peak)
        med = statistics.median(rates)
        bench.res.scale.append({"zones": zones, "readings": readings, "rate": med,
                                "ns_per_reading": 1e9 / med if med > 0 else float("nan"),
                                "peak_rss_mib": max(rss)})
        e2e_say(f"{zones:,} zones: {med:,.0f} readings/s, peak RSS {max(rss):.0f} MiB")


def recovery(bench: Bench) -> None:
    """Kill -9 a worker holding ``zones`` zones of state; restart; time to the first output
    and whether it equals what an uninterrupted worker wrote for the same window."""
    a = bench.args
    zones = 1000 if a.smoke else 10_000
    ds = data.build(zones, zones * 8)
    registry = data.write_registry(ds.zones, bench.state / f"zones-rec{zones}.json")
    topic = f"bench-{bench.run_id}.rec{zones}.single"
    asyncio.run(e2e.ensure_topic(bench.bootstrap, topic))
    half = len(ds.single) // 2
    asyncio.run(data.produce(bench.bootstrap, topic, ds.single[:half]))
    env = e2e.safetour_env(bench.bootstrap, topic, registry, bench.state,
                           SAFETOUR_SNAPSHOT_S="2")
    w = asyncio.run(e2e.start_safetour(bench.bootstrap, env, bench.state / "rec.log"))
    before = asyncio.run(e2e.observe(bench.bootstrap, w.out_topic, quiet_s=6,
                                     timeout_s=a.timeout, proc=w.proc))
    w.proc.send_signal(signal.SIGKILL)
    w.proc.wait()
    asyncio.run(data.produce(bench.bootstrap, topic, ds.single[half:]))
    restarted = time.time() * 1000
    w2 = asyncio.run(e2e.start_safetour(bench.bootstrap, env, bench.state / "rec.log"))
    try:
        after = asyncio.run(e2e.observe(bench.bootstrap, w2.out_topic, quiet_s=6,
                                        timeout_s=a.timeout, proc=w2.proc,
                                        after_ms=int(restarted)))
    finally:
        w2.stop()
    # The reference: an uninterrupted worker over the same topic.
    ref_env = e2e.safetour_env(bench.bootstrap, topic, registry, bench.state)
    ref = asyncio.run(e2e.start_safetour(bench.bootstrap, ref_env, bench.state / "ref.log"))
    try:
        ref_out = asyncio.run(_values(bench.bootstrap, ref.out_topic, a.timeout, ref.proc))
    finally:
        ref.stop()
    new = [(app, we) for app, we in after.records if app >= restarted]
    first = min(new) if new else None
    got = asyncio.run(_values(bench.bootstrap, w2.out_topic, 10, None)) if new else {}
    firsts = [k for k in got if k[1] == first[1]] if first else []
    same = bool(firsts) and all(got[k] == ref_out.get(k) for k in firsts)
    diffs = [(k, got[k], ref_out.get(k)) for k in firsts if got[k] != ref_out.get(k)]
    if diffs:
        e2e_say(f"recovery: {len(diffs)} differ, e.g. {diffs[:3]}")
    every = [k for k in got if k in ref_out and got[k] != ref_out[k]]
    bench.res.recovery_detail = {"all_compared": len(set(got) & set(ref_out)),
                                 "all_differ": len(every),
                                 "only_in_crashed": len(set(got) - set(ref_out)),
                                 "only_in_reference": len(set(ref_out) - set(got))}
    e2e_say(f"recovery: all windows: {bench.res.recovery_detail}")
    if every:
        ends = sorted({k[1] for k in every})
        e2e_say(f"recovery: differing window ends {ends[:5]} .. {ends[-3:]}; kill after "
                f"window end {before.last_window_end}")
    bench.res.recovery = {
        "zones": zones, "outputs_before_kill": before.count,
        "seconds_to_first_output": (first[0] - restarted) / 1000 if first else float("nan"),
        "first_window_matches_uninterrupted": same, "compared": len(firsts),
    }
    e2e_say(f"recovery with {zones:,} zones: first output "
            f"{bench.res.recovery['seconds_to_first_output']:.1f} s after restart; "
            f"{len(firsts)} values of that window {'equal' if same else 'DIFFER from'} "
            "the uninterrupted run")


async def _values(bootstrap: str, topic: str, timeout_s: float,
                  proc: Any) -> dict[tuple[str, int], float | None]:
    """{(zone, window_end): density} of a density topic (the last value of each key)."""
    outs = await e2e.observe(bootstrap, topic, quiet_s=6, timeout_s=timeout_s, proc=proc)
    del outs
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False)
    await consumer.start()
    vals: dict[tuple[str, int], float | None] = {}
    try:
        tps = [TopicPartition(topic, p) for p in await partitions_of(bootstrap, topic)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        while True:
            behind = [tp for tp in tps if await consumer.position(tp) < ends[tp]]
            if not behind:
                break
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for r in records:
                    d = orjson.loads(r.value)
                    vals[(d["zone_id"], parse_ts(d["window_end"]))] = d["density"]
    finally:
        await consumer.stop()
    return vals
