"""The peers, written the way their documentation teaches, as subprocesses of the benchmark:

    python -m benchmarks.peers faust IN_TOPIC OUT_TOPIC ZONES_FILE [--batched]
    python -m benchmarks.peers quix  IN_TOPIC OUT_TOPIC ZONES_FILE [--batched] [--state DIR]

Both compute what safetour's density engine computes at its core, per zone over event-time
windows of 60 s: the mean of the occupancy readings divided by the zone's area, and write
``{"zone_id", "window_end", "density"}`` to OUT_TOPIC when a window closes.

- faust-native: an agent over the stream (``async for``), JSON decoded per event, and a
  windowed ``app.Table(...).hopping(60, 5)`` updated per reading, relative to the reading's
  event time; windows report through ``on_window_close``.
- quixstreams: ``sliding_window(60 s, grace 10 s).agg(Sum, Count).final()``; gateway
  batches are expanded and re-keyed by zone (``group_by``), as Quix requires for per-zone
  windows.

Line and Wi-Fi counters are ignored by both (safetour uses them too: the peers do less work).
"""

from __future__ import annotations

import argparse
import sys
import uuid
from pathlib import Path
from typing import Any

import orjson


def areas(zones_file: str) -> dict[str, float]:
    from schemas import load_zones  # noqa: PLC0415

    return {z.zone_id: z.area_m2 for z in load_zones(zones_file)}


def run_faust(args: argparse.Namespace) -> None:
    import faust  # noqa: PLC0415

    area = areas(args.zones)
    tag = uuid.uuid4().hex[:8]
    Path(args.state).mkdir(parents=True, exist_ok=True)
    app = faust.App(f"bench-faust-{tag}", broker=f"kafka://{args.bootstrap}",
                    store="memory://", web_enabled=False, autodiscover=False,
                    datadir=str(Path(args.state) / tag), consumer_auto_offset_reset="earliest",
                    table_cleanup_interval=1.0, topic_partitions=8)
    src = app.topic(args.in_topic, key_type=bytes, value_type=bytes, key_serializer="raw",
                    value_serializer="raw")
    out = app.topic(args.out_topic, key_type=bytes, value_type=bytes, key_serializer="raw",
                    value_serializer="raw")
    event_ts = [0.0]

    def closed(key: Any, value: Any) -> None:
        zone, (_start, end) = key
        total, n = value if isinstance(value, tuple | list) else (0.0, 0)
        doc = {"zone_id": zone, "window_end": round(end * 1000),
               "density": (total / n / area.get(zone, 1.0)) if n else None}
        out.send_soon(key=zone.encode(), value=orjson.dumps(doc))

    table = app.Table("occupancy", default=lambda: (0.0, 0), on_window_close=closed,
                      partitions=8).hopping(60, 5, expires=70).relative_to(  # type: ignore[attr-defined]
                          lambda event: event_ts[0])  # (faust has it; its WindowWrapperT does not)

    async def agent(stream: Any) -> None:
        async for value in stream:
            doc = orjson.loads(value)
            for r in doc if isinstance(doc, list) else (doc,):
                if r.get("kind") != "occupancy":
                    continue
                event_ts[0] = r["ts"] / 1000
                w = table[r["zone_id"]]
                total, n = w.value()
                table[r["zone_id"]] = (total + r["count"], n + 1)

    app.agent(src, name="bench-faust-density")(agent)
    sys.argv = [sys.argv[0], "worker", "-l", "warn", "--without-web"]
    app.main()


def run_quix(args: argparse.Namespace) -> None:
    from quixstreams import Application  # noqa: PLC0415
    from quixstreams.dataframe.windows import Count, Sum  # noqa: PLC0415

    area = areas(args.zones)
    app = Application(broker_address=args.bootstrap,
                      consumer_group=f"bench-quix-{uuid.uuid4().hex[:8]}",
                      auto_offset_reset="earliest", state_dir=args.state, loglevel="WARNING",
                      use_changelog_topics=True)
    src = app.topic(args.in_topic, key_deserializer="str", value_deserializer="json",
                    timestamp_extractor=lambda value, headers, ts, ts_type: (
                        value["ts"] if isinstance(value, dict) else ts))
    out = app.topic(args.out_topic, key_serializer="str", value_serializer="json")
    sdf = app.dataframe(src)
    if args.batched:
        sdf = sdf.apply(lambda v: v, expand=True)
        sdf = sdf.set_timestamp(lambda value, key, ts, headers: value["ts"])
        sdf = sdf.group_by("zone_id")
    sdf = sdf.filter(lambda v: v["kind"] == "occupancy")
    sdf = sdf.sliding_window(duration_ms=60_000, grace_ms=10_000).agg(
        total=Sum("count"), n=Count()).final()
    sdf = sdf.apply(lambda w, key, ts, headers: {
        "zone_id": key, "window_end": w["end"],
        "density": w["total"] / w["n"] / area.get(key, 1.0) if w["n"] else None},
        metadata=True)
    sdf.to_topic(out)
    app.run()


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.peers")
    p.add_argument("system", choices=["faust", "quix"])
    p.add_argument("in_topic")
    p.add_argument("out_topic")
    p.add_argument("zones")
    p.add_argument("--bootstrap", default="127.0.0.1:19092")
    p.add_argument("--batched", action="store_true", help="input holds gateway batches")
    p.add_argument("--state", default=".safetour/bench-state")
    args = p.parse_args()
    (run_faust if args.system == "faust" else run_quix)(args)


if __name__ == "__main__":
    main()
