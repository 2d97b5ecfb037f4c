"""The raw JetStream load generator against real servers (`jetraft server -js` and the reference
nats-server): windowed and one-at-a-time publishes are all acked with distinct sequences and no
errors, a pull consumer gets every message once, a publish nobody stores is counted as an error,
and the standalone command prints one JSON line with the server's CPU per 1k messages."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterator

import pytest

from cli.benchlib import jsload
from cli.benchlib.jsload import CpuMeter, RawConn
from tests.compat.servers import KINDS, ServerProcess, running_server

MSGS = 300


@pytest.fixture(scope="module", params=KINDS)
def js_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp_dir: pathlib.Path = tmp_path_factory.mktemp(f"jsload-{request.param}")
    with running_server(request.param, tmp_dir, extra_args=["-js", "-sd", str(tmp_dir / "store")]) as proc:
        yield proc


def _fresh(conn: RawConn, stream: str, subject: str) -> None:
    jsload.reset_stream(conn, stream, [subject], timeout_s=20)
    jsload.wait_publishable(conn, subject.encode(), b"w", timeout_s=20)


def test_windowed_publish_is_fully_acked_with_distinct_sequences(js_server: ServerProcess) -> None:
    assert js_server.proc is not None
    meter = CpuMeter([js_server.proc.pid])
    with RawConn(js_server.url, timeout_s=20) as conn:
        _fresh(conn, "WIN", "win")
        result = jsload.publish_windowed(conn, "win", MSGS, 16, window=64, timeout_s=30, on_start=meter.start)
        meter.stop()
        info = conn.api("$JS.API.STREAM.INFO.WIN")
    assert result["ok"], result
    assert (result["acked"], result["errors"], result["unexpected_replies"]) == (MSGS, 0, 0)
    assert sorted(result["seqs"]) == list(range(2, MSGS + 2))  # seq 1 is the readiness probe
    assert info["state"]["messages"] == MSGS + 1
    assert meter.metrics(MSGS)["server_cpu_s_per_1k_msgs"] >= 0


def test_one_at_a_time_reports_latency(js_server: ServerProcess) -> None:
    with RawConn(js_server.url, timeout_s=20) as conn:
        _fresh(conn, "ONE", "one")
        result = jsload.publish_one_at_a_time(conn, "one", 40, 16, warmup=5, timeout_s=30)
    assert result["ok"] and result["acked"] == 40, result
    assert 0 < result["p50_us"] <= result["p90_us"] <= result["p99_us"]


def test_pull_consume_gets_and_acks_every_message(js_server: ServerProcess) -> None:
    with RawConn(js_server.url, timeout_s=20) as conn:
        _fresh(conn, "CON", "con")
        assert jsload.publish_windowed(conn, "con", MSGS - 1, 16, window=64, timeout_s=30)["ok"]
        jsload.create_pull_consumer(conn, "CON", "D", max_ack_pending=1000)
        result = jsload.consume_pull(conn, "CON", "D", MSGS, batch=128, timeout_s=30)
        info = conn.api("$JS.API.CONSUMER.INFO.CON.D")
    assert result["ok"] and result["msgs"] == MSGS and result["seqs_distinct"], result
    assert info["delivered"]["stream_seq"] == MSGS
    assert info["num_pending"] == 0


def test_publishes_nobody_stores_are_errors_not_a_rate(js_server: ServerProcess) -> None:
    with RawConn(js_server.url, timeout_s=20) as conn:
        result = jsload.publish_windowed(conn, "no.stream.here", 20, 16, window=8, timeout_s=30)
    assert not result["ok"]
    assert result["errors"] == 20 and result["acked"] == 0
    assert "503" in result["first_error"]


def test_standalone_command_prints_one_json_line(js_server: ServerProcess, capsys: pytest.CaptureFixture[str]) -> None:
    assert js_server.proc is not None
    pid = str(js_server.proc.pid)
    assert jsload.main(["pub", "--url", js_server.url, "--stream", "CLI", "--subject", "cli", "--msgs", "200",
                        "--window", "32", "--pid", pid]) == 0
    assert jsload.main(["consume", "--url", js_server.url, "--stream", "CLI2", "--subject", "cli2",
                        "--msgs", "200", "--pid", pid]) == 0
    pub, consume = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert pub["ok"] and pub["acked"] == 200 and "server_cpu_s_per_1k_msgs" in pub
    assert consume["ok"] and consume["msgs"] == 200 and "server_cpu_s_per_1k_msgs" in consume
