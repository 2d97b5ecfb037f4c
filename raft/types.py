# pure-core
"""Value types shared by the Raft core, storage, transports, driver and simulator.

Everything here is a frozen attrs value: messages travel between nodes, entries and hard state
travel to storage, and a `Ready` is what the core hands its driver after each input. Node ids
are strings (server names); a group id is a string (e.g. "_meta_" or "S-ORDERS").

Fields may be added with defaults; renaming or removing a field breaks storage and transports.
"""

from __future__ import annotations

import enum

import attrs

NodeId = str
GroupId = str


class EntryKind(enum.IntEnum):
    NORMAL = 0  # application data
    CONFIG = 1  # membership change: data is an encoded ConfigChange
    NOOP = 2  # empty entry a new leader appends to commit its term


@attrs.frozen
class Entry:
    term: int
    index: int
    kind: EntryKind = EntryKind.NORMAL
    data: bytes = b""


@attrs.frozen
class HardState:
    """What must be durable before a node answers a vote or an append."""

    term: int = 0
    vote: NodeId | None = None
    commit: int = 0


@attrs.frozen
class Membership:
    """Voters and non-voting learners. With joint consensus, `voters_outgoing` is the old voter set
    while a change is in progress (empty otherwise)."""

    voters: frozenset[NodeId] = frozenset()
    learners: frozenset[NodeId] = frozenset()
    voters_outgoing: frozenset[NodeId] = frozenset()


@attrs.frozen
class SnapshotMeta:
    index: int = 0
    term: int = 0
    membership: Membership = Membership()


@attrs.frozen
class Snapshot:
    meta: SnapshotMeta = SnapshotMeta()
    data: bytes = b""


class MessageType(enum.Enum):
    PRE_VOTE = "pre_vote"
    PRE_VOTE_RESP = "pre_vote_resp"
    VOTE = "vote"
    VOTE_RESP = "vote_resp"
    APPEND = "append"
    APPEND_RESP = "append_resp"
    HEARTBEAT = "heartbeat"
    HEARTBEAT_RESP = "heartbeat_resp"
    SNAPSHOT = "snapshot"  # one chunk of a snapshot
    SNAPSHOT_RESP = "snapshot_resp"
    TIMEOUT_NOW = "timeout_now"  # leadership transfer: start an election now
    READ_INDEX = "read_index"
    READ_INDEX_RESP = "read_index_resp"
    PROPOSE = "propose"  # a follower forwarding proposals to the leader


@attrs.frozen
class Message:
    """One Raft message. Fields not used by a message type keep their defaults."""

    type: MessageType
    group: GroupId
    src: NodeId
    dst: NodeId
    term: int
    log_term: int = 0  # term of the entry at `index` (APPEND: prev; VOTE: last)
    index: int = 0  # APPEND: prev index; VOTE: last index; *_RESP: match/hint index
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    # Snapshot chunks: snapshot.meta on every chunk; chunk data in `snapshot.data`.
    snapshot: Snapshot | None = None
    chunk_offset: int = 0
    chunk_last: bool = False
    chunk_checksum: int = 0  # checksum of the whole snapshot, sent with the last chunk
    context: bytes = b""  # read-index request id, transfer marker, etc.


@attrs.frozen
class Event:
    """A structured log event returned by the core; the driver logs it (cores do not log)."""

    name: str  # dotted, stable: "raft.became_leader"
    fields: tuple[tuple[str, object], ...] = ()


@attrs.frozen
class ReadState:
    """A read-index request is safe to serve once the state machine has applied `index`."""

    index: int
    context: bytes


@attrs.frozen
class Ready:
    """Everything the driver must do after an input, in order: persist `hard_state`, `entries`
    and `snapshot` (and fsync when `must_sync`), then send `messages`, then apply
    `committed_entries`, then call `advance(ready)`."""

    group: GroupId
    hard_state: HardState | None = None  # None: unchanged
    entries: tuple[Entry, ...] = ()  # to append; may overwrite a suffix from entries[0].index
    snapshot: Snapshot | None = None  # to install (replaces the log up to its index)
    messages: tuple[Message, ...] = ()
    committed_entries: tuple[Entry, ...] = ()
    must_sync: bool = False
    read_states: tuple[ReadState, ...] = ()
    events: tuple[Event, ...] = ()

    def is_empty(self) -> bool:
        return not (
            self.hard_state
            or self.entries
            or self.snapshot
            or self.messages
            or self.committed_entries
            or self.read_states
            or self.events
        )


class ConfigChangeType(enum.Enum):
    """One single-server membership change (see raft/membership.py for the scheme)."""

    ADD_VOTER = "add_voter"  # a new voter (or a learner promoted directly)
    ADD_LEARNER = "add_learner"  # a new non-voting member that receives the log
    PROMOTE_LEARNER = "promote_learner"  # an existing learner becomes a voter
    REMOVE = "remove"  # a voter or learner leaves the group


@attrs.frozen
class ConfigChange:
    type: ConfigChangeType
    node_id: NodeId
