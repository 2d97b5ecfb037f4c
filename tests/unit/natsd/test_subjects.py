"""Examples for natsd.subjects: the tricky subjects of protocol.md 1.7, and small brute-force
checks of overlap/subset against an explicit universe of literal subjects."""

from __future__ import annotations

import itertools

import pytest

from natsd.subjects import (
    has_wildcard,
    is_subset,
    is_valid_literal_subject,
    is_valid_queue_name,
    is_valid_subject,
    pattern_regex,
    subject_matches,
    subjects_overlap,
)

VALID = [
    "foo",
    "foo.bar",
    "*",
    ">",
    "foo.*",
    "foo.>",
    "*.>",
    "*.*.*",
    "foo*",
    "foo>",
    "f*o.b>r",
    "$JS.API.STREAM.CREATE.ORDERS",
    "_INBOX.abc.*",
    "ünïcødé.subject",
    "a-b_c:d/e",
]

INVALID = [
    "",
    ".",
    "..",
    ".foo",
    "foo.",
    "a..b",
    "foo bar",
    "foo\tbar",
    "foo\r",
    "\nfoo",
    "foo\fbar",
    " ",
    ">.foo",
    "foo.>.bar",
    "foo.>.>",
    "foo..>",
    ".*",
]


@pytest.mark.parametrize("s", VALID)
def test_valid_subjects(s: str) -> None:
    assert is_valid_subject(s)


@pytest.mark.parametrize("s", INVALID)
def test_invalid_subjects(s: str) -> None:
    assert not is_valid_subject(s)
    assert not is_valid_literal_subject(s)


@pytest.mark.parametrize(
    ("s", "literal"),
    [
        ("foo", True),
        ("foo*", True),
        ("foo>", True),
        ("a.b*.c", True),
        ("*", False),
        (">", False),
        ("foo.*", False),
        ("foo.>", False),
        ("*.foo", False),
        ("a..b", False),
    ],
)
def test_literal_subjects(s: str, literal: bool) -> None:
    assert is_valid_literal_subject(s) is literal


@pytest.mark.parametrize(
    ("s", "wild"),
    [("foo", False), ("foo*", False), ("a.b>", False), ("a.*.b", True), ("a.>", True), ("*", True)],
)
def test_has_wildcard(s: str, wild: bool) -> None:
    assert has_wildcard(s) is wild


@pytest.mark.parametrize(
    ("q", "ok"),
    [("workers", True), ("q.1", True), ("q*", True), ("", False), ("a b", False), ("a\tb", False)],
)
def test_queue_names(q: str, ok: bool) -> None:
    assert is_valid_queue_name(q) is ok


@pytest.mark.parametrize(
    ("pattern", "subject", "matches"),
    [
        ("foo", "foo", True),
        ("foo", "foo.bar", False),
        ("foo.*", "foo.bar", True),
        ("foo.*", "foo", False),
        ("foo.*", "foo.bar.baz", False),
        ("foo.>", "foo.bar.baz", True),
        ("foo.>", "foo", False),
        (">", "a", True),
        (">", "a.b.c", True),
        ("*.b.>", "a.b.c.d", True),
        ("*.b.>", "a.c.c.d", False),
        ("foo*", "foox", False),
        ("foo*", "foo*", True),
        # Published wildcard tokens are literal: only wildcard subscriptions reach them.
        ("foo.*", "foo.*", True),
        ("foo.bar", "foo.*", False),
        # Empty tokens never satisfy a wildcard.
        ("foo.*", "foo.", False),
        ("foo.>", "foo..x", False),
    ],
)
def test_subject_matches(pattern: str, subject: str, matches: bool) -> None:
    assert subject_matches(pattern, subject) is matches
    assert (pattern_regex(pattern).fullmatch(subject) is not None) is matches


@pytest.mark.parametrize(
    ("a", "b", "overlap"),
    [
        ("foo.>", "foo", False),
        ("foo.>", "foo.*", True),
        ("foo.*", "*.bar", True),
        ("foo.*", "bar.*", False),
        ("foo.*.baz", "foo.bar.*", True),
        ("foo.*", "foo.*.*", False),
        (">", "a.b.c", True),
        ("a.>", "b.>", False),
        ("foo*", "foo.*", False),
    ],
)
def test_subjects_overlap_examples(a: str, b: str, overlap: bool) -> None:
    assert subjects_overlap(a, b) is overlap
    assert subjects_overlap(b, a) is overlap


@pytest.mark.parametrize(
    ("a", "b", "subset"),
    [
        ("foo.bar", "foo.*", True),
        ("foo.*", "foo.bar", False),
        ("foo.*", "foo.>", True),
        ("foo.>", "foo.*", False),
        ("foo.>", "foo.>", True),
        ("foo.*.>", "foo.>", True),
        ("foo.>", "foo.*.>", False),
        ("*.*", ">", True),
        (">", "*.>", False),
        ("foo", "foo.>", False),
    ],
)
def test_is_subset_examples(a: str, b: str, subset: bool) -> None:
    assert is_subset(a, b) is subset


# -- brute force over a small universe ------------------------------------------------------

LITERAL_TOKENS = ["a", "b"]
# Literal subjects of 1..4 tokens from {a, b, c}: 'c' stands for "any other token".
UNIVERSE = [
    ".".join(p) for n in range(1, 5) for p in itertools.product(["a", "b", "c"], repeat=n)
]
PATTERNS = sorted(
    {
        ".".join(p)
        for n in range(1, 4)
        for p in itertools.product(LITERAL_TOKENS + ["*", ">"], repeat=n)
        if ">" not in p[:-1]
    }
)


def _matched(pattern: str) -> frozenset[str]:
    return frozenset(s for s in UNIVERSE if subject_matches(pattern, s))


MATCHED = {p: _matched(p) for p in PATTERNS}


def test_brute_force_universe_is_enough() -> None:
    # A pattern with k tokens matches something of length k+1 iff it ends in '>', so lengths up
    # to 4 separate every pair of 3-token patterns' behaviour on longer subjects.
    assert all(MATCHED[p] for p in PATTERNS)


def test_overlap_and_subset_agree_with_brute_force() -> None:
    wrong = []
    for a, b in itertools.product(PATTERNS, repeat=2):
        if subjects_overlap(a, b) != bool(MATCHED[a] & MATCHED[b]):
            wrong.append(("overlap", a, b))
        if is_subset(a, b) != (MATCHED[a] <= MATCHED[b]):
            wrong.append(("subset", a, b))
    assert wrong == []
