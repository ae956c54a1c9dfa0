"""`vseg bag play` publishes a bag's messages unchanged, in order, at the recorded rate."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from vseg_ros.bag_play import PlayConfig, loop_pause_ns, play_bag
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


def _note_publish_times(node, times: list[float]) -> None:
    """Make every publisher ``node`` creates from now on append the time of each publish to ``times``."""
    create = node.create_publisher

    def create_noting(*args, **kwargs):
        publisher = create(*args, **kwargs)
        publish = publisher.publish
        publisher.publish = lambda msg: (times.append(time.monotonic()), publish(msg))
        return publisher

    node.create_publisher = create_noting


def test_play_loops_at_the_scaled_rate_and_messages_arrive_unchanged(ros_context, spin_until, bag):
    listener = rclpy.create_node("listener", context=ros_context)
    received: list[Image] = []
    qos = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE)
    listener.create_subscription(Image, "/camera/image_raw", received.append, qos)
    player = rclpy.create_node("player", context=ros_context)
    sent: list[float] = []
    _note_publish_times(player, sent)
    config = PlayConfig(rate=20.0, loop=True, max_loops=2, wait_for_subscribers_s=10.0)
    result: dict[str, int] = {}
    thread = threading.Thread(target=lambda: result.update(count=play_bag(bag, config, player)))
    thread.start()
    assert spin_until(listener, lambda: len(received) == 10, timeout=20.0), f"{len(received)} of 10 arrived"
    thread.join(timeout=10)
    assert result["count"] == 10
    assert received == [_image(i) for i in range(5)] * 2  # the second pass repeats the stamps: a bag loop
    # Recorded 1 s apart, played at 20x: 0.05 s apart, and the seam between the passes is no burst either
    # (a newest-frame consumer would drop the pass's last message). Sleeps never end early, so these
    # are lower bounds whatever the machine's load.
    assert sent[5] - sent[4] >= 0.05
    assert sent[4] - sent[0] >= 0.2 and sent[9] - sent[0] >= 0.45


def test_play_names_missing_topics_and_bad_rates(ros_context, bag):
    node = rclpy.create_node("player", context=ros_context)
    with pytest.raises(BagError, match="no topic /nope"):
        play_bag(bag, PlayConfig(topics=("/nope",)), node)
    with pytest.raises(ValueError, match="rate must be positive"):
        PlayConfig(rate=0)


def test_a_loop_pauses_one_recorded_interval_at_the_seam():
    s = 10**9
    assert loop_pause_ns({"/camera": (50 * s, 54 * s, 5)}) == s  # 1 Hz: the next pass starts 1 s later
    # The slowest topic sets the pause; the bag time before its first message counts towards its seam.
    spans = {"/camera": (0, 9 * s // 10, 10), "/gps": (s // 20, 19 * s // 20, 2)}
    assert loop_pause_ns(spans) == 9 * s // 10 - s // 20
    # Topics whose seam is already long enough, and single messages, need no pause.
    assert loop_pause_ns({"/a": (0, s, 2), "/b": (5 * s, 5 * s, 1)}) == 0
    assert loop_pause_ns({}) == 0
