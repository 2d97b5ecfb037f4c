"""Differential fuzz of permission decisions: jetraft and nats-server must agree exactly.

Both servers run with the same user whose permissions mix plain, wildcard and queue-group
entries. Hypothesis draws sessions of SUB (with or without a queue group) and PUB operations
over a small subject alphabet; each session is replayed on both servers over raw sockets. The
`-ERR` lines must be identical and in the same order, and so must the number of messages
delivered per subject (which sid of a queue group gets a message is random, the count is not).
"""

from __future__ import annotations

import collections
import pathlib
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.compat.servers import KINDS
from tests.compat.test_security_perms import PASSWORD, Session
from tests.compat.test_security_support import SecureServer, secure_server

PERMISSIONS = {
    "publish": {"allow": ["a.>", "b.*", "c", "_INBOX.>"], "deny": ["a.x", "b.y", "a.*.z"]},
    "subscribe": {"allow": ["a.>", "b.*", "c", "d q1", "e.* q.*", "e.f"],
                  "deny": ["a.x", "a.*.z", "e.f q.g", "b.y q1"]},
}
CONF = {"authorization": {"users": [{"user": "p", "password": PASSWORD, "permissions": PERMISSIONS}]}}


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, SecureServer]]:
    started: dict[str, SecureServer] = {}
    with secure_server(KINDS[0], tmp_path_factory.mktemp("d0"), CONF) as first, \
            secure_server(KINDS[1], tmp_path_factory.mktemp("d1"), CONF) as second:
        started[KINDS[0]], started[KINDS[1]] = first, second
        yield started


TOKENS = st.sampled_from(["a", "b", "c", "d", "e", "f", "x", "y", "z"])
LITERAL = st.lists(TOKENS, min_size=1, max_size=3).map(".".join)
PATTERN = st.lists(st.one_of(TOKENS, st.just("*")), min_size=1, max_size=3).flatmap(
    lambda ts: st.sampled_from([".".join(ts), ".".join(ts[:-1] + [">"])]))
QUEUE = st.none() | st.sampled_from(["q1", "q.a", "q.g", "q9"])
SUB = st.tuples(st.just("SUB"), PATTERN, QUEUE)
PUB = st.tuples(st.just("PUB"), LITERAL, st.none())


def _frames(ops: list[tuple[str, str, str | None]]) -> bytes:
    out = []
    for i, (kind, subject, queue) in enumerate(ops):
        if kind == "SUB":
            out.append(f"SUB {subject} {queue + ' ' if queue else ''}{i + 1}\r\n")
        else:
            out.append(f"PUB {subject} 1\r\n.\r\n")
    return "".join(out).encode()


def _observe(port: int, data: bytes) -> tuple[list[str], collections.Counter]:
    session = Session(port, "p")
    try:
        said = session.say(data)
    finally:
        session.close()
    errors = [line for line in said if line.startswith("-ERR")]
    delivered = collections.Counter(line.split()[1] for line in said if line.startswith("MSG "))
    return errors, delivered


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(st.one_of(SUB, PUB), min_size=1, max_size=12))
def test_permission_decisions_match_nats_server(servers: dict[str, SecureServer], ops: list) -> None:
    data = _frames(ops)
    seen = {kind: _observe(srv.port, data) for kind, srv in servers.items()}
    assert seen["jetraft"] == seen["nats-server"], data.decode()


def test_the_fuzz_sees_denials(servers: dict[str, SecureServer]) -> None:
    """The alphabet reaches both decisions (a fuzz that only saw allowed ops would prove little)."""
    data = _frames([("SUB", "a.x", None), ("SUB", "e.f", "q.g"), ("PUB", "b.y", None), ("SUB", "a.>", None),
                    ("PUB", "a.b", None)])
    errors, delivered = _observe(servers["nats-server"].port, data)
    assert len(errors) == 3 and delivered == {"a.b": 1}
    assert _observe(servers["jetraft"].port, data) == (errors, delivered)
