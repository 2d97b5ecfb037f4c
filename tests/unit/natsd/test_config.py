"""Config loading with nats-server key names, and the CLI's flag-over-file precedence."""

from __future__ import annotations

import pathlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cli.server import _options
from natsd.config import (
    ServerOptions,
    load_config,
    options_from_mapping,
    parse_duration_s,
    parse_size_bytes,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [(1048576, 1048576), ("1MB", 1 << 20), ("64M", 64 << 20), ("2GiB", 2 << 30), ("512", 512), ("8k", 8192)],
)
def test_sizes(text, expected) -> None:
    assert parse_size_bytes(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [(120, 120.0), (0.5, 0.5), ("2m", 120.0), ("1m30s", 90.0), ("500ms", 0.5), ("1h", 3600.0)],
)
def test_durations(text, expected) -> None:
    assert parse_duration_s(text) == pytest.approx(expected)


@pytest.mark.parametrize("bad", ["", "fast", "1x", True, "2m junk"])
def test_bad_values_raise_value_error(bad) -> None:
    with pytest.raises(ValueError):
        parse_duration_s(bad)
    with pytest.raises(ValueError):
        parse_size_bytes(bad)


@given(st.integers(0, 10**6), st.sampled_from(["ms", "s", "m", "h"]))
def test_duration_units_scale(number: int, unit: str) -> None:
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    assert parse_duration_s(f"{number}{unit}") == pytest.approx(number * scale)


def test_nats_server_keys_map_to_options() -> None:
    fields, unknown = options_from_mapping(
        {
            "listen": "127.0.0.1:4333",
            "server_name": "n1",
            "max_payload": "2MB",
            "max_pending": "32MB",
            "max_control_line": 8192,
            "max_connections": 10,
            "ping_interval": "30s",
            "ping_max": 3,
            "write_deadline": "2s",
            "debug": True,
            "jetstream": {"store_dir": "/tmp/js", "max_memory_store": "1G", "max_file_store": "10G"},
            "gateway": {"port": 7222},  # not supported: reported as unknown
        }
    )
    assert fields == {
        "host": "127.0.0.1",
        "port": 4333,
        "server_name": "n1",
        "max_payload_bytes": 2 << 20,
        "max_pending_bytes": 32 << 20,
        "max_control_line_bytes": 8192,
        "max_connections": 10,
        "ping_interval_s": 30.0,
        "max_pings_out": 3,
        "write_deadline_s": 2.0,
        "debug": True,
        "jetstream": True,
        "store_dir": "/tmp/js",
        "max_memory_store_bytes": 1 << 30,
        "max_file_store_bytes": 10 << 30,
    }
    assert unknown == ["gateway"]


def test_jetstream_flag_forms() -> None:
    assert options_from_mapping({"jetstream": "enabled"})[0] == {"jetstream": True}
    assert options_from_mapping({"jetstream": False})[0] == {"jetstream": False}


def _flags(**given) -> dict:
    names = [
        "port", "host", "server_name", "config_file", "logfile", "debug", "trace", "debug_trace",
        "log_json", "jetstream", "store_dir", "max_payload", "max_pending", "max_control_line",
        "max_connections", "ping_interval", "max_pings_out", "write_deadline",
    ]
    flags = dict.fromkeys(names)
    flags["debug_trace"] = False
    flags.update(given)
    return flags


def test_toml_file_then_flags_win(tmp_path: pathlib.Path) -> None:
    config = tmp_path / "server.conf"
    config.write_text('port = 5000\nserver_name = "from-file"\nping_interval = "5s"\n[jetstream]\nstore_dir = "/data"\n')
    assert load_config(str(config))[0]["port"] == 5000
    options, unknown = _options(_flags(config_file=str(config), port=6000, debug_trace=True))
    assert unknown == []
    assert options.port == 6000 and options.server_name == "from-file"
    assert options.ping_interval_s == 5.0 and options.jetstream and options.store_dir == "/data"
    assert options.debug and options.trace
    assert _options(_flags())[0] == ServerOptions()


def test_authorization_block_and_flags(tmp_path: pathlib.Path) -> None:
    fields, unknown = options_from_mapping(
        {"authorization": {"user": "u", "password": "p", "token": "t", "timeout": "1s", "users": []}}
    )
    assert fields == {"auth_user": "u", "auth_password": "p", "auth_token": "t", "auth_timeout_s": 1.0}
    assert unknown == ["authorization.users"]
    options, _ = _options(_flags(user="a", password="b", auth_token="c"))
    assert (options.auth_user, options.auth_password, options.auth_token) == ("a", "b", "c")
