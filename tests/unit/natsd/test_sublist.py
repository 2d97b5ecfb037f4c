"""Examples for natsd.sublist.Sublist: matching, queue groups, removal, pruning, the cache."""

from __future__ import annotations

import pytest

from natsd.sublist import EMPTY_RESULT, Sublist, SublistResult


class Sub:
    """A per-subscription item; attrs-style eq makes it unhashable, which Sublist must allow."""

    __hash__ = None  # type: ignore[assignment]

    def __init__(self, name: str) -> None:
        self.name = name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sub) and other.name == self.name

    def __repr__(self) -> str:
        return f"Sub({self.name})"


def ids(items: tuple[Sub, ...]) -> list[str]:
    return sorted(i.name for i in items)


def groups(result: SublistResult) -> dict[str, list[str]]:
    assert len(result.queues) == len(result.queue_names)
    return {n: ids(g) for n, g in zip(result.queue_names, result.queues)}


def test_literal_and_wildcards() -> None:
    sl = Sublist()
    subs = {s: Sub(s) for s in ["foo.bar", "foo.*", "foo.>", ">", "*.bar", "foo", "foo.bar.baz"]}
    for subject, sub in subs.items():
        sl.insert(subject, None, sub)
    assert ids(sl.match("foo.bar").plain) == sorted(["foo.bar", "foo.*", "foo.>", ">", "*.bar"])
    assert ids(sl.match("foo").plain) == [">", "foo"]
    assert ids(sl.match("foo.bar.baz").plain) == [">", "foo.>", "foo.bar.baz"]
    assert ids(sl.match("x.y.z").plain) == [">"]
    assert sl.count() == 7


def test_no_match_is_the_empty_result() -> None:
    sl = Sublist()
    sl.insert("foo", None, Sub("a"))
    assert sl.match("bar") is EMPTY_RESULT
    assert sl.match("bar").is_empty()


def test_published_wildcard_tokens_are_literal() -> None:
    sl = Sublist()
    sl.insert("foo.bar", None, Sub("lit"))
    sl.insert("foo.*", None, Sub("pwc"))
    assert ids(sl.match("foo.*").plain) == ["pwc"]
    assert ids(sl.match("foo.>").plain) == ["pwc"]


def test_foo_star_token_is_literal() -> None:
    sl = Sublist()
    sl.insert("foo*", None, Sub("a"))
    assert sl.match("foox").is_empty()
    assert ids(sl.match("foo*").plain) == ["a"]


@pytest.mark.parametrize("subject", ["foo..bar", "foo.", ".foo", ""])
def test_empty_tokens_match_nothing(subject: str) -> None:
    sl = Sublist()
    sl.insert(">", None, Sub("all"))
    sl.insert("*.*", None, Sub("two"))
    sl.insert("foo.*.bar", None, Sub("three"))
    assert sl.match(subject).is_empty()


@pytest.mark.parametrize("subject", ["", "a..b", "foo.>.bar", "a b"])
def test_insert_rejects_invalid_subjects(subject: str) -> None:
    sl = Sublist()
    with pytest.raises(ValueError):
        sl.insert(subject, None, Sub("x"))
    assert sl.count() == 0 and sl.generation == 0


def test_insert_rejects_invalid_queue() -> None:
    with pytest.raises(ValueError):
        Sublist().insert("foo", "", Sub("x"))


def test_queue_groups_merge_by_name_across_patterns() -> None:
    sl = Sublist()
    sl.insert("foo.bar", "q", Sub("q1"))
    sl.insert("foo.*", "q", Sub("q2"))
    sl.insert("foo.>", "r", Sub("r1"))
    sl.insert("foo.bar", None, Sub("p"))
    result = sl.match("foo.bar")
    assert ids(result.plain) == ["p"]
    assert groups(result) == {"q": ["q1", "q2"], "r": ["r1"]}
    assert groups(sl.match("foo.baz")) == {"q": ["q2"], "r": ["r1"]}


def test_same_item_under_several_subjects() -> None:
    sl = Sublist()
    sub = Sub("x")
    sl.insert("foo.*", None, sub)
    sl.insert("foo.bar", None, sub)
    assert sl.match("foo.bar").plain == (sub, sub)
    assert sl.count() == 2
    assert sl.remove("foo.*", None, sub)
    assert sl.match("foo.bar").plain == (sub,)


def test_items_are_by_identity_not_equality() -> None:
    sl = Sublist()
    a, b = Sub("same"), Sub("same")
    sl.insert("foo", None, a)
    sl.insert("foo", None, b)
    assert sl.count() == 2
    assert sl.remove("foo", None, b)
    assert sl.match("foo").plain[0] is a


def test_duplicate_insert_is_a_no_op() -> None:
    sl = Sublist()
    sub = Sub("x")
    sl.insert("foo", "q", sub)
    generation = sl.generation
    sl.insert("foo", "q", sub)
    assert sl.generation == generation
    assert sl.count() == 1
    assert sl.interest() == {("foo", "q"): 1}


def test_remove_missing_returns_false_and_changes_nothing() -> None:
    sl = Sublist()
    sub = Sub("x")
    sl.insert("foo.bar", None, sub)
    generation = sl.generation
    assert not sl.remove("foo.baz", None, sub)
    assert not sl.remove("foo.bar", "q", sub)
    assert not sl.remove("foo.bar", None, Sub("x"))
    assert not sl.remove("foo", None, sub)
    assert not sl.remove("a..b", None, sub)
    assert sl.generation == generation and sl.count() == 1


def test_remove_prunes_empty_nodes() -> None:
    sl = Sublist()
    subs = [("a.b.c.d", Sub("1")), ("a.*.>", Sub("2")), ("a.b", Sub("3"))]
    for subject, sub in subs:
        sl.insert(subject, "q", sub)
    for subject, sub in subs:
        assert sl.remove(subject, "q", sub)
    assert sl._root.is_empty()  # noqa: SLF001 - the point of the test
    assert sl.count() == 0 and sl.interest() == {}


def test_generation_moves_on_every_change() -> None:
    sl = Sublist()
    sub = Sub("x")
    sl.insert("foo", None, sub)
    assert sl.generation == 1
    sl.remove("foo", None, sub)
    assert sl.generation == 2


def test_interest_counts_per_subject_and_queue() -> None:
    sl = Sublist()
    for i in range(3):
        sl.insert("foo.*", "q", Sub(f"q{i}"))
    sl.insert("foo.*", None, Sub("p"))
    sl.insert("bar", None, Sub("b"))
    assert sl.interest() == {("foo.*", "q"): 3, ("foo.*", None): 1, ("bar", None): 1}
    assert sl.interest_count("foo.*", "q") == 3
    assert sl.interest_count("nope") == 0


def test_all_items_and_reverse_match() -> None:
    sl = Sublist()
    a, b, c = Sub("a"), Sub("b"), Sub("c")
    sl.insert("foo.bar", None, a)
    sl.insert("foo.*", "q", b)
    sl.insert("baz.>", None, c)
    assert sorted((s, q, i.name) for s, q, i in sl.all_items()) == [
        ("baz.>", None, "c"),
        ("foo.*", "q", "b"),
        ("foo.bar", None, "a"),
    ]
    result = sl.reverse_match("foo.>")
    assert ids(result.plain) == ["a"] and groups(result) == {"q": ["b"]}
    assert ids(sl.reverse_match(">").plain) == ["a", "c"]
    assert sl.reverse_match("nope.*").is_empty()


def test_cache_hit_returns_the_same_object() -> None:
    sl = Sublist()
    sl.insert("foo.*", None, Sub("a"))
    first = sl.match("foo.bar")
    assert sl.match("foo.bar") is first
    assert sl.cache_len() == 1


def test_cache_sees_new_wildcard_subscriptions() -> None:
    sl = Sublist()
    sl.insert("foo.bar", None, Sub("lit"))
    assert ids(sl.match("foo.bar").plain) == ["lit"]
    assert sl.match("other").is_empty()
    sl.insert("foo.>", None, Sub("fwc"))
    assert ids(sl.match("foo.bar").plain) == ["fwc", "lit"]
    # Unaffected entries survive selective invalidation.
    assert "other" in sl._cache  # noqa: SLF001


def test_cache_sees_removals() -> None:
    sl = Sublist()
    sub = Sub("a")
    sl.insert("*.bar", None, sub)
    assert ids(sl.match("foo.bar").plain) == ["a"]
    sl.remove("*.bar", None, sub)
    assert sl.match("foo.bar").is_empty()


def test_cache_is_bounded() -> None:
    sl = Sublist(cache_size_max=64)
    sl.insert(">", None, Sub("all"))
    for i in range(1000):
        assert ids(sl.match(f"s.{i}").plain) == ["all"]
        assert sl.cache_len() <= 64
    assert sl.cache_len() > 0


def test_cache_can_be_disabled() -> None:
    sl = Sublist(cache_size_max=0)
    sl.insert("foo", None, Sub("a"))
    assert ids(sl.match("foo").plain) == ["a"]
    assert sl.cache_len() == 0


def test_very_long_subjects_do_not_recurse() -> None:
    depth = 3000
    sl = Sublist()
    sl.insert(".".join(["*"] * depth), None, Sub("stars"))
    sl.insert(".".join(["t"] * (depth - 1) + [">"]), None, Sub("tail"))
    subject = ".".join(["t"] * depth)
    assert ids(sl.match(subject).plain) == ["stars", "tail"]


def test_cache_eviction_keeps_the_newest_entries() -> None:
    sl = Sublist(cache_size_max=16)
    sl.insert("s.*", None, Sub("a"))
    for i in range(17):
        sl.match(f"s.{i}")
    assert "s.16" in sl._cache and "s.0" not in sl._cache  # noqa: SLF001
    assert sl.cache_len() <= 16


def test_single_node_result_is_rebuilt_after_member_changes() -> None:
    sl = Sublist(cache_size_max=0)
    a, b = Sub("a"), Sub("b")
    sl.insert("inbox.*", None, a)
    assert ids(sl.match("inbox.1").plain) == ["a"]
    sl.insert("inbox.*", None, b)
    assert ids(sl.match("inbox.2").plain) == ["a", "b"]
    sl.remove("inbox.*", None, a)
    assert ids(sl.match("inbox.3").plain) == ["b"]


# -- one-off subjects (JetStream acks): no cache entries, a stem cache -------------------------

ACK = "$JS.ACK.S.C.1.{}.{}.1764150000000000000.0"


def test_ack_subjects_do_not_enter_the_cache_and_reuse_their_stem() -> None:
    s: Sublist[Sub] = Sublist()
    consumer, other = Sub("consumer"), Sub("other")
    s.insert("$JS.ACK.S.C.>", None, consumer)
    s.insert("$JS.ACK.T.C.>", None, other)
    for n in range(1, 50):
        assert ids(s.match(ACK.format(n, n)).plain) == ["consumer"]
    assert s.cache_len() == 0
    assert list(s._stems) == ["$JS.ACK.S.C.1"]  # the walk stopped at the first unique token
    assert s.match("$JS.ACK.S.C.1").plain == (consumer,)  # exactly the stem's tokens
    assert s.match("$JS.ACK.S.C.1..2") is EMPTY_RESULT  # an empty token reaches nothing
    assert s.match("$JS.ACK.S.C.1.2.") is EMPTY_RESULT


def test_a_new_subscription_below_a_stem_is_seen_by_the_next_ack() -> None:
    s: Sublist[Sub] = Sublist()
    consumer, spy, tail = Sub("consumer"), Sub("spy"), Sub("tail")
    s.insert("$JS.ACK.S.C.>", None, consumer)
    assert ids(s.match(ACK.format(1, 1)).plain) == ["consumer"]
    s.insert("$JS.ACK.S.C.1.2.>", None, spy)  # deeper than the stem: the stem must go
    assert ids(s.match(ACK.format(2, 2)).plain) == ["consumer", "spy"]
    assert ids(s.match(ACK.format(3, 3)).plain) == ["consumer"]
    s.insert("$JS.ACK.S.C.*.*.*.*.*", None, tail)  # reaches the last token: never a stem
    assert ids(s.match(ACK.format(4, 4)).plain) == ["consumer", "tail"]
    assert ids(s.match(ACK.format(4, 4) + ".x").plain) == ["consumer"]
    s.remove("$JS.ACK.S.C.>", None, consumer)
    assert ids(s.match(ACK.format(5, 5)).plain) == ["tail"]
    assert s.match("$JS.ACK.Z.C.1.2.3.4.5") is EMPTY_RESULT
