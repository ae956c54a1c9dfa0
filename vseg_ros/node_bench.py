"""What the node adds to the core: the node's own frame path, timed against VideoSegmenter.step.

The real SegmentationNode is built in-process and its frame path (decode the Image, reset checks,
the segmenter step, label/info messages, publishing to a subscribed topic) runs on HD frames; the
time of the step inside it is measured separately, so the ratio of the two is the node's overhead.
DDS transport of the input image is not included (it happens before the node sees a frame).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import rclpy
from rclpy.context import Context
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image

from vseg.msg import SegmentationInfo
from vseg_ros.segmentation_node import SegmentationNode

__all__ = ["NodeOverhead", "measure_node_overhead"]


@dataclass(frozen=True)
class NodeOverhead:
    model: str
    backend: str
    runner: str  # what the node's segmenter ran: the model's class, or OnnxSegmenter
    height: int
    width: int
    frames: int
    node_ms: float  # median time of the node's whole frame path
    step_ms: float  # median time of VideoSegmenter.step inside it
    overhead_ms: float  # median of (node - step) per frame
    overhead_ratio: float  # overhead_ms / step_ms
    latency_p50_ms: float  # image stamp to info publication, in process
    latency_p95_ms: float

    def as_dict(self) -> dict:
        return asdict(self)


def measure_node_overhead(
    model: str,
    *,
    weights: str = "",
    height: int = 720,
    width: int = 1280,
    frames: int = 10,
    warmup: int = 2,
    device: str = "cpu",
    backend: str = "torch",
) -> NodeOverhead:
    """backend onnxruntime: the node exports the model at the frame size on start-up, as it does
    with ``onnx_model`` empty and ``input_width``/``input_height`` set."""
    ctx = Context()
    rclpy.init(context=ctx)
    overrides = [
        Parameter("model", value=model),
        Parameter("weights", value=weights),
        Parameter("device", value=device),
        Parameter("backend", value=backend),
    ]
    if backend == "onnxruntime":
        overrides += [Parameter("input_width", value=width), Parameter("input_height", value=height)]
    try:
        node = SegmentationNode(context=ctx, parameter_overrides=overrides)
        # Matched readers, so that publishing does what it does on a vehicle (serialise and hand over).
        listener = rclpy.create_node("vseg_bench_listener", context=ctx)
        listener.create_subscription(SegmentationInfo, "/segmentation/info", lambda m: None, 50)
        listener.create_subscription(Image, "/segmentation/labels", lambda m: None, 50)
        camera = node._cameras[""]
        latencies: list[float] = []
        publish_info = camera.publishers["info"].publish

        def record_latency(msg: SegmentationInfo) -> None:
            latencies.append(msg.latency_ms)
            publish_info(msg)

        camera.publishers["info"].publish = record_latency
        step_ms: list[float] = []
        segment = camera.segmenter.step

        def timed_step(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return segment(*args, **kwargs)
            finally:
                step_ms.append((time.perf_counter() - t0) * 1e3)

        camera.segmenter.step = timed_step  # the same call, timed from outside
        rng = np.random.default_rng(0)
        base = rng.integers(0, 256, (height, width + 64, 3), dtype=np.uint8)
        node_ms: list[float] = []
        for i in range(warmup + frames):
            msg = Image(height=height, width=width, encoding="rgb8", step=width * 3)
            msg.header.frame_id = "camera"
            msg.data = np.ascontiguousarray(base[:, i : i + width]).tobytes()
            msg.header.stamp = node.get_clock().now().to_msg()
            t0 = time.perf_counter()
            node._process(camera, msg)
            node_ms.append((time.perf_counter() - t0) * 1e3)
        node_arr, step_arr = np.array(node_ms[warmup:]), np.array(step_ms[warmup:])
        overhead = node_arr - step_arr
        node.destroy_node()
        listener.destroy_node()
        return NodeOverhead(
            model=model,
            backend=backend,
            runner=type(camera.segmenter.model).__name__,
            height=height,
            width=width,
            frames=frames,
            node_ms=float(np.median(node_arr)),
            step_ms=float(np.median(step_arr)),
            overhead_ms=float(np.median(overhead)),
            overhead_ratio=float(np.median(overhead) / np.median(step_arr)),
            latency_p50_ms=float(np.percentile(latencies[warmup:], 50)),
            latency_p95_ms=float(np.percentile(latencies[warmup:], 95)),
        )
    finally:
        ctx.try_shutdown()
