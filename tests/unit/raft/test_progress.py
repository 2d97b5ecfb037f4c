"""Per-follower flow control (raft/progress.py)."""

from __future__ import annotations

from raft.progress import Progress, ProgressState


def test_probe_sends_one_message_until_an_answer() -> None:
    pr = Progress(match=0, next_index=5, max_inflight=4)
    assert not pr.is_paused()
    pr.sent_append(last_index=6, n_entries=2)
    assert pr.is_paused() and pr.next_index == 5  # probing does not advance optimistically
    assert pr.maybe_update(6)
    pr.become_replicate()
    assert pr.state is ProgressState.REPLICATE and pr.next_index == 7 and not pr.is_paused()


def test_replicate_pipelines_up_to_the_inflight_bound() -> None:
    pr = Progress(match=10, next_index=11, max_inflight=3, state=ProgressState.REPLICATE)
    for last in (12, 14, 16):
        assert not pr.is_paused()
        pr.sent_append(last_index=last, n_entries=2)
    assert pr.is_paused() and pr.next_index == 17
    pr.maybe_update(14)  # frees the two oldest messages
    assert not pr.is_paused() and list(pr.inflight) == [16]


def test_stale_rejections_are_ignored() -> None:
    pr = Progress(match=10, next_index=20, max_inflight=8, state=ProgressState.REPLICATE)
    assert not pr.maybe_decrease(rejected=7, hint_next=3)  # older than what it acknowledged
    assert pr.next_index == 20
    probe = Progress(match=0, next_index=9, max_inflight=8)
    assert not probe.maybe_decrease(rejected=12, hint_next=3)  # not the probe in flight
    assert probe.maybe_decrease(rejected=8, hint_next=3) and probe.next_index == 3


def test_a_rejection_at_the_match_point_means_the_follower_lost_entries() -> None:
    pr = Progress(match=10, next_index=11, max_inflight=8, state=ProgressState.REPLICATE)
    assert pr.maybe_decrease(rejected=10, hint_next=1)
    assert pr.match == 0 and pr.state is ProgressState.PROBE and pr.next_index == 1


def test_snapshot_state_waits_and_resumes_after_the_snapshot() -> None:
    pr = Progress(match=2, next_index=3, max_inflight=8)
    pr.become_snapshot(50)
    assert pr.is_paused()
    assert not pr.maybe_decrease(rejected=2, hint_next=1)
    pr.maybe_update(50)
    pr.become_probe()
    assert pr.next_index == 51 and pr.state is ProgressState.PROBE
