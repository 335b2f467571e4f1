"""The principals' ACL file (deploy/kafka/acls.json), its loader, and the secured broker's
certificates and passwords."""

from __future__ import annotations

import json
import ssl
from dataclasses import replace
from pathlib import Path

import pytest
from aiokafka.errors import TopicAuthorizationFailedError

from agents.acls import Acl, ApplyResult, format_result, load_acls, principals
from agents.config import Settings, Topics
from agents.devtools.certs import ensure_passwords, ensure_tls
from agents.kafka import KafkaConfig, KafkaDenied, Secret
from schemas import ConfigError


def settings() -> Settings:
    return replace(Settings.from_env({}), topics=Topics("x."), app_id="w")


def test_the_file_fills_in_the_prefix_and_app_id_and_grants_no_wildcards() -> None:
    acls = load_acls(settings())
    assert principals() == ["integrator", "worker", "notifier", "dashboard", "operator"]
    assert Acl("User:integrator", "topic", "x.sensor-events.v1", "literal", "Write") in acls
    assert Acl("User:worker", "topic", "w-", "prefixed", "Create") in acls
    assert Acl("User:worker", "group", "w", "literal", "Read") in acls
    assert Acl("User:notifier", "group", "w-notify-", "prefixed", "Read") in acls
    assert all("{" not in a.name for a in acls)
    assert all(a.operation != "All" for a in acls)
    assert all(a.permission == "allow" for a in acls)
    # Only the operator touches the cluster resource, and nobody gets a literal "*".
    assert {a.principal for a in acls if a.resource == "cluster"} == {"User:operator"}
    assert all(a.name != "*" for a in acls)


def test_what_the_integrator_and_dashboard_may_not_do() -> None:
    acls = load_acls(settings())
    integrator = {(a.name, a.operation) for a in acls if a.principal == "User:integrator"}
    assert integrator == {("x.sensor-events.v1", "Write"), ("x.reports.v1", "Write")}
    dashboard = {(a.name, a.operation) for a in acls if a.principal == "User:dashboard"}
    assert ("x.alerts.v1", "Write") not in dashboard
    assert ("x.acks.v1", "Write") in dashboard
    writers_of_alerts = {a.principal for a in acls
                         if a.name == "x.alerts.v1" and a.operation == "Write"}
    assert writers_of_alerts == {"User:worker"}
    zone_writers = {a.principal for a in acls
                    if a.name == "x.zones.v1" and a.operation == "Write"}
    assert zone_writers == {"User:operator"}


def test_acl_wire_codes_are_kafkas() -> None:
    a = Acl("User:worker", "topic", "w-", "prefixed", "Read")
    # TOPIC=2, PREFIXED=4, READ=3, ALLOW=3 (org.apache.kafka.common.acl / .resource)
    assert a.key() == (2, "w-", 4, "User:worker", "*", 3, 3)


@pytest.mark.parametrize(("doc", "needle"), [
    ({}, "no \"principals\""),
    ({"principals": {"a": {"acls": [{"resource": "user", "name": "x", "ops": ["Read"]}]}}},
     "resource 'user'"),
    ({"principals": {"a": {"acls": [{"resource": "topic", "name": "x", "ops": ["Eat"]}]}}},
     "ops ['Eat']"),
    ({"principals": {"a": {"acls": [{"resource": "topic", "name": "{zone}", "ops": ["Read"]}]}}},
     "only {prefix} and {app_id}"),
    ({"principals": {"a": {}}}, "needs an \"acls\" list"),
])
def test_a_bad_file_is_one_line_naming_it(tmp_path: Path, doc: object, needle: str) -> None:
    p = tmp_path / "acls.json"
    p.write_text(json.dumps(doc))
    with pytest.raises(ConfigError) as e:
        load_acls(settings(), p)
    assert needle in str(e.value)
    assert str(p) in str(e.value)
    assert "\n" not in str(e.value)


def test_result_report_counts_each_kind() -> None:
    a = Acl("User:x", "topic", "t", "literal", "Read")
    b = Acl("User:x", "topic", "u", "prefixed", "Write")
    lines = list(format_result(ApplyResult([a], [b], []), dry_run=True))
    assert lines[0].startswith("would create")
    assert "topic t" in lines[0]
    assert lines[1].startswith("present")
    assert "topic u*" in lines[1]
    assert lines[-1] == "1 would create, 1 already present, 0 on the cluster but not in the "\
        "file (kept)"


def test_a_denied_operation_names_the_user_never_the_password() -> None:
    cfg = KafkaConfig("h:1", security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
                      user="integrator",
                      password=Secret("s3cret-pw"))
    err = cfg.unreachable(TopicAuthorizationFailedError("t.alerts.v1 s3cret-pw"))
    assert isinstance(err, KafkaDenied)
    assert "denied user 'integrator'" in str(err)
    assert "s3cret-pw" not in str(err)


def test_tls_files_are_made_once_private_and_verify(tmp_path: Path) -> None:
    files = ensure_tls(tmp_path / "tls")
    for private in (files.broker, files.key):
        assert private.stat().st_mode & 0o777 == 0o600
    before = files.ca.read_bytes()
    assert ensure_tls(tmp_path / "tls").ca.read_bytes() == before
    ctx = ssl.create_default_context(cafile=str(files.ca))
    ctx.load_cert_chain(str(files.cert), str(files.key))  # the key matches the certificate
    assert b"PRIVATE KEY" in files.broker.read_bytes()
    assert b"PRIVATE KEY" not in files.ca.read_bytes()


def test_passwords_are_random_private_and_kept(tmp_path: Path) -> None:
    first = ensure_passwords(tmp_path, ["a", "b"])
    pa, pb = (first[n].read_text().strip() for n in ("a", "b"))
    assert pa != pb
    assert len(pa) == 48
    assert all(c in "0123456789abcdef" for c in pa)
    assert first["a"].stat().st_mode & 0o777 == 0o600
    again = ensure_passwords(tmp_path, ["a"])
    assert again["a"].read_text().strip() == pa


def test_a_denial_names_its_error_type_once() -> None:
    """aiokafka's text is "[Error 29] TopicAuthorizationFailedError: ...": not repeated."""
    from aiokafka.errors import ClusterAuthorizationFailedError  # noqa: PLC0415

    cfg = KafkaConfig("h:1", security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
                      user="integrator", password=Secret("pw"))
    err = str(cfg.unreachable(TopicAuthorizationFailedError("t.zones.v1")))
    assert err == ("Kafka at h:1 denied user 'integrator': TopicAuthorizationFailedError: "
                   "t.zones.v1 (ACLs: deploy/kafka/acls.json)")
    err = str(cfg.unreachable(ClusterAuthorizationFailedError()))
    assert err.count("ClusterAuthorizationFailedError") == 1
    assert "[Error" not in err


def _allowed(acls: list[Acl], user: str, resource: str, name: str, op: str) -> bool:
    """Whether the file lets ``user`` do ``op`` on ``name`` (a literal or prefixed ACL; Read
    and Write imply Describe)."""
    ops = {op, "Read", "Write"} if op == "Describe" else {op}
    return any(a.principal == f"User:{user}" and a.resource == resource and
               a.operation in ops and
               (a.name == name if a.pattern == "literal" else name.startswith(a.name))
               for a in acls)


def test_a_drill_runs_as_the_operator_with_its_worker_as_the_worker() -> None:
    """What `safetour run --drill` does on a secured cluster (README "Drills"), each step
    under the principal that does it: the operator creates the drill's topics, publishes its
    readings, reads the real alerts and the drill's dashboard topics; the drill's worker
    (`--worker-password-file`) reads and writes the drill's topics, joins its own group and
    writes the real alerts and CAP."""
    from agents.run import drill_settings  # noqa: PLC0415
    from agents.topics import topic_specs  # noqa: PLC0415

    real = settings()
    acls = load_acls(real)
    t = drill_settings(real, "20260216-130000").topics
    app_id = drill_settings(real, "20260216-130000").app_id
    operator = [("Create", s.name) for s in topic_specs(t)] + [
        ("Write", t.sensor_events), ("Write", t.reports), ("Read", t.alerts),
        ("Read", t.density), ("Read", t.acks), ("Write", t.acks), ("Read", t.health),
        ("Read", t.shelves), ("Describe", t.sensor_events)]
    worker = [("Read", n) for n in (t.sensor_events, t.reports, t.zones, t.state, t.by_zone)] \
        + [("Write", n) for n in (t.state, t.by_zone, t.density, t.dlq, t.health, t.alerts,
                                  t.alerts_cap)] \
        + [("Create", f"{app_id}-__assignor-__leader"), ("Describe", t.zones)]
    for op, name in operator:
        assert _allowed(acls, "operator", "topic", name, op), (op, name)
    for op, name in worker:
        assert _allowed(acls, "worker", "topic", name, op), (op, name)
    assert _allowed(acls, "worker", "group", app_id, "Read")
    # Still: only the worker writes the real alerts, nobody but the integrator (and the
    # operator only on a drill's own topics) writes input, and the drill grants nothing on the
    # real input to the operator.
    assert t.alerts == real.topics.alerts
    assert not _allowed(acls, "operator", "topic", t.alerts, "Write")
    assert not _allowed(acls, "operator", "topic", real.topics.sensor_events, "Write")
    assert not _allowed(acls, "operator", "topic", real.topics.reports, "Write")
    assert not _allowed(acls, "integrator", "topic", t.sensor_events, "Write")
    assert not _allowed(acls, "dashboard", "topic", t.sensor_events, "Write")
    assert not _allowed(acls, "worker", "group", f"{real.app_id}-notify-line", "Read")
