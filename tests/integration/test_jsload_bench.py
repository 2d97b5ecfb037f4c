"""`jetraft bench js-pub` end to end against a nats-server it starts: the raw client with two
publisher processes, and the nats-py path, both report the server's CPU per 1k messages."""

from __future__ import annotations

from click.testing import CliRunner

from cli.bench_js import js_pub


def test_nats_py_client_path_reports_server_cpu() -> None:
    result = CliRunner().invoke(js_pub, ["--server", "nats-server", "--client", "nats-py", "--one-at-a-time",
                                         "--msgs", "30"])
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())  # the title may wrap
    assert "client nats-py" in out and "pub_p50_us" in out
    assert "server_cpu_s_per_1k_msgs" in result.output


def test_raw_windowed_run_against_nats_server() -> None:
    result = CliRunner().invoke(js_pub, ["--server", "nats-server", "--msgs", "500", "--clients", "2",
                                         "--window", "32"])
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())  # the title may wrap
    assert "client raw" in out and "pub_msgs_per_s" in out
    assert "server_cpu_s_per_1k_msgs" in result.output and "FAILED" not in result.output
