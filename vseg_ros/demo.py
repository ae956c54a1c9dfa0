"""`vseg demo`: every model in the real segmentation_node, fed one video over rclpy, scored and shown.

For each model the demo starts ``segmentation_node`` in a process of its own (``python -m
vseg_ros.segmentation_node --ros-args --params-file ...`` naming the model and its checkpoint, in a
namespace of its own), publishes the frames to it from this process, collects its ``~/labels`` and
``~/info`` and matches them to the frames by header stamp. By default each frame waits for its
result (with a timeout), so no frame is dropped by design; with a rate the frames go out on a clock
and the node's newest-frame mailbox drops what it cannot follow. Either way the table reports the
node's own counters and the frames that got no result.

Scores come from :mod:`vseg_core.metrics` (as ``vseg eval`` computes them), pictures and the table
from :mod:`vseg_core.demo_media`. The frames: by default two streams with ground truth, each model
on the one of the data it was trained on (:func:`assign_streams`): the synthetic street video, and
the real street clip of CamVid that ships inside the package (:data:`vseg_core.data.camvid.CAMVID_DEMO_CLIP`,
research and non-commercial use only). Or, for every model: the first frames of an image topic of a
bag (ground truth from a label topic, by stamp), or of a video file. One table and results.json
cover all streams; each stream has its own video, contact sheet and labels file.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from vseg.msg import SegmentationInfo
from vseg_core.checkpoint import CheckpointError, CheckpointRecord, load_checkpoint
from vseg_core.data import dataset_palette
from vseg_core.demo_media import (
    ModelTrack,
    OverlayVideoWriter,
    VideoWriteError,
    contact_sheet,
    results_table,
    video_frame,
)
from vseg_core.metrics import ConfusionMatrix, FlickerMeter
from vseg_core.palette import ClassPalette
from vseg_core.pretrained import WEIGHTS_DIR, shipped_checkpoint, shipped_checkpoints
from vseg_core.stream import resolve_device
from vseg_ros.bags import BagError, list_topics, read_messages, ros_type_name
from vseg_ros.conversions import ConversionError, compressed_to_rgb, image_to_labels, image_to_rgb, rgb_to_image
from vseg_ros.node_process import NodeStartError, start_matched_node
from vseg_ros.ros_process import StopRequest, use_local_large_image_transports

__all__ = [
    "DEMO_DATASETS",
    "DemoConfig",
    "DemoError",
    "DemoModel",
    "DemoResult",
    "DemoStream",
    "assign_streams",
    "load_stream",
    "prepare_output",
    "run_demo",
]

# The demo's own videos, by the dataset whose models they are for, in the order they run.
DEMO_DATASETS = ("synthetic", "camvid")
_CAMVID_SOURCE_FPS = 30.0  # CamVid frame numbers count frames of 30 fps video

_IMAGE_TYPES = (ros_type_name(Image), ros_type_name(CompressedImage))
_RESULT_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
_FRAME_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
# After both ends see each other in the graph, the subscriber's process may still be matching the
# publisher and would lose the first frame (see vseg_ros.bag_play): give it this long.
_MATCH_SETTLE_S = 0.5
_STOP_TIMEOUT_S = 30.0
_MIN_WAIT_S = 5.0  # shortest wait for a frame's result once the node's pace is known
_GIVE_UP_AFTER_TIMEOUTS = 3  # consecutive frames without a result: the node has stopped answering
_SPIN_S = 0.01


class DemoError(ValueError):
    """Something the user can fix (input, models, output folder); the message names it in one line."""


@dataclass(frozen=True)
class DemoConfig:
    """models: shipped checkpoint names or .safetensors paths (empty: every shipped checkpoint);
    weights_dir: where names are looked up instead of the shipped weights; bag / video: the input
    of every model (neither: the demo's own streams, see :func:`assign_streams`: the synthetic video
    at height x width, the shipped CamVid clip at its own 480x360); frames: how many frames (the first
    ones of a bag, video or the CamVid clip, which has 60); rate_hz: publish on this clock (0: each
    frame waits for its result, up to timeout_s)."""

    models: tuple[str, ...] = ()
    weights_dir: Path | None = None
    bag: Path | None = None
    image_topic: str | None = None
    label_topic: str | None = None
    video: Path | None = None
    frames: int = 150
    height: int = 128
    width: int = 256
    out: Path = Path("demo_output")
    device: str = "auto"
    rate_hz: float = 0.0
    timeout_s: float = 60.0
    start_timeout_s: float = 180.0
    alpha: float = 0.5
    backend: str = "torch"  # onnxruntime: every node exports its weights at its stream's frame size

    def __post_init__(self) -> None:
        if self.backend not in ("torch", "onnxruntime"):
            raise DemoError(f"backend must be torch or onnxruntime, got {self.backend!r}")
        if self.backend == "onnxruntime" and self.device not in ("auto", "cpu"):
            raise DemoError(
                f"--backend onnxruntime runs on onnxruntime's CPU provider here, not --device {self.device}"
            )
        if self.bag is not None and self.video is not None:
            raise DemoError("give --bag or --video, not both")
        if self.bag is None and (self.image_topic or self.label_topic):
            raise DemoError("--image-topic and --label-topic choose topics of a --bag")
        if self.frames < 1 or min(self.height, self.width) < 8:
            raise DemoError(
                f"need at least 1 frame of at least 8x8 pixels, got {self.frames} of {self.width}x{self.height}"
            )
        if not (self.rate_hz >= 0 and self.timeout_s > 0 and self.start_timeout_s > 0):
            raise DemoError("the rate must be >= 0 (0: wait for each result) and timeouts positive")
        if not 0.0 <= self.alpha <= 1.0:
            raise DemoError(f"the overlay alpha must be in [0, 1], got {self.alpha}")


@dataclass
class DemoStream:
    """The frames as published (messages with unique stamps), as pictures (RGB) and their ground truth.

    gt_palette: the label set of the ground truth where it is known (the demo's own streams); None for
    ground truth from a bag, which is taken to use the model's own label set. name: the stream as the
    table shows it; file_tag: its files are overlay_TAG.mp4 and so on ("": overlay.mp4).
    """

    description: str
    messages: list[Image | CompressedImage]
    frames: list[np.ndarray]
    labels: list[np.ndarray | None] | None
    gt_palette: ClassPalette | None
    fps: float
    compressed: bool = False
    name: str = "input"
    file_tag: str = ""

    @property
    def size(self) -> tuple[int, int]:
        return self.frames[0].shape[:2]


@dataclass(frozen=True)
class DemoModel:
    name: str  # as the table and pictures show it
    path: Path
    record: CheckpointRecord
    palette: ClassPalette


@dataclass
class _ModelRun:
    labels: list[np.ndarray | None]
    infos: list[SegmentationInfo | None]
    frames_sent: int = 0
    start_s: float = 0.0
    stream_s: float = 0.0
    exit_status: int | None = None
    unmatched: int = 0  # result messages whose stamp matched no frame we sent
    node_starts: int = 0


@dataclass(frozen=True)
class DemoResult:
    rows: list[dict]
    table: str
    files: dict[str, Path]
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------- input
def _header(stamp_ns: int, frame_id: str) -> Header:
    header = Header(frame_id=frame_id)
    header.stamp.sec, header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    return header


def _stamp_key(header: Header) -> tuple[int, int]:
    return header.stamp.sec, header.stamp.nanosec


def _messages_for(frames: list[np.ndarray], fps: float) -> list[Image]:
    """rgb8 Images stamped at ``fps`` from now on (whole seconds), so that stamps look like a camera's."""
    start = time.time_ns() // 1_000_000_000 * 1_000_000_000
    return [rgb_to_image(f, _header(start + round(i * 1e9 / fps), "camera")) for i, f in enumerate(frames)]


def _synthetic_stream(config: DemoConfig) -> DemoStream:
    from vseg_core.data.synthetic import SyntheticVideoConfig
    from vseg_core.evaluate import evaluation_sequences

    (sequence,), palette = evaluation_sequences(
        "synthetic", split="val", sequences=1, frames=config.frames, height=config.height, width=config.width
    )
    fps = SyntheticVideoConfig().fps
    frames = list(sequence.frames)
    return DemoStream(
        f"synthetic street video (validation scene 0), {len(frames)} frames of {config.width}x{config.height} at "
        f"{fps:g} Hz, with ground truth",
        _messages_for(frames, fps),
        frames,
        list(sequence.labels),
        palette,
        fps,
        name="synthetic",
    )


def _camvid_clip_stream(config: DemoConfig) -> DemoStream:
    from vseg_core.data.camvid import CAMVID_DEMO_CLIP, camvid_sequences, read_camvid_frame

    try:
        (run,) = camvid_sequences(CAMVID_DEMO_CLIP, "val")
        frames, labels = zip(*(read_camvid_frame(f) for f in run[: config.frames]), strict=True)
    except ValueError as exc:  # DatasetLayoutError, or more than one run
        raise DemoError(f"the CamVid clip that ships with vseg is incomplete, reinstall vseg: {exc}") from None
    fps = _CAMVID_SOURCE_FPS / float(np.median(np.diff([f.frame for f in run]))) if len(run) > 1 else 15.0
    h, w = frames[0].shape[:2]
    last = run[len(frames) - 1]
    return DemoStream(
        f"CamVid clip shipped with vseg (val sequence {run[0].sequence}, source frames {run[0].frame:05d}-"
        f"{last.frame:05d}; research and non-commercial use only), {len(frames)} frames of {w}x{h} at "
        f"{fps:g} Hz, with ground truth",
        _messages_for(list(frames), fps),
        list(frames),
        list(labels),
        dataset_palette("camvid"),
        fps,
        name="camvid",
        file_tag="camvid",
    )


def _video_stream(config: DemoConfig) -> DemoStream:
    path = config.video
    if not path.is_file():
        raise DemoError(f"no video file at {path}")
    # FFmpeg would print its own complaints about a broken file next to ours; the variable is read at
    # the first capture a process opens, which is this one.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    capture = cv2.VideoCapture(str(path))
    frames: list[np.ndarray] = []
    try:
        fps = capture.get(cv2.CAP_PROP_FPS) if capture.isOpened() else 0.0
        while capture.isOpened() and len(frames) < config.frames:
            ok, bgr = capture.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    finally:
        capture.release()
    if not frames:
        raise DemoError(f"cannot read video {path}: OpenCV decodes no frame from it")
    if any(f.shape != frames[0].shape for f in frames):
        raise DemoError(f"video {path} changes its frame size; the demo needs one size throughout")
    fps = fps if math.isfinite(fps) and fps > 0 else 30.0
    h, w = frames[0].shape[:2]
    return DemoStream(
        f"video {path.name}, first {len(frames)} frames of {w}x{h} at {fps:g} Hz, no ground truth",
        _messages_for(frames, fps),
        frames,
        None,
        None,
        fps,
        name="video",
    )


def _bag_stream(config: DemoConfig) -> DemoStream:
    bag = config.bag
    topics = list_topics(bag)
    have = ", ".join(f"{t.name} [{t.msgtype}]" for t in topics) or "none"
    images = [t.name for t in topics if t.msgtype in _IMAGE_TYPES and t.name != config.label_topic]
    image_topic = config.image_topic
    if image_topic is None:
        if not images:
            raise DemoError(f"bag {bag} has no image topics ({' or '.join(_IMAGE_TYPES)}); its topics: {have}")
        if len(images) > 1:
            raise DemoError(f"bag {bag} has several image topics ({', '.join(images)}); pick one with --image-topic")
        image_topic = images[0]
    elif image_topic not in images:
        raise DemoError(f"bag {bag} has no image topic {image_topic}; its topics: {have}")
    label_topic = config.label_topic
    if label_topic and not any(t.name == label_topic and t.msgtype == _IMAGE_TYPES[0] for t in topics):
        raise DemoError(f"bag {bag} has no label topic {label_topic} ({_IMAGE_TYPES[0]}, mono8); its topics: {have}")

    wanted: dict[str, type | tuple[type, ...]] = {image_topic: (Image, CompressedImage)}
    if label_topic:
        wanted[label_topic] = Image
    messages: list[Image | CompressedImage] = []
    label_messages: dict[tuple[int, int], Image] = {}
    reader = read_messages(bag, wanted)
    try:
        for topic, _, msg in reader:
            if topic == image_topic:
                if len(messages) == config.frames:
                    break  # one image past the last wanted one: the labels of that one were read already
                messages.append(msg)
            else:
                label_messages[_stamp_key(msg.header)] = msg
    finally:
        reader.close()
    if not messages:
        raise DemoError(f"bag {bag} has no messages on {image_topic}")
    keys = [_stamp_key(m.header) for m in messages]
    if len(set(keys)) != len(keys):
        raise DemoError(f"images on {image_topic} in {bag} share header stamps; the demo matches results by stamp")
    compressed = isinstance(messages[0], CompressedImage)
    if any(isinstance(m, CompressedImage) != compressed for m in messages):
        raise DemoError(f"{image_topic} in {bag} mixes Image and CompressedImage messages")

    frames, labels = [], []
    for i, msg in enumerate(messages):
        try:
            frame = compressed_to_rgb(msg) if compressed else image_to_rgb(msg)
            gt = label_messages.get(keys[i])
            labels.append(None if gt is None else image_to_labels(gt))
        except ConversionError as exc:
            raise DemoError(f"bag {bag}: message {i} on {image_topic} or its labels: {exc}") from None
        if frames and frame.shape != frames[0].shape:
            raise DemoError(f"{image_topic} in {bag} changes its image size at message {i}; the demo needs one size")
        if labels[-1] is not None and labels[-1].shape != frame.shape[:2]:
            raise DemoError(f"labels on {label_topic} in {bag} differ in size from the images at message {i}")
        frames.append(frame)
    stamps = np.array([s * 1_000_000_000 + ns for s, ns in keys], dtype=np.int64)
    gaps = np.diff(stamps)
    fps = 1e9 / float(np.median(gaps)) if len(gaps) and np.median(gaps) > 0 else 15.0
    labelled = sum(g is not None for g in labels)
    h, w = frames[0].shape[:2]
    return DemoStream(
        f"bag {bag.name}, {image_topic}: first {len(frames)} frames of {w}x{h} at {fps:.3g} Hz, "
        + (f"{labelled} with ground truth from {label_topic}" if label_topic else "no ground truth"),
        messages,
        frames,
        labels if label_topic else None,
        None,
        fps,
        compressed,
        name="bag",
    )


def load_stream(config: DemoConfig, dataset: str = "synthetic") -> DemoStream:
    """The demo's frames: the bag or video file the config names, else the demo's own stream for the
    models of ``dataset`` (one of :data:`DEMO_DATASETS`); DemoError for bad input."""
    try:
        if config.bag is not None:
            return _bag_stream(config)
        if config.video is not None:
            return _video_stream(config)
    except BagError as exc:
        raise DemoError(str(exc)) from None
    if dataset == "camvid":
        return _camvid_clip_stream(config)
    if dataset == "synthetic":
        return _synthetic_stream(config)
    raise ValueError(f"the demo has streams for {', '.join(DEMO_DATASETS)}, not {dataset!r}")


# -------------------------------------------------------------------------------------- models
def resolve_models(specs: tuple[str, ...], weights_dir: Path | None) -> list[DemoModel]:
    """Checkpoints for the demo: names of shipped ones (or of ones in ``weights_dir``) and paths."""
    directory = weights_dir or WEIGHTS_DIR
    if not specs:
        found = shipped_checkpoints(directory)
        if not found:
            where = f"in {directory}" if weights_dir else "ship with this vseg (vseg_core/weights/ is empty)"
            raise DemoError(
                f"no trained checkpoints {where} and --models names none; pass --models NAME or PATH.safetensors "
                "(the demo never runs random weights)"
            )
        specs = tuple(found)
    models: list[DemoModel] = []
    for spec in specs:
        if spec.endswith((".safetensors", ".json")) or os.sep in spec or "/" in spec:
            path = Path(spec).with_suffix(".safetensors")
            if not path.is_file():
                raise DemoError(f"no checkpoint at {path}")
            name = path.stem
        else:
            try:
                path, name = shipped_checkpoint(spec, directory), spec
            except ValueError as exc:
                raise DemoError(str(exc)) from None
        try:
            # Loaded here once in full, so that a broken checkpoint stops the demo before any node starts
            # rather than after the models before it have run.
            checked = load_checkpoint(path)
        except CheckpointError as exc:
            raise DemoError(str(exc)) from None
        record, num_classes = checked.checkpoint_record, checked.num_classes
        del checked
        taken = {m.name for m in models}
        base, n = name, 2
        while name in taken:
            name, n = f"{base}#{n}", n + 1
        palette = record.palette or ClassPalette.generic(num_classes)
        models.append(DemoModel(name, path.resolve(), record, palette))
    return models


def assign_streams(
    models: list[DemoModel], *, named: bool, echo: Callable[[str], None] = print
) -> dict[str, list[DemoModel]]:
    """Which of the demo's own streams each model runs on: dataset (of :data:`DEMO_DATASETS`, in that
    order, only those with models) -> its models, in the order given.

    A model goes to the stream of the dataset its checkpoint records as trained on, else to the one
    whose classes it has. One that fits neither is left out (and echoed) unless ``named`` (picked with
    --models) or no model fits: then it runs on the synthetic video, where it gets no mIoU or FP.
    """
    palettes = {dataset: dataset_palette(dataset).names for dataset in DEMO_DATASETS}
    homes: dict[str, str | None] = {}
    for model in models:
        trained_on = model.record.metadata.get("dataset")
        fitting = [d for d in DEMO_DATASETS if palettes[d] == model.palette.names]
        homes[model.name] = trained_on if trained_on in DEMO_DATASETS else (fitting[0] if fitting else None)
    homeless = [m.name for m in models if homes[m.name] is None]
    if homeless and (named or len(homeless) == len(models)):
        homes.update(dict.fromkeys(homeless, DEMO_DATASETS[0]))
    elif homeless:
        echo(
            f"left out {', '.join(homeless)}: trained on other classes than the demo's videos "
            "(name them with --models to run them, or give --bag or --video)"
        )
    plan = {dataset: [m for m in models if homes[m.name] == dataset] for dataset in DEMO_DATASETS}
    return {dataset: chosen for dataset, chosen in plan.items() if chosen}


# -------------------------------------------------------------------------------------- output
def _estimated_bytes(stream: DemoStream, models: int) -> int:
    h, w = stream.size
    video = len(stream.frames) * (1 + models) * h * 2 * w * 3 // 8  # Motion JPEG's size, mp4 is smaller
    labels = len(stream.frames) * models * h * w
    return video + labels + (16 << 20)


def prepare_output(out: Path, need_bytes: int) -> None:
    """Create ``out`` and make sure it takes files and has ``need_bytes`` free; DemoError otherwise."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DemoError(f"cannot create the output folder {out}: {exc.strerror or exc}") from None
    probe = out / f".vseg-demo-{os.getpid()}.probe"
    try:
        probe.write_bytes(bytes(4096))
        probe.unlink()
    except OSError as exc:
        raise DemoError(f"cannot write into the output folder {out}: {exc.strerror or exc}") from None
    free = shutil.disk_usage(out).free
    if free < need_bytes:
        raise DemoError(
            f"not enough free disk space in {out}: {free / 1e6:.0f} MB free, the demo needs about "
            f"{need_bytes / 1e6:.0f} MB"
        )


def _node_params(
    model: DemoModel, config: DemoConfig, *, compressed: bool, frame_size: tuple[int, int]
) -> dict[str, Any]:
    """segmentation_node's parameters for one model, as users would set them."""
    params = {
        "model": model.record.model,
        "weights": str(model.path),
        "device": config.device,
        "backend": config.backend,
        "compressed": compressed,
        # The demo colours the labels itself; nobody subscribes to these anyway.
        "publish_color": False,
        "publish_overlay": False,
        "publish_confidence": False,
    }
    if config.backend == "onnxruntime":  # the graph's fixed size: the stream's frames
        params.update(device="auto", input_height=frame_size[0], input_width=frame_size[1])
    return params


class _Spinner:
    """Spins one executor until a condition holds. Ctrl-C only sets ``interrupted`` (see run_demo);
    the wait turns it into KeyboardInterrupt here, at a clean point outside rclpy's C++ calls."""

    def __init__(self, executor: SingleThreadedExecutor, interrupted: StopRequest) -> None:
        self.executor = executor
        self.interrupted = interrupted

    def until(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if self.interrupted.is_set():
                raise KeyboardInterrupt
            if time.monotonic() >= deadline:
                return False
            self.executor.spin_once(timeout_sec=_SPIN_S)
        return True


def _run_model(
    model: DemoModel,
    stream: DemoStream,
    config: DemoConfig,
    *,
    index: int,
    ctx: Context,
    logs: Path,
    echo: Callable[[str], None],
    interrupted: StopRequest,
) -> _ModelRun:
    """Start the node for ``model``, stream every frame to it, collect its results, stop it."""
    n = len(stream.messages)
    run = _ModelRun([None] * n, [None] * n)
    by_stamp = {_stamp_key(m.header): i for i, m in enumerate(stream.messages)}
    namespace = f"/vseg_demo_{os.getpid()}_{index}"
    node = rclpy.create_node(f"vseg_demo_{index}", context=ctx)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    spin = _Spinner(executor, interrupted).until

    def on_labels(msg: Image) -> None:
        i = by_stamp.get(_stamp_key(msg.header))
        if i is None:
            run.unmatched += 1
        else:
            run.labels[i] = image_to_labels(msg)

    def on_info(msg: SegmentationInfo) -> None:
        i = by_stamp.get(_stamp_key(msg.header))
        if i is None:
            run.unmatched += 1
        else:
            run.infos[i] = msg

    outputs = f"{namespace}/segmentation"
    node.create_subscription(Image, f"{outputs}/labels", on_labels, _RESULT_QOS)
    node.create_subscription(SegmentationInfo, f"{outputs}/info", on_info, _RESULT_QOS)
    topic = f"{namespace}/image" + ("/compressed" if stream.compressed else "")
    publisher = node.create_publisher(CompressedImage if stream.compressed else Image, topic, _FRAME_QOS)
    started = time.monotonic()

    def unmatched() -> list[str]:
        """What the demo does not see of the node yet (empty: it is ready)."""
        missing = []
        if publisher.get_subscription_count() == 0:
            missing.append(f"a subscription matching its publisher on {topic}")
        for output in (f"{outputs}/labels", f"{outputs}/info"):
            if node.count_publishers(output) == 0:
                missing.append(f"a publisher of {output}")
        return missing

    params = _node_params(model, config, compressed=stream.compressed, frame_size=stream.frames[0].shape[:2])
    process = None
    try:
        process, run.node_starts = start_matched_node(
            params, namespace=namespace, workdir=logs, name=model.name.replace("#", "_"), missing=unmatched,
            spin=spin, timeout_s=config.start_timeout_s, label=f"for {model.name}",
            on_restart=lambda why: echo(f"  {model.name}: {why}"),
        )  # fmt: skip
        settle = time.monotonic() + _MATCH_SETTLE_S
        spin(lambda: time.monotonic() >= settle, _MATCH_SETTLE_S + 1)
        run.start_s = time.monotonic() - started

        def done(i: int) -> bool:
            return run.labels[i] is not None and run.infos[i] is not None

        t0, misses, slowest = time.monotonic(), 0, 0.0
        for i, msg in enumerate(stream.messages):
            if config.rate_hz > 0:
                due = t0 + i / config.rate_hz
                spin(lambda due=due: time.monotonic() >= due, math.inf)
            sent = time.monotonic()
            publisher.publish(msg)
            run.frames_sent += 1
            if config.rate_hz > 0:
                continue
            # The first frame may take long (lazy initialisation, GPU kernels); once the node's pace is
            # known, a frame lost on the way costs a few round trips of waiting, not the whole timeout.
            limit = config.timeout_s if not slowest else min(config.timeout_s, max(_MIN_WAIT_S, 20 * slowest))
            if spin(lambda i=i: done(i) or process.exited(), limit):
                misses, slowest = 0, max(slowest, time.monotonic() - sent)
            else:
                misses += 1
                echo(f"  frame {i + 1}: no result within {limit:g} s (late results still count)")
                if misses >= _GIVE_UP_AFTER_TIMEOUTS:
                    echo(f"  {model.name}: the node stopped answering; the remaining frames are not sent")
                    break
            if process.exited():
                raise DemoError(process.describe(f"for {model.name} stopped after {i + 1} frames"))
        if config.rate_hz > 0 and run.frames_sent:
            # The newest frame always gets processed (the node drops older ones), unless DDS lost it.
            last = run.frames_sent - 1
            spin(lambda: done(last) or process.exited(), config.timeout_s)
        run.stream_s = time.monotonic() - t0
        # Results of earlier frames may still be on their way: collect until nothing new arrives.
        count = -1
        while count != sum(map(done, range(n))):
            count = sum(map(done, range(n)))
            quiet = time.monotonic() + 0.2
            spin(lambda quiet=quiet: time.monotonic() >= quiet, 1.0)
    except NodeStartError as exc:
        raise DemoError(str(exc)) from None
    finally:
        if process is not None:
            run.exit_status = process.stop(_STOP_TIMEOUT_S)
        executor.shutdown()
        node.destroy_node()
    return run


# ------------------------------------------------------------------------------------- scoring
def _ground_truth_fit(model: DemoModel, stream: DemoStream) -> tuple[bool, int | None, str]:
    """(the ground truth can score this model, its ignore id, why not)."""
    if stream.labels is None or all(g is None for g in stream.labels):
        return False, None, "no ground truth"
    palette = model.palette
    if stream.gt_palette is not None:
        if stream.gt_palette.names != palette.names:
            return False, None, f"the model's classes are not the ground truth's ({', '.join(stream.gt_palette.names)})"
        ignore = stream.gt_palette.ignore_index
        return True, ignore if ignore >= 0 else None, ""
    ignore = palette.ignore_index if palette.ignore_index >= 0 else 255
    top = max((int(g[g != ignore].max(initial=0)) for g in stream.labels if g is not None), default=0)
    if top >= palette.num_classes:
        return False, None, f"ground truth ids reach {top}, beyond the model's {palette.num_classes} classes"
    return True, ignore, ""


def _score(model: DemoModel, stream: DemoStream, run: _ModelRun, backend: str) -> dict:
    fits, ignore, note = _ground_truth_fit(model, stream)
    confusion = ConfusionMatrix(model.palette.num_classes, ignore) if fits else None
    flicker = FlickerMeter()
    for i, (labels, info) in enumerate(zip(run.labels, run.infos, strict=True)):
        if labels is None or info is None:
            flicker.reset_sequence()  # pairs are consecutive frames only
            continue
        if info.state_reset:
            flicker.reset_sequence()  # a new sequence (a bag's stamp gap, a loop)
        gt = stream.labels[i] if fits else None
        flicker.update(labels, gt)
        if gt is not None:
            confusion.update(labels, gt)
    processed = [
        info for labels, info in zip(run.labels, run.infos, strict=True) if labels is not None and info is not None
    ]
    # The node's counters as of its last message (counters only grow).
    counters = max(
        (m for m in run.infos if m is not None), key=lambda m: (m.frames_received, m.frames_processed), default=None
    )
    iou = confusion.iou() if confusion is not None else None
    flick = flicker.result()
    return {
        "name": model.name,
        "stream": stream.name,
        "backend": backend,
        "model": model.record.model,
        "config": model.record.config,
        "checkpoint": str(model.path),
        "trained_on": model.record.metadata.get("dataset"),
        "miou": confusion.miou() if confusion is not None and confusion.matrix.sum() else None,
        "iou": {n: float(v) for n, v in zip(model.palette.names, iou, strict=False) if not np.isnan(v)}
        if iou is not None
        else None,
        "fp": flick["fp"],
        "fip": flick["fip"],
        "metrics_note": note,
        "ms_per_frame": float(np.median([m.total_ms for m in processed])) if processed else None,
        "keyframe_share": float(np.mean([m.is_keyframe for m in processed])) if processed else None,
        "frames_sent": run.frames_sent,
        "frames_received": int(counters.frames_received) if counters else 0,
        "frames_processed": int(counters.frames_processed) if counters else 0,
        "frames_dropped": int(counters.frames_dropped) if counters else 0,
        "frames_rejected": int(counters.frames_rejected) if counters else 0,
        "frames_without_result": len(run.labels) - len(processed),
        "results_unmatched": run.unmatched,
        "node_start_s": round(run.start_s, 2),
        "node_starts": run.node_starts,
        "stream_s": round(run.stream_s, 2),
        "node_exit_status": run.exit_status,
    }


# ------------------------------------------------------------------------------------- writing
def _json_ready(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    return value


def _write_stream_files(
    stream: DemoStream, models: list[DemoModel], runs: list[_ModelRun], config: DemoConfig
) -> tuple[dict[str, Path], list[str]]:
    """overlay.mp4 (or .avi), contact_sheet.png and labels.npz of one stream in config.out, their names
    and keys tagged with the stream's file_tag ("_camvid") where it has one."""
    out = config.out
    tag = f"_{stream.file_tag}" if stream.file_tag else ""
    notes: list[str] = []
    tracks = []
    for model, run in zip(models, runs, strict=True):
        # "key" only means something for models with keyframes (an interval above 1).
        captions = [
            f"{info.total_ms:.0f} ms" + (" key" if info.is_keyframe and info.keyframe_interval > 1 else "")
            if info is not None
            else ""
            for info in run.infos
        ]
        colours = np.asarray(model.palette.colors, dtype=np.uint8)
        tracks.append(ModelTrack(model.name, colours, run.labels, captions))
    gt_palette = stream.gt_palette or (models[0].palette if stream.labels is not None else None)
    gt_colours = np.asarray(gt_palette.colors, dtype=np.uint8) if gt_palette is not None else None
    h, w = stream.size
    files: dict[str, Path] = {}
    with OverlayVideoWriter(out / f"overlay{tag}.mp4", stream.fps, ((1 + len(models)) * h, 2 * w)) as video:
        for i, frame in enumerate(stream.frames):
            gt = stream.labels[i] if stream.labels is not None else None
            video.write(video_frame(i, frame, gt, gt_colours, tracks, alpha=config.alpha))
    files[f"video{tag}"] = video.path
    if video.fallback_note:
        notes.append(video.fallback_note)
    sheet = contact_sheet(stream.frames, stream.labels, gt_colours, tracks)
    files[f"contact_sheet{tag}"] = path = out / f"contact_sheet{tag}.png"
    if not cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
        raise OSError(f"OpenCV could not write {path}")
    files[f"labels{tag}"] = out / f"labels{tag}.npz"
    stamps = [sec * 1_000_000_000 + ns for sec, ns in (_stamp_key(m.header) for m in stream.messages)]
    arrays = {"stamps_ns": np.array(stamps, dtype=np.int64)}
    for model, run in zip(models, runs, strict=True):
        dtype = np.uint8 if model.palette.num_classes <= 256 else np.uint16
        stack = np.zeros((len(run.labels), h, w), dtype=dtype)
        for i, labels in enumerate(run.labels):
            if labels is not None:
                stack[i] = labels
        arrays[model.name] = stack
        arrays[f"{model.name}.valid"] = np.array([x is not None for x in run.labels])
    np.savez_compressed(files[f"labels{tag}"], **arrays)
    return files, notes


def _write_outputs(
    plan: list[tuple[DemoStream, list[DemoModel], list[_ModelRun]]], rows: list[dict], config: DemoConfig
) -> tuple[dict[str, Path], list[str]]:
    """Each stream's files (see :func:`_write_stream_files`), then results.json for all of them."""
    out = config.out
    files: dict[str, Path] = {}
    notes: list[str] = []
    streams = []
    try:
        for stream, models, runs in plan:
            written, said = _write_stream_files(stream, models, runs, config)
            files |= written
            notes += said
            h, w = stream.size
            streams.append(
                {
                    "name": stream.name,
                    "source": stream.description,
                    "frames": len(stream.frames),
                    "height": h,
                    "width": w,
                    "fps": stream.fps,
                    "models": [m.name for m in models],
                    "files": {k: p.name for k, p in written.items()},
                }
            )
        files["results"] = out / "results.json"
        report = {
            "streams": streams,
            "pacing": f"{config.rate_hz:g} Hz" if config.rate_hz > 0 else "each frame waits for its result",
            "device": config.device,
            "models": rows,
            "files": {k: p.name for k, p in files.items()},
            "notes": notes,
        }
        files["results"].write_text(json.dumps(_json_ready(report), indent=2) + "\n")
    except (OSError, cv2.error) as exc:
        if isinstance(exc, VideoWriteError):
            raise DemoError(str(exc)) from None
        what = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise DemoError(f"cannot write the demo's files into {out}: {what}") from None
    return files, notes


# -------------------------------------------------------------------------------------- the run
def run_demo(config: DemoConfig, echo: Callable[[str], None] = print) -> DemoResult:
    """Check input, models and output folder (DemoError before any node starts), run every model
    through its own segmentation_node on its stream, score, write the files and return the table."""
    if config.bag is not None or config.video is not None:
        stream = load_stream(config)
        streams = [(stream, resolve_models(config.models, config.weights_dir))]
    else:
        models = resolve_models(config.models, config.weights_dir)
        chosen = assign_streams(models, named=bool(config.models), echo=echo)
        streams = [(load_stream(config, dataset), dataset_models) for dataset, dataset_models in chosen.items()]
    try:
        resolve_device(config.device)
    except ValueError as exc:
        raise DemoError(str(exc)) from None
    prepare_output(config.out, sum(_estimated_bytes(stream, len(models)) for stream, models in streams))
    logs = config.out / "logs"
    logs.mkdir(exist_ok=True)
    pacing = f"at {config.rate_hz:g} Hz" if config.rate_hz > 0 else "one at a time, each waiting for its result"

    # Large images must cross processes whole; the nodes started below inherit the setting.
    use_local_large_image_transports()
    # While nodes run, Ctrl-C only sets a flag that every wait checks: a KeyboardInterrupt raised in the
    # middle of rclpy's C++ calls surfaces as an unrelated RuntimeError. The nodes are stopped either way.
    interrupted = StopRequest()  # not an Event: its lock can deadlock a handler (see StopRequest)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, lambda *_: interrupted.set()) if in_main_thread else None
    ctx = Context()
    rclpy.init(context=ctx, signal_handler_options=SignalHandlerOptions.NO)
    total = sum(len(models) for _, models in streams)
    plan: list[tuple[DemoStream, list[DemoModel], list[_ModelRun]]] = []
    try:
        k = 0
        for stream, models in streams:
            echo(f"{stream.description}; frames go out {pacing}")
            runs: list[_ModelRun] = []
            plan.append((stream, models, runs))
            for model in models:
                echo(f"[{k + 1}/{total}] {model.name} ({model.record.model}): starting segmentation_node")
                run = _run_model(model, stream, config, index=k, ctx=ctx, logs=logs, echo=echo, interrupted=interrupted)
                got = sum(lab is not None and info is not None for lab, info in zip(run.labels, run.infos, strict=True))
                echo(
                    f"  node up in {run.start_s:.1f} s; {got}/{len(stream.frames)} frames segmented in "
                    f"{run.stream_s:.1f} s"
                )
                runs.append(run)
                k += 1
    finally:
        ctx.try_shutdown()
        if in_main_thread:
            signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
        interrupted.close()
    rows: list[dict] = []
    notes: list[str] = []
    for stream, models, runs in plan:
        scored = [_score(m, stream, r, config.backend) for m, r in zip(models, runs, strict=True)]
        rows += scored
        if stream.labels is not None:
            notes += [f"{r['name']}: no mIoU or FP: {r['metrics_note']}" for r in scored if r["metrics_note"]]
    files, file_notes = _write_outputs(plan, rows, config)
    if config.backend != "torch":
        notes.append(f"every node ran backend {config.backend}, its weights exported at its stream's frame size")
    return DemoResult(rows, results_table(rows), files, file_notes + notes)
