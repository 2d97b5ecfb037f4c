"""natsd.auth: credential checks for every login kind, config parsing, no secrets in reprs."""

from __future__ import annotations

import base64
import os

import bcrypt
import nkeys
import pytest

from natsd.auth import (
    AuthConfig,
    User,
    authenticate,
    make_nonce,
    nkey_signature_ok,
    redact,
    trace_safe,
    uses_bcrypt,
    parse_users,
    public_nkey_bytes,
    secret_ok,
)
from natsd.permissions import Permissions, SubjectRule

SEED = nkeys.encode_seed(bytes(range(32)), nkeys.PREFIX_BYTE_USER)
KP = nkeys.from_seed(SEED)
PUBLIC = KP.public_key.decode()
NONCE = make_nonce(b"\x01" * 11)
HASH = bcrypt.hashpw(b"hunter2", bcrypt.gensalt(rounds=4)).decode()


def sign(nonce: str, kp: nkeys.KeyPair = KP, url: bool = True) -> str:
    raw = kp.sign(nonce.encode())
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode() if url else base64.b64encode(raw).decode()


USERS = AuthConfig(users=(
    User(name="alice", password="pa"),
    User(name="bob", password=HASH, permissions=Permissions(publish=SubjectRule(allow=("a",)))),
    User(nkey=PUBLIC),
))


def test_no_auth_configured_accepts_anything() -> None:
    assert authenticate(AuthConfig(), {}, None).ok
    assert not AuthConfig().required


@pytest.mark.parametrize(("connect", "ok"), [
    ({"user": "alice", "pass": "pa"}, True),
    ({"user": "alice", "pass": "pb"}, False),
    ({"user": "alice"}, False),
    ({"user": "alice", "pass": 1}, False),
    ({"user": "bob", "pass": "hunter2"}, True),
    ({"user": "bob", "pass": HASH}, False),
    ({"user": "carol", "pass": "pa"}, False),
    ({}, False),
    ({"nkey": PUBLIC, "sig": sign(NONCE)}, True),
    ({"nkey": PUBLIC, "sig": sign(NONCE, url=False)}, True),
    ({"nkey": PUBLIC, "sig": sign("other-nonce")}, False),
    ({"nkey": PUBLIC}, False),
    ({"nkey": PUBLIC, "sig": "!!!"}, False),
    ({"nkey": PUBLIC[:-1] + "A", "sig": sign(NONCE)}, False),
])
def test_users_list(connect: dict, ok: bool) -> None:
    result = authenticate(USERS, connect, NONCE)
    assert result.ok is ok
    assert (result.user is not None) is ok


def test_matched_user_carries_permissions_and_who_has_no_secret() -> None:
    result = authenticate(USERS, {"user": "bob", "pass": "hunter2"}, NONCE)
    assert result.permissions == Permissions(publish=SubjectRule(allow=("a",)))
    assert result.who == "bob"
    assert "hunter2" not in repr(result) and HASH not in repr(result) and HASH not in repr(USERS)
    assert authenticate(USERS, {"user": "alice", "pass": "pa"}, NONCE).permissions is None


def test_token_and_single_user() -> None:
    token = AuthConfig(token="tok")
    assert authenticate(token, {"auth_token": "tok"}, None).ok
    assert not authenticate(token, {"auth_token": "tok2"}, None).ok
    assert not authenticate(token, {}, None).ok
    assert "tok" not in repr(token)
    single = AuthConfig(user="u", password="p")
    assert authenticate(single, {"user": "u", "pass": "p"}, None).ok
    assert not authenticate(single, {"user": "u", "pass": "x"}, None).ok
    assert not authenticate(single, {"user": "x", "pass": "p"}, None).ok
    both = AuthConfig(user="u", password="p", token="tok")
    assert authenticate(both, {"auth_token": "tok"}, None).ok
    assert authenticate(both, {"user": "u", "pass": "p"}, None).ok


def test_bcrypt_token_and_2a_prefix() -> None:
    hashed_2a = "$2a$" + HASH[4:]
    assert secret_ok("hunter2", hashed_2a)
    assert not secret_ok("hunter3", hashed_2a)
    assert not secret_ok("hunter2", "$2a$broken")  # malformed hash never matches
    assert authenticate(AuthConfig(token=HASH), {"auth_token": "hunter2"}, None).ok


def test_nkey_without_nonce_is_refused() -> None:
    assert not nkey_signature_ok(PUBLIC, "", sign(""))
    assert not authenticate(USERS, {"nkey": PUBLIC, "sig": sign(NONCE)}, None).ok


def test_public_nkey_decoding() -> None:
    assert public_nkey_bytes(PUBLIC) is not None and len(public_nkey_bytes(PUBLIC)) == 32
    assert public_nkey_bytes("U" + "A" * 55) is None  # bad checksum
    assert public_nkey_bytes("not base32 !") is None
    account = nkeys.from_seed(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_ACCOUNT))
    assert public_nkey_bytes(account.public_key.decode()) is None  # not a user key


def test_nonce_is_url_safe_and_unpadded() -> None:
    nonce = make_nonce(b"\xff" * 11)
    assert "=" not in nonce and "+" not in nonce and "/" not in nonce and len(nonce) == 15


def test_parse_users() -> None:
    users = parse_users([
        {"user": "a", "password": "p", "permissions": {"publish": ["x.>"]}},
        {"nkey": PUBLIC},
    ])
    assert users[0] == User(name="a", password="p", permissions=Permissions(publish=SubjectRule(allow=("x.>",))))
    assert users[1].nkey == PUBLIC and users[1].who == f"nkey:{PUBLIC}"
    for bad in ([{"user": "a"}], [{"nkey": "UBAD"}], [{"user": "a", "password": "p", "extra": 1}], ["a"], {}):
        with pytest.raises(ValueError):
            parse_users(bad)


def test_redact_hides_every_secret_field() -> None:
    line = (b'CONNECT {"user":"u","pass":"p\\"w","auth_token":"t","sig":"s","jwt":"j","name":"n"}\r\n'
            b'PUB a 1\r\nx\r\n')
    out = redact(line)
    assert out.count(b"[REDACTED]") == 4
    for secret in (b'p\\"w', b'"t"', b'"s"', b'"j"'):
        assert secret not in out
    assert b'"user":"u"' in out and b'"name":"n"' in out and out.endswith(b"PUB a 1\r\nx\r\n")
    assert redact(b'CONNECT {"pass":"cut-off') == b'CONNECT {"pass":"[REDACTED]'


def test_trace_safe_withholds_split_connects() -> None:
    whole = b'CONNECT {"pass":"secret"}\r\nPING\r\n'
    assert b"secret" not in trace_safe(whole, connected=False)
    for cut in range(1, len(whole)):
        first, second = whole[:cut], whole[cut:]
        shown = trace_safe(first, connected=False) + trace_safe(second, connected=False)
        assert b"secret" not in shown and b"ecret" not in shown
    assert trace_safe(b"PUB a 1\r\nx\r\n", connected=True) == b"PUB a 1\r\nx\r\n"


def test_uses_bcrypt_only_for_hashed_secrets() -> None:
    assert uses_bcrypt(USERS, {"user": "bob", "pass": "x"})
    assert not uses_bcrypt(USERS, {"user": "alice", "pass": "x"})
    assert not uses_bcrypt(USERS, {"nkey": PUBLIC, "sig": "x"})
    assert not uses_bcrypt(USERS, {"user": "nobody"})
    assert uses_bcrypt(AuthConfig(token=HASH), {"auth_token": "x"})
    assert not uses_bcrypt(AuthConfig(token="plain"), {"auth_token": "x"})
    assert uses_bcrypt(AuthConfig(user="u", password=HASH), {"user": "u", "pass": "x"})


def test_no_auth_user_and_default_permissions() -> None:
    default = Permissions(publish=SubjectRule(deny=("nope",)))
    config = AuthConfig(users=USERS.users, no_auth_user="alice", default_permissions=default)
    assert config.required and not config.advertised
    guest = authenticate(config, {"verbose": False}, NONCE)
    assert guest.ok and guest.user is not None and guest.user.name == "alice"
    assert guest.permissions == default  # alice has none of her own
    assert not authenticate(config, {"user": "alice", "pass": "wrong"}, NONCE).ok
    assert authenticate(config, {"user": "bob", "pass": "hunter2"}, NONCE).permissions == \
        Permissions(publish=SubjectRule(allow=("a",)))  # own permissions win
    missing = AuthConfig(users=USERS.users, no_auth_user="ghost")
    assert not authenticate(missing, {}, NONCE).ok
