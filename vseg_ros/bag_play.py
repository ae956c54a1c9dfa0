"""`vseg bag play`: publish a bag's topics through rclpy at the recorded rate, for machines without
`ros2 bag`. Messages go out unchanged (headers as recorded), so ``--loop`` makes stamps jump back,
which the segmentation node answers with a reset of its temporal state. Between passes the player
pauses for one recorded interval, so a looped camera keeps its rate across the seam.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy

from vseg_ros.bags import BagError, list_topics, message_class, read_messages

__all__ = ["PlayConfig", "loop_pause_ns", "play_bag"]

# A publisher counts a subscription as soon as it knows of it, which for a process already on the
# graph is at once; the subscription's side matches only when the publisher's announcement reaches
# its process, and until then it discards what the publisher sends (best effort and reliable
# volatile alike: measured here, 1-5 of 59 first samples lost without a pause, none with 0.1 s).
# No API shows the far side's state, so the player gives it this long.
_SUBSCRIBER_SIDE_MATCH_S = 0.5


@dataclass(frozen=True)
class PlayConfig:
    """rate: playback speed factor (2.0 = twice as fast); loop: start over at the end until stopped;
    topics: only these (all when empty); wait_for_subscribers_s: before the first message, wait up to
    this long until every played topic has a subscriber, then a moment more so that the subscribers
    have matched the player too (0: do not wait); best_effort: QoS of the publishers (reliable
    otherwise, like `ros2 bag play`)."""

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


def loop_pause_ns(spans: Mapping[str, tuple[int, int, int]]) -> int:
    """Bag time between the last message of a pass and the first of the next, so that every topic's
    seam is at least its mean recorded interval. Without it a looped camera sends its last and first
    frame back to back, and a consumer that keeps only the newest frame drops one of them.

    spans: per topic, (first stamp, last stamp, message count) of one pass, stamps in ns.
    """
    if not spans:
        return 0
    start = min(first for first, _, _ in spans.values())
    end = max(last for _, last, _ in spans.values())
    pause = 0
    for first, last, count in spans.values():
        if count > 1:
            interval = (last - first) // (count - 1)
            pause = max(pause, interval - (end - last) - (first - start))
    return pause


def _sleep_until(wall: float) -> None:
    delay = wall - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def _wait_for_subscribers(publishers, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not all(p.get_subscription_count() for p in publishers):
        if time.monotonic() >= deadline:
            return
        time.sleep(0.02)
    time.sleep(_SUBSCRIBER_SIDE_MATCH_S)


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
        _wait_for_subscribers(publishers.values(), config.wait_for_subscribers_s)
    published = passes = 0
    pass_start = time.monotonic()  # earliest wall time of the next pass's first message
    while rclpy.ok(context=node.context):
        origin: tuple[float, int] | None = None  # (wall time, stamp) of this pass's first message
        spans: dict[str, tuple[int, int, int]] = {}
        for topic, stamp_ns, msg in read_messages(path, topics):
            # The clock starts at the first message, not before the bag is opened: a slow open must not
            # make the first messages of a pass catch up back to back.
            if origin is None:
                _sleep_until(pass_start)
                origin = (time.monotonic(), stamp_ns)
            else:
                _sleep_until(origin[0] + (stamp_ns - origin[1]) / 1e9 / config.rate)
            if not rclpy.ok(context=node.context):
                break
            publishers[topic].publish(msg)
            published += 1
            first, _, count = spans.get(topic, (stamp_ns, stamp_ns, 0))
            spans[topic] = (first, stamp_ns, count + 1)
        passes += 1
        if not spans or not config.loop or (config.max_loops and passes >= config.max_loops):
            break
        pass_start = time.monotonic() + loop_pause_ns(spans) / 1e9 / config.rate
    return published
