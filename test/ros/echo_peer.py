"""A second process for the round-trip test: echoes Image and SegmentationInfo messages back.

Subscribes ``<prefix>/in/image`` and ``<prefix>/in/info`` and republishes each message unchanged on
``<prefix>/out/...``. Exits on SIGINT/SIGTERM or after ``--timeout`` seconds.
"""

from __future__ import annotations

import argparse
import time

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from vseg.msg import SegmentationInfo


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    rclpy.init()
    node = rclpy.create_node("vseg_echo_peer")
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    for name, msg_type in (("image", Image), ("info", SegmentationInfo)):
        pub = node.create_publisher(msg_type, f"{args.prefix}/out/{name}", qos)
        node.create_subscription(msg_type, f"{args.prefix}/in/{name}", pub.publish, qos)
    deadline = time.monotonic() + args.timeout
    try:
        while rclpy.ok() and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
