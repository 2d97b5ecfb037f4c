"""A server taken out by $JS.API.SERVER.REMOVE finds out, and stops acting as a cluster member.

Why: SERVER.REMOVE is usually sent for a stopped server. Its meta log never receives the change
that removed it, so after a restart it believes the old membership: it counts itself a meta
voter, replays stale assignments and runs replicas of streams that were re-placed elsewhere
(campaigning in groups that no longer include it). Nobody tells it otherwise, because a Raft
leader does not talk to non-members.

How it works (`RemovalWatch`, one per server):
- A server that is not a voter in its own view of the meta group, or has known no meta leader
  for QUIET_S, asks `$JSC.MEMBER` with its node id (every PROBE_S).
- The meta leader answers after a read-index round, from the *committed* membership: `removed`
  only if the server is no voter or learner there and is registered in the meta state (it was
  a member once; a removed identity is never admitted again - meta/service.py `_may_admit`). A
  pending, uncommitted removal never counts, and a fresh joiner is not "removed".
- On `removed` the server writes `<store_dir>/raft/meta-removed.json` (fsynced) and raises
  `ServerRemoved`: the clustered JetStream service stops (its replicas close; their data stays
  on disk, quarantined - nothing is deleted by a local decision) and the server keeps running
  as a plain NATS server. On a restart the marker keeps it that way before anything starts. To
  serve JetStream again it must join under a new identity with an empty store.
`is_removed` is the pure decision; the shell does the I/O.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

import structlog
import trio

from jetstream.cluster_routing import RoutedSub, subscribe_routed
from meta.assignments import META_GROUP
from raft.driver import NotLeader, UnknownGroup
from raft.membership import members

MEMBER_SUBJECT = "$JSC.MEMBER"
MARKER_FILE = "meta-removed.json"
PROBE_S = 1.0
QUIET_S = 3.0
REQUEST_TIMEOUT_S = 1.0
ANSWER_BARRIER_S = 1.0


class ServerRemoved(Exception):
    """This server was removed from the meta group (see the module docstring)."""


def is_removed(node_id: str, committed_members: Collection[str], registered: Collection[str]) -> bool:
    """A server is removed when it is not in the committed meta membership although it was
    registered as a member before."""
    return node_id not in committed_members and node_id in registered


def marker_path(store_dir: Path) -> Path:
    return store_dir / "raft" / MARKER_FILE


def removed_marker(store_dir: Path) -> dict[str, Any] | None:
    """The marker a removed server left (None: not removed)."""
    try:
        return dict(json.loads(marker_path(store_dir).read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError):
        return {"unreadable": True}  # still a marker: never rejoin by accident


def write_marker(store_dir: Path, body: dict[str, Any]) -> None:
    path = marker_path(store_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(body, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class RemovalWatch:
    """Both sides of the check, for one `MetaService` (`svc`)."""

    def __init__(self, svc: Any) -> None:
        self.svc = svc
        self.sub: RoutedSub | None = None
        self.quiet_since: float | None = None
        self.log = structlog.get_logger("meta.removal").bind(node=svc.node_id)

    async def run(self) -> None:
        """Until cancelled, or `ServerRemoved`."""
        while True:  # until cancelled
            self._answer_while_leading()
            if self._should_ask() and await self._ask():
                await trio.to_thread.run_sync(write_marker, self.svc.store_dir, {
                    "node_id": self.svc.node_id, "removed_at_ns": time.time_ns()})
                self.log.warning("meta.server_removed", note="this server was removed from the meta "
                                 "group (SERVER.REMOVE): JetStream stops here; its data stays on disk")
                raise ServerRemoved(self.svc.node_id)
            await trio.sleep(PROBE_S)

    # -- the removed server's side ------------------------------------------------------------
    def _should_ask(self) -> bool:
        try:
            node = self.svc.host.node(META_GROUP)
        except (AttributeError, UnknownGroup):
            return False
        if self.svc.node_id not in node.membership.voters:
            return True
        if node.leader_id is not None:
            self.quiet_since = None
            return False
        now = time.monotonic()
        if self.quiet_since is None:
            self.quiet_since = now
        return now - self.quiet_since >= QUIET_S

    async def _ask(self) -> bool:
        body = json.dumps({"node_id": self.svc.node_id}).encode()
        raw = await self.svc.requester.request(MEMBER_SUBJECT, body, REQUEST_TIMEOUT_S)
        try:
            return bool(raw) and json.loads(raw).get("removed") is True
        except ValueError:
            return False

    # -- the meta leader's side -----------------------------------------------------------------
    def _answer_while_leading(self) -> None:
        if self.svc.leading and self.sub is None:
            self.sub = subscribe_routed(self.svc.server, MEMBER_SUBJECT, self._on_member)
        elif not self.svc.leading and self.sub is not None:
            self.sub.unsubscribe()
            self.sub = None

    def _on_member(self, subject: str, reply: str | None, headers: bytes | None, payload: bytes) -> None:
        try:
            node_id = str(json.loads(bytes(payload))["node_id"])
        except (ValueError, KeyError, TypeError):
            return
        if reply and self.svc.nursery is not None:
            self.svc.nursery.start_soon(self._answer, node_id, reply)

    async def _answer(self, node_id: str, reply: str) -> None:
        with trio.move_on_after(ANSWER_BARRIER_S):
            try:
                await self.svc.host.read_index(META_GROUP)
            except (NotLeader, UnknownGroup):
                return
            node = self.svc.host.node(META_GROUP)
            committed = members(node._membership_at(node.commit_index))  # noqa: SLF001 - committed config
            removed = is_removed(node_id, committed, self.svc.state.servers)
            if removed:
                self.log.info("meta.told_removed", peer=node_id)
            body = {"node_id": node_id, "member": node_id in committed, "removed": removed,
                    "leader": self.svc.server.server_name}
            self.svc.server.publish_internal(reply, None, None, json.dumps(body).encode())
