# pure-core
"""Leader-side half of RaftNode (a mixin, kept apart so that each module stays readable).

A new leader appends a NOOP so that it can commit entries of its term (Raft only commits by
counting replicas of current-term entries; older entries commit indirectly, which is the Figure-8
rule). Replication is driven per follower by its Progress (raft/progress.py): one probe at a time
while the match point is unknown, then pipelined batches bounded by `max_inflight_msgs`, or a
snapshot in chunks when the needed entries are compacted. Proposals only append; the APPENDs go
out at the next `ready()`/`has_ready()` (`_flush`), so proposals made between two Readies travel
in one batch.

Read-index: a read request records the commit index, and is released once a quorum has answered
a heartbeat carrying its context (or a later one). A new leader first waits until an entry of its
term is committed, since only then does its commit index cover everything committed before it.
"""

from __future__ import annotations

import collections

import attrs

from raft import membership as mship
from raft.chunks import checksum
from raft.config import Role
from raft.progress import SNAPSHOT_WINDOW_CHUNKS, Progress, ProgressState
from raft.quiesce import QUIESCE_CONTEXT
from raft.types import Entry, EntryKind, Message, MessageType, ReadState

_M = MessageType
MAX_READS = 4096  # pending read-index requests kept by a leader; more are dropped


@attrs.define
class ReadRequest:
    index: int
    context: bytes
    requester: str
    acks: set[str] = attrs.field(factory=set)


class LeaderMixin:
    # ---- state ---------------------------------------------------------------------------------
    def _init_leader_state(self) -> None:
        self._progress: dict[str, Progress] = {}
        self._transferee: str | None = None
        self._pending_config_index = 0
        self._reads: collections.deque[ReadRequest] = collections.deque()
        self._reads_waiting: list[ReadRequest] = []  # until an entry of this term commits
        self._bcast_needed = False  # entries to send at the next flush
        self._commit_bcast_needed = False  # the commit index moved: tell everyone

    def _become_leader(self) -> None:
        self._role = Role.LEADER
        self._leader = self._cfg.node_id
        self._init_leader_state()
        self._reset_election_timer()
        self._sync_progress()
        self._pending_config_index = self._log.last_index()
        self._event("raft.became_leader")
        self._append_own(EntryKind.NOOP, b"")

    def _sync_progress(self, *, drop_removed: bool = True) -> None:
        """Track the other members of the current membership. Members removed by a change that
        is not committed yet keep being replicated to (so they learn of their removal), but no
        longer count towards any quorum; they are dropped once the change commits."""
        others = mship.members(self._membership) - {self._cfg.node_id}
        for node in others - self._progress.keys():
            self._progress[node] = Progress(
                match=0, next_index=self._log.last_index() + 1, max_inflight=self._cfg.max_inflight_msgs
            )
        if drop_removed:
            for node in self._progress.keys() - others:
                del self._progress[node]
        if self._transferee is not None and not mship.is_voter(self._membership, self._transferee):
            self._transferee = None

    # ---- inputs --------------------------------------------------------------------------------
    def transfer_leadership(self, to: str) -> None:
        """Hand leadership to `to` (a voter): catch it up, then send TIMEOUT_NOW. Proposals are
        refused meanwhile; the transfer is abandoned after an election timeout."""
        if self._role is not Role.LEADER or to == self._cfg.node_id or to == self._transferee:
            return
        if to not in self._progress or not mship.is_voter(self._membership, to):
            return
        self.wake()  # type: ignore[attr-defined]
        self._transferee = to
        self._election_elapsed = 0
        self._event("raft.transfer_started", to=to)
        if self._progress[to].match == self._log.last_index():
            self._send(_M.TIMEOUT_NOW, to)
        else:
            self._send_append(to)

    def _tick_leader(self) -> None:
        self._heartbeat_elapsed += 1
        self._election_elapsed += 1
        if self._election_elapsed >= self._cfg.election_ticks:
            self._election_elapsed = 0
            if self._cfg.check_quorum and not self._quorum_active():
                self._become_follower(self._term, None)
                return
            for pr in self._progress.values():
                pr.recent_active = False
            if self._transferee is not None:
                self._event("raft.transfer_aborted", to=self._transferee)
                self._transferee = None
        if self._heartbeat_elapsed >= self._cfg.heartbeat_ticks:
            self._heartbeat_elapsed = 0
            if self._can_quiesce():
                self._bcast_heartbeat(QUIESCE_CONTEXT)
                self._quiesced = True
                return
            self._bcast_heartbeat()
            self._resend_snapshots()

    def _quorum_active(self) -> bool:
        active = {n for n, pr in self._progress.items() if pr.recent_active}
        return mship.has_quorum(self._membership, active | {self._cfg.node_id})

    def _step_leader(self, msg: Message) -> None:
        t = msg.type
        if t is _M.READ_INDEX:
            self._leader_read(ReadRequest(index=0, context=msg.context, requester=msg.src))
            return
        pr = self._progress.get(msg.src)
        if pr is None:
            return
        pr.recent_active = True
        if t is _M.APPEND_RESP:
            self._handle_append_resp(msg, pr)
        elif t is _M.HEARTBEAT_RESP:
            self._handle_heartbeat_resp(msg, pr)
        elif t is _M.SNAPSHOT_RESP:
            self._handle_snapshot_resp(msg, pr)

    # ---- appending and committing ----------------------------------------------------------------
    def _append_own(self, kind: EntryKind, data: bytes) -> Entry:
        e = Entry(term=self._term, index=self._log.last_index() + 1, kind=kind, data=data)
        self._log.append([e])
        self._bcast_needed = True
        return e  # commits once persisted here and on a quorum (`advance`, `_maybe_commit`)

    def _maybe_commit(self) -> bool:
        """Commit what a quorum holds durably. The leader counts itself only up to its stable
        (persisted) index: the driver may send APPENDs before the leader's own fsync finished,
        and `advance()` retries the commit once that fsync is done."""
        match = {n: pr.match for n, pr in self._progress.items()}
        match[self._cfg.node_id] = self._log.stable_index
        index = mship.committed_index(self._membership, match)
        if index <= self._log.committed or self._log.term(index) != self._term:
            return False  # only current-term entries commit by counting replicas
        self._log.commit_to(index)
        self._commit_bcast_needed = True
        self._on_commit_advanced()
        return True

    def _on_commit_advanced(self) -> None:
        if self._reads_waiting:
            waiting, self._reads_waiting = self._reads_waiting, []
            for req in waiting:
                self._leader_read(req)
        if self._log.committed < self._pending_config_index:
            return
        self._sync_progress(drop_removed=True)
        if not mship.is_voter(self._membership, self._cfg.node_id):
            self._flush()  # tell the others about the commit before leaving
            self._hand_over()
            self._become_follower(self._term, None)

    def _hand_over(self) -> None:
        """A removed leader leaves: let the most up-to-date voter campaign at once rather than
        make the group wait an election timeout (it may still lose, which is safe)."""
        voters = [n for n in sorted(self._progress) if mship.is_voter(self._membership, n)]
        if voters:
            best = max(voters, key=lambda n: self._progress[n].match)
            if self._progress[best].match == self._log.last_index():
                self._send(_M.TIMEOUT_NOW, best)

    def _flush(self) -> None:
        if self._role is not Role.LEADER:
            return
        if not (self._bcast_needed or self._commit_bcast_needed):
            return
        announce = self._commit_bcast_needed
        self._bcast_needed = self._commit_bcast_needed = False
        next_new = self._log.last_index() + 1
        for node in sorted(self._progress):
            pr = self._progress[node]
            sent_any = False
            for _ in range(self._cfg.max_inflight_msgs):
                allow_empty = announce and not sent_any
                if pr.is_paused() or (not allow_empty and pr.next_index == next_new):
                    break  # `_send_append` would send nothing: paused, or no entries to send
                if not self._send_append(node, allow_empty=allow_empty):
                    break
                sent_any = True

    # ---- sending ---------------------------------------------------------------------------------
    def _send_append(self, to: str, allow_empty: bool = True) -> bool:
        """Send the next APPEND (or snapshot chunks) to `to`; False if nothing was sent."""
        pr = self._progress[to]
        if pr.is_paused():
            return False
        prev = pr.next_index - 1
        prev_term = self._log.term(prev)
        if prev_term is None:
            self._start_snapshot(to, pr)
            return True
        last = self._log.last_index()
        hi = min(last + 1, pr.next_index + self._cfg.max_entries_per_msg)
        entries = self._log.slice(pr.next_index, hi, self._cfg.max_bytes_per_msg)
        if not entries and not allow_empty:
            return False
        self._send(
            _M.APPEND,
            to,
            index=prev,
            log_term=prev_term,
            entries=tuple(entries),
            commit=self._log.committed,
        )
        pr.sent_append(prev + len(entries), len(entries))
        return True

    def _start_snapshot(self, to: str, pr: Progress) -> None:
        pr.become_snapshot(self._log.snap_index)
        self._event("raft.snapshot_sending", to=to, index=self._log.snap_index)
        self._send_snapshot_chunks(to, pr)

    def _send_snapshot_chunks(self, to: str, pr: Progress) -> None:
        snap = self._log.snapshot
        if pr.snap_index != snap.meta.index:  # compacted again meanwhile: send the newer one
            pr.become_snapshot(snap.meta.index)
        size = self._cfg.snapshot_chunk_bytes
        window = SNAPSHOT_WINDOW_CHUNKS * size
        data = snap.data
        while not pr.snap_last_sent and pr.snap_sent_bytes - pr.snap_acked_bytes < window:
            offset = pr.snap_sent_bytes
            chunk = data[offset : offset + size]
            last = offset + len(chunk) >= len(data)
            self._send(
                _M.SNAPSHOT,
                to,
                snapshot=attrs.evolve(snap, data=chunk),
                chunk_offset=offset,
                chunk_last=last,
                chunk_checksum=checksum(data) if last else 0,
                commit=self._log.committed,
            )
            pr.snap_sent_bytes = offset + len(chunk)
            pr.snap_last_sent = last

    def _bcast_heartbeat(self, quiesce_context: bytes = b"") -> None:
        ctx = self._reads[-1].context if self._reads else quiesce_context
        for node in sorted(self._progress):
            pr = self._progress[node]
            commit = min(pr.match, self._log.committed)
            last = self._log.last_index()  # a repairing follower catches up to at least here
            self._send(_M.HEARTBEAT, node, commit=commit, context=ctx, index=last)

    def _resend_snapshots(self) -> None:
        for node in sorted(self._progress):
            pr = self._progress[node]
            if pr.state is not ProgressState.SNAPSHOT:
                continue
            if pr.snap_acked_bytes == pr.snap_acked_at_heartbeat:
                pr.rewind_snapshot(pr.snap_acked_bytes)  # no progress: resend what may be lost
                self._send_snapshot_chunks(node, pr)
            pr.snap_acked_at_heartbeat = pr.snap_acked_bytes

    # ---- responses ---------------------------------------------------------------------------------
    def _handle_append_resp(self, msg: Message, pr: Progress) -> None:
        if msg.reject:
            self._handle_append_reject(msg, pr)
            return
        was_paused = pr.is_paused()
        if not pr.maybe_update(msg.index):
            return
        if pr.state is ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state is ProgressState.SNAPSHOT and pr.match >= pr.snap_index:
            pr.become_probe()
            pr.become_replicate()
        if not self._maybe_commit() and was_paused:
            self._send_append(msg.src)  # carries our commit index to a follower that missed it
        self._bcast_needed = True  # this follower may take more now
        if self._role is not Role.LEADER:
            return
        if msg.src == self._transferee and pr.match == self._log.last_index():
            self._send(_M.TIMEOUT_NOW, msg.src)

    def _handle_append_reject(self, msg: Message, pr: Progress) -> None:
        hint_next = msg.reject_hint + 1
        if msg.log_term > 0:
            hint_next = self._log.find_conflict_by_term(msg.reject_hint, msg.log_term)[0] + 1
        if pr.maybe_decrease(msg.index, hint_next):
            self._send_append(msg.src)

    def _handle_heartbeat_resp(self, msg: Message, pr: Progress) -> None:
        if msg.reject and msg.index < pr.match and pr.state is not ProgressState.SNAPSHOT:
            pr.regressed(msg.index)
        pr.probe_sent = False
        if pr.state is ProgressState.REPLICATE and len(pr.inflight) >= pr.max_inflight:
            pr.free_one_inflight()
        if pr.match < self._log.last_index() and pr.state is not ProgressState.SNAPSHOT:
            self._send_append(msg.src)
        if msg.context:
            self._ack_read(msg.src, msg.context)

    def _handle_snapshot_resp(self, msg: Message, pr: Progress) -> None:
        if pr.state is not ProgressState.SNAPSHOT or msg.index != pr.snap_index:
            return
        if msg.reject or msg.chunk_offset < pr.snap_acked_bytes:
            pr.rewind_snapshot(0 if msg.reject else msg.chunk_offset)  # follower lost chunks
        else:
            pr.snap_acked_bytes = msg.chunk_offset
        self._send_snapshot_chunks(msg.src, pr)

    # ---- read-index ----------------------------------------------------------------------------------
    def _leader_read(self, req: ReadRequest) -> None:
        if self._log.term(self._log.committed) != self._term:
            if len(self._reads_waiting) < MAX_READS:
                self._reads_waiting.append(req)
            return
        req.index = self._log.committed
        req.acks = {self._cfg.node_id}
        if mship.has_quorum(self._membership, req.acks):
            self._answer_read(req)
            return
        if len(self._reads) >= MAX_READS:
            return
        self._reads.append(req)
        self._bcast_heartbeat()

    def _ack_read(self, node: str, context: bytes) -> None:
        pos = next((i for i, r in enumerate(self._reads) if r.context == context), None)
        if pos is None:
            return
        for i in range(pos + 1):
            self._reads[i].acks.add(node)
        if not mship.has_quorum(self._membership, self._reads[pos].acks):
            return
        for _ in range(pos + 1):
            self._answer_read(self._reads.popleft())

    def _answer_read(self, req: ReadRequest) -> None:
        if req.requester == self._cfg.node_id:
            self._read_states.append(ReadState(index=req.index, context=req.context))
        else:
            self._send(_M.READ_INDEX_RESP, req.requester, index=req.index, context=req.context)
