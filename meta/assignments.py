# pure-core
"""The meta group's state machine: which streams exist, their configs, peers and Raft groups.

How it works: every JetStream server of the cluster is a voter of one Raft group ("_meta_").
The meta leader turns `$JS.API.STREAM.CREATE/UPDATE/DELETE` into commands (below), proposes
them, and every server applies the committed ones in log order with `MetaState.apply(cmd,
index)`. Everything a command needs that is not deterministic (placement, creation time) is
decided by the leader and travels inside it, so all replicas end in the same state.

Each stream is assigned a Raft group named `S-<stream>-<index of the create command>`: a
stream deleted and created again gets a fresh group (and a fresh directory), never the old
log. `RegisterServer` records a server's name, cluster and tags (placement and stream info use
them).

Durable consumers are meta assignments too (`AssignConsumer` creates or updates one,
`UnassignConsumer` removes it, `DeleteStream` removes all of a stream's): the meta state says
which durables exist and with which config; their progress (delivered, ack floor, pending) is
replicated through the stream's own group (jetstream/cluster_codec.py `SaveConsumer`), and the
stream leader runs exactly the assigned ones (jetstream/cluster.py). Ephemeral consumers stay
local to the stream leader (see jetstream/cluster.py for why).

Scaling and moves (meta/moves.py): `peers` is the *desired* peer set; `members` every server
that may still be in the stream's Raft group (the union of the settled set and every desired
set since; empty = same as `peers`); `initial` the peers a brand-new group starts with (cleared
by the first peer change: any later joiner starts as a learner and learns the membership from
the log, so a server re-added after its data was deleted can never elect itself on an empty
log); `prior_config` the config before the move (restored by a cancel). `UpdateStream` with
peers changes the desired set; the stream leader walks the Raft membership there and asks for
`SettlePeers`, which shrinks `members` to `peers` - only then may removed servers delete data.

Commands are JSON on the wire (`encode_command` / `decode_command`): small, rare, readable.
`apply` returns `MetaOk` or `MetaRejected(reason)`; a rejected command changes nothing.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import attrs

from natsd.subjects import subjects_overlap

META_GROUP = "_meta_"


# -- values -----------------------------------------------------------------------------------
@attrs.frozen
class ServerRecord:
    node_id: str
    name: str
    cluster: str = ""
    tags: tuple[str, ...] = ()


@attrs.frozen
class StreamAssignment:
    name: str
    config: dict[str, Any] = attrs.field(eq=False, hash=False)  # StreamConfig.to_json()
    group: str
    peers: tuple[str, ...]
    created_ns: int
    members: tuple[str, ...] = ()
    initial: tuple[str, ...] | None = None  # None: same as peers (a group that never changed)
    prior_config: dict[str, Any] | None = attrs.field(default=None, eq=False, hash=False)
    prior_peers: tuple[str, ...] = ()

    def hosts(self) -> tuple[str, ...]:
        """Every server that runs a replica of the group (desired and still-leaving ones)."""
        return tuple(sorted(set(self.peers) | set(self.members)))

    def initial_voters(self) -> tuple[str, ...]:
        return self.peers if self.initial is None else self.initial

    @property
    def moving(self) -> bool:
        return bool(self.members)  # set by a peer change, cleared by SettlePeers

    def config_text(self) -> str:
        return json.dumps(self.config, sort_keys=True, separators=(",", ":"))

    def subjects(self) -> list[str]:
        return list(self.config.get("subjects") or [])


# -- commands ---------------------------------------------------------------------------------
@attrs.frozen
class RegisterServer:
    node_id: str
    name: str
    cluster: str = ""
    tags: tuple[str, ...] = ()


@attrs.frozen
class CreateStream:
    name: str
    config: dict[str, Any] = attrs.field(eq=False, hash=False)
    peers: tuple[str, ...] = ()
    created_ns: int = 0


@attrs.frozen
class UpdateStream:
    name: str
    config: dict[str, Any] = attrs.field(eq=False, hash=False)
    peers: tuple[str, ...] | None = None  # a new desired peer set (scale, move, peer remove)
    cancel: bool = False  # a cancelled move: config and peers go back to the settled ones


@attrs.frozen
class SettlePeers:
    """The stream group's membership reached `peers`: leaving servers may delete their data."""
    name: str
    group: str
    peers: tuple[str, ...]


@attrs.frozen
class DeleteStream:
    name: str


@attrs.frozen
class ConsumerAssignment:
    stream: str
    name: str
    config: dict[str, Any] = attrs.field(eq=False, hash=False)  # ConsumerConfig.to_json()
    created_ns: int = 0

    def config_text(self) -> str:
        return _text(self.config)


@attrs.frozen
class AssignConsumer:
    """Create a durable consumer of `stream`, or replace the config of an existing one (its
    creation time stays)."""
    stream: str
    name: str
    config: dict[str, Any] = attrs.field(eq=False, hash=False)
    created_ns: int = 0


@attrs.frozen
class UnassignConsumer:
    stream: str
    name: str


MetaCommand = (RegisterServer | CreateStream | UpdateStream | DeleteStream | SettlePeers | AssignConsumer
               | UnassignConsumer)


@attrs.frozen
class MetaOk:
    created: bool = False


@attrs.frozen
class MetaRejected:
    reason: str  # "exists", "not_found", "subject_overlap"


MetaResult = MetaOk | MetaRejected


# -- codec ------------------------------------------------------------------------------------
def encode_command(cmd: MetaCommand) -> bytes:
    if isinstance(cmd, RegisterServer):
        body: dict[str, Any] = {"op": "server", "node_id": cmd.node_id, "name": cmd.name,
                                "cluster": cmd.cluster, "tags": list(cmd.tags)}
    elif isinstance(cmd, CreateStream):
        body = {"op": "create", "name": cmd.name, "config": cmd.config, "peers": list(cmd.peers),
                "created_ns": cmd.created_ns}
    elif isinstance(cmd, UpdateStream):
        body = {"op": "update", "name": cmd.name, "config": cmd.config}
        if cmd.peers is not None:
            body["peers"] = list(cmd.peers)
        if cmd.cancel:
            body["cancel"] = True
    elif isinstance(cmd, SettlePeers):
        body = {"op": "settle", "name": cmd.name, "group": cmd.group, "peers": list(cmd.peers)}
    elif isinstance(cmd, DeleteStream):
        body = {"op": "delete", "name": cmd.name}
    elif isinstance(cmd, AssignConsumer):
        body = {"op": "consumer", "stream": cmd.stream, "name": cmd.name, "config": cmd.config,
                "created_ns": cmd.created_ns}
    elif isinstance(cmd, UnassignConsumer):
        body = {"op": "consumer_delete", "stream": cmd.stream, "name": cmd.name}
    else:
        raise TypeError(f"unknown meta command {cmd!r}")
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def decode_command(data: bytes) -> MetaCommand:
    """Raises ValueError on anything that is not a well-formed command."""
    try:
        d = json.loads(data)
        op = d["op"]
        if op == "server":
            return RegisterServer(str(d["node_id"]), str(d["name"]), str(d.get("cluster", "")),
                                  tuple(str(t) for t in d.get("tags", ())))
        if op == "create":
            return CreateStream(str(d["name"]), dict(d["config"]), tuple(d["peers"]), int(d["created_ns"]))
        if op == "update":
            peers = d.get("peers")
            return UpdateStream(str(d["name"]), dict(d["config"]),
                                None if peers is None else tuple(str(p) for p in peers), bool(d.get("cancel")))
        if op == "settle":
            return SettlePeers(str(d["name"]), str(d["group"]), tuple(str(p) for p in d["peers"]))
        if op == "delete":
            return DeleteStream(str(d["name"]))
        if op == "consumer":
            config = d["config"]
            if not isinstance(config, dict):
                raise TypeError("consumer config is not an object")
            return AssignConsumer(str(d["stream"]), str(d["name"]), config, int(d["created_ns"]))
        if op == "consumer_delete":
            return UnassignConsumer(str(d["stream"]), str(d["name"]))
    except (KeyError, TypeError, ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"bad meta command: {exc}") from None
    raise ValueError(f"unknown meta op {op!r}")


# -- the machine ------------------------------------------------------------------------------
@attrs.define
class MetaState:
    streams: dict[str, StreamAssignment] = attrs.Factory(dict)
    servers: dict[str, ServerRecord] = attrs.Factory(dict)
    consumers: dict[str, dict[str, ConsumerAssignment]] = attrs.Factory(dict)  # stream -> name -> assignment
    applied: int = 0

    def apply(self, cmd: MetaCommand, index: int) -> MetaResult:
        assert index > self.applied, f"meta index {index} applied twice (at {self.applied})"
        self.applied = index
        if isinstance(cmd, RegisterServer):
            self.servers[cmd.node_id] = ServerRecord(cmd.node_id, cmd.name, cmd.cluster, cmd.tags)
            return MetaOk()
        if isinstance(cmd, CreateStream):
            return self._create(cmd, index)
        if isinstance(cmd, UpdateStream):
            return self._update(cmd)
        if isinstance(cmd, SettlePeers):
            return self._settle(cmd)
        if isinstance(cmd, DeleteStream):
            if self.streams.pop(cmd.name, None) is None:
                return MetaRejected("not_found")
            self.consumers.pop(cmd.name, None)
            return MetaOk()
        if isinstance(cmd, AssignConsumer):
            return self._assign_consumer(cmd)
        if isinstance(cmd, UnassignConsumer):
            mine = self.consumers.get(cmd.stream, {})
            if mine.pop(cmd.name, None) is None:
                return MetaRejected("not_found")
            if not mine:
                del self.consumers[cmd.stream]
            return MetaOk()
        raise TypeError(f"unknown meta command {cmd!r}")

    def _create(self, cmd: CreateStream, index: int) -> MetaResult:
        old = self.streams.get(cmd.name)
        if old is not None:
            same = old.config_text() == _text(cmd.config)
            return MetaOk() if same else MetaRejected("exists")
        if self.overlaps(cmd.name, list(cmd.config.get("subjects") or [])):
            return MetaRejected("subject_overlap")
        self.streams[cmd.name] = StreamAssignment(
            cmd.name, cmd.config, f"S-{cmd.name}-{index}", tuple(cmd.peers), cmd.created_ns
        )
        return MetaOk(created=True)

    def _assign_consumer(self, cmd: AssignConsumer) -> MetaResult:
        if cmd.stream not in self.streams:
            return MetaRejected("not_found")
        mine = self.consumers.setdefault(cmd.stream, {})
        old = mine.get(cmd.name)
        created_ns = cmd.created_ns if old is None else old.created_ns
        mine[cmd.name] = ConsumerAssignment(cmd.stream, cmd.name, cmd.config, created_ns)
        return MetaOk(created=old is None)

    def consumers_of(self, stream: str) -> dict[str, ConsumerAssignment]:
        return dict(self.consumers.get(stream, {}))

    def _update(self, cmd: UpdateStream) -> MetaResult:
        old = self.streams.get(cmd.name)
        if old is None:
            return MetaRejected("not_found")
        if self.overlaps(cmd.name, list(cmd.config.get("subjects") or [])):
            return MetaRejected("subject_overlap")
        if cmd.cancel:
            if not old.moving or old.prior_config is None:
                return MetaRejected("not_moving")
            self.streams[cmd.name] = attrs.evolve(old, config=old.prior_config, peers=old.prior_peers,
                                                  prior_config=None, prior_peers=())
            return MetaOk()
        if cmd.peers is None or set(cmd.peers) == set(old.peers):
            self.streams[cmd.name] = attrs.evolve(old, config=cmd.config)
            return MetaOk()
        if old.moving:
            return MetaRejected("moving")
        if not cmd.peers:
            return MetaRejected("no_peers")
        self.streams[cmd.name] = attrs.evolve(
            old, config=cmd.config, peers=tuple(cmd.peers), members=tuple(sorted(set(old.peers) | set(cmd.peers))),
            initial=(), prior_config=old.config, prior_peers=old.peers)
        return MetaOk()

    def _settle(self, cmd: SettlePeers) -> MetaResult:
        old = self.streams.get(cmd.name)
        if old is None or old.group != cmd.group or set(old.peers) != set(cmd.peers):
            return MetaRejected("stale")
        self.streams[cmd.name] = attrs.evolve(old, members=(), prior_config=None, prior_peers=())
        return MetaOk()

    def overlaps(self, name: str, subjects: list[str]) -> bool:
        return any(
            subjects_overlap(a, b)
            for other in self.streams.values()
            if other.name != name
            for a in other.subjects()
            for b in subjects
        )

    def server_name(self, node_id: str) -> str:
        record = self.servers.get(node_id)
        return record.name if record is not None else node_id

    def load(self) -> dict[str, int]:
        """Streams per peer (placement spreads by it)."""
        counts: dict[str, int] = {}
        for sa in self.streams.values():
            for peer in sa.peers:
                counts[peer] = counts.get(peer, 0) + 1
        return counts

    # -- snapshot / content hash --------------------------------------------------------
    def snapshot(self) -> bytes:
        body = {
            "applied": self.applied,
            "servers": [{"node_id": s.node_id, "name": s.name, "cluster": s.cluster, "tags": list(s.tags)}
                        for _, s in sorted(self.servers.items())],
            "streams": [
                _assignment_json(s) for _, s in sorted(self.streams.items())
            ],
        }
        consumers = [{"stream": c.stream, "name": c.name, "config": c.config, "created_ns": c.created_ns}
                     for _, mine in sorted(self.consumers.items()) for _, c in sorted(mine.items())]
        if consumers:  # (absent when there are none: older snapshots read the same)
            body["consumers"] = consumers
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def restore(cls, data: bytes) -> MetaState:
        d = json.loads(data)
        state = cls(applied=int(d["applied"]))
        for s in d["servers"]:
            state.servers[s["node_id"]] = ServerRecord(s["node_id"], s["name"], s["cluster"], tuple(s["tags"]))
        for s in d["streams"]:
            state.streams[s["name"]] = _assignment_of(s)
        for c in d.get("consumers", ()):
            ca = ConsumerAssignment(str(c["stream"]), str(c["name"]), dict(c["config"]), int(c["created_ns"]))
            state.consumers.setdefault(ca.stream, {})[ca.name] = ca
        return state

    def digest(self) -> str:
        """Content hash of the whole state, insertion order ignored (replicas must agree)."""
        return hashlib.sha256(self.snapshot()).hexdigest()


def _assignment_json(s: StreamAssignment) -> dict[str, Any]:
    body: dict[str, Any] = {"name": s.name, "config": s.config, "group": s.group, "peers": list(s.peers),
                            "created_ns": s.created_ns}
    if s.members:
        body["members"] = list(s.members)
    if s.initial is not None:
        body["initial"] = list(s.initial)
    if s.prior_config is not None:
        body["prior_config"] = s.prior_config
        body["prior_peers"] = list(s.prior_peers)
    return body


def _assignment_of(s: dict[str, Any]) -> StreamAssignment:
    initial = s.get("initial")
    return StreamAssignment(s["name"], s["config"], s["group"], tuple(s["peers"]), int(s["created_ns"]),
                            tuple(s.get("members", ())), None if initial is None else tuple(initial),
                            s.get("prior_config"), tuple(s.get("prior_peers", ())))


def _text(config: dict[str, Any]) -> str:
    return json.dumps(config, sort_keys=True, separators=(",", ":"))
