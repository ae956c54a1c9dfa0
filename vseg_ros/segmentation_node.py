"""segmentation_node: camera images in, per-pixel classes out, temporal state kept between frames.

The node owns one ``VideoSegmenter`` per camera (all sharing one model on the device) and nothing
of the model logic. Subscription callbacks only leave the message in a newest-frame mailbox; one
worker thread decodes, runs the model and publishes, so a slow model drops frames instead of
building up latency. Every output carries the input image's header and size.

Two nodes share that work: ``SegmentationNode`` (executable ``segmentation_node``), running from its
start, and ``ManagedSegmentationNode`` (``managed_segmentation_node``), a lifecycle node.
"""

from __future__ import annotations

import math
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.node import Node
from rclpy.qos import (
    DurabilityPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from rclpy.qos_overriding_options import QoSOverridingOptions
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CompressedImage, Image
from std_srvs.srv import Trigger

from vseg.msg import SegmentationClasses, SegmentationInfo
from vseg_core.keyframes import make_keyframe_policy
from vseg_core.palette import ClassPalette, load_palette_file
from vseg_core.resets import RESET_NONE, RESET_SERVICE, ResetConfig, StreamResetDetector
from vseg_core.stream import VideoSegmenter
from vseg_ros.conversions import (
    ConversionError,
    SizeLimits,
    array_to_compressed,
    check_compressed,
    colorize,
    compressed_to_array,
    image_to_array,
    image_to_native,
    labels_to_compressed,
    labels_to_image,
    mono_to_image,
    overlay,
    rgb_to_image,
)
from vseg_ros.latest_frame import LatestFrameMailbox
from vseg_ros.legend import render_legend
from vseg_ros.model_loading import load_runner_for_node
from vseg_ros.parameters import (
    MIN_INPUT_SIDE,
    NodeConfig,
    ParameterError,
    check_keyframe_settings,
    declare_parameters,
    read_config,
)
from vseg_ros.ros_process import ignore_stop_signals, install_stop_handlers
from vseg_ros.stream_stats import StreamStats

__all__ = ["ManagedSegmentationNode", "SegmentationNode", "main"]

_OUTPUT_QOS = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
_LATCHED_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
_DIAGNOSTICS_PERIOD_S = 1.0
_STALE_INPUT_S = 5.0
_SPIN_SLICE_S = 0.1
_WARM_UP_SIZE = (64, 64)


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


class _SegmentationWork:
    """The node's work in the phases of a managed node, for a class that is also a rclpy ``Node``.

    configure: read and check the parameters, load the weights, warm the model up on its device (the
    memory is taken here), create the outputs and the reset service. activate: start the worker,
    subscribe, publish the classes and legend and start /diagnostics. deactivate: unsubscribe and
    stop the worker, keeping model and temporal state. cleanup: drop outputs, model and state (and
    the CUDA cache). ``SegmentationNode`` runs configure and activate in its constructor;
    ``ManagedSegmentationNode`` runs them as lifecycle transitions.
    """

    def _init_work(self) -> None:
        self._cameras: dict[str, _Camera] = {}
        self._image_subscriptions: list = []
        self._own_services: list = []
        self._other_publishers: list = []
        self._diagnostics_timer = None
        self._export_dir: tempfile.TemporaryDirectory | None = None
        self._worker: threading.Thread | None = None
        self._running = False
        self._mailbox: LatestFrameMailbox[str, Image | CompressedImage] = LatestFrameMailbox()
        self.device = None
        declare_parameters(self)
        self.config: NodeConfig = read_config(self)
        self.add_on_set_parameters_callback(self._on_set_parameters)

    @property
    def configured(self) -> bool:
        return bool(self._cameras)

    def _make_publisher(self, msg_type, topic: str, qos):
        return self.create_publisher(msg_type, topic, qos)

    def _destroy_publisher(self, publisher) -> None:
        self.destroy_publisher(publisher)

    def _configure(self) -> None:
        """Raises ParameterError (or ValueError, FileNotFoundError) naming the parameter; then nothing
        is left half-built."""
        self.config = read_config(self)
        self._limits = SizeLimits(
            max_side=self.config.max_input_side, max_pixels=self.config.max_input_pixels, min_side=MIN_INPUT_SIDE
        )
        if self.config.backend == "onnxruntime" and not self.config.onnx_model:
            # The weights' export lives as long as the configuration (removed at cleanup or exit).
            self._export_dir = tempfile.TemporaryDirectory(prefix="vseg-onnx-")
        export_dir = Path(self._export_dir.name) if self._export_dir is not None else None
        loaded = load_runner_for_node(self.config, self.get_logger(), export_dir)
        model = loaded.runner
        if not self.config.model:  # `model` left empty: the checkpoint's (or the export's)
            self.config = replace(self.config, model=loaded.name)
        self._num_classes = model.num_classes
        self._model_classes = loaded.classes
        self.classes: ClassPalette = self._load_palette(self.config.palette_file)
        self._palette = np.asarray(self.classes.colors, dtype=np.uint8).reshape(-1, 3)
        self._warm_up(model)  # before subscribing: a player that waits for subscribers must not start early
        for name in self.config.cameras:
            self._cameras[name] = self._make_camera(name, model)
        self.device = next(iter(self._cameras.values())).segmenter.device
        self._classes_pub = self._make_publisher(SegmentationClasses, "~/classes", _LATCHED_QOS)
        self._legend_pub = self._make_publisher(Image, "~/legend", _LATCHED_QOS)
        self._diagnostics_pub = self._make_publisher(DiagnosticArray, "/diagnostics", 10)
        self._other_publishers = [self._classes_pub, self._legend_pub, self._diagnostics_pub]
        self._own_services = [self.create_service(Trigger, "~/reset", self._on_reset)]

    def _activate(self) -> None:
        self._mailbox = LatestFrameMailbox(self.config.queue_depth)
        self._running = True
        self._worker = threading.Thread(target=self._work, name="vseg-inference", daemon=True)
        self._worker.start()
        msg_type = CompressedImage if self.config.compressed else Image
        for name in self._cameras:
            self._image_subscriptions.append(
                self.create_subscription(
                    msg_type,
                    self._topic(name),
                    lambda msg, key=name: self._on_image(key, msg),
                    qos_profile_sensor_data,
                    qos_overriding_options=QoSOverridingOptions.with_default_policies(),
                )
            )
        self._announce_classes()
        # A steady timer: on the ROS clock it would never fire under use_sim_time without /clock,
        # which is exactly when someone needs to see that the node is there but gets no time.
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self._diagnostics_timer = self.create_timer(_DIAGNOSTICS_PERIOD_S, self._publish_diagnostics, clock=steady)
        self.get_logger().info(
            f"segmenting {', '.join(self._topic(c) for c in self._cameras)} with {self.config.model} "
            + (
                f"on {self.device} ({self.config.precision})"
                if self.config.backend == "torch"
                else f"in onnxruntime ({', '.join(self.config.providers)})"
            )
        )

    def _deactivate(self) -> None:
        for subscription in self._image_subscriptions:
            self.destroy_subscription(subscription)
        self._image_subscriptions = []
        if self._diagnostics_timer is not None:
            self.destroy_timer(self._diagnostics_timer)
            self._diagnostics_timer = None
        self._stop_worker()

    def _stop_worker(self) -> None:
        self._running = False
        self._mailbox.close()  # frames still waiting are dropped: nobody asked for them any more
        if self._worker is not None and self._worker.is_alive():
            self._worker.join(timeout=10.0)
        self._worker = None

    def _cleanup(self) -> None:
        for camera in self._cameras.values():
            for publisher in camera.publishers.values():
                self._destroy_publisher(publisher)
        for publisher in self._other_publishers:
            self._destroy_publisher(publisher)
        for service in self._own_services:
            self.destroy_service(service)
        self._other_publishers, self._own_services = [], []
        on_cuda = self.device is not None and self.device.type == "cuda"
        self._cameras = {}  # the segmenters hold the model and the temporal state: both go here
        self.device = None
        if self._export_dir is not None:
            self._export_dir.cleanup()
            self._export_dir = None
        if on_cuda:
            torch.cuda.empty_cache()  # hand the freed blocks back to the driver, not only to torch's cache

    # ----------------------------------------------------------------------------------- set-up
    def _make_camera(self, name: str, model) -> _Camera:
        segmenter = VideoSegmenter(
            model,
            backend=self.config.backend,
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
            # image_transport's names, so its `compressed` subscribers and recorders find them.
            ("labels/compressed", CompressedImage),
            ("color/compressed", CompressedImage),
            ("overlay/compressed", CompressedImage),
        ):
            camera.publishers[output] = self._make_publisher(msg_type, "~/" + _join(name, output), _OUTPUT_QOS)
        return camera

    def _warm_up(self, model) -> None:
        # The first step of a model pays for lazy initialisation (thread pools, kernel selection, CUDA
        # context: 0.1 s to seconds); paid here, before the node subscribes, the first frames of a camera
        # or a replayed bag are not dropped while it happens. A throwaway segmenter keeps the
        # cameras' temporal states untouched.
        height, width = self.config.input_size or _WARM_UP_SIZE
        VideoSegmenter(
            model, backend=self.config.backend, device=self.config.device, precision=self.config.precision,
            input_size=self.config.input_size, timing=False,
        ).step(np.zeros((height, width, 3), np.uint8))  # fmt: skip

    def _topic(self, camera: str) -> str:
        return _join(camera, "image", "compressed" if self.config.compressed else "")

    @staticmethod
    def _keyframe_policy(name: str, interval: int):
        key = "max_interval" if name == "adaptive" else "interval"
        return make_keyframe_policy(name, **{key: interval})

    def _load_palette(self, path: str) -> ClassPalette:
        """The palette file's classes (the model's own for ""); ParameterError if it has too few."""
        if not path:
            return self._model_classes
        try:
            classes = load_palette_file(Path(path))
        except ValueError as exc:
            raise ParameterError(f"parameter 'palette_file': {exc}") from None
        if classes.num_classes < self._num_classes:
            raise ParameterError(
                f"parameter 'palette_file': {path} names {classes.num_classes} classes, the model predicts "
                f"{self._num_classes}"
            )
        return classes

    def _announce_classes(self) -> None:
        """(Re)publish ~/classes and ~/legend, latched: at start and whenever the palette changes."""
        n = self._num_classes
        msg = SegmentationClasses(model=self.config.model, ignore_index=self.classes.ignore_index)
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.names = list(self.classes.names[:n])
        msg.colors = self._palette[:n].reshape(-1).tolist()
        self._classes_pub.publish(msg)
        self._legend_pub.publish(rgb_to_image(render_legend(msg.names, self._palette[:n]), msg.header))

    # ---------------------------------------------------------------------------------- callbacks
    def _on_image(self, camera: str, msg: Image | CompressedImage) -> None:
        # The header-level checks cost microseconds (nothing is decoded or copied): a malformed frame
        # is refused with its reason here, never counted as dropped because a newer one replaced it.
        stats = self._cameras[camera].stats
        try:
            if isinstance(msg, CompressedImage):
                check_compressed(msg, self._limits)
            else:
                image_to_native(msg, self._limits)
        except ConversionError as exc:
            stats.received(time.monotonic(), dropped_previous=False)
            self._reject(self._cameras[camera], exc.reason, str(exc))
            return
        dropped = self._mailbox.put(camera, msg)
        stats.received(time.monotonic(), dropped_previous=dropped)

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        for camera in self._cameras.values():
            camera.pending_reset = RESET_SERVICE
        response.success = True
        response.message = f"temporal state of {len(self._cameras)} camera(s) cleared before their next frame"
        return response

    def _on_set_parameters(self, params) -> SetParametersResult:
        # Everything is checked before anything is applied: a refused call changes nothing.
        changes = {p.name: p.value for p in params}
        if not self.configured:
            return SetParametersResult(successful=True)  # configure reads and checks every parameter
        policy = changes.get("keyframe_policy", self.config.keyframe_policy)
        interval = changes.get("keyframe_interval", self.config.keyframe_interval)
        try:
            classes = self._load_palette(changes["palette_file"]) if "palette_file" in changes else None
            if {"keyframe_policy", "keyframe_interval"} & changes.keys():
                check_keyframe_settings(policy, interval)
                for camera in self._cameras.values():
                    camera.segmenter.set_keyframe_policy(self._keyframe_policy(policy, interval))
        except ValueError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        self.config = replace(self.config, keyframe_policy=policy, keyframe_interval=interval)
        if classes is not None:
            # One reference swap each: the worker colours a frame with the old palette or the new one.
            self.classes = classes
            self._palette = np.asarray(classes.colors, dtype=np.uint8).reshape(-1, 3)
            self.config = replace(self.config, palette_file=changes["palette_file"])
            self._announce_classes()
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------------------------- worker
    def _work(self) -> None:
        while self._running:
            item = self._mailbox.take(timeout=0.1)
            if item is None:
                continue
            name, msg = item
            camera = self._cameras[name]
            try:
                self._process(camera, msg)
            except Exception as exc:  # a frame must never take the node down; say what happened
                # The segmenter and the reset detector commit only frames that went through: the
                # stream goes on as if this frame had not come.
                out_of_memory = isinstance(exc, torch.cuda.OutOfMemoryError)
                if out_of_memory and self.device is not None and self.device.type == "cuda":
                    torch.cuda.empty_cache()
                self._reject(
                    camera, "out_of_memory" if out_of_memory else "model_failed", f"{type(exc).__name__}: {exc}"
                )

    def _reject(self, camera: _Camera, reason: str, why: str) -> None:
        """Count a refused frame; log the first of each reason in full, then a summary at most every 10 s."""
        count = camera.stats.rejected(time.monotonic(), reason)
        if count == 1:
            self.get_logger().error(f"{self._topic(camera.name)}: frame refused ({reason}): {why}")
        else:
            counts = camera.stats.rejected_by_reason()
            self.get_logger().warning(
                f"{self._topic(camera.name)}: {sum(counts.values())} frames refused so far: "
                + ", ".join(f"{r} {n}" for r, n in counts.items())
                + f"; latest ({reason}): {why}",
                throttle_duration_sec=10.0,
            )

    def _process(self, camera: _Camera, msg: Image | CompressedImage) -> None:
        try:
            if isinstance(msg, CompressedImage):
                frame = compressed_to_array(msg, self._limits)
            else:
                frame = image_to_array(msg, self._limits)
        except ConversionError as exc:
            self._reject(camera, exc.reason, str(exc))
            return
        stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        reason = camera.resets.peek(stamp_ns, msg.header.frame_id)
        pending = camera.pending_reset
        result = camera.segmenter.step(frame, reset_reason=(pending or reason) or None)
        camera.resets.accept(stamp_ns, msg.header.frame_id)
        if pending and camera.pending_reset == pending:  # not one that ~/reset set during the step
            camera.pending_reset = RESET_NONE

        pubs = camera.publishers
        header, config = msg.header, self.config
        pubs["labels"].publish(labels_to_image(result.labels, header))
        wants = {n: pub.get_subscription_count() > 0 for n, pub in pubs.items()}
        if wants["labels/compressed"]:
            pubs["labels/compressed"].publish(labels_to_compressed(result.labels, header))
        color_to = [n for n in ("color", "color/compressed") if config.publish_color and wants[n]]
        overlay_to = [n for n in ("overlay", "overlay/compressed") if config.publish_overlay and wants[n]]
        if color_to or overlay_to:
            color = colorize(result.labels, self._palette)
            blend = overlay(frame, color, config.overlay_alpha) if overlay_to else None
            for name, image in [(n, color) for n in color_to] + [(n, blend) for n in overlay_to]:
                if name.endswith("/compressed"):
                    pubs[name].publish(array_to_compressed(image, header, "jpeg", config.jpeg_quality))
                else:
                    pubs[name].publish(rgb_to_image(image, header))
        if self.config.publish_confidence and wants["confidence"] and result.confidence is not None:
            pubs["confidence"].publish(mono_to_image(result.confidence, msg.header))

        # On the node's clock, so that a replayed bag with use_sim_time compares bag time with bag time.
        # A ROS clock at zero is sim time before the first /clock message: no latency to tell.
        now_ns = self.get_clock().now().nanoseconds
        latency_ms = (now_ns - stamp_ns) / 1e6 if now_ns else math.nan
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
        by_reason = stats.rejected_by_reason()  # sorted by reason
        out.rejected_reasons, out.rejected_counts = list(by_reason), list(by_reason.values())
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
                "backend": self.config.backend,
                "rate_hz": f"{s.rate_hz:.2f}",
                "latency_p50_ms": f"{s.latency_p50_ms:.1f}",
                "latency_p95_ms": f"{s.latency_p95_ms:.1f}",
                "keyframe_share": f"{s.keyframe_share:.3f}",
                "frames_received": str(s.frames_received),
                "frames_processed": str(s.frames_processed),
                "frames_dropped": str(s.frames_dropped),
                "frames_rejected": str(s.frames_rejected),
                # One key per reason seen so far (REJECTION_REASONS, model_failed, out_of_memory).
                **{f"rejected_{reason}": str(n) for reason, n in s.rejected_by_reason.items()},
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
        if hasattr(self, "_mailbox"):
            self._stop_worker()
        if getattr(self, "_export_dir", None) is not None:
            self._export_dir.cleanup()
        super().destroy_node()


class SegmentationNode(_SegmentationWork, Node):
    """The plain node: configured and active from its construction until it is destroyed."""

    def __init__(self, **node_kwargs) -> None:
        super().__init__("segmentation", **node_kwargs)
        self._init_work()
        self._configure()
        self._activate()


class ManagedSegmentationNode(_SegmentationWork, LifecycleNode):
    """The managed (lifecycle) node, for stacks that bring perception up in order: constructed
    unconfigured; ``configure`` loads the weights and takes the device memory (a warm-up frame),
    ``activate`` subscribes and publishes, ``deactivate`` stops without freeing anything, ``cleanup``
    frees the model and the GPU. Outputs are lifecycle publishers: silent unless active. A transition
    asked for out of order is refused by rcl_lifecycle (the service answers success=False) and the
    state stays as it was; a configure that fails logs why and leaves the node unconfigured."""

    def __init__(self, **node_kwargs) -> None:
        super().__init__("segmentation", **node_kwargs)
        self._init_work()

    def _make_publisher(self, msg_type, topic: str, qos):
        return self.create_lifecycle_publisher(msg_type, topic, qos)

    def _destroy_publisher(self, publisher) -> None:
        self.destroy_lifecycle_publisher(publisher)

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._configure()
        except (ParameterError, ValueError, FileNotFoundError) as exc:
            self.get_logger().error(f"configure failed: {exc}")
            self._cleanup()
            return TransitionCallbackReturn.FAILURE
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = super().on_activate(state)  # the publishers first: the latched classes must go out
        if result == TransitionCallbackReturn.SUCCESS:
            self._activate()
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._deactivate()  # the worker stops before its publishers fall silent
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._cleanup()
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._deactivate()
        self._cleanup()
        return TransitionCallbackReturn.SUCCESS


def main(args: list[str] | None = None, *, managed: bool = False) -> int:
    """Run the node until SIGINT/SIGTERM; ``args``: a full command line for rcl (default sys.argv);
    ``managed``: the lifecycle node (starts unconfigured) instead of the plain one."""
    # Before anything slow (imports are done, the model load is not): a signal during start-up
    # must end the process just as cleanly.
    stop = install_stop_handlers()
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    try:
        node = ManagedSegmentationNode() if managed else SegmentationNode()
    except (ParameterError, ValueError, FileNotFoundError) as exc:
        rclpy.logging.get_logger("segmentation").fatal(f"cannot start: {exc}")
        rclpy.try_shutdown()
        ignore_stop_signals()
        return 1
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        # Slices, so that the stop request is seen within one of them whatever the graph does.
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=_SPIN_SLICE_S)
    except ExternalShutdownException:
        pass
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
        ignore_stop_signals()
    return 0


if __name__ == "__main__":
    sys.exit(main())
