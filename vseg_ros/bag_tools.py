"""`vseg bag make` and `vseg bag eval`: datasets into rosbag2, and offline evaluation of a bag.

``bag eval`` reads every frame in order through the same ``VideoSegmenter`` and the same reset
rules (``StreamResetDetector``) as the node, with no DDS and no drops, so it is deterministic and
equals ``vseg eval`` on the same frames.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from vseg.msg import SegmentationInfo
from vseg_core.evaluate import EvalSequence
from vseg_core.keyframes import KeyframePolicy
from vseg_core.metrics import ConfusionMatrix, FlickerMeter, KeyframeOffsetMeter
from vseg_core.models.streaming import StreamingSegmenter
from vseg_core.palette import ClassPalette
from vseg_core.resets import RESET_NONE, ResetConfig, StreamResetDetector
from vseg_core.runtime_onnx import OnnxSegmenter
from vseg_core.stream import VideoSegmenter
from vseg_ros.bags import BagError, BagWriter, bag_custom_data, list_topics, read_messages
from vseg_ros.conversions import (
    array_to_compressed,
    colorize,
    compressed_to_array,
    image_to_array,
    image_to_labels,
    labels_to_image,
    rgb_to_image,
)

__all__ = [
    "LABEL_CLASSES_KEY", "BagEvalResult", "bag_label_classes", "evaluate_bag", "first_frame_size",
    "write_sequences_bag",
]  # fmt: skip

_SEQUENCE_GAP_NS = 5_000_000_000  # between sequences in one bag: longer than any reset gap
# metadata.yaml custom_data key under which `bag make` records the class names of its label topic
# (a JSON list), so that an evaluation of many bags can refuse bags labelled with another label set.
LABEL_CLASSES_KEY = "vseg.label_classes"


def _header(stamp_ns: int, frame_id: str) -> Header:
    header = Header(frame_id=frame_id)
    header.stamp.sec, header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    return header


def write_sequences_bag(
    sequences: list[EvalSequence],
    fps: list[float],
    path: str | Path,
    *,
    image_topic: str = "/camera/image_raw",
    label_topic: str | None = "/camera/labels",
    frame_id: str = "camera",
    storage: str = "mcap",
    compressed: bool = False,
    start_ns: int = 1_700_000_000 * 1_000_000_000,
    label_classes: Sequence[str] | None = None,
) -> int:
    """One bag with every sequence in order, stamped at its frame rate, sequences 5 s apart.

    Labels (mono8) go on ``label_topic`` with the image's header; ``label_classes`` (the names of
    the label ids) are recorded in the bag's metadata. Returns the number of images.
    """
    if len(fps) != len(sequences) or any(f <= 0 for f in fps):
        raise ValueError("give one positive frame rate per sequence")
    count, t = 0, start_ns
    custom = {LABEL_CLASSES_KEY: json.dumps(list(label_classes))} if label_classes and label_topic else None
    with BagWriter(path, storage=storage, custom_data=custom) as bag:
        for seq, rate in zip(sequences, fps, strict=True):
            for i, (frame, gt) in enumerate(zip(seq.frames, seq.labels, strict=True)):
                header = _header(t + round(i * 1e9 / rate), frame_id)
                stamp = header.stamp.sec * 1_000_000_000 + header.stamp.nanosec
                msg = array_to_compressed(frame, header, "jpeg", 95) if compressed else rgb_to_image(frame, header)
                bag.write(image_topic, stamp, msg)
                if label_topic and gt is not None:
                    bag.write(label_topic, stamp, labels_to_image(gt, header))
                count += 1
            t += round(len(seq.frames) * 1e9 / rate) + _SEQUENCE_GAP_NS
    return count


def bag_label_classes(bag: str | Path) -> tuple[str, ...] | None:
    """The class names the bag's labels use, as `bag make` records them; None when not recorded."""
    recorded = bag_custom_data(bag).get(LABEL_CLASSES_KEY)
    if recorded is None:
        return None
    try:
        names = json.loads(recorded)
    except json.JSONDecodeError:
        names = None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise BagError(f"bag {bag}: custom_data {LABEL_CLASSES_KEY} must be a JSON list of class names")
    return tuple(names)


@dataclass(frozen=True)
class BagEvalResult:
    """``report`` as JSON; the meters themselves for whoever merges several bags' counts."""

    report: dict
    frames_read: int
    frames_evaluated: int
    labels_without_image: int
    confusion: ConfusionMatrix
    flicker: FlickerMeter
    keyframes: int
    ms: tuple[float, ...]  # the runtime's total per frame


def _stamp_ns(header: Header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def _frames(
    bag: Path, image_topic: str, label_topic: str | None, stats: dict[str, int]
) -> Iterator[tuple[Header, np.ndarray, object]]:
    """(header, frame, labels or None) in bag order; labels matched to images by header stamp and
    frame_id. ``stats["labels_without_image"]`` counts labels no image matched."""
    topics = {image_topic: (Image, CompressedImage)}
    if label_topic:
        topics[label_topic] = Image
    pending_labels: dict[tuple[int, str], np.ndarray] = {}
    pending_images: list[tuple[Header, np.ndarray]] = []
    for topic, _, msg in read_messages(bag, topics):
        key = (_stamp_ns(msg.header), msg.header.frame_id)
        if topic == image_topic:
            frame = compressed_to_array(msg) if isinstance(msg, CompressedImage) else image_to_array(msg)
            pending_images.append((msg.header, frame))
        else:
            pending_labels[key] = image_to_labels(msg)
        # An image is complete once its labels arrived, or once a later image shows they never will.
        while pending_images:
            header, frame = pending_images[0]
            k = (_stamp_ns(header), header.frame_id)
            if label_topic and k not in pending_labels and len(pending_images) < 2:
                break
            pending_images.pop(0)
            yield header, frame, pending_labels.pop(k, None)
    for header, frame in pending_images:
        yield header, frame, pending_labels.pop((_stamp_ns(header), header.frame_id), None)
    stats["labels_without_image"] = len(pending_labels)


def first_frame_size(bag: str | Path, image_topic: str) -> tuple[int, int]:
    """(height, width) of the first image on ``image_topic``: the size to export a graph at."""
    for _, frame, _ in _frames(Path(bag), image_topic, None, {}):
        return frame.shape[0], frame.shape[1]
    raise BagError(f"bag {bag} has no frames on {image_topic}")


def evaluate_bag(
    bag: str | Path,
    model: StreamingSegmenter | OnnxSegmenter,
    palette: ClassPalette,
    *,
    image_topic: str,
    label_topic: str | None = None,
    device: str = "auto",
    keyframe_policy: KeyframePolicy | None = None,
    reset_gap_s: float = 1.0,
    input_size: tuple[int, int] | None = None,
    write: str | Path | None = None,
    on_frame: Callable[[], None] | None = None,
) -> BagEvalResult:
    """Score ``model`` on a bag; ``write``: a new bag with the input plus predictions and info.

    model: a torch model (run on ``device``) or an ONNX Runtime export (backend onnxruntime).
    input_size: (height, width) the model runs at, as the node's input_height/input_width (see
    :class:`VideoSegmenter`); labels are scored and written at the frame's size either way.
    on_frame: called after every frame (progress).
    """
    bag = Path(bag)
    if model.num_classes != palette.num_classes:
        raise ValueError(f"the model predicts {model.num_classes} classes, the palette has {palette.num_classes}")
    if label_topic and label_topic not in {t.name for t in list_topics(bag)}:
        topics = ", ".join(f"{t.name} [{t.msgtype}]" for t in list_topics(bag))
        raise BagError(f"bag {bag} has no topic {label_topic}; its topics: {topics}")
    ignore = palette.ignore_index if palette.ignore_index >= 0 else None
    if isinstance(model, OnnxSegmenter):
        segmenter = VideoSegmenter(model, backend="onnxruntime", keyframe_policy=keyframe_policy, input_size=input_size)
    else:
        segmenter = VideoSegmenter(model, device=device, keyframe_policy=keyframe_policy, input_size=input_size)
    resets = StreamResetDetector(ResetConfig(reset_gap_s if reset_gap_s > 0 else float("inf")))
    confusion, flicker = ConfusionMatrix(palette.num_classes, ignore), FlickerMeter()
    offsets = KeyframeOffsetMeter(palette.num_classes, ignore)
    colours = np.asarray(palette.colors, dtype=np.uint8)
    writer = BagWriter(write) if write else None
    read = evaluated = labelled = keyframes = 0
    ms: list[float] = []
    sequences: list[dict] = []
    seq_cm = seq_fl = None
    try:
        if writer:
            writer.__enter__()
        stats: dict[str, int] = {}
        for header, frame, gt in _frames(bag, image_topic, label_topic, stats):
            read += 1
            reason = resets.check(_stamp_ns(header), header.frame_id)
            result = segmenter.step(frame, reset_reason=reason or None)
            if reason != RESET_NONE:
                flicker.reset_sequence()
                seq_cm, seq_fl = ConfusionMatrix(palette.num_classes, ignore), FlickerMeter()
                sequences.append({"start_stamp_ns": _stamp_ns(header), "reset_reason": reason, "frames": 0})
            evaluated += 1
            info = result.info
            keyframes += int(info.is_keyframe)
            ms.append(info.timings_ms["total"])
            flicker.update(result.labels, gt)
            seq_fl.update(result.labels, gt)
            sequences[-1]["frames"] += 1
            if gt is not None:
                labelled += 1
                confusion.update(result.labels, gt)
                seq_cm.update(result.labels, gt)
                offsets.update(info.frames_since_keyframe, result.labels, gt)
            sequences[-1].update({"miou": seq_cm.miou(), **seq_fl.result()})
            if writer:
                stamp = _stamp_ns(header)
                writer.write("/vseg/labels", stamp, labels_to_image(result.labels, header))
                writer.write("/vseg/color", stamp, rgb_to_image(colorize(result.labels, colours), header))
                msg = SegmentationInfo(
                    header=header, model=getattr(model, "model_name", ""), is_keyframe=info.is_keyframe,
                    frames_since_keyframe=info.frames_since_keyframe, keyframe_interval=info.keyframe_interval,
                    state_reset=info.state_reset, reset_reason=info.reset_reason,
                    frames_received=read, frames_processed=evaluated,
                )  # fmt: skip
                for stage, value in info.timings_ms.items():
                    setattr(msg, f"{stage}_ms", float(value))
                writer.write("/vseg/info", stamp, msg)
            if on_frame:
                on_frame()
        if writer:
            for topic, stamp, msg in read_messages(bag, _all_topics(bag)):
                writer.write(topic, stamp, msg)
    finally:
        if writer:
            writer.__exit__(None, None, None)
    if read != evaluated:
        raise RuntimeError(f"{read} frames read but {evaluated} evaluated")
    if read == 0:
        raise BagError(f"bag {bag} has no frames on {image_topic}")
    unmatched = stats.get("labels_without_image", 0)
    iou = confusion.iou()
    report = {
        "model": getattr(model, "model_name", type(model).__name__),
        "backend": segmenter.backend,
        "frames": evaluated,
        "labelled_frames": labelled,
        "miou": confusion.miou(),
        "iou": {n: (None if np.isnan(v) else float(v)) for n, v in zip(palette.names, iou, strict=False)},
        **flicker.result(),
        "ms_per_frame": float(np.median(ms)),
        "keyframe_share": keyframes / evaluated,
        "miou_by_keyframe_offset": {str(k): v for k, v in offsets.result().items()},
        "sequences": sequences,
        "labels_without_image": unmatched,
        "input_size": list(segmenter.input_size) if segmenter.input_size else None,  # None: the frames' own
    }
    return BagEvalResult(report, read, evaluated, unmatched, confusion, flicker, keyframes, tuple(ms))


def _all_topics(bag: Path) -> dict[str, type]:
    from vseg_ros.bags import message_class

    return {t.name: message_class(t.msgtype) for t in list_topics(bag)}
