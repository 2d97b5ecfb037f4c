"""HTTP monitoring (`-m/--http_port`) and the registry of monitoring providers.

How it works: every `Server` owns one `Monitor`. When `http_port` is set, `start()` listens on
it and serves nats-server's endpoints: /varz, /connz, /subsz, /routez (natsd/monitor_views.py),
/healthz, /jsz and /metrics (Prometheus text, natsd/monitor_metrics.py). HTTP/1.1 framing is
done by h11 (a sans-IO HTTP library): this module only moves bytes between a trio stream and an
`h11.Connection`, one request at a time per connection (keep-alive, bounded by a request count
and an idle timeout). Every response is JSON (or Prometheus text), computed on the event loop
from live state; nothing here blocks.

natsd knows nothing of JetStream or Raft (design.md's layering), so the parts of /jsz, /healthz,
/varz and /metrics that describe them come from *providers* that the layers above register when
they start (jetstream/monitoring.py):

    server.monitor.register("jsz", fn)            # fn(query: dict[str, str]) -> dict
    server.monitor.register("varz_jetstream", fn) # fn() -> dict  (/varz's "jetstream" block)
    server.monitor.register("healthz", fn)        # fn(query) -> list[str]  (problems; [] = ok)
    server.monitor.register("metrics", fn)        # fn() -> iterable of prometheus metric families

`start()` also starts the `$SYS.REQ.SERVER...` responders (natsd/sysreq.py), which answer with
the same documents.
"""

from __future__ import annotations

import collections
import json
import os
import time
import urllib.parse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import h11
import structlog
import trio

from natsd import monitor_views as views

if TYPE_CHECKING:
    from natsd.server import Server

Provider = Callable[..., Any]
HTTP_IDLE_TIMEOUT_S = 10.0
HTTP_REQUESTS_PER_CONNECTION_MAX = 1000
HTTP_RECEIVE_BYTES = 16 * 1024
HTTP_BODY_BYTES_MAX = 64 * 1024
HTTP_CONNECTIONS_MAX = 64
ENDPOINTS = ("/varz", "/connz", "/subsz", "/subscriptionsz", "/routez", "/jsz", "/healthz", "/metrics")


class Monitor:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.log = structlog.get_logger("natsd.monitor")
        self.providers: dict[str, Provider] = {}
        self.http_port: int | None = None
        self.http_requests: collections.Counter[str] = collections.Counter()
        self.start_s = time.time()
        self._cpu_sample = (time.monotonic(), _cpu_seconds())
        self._cpu_percent = 0.0
        self._http_limiter = trio.CapacityLimiter(HTTP_CONNECTIONS_MAX)
        self.ready = trio.Event()
        # with a system account, only its users may publish to `$SYS.` (natsd/sysreq.py); with
        # none, `$SYS.` subjects are ordinary ones (nothing of the server answers there)
        self.sys_gate = bool(server.options.system_users)

    # -- providers --------------------------------------------------------------------------

    def register(self, name: str, fn: Provider) -> None:
        """Add (or replace) the provider `name` (see the module docstring)."""
        self.providers[name] = fn

    def unregister(self, name: str, fn: Provider | None = None) -> None:
        if fn is None or self.providers.get(name) is fn:
            self.providers.pop(name, None)

    def client_gone(self, client: Any) -> None:
        counts = self.server.closed_counts
        counts[0] += client.in_msgs
        counts[1] += client.in_bytes
        counts[2] += client.out_msgs
        counts[3] += client.out_bytes

    # -- documents (also used by natsd/sysreq.py) ---------------------------------------------

    def process_stats(self) -> views.ProcessStats:
        now, cpu = time.monotonic(), _cpu_seconds()
        then, cpu_then = self._cpu_sample
        if now - then >= 0.5:  # a percentage over the time since the last sample
            self._cpu_percent = round(100.0 * (cpu - cpu_then) / (now - then), 2)
            self._cpu_sample = (now, cpu)
        return views.ProcessStats(mem_bytes=_rss_bytes(), cores=os.cpu_count() or 1,
                                  cpu_percent=self._cpu_percent)

    def varz(self) -> dict[str, Any]:
        js = self._call("varz_jetstream")
        return views.varz(self.server, time.time(), self.start_s, self.process_stats(), js)

    def connz(self, query: dict[str, str]) -> dict[str, Any]:
        return views.connz(self.server, time.time(), query)

    def subsz(self, query: dict[str, str]) -> dict[str, Any]:
        return views.subsz(self.server, time.time(), query)

    def routez(self, query: dict[str, str]) -> dict[str, Any]:
        return views.routez(self.server, time.time(), query)

    def jsz(self, query: dict[str, str]) -> dict[str, Any]:
        base = {"server_id": self.server.server_id, "now": views.rfc3339(time.time())}
        doc = self._call("jsz", query)
        if doc is None:
            return {**base, "disabled": True, "config": {}, "streams": 0, "consumers": 0,
                    "messages": 0, "bytes": 0, "memory": 0, "storage": 0, "accounts": 0,
                    "ha_assets": 0, "api": {"total": 0, "errors": 0}}
        return {**doc, **base}

    def healthz(self, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body): 200 `{"status": "ok"}`, or 503 with the first problem."""
        problems: list[str] = []
        if self.server.options.jetstream:
            found = self._call("healthz", query)
            problems = ["JetStream has not started"] if found is None else list(found)
        if not problems:
            return 200, {"status": "ok"}
        return 503, {"status": "unavailable", "status_code": 503, "error": problems[0],
                     "errors": [{"type": "jetstream", "error": p} for p in problems]}

    def _call(self, name: str, *args: Any) -> Any:
        fn = self.providers.get(name)
        if fn is None:
            return None
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 - a provider bug must not break monitoring
            self.log.error("monitor.provider_failed", provider=name, error=repr(exc), exc_info=True)
            return None

    def dispatch(self, path: str, query: dict[str, str]) -> tuple[int, str, bytes]:
        """(status, content type, body) for a GET of `path`."""
        path = path.rstrip("/") or "/"
        self.http_requests[path] += 1
        status, doc = 200, None
        if path == "/varz":
            doc = self.varz()
        elif path == "/connz":
            doc = self.connz(query)
        elif path in ("/subsz", "/subscriptionsz"):
            doc = self.subsz(query)
        elif path == "/routez":
            doc = self.routez(query)
        elif path == "/jsz":
            doc = self.jsz(query)
        elif path == "/healthz":
            status, doc = self.healthz(query)
        elif path == "/metrics":
            from natsd.monitor_metrics import render

            body, ctype = render(self)
            return 200, ctype, body
        elif path == "/":
            doc = {"endpoints": list(ENDPOINTS)}
        else:
            return 404, "text/plain; charset=utf-8", b"404 page not found\n"
        return status, "application/json", json.dumps(doc, indent=2).encode()

    # -- serving ----------------------------------------------------------------------------

    async def start(self, nursery: trio.Nursery) -> None:
        """Start the $SYS responders (when a system account has users: nobody else may ask),
        and the HTTP listener when `http_port` is set."""
        from natsd import sysreq

        if self.server.options.system_users:
            sysreq.start(self.server)
        port = self.server.options.http_port
        if port is not None and port >= 0:
            await nursery.start(self._serve_http, port)
        self.ready.set()

    async def _serve_http(self, port: int, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        opts = self.server.options
        host = opts.http_host or opts.host
        listeners = await trio.open_tcp_listeners(port, host=None if host in ("", "0.0.0.0") else host)
        self.http_port = listeners[0].socket.getsockname()[1]
        self.log.info("monitor.listening", http_port=self.http_port)
        task_status.started(self.http_port)
        await trio.serve_listeners(self._http_connection, listeners)

    async def _http_connection(self, stream: trio.SocketStream) -> None:
        async with self._http_limiter:
            try:
                await self._serve_requests(stream)
            except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError, OSError):
                pass
            except h11.ProtocolError as exc:
                self.log.debug("monitor.bad_request", error=repr(exc))
            finally:
                await trio.aclose_forcefully(stream)

    async def _serve_requests(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=HTTP_BODY_BYTES_MAX)
        for _ in range(HTTP_REQUESTS_PER_CONNECTION_MAX):
            with trio.fail_after(HTTP_IDLE_TIMEOUT_S):
                request = await _next_request(conn, stream)
            if request is None:
                return
            if request.method not in (b"GET", b"HEAD"):
                status, ctype, body = 405, "text/plain; charset=utf-8", b"method not allowed\n"
            else:
                target = urllib.parse.urlsplit(request.target.decode("latin-1"))
                query = dict(urllib.parse.parse_qsl(target.query, keep_blank_values=True))
                status, ctype, body = self.dispatch(target.path, query)
            headers = [("Content-Type", ctype), ("Content-Length", str(len(body))),
                       ("Access-Control-Allow-Origin", "*")]
            await stream.send_all(conn.send(h11.Response(status_code=status, headers=headers)))
            if request.method != b"HEAD":
                await stream.send_all(conn.send(h11.Data(data=body)))
            await stream.send_all(conn.send(h11.EndOfMessage()))
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()


async def _next_request(conn: h11.Connection, stream: trio.SocketStream) -> h11.Request | None:
    """Read one whole request (its body is read and dropped); None when the peer closed."""
    request = None
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(HTTP_RECEIVE_BYTES))
        elif isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.EndOfMessage):
            return request
        elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
            return None


def _rss_bytes() -> int:
    """Resident memory of this process (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm", "rb") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system
