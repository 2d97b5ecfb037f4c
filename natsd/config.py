"""Server options and TOML config loading with nats-server's key names.

`ServerOptions` is one frozen value holding everything the server needs; the CLI builds it from
defaults, then a config file (`load_config`), then command-line flags (flags win, as in
nats-server). Config keys follow nats-server's names (`port`, `listen`, `max_payload`,
`ping_interval`, `ping_max`, `jetstream { store_dir ... }`), sizes may be written as `"1MB"` and
durations as Go-style strings (`"2m"`, `"500ms"`) or as numbers of seconds. The file is TOML (read
with tomllib). Unknown keys are reported back, not fatal, so a nats-server file mostly just works.
"""

from __future__ import annotations

import re
import tomllib
from typing import Any

import attrs

from natsd.auth import parse_users
from natsd.permissions import parse_permissions
from natsd.monitor_config import MONITOR_KEYS, monitor_fields
from natsd.tls import parse_tls

DEFAULT_PORT = 4222
VERSION = "2.11.0"  # what clients see in INFO; must be 2.x with x >= 10 (protocol.md #1)


@attrs.frozen
class ServerOptions:
    host: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    server_name: str = ""
    server_tags: tuple[str, ...] = ()  # placement tags (`server_tags`, `--tags`); meta/placement.py
    max_payload_bytes: int = 1024 * 1024
    max_pending_bytes: int = 64 * 1024 * 1024
    max_control_line_bytes: int = 4096
    max_connections: int = 64 * 1024
    ping_interval_s: float = 120.0
    max_pings_out: int = 2
    write_deadline_s: float = 10.0
    debug: bool = False
    trace: bool = False
    logfile: str | None = None
    log_json: bool = False
    jetstream: bool = False
    store_dir: str | None = None
    max_memory_store_bytes: int = -1
    max_file_store_bytes: int = -1
    seed: int | None = None  # for queue-member choice; None = from the OS
    # client authorization (nats-server's `authorization { user password token timeout }`,
    # flags --user/--pass/--auth); none set = no auth
    auth_user: str | None = None
    auth_password: str | None = None
    auth_token: str | None = None
    auth_timeout_s: float = 2.0
    auth_users: tuple = ()  # natsd.auth.User values (`authorization { users = [...] }`)
    auth_default_permissions: Any = None  # natsd.permissions.Permissions for users without any
    no_auth_user: str | None = None  # top-level `no_auth_user`: CONNECTs without credentials
    max_subscriptions: int = 0  # per connection; 0 = unlimited
    # client TLS (`tls { cert_file key_file ca_file verify timeout }`, --tls* flags); natsd/tls.py
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    tls_verify: bool = False
    tls_timeout_s: float = 2.0
    # route TLS (`cluster { tls {...} }`)
    cluster_tls_cert: str | None = None
    cluster_tls_key: str | None = None
    cluster_tls_ca: str | None = None
    cluster_tls_verify: bool = False
    cluster_tls_timeout_s: float = 2.0
    # cluster routes (natsd/cluster.py); cluster_port None = no clustering
    cluster_host: str | None = None
    cluster_port: int | None = None
    cluster_name: str = ""
    routes: tuple[str, ...] = ()
    cluster_advertise: str = ""
    cluster_no_advertise: bool = False
    cluster_user: str = ""  # route authorization: peers must CONNECT with these
    cluster_password: str = ""
    cluster_implicit_routes: bool = True  # dial servers learnt by gossip (jetraft extension)
    raft_peers: tuple = ()  # (name, "host:port") pairs: Raft ids are names (meta/topology.py)
    # monitoring (natsd/monitor*.py): HTTP port (-m/--http_port, `http_port`), and the users of
    # the system account allowed to send $SYS requests (`system_account` + `accounts`)
    http_host: str | None = None
    http_port: int | None = None
    system_users: tuple[str, ...] = ()


_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_DURATION_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_tags(value: Any) -> tuple[str, ...]:
    """`server_tags`: a list or a comma-separated string of tags like "az:1"."""
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(str(t).strip() for t in items if str(t).strip())


def parse_size_bytes(value: Any) -> int:
    """`1048576`, `"1MB"`, `"64M"`, `"2GiB"` -> bytes (K/M/G/T are powers of 1024)."""
    if isinstance(value, bool):
        raise ValueError(f"not a size: {value!r}")
    if isinstance(value, int):
        return value
    match = _SIZE_RE.match(str(value))
    if not match:
        raise ValueError(f"not a size: {value!r}")
    number, unit = int(match.group(1)), match.group(2).lower()
    return number * 1024 ** " kmgt".index(unit or " ")


def parse_duration_s(value: Any) -> float:
    """`120`, `"2m"`, `"1m30s"`, `"500ms"` -> seconds."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    parts = _DURATION_RE.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {value!r}")
    return sum(float(n) * _DURATION_UNIT_S[u] for n, u in parts)


def _listen(value: str) -> dict[str, Any]:
    host, _, port = str(value).rpartition(":")
    out: dict[str, Any] = {"port": int(port)}
    if host:
        out["host"] = host
    return out


_SIMPLE_KEYS: dict[str, tuple[str, Any]] = {
    "port": ("port", int),
    "host": ("host", str),
    "net": ("host", str),
    "server_name": ("server_name", str),
    "server_tags": ("server_tags", lambda v: parse_tags(v)),
    "max_payload": ("max_payload_bytes", parse_size_bytes),
    "max_pending": ("max_pending_bytes", parse_size_bytes),
    "max_control_line": ("max_control_line_bytes", parse_size_bytes),
    "max_connections": ("max_connections", int),
    "max_subscriptions": ("max_subscriptions", int),
    "max_subs": ("max_subscriptions", int),
    "max_conn": ("max_connections", int),
    "ping_interval": ("ping_interval_s", parse_duration_s),
    "ping_max": ("max_pings_out", int),
    "max_pings_out": ("max_pings_out", int),
    "write_deadline": ("write_deadline_s", parse_duration_s),
    "debug": ("debug", bool),
    "trace": ("trace", bool),
    "logfile": ("logfile", str),
    "log_file": ("logfile", str),
}

_JS_KEYS: dict[str, tuple[str, Any]] = {
    "store_dir": ("store_dir", str),
    "max_memory_store": ("max_memory_store_bytes", parse_size_bytes),
    "max_mem": ("max_memory_store_bytes", parse_size_bytes),
    "max_file_store": ("max_file_store_bytes", parse_size_bytes),
    "max_file": ("max_file_store_bytes", parse_size_bytes),
}


def options_from_mapping(data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Translate nats-server config keys to ServerOptions field values; also return unknown
    keys. Raises ValueError on a bad value."""
    fields: dict[str, Any] = {}
    unknown: list[str] = []
    for key, value in data.items():
        if key in _SIMPLE_KEYS:
            name, convert = _SIMPLE_KEYS[key]
            fields[name] = convert(value)
        elif key == "listen":
            fields.update(_listen(value))
        elif key == "jetstream":
            fields.update(_jetstream(value, unknown))
        elif key == "cluster":
            fields.update(_cluster(value, unknown))
        elif key == "authorization":
            fields.update(_authorization(value, unknown))
        elif key == "tls":
            fields.update(_tls_fields(value, "tls", "tls"))
        elif key == "no_auth_user":
            fields["no_auth_user"] = str(value)
        elif key in MONITOR_KEYS:  # monitoring and the system account (natsd/monitor_config.py)
            monitor_fields(key, value, data, fields, unknown)
        else:
            unknown.append(key)
    return fields, unknown


def _jetstream(value: Any, unknown: list[str]) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"jetstream": value}
    if isinstance(value, str):
        return {"jetstream": value.lower() in ("enabled", "true", "on", "yes")}
    fields: dict[str, Any] = {"jetstream": True}
    for key, item in dict(value).items():
        if key in _JS_KEYS:
            name, convert = _JS_KEYS[key]
            fields[name] = convert(item)
        elif key == "enabled":
            fields["jetstream"] = bool(item)
        else:
            unknown.append(f"jetstream.{key}")
    return fields


_AUTH_KEYS: dict[str, tuple[str, Any]] = {
    "user": ("auth_user", str),
    "password": ("auth_password", str),
    "token": ("auth_token", str),
    "timeout": ("auth_timeout_s", parse_duration_s),
}


def _authorization(value: Any, unknown: list[str]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for key, item in dict(value).items():
        if key in _AUTH_KEYS:
            name, convert = _AUTH_KEYS[key]
            fields[name] = convert(item)
        elif key == "users" and item:  # an empty list has no effect: reported as ignored
            fields["auth_users"] = parse_users(item)
        elif key == "default_permissions":
            fields["auth_default_permissions"] = parse_permissions(item)
        else:
            unknown.append(f"authorization.{key}")
    return fields


_CLUSTER_IGNORED = {"connect_retries", "pool_size", "compression", "accounts"}


def _cluster(value: Any, unknown: list[str]) -> dict[str, Any]:
    """`cluster { name, listen | host + port, routes = [...], advertise, no_advertise,
    authorization { user, password } }`."""
    fields: dict[str, Any] = {}
    for key, item in dict(value).items():
        if key == "name":
            fields["cluster_name"] = str(item)
        elif key == "listen":
            listen = _listen(item)
            fields["cluster_port"] = listen["port"]
            if "host" in listen:
                fields["cluster_host"] = listen["host"]
        elif key in ("host", "net"):
            fields["cluster_host"] = str(item)
        elif key == "port":
            fields["cluster_port"] = int(item)
        elif key == "routes":
            fields["routes"] = parse_routes(item)
        elif key in ("advertise", "cluster_advertise"):
            fields["cluster_advertise"] = str(item)
        elif key == "no_advertise":
            fields["cluster_no_advertise"] = bool(item)
        elif key == "implicit_routes":
            fields["cluster_implicit_routes"] = bool(item)
        elif key == "raft_peers":  # { name = "host:port" } or "name=host:port,..." (jetraft extension)
            fields["raft_peers"] = _raft_peers(item)
        elif key == "authorization":
            auth = dict(item)
            fields["cluster_user"] = str(auth.get("user", ""))
            fields["cluster_password"] = str(auth.get("password", auth.get("pass", "")))
        elif key == "tls":
            fields.update(_tls_fields(item, "cluster.tls", "cluster_tls"))
        elif key not in _CLUSTER_IGNORED:
            unknown.append(f"cluster.{key}")
    return fields


def _tls_fields(value: Any, where: str, prefix: str) -> dict[str, Any]:
    """A `tls {...}` block -> `<prefix>_cert/_key/_ca/_verify/_timeout_s` fields."""
    tls = parse_tls(value, where)
    return {f"{prefix}_cert": tls.cert_file, f"{prefix}_key": tls.key_file,
            f"{prefix}_ca": tls.ca_file, f"{prefix}_verify": tls.verify,
            f"{prefix}_timeout_s": tls.timeout_s}


def _raft_peers(value: Any) -> tuple[tuple[str, str], ...]:
    if isinstance(value, str):
        value = dict(item.strip().partition("=")[::2] for item in value.split(",") if item.strip())
    return tuple(sorted((str(name), str(address)) for name, address in dict(value).items()))


def parse_routes(value: Any) -> tuple[str, ...]:
    """`"u1,u2"` or `["u1", "u2"]` -> a tuple of route URLs."""
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(str(u).strip() for u in items if str(u).strip())


def parse_cluster_listen(url: str) -> tuple[str | None, int]:
    """`nats://HOST:PORT` (or `HOST:PORT`, `:PORT`) -> (host or None, port)."""
    text = url.split("://", 1)[-1].split("/", 1)[0].rsplit("@", 1)[-1]
    host, _, port = text.rpartition(":")
    if not port.isdigit():
        raise ValueError(f"not a cluster URL: {url!r}")
    return host or None, int(port)


def load_config(path: str) -> tuple[dict[str, Any], list[str]]:
    """Read a TOML config file; return (ServerOptions field values, unknown keys)."""
    with open(path, "rb") as handle:
        data = tomllib.load(handle)
    return options_from_mapping(data)


def build_options(base: ServerOptions, overrides: dict[str, Any]) -> ServerOptions:
    """`base` with the non-None `overrides` applied."""
    return attrs.evolve(base, **{k: v for k, v in overrides.items() if v is not None})
