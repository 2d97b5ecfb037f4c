"""Fault-injecting TCP proxies on the cluster links (asyncio).

A ClusterNet has one plane of proxies for the route links and, for jetraft, a second plane for
the Raft links (jetraft's Raft transport has its own port; db.py points `--raft_peers` at these
proxies), and every fault (block, cut, delay, heal) applies to both planes alike.

Each node dials its peers' cluster ports through one proxy per ordered pair (src -> dst): node
src's routes point at the proxy, the proxy forwards to dst's real cluster port. A TCP connection
carries bytes both ways, so a fault on "traffic from a to b" applies to the upstream direction of
proxy (a -> b) and to the downstream direction of proxy (b -> a).

Each direction of each connection is two tasks joined by a bounded queue: a reader that stamps
chunks with the time they may be delivered (now + delay) and a writer that waits for that time and
for the direction to be open. A blocked direction therefore stalls (bytes are held, then TCP
back-pressure), it never drops bytes from the middle of a stream. A link that is cut in both
directions also resets its open connections and refuses new ones, like a firewall sending RSTs,
so the servers notice at once instead of after their ping timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Iterable

import attrs

LOOPBACK = "127.0.0.1"
CHUNK_BYTES = 65536
QUEUE_CHUNKS_MAX = 64


@attrs.define(eq=False)
class Direction:
    """Fault state of one direction of one link."""

    open: asyncio.Event = attrs.field(factory=asyncio.Event)
    delay_ms: float = 0.0

    def __attrs_post_init__(self) -> None:
        self.open.set()

    def block(self) -> None:
        self.open.clear()

    def unblock(self) -> None:
        self.open.set()

    @property
    def blocked(self) -> bool:
        return not self.open.is_set()


async def _pump_reader(reader: asyncio.StreamReader, queue: asyncio.Queue, direction: Direction) -> None:
    loop = asyncio.get_running_loop()
    while True:
        data = await reader.read(CHUNK_BYTES)
        await queue.put((loop.time() + direction.delay_ms / 1000.0, data))
        if not data:
            return


async def _pump_writer(writer: asyncio.StreamWriter, queue: asyncio.Queue, direction: Direction) -> None:
    loop = asyncio.get_running_loop()
    while True:
        due, data = await queue.get()
        wait_s = due - loop.time()
        if wait_s > 0:
            await asyncio.sleep(wait_s)  # injected latency, not synchronisation
        await direction.open.wait()
        if not data:
            with contextlib.suppress(OSError):
                writer.write_eof()
            return
        writer.write(data)
        await writer.drain()


@attrs.define(eq=False)
class LinkProxy:
    """Proxy for connections dialed by node `src` to node `dst`'s cluster port."""

    src: int
    dst: int
    target_port: int
    listen_port: int = 0
    up: Direction = attrs.field(factory=Direction)  # src -> dst bytes
    down: Direction = attrs.field(factory=Direction)  # dst -> src bytes
    refusing: bool = False
    accepted_count: int = 0
    _server: asyncio.base_events.Server | None = None
    _tasks: set[asyncio.Task] = attrs.field(factory=set)
    _writers: set[asyncio.StreamWriter] = attrs.field(factory=set)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, LOOPBACK, self.listen_port)
        self.listen_port = self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"nats-route://{LOOPBACK}:{self.listen_port}"

    @property
    def open_connections(self) -> int:
        return len(self._writers) // 2

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.accepted_count += 1
        if self.refusing:
            client_w.close()
            return
        try:
            server_r, server_w = await asyncio.open_connection(LOOPBACK, self.target_port)
        except OSError:
            client_w.close()
            return
        self._writers.update((client_w, server_w))
        try:
            await self._pipe(client_r, client_w, server_r, server_w)
        finally:
            self._writers.difference_update((client_w, server_w))
            for w in (client_w, server_w):
                w.close()

    async def _pipe(self, client_r, client_w, server_r, server_w) -> None:
        upq: asyncio.Queue = asyncio.Queue(QUEUE_CHUNKS_MAX)
        downq: asyncio.Queue = asyncio.Queue(QUEUE_CHUNKS_MAX)
        tasks = [
            asyncio.create_task(_pump_reader(client_r, upq, self.up)),
            asyncio.create_task(_pump_writer(server_w, upq, self.up)),
            asyncio.create_task(_pump_reader(server_r, downq, self.down)),
            asyncio.create_task(_pump_writer(client_w, downq, self.down)),
        ]
        self._tasks.update(tasks)
        try:
            # any pump ending with an error (reset, closed socket) ends the connection
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            if not any(t.exception() for t in done if not t.cancelled()):
                await asyncio.wait(tasks, return_when=asyncio.ALL_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._tasks.difference_update(tasks)

    def reset_connections(self) -> None:
        """Abort every open connection and end its pumps (a pump held by a blocked direction
        would otherwise keep the dead connection counted as open)."""
        for writer in list(self._writers):
            transport = writer.transport
            with contextlib.suppress(OSError, AttributeError):
                transport.abort()
        for task in list(self._tasks):
            task.cancel()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.reset_connections()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)


@attrs.define(eq=False)
class ClusterNet:
    """All link proxies of a cluster of n nodes and the faults applied to them."""

    links: dict[tuple[int, int], LinkProxy]
    raft_links: dict[tuple[int, int], LinkProxy] = attrs.field(factory=dict)  # jetraft's Raft port

    @classmethod
    async def start(cls, cluster_ports: list[int], raft_ports: list[int] | None = None) -> ClusterNet:
        """Proxies for the route links, and for the Raft links too when raft_ports are given."""
        links = await _start_links(cluster_ports)
        return cls(links, await _start_links(raft_ports) if raft_ports else {})

    def _planes(self) -> list[dict[tuple[int, int], LinkProxy]]:
        return [plane for plane in (self.links, self.raft_links) if plane]

    def _all_links(self) -> list[LinkProxy]:
        return [link for plane in self._planes() for link in plane.values()]

    def route_urls(self, src: int) -> list[str]:
        return [link.url for (s, _), link in sorted(self.links.items()) if s == src]

    def raft_ports(self, src: int) -> dict[int, int]:
        """dst -> the listen port of the proxy node src dials for dst's Raft port."""
        return {d: link.listen_port for (s, d), link in sorted(self.raft_links.items()) if s == src}

    def block(self, a: int, b: int) -> None:
        """Stop bytes flowing from node a to node b (one direction), on every plane."""
        for plane in self._planes():
            plane[(a, b)].up.block()
            plane[(b, a)].down.block()

    def cut(self, a: int, b: int) -> None:
        """Sever a and b both ways: block, reset open connections, refuse new ones."""
        self.block(a, b)
        self.block(b, a)
        for plane in self._planes():
            for link in (plane[(a, b)], plane[(b, a)]):
                link.refusing = True
                link.reset_connections()

    def partition(self, groups: Iterable[Iterable[int]]) -> list[tuple[int, int]]:
        """Cut every pair of nodes that are in different groups; returns the cut pairs."""
        group_of = {node: gi for gi, group in enumerate(groups) for node in group}
        cut = []
        for a, b in itertools.combinations(sorted(group_of), 2):
            if group_of[a] != group_of[b]:
                self.cut(a, b)
                cut.append((a, b))
        return cut

    def set_delay_ms(self, delay_ms: float) -> None:
        for link in self._all_links():
            link.up.delay_ms = delay_ms
            link.down.delay_ms = delay_ms

    def heal(self) -> None:
        for link in self._all_links():
            link.refusing = False
            link.up.unblock()
            link.down.unblock()
            link.up.delay_ms = 0.0
            link.down.delay_ms = 0.0

    def open_connections(self) -> dict[str, int]:
        """Open connections per proxy: route links as "s->d", Raft links as "raft:s->d"."""
        out = {f"{s}->{d}": link.open_connections for (s, d), link in sorted(self.links.items())}
        out.update({f"raft:{s}->{d}": link.open_connections for (s, d), link in sorted(self.raft_links.items())})
        return out

    async def close(self) -> None:
        for link in self._all_links():
            await link.close()


async def _start_links(target_ports: list[int]) -> dict[tuple[int, int], LinkProxy]:
    links = {}
    for src, dst in itertools.permutations(range(len(target_ports)), 2):
        link = LinkProxy(src, dst, target_ports[dst])
        await link.start()
        links[(src, dst)] = link
    return links
