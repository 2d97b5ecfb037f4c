"""`jetraft server`: run a NATS server (nats-server's common flags and TOML config keys).

How it works: options are built from defaults, then the `-c` config file, then flags (flags win,
as in nats-server). structlog is configured here, once: JSON lines with `--log_json`, otherwise
the console renderer (colours only on a terminal); to stderr or to `-l FILE`. The server logs
`server.ready port=<N>` once it is listening. SIGINT/SIGTERM flush and close every client, then
exit 0.

Other services (JetStream, meta) start through `run_server(options, services=[...])`: each
service is `async def service(server, task_status)` started in the server's nursery once the
port is bound.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TextIO

import click
import structlog
import trio

from natsd.config import (
    ServerOptions,
    build_options,
    load_config,
    parse_duration_s,
    parse_size_bytes,
    parse_tags,
)
from natsd.config import parse_cluster_listen, parse_routes
from meta.topology import parse_raft_peers
from natsd.server import Server

Service = Callable[..., Awaitable[None]]


def configure_logging(*, json_logs: bool = False, level: int = logging.INFO,
                      file: TextIO | None = None) -> None:
    """Configure structlog once for the process."""
    out = file or sys.stderr
    if json_logs:
        renderer: Any = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=True,
    )


async def run_server(options: ServerOptions, services: Sequence[Service] = ()) -> None:
    """Serve until SIGINT/SIGTERM, then shut down gracefully."""
    log = structlog.get_logger("natsd")
    server = Server(options, log=log)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            for service in services:
                await nursery.start(service, server)
            async for signum in signals:
                log.info("server.signal", signal=signal.Signals(signum).name)
                await server.shutdown()
                nursery.cancel_scope.cancel()
                break


def _size(ctx: click.Context, param: click.Parameter, value: Any) -> int | None:
    try:
        return None if value is None else parse_size_bytes(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _duration(ctx: click.Context, param: click.Parameter, value: Any) -> float | None:
    try:
        return None if value is None else parse_duration_s(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command("server")
@click.option("-p", "--port", type=int, default=None, help="Client port (default 4222).")
@click.option("-a", "--addr", "--net", "host", default=None, help="Bind address (default 0.0.0.0).")
@click.option("-n", "--name", "--server_name", "server_name", default=None, help="Server name.")
@click.option("--tags", "server_tags", default=None, help="Placement tags, comma separated (az:1,ssd).")
@click.option("-c", "--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              default=None, help="TOML config file (nats-server key names).")
@click.option("-l", "--log", "--log_file", "logfile", default=None, help="Log to this file.")
@click.option("-D", "--debug", is_flag=True, default=None, help="Debug logging.")
@click.option("-V", "--trace", is_flag=True, default=None, help="Trace logging.")
@click.option("-DV", "debug_trace", is_flag=True, default=False, help="Debug and trace logging.")
@click.option("--log_json", is_flag=True, default=None, help="JSON log lines.")
@click.option("-js", "--jetstream", is_flag=True, default=None, help="Enable JetStream.")
@click.option("-sd", "--store_dir", default=None, help="JetStream storage directory.")
@click.option("--max_payload", callback=_size, default=None, help="Max message payload.")
@click.option("--max_pending", callback=_size, default=None, help="Max outbound bytes per client.")
@click.option("--max_control_line", callback=_size, default=None, help="Max control line.")
@click.option("--max_connections", type=int, default=None, help="Max client connections.")
@click.option("--ping_interval", callback=_duration, default=None, help="Server PING interval.")
@click.option("--ping_max", "--max_pings_out", "max_pings_out", type=int, default=None,
              help="Unanswered PINGs before 'Stale Connection'.")
@click.option("--write_deadline", callback=_duration, default=None, help="Write deadline.")
@click.option("--user", default=None, help="User required to connect.")
@click.option("--pass", "password", default=None, help="Password required to connect.")
@click.option("--auth", "auth_token", default=None, help="Token required to connect.")
@click.option("--tls", "tls", is_flag=True, default=None, help="Enable TLS (needs --tlscert/--tlskey).")
@click.option("--tlscert", default=None, help="Server certificate file (PEM).")
@click.option("--tlskey", default=None, help="Server private key file (PEM).")
@click.option("--tlscacert", default=None, help="CA certificate for verifying clients.")
@click.option("--tlsverify", is_flag=True, default=None, help="Require and verify client certificates.")
@click.option("--cluster", "cluster_listen", default=None,
              help="Cluster route listen URL, e.g. nats://127.0.0.1:6222.")
@click.option("--routes", default=None, help="Comma-separated route URLs to dial.")
@click.option("--cluster_name", default=None, help="Cluster name.")
@click.option("--cluster_advertise", default=None, help="Route address advertised to peers.")
@click.option("--no_advertise", is_flag=True, default=None,
              help="Do not advertise this server's client URL to peers' clients.")
@click.option("-m", "--http_port", type=int, default=None, help="HTTP monitoring port.")  # monitor
@click.option("--no_implicit_routes", is_flag=True, default=None,
              help="Only dial configured routes, never servers learnt by gossip.")
@click.option("--raft_peers", default=None,
              help="name=host:port,... Raft addresses by server name (names become Raft ids).")
def server(**flags: Any) -> None:
    """Run a NATS server."""
    options, unknown = _options(flags)
    level = logging.DEBUG if (options.debug or options.trace) else logging.INFO
    log_file = open(options.logfile, "a", buffering=1) if options.logfile else None  # noqa: SIM115
    configure_logging(json_logs=options.log_json, level=level, file=log_file)
    if unknown:
        structlog.get_logger("natsd").warning("config.unknown_keys", keys=unknown)
    try:
        trio.run(run_server, options, _services(options))
    except KeyboardInterrupt:
        pass
    finally:
        if log_file is not None:
            log_file.close()


def _services(options: ServerOptions) -> list[Service]:
    """JetStream hook (owned by the jetstream engineer): start it when `-js` is given."""
    if not options.jetstream:
        return []
    if options.cluster_port is not None:  # clustered JetStream: meta group + stream Raft groups
        from meta.service import run_clustered_jetstream

        return [run_clustered_jetstream]
    from jetstream.service import run_jetstream

    return [run_jetstream]


def _options(flags: dict[str, Any]) -> tuple[ServerOptions, list[str]]:
    base = ServerOptions()
    unknown: list[str] = []
    if flags["config_file"]:
        try:
            fields, unknown = load_config(flags["config_file"])
            base = build_options(base, fields)
        except (ValueError, TypeError) as exc:
            raise click.BadParameter(str(exc), param_hint="--config") from None
    if flags["debug_trace"]:
        flags["debug"] = flags["trace"] = True
    overrides = {
        "port": flags["port"],
        "host": flags["host"],
        "server_name": flags["server_name"],
        "server_tags": parse_tags(flags["server_tags"]) if flags.get("server_tags") else None,
        "logfile": flags["logfile"],
        "debug": flags["debug"],
        "trace": flags["trace"],
        "log_json": flags["log_json"],
        "jetstream": flags["jetstream"],
        "store_dir": flags["store_dir"],
        "max_payload_bytes": flags["max_payload"],
        "max_pending_bytes": flags["max_pending"],
        "max_control_line_bytes": flags["max_control_line"],
        "max_connections": flags["max_connections"],
        "ping_interval_s": flags["ping_interval"],
        "max_pings_out": flags["max_pings_out"],
        "write_deadline_s": flags["write_deadline"],
        "auth_user": flags.get("user"),
        "auth_password": flags.get("password"),
        "auth_token": flags.get("auth_token"),
        "http_port": flags.get("http_port"),  # monitoring (natsd/monitor.py)
    }
    overrides.update(_cluster_overrides(flags))
    overrides.update(_tls_overrides(flags, base))
    return build_options(base, overrides), unknown


def _tls_overrides(flags: dict[str, Any], base: ServerOptions) -> dict[str, Any]:
    """`--tls --tlscert --tlskey --tlscacert --tlsverify` (nats-server's flags)."""
    out = {"tls_cert": flags.get("tlscert"), "tls_key": flags.get("tlskey"),
           "tls_ca": flags.get("tlscacert"), "tls_verify": flags.get("tlsverify")}
    cert = out["tls_cert"] or base.tls_cert
    key = out["tls_key"] or base.tls_key
    wants_tls = flags.get("tls") or flags.get("tlsverify") or out["tls_cert"] or out["tls_key"]
    if wants_tls and (cert is None or key is None):
        raise click.BadParameter("TLS needs both --tlscert and --tlskey", param_hint="--tls")
    if out["tls_verify"] and (out["tls_ca"] or base.tls_ca) is None:
        raise click.BadParameter("--tlsverify needs --tlscacert", param_hint="--tlsverify")
    return out


def _cluster_overrides(flags: dict[str, Any]) -> dict[str, Any]:
    """`--cluster`, `--routes`, `--cluster_name`, `--cluster_advertise` (nats-server's flags)."""
    out: dict[str, Any] = {"cluster_name": flags.get("cluster_name"),
                           "cluster_advertise": flags.get("cluster_advertise"),
                           "cluster_no_advertise": flags.get("no_advertise"),
                           "cluster_implicit_routes": False if flags.get("no_implicit_routes") else None}
    if flags.get("cluster_listen"):
        try:
            out["cluster_host"], out["cluster_port"] = parse_cluster_listen(flags["cluster_listen"])
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--cluster") from None
    if flags.get("routes"):
        out["routes"] = parse_routes(flags["routes"])
    if flags.get("raft_peers"):
        try:
            out["raft_peers"] = parse_raft_peers(flags["raft_peers"])
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--raft_peers") from None
    return out
