"""A stream on one server: its store, its state machine, its consumers, its write queue.

How it works: `StreamRuntime` wraps a `MessageStore` and the pure `StreamStateMachine`
(jetstream/stream.py). Every command goes "propose -> apply(cmd, index) -> respond": on one
server the proposal is simply a batch handed to `apply_batch`, which applies the commands in ONE
store transaction (SQLite, WAL, synchronous=FULL: one fsync) inside a worker thread (a batch of
at most INLINE_COMMIT_MAX publishes on the event loop: no thread hop for a one-at-a-time
publisher), and only returns once that transaction committed. Publishes are queued by `enqueue_publish` (called from
the server's routing callback, never blocking) and drained by `run_writer`: while one batch is
being written in the worker thread the next one accumulates (group commit), which is where
throughput comes from. PubAcks go out after the commit, so an acknowledged message is on disk;
a batch's commands go through `StreamStateMachine.apply_batch` (runs of plain publishes are one
bulk insert) and its PubAcks through the server's `publish_internal_many` (one write per client).
Lone publishes skip the writer task: a publish routed while a client's read is processed
(`server.after_read` is a list then) registers `_commit_lone`, which the reader task runs once the
read is done; if the writer holds no batch and the read queued at most INLINE_COMMIT_MAX
publishes, it commits them and writes their PubAcks right there (one task step per round trip for
a one-at-a-time publisher), else it wakes the writer. Only this class's own writer allows it.

All writes and state queries go through `call()`, which holds a per-stream trio lock and runs the
call in a worker thread for SQLite stores (one thread at a time per connection). Message reads go
through `read()`: a second SQLite connection (WAL readers do not block on the writer), so
consumers and gets keep going while a batch is being committed. A commit wakes consumers via
`changed` (an Event replaced on each change). Configuration lives next to the store in
`stream.json` (written atomically: temp file, fsync, rename, fsync of the directory).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
import trio

from jetstream.config import StreamConfig, Storage
from jetstream.stream import AlreadyApplied, Command, PubAck, Publish, StreamStateMachine, puback_error_json
from jetstream.errors import ApiError, store_failed
from jetstream.store.base import MessageStore
from jetstream.store.memory import MemoryStore
from jetstream.store.sqlite import SqliteStore

CONFIG_FILE = "stream.json"
STORE_FILE = "msgs.db"
PUBLISH_QUEUE_MAX = 100_000
WRITE_BATCH_MAX = 4096
# A batch of at most this many publishes (no rollup) commits on the event loop: the commit is
# one small transaction and one fdatasync (~150-250 us), and the thread hop it saves costs ~55 us
# plus two wakeups, which is what a one-at-a-time publisher waits for. Bigger batches (many
# publishers) go to a worker thread, so the loop keeps reading the next batch during the fsync.
INLINE_COMMIT_MAX = 4

INSUFFICIENT_STORAGE = ApiError(code=500, err_code=10047, description="insufficient storage resources available")

PublishHook = Callable[[str, "str | None", "bytes | None", bytes], None]


class StreamRuntime:
    """One stream: config, store, state machine, consumers, group-commit publish queue."""

    def __init__(self, config: StreamConfig, created_ns: int, store: MessageStore,
                 directory: Path | None, clock_ns: Callable[[], int], publish: PublishHook,
                 *, over_limit: Callable[[StreamRuntime], bool] | None = None) -> None:
        self.config = config
        self.created_ns = created_ns
        self.store = store
        self.directory = directory
        self.clock_ns = clock_ns
        self.publish = publish
        self.publish_many = _publish_many_hook(publish)
        self.log = structlog.get_logger("jetstream").bind(stream=config.name)
        self.sm = StreamStateMachine(config, store, has_interest=self._has_interest)
        self.index = store.applied_index()
        self.lock = trio.Lock()
        self.read_lock = trio.Lock()
        self._reader: MessageStore | None = None
        self.in_thread = isinstance(store, SqliteStore)
        self.consumers: dict[str, Any] = {}  # name -> delivery.ConsumerRuntime
        self.changed = trio.Event()
        self.queue: list[tuple[Publish, str | None]] = []
        self.queue_ready = trio.Event()
        self.subscriptions: list[Any] = []
        self.over_limit = over_limit or _never_over
        self._limited = over_limit is not None
        self.stored_bytes = 0  # after the last commit; for account storage limits
        self.closed = False
        self.deleted = False
        self._ack_prefix: bytes | None = None  # b'{"stream":"NAME","seq":' of the PubAcks
        self._ack_prefix_name = ""
        # Lone publishes (see `_commit_lone`): the server whose reads we hook (only this
        # class's own writer; a subclass with another writer keeps the queue path).
        server = getattr(publish, "__self__", None)
        self._read_hooks = server if (hasattr(server, "after_read")
                                      and type(self).run_writer is StreamRuntime.run_writer) else None
        self._lone_hooked = False  # `_commit_lone` is registered for the current read
        self._writer_busy = False  # run_writer holds a batch (taken from the queue, not acked)
        self._stale = False  # a lone commit failed: the writer reloads the state first
        # The first lone commit asks the writer to size the SQLite WAL (preallocate_wal: lone
        # commits then overwrite WAL blocks); only streams with such a publisher pay its 4 MB.
        self._wal_sizing = getattr(store, "preallocate_wal", None)
        self._wal_sizing_due = False

    @property
    def name(self) -> str:
        return self.config.name

    # -- store access ---------------------------------------------------------------------------
    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run `fn(*args)` against the store: under the stream lock, off the event loop."""
        async with self.lock:
            if self.closed:
                raise StreamClosed(self.name)
            if self.in_thread:
                return await trio.to_thread.run_sync(fn, *args)
            return fn(*args)

    async def read(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run `fn(store, *args)` for message reads (load, load_next, load_last_by_subject,
        num_pending): SQLite streams use a second, read-only-in-practice connection (WAL lets it
        read committed data while the writer is committing), so reads never wait for an fsync."""
        if not self.in_thread:
            if self.closed:
                raise StreamClosed(self.name)
            return fn(self.store, *args)
        async with self.read_lock:
            if self.closed:
                raise StreamClosed(self.name)
            return await trio.to_thread.run_sync(self._read_sync, fn, args)

    async def read_inline(self, fn: Callable[..., Any], *args: Any) -> Any:
        """`read`, but on the event loop: only for reads of bounded work (a run of at most a few
        hundred rows by sequence, no scan), where the worker-thread hop (two wakeups, each a
        wait for a CPU on a loaded host) costs more than the read itself. The first read opens
        the reader connection, which may wait for the writer's lock: that one goes to the thread."""
        async with self.read_lock:
            if self.closed:
                raise StreamClosed(self.name)
            if not self.in_thread:
                return fn(self.store, *args)
            if self._reader is None:
                return await trio.to_thread.run_sync(self._read_sync, fn, args)
            return self._read_sync(fn, args)

    def _read_sync(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        if self._reader is None:
            self._reader = SqliteStore(self.store.path)  # type: ignore[attr-defined]
        else:
            self._reader.refresh()  # the writer committed since: its counters are stale here
        return fn(self._reader, *args)

    def _apply_work(self, cmds: list[Command]) -> list[Any]:
        """The synchronous commit of `cmds` (caller holds the store: lock, thread or loop)."""
        results = self.sm.apply_batch(cmds, self.index + 1)
        self.index += len(cmds)
        if self._limited:  # only account storage limits read it (server options are fixed)
            self.stored_bytes = self.store.state().bytes
        return results

    async def apply_batch(self, cmds: list[Command]) -> list[Any]:
        """Apply commands in one transaction; returns one result per command once committed."""
        def work() -> list[Any]:
            return self._apply_work(cmds)

        try:
            if _commit_inline(cmds):
                results = await self._commit_inline(work)
            else:
                results = await self.call(work)
        except StreamClosed:
            raise
        except Exception as exc:  # the store rolled back: rebuild the cached state from it
            self.log.error("stream.apply_failed", error=repr(exc), commands=len(cmds))
            await self.call(self._reload)
            return [store_failed(f"store failed: {exc}") for _ in cmds]
        self.config = self.sm.config
        self.notify()
        return results

    async def _commit_inline(self, work: Callable[[], list[Any]]) -> list[Any]:
        """Run the synchronous `work` on the event loop, exclusive with `call()`. When the lock
        is free nobody can take it before `work` returns (only tasks of this loop take it, and
        none runs meanwhile), so it is not taken: `async with lock` yields once even when free,
        which cost a one-at-a-time publish a whole extra scheduler pass (an epoll_wait and a
        task step, ~10 us CPU), and trio's acquire/release a few more."""
        if self.lock.locked():
            async with self.lock:
                if self.closed:
                    raise StreamClosed(self.name)
                return work()
        if self.closed:
            raise StreamClosed(self.name)
        return work()

    async def apply(self, cmd: Command) -> Any:
        return (await self.apply_batch([cmd]))[0]

    def _reload(self) -> None:
        self.sm = StreamStateMachine(self.config, self.store, has_interest=self._has_interest)
        self.index = self.store.applied_index()

    def notify(self) -> None:
        """Wake everyone waiting on `changed` (consumers with work to do)."""
        self.changed.set()
        self.changed = trio.Event()

    def _has_interest(self, subject: str) -> bool:
        return any(c.wants(subject) for c in self.consumers.values())

    # -- publish path ---------------------------------------------------------------------------
    def enqueue_publish(self, subject: str, reply: str | None, headers: bytes | None,
                        payload: bytes) -> None:
        """Routing callback for the stream's subjects: queue the message, never block."""
        if self.closed:
            return
        if len(self.queue) >= PUBLISH_QUEUE_MAX or (self._limited and self.over_limit(self)):
            if reply:
                err = INSUFFICIENT_STORAGE if self.over_limit(self) else store_failed("too many pending publishes")
                self.publish(reply, None, None, _json(puback_error_json(self.name, err)))
            return
        self.queue.append((Publish(subject, bytes(payload), self.clock_ns(), headers, reply), reply))
        hooks = self._read_hooks
        if hooks is not None and not self._writer_busy and len(self.queue) <= INLINE_COMMIT_MAX:
            after = hooks.after_read
            if after is not None:  # inside a client's read: commit once it is processed
                if not self._lone_hooked:
                    self._lone_hooked = True
                    after.append(self._commit_lone)
                return
        if not self.queue_ready.is_set():
            self.queue_ready.set()

    def _commit_lone(self) -> None:
        """Commit what the client read just queued, right here in the reader task, when that
        is a small batch of publishes (see `_commit_inline`) and the writer holds nothing:
        then the commit and its PubAcks (written straight to the socket by the server) need no
        task switch at all (a one-at-a-time publisher's whole round trip is one read).
        Anything else wakes the writer. Same durability: acks only after the COMMIT."""
        self._lone_hooked = False
        batch = self.queue
        if not batch:
            return
        cmds = [cmd for cmd, _ in batch]
        if (self.closed or self._writer_busy or self._stale or self.lock.locked()
                or not _commit_inline(cmds)):  # (_commit_inline: at most INLINE_COMMIT_MAX)
            self.queue_ready.set()
            return
        self.queue = []
        try:
            results = self._apply_work(cmds)
        except Exception as exc:  # rolled back: the writer rebuilds the cached state first
            self.log.error("stream.apply_failed", error=repr(exc), commands=len(cmds))
            self._stale = True
            self.queue_ready.set()
            results = [store_failed(f"store failed: {exc}") for _ in cmds]
            self._send_acks(batch, results)
            return
        self.config = self.sm.config
        try:
            self._send_acks(batch, results)  # first: the publisher waits for it
        finally:
            self.notify()  # consumers run later anyway (this task goes on)
        if self._wal_sizing is not None and not self._wal_sizing_due:
            self._wal_sizing_due = True
            self.queue_ready.set()

    async def run_writer(self) -> None:
        """Drain the publish queue in batches: one commit (fsync) per batch, then the acks."""
        while not self.closed:
            await self.queue_ready.wait()
            self.queue_ready = trio.Event()
            if self._stale:
                try:
                    await self.call(self._reload)
                except StreamClosed:
                    return
                self._stale = False
            if self._wal_sizing_due and self._wal_sizing is not None:
                sizing, self._wal_sizing = self._wal_sizing, None
                try:
                    await self.call(sizing)
                except StreamClosed:
                    return
                except Exception as exc:  # noqa: BLE001 - only an optimisation: log and go on
                    self.log.warning("stream.wal_sizing_failed", error=repr(exc))
            while self.queue and not self.closed:
                batch, self.queue = self.queue[:WRITE_BATCH_MAX], self.queue[WRITE_BATCH_MAX:]
                self._writer_busy = True
                try:
                    results = await self.apply_batch([cmd for cmd, _ in batch])
                except StreamClosed:
                    return
                finally:
                    self._writer_busy = False
                self._send_acks(batch, results)

    def _send_acks(self, batch: list[tuple[Publish, str | None]], results: list[Any]) -> None:
        """The PubAcks of one commit, handed to the server in one go (one write per client)."""
        if self.config.no_ack:
            return
        prefix = self._ack_prefix
        if prefix is None or self._ack_prefix_name != self.name:
            prefix = self._ack_prefix = b'{"stream":' + json.dumps(self.name).encode() + b',"seq":'
            self._ack_prefix_name = self.name
        acks: list[tuple[str, bytes]] = []
        for (_, reply), result in zip(batch, results):
            if not reply or isinstance(result, AlreadyApplied):
                continue
            if type(result) is PubAck and not result.duplicate:  # the common case, formatted fast
                acks.append((reply, b"%s%d}" % (prefix, result.seq)))
                continue
            if isinstance(result, ApiError):
                body = puback_error_json(self.name, result)
            else:
                body = result.to_json()
            acks.append((reply, _json(body)))
        if acks:
            self.publish_many(acks)

    # -- lifecycle ------------------------------------------------------------------------------
    async def close(self) -> None:
        """Stop writing and close the store (waits for an in-flight batch)."""
        async with self.lock:
            self.closed = True
            self.queue_ready.set()
            self.notify()
            if self.in_thread:
                await trio.to_thread.run_sync(self.store.close)
            else:
                self.store.close()
        async with self.read_lock:
            if self._reader is not None:
                await trio.to_thread.run_sync(self._reader.close)
                self._reader = None


class StreamClosed(Exception):
    """The stream was deleted or the server is stopping."""


def _never_over(rt: StreamRuntime) -> bool:
    return False


def _commit_inline(cmds: list[Command]) -> bool:
    """Is this a small batch of publishes with bounded work (no rollup purge)?"""
    if len(cmds) > INLINE_COMMIT_MAX:
        return False
    for cmd in cmds:
        if type(cmd) is not Publish or (cmd.headers is not None and b"rollup" in cmd.headers.lower()):
            return False
    return True


def _publish_many_hook(publish: PublishHook) -> Callable[[list[tuple[str, bytes]]], None]:
    """Batch form of the publish hook: the server's `publish_internal_many` when `publish` is
    its `publish_internal` (one write per client for a commit's PubAcks), else a loop."""
    many = getattr(getattr(publish, "__self__", None), "publish_internal_many", None)
    if many is not None and getattr(publish, "__name__", "") == "publish_internal":
        return many  # type: ignore[no-any-return]

    def loop(messages: list[tuple[str, bytes]]) -> None:
        for subject, payload in messages:
            publish(subject, None, None, payload)
    return loop


def _json(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


# -- on-disk layout ---------------------------------------------------------------------------
def streams_dir(store_dir: str) -> Path:
    return Path(store_dir) / "jetstream" / "streams"


def open_store(config: StreamConfig, directory: Path) -> MessageStore:
    """Memory streams keep messages in memory; file streams in SQLite next to the config."""
    if config.storage is Storage.MEMORY:
        return MemoryStore()
    directory.mkdir(parents=True, exist_ok=True)
    return SqliteStore(directory / STORE_FILE)


def write_config(directory: Path, config: StreamConfig, created_ns: int) -> None:
    """Atomically (and durably) write stream.json. Blocking: call from a worker thread."""
    directory.mkdir(parents=True, exist_ok=True)
    body = json.dumps({"config": config.to_json(), "created_ns": created_ns}, indent=1).encode()
    tmp = directory / (CONFIG_FILE + ".tmp")
    with open(tmp, "wb") as f:
        f.write(body)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, directory / CONFIG_FILE)
    _fsync_dir(directory)


def read_config(directory: Path) -> tuple[StreamConfig, int]:
    body = json.loads((directory / CONFIG_FILE).read_text())
    return StreamConfig.from_json(body["config"]), int(body["created_ns"])


def remove_stream_dir(directory: Path) -> None:
    """Delete a stream's files (only ever called for a committed STREAM.DELETE)."""
    if directory.exists():
        shutil.rmtree(directory)
        _fsync_dir(directory.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
