"""Offline evaluation of a model over whole video sequences, through the runtime the node uses.

Every sequence starts from a fresh temporal state and runs frame by frame through
``VideoSegmenter`` (no drops, deterministic), then the metrics module scores it: mIoU and per-class
IoU on labelled frames, FP (labelled consecutive pairs) and FIP (all consecutive frames), mIoU by
keyframe offset, keyframe share and milliseconds per frame. Unlabelled video (a folder of images, a
video file) gets FIP and milliseconds per frame; its mIoU is NaN and FP None.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vseg_core.keyframes import KeyframePolicy
from vseg_core.metrics import ConfusionMatrix, FlickerMeter, KeyframeOffsetMeter
from vseg_core.models.streaming import StreamingSegmenter
from vseg_core.palette import ClassPalette
from vseg_core.resets import RESET_REQUESTED
from vseg_core.runtime_onnx import OnnxSegmenter
from vseg_core.stream import VideoSegmenter

__all__ = ["EvalReport", "EvalSequence", "evaluate", "evaluation_sequences", "write_plots"]


@dataclass(frozen=True)
class EvalSequence:
    """name; frames: (H, W, 3) uint8 RGB each; labels: (H, W) uint8 per frame, or None where unlabelled.

    ``labels=None``: no frame is labelled. Then ``frames`` may be any re-iterable source whose
    length is not known before reading, such as :class:`vseg_core.data.folders.VideoFileFrames`.
    """

    name: str
    frames: Sequence[np.ndarray] | Iterable[np.ndarray]
    labels: Sequence[np.ndarray | None] | None


def evaluation_sequences(
    dataset: str,
    *,
    root: str | Path | None = None,
    split: str = "val",
    sequences: int = 3,
    frames: int = 30,
    height: int = 256,
    width: int = 512,
) -> tuple[list[EvalSequence], ClassPalette | None]:
    """Whole sequences of ``dataset`` ("synthetic": ``sequences`` scenes of ``frames`` frames at
    height x width, drawn from the split's seeds; "camvid": every run of consecutive frames of ``split``;
    "cityscapes": the first ``sequences`` snippets, 20 frames each ending at the annotated one;
    "images": the images of the folder ``root`` as one unlabelled sequence; "video": the video file
    ``root`` as one unlabelled sequence, read as it plays).

    The palette is None for unlabelled data: :func:`evaluate` then takes the model's classes.
    """
    if dataset == "synthetic":
        from vseg_core.data.synthetic import SYNTHETIC, SyntheticScene, SyntheticVideoConfig

        offsets = {"train": 0, "val": 1_000_003, "test": 2_000_003}
        if split not in offsets:
            raise ValueError(f"synthetic splits are train, val and test, got {split!r}")
        config = SyntheticVideoConfig(height=height, width=width)
        out = []
        for i in range(sequences):
            clip = SyntheticScene(config, seed=offsets[split] + i).clip(0, frames, with_flow=False)
            out.append(EvalSequence(f"{split}_{i:03d}", list(clip.frames), list(clip.labels)))
        return out, SYNTHETIC
    if dataset == "camvid":
        from vseg_core.data.camvid import camvid_sequences, read_camvid_frame
        from vseg_core.palette import CAMVID

        if root is None:
            raise ValueError("dataset 'camvid' needs --root (the folder with train/, trainannot/, val/, valannot/)")
        out = []
        for run in camvid_sequences(root, split):
            pairs = [read_camvid_frame(f) for f in run]
            out.append(EvalSequence(f"{run[0].sequence}_{run[0].frame}", [p[0] for p in pairs], [p[1] for p in pairs]))
        return out, CAMVID
    if dataset == "cityscapes":
        from vseg_core.data.cityscapes import cityscapes_snippets, read_image, read_labels
        from vseg_core.palette import CITYSCAPES

        if root is None:
            raise ValueError("dataset 'cityscapes' needs --root (the folder with leftImg8bit_sequence/ and gtFine/)")
        out = []
        for snippet in cityscapes_snippets(root, split)[:sequences]:
            labels: list[np.ndarray | None] = [None] * len(snippet.images)
            labels[snippet.labelled] = read_labels(snippet.label)
            name = f"{snippet.city}_{snippet.sequence:06d}"
            out.append(EvalSequence(name, [read_image(p) for p in snippet.images], labels))
        return out, CITYSCAPES
    if dataset in ("images", "video"):
        from vseg_core.data.folders import ImageFolderVideo, VideoFileFrames

        if root is None:
            what = "a folder of images" if dataset == "images" else "a video file"
            raise ValueError(f"dataset {dataset!r} needs --root ({what})")
        path = Path(root).resolve()
        if dataset == "images":
            return [EvalSequence(path.name, ImageFolderVideo(path), None)], None
        return [EvalSequence(path.stem, VideoFileFrames(path), None)], None
    raise ValueError(
        f"unknown dataset {dataset!r} for evaluation; datasets: synthetic, camvid, cityscapes, images, video"
    )


def _model_palette(model: StreamingSegmenter | OnnxSegmenter) -> ClassPalette:
    """The classes a checkpoint (or export) was saved with, else generic names for the model's class count."""
    if isinstance(model, OnnxSegmenter) and model.palette is not None:
        return model.palette
    record = getattr(model, "checkpoint_record", None)
    if record is not None and record.palette is not None:
        return record.palette
    return ClassPalette.generic(model.num_classes)


@dataclass
class EvalReport:
    model: str
    palette: ClassPalette
    frames: int = 0
    labelled_frames: int = 0
    keyframes: int = 0
    ms_per_frame: list[float] = field(default_factory=list)
    per_sequence: list[dict] = field(default_factory=list)

    def as_dict(self, confusion: ConfusionMatrix, flicker: FlickerMeter, offsets: KeyframeOffsetMeter) -> dict:
        iou = confusion.iou()
        return {
            "model": self.model,
            "frames": self.frames,
            "labelled_frames": self.labelled_frames,
            "miou": confusion.miou(),
            "iou": {n: (None if np.isnan(v) else float(v)) for n, v in zip(self.palette.names, iou, strict=False)},
            **flicker.result(),
            "ms_per_frame": float(np.median(self.ms_per_frame)) if self.ms_per_frame else float("nan"),
            "keyframe_share": self.keyframes / self.frames if self.frames else float("nan"),
            "miou_by_keyframe_offset": {str(k): v for k, v in offsets.result().items()},
            "sequences": self.per_sequence,
        }


def evaluate(
    model: StreamingSegmenter | OnnxSegmenter,
    sequences: list[EvalSequence],
    palette: ClassPalette | None,
    *,
    device: str = "auto",
    keyframe_policy: KeyframePolicy | None = None,
    input_size: tuple[int, int] | None = None,
    progress: bool = False,
) -> dict:
    """Score ``model`` on ``sequences``; returns the report as a JSON-ready dict.

    ``model``: a torch model, or an :class:`OnnxSegmenter` (an export run by ONNX Runtime).

    ``palette`` None (unlabelled sequences only): the model's own classes name the report's IoU keys.

    ``input_size``: (height, width) the model runs at (see :class:`VideoSegmenter`); labels are scored
    at the frame's own size either way. The report says which size ran (``input_size``, None: the
    frame's own).
    """
    if palette is None:
        if any(s.labels is not None and any(g is not None for g in s.labels) for s in sequences):
            raise ValueError("labelled sequences need the dataset's palette (its classes and ignore index)")
        palette = _model_palette(model)
    if model.num_classes != palette.num_classes:
        raise ValueError(f"the model predicts {model.num_classes} classes, the dataset has {palette.num_classes}")
    ignore = palette.ignore_index if palette.ignore_index >= 0 else None
    backend = "onnxruntime" if isinstance(model, OnnxSegmenter) else "torch"
    segmenter = VideoSegmenter(
        model, backend=backend, device=device, keyframe_policy=keyframe_policy, input_size=input_size
    )
    confusion = ConfusionMatrix(palette.num_classes, ignore)
    flicker = FlickerMeter()
    offsets = KeyframeOffsetMeter(palette.num_classes, ignore)
    report = EvalReport(getattr(model, "model_name", type(model).__name__), palette)
    total = sum(operator.length_hint(s.frames) for s in sequences) or None  # None: unknown (video files)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="frame", desc=report.model)
    for seq in sequences:
        segmenter.reset(RESET_REQUESTED)
        flicker.reset_sequence()
        seq_confusion, seq_flicker = ConfusionMatrix(palette.num_classes, ignore), FlickerMeter()
        labels = itertools.repeat(None) if seq.labels is None else seq.labels
        count = 0
        for frame, gt in zip(seq.frames, labels, strict=seq.labels is not None):
            result = segmenter.step(frame)
            count += 1
            info = result.info
            report.frames += 1
            report.keyframes += int(info.is_keyframe)
            report.ms_per_frame.append(info.timings_ms["total"])
            flicker.update(result.labels, gt)
            seq_flicker.update(result.labels, gt)
            if gt is not None:
                report.labelled_frames += 1
                confusion.update(result.labels, gt)
                seq_confusion.update(result.labels, gt)
                offsets.update(info.frames_since_keyframe, result.labels, gt)
            if bar is not None:
                bar.update(1)
        report.per_sequence.append(
            {"name": seq.name, "frames": count, "miou": seq_confusion.miou(), **seq_flicker.result()}
        )
    if bar is not None:
        bar.close()
    # The size the model ran at, as the segmenter settled it (an export of fixed size imposes its own).
    size = segmenter.input_size
    return {**report.as_dict(confusion, flicker, offsets), "input_size": list(size) if size else None}


def write_plots(reports: list[dict], out_dir: Path) -> list[Path]:
    """accuracy_vs_time.png (mIoU over ms/frame per model) and miou_by_keyframe_offset.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in reports:
        ax.scatter(r["ms_per_frame"], r["miou"], s=40)
        ax.annotate(r["model"], (r["ms_per_frame"], r["miou"]), textcoords="offset points", xytext=(4, 4))
    ax.set_xlabel("ms per frame (median)")
    ax.set_ylabel("mIoU")
    ax.set_title("Accuracy vs time per frame")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    paths.append(out_dir / "accuracy_vs_time.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in reports:
        by_offset = r["miou_by_keyframe_offset"]
        ax.plot([int(k) for k in by_offset], list(by_offset.values()), marker="o", label=r["model"])
    ax.set_xlabel("frames since keyframe")
    ax.set_ylabel("mIoU")
    ax.set_title("mIoU by keyframe offset")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    paths.append(out_dir / "miou_by_keyframe_offset.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths
