"""JetStream API subjects are plain subjects to permissions (jetraft and nats-server, nats-py).

A user may call `$JS.API.INFO` and `$JS.API.STREAM.INFO.>` but is denied
`$JS.API.STREAM.CREATE.>`: account_info works, add_stream is refused with a permissions
violation (the request is dropped, so the client's request times out), and the connection
stays usable. An admin user creates the stream; the limited user can then read its info.
"""

from __future__ import annotations

import asyncio
import pathlib

import nats
import pytest

from tests.compat.servers import KINDS
from tests.compat.test_security_support import arun, secure_server

CONF = {"authorization": {"users": [
    {"user": "admin", "password": "pw"},
    {"user": "reader", "password": "pw", "permissions": {
        "publish": {"allow": ["$JS.API.>"], "deny": ["$JS.API.STREAM.CREATE.>"]},
        "subscribe": ["_INBOX.>"]}},
]}}


async def _scenario(url: str) -> None:
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    admin = await nats.connect(url, user="admin", password="pw", allow_reconnect=False)
    reader = await nats.connect(url, user="reader", password="pw", error_cb=on_error,
                                allow_reconnect=False)
    try:
        info = await reader.jetstream(timeout=3).account_info()
        assert info.streams == 0
        with pytest.raises(nats.errors.TimeoutError):
            await reader.jetstream(timeout=1).add_stream(name="DENIED", subjects=["denied.>"])
        for _ in range(100):  # the -ERR arrives asynchronously
            if errors:
                break
            await asyncio.sleep(0.02)
        assert any('permissions violation for publish to "$js.api.stream.create.denied"' in e
                   for e in errors), errors
        await admin.jetstream(timeout=5).add_stream(name="ALLOWED", subjects=["allowed.>"])
        stream = await reader.jetstream(timeout=3).stream_info("ALLOWED")
        assert stream.config.name == "ALLOWED" and reader.is_connected
    finally:
        await reader.close()
        await admin.close()


@pytest.mark.parametrize("kind", KINDS)
def test_jetstream_api_under_permissions(kind: str, tmp_path: pathlib.Path) -> None:
    store = tmp_path / "store"
    with secure_server(kind, tmp_path, CONF, extra_args=["-js", "-sd", str(store)]) as srv:
        arun(_scenario(srv.url), timeout_s=30)
