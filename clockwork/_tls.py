"""TLS for clockwork.net: whom to trust, what a certificate says, and why a
handshake failed, in words.

All of it is Twisted's TLS (``twisted.internet.ssl``, on pyOpenSSL, with
``service_identity`` checking the host name: Twisted's ``tls`` extra). The
client side verifies by default, like a browser: the certificate must chain
to a trusted authority (the system's, or those of a ``ca_file``) and be for
the name connected to. There is no switch to turn that off; a service with
a self-signed certificate is trusted by giving that certificate as the
``ca_file``.
"""

from __future__ import annotations

import datetime
import os
import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Certificate",
    "certificate_of",
    "client_creator",
    "peer_certificate",
    "server_options",
    "tls_failure_words",
    "trust_root",
]

_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL
)
_PEM_KEY = re.compile(
    rb"-----BEGIN ([A-Z ]*)PRIVATE KEY-----.+?-----END \1PRIVATE KEY-----", re.DOTALL
)


@dataclass(frozen=True)
class Certificate:
    """What the other end's TLS certificate says, for a check to judge.

    Attributes:
        subject: Its subject's common name ("" if it has none).
        issuer: Its issuer's common name ("" if it has none).
        names: The DNS names and IP addresses it is valid for
            (its subjectAltName), in its order.
        not_before: When it starts to be valid (UTC).
        not_after: When it expires (UTC).
    """

    subject: str
    issuer: str
    names: tuple[str, ...]
    not_before: datetime.datetime
    not_after: datetime.datetime

    def days_left(self, now: datetime.datetime | None = None) -> int:
        """Whole days until it expires, counted from ``now`` (default: the
        wall clock's now); negative once it has expired. A certificate that
        expires in 89 days and 23 hours has 89 days left."""
        if now is None:
            now = datetime.datetime.now(datetime.UTC)
        return (self.not_after - now).days

    @property
    def self_signed(self) -> bool:
        """Issued by itself (subject and issuer the same)."""
        return self.subject == self.issuer

    def describe(self) -> str:
        """``'localhost' issued by 'Example CA', expires 2027-03-05``."""
        return (
            f"{self.subject!r} issued by {self.issuer!r}, "
            f"expires {self.not_after:%Y-%m-%d}"
        )


def certificate_of(x509: Any) -> Certificate:
    """A :class:`Certificate` of a pyOpenSSL ``X509`` (what Twisted's
    ``getPeerCertificate`` gives), read with ``cryptography``."""
    from cryptography import x509 as cx509
    from cryptography.x509.oid import NameOID

    cert = x509.to_cryptography()

    def common_name(name: cx509.Name) -> str:
        values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
        value = values[0].value if values else ""
        return value if isinstance(value, str) else value.decode("utf-8", "replace")

    names: list[str] = []
    try:
        alternative = cert.extensions.get_extension_for_class(
            cx509.SubjectAlternativeName
        ).value
    except cx509.ExtensionNotFound:
        pass
    else:
        for entry in alternative:
            if isinstance(entry, cx509.DNSName | cx509.IPAddress):
                names.append(str(entry.value))
    return Certificate(
        subject=common_name(cert.subject),
        issuer=common_name(cert.issuer),
        names=tuple(names),
        not_before=_utc(cert, "not_valid_before"),
        not_after=_utc(cert, "not_valid_after"),
    )


def peer_certificate(transport: Any) -> Certificate | None:
    """The certificate the other end of a TLS ``transport`` (Twisted's
    ``TLSMemoryBIOProtocol``) showed; None if it showed none (yet).

    Also when the handshake failed: then ``getPeerCertificate`` has none (an
    unverified certificate is not the peer's), but the chain the peer sent
    is still on the connection (``getHandle``), and its first certificate
    says why it was refused.
    """
    try:
        x509 = transport.getPeerCertificate()
        if x509 is None:
            chain = transport.getHandle().get_peer_cert_chain()
            x509 = chain[0] if chain else None
    except Exception:  # no TLS connection (any more): nothing to say
        return None
    return None if x509 is None else certificate_of(x509)


def _utc(cert: Any, field: str) -> datetime.datetime:
    # cryptography 42 added the aware *_utc properties and deprecated the
    # naive ones (which are UTC); older releases have only those.
    aware = getattr(cert, f"{field}_utc", None)
    if isinstance(aware, datetime.datetime):
        return aware
    naive: datetime.datetime = getattr(cert, field)
    return naive.replace(tzinfo=datetime.UTC)


def trust_root(ca_file: str | os.PathLike[str] | None) -> Any:
    """Whom a client trusts: the certificates of the PEM file ``ca_file``
    (one or more; a self-signed server's own certificate will do), or with
    None the system's authorities.

    Raises:
        ValueError: the file holds no PEM certificate.
        OSError: it cannot be read.
    """
    from twisted.internet import ssl

    if ca_file is None:
        return ssl.platformTrust()
    with open(ca_file, "rb") as f:
        blocks = _PEM_CERTIFICATE.findall(f.read())
    if not blocks:
        raise ValueError(f"ca_file {os.fspath(ca_file)!r} holds no PEM certificate")
    return ssl.trustRootFromCertificates(
        [ssl.Certificate.loadPEM(block) for block in blocks]
    )


def client_creator(server_name: str, ca_file: str | os.PathLike[str] | None) -> Any:
    """Twisted's client TLS options for ``server_name``: verified against
    :func:`trust_root`, the name checked by ``service_identity`` (an IP
    address against the certificate's IP addresses), sent as SNI."""
    from twisted.internet import ssl

    return ssl.optionsForClientTLS(server_name, trustRoot=trust_root(ca_file))


def server_options(certificate: str | os.PathLike[str]) -> Any:
    """Twisted's server TLS options from a PEM file holding the server's
    certificate (then any intermediate ones) and its private key. The TLS
    context is made at once, so that a key that does not match the
    certificate is an error here, not at the first connection.

    Raises:
        ValueError: the file holds no certificate, no key, or a key that
            is not the certificate's.
        OSError: it cannot be read.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    from OpenSSL import SSL, crypto
    from twisted.internet import ssl

    name = os.fspath(certificate)
    with open(certificate, "rb") as f:
        pem = f.read()
    blocks = _PEM_CERTIFICATE.findall(pem)
    key_block = _PEM_KEY.search(pem)
    if not blocks or key_block is None:
        raise ValueError(
            f"certificate {name!r} must hold a PEM certificate and its private key"
        )
    try:
        certs = [x509.load_pem_x509_certificate(block) for block in blocks]
        key = load_pem_private_key(key_block.group(0), password=None)
    except (ValueError, TypeError) as e:
        raise ValueError(f"certificate {name!r}: {e}") from None

    def options(cert: Any, private: Any, chain: list[Any]) -> Any:
        made = ssl.CertificateOptions(
            privateKey=private, certificate=cert, extraCertChain=chain or None
        )
        made.getContext()
        return made

    try:
        try:
            # Recent pyOpenSSL takes cryptography's objects (and deprecates
            # its own, which is what Twisted's PrivateCertificate passes).
            return options(certs[0], key, certs[1:])
        except TypeError:  # an older one takes only its own
            return options(
                crypto.X509.from_cryptography(certs[0]),
                crypto.PKey.from_cryptography_key(key),  # type: ignore[arg-type]
                [crypto.X509.from_cryptography(c) for c in certs[1:]],
            )
    except SSL.Error as e:
        raise ValueError(
            f"certificate {name!r}: the key does not go with the certificate ({e})"
        ) from None


def tls_failure_words(error: BaseException, certificate: Certificate | None) -> str:
    """Why a handshake failed, in words, from the error Twisted reported
    (pyOpenSSL's ``SSL.Error`` or service_identity's ``VerificationError``)
    and the certificate the other end showed, if any.

    ``certificate verify failed`` alone does not say why; with the
    certificate in hand it does: self-signed, expired, not yet valid, or
    issued by an authority that is not trusted.
    """
    from OpenSSL import SSL
    from service_identity.exceptions import VerificationError

    if isinstance(error, VerificationError):
        wanted = ", ".join(sorted({_mismatched(mismatch) for mismatch in error.errors}))
        if certificate is not None and certificate.names:
            return (
                f"the certificate is for {', '.join(certificate.names)}, not {wanted}"
            )
        return f"the certificate is not for {wanted}"
    if isinstance(error, SSL.Error):
        reasons = [
            str(entry[2])
            if isinstance(entry, tuple) and len(entry) == 3
            else str(entry)
            for entry in (error.args[0] if error.args else [])
        ]
        text = "; ".join(r for r in reasons if r) or "handshake failed"
        if "certificate verify failed" in text and certificate is not None:
            return f"{text} ({_why_untrusted(certificate)})"
        return text
    return str(error) or type(error).__name__


def _mismatched(mismatch: Any) -> str:
    wanted = getattr(mismatch, "mismatched_id", None)
    for field in ("hostname", "ip", "uri", "srv_name"):
        value = getattr(wanted, field, None)
        if value is not None:
            return value.decode() if isinstance(value, bytes) else str(value)
    return str(mismatch)


def _why_untrusted(certificate: Certificate) -> str:
    now = datetime.datetime.now(datetime.UTC)
    if certificate.not_after < now:
        return f"{certificate.subject!r} expired on {certificate.not_after:%Y-%m-%d}"
    if certificate.not_before > now:
        return (
            f"{certificate.subject!r} is not valid before "
            f"{certificate.not_before:%Y-%m-%d}"
        )
    if certificate.self_signed:
        return f"self-signed certificate for {certificate.subject!r}"
    return (
        f"{certificate.subject!r} is issued by {certificate.issuer!r}, "
        "which is not a trusted authority"
    )
