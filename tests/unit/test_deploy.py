"""Deployment files: valid against their schemas offline, and consistent with the code."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import yaml

import agents.metrics
from agents.config import Topics
from agents.topics import topic_specs

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
BIN = Path(sys.executable).parent


def test_kubernetes_manifests_validate_strictly() -> None:
    res = subprocess.run([BIN / "kubernetes-validate", "--strict", "--no-warn",
                          DEPLOY / "k8s/safetour.yaml"], capture_output=True, text=True,
                         timeout=120, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("passed") == 3


def test_strimzi_topics_match_the_code() -> None:
    schema = json.loads((DEPLOY / "k8s/kafkatopic.schema.json").read_text())
    docs = list(yaml.safe_load_all((DEPLOY / "k8s/topics.yaml").read_text()))
    for d in docs:
        jsonschema.Draft202012Validator(schema).validate(d)
    manifest = {d["metadata"]["name"]: d["spec"] for d in docs}
    for spec in topic_specs(Topics()):
        assert manifest[spec.name]["partitions"] == spec.partitions
        assert {k: str(v) for k, v in manifest[spec.name]["config"].items()} == spec.config
    assert len(manifest) == len(topic_specs(Topics()))


def test_compose_file_follows_the_compose_spec() -> None:
    res = subprocess.run([BIN / "check-jsonschema", "--builtin-schema", "vendor.compose-spec",
                          DEPLOY / "docker-compose.yml"], capture_output=True, text=True,
                         timeout=120, check=False)
    assert res.returncode == 0, res.stdout + res.stderr


def test_grafana_dashboard_uses_only_metrics_that_exist() -> None:
    dash = json.loads((DEPLOY / "grafana/safetour.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert len(dash["panels"]) >= 6
    known = set(re.findall(r'"(safetour_[a-z_]+)"', Path(agents.metrics.__file__).read_text()))
    known |= set(re.findall(r"record: (safetour:[a-z0-9_:]+)",
                            (DEPLOY / "prometheus/rules.yml").read_text()))
    used = {n for e in exprs for n in re.findall(r"safetour[_:][a-z0-9_:]+", e)}
    suffixes = ("_total", "_bucket", "_sum", "_count")
    missing = {n for n in used if n not in known and not any(
        n.endswith(s) and n[: -len(s)] in known for s in suffixes)}
    assert missing == set()
