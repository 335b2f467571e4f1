"""decode_alert: what the internal consumers (notifiers, escalator, dashboard) accept from
safetour.alerts.v1, and why they skip the rest."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from schemas import MAX_ALERT_BYTES, Reason, Rejection, decode_alert

GOOD: dict[str, Any] = {
    "alert_id": "naresuan-bridge:1771247185000:ab", "zone_id": "naresuan-bridge",
    "level": "critical", "previous_level": "high", "status": "escalated",
    "reason": "density", "density": 5.6, "ts": "2026-02-16T13:06:25.000Z", "seq": 2,
    "message": {"th": "วิกฤต", "en": "critical"}}


@pytest.mark.parametrize("doc", [
    GOOD,
    GOOD | {"reason": "sensing_lost", "density": None},  # a blind zone; reason enum is open
    GOOD | {"reason": "some_future_reason"},
    GOOD | {"seq": 1.0},  # JSON Schema's integer
    GOOD | {"extra": {"anything": [1, 2]}},  # later v1 fields pass through
    {k: v for k, v in GOOD.items()
     if k in ("alert_id", "zone_id", "level", "status", "ts")},  # the minimum
])
def test_good_alerts_decode_to_themselves(doc: dict[str, Any]) -> None:
    assert decode_alert(orjson.dumps(doc)) == doc


def drop(key: str) -> dict[str, Any]:
    return {k: v for k, v in GOOD.items() if k != key}


BAD: list[tuple[str, bytes | None, Reason, str]] = [
    ("tombstone", None, Reason.NOT_JSON, "no value"),
    ("empty", b"", Reason.NOT_JSON, "JSON"),
    ("not JSON", b"{\"alert_id\": ", Reason.NOT_JSON, "JSON"),
    ("not UTF-8", b"\xff\xfe{}", Reason.NOT_JSON, "JSON"),
    ("an array", orjson.dumps([GOOD]), Reason.SCHEMA, "object"),
    ("a string", b'"critical"', Reason.SCHEMA, "object"),
    ("null", b"null", Reason.SCHEMA, "object"),
    ("huge", b'{"x": "' + b"a" * MAX_ALERT_BYTES + b'"}', Reason.TOO_LARGE, "bytes"),
    *[(f"no {k}", orjson.dumps(drop(k)), Reason.SCHEMA, k)
      for k in ("alert_id", "zone_id", "level", "status", "ts")],
    ("alert_id a number", orjson.dumps(GOOD | {"alert_id": 7}), Reason.SCHEMA, "alert_id"),
    ("alert_id empty", orjson.dumps(GOOD | {"alert_id": ""}), Reason.SCHEMA, "alert_id"),
    ("alert_id huge", orjson.dumps(GOOD | {"alert_id": "a" * 129}), Reason.SCHEMA,
     "alert_id"),
    ("zone_id a list", orjson.dumps(GOOD | {"zone_id": ["a"]}), Reason.SCHEMA, "zone_id"),
    ("zone_id huge", orjson.dumps(GOOD | {"zone_id": "z" * 65}), Reason.SCHEMA, "zone_id"),
    ("ts a number", orjson.dumps(GOOD | {"ts": 1771247185000}), Reason.SCHEMA, "ts"),
    ("ts huge", orjson.dumps(GOOD | {"ts": "2" * 65}), Reason.SCHEMA, "ts"),
    ("unknown level", orjson.dumps(GOOD | {"level": "apocalyptic"}), Reason.SCHEMA, "level"),
    ("level a number", orjson.dumps(GOOD | {"level": 3}), Reason.SCHEMA, "level"),
    ("unknown status", orjson.dumps(GOOD | {"status": "exploded"}), Reason.SCHEMA, "status"),
    ("unknown previous_level", orjson.dumps(GOOD | {"previous_level": "x"}), Reason.SCHEMA,
     "previous_level"),
    ("previous_level null", orjson.dumps(GOOD | {"previous_level": None}), Reason.SCHEMA,
     "previous_level"),
    ("reason a number", orjson.dumps(GOOD | {"reason": 1}), Reason.SCHEMA, "reason"),
    ("reason huge", orjson.dumps(GOOD | {"reason": "r" * 65}), Reason.SCHEMA, "reason"),
    ("density a string", orjson.dumps(GOOD | {"density": "5.6"}), Reason.SCHEMA, "density"),
    ("density a bool", orjson.dumps(GOOD | {"density": True}), Reason.SCHEMA, "density"),
    ("density negative", orjson.dumps(GOOD | {"density": -1}), Reason.SCHEMA, "density"),
    ("seq zero", orjson.dumps(GOOD | {"seq": 0}), Reason.SCHEMA, "seq"),
    ("seq a fraction", orjson.dumps(GOOD | {"seq": 1.5}), Reason.SCHEMA, "seq"),
    ("seq a string", orjson.dumps(GOOD | {"seq": "1"}), Reason.SCHEMA, "seq"),
    ("seq a bool", orjson.dumps(GOOD | {"seq": True}), Reason.SCHEMA, "seq"),
    ("seq null", orjson.dumps(GOOD | {"seq": None}), Reason.SCHEMA, "seq"),
    ("message a string", orjson.dumps(GOOD | {"message": "critical"}), Reason.SCHEMA,
     "message"),
    ("message text a list", orjson.dumps(GOOD | {"message": {"th": ["x"], "en": "e"}}),
     Reason.SCHEMA, "message"),
]


@pytest.mark.parametrize(("value", "reason", "mentions"), [b[1:] for b in BAD],
                         ids=[b[0] for b in BAD])
def test_bad_alerts_are_rejected_with_a_reason(value: bytes | None, reason: Reason,
                                               mentions: str) -> None:
    got = decode_alert(value)
    assert isinstance(got, Rejection)
    assert got.reason is reason
    assert mentions in got.detail
    assert len(got.detail) < 300  # a detail never carries the value itself
