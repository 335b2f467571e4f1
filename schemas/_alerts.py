"""Decoding alerts (alert.v1.json) where safetour itself reads them back: the notifiers, the
escalator and the dashboard.

The worker writes these records, but anything with access to the topic can write there too (a
test tool, an old version, a mistake), and one bad record must not stop a consumer. This is
not the full schema: it checks the fields every consumer relies on, and lets optional fields a
later v1 may add pass through.

    alert_id, zone_id, ts   strings of 1..128, 1..64, 1..64 characters
    level, status           from the known sets; previous_level too when present
    reason                  a string (1..64) when present; the enum is OPEN, unknown values pass
    density                 a number >= 0 or null (a blind zone) when present
    seq                     an integer >= 1 when present (per-episode sequence number)
    message                 an object with th and en strings when present
    density_estimate        a number >= 0 when present (the rising-edge estimate)
    stepped_below           a level when present (a notify channel's step-down record)
    unshelved               a boolean when present (a notify channel's catch-up record)
"""

from __future__ import annotations

from typing import Any, Final

from ._records import Reason, Rejection
from ._validate import decode_json_object

MAX_ALERT_BYTES: Final = 1024 * 1024
"""Largest alert value decoded (Kafka's default message size limit)."""
ALERT_LEVELS: Final = frozenset(("normal", "elevated", "high", "critical"))
ALERT_STATUSES: Final = frozenset(("raised", "escalated", "deescalated", "resolved", "updated"))
_STRINGS: Final = (("alert_id", 128), ("zone_id", 64), ("ts", 64))


def _bad(detail: str) -> Rejection:
    return Rejection(Reason.SCHEMA, detail)


def _is_num(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)  # orjson reads no NaN


def decode_alert(value: bytes | None) -> dict[str, Any] | Rejection:
    """The alert dict of one ``safetour.alerts.v1`` message value, or why it is unusable."""
    doc = decode_json_object(value, MAX_ALERT_BYTES)
    if isinstance(doc, Rejection):
        return doc
    for key, hi in _STRINGS:
        if key not in doc:
            return _bad(f"/: missing required field {key!r}")
        v = doc[key]
        if not isinstance(v, str):
            return _bad(f"/{key}: must be a string")
        if not 1 <= len(v) <= hi:
            return _bad(f"/{key}: length must be 1..{hi}, got {len(v)}")
    for key, known, required in (("level", ALERT_LEVELS, True),
                                 ("status", ALERT_STATUSES, True),
                                 ("previous_level", ALERT_LEVELS, False),
                                 ("stepped_below", ALERT_LEVELS, False)):
        if key not in doc:
            if required:
                return _bad(f"/: missing required field {key!r}")
            continue
        v = doc[key]
        if not isinstance(v, str) or v not in known:
            return _bad(f"/{key}: must be one of {', '.join(sorted(known))}")
    reason = doc.get("reason")
    if "reason" in doc and not (isinstance(reason, str) and 1 <= len(reason) <= 64):
        return _bad("/reason: must be a string of 1..64 characters")
    density = doc.get("density")
    if density is not None and not (_is_num(density) and density >= 0):
        return _bad("/density: must be a number >= 0 or null")
    if "density_estimate" in doc:
        est = doc["density_estimate"]
        if not (_is_num(est) and est >= 0):
            return _bad("/density_estimate: must be a number >= 0")
    if "unshelved" in doc and not isinstance(doc["unshelved"], bool):
        return _bad("/unshelved: must be a boolean")
    if "seq" in doc:
        seq = doc["seq"]
        # JSON Schema's integer: 3.0 is one too (as in schemas/_validate.py)
        if not (_is_num(seq) and float(seq).is_integer() and seq >= 1):
            return _bad("/seq: must be an integer >= 1")
    if "message" in doc:
        msg = doc["message"]
        if not isinstance(msg, dict) or not all(
                isinstance(msg.get(lang), str) for lang in ("th", "en")):
            return _bad("/message: must be an object with text th and en")
    return doc
