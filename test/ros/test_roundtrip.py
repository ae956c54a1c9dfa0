"""Image and SegmentationInfo messages survive a trip to another process and back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from vseg.msg import SegmentationInfo

HEIGHT, WIDTH = 720, 1280  # an HD frame: 2.7 MB, more than one default shared-memory segment


def _frame(i: int) -> np.ndarray:
    return np.random.default_rng(i).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)


def _image(i: int) -> Image:
    msg = Image(height=HEIGHT, width=WIDTH, encoding="rgb8", step=WIDTH * 3)
    msg.header.stamp.sec, msg.header.stamp.nanosec = 100 + i, 1000 * i
    msg.header.frame_id = f"camera_{i}"
    msg.data = _frame(i).tobytes()
    return msg


def _info(i: int) -> SegmentationInfo:
    msg = SegmentationInfo(model="lstm_icnet_v2", is_keyframe=i % 2 == 0, frames_since_keyframe=i % 2)
    msg.header.stamp.sec = 100 + i
    msg.header.frame_id = f"camera_{i}"
    msg.state_reset = i == 0
    msg.reset_reason = SegmentationInfo.RESET_FIRST_FRAME if i == 0 else SegmentationInfo.RESET_NONE
    msg.total_ms = 12.5 + i
    msg.frames_received, msg.frames_processed, msg.frames_dropped = 10 + i, 5 + i, 2**40 + i
    return msg


def test_image_and_info_round_trip_between_processes(ros_context, spin_until):
    prefix = f"/vseg_test_{os.getpid()}"
    peer = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("echo_peer.py")), "--prefix", prefix, "--timeout", "60"]
    )
    node = None
    try:
        import rclpy

        node = rclpy.create_node("vseg_roundtrip_test", context=ros_context)
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        images: list[Image] = []
        infos: list[SegmentationInfo] = []
        node.create_subscription(Image, f"{prefix}/out/image", images.append, qos)
        node.create_subscription(SegmentationInfo, f"{prefix}/out/info", infos.append, qos)
        pub_image = node.create_publisher(Image, f"{prefix}/in/image", qos)
        pub_info = node.create_publisher(SegmentationInfo, f"{prefix}/in/info", qos)

        # Both directions must be matched before publishing, or reliable samples go nowhere.
        def connected() -> bool:
            return (
                pub_image.get_subscription_count() > 0
                and pub_info.get_subscription_count() > 0
                and node.count_publishers(f"{prefix}/out/image") > 0
                and node.count_publishers(f"{prefix}/out/info") > 0
            )

        assert spin_until(node, connected, timeout=30.0), "the echo process never appeared on the graph"
        count = 4
        for i in range(count):
            pub_image.publish(_image(i))
            pub_info.publish(_info(i))
        assert spin_until(node, lambda: len(images) == count and len(infos) == count, timeout=30.0), (
            f"got {len(images)} images and {len(infos)} infos back of {count}"
        )
        for i, (image, info) in enumerate(zip(images, infos, strict=True)):
            assert (image.height, image.width, image.encoding, image.step) == (HEIGHT, WIDTH, "rgb8", WIDTH * 3)
            assert image.header.frame_id == f"camera_{i}"
            assert (image.header.stamp.sec, image.header.stamp.nanosec) == (100 + i, 1000 * i)
            received = np.frombuffer(image.data, np.uint8).reshape(HEIGHT, WIDTH, 3)
            np.testing.assert_array_equal(received, _frame(i))
            assert info == _info(i)
    finally:
        if node is not None:
            node.destroy_node()
        peer.send_signal(signal.SIGINT)
        try:
            assert peer.wait(timeout=20) == 0, "the echo process did not exit cleanly on SIGINT"
        finally:
            if peer.poll() is None:
                peer.kill()
