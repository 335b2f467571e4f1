"""A bounded fuzz run of the sensor-message decoder with hypothesis.

Two kinds of input: raw bytes (anything a producer can put in a value), and documents near
the contract (valid events mutated by field deletions, type swaps, huge and tiny numbers,
unicode, nesting, batches mixing good and bad items). The properties: the decoder never
raises; for a batch it accounts for every item (each one either an event or a rejection
naming its index); every rejection carries a reason of the contract; every event it returns
re-validates to itself; and its accept/reject decision agrees with the reference
``jsonschema`` validator of the published files (as ``test_schema_parity.py`` checks with
seeded mutations). ``derandomize=True`` and fixed example counts bound the run (~10 s) and
make it the same run every time.
"""

from __future__ import annotations

import random
from typing import Any

import jsonschema
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import (
    MAX_BATCH_EVENTS,
    MAX_MESSAGE_BYTES,
    Kind,
    Reason,
    SensorEvent,
    decode_sensor_message,
    validate_sensor_event,
)

from .test_schema_parity import (
    mutate_event,
    valid_event,
    validators,  # noqa: F401  (the module-scoped fixture)
)

FUZZ = settings(max_examples=400, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
REASONS = {r.value for r in Reason}
INT64 = 2**63 - 1

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-INT64, INT64),
    st.sampled_from([0, -1, 1, 1_000_000, 1_000_001, 2**53, 2**63 - 1, -(2**63)]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, 5e-324, 1e-300, 1e300, 1.7976931348623157e308, 0.5, 3.0]),
    st.text(max_size=40), st.sampled_from(["", "ก", "😀" * 65, "x" * 129, "\x00", "\u202e",
                                           "2026-02-15T19:30:00+07:00", "occupancy"]),
)
json_values = st.recursive(
    scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                     st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=12,
)
FIELDS = ["event_id", "sensor_id", "zone_id", "kind", "ts", "entries", "exits", "count",
          "devices", "coverage_m2", "confidence"]


@st.composite
def near_events(draw: st.DrawFn) -> Any:
    """A valid event, then a few mutations: the seeded ones of the parity test, deletions,
    any JSON value in any field, unknown fields, nesting."""
    rng = random.Random(draw(st.integers(0, 2**32)))
    ev: Any = valid_event(rng)
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.integers(0, 4))
        if not isinstance(ev, dict):
            break
        if op == 0:
            ev = mutate_event(rng, ev)
        elif op == 1 and ev:
            ev.pop(draw(st.sampled_from(sorted(ev))))
        elif op == 2:
            ev[draw(st.sampled_from(FIELDS))] = draw(json_values)
        elif op == 3:
            ev[draw(st.text(max_size=12))] = draw(json_values)
        else:
            ev = draw(st.sampled_from([[ev], {"event": ev}, [[ev]]]))
    return ev


documents = st.one_of(near_events(), st.lists(near_events(), max_size=12), json_values)


def dumps(doc: Any) -> bytes:
    return orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS)


def wire(ev: SensorEvent) -> dict[str, Any]:
    """A decoded event back as a contract document."""
    doc: dict[str, Any] = {"event_id": ev.event_id, "sensor_id": ev.sensor_id,
                           "zone_id": ev.zone_id, "kind": ev.kind.wire, "ts": ev.ts_ms,
                           "entries": ev.entries, "exits": ev.exits, "count": ev.count,
                           "devices": ev.devices}
    if ev.coverage_m2 is not None:
        doc["coverage_m2"] = ev.coverage_m2
    if ev.confidence is not None:
        doc["confidence"] = ev.confidence
    if ev.cells:
        doc["cells"] = [{"row": r, "col": c, "count": n} for r, c, n in ev.cells]
    if ev.points or (ev.kind is Kind.GRID_COUNT and not ev.cells):
        doc["points"] = [list(p) for p in ev.points]
    return doc


def check_decoding(value: bytes | None) -> tuple[list[SensorEvent], list[Any]]:
    events, rejections = decode_sensor_message(value)  # must not raise
    assert all(isinstance(e, SensorEvent) for e in events)
    assert all(r.reason.value in REASONS for r in rejections)
    assert all(isinstance(r.detail, str) and r.detail for r in rejections)
    for e in events:
        assert isinstance(e.kind, Kind)
        assert validate_sensor_event(orjson.loads(orjson.dumps(wire(e)))) == e
    doc: Any = None
    if value is not None and len(value) <= MAX_MESSAGE_BYTES:
        try:
            doc = orjson.loads(value)
        except orjson.JSONDecodeError:
            assert not events
            assert [r.reason for r in rejections] == [Reason.NOT_JSON]
            return events, rejections
    if isinstance(doc, list) and 0 < len(doc) <= MAX_BATCH_EVENTS:
        # Every item is an event or a rejection naming its index; order is kept.
        indexed = [r.index for r in rejections]
        assert all(i is not None and 0 <= i < len(doc) for i in indexed)
        assert len(set(indexed)) == len(indexed)
        assert len(events) + len(indexed) == len(doc)
        good = [i for i in range(len(doc)) if i not in set(indexed)]
        assert [e.event_id for e in events] == [doc[i]["event_id"] for i in good]
    elif value is not None:
        assert len(events) + len(rejections) >= 1
        assert not (events and rejections) or isinstance(doc, list)
    return events, rejections


@pytest.mark.slow
@FUZZ
@given(st.binary(max_size=4096))
def test_raw_bytes_never_break_the_decoder(value: bytes) -> None:
    check_decoding(value)


@pytest.mark.slow
@settings(FUZZ, max_examples=200)
@given(st.one_of(st.binary(max_size=64), near_events().map(dumps)).flatmap(
    lambda v: st.tuples(st.just(v), st.integers(0, max(len(v) - 1, 0)),
                        st.binary(min_size=1, max_size=4))))
def test_damaged_events_never_break_the_decoder(case: tuple[bytes, int, bytes]) -> None:
    value, at, junk = case
    check_decoding(value[:at] + junk + value[at + len(junk):])  # bytes overwritten in place


@pytest.mark.slow
@FUZZ
@given(documents)
def test_documents_near_the_contract_decode_as_the_reference_validates(
    validators: dict[str, jsonschema.Draft202012Validator], doc: Any,  # noqa: F811
) -> None:
    raw = dumps(doc)
    events, rejections = check_decoding(raw)
    parsed = orjson.loads(raw)
    ours = bool(events) and not rejections
    assert ours == validators["sensor-message.v1.json"].is_valid(parsed), (raw, rejections)
    if isinstance(parsed, list) and parsed:
        ref_event = validators["sensor-event.v1.json"]
        assert [r.index for r in rejections] == [
            i for i, it in enumerate(parsed) if not ref_event.is_valid(it)]


@settings(max_examples=20, deadline=None, derandomize=True, database=None)
@given(st.integers(1, 40), st.sampled_from([b"[", b"{\"a\":", b"[{\"ts\":"]))
def test_deep_nesting_is_not_json(extra: int, opener: bytes) -> None:
    depth = 1000 + extra * 250  # orjson stops at 1024 levels
    events, rejections = check_decoding(opener * depth)
    assert not events
    assert [r.reason for r in rejections] == [Reason.NOT_JSON]
