"""Losses for rare classes: median frequency weights, weighted CE, OHEM, and their training runs.

Each is checked against a hand computation or torch's own implementation; plain "ce" against a copy
of the loss as it was before the options existed. Runs are tiny (32x64 synthetic frames) on the CPU.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vseg_core import load_checkpoint
from vseg_core.checkpoint import read_checkpoint_record
from vseg_core.cli import build_parser, main
from vseg_core.data import SYNTHETIC, SyntheticVideoConfig, create_dataset, dataset_palette
from vseg_core.losses import LOSSES, median_frequency_weights, ohem_keep
from vseg_core.train import CLIP_SOURCES, TrainConfig, _class_weights, clip_loss, train

TINY = {
    "dataset": "synthetic", "height": 32, "width": 64, "num_clips": 2, "clip_length": 2, "batch_size": 2,
    "steps": 3, "warmup_steps": 0, "val_split": None, "progress": False, "log_every": 1, "device": "cpu",
    "amp": False,  # fp32: losses are compared with fp32 computations (a bf16 CPU would autocast)
}  # fmt: skip


def tiny(out_dir: Path, **overrides) -> TrainConfig:
    settings = {"model": "icnet", "model_config": {"width": 0.125}, "lr": 1e-3, **TINY, **overrides}
    return TrainConfig(out_dir=str(out_dir), **settings)


def _old_clip_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """clip_loss as it was before the loss options: plain "ce" must stay this, bit for bit."""
    b, n, c, h, w = logits.shape
    ce = F.cross_entropy(
        logits.reshape(b * n, c, h, w).float(), labels.reshape(b * n, h, w), ignore_index=ignore_index, reduction="none"
    )
    valid = (labels.reshape(b * n, h, w) != ignore_index).float()
    counts = valid.sum(dim=(1, 2))
    per_frame = (ce * valid).sum(dim=(1, 2)) / counts.clamp(min=1.0)
    has = (counts > 0).float().reshape(b, n)
    per_clip = (per_frame.reshape(b, n) * has).sum(dim=1) / has.sum(dim=1).clamp(min=1.0)
    clip_has = (has.sum(dim=1) > 0).float()
    if clip_has.sum() == 0:
        return logits.sum() * 0.0
    return (per_clip * clip_has).sum() / b


# ----------------------------------------------------------------------------------- weights
def test_median_frequency_weights_match_a_hand_computation():
    a = np.array([[0, 0, 1], [1, 255, 2]], np.uint8)  # 5 valid pixels: classes 0, 1, 2
    b = np.array([[0, 0, 0], [0, 3, 255]], np.uint8)  # 5 valid pixels: classes 0, 3
    # freq = pixels of c / valid pixels of the maps holding c: 6/10, 2/5, 1/5, 1/5; class 4 absent.
    # median(0.6, 0.4, 0.2, 0.2) = 0.3 -> 0.3 / freq; the absent class gets 1.
    weights = median_frequency_weights([a, torch.from_numpy(b)], 5, 255)
    assert weights.dtype == np.float64
    assert np.allclose(weights, [0.5, 0.75, 1.5, 1.5, 1.0], rtol=1e-12)
    with pytest.raises(ValueError, match=r"label values must be 0\.\.4 or the ignore value 255, found 0\.\.7"):
        median_frequency_weights([a, np.array([[0, 7]])], 5, 255)
    with pytest.raises(ValueError, match="no labelled pixel"):
        median_frequency_weights([np.full((2, 2), 255)], 5, 255)


def _write_camvid(root: Path, name: str, labels: np.ndarray) -> None:
    for folder, image in (("train", np.zeros((*labels.shape, 3), np.uint8)), ("trainannot", labels)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / folder / name), image)


def test_camvid_weights_come_from_every_label_png_of_the_train_split(tmp_path):
    a = np.array([[0, 0, 1], [1, 11, 2]], np.uint8)  # 11 = void
    b = np.array([[0, 0, 0], [0, 3, 11]], np.uint8)
    _write_camvid(tmp_path, "0001TP_006690.png", a)
    _write_camvid(tmp_path, "0001TP_006720.png", b)
    config = TrainConfig(model="icnet", dataset="camvid", root=str(tmp_path), out_dir="x", loss="median-frequency")
    weights = _class_weights(config, dataset_palette("camvid"))
    # As the hand computation above; classes 4..10 occur nowhere and get 1.
    assert list(weights) == list(dataset_palette("camvid").names)
    assert list(weights.values()) == pytest.approx([0.5, 0.75, 1.5, 1.5] + [1.0] * 7, rel=1e-12)
    assert _class_weights(TrainConfig(model="icnet", dataset="camvid", out_dir="x"), None) is None


# ----------------------------------------------------------------------------------- the loss
def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 2, 4, 5, 6, generator=generator)
    labels = torch.randint(0, 4, (3, 2, 5, 6), generator=generator)
    labels[0, 1, :2] = 255
    labels[1, 0] = 255  # a frame without valid pixels
    labels[1, 0, 0, 0] = 3
    labels[2] = 255  # a clip without valid pixels
    return logits, labels


def test_plain_ce_is_bit_identical_to_the_loss_before_the_options():
    for seed in range(3):
        logits, labels = _batch(seed)
        new = logits.clone().requires_grad_()
        old = logits.clone().requires_grad_()
        a, b = clip_loss(new, labels, 255), _old_clip_loss(old, labels, 255)
        a.backward()
        b.backward()
        assert torch.equal(a, b) and torch.equal(new.grad, old.grad)


def test_weighted_ce_is_torch_weighted_cross_entropy_per_frame_then_clips():
    logits, labels = _batch()
    weights = torch.tensor([0.5, 2.0, 1.0, 4.0])
    # Each frame's torch weighted mean, frames without a valid pixel left out, then the clips.
    clips = []
    for b in range(3):
        frames = [
            F.cross_entropy(logits[b, n][None], labels[b, n][None], weight=weights, ignore_index=255)
            for n in range(2)
            if (labels[b, n] != 255).any()
        ]
        clips.append(torch.stack(frames).mean() if frames else torch.zeros(()))
    expected = torch.stack(clips).mean()
    got = clip_loss(logits, labels, 255, class_weights=weights)
    assert torch.allclose(got, expected, rtol=1e-6, atol=0)
    assert not torch.allclose(got, clip_loss(logits, labels, 255))
    # Weights all 1 are plain cross-entropy.
    assert torch.allclose(clip_loss(logits, labels, 255, class_weights=torch.ones(4)), clip_loss(logits, labels, 255))
    with pytest.raises(ValueError, match=r"one weight per class \(4\), got shape \(3,\)"):
        clip_loss(logits, labels, 255, class_weights=torch.ones(3))


# Probability of the true class at each of 9 pixels (the last one ignored); two ties at 0.8.
_PROBS = [0.1, 0.95, 0.5, 0.69, 0.71, 0.8, 0.3, 0.8, None]


def _hand_made() -> tuple[torch.Tensor, torch.Tensor]:
    """One clip, one frame of 1x9 pixels, 2 classes, true class 1 with the probabilities above."""
    logits = torch.zeros(1, 1, 2, 1, 9)
    labels = torch.ones(1, 1, 1, 9, dtype=torch.long)
    for i, p in enumerate(_PROBS):
        if p is None:
            labels[0, 0, 0, i] = 255
        else:
            logits[0, 0, 1, 0, i] = math.log(p / (1 - p))
    return logits, labels


@pytest.mark.parametrize(
    ("min_kept", "kept"),
    [
        (None, [0, 2, 3, 6]),  # below 0.7; 8 valid // 16 -> at least 1, already more
        (2, [0, 2, 3, 6]),
        (5, [0, 2, 3, 4, 6]),  # the 5 hardest: 0.71 joins
        (6, [0, 2, 3, 4, 5, 6]),  # of the tied 0.8 the first one
        (100, [0, 1, 2, 3, 4, 5, 6, 7]),  # every valid pixel, never the ignored one
    ],
)
def test_ohem_keeps_the_pixels_below_the_threshold_but_at_least_the_hardest(min_kept, kept):
    logits, labels = _hand_made()
    ce = F.cross_entropy(logits[0], labels[0], ignore_index=255, reduction="none")
    keep = ohem_keep(ce, labels[0] != 255, threshold=0.7, min_kept=min_kept)
    assert torch.nonzero(keep[0, 0]).flatten().tolist() == kept
    logits.requires_grad_()
    loss = clip_loss(logits, labels, 255, ohem_threshold=0.7, ohem_min_kept=min_kept)
    expected = -sum(math.log(_PROBS[i]) for i in kept) / len(kept)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    touched = torch.nonzero(logits.grad[0, 0].abs().sum(dim=0)[0]).flatten().tolist()
    assert touched == kept  # the dropped pixels get no gradient


def test_ohem_settings_are_checked():
    ce, valid = torch.zeros(1, 2, 2), torch.ones(1, 2, 2, dtype=torch.bool)
    for threshold in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="the OHEM threshold is a probability in"):
            ohem_keep(ce, valid, threshold=threshold, min_kept=None)
    with pytest.raises(ValueError, match="min_kept must be at least 1 pixel, got 0"):
        ohem_keep(ce, valid, threshold=0.7, min_kept=0)


# ----------------------------------------------------------------------------------- runs
def _clips(config: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    dataset = create_dataset(
        "synthetic", split=config.split, seed=config.seed, clip_length=config.clip_length,
        num_clips=config.num_clips, config=SyntheticVideoConfig(height=config.height, width=config.width),
    )  # fmt: skip
    items = [dataset[i] for i in range(len(dataset))]
    return torch.stack([x["frames"] for x in items]), torch.stack([x["labels"] for x in items])


@pytest.mark.parametrize("loss", ["ce", "median-frequency", "ohem"])
def test_each_loss_lowers_itself_on_the_clips_it_trains_on(tmp_path, loss):
    config = tiny(tmp_path / "run", loss=loss, optimizer="adam", lr=2e-3, steps=6)
    frames, labels = _clips(config)  # num_clips = batch_size: every step sees these two clips
    out = Path(config.out_dir)
    result = train(config)
    metadata = read_checkpoint_record(out / "checkpoint.safetensors").metadata
    weights = None
    if loss == "median-frequency":
        # Computed once from the labels of the training split's frames (synthetic: each clip's
        # scene at its start frame), recorded in the checkpoint and the log.
        stills = create_dataset("synthetic", clip_length=1, num_clips=2, config=SyntheticVideoConfig(32, 64))
        expected = median_frequency_weights([stills[i]["labels"][0] for i in range(2)], 7, 255)
        recorded = metadata["class_weights"]
        assert recorded == pytest.approx(dict(zip(SYNTHETIC.names, expected.tolist(), strict=True)), rel=1e-12)
        first = json.loads((out / "log.jsonl").read_text().splitlines()[0])
        assert first == {"class_weights": recorded}
        weights = torch.tensor([recorded[name] for name in SYNTHETIC.names])
    else:
        assert "class_weights" not in metadata
    settings = {"class_weights": weights, "ohem_threshold": 0.7 if loss == "ohem" else None}

    def loss_of(model: torch.nn.Module) -> float:
        model.train()
        with torch.no_grad():
            return float(clip_loss(model.forward_clip(frames, [frames.shape[1] - 1]), labels[:, -1:], 255, **settings))

    assert result.losses[0] == pytest.approx(loss_of(_seeded(config)), rel=1e-5)
    after = loss_of(load_checkpoint(out / "checkpoint.safetensors"))
    assert after < result.losses[0] - 0.05, (result.losses, after)


def _seeded(config: TrainConfig) -> torch.nn.Module:
    from vseg_core import create_model

    torch.manual_seed(config.seed)
    return create_model(config.model, num_classes=SYNTHETIC.num_classes, **config.model_config)


def test_a_run_started_before_the_loss_options_resumes_as_plain_ce(tmp_path):
    config = tiny(tmp_path / "run", steps=1)
    train(config)
    state_path = tmp_path / "run" / "train_state.json"
    state = json.loads(state_path.read_text())
    for key in ("loss", "ohem_threshold", "ohem_min_kept", "clip_source"):
        del state["config"][key]
    state_path.write_text(json.dumps(state))
    resumed = train(tiny(tmp_path / "run", steps=1, resume=True))
    assert resumed.steps == 1
    with pytest.raises(ValueError, match=r"other settings \(loss: 'ce' -> 'ohem'\)"):
        train(tiny(tmp_path / "run", steps=1, resume=True, loss="ohem"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"loss": "focal"}, "loss must be one of ce, median-frequency, ohem, got 'focal'"),
        ({"ohem_threshold": 0.0}, "ohem_threshold is a probability in (0, 1), got 0.0"),
        ({"ohem_threshold": 1.0}, "ohem_threshold is a probability in (0, 1), got 1.0"),
        ({"ohem_min_kept": 0}, "ohem_min_kept must be at least 1 pixel, got 0"),
        ({"clip_source": "video"}, "clip_source must be one of sequence, ego-motion, got 'video'"),
    ],
)
def test_bad_loss_settings_are_refused(tmp_path, change, message):
    with pytest.raises(ValueError) as caught:
        tiny(tmp_path, **change)
    assert str(caught.value) == message


def _cli(args: list[str], capsys) -> tuple[int, str, str]:
    try:
        status = main(["train", *args])
    except SystemExit as exc:
        status = exc.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--loss", "focal"], "vseg train: argument --loss: invalid choice: 'focal'"),
        (["--loss", "ohem", "--ohem-threshold", "1.5"], "vseg train: ohem_threshold is a probability in (0, 1)"),
        (["--ohem-threshold", "x"], "vseg train: argument --ohem-threshold: invalid float value: 'x'"),
        (["--ohem-min-kept", "0"], "vseg train: ohem_min_kept must be at least 1 pixel, got 0"),
        (["--clip-source", "video"], "vseg train: argument --clip-source: invalid choice: 'video'"),
    ],
)
def test_cli_refuses_bad_loss_options_in_one_line_with_status_2(tmp_path, capsys, args, message):
    base = ["icnet,width=0.125", "--out", str(tmp_path / "run"), "--height", "32", "--width", "64"]
    status, out, err = _cli([*base, "--val-split", "none", "--quiet", *args], capsys)
    assert status == 2 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


def test_cli_maps_the_loss_and_clip_source_options_onto_the_run(tmp_path, capsys):
    out = tmp_path / "run"
    args = [
        "icnet,width=0.125", "--out", str(out), "--height", "32", "--width", "64", "--num-clips", "2",
        "--clip-length", "2", "--steps", "1", "--val-split", "none", "--quiet", "--loss", "ohem",
        "--ohem-threshold", "0.6", "--ohem-min-kept", "50", "--clip-source", "ego-motion",
    ]  # fmt: skip
    status, _, err = _cli(args, capsys)
    assert status == 0, err
    config = json.loads((out / "train_state.json").read_text())["config"]
    assert (config["loss"], config["ohem_threshold"], config["ohem_min_kept"]) == ("ohem", 0.6, 50)
    assert config["clip_source"] == "ego-motion"
    defaults = tiny(tmp_path)
    assert (defaults.loss, defaults.ohem_threshold, defaults.ohem_min_kept, defaults.clip_source) == (
        "ce", 0.7, None, "sequence",
    )  # fmt: skip
    # The parser spells the choices out (it imports no torch); they are the library's.
    options = {action.dest: action for action in build_parser()[1].choices["train"]._actions}
    assert tuple(options["loss"].choices) == LOSSES and tuple(options["clip_source"].choices) == CLIP_SOURCES
