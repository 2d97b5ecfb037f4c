"""`jetraft stream ...`, `jetraft servers ...`, `jetraft meta ...`: the admin CLI.

How it works: every command connects with nats-py to the servers given by `-s/--server` (comma
separated URLs; NATS_URL otherwise) and speaks the JetStream API only, so it works against any
server of the cluster (and the read-only ones against nats-server). Listings are rich tables.
`stream move` and `stream scale` send a STREAM.UPDATE and then, unless `--no-wait`, show
progress bars fed by the stream leader's view (stream info): one for the move (`cluster.move`:
desired peers that are caught-up voters, servers still leaving) and one per replica that is
behind, filling as its lag (log entries behind the leader) shrinks from the largest lag seen,
until the group is exactly the new set and every replica is current. `stream catchup` shows
the same replica bars without a change (a replica catching up after a restart).
API errors print nats-server's description and code, with a hint for the common ones (unknown
stream, no server matches the placement, more replicas than servers), and exit with status 1.

(`jetraft server` runs a server, so the server admin commands are `jetraft servers ls|remove`.)
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

DEFAULT_URL = "nats://127.0.0.1:4222"
REQUEST_TIMEOUT_S = 5.0
POLL_S = 0.2
console = Console()
server_option = click.option("-s", "--server", "urls", default=lambda: os.environ.get("NATS_URL", DEFAULT_URL),
                             show_default=DEFAULT_URL, help="Server URLs, comma separated.")


class AdminError(click.ClickException):
    pass


async def _request(urls: str, subject: str, body: dict[str, Any] | None = None,
                   timeout_s: float = REQUEST_TIMEOUT_S) -> dict[str, Any]:
    async with _connected(urls) as nc:
        return await _call(nc, subject, body, timeout_s)


class _connected:
    def __init__(self, urls: str) -> None:
        self.urls = [u.strip() for u in urls.split(",") if u.strip()]
        self.nc: Any = None

    async def __aenter__(self) -> Any:
        import nats

        try:
            self.nc = await nats.connect(self.urls, connect_timeout=2, max_reconnect_attempts=1)
        except Exception as exc:  # noqa: BLE001 - a clear message instead of a traceback
            raise AdminError(f"cannot connect to {', '.join(self.urls)}: {exc}") from None
        return self.nc

    async def __aexit__(self, *exc: object) -> None:
        await self.nc.close()


async def _call(nc: Any, subject: str, body: dict[str, Any] | None, timeout_s: float = REQUEST_TIMEOUT_S) -> dict[str, Any]:
    payload = json.dumps(body).encode() if body is not None else b""
    try:
        msg = await nc.request(subject, payload, timeout=timeout_s)
    except Exception as exc:  # noqa: BLE001 - timeouts and no responders
        raise AdminError(f"no answer to {subject}: {type(exc).__name__}") from None
    reply = json.loads(msg.data)
    error = reply.get("error")
    if error:
        hint = ERROR_HINTS.get(error.get("err_code"), "")
        raise AdminError(f"{error.get('description')} (error {error.get('err_code')}){hint}")
    return reply


ERROR_HINTS = {
    10059: "\n  `jetraft stream ls` lists the streams",
    10005: "\n  no (or too few) servers have the placement's cluster and tags; `jetraft servers ls` shows them",
    10023: "\n  more replicas than servers in the meta group; `jetraft servers ls` shows them",
    10124: "\n  wait for it to finish, or `jetraft stream cancel-move`",
}


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


# -- stream -------------------------------------------------------------------------------------
@click.group("stream")
def stream() -> None:
    """List, inspect, create, delete, move, scale and step down streams."""


def _servers_of(info: dict[str, Any]) -> list[str]:
    c = info.get("cluster") or {}
    names = [c["leader"]] if c.get("leader") else []
    return names + sorted(r["name"] for r in c.get("replicas", []))


@stream.command("ls")
@server_option
def stream_ls(urls: str) -> None:
    """A table of every stream."""
    reply = run(_request(urls, "$JS.API.STREAM.LIST", {}))
    table = Table(title="streams")
    for column in ("name", "subjects", "replicas", "leader", "servers", "messages", "bytes", "placement"):
        table.add_column(column)
    for info in reply.get("streams") or []:
        cfg, state = info["config"], info["state"]
        placement = cfg.get("placement") or {}
        where = " ".join([placement.get("cluster") or "", *(placement.get("tags") or [])]).strip()
        table.add_row(cfg["name"], ",".join(cfg.get("subjects") or []), str(cfg.get("num_replicas", 1)),
                      (info.get("cluster") or {}).get("leader") or "-", ",".join(_servers_of(info)),
                      str(state["messages"]), str(state["bytes"]), where or "-")
    console.print(table)


@stream.command("info")
@click.argument("name")
@server_option
def stream_info(name: str, urls: str) -> None:
    """Config, state and replicas of one stream (and a move in progress)."""
    info = run(_request(urls, f"$JS.API.STREAM.INFO.{name}"))
    cfg, state, cluster = info["config"], info["state"], info.get("cluster") or {}
    console.print(f"[bold]{name}[/] subjects={cfg.get('subjects')} replicas={cfg.get('num_replicas')} "
                  f"placement={cfg.get('placement') or '-'}")
    console.print(f"messages={state['messages']} bytes={state['bytes']} first={state['first_seq']} "
                  f"last={state['last_seq']}")
    table = Table(title=f"replicas (group {cluster.get('raft_group', '-')})")
    for column in ("server", "role", "current", "lag", "offline"):
        table.add_column(column)
    if cluster.get("leader"):
        table.add_row(cluster["leader"], "leader", "yes", "0", "no")
    for r in cluster.get("replicas", []):
        table.add_row(r["name"], "replica", "yes" if r.get("current") else "no", str(r.get("lag", "-")),
                      "yes" if r.get("offline") else "no")
    console.print(table)
    move = cluster.get("move")
    if move:
        console.print(f"moving to {','.join(move['target'])}: {move['done']}/{move['total']} caught up, "
                      f"leaving: {','.join(move['leaving']) or '-'}")


@stream.command("add")
@click.argument("name")
@click.option("--subjects", required=True, help="Comma separated subjects.")
@click.option("--replicas", default=1, show_default=True, type=int)
@click.option("--tags", default="", help="Placement tags, comma separated.")
@click.option("--cluster", "cluster_name", default="", help="Placement cluster.")
@server_option
def stream_add(name: str, subjects: str, replicas: int, tags: str, cluster_name: str, urls: str) -> None:
    """Create a stream."""
    body: dict[str, Any] = {"name": name, "subjects": [s for s in subjects.split(",") if s],
                            "num_replicas": replicas, "storage": "file"}
    placement = _placement(tags, cluster_name)
    if placement:
        body["placement"] = placement
    info = run(_request(urls, f"$JS.API.STREAM.CREATE.{name}", body, timeout_s=15.0))
    console.print(f"created {name} on {','.join(_servers_of(info)) or '(electing a leader)'}")


def _placement(tags: str, cluster_name: str) -> dict[str, Any]:
    placement: dict[str, Any] = {}
    if tags:
        placement["tags"] = [t.strip() for t in tags.split(",") if t.strip()]
    if cluster_name:
        placement["cluster"] = cluster_name
    return placement


@stream.command("rm")
@click.argument("name")
@server_option
def stream_rm(name: str, urls: str) -> None:
    """Delete a stream and its data on every replica."""
    run(_request(urls, f"$JS.API.STREAM.DELETE.{name}"))
    console.print(f"deleted {name}")


async def _update(urls: str, name: str, change: Callable[[dict[str, Any]], None], wait: bool,
                  timeout_s: float) -> dict[str, Any]:
    async with _connected(urls) as nc:
        info = await _call(nc, f"$JS.API.STREAM.INFO.{name}", None)
        cfg = info["config"]
        change(cfg)
        await _call(nc, f"$JS.API.STREAM.UPDATE.{name}", cfg, timeout_s=15.0)
        if not wait:
            return cfg
        await _follow(nc, name, int(cfg.get("num_replicas") or 1), timeout_s)
        return cfg


def replica_lags(info: dict[str, Any]) -> dict[str, int | None]:
    """Each replica's lag behind the leader (log entries) from stream info; None when offline."""
    out: dict[str, int | None] = {}
    for r in (info.get("cluster") or {}).get("replicas", []):
        out[r["name"]] = None if r.get("offline") else int(r.get("lag") or 0)
    return out


class CatchUp:
    """Per-replica catch-up: a replica's bar total is the largest lag seen for it, its progress
    how much of that it has made up (pure bookkeeping, fed one stream info at a time)."""

    def __init__(self) -> None:
        self.most: dict[str, int] = {}

    def feed(self, info: dict[str, Any]) -> list[tuple[str, int, int, str]]:
        """(replica, done, total, text) for every replica seen behind so far."""
        rows = []
        for name, lag in sorted(replica_lags(info).items()):
            if lag is not None:
                self.most[name] = max(self.most.get(name, 0), lag)
            if name not in self.most or self.most[name] == 0:
                continue
            total = self.most[name]
            if lag is None:
                rows.append((name, 0, total, f"{name}: offline"))
            else:
                text = f"{name}: lag {lag}" if lag else f"{name}: current"
                rows.append((name, total - lag, total, text))
        return rows


def settled(info: dict[str, Any], replicas: int) -> bool:
    """The group is exactly `replicas` servers, no move in progress, every replica current."""
    cluster = info.get("cluster") or {}
    current = all(r.get("current") for r in cluster.get("replicas", []))
    return "move" not in cluster and len(_servers_of(info)) == replicas and current


async def _follow(nc: Any, name: str, replicas: int | None, timeout_s: float) -> None:
    """Progress bars until the stream is settled (`replicas` servers, or as many as it has)."""
    deadline = time.monotonic() + timeout_s
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TimeElapsedColumn())
    catch_up = CatchUp()
    with Progress(*columns, console=console) as bar:
        overall = bar.add_task(f"{name}: waiting for the leader", total=replicas or 1)
        tasks: dict[str, Any] = {}
        while time.monotonic() < deadline:  # bounded by the deadline
            try:
                info = await _call(nc, f"$JS.API.STREAM.INFO.{name}", None, timeout_s=1.0)
            except AdminError:
                await asyncio.sleep(POLL_S)
                continue
            want = replicas or len(_servers_of(info))
            move = (info.get("cluster") or {}).get("move")
            if move:
                bar.update(overall, completed=move["done"], total=move["total"],
                           description=f"{name}: to {','.join(move['target'])}, leaving {','.join(move['leaving']) or '-'}")
            else:
                bar.update(overall, completed=min(len(_servers_of(info)), want), total=want,
                           description=f"{name}: on {','.join(_servers_of(info)) or '-'}")
            for replica, done, total, text in catch_up.feed(info):
                if replica not in tasks:
                    tasks[replica] = bar.add_task(text, total=total)
                bar.update(tasks[replica], completed=done, total=total, description=f"  {text}")
            if settled(info, want):
                return
            await asyncio.sleep(POLL_S)
    raise AdminError(f"{name} did not settle within {timeout_s:.0f}s (the move continues on the servers)")


wait_options = [click.option("--no-wait", is_flag=True, help="Return once the change is committed."),
                click.option("--timeout", "timeout_s", default=120.0, show_default=True)]


def _with(options: list[Any]) -> Callable[[Any], Any]:
    def wrap(fn: Any) -> Any:
        for option in reversed(options):
            fn = option(fn)
        return fn
    return wrap


@stream.command("move")
@click.argument("name")
@click.option("--tags", default="", help="New placement tags, comma separated.")
@click.option("--cluster", "cluster_name", default="", help="New placement cluster.")
@_with(wait_options)
@server_option
def stream_move(name: str, tags: str, cluster_name: str, no_wait: bool, timeout_s: float, urls: str) -> None:
    """Move a stream to servers matching new placement tags/cluster."""
    placement = _placement(tags, cluster_name)
    if not placement:
        raise AdminError("give --tags and/or --cluster")

    def change(cfg: dict[str, Any]) -> None:
        cfg["placement"] = placement

    run(_update(urls, name, change, not no_wait, timeout_s))
    console.print(f"{name}: placement {placement}")


@stream.command("scale")
@click.argument("name")
@click.argument("replicas", type=int)
@_with(wait_options)
@server_option
def stream_scale(name: str, replicas: int, no_wait: bool, timeout_s: float, urls: str) -> None:
    """Change a stream's replica count."""
    def change(cfg: dict[str, Any]) -> None:
        cfg["num_replicas"] = replicas

    run(_update(urls, name, change, not no_wait, timeout_s))
    console.print(f"{name}: {replicas} replicas")


@stream.command("cancel-move")
@click.argument("name")
@server_option
def stream_cancel_move(name: str, urls: str) -> None:
    """Cancel a move or scale in progress: config and peers go back."""
    run(_request(urls, f"$JS.API.STREAM.CANCEL_MOVE.{name}"))
    console.print(f"{name}: move cancelled")


@stream.command("peer-remove")
@click.argument("name")
@click.argument("server_name")
@server_option
def stream_peer_remove(name: str, server_name: str, urls: str) -> None:
    """Replace one server's replica of a stream with a newly placed one."""
    run(_request(urls, f"$JS.API.STREAM.PEER.REMOVE.{name}", {"peer": server_name}))
    console.print(f"{name}: removing {server_name}, a replacement is being placed")


@stream.command("catchup")
@click.argument("name")
@click.option("--timeout", "timeout_s", default=120.0, show_default=True)
@server_option
def stream_catchup(name: str, timeout_s: float, urls: str) -> None:
    """Show replicas catching up (lag behind the leader) until every one is current."""
    async def follow() -> None:
        async with _connected(urls) as nc:
            await _call(nc, f"$JS.API.STREAM.INFO.{name}", None)  # unknown stream: a clear error
            await _follow(nc, name, None, timeout_s)

    run(follow())
    console.print(f"{name}: every replica is current")


stepdown_options = [click.option("--preferred", default="", help="Server to hand leadership to."),
                    click.option("--tags", default="", help="Or: a server with these tags (comma separated)."),
                    click.option("--cluster", "cluster_name", default="", help="Or: a server in this cluster.")]


def _stepdown_body(preferred: str, tags: str, cluster_name: str) -> dict[str, Any] | None:
    placement = _placement(tags, cluster_name)
    if preferred:
        placement["preferred"] = preferred
    return {"placement": placement} if placement else None


@stream.command("stepdown")
@click.argument("name")
@_with(stepdown_options)
@server_option
def stream_stepdown(name: str, preferred: str, tags: str, cluster_name: str, urls: str) -> None:
    """Make the stream's leader step down (to a preferred server, or one with tags/cluster)."""
    async def stepdown() -> str:
        async with _connected(urls) as nc:
            await _call(nc, f"$JS.API.STREAM.LEADER.STEPDOWN.{name}", _stepdown_body(preferred, tags, cluster_name))
            return await _new_leader(nc, name)

    console.print(f"{name}: leader is now {run(stepdown())}")


async def _new_leader(nc: Any, name: str, timeout_s: float = 10.0) -> str:
    """The stream's leader once one answers: right after a stepdown the old leader no longer
    answers and the new one is still taking over, so one request may go unanswered."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:  # bounded by the deadline
        try:
            info = await _call(nc, f"$JS.API.STREAM.INFO.{name}", None, timeout_s=1.0)
        except AdminError:
            await asyncio.sleep(POLL_S)
            continue
        leader = (info.get("cluster") or {}).get("leader")
        if leader:
            return str(leader)
        await asyncio.sleep(POLL_S)
    return "(still electing)"


# -- servers and meta -----------------------------------------------------------------------------
@click.group("servers")
def servers() -> None:
    """List JetStream servers, remove one from the cluster."""


@servers.command("ls")
@server_option
def servers_ls(urls: str) -> None:
    """A table of the meta group's servers (tags, streams hosted, online)."""
    reply = run(_request(urls, "$JSC.SERVERS"))
    table = Table(title=f"servers (meta leader {reply.get('leader') or '-'})")
    for column in ("name", "cluster", "tags", "streams", "online", "meta"):
        table.add_column(column)
    for s in reply.get("servers", []):
        table.add_row(s["name"], s.get("cluster") or "-", ",".join(s.get("tags") or []) or "-",
                      str(s.get("streams", 0)), "yes" if s.get("online") else "no", s.get("role", "-"))
    console.print(table)


@servers.command("remove")
@click.argument("server_name")
@server_option
def servers_remove(server_name: str, urls: str) -> None:
    """Remove a (stopped) server: it leaves the meta group and its replicas are re-placed."""
    run(_request(urls, "$JS.API.SERVER.REMOVE", {"peer": server_name}, timeout_s=15.0))
    console.print(f"removed {server_name}")


@click.group("meta")
def meta() -> None:
    """The meta group."""


@meta.command("stepdown")
@_with(stepdown_options)
@server_option
def meta_stepdown(preferred: str, tags: str, cluster_name: str, urls: str) -> None:
    """Make the meta leader step down (to a preferred server, or one with tags/cluster)."""
    run(_request(urls, "$JS.API.META.LEADER.STEPDOWN", _stepdown_body(preferred, tags, cluster_name)))
    console.print("meta leader stepped down")
