"""`vseg bag play`: publish a bag's topics through rclpy at the recorded rate, for machines without
`ros2 bag`. Messages go out unchanged (headers as recorded), so ``--loop`` makes stamps jump back,
which the segmentation node answers with a reset of its temporal state.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy

from vseg_ros.bags import BagError, list_topics, message_class, read_messages

__all__ = ["PlayConfig", "play_bag"]


@dataclass(frozen=True)
class PlayConfig:
    """rate: playback speed factor (2.0 = twice as fast); loop: start over at the end until stopped;
    topics: only these (all when empty); wait_for_subscribers_s: before the first message, wait up to
    this long until every played topic has a subscriber (0: do not wait); best_effort: QoS of the
    publishers (reliable otherwise, like `ros2 bag play`)."""

    rate: float = 1.0
    loop: bool = False
    topics: tuple[str, ...] = ()
    wait_for_subscribers_s: float = 0.0
    best_effort: bool = False
    max_loops: int = 0  # with loop: stop after this many passes (0: until interrupted)

    def __post_init__(self) -> None:
        if not self.rate > 0:
            raise ValueError(f"rate must be positive, got {self.rate}")
        if self.wait_for_subscribers_s < 0 or self.max_loops < 0:
            raise ValueError("wait_for_subscribers_s and max_loops must not be negative")


def play_bag(path: str | Path, config: PlayConfig, node: Node) -> int:
    """Publish the bag on ``node``; return the number of messages published."""
    wanted = set(config.topics)
    topics = {t.name: message_class(t.msgtype) for t in list_topics(path) if not wanted or t.name in wanted}
    missing = wanted - topics.keys()
    if missing:
        raise BagError(f"bag {path} has no topic {', '.join(sorted(missing))}")
    qos = QoSProfile(
        depth=10, reliability=ReliabilityPolicy.BEST_EFFORT if config.best_effort else ReliabilityPolicy.RELIABLE
    )
    publishers = {name: node.create_publisher(cls, name, qos) for name, cls in topics.items()}
    if config.wait_for_subscribers_s:
        deadline = time.monotonic() + config.wait_for_subscribers_s
        while time.monotonic() < deadline and not all(p.get_subscription_count() for p in publishers.values()):
            time.sleep(0.02)
    published = passes = 0
    while rclpy.ok(context=node.context):
        start_wall, first = time.monotonic(), None
        for topic, stamp_ns, msg in read_messages(path, topics):
            first = stamp_ns if first is None else first
            delay = start_wall + (stamp_ns - first) / 1e9 / config.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if not rclpy.ok(context=node.context):
                break
            publishers[topic].publish(msg)
            published += 1
        passes += 1
        if not config.loop or (config.max_loops and passes >= config.max_loops):
            break
    return published
