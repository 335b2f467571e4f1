"""Certificates and passwords of the secured embedded broker (``safetour broker start --secure``).

:func:`ensure_tls` makes, once, a private CA and a broker certificate signed by it (for
``127.0.0.1`` and ``localhost``), as PEM files Kafka reads directly (KIP-651): ``ca.pem``
(public: clients trust it), ``broker.pem`` (the broker's PKCS#8 key and its certificate, mode
0600: only the broker and the local super user hold it). :func:`ensure_passwords` makes one
random password a principal, each in ``<name>.password`` (mode 0600). Nothing here logs a key
or a password.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

BROKER_CN = "safetour-broker"
CA_CN = "safetour local CA"
# The broker's principal on its mTLS listeners (Kafka's default SSL principal: the subject DN).
BROKER_PRINCIPAL = f"User:CN={BROKER_CN}"


@dataclass(frozen=True, slots=True)
class TlsFiles:
    ca: Path  # the CA certificate (PEM): what clients trust
    broker: Path  # the broker's key and certificate chain (PEM, mode 0600)
    cert: Path  # the broker's certificate alone (PEM): a client certificate for mTLS
    key: Path  # the broker's key alone (PEM, mode 0600)


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path``, readable by its owner only, from the first byte on."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def ensure_tls(directory: Path, *, days: int = 825) -> TlsFiles:
    """The CA and broker certificate in ``directory``, made now if they are not there."""
    files = TlsFiles(directory / "ca.pem", directory / "broker.pem",
                     directory / "broker-cert.pem", directory / "broker-key.pem")
    if all(p.exists() for p in (files.ca, files.broker, files.cert, files.key)):
        return files
    from cryptography import x509  # noqa: PLC0415
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: PLC0415
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: PLC0415

    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    until = now + dt.timedelta(days=days)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca = (x509.CertificateBuilder().subject_name(name(CA_CN)).issuer_name(name(CA_CN))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now).not_valid_after(until)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, key_cert_sign=True, crl_sign=True,
                                       encipher_only=False, decipher_only=False),
                         critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (x509.CertificateBuilder().subject_name(name(BROKER_CN)).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(until)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            # The broker is a TLS server to clients and a TLS client of its own controller.
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    cert_pem = cert.public_bytes(pem)
    ca_pem = ca.public_bytes(pem)
    # The CA's key is not kept: no new certificate can be signed with it (rotation makes a
    # new CA: delete the tls/ directory and start again).
    _write_private(files.key, key_pem)
    _write_private(files.broker, key_pem + cert_pem + ca_pem)
    files.cert.write_bytes(cert_pem)
    files.ca.write_bytes(ca_pem)
    return files


def ensure_passwords(directory: Path, names: Iterable[str]) -> dict[str, Path]:
    """``{name: password file}``: a random password each (made now if missing), mode 0600."""
    directory.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    for n in names:
        p = directory / f"{n}.password"
        if not p.exists():
            # Hex: no character that Kafka's `--add-scram` parser or a shell treats specially.
            _write_private(p, (secrets.token_hex(24) + "\n").encode())
        out[n] = p
    return out
