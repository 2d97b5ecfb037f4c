# pure-core
"""Config keys of monitoring and the system account, translated to ServerOptions fields.

How it works: natsd/config.py hands every key listed in `MONITOR_KEYS` to `monitor_fields`,
which adds the matching ServerOptions values to `fields`:

- `http_port = 8222`, `http = "127.0.0.1:8222"`, `http_host` (`-m/--http_port` on the command
  line): where the HTTP monitoring endpoints listen (natsd/monitor.py).
- `system_account = "SYS"` with `accounts { SYS { users = [...] } }` (nats-server's way of
  naming the system account). JetRaft has no account isolation ("accounts-lite"): the users of
  every account become ordinary server users (merged into `auth_users`), and the users of the
  system account (default name `$SYS`) are remembered in `system_users`; only those may send
  `$SYS.>` requests (natsd/sysreq.py). Keys of an account other than `users` (`jetstream`,
  `exports`, `imports`, ...) are accepted and ignored.
"""

from __future__ import annotations

from typing import Any

from natsd.auth import parse_users

MONITOR_KEYS = frozenset({"http_port", "http", "http_host", "monitor_port", "system_account", "accounts"})
DEFAULT_SYSTEM_ACCOUNT = "$SYS"
_ACCOUNT_IGNORED = {"jetstream", "exports", "imports", "mappings", "limits", "default_permissions"}


def monitor_fields(key: str, value: Any, data: dict[str, Any], fields: dict[str, Any],
                   unknown: list[str]) -> None:
    """Add the ServerOptions values for one config key to `fields` (see the module docstring).
    Raises ValueError on a bad value."""
    if key in ("http_port", "monitor_port"):
        fields["http_port"] = _port(value)
    elif key == "http_host":
        fields["http_host"] = str(value)
    elif key == "http":
        host, _, port = str(value).rpartition(":")
        fields["http_port"] = _port(port)
        if host:
            fields["http_host"] = host
    elif key == "accounts":
        _accounts(value, str(data.get("system_account") or DEFAULT_SYSTEM_ACCOUNT), fields, unknown)
    # system_account alone names the account; it is read together with `accounts`


def _port(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"not a port: {value!r}")
    port = int(value)
    if not -1 <= port <= 65535:
        raise ValueError(f"not a port: {value!r}")
    return port


def _accounts(value: Any, system_account: str, fields: dict[str, Any], unknown: list[str]) -> None:
    users = list(fields.get("auth_users", ()))
    system_users: list[str] = list(fields.get("system_users", ()))
    for name, account in dict(value).items():
        for key, item in dict(account or {}).items():
            if key == "users":
                parsed = parse_users(item)
                users.extend(parsed)
                if name == system_account:
                    system_users.extend(u.who for u in parsed)
            elif key not in _ACCOUNT_IGNORED:
                unknown.append(f"accounts.{name}.{key}")
    if users:
        fields["auth_users"] = tuple(users)
    fields["system_users"] = tuple(system_users)
