"""`vseg bag play`: publish a bag's topics through rclpy at the recorded rate, for machines without
`ros2 bag`. Messages go out unchanged (headers as recorded), so ``--loop`` makes stamps jump back,
which the segmentation node answers with a reset of its temporal state. Between passes the player
pauses for one recorded interval, so a looped camera keeps its rate across the seam.

With a clock rate, the player is the graph's time source like `ros2 bag play --clock`: it publishes
rosgraph_msgs/Clock on /clock with the bag's (recorded) time, at that rate and right before every
message, so nodes with use_sim_time compare stamps with bag time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import rclpy
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock

from vseg_ros.bags import BagError, list_topics, message_class, read_messages
from vseg_ros.ros_process import StopRequest

__all__ = ["PlayConfig", "loop_pause_ns", "play_bag"]

# A publisher counts a subscription as soon as it knows of it, which for a process already on the
# graph is at once; the subscription's side matches only when the publisher's announcement reaches
# its process, and until then it discards what the publisher sends (best effort and reliable
# volatile alike: measured here, 1-5 of 59 first samples lost without a pause, none with 0.1 s).
# No API shows the far side's state, so the player gives it this long.
_SUBSCRIBER_SIDE_MATCH_S = 0.5
# rclcpp's ClockQoS, what /clock subscribers (rclpy's and rclcpp's time sources) ask for.
_CLOCK_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
# A reliable sample is handed to the transport when publish() returns, not delivered: a player that
# exits right after its last message can take the last few with it. At the end it waits this long
# for the subscribers' acknowledgements (a stop request skips the wait).
_FINAL_ACK_S = 2.0


@dataclass(frozen=True)
class PlayConfig:
    """rate: playback speed factor (2.0 = twice as fast); loop: start over at the end until stopped;
    topics: only these (all when empty); wait_for_subscribers_s: before the first message, wait up to
    this long until every played topic has a subscriber, then a moment more so that the subscribers
    have matched the player too (0: do not wait); best_effort: QoS of the publishers (reliable
    otherwise, like `ros2 bag play`); clock_hz: publish the bag's time on /clock at this rate (0: no
    /clock)."""

    rate: float = 1.0
    loop: bool = False
    topics: tuple[str, ...] = ()
    wait_for_subscribers_s: float = 0.0
    best_effort: bool = False
    max_loops: int = 0  # with loop: stop after this many passes (0: until interrupted)
    clock_hz: float = 0.0

    def __post_init__(self) -> None:
        if not self.rate > 0:
            raise ValueError(f"rate must be positive, got {self.rate}")
        if not 0 <= self.clock_hz <= 1000:
            raise ValueError(f"clock rate must be in 0..1000 Hz (0: no /clock), got {self.clock_hz}")
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


class _BagClock:
    """Bag time on /clock: pinned to a message's stamp when it goes out, running at the playback rate
    in between."""

    def __init__(self, node: Node, hz: float, rate: float) -> None:
        self._publisher = node.create_publisher(Clock, "/clock", _CLOCK_QOS)
        self.period_s = 1.0 / hz
        self._rate = rate
        self._anchor: tuple[float, int] | None = None  # (wall time, bag time) of the last pinned stamp

    def pin(self, stamp_ns: int) -> None:
        self._anchor = (time.monotonic(), stamp_ns)
        self._publish(stamp_ns)

    def tick(self) -> None:
        if self._anchor is not None:
            wall, stamp = self._anchor
            self._publish(stamp + int((time.monotonic() - wall) * self._rate * 1e9))

    def _publish(self, stamp_ns: int) -> None:
        msg = Clock()
        msg.clock.sec, msg.clock.nanosec = divmod(stamp_ns, 1_000_000_000)
        self._publisher.publish(msg)


def _sleep_until(wall: float, stop: threading.Event | StopRequest, clock: _BagClock | None) -> None:
    """Wait until monotonic time ``wall`` or a stop request, ticking the clock meanwhile."""
    while not stop.is_set():
        delay = wall - time.monotonic()
        if delay <= 0:
            return
        if clock is None:
            stop.wait(delay)
        # Never let the clock run past the next message's stamp: that one pins it.
        elif not stop.wait(min(delay, clock.period_s)) and wall - time.monotonic() > 0:
            clock.tick()


def _wait_for_subscribers(publishers, timeout_s: float, stop: threading.Event | StopRequest) -> None:
    deadline = time.monotonic() + timeout_s
    while not all(p.get_subscription_count() for p in publishers):
        if time.monotonic() >= deadline or stop.wait(0.02):
            return
    stop.wait(_SUBSCRIBER_SIDE_MATCH_S)


def play_bag(
    path: str | Path, config: PlayConfig, node: Node, stop: threading.Event | StopRequest | None = None
) -> int:
    """Publish the bag on ``node`` until its end (or its last loop) or until ``stop`` is set (the
    executable's signal-driven request, or any event); return the number of messages published."""
    stop = stop if stop is not None else threading.Event()
    wanted = set(config.topics)
    topics = {t.name: message_class(t.msgtype) for t in list_topics(path) if not wanted or t.name in wanted}
    missing = wanted - topics.keys()
    if missing:
        raise BagError(f"bag {path} has no topic {', '.join(sorted(missing))}")
    qos = QoSProfile(
        depth=10, reliability=ReliabilityPolicy.BEST_EFFORT if config.best_effort else ReliabilityPolicy.RELIABLE
    )
    publishers = {name: node.create_publisher(cls, name, qos) for name, cls in topics.items()}
    clock = _BagClock(node, config.clock_hz, config.rate) if config.clock_hz else None
    if config.wait_for_subscribers_s:
        _wait_for_subscribers(publishers.values(), config.wait_for_subscribers_s, stop)
    published = passes = 0
    pass_start = time.monotonic()  # earliest wall time of the next pass's first message

    def running() -> bool:
        return not stop.is_set() and rclpy.ok(context=node.context)

    while running():
        origin: tuple[float, int] | None = None  # (wall time, stamp) of this pass's first message
        spans: dict[str, tuple[int, int, int]] = {}
        for topic, stamp_ns, msg in read_messages(path, topics):
            # The clock starts at the first message, not before the bag is opened: a slow open must not
            # make the first messages of a pass catch up back to back.
            if origin is None:
                _sleep_until(pass_start, stop, clock)
                origin = (time.monotonic(), stamp_ns)
            else:
                _sleep_until(origin[0] + (stamp_ns - origin[1]) / 1e9 / config.rate, stop, clock)
            if not running():
                break
            if clock is not None:
                clock.pin(stamp_ns)
            publishers[topic].publish(msg)
            published += 1
            first, _, count = spans.get(topic, (stamp_ns, stamp_ns, 0))
            spans[topic] = (first, stamp_ns, count + 1)
        passes += 1
        if not spans or not config.loop or (config.max_loops and passes >= config.max_loops):
            break
        pass_start = time.monotonic() + loop_pause_ns(spans) / 1e9 / config.rate
    if not stop.is_set():
        for publisher in publishers.values():
            publisher.wait_for_all_acked(Duration(seconds=_FINAL_ACK_S))
    return published
