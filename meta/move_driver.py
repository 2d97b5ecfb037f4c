"""The shell that walks a stream group's Raft membership to the peers the meta group desires.

How it works: every server runs one `MoveDriver`. Every MOVE_ROUND_S it looks at the streams
whose committed assignment is unsettled (a scale, move or peer removal is in progress:
`StreamAssignment.moving`) and whose local replica leads its group, asks the pure planner
(meta/moves.py) for the next step and carries it out with the Raft host: add a learner, promote
it, remove a member (`RaftHost.propose_config_change`, one change at a time: the core refuses
a second while the first is uncommitted), or hand leadership to a desired peer. Before any voter
leaves, the desired voters' content hashes (`$JSC.DIGEST.<server>.<stream>`) must equal the
leader's at the same applied index. Once the membership is the desired set the driver publishes
`$JSC.SETTLE`; the meta leader proposes `SettlePeers` and, once committed, the reconciler stops
(and deletes) the replicas of servers that left. A leader that loses leadership simply stops;
the next leader picks up from the membership in its log, so crashes and leader changes resume
the walk rather than restart it.
"""

from __future__ import annotations

import json
from typing import Any

import structlog
import trio

from meta.api_moves import stepdown_chooser
from meta.assignments import StreamAssignment
from meta.moves import (
    AddLearner,
    Done,
    GroupView,
    Promote,
    Remove,
    Step,
    TransferLeader,
    Verify,
    next_step,
    progress,
)
from raft.driver import NotLeader, OutcomeUnknown, UnknownGroup
from raft.types import ConfigChange, ConfigChangeType

MOVE_ROUND_S = 0.2
STEPS_PER_ROUND = 4
CHANGE_TIMEOUT_S = 3.0
DIGEST_TIMEOUT_S = 1.0
VERIFY_ATTEMPTS = 5
SETTLE_SUBJECT = "$JSC.SETTLE"

_CHANGE_TYPES = {AddLearner: ConfigChangeType.ADD_LEARNER, Promote: ConfigChangeType.PROMOTE_LEARNER,
                 Remove: ConfigChangeType.REMOVE}


def group_view(node: Any) -> GroupView:
    progress_of = getattr(node, "_progress", {})
    match = {peer: pr.match for peer, pr in progress_of.items()}
    match[node.node_id] = node.last_index
    m = node.membership
    return GroupView(node.node_id, m.voters, m.learners, match, node.commit_index)


class MoveDriver:
    def __init__(self, svc: Any) -> None:
        self.svc = svc
        self.verified: set[tuple[str, tuple[str, ...]]] = set()
        if svc.js is not None:  # stream stepdowns choose by placement with the meta state's records
            svc.js.stepdown_chooser = stepdown_chooser(svc)
        self.log = structlog.get_logger("meta.moves").bind(node=svc.node_id)

    async def run(self) -> None:
        while True:  # until cancelled
            for sa in list(self.svc.state.streams.values()):
                if sa.moving:
                    try:
                        await self.drive(sa)
                    except (NotLeader, UnknownGroup, OutcomeUnknown):
                        pass
                    except Exception as exc:  # noqa: BLE001 - one stream must not stop the others
                        self.log.error("moves.failed", stream=sa.name, error=repr(exc), exc_info=True)
            await trio.sleep(MOVE_ROUND_S)

    def _leading(self, sa: StreamAssignment) -> Any:
        rt = self.svc.js.by_group.get(sa.group)
        return rt if rt is not None and rt.leading and not rt.closed else None

    async def drive(self, sa: StreamAssignment) -> None:
        """Up to STEPS_PER_ROUND membership steps for one stream this server leads."""
        for _ in range(STEPS_PER_ROUND):
            rt = self._leading(sa)
            if rt is None:
                return
            node = self.svc.host.node(sa.group)
            view = group_view(node)
            key = (sa.group, tuple(sorted(sa.peers)))
            step = next_step(view, sa.peers, verified=key in self.verified)
            self._show(rt, view, sa)
            if not await self._carry_out(sa, rt, step, key):
                return

    def _show(self, rt: Any, view: GroupView, sa: StreamAssignment) -> None:
        """Stream info (the leader's view) lists every member and how far the move is."""
        rt.peers = tuple(sorted(view.voters | view.learners))
        p = progress(view, sa.peers)
        rt.move_progress = {"done": p.done, "total": p.total,
                            "target": sorted(self.svc.peer_name(x) for x in sa.peers),
                            "leaving": sorted(self.svc.peer_name(x) for x in p.leaving)}

    async def _carry_out(self, sa: StreamAssignment, rt: Any, step: Step, key: tuple) -> bool:
        """Do `step`; True when the next step may follow right away."""
        if isinstance(step, (AddLearner, Promote, Remove)):
            change = ConfigChange(_CHANGE_TYPES[type(step)], step.peer)
            with trio.move_on_after(CHANGE_TIMEOUT_S):
                await self.svc.host.propose_config_change(sa.group, change)
                self.log.info("moves.changed", stream=sa.name, change=change.type.value, peer=step.peer)
                return True
            return False
        if isinstance(step, TransferLeader):
            self.log.info("moves.transfer", stream=sa.name, to=step.peer)
            self.svc.js.start_hand_over(rt, step.peer)  # consumers' state committed first
            return False
        if isinstance(step, Verify):
            if await self.verify(sa, step.peers):
                self.verified.add(key)
                return True
            return False
        if isinstance(step, Done):
            body = json.dumps({"name": sa.name, "group": sa.group, "peers": list(sa.peers)}).encode()
            self.svc.server.publish_internal(SETTLE_SUBJECT, None, None, body)
            rt.move_progress = None
        return False

    async def verify(self, sa: StreamAssignment, peers: tuple[str, ...]) -> bool:
        """All of `peers` (and this leader) report the same content hash at one applied index."""
        names = sorted({self.svc.peer_name(p) for p in peers} | {self.svc.server.server_name})
        for _ in range(VERIFY_ATTEMPTS):
            answers: dict[str, Any] = {}

            async def ask(name: str) -> None:
                raw = await self.svc.requester.request(f"$JSC.DIGEST.{name}.{sa.name}", b"", DIGEST_TIMEOUT_S)
                answers[name] = json.loads(raw) if raw else None

            async with trio.open_nursery() as nursery:
                for name in names:
                    nursery.start_soon(ask, name)
            got = [answers.get(n) for n in names]
            if all(g is not None for g in got) and len({(g["applied"], g["digest"]) for g in got}) == 1:
                self.log.info("moves.verified", stream=sa.name, servers=names, applied=got[0]["applied"])
                return True
            await trio.sleep(0.05)  # replicas were at different indexes: look again
        return False
