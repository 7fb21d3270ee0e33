"""clockwork.net's TLS: verified by default, and why not, in words.

The servers are ``clockwork.net.listen`` servers speaking TLS with
throwaway certificates (:mod:`tests.support.certs`): one signed by a CA of
the test's own, one self-signed, one expired. A client trusts the system's
authorities unless given a ``ca_file``.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import pytest

from clockwork import net
from clockwork.net import Connection, Server
from tests.support import wait
from tests.support.certs import Certificates, make_certificates, self_signed

Gen = Generator[Any, Any, Any]


def echo(conn: Connection) -> Gen:
    while line := (yield conn.readline()):
        yield conn.write(line)


def talk(port: int, **tls: Any) -> tuple[bytes, net.Certificate | None]:
    """Connect with TLS, say a line, return the echo and the certificate."""

    def client() -> Gen:
        conn = yield net.connect("127.0.0.1", port, timeout=10, tls=True, **tls)
        with conn:
            yield conn.write(b"secret\n")
            return (yield conn.readline()), conn.certificate

    result: tuple[bytes, net.Certificate | None] = wait(client())
    return result


def test_a_certificate_from_a_trusted_ca_file_is_accepted_and_can_be_read(
    servers: Callable[..., Server], certificates: Certificates
) -> None:
    server = servers(0, echo, certificate=certificates.server)
    line, certificate = talk(server.port, ca_file=certificates.ca)
    assert line == b"secret\n"
    assert certificate is not None
    assert (certificate.subject, certificate.issuer) == (
        "localhost",
        "procwork test CA",
    )
    assert certificate.names == ("localhost", "127.0.0.1")
    assert certificate.not_after == certificates.not_after
    assert certificate.days_left() == 90  # tls_min_days reads this


def test_days_left_counts_whole_days_from_the_time_given(
    certificates: Certificates,
) -> None:
    certificate = net.Certificate(
        "x", "y", (), certificates.not_after, certificates.not_after
    )
    just_before = certificates.not_after - datetime.timedelta(days=3, seconds=1)
    assert certificate.days_left(just_before) == 3
    assert certificate.days_left(certificates.not_after) == 0
    assert certificate.days_left(certificates.not_after + datetime.timedelta(1)) == -1


def test_a_self_signed_certificate_is_refused_by_default_saying_so(
    servers: Callable[..., Server], tmp_path: Path
) -> None:
    server = servers(0, echo, certificate=self_signed(tmp_path))
    with pytest.raises(net.TLSError) as caught:
        talk(server.port)
    assert str(caught.value) == (
        f"connecting to 127.0.0.1:{server.port}: TLS failed: certificate verify "
        "failed (self-signed certificate for 'localhost')"
    )
    assert caught.value.kind == "TLS"


def test_a_self_signed_certificate_given_as_the_ca_file_is_trusted(
    servers: Callable[..., Server], tmp_path: Path
) -> None:
    pem = self_signed(tmp_path)
    server = servers(0, echo, certificate=pem)
    assert talk(server.port, ca_file=pem)[0] == b"secret\n"


def test_a_certificate_of_an_untrusted_ca_is_refused_naming_its_issuer(
    servers: Callable[..., Server], certificates: Certificates
) -> None:
    server = servers(0, echo, certificate=certificates.server)
    with pytest.raises(net.TLSError, match="certificate verify failed") as caught:
        talk(server.port)
    assert str(caught.value).endswith(
        "('localhost' is issued by 'procwork test CA', which is not a trusted "
        "authority)"
    )


def test_a_certificate_for_another_name_is_refused_naming_both(
    servers: Callable[..., Server], certificates: Certificates
) -> None:
    server = servers(0, echo, certificate=certificates.server)
    with pytest.raises(net.TLSError) as caught:
        talk(server.port, ca_file=certificates.ca, server_name="wrong.example")
    assert str(caught.value).endswith(
        "TLS failed: the certificate is for localhost, 127.0.0.1, not wrong.example"
    )


def test_an_expired_certificate_is_refused_saying_when_it_expired(
    servers: Callable[..., Server], tmp_path: Path
) -> None:
    expired = make_certificates(tmp_path, days=-1)
    server = servers(0, echo, certificate=expired.server)
    with pytest.raises(net.TLSError) as caught:
        talk(server.port, ca_file=expired.ca)
    assert str(caught.value).endswith(
        f"certificate verify failed ('localhost' expired on "
        f"{expired.not_after:%Y-%m-%d})"
    )


def test_a_ca_file_that_holds_no_certificate_is_refused_at_once(
    tmp_path: Path,
) -> None:
    empty = tmp_path / "empty.pem"
    empty.write_text("nothing here\n")
    with pytest.raises(ValueError, match=r"ca_file '.*empty\.pem' holds no PEM"):
        net.connect("127.0.0.1", 1, tls=True, ca_file=empty)
    with pytest.raises(FileNotFoundError):
        net.connect("127.0.0.1", 1, tls=True, ca_file=tmp_path / "missing.pem")


def test_a_server_certificate_file_without_its_key_is_refused_at_listen(
    certificates: Certificates,
) -> None:
    with pytest.raises(ValueError, match="must hold a PEM certificate and its private"):
        net.listen(0, echo, certificate=certificates.ca)


def test_a_server_certificate_whose_key_is_another_is_refused_at_listen(
    certificates: Certificates, tmp_path: Path
) -> None:
    other = self_signed(tmp_path).read_text()
    mixed = tmp_path / "mixed.pem"
    key = other[other.index("-----BEGIN PRIVATE KEY") :]
    mixed.write_text(
        certificates.server.read_text().split("-----BEGIN PRIVATE")[0] + key
    )
    with pytest.raises(ValueError, match="the key does not go with the certificate"):
        net.listen(0, echo, certificate=mixed)


@pytest.mark.filterwarnings("ignore:Passing pyOpenSSL:DeprecationWarning")
def test_with_a_pyopenssl_that_takes_only_its_own_objects_a_tls_server_still_starts(
    servers: Callable[..., Server],
    certificates: Certificates,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """pyOpenSSL before cryptography's objects were accepted (the floor of
    Twisted's tls extra is pyOpenSSL 21)."""
    from OpenSSL import crypto
    from twisted.internet import ssl

    class OldOptions(ssl.CertificateOptions):
        def getContext(self) -> Any:
            if not isinstance(self.certificate, crypto.X509):
                raise TypeError("cert must be an X509 instance")
            inherited: Any = super().getContext  # untyped in Twisted 25.5
            return inherited()

    monkeypatch.setattr(ssl, "CertificateOptions", OldOptions)
    server = servers(0, echo, certificate=certificates.server)
    assert talk(server.port, ca_file=certificates.ca)[0] == b"secret\n"
