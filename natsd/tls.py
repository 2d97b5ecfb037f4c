"""TLS for client and route connections: ssl contexts from options, upgrade after INFO.

How it works: `TlsSettings` is a frozen value holding nats-server's `tls { cert_file, key_file,
ca_file, verify, timeout }` keys. `server_context(settings)` builds the standard library's
server-side `ssl.SSLContext` (TLS 1.2+, our certificate; with `verify` the peer must present a
certificate signed by `ca_file`: mutual TLS). `client_context(settings)` is the dialling side for
routes (trusts `ca_file`, presents our certificate so a verifying peer accepts us; host names are
not checked, since route URLs are usually IPs, but the chain must verify).

NATS upgrades in-band: the server sends its INFO (with `tls_required`) in plaintext, then both
sides run the TLS handshake (`upgrade_server` / `upgrade_client`, bounded by `timeout`). A peer
that sends plaintext instead fails the handshake and is closed, as nats-server does. No crypto is
done here: it is all `ssl` through `trio.SSLStream`.
"""

from __future__ import annotations

import ssl
from typing import Any

import attrs
import trio

DEFAULT_TIMEOUT_S = 2.0


class TlsError(Exception):
    """The handshake failed or timed out; the connection must be closed."""


@attrs.frozen
class TlsSettings:
    cert_file: str | None = None
    key_file: str | None = None
    ca_file: str | None = None
    verify: bool = False
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def enabled(self) -> bool:
        return self.cert_file is not None


def parse_tls(value: Any, where: str = "tls") -> TlsSettings:
    """nats-server's `tls { cert_file key_file ca_file verify timeout }` block."""
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected a map")
    fields: dict[str, Any] = {}
    for key, item in value.items():
        if key in ("cert_file", "key_file", "ca_file"):
            fields[key] = str(item)
        elif key == "verify":
            fields["verify"] = bool(item)
        elif key == "timeout":
            fields["timeout_s"] = _seconds(item, f"{where}.timeout")
        elif key not in ("cipher_suites", "curve_preferences", "insecure", "handshake_first"):
            raise ValueError(f"{where}: unknown key {key!r}")
    settings = TlsSettings(**fields)
    if (settings.cert_file is None) != (settings.key_file is None):
        raise ValueError(f"{where}: cert_file and key_file go together")
    if settings.verify and settings.ca_file is None:
        raise ValueError(f"{where}: verify needs ca_file")
    return settings


def _seconds(value: Any, where: str) -> float:
    """`2`, `0.5`, `"2s"`, `"500ms"` -> seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    for unit, scale in (("ms", 0.001), ("s", 1.0), ("m", 60.0)):
        number = text[: -len(unit)]
        if text.endswith(unit) and number.replace(".", "", 1).isdigit():
            return float(number) * scale
    raise ValueError(f"{where}: not a duration: {value!r}")


def server_context(settings: TlsSettings) -> ssl.SSLContext:
    assert settings.cert_file is not None and settings.key_file is not None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(settings.cert_file, settings.key_file)
    if settings.ca_file is not None:
        ctx.load_verify_locations(settings.ca_file)
    ctx.verify_mode = ssl.CERT_REQUIRED if settings.verify else ssl.CERT_NONE
    return ctx


def client_context(settings: TlsSettings) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    if settings.ca_file is not None:
        ctx.load_verify_locations(settings.ca_file)
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.verify_mode = ssl.CERT_NONE
    if settings.cert_file is not None and settings.key_file is not None:
        ctx.load_cert_chain(settings.cert_file, settings.key_file)
    return ctx


async def _handshake(stream: trio.SSLStream, timeout_s: float) -> trio.SSLStream:
    try:
        with trio.fail_after(timeout_s):
            await stream.do_handshake()
    except trio.TooSlowError:
        raise TlsError("tls handshake timeout") from None
    except (trio.BrokenResourceError, ssl.SSLError, OSError) as exc:
        cause = exc.__cause__ if exc.__cause__ is not None else exc
        await _send_alert(stream)
        raise TlsError(f"tls handshake failed: {cause!r}") from None
    return stream


async def _send_alert(stream: trio.SSLStream) -> None:
    """Deliver the TLS alert that explains a failed handshake (e.g. "certificate required").

    trio marks the stream broken without sending what the ssl object still holds; without the
    alert a TLS 1.3 client, whose handshake already finished, only sees the connection drop.
    Best effort, bounded, and only through trio's buffer if it is there."""
    outgoing = getattr(stream, "_outgoing", None)
    if outgoing is None:
        return
    data = outgoing.read()
    if data:
        with trio.move_on_after(0.5):
            try:
                await stream.transport_stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass


async def upgrade_server(stream: trio.abc.Stream, ctx: ssl.SSLContext,
                         timeout_s: float) -> trio.SSLStream:
    """Run the server side of the handshake on `stream` (the INFO is already sent)."""
    return await _handshake(trio.SSLStream(stream, ctx, server_side=True), timeout_s)


async def upgrade_client(stream: trio.abc.Stream, ctx: ssl.SSLContext, timeout_s: float,
                         server_hostname: str | None = None) -> trio.SSLStream:
    """Run the client side of the handshake (route dialling, after reading the peer's INFO)."""
    ssl_stream = trio.SSLStream(stream, ctx, server_hostname=server_hostname)
    return await _handshake(ssl_stream, timeout_s)


def peer_subject(stream: Any) -> str:
    """The verified peer certificate's subject CN (for logs), or ""."""
    try:
        cert = stream.getpeercert()
    except (AttributeError, ValueError, trio.NeedHandshakeError):
        return ""
    for rdn in (cert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return ""


# -- routes ----------------------------------------------------------------------------------

INFO_LINE_BYTES_MAX = 64 * 1024


def route_settings(options: Any) -> TlsSettings:
    """The `cluster { tls {...} }` settings from ServerOptions (disabled when no cert)."""
    return TlsSettings(cert_file=options.cluster_tls_cert, key_file=options.cluster_tls_key,
                       ca_file=options.cluster_tls_ca, verify=options.cluster_tls_verify,
                       timeout_s=options.cluster_tls_timeout_s)


async def route_accept_tls(stream: trio.abc.Stream, info_line: bytes, ctx: ssl.SSLContext,
                           timeout_s: float) -> trio.SSLStream:
    """Accepting side: our INFO (with tls_required) in plaintext, then the TLS handshake. The
    route then runs over TLS and sends its INFO again, which is the first the peer parses."""
    with trio.fail_after(timeout_s):
        await stream.send_all(info_line)
    return await upgrade_server(stream, ctx, timeout_s)


async def route_dial_tls(stream: trio.abc.Stream, ctx: ssl.SSLContext,
                         timeout_s: float) -> trio.SSLStream:
    """Dialling side: read (and drop) the peer's plaintext INFO line, then the handshake."""
    line = bytearray()
    try:
        with trio.fail_after(timeout_s):
            while not line.endswith(b"\r\n"):
                if len(line) >= INFO_LINE_BYTES_MAX:
                    raise TlsError("route INFO line too long")
                chunk = await stream.receive_some(1)  # byte by byte: nothing after it is ours
                if not chunk:
                    raise TlsError("route closed before its INFO")
                line += chunk
    except trio.TooSlowError:
        raise TlsError("no route INFO before the tls timeout") from None
    if not line.startswith(b"INFO "):
        raise TlsError("route did not start with INFO")
    return await upgrade_client(stream, ctx, timeout_s)
