"""End to end: a bag played in a loop through rclpy reaches the live segmentation node (its own
process, default sensor-data QoS) frame by frame, and each pass starts a fresh temporal state.

The node keeps only the newest frame, by design: a frame that arrives while another one still
waits replaces it and is counted as dropped. So every frame gets a label image only where frames
never come back to back: a slow rate, a node past its first-frame initialisation, and a player
that neither bursts at a loop's seam nor publishes before the node has matched it.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import rclpy
import test_segmentation_node
from test_segmentation_node import H, W, _expected, _frame, _image, _labels

from vseg_ros.bag_play import PlayConfig, play_bag
from vseg_ros.bags import BagWriter

# The node test's fixtures: the same checkpoint and the node started as users start it.
checkpoint = test_segmentation_node.checkpoint
start_node = test_segmentation_node.start_node

RATE_HZ = 2.0  # 0.5 s between frames; the node needs about 15 ms for one once initialised


@pytest.mark.slow
def test_a_looped_bag_reaches_the_live_node_frame_by_frame_and_each_pass_resets(start_node, checkpoint, tmp_path):
    node = start_node({"model": "lstm_icnet_v2", "weights": str(checkpoint)})
    # The node's first frame pays for lazy initialisation (0.1-0.3 s here, seconds on a loaded
    # machine), which would let a played frame wait long enough to be replaced by the next one.
    node.send("", _image(_frame(0), 1.0, "warm_up"))
    frames = [_frame(40 + i) for i in range(4)]
    played = [_image(f, 60.0 + i / RATE_HZ) for i, f in enumerate(frames)]
    bag = tmp_path / "bag"
    with BagWriter(bag) as writer:
        for msg in played:
            stamp = msg.header.stamp
            writer.write(f"{node.ns}/image", stamp.sec * 10**9 + stamp.nanosec, msg)
    player = rclpy.create_node("player", context=node.node.context)
    config = PlayConfig(rate=1.0, loop=True, max_loops=2, wait_for_subscribers_s=30.0)
    result: dict[str, object] = {}

    def play() -> None:
        try:
            result["count"] = play_bag(bag, config, player)
        except Exception as exc:  # the main thread reports it
            result["error"] = exc

    thread = threading.Thread(target=play)
    thread.start()
    sent = 2 * len(played)
    try:
        arrived = node.spin_until(
            node.node, lambda: len(node.infos[""]) > sent and len(node.labels[""]) > sent, timeout=60.0
        )
    finally:
        thread.join(timeout=30.0)
    assert "error" not in result, result.get("error")
    infos, labels = node.infos[""][1:], node.labels[""][1:]  # after the warm-up frame's
    assert arrived, (
        f"{len(labels)} label images of {sent} played frames; the node counted "
        + (f"{infos[-1].frames_received - 1} received, {infos[-1].frames_dropped} dropped" if infos else "nothing")
        + "\n"
        + node.output()
    )
    assert result["count"] == sent
    last = infos[-1]
    assert (last.frames_received, last.frames_processed, last.frames_dropped) == (sent + 1, sent + 1, 0)

    # Each output carries its frame's header: stamps in played order, twice over.
    for msg, info, source in zip(labels, infos, played * 2, strict=True):
        assert msg.header == info.header == source.header
        assert (msg.height, msg.width) == (H, W)
    # The warm-up came from another camera; the second pass jumps back in time: both start afresh.
    assert [i.reset_reason for i in infos] == ["frame_id_changed", "", "", "", "stamp_backwards", "", "", ""]
    expected = _expected(checkpoint, [(f, None) for f in frames])
    for i, msg in enumerate(labels):
        np.testing.assert_array_equal(_labels(msg), expected[i % len(frames)], err_msg=f"frame {i}")
