"""Our fast validator accepts and rejects exactly what the published JSON Schemas do.

The reference is ``jsonschema`` (draft 2020-12, with the date-time format checked) loading the
very files integrators read from ``schemas/json/``. Documents are generated from valid ones by
seeded mutations aimed at every rule: missing fields, wrong types, each bound and one past it,
timestamps of every shape, kind-specific fields, batches mixing good and bad items.
"""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import jsonschema
import orjson
import pytest
from referencing import Registry, Resource

import schemas
from schemas import (
    Ack,
    Reason,
    decode_ack,
    decode_alert,
    decode_report,
    decode_sensor_message,
    encode_ack,
)

N_DOCS = 1500  # per seed; 3 seeds x (events + batches + reports) is several thousand documents


def _load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(schemas.schema_file(name).read_text())
    return doc


@pytest.fixture(scope="module")
def validators() -> dict[str, jsonschema.Draft202012Validator]:
    names = ["sensor-event.v1.json", "sensor-message.v1.json", "report.v1.json", "ack.v1.json",
             "alert.v1.json"]
    docs = {n: _load(n) for n in names}
    registry: Registry[Any] = Registry().with_resources(
        (d["$id"], Resource.from_contents(d)) for d in docs.values()
    )
    checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
    out = {}
    for n, d in docs.items():
        jsonschema.Draft202012Validator.check_schema(d)
        out[n] = jsonschema.Draft202012Validator(d, registry=registry, format_checker=checker)
    return out


GOOD_TS: list[Any] = [
    "2026-02-15T19:30:00+07:00", "2026-02-15T12:30:00Z", "2026-02-15t12:30:00z",
    "2024-02-29T23:59:59.999999999-03:30", "2026-04-13T17:00:00.5+07:00", 0, 1795537562819,
    253402300799999, 1795537562819.0, "1970-01-01T00:00:00Z",
]
BAD_TS: list[Any] = [
    "2026-02-30T00:00:00Z", "2023-02-29T00:00:00Z", "0000-01-01T00:00:00Z", "2026-13-01T00:00:00Z",
    "2026-02-15T24:00:00Z", "2026-02-15T19:30:00", "2026-02-15 19:30:00Z",
    "2026-02-15T19:30:00Z\n", "2026-02-15T19:30:60Z", "2026-02-15T19:30:00.1234567890Z",
    "2026-02-15T19:30:00+7:00", "2026-02-15", "", -1, 253402300800000, 1.5, True, None, [], {},
    "１９７０-01-01T00:00:00Z",
]
STRINGS_OK = ["a", "x" * 128, "วัดใหญ่-กล้อง-1", "😀" * 64, "id with spaces"]


def _string(rng: random.Random, hi: int) -> Any:
    pool: list[Any] = ["", "x" * (hi + 1), "😀" * (hi + 1), 5, None, True, ["a"], {"a": 1}]
    pool += [s for s in STRINGS_OK if len(s) <= hi]
    return rng.choice(pool)


def _count(rng: random.Random) -> Any:
    return rng.choice([0, 1, 250, 1_000_000, 1_000_001, -1, 3.0, 3.5, "3", None, True, False,
                       1e30, 2**63])


def valid_event(rng: random.Random) -> dict[str, Any]:
    kind = rng.choice(["line_count", "occupancy", "device_count", "grid_count"])
    ev: dict[str, Any] = {
        "event_id": rng.choice(STRINGS_OK), "sensor_id": rng.choice(STRINGS_OK),
        "zone_id": rng.choice([s for s in STRINGS_OK if len(s) <= 64]), "kind": kind,
        "ts": rng.choice(GOOD_TS),
    }
    if kind == "line_count":
        ev["entries"], ev["exits"] = rng.randint(0, 50), rng.randint(0, 50)
    elif kind == "occupancy":
        ev["count"] = rng.randint(0, 5000)
        if rng.random() < 0.5:
            ev["coverage_m2"] = rng.choice([0.5, 300, 1e7, 42])
    elif kind == "device_count":
        ev["devices"] = rng.randint(0, 9000)
    else:
        if rng.random() < 0.7:
            ev["cells"] = [{"row": rng.randint(0, 999), "col": rng.randint(0, 999),
                            "count": rng.randint(0, 5000)} for _ in range(rng.randint(0, 4))]
        if "cells" not in ev or rng.random() < 0.3:
            ev["points"] = [[rng.uniform(-90, 90), rng.uniform(-180, 180)]
                            for _ in range(rng.randint(0, 4))]
    if rng.random() < 0.3:
        ev["confidence"] = rng.choice([0, 0.5, 1, 1.0])
    if rng.random() < 0.2:
        ev["vendor_field"] = {"anything": [1, 2]}
    return ev


def mutate_event(rng: random.Random, ev: dict[str, Any]) -> Any:
    ev = copy.deepcopy(ev)
    op = rng.randrange(11)
    if op == 0:
        ev.pop(rng.choice(list(ev)), None)
    elif op == 1:
        ev[rng.choice(["event_id", "sensor_id"])] = _string(rng, 128)
    elif op == 2:
        ev["zone_id"] = _string(rng, 64)
    elif op == 3:
        ev["kind"] = rng.choice(["Occupancy", "count", "", 1, None, "line_count", "device_count"])
    elif op == 4:
        ev["ts"] = rng.choice(BAD_TS + GOOD_TS)
    elif op == 5:
        ev[rng.choice(["entries", "exits", "count", "devices"])] = _count(rng)
    elif op == 6:
        ev["coverage_m2"] = rng.choice([0, -1, 0.0001, 1e7, 1e7 + 1, "5", None, True])
    elif op == 7:
        ev["confidence"] = rng.choice([-0.01, 0, 1, 1.01, "1", None, False])
    elif op == 8:
        cell: Any = {"row": rng.choice([0, 999, 1000, -1, 2.0, 2.5, "1", None, True]),
                     "col": rng.choice([0, 5, 1000, -1, False]), "count": _count(rng)}
        if rng.random() < 0.2:
            cell.pop(rng.choice(["row", "col", "count"]))
        ev["cells"] = rng.choice([[cell], [{"row": 0, "col": 0, "count": 1}, cell], cell,
                                  "cells", None, [[0, 0, 1]], [{"row": 0, "col": 0, "count": 1}]
                                  * 4097])
    elif op == 9:
        pt: Any = rng.choice([[0, 0], [90.0, 180], [90.01, 0], [0, -180.5], [1], [1, 2, 3],
                              ["1", 2], [True, 0], [None, 1], {"lat": 1}, 5])
        ev["points"] = rng.choice([[pt], [[16.8, 100.2], pt], pt, "p", [[0, 0]] * 5001])
    else:
        return rng.choice([None, "event", 3, [ev], True])
    return ev


def _event_doc(rng: random.Random) -> Any:
    ev = valid_event(rng)
    return ev if rng.random() < 0.35 else mutate_event(rng, ev)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_single_events_match_reference(
    seed: int, validators: dict[str, jsonschema.Draft202012Validator]
) -> None:
    rng = random.Random(seed)
    ref = validators["sensor-message.v1.json"]
    accepted = rejected = 0
    for _ in range(N_DOCS):
        doc = _event_doc(rng)
        raw = orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS) if doc is not None else b"null"
        events, rejections = decode_sensor_message(raw)
        expect = ref.is_valid(orjson.loads(raw))
        ours = bool(events) and not rejections
        assert ours == expect, f"{raw!r}: ours={ours} reference={expect} {rejections}"
        accepted += ours
        rejected += not ours
    # The generator must exercise both sides substantially, or the test proves little.
    assert accepted > N_DOCS * 0.3
    assert rejected > N_DOCS * 0.3


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_batches_match_reference_item_by_item(
    seed: int, validators: dict[str, jsonschema.Draft202012Validator]
) -> None:
    rng = random.Random(seed)
    ref_msg = validators["sensor-message.v1.json"]
    ref_event = validators["sensor-event.v1.json"]
    for _ in range(N_DOCS // 5):
        items = [_event_doc(rng) for _ in range(rng.randint(0, 12))]
        raw = orjson.dumps(items)
        events, rejections = decode_sensor_message(raw)
        good = [i for i, it in enumerate(items) if ref_event.is_valid(it)]
        assert [r.index for r in rejections if r.reason is Reason.SCHEMA] == [
            i for i in range(len(items)) if i not in good
        ]
        assert [e.event_id for e in events] == [items[i]["event_id"] for i in good]
        whole_ok = bool(events) and not rejections
        assert whole_ok == ref_msg.is_valid(items), raw
        if not items:
            assert [r.reason for r in rejections] == [Reason.EMPTY_BATCH]


def test_batch_length_limit_matches_reference(
    validators: dict[str, jsonschema.Draft202012Validator],
) -> None:
    # A compact event, so that 5001 of them stay under the message size limit (not a schema rule).
    ev = {"event_id": "e", "sensor_id": "s", "zone_id": "z", "kind": "device_count", "ts": 0,
          "devices": 1}
    for n in (schemas.MAX_BATCH_EVENTS, schemas.MAX_BATCH_EVENTS + 1):
        items = [ev] * n
        raw = orjson.dumps(items)
        _events, rejections = decode_sensor_message(raw)
        assert (not rejections) == validators["sensor-message.v1.json"].is_valid(items)
    assert rejections[0].reason is Reason.BATCH_TOO_LONG


def valid_report(rng: random.Random) -> dict[str, Any]:
    rep: dict[str, Any] = {
        "report_id": rng.choice(STRINGS_OK), "ts": rng.choice(GOOD_TS),
        "category": rng.choice(["overcrowding", "crush", "injury", "medical", "fire",
                                "violence", "lost_person", "other"]),
        "source": rng.choice(["tourist", "staff", "police", "volunteer", "operator",
                              "citizen_app"]),
    }
    if rng.random() < 0.6:
        rep["zone_id"] = "wat-yai-vihara"
    else:
        rep["lat"], rep["lon"] = 16.8237, 100.2623
    if rng.random() < 0.5:
        rep["severity"] = rng.randint(1, 5)
    if rng.random() < 0.5:
        rep["text"] = rng.choice(["คนแน่นมาก เดินไม่ได้", "Crowd pushing near the gate", ""])
        rep["lang"] = rng.choice(["th", "en"])
    return rep


def mutate_report(rng: random.Random, rep: dict[str, Any]) -> Any:
    rep = copy.deepcopy(rep)
    op = rng.randrange(8)
    if op == 0:
        rep.pop(rng.choice(list(rep)), None)
    elif op == 1:
        rep["lat"] = rng.choice([-90, 90, 90.0001, -91, "16.8", None])
    elif op == 2:
        rep["lon"] = rng.choice([-180, 180, 180.5, "100", None])
    elif op == 3:
        rep["category"] = rng.choice(["CRUSH", "stampede", 1, None, "fire"])
    elif op == 4:
        rep["severity"] = rng.choice([0, 1, 5, 6, 2.0, 2.5, "3", True])
    elif op == 5:
        rep["text"] = rng.choice(["ก" * 2000, "ก" * 2001, 5, None, "<b>hi</b>"])
    elif op == 6:
        rep["lang"] = rng.choice(["th", "en", "TH", "fr", None])
    else:
        rep["ts"] = rng.choice(BAD_TS + GOOD_TS)
    return rep


@pytest.mark.parametrize("seed", [7, 8])
def test_reports_match_reference(
    seed: int, validators: dict[str, jsonschema.Draft202012Validator]
) -> None:
    rng = random.Random(seed)
    ref = validators["report.v1.json"]
    results = []
    for _ in range(N_DOCS):
        doc = valid_report(rng)
        if rng.random() < 0.65:
            doc = mutate_report(rng, doc)
        raw = orjson.dumps(doc)
        ours = not isinstance(decode_report(raw), schemas.Rejection)
        assert ours == ref.is_valid(doc), raw
        results.append(ours)
    assert 0.2 < sum(results) / len(results) < 0.8


def mutate_ack(rng: random.Random, ack: dict[str, Any]) -> Any:
    ack = copy.deepcopy(ack)
    op = rng.randrange(6)
    if op == 0:
        ack.pop(rng.choice(list(ack)), None)
    elif op == 1:
        ack["operator"] = rng.choice(["", "o" * 64, "o" * 65, 7, None, "สมชาย"])
    elif op == 2:
        ack["note"] = rng.choice(["ก" * 500, "ก" * 501, 5, None, ""])
    elif op == 3:
        ack["extra"] = 1
    elif op == 4:
        ack["zone_id"] = rng.choice(["", "z" * 64, "z" * 65, None, "wat-yai-vihara"])
    else:
        ack["ts"] = rng.choice(BAD_TS + GOOD_TS)
    return ack


def test_acks_match_reference(validators: dict[str, jsonschema.Draft202012Validator]) -> None:
    rng = random.Random(11)
    ref = validators["ack.v1.json"]
    results = []
    for _ in range(N_DOCS):
        doc: dict[str, Any] = {"alert_id": rng.choice(STRINGS_OK), "operator": "somchai",
                               "ts": rng.choice(GOOD_TS)}
        if rng.random() < 0.5:
            doc["note"] = rng.choice(["รับทราบ ส่งเจ้าหน้าที่แล้ว", "on my way", ""])
        if rng.random() < 0.65:
            doc = mutate_ack(rng, doc)
        raw = orjson.dumps(doc)
        got = decode_ack(raw)
        assert (not isinstance(got, schemas.Rejection)) == ref.is_valid(doc), raw
        if isinstance(got, Ack):  # what we encode decodes to the same acknowledgement
            assert ref.is_valid(orjson.loads(encode_ack(got)))
            assert decode_ack(encode_ack(got)) == got
        results.append(not isinstance(got, schemas.Rejection))
    assert 0.2 < sum(results) / len(results) < 0.8


def valid_alert(rng: random.Random) -> dict[str, Any]:
    level = rng.choice(["elevated", "high", "critical", "normal"])
    alert: dict[str, Any] = {
        "alert_id": rng.choice(STRINGS_OK), "zone_id": rng.choice(STRINGS_OK[:3]),
        "level": level, "previous_level": rng.choice(["normal", "high"]),
        "status": rng.choice(["raised", "escalated", "deescalated", "resolved", "updated"]),
        "reason": rng.choice(["density", "forecast", "report", "sensing_lost", "new-reason"]),
        "seq": rng.randint(1, 9), "density": rng.choice([None, 0, 4.62]), "occupancy": None,
        "window_start": "2026-02-15T12:29:00Z", "window_end": "2026-02-15T12:30:00Z",
        "ts": "2026-02-15T12:30:00Z", "message": {"th": "ข้อความ", "en": "text"},
    }
    if rng.random() < 0.4:
        alert["density_estimate"] = rng.choice([0, 5.31, 12])
    if rng.random() < 0.3:
        alert["stepped_below"] = rng.choice(["elevated", "high", "critical"])
    if rng.random() < 0.3:
        alert["unshelved"] = True
    return alert


def mutate_alert(rng: random.Random, alert: dict[str, Any]) -> Any:
    """Mutations of the fields :func:`schemas.decode_alert` checks (it is not the whole
    schema: it lets what no consumer relies on pass)."""
    alert = copy.deepcopy(alert)
    op = rng.randrange(9)
    if op == 0:
        alert.pop(rng.choice(["alert_id", "zone_id", "ts", "level", "status"]))
    elif op == 1:
        alert[rng.choice(["alert_id", "zone_id"])] = _string(rng, 64)
    elif op == 2:
        alert[rng.choice(["level", "previous_level", "stepped_below"])] = rng.choice(
            ["CRITICAL", "severe", "", 3, None, "high", "normal"])
    elif op == 3:
        alert["status"] = rng.choice(["raised", "cleared", "", None, 1])
    elif op == 4:
        alert["density"] = rng.choice([None, 0, -0.1, "4.6", True, 3])
    elif op == 5:
        alert["density_estimate"] = rng.choice([0, 5.3, -0.1, None, "5.3", True, [5.3]])
    elif op == 6:
        alert["unshelved"] = rng.choice([True, False, 1, "true", None])
    elif op == 7:
        alert["seq"] = rng.choice([1, 2.0, 0, -1, 1.5, "1", True])
    else:
        alert["message"] = rng.choice([{"th": "ก", "en": "e"}, {"th": 1}, "text", None, {}])
    return alert


def test_alerts_match_reference_on_what_consumers_check(
        validators: dict[str, jsonschema.Draft202012Validator]) -> None:
    rng = random.Random(13)
    ref = validators["alert.v1.json"]
    results = []
    for _ in range(N_DOCS):
        doc = valid_alert(rng)
        if rng.random() < 0.65:
            doc = mutate_alert(rng, doc)
        raw = orjson.dumps(doc)
        ours = not isinstance(decode_alert(raw), schemas.Rejection)
        assert ours == ref.is_valid(doc), raw
        results.append(ours)
    assert 0.2 < sum(results) / len(results) < 0.8


def test_every_schema_file_is_valid_draft_2020_12() -> None:
    for name in schemas.SCHEMA_FILES:
        jsonschema.Draft202012Validator.check_schema(_load(name))
