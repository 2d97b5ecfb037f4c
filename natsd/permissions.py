# pure-core
"""Per-user publish/subscribe permissions: allow/deny lists with wildcards, and allow_responses.

How it works: `Permissions` is a frozen value parsed from nats-server's config shape
(`permissions { publish { allow, deny }, subscribe { allow, deny }, allow_responses }`; a bare
list means `allow`). A connection holds a `PermissionChecker` only when its user has permissions,
so a connection without any costs one `is None` check per operation. The checker caches one
decision per subject (bounded), as subjects repeat far more often than they change.

Semantics, as nats-server (checked against the reference binary):
- publish to a literal subject is allowed when some `allow` pattern matches it (or there is no
  allow list) and no `deny` pattern matches it;
- a subscription subject is allowed when an `allow` pattern matches it taken literally, or, for a
  wildcard subscription, the subscription is a subset of an allow pattern; and no `deny` pattern
  matches it taken literally. Entries may name a queue group (`"foo.* workers"`, queue patterns
  may use wildcards): for a queue subscription, matching queue entries decide instead; A wildcard subscription that merely overlaps a deny pattern is
  accepted, but messages on the denied subjects are not delivered to it (`delivery_denied`);
- `allow_responses` lets a client publish to the reply subject of a message it received, up to
  `max_msgs` times (default 1) within `expires_ms` (0 = no expiry), even if publish permissions
  would forbid it. The clock is injected (`now_ms`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from natsd.subjects import has_wildcard, is_subset, subject_matches, subjects_overlap

Clock = int | Callable[[], int]  # milliseconds, or a function returning them

DECISION_CACHE_MAX = 4096
RESPONSES_MAX = 65536  # bounded reply table per connection; the oldest entries go first


@attrs.frozen
class SubjectRule:
    """`allow` None means "everything"; `deny` is always checked."""

    allow: tuple[str, ...] | None = None
    deny: tuple[str, ...] = ()

    @property
    def restricts(self) -> bool:
        return self.allow is not None or bool(self.deny)


@attrs.frozen
class ResponsePermission:
    max_msgs: int = 1
    expires_ms: int = 0


@attrs.frozen
class Permissions:
    publish: SubjectRule = SubjectRule()
    subscribe: SubjectRule = SubjectRule()
    responses: ResponsePermission | None = None

    @property
    def restricts(self) -> bool:
        return self.publish.restricts or self.subscribe.restricts


def _subjects(value: Any, where: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else list(value)
    for item in items:
        if not isinstance(item, str) or not item:
            raise ValueError(f"{where}: not a subject: {item!r}")
    return tuple(items)


def _rule(value: Any, where: str) -> SubjectRule:
    if isinstance(value, str | list | tuple):
        return SubjectRule(allow=_subjects(value, where))
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected a list or {{allow, deny}}")
    unknown = set(value) - {"allow", "deny"}
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
    allow = _subjects(value["allow"], f"{where}.allow") if "allow" in value else None
    return SubjectRule(allow=allow, deny=_subjects(value.get("deny", ()), f"{where}.deny"))


def _responses(value: Any) -> ResponsePermission | None:
    if isinstance(value, bool):
        return ResponsePermission() if value else None
    if not isinstance(value, dict):
        raise ValueError("allow_responses: expected true/false or {max, expires}")
    max_msgs = int(value.get("max", 1)) or 1
    expires = value.get("expires", 0)
    expires_ms = int(float(expires) * 1000) if isinstance(expires, int | float) else _duration_ms(expires)
    return ResponsePermission(max_msgs=max_msgs, expires_ms=expires_ms)


def _duration_ms(text: Any) -> int:
    units = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}
    text = str(text).strip()
    for unit in ("ms", "s", "m", "h"):
        if text.endswith(unit) and text[: -len(unit)].replace(".", "", 1).isdigit():
            return int(float(text[: -len(unit)]) * units[unit])
    raise ValueError(f"allow_responses.expires: not a duration: {text!r}")


def parse_permissions(value: Any) -> Permissions:
    """nats-server's `permissions { publish, subscribe, allow_responses }` (also `pub`/`sub`)."""
    if not isinstance(value, dict):
        raise ValueError("permissions: expected a map")
    fields: dict[str, Any] = {}
    for key, item in value.items():
        if key in ("publish", "pub"):
            fields["publish"] = _rule(item, "permissions.publish")
        elif key in ("subscribe", "sub"):
            fields["subscribe"] = _rule(item, "permissions.subscribe")
        elif key == "allow_responses":
            fields["responses"] = _responses(item)
        else:
            raise ValueError(f"permissions: unknown key {key!r}")
    perms = Permissions(**fields)
    if perms.responses is not None and perms.publish.allow is None:
        # nats-server: allow_responses implies the publish allow list is otherwise empty
        perms = attrs.evolve(perms, publish=attrs.evolve(perms.publish, allow=()))
    return perms


def publish_allowed(rule: SubjectRule, subject: str) -> bool:
    if rule.allow is not None and not any(subject_matches(a, subject) for a in rule.allow):
        return False
    return not any(subject_matches(d, subject) for d in rule.deny)


def _entries(patterns: tuple[str, ...], subject: str) -> tuple[bool, list[str]]:
    """(does a plain entry match `subject`, queue patterns of `"<subject> <queue>"` entries
    that match it)."""
    plain_hit = False
    queues: list[str] = []
    for entry in patterns:
        pattern, _, queue = entry.partition(" ")
        queue = queue.strip()
        if subject_matches(pattern, subject):
            if queue:
                queues.append(queue)
            else:
                plain_hit = True
    return plain_hit, queues


def _queue_matches(queue: str, patterns: list[str]) -> bool:
    """A queue name against queue patterns: literally, or by wildcard tokens."""
    return any(queue == q or (has_wildcard(q) and is_subset(queue, q)) for q in patterns)


def _plain(patterns: tuple[str, ...]) -> list[str]:
    return [e for e in patterns if " " not in e.strip()]


def subscribe_allowed(rule: SubjectRule, subject: str, queue: str | None = None) -> bool:
    """As nats-server: for `allow`, plain entries decide unless the subscription has a queue and
    some `"<subject> <queue>"` entry matches the subject, in which case the queue decides; for
    `deny`, a plain entry denies every subscription, a queue entry only its queue groups."""
    if rule.allow is not None:
        allowed, queues = _entries(rule.allow, subject)
        if queue is not None and queues:
            allowed = _queue_matches(queue, queues)
        if not allowed and has_wildcard(subject) and queue is None:
            allowed = any(is_subset(subject, a) for a in _plain(rule.allow))
        if not allowed:
            return False
    if rule.deny:
        denied, queues = _entries(rule.deny, subject)
        if not denied and queue is not None and queues:
            denied = _queue_matches(queue, queues)
        return not denied
    return True


def publish_violation(subject: str) -> str:
    return f'Permissions Violation for Publish to "{subject}"'


def subscribe_violation(subject: str, queue: str | None) -> str:
    text = f'Permissions Violation for Subscription to "{subject}"'
    return text if queue is None else f'{text} using queue "{queue}"'


@attrs.define
class PermissionChecker:
    """One connection's permission state: cached decisions and the reply subjects it may use."""

    perms: Permissions
    pub_cache: dict[str, bool] = attrs.field(factory=dict)  # read inline by client.py
    _deliver_cache: dict[str, bool] = attrs.field(factory=dict)
    _replies: dict[str, list[int]] = attrs.field(factory=dict)  # reply -> [left, expires_at_ms]

    def can_publish(self, subject: str, now_ms: Clock = 0) -> bool:
        return self.allowed_count(subject, 1, now_ms) == 1

    def allowed_count(self, subject: str, count: int, now_ms: Clock = 0) -> int:
        """How many of a run of `count` publishes to `subject` may go (the first ones): all,
        or as many as the remaining responses to that reply subject allow. `now_ms` is the
        time, or a callable giving it (read only when a reply permission is consulted)."""
        ok = self.pub_cache.get(subject)
        if ok is None:
            ok = publish_allowed(self.perms.publish, subject)
            if len(self.pub_cache) >= DECISION_CACHE_MAX:
                self.pub_cache.clear()
            self.pub_cache[subject] = ok
        if ok:
            return count
        if not self._replies:
            return 0
        now = now_ms() if callable(now_ms) else now_ms
        allowed = 0
        while allowed < count and self._use_reply(subject, now):
            allowed += 1
        return allowed

    def can_subscribe(self, subject: str, queue: str | None = None) -> bool:
        return subscribe_allowed(self.perms.subscribe, subject, queue)

    def delivery_denied(self, sub_subject: str, subject: str) -> bool:
        """Is a message on `subject`, matched by the wildcard subscription `sub_subject`,
        forbidden by a deny pattern? (Literal subscriptions were checked when made.)"""
        if not self.perms.subscribe.deny or not has_wildcard(sub_subject):
            return False
        denied = self._deliver_cache.get(subject)
        if denied is None:
            denied = any(subject_matches(d, subject) for d in _plain(self.perms.subscribe.deny))
            if len(self._deliver_cache) >= DECISION_CACHE_MAX:
                self._deliver_cache.clear()
            self._deliver_cache[subject] = denied
        return denied

    def overlaps_deny(self, sub_subject: str) -> bool:
        return any(subjects_overlap(d, sub_subject) for d in _plain(self.perms.subscribe.deny))

    @property
    def tracks_replies(self) -> bool:
        return self.perms.responses is not None

    def reply_received(self, reply: str, now_ms: int = 0) -> None:
        """A message with `reply` was delivered to this connection: allow responses to it."""
        resp = self.perms.responses
        if resp is None:
            return
        if reply not in self._replies and len(self._replies) >= RESPONSES_MAX:
            self._expire(now_ms)
            if len(self._replies) >= RESPONSES_MAX:
                del self._replies[next(iter(self._replies))]
        expires_at_ms = now_ms + resp.expires_ms if resp.expires_ms else 0
        self._replies[reply] = [resp.max_msgs, expires_at_ms]

    def _use_reply(self, subject: str, now_ms: int) -> bool:
        entry = self._replies.get(subject)
        if entry is None:
            return False
        left, expires_at_ms = entry
        if expires_at_ms and now_ms > expires_at_ms:
            del self._replies[subject]
            return False
        if left <= 1:
            del self._replies[subject]
        else:
            entry[0] = left - 1
        return True

    def _expire(self, now_ms: int) -> None:
        dead = [r for r, (_, exp) in self._replies.items() if exp and now_ms > exp]
        for reply in dead:
            del self._replies[reply]

    @property
    def pending_replies(self) -> int:
        return len(self._replies)
