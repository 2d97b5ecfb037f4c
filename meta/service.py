"""The clustered JetStream service: the meta group, the reconciler and the stream groups.

How it works: `run_clustered_jetstream(server)` is the natsd service `jetraft server -js
--cluster ...` runs (cli/server.py picks it when a cluster port is configured). It opens the
server's Raft log store (`<store_dir>/raft/raft.db`, one SQLite file for every group), the
TCP Raft transport on the Raft port (meta/topology.py: node id = server name with
`raft_peers`, else Raft address = cluster port + 1), one `RaftHost`, the `ClusteredJetStream`
shell, and the meta group `_meta_`, bootstrapped with this server and every route peer as
voters (every `raft_peers` entry when given; see "Joining" below for seedless servers).

- Every server applies committed meta commands to its `MetaState` (meta/assignments.py) and
  wakes the reconciler, which starts, updates and stops local stream groups
  (meta/reconciler.py). At startup the meta log is replayed from index 1, which re-opens every
  assigned stream from its existing store.
- The meta leader (after a read-index barrier) subscribes, routed across the cluster, to
  `$JS.API.>` and answers the cluster-level requests (meta/api.py), each after a read-index
  round (a deposed meta leader never answers from stale state); requests about a stream it
  does not know get "stream not found"; the rest belongs to stream leaders, which subscribed to
  their own stream's subjects, and it stays silent.
- Durable consumers are meta assignments: a stream leader asks the meta leader on
  `$JSC.CONSUMER.ASSIGN` (meta/consumers.py), and after every meta change each server's
  stream leaders run exactly the assigned durables (jetstream/cluster_consumers.py).
- Each server announces its name, cluster and tags on `$JSC.HELLO` until the meta state records
  them; the meta leader proposes `RegisterServer` for members of the meta group.
- Joining (a server given one seed route finds the others by route gossip): until it is
  registered, a server also announces itself on `$JSC.JOIN` with its Raft address and whether
  its meta log is still empty. The meta leader admits a server that is not a member, was never
  registered (a SERVER.REMOVEd one is not taken back) and is fresh (a server holding another
  group's meta log is refused: two groups never merge) with a single-server change: first a
  learner, then, once its log has caught up with the leader's commit index, a voter. The
  changes are CONFIG entries of the meta log, so every server (and every restart) takes the
  membership from there (meta/topology.py has the bootstrap rule). Every server points the
  Raft transport at every member and registered server whose address it can derive, and at
  every server announcing itself; those answer the announcement with their own node id, so a
  joiner that knows only its seed learns the leader's address (the smaller node id dials). The
  bootstrap membership is written down at the first start (`_bootstrap_membership`), and a
  meta leader whose log holds no membership entry yet writes one (`_log_membership`).
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import structlog
import trio

from jetstream.cluster import BARRIER_TIMEOUT_S, LEADER_WATCH_S, ClusteredJetStream
from jetstream.cluster_stream import COMPACT_EVERY_ENTRIES, stream_group_config
from jetstream.cluster_routing import Requester, RoutedSub, subscribe_routed
from meta import api as meta_api
from meta import consumers as meta_consumers
from meta.assignments import (
    META_GROUP,
    SettlePeers,
    MetaCommand,
    MetaRejected,
    MetaResult,
    MetaState,
    RegisterServer,
    ServerRecord,
    decode_command,
    encode_command,
)
from meta.move_driver import SETTLE_SUBJECT, MoveDriver
from meta.reconciler import FIRST_CONFIG_INDEX, Start, Stop, Update, plan, replica_start
from meta.removal import RemovalWatch, ServerRemoved, marker_path, removed_marker
from meta.topology import Topology, derive
from raft.config import Role
from raft.driver import NotLeader, OutcomeUnknown, RaftHost
from raft.storage.sqlite import SqliteLogStore
from raft.transport.tcp import TcpTransport
from raft.membership import members
from raft.types import ConfigChange, ConfigChangeType, Entry, EntryKind, Membership, Snapshot

HELLO_SUBJECT = "$JSC.HELLO"
JOIN_SUBJECT = "$JSC.JOIN"
MEMBERSHIP_ROUND_S = 0.3
JOIN_CHANGE_TIMEOUT_S = 3.0
JOINERS_MAX = 1024
BOOTSTRAP_FILE = "meta-bootstrap.json"
BOOTSTRAP_MARK = "~meta-bootstrap~"  # a learner id with no address (see `_log_membership`)
READ_BARRIER_S = 1.0  # an API request waits this long for the meta leader's read-index round
SERVERS_SUBJECT = "$JSC.SERVERS"
HELLO_EVERY_S = 0.5
API_QUEUE_MAX = 1024
API_CONCURRENCY = 32
TICK_S = 0.1
TAGS_ENV = "JETRAFT_SERVER_TAGS"
COMPACT_ENV = "JETRAFT_COMPACT_ENTRIES"  # log entries between snapshots (meta and each stream)


async def run_clustered_jetstream(server: Any, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    tags = tuple(server.options.server_tags) or tuple(
        t.strip() for t in os.environ.get(TAGS_ENV, "").split(",") if t.strip())
    compact_every = int(os.environ.get(COMPACT_ENV, "") or COMPACT_EVERY_ENTRIES)
    service = MetaService(server, tags=tags, compact_every=compact_every)
    if removed_marker(service.store_dir) is not None:  # SERVER.REMOVEd (meta/removal.py)
        service.log.warning("meta.stays_removed", marker=str(marker_path(service.store_dir)))
        task_status.started()
        return
    try:
        await service.run(task_status=task_status)
    except* ServerRemoved:
        pass  # JetStream stopped; the server goes on as a plain NATS server


def topology_of(options: Any) -> Topology:
    if options.cluster_port is None:
        raise ValueError("clustered JetStream needs a cluster port (--cluster)")
    return derive(options.cluster_host, options.cluster_port, tuple(options.routes),
                  advertise=options.cluster_advertise or "", server_name=options.server_name or "",
                  raft_peers=tuple(options.raft_peers))


class MetaService:
    def __init__(self, server: Any, *, tags: tuple[str, ...] = (),
                 compact_every: int = COMPACT_EVERY_ENTRIES) -> None:
        self.server = server
        self.compact_every = max(compact_every, 1)
        self.entries_since_compact = 0
        self.compacting = False
        self.nursery: trio.Nursery | None = None
        self.options = server.options
        self.topology = topology_of(self.options)
        self.node_id = self.topology.node_id
        self.tags = tags
        self.cluster_name = self.options.cluster_name or ""
        self.state = MetaState()
        self.log = structlog.get_logger("meta").bind(node=self.node_id)
        self.store_dir = Path(self.options.store_dir or os.path.join(os.getcwd(), "jetraft-data"))
        self.host: RaftHost | None = None
        self.js: ClusteredJetStream | None = None
        self.requester = Requester(server)
        self.leading = False
        self.leader_subs: list[RoutedSub] = []
        self._reconcile = trio.Event()
        self.membership_logged = False  # the meta log holds a membership entry (leader's view)
        self.joiners: dict[str, bool] = {}  # node id -> fresh, from $JSC.JOIN (leader only)
        self.refused_joins: set[str] = set()  # logged once each
        self.transport: TcpTransport | None = None
        self.known_addresses: set[str] = set(self.topology.peers)
        self.join_reply = f"$JSC.JOINED.{os.urandom(8).hex()}"
        self.api_send, self.api_recv = trio.open_memory_channel[tuple](API_QUEUE_MAX)

    # -- lifecycle ------------------------------------------------------------------------------
    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        raft_dir = self.store_dir / "raft"
        raft_dir.mkdir(parents=True, exist_ok=True)
        store = await trio.to_thread.run_sync(SqliteLogStore, raft_dir / "raft.db")
        transport = TcpTransport(self.node_id, host=self.topology.raft_host, port=self.topology.raft_port,
                                 peers=dict(self.topology.peers), rng=random.Random(self.node_id))
        try:
            async with transport:
                await self._serve(store, transport, task_status)
        finally:
            store.close()

    async def _serve(self, store: SqliteLogStore, transport: TcpTransport, task_status: Any) -> None:
        host = self.host = RaftHost(self.node_id, store, transport, tick_interval_s=TICK_S)
        self.transport = transport
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            await nursery.start(host.run)
            self.js = ClusteredJetStream(self.server, host, self.node_id, self.peer_name,
                                         self.cluster_name, store_dir=str(self.store_dir),
                                         compact_every=self.compact_every)
            self.js.consumer_registry = meta_consumers.MetaConsumerRegistry(self)
            self.js.stream_assigned = self._stream_assigned
            await nursery.start(self.js.run)
            self.requester.start()
            bootstrap = await trio.to_thread.run_sync(self._bootstrap_membership)
            # The bootstrap config is the meta group's first (index 0; a seedless server's
            # learner-only placeholder claims nothing newer either). A member restarting with a
            # log counts its log's newer config; one repairing a wiped log lets the newest
            # committed config a term-probe answer names replace it (raft/repair.py).
            await host.add_group(META_GROUP, stream_group_config(self.node_id, META_GROUP),
                                 bootstrap, self._apply, self._restore, membership_index=FIRST_CONFIG_INDEX)
            self.join_sub = subscribe_routed(self.server, JOIN_SUBJECT, self._on_join)
            self.joined_sub = subscribe_routed(self.server, self.join_reply, self._on_join_answer)
            self.moves = MoveDriver(self)
            for task in (self.js.watch_leaders, self.js.consumer_reconcile_loop, self._reconcile_loop,
                         self._watch_meta_leader, self._hello_loop, self._dispatch_api, self.moves.run,
                         self._membership_loop, RemovalWatch(self).run):
                nursery.start_soon(task)
            m = host.node(META_GROUP).membership
            self.log.info("meta.started", voters=sorted(m.voters), learners=sorted(m.learners),
                          raft_port=transport.port)
            task_status.started()

    def _bootstrap_membership(self) -> Membership:
        """The meta group's membership before its first change entry, fixed at the first start
        (`<store_dir>/raft/meta-bootstrap.json`): restarting with other routes changes nothing
        (nats-server keeps its bootstrap peer set the same way); the log's changes override it."""
        path = self.store_dir / "raft" / BOOTSTRAP_FILE
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
            return Membership(voters=frozenset(d["voters"]), learners=frozenset(d["learners"]))
        except FileNotFoundError:
            pass
        except (ValueError, KeyError, TypeError) as exc:
            self.log.error("meta.bootstrap_unreadable", path=str(path), error=repr(exc))
            raise
        m = self.topology.bootstrap_membership()
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"voters": sorted(m.voters), "learners": sorted(m.learners)}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return m

    def peer_name(self, node_id: str) -> str:
        if node_id == self.node_id:
            return self.server.server_name
        return self.state.server_name(node_id)

    # -- the meta state machine ------------------------------------------------------------------
    def _apply(self, entry: Entry) -> MetaResult:
        if entry.index <= self.state.applied:  # already in the snapshot we restored
            return MetaRejected("already_applied")
        self._count_for_compaction()
        try:
            cmd = decode_command(entry.data)
        except ValueError as exc:
            self.log.error("meta.bad_entry", index=entry.index, error=str(exc))
            self.state.applied = entry.index
            return MetaRejected("bad_command")
        result = self.state.apply(cmd, entry.index)
        self._reconcile.set()
        return result

    def _restore(self, snapshot: Snapshot) -> None:
        if not snapshot.data:
            return
        try:
            self.state = MetaState.restore(snapshot.data)
        except (ValueError, KeyError, TypeError) as exc:  # never crash the host on a bad snapshot
            self.log.error("meta.restore_failed", index=snapshot.meta.index, error=repr(exc))
            return
        self._reconcile.set()
        self.log.info("meta.restored", index=snapshot.meta.index, streams=len(self.state.streams))

    def _count_for_compaction(self) -> None:
        self.entries_since_compact += 1
        if self.entries_since_compact >= self.compact_every and not self.compacting and self.nursery:
            self.compacting = True
            self.nursery.start_soon(self._compact)

    async def _compact(self) -> None:
        """Snapshot the (in-memory) meta state and trim the meta log up to it."""
        assert self.host is not None
        try:
            node = self.host.node(META_GROUP)
            index = node.applied_index
            if self.state.applied == index and index > node.snapshot_meta.index:
                await self.host.compact(META_GROUP, index, self.state.snapshot())
                self.log.info("meta.compacted", index=index)
                self.entries_since_compact = 0
        except Exception as exc:  # noqa: BLE001 - keep the log; retry after more entries
            self.log.error("meta.compact_failed", error=repr(exc))
        finally:
            self.compacting = False

    async def propose(self, cmd: MetaCommand) -> MetaResult:
        """Propose on the meta group (this server must lead it); the committed result."""
        assert self.host is not None
        _, result = await self.host.propose_result(META_GROUP, encode_command(cmd))
        return result  # type: ignore[return-value]

    # -- reconciler -----------------------------------------------------------------------------
    async def _reconcile_loop(self) -> None:
        assert self.js is not None
        while True:  # until cancelled
            await self._reconcile.wait()
            self._reconcile = trio.Event()
            running = {g: rt.assigned_text for g, rt in self.js.by_group.items()}
            for action in plan(self.state.streams, self.node_id, running):
                await self._carry_out(action)
            self.js.reconcile_consumers()  # the durables the meta state assigns (jetstream/cluster_consumers.py)

    async def _carry_out(self, action: Start | Update | Stop) -> None:
        assert self.js is not None
        try:
            if isinstance(action, Start):
                sa = action.assignment
                membership, index = replica_start(sa, self.node_id)
                await self.js.start_replica(sa.name, sa.group, sa.config, sa.peers, sa.created_ns,
                                            sa.config_text(), membership=membership, membership_index=index)
            elif isinstance(action, Update):
                sa = action.assignment
                self.js.update_replica(sa.group, sa.config, sa.config_text())
            else:
                await self.js.stop_replica(action.group, action.delete)
        except Exception as exc:  # noqa: BLE001 - one bad stream must not stop the others
            self.log.error("meta.reconcile_failed", action=repr(action), error=repr(exc), exc_info=True)

    def _stream_assigned(self, name: str, group: str) -> bool:
        sa = self.state.streams.get(name)
        return sa is not None and sa.group == group

    def start_membership(self, sa: Any) -> Membership:
        """A group that never changed starts with its creation peers as voters; a server joining
        after a peer change starts as a learner and takes the membership from the log."""
        return replica_start(sa, self.node_id)[0]

    # -- meta leadership ------------------------------------------------------------------------
    def is_leader(self) -> bool:
        return self.host is not None and self.host.node(META_GROUP).role is Role.LEADER

    def leader_id(self) -> str | None:
        return None if self.host is None else self.host.node(META_GROUP).leader_id

    async def _watch_meta_leader(self) -> None:
        while True:  # until cancelled
            leading = self.is_leader()
            if leading and not self.leading:
                await self._become_leader()
            elif self.leading and not leading:
                self._become_follower()
            await trio.sleep(LEADER_WATCH_S)

    async def _become_leader(self) -> None:
        assert self.host is not None
        with trio.move_on_after(BARRIER_TIMEOUT_S):
            try:
                await self.host.read_index(META_GROUP)
            except NotLeader:
                return
            self.leading = True
            self.leader_subs = [
                subscribe_routed(self.server, "$JS.API.>", self._on_api),
                subscribe_routed(self.server, HELLO_SUBJECT, self._on_hello),
                subscribe_routed(self.server, SETTLE_SUBJECT, self._on_settle),
                subscribe_routed(self.server, SERVERS_SUBJECT, self._on_servers),
                subscribe_routed(self.server, meta_consumers.ASSIGN_SUBJECT, self._on_consumer_assign),
            ]
            self.log.info("meta.leader", term=self.host.node(META_GROUP).term)

    def _become_follower(self) -> None:
        self.leading = False
        self.membership_logged = False
        self.joiners.clear()
        for sub in self.leader_subs:
            sub.unsubscribe()
        self.leader_subs = []
        self.log.info("meta.follower")

    # -- server registration ----------------------------------------------------------------------
    def own_record(self) -> ServerRecord:
        return ServerRecord(self.node_id, self.server.server_name, self.cluster_name, self.tags)

    async def _hello_loop(self) -> None:
        while True:  # until cancelled
            record = self.own_record()
            if self.state.servers.get(self.node_id) != record:
                body = encode_command(RegisterServer(record.node_id, record.name, record.cluster, record.tags))
                self.server.publish_internal(HELLO_SUBJECT, None, None, body)
                self.server.publish_internal(JOIN_SUBJECT, self.join_reply, None, self._join_body())
            await trio.sleep(HELLO_EVERY_S)

    def _join_body(self) -> bytes:
        node = self.host.node(META_GROUP) if self.host is not None else None
        fresh = node is None or (node.last_index == 0 and node.snapshot_meta.index == 0)
        return json.dumps({"node_id": self.node_id, "name": self.server.server_name,
                           "cluster": self.cluster_name, "fresh": fresh}).encode()

    def _on_hello(self, subject: str, reply: str | None, headers: bytes | None, payload: bytes) -> None:
        try:
            cmd = decode_command(bytes(payload))
        except ValueError:
            return
        if isinstance(cmd, RegisterServer) and cmd.node_id in self.meta_members():
            record = ServerRecord(cmd.node_id, cmd.name, cmd.cluster, cmd.tags)
            if self.state.servers.get(cmd.node_id) != record:
                self._enqueue(("hello", cmd))

    def _on_settle(self, subject: str, reply: str | None, headers: bytes | None, payload: bytes) -> None:
        """A stream leader reports its group reached the desired peers (meta/move_driver.py)."""
        try:
            d = json.loads(bytes(payload))
            cmd = SettlePeers(str(d["name"]), str(d["group"]), tuple(str(p) for p in d["peers"]))
        except (ValueError, KeyError, TypeError):
            return
        if self._settle_applies(cmd):
            self._enqueue(("settle", cmd))

    def _on_consumer_assign(self, subject: str, reply: str | None, headers: bytes | None, payload: bytes) -> None:
        """A stream leader creates, updates or deletes a durable consumer (meta/consumers.py)."""
        if reply:
            self._enqueue(("consumer", (reply, bytes(payload))))

    def _settle_applies(self, cmd: SettlePeers) -> bool:
        sa = self.state.streams.get(cmd.name)
        return sa is not None and sa.moving and sa.group == cmd.group and set(sa.peers) == set(cmd.peers)

    def meta_members(self) -> frozenset[str]:
        """Voters and learners of the meta group (a learner is a server being admitted)."""
        if self.host is None:
            return self.topology.voters
        return members(self.host.node(META_GROUP).membership) - {BOOTSTRAP_MARK}

    def meta_voters(self) -> frozenset[str]:
        """The meta group's voters: the configured servers minus those SERVER.REMOVE took out."""
        if self.host is None:
            return self.topology.voters
        return frozenset(self.host.node(META_GROUP).membership.voters)

    def _on_servers(self, subject: str, reply: str | None, headers: bytes | None, payload: bytes) -> None:
        """`$JSC.SERVERS` (the admin CLI's `servers ls`): every meta voter with its record."""
        if not reply or self.host is None or self.js is None:
            return
        connected = set(self.host.transport.connected_peers()) | {self.node_id}
        load = self.state.load()
        rows = []
        for node in sorted(self.meta_voters()):
            record = self.state.servers.get(node)
            rows.append({"name": self.peer_name(node), "node_id": node,
                         "cluster": record.cluster if record else "", "tags": list(record.tags) if record else [],
                         "streams": load.get(node, 0), "online": node in connected,
                         "role": "leader" if node == self.node_id else "voter"})
        self.js.respond(reply, {"leader": self.server.server_name, "servers": rows})

    async def _still_leading(self) -> bool:
        """A read-index round before answering an API request from the meta state: a meta
        leader that was deposed or cut off from its quorum stays silent rather than answer
        from stale state (e.g. "stream not found" for a stream created since)."""
        assert self.host is not None
        with trio.move_on_after(READ_BARRIER_S):
            try:
                await self.host.read_index(META_GROUP)
            except NotLeader:
                return False
            return self.leading and self.is_leader()
        return False

    # -- joining ----------------------------------------------------------------------------------
    def _on_join(self, subject: str, reply: str | None, headers: bytes | None, payload: bytes) -> None:
        """`$JSC.JOIN` from a server not yet registered. Every server points its transport at
        it (a seedless server learns its peers' addresses only this way, and of two peers only
        the one with the smaller node id dials) and answers with its own node id; the leader
        remembers it for the membership loop, which admits it if it may join."""
        try:
            d = json.loads(bytes(payload))
            node, fresh, cluster = str(d["node_id"]), bool(d["fresh"]), str(d.get("cluster", ""))
        except (ValueError, KeyError, TypeError):
            return
        if node == self.node_id or cluster != self.cluster_name or len(self.known_addresses) > JOINERS_MAX:
            return
        self._sync_addresses_for(node)
        if reply and reply.startswith("$JSC.JOINED."):  # tell the joiner where we are, too
            self.server.publish_internal(reply, None, None, json.dumps({"node_id": self.node_id}).encode())
        if self.leading and len(self.joiners) < JOINERS_MAX:
            self.joiners[node] = fresh

    def _on_join_answer(self, subject: str, reply: str | None, headers: bytes | None, payload: bytes) -> None:
        """A server that heard our `$JSC.JOIN` names itself: the joiner may know no one but its
        seed, and of two peers only the smaller node id dials, so both must know each other."""
        try:
            node = str(json.loads(bytes(payload))["node_id"])
        except (ValueError, KeyError, TypeError):
            return
        if node != self.node_id and len(self.known_addresses) <= JOINERS_MAX:
            self._sync_addresses_for(node)

    def _may_admit(self, node: str, fresh: bool) -> bool:
        why = None
        if node in self.state.servers:
            why = "registered before (removed servers rejoin under a new identity)"
        elif not fresh:
            why = "its meta log holds another group's entries"
        elif self.topology.address_of(node) is None:
            why = "no Raft address for it (named raft_peers are a static list)"
        if why is not None and node not in self.refused_joins:
            self.refused_joins.add(node)
            self.log.warning("meta.join_refused", peer=node, reason=why)
        return why is None

    async def _membership_loop(self) -> None:
        """Every server: point the transport at every member. The leader: admit joiners and
        promote caught-up learners, one committed change at a time."""
        while True:  # until cancelled
            self._sync_addresses()
            if self.leading and self.is_leader():
                try:
                    await self._membership_step()
                except (NotLeader, OutcomeUnknown, trio.TooSlowError):
                    pass  # a change still pending, or not ready yet: next round
            await trio.sleep(MEMBERSHIP_ROUND_S)

    def _sync_addresses(self) -> None:
        if self.host is None or self.transport is None:
            return
        for node in sorted((self.meta_members() | set(self.state.servers)) - self.known_addresses):
            self._sync_addresses_for(node)

    async def _membership_step(self) -> None:
        assert self.host is not None
        node = self.host.node(META_GROUP)
        m = node.membership
        if not self.membership_logged:
            await self._log_membership(node)
            return
        for learner in sorted(m.learners):
            pr = getattr(node, "_progress", {}).get(learner)
            if pr is not None and pr.match >= node.commit_index > 0:
                await self._change(ConfigChangeType.PROMOTE_LEARNER, learner)
                return
        for joiner, fresh in sorted(self.joiners.items()):
            if joiner in members(m):
                del self.joiners[joiner]
            elif self._may_admit(joiner, fresh):
                self._sync_addresses_for(joiner)
                await self._change(ConfigChangeType.ADD_LEARNER, joiner)
                return

    async def _log_membership(self, node: Any) -> None:
        """Make sure the meta log holds a membership entry: until one exists, each server uses
        its own bootstrap view, and a seedless server counts itself a learner although the
        bootstrap voters of a seeded server name it. A learner that can never exist (it has no
        address) is added and removed again: two change entries that carry the membership."""
        if BOOTSTRAP_MARK in node.membership.learners:
            await self._change(ConfigChangeType.REMOVE, BOOTSTRAP_MARK)
            self.membership_logged = True
        elif node.snapshot_meta.index > 0 or any(
                e.kind is EntryKind.CONFIG for e in node.entries(node.first_index, node.last_index + 1)):
            self.membership_logged = True  # (a snapshot carries the membership itself)
        else:
            await self._change(ConfigChangeType.ADD_LEARNER, BOOTSTRAP_MARK)

    def _sync_addresses_for(self, node: str) -> None:
        if node in self.known_addresses or self.transport is None:
            return
        address = self.topology.address_of(node)
        if address is not None:
            self.transport.set_peer(node, address)
            self.known_addresses.add(node)
            self.log.info("meta.peer_address", peer=node, address=f"{address[0]}:{address[1]}")

    async def _change(self, kind: ConfigChangeType, node: str) -> None:
        assert self.host is not None
        with trio.fail_after(JOIN_CHANGE_TIMEOUT_S):
            await self.host.propose_config_change(META_GROUP, ConfigChange(kind, node))
        self.log.info("meta.membership_changed", change=kind.value, peer=node,
                      voters=sorted(self.meta_voters()))

    # -- API --------------------------------------------------------------------------------------
    def _on_api(self, subject: str, reply: str | None, headers: bytes | None, payload: bytes) -> None:
        if meta_api.is_mine(self, subject):
            self._enqueue(("api", (subject, reply, headers, bytes(payload))))

    def _enqueue(self, item: tuple) -> None:
        try:
            self.api_send.send_nowait(item)
        except trio.WouldBlock:
            self.log.warning("meta.api_queue_full")

    async def _dispatch_api(self) -> None:
        limiter = trio.CapacityLimiter(API_CONCURRENCY)
        async with trio.open_nursery() as nursery:
            async for kind, item in self.api_recv:
                token = object()
                await limiter.acquire_on_behalf_of(token)
                nursery.start_soon(self._handle_one, kind, item, limiter, token)

    async def _handle_one(self, kind: str, item: Any, limiter: trio.CapacityLimiter, token: object) -> None:
        try:
            if kind == "settle":
                if self.leading and self._settle_applies(item):
                    await self.propose(item)
            elif kind == "hello":
                record = ServerRecord(item.node_id, item.name, item.cluster, item.tags)
                if self.leading and self.state.servers.get(item.node_id) != record:
                    await self.propose(item)
            elif kind == "consumer":
                if await self._still_leading():
                    await meta_consumers.handle_assign(self, *item)
            elif await self._still_leading():
                await meta_api.handle(self, *item)
        except NotLeader:
            pass
        except Exception as exc:  # noqa: BLE001 - a handler bug must not stop the API
            self.log.error("meta.api_failed", item=repr(item)[:200], error=repr(exc), exc_info=True)
        finally:
            limiter.release_on_behalf_of(token)
