"""safetour wire contracts, v1.

JSON Schema files for integrators live in ``schemas/json/`` (draft 2020-12); this package
holds the typed records and the fast decoder/validator that accepts exactly what those
schemas accept. Nothing here imports faust or aiokafka.
"""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable

from ._alerts import MAX_ALERT_BYTES, decode_alert
from ._dlq import MAX_DLQ_ITEMS, MAX_DLQ_VALUE_BYTES, dlq_headers, dlq_record, encode_dlq_record
from ._errors import ConfigError, ContractError, SafetourError, ZoneRegistryError
from ._records import (
    KIND_BY_WIRE,
    Ack,
    BoundaryCounter,
    Grid,
    Kind,
    Neighbour,
    Reason,
    Rejection,
    Report,
    SensorEvent,
    SensorSpec,
    Thresholds,
    Zone,
)
from ._validate import (
    MAX_BATCH_EVENTS,
    MAX_MESSAGE_BYTES,
    decode_ack,
    decode_json_object,
    decode_report,
    decode_sensor_items,
    decode_sensor_message,
    encode_ack,
    format_ts,
    parse_ts,
    positive_number,
    validate_sensor_event,
)
from ._zones import load_zones, parse_zone, parse_zones, zone_document

SCHEMA_FILES = (
    "sensor-event.v1.json",
    "sensor-message.v1.json",
    "report.v1.json",
    "zone.v1.json",
    "alert.v1.json",
    "dlq-record.v1.json",
    "ack.v1.json",
)


def schema_file(name: str) -> Traversable:
    """The packaged JSON Schema file ``name`` (one of :data:`SCHEMA_FILES`)."""
    if name not in SCHEMA_FILES:
        raise KeyError(f"no schema {name!r}; known: {', '.join(SCHEMA_FILES)}")
    return files(__name__).joinpath("json", name)


__all__ = [
    "KIND_BY_WIRE",
    "MAX_ALERT_BYTES",
    "MAX_BATCH_EVENTS",
    "MAX_DLQ_ITEMS",
    "MAX_DLQ_VALUE_BYTES",
    "MAX_MESSAGE_BYTES",
    "SCHEMA_FILES",
    "Ack",
    "BoundaryCounter",
    "ConfigError",
    "ContractError",
    "Grid",
    "Kind",
    "Neighbour",
    "Reason",
    "Rejection",
    "Report",
    "SafetourError",
    "SensorEvent",
    "SensorSpec",
    "Thresholds",
    "Zone",
    "ZoneRegistryError",
    "decode_ack",
    "decode_alert",
    "decode_json_object",
    "decode_report",
    "decode_sensor_items",
    "decode_sensor_message",
    "dlq_headers",
    "dlq_record",
    "encode_ack",
    "encode_dlq_record",
    "format_ts",
    "load_zones",
    "parse_ts",
    "parse_zone",
    "parse_zones",
    "positive_number",
    "schema_file",
    "validate_sensor_event",
    "zone_document",
]
