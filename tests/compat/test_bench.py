"""`jetraft bench`: its pure helpers (marker counting, percentiles, medians, table) and one small
end-to-end run of each mode against a server started by the test."""

from __future__ import annotations

import pathlib

from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from cli.bench import bench, cluster_nodes
from cli.benchlib.launcher import ServerKind
from cli.benchlib.runner import split_evenly
from cli.benchlib.loadgen import (
    MSG_MARKER,
    build_batch,
    count_markers,
    count_until_pong,
    frames_per_batch,
    parse_url,
)
from cli.benchlib.report import latency_metrics, medians, percentile, render_table, throughput_metrics
from tests.compat.servers import REPO_ROOT, ServerProcess, running_server, skip_if_unavailable


@settings(max_examples=200, deadline=None)
@given(n=st.integers(0, 50), size=st.integers(0, 40), cuts=st.lists(st.integers(0, 4000), max_size=12))
def test_count_markers_counts_each_frame_once_however_the_stream_is_cut(n: int, size: int, cuts: list[int]) -> None:
    frame = b"MSG bench.subject 1 %d\r\n%s\r\n" % (size, b"x" * size)
    stream = frame * n
    total, carry, last = 0, b"", 0
    for cut in sorted(c for c in cuts if c <= len(stream)) + [len(stream)]:
        found, carry = count_markers(carry, stream[last:cut])
        total += found
        last = cut
    assert total == n


def test_build_batch_frames_are_well_formed() -> None:
    batch = build_batch("a.b", 3, 4)
    assert batch == b"PUB a.b 3\r\nxxx\r\n" * 4
    assert MSG_MARKER not in batch
    mixed = build_batch("s", 1, 5, subjects=3)
    assert mixed == b"".join(b"PUB s.%d 1\r\nx\r\n" % i for i in [0, 1, 2, 0, 1])
    assert frames_per_batch("s", 1, subjects=3) % 3 == 0


def test_parse_url() -> None:
    assert parse_url("nats://127.0.0.1:4333") == ("127.0.0.1", 4333)
    assert parse_url("localhost:1") == ("localhost", 1)


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.50) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([7.0], 0.9) == 7.0


def test_metrics_and_medians() -> None:
    reports = [("pub", 1000, 0.0, 0.5, ""), ("sub", 1000, 0.1, 1.1, ""), ("sub", 1000, 0.1, 2.1, "")]
    metrics = throughput_metrics(reports, 16)
    assert metrics["pub_msgs_per_s"] == 2000.0
    assert metrics["sub_msgs_per_s"] == 1000.0  # 2000 msgs over the 2 s span
    assert metrics["sub_min_msgs_per_s"] == 500.0
    lat = latency_metrics(("req", 4, 0.0, 2.0, "", [0.004, 0.001, 0.002, 0.003]))
    assert (lat["req_per_s"], lat["req_p50_us"]) == (2.0, 2000.0)
    assert medians([{"a": 1.0}, {"a": 5.0}, {"a": 2.0}]) == {"a": 2.0}
    two_pubs = throughput_metrics([("pub", 500, 1.0, 2.0, ""), ("pub", 500, 1.5, 3.0, "")], 16)
    assert two_pubs["pub_msgs_per_s"] == 500.0  # 1000 msgs from t=1 to t=3


@given(total=st.integers(0, 10_000), parts=st.integers(1, 64))
def test_split_evenly(total: int, parts: int) -> None:
    shares = split_evenly(total, parts)
    assert len(shares) == parts and sum(shares) == total
    assert max(shares) - min(shares) <= 1


def test_table_has_ratio_column_only_when_comparing() -> None:
    both = render_table("t", {"jetraft": {"pub_msgs_per_s": 50.0}, "nats-server": {"pub_msgs_per_s": 200.0}}, 3)
    assert [c.header for c in both.columns][-1] == "jetraft / nats-server"
    assert list(both.columns[-1].cells) == ["0.250"]
    one = render_table("t", {"nats-server": {"pub_msgs_per_s": 200.0}}, 1)
    assert len(one.columns) == 2


def test_bench_modes_end_to_end(kind: str, tmp_path: pathlib.Path) -> None:
    with running_server(kind, tmp_path) as proc:
        check_modes(proc)


def check_modes(proc: ServerProcess) -> None:
    runner = CliRunner()
    for args, label in [
        (["pub", "--msgs", "2000"], "publish msgs/s"),
        (["sub", "--msgs", "2001", "--subs", "2", "--subjects", "7", "--pubs", "2"], "slowest subscriber"),
        (["req", "--msgs", "50"], "request latency p50"),
    ]:
        result = runner.invoke(bench, [*args, "--url", proc.url, "--timeout", "30"], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        assert label in result.output, result.output


def test_bench_group_lists_its_own_and_the_other_areas_commands() -> None:
    result = CliRunner().invoke(bench, ["--help"], catch_exceptions=False)
    assert result.exit_code == 0
    for name in ["pub", "sub", "pubsub", "req"]:
        assert f"  {name} " in result.output
    assert bench.get_command(None, "no-such-bench") is None  # type: ignore[arg-type]


def test_bench_across_a_route(kind: str, tmp_path: pathlib.Path) -> None:
    """Publishers on node 1 and subscribers on node 2 of a cluster started like `--cluster` does;
    `--sub-url` makes the subscribers wait until their interest has crossed the route."""
    skip_if_unavailable(kind)
    nodes = cluster_nodes(ServerKind(kind))
    try:
        for node in nodes:
            node.log_path = tmp_path / f"{kind}-{node.port}.log"
            node.cwd = REPO_ROOT
            node.start()
        runner = CliRunner()
        for args, label in [
            (["pubsub", "--msgs", "3000", "--subs", "2", "--subjects", "3"], "subscribers, aggregate"),
            (["req", "--msgs", "30"], "request latency p50"),
        ]:
            urls = ["--url", nodes[0].url, "--sub-url", nodes[1].url, "--timeout", "60"]
            result = runner.invoke(bench, [*args, *urls], catch_exceptions=False)
            assert result.exit_code == 0, result.output
            assert label in result.output and "route" in result.output, result.output
    finally:
        for node in nodes:
            node.stop()


def test_count_until_pong_reports_messages_beyond_the_expected_count() -> None:
    import socket

    ours, server_side = socket.socketpair()
    with ours, server_side:
        server_side.sendall(b"MSG a 1 1\r\nx\r\nMSG a 1 1\r\nx\r\nPONG\r\n")
        assert count_until_pong(ours, timeout_s=5) == 2
        assert server_side.recv(16) == b"PING\r\n"
        server_side.sendall(b"PONG\r\n")
        assert count_until_pong(ours, timeout_s=5) == 0
