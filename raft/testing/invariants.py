# pure-core
"""Raft safety invariants, checked incrementally from what a driver observes.

The simulator (or a unit test with a hand-made history) reports what happens with `observe_*`
calls; each call checks what it can and raises `Violation(invariant, detail)` at the first
breach. Checking happens as things occur, so every step costs O(change), not O(log):

- election_safety: at most one leader per term (`observe_role`).
- double_vote: a node grants its vote to at most one candidate per term (`observe_vote`).
- repair_votes / repair_leads: a repair-needed node grants no vote and never campaigns or leads.
- log_matching: checked on every persisted append. An entry is identified by (index, term); the
  first time an identity is seen its content and the term of the entry before it are recorded,
  and every later copy must agree. By induction on the index this is exactly "two logs with an
  entry of equal index and term are identical up to it".
- committed_changed: once any node commits index i, every node that commits i has the same entry.
- commit_regressed: a node's commit index never decreases while it runs, and after a restart it
  starts at least at the commit it had made durable (unless its disk was corrupted or wiped).
- commit_beyond_log: a node never commits past its own persisted log.
- leader_completeness: a leader of term T holds every entry committed under a term < T.
- state_machine_safety: replicas that applied index i have the same hash chain there, and only
  committed entries are applied.
- stale_read: a read-index answer (ReadState) is at least the highest index acknowledged to
  any client before the read was requested (R9: linearizable reads, no stale reads).
- invented: every applied NORMAL entry carries data some client proposed.
- acked_lost: an acknowledged proposal is committed at the index it was acknowledged at; at the
  end, `check_acked_applied` verifies it reached every given replica's state machine.

Why: reliability.md asks for invariants after every step, and for checkers that can be shown to
fail (tests/sim/test_invariants.py feeds each one a violating history).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs

from raft.types import Entry, EntryKind, NodeId

Content = tuple[EntryKind, bytes]


class Violation(AssertionError):
    def __init__(self, invariant: str, detail: str) -> None:
        super().__init__(f"{invariant}: {detail}")
        self.invariant = invariant
        self.detail = detail


@attrs.define
class LogMirror:
    """The terms of one node's persisted log (contents live in the checker's identity map)."""

    snap_index: int = 0
    snap_term: int = 0
    terms: list[int] = attrs.field(factory=list)  # terms[i] is the term of index snap_index+1+i

    @property
    def last_index(self) -> int:
        return self.snap_index + len(self.terms)

    def term_at(self, index: int) -> int | None:
        if index == self.snap_index:
            return self.snap_term
        pos = index - self.snap_index - 1
        if 0 <= pos < len(self.terms):
            return self.terms[pos]
        return None


@attrs.define
class InvariantChecker:
    leaders: dict[int, NodeId] = attrs.field(factory=dict)
    votes: dict[tuple[NodeId, int], NodeId] = attrs.field(factory=dict)
    identities: dict[tuple[int, int], tuple[Content, int]] = attrs.field(factory=dict)
    logs: dict[NodeId, LogMirror] = attrs.field(factory=dict)
    committed: dict[int, tuple[int, Content]] = attrs.field(factory=dict)
    commit_by_term: dict[int, int] = attrs.field(factory=dict)  # observing term -> max index
    node_commit: dict[NodeId, int] = attrs.field(factory=dict)
    durable_commit: dict[NodeId, int] = attrs.field(factory=dict)
    chains: dict[int, bytes] = attrs.field(factory=dict)
    acked: dict[int, tuple[int, Content]] = attrs.field(factory=dict)
    reads: dict[bytes, int] = attrs.field(factory=dict)  # read context -> acked max at request
    proposed: set[bytes] = attrs.field(factory=set)
    checks: int = 0

    # -- elections -------------------------------------------------------------------------

    def observe_role(self, node: NodeId, role: str, term: int, repair_needed: bool = False) -> None:
        """role is the Role enum's value: "leader", "candidate", "follower", ..."""
        self.checks += 1
        if repair_needed and role in ("leader", "candidate"):
            raise Violation("repair_leads", f"{node} is {role} in term {term} while repair-needed")
        if role != "leader":
            return
        other = self.leaders.setdefault(term, node)
        if other != node:
            raise Violation("election_safety", f"{other} and {node} both lead term {term}")
        self._check_leader_complete(node, term)

    def observe_vote(self, voter: NodeId, term: int, candidate: NodeId, repair_needed: bool = False) -> None:
        """A granted (real, not pre-) vote sent by `voter`."""
        self.checks += 1
        if repair_needed:
            raise Violation("repair_votes", f"{voter} voted for {candidate} in term {term} while repair-needed")
        prior = self.votes.setdefault((voter, term), candidate)
        if prior != candidate:
            raise Violation("double_vote", f"{voter} voted for {prior} and {candidate} in term {term}")

    def _check_leader_complete(self, node: NodeId, term: int) -> None:
        need = max((i for t, i in self.commit_by_term.items() if t < term), default=0)
        if need == 0:
            return
        log = self.logs.get(node, LogMirror())
        if need < log.snap_index:
            return
        want = self.committed[need][0]
        if log.term_at(need) != want:
            raise Violation(
                "leader_completeness",
                f"{node} leads term {term} without committed entry {need} (term {want}); "
                f"its log has term {log.term_at(need)} there",
            )

    # -- logs ------------------------------------------------------------------------------

    def _identity(self, node: NodeId, e: Entry, prev_term: int | None) -> None:
        key = (e.index, e.term)
        seen = self.identities.setdefault(key, ((e.kind, e.data), prev_term or 0))
        if seen != ((e.kind, e.data), prev_term or 0):
            raise Violation(
                "log_matching",
                f"{node} has entry {key} with content/prev-term {((e.kind, e.data), prev_term)}, "
                f"another log has {seen}",
            )

    def observe_append(self, node: NodeId, entries: Sequence[Entry]) -> None:
        """Entries persisted by `node`, overwriting its log from entries[0].index."""
        if not entries:
            return
        self.checks += 1
        log = self.logs.setdefault(node, LogMirror())
        first = entries[0].index
        if first <= log.snap_index or first > log.last_index + 1:
            raise Violation("log_matching", f"{node} appended at {first}, log is ({log.snap_index}, {log.last_index}]")
        del log.terms[first - log.snap_index - 1 :]
        prev = log.term_at(first - 1)
        for e in entries:
            assert e.index == log.last_index + 1, "entries in a batch must be consecutive"
            self._identity(node, e, prev)
            log.terms.append(e.term)
            prev = e.term

    def observe_snapshot(self, node: NodeId, index: int, term: int) -> None:
        """`node` installed or took a snapshot at (index, term)."""
        self.checks += 1
        known = self.committed.get(index)
        if known is not None and known[0] != term:
            raise Violation("committed_changed", f"{node} snapshot at {index} has term {term}, committed {known[0]}")
        log = self.logs.setdefault(node, LogMirror())
        keep = log.term_at(index) == term and index <= log.last_index
        rest = log.terms[index - log.snap_index :] if keep and index >= log.snap_index else []
        self.logs[node] = LogMirror(index, term, rest)

    def observe_restart(
        self, node: NodeId, snapshot: tuple[int, int] | None, entries: Sequence[Entry], commit: int, repaired: bool
    ) -> None:
        """`node` restarted from durable state (snapshot (index, term), entries, hard-state commit).
        `repaired` means its disk failed verification or was wiped (no durability promise)."""
        self.checks += 1
        if not repaired and commit < self.durable_commit.get(node, 0):
            raise Violation(
                "commit_regressed",
                f"{node} restarted with commit {commit}, had made {self.durable_commit[node]} durable",
            )
        si, st = snapshot or (0, 0)
        self.logs[node] = LogMirror(si, st, [])
        self.node_commit[node] = 0
        if entries:
            self.observe_append(node, entries)
        self.node_commit[node] = commit  # the restarted node must not report less than this
        if repaired:
            self.durable_commit[node] = 0  # what it loaded may be unsynced; syncs raise it again

    def observe_sync(self, node: NodeId, commit: int) -> None:
        """`node` fsynced a hard state with this commit index."""
        self.durable_commit[node] = max(commit, self.durable_commit.get(node, 0))

    # -- commits and applies ---------------------------------------------------------------

    def observe_commit(self, node: NodeId, commit: int, term: int) -> None:
        """`node`, in `term`, now has commit index `commit` (after persisting its Ready)."""
        self.checks += 1
        before = self.node_commit.get(node, 0)
        if commit < before:
            raise Violation("commit_regressed", f"{node} commit went from {before} to {commit}")
        if commit == before:
            return
        log = self.logs.get(node, LogMirror())
        if commit > log.last_index:
            raise Violation("commit_beyond_log", f"{node} commits {commit}, its log ends at {log.last_index}")
        for index in range(max(before + 1, log.snap_index + 1), commit + 1):
            self._commit_one(node, index, log.term_at(index))
        self.node_commit[node] = commit
        if commit > self.commit_by_term.get(term, 0):
            self.commit_by_term[term] = commit

    def _commit_one(self, node: NodeId, index: int, term: int | None) -> None:
        got = self.identities.get((index, term or 0))
        assert term is not None and got is not None, "every persisted entry has an identity"
        prior = self.committed.setdefault(index, (term, got[0]))
        if prior != (term, got[0]):
            raise Violation("committed_changed", f"{node} committed {index} as term {term}, earlier term {prior[0]}")

    def observe_apply(self, node: NodeId, index: int, chain: bytes, entry: Entry | None = None) -> None:
        """`node`'s state machine reached `index` with hash `chain` (entry None: from a snapshot)."""
        self.checks += 1
        if entry is not None:
            if entry.kind is EntryKind.NORMAL and entry.data not in self.proposed:
                raise Violation("invented", f"{node} applied {index} with data nobody proposed")
            known = self.committed.get(index)
            if known is None or known != (entry.term, (entry.kind, entry.data)):
                raise Violation("state_machine_safety", f"{node} applied {index} term {entry.term}, committed: {known}")
        prior = self.chains.setdefault(index, chain)
        if prior != chain:
            raise Violation("state_machine_safety", f"{node} hash chain at {index} differs from another replica's")

    def observe_proposal(self, data: bytes) -> None:
        """A client handed `data` to a node (whether or not it was accepted)."""
        self.proposed.add(data)

    def observe_ack(self, index: int, entry: Entry) -> None:
        """A proposal was acknowledged to its client as committed at `index`."""
        self.checks += 1
        content = (entry.term, (entry.kind, entry.data))
        if self.committed.get(index) != content:
            raise Violation("acked_lost", f"acked entry {index} is not what was committed there")
        self.acked[index] = content

    def observe_read_request(self, context: bytes) -> None:
        """A client asked for a linearizable read (identified by `context`)."""
        self.reads[context] = max(self.acked, default=0)

    def observe_read_state(self, node: NodeId, context: bytes, index: int) -> None:
        """`node` answered the read `context` with read index `index`."""
        self.checks += 1
        floor = self.reads.get(context)
        if floor is None:
            raise Violation("stale_read", f"{node} answered read {context!r} that nobody asked")
        if index < floor:
            raise Violation("stale_read", f"{node} answered read {context!r} at {index}, {floor} was acked before it")

    def check_acked_applied(self, applied: Mapping[NodeId, int]) -> None:
        """Final check, once faults have healed and replicas caught up: each given replica
        (node -> applied index) has applied every acknowledged index. Together with
        state_machine_safety (equal chains at equal index) that means it holds every ack."""
        top_acked = max(self.acked, default=0)
        for node, applied_index in sorted(applied.items()):
            if applied_index < top_acked:
                raise Violation("acked_lost", f"{node} applied up to {applied_index}, acked {top_acked}")
