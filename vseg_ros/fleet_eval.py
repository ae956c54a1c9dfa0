"""`vseg bag eval` over many bags: every (bag, camera) stream, sharded over torch.distributed ranks,
merged into one report, resumable.

Run in one process, or under ``torchrun --nproc-per-node N [--nnodes ...] -m vseg_ros.cli bag eval
...`` (``vseg bag eval --workers N`` starts exactly that through ``torch.distributed.run``):

1. Rank 0 finds the bags, plans the streams (a bag without a camera's image topic is skipped with
   the reason; label sets recorded in the bags must agree with each other and with the model), reads
   the results folder, and broadcasts the plan, so every rank deals the same shards.
2. Unfinished streams go to ranks largest first, each to the rank with the fewest frames so far
   (longest processing time first: the long streams start at once and the shards end together).
3. Each rank evaluates its streams one by one with :func:`evaluate_bag` (the node's reset rules, as
   for one bag) on its own GPU (``cuda:LOCAL_RANK``) or CPU threads, and writes one record per
   finished stream into ``OUT/streams`` (atomically: a killed run leaves whole records only). A
   stream whose bag turns out damaged is reported with the reason and tried again next run.
4. The records are gathered to rank 0 through torch.distributed (gloo, objects only) and merged
   from integer counts (confusion matrices, flicker pixel counts), so the metrics are identical for
   any number of ranks; rank 0 writes ``report.json``, ``report.md`` and ``report.png``.

Running the same command again skips the streams whose records exist: a preempted job continues.
The results folder must be one folder that every rank sees (a shared filesystem across nodes).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vseg_core.keyframes import FixedInterval
from vseg_core.metrics import ConfusionMatrix
from vseg_core.palette import ClassPalette
from vseg_ros.bag_tools import bag_label_classes, evaluate_bag
from vseg_ros.bags import BagError, list_topics

__all__ = [
    "Camera", "FleetEvalError", "FleetRequest", "PeerLostError", "Stream", "build_report", "cameras_from_topics",
    "check_request", "file_digest", "find_bags", "is_bag", "load_cameras", "plan_streams", "run_fleet_eval",
    "shard_streams", "write_report",
]  # fmt: skip

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
RECORD_VERSION = 1
_PLOT_STREAMS = 60  # a plot of more bars than this is unreadable: the worst ones are drawn


class FleetEvalError(ValueError):
    """A fleet evaluation that cannot run as asked; one line that says what was expected."""


class StreamFailed(Exception):
    """One stream could not be read to its end (a damaged bag); the message says where."""


class PeerLostError(FleetEvalError):
    """Another rank stopped before the results were gathered: its own error says why."""


@dataclass(frozen=True)
class Camera:
    """One camera of the fleet: its name in the report, its image topic, its ground truth topic."""

    name: str
    image_topic: str
    label_topic: str | None = None


@dataclass(frozen=True)
class Stream:
    """One (bag, camera) stream to evaluate; ``frames``: image messages in the bag's metadata."""

    bag: str  # absolute path of the bag folder
    camera: Camera
    frames: int
    label_topic: str | None  # the camera's label topic where this bag has it, else None

    @property
    def key(self) -> str:
        return f"{self.bag}#{self.camera.name}"

    @property
    def file_stem(self) -> str:
        """Unique per stream and readable: bag folder name, camera name, digest of the key."""
        digest = hashlib.sha256(self.key.encode()).hexdigest()[:12]
        return re.sub(r"[^A-Za-z0-9._-]", "_", f"{Path(self.bag).name}.{self.camera.name}") + f".{digest}"

    @property
    def record_name(self) -> str:
        return f"{self.file_stem}.json"


@dataclass(frozen=True)
class FleetRequest:
    """What one fleet evaluation is asked to do (every rank builds the same request).

    settings: what decides the numbers (model, weights digest, backend, classes, keyframe interval,
    reset gap, input size); records are only reused by a run with the same settings.
    input_size: (height, width) the model runs at; None: each stream's frame size.
    """

    paths: tuple[str, ...]
    cameras: tuple[Camera, ...]
    out: Path
    settings: dict[str, Any]
    recursive: bool = False
    interval: int = 5
    reset_gap_s: float = 1.0
    input_size: tuple[int, int] | None = None
    device: str = "auto"
    threads: int = 0  # CPU threads per rank; 0: this machine's cores shared evenly among local ranks
    write: Path | None = None
    progress: bool = True


# ---- inputs: bags and cameras --------------------------------------------------------------------


def is_bag(path: Path) -> bool:
    return (path / "metadata.yaml").is_file()


def find_bags(paths: Sequence[str | Path], recursive: bool = False) -> list[Path]:
    """Every bag that ``paths`` name: bags themselves, and the bags inside folders (``recursive``:
    at any depth; a bag's own folder is not searched further). Sorted, each once."""
    if not paths:
        raise FleetEvalError("give at least one bag or folder of bags")
    found: dict[Path, Path] = {}
    for given in map(Path, paths):
        if not given.exists():
            raise FleetEvalError(f"no bag or folder at {given}")
        if is_bag(given):
            found.setdefault(given.resolve(), given.resolve())
            continue
        if not given.is_dir():
            raise FleetEvalError(f"{given} is not a bag (a folder with metadata.yaml) nor a folder of bags")
        inside = _bags_under(given, recursive)
        if not inside:
            deeper = "" if recursive else "; --recursive also looks in its subfolders"
            raise FleetEvalError(f"no bags in {given}: a rosbag2 bag is a folder with metadata.yaml{deeper}")
        for bag in inside:
            found.setdefault(bag.resolve(), bag.resolve())
    return sorted(found.values(), key=str)


def _bags_under(folder: Path, recursive: bool) -> list[Path]:
    bags = []
    for child in sorted(p for p in folder.iterdir() if p.is_dir()):
        if is_bag(child):
            bags.append(child)
        elif recursive:
            bags.extend(_bags_under(child, True))
    return bags


def _camera_name(topic: str) -> str:
    """'front' for /front/image_raw; the topic itself (without the leading /) for a one-part name."""
    parts = [p for p in topic.split("/") if p]
    return "/".join(parts[:-1]) if len(parts) > 1 else "/".join(parts)


def cameras_from_topics(image_topics: Sequence[str], label_topics: Sequence[str] = ()) -> tuple[Camera, ...]:
    """Cameras from repeated ``--image-topic`` (and ``--label-topic``, none or one per image topic),
    named by the topic's namespace (/front/image_raw: front)."""
    if not image_topics:
        raise FleetEvalError("give the cameras' image topics: --image-topic (once per camera) or --cameras FILE")
    if label_topics and len(label_topics) != len(image_topics):
        raise FleetEvalError(
            f"give one --label-topic per --image-topic (in the same order): {len(image_topics)} image topics, "
            f"{len(label_topics)} label topics"
        )
    if len(set(image_topics)) != len(image_topics):
        raise FleetEvalError(f"an image topic is given twice: {', '.join(image_topics)}")
    names = [_camera_name(t) for t in image_topics]
    if len(set(names)) != len(names) or not all(names):
        names = [t.strip("/") or t for t in image_topics]
    labels = list(label_topics) or [None] * len(image_topics)
    return tuple(Camera(n, i, lt or None) for n, i, lt in zip(names, image_topics, labels, strict=True))


def load_cameras(path: str | Path) -> tuple[Camera, ...]:
    """Cameras from YAML: ``cameras: {NAME: {image: TOPIC, labels: TOPIC}}`` (labels optional)."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise FleetEvalError(f"cannot read the cameras file {path}: {exc}") from None
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "no details"
        raise FleetEvalError(f"cameras file {path} is not YAML: {first}") from None
    expected = "expected 'cameras:' mapping names to {image: TOPIC, labels: TOPIC}"
    cameras = data.get("cameras") if isinstance(data, dict) else None
    if not isinstance(cameras, dict) or not cameras:
        raise FleetEvalError(f"cameras file {path}: {expected}")
    out = []
    for name, entry in cameras.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("image"), str) or not entry["image"].startswith("/"):
            raise FleetEvalError(f"cameras file {path}: camera {name!r} needs 'image: /TOPIC'; {expected}")
        unknown = set(entry) - {"image", "labels"}
        if unknown:
            raise FleetEvalError(f"cameras file {path}: camera {name!r} has unknown keys {sorted(unknown)}; {expected}")
        labels = entry.get("labels")
        if labels is not None and (not isinstance(labels, str) or not labels.startswith("/")):
            raise FleetEvalError(f"cameras file {path}: camera {name!r}: 'labels' must be a topic (/NAME)")
        out.append(Camera(str(name), entry["image"], labels))
    if len({c.image_topic for c in out}) != len(out):
        raise FleetEvalError(f"cameras file {path}: two cameras share an image topic")
    return tuple(out)


# ---- the plan --------------------------------------------------------------------------------------


def plan_streams(
    bags: Sequence[Path], cameras: Sequence[Camera], palette: ClassPalette
) -> tuple[list[Stream], list[dict[str, str]]]:
    """(streams, skipped): a stream per bag and camera whose image topic the bag has; the others
    skipped with the reason. From the bags' metadata only (their data is checked as it is read).
    Label sets recorded in the bags (see ``bag make``) must agree with each other and with
    ``palette``: otherwise one merged confusion matrix would add unlike classes."""
    streams: list[Stream] = []
    skipped: list[dict[str, str]] = []
    label_sets: dict[tuple[str, ...], str] = {}
    for bag in bags:
        try:
            topics = {t.name: t for t in list_topics(bag, check_data=False)}  # metadata only
        except BagError as exc:
            skipped.extend({"bag": str(bag), "camera": c.name, "reason": str(exc)} for c in cameras)
            continue
        have = ", ".join(sorted(topics)) or "none"
        labelled = False
        for camera in cameras:
            topic = topics.get(camera.image_topic)
            if topic is None:
                reason = f"no topic {camera.image_topic} (its topics: {have})"
            elif topic.msgtype not in IMAGE_TYPES:
                reason = f"{camera.image_topic} carries {topic.msgtype}, expected {' or '.join(IMAGE_TYPES)}"
            elif topic.count == 0:
                reason = f"no messages on {camera.image_topic}"
            else:
                label_topic = camera.label_topic if camera.label_topic in topics else None
                labelled |= label_topic is not None
                streams.append(Stream(str(bag), camera, topic.count, label_topic))
                continue
            skipped.append({"bag": str(bag), "camera": camera.name, "reason": reason})
        if labelled:
            names = bag_label_classes(bag)
            if names is not None:
                label_sets.setdefault(names, str(bag))
    if len(label_sets) > 1:
        described = "; ".join(
            f"{bag} labels {len(n)} classes ({', '.join(n[:4])}, ...)" for n, bag in label_sets.items()
        )
        raise FleetEvalError(f"the bags use different label sets: {described}; evaluate them separately")
    if label_sets:
        names, bag = next(iter(label_sets.items()))
        if names != tuple(palette.names):
            raise FleetEvalError(
                f"{bag} (and the other labelled bags) label {len(names)} classes ({', '.join(names[:4])}, ...) but the "
                f"model predicts {palette.num_classes} ({', '.join(palette.names[:4])}, ...)"
            )
    return streams, skipped


def shard_streams(streams: Sequence[Stream], world: int) -> list[list[Stream]]:
    """Longest processing time first: largest stream first, each to the rank with the fewest frames
    so far (ties: the lower rank); every rank computes the same shards from the same list."""
    shards: list[list[Stream]] = [[] for _ in range(world)]
    load = [0] * world
    for stream in sorted(streams, key=lambda s: (-s.frames, s.key)):
        rank = min(range(world), key=lambda r: (load[r], r))
        shards[rank].append(stream)
        load[rank] += stream.frames
    return shards


# ---- the results folder ----------------------------------------------------------------------------


def _write_atomically(path: Path, text: str) -> None:
    """Whole file or none: written beside, flushed to disk, then renamed over."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _open_results(out: Path, settings: dict[str, Any], streams: Sequence[Stream]) -> dict[str, dict]:
    """Check (or start) the results folder; the finished records of ``streams``, by stream key."""
    try:
        (out / "streams").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FleetEvalError(f"cannot create the results folder {out}: {exc}") from None
    run_file = out / "run.json"
    if run_file.exists():
        try:
            recorded = json.loads(run_file.read_text(encoding="utf-8"))["settings"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise FleetEvalError(f"{run_file} is damaged ({exc}); give a new results folder") from None
        differ = sorted(k for k in recorded.keys() | settings.keys() if recorded.get(k) != settings.get(k))
        if differ:
            what = ", ".join(f"{k} {recorded.get(k)!r} there, {settings.get(k)!r} now" for k in differ)
            raise FleetEvalError(
                f"results folder {out} holds a run with other settings ({what}); give a new --out or the same settings"
            )
    else:
        _write_atomically(run_file, json.dumps({"settings": settings}, indent=2))
    finished = {}
    for stream in streams:
        path = out / "streams" / stream.record_name
        if not path.exists():
            continue
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            if record["version"] != RECORD_VERSION or record["stream"] != stream.key:
                raise ValueError("written for another stream or by another version")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise FleetEvalError(f"record {path} is damaged ({exc}); delete it to evaluate that stream again") from None
        finished[stream.key] = record
    return finished


# ---- evaluating one stream -------------------------------------------------------------------------


def _write_target(request: FleetRequest, stream: Stream) -> Path | None:
    if request.write is None:
        return None
    return request.write / stream.file_stem


def _evaluate_stream(
    stream: Stream,
    *,
    model_for: Callable[[Stream], Any],
    palette: ClassPalette,
    request: FleetRequest,
    device: str,
    rank: int,
    on_frame: Callable[[], None],
) -> dict[str, Any]:
    target = _write_target(request, stream)
    partial = None
    if target is not None:
        # Written under a temporary name and renamed when complete: a killed run leaves no half bag
        # that the next run would refuse to overwrite.
        partial = target.with_name(f"{target.name}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        if target.exists():
            raise FleetEvalError(f"{target} exists already; --write makes new bags")
    try:
        result = evaluate_bag(
            stream.bag, model_for(stream), palette, image_topic=stream.camera.image_topic,
            label_topic=stream.label_topic, device=device, keyframe_policy=FixedInterval(request.interval),
            reset_gap_s=request.reset_gap_s, input_size=request.input_size, write=partial, on_frame=on_frame,
        )  # fmt: skip
    except BagError as exc:
        # A damaged bag is that stream's problem, not the fleet's: reported, and tried again next run.
        if partial is not None:
            shutil.rmtree(partial, ignore_errors=True)
        raise StreamFailed(str(exc)) from None
    except ValueError as exc:  # labels outside the palette (ConfusionMatrix): the run is misconfigured
        raise FleetEvalError(f"bag {stream.bag}, camera {stream.camera.name}: {exc}") from None
    if partial is not None:
        os.replace(partial, target)
    fl = result.flicker
    return {
        "version": RECORD_VERSION,
        "stream": stream.key,
        "bag": stream.bag,
        "camera": stream.camera.name,
        "image_topic": stream.camera.image_topic,
        "label_topic": stream.label_topic,
        "labels_note": (
            None if stream.label_topic or not stream.camera.label_topic else f"no topic {stream.camera.label_topic}"
        ),
        "frames_in": result.frames_read,
        "frames_out": result.frames_evaluated,
        "labelled_frames": result.report["labelled_frames"],
        "labels_without_image": result.labels_without_image,
        "sequences": len(result.report["sequences"]),
        "keyframes": result.keyframes,
        "confusion": result.confusion.matrix.tolist(),
        "flicker": {
            "pred_changes": fl.pred_changes,
            "pixels": fl.pixels,
            "error_changes": fl.error_changes,
            "error_pixels": fl.error_pixels,
        },
        "ms_total": float(sum(result.ms)),
        "ms_median": float(np.median(result.ms)),
        "rank": rank,
    }


# ---- the report ------------------------------------------------------------------------------------


def _merge(records: Sequence[dict], palette: ClassPalette) -> dict[str, Any]:
    """Metrics of ``records`` together, from their integer counts (exact whatever the grouping)."""
    ignore = palette.ignore_index if palette.ignore_index >= 0 else None
    confusion = ConfusionMatrix(palette.num_classes, ignore)
    counts = dict.fromkeys(("pred_changes", "pixels", "error_changes", "error_pixels"), 0)
    for record in records:
        confusion.matrix += np.asarray(record["confusion"], dtype=np.int64)
        for k in counts:
            counts[k] += record["flicker"][k]
    frames = sum(r["frames_out"] for r in records)
    labelled = sum(r["labelled_frames"] for r in records)
    iou = zip(palette.names, confusion.iou(), strict=False)
    return {
        "streams": len(records),
        "frames_in": sum(r["frames_in"] for r in records),
        "frames_out": frames,
        "labelled_frames": labelled,
        "miou": confusion.miou() if labelled else None,
        "iou": {n: (None if np.isnan(v) else float(v)) for n, v in iou} if labelled else None,
        "fp": counts["error_changes"] / counts["error_pixels"] if counts["error_pixels"] else None,
        "fip": counts["pred_changes"] / counts["pixels"] if counts["pixels"] else None,
        "keyframe_share": sum(r["keyframes"] for r in records) / frames if frames else None,
        "ms_per_frame_mean": sum(r["ms_total"] for r in records) / frames if frames else None,
        "confusion": confusion.matrix.tolist(),
    }


def _worst_first(entry: dict) -> tuple:
    # Labelled streams by mIoU (lowest first), then the unlabelled ones by flicker (highest first).
    if entry["miou"] is not None:
        return (0, entry["miou"], entry["stream"])
    return (1, -(entry["fip"] or 0.0), entry["stream"])


def build_report(
    records: Sequence[dict], skipped: Sequence[dict], palette: ClassPalette, settings: dict[str, Any]
) -> dict[str, Any]:
    """The merged report: overall, per bag, per camera, per stream (worst first), skipped streams."""
    streams = []
    for record in records:
        merged = _merge([record], palette)
        del merged["streams"]
        streams.append({
            "stream": record["stream"], "bag": record["bag"], "camera": record["camera"],
            "image_topic": record["image_topic"], "label_topic": record["label_topic"],
            "labels_note": record["labels_note"], "sequences": record["sequences"],
            "labels_without_image": record["labels_without_image"], "ms_per_frame_median": record["ms_median"],
            **merged,
        })  # fmt: skip
    streams.sort(key=_worst_first)

    def grouped(field: str) -> dict[str, dict]:
        groups: dict[str, list[dict]] = {}
        for record in records:
            groups.setdefault(record[field], []).append(record)
        return {name: _merge(groups[name], palette) for name in sorted(groups)}

    return {
        "settings": settings,
        "classes": list(palette.names),
        "overall": _merge(records, palette),
        "by_bag": grouped("bag"),
        "by_camera": grouped("camera"),
        "streams": streams,
        "skipped": sorted(skipped, key=lambda s: (s["bag"], s["camera"])),
    }


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def _metric_cells(m: dict[str, Any]) -> str:
    return (
        f"{_fmt(m['miou'])} | {_fmt(m['fp'], '.4f')} | {_fmt(m['fip'], '.4f')} | {_fmt(m['keyframe_share'], '.1%')} "
        f"| {_fmt(m['ms_per_frame_mean'], '.1f')}"
    )


def _markdown(report: dict[str, Any]) -> str:
    o, s = report["overall"], report["settings"]
    size = s.get("input_size")
    run_at = f"{size[0]}x{size[1]}" if size else "each stream's frame size"
    lines = [
        f"# vseg bag eval: {s.get('model')} ({s.get('weights') or 'random weights'}, {s.get('backend')})",
        "",
        f"{o['streams']} streams of {len(report['by_bag'])} bags, {len(report['by_camera'])} cameras, "
        f"{o['frames_out']} frames ({o['labelled_frames']} labelled); {len(report['skipped'])} streams skipped. "
        f"Keyframe interval {s.get('interval')}, reset gap {s.get('reset_gap_s')} s, model run at {run_at}.",
        "",
        "## Overall",
        "",
        "| mIoU | FP | FIP | keyframes | ms/frame (mean) | frames in | frames out |",
        "|---|---|---|---|---|---|---|",
        f"| {_fmt(o['miou'])} | {_fmt(o['fp'], '.4f')} | {_fmt(o['fip'], '.4f')} | {_fmt(o['keyframe_share'], '.1%')} "
        f"| {_fmt(o['ms_per_frame_mean'], '.1f')} | {o['frames_in']} | {o['frames_out']} |",
        "",
    ]
    if o["iou"]:
        lines += ["## IoU per class", "", "| class | IoU |", "|---|---|"]
        lines += [f"| {name} | {_fmt(v)} |" for name, v in o["iou"].items()]
        lines.append("")
    for title, field in (("Per camera", "by_camera"), ("Per bag", "by_bag")):
        lines += [f"## {title}", "", "| | streams | frames | mIoU | FP | FIP | keyframes | ms/frame |"]
        lines.append("|---|---|---|---|---|---|---|---|")
        for name, m in report[field].items():
            lines.append(f"| {name} | {m['streams']} | {m['frames_out']} | {_metric_cells(m)} |")
        lines.append("")
    lines += ["## Streams, worst first", "", "| bag | camera | frames | mIoU | FP | FIP | keyframes | ms/frame |"]
    lines.append("|---|---|---|---|---|---|---|---|")
    for m in report["streams"]:
        note = f" ({m['labels_note']})" if m["labels_note"] else ""
        lines.append(f"| {m['bag']} | {m['camera']}{note} | {m['frames_out']} | {_metric_cells(m)} |")
    if report["skipped"]:
        lines += ["", "## Skipped", "", "| bag | camera | reason |", "|---|---|---|"]
        lines += [f"| {k['bag']} | {k['camera']} | {k['reason'].replace('|', '/')} |" for k in report["skipped"]]
    return "\n".join(lines) + "\n"


def _plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a cluster node
    import matplotlib.pyplot as plt

    shown = report["streams"][:_PLOT_STREAMS]
    names = [f"{Path(m['bag']).name} / {m['camera']}" for m in shown]
    y = np.arange(len(shown))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 1.5 + 0.28 * max(len(shown), 1)), sharey=True)
    left.barh(y, [m["miou"] or 0.0 for m in shown], color="tab:blue")
    left.set_xlabel("mIoU")
    left.set_xlim(0, 1)
    right.barh(y, [m["fip"] or 0.0 for m in shown], color="tab:orange")
    right.set_xlabel("FIP (flickering pixels)")
    left.set_yticks(y, names, fontsize=7)
    left.invert_yaxis()  # the worst stream on top, as in the tables
    more = len(report["streams"]) - len(shown)
    fig.suptitle(
        f"{report['settings'].get('model')}: streams, worst first" + (f" ({more} more not drawn)" if more else "")
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(report: dict[str, Any], out: Path) -> dict[str, Path]:
    """report.json (for scripts), report.md (a summary) and report.png (mIoU and FIP per stream)."""
    paths = {"json": out / "report.json", "markdown": out / "report.md", "plot": out / "report.png"}
    _write_atomically(paths["json"], json.dumps(report, indent=2))
    _write_atomically(paths["markdown"], _markdown(report))
    _plot(report, paths["plot"])
    return paths


# ---- the run -------------------------------------------------------------------------------------------


def _summary_line(record: dict, palette: ClassPalette, done: int, total: int) -> str:
    m = _merge([record], palette)
    score = f"mIoU {m['miou']:.3f}" if m["miou"] is not None else "no labels"
    return (
        f"[{done}/{total}] {record['bag']} {record['camera']}: {m['frames_out']} frames, {score}, "
        f"FIP {m['fip'] or 0.0:.4f}, {m['ms_per_frame_mean']:.1f} ms/frame (rank {record['rank']})"
    )


class _Announcer:
    """Rank 0's summary line per finished stream, whichever rank finished it: new records in the
    results folder are looked for at most every ``every_s`` seconds."""

    def __init__(
        self,
        out: Path,
        todo: Sequence[Stream],
        palette: ClassPalette,
        print_line: Callable[[str], None],
        every_s: float = 2.0,
    ) -> None:
        self._paths = {s.key: out / "streams" / s.record_name for s in todo}
        self._done: set[str] = set()
        self._palette, self._print, self._every, self._last = palette, print_line, every_s, 0.0

    def record(self, record: dict) -> None:
        if record["stream"] in self._paths and record["stream"] not in self._done:
            self._done.add(record["stream"])
            self._print(_summary_line(record, self._palette, len(self._done), len(self._paths)))

    def poll(self) -> None:
        now = time.monotonic()
        if now - self._last < self._every:
            return
        self._last = now
        for key, path in self._paths.items():
            if key not in self._done and path.exists():
                with contextlib.suppress(OSError, ValueError):  # being replaced this instant: found next time
                    self.record(json.loads(path.read_text(encoding="utf-8")))


def check_request(request: FleetRequest, palette: ClassPalette) -> None:
    """The input errors rank 0 would find (bags, cameras, label sets, results folder), found before
    any worker starts, so that they are reported once."""
    streams, _ = plan_streams(find_bags(request.paths, request.recursive), request.cameras, palette)
    _open_results(request.out, request.settings, streams)


def _rank_device(requested: str, local_rank: int) -> str:
    import torch

    if requested in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{local_rank % torch.cuda.device_count()}"
    return "cpu" if requested == "auto" else requested


def run_fleet_eval(
    request: FleetRequest, model_for: Callable[[Stream], Any], palette: ClassPalette
) -> dict[str, Any] | None:
    """Evaluate every stream of the request on this rank's shard; the report on rank 0, else None.

    model_for: the model to run on a stream (called once per stream, on this rank).
    """
    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    owns_group = world > 1 and not dist.is_initialized()
    if owns_group:
        dist.init_process_group("gloo")  # records and plans only: no tensors cross ranks
    rank = dist.get_rank() if world > 1 else 0
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    device = _rank_device(request.device, local_rank)
    if device == "cpu" and (request.threads or local_world > 1):
        torch.set_num_threads(request.threads or max(1, (os.cpu_count() or 1) // local_world))
    try:
        return _run_rank(request, model_for, palette, world=world, rank=rank, device=device)
    finally:
        if owns_group:
            dist.destroy_process_group()


def _run_rank(
    request: FleetRequest,
    model_for: Callable[[Stream], Any],
    palette: ClassPalette,
    *,
    world: int,
    rank: int,
    device: str,
) -> dict[str, Any] | None:
    import torch.distributed as dist
    from tqdm import tqdm

    # Rank 0 plans and the others take its plan: one view of the bags and of the results folder.
    plan: list[Any] = [None]
    if rank == 0:
        try:
            streams, skipped = plan_streams(find_bags(request.paths, request.recursive), request.cameras, palette)
            finished = _open_results(request.out, request.settings, streams)
            plan[0] = ("ok", streams, skipped, finished)
        except (FleetEvalError, BagError) as exc:
            plan[0] = ("error", str(exc))
    if world > 1:
        dist.broadcast_object_list(plan, src=0)
    if plan[0][0] == "error":
        raise FleetEvalError(plan[0][1])
    _, streams, skipped, finished = plan[0]
    todo = [s for s in streams if s.key not in finished]
    mine = shard_streams(todo, world)[rank]

    bar = tqdm(
        total=sum(s.frames for s in mine), desc=f"rank {rank}", unit="frame", position=rank, mininterval=1.0,
        disable=None if request.progress else True, file=sys.stderr, leave=False,  # None: off when not a terminal
    )  # fmt: skip
    announcer = _Announcer(request.out, todo, palette, bar.write) if rank == 0 else None
    if rank == 0:
        bar.write(
            f"{len(streams)} streams in {len({s.bag for s in streams})} bags, {len(skipped)} skipped, "
            f"{len(finished)} finished before; {len(todo)} to evaluate on {world} process(es)"
        )
        for entry in skipped:
            bar.write(f"skipped {entry['bag']} {entry['camera']}: {entry['reason']}")

    def on_frame() -> None:
        bar.update()
        if announcer:
            announcer.poll()

    records, failed = [], []
    for stream in mine:
        try:
            record = _evaluate_stream(
                stream, model_for=model_for, palette=palette, request=request, device=device, rank=rank,
                on_frame=on_frame,
            )  # fmt: skip
        except StreamFailed as exc:
            failed.append({"bag": stream.bag, "camera": stream.camera.name, "reason": f"failed: {exc}"})
            bar.write(f"failed {stream.bag} {stream.camera.name} (rank {rank}): {exc}")
            continue
        _write_atomically(request.out / "streams" / stream.record_name, json.dumps(record))
        records.append(record)
        if announcer:
            announcer.record(record)
    bar.close()

    gathered: list[Any] = [None] * world if rank == 0 else []
    if world > 1:
        try:
            dist.gather_object((records, failed), gathered if rank == 0 else None, dst=0)
        except RuntimeError:  # gloo: a peer closed the connection (it failed, and said why)
            raise PeerLostError(
                f"rank {rank}: another rank stopped before the results were gathered; this rank's {len(records)} "
                f"finished streams are recorded in {request.out}"
            ) from None
    else:
        gathered = [(records, failed)]
    if rank != 0:
        return None
    by_key = dict(finished)
    names = {s.key: s.record_name for s in todo}
    not_evaluated = list(skipped)
    for rank_records, rank_failed in gathered:
        not_evaluated.extend(rank_failed)
        for record in rank_records:
            by_key[record["stream"]] = record
            announcer.record(record)
            # Written again by rank 0: a results folder that was not shared across nodes still ends whole.
            path = request.out / "streams" / names[record["stream"]]
            if not path.exists():
                _write_atomically(path, json.dumps(record))
    failed_keys = {f"{f['bag']}#{f['camera']}" for f in not_evaluated}
    missing = [s.key for s in streams if s.key not in by_key and s.key not in failed_keys]
    if missing:
        raise RuntimeError(f"{len(missing)} streams have no result after the run, e.g. {missing[0]}")
    report = build_report([by_key[s.key] for s in streams if s.key in by_key], not_evaluated, palette, request.settings)
    report["files"] = {k: str(v) for k, v in write_report(report, request.out).items()}
    return report


def file_digest(path: str | Path) -> str:
    """sha256 of a file (weights, an export), so that a results folder is reused only for the same one."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
