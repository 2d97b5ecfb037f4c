"""JetStream and Raft figures for natsd's monitoring: /jsz, /healthz, /varz's block, /metrics.

How it works: natsd may not import JetStream (design.md's layering), so when JetStream starts it
calls `start_monitoring(js, nursery)`, which registers providers on `server.monitor` (see
natsd/monitor.py) and runs one background task. Providers are synchronous (they answer inside an
HTTP handler or a `$SYS` callback), while a stream's state lives in SQLite, which must not be
read on the event loop. So the task keeps a cache: every `REFRESH_S`, while someone asked for
these figures in the last `DEMAND_WINDOW_S` (otherwise it sleeps until asked), it reads each
stream's store state and consumer infos off the event loop (`rt.read`, the streams' reader
connection). Raft figures (role, term, commit, applied, last contact, repair-needed) are in
memory and read live.

Stream info's `cluster` block gets the same Raft figures (`raft`: role, term, applied, commit,
last index, lag, last contact, repair-needed) by wrapping the clustered service's
`cluster_info` on the instance.

Health of a replica (clustered): a follower cannot see from its own log how far behind the
leader it is, so the task also asks each stream's leader for the stream info (routed
`$JS.API.STREAM.INFO.<stream>`, whose `cluster.replicas` is the leader's view of every replica:
`current`, `lag`). A local replica is current when it is not repairing, knows its leader, has
heard from it recently, has applied everything the leader had committed when asked, its store
holds at least its latest snapshot (a snapshot is acknowledged before it is restored into the
store), and the leader (last time we asked) reports it current: with no lag to become current,
then within `CURRENT_LAG_MAX_ENTRIES` to stay so (a busy stream always has entries in flight).
/healthz is
unhealthy while any local replica is not current, and (with or without `js-enabled-only`) until
the meta group has a leader.
"""

from __future__ import annotations

import json
import math
from bisect import bisect_left
from itertools import accumulate
from time import perf_counter
from typing import Any

import attrs
import structlog
import trio
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily

from jetstream.api import API_LEVEL
from jetstream.api_consumer import consumer_info
from jetstream.cluster_codec import entry_of
from jetstream.info import rfc3339_ns, stream_state_json
from jetstream.runtime import StreamClosed

REFRESH_S = 0.25
IDLE_CHECK_S = 1.0
DEMAND_WINDOW_S = 30.0
LEADER_VIEW_TIMEOUT_S = 1.0
CURRENT_LAG_MAX_ENTRIES = 16
LEADER_VIEWS_CONCURRENT_MAX = 8
META_GROUP = "_meta_"  # meta/assignments.py's group id (jetstream may not import meta)
FSYNC_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
log = structlog.get_logger("jetstream.monitoring")


@attrs.define
class StreamView:
    """What the refresher last read for one stream."""

    state: Any = None  # the store's StoreState
    consumers: list[dict[str, Any]] = attrs.Factory(list)
    leader_view: dict[str, Any] | None = None  # stream info "cluster" from the leader
    current: bool = False  # the leader's verdict on our replica (see judge_leader_view)
    was_current: bool = False  # reported current at least once since it last fell behind
    store_applied_entry: int = 0  # the Raft entry the store has fully applied (cached read)


@attrs.define
class Histogram:
    """A cumulative histogram (Prometheus semantics) of durations in seconds."""

    buckets: tuple[float, ...]
    bins: list[int] = attrs.Factory(list)  # per bucket, NOT cumulative (last: above all bounds)
    total: float = 0.0
    n: int = 0

    def observe(self, seconds: float) -> None:
        """One bisect and one increment (called once per commit on the publish path)."""
        bins = self.bins
        if not bins:
            bins = self.bins = [0] * (len(self.buckets) + 1)
        bins[bisect_left(self.buckets, seconds)] += 1
        self.total += seconds
        self.n += 1

    @property
    def counts(self) -> list[int]:
        """Cumulative counts per bucket bound (`le` semantics)."""
        return list(accumulate(self.bins[:-1])) if self.bins else [0] * len(self.buckets)

    def family(self, name: str, doc: str) -> HistogramMetricFamily:
        counts = self.counts
        buckets = [(str(b), c) for b, c in zip(self.buckets, counts, strict=True)]
        buckets.append(("+Inf", self.n))
        return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=self.total)


def start_monitoring(js: Any, nursery: trio.Nursery) -> JsMonitor | None:
    """Register the JetStream providers on `js.server.monitor` and start the refresher."""
    monitor = getattr(js.server, "monitor", None)
    if monitor is None:  # a stand-in server without monitoring (tests)
        return None
    mon = JsMonitor(js)
    monitor.register("jsz", mon.jsz)
    monitor.register("varz_jetstream", mon.varz_block)
    monitor.register("healthz", mon.healthz)
    monitor.register("metrics", mon.metrics)
    mon.time_fsyncs()
    if getattr(js, "host", None) is not None and callable(getattr(js, "cluster_info", None)):
        js.cluster_info = _with_raft_health(mon, js.cluster_info)
    nursery.start_soon(mon.run)
    return mon


def _with_raft_health(mon: JsMonitor, cluster_info: Any) -> Any:
    """Stream info's `cluster` block (the leader answers it) plus this node's Raft health of
    the group under `raft` (clients ignore unknown fields)."""
    def with_health(rt: Any) -> dict[str, Any]:
        block = cluster_info(rt)
        health = mon.raft_health(rt.group) if hasattr(rt, "group") else None
        return {**block, "raft": health} if health is not None else block
    return with_health


class JsMonitor:
    def __init__(self, js: Any) -> None:
        self.js = js
        self.server = js.server
        self.views: dict[str, StreamView] = {}
        self.demand_s = -math.inf
        self.wake = trio.Event()
        self.fsync = Histogram(FSYNC_BUCKETS_S)
        self.commits = Histogram(FSYNC_BUCKETS_S)
        self.requester: Any = None

    @property
    def host(self) -> Any:
        return getattr(self.js, "host", None)

    # -- the refresher --------------------------------------------------------------------------

    def demanded(self) -> None:
        self.demand_s = trio.current_time()
        self.wake.set()

    async def run(self) -> None:
        while True:  # until cancelled
            self.time_commits()
            if trio.current_time() - self.demand_s > DEMAND_WINDOW_S:
                self.wake = trio.Event()
                with trio.move_on_after(IDLE_CHECK_S):  # new streams get their commit timer
                    await self.wake.wait()
                continue
            try:
                await self.refresh()
            except Exception as exc:  # noqa: BLE001 - monitoring must never stop JetStream
                log.error("jetstream.monitoring_failed", error=repr(exc), exc_info=True)
            await trio.sleep(REFRESH_S)

    async def refresh(self) -> None:
        for name in [n for n in self.views if n not in self.js.streams]:
            del self.views[name]
        limiter = trio.CapacityLimiter(LEADER_VIEWS_CONCURRENT_MAX)
        async with trio.open_nursery() as nursery:
            for name, rt in list(self.js.streams.items()):
                view = self.views.setdefault(name, StreamView())
                try:
                    view.state, applied = await rt.read(lambda store: (store.state(), store.applied_index()))
                    view.store_applied_entry = entry_of(applied)
                    view.consumers = [await consumer_info(self.js, c) for c in list(rt.consumers.values())]
                except StreamClosed:
                    continue
                if self.host is not None and not getattr(rt, "leading", True):
                    nursery.start_soon(self._judge, name, view, limiter)

    async def _judge(self, name: str, view: StreamView, limiter: trio.CapacityLimiter) -> None:
        async with limiter:  # followers ask their leaders concurrently, a few at a time
            self.judge_leader_view(name, view, await self._leader_view(name))

    async def _leader_view(self, name: str) -> dict[str, Any] | None:
        """The stream leader's `cluster` block of the stream info (None: no answer)."""
        if self.requester is None:
            from jetstream.cluster_routing import Requester

            self.requester = Requester(self.server)
            self.requester.start()
        reply = await self.requester.request(f"$JS.API.STREAM.INFO.{name}", b"", LEADER_VIEW_TIMEOUT_S)
        try:
            cluster = json.loads(reply or b"").get("cluster")
        except (ValueError, AttributeError):
            return None
        return cluster if isinstance(cluster, dict) else None

    def time_commits(self) -> None:
        """Time each publish batch from proposal to commit+apply (its PubAcks go out right
        after): wraps every stream's `apply_batch` once (an instance attribute). A replicated
        stream's writer proposes through `_replicate` (which `apply_batch` calls too), so
        that is what is wrapped there."""
        hist = self.commits
        for rt in list(self.js.streams.values()):
            if rt.__dict__.get("_monitor_timed"):
                continue
            attr = "_replicate" if hasattr(rt, "_replicate") else "apply_batch"
            inner = getattr(rt, attr)

            async def timed(cmds: list[Any], *rest: Any, inner: Any = inner) -> Any:
                started = perf_counter()  # a duration only: the plain monotonic clock is cheaper
                try:
                    return await inner(cmds, *rest)
                finally:
                    if cmds and type(cmds[0]).__name__ == "Publish":
                        hist.observe(perf_counter() - started)
            setattr(rt, attr, timed)
            rt._monitor_timed = True

    def time_fsyncs(self) -> None:
        """Time every batch the Raft host persists (one fsync each): wraps its worker's save."""
        worker = getattr(self.host, "worker", None)
        save = getattr(worker, "save", None)
        if save is None:
            return
        hist = self.fsync

        async def timed_save(*args: Any, **kwargs: Any) -> Any:
            started = trio.current_time()
            try:
                return await save(*args, **kwargs)
            finally:
                hist.observe(trio.current_time() - started)
        worker.save = timed_save

    # -- Raft figures (live, in memory) ------------------------------------------------------

    def raft_health(self, group: str) -> dict[str, Any] | None:
        host = self.host
        if host is None:
            return None
        try:
            node = host.node(group)
        except KeyError:
            return None
        ticks = getattr(node, "_election_elapsed", 0)
        leading = node.role.name == "LEADER"
        lag = max(node.commit_index - node.applied_index, 0)
        if leading:
            progress = getattr(node, "_progress", {})
            lags = [max(node.last_index - p.match, 0) for peer, p in progress.items() if peer != host.node_id]
            lag = max(lags, default=0)
        return {
            "group": group, "role": node.role.name.lower(), "term": node.term,
            "leader": node.leader_id or "", "applied": node.applied_index,
            "commit": node.commit_index, "last_index": node.last_index, "lag": lag,
            "last_contact_ms": 0 if leading else int(ticks * host.tick_interval_s * 1000),
            "repair_needed": bool(node.repair_needed),
        }  # fmt: skip

    def replica_problem(self, name: str, rt: Any) -> str | None:
        """Why this server's replica of stream `name` is not current (None: it is)."""
        health = self.raft_health(rt.group)
        if health is None:
            return f"JetStream stream '{name}' has no Raft group running"
        if health["repair_needed"]:
            return f"JetStream stream '{name}' needs repair (catching up from a quorum)"
        if health["role"] == "leader":
            return None
        if not health["leader"]:
            return f"JetStream stream '{name}' has no leader"
        node = self.host.node(rt.group)
        if health["applied"] < health["commit"]:
            return f"JetStream stream '{name}' is not current (applying)"
        if getattr(node, "_election_elapsed", 0) >= getattr(node._cfg, "election_ticks", 10):
            return f"JetStream stream '{name}' has not heard from its leader"
        view = self.views.get(name, StreamView())
        if not view.current:
            return f"JetStream stream '{name}' is not current (catching up)"
        if view.store_applied_entry < node.snapshot_meta.index:
            return f"JetStream stream '{name}' is not current (restoring a snapshot)"
        leader_commit = int(((view.leader_view or {}).get("raft") or {}).get("commit", 0) or 0)
        if node.applied_index + (CURRENT_LAG_MAX_ENTRIES if view.was_current else 0) < leader_commit:
            return f"JetStream stream '{name}' is not current (applying)"
        view.was_current = True
        return None

    def judge_leader_view(self, name: str, view: StreamView, cluster: dict[str, Any] | None) -> None:
        """Update `view.current` from the leader's view of our replica: it becomes current when
        the leader sees no lag at all; once current it stays so while the lag is at most
        `CURRENT_LAG_MAX_ENTRIES` (a busy stream always has a few entries in flight) and the
        leader sees us online. No answer from the leader leaves the verdict as it was."""
        if cluster is None:
            return
        view.leader_view = cluster
        me = self.server.server_name
        mine = [r for r in cluster.get("replicas", ()) if r.get("name") == me]
        if not mine or mine[0].get("offline"):
            view.current = False
            return
        lag = int(mine[0].get("lag", 0) or 0)
        view.current = lag == 0 or (view.current and lag <= CURRENT_LAG_MAX_ENTRIES)
        if not view.current:
            view.was_current = False

    # -- providers --------------------------------------------------------------------------------

    def healthz(self, query: dict[str, str]) -> list[str]:
        self.demanded()
        problems = []
        host = self.host
        if host is not None:
            try:
                meta = host.node(META_GROUP)
                if not meta.leader_id:
                    problems.append("JetStream has no meta leader")
            except KeyError:
                problems.append("JetStream meta group is not running")
        if query.get("js-enabled-only", "").lower() in ("1", "true") and problems:
            return problems
        if host is not None:
            problems += self.assignment_problems()
            for name, rt in list(self.js.streams.items()):
                problem = self.replica_problem(name, rt)
                if problem:
                    problems.append(problem)
        return problems

    def assignment_problems(self) -> list[str]:
        """Streams the meta group assigned to this server that are not running here yet (e.g.
        right after a restart, before the reconciler re-opened them). The meta service is
        reached through the `peer_name` method it handed to the clustered JetStream (jetstream
        may not import meta); without it there is nothing to check."""
        meta = getattr(getattr(self.js, "peer_name", None), "__self__", None)
        state, node_id = getattr(meta, "state", None), getattr(meta, "node_id", None)
        if state is None or node_id is None:
            return []
        problems = []
        meta_node = self.host.node(META_GROUP) if META_GROUP in self.host.groups() else None
        if meta_node is not None and meta_node.applied_index < meta_node.commit_index:
            problems.append("JetStream meta group is not current (applying)")
        running = getattr(self.js, "by_group", {})
        for sa in list(getattr(state, "streams", {}).values()):
            hosts = sa.hosts() if callable(getattr(sa, "hosts", None)) else sa.peers
            if node_id in hosts and sa.group not in running:
                problems.append(f"JetStream stream '{sa.name}' is assigned here but not running yet")
        return problems

    def totals(self) -> dict[str, int]:
        memory = storage = messages = consumers = 0
        for name, rt in list(self.js.streams.items()):
            state = self.views.get(name, StreamView()).state
            consumers += len(rt.consumers)
            if state is None:
                continue
            messages += state.messages
            if rt.config.storage.value == "memory":
                memory += state.bytes
            else:
                storage += state.bytes
        return {"memory": memory, "storage": storage, "messages": messages, "consumers": consumers}

    def config_block(self) -> dict[str, Any]:
        opts = self.server.options
        return {"max_memory": opts.max_memory_store_bytes, "max_storage": opts.max_file_store_bytes,
                "store_dir": str(self.js.store_dir), "sync_interval": 0, "strict": True}

    def stats_block(self) -> dict[str, Any]:
        t = self.totals()
        ha = sum(1 for rt in self.js.streams.values() if len(getattr(rt, "peers", ())) > 1)
        return {"memory": t["memory"], "storage": t["storage"], "reserved_memory": 0,
                "reserved_storage": 0, "accounts": 1, "ha_assets": ha,
                "api": {"level": API_LEVEL, "total": self.js.api_total, "errors": self.js.api_errors}}

    def varz_block(self) -> dict[str, Any]:
        self.demanded()
        block: dict[str, Any] = {"config": self.config_block(), "stats": self.stats_block(),
                                 "limits": {}}
        meta = self.meta_cluster()
        if meta is not None:
            block["meta"] = meta
        return block

    def meta_cluster(self) -> dict[str, Any] | None:
        host = self.host
        if host is None:
            return None
        try:
            node = host.node(META_GROUP)
        except KeyError:
            return None
        leader = node.leader_id
        name_of = getattr(self.js, "peer_name", lambda peer: peer)
        return {"name": getattr(self.js, "cluster_name", ""), "leader": name_of(leader) if leader else "",
                "peer": host.node_id, "cluster_size": len(node.membership.voters),
                "raft": self.raft_health(META_GROUP),
                "replicas": [{"name": name_of(p), "peer": p, "current": True}
                             for p in sorted(node.membership.voters) if p != host.node_id]}

    def jsz(self, query: dict[str, str]) -> dict[str, Any]:
        self.demanded()
        t = self.totals()
        doc: dict[str, Any] = {**self.stats_block(), "config": self.config_block(), "limits": {},
                               "streams": len(self.js.streams), "consumers": t["consumers"],
                               "messages": t["messages"], "bytes": t["memory"] + t["storage"]}
        meta = self.meta_cluster()
        if meta is not None:
            doc["meta_cluster"] = meta
        wants = {k: query.get(k, "").lower() in ("1", "true", "yes") for k in ("accounts", "streams", "consumers", "config")}
        if wants["accounts"] or wants["streams"] or wants["consumers"]:
            account = {"name": "$G", "id": "$G", **self.stats_block()}
            if wants["streams"] or wants["consumers"]:
                account["stream_detail"] = [self.stream_detail(n, rt, wants["consumers"], wants["config"])
                                            for n, rt in sorted(self.js.streams.items())]
            doc["account_details"] = [account]
        doc["total"] = 1
        return doc

    def stream_detail(self, name: str, rt: Any, consumers: bool, config: bool) -> dict[str, Any]:
        view = self.views.get(name, StreamView())
        state = stream_state_json(view.state, len(rt.consumers)) if view.state is not None else {
            "messages": 0, "bytes": 0, "first_seq": 0, "last_seq": 0, "consumer_count": len(rt.consumers)}
        detail: dict[str, Any] = {"name": name, "created": rfc3339_ns(rt.created_ns),
                                  "cluster": self.stream_cluster(name, rt), "state": state}
        if config:
            detail["config"] = rt.config.to_json()
        if consumers:
            detail["consumer_detail"] = list(view.consumers)
        return detail

    def stream_cluster(self, name: str, rt: Any) -> dict[str, Any]:
        group = getattr(rt, "group", None)
        if group is None or self.host is None:
            return {"leader": self.server.server_name}
        if getattr(rt, "leading", False):
            cluster = dict(self.js.cluster_info(rt))
        else:
            cluster = dict(self.views.get(name, StreamView()).leader_view or {})
            cluster.setdefault("name", getattr(self.js, "cluster_name", ""))
            cluster.setdefault("raft_group", group)
            health = self.raft_health(group)
            if health and health["leader"] and not cluster.get("leader"):
                cluster["leader"] = self.js.peer_name(health["leader"])
        cluster["raft"] = self.raft_health(group)
        cluster["current"] = self.replica_problem(name, rt) is None
        return cluster

    def metrics(self) -> list[Any]:
        self.demanded()
        labels = ["server_name", "stream"]
        msgs = GaugeMetricFamily("jetraft_stream_messages", "Messages in the stream.", labels=labels)
        size = GaugeMetricFamily("jetraft_stream_bytes", "Bytes in the stream.", labels=labels)
        lead = GaugeMetricFamily("jetraft_stream_leader", "1 if this server leads the stream.", labels=labels)
        me = self.server.server_name
        for name, rt in sorted(self.js.streams.items()):
            state = self.views.get(name, StreamView()).state
            msgs.add_metric([me, name], state.messages if state else 0)
            size.add_metric([me, name], state.bytes if state else 0)
            lead.add_metric([me, name], 1 if getattr(rt, "leading", True) else 0)
        families: list[Any] = [msgs, size, lead]
        families.append(self.commits.family(
            "jetraft_publish_commit_seconds", "Publish batch latency from proposal to commit "
            "(quorum fsync) and apply; the PubAcks go out right after."))
        if self.host is not None:
            families += self.raft_metrics(me)
        return families

    def raft_metrics(self, me: str) -> list[Any]:
        labels = ["server_name", "group"]
        term = GaugeMetricFamily("jetraft_raft_term", "Current Raft term.", labels=labels)
        lag = GaugeMetricFamily("jetraft_raft_commit_lag", "Entries behind (leader: slowest "
                                "follower; follower: committed but not applied).", labels=labels)
        applied = GaugeMetricFamily("jetraft_raft_applied_index", "Last applied index.", labels=labels)
        repair = GaugeMetricFamily("jetraft_raft_repair_needed", "1 while repairing.", labels=labels)
        for group in self.host.groups():
            health = self.raft_health(group)
            if health is None:
                continue
            term.add_metric([me, group], health["term"])
            lag.add_metric([me, group], health["lag"])
            applied.add_metric([me, group], health["applied"])
            repair.add_metric([me, group], 1 if health["repair_needed"] else 0)
        fsync = self.fsync.family("jetraft_raft_persist_seconds", "Raft log batch persist (fsync) latency.")
        return [term, lag, applied, repair, fsync]
