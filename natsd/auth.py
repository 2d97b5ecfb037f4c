# pure-core
"""Client authentication: token, single user/password, a users list (plain or bcrypt passwords)
and nkey users (Ed25519 signature of a server nonce).

How it works: `AuthConfig` is a frozen value built from the options (`auth_config(options)`).
`authenticate(config, connect, nonce)` looks at the CONNECT options and returns an `AuthResult`:
ok or not, the matched `User` (whose permissions the connection then enforces), and a
`who` string for the log that never contains a secret. The decision order follows nats-server:
an `nkey` in CONNECT is checked against the nkey users (signature over the nonce this connection
was given in INFO), then a `user` against the users list, then the token, then the single
user/password. Plain passwords and tokens are compared in constant time; a password or token
starting with `$2` is a bcrypt hash and checked with the bcrypt library.

bcrypt is deliberately slow (cost 11 is ~100 ms): `uses_bcrypt` tells the shell to run such a
check in a worker thread (bounded), so logins do not stall the event loop. The nonce comes from
injected random bytes.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from typing import Any

import attrs
import bcrypt
import nacl.exceptions
import nacl.signing
import nkeys

from natsd.permissions import Permissions, parse_permissions

NONCE_BYTES = 11  # nats-server uses 11 random bytes, base64url without padding


@attrs.frozen
class User:
    """One entry of `authorization { users = [...] }`: a user/password or an nkey user."""

    name: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    nkey: str | None = None
    permissions: Permissions | None = None

    @property
    def who(self) -> str:
        return self.name if self.name is not None else f"nkey:{self.nkey}"


@attrs.frozen
class AuthConfig:
    user: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    token: str | None = attrs.field(default=None, repr=False)
    users: tuple[User, ...] = ()
    timeout_s: float = 2.0
    no_auth_user: str | None = None  # a CONNECT without credentials logs in as this user
    default_permissions: Permissions | None = None  # for listed users without their own

    @property
    def required(self) -> bool:
        return self.user is not None or self.token is not None or bool(self.users)

    @property
    def advertised(self) -> bool:
        """INFO `auth_required`: not with a no_auth_user (as nats-server)."""
        return self.required and self.no_auth_user is None

    @property
    def nonce_required(self) -> bool:
        return any(u.nkey is not None for u in self.users)


@attrs.frozen
class AuthResult:
    ok: bool
    user: User | None = None
    who: str = ""  # user name or nkey, for the log; never a secret
    default_permissions: Permissions | None = None

    @property
    def permissions(self) -> Permissions | None:
        perms = None
        if self.user is not None:
            perms = self.user.permissions or self.default_permissions
        return perms if perms is not None and (perms.restricts or perms.responses) else None


_SECRET_FIELD_RE = re.compile(rb'("(?:pass|password|auth_token|sig|jwt)"\s*:\s*")((?:[^"\\]|\\.)*)(")?')


def redact(data: bytes) -> bytes:
    """Protocol bytes with CONNECT secrets (`pass`, `auth_token`, `sig`, `jwt`) replaced by
    `[REDACTED]`, for trace logs. A secret cut off at the end of `data` is redacted too."""
    return _SECRET_FIELD_RE.sub(lambda m: m.group(1) + b"[REDACTED]" + (m.group(3) or b""), data)


_WHOLE_CONNECT_RE = re.compile(rb"(?i)connect[ \t][^\n]*\n")
WITHHELD = b"[withheld until CONNECT]"


def trace_safe(data: bytes, connected: bool) -> bytes:
    """What a trace log may show of bytes read from a client. Before its first CONNECT is
    processed, a chunk could hold part of a CONNECT split across reads (a secret's tail would
    escape `redact`), so only a chunk starting with a whole CONNECT line is shown, redacted."""
    if connected or _WHOLE_CONNECT_RE.match(data):
        return redact(data)
    return WITHHELD


def make_nonce(random_bytes: bytes) -> str:
    return base64.urlsafe_b64encode(random_bytes).rstrip(b"=").decode("ascii")


def secret_ok(given: Any, expected: str) -> bool:
    """A client-supplied password or token against the configured one (bcrypt or plain)."""
    if not isinstance(given, str):
        return False
    if expected.startswith("$2"):
        try:
            return bcrypt.checkpw(given.encode("utf-8", "surrogateescape"), expected.encode("ascii"))
        except ValueError:  # a malformed hash in the config never matches
            return False
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"),
                               expected.encode("utf-8", "surrogateescape"))


def _decode_sig(sig: str) -> bytes | None:
    padded = sig + "=" * (-len(sig) % 4)
    for decode in (base64.urlsafe_b64decode, base64.b64decode):
        try:
            return decode(padded)
        except (binascii.Error, ValueError):
            continue
    return None


def public_nkey_bytes(public_key: str) -> bytes | None:
    """The raw Ed25519 key of a user nkey (`U...`), or None when malformed or bad checksum."""
    try:
        raw = base64.b32decode(public_key + "=" * (-len(public_key) % 8))
    except (binascii.Error, ValueError):
        return None
    if len(raw) != 35 or raw[0] != nkeys.PREFIX_BYTE_USER:
        return None
    body, crc = raw[:-2], raw[-2:]
    if bytes(nkeys.crc16_checksum(body)) != crc:
        return None
    return body[1:]


def nkey_signature_ok(public_key: str, nonce: str, sig: Any) -> bool:
    if not isinstance(sig, str) or not nonce:
        return False
    key = public_nkey_bytes(public_key)
    signature = _decode_sig(sig)
    if key is None or signature is None or len(signature) != 64:
        return False
    try:
        nacl.signing.VerifyKey(key).verify(nonce.encode("ascii"), signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.CryptoError, ValueError):
        return False
    return True


def authenticate(config: AuthConfig, connect: dict, nonce: str | None) -> AuthResult:
    """Check a CONNECT's credentials; `nonce` is what this connection's INFO carried."""
    if not config.required:
        return AuthResult(ok=True)
    result = _authenticate(config, connect, nonce)
    if result.user is not None and config.default_permissions is not None:
        result = attrs.evolve(result, default_permissions=config.default_permissions)
    return result


_CREDENTIAL_FIELDS = ("user", "pass", "auth_token", "nkey", "sig", "jwt")


def _authenticate(config: AuthConfig, connect: dict, nonce: str | None) -> AuthResult:
    if config.no_auth_user is not None and not any(k in connect for k in _CREDENTIAL_FIELDS):
        user = next((u for u in config.users if u.name == config.no_auth_user), None)
        return AuthResult(ok=user is not None, user=user, who=config.no_auth_user[:64])
    nkey = connect.get("nkey")
    if isinstance(nkey, str) and config.nonce_required:
        user = next((u for u in config.users if u.nkey == nkey), None)
        ok = user is not None and nkey_signature_ok(nkey, nonce or "", connect.get("sig"))
        return AuthResult(ok=ok, user=user if ok else None, who=f"nkey:{nkey[:64]}")
    name = connect.get("user")
    if isinstance(name, str) and config.users:
        user = next((u for u in config.users if u.name == name and u.password is not None), None)
        ok = user is not None and secret_ok(connect.get("pass"), user.password or "")
        return AuthResult(ok=ok, user=user if ok else None, who=name[:64])
    if config.token is not None and "auth_token" in connect:
        return AuthResult(ok=secret_ok(connect.get("auth_token"), config.token), who="token")
    if config.user is not None:
        ok = name == config.user and secret_ok(connect.get("pass"), config.password or "")
        return AuthResult(ok=ok, who=str(name)[:64] if name is not None else "")
    return AuthResult(ok=False, who=str(name)[:64] if isinstance(name, str) else "")


def uses_bcrypt(config: AuthConfig, connect: dict) -> bool:
    """Would checking this CONNECT run bcrypt (slow: the shell runs it off the event loop)?"""
    name = connect.get("user")
    if isinstance(connect.get("nkey"), str) and config.nonce_required:
        return False
    if isinstance(name, str) and config.users:
        return any(u.name == name and (u.password or "").startswith("$2") for u in config.users)
    if config.token is not None and "auth_token" in connect:
        return config.token.startswith("$2")
    return (config.password or "").startswith("$2")


def parse_users(value: Any) -> tuple[User, ...]:
    """nats-server's `users = [{user, password, permissions}, {nkey, permissions}]`."""
    if not isinstance(value, list | tuple):
        raise ValueError("authorization.users: expected a list")
    users = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise ValueError(f"authorization.users[{i}]: expected a map")
        unknown = set(item) - {"user", "username", "password", "pass", "nkey", "permissions"}
        if unknown:
            raise ValueError(f"authorization.users[{i}]: unknown keys {sorted(unknown)}")
        name = item.get("user", item.get("username"))
        password = item.get("password", item.get("pass"))
        nkey = item.get("nkey")
        if nkey is not None and public_nkey_bytes(str(nkey)) is None:
            raise ValueError(f"authorization.users[{i}]: not a user nkey")
        if nkey is None and (name is None or password is None):
            raise ValueError(f"authorization.users[{i}]: needs user and password, or nkey")
        perms = parse_permissions(item["permissions"]) if "permissions" in item else None
        users.append(User(name=None if name is None else str(name),
                          password=None if password is None else str(password),
                          nkey=None if nkey is None else str(nkey), permissions=perms))
    return tuple(users)
