"""TLS for client connections against jetraft and the reference nats-server.

Certificates are minted per module with trustme. Covered: server-only TLS (nats-py trusting the
CA connects; trusting an unrelated CA is refused; a plaintext client is cut off after the INFO
without a PONG), mutual TLS (a client certificate from the CA is required), the `--tls*` flags,
and TLS together with user authentication.
"""

from __future__ import annotations

import pathlib
import ssl
from collections.abc import Iterator

import nats
import pytest

from tests.compat.servers import KINDS
from tests.compat.test_security_support import (
    Certs,
    SecureServer,
    arun,
    connect_line,
    exchange,
    make_certs,
    read_info,
    secure_server,
)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


def _client_ctx(ca: pathlib.Path, cert: pathlib.Path | None = None,
                key: pathlib.Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


async def _roundtrip(url: str, **options: object) -> None:
    nc = await nats.connect(url, allow_reconnect=False, connect_timeout=3, **options)
    try:
        sub = await nc.subscribe("tls.check")
        await nc.publish("tls.check", b"sealed")
        assert (await sub.next_msg(timeout=3)).data == b"sealed"
    finally:
        await nc.close()


async def _refused(url: str, **options: object) -> None:
    with pytest.raises((nats.errors.Error, OSError, ssl.SSLError)):
        nc = await nats.connect(url, allow_reconnect=False, max_reconnect_attempts=0,
                                connect_timeout=2, **options)
        await nc.close()


@pytest.fixture(scope="module", params=KINDS)
def tls_server(request: pytest.FixtureRequest, certs: Certs,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureServer]:
    conf = {"tls": {"cert_file": str(certs.cert), "key_file": str(certs.key), "timeout": 1}}
    with secure_server(request.param, tmp_path_factory.mktemp("tls"), conf) as srv:
        yield srv


def test_server_tls_connect(tls_server: SecureServer, certs: Certs) -> None:
    info = read_info(tls_server.port)
    assert info is not None and info["tls_required"] is True
    arun(_roundtrip(f"tls://127.0.0.1:{tls_server.port}", tls=_client_ctx(certs.ca)))


def test_wrong_ca_is_rejected(tls_server: SecureServer, certs: Certs) -> None:
    arun(_refused(f"tls://127.0.0.1:{tls_server.port}", tls=_client_ctx(certs.other_ca)))


def test_plaintext_client_is_cut_off(tls_server: SecureServer) -> None:
    said, closed = exchange(tls_server.port, connect_line() + b"PING\r\n")
    assert closed and "PONG" not in said


@pytest.mark.parametrize("kind", KINDS)
def test_mutual_tls(kind: str, certs: Certs, tmp_path: pathlib.Path) -> None:
    conf = {"tls": {"cert_file": str(certs.cert), "key_file": str(certs.key),
                    "ca_file": str(certs.ca), "verify": True, "timeout": 1}}
    with secure_server(kind, tmp_path, conf) as srv:
        url = f"tls://127.0.0.1:{srv.port}"
        info = read_info(srv.port)
        assert info is not None and info["tls_required"] is True and info.get("tls_verify") is True
        arun(_roundtrip(url, tls=_client_ctx(certs.ca, certs.client_cert, certs.client_key)))
        arun(_refused(url, tls=_client_ctx(certs.ca)))  # no client certificate


@pytest.mark.parametrize("kind", KINDS)
def test_tls_flags_with_user_auth(kind: str, certs: Certs, tmp_path: pathlib.Path) -> None:
    flags = ["--tls", "--tlscert", str(certs.cert), "--tlskey", str(certs.key),
             "--user", "tls-user", "--pass", "tls-pass"]
    with secure_server(kind, tmp_path, {}, extra_args=flags) as srv:
        url = f"tls://127.0.0.1:{srv.port}"
        arun(_roundtrip(url, tls=_client_ctx(certs.ca), user="tls-user", password="tls-pass"))
        arun(_refused(url, tls=_client_ctx(certs.ca), user="tls-user", password="nope"))
