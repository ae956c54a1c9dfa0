"""`vseg node-bench --soak SECONDS`: the node under a steady camera for a long while.

The real segmentation_node runs in a process of its own, as users start it, and a camera publishes
frames at a fixed rate (best effort, as camera drivers do) for the whole run, each stamped with the
wall clock when it goes out. Reported: what was sent, received, processed and dropped (the node's
own counters), stamp-to-info latency percentiles on the node's clock, and the node's resident
memory after the first minute (or half the run, if shorter) and at the end: a leak shows as growth.
The report quotes how the node said it runs the model (device and precision, or ONNX Runtime and its
providers), so a number is never credited to a backend that did not run.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image

from vseg.msg import SegmentationInfo
from vseg_ros.node_process import executor_spinner, resident_memory_mb, start_matched_node

__all__ = ["SoakConfig", "SoakReport", "run_soak"]

_START_TIMEOUT_S = 120.0
_FIRST_CHECKPOINT_S = 60.0


@dataclass(frozen=True)
class SoakConfig:
    seconds: float
    rate_hz: float = 30.0
    height: int = 480
    width: int = 640
    model: str = ""
    weights: str = ""  # "" and no model: the node's default weights
    device: str = "cpu"
    backend: str = "torch"  # or "onnxruntime": the node exports the model at start-up

    def __post_init__(self) -> None:
        if not (self.seconds > 0 and 0 < self.rate_hz <= 1000 and min(self.height, self.width) >= 32):
            raise ValueError(
                f"a soak needs seconds > 0, a rate in (0, 1000] Hz and frames of at least 32x32, got {self.seconds} s "
                f"at {self.rate_hz} Hz, {self.width}x{self.height}"
            )


@dataclass(frozen=True)
class SoakReport:
    seconds: float
    rate_hz: float
    frames_sent: int
    frames_received: int  # the node's counters, from its last info message
    frames_processed: int
    frames_dropped: int
    frames_rejected: int
    latency_p50_ms: float
    latency_p95_ms: float
    rss_first_mb: float  # after the first minute (or half the run)
    rss_first_at_s: float
    rss_end_mb: float
    exit_status: int
    runs: str  # the node's own words, e.g. "on cpu (fp32)" or "in onnxruntime (cpu)"

    def as_dict(self) -> dict:
        return asdict(self)


def run_soak(config: SoakConfig) -> SoakReport:
    """Run the node for ``config.seconds`` under a camera at ``config.rate_hz``; see the module."""
    ns = f"/soak{os.getpid()}"
    params = {
        "device": config.device,
        "backend": config.backend,
        "publish_color": False,
        "publish_overlay": False,
        "publish_confidence": False,
    }
    params.update({k: v for k, v in (("model", config.model), ("weights", config.weights)) if v})
    if config.backend == "onnxruntime":  # exported at start-up at the camera's size
        params.update(input_height=config.height, input_width=config.width)
    ctx = Context()
    rclpy.init(context=ctx)
    with tempfile.TemporaryDirectory(prefix="vseg-soak-") as workdir:
        node = rclpy.create_node("soak_camera", context=ctx)
        executor = SingleThreadedExecutor(context=ctx)
        executor.add_node(node)
        infos: list[SegmentationInfo] = []
        node.create_subscription(
            SegmentationInfo, f"{ns}/segmentation/info", infos.append,
            QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE),
        )  # fmt: skip
        camera = node.create_publisher(Image, f"{ns}/image", qos_profile_sensor_data)
        rng = np.random.default_rng(0)
        base = rng.integers(0, 256, (config.height, config.width + 256, 3), dtype=np.uint8)
        sent, rss_first, rss_first_at = 0, float("nan"), min(_FIRST_CHECKPOINT_S, config.seconds / 2)

        def unmatched() -> list[str]:
            return [] if camera.get_subscription_count() else [f"a subscription matching its publisher on {ns}/image"]

        soak = None
        try:
            soak, _ = start_matched_node(
                params, namespace=ns, workdir=Path(workdir), name="soak", missing=unmatched,
                spin=executor_spinner(executor, 0.05), timeout_s=_START_TIMEOUT_S,
            )  # fmt: skip
            process, log = soak.process, soak.log
            start = time.monotonic()
            period = 1.0 / config.rate_hz
            while (elapsed := time.monotonic() - start) < config.seconds and process.poll() is None:
                next_at = start + sent * period
                while time.monotonic() < next_at:
                    executor.spin_once(timeout_sec=max(0.0, min(0.005, next_at - time.monotonic())))
                shift = sent % 256  # a panning camera: every frame differs from the one before
                msg = Image(height=config.height, width=config.width, encoding="rgb8", step=config.width * 3)
                msg.data = np.ascontiguousarray(base[:, shift : shift + config.width]).tobytes()
                msg.header.frame_id = "soak_camera"
                msg.header.stamp = node.get_clock().now().to_msg()
                camera.publish(msg)
                sent += 1
                if np.isnan(rss_first) and elapsed >= rss_first_at:
                    rss_first = resident_memory_mb(process.pid)
            # The last frames finish, then the counters are read from the last info message.
            settle = time.monotonic() + 5.0
            while time.monotonic() < settle:
                executor.spin_once(timeout_sec=0.05)
            if process.poll() is not None:
                raise RuntimeError(
                    f"the node died during the soak (status {process.poll()}): {log.read_text()[-2000:]}"
                )
            rss_end = resident_memory_mb(process.pid)
        finally:
            if soak is not None:  # else start_matched_node stopped it and the error is on its way
                status = soak.stop()
            executor.shutdown()
            node.destroy_node()
            ctx.try_shutdown()
        runs = soak.how_it_runs()  # once it has exited: the start-up line may sit in a buffer before
    if not infos:
        raise RuntimeError("the node answered no frame")
    last = max(infos, key=lambda m: m.frames_received)
    latencies = np.array([m.latency_ms for m in infos])
    return SoakReport(
        seconds=config.seconds, rate_hz=config.rate_hz, frames_sent=sent,
        frames_received=last.frames_received, frames_processed=last.frames_processed,
        frames_dropped=last.frames_dropped, frames_rejected=last.frames_rejected,
        latency_p50_ms=float(np.percentile(latencies, 50)), latency_p95_ms=float(np.percentile(latencies, 95)),
        rss_first_mb=rss_first, rss_first_at_s=rss_first_at, rss_end_mb=rss_end, exit_status=status, runs=runs,
    )  # fmt: skip
