# pure-core
"""NATS subject rules: validation, matching, overlap and subset tests on `str` subjects.

A subject is a non-empty sequence of tokens separated by '.'. No token may be empty (so no
leading, trailing or doubled dots) and no whitespace (space, tab, CR, LF, FF) may appear
anywhere. Two tokens are wildcards, and only when they are the whole token: '*' matches exactly
one token, '>' matches one or more trailing tokens and must be the last token. Any other token is
literal, so `foo*` or `a>` are ordinary tokens.

All functions here work token by token on `str.split('.')`; the pattern-vs-pattern questions
(`subjects_overlap`, `is_subset`) are decided in one left-to-right pass, which is possible
because '>' can only be last. The callers validate first: the pattern functions assume their
arguments are valid subjects (published subjects in `subject_matches` may contain '*' or '>'
tokens, which are then compared literally, as the server does).
"""

from __future__ import annotations

import re

PWC = "*"
FWC = ">"
SEP = "."

# Subjects that never repeat: a JetStream ack subject carries the message's sequences and
# delivery time. Caches (sublist results, server routes, parser control lines) do not admit
# them: they would only push out the subjects that do repeat.
ONE_OFF_PREFIXES = ("$JS.ACK.",)

_WHITESPACE_RE = re.compile(r"[ \t\r\n\f]")


def _has_whitespace(s: str) -> bool:
    return _WHITESPACE_RE.search(s) is not None


def is_one_off(subject: str) -> bool:
    """Is `subject` one that is published once and never again (not worth caching)?"""
    return subject.startswith(ONE_OFF_PREFIXES)


def is_valid_subject(s: str) -> bool:
    """True for a well-formed subject, wildcards allowed (what SUB accepts)."""
    if not s or _has_whitespace(s):
        return False
    tokens = s.split(SEP)
    last = len(tokens) - 1
    for i, token in enumerate(tokens):
        if not token:
            return False
        if token == FWC and i != last:
            return False
    return True


def is_valid_literal_subject(s: str) -> bool:
    """True for a well-formed subject without wildcard tokens (a publish subject)."""
    return is_valid_subject(s) and not has_wildcard(s)


def is_valid_queue_name(q: str) -> bool:
    """A queue group name is any non-empty string without whitespace."""
    return bool(q) and not _has_whitespace(q)


def has_wildcard(s: str) -> bool:
    """True if some whole token is '*' or '>' (`foo*` is not a wildcard)."""
    if PWC not in s and FWC not in s:
        return False
    return any(t == PWC or t == FWC for t in s.split(SEP))


def subject_matches(pattern: str, subject: str) -> bool:
    """Does the pattern (wildcards allowed) match the subject (tokens taken literally)?"""
    if PWC not in pattern and FWC not in pattern:
        return pattern == subject
    return tokens_match(pattern.split(SEP), subject.split(SEP))


def tokens_match(pattern_tokens: list[str], subject_tokens: list[str]) -> bool:
    """`subject_matches` on pre-split tokens. An empty subject token never matches a wildcard."""
    n = len(subject_tokens)
    for i, p in enumerate(pattern_tokens):
        if i >= n:
            return False
        if p == FWC:
            return all(subject_tokens[i:])
        if p == PWC:
            if not subject_tokens[i]:
                return False
            continue
        if p != subject_tokens[i]:
            return False
    return len(pattern_tokens) == n


def subjects_overlap(a: str, b: str) -> bool:
    """Can some literal subject be matched by both patterns a and b?"""
    ta = a.split(SEP)
    tb = b.split(SEP)
    for x, y in zip(ta, tb):
        if x == FWC or y == FWC:
            # '>' takes the rest of the other pattern, which has at least this one token.
            return True
        if x == PWC or y == PWC or x == y:
            continue
        return False
    return len(ta) == len(tb)


def is_subset(pattern_a: str, pattern_b: str) -> bool:
    """Does pattern_b match every literal subject that pattern_a matches?"""
    ta = pattern_a.split(SEP)
    tb = pattern_b.split(SEP)
    for i, x in enumerate(ta):
        if i >= len(tb):
            return False
        y = tb[i]
        if y == FWC:
            return True
        if x == FWC:
            return False
        if y == PWC:
            continue
        if x == PWC or x != y:
            return False
    return len(ta) == len(tb)


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """A compiled regex whose fullmatch agrees with `subject_matches(pattern, ...)`."""
    parts = []
    for token in pattern.split(SEP):
        if token == PWC:
            parts.append(r"[^.]+")
        elif token == FWC:
            parts.append(r"[^.]+(?:\.[^.]+)*")
        else:
            parts.append(re.escape(token))
    return re.compile(r"\.".join(parts), re.DOTALL)
