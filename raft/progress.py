# pure-core
"""What a leader knows about each follower: flow control for log replication.

A follower's progress is in one of three states:
- PROBE: we do not know where its log matches ours; send one APPEND at a time (per heartbeat
  interval) and walk `next_index` back using the follower's reject hints.
- REPLICATE: the logs match up to `match`; stream APPENDs optimistically (pipelining), advancing
  `next_index` on send, with at most `max_inflight` messages unacknowledged.
- SNAPSHOT: the entries it needs are compacted away; send the snapshot in chunks, a small window
  at a time, and go back to PROBE once the follower reports the snapshot index as matched.

`recent_active` is set by any response and cleared by the leader's check-quorum sweep.
"""

from __future__ import annotations

import collections
import enum

import attrs

SNAPSHOT_WINDOW_CHUNKS = 4  # chunks in flight to one follower


class ProgressState(enum.Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


@attrs.define
class Progress:
    match: int
    next_index: int
    max_inflight: int
    state: ProgressState = ProgressState.PROBE
    probe_sent: bool = False
    recent_active: bool = True
    inflight: collections.deque[int] = attrs.field(factory=collections.deque)  # last index per msg
    # SNAPSHOT state: which snapshot (its index) and how far the follower has acknowledged.
    snap_index: int = 0
    snap_acked_bytes: int = 0
    snap_sent_bytes: int = 0
    snap_last_sent: bool = False  # the final chunk went out (since the last rewind)
    snap_acked_at_heartbeat: int = -1  # acked bytes at the previous heartbeat: stalled if equal

    def become_probe(self) -> None:
        # After a snapshot the follower is known to hold at least the snapshot index.
        if self.state is ProgressState.SNAPSHOT:
            self.next_index = max(self.match + 1, self.snap_index + 1)
        else:
            self.next_index = self.match + 1
        self._reset(ProgressState.PROBE)

    def become_replicate(self) -> None:
        self.next_index = self.match + 1
        self._reset(ProgressState.REPLICATE)

    def become_snapshot(self, snap_index: int) -> None:
        self._reset(ProgressState.SNAPSHOT)
        self.snap_index = snap_index

    def _reset(self, state: ProgressState) -> None:
        self.state = state
        self.probe_sent = False
        self.inflight.clear()
        self.snap_index = self.snap_acked_bytes = self.snap_sent_bytes = 0
        self.snap_last_sent = False
        self.snap_acked_at_heartbeat = -1

    def rewind_snapshot(self, to_offset: int) -> None:
        """Send the snapshot again from `to_offset` (a chunk was lost or refused)."""
        self.snap_acked_bytes = self.snap_sent_bytes = to_offset
        self.snap_last_sent = False

    def is_paused(self) -> bool:
        """Whether the leader must not send this follower another APPEND now."""
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.REPLICATE:
            return len(self.inflight) >= self.max_inflight
        return True

    def sent_append(self, last_index: int, n_entries: int) -> None:
        if self.state is ProgressState.REPLICATE:
            if n_entries:
                self.next_index = last_index + 1
                self.inflight.append(last_index)
        elif self.state is ProgressState.PROBE:
            self.probe_sent = True

    def maybe_update(self, index: int) -> bool:
        """An APPEND was acknowledged up to `index`; False if that is old news."""
        updated = index > self.match
        if updated:
            self.match = index
            self.probe_sent = False
        self.next_index = max(self.next_index, index + 1)
        while self.inflight and self.inflight[0] <= index:
            self.inflight.popleft()
        return updated

    def maybe_decrease(self, rejected: int, hint_next: int) -> bool:
        """An APPEND with prev index `rejected` was refused; False if the refusal is stale.
        A refusal at or below `match` for the probe we are waiting on means the follower lost
        entries it had acknowledged (a wiped disk): its match is reset and probing starts over.
        Lowering `match` is always safe: it only delays commits and catch-up."""
        if self.state is ProgressState.SNAPSHOT:
            return False
        if self.state is ProgressState.REPLICATE:
            if rejected < self.match:
                return False
            if rejected == self.match:
                self.match = 0
            self.become_probe()
        elif self.next_index - 1 != rejected:
            return False  # not the probe we are waiting for
        elif rejected <= self.match:
            self.match = 0
        self.next_index = max(min(rejected, hint_next), self.match + 1)
        self.probe_sent = False
        return True

    def regressed(self, follower_last: int) -> None:
        """The follower's log ends below what it acknowledged (it lost its disk): probe again
        from its end."""
        self.match = 0
        self.become_probe()
        self.next_index = follower_last + 1

    def free_one_inflight(self) -> None:
        if self.inflight:
            self.inflight.popleft()
