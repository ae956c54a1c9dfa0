"""The `vseg` command: the core subcommands plus those that need ROS (`bag ...`, `node-bench`,
`node-fuzz`, `demo`).

ROS modules are imported only inside the ROS subcommands, so `vseg models` and `vseg bench` work
where rclpy is not installed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from vseg_core.cli import CliError, build_parser, parse_input_size, run

__all__ = ["main"]

PEER_LOST_EXIT = 3  # a `bag eval` rank whose peers stopped before the results were gathered
PEER_LOST_GRACE_S = 10.0


def _bag_play(args: argparse.Namespace) -> int:
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from rclpy.signals import SignalHandlerOptions

    from vseg_ros.bag_play import PlayConfig, play_bag
    from vseg_ros.bags import BagError
    from vseg_ros.ros_process import ignore_stop_signals, install_stop_handlers

    try:
        config = PlayConfig(
            rate=args.rate, loop=args.loop, topics=tuple(args.topics), wait_for_subscribers_s=args.wait_for_subscribers,
            clock_hz=args.clock,
        )  # fmt: skip
    except ValueError as exc:
        raise CliError(str(exc)) from None
    stop = install_stop_handlers()
    # The ROS arguments (launch_ros's `-r __node:=NAME`, remaps, parameters) go to rcl, which applies
    # them to this node.
    rclpy.init(args=[sys.argv[0], *args.ros_args], signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("vseg_bag_play")
    try:
        count = play_bag(args.bag, config, node, stop)
    except BagError as exc:
        raise CliError(str(exc)) from None
    except ExternalShutdownException:
        return 0
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        ignore_stop_signals()
    if not stop.is_set():
        print(f"published {count} messages from {args.bag}")
    return 0


def _bag_make(args: argparse.Namespace) -> int:
    from vseg_core.data.layout import DatasetLayoutError
    from vseg_core.evaluate import evaluation_sequences
    from vseg_ros.bag_tools import write_sequences_bag
    from vseg_ros.bags import BagError

    try:
        sequences, palette = evaluation_sequences(
            args.dataset, root=args.root, split=args.split, sequences=args.sequences, frames=args.frames,
            height=args.height, width=args.width,
        )  # fmt: skip
        # Frame rates: synthetic renders at 15 Hz; CamVid frame numbers count a 30 fps video, and the
        # labelled frames are every 2nd (val) or 30th (train) of it; Cityscapes records 17 Hz.
        if args.dataset == "synthetic":
            fps = [15.0] * len(sequences)
        elif args.dataset == "cityscapes":
            fps = [17.0] * len(sequences)  # Cityscapes sequences are recorded at 17 Hz
        else:
            fps = [15.0 if args.split == "val" else 1.0] * len(sequences)
        count = write_sequences_bag(
            sequences, fps, args.output, image_topic=args.image_topic,
            label_topic=args.label_topic or None, storage=args.storage, compressed=args.compressed,
            label_classes=palette.names if palette else None,
        )  # fmt: skip
    except (ValueError, BagError, DatasetLayoutError) as exc:
        raise CliError(str(exc)) from None
    print(f"wrote {count} frames of {len(sequences)} sequences to {args.output}")
    return 0


def _eval_models(args: argparse.Namespace, exports: str, *, warn: bool = True) -> tuple[Callable[[str, str], Any], Any]:
    """(model_for(bag, image_topic), palette) as --model, --weights, --backend and --onnx-model ask.

    onnxruntime without --onnx-model: the weights exported (into ``exports``) at the size of the
    bag's frames, once per size. Random weights are drawn from one seed, so every process of a run
    (and a resumed run) evaluates the same network. warn: print the random-weights warning.
    """
    from pathlib import Path

    import torch

    from vseg_core.checkpoint import load_checkpoint
    from vseg_core.data import dataset_palette
    from vseg_core.export import ExportConfig, export_model
    from vseg_core.models.registry import create_model
    from vseg_core.pretrained import checkpoint_path
    from vseg_core.runtime_onnx import OnnxSegmenter, resolve_providers
    from vseg_ros.bag_tools import first_frame_size

    if args.onnx_model and args.backend != "onnxruntime":
        raise CliError("--onnx-model is an export for --backend onnxruntime")
    if args.providers and args.backend != "onnxruntime":
        raise CliError("--providers are onnxruntime's: add --backend onnxruntime")
    providers = args.providers.split(",") if args.providers else None
    palette = dataset_palette(args.classes)
    if args.onnx_model:
        onnx = OnnxSegmenter(args.onnx_model, providers=providers)
        if onnx.model_name != args.model:
            raise CliError(f"--onnx-model {args.onnx_model} is an export of {onnx.model_name!r}, not {args.model!r}")
        return (lambda bag, topic: onnx), onnx.palette or palette
    if args.weights:
        model = load_checkpoint(checkpoint_path(args.weights), expect_model=args.model)
        palette = model.checkpoint_record.palette or palette
    else:
        torch.manual_seed(0)
        model = create_model(args.model, num_classes=palette.num_classes)
        if warn:
            print(
                f"vseg bag eval: WARNING: {args.model} has RANDOM weights; its accuracy means nothing", file=sys.stderr
            )
    model.eval()
    if args.backend != "onnxruntime":
        return (lambda bag, topic: model), palette
    resolve_providers(providers)  # before any export: a missing provider fails at once
    exported: dict[tuple[int, int], OnnxSegmenter] = {}

    def export_for(bag: str, topic: str) -> OnnxSegmenter:
        height, width = args.input_size or first_frame_size(bag, topic)
        if (height, width) not in exported:
            folder = Path(exports) / f"{height}x{width}"
            folder.mkdir(parents=True, exist_ok=True)
            sidecar = export_model(model, folder, ExportConfig(height=height, width=width), palette=palette)
            exported[(height, width)] = OnnxSegmenter(sidecar, providers=providers)
        return exported[(height, width)]

    return export_for, palette


def _fleet_mode(args: argparse.Namespace) -> bool:
    """Many streams, a folder of bags or several ranks: the fleet path, rather than one bag's report."""
    import os
    from pathlib import Path

    from vseg_ros.fleet_eval import is_bag

    return (
        len(args.bags) > 1 or args.recursive or bool(args.cameras) or args.workers > 1
        or len(args.image_topic or []) > 1 or int(os.environ.get("WORLD_SIZE", "1")) > 1
        or (Path(args.bags[0]).is_dir() and not is_bag(Path(args.bags[0])))
    )  # fmt: skip


def _bag_eval(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    from vseg_core.checkpoint import CheckpointError
    from vseg_core.keyframes import FixedInterval
    from vseg_ros.bag_tools import evaluate_bag
    from vseg_ros.bags import BagError

    if args.workers < 1 or args.threads < 0:
        raise CliError(f"--workers must be at least 1 and --threads at least 0, got {args.workers} and {args.threads}")
    if _fleet_mode(args):
        return _bag_eval_fleet(args)
    if not args.image_topic:
        raise CliError("give the image topic: --image-topic TOPIC")
    if len(args.label_topic or []) > 1:
        raise CliError("one bag and camera take one --label-topic")
    try:
        with tempfile.TemporaryDirectory(prefix="vseg-bag-eval-") as exports:
            model_for, palette = _eval_models(args, exports)
            result = evaluate_bag(
                args.bags[0], model_for(args.bags[0], args.image_topic[0]), palette, image_topic=args.image_topic[0],
                label_topic=(args.label_topic or [None])[0], device=args.device,
                keyframe_policy=FixedInterval(args.interval), reset_gap_s=args.reset_gap,
                input_size=args.input_size, write=args.write,
            )  # fmt: skip
    except (ValueError, BagError, CheckpointError) as exc:  # ExportError is a ValueError
        raise CliError(str(exc)) from None
    report = result.report
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "bag_eval.json").write_text(json.dumps(report, indent=2))
    if args.json:
        print(json.dumps(report))
        return 0
    fp = f"{report['fp']:.4f}" if report["fp"] is not None else "-"
    print(
        f"{args.bags[0]}: {report['frames']} frames ({report['labelled_frames']} labelled) in "
        f"{len(report['sequences'])} sequences; mIoU {report['miou']:.3f}, FP {fp}, FIP {report['fip']:.4f}, "
        f"{report['ms_per_frame']:.1f} ms/frame, keyframes {report['keyframe_share']:.1%}"
    )
    if result.labels_without_image:
        print(f"warning: {result.labels_without_image} label images matched no image (by stamp)")
    return 0


def _fleet_request(args: argparse.Namespace, palette: Any) -> Any:
    from pathlib import Path

    from vseg_core.pretrained import checkpoint_path
    from vseg_ros.fleet_eval import FleetRequest, cameras_from_topics, file_digest, load_cameras

    if not args.out:
        raise CliError(
            "several streams need --out DIR: the results folder that holds the report and makes the run resumable"
        )
    if args.cameras and (args.image_topic or args.label_topic):
        raise CliError("give the cameras either with --cameras FILE or with --image-topic/--label-topic, not both")
    cameras = (
        load_cameras(args.cameras)
        if args.cameras
        else cameras_from_topics(args.image_topic or [], args.label_topic or [])
    )
    weights = None
    if args.weights:
        weights = file_digest(checkpoint_path(args.weights))
    elif args.onnx_model:
        weights = "".join(file_digest(f) for f in sorted(Path(args.onnx_model).glob("*.onnx")))
    settings = {
        "model": args.model, "weights": args.weights or args.onnx_model, "weights_sha256": weights,
        "backend": args.backend, "classes": list(palette.names), "interval": args.interval,
        "reset_gap_s": args.reset_gap, "input_size": list(args.input_size) if args.input_size else None,
    }  # fmt: skip
    return FleetRequest(
        paths=tuple(args.bags), cameras=cameras, out=Path(args.out), settings=settings, recursive=args.recursive,
        interval=args.interval, reset_gap_s=args.reset_gap, input_size=args.input_size, device=args.device,
        threads=args.threads, write=Path(args.write) if args.write else None,
    )  # fmt: skip


def _bag_eval_fleet(args: argparse.Namespace) -> int:
    """Many streams in this process: alone, or as one rank of torchrun (or of --workers)."""
    import os
    import tempfile

    from vseg_core.checkpoint import CheckpointError
    from vseg_ros.bags import BagError
    from vseg_ros.fleet_eval import PeerLostError, run_fleet_eval

    if args.json:
        raise CliError("--json prints one bag's report; several streams write OUT/report.json")
    if args.workers > 1 and "WORLD_SIZE" not in os.environ:
        return _launch_workers(args)
    try:
        with tempfile.TemporaryDirectory(prefix="vseg-bag-eval-") as exports:
            # One warning per run: from rank 0, or from this process when it runs alone.
            model_for, palette = _eval_models(args, exports, warn=os.environ.get("RANK", "0") == "0")
            request = _fleet_request(args, palette)
            report = run_fleet_eval(request, lambda stream: model_for(stream.bag, stream.camera.image_topic), palette)
    except PeerLostError as exc:  # not the cause: the rank that failed said why
        print(f"vseg {args.command}: {exc}", file=sys.stderr)
        # The agent (torchrun's, or --workers') stops every rank once it sees the one that failed:
        # waiting for that keeps this rank from being taken for the cause.
        time.sleep(PEER_LOST_GRACE_S)
        return PEER_LOST_EXIT
    except (ValueError, BagError, CheckpointError) as exc:  # FleetEvalError and ExportError are ValueErrors
        raise CliError(str(exc)) from None
    if report is None:  # not rank 0
        return 0
    o = report["overall"]
    miou = f"{o['miou']:.3f}" if o["miou"] is not None else "-"
    fip = f"{o['fip']:.4f}" if o["fip"] is not None else "-"
    print(
        f"{o['streams']} streams ({len(report['skipped'])} skipped), {o['frames_out']} frames "
        f"({o['labelled_frames']} labelled): mIoU {miou}, FIP {fip}; report in {report['files']['markdown']}"
    )
    return 0


def _eval_palette(args: argparse.Namespace) -> Any:
    """The palette of --weights, --onnx-model or --classes, from their records only (no tensors)."""
    from vseg_core.checkpoint import read_checkpoint_record
    from vseg_core.data import dataset_palette
    from vseg_core.pretrained import checkpoint_path
    from vseg_core.runtime_onnx import read_export_record

    palette = dataset_palette(args.classes)
    if args.onnx_model:
        name, recorded = read_export_record(args.onnx_model)
        if name != args.model:
            raise CliError(f"--onnx-model {args.onnx_model} is an export of {name!r}, not {args.model!r}")
        return recorded or palette
    if args.weights:
        return read_checkpoint_record(checkpoint_path(args.weights)).palette or palette
    return palette


def _launch_workers(args: argparse.Namespace) -> int:
    """--workers N: N ranks on this machine, started by torch's elastic agent (what torchrun runs,
    with a standalone rendezvous). The ranks are forked from this process after its imports, so
    they start at once; for that this process checks the input but builds no model and touches no
    GPU (a forked process cannot use a CUDA context of its parent)."""
    import logging
    import uuid

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    from vseg_core.checkpoint import CheckpointError
    from vseg_ros.bags import BagError
    from vseg_ros.fleet_eval import check_request

    try:
        palette = _eval_palette(args)
        check_request(_fleet_request(args, palette), palette)  # bad input: one line here, not one per rank
    except (ValueError, BagError, CheckpointError) as exc:
        raise CliError(str(exc)) from None
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # failures are reported below
    config = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=args.workers, run_id=uuid.uuid4().hex, rdzv_backend="c10d",
        rdzv_endpoint="localhost:0", max_restarts=0, start_method="fork", monitor_interval=0.1,
    )  # fmt: skip
    sys.stdout.flush()
    sys.stderr.flush()  # or the ranks would inherit, and print again, what is buffered here
    try:
        elastic_launch(config, _worker)(args)
    except ChildFailedError as exc:
        # The cause: a rank that failed on its own (not one that lost its peers, nor one stopped for it).
        causes = [(r, f) for r, f in sorted(exc.failures.items()) if f.exitcode > 0 and f.exitcode != PEER_LOST_EXIT]
        rank, first = causes[0] if causes else exc.get_first_failure()
        raise CliError(
            f"rank {rank} failed (exit {first.exitcode}; its error is above); the finished streams are recorded in "
            f"{args.out}: the same command continues the run"
        ) from None
    except SignalException as exc:
        print(f"vseg bag eval: stopped by {exc.sigval.name}; the same command continues the run", file=sys.stderr)
        return 128 + int(exc.sigval)
    return 0


def _worker(args: argparse.Namespace) -> None:
    """One rank of --workers: exits with the status `vseg bag eval` would."""
    try:
        status = _bag_eval_fleet(args)
    except CliError as exc:
        print(f"vseg {args.command}: {exc}", file=sys.stderr)
        status = 2
    sys.stdout.flush()
    if status:
        sys.exit(status)


def _node_bench(args: argparse.Namespace) -> int:
    if args.soak is not None:
        return _node_soak(args)
    from vseg_ros.node_bench import measure_node_overhead

    try:
        result = measure_node_overhead(
            args.model, weights=args.weights, height=args.height, width=args.width, frames=args.frames,
            device=args.device, backend=args.backend,
        )  # fmt: skip
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print(json.dumps(result.as_dict()))
        return 0
    print(
        f"{result.model} [{result.backend}] at {result.width}x{result.height} ({result.frames} frames, medians): "
        f"node frame path "
        f"{result.node_ms:.1f} ms, VideoSegmenter.step {result.step_ms:.1f} ms, node overhead "
        f"{result.overhead_ms:.1f} ms = {result.overhead_ratio:.1%} of the step; latency stamp->info "
        f"p50 {result.latency_p50_ms:.1f} ms, p95 {result.latency_p95_ms:.1f} ms"
    )
    return 0


def _bag_eval_bench(args: argparse.Namespace) -> int:
    from vseg_ros.fleet_bench import measure_fleet_scaling

    try:
        result = measure_fleet_scaling(
            bags=args.bags, frames=args.frames, workers=args.workers, model=args.model, weights=args.weights,
            height=args.height, width=args.width, threads=args.threads, repeat=args.repeat,
        )  # fmt: skip
    except (ValueError, RuntimeError) as exc:
        raise CliError(str(exc)) from None
    n, t = result.workers, result.threads
    print(
        f"{result.bags} bags, {result.frames} frames of {args.height}x{args.width}, {args.model} (best of "
        f"{args.repeat}): 1 process {result.one_s:.1f} s, {n} processes {result.many_s:.1f} s ({t} thread(s) each): "
        f"{result.speedup:.2f}x; 1 process on torch's default threads {result.all_cores_s:.1f} s: "
        f"{result.speedup_over_all_cores:.2f}x; merged metrics {'identical' if result.identical else 'DIFFERENT'}"
    )
    return 0 if result.identical else 1


def _node_soak(args: argparse.Namespace) -> int:
    from vseg_ros.node_soak import SoakConfig, run_soak

    try:
        config = SoakConfig(
            seconds=args.soak, rate_hz=args.rate, height=args.height, width=args.width, model=args.model,
            weights=args.weights, device=args.device, backend=args.backend,
        )  # fmt: skip
        report = run_soak(config)
    except (ValueError, RuntimeError) as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print(json.dumps(report.as_dict()))
        return 0
    r = report
    print(
        f"{args.model} {r.runs} at {args.width}x{args.height}, {r.rate_hz:g} Hz for {r.seconds:g} s: "
        f"sent {r.frames_sent}, received {r.frames_received}, processed {r.frames_processed}, "
        f"dropped {r.frames_dropped}, rejected {r.frames_rejected}; "
        f"latency p50 {r.latency_p50_ms:.1f} ms, p95 {r.latency_p95_ms:.1f} ms; "
        f"RSS {r.rss_first_mb:.0f} MB at {r.rss_first_at_s:g} s, {r.rss_end_mb:.0f} MB at the end; "
        f"exit status {r.exit_status}"
    )
    return 0


def _node_fuzz(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from vseg_ros.node_fuzz import FuzzConfig, run_fuzz

    try:
        config = FuzzConfig(
            per_kind=args.per_kind, good_every=args.good_every, model=args.model, weights=args.weights,
            device=args.device, seed=args.seed, rss_growth_mb=args.rss_growth_mb, transports=tuple(args.transports),
        )  # fmt: skip
    except ValueError as exc:
        raise CliError(str(exc)) from None
    reports = run_fuzz(config)
    if args.json:
        print(json.dumps([{**asdict(r), "ok": r.ok} for r in reports]))
    else:
        for r in reports:
            malformed = sum(r.sent.values())
            print(
                f"{r.transport}: {malformed} malformed ({len(r.sent)} kinds) and {r.good_sent} valid frames in "
                f"{r.seconds:.1f} s; answered {r.good_answered}/{r.good_sent} valid, refused "
                f"{sum(r.refused.values())}/{malformed} malformed under the expected reason; received "
                f"{r.received} = processed {r.processed} + rejected {r.rejected} + dropped {r.dropped}; RSS "
                f"{r.rss_start_mb:.0f} -> {r.rss_end_mb:.0f} MB; exit status {r.exit_status}"
                + (f"; node started {r.node_starts} times (DDS had not matched it)" if r.node_starts > 1 else "")
            )
            for problem in r.problems:
                print(f"  PROBLEM: {problem}")
    return 0 if all(r.ok for r in reports) else 1


def _demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from vseg_ros.demo import DemoConfig, DemoError, run_demo

    try:
        config = DemoConfig(
            models=tuple(args.models), weights_dir=Path(args.weights_dir) if args.weights_dir else None,
            bag=Path(args.bag) if args.bag else None, image_topic=args.image_topic, label_topic=args.label_topic,
            video=Path(args.video) if args.video else None, frames=args.frames, height=args.height,
            width=args.width, out=Path(args.out), device=args.device, rate_hz=args.rate, timeout_s=args.timeout,
            backend=args.backend,
        )  # fmt: skip
        result = run_demo(config, echo=lambda line: print(line, flush=True))
    except DemoError as exc:
        raise CliError(str(exc)) from None
    except KeyboardInterrupt:
        print("vseg demo: interrupted", file=sys.stderr)
        return 130
    print(result.table)
    for note in result.notes:
        print(f"note: {note}")
    for path in result.files.values():
        print(f"wrote {path}")
    return 0


def build_ros_parser() -> argparse.ArgumentParser:
    parser, commands = build_parser()
    bag = commands.add_parser("bag", help="rosbag2 tools that need no ROS install")
    bag_commands = bag.add_subparsers(dest="bag_command", required=True, metavar="BAG_COMMAND")
    p = bag_commands.add_parser("play", help="publish a bag's topics through rclpy at the recorded rate")
    p.add_argument("bag", help="rosbag2 directory (mcap or sqlite3)")
    p.add_argument("--rate", type=float, default=1.0, help="speed factor (default 1.0)")
    p.add_argument("--loop", action="store_true", help="start over at the end until interrupted")
    p.add_argument("--topics", nargs="*", default=[], help="only these topics")
    p.add_argument(
        "--wait-for-subscribers", type=float, default=0.0, metavar="S", help="wait up to S s for subscribers first"
    )
    p.add_argument(
        "--clock", type=float, nargs="?", const=40.0, default=0.0, metavar="HZ",
        help="publish the bag's time on /clock (rosgraph_msgs/Clock) at HZ (default 40 when given), for use_sim_time",
    )  # fmt: skip
    p.set_defaults(handler=_bag_play)

    p = bag_commands.add_parser("make", help="write a dataset's sequences into a rosbag2")
    p.add_argument("--dataset", default="synthetic", choices=("synthetic", "camvid", "cityscapes"))
    p.add_argument("--root", help="dataset folder (camvid)")
    p.add_argument("--split", default="val")
    p.add_argument("--sequences", type=int, default=3, help="synthetic: scenes; cityscapes: snippets")
    p.add_argument("--frames", type=int, default=30, help="synthetic: frames per scene")
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--image-topic", default="/camera/image_raw")
    p.add_argument("--label-topic", default="/camera/labels", help="ground truth (mono8); empty: none")
    p.add_argument("--storage", default="mcap", choices=("mcap", "sqlite3"))
    p.add_argument("--compressed", action="store_true", help="CompressedImage (jpeg) instead of Image")
    p.add_argument("-o", "--output", required=True, help="new bag directory")
    p.set_defaults(handler=_bag_make)

    p = bag_commands.add_parser(
        "eval", help="segment every frame of bags (one, or many over torch.distributed) and score them",
        description="One bag and --image-topic: its report, as the node would run it. Several bags, folders of bags, "
        "several cameras or --workers: every (bag, camera) stream, sharded over torchrun ranks, one merged report in "
        "--out (resumable: the same command skips finished streams).",
    )  # fmt: skip
    p.add_argument("bags", nargs="+", metavar="BAG_OR_FOLDER", help="rosbag2 folders, or folders of them")
    p.add_argument("--recursive", action="store_true", help="find bags in the folders' subfolders too")
    p.add_argument("--image-topic", action="append", metavar="TOPIC", help="a camera's images (repeat per camera)")
    p.add_argument(
        "--label-topic", action="append", metavar="TOPIC",
        help="ground-truth labels (mono8) matched by stamp; one per --image-topic, in the same order",
    )  # fmt: skip
    p.add_argument("--cameras", metavar="FILE", help="YAML: cameras: {NAME: {image: TOPIC, labels: TOPIC}}")
    p.add_argument("--model", required=True, help="registered model name")
    p.add_argument("--weights", help="checkpoint; without it random weights, loudly warned")
    p.add_argument("--classes", default="synthetic", help="label set without a checkpoint: synthetic or camvid")
    p.add_argument("--interval", type=int, default=5, help="keyframe interval")
    p.add_argument("--reset-gap", type=float, default=1.0, help="reset on stamp jumps beyond this (s)")
    p.add_argument(
        "--input-size", type=parse_input_size, metavar="HxW",
        help="run the model at HEIGHTxWIDTH, as the node's input_height/input_width: frames resized to it, labels "
        "scored at the frame's size (default: the frame's own size; onnxruntime exports at this size)",
    )  # fmt: skip
    p.add_argument(
        "--device", default="auto", help="backend torch: auto | cpu | cuda | cuda:N (ranks: cuda:LOCAL_RANK)"
    )
    p.add_argument(
        "--backend", choices=("torch", "onnxruntime"), default="torch",
        help="onnxruntime: run --onnx-model, or the weights exported at --input-size or the size of the bag's frames",
    )  # fmt: skip
    p.add_argument("--onnx-model", metavar="DIR", help="an export (`vseg export`) of --model for --backend onnxruntime")
    p.add_argument("--providers", metavar="P[,P...]", help="onnxruntime execution providers (default cpu)")
    p.add_argument(
        "--write", help="one bag: a new bag with the input plus /vseg/labels, /vseg/color, /vseg/info; "
        "several: a folder with one such bag per stream",
    )  # fmt: skip
    p.add_argument("--out", help="one bag: folder for bag_eval.json; several: the results folder (records, report)")
    p.add_argument("--workers", type=int, default=1, help="processes on this machine (torchrun --standalone)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads per process (default: cores / processes)")
    p.add_argument("--json", action="store_true", help="one bag: print the report as JSON")
    p.set_defaults(handler=_bag_eval)

    p = bag_commands.add_parser(
        "eval-bench", help="time `bag eval` of synthetic bags in 1 and in N processes, and compare their metrics"
    )
    p.add_argument("--bags", type=int, default=8)
    p.add_argument("--frames", type=int, default=100, help="per bag")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--model", default="icnet")
    p.add_argument("--weights", help="checkpoint (default: random weights)")
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--threads", type=int, default=1, help="per process in the 1- and N-process runs")
    p.add_argument("--repeat", type=int, default=1, help="runs of each, alternating; the best time counts")
    p.set_defaults(handler=_bag_eval_bench)

    p = commands.add_parser("node-bench", help="time the node's own work per frame against the core step")
    p.add_argument("model", help="registered model name")
    p.add_argument("--weights", default="", help="checkpoint (default: random weights)")
    p.add_argument("--height", type=int, default=720)
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--frames", type=int, default=10)
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--backend", choices=("torch", "onnxruntime"), default="torch",
        help="onnxruntime: the node exports the model at the frame size on start-up (default torch)",
    )  # fmt: skip
    p.add_argument(
        "--soak", type=float, metavar="SECONDS",
        help="instead: the node in its own process under a camera at --rate for this long (memory, latency, drops)",
    )  # fmt: skip
    p.add_argument("--rate", type=float, default=30.0, help="--soak: camera frame rate (default 30 Hz)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_node_bench)

    p = commands.add_parser(
        "node-fuzz", help="malformed images of every kind into the real node: alive, answers, counts, memory"
    )
    p.add_argument("--per-kind", type=int, default=20, help="malformed messages of each kind (default 20)")
    p.add_argument("--good-every", type=int, default=50, help="a valid frame after this many (default 50)")
    p.add_argument("--model", default="", help="registered model (default: the one the weights hold)")
    p.add_argument("--weights", default="", help="checkpoint or shipped name (default: the node's default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rss-growth-mb", type=float, default=100.0, help="bound on the node's memory growth")
    p.add_argument("--transports", nargs="+", choices=("raw", "compressed"), default=["raw", "compressed"])
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_node_fuzz)

    p = commands.add_parser(
        "demo", help="each model in the real segmentation_node on a video of its data: table and pictures"
    )
    p.add_argument(
        "--models", nargs="+", default=[], metavar="M",
        help="shipped checkpoint names or .safetensors paths (default: every shipped checkpoint); each runs on the "
        "demo video of the data it was trained on (synthetic or the shipped CamVid clip) unless --bag or --video",
    )  # fmt: skip
    p.add_argument(
        "--weights-dir", help="look names up here (NAME.safetensors + NAME.json), not in the shipped weights"
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--bag", help="take every model's frames from this rosbag2 (default: the synthetic video and the CamVid clip)"
    )
    source.add_argument("--video", help="take the frames from this video file")
    p.add_argument("--image-topic", help="--bag: the image topic (default: the bag's only one)")
    p.add_argument("--label-topic", help="--bag: ground-truth labels (mono8), matched by stamp")
    p.add_argument(
        "--frames", type=int, default=150,
        help="how many frames (the first ones of a bag or video; the CamVid clip has 60; default 150)",
    )  # fmt: skip
    p.add_argument("--height", type=int, default=128, help="synthetic video height (default 128)")
    p.add_argument("--width", type=int, default=256, help="synthetic video width (default 256)")
    p.add_argument(
        "--rate", type=float, default=0.0, metavar="HZ",
        help="publish at this rate; the node drops what it cannot follow (default 0: each frame waits for its result)",
    )  # fmt: skip
    p.add_argument("--timeout", type=float, default=60.0, metavar="S", help="longest wait for one frame's result")
    p.add_argument("--out", default="demo_output", help="output folder (default demo_output)")
    p.add_argument(
        "--backend", choices=("torch", "onnxruntime"), default="torch",
        help="the nodes' backend (onnxruntime: each node exports its weights at its stream's frame size)",
    )  # fmt: skip
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.set_defaults(handler=_demo)
    return parser


# Subcommands that run a ROS node of their own in this process: only they can apply ROS arguments.
_TAKES_ROS_ARGS = frozenset({("bag", "play")})


def main(argv: Sequence[str] | None = None) -> int:
    """``vseg ...``; a ``--ros-args`` tail (as launch_ros appends it) goes to the subcommand's node."""
    from vseg_ros.ros_process import split_ros_args

    own, ros_args = split_ros_args(sys.argv[1:] if argv is None else argv)
    parser = build_ros_parser()
    parser.set_defaults(ros_args=tuple(ros_args))
    if ros_args:
        args, _ = parser.parse_known_args(own)
        if (args.command, getattr(args, "bag_command", None)) not in _TAKES_ROS_ARGS:
            print(f"vseg {args.command}: runs no ROS node of its own, ignoring {' '.join(ros_args)}", file=sys.stderr)
    return run(parser, own)


if __name__ == "__main__":
    sys.exit(main())
