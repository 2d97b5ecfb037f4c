"""Fixtures for tests/compat: one server per kind per module, or a fresh one per test.

`server` is module-scoped (cheap: one process per kind per module); tests that change the
configuration or restart the server use `running_server` from servers.py directly.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.compat.servers import KINDS, ServerProcess, running_server


@pytest.fixture(scope="module", params=KINDS)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp_dir = tmp_path_factory.mktemp(f"srv-{request.param}")
    with running_server(request.param, tmp_dir) as proc:
        yield proc


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)
