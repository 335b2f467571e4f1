"""A hostile corpus for the sensor topic: seeded messages that a pipeline must survive.

``hostile_messages`` draws messages from the categories below, each labelled with the DLQ
reason the v1 contract says the pipeline must give the *whole message* (for a batch, the
reason of its first rejected item, by index), or ``""`` when the message is valid and must be
processed, never dead-lettered. ``mix`` inserts them among a recorded scenario's
``events.jsonl`` lines, where a real gateway could have sent them.

Messages that are accepted (``extra_fields``, ``wrong_key``, ``missing_key``, ``duplicate``
and the good items of ``mixed_batch``) are built so that they cannot change any density: line
counter readings of 0 entries and 0 exits (a line counter reports the people counted since
its previous reading), or byte-identical repeats of a scenario's own readings. So a pipeline
that gets every verdict right publishes exactly the alerts of the clean scenario.

Every timestamp of an event that looks good is inside the scenario's time range (except the
``late`` and ``future`` ones, whose point is to be outside it), and ``mix`` places each message
after the first scenario line that is at least as recent, as a real delivery would be.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson

from schemas import MAX_BATCH_EVENTS, MAX_MESSAGE_BYTES, Kind, Zone

ACCEPTED = ""  # expected_reason of a message that must be processed, not dead-lettered
BANGKOK = timezone(timedelta(hours=7))
YEAR_2200_MS = int(datetime(2200, 1, 1, tzinfo=UTC).timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class HostileMessage:
    """One message value for the sensor topic, and the verdict the contract demands."""

    value: bytes | None  # None: a tombstone
    key: bytes | None
    expected_reason: str  # a schemas.Reason value, or ACCEPTED ("")
    category: str
    place_ms: int = 0  # the event time it claims (0: none); mix() puts it after that time
    anchor: int | None = None  # the clean line it goes right after (its repeat, or on time)


LIGHT_CATEGORIES: tuple[str, ...] = (
    "invalid_utf8", "invalid_json", "deep_nesting", "nan_infinity", "huge_number",
    "negative_count", "unknown_kind", "unknown_zone", "unknown_sensor", "missing_field",
    "wrong_type", "extra_fields", "late", "future", "empty_batch", "wrong_key", "missing_key",
    "mixed_batch", "duplicate", "id_conflict",
)
HEAVY_CATEGORIES: tuple[str, ...] = ("big_string", "too_large_string", "huge_array",
                                     "batch_too_long")
MESSAGE_CATEGORIES = ("tombstone",)  # only over Kafka: a line of a file cannot be a tombstone


def rfc3339(ms: int) -> str:
    """Event time as a gateway in Phitsanulok would write it (Bangkok offset)."""
    dt = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    return dt.astimezone(BANGKOK).isoformat(timespec="milliseconds")


def first_ts(line: bytes) -> int:
    """The event time a replay orders a line by: the first item's ``ts``; 0 when none."""
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError:
        return 0
    for item in doc if isinstance(doc, list) else [doc]:
        ts = item.get("ts") if isinstance(item, dict) else None
        if isinstance(ts, int) and not isinstance(ts, bool):
            return ts
        if isinstance(ts, str):
            try:
                return int(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1000)
            except ValueError:
                return 0
    return 0


@dataclass
class _Gen:
    zones: Sequence[Zone]
    rng: random.Random
    start_ms: int
    end_ms: int
    sources: Sequence[tuple[int, bytes]]
    on_time: Sequence[tuple[int, int]] = ()  # (line number, an event time on time there)
    seq: int = 0
    registered: frozenset[str] = field(default_factory=frozenset)
    anchor: int | None = None  # the line the last ts() is on time after

    def eid(self) -> str:
        self.seq += 1
        return f"hx-{self.rng.getrandbits(32):08x}-{self.seq}"

    def ts(self) -> int:
        """An event time in the range; with the clean lines known, one that is on time right
        after a clean line (``anchor``), so only the category decides the verdict."""
        if self.on_time:
            self.anchor, ms = self.rng.choice(self.on_time)
            return ms
        return self.rng.randrange(self.start_ms, self.end_ms)

    def stamp(self, ms: int) -> Any:
        return ms if self.rng.random() < 0.6 else rfc3339(ms)

    def reading(self, ts: int | None = None, *, zone: Zone | None = None) -> dict[str, Any]:
        """A plausible reading of a registered sensor (its counts would change a density)."""
        z = zone or self.rng.choice(list(self.zones))
        # Counters only: the mutations below pick a count field (a grid's cells have their own
        # tests, tests/unit/test_grid.py).
        spec = self.rng.choice([s for s in z.sensors if s.kind is not Kind.GRID_COUNT])
        ms = self.ts() if ts is None else ts
        ev: dict[str, Any] = {"event_id": self.eid(), "sensor_id": spec.sensor_id,
                              "zone_id": z.zone_id, "kind": spec.kind.wire, "ts": self.stamp(ms)}
        if spec.kind is Kind.OCCUPANCY:
            ev["count"] = self.rng.randint(0, 3000)
        elif spec.kind is Kind.LINE_COUNT:
            ev["entries"], ev["exits"] = self.rng.randint(0, 80), self.rng.randint(0, 80)
        else:
            ev["devices"] = self.rng.randint(0, 2000)
        return ev

    def benign(self, ts: int | None = None) -> dict[str, Any]:
        """A valid reading that changes no density: a line counter counting nobody."""
        choices = [(z, s) for z in self.zones for s in z.sensors if s.kind is Kind.LINE_COUNT]
        if not choices:
            raise ValueError("benign readings need a zone with a line counter")
        z, s = self.rng.choice(choices)
        ms = self.ts() if ts is None else ts
        return {"event_id": self.eid(), "sensor_id": s.sensor_id, "zone_id": z.zone_id,
                "kind": "line_count", "ts": self.stamp(ms), "entries": 0, "exits": 0}

    def wrap(self, ev: Any) -> bytes:
        """An event alone, or as a one-item gateway batch (the same verdict)."""
        return orjson.dumps([ev] if self.rng.random() < 0.5 else ev)

    def key_for(self, ev: dict[str, Any]) -> bytes:
        return str(ev.get("zone_id", "")).encode()


def _ts_ms(ev: dict[str, Any]) -> int:
    ts = ev["ts"]
    return ts if isinstance(ts, int) else first_ts(orjson.dumps(ev))


def _make(g: _Gen, cat: str) -> HostileMessage:
    rng = g.rng
    if cat == "invalid_utf8":
        enc = orjson.dumps(g.reading())
        bad = bytes(rng.choice([0x80, 0xBF, 0xC0, 0xC1, 0xF5, 0xFE, 0xFF]) for _ in range(3))
        cut = rng.randrange(1, len(enc) - 1)
        value = rng.choice([enc[:cut] + bad + enc[cut:],
                            enc.replace(b'"zone_id":"', b'"zone_id":"\xe0\xb8', 1),  # cut Thai
                            b"\xff\xfe" + enc, bytes(rng.randrange(0x80, 0x100)
                                                    for _ in range(rng.randint(1, 200)))])
        return HostileMessage(value, b"junk", "not_json", cat)
    if cat == "invalid_json":
        enc = orjson.dumps(g.reading())
        value = rng.choice([
            enc[: rng.randrange(1, len(enc) - 1)], enc + b"}", enc.replace(b'"', b"'"),
            enc[:-1] + b",}", b"[" + enc + b",]", enc + b" " + enc, b"{event_id: 1}", b"undefined",
            b"{" + b'"a":1,' * 10 + b"}", b'{"count": 01}', b'{"count": .5}', b"\x00",
            b"//" + enc, enc.replace(b":", b"=", 1),
        ])
        return HostileMessage(value, None, "not_json", cat)
    if cat == "deep_nesting":
        depth = 10_000
        value = rng.choice([b"[" * depth + b"]" * depth,
                            b'{"a":' * depth + b"1" + b"}" * depth,
                            b'[{"event_id":' + b"[" * depth + b"]" * depth + b"}]"])
        return HostileMessage(value, None, "not_json", cat)
    if cat in ("nan_infinity", "huge_number"):
        ev = g.reading()
        field_: str = next(k for k in ("count", "entries", "devices") if k in ev)
        lit = rng.choice([b"NaN", b"Infinity", b"-Infinity", b"nan", b"inf"] if cat ==
                         "nan_infinity" else [b"1e400", b"-1e400", b"1e309", b"-2e999"])
        raw = orjson.dumps(ev)
        value = raw.replace(b'"' + field_.encode() + b'":' + str(ev[field_]).encode(),
                            b'"' + field_.encode() + b'":' + lit, 1)
        assert value != raw
        # orjson refuses NaN/Infinity literals and numbers out of the double range.
        return HostileMessage(value, g.key_for(ev), "not_json", cat, _ts_ms(ev))
    if cat == "negative_count":
        ev = g.reading()
        field_ = next(k for k in ("count", "entries", "exits", "devices") if k in ev)
        ev[field_] = rng.choice([-1, -5, -1_000_000, -1.0])
        return HostileMessage(g.wrap(ev), g.key_for(ev), "schema", cat, _ts_ms(ev))
    if cat == "unknown_kind":
        ev = g.reading()
        ev["kind"] = rng.choice(["Occupancy", "people_count", "", "line-count", "occupancy ",
                                 "LINE_COUNT", "co2", "ก", 1, None, ["occupancy"]])
        return HostileMessage(g.wrap(ev), g.key_for(ev), "schema", cat, _ts_ms(ev))
    if cat == "unknown_zone":
        ev = g.reading()
        while True:
            zid = rng.choice([f"{ev['zone_id']}-2", "ghost-plaza", "WAT-YAI-VIHARA",
                              " wat-yai-vihara", "วัดใหญ่", "zone-" + "9" * 59,
                              f"test-{rng.randrange(10**6)}"])
            if zid not in g.registered:
                break
        ev["zone_id"] = zid
        return HostileMessage(g.wrap(ev), zid.encode(), "unknown_zone", cat, _ts_ms(ev))
    if cat == "unknown_sensor":
        ev = g.reading()
        ev["sensor_id"] = rng.choice([f"{ev['sensor_id']}-spare", "rogue-cam", "cam-1",
                                      ev["sensor_id"].upper(), "กล้อง-3"])
        return HostileMessage(g.wrap(ev), g.key_for(ev), "unknown_sensor", cat, _ts_ms(ev))
    if cat == "missing_field":
        ev = g.reading()
        needs = [k for k in ("count", "entries", "exits", "devices") if k in ev]
        ev.pop(rng.choice(["event_id", "sensor_id", "zone_id", "kind", "ts", *needs]))
        place = _ts_ms(ev) if "ts" in ev else 0
        return HostileMessage(g.wrap(ev), g.key_for(ev), "schema", cat, place)
    if cat == "wrong_type":
        ev = g.reading()
        wrong: tuple[str, Any] = rng.choice([
            ("event_id", 5), ("event_id", None), ("event_id", ["x"]), ("event_id", ""),
            ("sensor_id", {"id": "cam"}), ("zone_id", 42), ("kind", 1),
            ("ts", "yesterday"), ("ts", True), ("ts", None), ("ts", 1.5), ("ts", -1),
            ("ts", "2026-02-15 19:30:00"), ("ts", "2026-02-30T19:30:00+07:00"),
            ("count", "12"), ("entries", True), ("devices", None), ("count", [1]),
            ("count", 3.5), ("coverage_m2", 0), ("coverage_m2", "300"), ("confidence", 1.5),
            ("confidence", "high"),
        ])
        ev[wrong[0]] = wrong[1]
        place = _ts_ms(ev) if wrong[0] != "ts" else 0
        return HostileMessage(g.wrap(ev), g.key_for(ev), "schema", cat, place)
    if cat == "extra_fields":
        ev = g.benign()
        ev.update(rng.choice([
            {"firmware": "4.2.1"}, {"battery": 0.31, "rssi": -71},
            {"vendor": {"model": "X", "tags": ["a", None, 1.5]}}, {"note": "ประตูทิศเหนือ"},
            {"count": 5},  # a count field on a line counter: declared, valid, unused
            {"null_field": None, "nested": [[[]]]},
        ]))
        return HostileMessage(g.wrap(ev), g.key_for(ev), ACCEPTED, cat, _ts_ms(ev))
    if cat == "late":
        ev = g.reading(ts=rng.randrange(0, 86_400_000))  # 1 January 1970
        return HostileMessage(g.wrap(ev), g.key_for(ev), "late", cat, _ts_ms(ev))
    if cat == "future":
        ev = g.reading(ts=YEAR_2200_MS + rng.randrange(86_400_000 * 365))
        return HostileMessage(g.wrap(ev), g.key_for(ev), "future", cat, _ts_ms(ev))
    if cat == "empty_batch":
        return HostileMessage(rng.choice([b"[]", b"[ ]", b"[\t]"]), None, "empty_batch", cat)
    if cat in ("wrong_key", "missing_key"):
        ev = g.benign()
        key = None if cat == "missing_key" else rng.choice(
            [b"naresuan-bridge", b"", b"\xff\xfe", b"x" * 300, b"wat-yai-vihara "])
        return HostileMessage(g.wrap(ev), key, ACCEPTED, cat, _ts_ms(ev))
    if cat == "mixed_batch":
        t = g.ts()
        good = [g.benign(t) for _ in range(rng.randint(1, 4))]
        schema_bad = g.benign(t)
        schema_bad["exits"] = -3
        zone_bad = g.reading(t)
        zone_bad["zone_id"] = "ghost-plaza"
        first, second = (schema_bad, zone_bad) if rng.random() < 0.5 else (zone_bad, schema_bad)
        reason = "schema" if first is schema_bad else "unknown_zone"
        items = [*good[:1], first, *good[1:], second]
        return HostileMessage(orjson.dumps(items), g.key_for(good[0]), reason, cat, t)
    if cat in ("duplicate", "id_conflict"):
        if not g.sources:
            raise ValueError(f"{cat} needs source lines to repeat")
        line_no, line = rng.choice(g.sources)
        doc = orjson.loads(line)
        ev = doc[0] if isinstance(doc, list) else doc
        key = g.key_for(ev)
        if cat == "duplicate":  # the gateway re-sends a reading, byte for byte
            return HostileMessage(orjson.dumps([ev]), key, ACCEPTED, cat, _ts_ms(ev), line_no)
        other = dict(ev)
        if ev.get("kind") == "grid_count":  # another count in a cell: other content
            cells = [dict(c) for c in ev.get("cells", [])] or [{"row": 0, "col": 0, "count": 0}]
            cells[0]["count"] += rng.randint(1, 500)
            other["cells"] = cells
        else:
            field_ = next(k for k in ("count", "entries", "devices") if k in ev)
            other[field_] = ev[field_] + rng.randint(1, 500)
        return HostileMessage(orjson.dumps([other]), key, "id_conflict", cat, _ts_ms(ev),
                              line_no)
    if cat in ("big_string", "too_large_string"):
        ev = g.reading()
        if cat == "big_string":  # 300 kB: under the size limit, over every length limit
            ev[rng.choice(["event_id", "sensor_id", "zone_id"])] = rng.choice(
                ["x" * 300_000, "ก" * 100_000, "😀" * 75_000])
        else:  # 600 kB of Thai in a field the contract does not even declare
            ev[rng.choice(["sensor_id", "note"])] = "ก" * 200_000
        value = g.wrap(ev)
        reason = "too_large" if len(value) > MAX_MESSAGE_BYTES else "schema"
        return HostileMessage(value, g.key_for(ev), reason, cat, _ts_ms(ev))
    if cat in ("huge_array", "batch_too_long"):
        t = g.ts()
        n = 100_000 if cat == "huge_array" else MAX_BATCH_EVENTS + 1
        items = [{"event_id": f"b{i}", "sensor_id": "s", "zone_id": "z", "kind": "occupancy",
                  "ts": t, "count": 1} for i in range(n)]
        value = orjson.dumps(items)
        reason = "too_large" if len(value) > MAX_MESSAGE_BYTES else "batch_too_long"
        return HostileMessage(value, None, reason, cat, t)
    if cat == "tombstone":
        return HostileMessage(None, rng.choice([b"wat-yai-vihara", None]), "not_json", cat)
    raise ValueError(f"unknown category {cat!r}")


def on_time_points(clean_lines: Sequence[bytes], *, warmup: int = 50,
                   margin_ms: int = 4000) -> list[tuple[int, int]]:
    """``(line number, event time)`` pairs where a reading stamped with that time and placed
    right after that line is neither late nor ahead of the stream: the time is the newest
    first-item time so far (a replay orders lines by it, so nothing overtakes it) and within
    ``margin_ms`` of the newest reading so far (less than the grace minus a slide)."""
    out: list[tuple[int, int]] = []
    newest_first = newest_any = 0
    for i, line in enumerate(clean_lines):
        newest_first = max(newest_first, first_ts(line))
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        for item in doc if isinstance(doc, list) else [doc]:
            if isinstance(item, dict) and type(item.get("ts")) is int:
                newest_any = max(newest_any, item["ts"])
        if i >= warmup and newest_any - newest_first < margin_ms:
            out.append((i, newest_first))
    return out


def hostile_messages(
    zones: Sequence[Zone], rng: random.Random, n: int, *, start_ms: int, end_ms: int,
    registered: Sequence[str] = (), sources: Sequence[tuple[int, bytes]] = (),
    on_time: Sequence[tuple[int, int]] = (), heavy: bool = True, tombstones: bool = False,
    categories: Sequence[str] | None = None,
) -> list[HostileMessage]:
    """``n`` hostile messages about ``zones`` (the zones a scenario feeds; their registered
    sensors), stamped in ``[start_ms, end_ms)``.

    ``registered``: every zone id of the registry (an "unknown" zone is never one of them).
    ``sources``: ``(line number, line)`` of scenario lines the pipeline accepts, for the
    ``duplicate`` and ``id_conflict`` categories (left out when there are none).
    ``heavy``: include one message of each of the large categories (a 300 kB string, a
    600 kB one, a 100,000-event array, a 5,001-event batch). ``tombstones``: include valueless
    messages (only over Kafka). ``categories``: draw only from these. ``on_time``: from
    :func:`on_time_points`; readings that look good are then stamped on time at one of them
    (and ``mix`` puts them there), so none is late by accident.
    """
    g = _Gen(zones, rng, start_ms, end_ms, sources=sources, on_time=on_time,
             registered=frozenset(registered) | {z.zone_id for z in zones})

    def make(cat: str) -> HostileMessage:
        g.anchor = None
        msg = _make(g, cat)
        if msg.anchor is None and g.anchor is not None:
            msg = replace(msg, anchor=g.anchor)
        return msg

    light = list(categories or LIGHT_CATEGORIES + (MESSAGE_CATEGORIES if tombstones else ()))
    if not sources:
        light = [c for c in light if c not in ("duplicate", "id_conflict")]
    out: list[HostileMessage] = []
    if heavy and categories is None:
        out += [make(c) for c in HEAVY_CATEGORIES]
    # Every category at least once when n allows, then at random.
    cycle = light[: max(0, n - len(out))]
    out += [make(c) for c in cycle]
    out += [make(rng.choice(light)) for _ in range(max(0, n - len(out)))]
    rng.shuffle(out)
    return out


def time_range(clean_lines: Sequence[bytes], warmup: int = 50) -> tuple[int, int]:
    """The event times a hostile reading may claim among ``clean_lines`` (a scenario's): from
    the newest reading of the first ``warmup`` lines to the newest of all, so that ``mix``
    can place every one of them where it is on time."""
    newest = [first_ts(line) for line in clean_lines]
    if not newest:
        raise ValueError("no lines")
    return max(newest[: max(1, warmup)]), max(newest) + 1


@dataclass(frozen=True, slots=True)
class Mixed:
    """A scenario's lines with hostile ones among them."""

    lines: list[bytes]
    hostile: dict[int, HostileMessage]  # line number -> the hostile message there
    clean: dict[int, int]  # line number -> its line number in the clean file


def mix(
    clean_lines: Sequence[bytes], hostile: Sequence[HostileMessage], rng: random.Random,
    fraction: float | None = None, *, warmup: int = 50,
) -> Mixed:
    """Insert ``hostile`` among ``clean_lines`` (one message value each, in delivery order).

    A message with an ``anchor`` goes right after that clean line (a repeat after the line it
    repeats, a reading after the line it is on time with); one claiming a time inside the
    scenario after the first clean line at least as recent (a reading is sent after it was
    taken); any other anywhere. Never among the first ``warmup`` lines (before any window
    exists a stream has nothing to be late for). ``fraction``, when given, checks that the
    hostile lines are that share of the result (within a tenth of it), so a test says what it
    mixes. Lines are never split: values with a newline, and tombstones, have no place in a
    JSONL file and are refused.
    """
    for h in hostile:
        if h.value is None or b"\n" in h.value or b"\r" in h.value or not h.value.strip():
            raise ValueError(f"{h.category}: this value cannot be a line of a file")
    if fraction is not None:
        share = len(hostile) / max(len(hostile) + len(clean_lines), 1)
        if abs(share - fraction) > fraction * 0.1:
            raise ValueError(f"{len(hostile)} hostile lines are {share:.2%} of the mix, "
                             f"not {fraction:.2%}")
    # The newest event time up to each clean line, so "at least as recent" is monotonic.
    newest: list[int] = []
    top = 0
    for line in clean_lines:
        top = max(top, first_ts(line))
        newest.append(top)
    warm = min(warmup, len(clean_lines) - 1)
    after: dict[int, list[HostileMessage]] = {}
    for h in hostile:
        if h.anchor is not None:  # on time right there (or a repeat of that line)
            at = max(h.anchor, warm)
        elif newest and newest[warm] <= h.place_ms <= newest[-1]:
            at = max(bisect.bisect_left(newest, h.place_ms), warm)
        else:  # no time, or one outside the scenario's: anywhere
            at = rng.randrange(warm, len(clean_lines))
        after.setdefault(at, []).append(h)
    lines: list[bytes] = []
    where_h: dict[int, HostileMessage] = {}
    where_c: dict[int, int] = {}
    for i, line in enumerate(clean_lines):
        where_c[len(lines)] = i
        lines.append(line)
        for h in after.get(i, []):
            where_h[len(lines)] = h
            assert h.value is not None
            lines.append(h.value)
    return Mixed(lines, where_h, where_c)


def dlq_by_offset(records: Sequence[dict[str, Any]]) -> dict[int, list[str]]:
    """DLQ records grouped by their source offset (in a replay: the line number)."""
    out: dict[int, list[str]] = {}
    for r in records:
        out.setdefault(int(r["source"]["offset"]), []).append(str(r["reason"]))
    return out


def verdict_mismatches(
    hostile: dict[int, HostileMessage], dlq: dict[int, list[str]],
) -> dict[str, dict[str, int]]:
    """Per category, how the DLQ verdicts differ from the expected: ``{category: {"expected
    -> got": n}}``, where got is the reasons of the records with that offset ('' for none).
    The contract wants exactly one record per rejected message, none for an accepted one."""
    out: dict[str, dict[str, int]] = {}
    for off, h in hostile.items():
        got = dlq.get(off, [])
        want = [h.expected_reason] if h.expected_reason else []
        if got != want:
            shown = ",".join(got[:3]) + (f",...({len(got)})" if len(got) > 3 else "")
            k = f"{h.expected_reason or 'accepted'} -> {shown or 'accepted'}"
            out.setdefault(h.category, {}).setdefault(k, 0)
            out[h.category][k] += 1
    return out
