# pure-core
"""The subscription index: which subscriptions does a published subject reach?

Subscriptions live in a trie keyed by subject tokens. Each node has a dict of literal children
and, separately, a '*' child and a '>' child, so matching a published subject walks at most
three branches per token and never scans siblings. A node holds the subscriptions whose subject
ends there: plain ones, and queue ones grouped by queue name.

Items are opaque per-subscription objects compared by identity (`id`), so they need not be
hashable and the same item may sit under several subjects. Inserting an item again under the
same (subject, queue) is a no-op; `generation` only moves when the index really changes.

`match` is on the hot path (every published message), so results are cached per subject in a
plain dict: a cache hit is one dict lookup. The cache is bounded (`cache_size_max`); when full,
the oldest quarter is dropped. Inserting or removing a subscription drops only the cached
subjects it can affect: for a literal subject the one entry, for a wildcard subject the entries
its pattern matches (one compiled-regex test per cached subject, about 0.1-0.5 ms for a full
cache: wildcard subscriptions are rare next to publishes). A cache miss walks the trie; when a
single node matches (the usual case for one-off subjects such as reply inboxes and ack
subjects) that node's own result, kept on the node until its members change, is reused.
Subjects starting with one of `uncached_prefixes` (by default JetStream ack subjects, unique per
message) never enter that cache: each would be used once and push out a subject that repeats.
They are matched through a stem cache instead: when no branch of a subject's walk reached its
last token (an ack subject stops below `$JS.ACK.<stream>.<consumer>.>` at its first unique
token), the result depends only on the first K tokens the walk looked at, so it is kept under
that stem and reused for every subject of at least K tokens that starts with it. Any change to
the index drops the stems.

Results merge queue subscriptions by queue name across patterns (`foo.*` and `foo.bar` with
queue `q` form one group for `foo.bar`), because a message goes to one member per group name.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

import attrs

from natsd.subjects import FWC, ONE_OFF_PREFIXES, PWC, SEP, has_wildcard, is_valid_queue_name, is_valid_subject
from natsd.subjects import pattern_regex, subjects_overlap

CACHE_SIZE_MAX_DEFAULT = 4096
_STEMS_MAX = 1024

T = TypeVar("T")


@attrs.frozen
class SublistResult(Generic[T]):
    """Subscriptions a subject reaches: every plain one, and one tuple per queue group name.

    `queue_names[i]` is the name of group `queues[i]`."""

    plain: tuple[T, ...] = ()
    queues: tuple[tuple[T, ...], ...] = ()
    queue_names: tuple[str, ...] = ()

    def is_empty(self) -> bool:
        return not self.plain and not self.queues


EMPTY_RESULT: SublistResult[Any] = SublistResult()


@attrs.define(slots=True, eq=False)
class _Node:
    literal: dict[str, _Node] = attrs.Factory(dict)
    pwc: _Node | None = None
    fwc: _Node | None = None
    plain: dict[int, Any] = attrs.Factory(dict)
    queues: dict[str, dict[int, Any]] = attrs.Factory(dict)
    # This node's members alone as a result, built on demand, dropped when they change.
    own: SublistResult[Any] | None = None

    def is_empty(self) -> bool:
        return not (self.literal or self.pwc or self.fwc or self.plain or self.queues)

    def child(self, token: str) -> _Node | None:
        if token == PWC:
            return self.pwc
        if token == FWC:
            return self.fwc
        return self.literal.get(token)

    def child_or_new(self, token: str) -> _Node:
        found = self.child(token)
        if found is not None:
            return found
        node = _Node()
        if token == PWC:
            self.pwc = node
        elif token == FWC:
            self.fwc = node
        else:
            self.literal[token] = node
        return node

    def drop_child(self, token: str) -> None:
        if token == PWC:
            self.pwc = None
        elif token == FWC:
            self.fwc = None
        else:
            del self.literal[token]


def _build(nodes: list[_Node]) -> SublistResult[Any]:
    """The result for the matched nodes; a single node's result is kept on the node, so
    subjects seen once (reply inboxes, ack subjects) matching one subscription node are cheap."""
    if not nodes:
        return EMPTY_RESULT
    if len(nodes) == 1:
        node = nodes[0]
        if node.own is None:
            node.own = _merge(nodes)
        return node.own
    return _merge(nodes)


def _merge(nodes: list[_Node]) -> SublistResult[Any]:
    """Merge matched nodes into a result: all plain members, queue members grouped by name."""
    plain: list[Any] = []
    groups: dict[str, list[Any]] = {}
    for node in nodes:
        if node.plain:
            plain.extend(node.plain.values())
        if node.queues:
            for name, members in node.queues.items():
                group = groups.get(name)
                if group is None:
                    groups[name] = list(members.values())
                else:
                    group.extend(members.values())
    if not groups:
        return SublistResult(tuple(plain))
    return SublistResult(tuple(plain), tuple(map(tuple, groups.values())), tuple(groups))


class Sublist(Generic[T]):
    """Trie of subscriptions with a bounded, selectively invalidated match cache."""

    __slots__ = ("_root", "_cache", "_cache_size_max", "_uncached", "_stems", "_stem_lens",
                 "_interest", "_count", "generation")

    def __init__(self, cache_size_max: int = CACHE_SIZE_MAX_DEFAULT,
                 uncached_prefixes: tuple[str, ...] = ONE_OFF_PREFIXES) -> None:
        assert cache_size_max >= 0
        self._root = _Node()
        self._cache: dict[str, SublistResult[T]] = {}
        self._cache_size_max = cache_size_max
        self._uncached = uncached_prefixes
        # one-off subjects: result per stem (first K tokens, joined), and the K values in use
        self._stems: dict[str, SublistResult[T]] = {}
        self._stem_lens: tuple[int, ...] = ()
        self._interest: dict[tuple[str, str | None], int] = {}
        self._count = 0
        self.generation = 0

    # -- queries ---------------------------------------------------------------------------

    def match(self, subject: str) -> SublistResult[T]:
        """All subscriptions the (literal) subject reaches. Tokens are compared literally, so a
        published `*` token only reaches wildcard subscriptions; subjects with an empty token
        reach nothing."""
        result = self._cache.get(subject)
        if result is None:
            result = self._match_uncached(subject)
        return result

    def match_once(self, subject: str) -> SublistResult[T]:
        """`match` for a subject the caller knows will not repeat (a PubAck's reply inbox): a
        cache miss is walked but not admitted, so it pushes no repeating subject out."""
        result = self._cache.get(subject)
        if result is None:
            if subject.startswith(self._uncached):
                return self._match_one_off(subject)
            tokens = subject.split(SEP)
            result = _walk(self._root, tokens) if all(tokens) else EMPTY_RESULT
        return result

    def count(self) -> int:
        """Number of subscriptions (distinct (subject, queue, item) triples)."""
        return self._count

    def interest(self) -> dict[tuple[str, str | None], int]:
        """Subscriptions per (subject, queue); a fresh dict the caller may keep."""
        return dict(self._interest)

    def interest_count(self, subject: str, queue: str | None = None) -> int:
        """Number of subscriptions on exactly this (subject, queue) pair."""
        return self._interest.get((subject, queue), 0)

    def cache_len(self) -> int:
        return len(self._cache)

    def all_items(self) -> Iterator[tuple[str, str | None, T]]:
        """Every subscription as (subject, queue, item), in trie order."""
        stack: list[tuple[_Node, tuple[str, ...]]] = [(self._root, ())]
        while stack:
            node, path = stack.pop()
            if path:
                subject = SEP.join(path)
                for item in node.plain.values():
                    yield subject, None, item
                for name, members in node.queues.items():
                    for item in members.values():
                        yield subject, name, item
            for token, child in node.literal.items():
                stack.append((child, path + (token,)))
            if node.pwc is not None:
                stack.append((node.pwc, path + (PWC,)))
            if node.fwc is not None:
                stack.append((node.fwc, path + (FWC,)))

    def reverse_match(self, pattern: str) -> SublistResult[T]:
        """Subscriptions whose subject overlaps `pattern` (could share a message with it)."""
        plain: list[T] = []
        groups: dict[str, list[T]] = {}
        for subject, queue, item in self.all_items():
            if not subjects_overlap(pattern, subject):
                continue
            if queue is None:
                plain.append(item)
            else:
                groups.setdefault(queue, []).append(item)
        if not plain and not groups:
            return EMPTY_RESULT
        return SublistResult(tuple(plain), tuple(map(tuple, groups.values())), tuple(groups))

    # -- updates ---------------------------------------------------------------------------

    def insert(self, subject: str, queue: str | None, item: T) -> None:
        """Add a subscription. Raises ValueError on an invalid subject or queue name."""
        _check(subject, queue)
        node = self._root
        for token in subject.split(SEP):
            node = node.child_or_new(token)
        members = node.plain if queue is None else node.queues.setdefault(queue, {})
        key = id(item)
        if key in members:
            return
        members[key] = item
        node.own = None
        self._changed(subject, queue, +1)

    def remove(self, subject: str, queue: str | None, item: T) -> bool:
        """Remove a subscription; False (and no change) if it is not there."""
        if not is_valid_subject(subject):
            return False
        path = self._path(subject)
        if path is None:
            return False
        node = path[-1]
        if not _remove_member(node, queue, id(item)):
            return False
        _prune(path, subject.split(SEP))
        self._changed(subject, queue, -1)
        return True

    # -- internals -------------------------------------------------------------------------

    def _path(self, subject: str) -> list[_Node] | None:
        path = [self._root]
        for token in subject.split(SEP):
            nxt = path[-1].child(token)
            if nxt is None:
                return None
            path.append(nxt)
        return path

    def _changed(self, subject: str, queue: str | None, delta: int) -> None:
        self.generation += 1
        if self._stems:
            self._stems.clear()
            self._stem_lens = ()
        self._count += delta
        key = (subject, queue)
        n = self._interest.get(key, 0) + delta
        if n:
            self._interest[key] = n
        else:
            del self._interest[key]
        self._invalidate(subject)

    def _invalidate(self, subject: str) -> None:
        cache = self._cache
        if not cache:
            return
        if not has_wildcard(subject):
            cache.pop(subject, None)
            return
        # filter() keeps the scan over the cache keys in C.
        stale = list(filter(pattern_regex(subject).fullmatch, cache))
        for s in stale:
            del cache[s]

    def _match_uncached(self, subject: str) -> SublistResult:
        if subject.startswith(self._uncached):
            return self._match_one_off(subject)
        tokens = subject.split(SEP)
        if all(tokens):
            result = _walk(self._root, tokens)
        else:
            result = EMPTY_RESULT
        if self._cache_size_max:
            if len(self._cache) >= self._cache_size_max:
                self._evict()
            self._cache[subject] = result
        return result

    def _match_one_off(self, subject: str) -> SublistResult:
        """Match a subject that will not repeat, through the stem cache (see the top)."""
        if not subject or SEP + SEP in subject or subject[0] == SEP or subject[-1] == SEP:
            return EMPTY_RESULT  # an empty token reaches nothing
        stems = self._stems
        for k in self._stem_lens:
            parts = subject.split(SEP, k)
            if len(parts) > k:
                result = stems.get(subject[: len(subject) - len(parts[k]) - 1])
            elif len(parts) == k:
                result = stems.get(subject)
            else:
                continue
            if result is not None:
                return result
        tokens = subject.split(SEP)
        result, stem_len = _walk_stem(self._root, tokens)
        if stem_len:
            if len(stems) >= _STEMS_MAX:
                stems.clear()
                self._stem_lens = ()
            stems[SEP.join(tokens[:stem_len])] = result
            if stem_len not in self._stem_lens:
                self._stem_lens = tuple(sorted(self._stem_lens + (stem_len,)))
        return result

    def _evict(self) -> None:
        cache = self._cache
        drop = max(1, len(cache) // 4)
        for s in list(itertools.islice(cache, drop)):
            del cache[s]


def _check(subject: str, queue: str | None) -> None:
    if not is_valid_subject(subject):
        raise ValueError(f"invalid subject {subject!r}")
    if queue is not None and not is_valid_queue_name(queue):
        raise ValueError(f"invalid queue name {queue!r}")


def _walk(root: _Node, tokens: list[str]) -> SublistResult[Any]:
    """Find every node matching `tokens` (none empty). Iterative: depth is bounded only by the
    subject length, which may exceed Python's recursion limit. A '>' node is always a leaf
    with members (pruning removes it otherwise), so it is taken without a check."""
    nodes: list[_Node] = []
    n = len(tokens)
    stack = [(root, 0)]
    while stack:
        node, i = stack.pop()
        while node is not None:
            if i == n:
                if node.plain or node.queues:
                    nodes.append(node)
                break
            if node.fwc is not None:
                nodes.append(node.fwc)
            if node.pwc is not None:
                stack.append((node.pwc, i + 1))
            node = node.literal.get(tokens[i])
            i += 1
    return _build(nodes)


def _walk_stem(root: _Node, tokens: list[str]) -> tuple[SublistResult[Any], int]:
    """`_walk`, also returning K: the result depends only on the first K tokens (for any
    subject of at least K tokens), or 0 when some branch reached the last token (then the
    subject's length matters too). K is one more than the deepest token index looked up: a
    subject sharing those tokens makes the walk visit the same nodes at the same indices."""
    nodes: list[_Node] = []
    n = len(tokens)
    deepest = -1
    reached_end = False
    stack = [(root, 0)]
    while stack:
        node, i = stack.pop()
        while node is not None:
            if i == n:
                reached_end = True
                if node.plain or node.queues:
                    nodes.append(node)
                break
            if node.fwc is not None:
                nodes.append(node.fwc)
            if node.pwc is not None:
                stack.append((node.pwc, i + 1))
            if i > deepest:
                deepest = i
            node = node.literal.get(tokens[i])
            i += 1
    return _build(nodes), 0 if reached_end else deepest + 1


def _remove_member(node: _Node, queue: str | None, key: int) -> bool:
    node.own = None
    if queue is None:
        if key not in node.plain:
            return False
        del node.plain[key]
        return True
    members = node.queues.get(queue)
    if members is None or key not in members:
        return False
    del members[key]
    if not members:
        del node.queues[queue]
    return True


def _prune(path: list[_Node], tokens: list[str]) -> None:
    """Drop now-empty nodes bottom-up along `path` (path[i+1] is path[i]'s child tokens[i])."""
    for i in range(len(tokens) - 1, -1, -1):
        if not path[i + 1].is_empty():
            return
        path[i].drop_child(tokens[i])


__all__ = ["CACHE_SIZE_MAX_DEFAULT", "EMPTY_RESULT", "Sublist", "SublistResult"]
