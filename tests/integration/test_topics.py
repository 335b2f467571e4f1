"""Topic creation is idempotent and applies the documented settings."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from .conftest import make_settings, settings_env


async def _config(kafka: str, topic: str) -> dict[str, str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
    await admin.start()
    try:
        (resp,) = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic)])
        (_, _, _, _, entries) = resp.resources[0]
        return {e[0]: e[1] for e in entries}
    finally:
        await admin.close()


def test_topics_create_twice_then_exist_with_documented_config(
    kafka: str, tmp_path: Path
) -> None:
    s = make_settings(kafka, tmp_path)
    cmd = [sys.executable, "-m", "agents", "topics", "create"]
    first = subprocess.run(cmd, env=settings_env(s), capture_output=True, text=True, check=True)
    second = subprocess.run(cmd, env=settings_env(s), capture_output=True, text=True, check=True)
    assert first.stdout.count("created") == 14
    assert second.stdout.count("exists") == 14
    zones = asyncio.run(_config(kafka, s.topics.zones))
    assert zones["cleanup.policy"] == "compact"
    dlq = asyncio.run(_config(kafka, s.topics.dlq))
    assert dlq["cleanup.policy"] == "delete"
    assert int(dlq["max.message.bytes"]) >= 4 * 1024 * 1024
    # The internal by-zone topic: the router stamps each record with its original arrival.
    by_zone = asyncio.run(_config(kafka, s.topics.by_zone))
    assert by_zone["message.timestamp.type"] == "CreateTime"
    assert by_zone["retention.ms"] == str(7 * 24 * 3600 * 1000)
