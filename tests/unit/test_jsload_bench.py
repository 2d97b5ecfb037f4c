"""`jetraft bench js-pub | js-consume` with the raw client: a failed run is reported as FAILED
(no rate) and the command exits 1; small values keep their digits; raw has no push mode."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from cli.bench_js import JsTarget, format_value, js_consume, run_all
from cli.benchlib.jsrun import RunFailed


def test_a_failed_run_is_reported_as_failed_not_as_a_rate(capsys: pytest.CaptureFixture[str]) -> None:
    def failing(target: JsTarget, **_params: Any) -> dict[str, float]:
        raise RunFailed(f"3 errors; first error: status 503 at {target.url}")

    with pytest.raises(SystemExit) as exit_info:
        run_all("t", failing, "nats://127.0.0.1:1", "jetraft", False, 2)
    out = capsys.readouterr().out
    assert exit_info.value.code == 1
    assert "FAILED nats://127.0.0.1:1: RunFailed: 3 errors; first error: status 503" in out
    assert "pub_msgs_per_s" not in out


def test_format_value_keeps_small_cpu_figures() -> None:
    assert format_value(0.00734) == "0.00734"
    assert format_value(123456.0) == "123,456.0"
    assert format_value(None) == "-"


def test_raw_client_has_no_push_mode() -> None:
    result = CliRunner().invoke(js_consume, ["--url", "nats://127.0.0.1:1", "--mode", "push"])
    assert result.exit_code == 2 and "pull consumer only" in result.output
