"""Authentication against jetraft and the reference nats-server (same config, same assertions).

nats-py logs in with user/password, bcrypt-hashed passwords, tokens and nkeys; wrong credentials
are refused. Raw-socket exchanges pin the exact `-ERR` text and whether the server closes the
connection, so the reference server proves every expectation.
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
import socket
from collections.abc import Iterator

import bcrypt
import nats
import nkeys
import pytest
from nats.errors import NoServersError

from tests.compat.servers import KINDS
from tests.compat.test_security_support import SecureServer, arun, connect_line, exchange, lines, read_info, secure_server

VIOLATION = "-ERR 'Authorization Violation'"


def _user_seed() -> str:
    return nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER).decode()


NKEY_SEED = _user_seed()
NKEY_PUBLIC = nkeys.from_seed(NKEY_SEED.encode()).public_key.decode()
STRANGER_SEED = _user_seed()
BCRYPT_HASH = bcrypt.hashpw(b"pb-secret", bcrypt.gensalt(rounds=4)).decode().replace("$2b$", "$2a$", 1)

USERS_CONF = {"authorization": {"timeout": 0.5, "users": [
    {"user": "alice", "password": "pa-secret"},
    {"user": "bob", "password": BCRYPT_HASH},
    {"nkey": NKEY_PUBLIC},
]}}


@pytest.fixture(scope="module", params=KINDS)
def users_server(request: pytest.FixtureRequest,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureServer]:
    with secure_server(request.param, tmp_path_factory.mktemp("users"), USERS_CONF) as srv:
        yield srv


async def _roundtrip(nc: nats.NATS) -> None:
    sub = await nc.subscribe("auth.check")
    await nc.publish("auth.check", b"hello")
    msg = await sub.next_msg(timeout=3)
    assert msg.data == b"hello"
    await nc.close()


async def _refused(url: str, **creds: object) -> None:
    with pytest.raises((NoServersError, nats.errors.Error, OSError)):
        nc = await nats.connect(url, allow_reconnect=False, max_reconnect_attempts=0,
                                connect_timeout=2, **creds)
        await nc.close()


async def _login(url: str, **creds: object) -> None:
    await _roundtrip(await nats.connect(url, allow_reconnect=False, **creds))


def test_user_password_login(users_server: SecureServer) -> None:
    arun(_login(users_server.url, user="alice", password="pa-secret"))


def test_bcrypt_user_login(users_server: SecureServer) -> None:
    arun(_login(users_server.url, user="bob", password="pb-secret"))


def test_nkey_login(users_server: SecureServer) -> None:
    arun(_login(users_server.url, nkeys_seed_str=NKEY_SEED))


@pytest.mark.parametrize("creds", [
    {"user": "alice", "password": "wrong"},
    {"user": "bob", "password": "pa-secret"},
    {"user": "nobody", "password": "pa-secret"},
    {"nkeys_seed_str": STRANGER_SEED},
], ids=["bad-pass", "other-users-pass", "unknown-user", "unknown-nkey"])
def test_wrong_credentials_are_refused(users_server: SecureServer, creds: dict) -> None:
    arun(_refused(users_server.url, **creds))


def test_info_carries_auth_required_and_nonce(users_server: SecureServer) -> None:
    info = read_info(users_server.port)
    assert info is not None and info["auth_required"] is True
    assert isinstance(info.get("nonce"), str) and len(info["nonce"]) >= 8


@pytest.mark.parametrize("payload", [
    connect_line(user="alice", **{"pass": "wrong"}) + b"PING\r\n",
    connect_line(user="bob", **{"pass": BCRYPT_HASH}) + b"PING\r\n",  # the hash is not the password
    connect_line() + b"PING\r\n",
    b"PING\r\n",
    b"SUB foo 1\r\nPING\r\n",
    connect_line(nkey=NKEY_PUBLIC, sig=base64.b64encode(b"x" * 64).decode()) + b"PING\r\n",
], ids=["bad-pass", "hash-as-pass", "no-creds", "ping-first", "sub-first", "bad-sig"])
def test_bad_credentials_error_and_close(users_server: SecureServer, payload: bytes) -> None:
    said, closed = exchange(users_server.port, payload)
    assert lines(said) == [VIOLATION]
    assert closed


def test_nkey_signature_over_the_nonce(users_server: SecureServer) -> None:
    """A raw client signs its own connection's nonce: accepted; a replayed signature is not."""
    kp = nkeys.from_seed(NKEY_SEED.encode())
    with socket.create_connection(("127.0.0.1", users_server.port), timeout=3) as sock:
        reader = sock.makefile("rb")
        nonce = json.loads(reader.readline()[5:])["nonce"]
        sig = base64.urlsafe_b64encode(kp.sign(nonce.encode())).rstrip(b"=").decode()
        sock.sendall(connect_line(nkey=NKEY_PUBLIC, sig=sig) + b"PING\r\n")
        assert reader.readline() == b"PONG\r\n"
    said, closed = exchange(users_server.port, connect_line(nkey=NKEY_PUBLIC, sig=sig) + b"PING\r\n")
    assert lines(said) == [VIOLATION] and closed


def test_auth_timeout(users_server: SecureServer) -> None:
    said, closed = exchange(users_server.port, b"", pongs=0)
    assert lines(said) == ["-ERR 'Authentication Timeout'"]
    assert closed


@pytest.mark.parametrize("kind", KINDS)
def test_token_login(kind: str, tmp_path: pathlib.Path) -> None:
    with secure_server(kind, tmp_path, {"authorization": {"token": "tok-secret"}}) as srv:
        arun(_login(srv.url, token="tok-secret"))
        arun(_refused(srv.url, token="tok-wrong"))
        said, closed = exchange(srv.port, connect_line(auth_token="tok-wrong") + b"PING\r\n")
        assert (lines(said), closed) == ([VIOLATION], True)


@pytest.mark.parametrize("kind", KINDS)
def test_user_pass_flags(kind: str, tmp_path: pathlib.Path) -> None:
    """Flags work, and even trace logging (-V) shows no password, good or bad."""
    with secure_server(kind, tmp_path, {}, extra_args=["--user", "u1", "--pass", "pw-flag-secret", "-V"]) as srv:
        arun(_login(srv.url, user="u1", password="pw-flag-secret"))
        said, closed = exchange(srv.port, connect_line(user="u1", **{"pass": "pw-wrong-secret"}) + b"PING\r\n")
        assert (lines(said), closed) == ([VIOLATION], True)
        log_after_argv = srv.log_tail(100_000).split("\n", 1)[1]
        assert "pw-wrong-secret" not in log_after_argv and "pw-flag-secret" not in log_after_argv


NO_AUTH_CONF = {"no_auth_user": "guest", "authorization": {
    "default_permissions": {"publish": {"deny": ["nope"]}},
    "users": [{"user": "guest", "password": "g", "permissions": {"publish": {"allow": ["pub.>"]}}},
              {"user": "plain", "password": "p"}]}}


@pytest.mark.parametrize("kind", KINDS)
def test_no_auth_user_and_default_permissions(kind: str, tmp_path: pathlib.Path) -> None:
    """A CONNECT without credentials is the no_auth_user (with its permissions); listed users
    without permissions get default_permissions; wrong credentials are still refused."""
    with secure_server(kind, tmp_path, NO_AUTH_CONF) as srv:
        info = read_info(srv.port)
        assert info is not None and "auth_required" not in info
        assert exchange(srv.port, b"PING\r\n") == ("PONG\r\n", False)
        said, closed = exchange(srv.port, connect_line() + b"PUB pub.a 0\r\n\r\nPUB x 0\r\n\r\nPING\r\n")
        assert (lines(said), closed) == (["-ERR 'Permissions Violation for Publish to \"x\"'", "PONG"], False)
        said, closed = exchange(srv.port, connect_line(user="plain", **{"pass": "p"})
                                + b"PUB nope 0\r\n\r\nPUB x 0\r\n\r\nPING\r\n")
        assert (lines(said), closed) == (["-ERR 'Permissions Violation for Publish to \"nope\"'", "PONG"], False)
        said, closed = exchange(srv.port, connect_line(user="plain", **{"pass": "bad"}) + b"PING\r\n")
        assert (lines(said), closed) == ([VIOLATION], True)
        arun(_guest_roundtrip(srv.url))  # nats-py without credentials: the guest


async def _guest_roundtrip(url: str) -> None:
    nc = await nats.connect(url, allow_reconnect=False)
    try:
        sub = await nc.subscribe("pub.guest")
        await nc.publish("pub.guest", b"hi")
        assert (await sub.next_msg(timeout=3)).data == b"hi"
    finally:
        await nc.close()
