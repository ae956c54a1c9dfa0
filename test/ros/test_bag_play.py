"""`vseg bag play` publishes a bag's messages unchanged, in order, at the recorded rate."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from vseg_ros.bag_play import PlayConfig, play_bag
from vseg_ros.bags import BagError, BagWriter


def _image(i: int) -> Image:
    data = np.full((4, 6), i, dtype=np.uint8)
    msg = Image(height=4, width=6, encoding="mono8", step=6, data=data.tobytes())
    msg.header.stamp.sec, msg.header.frame_id = 50 + i, "cam"
    return msg


@pytest.fixture
def bag(tmp_path):
    path = tmp_path / "bag"
    with BagWriter(path) as writer:
        for i in range(5):
            writer.write("/camera/image_raw", (50 + i) * 10**9, _image(i))  # recorded 1 s apart
    return path


def test_play_loops_at_the_scaled_rate_and_messages_arrive_unchanged(ros_context, spin_until, bag):
    listener = rclpy.create_node("listener", context=ros_context)
    received: list[Image] = []
    qos = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE)
    listener.create_subscription(Image, "/camera/image_raw", received.append, qos)
    player = rclpy.create_node("player", context=ros_context)
    config = PlayConfig(rate=20.0, loop=True, max_loops=2, wait_for_subscribers_s=10.0)
    result: dict[str, float] = {}

    def play():
        t0 = time.monotonic()
        result["count"] = play_bag(bag, config, player)
        result["seconds"] = time.monotonic() - t0

    thread = threading.Thread(target=play)
    thread.start()
    assert spin_until(listener, lambda: len(received) == 10, timeout=20.0), f"{len(received)} of 10 arrived"
    thread.join(timeout=10)
    assert result["count"] == 10
    # Two passes of 4 s of recording at 20x take at least 2 x 0.2 s.
    assert result["seconds"] >= 0.4
    assert received == [_image(i) for i in range(5)] * 2  # the second pass repeats the stamps: a bag loop


def test_play_names_missing_topics_and_bad_rates(ros_context, bag):
    node = rclpy.create_node("player", context=ros_context)
    with pytest.raises(BagError, match="no topic /nope"):
        play_bag(bag, PlayConfig(topics=("/nope",)), node)
    with pytest.raises(ValueError, match="rate must be positive"):
        PlayConfig(rate=0)
