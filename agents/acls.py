"""safetour's Kafka principals and ACLs, shipped as data (``deploy/kafka/acls.json``).

:func:`load_acls` reads the file and fills in the topic prefix and the app id;
:func:`apply_acls` creates on any cluster the ACLs it lacks (``safetour acls apply``), with
Kafka's own CreateAcls / DescribeAcls requests through aiokafka's protocol classes (aiokafka's
admin client has no ACL methods; no Java needed). An ACL already present is left as it is;
none is ever deleted.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas import ConfigError, SafetourError

from .config import Settings, repo_root
from .kafka import KafkaConfig

# Kafka's protocol codes (org.apache.kafka.common.acl / .resource).
RESOURCE_TYPES = {"topic": 2, "group": 3, "cluster": 4, "transactional_id": 5}
PATTERNS = {"literal": 3, "prefixed": 4}
OPERATIONS = {"All": 2, "Read": 3, "Write": 4, "Create": 5, "Delete": 6, "Alter": 7,
              "Describe": 8, "ClusterAction": 9, "DescribeConfigs": 10, "AlterConfigs": 11,
              "IdempotentWrite": 12}
PERMISSIONS = {"deny": 2, "allow": 3}
_ANY = 1
_NAMES = {kind: {v: k for k, v in table.items()}
          for kind, table in (("resource", RESOURCE_TYPES), ("pattern", PATTERNS),
                              ("op", OPERATIONS), ("permission", PERMISSIONS))}


class AclError(SafetourError, RuntimeError):
    """ACLs could not be read, described or created."""


def default_file() -> Path:
    return repo_root() / "deploy/kafka/acls.json"


@dataclass(frozen=True, slots=True, order=True)
class Acl:
    """One access control entry: ``principal`` may (or may not) do ``operation`` on a
    resource."""

    principal: str  # "User:worker"
    resource: str  # topic, group, cluster, transactional_id
    name: str
    pattern: str  # literal or prefixed
    operation: str  # Read, Write, ...
    permission: str = "allow"
    host: str = "*"

    def key(self) -> tuple[int, str, int, str, str, int, int]:
        return (RESOURCE_TYPES[self.resource], self.name, PATTERNS[self.pattern],
                self.principal, self.host, OPERATIONS[self.operation],
                PERMISSIONS[self.permission])

    def __str__(self) -> str:
        pattern = "*" if self.pattern == "prefixed" else ""
        return (f"{self.principal:<16} {self.permission} {self.operation:<15} "
                f"{self.resource} {self.name}{pattern}")


def principals(path: Path | None = None) -> list[str]:
    """The user names the file defines (one SCRAM user each)."""
    return list(_read(path or default_file())["principals"])


def _read(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise ConfigError(f"{path}: not JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("principals"), dict):
        raise ConfigError(f"{path}: no \"principals\" object")
    return doc


def load_acls(settings: Settings, path: Path | None = None) -> list[Acl]:
    """Every ACL of the file, for ``settings``' topic prefix and app id; ConfigError (one
    line, naming the file and the principal) for an entry it cannot use."""
    p = path or default_file()
    doc = _read(p)
    subst = {"prefix": settings.topics.prefix, "app_id": settings.app_id}
    out: list[Acl] = []
    for user, spec in doc["principals"].items():
        where = f"{p}: principal {user!r}"
        if not isinstance(spec, dict) or not isinstance(spec.get("acls"), list):
            raise ConfigError(f"{where}: needs an \"acls\" list")
        for i, entry in enumerate(spec["acls"]):
            if not isinstance(entry, dict):
                raise ConfigError(f"{where}: acls[{i}] is not an object")
            resource = entry.get("resource")
            pattern = entry.get("pattern", "literal")
            permission = entry.get("permission", "allow")
            ops = entry.get("ops")
            raw_name = entry.get("name")
            if resource not in RESOURCE_TYPES:
                raise ConfigError(f"{where}: acls[{i}].resource {resource!r}: use one of "
                                  f"{', '.join(RESOURCE_TYPES)}")
            if pattern not in PATTERNS or permission not in PERMISSIONS:
                raise ConfigError(f"{where}: acls[{i}]: pattern literal|prefixed, "
                                  "permission allow|deny")
            if not isinstance(raw_name, str) or not raw_name:
                raise ConfigError(f"{where}: acls[{i}].name is missing")
            if not isinstance(ops, list) or not ops or \
                    any(o not in OPERATIONS for o in ops):
                raise ConfigError(f"{where}: acls[{i}].ops {ops!r}: use "
                                  f"{', '.join(OPERATIONS)}")
            try:
                name = raw_name.format(**subst)
            except (KeyError, IndexError, ValueError):
                raise ConfigError(f"{where}: acls[{i}].name {raw_name!r}: only {{prefix}} "
                                  "and {app_id} can be filled in") from None
            out.extend(Acl(f"User:{user}", resource, name, pattern, op, permission)
                       for op in ops)
    return sorted(set(out))


# -- the wire ------------------------------------------------------------------------------
def _requests() -> tuple[type[Any], type[Any]]:
    """Request builders carrying many ACLs at once (aiokafka's carry one): CreateAcls v1
    and DescribeAcls v1, the lowest versions Kafka 4 still serves (KIP-896)."""
    from aiokafka.protocol.admin import (  # noqa: PLC0415
        CreateAclsRequest_v1,
        DescribeAclsRequest_v1,
    )
    from aiokafka.protocol.api import Request  # noqa: PLC0415

    class CreateAcls(Request[CreateAclsRequest_v1]):  # type: ignore[misc]
        API_KEY = 30

        def __init__(self, creations: list[tuple[Any, ...]]) -> None:
            self._creations = creations

        def build(self, request_struct_class: type[CreateAclsRequest_v1]
                  ) -> CreateAclsRequest_v1:
            return request_struct_class(self._creations)

    class DescribeAcls(Request[DescribeAclsRequest_v1]):  # type: ignore[misc]
        API_KEY = 29

        def build(self, request_struct_class: type[DescribeAclsRequest_v1]
                  ) -> DescribeAclsRequest_v1:
            # Every ACL: any resource, any name, any pattern, principal, host, op, permission.
            return request_struct_class(_ANY, None, _ANY, None, None, _ANY, _ANY)

    return CreateAcls, DescribeAcls


def _error(code: int, message: str | None, what: str) -> AclError:
    from aiokafka.errors import for_code  # noqa: PLC0415

    name = for_code(code).__name__
    hint = (" (these credentials may not manage ACLs: the cluster needs Alter for "
            "CreateAcls and Describe for DescribeAcls)"
            if code == 31 else "")  # CLUSTER_AUTHORIZATION_FAILED
    return AclError(f"{what}: {name}{': ' + message if message else ''}{hint}")


async def describe_acls(admin: Any) -> list[Acl]:
    """Every ACL on the cluster (what these credentials may describe)."""
    _, describe = _requests()
    resp = await admin._send_request(describe())
    if resp.error_code:
        raise _error(resp.error_code, resp.error_message, "describing ACLs failed")
    out: list[Acl] = []
    for rtype, rname, ptype, entries in resp.resources:
        for principal, host, op, perm in entries:
            try:
                out.append(Acl(principal, _NAMES["resource"][rtype], rname,
                               _NAMES["pattern"][ptype], _NAMES["op"][op],
                               _NAMES["permission"][perm], host))
            except KeyError:
                continue  # a kind of ACL safetour never makes (a user resource, ...)
    return out


@dataclass(frozen=True, slots=True)
class ApplyResult:
    created: list[Acl]
    present: list[Acl]
    # ACLs on the cluster for the file's principals that the file does not list (kept).
    extra: list[Acl]


async def apply_acls(cfg: KafkaConfig, acls: Sequence[Acl], *,
                     dry_run: bool = False) -> ApplyResult:
    """Create the ACLs of ``acls`` the cluster lacks (none with ``dry_run``)."""
    wanted = sorted(set(acls))
    admin = cfg.admin()
    async with cfg.running(admin):
        try:
            existing = set(await asyncio.wait_for(describe_acls(admin),
                                                  cfg.connect_timeout_s))
            missing = [a for a in wanted if a not in existing]
            if missing and not dry_run:
                create, _ = _requests()
                resp = await asyncio.wait_for(
                    admin._send_request(create([a.key() for a in missing])),
                    cfg.connect_timeout_s)
                for acl, (code, message) in zip(missing, resp.creation_responses,
                                                strict=True):
                    if code:
                        raise _error(code, message, f"creating ACL [{acl}] failed")
        except TimeoutError:
            raise cfg.unreachable(f"no answer within {cfg.connect_timeout_s:.3g}s") \
                from None
    users = {a.principal for a in wanted}
    return ApplyResult(
        created=missing, present=[a for a in wanted if a in existing],
        extra=sorted(a for a in existing if a.principal in users and a not in set(wanted)))


def format_result(result: ApplyResult, *, dry_run: bool) -> Iterable[str]:
    verb = "would create" if dry_run else "created"
    for a in result.created:
        yield f"{verb:<12} {a}"
    for a in result.present:
        yield f"{'present':<12} {a}"
    for a in result.extra:
        yield f"{'not in file':<12} {a}"
    yield (f"{len(result.created)} {verb}, {len(result.present)} already present, "
           f"{len(result.extra)} on the cluster but not in the file (kept)")


def acls_of(acls: Iterable[Acl], user: str) -> list[Acl]:
    return [a for a in acls if a.principal == f"User:{user}"]


def by_principal(acls: Iterable[Acl]) -> Mapping[str, list[Acl]]:
    out: dict[str, list[Acl]] = {}
    for a in acls:
        out.setdefault(a.principal, []).append(a)
    return out
