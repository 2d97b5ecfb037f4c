"""Cluster-wide internal messaging for clustered JetStream: routed subscriptions, requests, delivery.

How it works: natsd keeps internal subscriptions local (every single server answers its own
`$JS.API`), but in a cluster exactly one server must handle a stream's publishes and API calls:
its Raft leader. So a clustered server subscribes *only while it leads*, and announces those
subscriptions to its routes like a client's (`Cluster.local_sub_added`), so a publish or request
arriving at any server reaches the leader in one hop. `subscribe_routed` returns a handle whose
`unsubscribe()` withdraws both.

A publish arriving at a follower's node thus crosses one route each way, batched at every
step (natsd/cluster.py, route.py): the follower frames a read's client PUBs for the stream's
subjects from their own lines and writes them to the leader's route at the end of that read;
the leader parses a read's run of forwarded frames in one pass and hands each to the stream's
ingest callback in one delivery call (the subject matched once); after a commit, the PubAcks
of the batch go to each requester's route as one write, the requester's inbox matched once
per requester (route_batch_stems.py), and the follower delivers a read's acks the same way.

`Requester` is request/reply between servers over the same machinery: one routed wildcard inbox
per server, a future per request, a deadline on each (`None` when nobody answered in time).

`RoutedServer` is what consumers running on a stream leader see as "the server": deliveries to a
deliver subject (a pull request's inbox, a push consumer's subject) that a client on another
server is subscribed to go out over the route as RMSG on the deliver subject (so the peer's
interest routes them) with the reply `<$JS.ACK reply>@<stream subject>`; the receiving server
strips the suffix and its client sees the stream subject with the bare ack reply, exactly as
from a local consumer (as nats-server; encoding and split in natsd/route_protocol.py).
Messages without an ack reply (heartbeats, flow control: shown on the deliver subject anyway)
go unchanged. Everything else passes through to the real server.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Callable
from typing import Any

import attrs
import trio

from natsd import route_protocol as rp

Callback = Callable[[str, "str | None", "bytes | None", bytes], None]
PENDING_REQUESTS_MAX = 10_000


@attrs.define
class RoutedSub:
    server: Any
    subject: str
    sub: Any
    announced: bool
    active: bool = True

    def unsubscribe(self) -> None:
        if not self.active:
            return
        self.active = False
        self.sub.unsubscribe()
        cluster = self.server.cluster
        if self.announced and cluster is not None:
            cluster.local_sub_removed(self.subject, None)


def subscribe_routed(server: Any, subject: str, callback: Callback) -> RoutedSub:
    """An internal subscription that the other servers of the cluster route to."""
    sub = server.subscribe_internal(subject, None, callback)
    cluster = server.cluster
    if cluster is not None:
        cluster.local_sub_added(subject, None)
    return RoutedSub(server, subject, sub, cluster is not None)


@attrs.define
class _Pending:
    done: trio.Event = attrs.Factory(trio.Event)
    reply: bytes | None = None


class Requester:
    """Request/reply from server-internal code to any server of the cluster."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.prefix = f"_JSC_INBOX.{secrets.token_hex(6)}."
        self._ids = itertools.count(1)
        self._pending: dict[str, _Pending] = {}
        self._sub: RoutedSub | None = None

    def start(self) -> None:
        self._sub = subscribe_routed(self.server, self.prefix + "*", self._on_reply)

    def stop(self) -> None:
        if self._sub is not None:
            self._sub.unsubscribe()

    def _on_reply(self, subject: str, reply: str | None, headers: bytes | None, payload: bytes) -> None:
        pending = self._pending.get(subject[len(self.prefix):])
        if pending is not None and not pending.done.is_set():
            pending.reply = bytes(payload)
            pending.done.set()

    async def request(self, subject: str, payload: bytes, timeout_s: float) -> bytes | None:
        if len(self._pending) >= PENDING_REQUESTS_MAX:
            return None
        token = str(next(self._ids))
        pending = self._pending[token] = _Pending()
        try:
            self.server.publish_internal(subject, self.prefix + token, None, payload)
            with trio.move_on_after(timeout_s):
                await pending.done.wait()
            return pending.reply
        finally:
            del self._pending[token]


@attrs.frozen
class _Routed:
    """A match that includes routes: `local` (natsd's route tuple, maybe empty) and the
    remote matches of the deliver subject `to`."""

    local: tuple
    to: str
    remote: tuple


class _NoCache:
    def get(self, key: str) -> None:
        return None


class RoutedServer:
    """The real server, except that deliveries also reach subscribers behind routes."""

    def __init__(self, server: Any) -> None:
        self._server = server
        self.routes = _NoCache()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._server, name)

    def route_for(self, to: str) -> Any:
        local = self._server.route_for(to)
        cluster = self._server.cluster_active
        remote = tuple(cluster.remote_matches(to)) if cluster is not None else ()
        if not any(plain for _, plain, _ in remote):
            return local
        return _Routed(local, to, remote)

    def deliver(self, src: Any, route: Any, subject: str, reply: str | None, headers: bytes | None,
                payloads: list[bytes], tail: bytes) -> None:
        if not isinstance(route, _Routed):
            self._server.deliver(src, route, subject, reply, headers, payloads, tail)
            return
        if route.local:
            self._server.deliver(src, route.local, subject, reply, headers, payloads, tail)
        routed_reply = reply
        if subject != route.to:  # the peer shows its subscriber `subject` (route_protocol.py)
            routed_reply = rp.encode_deliver_reply(reply, subject) or reply
        for conn, plain, _ in route.remote:
            if plain:
                for payload in payloads:
                    conn.send(rp.encode_rmsg(rp.GLOBAL_ACCOUNT, route.to, routed_reply, (),
                                             headers, payload))
