# pure-core
"""Configuration and small result types of the Raft core.

`NodeConfig` is fixed for the life of a `RaftNode`: timing is counted in ticks (the driver decides
how long a tick is), flow control in messages and bytes. `Role` is what a node currently is, and
`ProposeResult` tells a caller whether its proposal was appended, at which index and term, and who
to ask instead when it was not.
"""

from __future__ import annotations

import enum

import attrs


@attrs.frozen
class NodeConfig:
    node_id: str
    group: str
    election_ticks: int = 10  # randomized election timeout is in [election_ticks, 2*election_ticks)
    heartbeat_ticks: int = 1
    max_entries_per_msg: int = 256
    max_bytes_per_msg: int = 1 << 20
    max_inflight_msgs: int = 256
    pre_vote: bool = True
    check_quorum: bool = True
    snapshot_chunk_bytes: int = 64 * 1024
    # Quiescence (raft/core.py docstring): an idle leader whose followers all hold its whole log
    # stops heartbeating; its followers stop counting election time. The driver must then watch
    # peer liveness and `wake()` the group when its leader (or a follower) may be gone.
    quiesce: bool = False

    def __attrs_post_init__(self) -> None:
        assert self.election_ticks > self.heartbeat_ticks >= 1, "need election > heartbeat >= 1"
        assert self.max_entries_per_msg >= 1 and self.max_inflight_msgs >= 1
        assert self.max_bytes_per_msg >= 1 and self.snapshot_chunk_bytes >= 1


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre_candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"
    LEARNER = "learner"  # a follower that is a non-voting member (or not a member at all)


class RefuseReason(enum.Enum):
    """Why a proposal was refused (ProposeResult.reason); NONE when accepted."""

    NONE = "none"
    NOT_LEADER = "not_leader"
    TRANSFERRING = "transferring"  # a leadership transfer is in progress
    CONFIG_PENDING = "config_pending"  # a previous membership change is not committed yet
    NOT_READY = "not_ready"  # new leader has not committed an entry of its term yet
    INVALID = "invalid"  # the membership change makes no sense for the current config


@attrs.frozen
class ProposeResult:
    ok: bool
    index: int = 0
    term: int = 0
    leader_hint: str | None = None
    reason: RefuseReason = RefuseReason.NONE
