"""Clustered JetStream: every stream is a Raft group; its leader takes publishes and API calls.

How it works:
- `ReplicatedStream` is a `StreamRuntime` whose single funnel for changes, `apply_batch`, does not
  touch the store: it encodes the commands as ONE entry (jetstream/cluster_codec.py), proposes
  it to the stream's Raft group and returns what the state machine answered once the entry is
  committed (fsynced on a quorum) and applied here. Every replica applies committed entries in
  `apply_entry` (the RaftHost apply callback): the whole batch in one store transaction, each
  command numbered `sub_index(entry, k)` so a restarted replica skips exactly what it has. So the
  publish path is unchanged (queue, writer task, PubAck after commit): the commit just became a
  quorum commit. The writer bounds an entry by message count and bytes.
- `ClusteredJetStream` is the single-server `JetStream` shell with the cluster parts swapped in:
  streams are opened and closed only by the meta reconciler (`start_replica` / `stop_replica`),
  never by scanning the disk; a watcher notices which local groups this server leads. On gaining
  leadership (after a read-index barrier, so everything committed is applied here) it loads the
  durable consumers from the replicated store, starts them, and subscribes - routed across the
  cluster - to the stream's subjects and API subjects; on losing it, it stops all of that.
- Durable consumer state travels through the stream's log (`SaveConsumer` / `DeleteConsumer`)
  whenever the flusher finds it changed, so a new leader resumes from the replicated progress.
- Every replica answers `$JSC.DIGEST.<server>.<stream>` with its content hash, applied index
  and last sequence (tests compare replicas by content).

Interest retention is evaluated as "someone is interested" on every replica: consumers run only
on the leader, and the state machine must decide the same everywhere.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import structlog
import trio

from jetstream import api, api_stream
from jetstream.api import response
from jetstream.cluster_codec import (
    CodecError,
    DeleteConsumer,
    SaveConsumer,
    decode_batch,
    encode_batch,
    entry_of,
    sub_index,
)
from jetstream.cluster_routing import RoutedServer, RoutedSub, subscribe_routed
from jetstream.config import StreamConfig
from jetstream.consumer_config import ConsumerConfig
from jetstream.delivery_state import AckKind, parse_ack, parse_ack_subject
from jetstream.errors import ApiError, JsApiException, store_failed
from jetstream.runtime import StreamClosed, StreamRuntime, open_store, remove_stream_dir, write_config
from jetstream.store.sqlite import SqliteStore
from jetstream.service import JetStream
from jetstream.stream import Expire, UpdateConfig
from raft.config import NodeConfig, RefuseReason, Role
from raft.driver import NotLeader, OutcomeUnknown, ProposalLost, RaftHost, UnknownGroup
from raft.types import Entry, Membership

UNAVAILABLE = ApiError(code=503, err_code=10008, description="JetStream system temporarily unavailable")
LEADER_WATCH_S = 0.05
BARRIER_TIMEOUT_S = 2.0
PROPOSE_RETRY_S = 2.0
ENTRY_MSGS_MAX = 4096
ENTRY_BYTES_MAX = 1 << 20
ENTRIES_IN_FLIGHT = 8
INLINE_APPLY_MAX = 64
STEPDOWN_WAIT_S = 3.0
# With the host's 100 ms tick: heartbeats every 200 ms, elections after 1-2 s of silence. Idle
# groups cost heartbeats, so thousands of streams want them sparse.
ELECTION_TICKS = 10
HEARTBEAT_TICKS = 2


def stream_group_config(node_id: str, group: str) -> NodeConfig:
    return NodeConfig(node_id=node_id, group=group, election_ticks=ELECTION_TICKS,
                      heartbeat_ticks=HEARTBEAT_TICKS)


class ReplicatedStream(StreamRuntime):
    """A stream replica: changes are proposed to its Raft group and applied when committed."""

    def __init__(self, config: StreamConfig, created_ns: int, store: Any, directory: Any,
                 clock_ns: Callable[[], int], publish: Any, *, host: RaftHost, group: str,
                 peers: tuple[str, ...], assigned_text: str) -> None:
        super().__init__(config, created_ns, store, directory, clock_ns, publish)
        self.host = host
        self.group = group
        self.peers = peers
        self.assigned_text = assigned_text
        self.desired_config = config
        self.leading = False
        self.leader_subs: list[RoutedSub] = []
        self.replica_subs: list[RoutedSub] = []

    def _has_interest(self, subject: str) -> bool:
        return True  # the same answer on every replica (see the module docstring)

    async def apply_batch(self, cmds: list[Any]) -> list[Any]:
        """Propose `cmds` as one entry; the results once committed and applied here."""
        data = encode_batch(list(cmds))
        deadline = trio.current_time() + PROPOSE_RETRY_S
        while True:  # bounded by the deadline
            if self.closed:
                raise StreamClosed(self.name)
            try:
                _, results = await self.host.propose_result(self.group, data)
                return list(results)  # type: ignore[call-overload]
            except UnknownGroup:
                raise StreamClosed(self.name) from None
            except (OutcomeUnknown, ProposalLost):
                return [UNAVAILABLE] * len(cmds)
            except NotLeader as exc:
                if exc.reason is not RefuseReason.NOT_READY or trio.current_time() > deadline:
                    return [UNAVAILABLE] * len(cmds)
            await trio.sleep(0.01)  # a new leader commits its first entry within a round trip

    async def apply_entry(self, entry: Entry) -> list[Any]:
        """RaftHost apply callback: apply one committed batch to the local store."""
        try:
            cmds = decode_batch(entry.data)
        except CodecError as exc:
            self.log.error("stream.bad_entry", index=entry.index, error=str(exc))
            return []

        def work() -> list[Any]:
            results = []
            with self.store.batch():
                for k, cmd in enumerate(cmds):
                    results.append(self._apply_one(cmd, sub_index(entry.index, k)))
            return results

        try:
            results = await self._apply_work(work, len(cmds))
        except StreamClosed:
            return [UNAVAILABLE] * len(cmds)
        except Exception as exc:  # noqa: BLE001 - the store rolled back; never crash the host
            self.log.error("stream.apply_failed", index=entry.index, error=repr(exc))
            await self.call(self._reload)
            return [store_failed(f"store failed: {exc}")] * len(cmds)
        self.config = self.sm.config
        self.notify()
        return results

    async def _apply_work(self, work: Callable[[], list[Any]], size: int) -> list[Any]:
        """Small batches run on the event loop (the store commits without fsync, so this is
        short, and a thread hop per entry costs more than the write); big ones in a thread."""
        if size > INLINE_APPLY_MAX:
            return await self.call(work)  # type: ignore[no-any-return]
        async with self.lock:
            if self.closed:
                raise StreamClosed(self.name)
            return work()

    def _apply_one(self, cmd: Any, index: int) -> Any:
        if isinstance(cmd, (SaveConsumer, DeleteConsumer)):
            if index <= self.store.applied_index():
                return None
            if isinstance(cmd, SaveConsumer):
                self.store.save_consumer(cmd.name, cmd.blob)
            else:
                self.store.delete_consumer(cmd.name)
            self.store.set_applied_index(index)
            return None
        return self.sm.apply(cmd, index)

    async def run_writer(self) -> None:
        """Drain the publish queue: one entry per batch (bounded), up to ENTRIES_IN_FLIGHT
        entries proposed and not yet committed; each batch's PubAcks go out after its commit."""
        inflight = trio.Semaphore(ENTRIES_IN_FLIGHT)
        async with trio.open_nursery() as nursery:
            while not self.closed:
                await self.queue_ready.wait()
                self.queue_ready = trio.Event()
                while self.queue and not self.closed:
                    await inflight.acquire()
                    batch = self._take_batch()
                    if not batch:
                        inflight.release()
                        break
                    await nursery.start(self._commit_batch, batch, inflight)

    async def _commit_batch(self, batch: list[Any], inflight: trio.Semaphore,
                            task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Propose one batch and ack it once committed. `started()` comes first: the parent
        resumes only when this task first blocks, and `propose_result` proposes before its
        first checkpoint, so entries enter the log in queue order."""
        try:
            task_status.started()
            results = await self.apply_batch([cmd for cmd, _ in batch])
            self._send_acks(batch, results)
        except StreamClosed:
            pass
        finally:
            inflight.release()

    def _take_batch(self) -> list[Any]:
        size = count = 0
        for cmd, _ in self.queue:
            if count >= ENTRY_MSGS_MAX or (count and size + len(cmd.payload) > ENTRY_BYTES_MAX):
                break
            size += len(cmd.payload) + len(cmd.headers or b"")
            count += 1
        batch, self.queue = self.queue[:count], self.queue[count:]
        return batch


class ClusteredJetStream(JetStream):
    """JetStream whose streams are Raft groups on `host` (see the module docstring)."""

    def __init__(self, server: Any, host: RaftHost, node_id: str, peer_name: Callable[[str], str],
                 cluster_name: str, **kwargs: Any) -> None:
        super().__init__(server, **kwargs)
        self.host = host
        self.node_id = node_id
        self.peer_name = peer_name
        self.cluster_name = cluster_name
        self.by_group: dict[str, ReplicatedStream] = {}
        self.routed = RoutedServer(server)
        self.log = structlog.get_logger("jetstream.cluster").bind(node=node_id)

    # -- single-server behaviour switched off -------------------------------------------------
    def _load_streams(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)  # streams open only when assigned

    def _subscribe_api(self) -> None:
        pass  # API subjects are subscribed per led stream (and by the meta leader)

    def _subscribe_stream(self, rt: StreamRuntime) -> None:
        if isinstance(rt, ReplicatedStream) and rt.leading:
            self._subscribe_leader(rt)

    async def _shutdown(self) -> None:
        for rt in list(self.by_group.values()):
            self._become_follower(rt)
            for sub in rt.replica_subs:
                sub.unsubscribe()
            await rt.close()

    # -- replicas (driven by the meta reconciler) --------------------------------------------
    async def start_replica(self, name: str, group: str, config_json: dict[str, Any],
                            peers: tuple[str, ...], created_ns: int, assigned_text: str) -> None:
        config = StreamConfig.from_json(config_json)
        directory = self.root / group
        await trio.to_thread.run_sync(write_config, directory, config, created_ns)
        store = await trio.to_thread.run_sync(open_replica_store, config, directory)
        rt = ReplicatedStream(config, created_ns, store, directory, self.clock_ns,
                              self.server.publish_internal, host=self.host, group=group,
                              peers=peers, assigned_text=assigned_text)
        self.by_group[group] = rt
        self.streams[name] = rt
        applied = entry_of(await rt.call(store.applied_index))
        await self.host.add_group(group, stream_group_config(self.node_id, group),
                                  Membership(voters=frozenset(peers)), rt.apply_entry, applied=applied)
        digest_subject = f"$JSC.DIGEST.{self.server.server_name}.{name}"
        rt.replica_subs.append(subscribe_routed(self.server, digest_subject, self._digest_callback(rt)))
        assert self.nursery is not None
        self.nursery.start_soon(rt.run_writer)
        self.log.info("jetstream.replica_started", stream=name, group=group, peers=list(peers),
                      applied=applied)

    async def stop_replica(self, group: str, delete: bool) -> None:
        rt = self.by_group.pop(group, None)
        if rt is None:
            return
        self.host.remove_group(group)
        self._become_follower(rt)
        for sub in rt.replica_subs:
            sub.unsubscribe()
        if self.streams.get(rt.name) is rt:
            del self.streams[rt.name]
        await rt.close()
        rt.deleted = delete
        if delete:
            await trio.to_thread.run_sync(remove_stream_dir, rt.directory)
            await self.host.worker.run(self.host.store.forget_group, group)
        self.log.info("jetstream.replica_stopped", stream=rt.name, group=group, deleted=delete)

    def update_replica(self, group: str, config_json: dict[str, Any], assigned_text: str) -> None:
        rt = self.by_group.get(group)
        if rt is None:
            return
        rt.assigned_text = assigned_text
        rt.desired_config = StreamConfig.from_json(config_json)
        if rt.leading and self.nursery is not None:
            self.nursery.start_soon(self._push_config, rt)

    async def _push_config(self, rt: ReplicatedStream) -> None:
        """The leader carries a committed meta config change into the stream's own log."""
        desired = rt.desired_config
        if desired.to_json() == rt.config.to_json():
            return
        try:
            result = await rt.apply(UpdateConfig(desired))
        except StreamClosed:
            return
        if isinstance(result, ApiError):
            self.log.error("jetstream.config_update_failed", stream=rt.name, error=result.description)
            return
        if rt.leading:
            self._subscribe_leader(rt)

    # -- leadership -----------------------------------------------------------------------------
    async def watch_leaders(self) -> None:
        """Follow which local stream groups this server leads (polled every LEADER_WATCH_S)."""
        while True:  # until cancelled
            for rt in list(self.by_group.values()):
                try:
                    leading = self.host.node(rt.group).role is Role.LEADER
                except UnknownGroup:
                    continue
                if leading and not rt.leading:
                    await self._become_leader(rt)
                elif rt.leading and not leading:
                    self._become_follower(rt)
            await trio.sleep(LEADER_WATCH_S)

    async def _become_leader(self, rt: ReplicatedStream) -> None:
        with trio.move_on_after(BARRIER_TIMEOUT_S):
            try:
                await self.host.read_index(rt.group)
            except (NotLeader, UnknownGroup):
                return
            if rt.closed or self.by_group.get(rt.group) is not rt:
                return
            rt.leading = True
            await self._load_consumers_async(rt)
            self._subscribe_leader(rt)
            self.log.info("jetstream.stream_leader", stream=rt.name, group=rt.group)
            if rt.desired_config.to_json() != rt.config.to_json():
                assert self.nursery is not None
                self.nursery.start_soon(self._push_config, rt)

    def _become_follower(self, rt: ReplicatedStream) -> None:
        was_leading, rt.leading = rt.leading, False
        for sub in rt.leader_subs:
            sub.unsubscribe()
        rt.leader_subs = []
        for consumer in list(rt.consumers.values()):
            consumer.close(notify_waiting=False)
        rt.consumers.clear()
        rt.queue.clear()
        if was_leading:
            self.log.info("jetstream.stream_follower", stream=rt.name, group=rt.group)

    def _subscribe_leader(self, rt: ReplicatedStream) -> None:
        for sub in rt.leader_subs:
            sub.unsubscribe()
        s = rt.name
        subs = [(subject, rt.enqueue_publish) for subject in rt.config.subjects]
        api_subjects = [f"$JS.API.STREAM.{op}.{s}" for op in ("INFO", "PURGE")]
        api_subjects += [f"$JS.API.STREAM.MSG.GET.{s}", f"$JS.API.STREAM.MSG.DELETE.{s}",
                         f"$JS.API.STREAM.LEADER.STEPDOWN.{s}", f"$JS.API.DIRECT.GET.{s}",
                         f"$JS.API.DIRECT.GET.{s}.>", f"$JS.API.CONSUMER.*.{s}",
                         f"$JS.API.CONSUMER.*.{s}.>", f"$JS.API.CONSUMER.*.*.{s}.>"]
        subs += [(subject, self._on_api) for subject in api_subjects]
        subs += [(f"$JS.ACK.{s}.>", self._on_ack), (f"$JS.FC.{s}.>", self._on_flow_control)]
        rt.leader_subs = [subscribe_routed(self.server, subject, cb) for subject, cb in subs]

    async def _load_consumers_async(self, rt: ReplicatedStream) -> None:
        def read() -> list[tuple[str, bytes | None]]:
            return [(name, rt.store.load_consumer(name)) for name in rt.store.consumer_names()]

        now = self.clock_ns()
        for name, blob in await rt.call(read):
            try:
                saved = json.loads(blob or b"")
                config = ConsumerConfig.from_json(saved["config"])
            except Exception as exc:  # noqa: BLE001 - keep the blob, skip the consumer
                self.log.error("jetstream.consumer_load_failed", stream=rt.name, consumer=name, error=repr(exc))
                continue
            consumer = self._new_consumer(rt, name, config, int(saved["created_ns"]))
            consumer.state.restore(saved["state"], now)
            rt.consumers[name] = consumer
            self._start_consumer(consumer)

    # -- consumers: state through the stream's log -------------------------------------------
    def _new_consumer(self, rt: StreamRuntime, name: str, config: ConsumerConfig, created_ns: int) -> Any:
        from jetstream.delivery import ConsumerRuntime

        return ConsumerRuntime(rt, name, config, created_ns, self.routed, self.clock_ns,
                               self._reap, lambda: self.random_name(4))

    async def _save_consumer_now(self, rt: StreamRuntime, consumer: Any) -> bool:
        """Commit the consumer's state in the stream's log; False if that failed."""
        consumer.dirty = False
        results = await rt.apply_batch([SaveConsumer(consumer.name, self._consumer_blob(consumer))])
        return not any(isinstance(r, ApiError) for r in results)

    async def _save_consumers(self, rt: StreamRuntime, only_dirty: bool = True) -> None:
        if not (isinstance(rt, ReplicatedStream) and rt.leading) or rt.closed:
            return
        todo = [c for c in rt.consumers.values() if c.durable and (c.dirty or not only_dirty) and not c.deleted]
        if not todo:
            return
        cmds: list[Any] = []
        for c in todo:
            c.dirty = False
            cmds.append(SaveConsumer(c.name, self._consumer_blob(c)))
        await rt.apply_batch(cmds)

    def _on_ack(self, subject: str, reply: str | None, headers: bytes | None, payload: bytes) -> None:
        """Like the single server's, but an ack that asks for a reply (AckSync) on a durable
        consumer is answered only after the consumer's state is committed in the stream's log."""
        target = parse_ack_subject(subject)
        ack = parse_ack(bytes(payload))
        if target is None or ack is None:
            return
        consumer = self.find_consumer(target.stream, target.consumer)
        if consumer is None:
            return
        hold = bool(reply) and consumer.durable and ack.kind is not AckKind.NEXT
        consumer.on_ack(target, ack, None if hold else reply)
        if hold and self.nursery is not None:
            self.nursery.start_soon(self._ack_after_commit, consumer, reply)

    async def _ack_after_commit(self, consumer: Any, reply: str) -> None:
        rt = consumer.stream
        try:
            committed = await self._save_consumer_now(rt, consumer)
        except StreamClosed:
            return
        if committed:
            self.server.publish_internal(reply, None, None, b"")

    async def delete_consumer(self, rt: StreamRuntime, consumer: Any) -> None:
        consumer.close(notify_waiting=True)
        consumer._flush_outbox()
        rt.consumers.pop(consumer.name, None)
        if consumer.durable:
            await rt.apply_batch([DeleteConsumer(consumer.name)])
        self.log.info("jetstream.consumer_deleted", stream=rt.name, consumer=consumer.name)

    async def _expire_loop(self) -> None:
        while True:
            await trio.sleep(1.0)
            for rt in list(self.by_group.values()):
                if rt.leading and rt.config.max_age_ns > 0:
                    try:
                        await rt.apply(Expire(self.clock_ns()))
                    except StreamClosed:
                        continue

    # -- API (only led streams' subjects arrive here) ----------------------------------------
    async def _dispatch_api(self) -> None:
        async for subject, reply, headers, payload in self.api_recv:
            try:
                await self._handle_api(subject, reply, headers, payload)
            except StreamClosed:
                pass
            except Exception as exc:  # noqa: BLE001 - a handler bug must not stop the API
                self.api_errors += 1
                self.log.error("jetstream.api_failed", subject=subject, error=repr(exc), exc_info=True)

    async def _handle_api(self, subject: str, reply: str | None, headers: bytes | None, payload: bytes) -> None:
        tokens = subject.split(".")[2:]
        if tokens[:3] == ["STREAM", "LEADER", "STEPDOWN"] and len(tokens) == 4:
            self.respond(reply, await self.stream_stepdown(tokens[3]))
        elif tokens[:2] == ["STREAM", "INFO"] and len(tokens) == 3:
            try:
                body = await api_stream.info(self, tokens, payload, reply)
                body["cluster"] = self.cluster_info(self.streams[tokens[2]])
            except JsApiException as exc:
                body = api.error_response("stream_info_response", exc.error)
            self.respond(reply, body)
        else:
            await api.handle(self, subject, reply, headers, payload)

    def cluster_info(self, rt: Any) -> dict[str, Any]:
        """Stream info's `cluster`: leader and the other replicas with their lag (leader view)."""
        try:
            node = self.host.node(rt.group)
        except UnknownGroup:
            return {"name": self.cluster_name}
        progress = getattr(node, "_progress", {})
        connected = set(getattr(self.host.transport, "connected_peers", lambda: [])())
        replicas = []
        for peer in sorted(p for p in rt.peers if p != self.node_id):
            pr = progress.get(peer)
            lag = max(node.last_index - pr.match, 0) if pr is not None else node.last_index
            offline = peer not in connected
            replicas.append({"name": self.peer_name(peer), "current": lag == 0 and not offline,
                             "active": 0, "lag": lag, "offline": offline, "peer": peer})
        leader = node.leader_id
        return {"name": self.cluster_name, "raft_group": rt.group,
                "leader": self.peer_name(leader) if leader else "", "replicas": replicas}

    async def stream_stepdown(self, name: str) -> dict[str, Any]:
        rt = self.streams.get(name)
        if not isinstance(rt, ReplicatedStream):
            return api.error_response("stream_leader_stepdown_response", UNAVAILABLE)
        ok = await transfer_leadership(self.host, rt.group, self.node_id)
        if not ok:
            return api.error_response("stream_leader_stepdown_response", UNAVAILABLE)
        return response("stream_leader_stepdown_response", success=True)

    # -- replica content hash (tests and tooling) -------------------------------------------
    def _digest_callback(self, rt: ReplicatedStream) -> Callable[..., None]:
        def on_request(subject: str, reply: str | None, headers: bytes | None, payload: bytes) -> None:
            if reply and self.nursery is not None:
                self.nursery.start_soon(self._answer_digest, rt, reply)
        return on_request

    async def _answer_digest(self, rt: ReplicatedStream, reply: str) -> None:
        def read() -> dict[str, Any]:
            state = rt.store.state()
            return {"digest": rt.store.content_digest(), "applied": rt.store.applied_index(),
                    "last_seq": state.last_seq, "messages": state.messages}
        try:
            body = await rt.call(read)
        except StreamClosed:
            return
        body.update(server=self.server.server_name, stream=rt.name, group=rt.group, leader=rt.leading,
                    applied_entry=entry_of(body["applied"]))
        self.server.publish_internal(reply, None, None, json.dumps(body).encode())


def open_replica_store(config: StreamConfig, directory: Any) -> Any:
    """The stream's store, committing without fsync (WAL, synchronous=NORMAL): the Raft log is
    what is durable - it is never compacted past the store's applied index, and a replica
    whose store lost its newest transactions in a power cut replays them from the log."""
    store = open_store(config, directory)
    conn = getattr(store, "_conn", None)  # SqliteStore has no public durability knob yet
    if isinstance(store, SqliteStore) and conn is not None:
        conn.execute("PRAGMA synchronous=NORMAL")
    return store


async def transfer_leadership(host: RaftHost, group: str, self_id: str) -> bool:
    """Hand leadership of `group` to the most caught-up other voter; True once it moved."""
    try:
        node = host.node(group)
    except UnknownGroup:
        return False
    if node.role is not Role.LEADER:
        return False
    progress = getattr(node, "_progress", {})
    others = [p for p in node.membership.voters if p != self_id]
    if not others:
        return False
    target = max(sorted(others), key=lambda p: progress[p].match if p in progress else -1)
    host.transfer_leadership(group, target)
    with trio.move_on_after(STEPDOWN_WAIT_S):
        while host.node(group).role is Role.LEADER:
            await trio.sleep(LEADER_WATCH_S)
        return True
    return False
