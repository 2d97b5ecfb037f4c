"""Stream and consumer configs: defaults, leniency, nats-server's validation errors."""

from __future__ import annotations

from typing import Any

import pytest

from jetstream.config import (
    DEFAULT_DUPLICATE_WINDOW_NS,
    Discard,
    StreamConfig,
    check_stream_create,
    check_stream_update,
    stream_subjects_conflict,
)
from jetstream.consumer_config import AckPolicy, ConsumerConfig, DeliverPolicy, check_consumer_for_stream
from jetstream.errors import ERRORS, ApiError, JsApiException

SEC = 1_000_000_000
MS = 1_000_000

# What nats-py 2.16 sends for `js.add_stream(name="S", subjects=["s.>"])`.
NATS_PY_STREAM = {
    "name": "S", "subjects": ["s.>"], "discard": "old", "discard_new_per_subject": False,
    "max_msgs_per_subject": -1, "max_msg_size": -1, "no_ack": False, "duplicate_window": 0,
    "max_age": 0, "sealed": False, "deny_delete": False, "deny_purge": False, "allow_rollup_hdrs": False,
}


def stream_error(**overrides: Any) -> ApiError:
    with pytest.raises(JsApiException) as info:
        StreamConfig.from_json({**NATS_PY_STREAM, **overrides})
    return info.value.error


def test_nats_py_defaults_are_filled() -> None:
    cfg = StreamConfig.from_json(NATS_PY_STREAM)
    out = cfg.to_json()
    assert out["duplicate_window"] == DEFAULT_DUPLICATE_WINDOW_NS
    for key in ("max_msgs", "max_bytes", "max_msgs_per_subject", "max_msg_size", "max_consumers"):
        assert out[key] == -1
    assert (out["retention"], out["storage"], out["discard"], out["num_replicas"]) == ("limits", "file", "old", 1)
    assert StreamConfig.from_json(out) == cfg  # what we return parses back to the same config


def test_unknown_keys_are_ignored_but_echoed() -> None:
    cfg = StreamConfig.from_json({**NATS_PY_STREAM, "placement": {"cluster": "c1"}, "future_key": 1})
    assert cfg.to_json()["placement"] == {"cluster": "c1"}
    assert cfg.to_json()["future_key"] == 1


def test_subjects_default_to_name_and_window_clamps_to_max_age() -> None:
    cfg = StreamConfig.from_json({"name": "ORDERS", "max_age": 30 * SEC})
    assert cfg.subjects == ("ORDERS",)
    assert cfg.duplicate_window_ns == 30 * SEC


@pytest.mark.parametrize(
    ("overrides", "description"),
    [
        ({"name": "a.b"}, "stream name is required and can not contain '.', '*', '>'"),
        ({"name": ""}, "stream name is required and can not contain '.', '*', '>'"),
        ({"name": "x" * 256}, "stream name is too long, maximum allowed is 255"),
        ({"max_age": 50 * MS}, "max age needs to be >= 100ms"),
        ({"duplicate_window": 50 * MS}, "duplicates window needs to be >= 100ms"),
        ({"duplicate_window": -1}, "duplicates window can not be negative"),
        ({"max_age": SEC, "duplicate_window": 2 * SEC}, "duplicates window can not be larger then max age"),
        ({"deny_purge": True, "allow_rollup_hdrs": True}, "roll-ups require the purge permission"),
        ({"discard_new_per_subject": True}, "discard new per subject requires discard new policy to be set"),
        ({"discard_new_per_subject": True, "discard": "new"}, "discard new per subject requires max msgs per subject > 0"),
        ({"subjects": ["a", "a"]}, "duplicate subjects detected"),
        ({"subjects": ["a..b"]}, "invalid subject"),
        ({"subjects": ["$JS.API.>"]}, "subjects overlap with jetstream api"),
        ({"subjects": ["a.*", "a.b"]}, 'subject "a.*" overlaps with "a.b"'),
        ({"num_replicas": 6}, "maximum replicas is 5"),
    ],
)
def test_invalid_stream_configs_use_10052(overrides: dict, description: str) -> None:  # type: ignore[type-arg]
    error = stream_error(**overrides)
    assert (error.code, error.err_code, error.description) == (500, 10052, description)


def test_other_stream_errors() -> None:
    assert stream_error(name="a/b").err_code == 10128
    assert stream_error(num_replicas=-1).err_code == 10133
    assert stream_error(max_msgs="lots").err_code == 10025
    assert stream_error(retention="forever").err_code == 10025
    assert stream_error(mirror={"name": "O"}).err_code == 10034


def test_create_and_update_rules() -> None:
    base = StreamConfig.from_json(NATS_PY_STREAM)
    with pytest.raises(JsApiException):
        check_stream_create(StreamConfig.from_json({**NATS_PY_STREAM, "sealed": True}))
    with pytest.raises(JsApiException) as info:
        check_stream_update(base, StreamConfig.from_json({**NATS_PY_STREAM, "retention": "workqueue"}))
    assert info.value.error.description == "stream configuration update can not change retention policy"
    sealed = StreamConfig.from_json({**NATS_PY_STREAM, "sealed": True})
    with pytest.raises(JsApiException):
        check_stream_update(sealed, base)
    check_stream_update(base, StreamConfig.from_json({**NATS_PY_STREAM, "max_msgs": 5}))


def test_subject_conflicts_between_streams() -> None:
    a = StreamConfig.from_json({"name": "A", "subjects": ["orders.*"]})
    b = StreamConfig.from_json({"name": "B", "subjects": ["orders.new"]})
    c = StreamConfig.from_json({"name": "C", "subjects": ["items.>"]})
    assert stream_subjects_conflict(b, [a, c]) is True
    assert stream_subjects_conflict(c, [a, b]) is False


def test_error_table_is_well_formed() -> None:
    for err_code, (code, text) in ERRORS.items():
        assert 10000 < err_code < 11000 and code in (400, 404, 409, 412, 500, 503) and text


# -- consumers ----------------------------------------------------------------------------------
NATS_PY_CONSUMER = {
    "durable_name": "D", "deliver_policy": "all", "ack_policy": "explicit", "replay_policy": "instant",
    "ack_wait": 0, "idle_heartbeat": 0, "inactive_threshold": 0,
}


def consumer_error(**overrides: Any) -> ApiError:
    with pytest.raises(JsApiException) as info:
        ConsumerConfig.from_json({**NATS_PY_CONSUMER, **overrides})
    return info.value.error


def test_consumer_defaults() -> None:
    cfg = ConsumerConfig.from_json(NATS_PY_CONSUMER)
    assert (cfg.ack_wait_ns, cfg.max_ack_pending, cfg.max_waiting, cfg.max_deliver) == (30 * SEC, 1000, 512, -1)
    assert cfg.inactive_threshold_ns == 0  # durable: no reaping
    out = cfg.to_json()
    assert (out["name"], out["ack_policy"], out["deliver_policy"]) == ("D", "explicit", "all")
    ephemeral = ConsumerConfig.from_json({"deliver_subject": "inbox"})
    assert ephemeral.ack_policy is AckPolicy.NONE and ephemeral.inactive_threshold_ns == 5 * SEC
    assert ephemeral.max_waiting == 0
    assert ConsumerConfig.from_json(out) == cfg


def test_start_time_parses_rfc3339() -> None:
    cfg = ConsumerConfig.from_json({**NATS_PY_CONSUMER, "deliver_policy": "by_start_time",
                                    "opt_start_time": "2024-01-01T00:00:00.5Z"})
    assert cfg.deliver_policy is DeliverPolicy.BY_START_TIME
    assert cfg.opt_start_time_ns == 1_704_067_200_500_000_000
    assert cfg.to_json()["opt_start_time"] == "2024-01-01T00:00:00.5Z"


@pytest.mark.parametrize(
    ("overrides", "err_code"),
    [
        ({"durable_name": "a.b"}, 10103),
        ({"durable_name": "a/b"}, 10127),
        ({"ack_wait": -5}, 10183),
        ({"backoff": [SEC, -1]}, 10184),
        ({"backoff": [SEC, SEC], "max_deliver": 2}, 10116),
        ({"idle_heartbeat": 10 * MS, "deliver_subject": "x"}, 10083),
        ({"deliver_subject": "x.*"}, 10079),
        ({"deliver_subject": "x", "max_waiting": 3}, 10080),
        ({"deliver_subject": "x", "flow_control": True}, 10108),
        ({"flow_control": True}, 10089),
        ({"max_waiting": -1}, 10087),
        ({"deliver_policy": "by_start_sequence"}, 10094),
        ({"opt_start_seq": 5}, 10094),
        ({"deliver_policy": "by_start_time"}, 10094),
        ({"filter_subject": "a", "filter_subjects": ["b"]}, 10136),
        ({"filter_subjects": ["a", ""]}, 10139),
        ({"filter_subjects": ["a.*", "a.b"]}, 10138),
        ({"ack_policy": "sometimes"}, 10025),
    ],
)
def test_invalid_consumer_configs(overrides: dict, err_code: int) -> None:  # type: ignore[type-arg]
    assert consumer_error(**overrides).err_code == err_code


def test_consumer_deliver_policy_texts() -> None:
    error = consumer_error(deliver_policy="by_start_sequence")
    assert error.description == (
        "consumer delivery policy is deliver by start sequence, but optional start sequence is not set"
    )


def test_workqueue_rules() -> None:
    wq = StreamConfig.from_json({"name": "Q", "subjects": ["q.>"], "retention": "workqueue"})
    ok = ConsumerConfig.from_json({**NATS_PY_CONSUMER, "filter_subject": "q.a"})
    check_consumer_for_stream(ok, wq, [])
    cases = [
        ({**NATS_PY_CONSUMER, "ack_policy": "none"}, [], 10084),
        ({**NATS_PY_CONSUMER, "ack_policy": "none", "deliver_subject": "d"}, [], 10098),
        ({**NATS_PY_CONSUMER, "deliver_policy": "new"}, [], 10101),
        ({**NATS_PY_CONSUMER, "filter_subject": "q.*"}, [ok], 10100),
        (NATS_PY_CONSUMER, [ConsumerConfig.from_json(NATS_PY_CONSUMER)], 10099),
    ]
    for raw, others, err_code in cases:
        with pytest.raises(JsApiException) as info:
            check_consumer_for_stream(ConsumerConfig.from_json(raw), wq, others)
        assert info.value.error.err_code == err_code
    assert Discard.NEW.value == "new"
    with pytest.raises(JsApiException) as info:
        check_consumer_for_stream(ConsumerConfig.from_json({**NATS_PY_CONSUMER, "filter_subject": "other"}), wq, [])
    assert info.value.error.err_code == 10093
