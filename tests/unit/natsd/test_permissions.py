"""natsd.permissions: parsing, allow/deny decisions, delivery filter, allow_responses, caches."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from natsd.permissions import (
    DECISION_CACHE_MAX,
    PermissionChecker,
    Permissions,
    ResponsePermission,
    SubjectRule,
    parse_permissions,
    publish_allowed,
    publish_violation,
    subscribe_allowed,
    subscribe_violation,
)
from natsd.subjects import subject_matches


def test_parse_shapes() -> None:
    perms = parse_permissions({"publish": ["a.>"], "subscribe": {"allow": "b", "deny": ["b.x"]}})
    assert perms == Permissions(publish=SubjectRule(allow=("a.>",)),
                                subscribe=SubjectRule(allow=("b",), deny=("b.x",)))
    assert parse_permissions({"pub": {"deny": ["x"]}}).publish == SubjectRule(allow=None, deny=("x",))
    assert parse_permissions({"allow_responses": {"max": 3, "expires": "2s"}}).responses == \
        ResponsePermission(max_msgs=3, expires_ms=2000)
    # allow_responses alone denies every other publish (as nats-server)
    assert parse_permissions({"allow_responses": True}).publish.allow == ()
    assert parse_permissions({"allow_responses": False}).responses is None
    for bad in ({"publish": 3}, {"what": []}, {"publish": {"allow": [""]}}, [], {"publish": {"x": 1}}):
        with pytest.raises(ValueError):
            parse_permissions(bad)


def test_publish_rules() -> None:
    rule = SubjectRule(allow=("foo.>", "bar"), deny=("foo.secret",))
    assert publish_allowed(rule, "foo.a.b")
    assert publish_allowed(rule, "bar")
    assert not publish_allowed(rule, "foo.secret")
    assert not publish_allowed(rule, "baz")
    assert publish_allowed(SubjectRule(), "anything")
    assert not publish_allowed(SubjectRule(allow=()), "anything")


def test_subscribe_rules() -> None:
    rule = SubjectRule(allow=("foo.>", "bar.*"), deny=("foo.x",))
    assert subscribe_allowed(rule, "foo.*")  # a subset of foo.>
    assert subscribe_allowed(rule, "foo.>")
    assert subscribe_allowed(rule, "bar.*")
    assert subscribe_allowed(rule, "bar.>")  # as nats-server: the subject is matched literally
    assert not subscribe_allowed(rule, "bar.*.x")
    assert not subscribe_allowed(rule, "*")
    assert not subscribe_allowed(rule, ">")
    assert not subscribe_allowed(rule, "foo.x")
    checker = PermissionChecker(Permissions(subscribe=rule))
    assert checker.delivery_denied("foo.*", "foo.x")
    assert not checker.delivery_denied("foo.*", "foo.y")
    assert not checker.delivery_denied("foo.y", "foo.y")  # literal subs were checked when made
    assert checker.overlaps_deny("foo.*") and not checker.overlaps_deny("bar.*")


def test_violation_texts() -> None:
    assert publish_violation("a.b") == 'Permissions Violation for Publish to "a.b"'
    assert subscribe_violation("a", None) == 'Permissions Violation for Subscription to "a"'
    assert subscribe_violation("a", "q") == 'Permissions Violation for Subscription to "a" using queue "q"'


def test_allow_responses_counts_and_expiry() -> None:
    perms = parse_permissions({"allow_responses": {"max": 2, "expires": "1s"}})
    checker = PermissionChecker(perms)
    assert not checker.can_publish("_INBOX.1", now_ms=0)
    checker.reply_received("_INBOX.1", now_ms=0)
    assert checker.allowed_count("_INBOX.1", 5, now_ms=10) == 2
    assert not checker.can_publish("_INBOX.1", now_ms=20)
    checker.reply_received("_INBOX.2", now_ms=100)
    assert not checker.can_publish("_INBOX.2", now_ms=1101)  # expired
    checker.reply_received("_INBOX.3", now_ms=0)
    assert checker.can_publish("_INBOX.3", now_ms=999)
    assert checker.pending_replies == 1  # _INBOX.3 has one answer left


def test_reply_table_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    import natsd.permissions as mod

    monkeypatch.setattr(mod, "RESPONSES_MAX", 8)
    checker = PermissionChecker(parse_permissions({"allow_responses": True}))
    for i in range(100):
        checker.reply_received(f"r.{i}", now_ms=i)
    assert checker.pending_replies == 8
    assert checker.can_publish("r.99") and not checker.can_publish("r.0")


def test_decision_cache_is_bounded() -> None:
    checker = PermissionChecker(Permissions(publish=SubjectRule(allow=("a.>",))))
    for i in range(DECISION_CACHE_MAX * 2):
        assert checker.can_publish(f"a.{i}") and not checker.can_publish(f"b.{i}")
    assert len(checker.pub_cache) <= DECISION_CACHE_MAX


TOKENS = st.sampled_from(["a", "b", "c"])
LITERALS = st.lists(TOKENS, min_size=1, max_size=4).map(".".join)
PATTERNS = st.lists(st.sampled_from(["a", "b", "c", "*"]), min_size=1, max_size=4).flatmap(
    lambda ts: st.sampled_from([".".join(ts), ".".join(ts) + ".>", ">"]))


@settings(max_examples=150, deadline=None)
@given(allow=st.none() | st.lists(PATTERNS, max_size=3), deny=st.lists(PATTERNS, max_size=3),
       subjects=st.lists(LITERALS, min_size=1, max_size=10))
def test_publish_decision_matches_definition_and_cache(allow, deny, subjects) -> None:
    """The cached decision equals the definition: some allow matches (or no allow list) and no
    deny matches; asking twice never changes the answer."""
    rule = SubjectRule(allow=None if allow is None else tuple(allow), deny=tuple(deny))
    checker = PermissionChecker(Permissions(publish=rule))
    for subject in subjects + subjects:
        expected = (allow is None or any(subject_matches(a, subject) for a in allow)) and not any(
            subject_matches(d, subject) for d in deny)
        assert checker.can_publish(subject) is expected


@settings(max_examples=150, deadline=None)
@given(deny=st.lists(PATTERNS, min_size=1, max_size=3), sub=PATTERNS, subject=LITERALS)
def test_no_denied_delivery_reaches_a_wildcard_subscription(deny, sub, subject) -> None:
    """Whatever a subscription looks like, a message on a denied subject that it matches is
    either refused at SUB time or filtered at delivery."""
    checker = PermissionChecker(Permissions(subscribe=SubjectRule(deny=tuple(deny))))
    if not subject_matches(sub, subject) or not any(subject_matches(d, subject) for d in deny):
        return
    assert not checker.can_subscribe(sub) or checker.delivery_denied(sub, subject)


def test_queue_entries() -> None:
    rule = SubjectRule(allow=("foo q1", "baz.* q.*", "bar", "bar q9"), deny=("bar q1",))
    assert not subscribe_allowed(rule, "foo")
    assert subscribe_allowed(rule, "foo", "q1")
    assert not subscribe_allowed(rule, "foo", "q2")
    assert subscribe_allowed(rule, "bar")
    assert subscribe_allowed(rule, "bar", "q9")
    assert not subscribe_allowed(rule, "bar", "q2")  # queue entries for bar exist: they decide
    assert subscribe_allowed(rule, "baz.x", "q.a") and not subscribe_allowed(rule, "baz.x", "q")
    deny_only = SubjectRule(deny=("bar", "bar q1"))
    assert not subscribe_allowed(deny_only, "bar")
    assert not subscribe_allowed(deny_only, "bar", "q1")
    assert not subscribe_allowed(deny_only, "bar", "q2")  # a plain deny covers every queue
    assert subscribe_allowed(SubjectRule(deny=("bar q1",)), "bar", "q2")
    assert subscribe_allowed(SubjectRule(deny=("bar q1",)), "bar")
    checker = PermissionChecker(Permissions(subscribe=SubjectRule(deny=("a.b q",))))
    assert not checker.delivery_denied("a.*", "a.b")  # queue entries do not filter deliveries
