"""$SYS requests: the system account's server pings, answered by every server of the cluster.

How it works: `start(server)` subscribes internally to

    $SYS.REQ.SERVER.PING                          -> {"server": {...}, "statsz": {...}}
    $SYS.REQ.SERVER.PING.<KIND>                   -> {"server": {...}, "data": <KIND document>}
    $SYS.REQ.SERVER.<own server_id>.<KIND>        -> the same, from this server only

with KIND one of STATSZ, VARZ, CONNZ, SUBSZ, ROUTEZ, JSZ, HEALTHZ (the documents of
natsd/monitor.py, so HTTP and $SYS always agree), and announces these subscriptions to its routes
(`Cluster.local_sub_added`), so a request published on any server reaches every server once
(routes are one hop) and each answers the requester's reply subject itself: the requester gets
one reply per server, and each carries that server's own state. A request body may hold the
endpoint's options as JSON (`{"streams": true}`, `{"subscriptions": true}`); they mean what the
HTTP query options mean.

Who may ask: only connections authenticated as a user of the system account
(`ServerOptions.system_users`, from `system_account` + `accounts`, natsd/monitor_config.py).
`may_publish(client, subject)` is the gate natsd/client.py applies to every publish into
`$SYS.` when a system account is configured (`Monitor.sys_gate`): for anyone else the message
goes nowhere (as in nats-server, where `$SYS` lives in another account) and a requester with
no-responders support gets the 503 status. Without a system account no responder exists and
`$SYS.` subjects are ordinary ones between clients (as in nats-server's global account). Deviation from
nats-server: JetRaft has no account isolation, so an ordinary user may still *subscribe* to
`$SYS.>` subjects (it sees requests and replies it happens to match, but cannot send any).
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import structlog

from natsd.config import VERSION
from natsd.monitor_format import rfc3339

if TYPE_CHECKING:
    from natsd.server import Server

PREFIX = "$SYS."
PING = "$SYS.REQ.SERVER.PING"
KINDS = ("STATSZ", "VARZ", "CONNZ", "SUBSZ", "ROUTEZ", "JSZ", "HEALTHZ")
_OPTION_ALIASES = {"subscriptions": "subs", "js_enabled_only": "js-enabled-only",
                   "js_server_only": "js-server-only"}
log = structlog.get_logger("natsd.sysreq")


def may_publish(client: Any, subject: str) -> bool:
    """May `client` publish to this `$SYS.` subject? Only system-account users may."""
    return bool(client.user) and client.user in client.server.options.system_users


def start(server: Server) -> list[Any]:
    """Subscribe the responders (and announce them to routes); returns the handles."""
    subjects = [PING, PING + ".*", f"$SYS.REQ.SERVER.{server.server_id}.*"]
    handles = []
    for subject in subjects:
        handles.append(server.subscribe_internal(subject, None, _responder(server)))
        if server.cluster is not None:
            server.cluster.local_sub_added(subject, None)
    return handles


def _responder(server: Server) -> Any:
    def on_request(subject: str, reply: str | None, headers: bytes | None, payload: bytes) -> None:
        if not reply:
            return
        kind = "STATSZ" if subject == PING else subject.rsplit(".", 1)[-1]
        if kind not in KINDS:
            return
        body = answer(server, kind, _options(payload))
        server.publish_internal(reply, None, None, json.dumps(body).encode())
    return on_request


def _options(payload: bytes) -> dict[str, str]:
    """A request body's JSON options as HTTP-style query options (strings)."""
    if not payload.strip():
        return {}
    try:
        raw = json.loads(payload)
    except ValueError:
        return {}
    if not isinstance(raw, dict):
        return {}
    out = {}
    for key, value in raw.items():
        name = _OPTION_ALIASES.get(key, key)
        out[name] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return out


def server_block(server: Server) -> dict[str, Any]:
    cluster = server.cluster
    block: dict[str, Any] = {
        "name": server.server_name, "host": server.options.host, "id": server.server_id,
        "ver": VERSION, "jetstream": server.options.jetstream, "flags": 0, "seq": 0,
        "time": rfc3339(time.time()),
    }  # fmt: skip
    if cluster is not None:
        block["cluster"] = cluster.name
    return block


def answer(server: Server, kind: str, options: dict[str, str]) -> dict[str, Any]:
    monitor = server.monitor
    if kind == "STATSZ":
        return {"server": server_block(server), "statsz": statsz(server)}
    if kind == "VARZ":
        data = monitor.varz()
    elif kind == "CONNZ":
        data = monitor.connz(options)
    elif kind == "SUBSZ":
        data = monitor.subsz(options)
    elif kind == "ROUTEZ":
        data = monitor.routez(options)
    elif kind == "JSZ":
        data = monitor.jsz(options)
    else:
        data = monitor.healthz(options)[1]
    return {"server": server_block(server), "data": data}


def statsz(server: Server) -> dict[str, Any]:
    varz = server.monitor.varz()
    doc = {
        "start": varz["start"], "mem": varz["mem"], "cores": varz["cores"], "cpu": varz["cpu"],
        "connections": varz["connections"], "total_connections": varz["total_connections"],
        "active_accounts": 1, "subscriptions": varz["subscriptions"],
        "sent": {"msgs": varz["out_msgs"], "bytes": varz["out_bytes"]},
        "received": {"msgs": varz["in_msgs"], "bytes": varz["in_bytes"]},
        "slow_consumers": varz["slow_consumers"],
        "active_servers": 1 + (len(server.cluster.routes) if server.cluster is not None else 0),
    }  # fmt: skip
    if varz.get("jetstream"):
        doc["jetstream"] = varz["jetstream"]
    return doc
