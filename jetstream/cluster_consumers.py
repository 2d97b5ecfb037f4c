"""Durable consumers of a clustered stream: the meta group says which exist, the stream runs them.

How it works: a `ClusteredJetStream` is given a `consumer_registry` by the meta layer
(meta/consumers.py). Creating, updating or deleting a durable consumer first commits the
assignment in the meta group (`registry.assign` / `unassign` return once the meta leader
committed it); only then does the stream leader change the consumer locally. The consumer's
progress keeps travelling through the stream's own log (`SaveConsumer`). This server's own
meta state may apply the command a little later (followers learn commits with the leader's
next message), so the name stays in `pending` with the command's index until it has.

`reconcile(rt)` (after every meta change, and when this server starts leading a stream) makes
the led stream run exactly the assigned durables: an assigned one that is not running starts
from the state replicated in the stream's store when that state belongs to the same assignment
(same creation time), else fresh from its deliver policy; a running durable the meta state no
longer assigns was deleted by a committed meta command and is dropped (its state too). Every
durable that runs and is not pending was assigned in this server's meta state when it started,
and the meta state only moves forward, so "not assigned now" always means "deleted". Pending
names are left alone.

Without a registry (no meta layer), durables live in the stream's log only, as before.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

import attrs
import structlog
import trio

from jetstream.consumer_config import ConsumerConfig
from jetstream.errors import ApiError, JsApiException
from jetstream.runtime import StreamClosed

UNAVAILABLE = ApiError(code=503, err_code=10008, description="JetStream system temporarily unavailable")


IN_FLIGHT = 1 << 62  # a pending change whose meta request has not come back yet


@attrs.frozen
class Committed:
    index: int  # the meta log index of the command
    created_ns: int = 0  # the assignment's creation time (kept by an update)


class ConsumerRegistry(Protocol):
    def assigned(self, stream: str) -> dict[str, tuple[dict[str, Any], int]]: ...

    def applied_index(self) -> int: ...

    async def assign(self, stream: str, name: str, config: dict[str, Any],
                     created_ns: int) -> Committed | ApiError: ...

    async def unassign(self, stream: str, name: str) -> Committed | ApiError: ...


class AssignedConsumers:
    def __init__(self, js: Any) -> None:
        self.js = js
        self.registry: ConsumerRegistry | None = None
        # (stream, consumer) -> meta index this server's meta state must apply before
        # reconciliation may touch it (IN_FLIGHT while the request runs)
        self.pending: dict[tuple[str, str], int] = {}
        self.lock = trio.Lock()
        self.log = structlog.get_logger("jetstream.cluster")

    def _begin(self, key: tuple[str, str]) -> None:
        self.pending[key] = IN_FLIGHT

    def _end(self, key: tuple[str, str], committed: Committed | ApiError | None) -> None:
        assert self.registry is not None
        if not isinstance(committed, Committed) or committed.index <= self.registry.applied_index():
            if self.pending.get(key) == IN_FLIGHT:
                del self.pending[key]
        else:
            self.pending[key] = committed.index  # cleared by the reconcile after it is applied

    def _clear_applied(self) -> None:
        assert self.registry is not None
        applied = self.registry.applied_index()
        for key, index in list(self.pending.items()):
            if index <= applied:
                del self.pending[key]

    # -- API paths (the stream leader) ----------------------------------------------------------
    async def create(self, rt: Any, name: str, config: ConsumerConfig) -> Any:
        assert self.registry is not None
        js, key = self.js, (rt.name, name)
        self._begin(key)
        committed: Committed | ApiError | None = None
        try:
            committed = await self.registry.assign(rt.name, name, config.to_json(), js.clock_ns())
            if isinstance(committed, ApiError):
                raise JsApiException(committed)
            if not rt.leading or rt.closed:
                raise JsApiException(UNAVAILABLE)  # no longer leading: the next leader starts it
            if name in rt.consumers:
                return rt.consumers[name]  # (only one request at a time creates; never two copies)
            consumer = js._new_consumer(rt, name, config, committed.created_ns)
            await rt.call(consumer.start_position, rt.store)
            rt.consumers[name] = consumer
            await js._save_consumer_now(rt, consumer)
            js._start_consumer(consumer)
            self.log.info("jetstream.consumer_created", stream=rt.name, consumer=name, meta=True)
            return consumer
        finally:
            self._end(key, committed)

    async def update_config(self, rt: Any, consumer: Any, config: ConsumerConfig) -> None:
        """Commit a durable's changed config in the meta group (raises JsApiException)."""
        assert self.registry is not None
        committed = await self.registry.assign(rt.name, consumer.name, config.to_json(), consumer.created_ns)
        if isinstance(committed, ApiError):
            raise JsApiException(committed)

    async def delete(self, rt: Any, consumer: Any) -> None:
        assert self.registry is not None
        key = (rt.name, consumer.name)
        self._begin(key)
        committed: Committed | ApiError | None = None
        try:
            committed = await self.registry.unassign(rt.name, consumer.name)
            if isinstance(committed, ApiError):
                raise JsApiException(committed)
            await self.js._drop_consumer(rt, consumer)
        finally:
            self._end(key, committed)

    # -- reconciliation -------------------------------------------------------------------------
    def saved_to_start(self, rt: Any, saved: list[tuple[str, bytes | None]]) -> list[tuple[str, bytes | None]]:
        """Of the consumer states saved in the stream's store, those of assigned durables (the
        assignment's config replaces the saved one); everything, without a registry."""
        if self.registry is None:
            return saved
        assigned = self.registry.assigned(rt.name)
        out = []
        for name, blob in saved:
            body = _body(blob)
            if name not in assigned or body is None or int(body.get("created_ns", -1)) != assigned[name][1]:
                continue
            body["config"] = assigned[name][0]
            out.append((name, json.dumps(body).encode()))
        return out

    async def reconcile_all(self, streams: list[Any]) -> None:
        for rt in streams:
            if rt.leading:
                await self.reconcile(rt)

    async def reconcile(self, rt: Any) -> None:
        if self.registry is None:
            return
        try:
            async with self.lock:
                await self._reconcile(rt)
        except (StreamClosed, JsApiException):
            return
        except Exception as exc:  # noqa: BLE001 - one stream must not stop the others
            self.log.error("jetstream.consumer_reconcile_failed", stream=rt.name, error=repr(exc), exc_info=True)

    async def _reconcile(self, rt: Any) -> None:
        assert self.registry is not None
        self._clear_applied()
        if not rt.leading or rt.closed:
            return
        assigned = self.registry.assigned(rt.name)
        for name, consumer in list(rt.consumers.items()):
            if consumer.durable and name not in assigned and (rt.name, name) not in self.pending:
                await self.js._drop_consumer(rt, consumer)  # deleted by a committed meta command
        missing = [n for n in sorted(assigned) if n not in rt.consumers and (rt.name, n) not in self.pending]
        if not missing:
            return
        saved = dict(await self.js._read_consumers(rt))
        for name in missing:
            config_json, created_ns = assigned[name]
            await self._start(rt, name, config_json, created_ns, saved.get(name))

    async def _start(self, rt: Any, name: str, config_json: dict[str, Any], created_ns: int,
                     blob: bytes | None) -> None:
        js = self.js
        try:
            config = ConsumerConfig.from_json(config_json)
        except Exception as exc:  # noqa: BLE001 - a config this version cannot read: skip it
            self.log.error("jetstream.consumer_load_failed", stream=rt.name, consumer=name, error=repr(exc))
            return
        consumer = js._new_consumer(rt, name, config, created_ns)
        body = _body(blob)
        fresh = body is None or int(body.get("created_ns", -1)) != created_ns
        if fresh:
            await rt.call(consumer.start_position, rt.store)
        else:
            consumer.state.restore(body["state"], js.clock_ns())
            consumer.paused_until_ns = int(body.get("paused_until_ns", 0))
        if not rt.leading or rt.closed or name in rt.consumers or (rt.name, name) in self.pending:
            return
        rt.consumers[name] = consumer
        if fresh:
            await js._save_consumer_now(rt, consumer)
        js._start_consumer(consumer)
        self.log.info("jetstream.consumer_assigned", stream=rt.name, consumer=name, fresh=fresh)


def _body(blob: bytes | None) -> dict[str, Any] | None:
    try:
        body = json.loads(blob or b"")
    except ValueError:
        return None
    return body if isinstance(body, dict) and "state" in body else None
