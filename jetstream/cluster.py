"""Clustered JetStream: every stream is a Raft group; its leader takes publishes and API calls.

How it works: `ClusteredJetStream` is the single-server `JetStream` shell with the cluster
parts swapped in (replicas are `ReplicatedStream`s, jetstream/cluster_stream.py):
- streams are opened and closed only by the meta reconciler (`start_replica` / `stop_replica`),
  never by scanning the disk;
- a watcher notices which local groups this server leads. On gaining leadership (after a
  read-index barrier, so everything committed is applied here) it loads the durable consumers
  from the replicated store, starts them, and subscribes - routed across the cluster - to the
  stream's subjects and API subjects; on losing it, it stops all of that;
- which durable consumers exist is the meta group's (jetstream/cluster_consumers.py: created,
  updated and deleted through it, reconciled on every meta change); ephemerals are local;
- durable consumer state travels through the stream's log (`SaveConsumer` / `DeleteConsumer`)
  whenever the flusher finds it changed, and an AckSync is answered only once committed, so a
  new leader resumes from the replicated progress (pending messages keep their redelivery
  deadlines);
- a planned leadership change (stepdown, a move's handover: `hand_over`) first holds the
  consumers and commits their state, so the next leader knows every delivery (counts kept);
  acks a leader applied but never committed (they arrived while it was losing leadership) are
  published again once the next leader subscribes (`_forward_acks`), instead of waiting out
  ack_wait. What a crash loses is the flush interval's deliveries (redelivered as new) and
  plain acks (redelivered);
- every replica answers `$JSC.DIGEST.<server>.<stream>` with its content hash, applied index
  and last sequence (tests compare replicas by content).

Interest retention is evaluated as "someone is interested" on every replica (consumers run only
on the leader, and the state machine must decide the same everywhere); the leader then removes
what nobody needs with a replicated `RemoveAcked` (jetstream/cluster_interest.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import structlog
import trio

from jetstream import api, api_stream
from jetstream.api import response
from jetstream.cluster_codec import DeleteConsumer, SaveConsumer, entry_of
from jetstream.cluster_consumers import AssignedConsumers, ConsumerRegistry
from jetstream.cluster_interest import sweep_uninterested
from jetstream.cluster_routing import RoutedServer, subscribe_routed
from jetstream.cluster_stream import (
    COMPACT_EVERY_ENTRIES,
    UNAVAILABLE,
    ReplicatedStream,
    open_replica_store,
    stream_group_config,
)
from jetstream.config import Retention, StreamConfig
from jetstream.consumer_config import ConsumerConfig
from jetstream.delivery import UNSAVED_ACKS_MAX
from jetstream.delivery_state import AckKind, parse_ack, parse_ack_subject
from jetstream.errors import ApiError, ErrCode, JsApiException
from jetstream.runtime import StreamClosed, StreamRuntime, remove_stream_dir, write_config
from jetstream.service import JetStream
from jetstream.stream import Expire, UpdateConfig
from raft.config import Role
from raft.driver import NotLeader, RaftHost, UnknownGroup
from raft.types import Membership

__all__ = ["ClusteredJetStream", "ReplicatedStream", "stream_group_config", "transfer_leadership"]

LEADER_WATCH_S = 0.1
LEADER_RESCAN_S = 1.0  # every group's role is read at least this often (retries a failed takeover)
BARRIER_TIMEOUT_S = 2.0
READ_BARRIER_S = 1.0  # a read waits this long for its read-index round, then stays unanswered
READ_REQUESTS = (("STREAM", "INFO"), ("STREAM", "MSG", "GET"), ("DIRECT", "GET"), ("CONSUMER", "INFO"),
                 ("CONSUMER", "LIST"), ("CONSUMER", "NAMES"))  # answered from local state
STEPDOWN_WAIT_S = 3.0
CONFIG_PUSH_ROUNDS = 4
HANDOVER_SAVE_S = 1.0
FORWARD_WAIT_S = 5.0
REAP_ATTEMPTS = 5
REAP_RETRY_S = 1.0
LATE_ACKS_S = 0.5  # after the next leader subscribed, acks still routed to the old one


class ClusteredJetStream(JetStream):
    """JetStream whose streams are Raft groups on `host` (see the module docstring)."""

    def __init__(self, server: Any, host: RaftHost, node_id: str, peer_name: Callable[[str], str],
                 cluster_name: str, *, compact_every: int = COMPACT_EVERY_ENTRIES, **kwargs: Any) -> None:
        super().__init__(server, **kwargs)
        self.compact_every = compact_every
        self.host = host
        self.node_id = node_id
        self.peer_name = peer_name
        self.cluster_name = cluster_name
        self.by_group: dict[str, ReplicatedStream] = {}
        self.stopping: set[str] = set()  # groups whose replica is being stopped
        self.routed = RoutedServer(server)
        self.handing_over: set[str] = set()  # groups whose leadership is being handed over
        # (voters most caught up first, leader, placement) -> new leader, None (any) or an error;
        # set by the meta layer, which knows every server's cluster and tags (meta/api_moves.py)
        self.stepdown_chooser: Callable[[list[str], str, dict[str, Any]], str | None | ApiError] | None = None
        # (stream, group) -> still assigned by this server's meta state; set by the meta layer
        self.stream_assigned: Callable[[str, str], bool] | None = None
        self.assigned_consumers = AssignedConsumers(self)  # durables: meta assignments (cluster_consumers.py)
        self._consumers_changed = trio.Event()
        self.interest_sweepers: dict[str, object] = {}  # group -> its leader's sweeper (cluster_interest.py)
        self.log = structlog.get_logger("jetstream.cluster").bind(node=node_id)

    @property
    def consumer_registry(self) -> ConsumerRegistry | None:
        return self.assigned_consumers.registry

    @consumer_registry.setter
    def consumer_registry(self, registry: ConsumerRegistry | None) -> None:
        self.assigned_consumers.registry = registry

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
            self._become_follower(rt, forward=False)
            for sub in rt.replica_subs:
                sub.unsubscribe()
            await rt.close()

    # -- replicas (driven by the meta reconciler) --------------------------------------------
    async def start_replica(self, name: str, group: str, config_json: dict[str, Any],
                            peers: tuple[str, ...], created_ns: int, assigned_text: str,
                            membership: Membership | None = None,
                            membership_index: int | None = None) -> None:
        """`membership`: the group's starting membership (default: `peers` as voters, the
        group's first config; a server joining an existing group starts as a learner -
        meta/moves.py). `membership_index`: the group's log index it holds from (default 0 with
        the default membership; see RaftHost.add_group, meta/reconciler.py replica_start)."""
        config = StreamConfig.from_json(config_json)
        directory = self.root / group
        await trio.to_thread.run_sync(write_config, directory, config, created_ns)
        store = await trio.to_thread.run_sync(open_replica_store, config, directory)
        rt = ReplicatedStream(config, created_ns, store, directory, self.clock_ns,
                              self.server.publish_internal, host=self.host, group=group,
                              peers=peers, assigned_text=assigned_text, spawn=self._spawn,
                              compact_every=self.compact_every)
        self.by_group[group] = rt
        self.streams[name] = rt
        applied = entry_of(await rt.call(store.applied_index))
        if membership is None:
            membership, membership_index = Membership(voters=frozenset(peers)), 0
        await self.host.add_group(group, stream_group_config(self.node_id, group), membership,
                                  rt.apply_entry, rt.restore_snapshot, applied=applied,
                                  membership_index=membership_index)
        digest_subject = f"$JSC.DIGEST.{self.server.server_name}.{name}"
        rt.replica_subs.append(subscribe_routed(self.server, digest_subject, self._digest_callback(rt)))
        assert self.nursery is not None
        self.nursery.start_soon(rt.run_writer)
        self.log.info("jetstream.replica_started", stream=name, group=group, peers=list(peers),
                      applied=applied)

    def _spawn(self, fn: Callable[..., Any], *args: Any) -> None:
        if self.nursery is not None:
            self.nursery.start_soon(fn, *args)

    async def stop_replica(self, group: str, delete: bool) -> None:
        """The replica's `$JSC.DIGEST` subscription goes last, once its data is gone: a stream
        delete is answered when no replica subscribes to it any more (meta/api.py)."""
        rt = self.by_group.pop(group, None)
        if rt is None:
            return
        self.stopping.add(group)
        try:
            self.host.remove_group(group)
            self._become_follower(rt)
            if self.streams.get(rt.name) is rt:
                del self.streams[rt.name]
            await rt.close()
            rt.deleted = delete
            if delete:
                await trio.to_thread.run_sync(remove_stream_dir, rt.directory)
                await self.host.worker.run(self.host.store.forget_group, group)
        finally:
            for sub in rt.replica_subs:
                sub.unsubscribe()
            self.stopping.discard(group)
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
        """The leader carries a committed meta config change into the stream's own log. A newer
        config may be committed while one is being applied (a move and its cancel): a push that
        started earlier saw the old config as current, so loop until they agree (bounded)."""
        for _ in range(CONFIG_PUSH_ROUNDS):
            desired = rt.desired_config
            if desired.to_json() == rt.config.to_json() or not rt.leading:
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
        """Follow which local stream groups this server leads (polled every LEADER_WATCH_S, but
        the groups are only looked at when the host reports a leadership change, or every
        LEADER_RESCAN_S: a thousand idle streams cost nothing); taking over a stream runs in its
        own task, so many streams change hands at once."""
        seen, scanned_s = -1, 0.0
        while True:  # until cancelled
            changes = getattr(self.host, "leadership_changes", None)
            now = trio.current_time()
            if changes is not None and changes == seen and now - scanned_s < LEADER_RESCAN_S:
                await trio.sleep(LEADER_WATCH_S)
                continue
            seen, scanned_s = changes, now
            for rt in list(self.by_group.values()):
                leading = self._is_leader(rt)
                if leading and not rt.leading and not rt.acquiring:
                    rt.acquiring = True
                    self._spawn(self._become_leader, rt)
                elif rt.leading and not leading:
                    self._become_follower(rt)
            await trio.sleep(LEADER_WATCH_S)

    def _is_leader(self, rt: ReplicatedStream) -> bool:
        try:
            return self.host.node(rt.group).role is Role.LEADER
        except UnknownGroup:
            return False

    async def _become_leader(self, rt: ReplicatedStream) -> None:
        """After a read barrier (everything committed is applied here): load the durable
        consumers, and if still the leader, start them and subscribe."""
        try:
            with trio.move_on_after(BARRIER_TIMEOUT_S):
                await self.host.read_index(rt.group)
                saved = await self._read_consumers(rt)
                if rt.closed or self.by_group.get(rt.group) is not rt or not self._is_leader(rt):
                    return
                rt.leading = True
                self._start_consumers(rt, self.assigned_consumers.saved_to_start(rt, saved))
                self._subscribe_leader(rt)
                self._spawn(self.assigned_consumers.reconcile, rt)  # assigned ones not saved yet
                if rt.config.retention is Retention.INTEREST:
                    self._spawn(sweep_uninterested, self, rt)  # messages nobody wants leave every replica
                self.log.info("jetstream.stream_leader", stream=rt.name, group=rt.group)
                if rt.desired_config.to_json() != rt.config.to_json():
                    self._spawn(self._push_config, rt)
        except (NotLeader, UnknownGroup, StreamClosed):
            return
        finally:
            rt.acquiring = False

    def _become_follower(self, rt: ReplicatedStream, forward: bool = True) -> None:
        """Stop leading `rt`; acks applied here but not committed go to the next leader
        (`_forward_acks`) unless `forward` is False (shutting down)."""
        was_leading, rt.leading = rt.leading, False
        for sub in rt.leader_subs:
            sub.unsubscribe()
        rt.leader_subs = []
        unsaved: list[tuple[str, str | None, bytes]] = []
        for consumer in list(rt.consumers.values()):
            consumer.close(notify_waiting=False)
            unsaved += [ack for _, ack in consumer.unsaved_acks]
            consumer.unsaved_acks.clear()
        if forward and (unsaved or was_leading):
            self._spawn(self._forward_acks, rt.name, unsaved)
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

    async def _read_consumers(self, rt: ReplicatedStream) -> list[tuple[str, bytes | None]]:
        def read() -> list[tuple[str, bytes | None]]:
            return [(name, rt.store.load_consumer(name)) for name in rt.store.consumer_names()]
        return await rt.call(read)  # type: ignore[no-any-return]

    def _start_consumers(self, rt: ReplicatedStream, saved: list[tuple[str, bytes | None]]) -> None:
        now = self.clock_ns()
        for name, blob in saved:
            try:
                body = json.loads(blob or b"")
                config = ConsumerConfig.from_json(body["config"])
            except Exception as exc:  # noqa: BLE001 - keep the blob, skip the consumer
                self.log.error("jetstream.consumer_load_failed", stream=rt.name, consumer=name, error=repr(exc))
                continue
            consumer = self._new_consumer(rt, name, config, int(body["created_ns"]))
            consumer.state.restore(body["state"], now)
            consumer.paused_until_ns = int(body.get("paused_until_ns", 0))
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
        mark = consumer.acks_seen
        results = await rt.apply_batch([SaveConsumer(consumer.name, self._consumer_blob(consumer))])
        if any(isinstance(r, ApiError) for r in results):
            return False
        consumer.saved_acks_upto(mark)
        return True

    async def _save_consumers(self, rt: StreamRuntime, only_dirty: bool = True) -> bool:
        """Commit the state of the durable consumers that changed (all with `only_dirty`
        False); True when there was nothing to save or it committed."""
        if not (isinstance(rt, ReplicatedStream) and rt.leading) or rt.closed:
            return False
        todo = [c for c in rt.consumers.values() if c.durable and (c.dirty or not only_dirty) and not c.deleted]
        if not todo:
            return True
        cmds: list[Any] = []
        marks = []
        for c in todo:
            c.dirty = False
            marks.append(c.acks_seen)
            cmds.append(SaveConsumer(c.name, self._consumer_blob(c)))
        results = await rt.apply_batch(cmds)
        if any(isinstance(r, ApiError) for r in results):
            for c in todo:
                c.dirty = True  # try again next round (or forward its acks on losing leadership)
            return False
        for c, mark in zip(todo, marks):
            c.saved_acks_upto(mark)
        return True

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
        if consumer.durable:  # a +NXT is forwarded as its ack only (its pull request is gone)
            forward = (reply if hold else None, bytes(payload)) if ack.kind is not AckKind.NEXT else (None, b"+ACK")
            consumer.record_unsaved_ack(subject, *forward)
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

    async def _forward_acks(self, stream: str, acks: list[tuple[str, str | None, bytes]]) -> None:
        """Acks this server applied as leader but never committed, and acks still arriving
        after it stopped leading (routed here before the other servers learnt it no longer
        subscribes; a local, unannounced subscription catches them for a while): once another
        server leads the stream (it subscribes to the stream's ack subjects), or this one again,
        publish them
        again, with their reply subjects, so the new leader applies and commits them (an ack is
        idempotent). Without a new leader by FORWARD_WAIT_S they are dropped: redelivered after
        ack_wait."""
        late: list[tuple[str, str | None, bytes]] = []

        def catch(subject: str, reply: str | None, headers: bytes | None, payload: bytes) -> None:
            if len(late) < UNSAVED_ACKS_MAX:
                late.append((subject, reply, bytes(payload)))

        probe = f"$JS.ACK.{stream}.probe.1.1.1.0.0"
        sub = self.server.subscribe_internal(f"$JS.ACK.{stream}.>", None, catch)
        found = False
        try:
            with trio.move_on_after(FORWARD_WAIT_S):
                while not (self.others_subscribe(probe) or self._leads(stream)):
                    await trio.sleep(LEADER_WATCH_S / 2)  # polling for the new leader's subscription
                found = True
                await trio.sleep(LATE_ACKS_S)  # what was already routed here arrives meanwhile
        finally:
            sub.unsubscribe()
        if not found:
            if acks or late:
                self.log.warning("jetstream.acks_not_forwarded", stream=stream, acks=len(acks) + len(late))
            return
        for subject, reply, payload in acks + late:
            self.routed.publish_internal(subject, reply, None, payload)
        if acks or late:
            self.log.info("jetstream.acks_forwarded", stream=stream, unsaved=len(acks), late=len(late))

    def _leads(self, stream: str) -> bool:
        rt = self.streams.get(stream)
        return isinstance(rt, ReplicatedStream) and rt.leading

    def others_subscribe(self, subject: str) -> bool:
        """Another server of the cluster subscribes to `subject` (ours do not count)."""
        cluster = self.server.cluster_active
        if cluster is None:
            return False
        return any(plain for _, plain, _ in cluster.remote_matches(subject))

    async def hand_over(self, rt: ReplicatedStream, to: str | None = None) -> bool:
        """A planned leadership change of `rt`'s group (stepdown, move): hold the consumers
        (nothing more is delivered), commit their state, then transfer leadership to `to` (else
        the most caught-up voter), so the next leader resumes exactly where this one stopped:
        no delivery forgotten, delivery counts kept. Acks that arrive meanwhile are forwarded
        (`_become_follower`). If leadership did not move, the consumers resume. True once moved."""
        if rt.group in self.handing_over or not rt.leading:
            return False
        self.handing_over.add(rt.group)
        held = [c for c in rt.consumers.values() if not c.deleted]
        try:
            for consumer in held:
                consumer.held = True
            with trio.move_on_after(HANDOVER_SAVE_S):
                await self._save_consumers(rt, only_dirty=False)
            return await transfer_leadership(self.host, rt.group, self.node_id, to=to)
        except (StreamClosed, UnknownGroup, NotLeader):  # runs as a task: never take the server down
            return False
        finally:
            self.handing_over.discard(rt.group)
            if self._is_leader(rt):  # it stayed here: carry on
                for consumer in held:
                    consumer.held = False
                    consumer.kick()
            elif rt.leading:  # it moved: stop at once (the watcher could miss a quick round trip
                self._become_follower(rt)  # of leadership and keep held consumers forever)

    def start_hand_over(self, rt: ReplicatedStream, to: str | None = None) -> None:
        """`hand_over` in the background (the move driver does not wait for it)."""
        if rt.group not in self.handing_over:
            self._spawn(self.hand_over, rt, to)

    async def create_consumer(self, rt: StreamRuntime, name: str, config: ConsumerConfig) -> Any:
        if self.consumer_registry is None or not config.durable_name:  # ephemeral: stream-local
            return await super().create_consumer(rt, name, config)
        return await self.assigned_consumers.create(rt, name, config)

    async def persist_consumer_config(self, rt: StreamRuntime, consumer: Any, config: ConsumerConfig) -> None:
        """A durable's config changes (create with an updatable change): commit it in the meta group."""
        if self.consumer_registry is not None and consumer.durable:
            await self.assigned_consumers.update_config(rt, consumer, config)

    async def reconcile_stream_consumers(self, rt: StreamRuntime) -> None:
        """Start assigned durables not running yet (a create request must see them)."""
        if isinstance(rt, ReplicatedStream):
            await self.assigned_consumers.reconcile(rt)

    def reconcile_consumers(self) -> None:
        """After a meta change: every led stream is to run exactly its assigned durables (done
        by `consumer_reconcile_loop`, so a stream slow to commit never holds up the caller)."""
        self._consumers_changed.set()

    async def consumer_reconcile_loop(self) -> None:
        while True:  # until cancelled
            await self._consumers_changed.wait()
            self._consumers_changed = trio.Event()
            await self.assigned_consumers.reconcile_all(list(self.by_group.values()))

    async def delete_consumer(self, rt: StreamRuntime, consumer: Any) -> None:
        if self.consumer_registry is not None and consumer.durable:
            await self.assigned_consumers.delete(rt, consumer)  # meta first, then _drop_consumer
        else:
            await self._drop_consumer(rt, consumer)

    async def _reap_task(self, rt: StreamRuntime, consumer: Any) -> None:
        """An inactive consumer goes; a durable's meta unassignment is retried (bounded) while
        the meta group has no leader (the consumer already stopped delivering)."""
        for attempt in range(REAP_ATTEMPTS):
            try:
                await self.delete_consumer(rt, consumer)
                return
            except StreamClosed:
                return
            except JsApiException as exc:
                if attempt == REAP_ATTEMPTS - 1 or not rt.leading:
                    self.log.warning("jetstream.consumer_reap_failed", stream=rt.name, consumer=consumer.name,
                                     error=exc.error.description)
                    return
            await trio.sleep(REAP_RETRY_S)

    async def _drop_consumer(self, rt: StreamRuntime, consumer: Any) -> None:
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

    async def _still_leading(self, tokens: list[str]) -> bool:
        """For a request answered from local state (READ_REQUESTS): a read-index round first,
        so a leader that was deposed or cut off from its quorum never answers from stale
        state (it stays silent; the real leader's answer reaches the client)."""
        name = next((tokens[len(p)] for p in READ_REQUESTS
                     if tuple(tokens[:len(p)]) == p and len(tokens) > len(p)), None)
        rt = self.streams.get(name) if name is not None else None
        if not isinstance(rt, ReplicatedStream):
            return True
        if self.stream_assigned is not None and not self.stream_assigned(rt.name, rt.group):
            return False  # this server's meta state already deleted it (its replica stops soon)
        with trio.move_on_after(READ_BARRIER_S):
            try:
                await self.host.read_index(rt.group)
            except (NotLeader, UnknownGroup):
                return False
            return rt.leading and self._is_leader(rt)
        return False

    async def _handle_api(self, subject: str, reply: str | None, headers: bytes | None, payload: bytes) -> None:
        tokens = subject.split(".")[2:]
        if not await self._still_leading(tokens):
            return
        if tokens[:3] == ["STREAM", "LEADER", "STEPDOWN"] and len(tokens) == 4:
            self.respond(reply, await self.stream_stepdown(tokens[3], payload))
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
        info = {"name": self.cluster_name, "raft_group": rt.group,
                "leader": self.peer_name(leader) if leader else "", "replicas": replicas}
        if getattr(rt, "move_progress", None):  # a scale or move in progress (meta/move_driver.py)
            info["move"] = rt.move_progress
        return info

    async def stream_stepdown(self, name: str, payload: bytes = b"") -> dict[str, Any]:
        """Hand leadership to the most caught-up voter, or to the one nats-server's
        `{"placement": {"preferred": ..., "cluster": ..., "tags": [...]}}` picks (the meta layer's
        `stepdown_chooser`: 10005 with nats-server's message when none fits)."""
        rt = self.streams.get(name)
        if not isinstance(rt, ReplicatedStream):
            return api.error_response("stream_leader_stepdown_response", UNAVAILABLE)
        try:
            target = self._stepdown_target(rt, payload)
        except JsApiException as exc:
            return api.error_response("stream_leader_stepdown_response", exc.error)
        if isinstance(target, ApiError):
            return api.error_response("stream_leader_stepdown_response", target)
        ok = await self.hand_over(rt, to=target)
        if not ok:
            return api.error_response("stream_leader_stepdown_response", UNAVAILABLE)
        return response("stream_leader_stepdown_response", success=True)

    def _stepdown_target(self, rt: ReplicatedStream, payload: bytes) -> str | None | ApiError:
        body = api.decode_json(bytes(payload))
        placement = body.get("placement") or {}
        if not isinstance(placement, dict):
            return api.api_error(ErrCode.INVALID_JSON, err="json: cannot unmarshal into Go struct field of type Placement")
        node = self.host.node(rt.group)
        progress = getattr(node, "_progress", {})
        voters = sorted(node.membership.voters, key=lambda p: (-(progress[p].match if p in progress else -1), p))
        if self.stepdown_chooser is not None:
            return self.stepdown_chooser(voters, self.node_id, placement)  # type: ignore[no-any-return]
        preferred = str(placement.get("preferred") or "")  # no meta layer: by name only
        found = next((v for v in voters if preferred in (v, self.peer_name(v))), None) if preferred else None
        if preferred and found is None:
            return ApiError(code=400, err_code=10005, description=f'preferred server "{preferred}" not known')
        return found

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


async def transfer_leadership(host: RaftHost, group: str, self_id: str, to: str | None = None) -> bool:
    """Hand leadership of `group` to `to`, else the most caught-up other voter; True once it moved."""
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
    target = to if to in others else max(sorted(others), key=lambda p: progress[p].match if p in progress else -1)
    with trio.move_on_after(STEPDOWN_WAIT_S):
        try:
            while True:  # bounded by the deadline
                # (re)start the transfer: Raft abandons one after an election timeout (a lost
                # TIMEOUT_NOW, a target still catching up on a loaded machine)
                if host.node(group).lead_transferee is None:
                    host.transfer_leadership(group, target)
                await trio.sleep(LEADER_WATCH_S)
                if host.node(group).role is not Role.LEADER:
                    return True
        except UnknownGroup:  # the group left this server meanwhile (a move completed)
            return True
    return False
