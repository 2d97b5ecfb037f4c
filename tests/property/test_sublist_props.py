"""Property tests: Sublist against a naive list of subscriptions, and the pattern relations of
natsd.subjects against brute force over a small universe of literal subjects.

Subjects and patterns come from a tiny token alphabet so that random subscriptions and
publishes collide often (wildcards, shared prefixes, queue groups, removals of live subs).
"""

from __future__ import annotations

import itertools
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from natsd.subjects import (
    is_subset,
    is_valid_literal_subject,
    is_valid_subject,
    pattern_regex,
    subject_matches,
    subjects_overlap,
)
from natsd.sublist import Sublist, SublistResult

LITERALS = ["a", "b", "c*"]
literal_tokens = st.sampled_from(LITERALS)
pattern_tokens = st.sampled_from(LITERALS + ["*"])


@st.composite
def patterns(draw: st.DrawFn, tokens_max: int = 4) -> str:
    tokens = draw(st.lists(pattern_tokens, min_size=0, max_size=tokens_max))
    if not tokens or draw(st.booleans()):
        tokens.append(">" if draw(st.booleans()) else draw(pattern_tokens))
    return ".".join(tokens)


# Published subjects: literal tokens, sometimes a literal-compared '*' token or an empty token.
published = st.lists(
    st.sampled_from(LITERALS + ["d"]) | st.sampled_from(["*", ""]), min_size=1, max_size=5
).map(".".join)
queues = st.none() | st.sampled_from(["q", "r"])


class Item:
    """Stands in for a per-subscription object; compared by identity."""

    __slots__ = ("n",)

    def __init__(self, n: int) -> None:
        self.n = n

    def __repr__(self) -> str:
        return f"Item({self.n})"


class SublistMachine(RuleBasedStateMachine):
    """Random insert/remove/match sequences on a small-cache Sublist, checked against a list."""

    subs = Bundle("subs")

    def __init__(self) -> None:
        super().__init__()
        # A small cache so eviction happens inside one example.
        self.sublist = Sublist(cache_size_max=8)
        self.model: list[tuple[str, str | None, Item]] = []
        self.next_item = 0

    def _new_item(self) -> Item:
        self.next_item += 1
        return Item(self.next_item)

    @rule(target=subs, subject=patterns(), queue=queues)
    def insert(self, subject: str, queue: str | None) -> tuple[str, str | None, Item]:
        entry = (subject, queue, self._new_item())
        generation = self.sublist.generation
        self.sublist.insert(*entry)
        self.model.append(entry)
        assert self.sublist.generation > generation
        return entry

    @rule(target=subs, existing=subs, subject=patterns(), queue=queues)
    def insert_same_item_elsewhere(
        self, existing: tuple[str, str | None, Item], subject: str, queue: str | None
    ) -> tuple[str, str | None, Item]:
        entry = (subject, queue, existing[2])
        if entry in self.model:
            return entry  # a duplicate insert is a no-op in both
        self.sublist.insert(*entry)
        self.model.append(entry)
        return entry

    @rule(entry=consumes(subs))
    def remove(self, entry: tuple[str, str | None, Item]) -> None:
        present = entry in self.model
        assert self.sublist.remove(*entry) is present
        if present:
            self.model.remove(entry)

    @rule(subject=patterns(), queue=queues)
    def remove_absent(self, subject: str, queue: str | None) -> None:
        generation = self.sublist.generation
        assert not self.sublist.remove(subject, queue, Item(-1))
        assert self.sublist.generation == generation

    @rule(subject=published)
    def match(self, subject: str) -> None:
        self._check(subject, self.sublist.match(subject))

    @rule(subject=published)
    def match_once(self, subject: str) -> None:
        """Matches like `match` and admits nothing to the cache."""
        before = self.sublist.cache_len()
        self._check(subject, self.sublist.match_once(subject))
        assert self.sublist.cache_len() == before

    def _check(self, subject: str, result: SublistResult) -> None:
        expected_plain: Counter[int] = Counter()
        expected_groups: dict[str, Counter[int]] = {}
        for pattern, queue, item in self.model:
            if not subject_matches(pattern, subject):
                continue
            if queue is None:
                expected_plain[id(item)] += 1
            else:
                expected_groups.setdefault(queue, Counter())[id(item)] += 1
        assert Counter(map(id, result.plain)) == expected_plain
        got_groups = {
            name: Counter(map(id, members))
            for name, members in zip(result.queue_names, result.queues, strict=True)
        }
        assert got_groups == expected_groups
        assert all(result.queues)

    @rule(pattern=patterns())
    def reverse_match(self, pattern: str) -> None:
        result = self.sublist.reverse_match(pattern)
        got = Counter(map(id, result.plain))
        for members in result.queues:
            got.update(map(id, members))
        expected = Counter(id(i) for s, _, i in self.model if subjects_overlap(pattern, s))
        assert got == expected

    @invariant()
    def counts_agree(self) -> None:
        assert self.sublist.count() == len(self.model)
        assert self.sublist.interest() == dict(Counter((s, q) for s, q, _ in self.model))
        assert self.sublist.cache_len() <= 8

    @invariant()
    def all_items_agree(self) -> None:
        got = sorted((s, q or "", i.n) for s, q, i in self.sublist.all_items())
        assert got == sorted((s, q or "", i.n) for s, q, i in self.model)


SublistMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestSublistMachine = SublistMachine.TestCase


# -- subject relations against brute force ----------------------------------------------------

# 'd' stands for any token no pattern names; lengths up to 6 cover patterns of up to 5 tokens.
UNIVERSE = [
    ".".join(p)
    for n in range(1, 7)
    for p in itertools.product(["a", "b", "d"], repeat=n)
]
small_patterns = st.lists(st.sampled_from(["a", "b", "*"]), min_size=0, max_size=4).flatmap(
    lambda ts: st.sampled_from(["a", "b", "*", ">"]).map(lambda last: ".".join([*ts, last]))
)


def _matched(pattern: str) -> frozenset[str]:
    return frozenset(s for s in UNIVERSE if subject_matches(pattern, s))


@settings(max_examples=200, deadline=None)
@given(small_patterns, small_patterns)
def test_overlap_and_subset_agree_with_brute_force(a: str, b: str) -> None:
    ma, mb = _matched(a), _matched(b)
    assert subjects_overlap(a, b) == bool(ma & mb)
    assert subjects_overlap(a, b) == subjects_overlap(b, a)
    assert is_subset(a, b) == (ma <= mb)
    assert is_subset(a, a) and subjects_overlap(a, a)


@settings(max_examples=200, deadline=None)
@given(patterns(), published)
def test_pattern_regex_agrees_with_subject_matches(pattern: str, subject: str) -> None:
    assert (pattern_regex(pattern).fullmatch(subject) is not None) == subject_matches(
        pattern, subject
    )


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab.*> \t", max_size=8))
def test_validity_matches_the_token_rules(s: str) -> None:
    tokens = s.split(".")
    expected = (
        bool(s)
        and not any(c in s for c in " \t")
        and all(tokens)
        and ">" not in tokens[:-1]
    )
    assert is_valid_subject(s) == expected
    assert is_valid_literal_subject(s) == (expected and not ({"*", ">"} & set(tokens)))


class UncachedPrefixMachine(SublistMachine):
    """The same checks with a cache admission policy: subjects under `a.` (standing in for
    JetStream ack subjects) are matched by walking the trie but never enter the cache, so
    matches must still agree with the naive list and the cache never holds such a subject."""

    def __init__(self) -> None:
        super().__init__()
        self.sublist = Sublist(cache_size_max=8, uncached_prefixes=("a.",))

    @invariant()
    def one_off_subjects_stay_out_of_the_cache(self) -> None:
        assert not any(s.startswith("a.") for s in self.sublist._cache)


UncachedPrefixMachine.TestCase.settings = SublistMachine.TestCase.settings
TestUncachedPrefixMachine = UncachedPrefixMachine.TestCase


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(patterns(), queues), max_size=12), st.lists(published, max_size=12))
def test_default_policy_never_caches_ack_subjects(subs: list, subjects: list[str]) -> None:
    """The default Sublist leaves `$JS.ACK.` subjects out of its cache and matches them like
    the naive matcher; other subjects are cached as before."""
    sublist: Sublist[Item] = Sublist()
    model = []
    for n, (pattern, queue) in enumerate(subs):
        item = Item(n)
        for subject in (pattern, "$JS.ACK." + pattern):
            sublist.insert(subject, queue, item)
            model.append((subject, queue, item))
    for tail in subjects:
        for subject in (tail, "$JS.ACK." + tail):
            result = sublist.match(subject)
            got = Counter(map(id, result.plain))
            for members in result.queues:
                got.update(map(id, members))
            expected = Counter(id(i) for s, _, i in model if subject_matches(s, subject))
            assert got == expected
            assert (subject in sublist._cache) is (not subject.startswith("$JS.ACK."))
