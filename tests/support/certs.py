"""Throwaway TLS certificates for the tests of clockwork's networking.

:func:`make_certificates` writes, into a directory, a certificate authority
of its own (``ca.pem``) and a server certificate it signed (``server.pem``,
the certificate followed by its private key, as ``clockwork.net.listen``
takes it), valid for the names and addresses asked for and for exactly as
many days as asked (plus an hour, so that a test reading "days left" gets
that number even if it runs for a while). :func:`self_signed` writes one
certificate signed by its own key. Keys are elliptic-curve (P-256): made in
a millisecond, where RSA takes tens.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class Certificates:
    """Where :func:`make_certificates` wrote its files.

    Attributes:
        ca: The authority's certificate (PEM): what a client trusts.
        server: The server's certificate then its private key (PEM).
        not_after: When the server's certificate expires.
    """

    ca: Path
    server: Path
    not_after: datetime.datetime


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _alternative_names(names: tuple[str, ...]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_certificates(
    directory: Path,
    names: tuple[str, ...] = ("localhost", "127.0.0.1"),
    days: int = 90,
) -> Certificates:
    """A CA and a server certificate it signed for ``names``, valid ``days``
    days (and an hour) from now; written to ``directory``. With ``days=-1``
    the certificate expired 23 hours ago (the CA is valid a month)."""
    now = datetime.datetime.now(datetime.UTC)
    not_after = now + datetime.timedelta(days=days, hours=1)
    not_before = min(now, not_after) - datetime.timedelta(days=1)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("procwork test CA"))
        .issuer_name(_name("procwork test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=max(days, 0) + 30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(_alternative_names(names), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca = directory / "ca.pem"
    ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    server = directory / "server.pem"
    server.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + _key_pem(key))
    return Certificates(ca, server, not_after.replace(microsecond=0))


def self_signed(
    directory: Path, names: tuple[str, ...] = ("localhost", "127.0.0.1")
) -> Path:
    """A certificate for ``names`` signed by its own key, then that key
    (PEM), written to ``directory``; valid for a year."""
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(_name(names[0]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(_alternative_names(names), critical=False)
        .sign(key, hashes.SHA256())
    )
    path = directory / "self-signed.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + _key_pem(key))
    return path
