"""Recorded scenarios replayed clean and with hostile lines among them (``tests/hostile.py``).

A pipeline that gives every hostile message the verdict of the v1 contract publishes exactly
the alerts of the clean scenario: the hostile messages it accepts change no density, and the
ones it rejects must not change anything either (no crash, no blinded partition, no good line
dead-lettered). Each scenario is replayed over many seeds so that more than 10,000 hostile
messages go through in total.
"""

from __future__ import annotations

import io
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from agents.config import Settings
from agents.devtools.simulator import SCENARIOS, simulate, write_files
from schemas import load_zones
from streams.replay import replay, replay_pipeline
from tests.hostile import (
    YEAR_2200_MS,
    HostileMessage,
    dlq_by_offset,
    first_ts,
    hostile_messages,
    mix,
    on_time_points,
    time_range,
    verdict_mismatches,
)

REPO = Path(__file__).resolve().parents[2]
ZONES_FILE = REPO / "deploy/zones/phitsanulok.yaml"
ZONES = load_zones(ZONES_FILE)
FRACTION = 0.03
SEEDS = {"crush": range(1, 16), "wat-yai-fair": range(1, 25)}
MIXES = 4  # hostile mixes per simulated seed, each with a corpus of its own
# At least this many hostile messages per seed: x 15 and x 24 seeds, 2,400 + 7,608, so more
# than 10,000 in all. Asserted per seed so that each seed is a test of its own (pytest-xdist
# spreads them over its workers; one test of all 24 seeds kept one worker busy for minutes).
MIN_HOSTILE_PER_SEED = {"crush": 160, "wat-yai-fair": 317}


@dataclass
class Run:
    alerts: list[dict[str, Any]]
    dlq: list[dict[str, Any]]


def run_replay(events: Path, reports: Path | None) -> Run:
    """The pipeline `safetour replay` builds (default settings), over these files."""
    configured = Settings.from_env({}).pipeline(ZONES)
    pipe = replay_pipeline(ZONES, configured.engine, configured.alerts.config)
    out, dlq = io.BytesIO(), io.BytesIO()
    replay(pipe, events, out, reports=reports, dlq_out=dlq)
    return Run([orjson.loads(x) for x in out.getvalue().splitlines()],
               [orjson.loads(x) for x in dlq.getvalue().splitlines()])


def alert_list(run: Run) -> list[tuple[str, str, str, str]]:
    """Every alert, in event-time order per zone (the order across zones depends on when
    each partition's windows close, which is not part of the contract)."""
    return sorted((a["alert_id"], a["ts"], a["status"], a["level"]) for a in run.alerts)


def critical_episodes(run: Run) -> list[tuple[str, str, str, str]]:
    return [(a["zone_id"], a["alert_id"], a["episode_start"], a["ts"]) for a in run.alerts
            if a["level"] == "critical" and a["status"] in ("raised", "escalated")]


def scenario_range(name: str) -> tuple[int, int]:
    sc = SCENARIOS[name]
    start = int(sc.start.timestamp() * 1000)
    return start, start + sc.duration_s * 1000


def active_zones(name: str) -> list[Any]:
    return [z for z in ZONES if z.zone_id in SCENARIOS[name].targets]


@dataclass
class SeedResult:
    hostile: int
    problems: list[str]
    mismatches: dict[str, dict[str, int]]


def replay_seed(name: str, seed: int, tmp: Path, *, heavy: bool) -> SeedResult:
    out = simulate(SCENARIOS[name], ZONES, seed=seed)
    events, reports = tmp / f"{name}-{seed}-events.jsonl", tmp / f"{name}-{seed}-reports.jsonl"
    write_files(out, str(events), str(reports))
    clean_lines = events.read_bytes().splitlines()
    clean = run_replay(events, reports)
    clean_dlq = dlq_by_offset(clean.dlq)
    # Repeats are made of scenario batches the clean run accepts whole.
    sources = [(i, line) for i, line in enumerate(clean_lines)
               if i not in clean_dlq and line.startswith(b"[{")]
    on_time = [p for p in on_time_points(clean_lines) if p[0] not in clean_dlq]
    start, end = time_range(clean_lines)  # inside the scenario, after the mixer's warm-up
    assert scenario_range(name)[0] <= start < end <= scenario_range(name)[1] + 20_000
    n = round(len(clean_lines) * FRACTION / (1 - FRACTION))
    res = SeedResult(0, [], {})
    for m in range(MIXES):
        rng = random.Random(seed * 7919 + m * 104_729 + len(name))
        hostile = hostile_messages(active_zones(name), rng, n, start_ms=start, end_ms=end,
                                   registered=[z.zone_id for z in ZONES], sources=sources,
                                   on_time=on_time, heavy=heavy and m == 0)
        mixed = mix(clean_lines, hostile, rng, FRACTION)
        mixed_path = tmp / f"{name}-{seed}-hostile-{m}.jsonl"
        mixed_path.write_bytes(b"\n".join(mixed.lines) + b"\n")
        dirty = run_replay(mixed_path, reports)
        mixed_path.unlink()
        dirty_dlq = dlq_by_offset(dirty.dlq)
        tag = f"seed {seed} mix {m}"
        problems = res.problems
        if critical_episodes(dirty) != critical_episodes(clean):
            problems.append(f"{tag}: critical episodes {critical_episodes(dirty)} != clean "
                            f"{critical_episodes(clean)}")
        if alert_list(dirty) != alert_list(clean):
            problems.append(f"{tag}: {len(dirty.alerts)} alerts differ from the clean run's "
                            f"{len(clean.alerts)}")
        good_dead = {mixed.clean[off]: reasons for off, reasons in dirty_dlq.items()
                     if off in mixed.clean}
        extra = {i: r for i, r in good_dead.items() if i not in clean_dlq}
        if extra:
            problems.append(f"{tag}: {len(extra)} good lines dead-lettered that the clean run "
                            f"accepts, e.g. {sorted(extra.items())[:3]}")
        unknown = set(dirty_dlq) - set(mixed.clean) - set(mixed.hostile)
        if unknown:
            problems.append(f"{tag}: DLQ records name offsets of no input line: {unknown}")
        res.hostile += len(hostile)
        for cat, d in verdict_mismatches(mixed.hostile, dirty_dlq).items():
            for verdict, count in d.items():
                res.mismatches.setdefault(cat, {}).setdefault(verdict, 0)
                res.mismatches[cat][verdict] += count
    return res


@pytest.mark.slow
@pytest.mark.parametrize(("name", "seed"), [(n, seed) for n, seeds in SEEDS.items()
                                            for seed in seeds])
def test_hostile_lines_change_no_alert_and_each_gets_its_verdict(
    name: str, seed: int, tmp_path: Path
) -> None:
    # The heavy corpus (the large messages) goes into the first mix of a scenario's first seed.
    res = replay_seed(name, seed, tmp_path, heavy=seed == SEEDS[name][0])
    assert res.hostile >= MIN_HOSTILE_PER_SEED[name]
    summary = "\n".join(f"  {cat}: {d}" for cat, d in sorted(res.mismatches.items()))
    assert not res.mismatches, f"{name}: hostile messages without their verdict:\n{summary}"
    assert not res.problems, "\n".join(res.problems[:20])


def test_the_seeds_make_more_than_ten_thousand_hostile_messages() -> None:
    assert sum(MIN_HOSTILE_PER_SEED[n] * len(seeds) for n, seeds in SEEDS.items()) >= 10_000


# -- One bad batch ----------------------------------------------------------------------------

def bad_gateway_batch(target_bytes: int = 500_000, n: int = 4_500) -> bytes:
    """One gateway's batch of ``n`` plausible readings for a zone nobody registered, padded
    (by the width of the event ids) to about ``target_bytes``."""
    start, _ = scenario_range("crush")
    base = {"event_id": "", "sensor_id": "pm-c1", "zone_id": "popup-mkt",
            "kind": "occupancy", "ts": start, "count": 14}
    width = target_bytes // n - (len(orjson.dumps(base)) + 1)
    assert width >= 4
    items = [dict(base, event_id=f"{i:0{width}d}", ts=start + i * 100) for i in range(n)]
    return orjson.dumps(items)


@pytest.mark.kernels
def test_one_bad_batch_gives_a_bounded_dlq_and_bounded_memory(tmp_path: Path) -> None:
    value = bad_gateway_batch()
    items = len(orjson.loads(value))
    assert 490_000 <= len(value) <= 512 * 1024
    assert 4_500 <= items <= 5_000
    events = tmp_path / "events.jsonl"
    events.write_bytes(value + b"\n")
    dlq = tmp_path / "dlq.jsonl"
    limit_rss_kb, limit_dlq = 500 * 1024, 3 * len(value)
    proc = subprocess.Popen(
        [sys.executable, "-m", "agents", "replay", "--zones", str(ZONES_FILE), "--events",
         str(events), "--out", str(tmp_path / "alerts.jsonl"), "--dlq", str(dlq), "--quiet"],
        cwd=REPO, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    peak_kb = 0
    deadline = time.monotonic() + 120
    why = ""
    try:
        while proc.poll() is None:
            try:
                status = Path(f"/proc/{proc.pid}/status").read_text()
            except (FileNotFoundError, ProcessLookupError):
                break
            for row in status.splitlines():
                if row.startswith("VmHWM:"):
                    peak_kb = max(peak_kb, int(row.split()[1]))
            size = dlq.stat().st_size if dlq.exists() else 0
            if peak_kb > limit_rss_kb:
                why = f"peak RSS {peak_kb / 1024:.0f} MB"
            elif size > limit_dlq:
                why = f"DLQ output {size:,} bytes and growing"
            elif time.monotonic() > deadline:
                why = "no end after 120 s"
            if why:
                proc.kill()
                break
            time.sleep(0.02)
        output = proc.communicate(timeout=30)[0].decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not why, f"{why} for one {len(value):,}-byte batch of {items} readings (stopped)"
    assert proc.returncode == 0, output[-3000:]
    size = dlq.stat().st_size
    assert size < limit_dlq, f"DLQ output {size:,} bytes for a {len(value):,}-byte input"
    assert peak_kb < limit_rss_kb
    records = [orjson.loads(x) for x in dlq.read_bytes().splitlines()]
    assert len(records) == 1  # one record per rejected message
    rec = records[0]
    assert rec["reason"] == "unknown_zone"
    assert rec["index"] == 0
    assert rec["items_total"] == items
    assert rec["counts"] == {"unknown_zone": items}
    assert len(rec["items"]) == 100
    assert rec["source"]["offset"] == 0


# -- A reading from the year 2200 -------------------------------------------------------------

def far_future_line(lines: list[bytes]) -> tuple[int, bytes]:
    """Where a misconfigured camera's reading (clock set to 2200) lands, and the line."""
    at = len(lines) // 3
    z = next(z for z in ZONES if z.zone_id == "naresuan-bridge")
    ev = {"event_id": "nb-cam-west-clock-2200", "sensor_id": z.sensors[0].sensor_id,
          "zone_id": z.zone_id, "kind": "occupancy", "ts": YEAR_2200_MS, "count": 300}
    return at, orjson.dumps([ev])


@pytest.mark.kernels
@pytest.mark.parametrize("with_reports", [False, True], ids=["events-only", "with-reports"])
def test_a_far_future_reading_does_not_blind_the_partition(
    tmp_path: Path, with_reports: bool
) -> None:
    out = simulate(SCENARIOS["crush"], ZONES, seed=1)
    events, reports = tmp_path / "events.jsonl", tmp_path / "reports.jsonl"
    write_files(out, str(events), str(reports))
    lines = events.read_bytes().splitlines()
    clean = run_replay(events, reports if with_reports else None)
    at, line = far_future_line(lines)
    assert first_ts(lines[at - 1]) < YEAR_2200_MS
    dirty_path = tmp_path / "future.jsonl"
    dirty_path.write_bytes(b"\n".join([*lines[:at], line, *lines[at:]]) + b"\n")
    dirty = run_replay(dirty_path, reports if with_reports else None)
    dlq = dlq_by_offset(dirty.dlq)
    assert dlq.get(at) == ["future"]
    assert any(a["level"] == "critical" for a in clean.alerts)  # the test has something to lose
    assert alert_list(dirty) == alert_list(clean)
    assert critical_episodes(dirty) == critical_episodes(clean)
    shifted = {off - (off > at): r for off, r in dlq.items() if off != at}
    assert shifted == dlq_by_offset(clean.dlq)


def test_the_corpus_names_reasons_of_the_contract() -> None:
    from schemas import Reason  # noqa: PLC0415

    contract = {"not_json", "too_large", "schema", "empty_batch", "batch_too_long",
                "unknown_zone", "late", "undecodable", "future", "unknown_sensor",
                "id_conflict", "stale", "registry", "off_grid"}
    start, end = scenario_range("crush")
    msgs: list[HostileMessage] = hostile_messages(
        active_zones("crush"), random.Random(3), 300, start_ms=start, end_ms=end,
        registered=[z.zone_id for z in ZONES], sources=[(0, b'[{"event_id":"a","sensor_id":'
        b'"nb-cam-west","zone_id":"naresuan-bridge","kind":"occupancy","ts":1,"count":1}]')],
        tombstones=True)
    reasons = {m.expected_reason for m in msgs} - {""}
    assert reasons <= contract
    assert {r.value for r in Reason} <= contract  # the decoder's reasons are in the contract
    assert {m.category for m in msgs} >= {"tombstone", "huge_array", "duplicate", "future"}
