# pure-core
"""The stream state machine: `apply(command, index)` over a MessageStore, deterministic.

Every replica of a stream applies the same committed commands in the same order and must end
in the same state, so nothing here reads a clock or draws randomness: the leader puts the
timestamp into `Publish.ts_ns` and the current time into `Expire.now_ns`. Stored timestamps are
made monotonic (`max(ts_ns, last_ts)`), which keeps time lookups and dedup pruning exact.

Publish rules, in order: sealed (10109), header size (10097), max_msg_size (10054),
Nats-Expected-Stream (10060), Nats-Msg-Id duplicate within duplicate_window (PubAck with
`duplicate`), Nats-Expected-Last-Msg-Id (10070), Nats-Expected-Last-Sequence (10071),
Nats-Expected-Last-Subject-Sequence[-Subject] (10071 / 10193), Nats-Rollup (10111), Nats-TTL
(10166/10165), discard-new limits (10077). A message with a valid Nats-TTL is removed by the
first `Expire` at or after its timestamp + TTL (`never` = kept; the index is rebuilt from the
stored headers on start, so it is the same on every replica). Then the message is stored at last_seq + 1, the rollup
purge runs, and discard-old limits (per subject, max_msgs, max_bytes) trim the oldest messages.

The dedup index is kept in the store (same transaction), so a restarted replica or one restored
from a snapshot decides duplicates exactly like the others. `apply` writes the applied index in
the same store batch; an index at or below the stored one is skipped (replay after restart).
`apply_batch(cmds, first_index)` applies a batch in one store transaction with the same
outcome; runs of plain publishes (no headers) are stored with one bulk `store_many`.
Retention hooks: `has_interest(subject)` (interest streams drop a message nobody wants) and the
`RemoveAcked` command (interest/workqueue messages acknowledged by the consumers).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import attrs

from jetstream import headers as H
from jetstream.config import Discard, Retention, StreamConfig
from jetstream.errors import ApiError, ErrCode, api_error, store_failed
from jetstream.store.base import MessageStore, msg_size

NANOS_PER_SECOND = 1_000_000_000


# -- commands ---------------------------------------------------------------------------------
@attrs.frozen
class Publish:
    subject: str
    payload: bytes
    ts_ns: int
    headers: bytes | None = None
    reply: str | None = None
    msg_id: str | None = None  # if None, taken from the Nats-Msg-Id header


@attrs.frozen
class PurgeCmd:
    filter: str | None = None
    seq: int | None = None  # purge messages below this sequence
    keep: int | None = None


@attrs.frozen
class DeleteMsg:
    seq: int
    no_erase: bool = True


@attrs.frozen
class UpdateConfig:
    config: StreamConfig


@attrs.frozen
class Expire:
    now_ns: int


@attrs.frozen
class RemoveAcked:
    """Messages the consumers no longer need (interest / workqueue retention)."""

    seqs: tuple[int, ...]


Command = Publish | PurgeCmd | DeleteMsg | UpdateConfig | Expire | RemoveAcked


# -- results ----------------------------------------------------------------------------------
@attrs.frozen
class PubAck:
    stream: str
    seq: int
    duplicate: bool = False

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"stream": self.stream, "seq": self.seq}
        if self.duplicate:
            out["duplicate"] = True
        return out


@attrs.frozen
class PurgeResult:
    purged: int

    def to_json(self) -> dict[str, Any]:
        return {"success": True, "purged": self.purged}


@attrs.frozen
class Removed:
    """Outcome of DeleteMsg / Expire / RemoveAcked / UpdateConfig trims: how many went."""

    count: int

    def to_json(self) -> dict[str, Any]:
        return {"success": True}


@attrs.frozen
class AlreadyApplied:
    index: int


Result = PubAck | PurgeResult | Removed | AlreadyApplied | ApiError


def puback_error_json(stream: str, error: ApiError) -> dict[str, Any]:
    """The PubAck body for a rejected publish."""
    return {"error": error.to_json(), "stream": stream, "seq": 0}


# -- the machine ------------------------------------------------------------------------------
class StreamStateMachine:
    def __init__(
        self,
        config: StreamConfig,
        store: MessageStore,
        has_interest: Callable[[str], bool] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.has_interest = has_interest or (lambda subject: True)
        # msg_id -> (seq, ts_ns), oldest first; a cache of the store's persisted index.
        self._msg_ids: dict[str, tuple[int, int]] = {}
        self._ttl_expiry: dict[int, int] = {}
        self._load_caches()
        if config.first_seq > 1 and store.state().last_seq == 0:
            with store.batch():
                store.skip_to(config.first_seq)

    def _load_caches(self) -> None:
        """Derive the in-memory indexes from the store (start, restore)."""
        self._msg_ids = {k: (s, t) for k, s, t in self.store.msg_ids()}
        # seq -> expiry (ns) of messages published with a Nats-TTL; derived from stored headers.
        self._ttl_expiry = self._scan_ttls() if self.config.allow_msg_ttl else {}

    def snapshot(self) -> bytes:
        """The whole applied state (store snapshot format; includes the applied index)."""
        return self.store.snapshot()

    def restore(self, data: bytes) -> None:
        """Replace the state with a snapshot (raises SnapshotError, changing nothing, if bad)."""
        self.store.restore(data)
        self._load_caches()

    # -- entry point ----------------------------------------------------------------------
    def apply(self, cmd: Command, index: int) -> Result:
        if index <= self.store.applied_index():
            return AlreadyApplied(index)
        with self.store.batch():
            result = self._dispatch(cmd)
            self.store.set_applied_index(index)
        return result

    def apply_batch(self, cmds: list[Command], first_index: int) -> list[Result]:
        """`apply(cmds[k], first_index + k)` for every k, in one store batch; runs of plain
        publishes (see `_plain`, even a run of one) are stored with one `store_many`. Same results and same final
        state as applying one by one (the property tests compare the two)."""
        if (len(cmds) == 1 and _plain(cmds[0]) and first_index > self.store.applied_index()
                and self._plain_ok()):  # a lone publish: the loop below, unrolled
            cfg = self.config
            if not self._msg_ids and cfg.max_msgs <= 0 and cfg.max_bytes <= 0:
                # nothing to prune or enforce: store_many (the row and the applied index) is
                # the whole transaction, so the store may commit it as one statement
                return self._publish_plain(cmds, first_index)  # type: ignore[arg-type]
            with self.store.batch():
                results = self._publish_plain(cmds, first_index)  # type: ignore[arg-type]
                self.store.set_applied_index(first_index)
            return results
        results = []
        with self.store.batch():
            k = 0
            while k < len(cmds):
                index = first_index + k
                if index <= self.store.applied_index():
                    results.append(AlreadyApplied(index))
                    k += 1
                    continue
                end = k
                if self._plain_ok():
                    while end < len(cmds) and _plain(cmds[end]):
                        end += 1
                if end > k:
                    results.extend(self._publish_plain(cmds[k:end], first_index + end - 1))  # type: ignore[arg-type]
                    self.store.set_applied_index(first_index + end - 1)
                    k = end
                    continue
                results.append(self.apply(cmds[k], index))
                k += 1
        return results

    def _plain_ok(self) -> bool:
        """Does this config let header-less publishes skip the per-message checks? (Nothing
        but max_msg_size and, after the run, the discard-old stream limits applies to them.)"""
        cfg = self.config
        return (not cfg.sealed and cfg.retention is not Retention.INTEREST
                and cfg.max_msgs_per_subject <= 0
                and (cfg.discard is not Discard.NEW or (cfg.max_msgs <= 0 and cfg.max_bytes <= 0)))

    def _publish_plain(self, cmds: list[Publish], applied_index: int) -> list[Result]:
        """A run of header-less publishes with no msg id: as `_publish` one by one, but one
        bulk append. Stream limits (discard old) are enforced once after the run: removals are
        always oldest-first, so the survivors are the same longest suffix that fits."""
        last_seq, last_ts = self.store.last_seq_ts()
        max_size = self.config.max_msg_size
        name = self.config.name
        rows: list[tuple[int, str, bytes | None, bytes, int]] = []
        results: list[Result] = []
        for cmd in cmds:
            ts_ns = cmd.ts_ns if cmd.ts_ns > last_ts else last_ts
            if self._msg_ids:
                self._prune_msg_ids(ts_ns, last_seq)
            if 0 < max_size < len(cmd.payload):
                results.append(api_error(ErrCode.STREAM_MESSAGE_EXCEEDS_MAXIMUM))
                continue
            last_seq += 1
            last_ts = ts_ns
            rows.append((last_seq, cmd.subject, None, cmd.payload, ts_ns))
            results.append(PubAck(name, last_seq))
        self.store.store_many(rows, applied_index)  # the store may write both in one row
        if self.config.max_msgs > 0 or self.config.max_bytes > 0:
            self._enforce_stream_limits()
        return results

    def _dispatch(self, cmd: Command) -> Result:
        if isinstance(cmd, Publish):
            return self._publish(cmd)
        if isinstance(cmd, PurgeCmd):
            return self._purge(cmd)
        if isinstance(cmd, DeleteMsg):
            return self._delete(cmd)
        if isinstance(cmd, Expire):
            return self._expire(cmd.now_ns)
        if isinstance(cmd, RemoveAcked):
            return Removed(sum(1 for seq in cmd.seqs if self._remove(seq)))
        if isinstance(cmd, UpdateConfig):
            ttl_turned_on = cmd.config.allow_msg_ttl and not self.config.allow_msg_ttl
            self.config = cmd.config
            if ttl_turned_on:
                self._ttl_expiry = self._scan_ttls()
            return Removed(self._enforce_all_limits())
        raise TypeError(f"unknown stream command {cmd!r}")

    # -- publish --------------------------------------------------------------------------
    def _publish(self, cmd: Publish) -> PubAck | ApiError:
        hdrs: Any = _HeaderLookup(H.parse_headers(cmd.headers)) if cmd.headers else _NO_HEADERS
        msg_id = cmd.msg_id if cmd.msg_id is not None else hdrs.get(H.MSG_ID)
        state = self.store.state()
        ts_ns = max(cmd.ts_ns, state.last_ts_ns)
        self._prune_msg_ids(ts_ns, state.last_seq)
        error = self._check_size(cmd) or self._check_expected_stream(hdrs)
        if error is not None:
            return error
        if msg_id:
            seen = self._msg_ids.get(msg_id)
            if seen is not None and seen[1] > ts_ns - self.config.duplicate_window_ns:
                return PubAck(self.config.name, seen[0], duplicate=True)
        error = (
            self._check_expected_last(hdrs, cmd.subject, state.last_seq)
            or self._check_rollup(hdrs)
            or self._check_ttl(hdrs)
            or self._check_discard_new(cmd, state)
        )
        if error is not None:
            return error
        seq = state.last_seq + 1
        self.store.store(seq, cmd.subject, cmd.headers, cmd.payload, ts_ns)
        if msg_id:
            self._msg_ids.pop(msg_id, None)
            self._msg_ids[msg_id] = (seq, ts_ns)
            self.store.save_msg_id(msg_id, seq, ts_ns)
        self._after_store(hdrs, cmd.subject, seq)
        return PubAck(self.config.name, seq)

    def _check_size(self, cmd: Publish) -> ApiError | None:
        if self.config.sealed:
            return api_error(ErrCode.STREAM_SEALED)
        hdr_len = len(cmd.headers or b"")
        if hdr_len > H.MAX_HEADER_BYTES:
            return api_error(ErrCode.STREAM_HEADER_EXCEEDS_MAXIMUM)
        if 0 < self.config.max_msg_size < hdr_len + len(cmd.payload):
            return api_error(ErrCode.STREAM_MESSAGE_EXCEEDS_MAXIMUM)
        return None

    def _check_expected_stream(self, hdrs: H.Headers) -> ApiError | None:
        expected = hdrs.get(H.EXPECTED_STREAM)
        if expected is not None and expected != self.config.name:
            return api_error(ErrCode.STREAM_NOT_MATCH)
        return None

    def _check_expected_last(self, hdrs: H.Headers, subject: str, last_seq: int) -> ApiError | None:
        expected_id = hdrs.get(H.EXPECTED_LAST_MSG_ID)
        if expected_id is not None:
            last_id = self.last_msg_id(last_seq)
            if expected_id != last_id:
                return api_error(ErrCode.STREAM_WRONG_LAST_MSG_ID, id=last_id or "")
        expected_seq = _parse_uint(hdrs.get(H.EXPECTED_LAST_SEQ))
        if expected_seq is not None and expected_seq != last_seq:
            return api_error(ErrCode.STREAM_WRONG_LAST_SEQUENCE, seq=last_seq)
        subj_seq = _parse_uint(hdrs.get(H.EXPECTED_LAST_SUBJ_SEQ))
        check_subject = hdrs.get(H.EXPECTED_LAST_SUBJ_SEQ_SUBJ)
        if subj_seq is None:
            if check_subject:
                return api_error(ErrCode.STREAM_EXPECTED_LAST_SEQ_PER_SUBJECT_INVALID)
            return None
        last = self.store.load_last_by_subject(check_subject or subject)
        actual = last.seq if last is not None else 0
        if actual != subj_seq:
            return api_error(ErrCode.STREAM_WRONG_LAST_SEQUENCE, seq=actual)
        return None

    def _check_rollup(self, hdrs: H.Headers) -> ApiError | None:
        rollup = hdrs.get(H.ROLLUP)
        if rollup is None:
            return None
        if not self.config.allow_rollup_hdrs or self.config.deny_purge:
            return api_error(ErrCode.STREAM_ROLLUP_FAILED, err="rollup not permitted")
        if rollup not in (H.ROLLUP_SUBJECT, H.ROLLUP_ALL):
            return api_error(ErrCode.STREAM_ROLLUP_FAILED, err=f'rollup value invalid: "{rollup}"')
        return None

    def _check_ttl(self, hdrs: H.Headers) -> ApiError | None:
        ttl = hdrs.get(H.MSG_TTL)
        if ttl is None:
            return None
        if not self.config.allow_msg_ttl:
            return api_error(ErrCode.MESSAGE_TTL_DISABLED)
        if parse_ttl_ns(ttl) is None:
            return api_error(ErrCode.MESSAGE_TTL_INVALID)
        return None

    def _check_discard_new(self, cmd: Publish, state: Any) -> ApiError | None:
        cfg = self.config
        if cfg.discard is not Discard.NEW:
            return None
        if cfg.max_msgs > 0 and state.messages >= cfg.max_msgs:
            return store_failed("maximum messages exceeded")
        size = msg_size(cmd.subject, cmd.headers, cmd.payload)
        if cfg.max_bytes > 0 and state.bytes + size > cfg.max_bytes:
            return store_failed("maximum bytes exceeded")
        if cfg.discard_new_per_subject and cfg.max_msgs_per_subject > 0:
            if self.store.subject_count(cmd.subject) >= cfg.max_msgs_per_subject:
                return store_failed("maximum messages per subject exceeded")
        return None

    def _after_store(self, hdrs: H.Headers, subject: str, seq: int) -> None:
        self._track_ttl(hdrs, seq)
        rollup = hdrs.get(H.ROLLUP)
        if rollup == H.ROLLUP_SUBJECT:
            self.store.purge(subject, before_seq=seq)
        elif rollup == H.ROLLUP_ALL:
            self.store.purge(None, before_seq=seq)
        self._enforce_subject_limit(subject)
        self._enforce_stream_limits()
        if self.config.retention is Retention.INTEREST and not self.has_interest(subject):
            self._remove(seq)

    # -- limits ---------------------------------------------------------------------------
    def _enforce_subject_limit(self, subject: str) -> int:
        limit = self.config.max_msgs_per_subject
        removed = 0
        if limit <= 0:
            return 0
        excess = self.store.subject_count(subject) - limit
        for _ in range(max(excess, 0)):
            oldest = self.store.load_next(0, subject)
            if oldest is None or not self._remove(oldest.seq):
                break
            removed += 1
        return removed

    def _enforce_stream_limits(self) -> int:
        cfg = self.config
        removed = 0
        state = self.store.state()
        for _ in range(state.messages):  # bounded: never more removals than messages
            over_msgs = cfg.max_msgs > 0 and state.messages > cfg.max_msgs
            over_bytes = cfg.max_bytes > 0 and state.bytes > cfg.max_bytes
            if not (over_msgs or over_bytes):
                break
            self._remove(state.first_seq)
            removed += 1
            state = self.store.state()
        return removed

    def _enforce_all_limits(self) -> int:
        """After a config update: lowered limits trim the oldest messages (any discard policy)."""
        removed = sum(self._enforce_subject_limit(s) for s in sorted(self.store.subject_counts()))
        return removed + self._enforce_stream_limits()

    def _expire(self, now_ns: int) -> Removed:
        self._prune_msg_ids(now_ns, self.store.state().last_seq)
        removed = self._expire_ttls(now_ns)
        if self.config.max_age_ns <= 0:
            return Removed(removed)
        cutoff = now_ns - self.config.max_age_ns
        for _ in range(self.store.state().messages):
            first = self.store.load_next(0)
            if first is None or first.ts_ns > cutoff:
                break
            self._remove(first.seq)
            removed += 1
        return Removed(removed)

    # -- per-message TTL (Nats-TTL) --------------------------------------------------------
    def _scan_ttls(self) -> dict[int, int]:
        expiry = {}
        for msg in self.store.iter_messages():
            ttl_ns = parse_ttl_ns(H.parse_headers(msg.hdrs).get(H.MSG_TTL) or "") if msg.hdrs else None
            if ttl_ns is not None and ttl_ns > 0:
                expiry[msg.seq] = msg.ts_ns + ttl_ns
        return expiry

    def _track_ttl(self, hdrs: H.Headers, seq: int) -> None:
        text = hdrs.get(H.MSG_TTL)
        ttl_ns = parse_ttl_ns(text) if text is not None and self.config.allow_msg_ttl else None
        if ttl_ns is not None and ttl_ns > 0:
            msg = self.store.load(seq)
            if msg is not None:
                self._ttl_expiry[seq] = msg.ts_ns + ttl_ns

    def _expire_ttls(self, now_ns: int) -> int:
        due = sorted(seq for seq, at in self._ttl_expiry.items() if at <= now_ns)
        for seq in due:
            del self._ttl_expiry[seq]
        return sum(1 for seq in due if self._remove(seq))

    # -- purge / delete -------------------------------------------------------------------
    def _purge(self, cmd: PurgeCmd) -> PurgeResult | ApiError:
        if self.config.sealed:
            return api_error(ErrCode.STREAM_SEALED)
        if self.config.deny_purge:
            return api_error(ErrCode.STREAM_PURGE_FAILED, err="stream purge not permitted")
        if cmd.seq and cmd.keep:
            return api_error(ErrCode.BAD_REQUEST)
        return PurgeResult(self.store.purge(cmd.filter, before_seq=cmd.seq or None, keep=cmd.keep or None))

    def _delete(self, cmd: DeleteMsg) -> Removed | ApiError:
        if self.config.sealed:
            return api_error(ErrCode.STREAM_SEALED)
        if self.config.deny_delete:
            return api_error(ErrCode.STREAM_MSG_DELETE_FAILED, err="message delete not permitted")
        if not self._remove(cmd.seq):
            return api_error(ErrCode.SEQUENCE_NOT_FOUND, seq=cmd.seq)
        return Removed(1)

    def _remove(self, seq: int) -> bool:
        return self.store.remove(seq)

    # -- dedup index ----------------------------------------------------------------------
    def _prune_msg_ids(self, now_ns: int, last_seq: int) -> None:
        """Forget ids older than the window (the one at last_seq stays for Expected-Last-Msg-Id).
        Entries are in time order (stored times are monotonic), so the scan stops early."""
        horizon = now_ns - self.config.duplicate_window_ns
        expired = []
        for k, (seq, ts) in self._msg_ids.items():
            if ts > horizon:
                break
            if seq != last_seq:
                expired.append(k)
        if not expired:
            return
        for k in expired:
            del self._msg_ids[k]
        self.store.prune_msg_ids(horizon + 1, last_seq)

    def last_msg_id(self, last_seq: int | None = None) -> str | None:
        """The Nats-Msg-Id of the newest stored publish, if it had one (the newest index entry)."""
        if last_seq is None:
            last_seq = self.store.state().last_seq
        if not self._msg_ids:
            return None
        newest = next(reversed(self._msg_ids))
        return newest if self._msg_ids[newest][0] == last_seq else None

    def msg_id_seq(self, msg_id: str) -> int | None:
        entry = self._msg_ids.get(msg_id)
        return entry[0] if entry else None


def _plain(cmd: Command) -> bool:
    """A publish without headers or msg id: only size and stream limits can apply to it."""
    return type(cmd) is Publish and cmd.headers is None and cmd.msg_id is None


class _HeaderLookup:
    """`Headers.get` semantics (first exact match, else first case-insensitive match) from two
    dicts built once per message: a publish consults about ten header names."""

    __slots__ = ("_exact", "_lower")

    def __init__(self, headers: H.Headers) -> None:
        self._exact: dict[str, str] = {}
        self._lower: dict[str, str] = {}
        for k, v in headers.items:
            self._exact.setdefault(k, v)
            self._lower.setdefault(k.lower(), v)

    def get(self, key: str) -> str | None:
        value = self._exact.get(key)
        return value if value is not None else self._lower.get(key.lower())


class _NoHeaders:
    __slots__ = ()

    def get(self, key: str) -> None:
        return None


_NO_HEADERS = _NoHeaders()


def _parse_uint(text: str | None) -> int | None:
    if text is None:
        return None
    text = text.strip()
    return int(text) if text.isdigit() else None


_GO_UNITS_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": NANOS_PER_SECOND,
                "m": 60 * NANOS_PER_SECOND, "h": 3600 * NANOS_PER_SECOND}


def parse_ttl_ns(text: str) -> int | None:
    """Nats-TTL: `never` (-1), integer seconds, or a Go duration (`30s`, `1h30m`), at least 1 s."""
    text = text.strip()
    if text == "never":
        return -1
    if text.isdigit():
        ns = int(text) * NANOS_PER_SECOND
    else:
        ns = _parse_go_duration_ns(text)
        if ns is None:
            return None
    return ns if ns >= NANOS_PER_SECOND else None


def _parse_go_duration_ns(text: str) -> int | None:
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return int(sum(float(n) * _GO_UNITS_NS[u] for n, u in parts))
