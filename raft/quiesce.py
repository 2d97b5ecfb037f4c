# pure-core
"""Quiescence: what many idle Raft groups cost should be nothing (a mixin of RaftNode).

With `NodeConfig.quiesce`, at a heartbeat a leader with nothing in flight (every follower
replicating and holding its whole log, all of it committed in its term, no reads, transfer or
config change pending, every follower heard from since the last check-quorum sweep) sends its
followers one last heartbeat marked QUIESCE_CONTEXT and goes quiet: `tick()` does nothing, no heartbeats, no check-quorum. A
follower whose log matches the leader's last index goes quiet on that heartbeat: `tick()` does
nothing, the election timer stops. Any other input wakes a node (a proposal, a read, a
transfer, any message except a duplicate quiesce heartbeat or a leader's matching heartbeat
answer); a woken leader heartbeats at its next tick. Safety does not depend on it (only timers
stop), but liveness does: the driver must watch its peers (raft/driver.py) and call
`wake(leader_lost=True)` on a quiet follower whose leader's server went silent (its lease is
given up, so it campaigns within an election timeout), and `wake()` on a quiet leader when a
member's server went silent (check-quorum runs again) or is heard again (to catch it up); a
leader whose other followers are all caught up may go quiet without the peers the driver
reports silent (`set_peers_down`), so a server outage does not keep every group awake.
"""

from __future__ import annotations

from raft import membership as mship
from raft.config import Role
from raft.progress import ProgressState
from raft.types import Message, MessageType

QUIESCE_CONTEXT = b"raft.quiesce"  # HEARTBEAT context: the leader goes quiet after this one
_M = MessageType


class QuiesceMixin:
    """Part of RaftNode: uses its `_quiesced`, `_peers_down`, timers, log and progress."""

    def wake(self, *, leader_lost: bool = False) -> None:
        """Leave quiescence (a no-op for an active node). `leader_lost`: the driver suspects a
        quiet follower's leader is gone, so the follower gives up the leader's lease (it votes
        for others) and campaigns within an election timeout unless it hears from a leader."""
        if not self._quiesced:
            return
        self._quiesced = False
        if self._role is Role.LEADER:
            self._election_elapsed = 0  # check-quorum counts afresh: everyone must answer again
            self._heartbeat_elapsed = self._cfg.heartbeat_ticks - 1  # heartbeat at the next tick
            for pr in self._progress.values():
                pr.recent_active = False
        elif leader_lost:
            self._election_elapsed = max(self._election_elapsed, self._cfg.election_ticks)

    def set_peers_down(self, peers: frozenset[str]) -> None:
        """The driver's view of which peers' servers are silent. A leader may go quiet without
        them (a quorum of the others holding its whole log); the driver wakes it when one of
        them is heard again, so that it catches up. Nothing else uses this."""
        self._peers_down = peers

    def _keeps_quiet(self, msg: Message) -> bool:
        """A message a quiet node takes without waking: a repeated quiesce heartbeat from its
        leader or its answer to a read, or (leader) a heartbeat answer from a follower that
        holds the whole log."""
        if msg.term != self._term:
            return False
        if self._role is Role.LEADER:
            return (
                msg.type is _M.HEARTBEAT_RESP
                and not msg.reject
                and msg.index >= self._log.last_index()
                and msg.src in self._progress
            )
        if msg.src != self._leader:
            return False
        return msg.type is _M.READ_INDEX_RESP or (
            msg.type is _M.HEARTBEAT and msg.context == QUIESCE_CONTEXT
        )

    def _can_quiesce(self) -> bool:
        """Nothing to send for now: every follower (but those on servers the driver reports
        silent, while the others make a quorum) holds the whole log, all of it committed in this
        term, and answered since the last check-quorum sweep; no read, transfer or membership
        change pending (raft/core.py, quiescence)."""
        if not self._cfg.quiesce or self._reads or self._reads_waiting or self._transferee:
            return False
        last = self._log.last_index()
        if self._log.committed != last or self._log.stable_index != last:
            return False
        if self._pending_config_index > last or self._log.term(last) != self._term:
            return False
        if not mship.is_voter(self._membership, self._cfg.node_id) or self._membership.voters_outgoing:
            return False
        down = self._peers_down
        caught_up = {self._cfg.node_id}
        for node, pr in self._progress.items():
            if node in down:
                continue
            if pr.state is not ProgressState.REPLICATE or pr.match != last or pr.inflight:
                return False
            if not pr.recent_active:
                return False
            caught_up.add(node)
        return mship.has_quorum(self._membership, caught_up)
