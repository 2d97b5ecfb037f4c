"""The core monitoring documents: /varz, /connz, /subsz, /routez, with nats-server's field names.

How it works: each function reads the live `Server` object (connections, the subscription
index, routes, counters) and returns a JSON-ready dict. Nothing here does I/O or reads a clock:
the shell (natsd/monitor.py) passes the current wall time `now_s` and the process figures
(`ProcessStats`), so the documents are reproducible in tests. Field names and value types follow
nats-server (times as RFC 3339 strings, configured durations as nanoseconds, counters as ints);
fields that only make sense for Go or for features JetRaft lacks (gateways, leafnodes, MQTT,
websockets) are present and empty where nats-server always shows them.

Counters: every connection counts the messages and payload bytes it sent and received per run
of frames (natsd/client.py, server.py); the server totals are the live connections' counters
plus those of connections already closed (`server.closed_counts`).
"""

from __future__ import annotations

from typing import Any

import attrs

from natsd.config import VERSION
from natsd.monitor_format import flag, go_duration, nanos, number, rfc3339, uptime

CONNZ_LIMIT_DEFAULT = 1024
_SORT_KEYS = {
    "cid": lambda c: c.cid,
    "start": lambda c: c.start_s,
    "subs": lambda c: -len(c.subs),
    "pending": lambda c: -len(c.out),
    "msgs_to": lambda c: -c.out_msgs,
    "msgs_from": lambda c: -c.in_msgs,
    "bytes_to": lambda c: -c.out_bytes,
    "bytes_from": lambda c: -c.in_bytes,
    "last": lambda c: -c.last_activity_s,
    "idle": lambda c: c.last_activity_s,
    "uptime": lambda c: c.start_s,
}


@attrs.frozen
class ProcessStats:
    mem_bytes: int = 0
    cores: int = 1
    cpu_percent: float = 0.0


def totals(server: Any) -> tuple[int, int, int, int]:
    """(in_msgs, in_bytes, out_msgs, out_bytes) over live and closed connections."""
    in_msgs, in_bytes, out_msgs, out_bytes = server.closed_counts
    for c in list(server.clients.values()):
        in_msgs += c.in_msgs
        in_bytes += c.in_bytes
        out_msgs += c.out_msgs
        out_bytes += c.out_bytes
    return in_msgs, in_bytes, out_msgs, out_bytes


def varz(server: Any, now_s: float, start_s: float, proc: ProcessStats,
         jetstream: dict[str, Any] | None = None) -> dict[str, Any]:
    opts = server.options
    in_msgs, in_bytes, out_msgs, out_bytes = totals(server)
    monitor = server.monitor
    doc: dict[str, Any] = {
        "server_id": server.server_id, "server_name": server.server_name, "version": VERSION,
        "proto": 1, "go": "python", "host": opts.host, "port": server.port,
        "max_connections": opts.max_connections, "ping_interval": nanos(opts.ping_interval_s),
        "ping_max": opts.max_pings_out, "http_host": opts.http_host or opts.host,
        "http_port": monitor.http_port or 0, "http_base_path": "", "https_port": 0,
        "auth_timeout": _number(opts.auth_timeout_s), "max_control_line": opts.max_control_line_bytes,
        "max_payload": opts.max_payload_bytes, "max_pending": opts.max_pending_bytes,
        "cluster": cluster_block(server), "gateway": {}, "leaf": {}, "mqtt": {}, "websocket": {},
        "tls_timeout": _number(opts.tls_timeout_s), "write_deadline": nanos(opts.write_deadline_s),
        "start": rfc3339(start_s), "now": rfc3339(now_s), "uptime": uptime(now_s - start_s),
        "mem": proc.mem_bytes, "cores": proc.cores, "gomaxprocs": proc.cores, "cpu": proc.cpu_percent,
        "connections": len(server.clients), "total_connections": server._next_cid,
        "routes": len(server.cluster.routes) if server.cluster is not None else 0,
        "remotes": len(server.cluster.routes) if server.cluster is not None else 0,
        "leafnodes": 0, "in_msgs": in_msgs, "in_bytes": in_bytes, "out_msgs": out_msgs,
        "out_bytes": out_bytes, "slow_consumers": server.slow_consumers,
        "subscriptions": server.sublist.count(), "http_req_stats": dict(monitor.http_requests),
        "system_account": "$SYS",
    }  # fmt: skip
    if jetstream is not None:
        doc["jetstream"] = jetstream
    elif opts.jetstream:
        doc["jetstream"] = {"config": {"store_dir": opts.store_dir or ""}}
    else:
        doc["jetstream"] = {}
    return doc


def _number(value: float) -> float | int:
    """Go marshals a whole float64 without a fraction (`2`, not `2.0`)."""
    return int(value) if float(value).is_integer() else value


def cluster_block(server: Any) -> dict[str, Any]:
    cluster = server.cluster
    if cluster is None:
        return {}
    block: dict[str, Any] = {"name": cluster.name, "addr": cluster.host,
                             "cluster_port": cluster.port or 0}
    urls = list(server.options.routes)
    if urls:
        block["urls"] = [u.split("://", 1)[-1].rsplit("@", 1)[-1] for u in urls]
    return block


def connz(server: Any, now_s: float, query: dict[str, str]) -> dict[str, Any]:
    """Open connections, paged (`offset`, `limit`), sorted (`sort=`), optionally with each
    connection's subscriptions (`subs=1`) and user (`auth=1`); `cid=N` selects one."""
    offset = number(query, "offset", 0)
    limit = number(query, "limit", CONNZ_LIMIT_DEFAULT, lo=1)
    conns = [c for c in server.clients.values() if not c.closing]
    wanted_cid = query.get("cid")
    if wanted_cid is not None:
        conns = [c for c in conns if str(c.cid) == wanted_cid]
    sort = query.get("sort", "cid")
    conns.sort(key=_SORT_KEYS.get(sort, _SORT_KEYS["cid"]))
    page = conns[offset:offset + limit]
    subs, auth = flag(query, "subs"), flag(query, "auth")
    return {"server_id": server.server_id, "now": rfc3339(now_s), "num_connections": len(page),
            "total": len(conns), "offset": offset, "limit": limit,
            "connections": [_conn(c, now_s, subs, auth) for c in page]}


def _conn(c: Any, now_s: float, subs: bool, auth: bool) -> dict[str, Any]:
    port = 0
    try:
        port = int(c.stream.socket.getpeername()[1])
    except (AttributeError, OSError, IndexError, TypeError):
        pass
    doc: dict[str, Any] = {
        "cid": c.cid, "kind": "Client", "type": "nats", "ip": c.ip, "port": port,
        "start": rfc3339(c.start_s), "last_activity": rfc3339(c.last_activity_s),
        "rtt": go_duration(0), "uptime": uptime(now_s - c.start_s),
        "idle": uptime(now_s - c.last_activity_s), "pending_bytes": len(c.out),
        "in_msgs": c.in_msgs, "out_msgs": c.out_msgs, "in_bytes": c.in_bytes,
        "out_bytes": c.out_bytes, "subscriptions": len(c.subs), "name": c.name,
        "lang": c.lang, "version": c.version,
    }  # fmt: skip
    if subs and c.subs:
        doc["subscriptions_list"] = sorted(s.subject for s in c.subs.values())
    if auth and c.user:
        doc["authorized_user"] = c.user
    return doc


def subsz(server: Any, now_s: float, query: dict[str, str]) -> dict[str, Any]:
    """Subscription index statistics; `subs=1` lists them (paged), `test=SUBJECT` filters to
    the subscriptions that subject would match."""
    items = list(server.sublist.all_items())
    doc: dict[str, Any] = {
        "server_id": server.server_id, "now": rfc3339(now_s),
        "num_subscriptions": len(items), "num_cache": len(server.routes),
        "num_inserts": len(items), "num_removes": 0, "num_matches": 0, "cache_hit_rate": 0.0,
        "max_fanout": 0, "avg_fanout": 0.0,
    }  # fmt: skip
    offset = number(query, "offset", 0)
    limit = number(query, "limit", CONNZ_LIMIT_DEFAULT, lo=1)
    if flag(query, "subs"):
        test = query.get("test")
        if test:
            matched = server.sublist.match(test)
            keep = {id(s) for s in matched.plain} | {id(s) for g in matched.queues for s in g}
            items = [i for i in items if id(i[2]) in keep]
        page = items[offset:offset + limit]
        doc["subscriptions_list"] = [_sub(subject, queue, sub) for subject, queue, sub in page]
    doc.update(total=len(items) if flag(query, "subs") else 0, offset=offset, limit=limit)
    return doc


def _sub(subject: str, queue: str | None, sub: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"account": "$G", "subject": subject, "sid": getattr(sub, "sid", ""),
                           "msgs": getattr(sub, "delivered", 0), "cid": 0}
    client = getattr(sub, "client", None)
    if client is not None:
        doc["cid"] = client.cid
    if queue:
        doc["qgroup"] = queue
    if getattr(sub, "max_msgs", 0):
        doc["max"] = sub.max_msgs
    return doc


def routez(server: Any, now_s: float, query: dict[str, str]) -> dict[str, Any]:
    cluster = server.cluster
    routes = list(cluster.routes.values()) if cluster is not None else []
    subs = flag(query, "subs")
    return {"server_id": server.server_id, "server_name": server.server_name,
            "now": rfc3339(now_s), "num_routes": len(routes),
            "routes": [_route(i + 1, r, subs) for i, r in enumerate(routes)]}


def _route(rid: int, conn: Any, subs: bool) -> dict[str, Any]:
    info = conn.peer_info
    ip, port = "", 0
    try:
        ip, port = conn.stream.socket.getpeername()[:2]
    except (AttributeError, OSError, ValueError, TypeError):
        pass
    interest = list(conn.remote.all_items())
    doc: dict[str, Any] = {
        "rid": rid, "remote_id": conn.peer_id, "remote_name": info.get("server_name", ""),
        "did_solicit": conn.solicited, "is_configured": bool(conn.url), "ip": ip, "port": port,
        "start": "", "last_activity": "", "rtt": go_duration(0), "uptime": "", "idle": "",
        "pending_size": len(conn.out), "in_msgs": 0, "out_msgs": 0, "in_bytes": 0, "out_bytes": 0,
        "subscriptions": len(interest),
    }  # fmt: skip
    if subs:
        doc["subscriptions_list"] = sorted({subject for subject, _, _ in interest})
    return doc
