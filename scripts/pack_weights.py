"""Copy finished training runs into vseg_core/weights/ as the package's shipped checkpoints.

    python scripts/pack_weights.py RUNS_DIR NAME[=RUN] [NAME[=RUN] ...]

Each NAME is a run folder of ``scripts/train_weights.sh`` (``RUNS_DIR/NAME/checkpoint.*``), or NAME=RUN
ships the run folder RUN under the name NAME (an ablation's run that won), and becomes
``vseg_core/weights/NAME.safetensors`` + ``.json``. Floating-point tensors are stored in float16
(``load_checkpoint`` casts them back into the model's float32 parameters), which halves the files so
that every family fits the package's size budget; the JSON record is rewritten only to drop the paths
of the machine that trained it (output folder, dataset root, --init files become run names), so the
provenance says what trained the weights, not where. The packed file is loaded and its outputs
compared with the run's own weights before it counts as shipped.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from vseg_core.checkpoint import load_checkpoint
from vseg_core.pretrained import WEIGHTS_DIR

# The shipped set's limits (issue 14): each packed file under 25 MB, all of them under 120 MB.
MAX_FILE_BYTES = 25 << 20
MAX_TOTAL_BYTES = 120 << 20
FP16_MAX = 65504.0


def init_name(path: str) -> str:
    """What an --init checkpoint is called when shipped: its run folder's name, or the shipped name of a
    checkpoint that was itself shipped (``vseg_core/weights/camvid_icnet_lite2.safetensors``)."""
    checkpoint = Path(path)
    return checkpoint.stem if checkpoint.resolve().parent == WEIGHTS_DIR.resolve() else checkpoint.parent.name


def scrub_metadata(metadata: dict, name: str) -> dict:
    """Training ``metadata`` with the training machine's paths replaced by names that mean the same
    thing, and the provenance of each --init checkpoint that is still at hand nested under
    ``initialised_from`` (so weights trained in two runs say what both runs did)."""
    train = dict(metadata.get("train_config", {}))
    train["out_dir"] = name
    if train.get("root"):
        train["root"] = f"{train['dataset']} root"
    # "--init reference=/x/camvid_deeplab101/checkpoint.safetensors" -> "reference=camvid_deeplab101"
    # and "--init base=.../vseg_core/weights/camvid_icnet_lite2.safetensors" -> "base=camvid_icnet_lite2"
    inits, earlier = [], dict(metadata.get("initialised_from", {}))
    for spec in train.get("init", []):
        part, _, path = spec.rpartition("=")
        run = init_name(path)
        inits.append(f"{part}={run}" if part else run)
        record = Path(path).with_suffix(".json")
        if record.is_file():
            earlier[inits[-1]] = scrub_metadata(json.loads(record.read_text())["metadata"], run)
    train["init"] = inits
    scrubbed = dict(metadata, train_config=train)
    if earlier:
        scrubbed["initialised_from"] = earlier
    return scrubbed


def scrub(record: dict, name: str) -> dict:
    """``record`` as shipped: metadata scrubbed (see :func:`scrub_metadata`), storage noted."""
    return dict(record, metadata=dict(scrub_metadata(record["metadata"], name), stored_dtype="float16"))


def to_float16(source: Path, target: Path) -> None:
    """``source``'s tensors with floating ones in float16; refuses values float16 cannot hold."""
    tensors = load_file(str(source))
    for key, value in tensors.items():
        if value.is_floating_point():
            if value.abs().max() > FP16_MAX:
                raise SystemExit(f"{source}: {key} holds values beyond float16's range")
            tensors[key] = value.half()
    with safe_open(str(source), "pt") as f:
        header_metadata = f.metadata()
    save_file(tensors, str(target), metadata=header_metadata)


def agreement(a: torch.nn.Module, b: torch.nn.Module, size: tuple[int, int] = (128, 256)) -> float:
    """Share of pixels where two models' argmax labels agree on a seeded random 3-frame clip
    (keyframe and warped frames alike)."""
    clip = torch.rand(1, 3, 3, *size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        la, lb = (m.eval().forward_clip(clip, output_frames=(0, 1, 2)).argmax(2) for m in (a, b))
    return (la == lb).float().mean().item()


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    runs, names = Path(argv[0]), argv[1:]
    WEIGHTS_DIR.mkdir(exist_ok=True)
    for item in names:
        name, _, run = item.partition("=")
        weights = runs / (run or name) / "checkpoint.safetensors"
        record = json.loads(weights.with_suffix(".json").read_text())
        original = load_checkpoint(weights)  # refuses a truncated or foreign file before it is shipped
        target = WEIGHTS_DIR / f"{name}.safetensors"
        to_float16(weights, target)
        if target.stat().st_size > MAX_FILE_BYTES:
            size = target.stat().st_size
            target.unlink()
            raise SystemExit(f"{weights}: {size} bytes in float16, over the {MAX_FILE_BYTES} shipped limit")
        text = json.dumps(scrub(record, name), indent=2, sort_keys=True)
        target.with_suffix(".json").write_text(text + "\n")
        agree = agreement(original, load_checkpoint(target))
        print(
            f"{name}: {record['model']} {record['config']}, {target.stat().st_size / 1e6:.1f} MB, "
            f"labels agree with float32 on {agree:.2%} of pixels"
        )
    total = sum(p.stat().st_size for p in WEIGHTS_DIR.iterdir())
    print(f"{WEIGHTS_DIR}: {total / 1e6:.1f} MB in all")
    if total > MAX_TOTAL_BYTES:
        limit = MAX_TOTAL_BYTES / 1e6
        print(f"over the {limit:.1f} MB the shipped set may take: remove what these replace", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
