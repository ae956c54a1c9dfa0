"""segmentation_node: camera images in, per-pixel classes out, temporal state kept between frames.

The node owns one ``VideoSegmenter`` per camera (all sharing one model on the device) and nothing
of the model logic. Subscription callbacks only leave the message in a newest-frame mailbox; one
worker thread decodes, runs the model and publishes, so a slow model drops frames instead of
building up latency. Every output carries the input image's header and size.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import (
    DurabilityPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CompressedImage, Image
from std_srvs.srv import Trigger

from vseg.msg import SegmentationClasses, SegmentationInfo
from vseg_core.keyframes import make_keyframe_policy
from vseg_core.palette import ClassPalette, load_palette_file
from vseg_core.resets import RESET_NONE, RESET_SERVICE, ResetConfig, StreamResetDetector
from vseg_core.stream import VideoSegmenter
from vseg_ros.conversions import (
    ConversionError,
    colorize,
    compressed_to_array,
    image_to_array,
    labels_to_image,
    mono_to_image,
    overlay,
    rgb_to_image,
)
from vseg_ros.latest_frame import LatestFrameMailbox
from vseg_ros.model_loading import load_model_for_node
from vseg_ros.parameters import NodeConfig, ParameterError, check_keyframe_settings, declare_parameters, read_config
from vseg_ros.stream_stats import StreamStats

__all__ = ["SegmentationNode", "main"]

_OUTPUT_QOS = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
_LATCHED_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
_DIAGNOSTICS_PERIOD_S = 1.0
_STALE_INPUT_S = 5.0


def _join(*parts: str) -> str:
    return "/".join(p for p in parts if p)


@dataclass
class _Camera:
    """Everything that belongs to one input stream."""

    name: str  # namespace as configured ("" for the plain `image` topic)
    segmenter: VideoSegmenter
    resets: StreamResetDetector
    stats: StreamStats
    publishers: dict[str, object] = field(default_factory=dict)
    pending_reset: str = RESET_NONE  # set by ~/reset, applied by the worker before the next frame

    @property
    def label(self) -> str:
        return self.name or "image"


class SegmentationNode(Node):
    def __init__(self, **node_kwargs) -> None:
        super().__init__("segmentation", **node_kwargs)
        declare_parameters(self)
        self.config: NodeConfig = read_config(self)
        model, classes = load_model_for_node(self.config, self.get_logger())
        self.classes: ClassPalette = (
            load_palette_file(Path(self.config.palette_file)) if self.config.palette_file else classes
        )
        if len(self.classes.names) < model.num_classes:
            raise ParameterError(
                f"parameter 'palette_file' names {len(self.classes.names)} classes, the model predicts "
                f"{model.num_classes}"
            )
        self._palette = np.asarray(self.classes.colors, dtype=np.uint8).reshape(-1, 3)
        self._mailbox: LatestFrameMailbox[str, Image | CompressedImage] = LatestFrameMailbox()
        self._cameras: dict[str, _Camera] = {}
        for name in self.config.cameras:
            self._cameras[name] = self._make_camera(name, model)
        self.device = next(iter(self._cameras.values())).segmenter.device

        self._classes_pub = self.create_publisher(SegmentationClasses, "~/classes", _LATCHED_QOS)
        self._classes_pub.publish(self._classes_message(model))
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(_DIAGNOSTICS_PERIOD_S, self._publish_diagnostics)
        self.create_service(Trigger, "~/reset", self._on_reset)
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self._running = True
        self._worker = threading.Thread(target=self._work, name="vseg-inference", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"segmenting {', '.join(self._topic(c) for c in self._cameras)} with {self.config.model} "
            f"on {self.device} ({self.config.precision})"
        )

    # ----------------------------------------------------------------------------------- set-up
    def _make_camera(self, name: str, model) -> _Camera:
        segmenter = VideoSegmenter(
            model,
            device=self.config.device,
            precision=self.config.precision,
            keyframe_policy=self._keyframe_policy(self.config.keyframe_policy, self.config.keyframe_interval),
            input_size=self.config.input_size,
            confidence=self.config.publish_confidence,
        )
        camera = _Camera(name, segmenter, StreamResetDetector(ResetConfig(self.config.reset_gap_s)), StreamStats())
        for output, msg_type in (
            ("labels", Image),
            ("color", Image),
            ("overlay", Image),
            ("confidence", Image),
            ("info", SegmentationInfo),
        ):
            camera.publishers[output] = self.create_publisher(msg_type, "~/" + _join(name, output), _OUTPUT_QOS)
        msg_type = CompressedImage if self.config.compressed else Image
        self.create_subscription(
            msg_type,
            self._topic(name),
            lambda msg, key=name: self._on_image(key, msg),
            qos_profile_sensor_data,
            qos_overriding_options=QoSOverridingOptions.with_default_policies(),
        )
        return camera

    def _topic(self, camera: str) -> str:
        return _join(camera, "image", "compressed" if self.config.compressed else "")

    @staticmethod
    def _keyframe_policy(name: str, interval: int):
        key = "max_interval" if name == "adaptive" else "interval"
        return make_keyframe_policy(name, **{key: interval})

    def _classes_message(self, model) -> SegmentationClasses:
        msg = SegmentationClasses(model=self.config.model, ignore_index=self.classes.ignore_index)
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.names = list(self.classes.names[: model.num_classes])
        msg.colors = self._palette[: model.num_classes].reshape(-1).tolist()
        return msg

    # ---------------------------------------------------------------------------------- callbacks
    def _on_image(self, camera: str, msg: Image | CompressedImage) -> None:
        dropped = self._mailbox.put(camera, msg)
        self._cameras[camera].stats.received(time.monotonic(), dropped_previous=dropped)

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        for camera in self._cameras.values():
            camera.pending_reset = RESET_SERVICE
        response.success = True
        response.message = f"temporal state of {len(self._cameras)} camera(s) cleared before their next frame"
        return response

    def _on_set_parameters(self, params) -> SetParametersResult:
        changes = {p.name: p.value for p in params}
        policy = changes.get("keyframe_policy", self.config.keyframe_policy)
        interval = changes.get("keyframe_interval", self.config.keyframe_interval)
        if {"keyframe_policy", "keyframe_interval"} & changes.keys():
            try:
                check_keyframe_settings(policy, interval)
                for camera in self._cameras.values():
                    camera.segmenter.set_keyframe_policy(self._keyframe_policy(policy, interval))
            except ValueError as exc:
                return SetParametersResult(successful=False, reason=str(exc))
            self.config = replace(self.config, keyframe_policy=policy, keyframe_interval=interval)
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------------------------- worker
    def _work(self) -> None:
        while self._running:
            item = self._mailbox.take(timeout=0.1)
            if item is None:
                continue
            name, msg = item
            try:
                self._process(self._cameras[name], msg)
            except Exception as exc:  # a frame must never take the node down; say what happened
                self._cameras[name].stats.rejected(time.monotonic())
                self.get_logger().error(
                    f"{self._topic(name)}: frame failed: {type(exc).__name__}: {exc}", throttle_duration_sec=5.0
                )

    def _process(self, camera: _Camera, msg: Image | CompressedImage) -> None:
        try:
            frame = compressed_to_array(msg) if isinstance(msg, CompressedImage) else image_to_array(msg)
        except ConversionError as exc:
            camera.stats.rejected(time.monotonic())
            self.get_logger().error(f"{self._topic(camera.name)}: {exc}", throttle_duration_sec=5.0)
            return
        stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        reason = camera.resets.check(stamp_ns, msg.header.frame_id)
        if camera.pending_reset:
            reason, camera.pending_reset = camera.pending_reset, RESET_NONE
        result = camera.segmenter.step(frame, reset_reason=reason or None)

        pubs = camera.publishers
        pubs["labels"].publish(labels_to_image(result.labels, msg.header))
        wants = {n: pubs[n].get_subscription_count() > 0 for n in ("color", "overlay", "confidence")}
        if (self.config.publish_color and wants["color"]) or (self.config.publish_overlay and wants["overlay"]):
            color = colorize(result.labels, self._palette)
            if self.config.publish_color and wants["color"]:
                pubs["color"].publish(rgb_to_image(color, msg.header))
            if self.config.publish_overlay and wants["overlay"]:
                pubs["overlay"].publish(rgb_to_image(overlay(frame, color, self.config.overlay_alpha), msg.header))
        if self.config.publish_confidence and wants["confidence"] and result.confidence is not None:
            pubs["confidence"].publish(mono_to_image(result.confidence, msg.header))

        now_ns = self.get_clock().now().nanoseconds
        latency_ms = (now_ns - stamp_ns) / 1e6
        info = result.info
        camera.stats.processed(
            time.monotonic(), latency_ms=latency_ms, is_keyframe=info.is_keyframe, state_reset=info.state_reset
        )
        stats = camera.stats
        out = SegmentationInfo(
            header=msg.header,
            model=self.config.model,
            is_keyframe=info.is_keyframe,
            frames_since_keyframe=info.frames_since_keyframe,
            keyframe_interval=info.keyframe_interval,
            state_reset=info.state_reset,
            reset_reason=info.reset_reason,
            latency_ms=latency_ms,
            frames_received=stats.frames_received,
            frames_processed=stats.frames_processed,
            frames_dropped=stats.frames_dropped,
            frames_rejected=stats.frames_rejected,
        )
        for stage, ms in info.timings_ms.items():
            setattr(out, f"{stage}_ms", float(ms))
        pubs["info"].publish(out)

    # -------------------------------------------------------------------------------- diagnostics
    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        for camera in self._cameras.values():
            s = camera.stats.snapshot(now)
            level, message = DiagnosticStatus.OK, f"{s.rate_hz:.1f} Hz"
            if s.window_received and not s.window_processed:
                level, message = DiagnosticStatus.ERROR, "images arrive but none could be segmented"
            elif s.window_rejected:
                level, message = DiagnosticStatus.WARN, f"{s.window_rejected} image(s) rejected in {s.window_s:.0f} s"
            elif s.seconds_since_last_frame > _STALE_INPUT_S:
                level, message = DiagnosticStatus.WARN, f"no images on {self._topic(camera.name)}"
            elif s.window_received and s.window_dropped > s.window_received / 2:
                level, message = DiagnosticStatus.WARN, f"dropping {s.window_dropped}/{s.window_received} frames"
            values = {
                "topic": self.resolve_topic_name(self._topic(camera.name)),
                "model": self.config.model,
                "device": str(self.device),
                "rate_hz": f"{s.rate_hz:.2f}",
                "latency_p50_ms": f"{s.latency_p50_ms:.1f}",
                "latency_p95_ms": f"{s.latency_p95_ms:.1f}",
                "keyframe_share": f"{s.keyframe_share:.3f}",
                "frames_received": str(s.frames_received),
                "frames_processed": str(s.frames_processed),
                "frames_dropped": str(s.frames_dropped),
                "frames_rejected": str(s.frames_rejected),
                "resets": str(s.resets),
            }
            array.status.append(
                DiagnosticStatus(
                    level=level,
                    name=f"{self.get_name()}: {camera.label}",
                    message=message,
                    hardware_id=str(self.device),
                    values=[KeyValue(key=k, value=v) for k, v in values.items()],
                )
            )
        self._diagnostics_pub.publish(array)

    def destroy_node(self) -> None:
        # Also reached for a node whose __init__ failed (rclpy destroys the nodes of a context at
        # shutdown), so the parts built late may not exist.
        self._running = False
        mailbox, worker = getattr(self, "_mailbox", None), getattr(self, "_worker", None)
        if mailbox is not None:
            mailbox.close()
        if worker is not None and worker.is_alive():
            worker.join(timeout=10.0)
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    rclpy.init(args=args)
    # SIGTERM (systemd, launch) ends the node like Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: rclpy.try_shutdown())
    node = None
    try:
        node = SegmentationNode()
    except (ParameterError, ValueError, FileNotFoundError) as exc:
        rclpy.logging.get_logger("segmentation").fatal(f"cannot start: {exc}")
        rclpy.try_shutdown()
        return 1
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
