"""JetStream on one server: owns the streams and consumers, wires them into natsd.

How it works: `run_jetstream(server)` is a natsd "service" (cli/server.py starts it in the
server's nursery when `-js` is given). It loads every stream found under `<store_dir>/jetstream/
streams/` (config file + SQLite store + durable consumer state), then subscribes internally to
`$JS.API.>` (API requests, answered one at a time by a dispatcher task, except pull requests,
which go straight to their consumer so they are never stuck behind a slow API call), `$JS.ACK.>`
(acks: applied synchronously to the consumer's state, which is pure and in memory) and
`$JS.FC.>` (flow-control replies). Each stream subscribes to its own subjects; a routing callback
queues the publish and the stream's writer task commits batches (jetstream/runtime.py).

Each stream has a writer task and one task per consumer; they end by themselves when the stream
is closed (deleted, or the server stops). Existing streams are opened synchronously at startup,
before the first checkpoint, so the API and stream subjects exist as soon as clients can connect.
A flusher task saves the state of durable consumers that changed (one transaction per stream)
every `CONSUMER_FLUSH_S`, and a sweeper applies max_age and per-message TTL expiry. Long-lived
tasks run under `_guarded`: a bug is logged and the task restarted, never taking the server
down. On shutdown all durable consumers are saved and stores closed, shielded from
cancellation. Ephemeral consumers live in memory only.
"""

from __future__ import annotations

import json
import os
import random
import string
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
import trio

from jetstream import api
from jetstream.config import Storage, StreamConfig
from jetstream.consumer_config import ConsumerConfig
from jetstream.delivery import ConsumerRuntime
from jetstream.delivery_state import parse_ack, parse_ack_subject
from jetstream.runtime import (
    StreamClosed,
    StreamRuntime,
    open_store,
    read_config,
    remove_stream_dir,
    streams_dir,
    write_config,
)
from jetstream.stream import Expire

API_PREFIX = "$JS.API."
API_QUEUE_MAX = 10_000
CONSUMER_FLUSH_S = 0.2
EXPIRE_EVERY_S = 1.0
TASK_RESTARTS_MAX = 100
TASK_RESTART_PAUSE_S = 0.5
_NAME_CHARS = string.ascii_letters + string.digits


async def run_jetstream(server: Any, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """The natsd service entry point: run JetStream until cancelled."""
    js = JetStream(server)
    await js.run(task_status=task_status)


class JetStream:
    def __init__(self, server: Any, store_dir: str | None = None,
                 clock_ns: Callable[[], int] = time.time_ns, seed: int | None = None) -> None:
        self.server = server
        options = server.options
        base = store_dir or options.store_dir or os.path.join(tempfile.gettempdir(), "jetraft")
        self.store_dir = base
        self.root = streams_dir(base)
        self.clock_ns = clock_ns
        self.rng = random.Random(seed if seed is not None else os.urandom(16))
        self.log = structlog.get_logger("jetstream")
        self.streams: dict[str, StreamRuntime] = {}
        self.api_total = 0
        self.api_errors = 0
        self.nursery: trio.Nursery | None = None
        self.api_send, self.api_recv = trio.open_memory_channel[tuple](API_QUEUE_MAX)
        self.subs: list[Any] = []

    # -- lifecycle ------------------------------------------------------------------------------
    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                # Loaded synchronously, before the first checkpoint: a client that connects as
                # soon as the port answers must find the API and every stream's subjects.
                self._load_streams()
                self._subscribe_api()
                nursery.start_soon(self._guarded, "api", self._dispatch_api, lambda: True)
                nursery.start_soon(self._guarded, "flush", self._flush_consumers_loop, lambda: True)
                nursery.start_soon(self._guarded, "expire", self._expire_loop, lambda: True)
                from jetstream.monitoring import start_monitoring  # /jsz, /healthz, /metrics
                start_monitoring(self, nursery)
                self.log.info("jetstream.ready", store_dir=self.store_dir, streams=len(self.streams))
                task_status.started()
        finally:
            with trio.CancelScope(shield=True):
                await self._shutdown()

    async def _shutdown(self) -> None:
        for sub in self.subs:
            sub.unsubscribe()
        self.subs.clear()
        for rt in list(self.streams.values()):
            try:
                await self._save_consumers(rt, only_dirty=False)
            except StreamClosed:
                pass
            for sub in rt.subscriptions:
                sub.unsubscribe()
            await rt.close()
        self.log.info("jetstream.stopped", streams=len(self.streams))

    async def _guarded(self, what: str, task: Callable[[], Any], alive: Callable[[], bool]) -> None:
        """Run a long-lived task; a bug in it is logged and the task restarted (bounded, with a
        pause), so one broken stream or consumer never takes the server down."""
        for attempt in range(TASK_RESTARTS_MAX):
            try:
                await task()
                return
            except Exception as exc:  # noqa: BLE001 - contain, log, restart
                self.log.error("jetstream.task_failed", task=what, attempt=attempt, error=repr(exc), exc_info=True)
            if not alive():
                return
            await trio.sleep(TASK_RESTART_PAUSE_S)
        self.log.error("jetstream.task_abandoned", task=what)

    def _subscribe_api(self) -> None:
        self.subs.append(self.server.subscribe_internal("$JS.API.>", None, self._on_api))
        self.subs.append(self.server.subscribe_internal("$JS.ACK.>", None, self._on_ack))
        self.subs.append(self.server.subscribe_internal("$JS.FC.>", None, self._on_flow_control))

    # -- routing callbacks (synchronous, never block) ----------------------------------------------
    def _on_api(self, subject: str, reply: str | None, headers: bytes | None, payload: bytes) -> None:
        self.api_total += 1
        if subject.startswith("$JS.API.CONSUMER.MSG.NEXT."):
            tokens = subject.split(".")
            consumer = self.find_consumer(tokens[5], tokens[6]) if len(tokens) == 7 else None
            if consumer is not None:
                consumer.on_pull(bytes(payload), reply)
            return
        try:
            self.api_send.send_nowait((subject, reply, headers, bytes(payload)))
        except trio.WouldBlock:
            self.log.warning("jetstream.api_queue_full", subject=subject)

    def _on_ack(self, subject: str, reply: str | None, headers: bytes | None, payload: bytes) -> None:
        target = parse_ack_subject(subject)
        ack = parse_ack(bytes(payload))
        if target is None or ack is None:
            return
        consumer = self.find_consumer(target.stream, target.consumer)
        if consumer is not None:
            consumer.on_ack(target, ack, reply)

    def _on_flow_control(self, subject: str, reply: str | None, headers: bytes | None,
                         payload: bytes) -> None:
        tokens = subject.split(".")
        if len(tokens) >= 5:
            consumer = self.find_consumer(tokens[2], tokens[3])
            if consumer is not None:
                consumer.on_flow_control(subject)

    async def _dispatch_api(self) -> None:
        async for subject, reply, headers, payload in self.api_recv:
            try:
                await api.handle(self, subject, reply, headers, payload)
            except StreamClosed:
                pass
            except Exception as exc:  # noqa: BLE001 - a handler bug must not stop the API
                self.api_errors += 1
                self.log.error("jetstream.api_failed", subject=subject, error=repr(exc), exc_info=True)

    def respond(self, reply: str | None, body: dict[str, Any]) -> None:
        if "error" in body:
            self.api_errors += 1
        if reply:
            self.server.publish_internal(reply, None, None, json.dumps(body, separators=(",", ":")).encode())

    # -- streams --------------------------------------------------------------------------------------
    def _load_streams(self) -> None:
        """Open every stream under the store directory (blocking; only at startup)."""
        self.root.mkdir(parents=True, exist_ok=True)
        for directory in sorted(p for p in self.root.iterdir() if p.is_dir()):
            try:
                config, created_ns = read_config(directory)
                store = open_store(config, directory)
            except Exception as exc:  # noqa: BLE001 - never delete: report and skip
                self.log.error("jetstream.stream_load_failed", directory=str(directory), error=repr(exc))
                continue
            rt = self._new_runtime(config, created_ns, store, directory)
            rt.stored_bytes = store.state().bytes
            self._start_stream(rt)
            self._load_consumers(rt)

    def _new_runtime(self, config: StreamConfig, created_ns: int, store: Any, directory: Path) -> StreamRuntime:
        # server options are fixed: a stream whose storage kind has no account limit skips the
        # check on every publish
        limited = self.storage_limit(config) > 0
        return StreamRuntime(config, created_ns, store, directory, self.clock_ns, self.server.publish_internal,
                             over_limit=self._over_limit if limited else None)

    # -- account limits (the server's max_memory_store / max_file_store) -----------------------
    def storage_limit(self, config: StreamConfig) -> int:
        options = self.server.options
        if config.storage is Storage.MEMORY:
            return options.max_memory_store_bytes
        return options.max_file_store_bytes

    def storage_used(self, memory: bool) -> int:
        return sum(rt.stored_bytes for rt in self.streams.values()
                   if (rt.config.storage is Storage.MEMORY) == memory)

    def _over_limit(self, rt: StreamRuntime) -> bool:
        limit = self.storage_limit(rt.config)
        return limit > 0 and self.storage_used(rt.config.storage is Storage.MEMORY) >= limit

    async def create_stream(self, config: StreamConfig) -> StreamRuntime:
        directory = self.root / config.name
        created_ns = self.clock_ns()
        await trio.to_thread.run_sync(write_config, directory, config, created_ns)
        store = await trio.to_thread.run_sync(open_store, config, directory)
        rt = self._new_runtime(config, created_ns, store, directory)
        self._start_stream(rt)
        self.log.info("jetstream.stream_created", stream=config.name)
        return rt

    def _start_stream(self, rt: StreamRuntime) -> None:
        """Register the stream and start its writer (tasks end when the stream closes)."""
        assert self.nursery is not None
        self.streams[rt.name] = rt
        self._subscribe_stream(rt)
        self.nursery.start_soon(self._guarded, f"writer {rt.name}", rt.run_writer, lambda: not rt.closed)

    def _start_consumer(self, consumer: ConsumerRuntime) -> None:
        assert self.nursery is not None
        alive = lambda: not (consumer.deleted or consumer.stream.closed)  # noqa: E731
        self.nursery.start_soon(self._guarded, f"consumer {consumer.stream.name}/{consumer.name}", consumer.run, alive)

    def _subscribe_stream(self, rt: StreamRuntime) -> None:
        for sub in rt.subscriptions:
            sub.unsubscribe()
        rt.subscriptions = [
            self.server.subscribe_internal(subject, None, rt.enqueue_publish) for subject in rt.config.subjects
        ]

    async def update_stream(self, rt: StreamRuntime, config: StreamConfig) -> None:
        from jetstream.stream import UpdateConfig

        await trio.to_thread.run_sync(write_config, rt.directory, config, rt.created_ns)
        await rt.apply(UpdateConfig(config))
        rt.config = config
        self._subscribe_stream(rt)

    async def delete_stream(self, rt: StreamRuntime) -> None:
        for consumer in list(rt.consumers.values()):
            consumer.close(notify_waiting=True)
            consumer._flush_outbox()
        for sub in rt.subscriptions:
            sub.unsubscribe()
        rt.subscriptions = []
        self.streams.pop(rt.name, None)
        await rt.close()
        for consumer in rt.consumers.values():
            consumer.kick()
        rt.deleted = True
        await trio.to_thread.run_sync(remove_stream_dir, rt.directory)
        self.log.info("jetstream.stream_deleted", stream=rt.name)

    def other_stream_configs(self, name: str) -> list[StreamConfig]:
        return [rt.config for n, rt in self.streams.items() if n != name]

    # -- consumers -----------------------------------------------------------------------------------
    def find_consumer(self, stream: str, name: str) -> ConsumerRuntime | None:
        rt = self.streams.get(stream)
        return None if rt is None else rt.consumers.get(name)

    def random_name(self, length: int = 8) -> str:
        return "".join(self.rng.choice(_NAME_CHARS) for _ in range(length))

    def _new_consumer(self, rt: StreamRuntime, name: str, config: ConsumerConfig, created_ns: int) -> ConsumerRuntime:
        return ConsumerRuntime(rt, name, config, created_ns, self.server, self.clock_ns,
                               self._reap, lambda: self.random_name(4))

    async def create_consumer(self, rt: StreamRuntime, name: str, config: ConsumerConfig) -> ConsumerRuntime:
        consumer = self._new_consumer(rt, name, config, self.clock_ns())
        await rt.call(consumer.start_position, rt.store)
        rt.consumers[name] = consumer
        if consumer.durable:
            await self._save_consumer_now(rt, consumer)
        self._start_consumer(consumer)
        self.log.info("jetstream.consumer_created", stream=rt.name, consumer=name)
        return consumer

    async def delete_consumer(self, rt: StreamRuntime, consumer: ConsumerRuntime) -> None:
        consumer.close(notify_waiting=True)
        consumer._flush_outbox()
        rt.consumers.pop(consumer.name, None)
        if consumer.durable:
            await rt.call(rt.store.delete_consumer, consumer.name)
        self.log.info("jetstream.consumer_deleted", stream=rt.name, consumer=consumer.name)

    def _reap(self, consumer: ConsumerRuntime) -> None:
        rt = consumer.stream
        if rt.consumers.get(consumer.name) is consumer and self.nursery is not None:
            self.nursery.start_soon(self._reap_task, rt, consumer)

    async def _reap_task(self, rt: StreamRuntime, consumer: ConsumerRuntime) -> None:
        try:
            await self.delete_consumer(rt, consumer)
        except StreamClosed:
            pass

    def _load_consumers(self, rt: StreamRuntime) -> None:
        """Restore durable consumers saved in the stream's store (blocking; only at startup)."""
        now = self.clock_ns()
        for name in rt.store.consumer_names():
            try:
                saved = json.loads(rt.store.load_consumer(name) or b"")
                config = ConsumerConfig.from_json(saved["config"])
            except Exception as exc:  # noqa: BLE001 - keep the blob, skip the consumer
                self.log.error("jetstream.consumer_load_failed", stream=rt.name, consumer=name, error=repr(exc))
                continue
            consumer = self._new_consumer(rt, name, config, int(saved["created_ns"]))
            consumer.state.restore(saved["state"], now)
            consumer.paused_until_ns = int(saved.get("paused_until_ns", 0))
            rt.consumers[name] = consumer
            self._start_consumer(consumer)

    @staticmethod
    def _consumer_blob(consumer: ConsumerRuntime) -> bytes:
        body = {"config": consumer.config.to_json(), "created_ns": consumer.created_ns,
                "state": consumer.state.to_json(), "paused_until_ns": consumer.paused_until_ns}
        return json.dumps(body, separators=(",", ":")).encode()

    async def _save_consumer_now(self, rt: StreamRuntime, consumer: ConsumerRuntime) -> None:
        consumer.dirty = False
        await rt.call(rt.store.save_consumer, consumer.name, self._consumer_blob(consumer))

    async def _save_consumers(self, rt: StreamRuntime, only_dirty: bool = True) -> None:
        todo = [c for c in rt.consumers.values() if c.durable and (c.dirty or not only_dirty) and not c.deleted]
        if not todo or rt.closed:
            return
        blobs = []
        for c in todo:
            c.dirty = False
            blobs.append((c.name, self._consumer_blob(c)))

        def save() -> None:
            with rt.store.batch():
                for name, blob in blobs:
                    rt.store.save_consumer(name, blob)

        await rt.call(save)

    async def _flush_consumers_loop(self) -> None:
        while True:
            await trio.sleep(CONSUMER_FLUSH_S)
            for rt in list(self.streams.values()):
                if not rt.consumers:
                    continue  # (most of a thousand idle streams: no await, no task switch)
                try:
                    await self._save_consumers(rt)
                except StreamClosed:
                    continue

    async def _expire_loop(self) -> None:
        """Apply max_age and per-message TTL expiry; an Expire command (one commit) only when
        the oldest message is past max_age or a per-message TTL is due."""
        while True:
            await trio.sleep(EXPIRE_EVERY_S)
            for rt in list(self.streams.values()):
                try:
                    if await self._expiry_due(rt):
                        await rt.apply(Expire(self.clock_ns()))
                except StreamClosed:
                    continue

    async def _expiry_due(self, rt: StreamRuntime) -> bool:
        cfg = rt.config
        if cfg.allow_msg_ttl and _ttl_due(rt.sm, self.clock_ns()):
            return True
        if cfg.max_age_ns <= 0:
            return False
        state = await rt.call(rt.store.state)
        return state.messages > 0 and state.first_ts_ns <= self.clock_ns() - cfg.max_age_ns


def _ttl_due(sm: Any, now_ns: int) -> bool:
    """Is a per-message TTL due? Uses the state machine's `next_expiry_ns()` when it has one,
    else its TTL index; unknown shapes count as due (an Expire is always safe, just a commit)."""
    next_expiry = getattr(sm, "next_expiry_ns", None)
    if callable(next_expiry):
        at = next_expiry()
        return at is not None and at <= now_ns
    index = getattr(sm, "_ttl_expiry", None)
    if isinstance(index, dict):
        return any(at <= now_ns for at in index.values())
    return True
