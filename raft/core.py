# pure-core
"""The Raft state machine of one node in one group, in the style of etcd's raft.

Inputs are `tick()`, `step(message)`, `propose(data)` and a few requests (membership change,
leadership transfer, read-index, compaction). Nothing here does I/O: every input only changes
memory, and the driver collects what must happen next with `ready()`: hard state, entries and a
received snapshot to persist (fsync when `must_sync`), then messages to send, then committed
entries to apply; then it calls `advance(ready)`. Because the driver persists before it sends,
a vote or an append acknowledgement never leaves before the state it depends on is durable. The
one exception: a leader's messages may leave while its own entries are still being written
(replication in parallel with the leader's fsync), because the leader counts itself toward the
commit quorum only up to its stable index, which moves in `advance()` after persistence.

Handlers are dispatched on (role, message type). Elections use pre-vote (a node first asks
whether it could win, without raising its term) and check-quorum (a leader that hears from no
quorum within an election timeout steps down); a node that heard from a leader within the
election timeout ignores vote requests (except for a leadership transfer), which is what lets
pre-vote and check-quorum work together. Leader-side replication lives in raft/replication.py,
follower-side snapshot chunk assembly in raft/chunks.py, membership math in raft/membership.py.

A node built with `repair_needed=True` (its disk was wiped or failed a checksum) never grants
a vote and never campaigns until it has learned the current term from enough voters and caught
up with a leader (raft/repair.py); then it clears the flag and emits "raft.repair_done".

Quiescence (opt-in, `NodeConfig.quiesce`): an idle group stops heartbeating and its timers
stop; the driver watches peer liveness instead (raft/quiesce.py).

A follower only commits (from a heartbeat) up to the point where its log is known to match the
current leader's (`_leader_match`, learned from accepted APPENDs); a heartbeat promising more
is answered with a reject, so that a leader re-probes a follower that restarted or lost its disk.

Message fields by type (unlisted fields keep their defaults):
- PRE_VOTE / VOTE: term (PRE_VOTE: the term it would campaign in, nobody adopts it), index and
  log_term of the candidate's last entry; context=TRANSFER_CONTEXT when forced by TIMEOUT_NOW.
  *_RESP: reject; a granted PRE_VOTE_RESP carries the requested term.
  With context=TERM_PROBE_CONTEXT (raft/repair.py) they are term probes: the answer is always
  a reject carrying the responder's term, and nobody's state changes.
- APPEND: index/log_term of the entry before `entries`, commit. APPEND_RESP: index = last index
  known to match; on reject, index = the refused prev index, reject_hint/log_term = where the
  follower's log may match (fast backtracking).
- HEARTBEAT: commit = min(follower's match, leader commit), index = leader's last index,
  context = newest pending read-index request. HEARTBEAT_RESP: context echoed, index = how far
  the follower knows it matches; reject = it cannot take that commit (restarted or wiped).
- SNAPSHOT: snapshot.meta and one chunk in snapshot.data, chunk_offset, chunk_last, commit;
  chunk_checksum (crc32 of the whole data) on the last chunk. SNAPSHOT_RESP: index = snapshot
  index, chunk_offset = next offset expected, reject = checksum failed (restart from 0). An
  installed snapshot is acknowledged with APPEND_RESP(index = snapshot index).
- TIMEOUT_NOW: campaign now. READ_INDEX (follower to leader) / READ_INDEX_RESP: context, index.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from raft import membership as mship
from raft.chunks import ChunkAssembler
from raft.config import NodeConfig, ProposeResult, RefuseReason, Role
from raft.log import RaftLog
from raft.repair import TERM_PROBE_CONTEXT, Repair
from raft.quiesce import QUIESCE_CONTEXT, QuiesceMixin
from raft.replication import LeaderMixin, ReadRequest
from raft.types import (
    ConfigChange,
    Entry,
    EntryKind,
    Event,
    HardState,
    Membership,
    Message,
    MessageType,
    Ready,
    ReadState,
    Snapshot,
    SnapshotMeta,
)

__all__ = ["NodeConfig", "ProposeResult", "RaftNode", "RefuseReason", "Role"]

TRANSFER_CONTEXT = b"raft.transfer"  # VOTE context of an election forced by TIMEOUT_NOW
MAX_APPLY_ENTRIES = 4096  # committed entries handed out per Ready
MAX_PENDING_READS = 4096

_M = MessageType


class RaftNode(LeaderMixin, QuiesceMixin):
    def __init__(
        self,
        config: NodeConfig,
        rng: random.Random,
        *,
        hard_state: HardState,
        snapshot: Snapshot | None,
        entries: Sequence[Entry],
        membership: Membership,
        applied: int = 0,
        repair_needed: bool = False,
        membership_index: int | None = None,
    ) -> None:
        """Restart state comes from storage: hard state, the latest snapshot, the entries after
        it. `membership` is the config of a brand-new group; the latest CONFIG entry in the log
        (even uncommitted), else the snapshot's membership, takes precedence. `applied` is how
        far the state machine already is (at least the snapshot index). `membership_index`,
        when the caller knows it, is the log index `membership` holds from (0 for a group's
        first config); a repairing node uses it to tell whether a committed config named by a
        term-probe answer is newer than the one it was given (raft/repair.py)."""
        self._cfg = config
        self._rng = rng
        # The state machine only applies committed entries, so `applied` is a commit point too
        # (the hard state's commit is not fsynced on its own and may lag behind it).
        commit = max(hard_state.commit, applied)
        self._log = RaftLog.restore(snapshot, entries, commit)
        self._log.applied = max(self._log.snap_index, min(applied, self._log.committed))
        self._term = hard_state.term
        self._vote = hard_state.vote
        self._persisted = hard_state
        self._initial_membership = membership
        self._initial_membership_index = membership_index
        self._membership = self._membership_at(self._log.last_index())
        self._role = self._follower_role()
        self._leader: str | None = None
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._randomized_timeout = 0
        self._quiesced = False
        self._peers_down: frozenset[str] = frozenset()  # the driver's view, for quiescence only
        self._votes: dict[str, bool] = {}
        self._msgs: list[Message] = []
        self._events: list[Event] = []
        self._read_states: list[ReadState] = []
        self._pending_snapshot: Snapshot | None = None
        self._assembler = ChunkAssembler()
        self._leader_match = self._log.committed  # our log matches the leader's up to here
        self._repair = Repair(active=repair_needed)
        self._init_leader_state()
        self._reset_election_timer()
        if repair_needed:
            self._event("raft.repair_started")
            self._send_term_probes()

    # ---- introspection ---------------------------------------------------------------------
    node_id = property(lambda self: self._cfg.node_id)
    group = property(lambda self: self._cfg.group)
    role = property(lambda self: self._role)
    term = property(lambda self: self._term)
    vote = property(lambda self: self._vote)
    leader_id = property(lambda self: self._leader)
    commit_index = property(lambda self: self._log.committed)
    applied_index = property(lambda self: self._log.applied)
    last_index = property(lambda self: self._log.last_index())
    last_term = property(lambda self: self._log.last_term())
    first_index = property(lambda self: self._log.first_index())
    snapshot_meta = property(lambda self: self._log.snapshot.meta)
    membership = property(lambda self: self._membership)
    repair_needed = property(lambda self: self._repair.active)
    lead_transferee = property(lambda self: self._transferee)
    quiesced = property(lambda self: self._quiesced)

    def entries(self, lo: int, hi: int) -> list[Entry]:
        """Entries in [lo, hi) still held in memory (lo > snapshot index)."""
        return self._log.slice(lo, hi)

    def hard_state(self) -> HardState:
        return HardState(term=self._term, vote=self._vote, commit=self._log.committed)

    # ---- inputs ------------------------------------------------------------------------------
    def tick(self) -> None:
        if self._quiesced:
            return
        if self._repair.probe_due(self._cfg.election_ticks):
            self._send_term_probes()
        if self._role is Role.LEADER:
            self._tick_leader()
            return
        self._election_elapsed += 1
        if self._promotable() and self._election_elapsed >= self._randomized_timeout:
            self._election_elapsed = 0
            self._campaign(pre=self._cfg.pre_vote, transfer=False)

    def step(self, msg: Message) -> None:
        assert msg.group == self._cfg.group and msg.dst == self._cfg.node_id, msg
        if self._quiesced and not self._keeps_quiet(msg):
            self.wake()
        if msg.context == TERM_PROBE_CONTEXT and msg.type in (_M.PRE_VOTE, _M.PRE_VOTE_RESP):
            self._handle_term_probe(msg)
            return
        if self._repair.wants_probe(msg.src):
            self._send(_M.PRE_VOTE, msg.src, context=TERM_PROBE_CONTEXT)  # it is back in reach
        if msg.term > self._term and not self._accept_higher_term(msg):
            return
        if msg.term < self._term:
            self._answer_stale(msg)
            return
        if msg.type in (_M.PRE_VOTE, _M.VOTE):
            self._handle_vote_request(msg)
        elif self._role is Role.LEADER:
            self._step_leader(msg)
        elif self._role in (Role.CANDIDATE, Role.PRE_CANDIDATE):
            self._step_candidate(msg)
        else:
            self._step_follower(msg)

    def propose(self, data: bytes) -> ProposeResult:
        if self._role is Role.LEADER:
            self.wake()
        refused = self._refuse_proposal()
        if refused is not None:
            return refused
        e = self._append_own(EntryKind.NORMAL, data)
        return ProposeResult(ok=True, index=e.index, term=e.term, leader_hint=self._cfg.node_id)

    def propose_config_change(self, change: ConfigChange) -> ProposeResult:
        """Single-server change; refused while the previous change is uncommitted or before
        this leader has committed an entry of its own term."""
        if self._role is Role.LEADER:
            self.wake()
        refused = self._refuse_proposal()
        if refused is not None:
            return refused
        if self._pending_config_index > self._log.committed:
            return self._refusal(RefuseReason.CONFIG_PENDING)
        if self._log.term(self._log.committed) != self._term:
            return self._refusal(RefuseReason.NOT_READY)
        new = mship.apply_change(self._membership, change)
        if new is None:
            return self._refusal(RefuseReason.INVALID)
        e = self._append_own(EntryKind.CONFIG, mship.encode_config(change, new))
        self._pending_config_index = e.index
        self._set_membership(new, e.index)
        return ProposeResult(ok=True, index=e.index, term=e.term, leader_hint=self._cfg.node_id)

    def read_index(self, context: bytes) -> None:
        """Ask for a linearizable read point; a ReadState(index, context) appears in a later
        Ready once leadership is confirmed. Dropped (the caller times out) without a leader."""
        if self._role is Role.LEADER:
            self.wake()
            self._leader_read(ReadRequest(index=0, context=context, requester=self._cfg.node_id))
        elif self._leader is not None:
            self._send(_M.READ_INDEX, self._leader, context=context)

    def compact(self, index: int, data: bytes) -> None:
        """The application persisted a snapshot of its state at `index` (<= applied): drop the
        log up to there and keep the snapshot to send to lagging followers. No Ready results:
        the caller stores the snapshot and truncates its storage itself."""
        if index <= self._log.snap_index:
            return
        term = self._log.term(index)
        assert term is not None and index <= self._log.applied, (index, self._log.applied)
        meta = SnapshotMeta(index=index, term=term, membership=self._membership_at(index))
        self._log.compact(Snapshot(meta=meta, data=data))

    # ---- Ready -------------------------------------------------------------------------------
    def has_ready(self) -> bool:
        self._flush()
        p = self._persisted
        return bool(
            (self._term, self._vote, self._log.committed) != (p.term, p.vote, p.commit)
            or self._log.stable_index < self._log.last_index()
            or self._pending_snapshot is not None
            or self._msgs
            or self._log.committed > self._log.applied
            or self._read_states
            or self._events
        )

    def ready(self) -> Ready:
        """What the driver must do now, in order: persist, send, apply; then `advance`."""
        self._flush()
        hs = self.hard_state()
        changed = hs != self._persisted
        entries = tuple(self._log.unstable_entries())
        vote_changed = (hs.term, hs.vote) != (self._persisted.term, self._persisted.vote)
        return Ready(
            group=self._cfg.group,
            hard_state=hs if changed else None,
            entries=entries,
            snapshot=self._pending_snapshot,
            messages=tuple(self._msgs),
            committed_entries=tuple(self._log.committed_unapplied(MAX_APPLY_ENTRIES)),
            must_sync=bool(entries or self._pending_snapshot or vote_changed),
            read_states=tuple(self._read_states),
            events=tuple(self._events),
        )

    def advance(self, ready: Ready) -> None:
        """The driver did everything in `ready`."""
        if ready.hard_state is not None:
            self._persisted = ready.hard_state
        if ready.entries:
            last = ready.entries[-1]
            self._log.stable_to(last.index, last.term)
        if ready.snapshot is not None:
            if self._pending_snapshot == ready.snapshot:
                self._pending_snapshot = None
            self._log.applied_to(ready.snapshot.meta.index)
        if ready.committed_entries:
            self._log.applied_to(ready.committed_entries[-1].index)
        del self._msgs[: len(ready.messages)]
        del self._read_states[: len(ready.read_states)]
        del self._events[: len(ready.events)]
        if ready.entries and self._role is Role.LEADER:
            self._maybe_commit()  # our own entries are durable now: they count toward a quorum

    # ---- roles -------------------------------------------------------------------------------
    def _follower_role(self) -> Role:
        return Role.FOLLOWER if mship.is_voter(self._membership, self._cfg.node_id) else Role.LEARNER

    def _promotable(self) -> bool:
        """May campaign: a voter in the latest config, or in the latest committed one (a node
        whose removal is not committed must still be able to lead, or a group where it holds
        the longest log could never elect anyone)."""
        if self._repair.active:
            return False
        me = self._cfg.node_id
        if mship.is_voter(self._membership, me):
            return True
        return mship.is_voter(self._membership_at(self._log.committed), me)

    def _reset_election_timer(self) -> None:
        self._quiesced = False  # every role change passes here
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        n = self._cfg.election_ticks
        self._randomized_timeout = self._rng.randrange(n, 2 * n)

    def _become_follower(self, term: int, leader: str | None) -> None:
        was_leader = self._role is Role.LEADER
        if term != self._term:
            self._term = term
            self._vote = None
        self._role = self._follower_role()
        self._leader = leader
        self._leader_match = self._log.committed
        self._votes.clear()
        self._init_leader_state()
        self._reset_election_timer()
        if was_leader:
            self._event("raft.stepped_down")
        self._event("raft.became_follower")

    def _campaign(self, *, pre: bool, transfer: bool) -> None:
        if pre:
            self._role = Role.PRE_CANDIDATE
            vote_term, kind = self._term + 1, _M.PRE_VOTE
        else:
            self._term += 1
            self._vote = self._cfg.node_id
            self._role = Role.CANDIDATE
            vote_term, kind = self._term, _M.VOTE
        self._leader = None
        self._votes = {}
        self._reset_election_timer()
        self._event("raft.became_candidate", pre_vote=pre)
        ctx = TRANSFER_CONTEXT if transfer else b""
        for voter in sorted(self._voters() - {self._cfg.node_id}):
            self._send(
                kind,
                voter,
                term=vote_term,
                index=self._log.last_index(),
                log_term=self._log.last_term(),
                context=ctx,
            )
        self._record_vote(self._cfg.node_id, True)

    def _record_vote(self, node: str, granted: bool) -> None:
        if not mship.is_voter(self._membership, node):
            return
        self._votes.setdefault(node, granted)
        result = mship.vote_result(self._membership, self._votes)
        if result is mship.VoteResult.WON:
            if self._role is Role.PRE_CANDIDATE:
                self._campaign(pre=False, transfer=False)
            else:
                self._become_leader()
        elif result is mship.VoteResult.LOST:
            self._become_follower(self._term, None)

    def _voters(self) -> frozenset[str]:
        return self._membership.voters | self._membership.voters_outgoing

    # ---- message handling common to all roles ------------------------------------------------
    def _accept_higher_term(self, msg: Message) -> bool:
        """A message from a higher term: maybe adopt the term. False means drop the message."""
        if msg.type in (_M.PRE_VOTE, _M.VOTE):
            forced = msg.context == TRANSFER_CONTEXT
            in_lease = (
                self._cfg.check_quorum
                and self._leader is not None
                and self._election_elapsed < self._cfg.election_ticks
            )
            if in_lease and not forced:
                return False
        if msg.type is _M.PRE_VOTE or (msg.type is _M.PRE_VOTE_RESP and not msg.reject):
            return True  # a pre-vote never changes anyone's term
        leader = msg.src if msg.type in (_M.APPEND, _M.HEARTBEAT, _M.SNAPSHOT) else None
        self._become_follower(msg.term, leader)
        return True

    def _answer_stale(self, msg: Message) -> None:
        """A message from an older term. Tell a stale leader about our term (it may have been
        partitioned; with pre-vote or check-quorum our term would not reach it otherwise, and
        a repairing node never campaigns: without its answer a leader of an older term would
        keep leading, and the node would never find one of its own term to catch up from)."""
        if msg.type in (_M.APPEND, _M.HEARTBEAT, _M.SNAPSHOT):
            if self._cfg.check_quorum or self._cfg.pre_vote or self._repair.active:
                self._send(_M.APPEND_RESP, msg.src, reject=True, index=msg.index)
        elif msg.type is _M.PRE_VOTE:
            self._send(_M.PRE_VOTE_RESP, msg.src, reject=True)

    def _handle_vote_request(self, msg: Message) -> None:
        pre = msg.type is _M.PRE_VOTE
        can_vote = (
            self._vote == msg.src
            or (self._vote is None and self._leader is None)
            or (pre and msg.term > self._term)
        )
        grant = (
            can_vote
            and not self._repair.active
            and self._log.is_up_to_date(msg.index, msg.log_term)
        )
        kind = _M.PRE_VOTE_RESP if pre else _M.VOTE_RESP
        if not grant:
            self._send(kind, msg.src, reject=True)
            return
        if not pre:
            self._vote = msg.src
            self._election_elapsed = 0
        self._send(kind, msg.src, term=msg.term)

    def _step_candidate(self, msg: Message) -> None:
        if msg.type in (_M.APPEND, _M.HEARTBEAT, _M.SNAPSHOT):
            self._become_follower(msg.term, msg.src)
            self._step_follower(msg)
        elif (msg.type is _M.PRE_VOTE_RESP and self._role is Role.PRE_CANDIDATE) or (
            msg.type is _M.VOTE_RESP and self._role is Role.CANDIDATE
        ):
            self._record_vote(msg.src, not msg.reject)

    # ---- follower ----------------------------------------------------------------------------
    def _step_follower(self, msg: Message) -> None:
        t = msg.type
        if t in (_M.APPEND, _M.HEARTBEAT, _M.SNAPSHOT):
            if self._repair.active and not self._repair.term_known:
                return  # not until we know no term we acted in before the wipe is newer
            if self._leader != msg.src:
                self._leader = msg.src
                self._leader_match = self._log.committed
            self._election_elapsed = 0
            if t is _M.APPEND:
                self._handle_append(msg)
            elif t is _M.HEARTBEAT:
                self._handle_heartbeat(msg)
            else:
                self._handle_snapshot_chunk(msg)
            self._check_repair_done()
        elif t is _M.TIMEOUT_NOW:
            if self._promotable():
                self._campaign(pre=False, transfer=True)
        elif t is _M.READ_INDEX_RESP:
            self._read_states.append(ReadState(index=msg.index, context=msg.context))

    def _handle_append(self, msg: Message) -> None:
        if msg.index < self._log.committed:
            self._leader_match = max(self._leader_match, self._log.committed)
            self._send(_M.APPEND_RESP, msg.src, index=self._log.committed)
            return
        last_new = self._log.maybe_append(msg.index, msg.log_term, msg.commit, msg.entries)
        if last_new is None:
            hint, hint_term = self._log.find_conflict_by_term(
                min(msg.index, self._log.last_index()), msg.log_term
            )
            self._send(
                _M.APPEND_RESP,
                msg.src,
                reject=True,
                index=msg.index,
                reject_hint=hint,
                log_term=hint_term,
            )
            return
        self._leader_match = max(self._leader_match, last_new)
        if msg.entries:
            self._refresh_membership()
        self._send(_M.APPEND_RESP, msg.src, index=last_new)

    def _handle_heartbeat(self, msg: Message) -> None:
        # A heartbeat's commit is at most what we acknowledged to this leader. If it is beyond
        # what we know matches the leader's log (we restarted, or lost our disk), we must not
        # commit it: we answer with a reject so that the leader probes our log again.
        unsure = msg.commit > self._leader_match
        self._log.commit_to(min(msg.commit, self._leader_match))
        self._repair.leader_last_index(msg.index, self._term, msg.src)
        self._send(
            _M.HEARTBEAT_RESP, msg.src, context=msg.context, reject=unsure, index=self._leader_match
        )
        if (
            msg.context == QUIESCE_CONTEXT
            and self._cfg.quiesce
            and not unsure
            and self._leader_match >= msg.index
            and not self._repair.active
        ):
            self._quiesced = True  # the leader went quiet: stop counting election time

    def _handle_snapshot_chunk(self, msg: Message) -> None:
        assert msg.snapshot is not None
        meta = msg.snapshot.meta
        if meta.index <= self._log.committed:
            self._assembler.reset()
            self._leader_match = max(self._leader_match, self._log.committed)
            self._send(_M.APPEND_RESP, msg.src, index=self._log.committed)
            return
        outcome = self._assembler.add(msg)
        if outcome.snapshot is None:
            self._send(
                _M.SNAPSHOT_RESP,
                msg.src,
                index=meta.index,
                chunk_offset=outcome.next_offset,
                reject=outcome.reject,
            )
            return
        self._install_snapshot(outcome.snapshot)
        self._leader_match = max(self._leader_match, meta.index)
        self._send(_M.APPEND_RESP, msg.src, index=meta.index)

    def _install_snapshot(self, snap: Snapshot) -> None:
        meta = snap.meta
        if self._log.match_term(meta.index, meta.term):
            self._log.commit_to(meta.index)  # we hold those entries: no need to restore
            return
        self._log.install(snap)
        self._pending_snapshot = snap
        self._refresh_membership()
        self._event("raft.snapshot_installed", index=meta.index, snapshot_term=meta.term)

    # ---- repair (raft/repair.py) ---------------------------------------------------------------
    def _send_term_probes(self) -> None:
        targets = (self._voters() | self._discovery_voters()) - {self._cfg.node_id}
        if self._repair.term_known:
            targets -= self._repair.heard  # only the answers still needed to vote again
        for voter in sorted(targets):
            self._send(_M.PRE_VOTE, voter, context=TERM_PROBE_CONTEXT)
        self._learn_term_if_known(None)

    def _handle_term_probe(self, msg: Message) -> None:
        """Term probes change nobody's state; the answer carries the responder's term and its
        newest committed config (snapshot.meta: index and membership, no data)."""
        if msg.type is _M.PRE_VOTE:
            if not (self._repair.active and not self._repair.term_known):
                # (a node still discovering its own term has forgotten what it may be asked)
                self._send(
                    _M.PRE_VOTE_RESP,
                    msg.src,
                    reject=True,
                    context=TERM_PROBE_CONTEXT,
                    snapshot=self._committed_config(),
                )
            return
        if not self._repair.active:
            return
        if msg.term > self._term:
            self._become_follower(msg.term, None)
            if self._repair.term_known:
                self._vote = self._cfg.node_id  # we may have voted in this term before the wipe
        if msg.snapshot is not None:
            m = msg.snapshot.meta
            self._repair.learn_config(m.index, m.membership.voters | m.membership.voters_outgoing)
        self._learn_term_if_known(msg.src)
        self._check_repair_done()

    def _committed_config(self) -> Snapshot | None:
        c = self._log.committed
        e = self._log.latest_config_at(c)
        index = e.index if e is not None else self._log.snap_index
        if index == 0:
            return None  # only the constructor's config: no position to name
        return Snapshot(meta=SnapshotMeta(index=index, membership=self._membership_at(c)))

    def _discovery_voters(self) -> frozenset[str]:
        """Voters whose term-probe answers count (raft/repair.py): of the newest config among
        our log's (or snapshot's), the caller's (when it named its index) and the newest
        committed one an answer named."""
        e = self._log.latest_config_at(self._log.last_index())
        own_index = e.index if e is not None else (self._log.snap_index or None)
        own = self._voters()
        given = self._initial_membership_index
        if given is not None and (own_index is None or given > own_index):
            m = self._initial_membership
            own, own_index = m.voters | m.voters_outgoing, given
        return self._repair.counting_voters(own, own_index)

    def _learn_term_if_known(self, heard_from: str | None) -> None:
        me = self._cfg.node_id
        voters = self._discovery_voters()
        if not voters and self._initial_membership_index is not None:
            # The caller's config names no voter (a learner-only placeholder: a stream replica
            # restarted after a peer change) and may be replaced: counted as it is, it would
            # need no answer at all. Wait for an answer naming a committed config.
            return
        if self._repair.hear(heard_from or me, voters, me):
            if self._vote is None:
                self._vote = me  # we may have voted in this term before the wipe: never again
            self._event("raft.repair_term_known")

    def _check_repair_done(self) -> None:
        if not self._repair.active:
            return
        me = self._cfg.node_id
        voters = self._voters() | self._discovery_voters()  # every voter we probe
        if self._repair.done(self._leader_match, self._term, self._leader, voters, me):
            self._repair = Repair(active=False)
            if self._vote is None:
                self._vote = me  # our term is now at least any we voted in: spent here too
            self._event("raft.repair_done", index=self._leader_match)

    # ---- membership --------------------------------------------------------------------------
    def _membership_at(self, index: int) -> Membership:
        e = self._log.latest_config_at(index)
        if e is not None:
            return mship.decode_config(e.data)[1]
        if self._log.snap_index > 0:
            return self._log.snapshot.meta.membership
        return self._initial_membership

    def _refresh_membership(self) -> None:
        new = self._membership_at(self._log.last_index())
        if new != self._membership:
            self._set_membership(new, self._log.last_index())

    def _set_membership(self, new: Membership, index: int) -> None:
        self._membership = new
        if self._role is Role.LEADER:
            self._sync_progress(drop_removed=False)
        elif self._role in (Role.FOLLOWER, Role.LEARNER):
            self._role = self._follower_role()
        self._event(
            "raft.config_applied",
            index=index,
            voters=tuple(sorted(new.voters)),
            learners=tuple(sorted(new.learners)),
        )

    # ---- helpers -------------------------------------------------------------------------------
    def _refuse_proposal(self) -> ProposeResult | None:
        if self._role is not Role.LEADER:
            return self._refusal(RefuseReason.NOT_LEADER)
        if not mship.is_voter(self._membership, self._cfg.node_id):
            return self._refusal(RefuseReason.NOT_LEADER)  # removed: stepping down soon
        if self._transferee is not None:
            return self._refusal(RefuseReason.TRANSFERRING)
        return None

    def _refusal(self, reason: RefuseReason) -> ProposeResult:
        return ProposeResult(ok=False, term=self._term, leader_hint=self._leader, reason=reason)

    def _send(self, kind: MessageType, dst: str, **fields: object) -> None:
        fields.setdefault("term", self._term)
        self._msgs.append(
            Message(type=kind, group=self._cfg.group, src=self._cfg.node_id, dst=dst, **fields)  # type: ignore[arg-type]
        )

    def _event(self, name: str, **fields: object) -> None:
        base: list[tuple[str, object]] = [("term", self._term), ("leader", self._leader)]
        self._events.append(Event(name=name, fields=tuple(base + sorted(fields.items()))))
