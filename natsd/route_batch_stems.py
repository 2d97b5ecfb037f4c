# pure-core
"""Match results of one-off subjects (reply inboxes) kept per stem, for a Sublist's owner.

How it works: a JetStream PubAck goes to `<inbox prefix>.<unique token>`; every ack of one
requester differs only in the last token. The result of matching `<stem>.<last>` can depend on
`<last>` only through entries of exactly as many tokens that end in a literal and could match
the stem (a `*` or `>` end matches any last token; a shorter `>` entry never reaches it; a
longer entry never matches). Such entries must start with the subject's first token or with
`*`. So while the owner's Sublist holds none with that (token count, first token) or
(token count, `*`), one walk per stem answers for every last token. The owner reports each
entry it really adds or removes (`entry_added` / `entry_removed`, which also drop every kept
result) and asks `match(subject)`; a subject outside `STEM_PREFIXES`, or with an
empty last token, walks as before.

Used by the server (local subscriptions: a PubAck delivered to a requester on this node, or
found to have no local subscriber on the stream leader) and by each route (its peer's interest).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

STEMS_MAX = 1024
# subjects whose stem repeats: reply inboxes (`_INBOX.<requester>.<token>`); a JetStream ack
# subject carries unique tokens before its last one, so it is left to the Sublist's own stems
STEM_PREFIXES = ("_INBOX.",)


class OneOffStems:
    """Per-stem results of one Sublist (see the module docstring)."""

    __slots__ = ("_literal_ends", "_results", "_match_once")

    def __init__(self, match_once: Callable[[str], Any]) -> None:
        self._match_once = match_once  # the owner's Sublist.match_once
        self._literal_ends: dict[tuple[int, str], int] = {}  # (tokens, first token) -> entries
        self._results: dict[str, Any] = {}

    def entry_added(self, subject: str) -> None:
        self._count(subject, 1)

    def entry_removed(self, subject: str) -> None:
        self._count(subject, -1)

    def clear(self) -> None:
        self._results.clear()

    def _count(self, subject: str, delta: int) -> None:
        self._results.clear()
        last = subject.rpartition(".")[2]
        if last == "*" or last == ">":
            return
        key = (subject.count(".") + 1, subject.partition(".")[0])
        count = self._literal_ends.get(key, 0) + delta
        if count > 0:
            self._literal_ends[key] = count
        else:
            self._literal_ends.pop(key, None)

    def match(self, subject: str) -> Any:
        """`match_once(subject)`, walked once per stem while no entry can tell last tokens apart.
        A kept result is reused on the stem alone: the checks depend only on the stem (token
        count, first token) and on the last token being non-empty, and any change drops it."""
        if not subject.startswith(STEM_PREFIXES):  # e.g. $JS.ACK.: unique tokens mid-subject
            return self._match_once(subject)
        dot = subject.rfind(".")
        if dot == len(subject) - 1:  # an empty last token
            return self._match_once(subject)
        stem = subject[:dot]
        results = self._results
        result = results.get(stem)
        if result is not None:
            return result
        ends = self._literal_ends
        if ends:
            tokens = subject.count(".") + 1
            if (tokens, subject.partition(".")[0]) in ends or (tokens, "*") in ends:
                return self._match_once(subject)
        result = self._match_once(subject)
        if len(results) >= STEMS_MAX:
            results.clear()
        results[stem] = result
        return result

    def __len__(self) -> int:
        return len(self._results)

    def stems(self) -> list[str]:
        return list(self._results)
