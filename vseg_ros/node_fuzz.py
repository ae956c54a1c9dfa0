"""`vseg node-fuzz`: the adversarial run of segmentation_node, as a tool.

The real node runs in a process of its own, as users start it, once reading raw Images and once
CompressedImages. A tester sends it malformed messages of every kind below, shuffled, with a valid
frame after every ``good_every`` of them, and checks what a perception engineer needs to trust the
node with a bad camera: it stays alive; it answers every valid frame; it refuses every malformed
message under the reason expected for it (its /diagnostics counters); it accounts for every message
(received = processed + rejected + dropped); its memory grows by less than ``rss_growth_mb``.

The node's image subscription is made reliable and deep for the run (``qos_overrides``), and its
frame queue deep (``queue_depth``), so that nothing is lost in DDS or replaced unread and the counts
must match exactly.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image

from vseg.msg import SegmentationInfo
from vseg_ros.node_process import NodeStartError, executor_spinner, resident_memory_mb, start_matched_node

__all__ = ["MALFORMED", "FuzzConfig", "FuzzReport", "run_fuzz"]

_H, _W = 48, 64  # valid frames: small, so that the run measures the node's handling, not the model
_DEPTH = 10_000
_RELIABLE = QoSProfile(depth=_DEPTH, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
_START_TIMEOUT_S = 120.0


def _jpeg(image: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", image)[1].tobytes()


def _claiming(width: int, height: int) -> bytes:
    """A small, complete jpeg whose frame header claims width x height (a decompression bomb)."""
    data = bytearray(_jpeg(np.full((16, 16, 3), 128, np.uint8)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def _raw(rng: random.Random, **fields) -> Image:
    frame = np.frombuffer(rng.randbytes(_H * _W * 3), np.uint8)
    msg = Image(height=_H, width=_W, encoding="rgb8", step=_W * 3, data=frame.tobytes())
    for key, value in fields.items():
        setattr(msg, key, value)
    return msg


def _compressed(data: bytes, fmt: str = "jpeg") -> CompressedImage:
    return CompressedImage(format=fmt, data=data)


def _truncated_jpeg(rng: random.Random) -> bytes:
    data = _jpeg(np.frombuffer(rng.randbytes(_H * _W * 3), np.uint8).reshape(_H, _W, 3))
    return data[: rng.randrange(200, len(data) - 2)]  # cut anywhere after the headers, before the end


def _corrupt_jpeg(rng: random.Random) -> bytes:
    """Either a jpeg start with no marker where one must follow (random bytes after a marker byte
    could spell a frame header of any size: too_large or implausible, not corrupt), or a complete
    jpeg with garbage between its scan and its end: libjpeg decodes that one, and complains."""
    if rng.random() < 0.5:
        return b"\xff\xd8" + bytes([rng.randrange(255)]) + rng.randbytes(99)
    data = _jpeg(np.frombuffer(rng.randbytes(_H * _W * 3), np.uint8).reshape(_H, _W, 3))
    return data[:-2] + bytes(rng.randrange(1, 255) for _ in range(rng.randrange(8, 200))) + data[-2:]


# (transport, reason) -> a malformed message refused for that reason (random where it can be).
MALFORMED: dict[tuple[str, str], Callable[[random.Random], Image | CompressedImage]] = {
    ("raw", "unknown_encoding"): lambda r: _raw(r, encoding=r.choice(["32FC1", "bayer_rggb8", "16UC3", "", "RGB8x"])),
    ("raw", "bad_layout"): lambda r: _raw(r, step=r.randrange(1, _W * 3)),
    ("raw", "size_mismatch"): lambda r: _raw(r, data=r.randbytes(r.randrange(0, _H * _W * 3))),
    ("raw", "empty"): lambda r: _raw(r, width=0, step=0, data=b""),
    ("raw", "too_small"): lambda r: _raw(r, height=16, width=16, step=48, data=r.randbytes(16 * 48)),
    ("raw", "too_large"): lambda r: _raw(r, height=r.randrange(5000, 60000), width=5000, step=15000),
    ("compressed", "unknown_format"): lambda r: _compressed(r.randbytes(64), r.choice(["theora", "h264", "bmp"])),
    ("compressed", "format_mismatch"): lambda r: _compressed(_jpeg(np.zeros((_H, _W, 3), np.uint8)), "png"),
    ("compressed", "corrupt"): lambda r: _compressed(_corrupt_jpeg(r)),
    ("compressed", "truncated"): lambda r: _compressed(_truncated_jpeg(r)),
    ("compressed", "implausible_size"): lambda r: _compressed(_claiming(r.randrange(2000, 4000), 4000)),
    ("compressed", "too_large"): lambda r: _compressed(_claiming(16384, 16384)),
    ("compressed", "too_small"): lambda r: _compressed(_jpeg(np.zeros((8, 8, 3), np.uint8))),
}


@dataclass(frozen=True)
class FuzzConfig:
    """per_kind: malformed messages of each kind and transport; good_every: a valid frame after this
    many malformed ones; weights/model: what the node runs (default: the node's default weights);
    rss_growth_mb: the bound on the node's memory growth from its first answered frame to the end."""

    per_kind: int = 20
    good_every: int = 50
    model: str = ""
    weights: str = ""
    device: str = "cpu"
    seed: int = 0
    rss_growth_mb: float = 100.0
    transports: tuple[str, ...] = ("raw", "compressed")

    def __post_init__(self) -> None:
        if self.per_kind < 1 or self.good_every < 1:
            raise ValueError(f"per_kind and good_every must be >= 1, got {self.per_kind} and {self.good_every}")
        if not set(self.transports) <= {"raw", "compressed"} or not self.transports:
            raise ValueError(f"transports must be raw and/or compressed, got {self.transports}")


@dataclass
class FuzzReport:
    transport: str
    sent: dict[str, int]  # malformed messages by expected reason
    refused: dict[str, int]  # the node's rejected_<reason> counters
    good_sent: int = 0
    good_answered: int = 0
    received: int = 0
    processed: int = 0
    dropped: int = 0
    rejected: int = 0
    rss_start_mb: float = 0.0
    rss_end_mb: float = 0.0
    seconds: float = 0.0
    node_starts: int = 0  # 2: the first node was never matched by DDS and was restarted
    exit_status: int | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _fuzz_one(config: FuzzConfig, transport: str, ctx: Context, workdir: Path) -> FuzzReport:
    compressed = transport == "compressed"
    ns = f"/fuzz{os.getpid()}_{transport}"
    topic = f"{ns}/image" + ("/compressed" if compressed else "")
    # queue_depth: a complete jpeg with damaged data passes the checks at arrival (only decoding
    # finds it), so it waits for the worker like a valid frame; queued, not replaced by the next one.
    params = {"device": config.device, "compressed": compressed, "publish_color": False,
              "publish_overlay": False, "publish_confidence": False, "queue_depth": 1000,
              f"qos_overrides.{topic}.subscription.reliability": "reliable",
              f"qos_overrides.{topic}.subscription.depth": _DEPTH}  # fmt: skip
    if config.model:
        params["model"] = config.model
    if config.weights:
        params["weights"] = config.weights
    rng = random.Random(f"{config.seed}-{transport}")
    kinds = [reason for t, reason in MALFORMED if t == transport]
    plan = [reason for reason in kinds for _ in range(config.per_kind)]
    rng.shuffle(plan)
    report = FuzzReport(transport, dict(Counter(plan)), {})
    tester = rclpy.create_node("fuzzer", context=ctx)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(tester)
    infos: list[SegmentationInfo] = []
    diagnostics: list[DiagnosticArray] = []
    tester.create_subscription(SegmentationInfo, f"{ns}/segmentation/info", infos.append, _RELIABLE)
    tester.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
    publisher = tester.create_publisher(CompressedImage if compressed else Image, topic, _RELIABLE)

    spin = executor_spinner(executor, 0.02)

    def unmatched() -> list[str]:
        """What the fuzzer does not see of the node yet (empty: it is ready)."""
        missing = [] if publisher.get_subscription_count() else [f"a subscription matching its publisher on {topic}"]
        info = f"{ns}/segmentation/info"
        return missing + ([] if tester.count_publishers(info) else [f"a publisher of {info}"])

    started = time.monotonic()
    try:
        node, report.node_starts = start_matched_node(
            params, namespace=ns, workdir=workdir, name=transport, missing=unmatched, spin=spin,
            timeout_s=_START_TIMEOUT_S,
        )  # fmt: skip
    except NodeStartError as exc:
        report.problems.append(str(exc))
        report.seconds = time.monotonic() - started
        executor.shutdown()
        tester.destroy_node()
        return report

    def spin_until(predicate, timeout: float) -> bool:
        return spin(lambda: predicate() or node.exited(), timeout) and predicate()

    stamp = [1_000_000_000]

    def publish(msg) -> None:
        stamp[0] += 50_000_000  # 20 Hz in stamps: no resets from gaps
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp[0], 1_000_000_000)
        msg.header.frame_id = "fuzz"
        publisher.publish(msg)

    def good() -> None:
        frame = np.frombuffer(rng.randbytes(_H * _W * 3), np.uint8).reshape(_H, _W, 3)
        before = len(infos)
        publish(_compressed(_jpeg(frame)) if compressed else _raw(rng, data=frame.tobytes()))
        report.good_sent += 1
        if spin_until(lambda: len(infos) > before, timeout=60.0):
            report.good_answered += 1

    total = 0
    try:
        good()
        report.rss_start_mb = resident_memory_mb(node.process.pid)
        for i, reason in enumerate(plan, 1):
            publish(MALFORMED[(transport, reason)](rng))
            if i % config.good_every == 0:
                good()
        good()
        total = len(plan) + report.good_sent

        def counters() -> dict[str, str]:
            """The newest /diagnostics values of this run's camera (other nodes may publish there)."""
            latest: dict[str, str] = {}
            for array in diagnostics:
                for status in array.status:
                    values = {kv.key: kv.value for kv in status.values}
                    if values.get("topic") == topic:
                        latest = values
            return latest

        def settled() -> bool:
            # /diagnostics is a snapshot once a second: one taken while the last frame was still in the
            # worker shows it received but not yet processed. Wait for one that accounts for all.
            values = counters()
            count = {k: int(values.get(f"frames_{k}", 0)) for k in ("received", "processed", "dropped", "rejected")}
            return count["received"] >= total and count["received"] == sum(count.values()) - count["received"]

        spin_until(settled, timeout=30.0)
        values = counters()
        report.refused = {k.removeprefix("rejected_"): int(v) for k, v in values.items() if k.startswith("rejected_")}
        report.received, report.processed = (
            int(values.get("frames_received", 0)),
            int(values.get("frames_processed", 0)),
        )
        report.dropped, report.rejected = int(values.get("frames_dropped", 0)), int(values.get("frames_rejected", 0))
        report.rss_end_mb = resident_memory_mb(node.process.pid)
    finally:
        report.seconds = time.monotonic() - started
        alive = not node.exited()
        report.exit_status = node.stop()
        executor.shutdown()
        tester.destroy_node()
    if not alive:
        report.problems.append(f"the node died during the run (status {report.exit_status}; log {node.log})")
    if report.good_answered != report.good_sent:
        report.problems.append(
            f"{report.good_sent - report.good_answered} of {report.good_sent} valid frames got no answer"
        )
    if report.refused != report.sent:
        report.problems.append(f"refused by reason {report.refused}, sent {report.sent}")
    if report.received != total or report.processed + report.rejected + report.dropped != report.received:
        report.problems.append(
            f"received {report.received} of {total} sent; processed {report.processed} + rejected "
            f"{report.rejected} + dropped {report.dropped}"
        )
    if report.rss_end_mb - report.rss_start_mb > config.rss_growth_mb:
        report.problems.append(
            f"memory grew by {report.rss_end_mb - report.rss_start_mb:.0f} MB (bound {config.rss_growth_mb:.0f} MB)"
        )
    if report.exit_status not in (0, None):
        report.problems.append(f"the node exited with status {report.exit_status} on SIGINT (log {node.log})")
    return report


def run_fuzz(config: FuzzConfig) -> list[FuzzReport]:
    """Fuzz a node per transport (each its own process) and return what each run found."""
    ctx = Context()
    rclpy.init(context=ctx)
    workdir = Path(tempfile.mkdtemp(prefix="vseg-fuzz-"))
    try:
        reports = [_fuzz_one(config, transport, ctx, workdir) for transport in config.transports]
    finally:
        ctx.try_shutdown()
    if all(r.ok for r in reports):
        shutil.rmtree(workdir, ignore_errors=True)  # the node logs stay where a problem points to them
    return reports
