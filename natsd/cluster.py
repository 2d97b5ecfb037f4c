"""The route manager: a full mesh of route connections between the servers of one cluster.

How it works:
- `run()` listens on the cluster port and dials every configured route URL (`_solicit`, one task
  per URL, reconnecting with capped, jittered backoff for ever). A route registers when its
  handshake completes (route.py); at most one route per peer server_id is kept: both ends keep
  the connection dialled by the smaller server_id (`route_protocol.keep_new_connection`).
- Gossip: a newly registered peer's INFO is forwarded to every other route; a server receiving
  an INFO about a server it has no route to dials it (an implicit route, a bounded number of
  attempts), so one seed URL per node is enough to form the full mesh. A server that one of our
  configured URLs already led to is left to that URL's dial loop, and while a configured URL is
  not connected, implicit dials wait a little (`IMPLICIT_GRACE_S`) for it: the gossiped server
  may be behind it (e.g. a proxy that a direct route would bypass). `implicit_routes = false`
  (`--no_implicit_routes`) turns implicit dials off entirely.
- Interest: `local[(subject, queue)]` counts local *client* subscriptions (internal ones, such
  as JetStream's API handlers, stay local: every server runs its own). RS+ goes out on 0 -> 1
  (for queues on every change, with the member count as weight), RS- on 1 -> 0, and a newly
  registered route gets all of it. A peer's RS+ is never re-propagated (one hop). Each route
  keeps its peer's interest in its own Sublist, so a route that drops and comes back simply
  re-learns it from the re-sent RS+ lines. To make an internal subscription reachable from
  other servers, call `local_sub_added(subject, queue)` for it (and `local_sub_removed` when it
  goes).
- Messages: while at least one route is up the server sets `server.cluster_active = self` and
  client publishes come here (`publish`): local delivery as usual, plus one RMSG/HMSG per route
  with matching interest. Each queue group gets one member across local and remote (remote
  entries weighted by their member count); the chosen route is told the queue names. A routed
  message is delivered only to local subscribers (`remote_msg`), never forwarded again.
  A routed message whose reply is `<$JS.ACK reply>@<subject>` (a JetStream delivery from a
  consumer on another server, jetstream/cluster_routing.py) is matched on its own subject (the
  deliver subject) and shown to local subscribers as `subject` with the bare ack reply; the
  suffix means nothing on a client's own publish (never stripped there).
- Batching (the JetStream publish path with a client on a stream follower's node): a forwarded
  client publish is framed from the client's own line tail and written at the end of the
  client's read (`send_later`); a route read's messages are delivered in one call
  (`remote_msgs`: one match per subject run, the usual single subscriber inline); the PubAcks
  of one commit go out as one write per route (`forward_internal_many`).
- Clients learn the cluster: `connect_urls` (our own client URL and every peer's) goes into
  client INFO, and protocol-1 clients get an async INFO whenever the set changes. As in
  nats-server, a server that never had a route offers none; once it had one, its own URL stays
  when every peer is gone (tests/integration/test_cluster_join_info.py compares the two). With
  `no_advertise` (as nats-server) this server neither offers its URL to peers nor peers' URLs
  to its clients, so clients stay where they were put.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

import trio

from natsd import protocol as p
from natsd import route_protocol as rp
from natsd.config import VERSION
from natsd.ops import PayloadRun
from natsd.route import STALL_BYTES, RouteConnection, RouteState
from natsd.subjects import ONE_OFF_PREFIXES
from natsd.tls import TlsError, client_context, route_accept_tls, route_dial_tls, route_settings
from natsd.tls import server_context

if TYPE_CHECKING:
    from natsd.server import Server

BACKOFF_FIRST_S = 0.05
BACKOFF_MAX_S = 1.0
IMPLICIT_ATTEMPTS_MAX = 5
IMPLICIT_GRACE_S = 2.0
CONNECT_TIMEOUT_S = 2.0
ROUTE_PING_INTERVAL_MAX_S = 30.0
_REMOTE_CACHE_MAX = 8192
# Subjects seen once (a PubAck to a request's unique inbox): matched without being admitted to
# the remote-interest or sublist caches, where each would push a repeating subject out.
_ONE_OFF = ("_INBOX.", *ONE_OFF_PREFIXES)
_JS_ACK = rp.JS_ACK_PREFIX  # a routed JetStream delivery's reply (maybe `...@<subject>`)


class Cluster:
    def __init__(self, server: Server) -> None:
        opts = server.options
        self.server = server
        self.log = server.log.bind(component="cluster")
        self.dynamic = not opts.cluster_name
        self.name = opts.cluster_name or secrets.token_hex(11)
        self.host = opts.cluster_host or "0.0.0.0"
        self.port: int | None = None
        self.ping_interval_s = min(opts.ping_interval_s, ROUTE_PING_INTERVAL_MAX_S)
        self.routes: dict[str, RouteConnection] = {}
        self.local: dict[tuple[str, str | None], int] = {}
        self.connect_urls: list[str] = []
        self.credentials = (opts.cluster_user, opts.cluster_password) if opts.cluster_user else None
        self.rejections = 0
        self.gossip_seen = 0  # INFOs about other servers received (observability)  # handshakes refused (self, cluster name, duplicates): observability
        self._remote_cache: dict[str, list] = {}
        self._heads: dict[str, bytes] = {}  # subject -> b"$G <subject>" (RMSG line start)
        # subject -> (routes, b"$G <subject>") for a repeating subject only plain interest of
        # those routes reaches (a stream's subject on a follower's node); cleared with the above
        self._plain_targets: dict[str, tuple] = {}
        self._dialling: set[str] = set()  # server_ids with an implicit dial in progress
        self._url_ids: dict[str, str] = {}  # route URL -> server_id it led to
        self._changed = trio.Event()  # set on every route registration/loss
        self._nursery: trio.Nursery | None = None
        # route TLS (`cluster { tls {...} }`): INFO in plaintext, then the handshake (tls.py)
        self.tls = route_settings(opts)
        self.tls_server_ctx = server_context(self.tls) if self.tls.enabled else None
        self.tls_client_ctx = client_context(self.tls) if self.tls.enabled else None

    # -- serving ----------------------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        opts = self.server.options
        host = None if self.host in ("", "0.0.0.0") else self.host
        listeners = await trio.open_tcp_listeners(opts.cluster_port or 0, host=host)
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for listener in listeners:
                nursery.start_soon(self._accept_loop, listener)
            for url in opts.routes:
                nursery.start_soon(self._solicit, url, True)
            self.log.info("cluster.listening", port=self.port, name=self.name,
                          routes=list(opts.routes))
            self.connect_urls = self._compute_connect_urls()
            task_status.started(self.port)

    async def _accept_loop(self, listener: trio.SocketListener) -> None:
        assert self._nursery is not None
        while True:
            try:
                stream = await listener.accept()
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                return
            except OSError as exc:
                self.log.warning("cluster.accept_error", error=repr(exc))
                await trio.sleep(0.01)
                continue
            self._nursery.start_soon(self._accepted, stream)

    async def _accepted(self, stream: trio.abc.Stream) -> None:
        if self.tls_server_ctx is not None:
            try:
                stream = await route_accept_tls(stream, p.encode_info(self.route_info()),
                                                self.tls_server_ctx, self.tls.timeout_s)
            except (TlsError, trio.TooSlowError, trio.BrokenResourceError, OSError) as exc:
                self.log.info("cluster.tls_failed", side="accept", error=str(exc))
                await trio.aclose_forcefully(stream)
                return
        await RouteConnection(self, stream, solicited=False).run()

    async def _solicit(self, url: str, explicit: bool, peer_id: str = "") -> None:
        """Dial `url` until a route stands; explicit routes keep re-dialling for ever."""
        try:
            host, port = rp.parse_route_url(url)
        except ValueError:
            self.log.warning("cluster.bad_route_url", url=url)
            return
        failures = 0
        while explicit or failures < IMPLICIT_ATTEMPTS_MAX:
            known = self._url_ids.get(url, peer_id)
            if known == self.server.server_id:
                return  # our own address in the seed list
            if known in self.routes:  # already connected to that server some other way
                await self.routes[known].finished.wait()
                if not explicit:
                    return
                continue
            conn = await self._dial(url, host, port)
            if conn is not None:
                await conn.run()
                if conn.peer_id:
                    self._url_ids[url] = conn.peer_id
                    self._notify()
                failures = 0 if conn.registered_once else failures + 1
                if conn.registered_once and not explicit:
                    return  # an implicit route that dropped is re-made by gossip or by the peer
            else:
                failures += 1
            await trio.sleep(_backoff_s(failures, self.server.rng.random()))

    async def _dial(self, url: str, host: str, port: int) -> RouteConnection | None:
        try:
            with trio.fail_after(CONNECT_TIMEOUT_S):
                stream = await trio.open_tcp_stream(host, port)
        except (OSError, trio.TooSlowError) as exc:
            self.log.debug("cluster.dial_failed", url=url, error=repr(exc))
            return None
        if self.tls_client_ctx is not None:
            try:
                stream = await route_dial_tls(stream, self.tls_client_ctx, self.tls.timeout_s)
            except (TlsError, trio.BrokenResourceError, OSError) as exc:
                self.log.info("cluster.tls_failed", side="dial", url=url, error=str(exc))
                await trio.aclose_forcefully(stream)
                return None
        return RouteConnection(self, stream, solicited=True, url=url)

    # -- handshake data ---------------------------------------------------------------------

    def route_connect(self, url: str | None = None) -> dict[str, Any]:
        """Our CONNECT on a route we dialled; credentials come from the route URL, else (an
        implicit route learnt by gossip) from our own cluster authorization."""
        connect = {
            "echo": True, "verbose": False, "pedantic": False, "tls_required": self.tls.enabled,
            "headers": True, "name": self.server.server_id, "cluster": self.name,
            "cluster_dynamic": self.dynamic,
        }  # fmt: skip
        credentials = (rp.route_credentials(url) if url else None) or self.credentials
        if credentials is not None:
            connect["user"], connect["pass"] = credentials
        return connect

    def route_info(self) -> dict[str, Any]:
        opts = self.server.options
        host, port = self._advertise()
        info: dict[str, Any] = {
            "server_id": self.server.server_id,
            "server_name": self.server.server_name,
            "version": VERSION,
            "proto": 1,
            "go": "python",
            "host": self.host,
            "port": self.port,
            "headers": True,
            "max_payload": opts.max_payload_bytes,
            "cluster": self.name,
            "ip": rp.route_url(host, port),
        }
        if self.dynamic:
            info["cluster_dynamic"] = True
        if self.credentials is not None:
            info["auth_required"] = True
        if self.tls.enabled:
            info["tls_required"] = True
            if self.tls.verify:
                info["tls_verify"] = True
        if not opts.cluster_no_advertise:
            info["connect_urls"] = [self._own_client_url()]
        if opts.jetstream:
            info["jetstream"] = True
        return info

    def _advertise(self) -> tuple[str, int]:
        adv = self.server.options.cluster_advertise
        if adv:
            host, _, port = adv.rpartition(":")
            if port.isdigit():
                return host or "127.0.0.1", int(port)
            return adv, int(self.port or 0)
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return host, int(self.port or 0)

    def _own_client_url(self) -> str:
        host = self.server.options.host
        if host in ("", "0.0.0.0"):
            host = self._advertise()[0]
        return f"{host}:{self.server.port}"

    def handshake_rejected(self, conn: RouteConnection, rejection: rp.Rejection) -> None:
        if conn.url and conn.peer_id:
            self._url_ids[conn.url] = conn.peer_id
        self.rejections += 1
        self.log.info("cluster.route_rejected", peer=conn.peer_id, reason=rejection.value)
        self._notify()

    # -- registration -----------------------------------------------------------------------

    def register(self, conn: RouteConnection) -> bool:
        """Accept `conn` as the route to its peer, unless we keep an existing one."""
        existing = self.routes.get(conn.peer_id)
        if existing is not None and existing is not conn:
            if not rp.keep_new_connection(self.server.server_id, conn.peer_id,
                                          existing.solicited, conn.solicited):
                return False
            del self.routes[conn.peer_id]
            existing.close("replaced by the preferred duplicate")
        if conn.url:
            self._url_ids[conn.url] = conn.peer_id
        if self.dynamic and not conn.peer_info.get("cluster_dynamic"):
            self.name = str(conn.peer_info.get("cluster") or self.name)
            self.dynamic = False
        self.routes[conn.peer_id] = conn
        return True

    def route_registered(self, conn: RouteConnection) -> None:
        self.log.info("cluster.route_registered", peer=conn.peer_id,
                      peer_name=conn.peer_info.get("server_name"), solicited=conn.solicited)
        self._dialling.discard(conn.peer_id)
        frames = [rp.encode_rs_plus(rp.GLOBAL_ACCOUNT, subject, queue, count)
                  for (subject, queue), count in self.local.items()]
        if frames:
            conn.send(b"".join(frames))
        gossip = p.encode_info(conn.peer_info)
        for other in self.routes.values():
            if other is not conn:
                other.send(gossip)
        self._topology_changed()

    def route_closed(self, conn: RouteConnection) -> None:
        if self.routes.get(conn.peer_id) is conn:
            del self.routes[conn.peer_id]
            self.log.info("cluster.route_lost", peer=conn.peer_id)
            self._topology_changed()

    def peer_info_updated(self, conn: RouteConnection) -> None:
        self._topology_changed()

    def gossip_received(self, info: dict) -> None:
        """INFO about another server: dial it unless we already have (or are making) a route."""
        peer = info.get("server_id")
        if not isinstance(peer, str) or not peer or peer == self.server.server_id:
            return
        self.gossip_seen += 1
        if not self.server.options.cluster_implicit_routes:
            return  # configured routes only (e.g. every link must go through a test proxy)
        if peer in self.routes or peer in self._dialling or self._nursery is None:
            return
        if peer in self._explicit_ids():
            return  # a configured route URL leads there: its own dial loop reconnects it
        url = info.get("ip") or (f"{info.get('host')}:{info.get('port')}" if info.get("port") else "")
        if not url:
            return
        self._dialling.add(peer)
        self.log.info("cluster.implicit_route", peer=peer, url=url)
        self._nursery.start_soon(self._implicit, str(url), peer)

    async def _implicit(self, url: str, peer: str) -> None:
        """Dial a gossiped server, but first give our explicit routes that have not answered
        yet a moment: the gossiped server may be one of them (reached through another address,
        e.g. a proxy), and a second, direct route would bypass that address."""
        try:
            with trio.move_on_after(IMPLICIT_GRACE_S):
                while peer not in self.routes and self._unresolved_explicit():
                    await self._changed.wait()
            if peer not in self.routes and peer not in self._explicit_ids():
                await self._solicit(url, False, peer)
        finally:
            self._dialling.discard(peer)

    def _explicit_ids(self) -> set[str]:
        """Server ids our configured route URLs led to (last seen)."""
        return {self._url_ids[url] for url in self.server.options.routes if url in self._url_ids}

    def _unresolved_explicit(self) -> bool:
        """Is some configured route URL not connected right now (and not our own address)?"""
        me = self.server.server_id
        return any(self._url_ids.get(url) not in self.routes and self._url_ids.get(url) != me
                   for url in self.server.options.routes)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _topology_changed(self) -> None:
        self._remote_cache.clear()
        self._plain_targets.clear()
        self.server.cluster_active = self if self.routes else None
        self._notify()
        urls = self._compute_connect_urls()
        if urls != self.connect_urls:
            self.connect_urls = urls
            if not self.server.options.cluster_no_advertise:
                self._announce_to_clients()

    def _compute_connect_urls(self) -> list[str]:
        urls: list[str] = []
        if not self.server.options.cluster_no_advertise and (self.routes or self.connect_urls):
            urls.append(self._own_client_url())  # as nats-server: none until a first peer, then kept
        for conn in sorted(self.routes.values(), key=lambda c: c.peer_id):
            if conn.peer_info.get("ldm"):
                continue  # a peer in lame-duck mode is not offered to clients
            for url in conn.peer_info.get("connect_urls") or ():
                if isinstance(url, str) and url not in urls:
                    urls.append(url)
        return urls

    def _announce_to_clients(self) -> None:
        server = self.server
        for client in list(server.clients.values()):
            if client.protocol >= 1 and client.first_pong_sent and not client.closing:
                client.send(p.encode_info(server.client_info(client)))

    def decorate_client_info(self, info: dict[str, Any]) -> None:
        """Client INFO hook: cluster name and the URLs clients may fail over to."""
        info["cluster"] = self.name
        if self.connect_urls and not self.server.options.cluster_no_advertise:
            info["connect_urls"] = list(self.connect_urls)

    async def wait_routes(self, count: int, timeout_s: float) -> bool:
        """Wait until at least `count` routes are registered (for tests and tooling)."""
        with trio.move_on_after(timeout_s):
            while len(self.routes) < count:
                await self._changed.wait()
            return True
        return False

    # -- local interest (hooks from Server.add/remove_subscription) -------------------------

    def local_sub_added(self, subject: str, queue: str | None) -> None:
        key = (subject, queue)
        count = self.local.get(key, 0) + 1
        self.local[key] = count
        if count == 1 or queue is not None:
            self._broadcast(rp.encode_rs_plus(rp.GLOBAL_ACCOUNT, subject, queue, count))

    def local_sub_removed(self, subject: str, queue: str | None) -> None:
        key = (subject, queue)
        count = self.local.get(key, 0) - 1
        if count > 0:
            self.local[key] = count
            if queue is not None:
                self._broadcast(rp.encode_rs_plus(rp.GLOBAL_ACCOUNT, subject, queue, count))
            return
        if self.local.pop(key, None) is not None:
            self._broadcast(rp.encode_rs_minus(rp.GLOBAL_ACCOUNT, subject, queue))

    def _broadcast(self, frame: bytes) -> None:
        for conn in self.routes.values():
            conn.send(frame)

    def remote_interest_changed(self) -> None:
        self._remote_cache.clear()
        self._plain_targets.clear()

    # -- messages ---------------------------------------------------------------------------

    def remote_matches(self, subject: str) -> list:
        """[(route, has plain interest, {queue: weight})] for routes interested in `subject`."""
        found = self._remote_cache.get(subject)
        if found is None:
            if subject.startswith(_ONE_OFF):  # a PubAck inbox: walked, not cached anywhere
                return [(conn, plain, queues) for conn in self.routes.values()
                        for plain, queues in (conn.interest(subject, once=True),)
                        if plain or queues]
            found = []
            for conn in self.routes.values():
                plain, queues = conn.interest(subject)
                if plain or queues:
                    found.append((conn, plain, queues))
            if len(self._remote_cache) >= _REMOTE_CACHE_MAX:
                self._remote_cache.clear()
            self._remote_cache[subject] = found
        return found

    def publish(self, src: Any, route: tuple, subject: str, reply: str | None,
                headers: bytes | None, payloads: list[bytes], tail: bytes) -> None:
        """A client's publish (a run of payloads) while routes exist: local + remote."""
        server = self.server
        hit = self._plain_targets.get(subject)
        if hit is not None and not (route and route[1]):  # plain interest only (a stream's subject)
            if route:
                server.deliver(src, route, subject, reply, headers, payloads, tail)
            conns, pre = hit
            if headers is None and len(payloads) == 1:
                frames = b"RMSG %s%s%s\r\n" % (pre, tail, payloads[0])
            else:
                frames = self._plain_frames(subject, headers, payloads, tail)
            for conn in conns:
                conn.send_later(frames)
                if len(conn.out) > STALL_BYTES and src is not None:
                    src.stall_on = conn
            return
        remote = self.remote_matches(subject)
        if not remote:
            if route:
                server.deliver(src, route, subject, reply, headers, payloads, tail)
            elif reply is not None and src is not None and src.no_responders:
                for _ in payloads:
                    server.no_responders(src, subject, reply)
            return
        if not (route and route[1]) and not any(q for _, _, q in remote):
            if route:
                server.deliver(src, route, subject, reply, headers, payloads, tail)
            frames = self._plain_frames(subject, headers, payloads, tail)
            for conn, _, _ in remote:
                conn.send_later(frames)
                if len(conn.out) > STALL_BYTES and src is not None:
                    src.stall_on = conn
            if subject in self._remote_cache:  # repeating: next time straight to its routes
                if len(self._plain_targets) >= _REMOTE_CACHE_MAX:
                    self._plain_targets.clear()
                pre = self._heads.get(subject) or b"$G " + rp._b(subject)  # noqa: SLF001
                self._plain_targets[subject] = (tuple(c for c, _, _ in remote), pre)
            return
        for payload in payloads:
            self._publish_queued(src, subject, reply, headers, payload, tail, remote)

    def _plain_frames(self, subject: str, headers: bytes | None, payloads: Any,
                      tail: bytes) -> bytes:
        """RMSG/HMSG frames of a client's publish run: `RMSG $G <subject>` + the client tail
        (` [reply] <sizes>`: the route line's end too) + payload, for each payload."""
        pre = self._heads.get(subject)
        if pre is None:
            pre = b"$G " + rp._b(subject)  # noqa: SLF001
            if not subject.startswith(_ONE_OFF):  # a reply inbox would only push others out
                if len(self._heads) >= _REMOTE_CACHE_MAX:
                    self._heads.clear()
                self._heads[subject] = pre
        if headers is None:
            if len(payloads) == 1:
                return b"RMSG %s%s%s\r\n" % (pre, tail, payloads[0])
            if type(payloads) is PayloadRun:
                return payloads.fanout(b"RMSG " + pre + tail)
            pre_tail = b"RMSG " + pre + tail
            return pre_tail + (b"\r\n" + pre_tail).join(payloads) + b"\r\n"
        pre_tail = b"HMSG " + pre + tail + headers
        return b"".join(pre_tail + pl + b"\r\n" for pl in payloads)

    def _publish_queued(self, src: Any, subject: str, reply: str | None,
                        headers: bytes | None, payload: bytes, tail: bytes, remote: list) -> None:
        """One message with queue groups somewhere: one member per group across the cluster."""
        local = self.server.sublist.match(subject)
        local_plain = local.plain
        local_groups = dict(zip(local.queue_names, local.queues, strict=True))
        if self.server.deny_filters:  # subscribe deny lists (permissions.py) filter delivery
            local_plain, local_groups = _without_denied(self.server, local_plain, local_groups, subject)
        names = list(local_groups)
        for _, _, queues in remote:
            names.extend(n for n in queues if n not in local_groups and n not in names)
        chosen_local: list[tuple] = []
        chosen_remote: dict[int, list[str]] = {}
        for name in names:
            members = local_groups.get(name, ())
            candidates = [(i, q[name]) for i, (_, _, q) in enumerate(remote) if name in q]
            target = rp.pick_weighted(len(members), candidates, self.server.rng.random())
            if target is None:
                chosen_local.append(members)
            else:
                chosen_remote.setdefault(target, []).append(name)
        if local_plain or chosen_local:
            self.server.deliver(src, (local_plain, tuple(chosen_local)), subject, reply, headers,
                                [payload], tail)
        for i, (conn, plain, _) in enumerate(remote):
            queues = chosen_remote.get(i, ())
            if plain or queues:
                conn.send(rp.encode_rmsg(rp.GLOBAL_ACCOUNT, subject, reply, queues, headers, payload))
                if len(conn.out) > STALL_BYTES and src is not None:
                    src.stall_on = conn

    def forward_internal(self, subject: str, reply: str | None, headers: bytes | None,
                         payload: bytes) -> None:
        """A server-internal publish (already delivered locally): send it to interested peers.
        Queue groups with local members were served locally; others get one remote member."""
        remote = self.remote_matches(subject)
        if not remote:
            return
        if not any(q for _, _, q in remote):  # plain interest only (a PubAck to its inbox)
            frame = rp.encode_rmsg(rp.GLOBAL_ACCOUNT, subject, reply, (), headers, payload)
            for conn, _, _ in remote:
                conn.send(frame)
            return
        local_names = set(self.server.sublist.match(subject).queue_names)
        chosen: dict[int, list[str]] = {}
        names = {n for _, _, q in remote for n in q if n not in local_names}
        for name in sorted(names):
            candidates = [(i, q[name]) for i, (_, _, q) in enumerate(remote) if name in q]
            chosen.setdefault(rp.pick_weighted(0, candidates, self.server.rng.random()), []).append(name)
        for i, (conn, plain, _) in enumerate(remote):
            queues = chosen.get(i, ())
            if plain or queues:
                conn.send(rp.encode_rmsg(rp.GLOBAL_ACCOUNT, subject, reply, queues, headers, payload))

    def forward_internal_many(self, messages: list[tuple[str, bytes]]) -> None:
        """`forward_internal` of many header-less, reply-less messages (the PubAcks of one
        commit): one write per route for the lot. Per route, order is kept: a message that
        needs the general path (queue interest somewhere) first flushes what was gathered."""
        routes = list(self.routes.values())
        if not routes:
            return
        gathered: dict[RouteConnection, list[bytes]] = {}
        for subject, payload in messages:
            frame = None
            if subject.startswith(_ONE_OFF):  # a PubAck inbox: walked, not cached anywhere
                targets = []
                for conn in routes:
                    result = conn.one_off_stems.match(subject)
                    if result.queues:
                        targets = None
                        break
                    if result.plain:
                        targets.append(conn)
            else:
                remote = self.remote_matches(subject)
                targets = None if any(q for _, _, q in remote) else [c for c, _, _ in remote]
            if targets is None:
                _send_gathered(gathered)
                self.forward_internal(subject, None, None, payload)
                continue
            for conn in targets:
                if frame is None:
                    frame = b"RMSG $G %s %d\r\n%s\r\n" % (rp._b(subject), len(payload), payload)  # noqa: SLF001
                frames = gathered.get(conn)
                if frames is None:
                    gathered[conn] = [frame]
                else:
                    frames.append(frame)
        _send_gathered(gathered)

    def remote_msgs(self, conn: RouteConnection, ops: list) -> None:
        """The routed messages of one read, in order (`remote_msg` each, one hop): a run of
        ops with one subject is matched once, and the usual ones (one plain subscriber, no
        queues, no headers: a forwarded JetStream publish reaching the stream's ingest, a
        PubAck reaching its requester's inbox) are delivered inline."""
        server = self.server
        if server.deny_filters or server.reply_trackers:
            for op in ops:
                self.remote_msg(conn, op)
            return
        sublist = server.sublist
        one_off = server.one_off_stems.match
        dirty = server.dirty
        last = None
        plain: Any = ()
        for op in ops:
            account, subject, reply, queues, headers, payloads, tail = op
            if queues or account != rp.GLOBAL_ACCOUNT or (reply is not None
                                                          and reply.startswith(_JS_ACK)):
                self.remote_msg(conn, op)
                last = None
                continue
            if subject != last:
                last = subject
                plain = (one_off(subject) if subject.startswith(_ONE_OFF)
                         else sublist.match(subject)).plain
            if not plain:
                continue
            sub = plain[0]
            if len(plain) > 1 or headers is not None or len(payloads) != 1 or sub.max_msgs:
                server.deliver(None, (plain, ()), subject, reply, headers, payloads, tail)
                continue
            c = sub.client
            if c is None:  # internal (JetStream's ingest): straight to the callback
                sub.delivered += 1
                try:
                    sub.callback(subject, reply, None, payloads[0])
                except Exception as exc:  # noqa: BLE001 - as Server._call_internal
                    server.log.error("server.internal_callback_failed", subject=subject,
                                     error=repr(exc), exc_info=True)
                continue
            payload = payloads[0]
            out = c.out
            out += b"MSG %s %s%s%s\r\n" % (subject.encode("utf-8", "surrogateescape"), sub.sid_b,
                                            tail, payload)
            sub.delivered += 1
            c.out_msgs += 1
            c.out_bytes += len(payload)
            if len(out) > c.stall_bytes:
                server._pressure(None, c)  # noqa: SLF001
            if not c.dirty:
                c.dirty = True
                dirty.append(c)

    def remote_msg(self, conn: RouteConnection, op: tuple) -> None:
        """A routed message (run): deliver to local subscribers only (one hop); the queue
        groups named by the sender get one local member each."""
        account, subject, reply, queues, headers, payloads, tail = op
        if account != rp.GLOBAL_ACCOUNT:
            return
        shown = subject
        routed = rp.split_deliver_reply(reply)
        if routed is not None:  # a JetStream delivery: show the stream subject, bare ack reply
            shown, reply = routed
            tail = rp.msg_tail_sizes(reply, -1 if headers is None else len(headers),
                                     len(payloads[0]) + (0 if headers is None else len(headers)))
        result = (self.server.match_one_off(subject) if subject.startswith(_ONE_OFF)
                  else self.server.sublist.match(subject))
        plain = result.plain
        groups: tuple = ()
        if queues and result.queues:
            groups = tuple(g for g, n in zip(result.queues, result.queue_names, strict=True)
                           if n in queues)
        if self.server.deny_filters:  # subscribe deny lists (permissions.py) filter delivery
            plain, named = _without_denied(self.server, plain, dict(enumerate(groups)), subject)
            groups = tuple(named.values())
        if plain or groups:
            self.server.deliver(None, (plain, groups), shown, reply, headers, payloads, tail)

    def is_registered(self, conn: RouteConnection) -> bool:
        return conn.state is RouteState.REGISTERED and self.routes.get(conn.peer_id) is conn


def _without_denied(server: Server, plain: Any, groups: dict, subject: str) -> tuple[Any, dict]:
    """Plain subscriptions and named queue groups minus the members whose connection may not
    receive `subject`; groups left empty are dropped."""
    plain, _ = server.without_denied(plain, (), subject)
    kept = {}
    for name, members in groups.items():
        _, filtered = server.without_denied((), (members,), subject)
        if filtered:
            kept[name] = filtered[0]
    return plain, kept


def _send_gathered(gathered: dict) -> None:
    """Send each route its gathered frames as one write (at the end of the read), then forget them."""
    for conn, frames in gathered.items():
        conn.send_later(b"".join(frames))
    gathered.clear()


def _backoff_s(failures: int, draw: float) -> float:
    base = min(BACKOFF_FIRST_S * (2 ** min(failures, 10)), BACKOFF_MAX_S)
    return base * (0.5 + draw)
