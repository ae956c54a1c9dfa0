"""The node's pure-Python parts: newest-frame mailbox and stream statistics."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

from vseg_ros.latest_frame import LatestFrameMailbox
from vseg_ros.stream_stats import StreamStats


def test_mailbox_keeps_the_newest_frame_and_reports_drops():
    box: LatestFrameMailbox[str, int] = LatestFrameMailbox()
    assert [box.put("front", i) for i in range(4)] == [False, True, True, True]
    assert box.take(timeout=0) == ("front", 3)
    assert box.take(timeout=0.01) is None


def test_mailbox_serves_the_camera_that_waited_longest_first():
    box: LatestFrameMailbox[str, int] = LatestFrameMailbox()
    box.put("a", 1)
    box.put("b", 1)
    box.put("a", 2)  # a newer frame of a keeps a's place in the queue
    assert [box.take(0), box.take(0)] == [("a", 2), ("b", 1)]


def test_a_deeper_mailbox_keeps_frames_in_order_and_drops_the_oldest_beyond_its_depth():
    box: LatestFrameMailbox[str, int] = LatestFrameMailbox(depth=3)
    assert [box.put("a", i) for i in range(5)] == [False, False, False, True, True]
    box.put("b", 0)
    # a's oldest kept frame, then b (a's next frames wait behind b's oldest), then the rest of a.
    assert [box.take(0) for _ in range(4)] == [("a", 2), ("b", 0), ("a", 3), ("a", 4)]
    assert box.take(timeout=0.01) is None
    with pytest.raises(ValueError, match="depth must be at least 1"):
        LatestFrameMailbox(depth=0)


def test_mailbox_close_wakes_a_waiting_worker():
    box: LatestFrameMailbox[str, int] = LatestFrameMailbox()
    got = []
    worker = threading.Thread(target=lambda: got.append(box.take(timeout=30)))
    worker.start()
    box.close()
    worker.join(timeout=5)
    assert not worker.is_alive() and got == [None]


def test_stats_window_rates_and_percentiles():
    stats = StreamStats(window_s=2.0)
    latencies = [10.0, 20.0, 30.0, 40.0, 100.0]
    for i, latency in enumerate(latencies):
        t = 10.0 + 0.25 * i
        stats.received(t, dropped_previous=i == 3)
        stats.processed(t, latency_ms=latency, is_keyframe=i % 5 == 0, state_reset=i == 0)
    stats.rejected(11.0)
    snap = stats.snapshot(now=11.5)
    assert (snap.frames_received, snap.frames_processed, snap.frames_dropped, snap.frames_rejected) == (5, 5, 1, 1)
    assert snap.resets == 1
    assert snap.rate_hz == pytest.approx(5 / 2.0)
    assert snap.latency_p50_ms == pytest.approx(np.percentile(latencies, 50))
    assert snap.latency_p95_ms == pytest.approx(np.percentile(latencies, 95))
    assert snap.keyframe_share == pytest.approx(0.2)
    assert snap.seconds_since_last_frame == pytest.approx(0.5)
    # 2 s later the window is empty but the totals stay.
    late = stats.snapshot(now=14.0)
    assert late.window_processed == 0 and late.frames_processed == 5 and math.isnan(late.latency_p50_ms)


def test_stats_leave_unknown_latencies_out_of_the_percentiles():
    """NaN: a frame processed under use_sim_time before the first /clock message."""
    stats = StreamStats(window_s=2.0)
    for i, latency in enumerate([math.nan, 10.0, 30.0]):
        stats.processed(10.0 + 0.1 * i, latency_ms=latency, is_keyframe=False, state_reset=False)
    snap = stats.snapshot(now=10.5)
    assert snap.window_processed == 3 and snap.latency_p50_ms == pytest.approx(20.0)
