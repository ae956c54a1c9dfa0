"""vseg eval: the same numbers as the metrics computed directly on the runtime's labels, every time."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vseg_core.cli import main
from vseg_core.evaluate import evaluate, evaluation_sequences
from vseg_core.metrics import ConfusionMatrix, flicker
from vseg_core.models.registry import create_model
from vseg_core.stream import VideoSegmenter


def _model():
    torch.manual_seed(3)
    return create_model("lstm_icnet_v2", num_classes=7, conv="separable", width=0.25).eval()


def test_report_equals_metrics_computed_directly_and_repeats_exactly():
    sequences, palette = evaluation_sequences("synthetic", sequences=2, frames=4, height=48, width=64)
    model = _model()
    report = evaluate(model, sequences, palette, device="cpu")
    cm, preds_all = ConfusionMatrix(7, palette.ignore_index), []
    fp_changes = fp_pixels = 0
    for seq in sequences:
        seg = VideoSegmenter(model, device="cpu")
        preds = [seg.step(f).labels for f in seq.frames]
        for p, g in zip(preds, seq.labels, strict=True):
            cm.update(p, g)
        result = flicker(preds, seq.labels)
        pairs = (len(preds) - 1) * preds[0].size
        fp_changes += result["fp"] * pairs
        fp_pixels += pairs
        preds_all.append(preds)
    assert report["miou"] == cm.miou()
    assert report["fp"] == pytest.approx(fp_changes / fp_pixels, rel=1e-12)  # changes rebuilt from ratios
    assert report["frames"] == report["labelled_frames"] == 8 and report["keyframe_share"] == 1.0
    assert [s["name"] for s in report["sequences"]] == ["val_000", "val_001"]
    again = evaluate(model, sequences, palette, device="cpu")
    for key in ("miou", "fp", "fip", "iou", "miou_by_keyframe_offset"):
        assert again[key] == report[key]


def test_eval_cli_writes_json_and_plots(tmp_path, capsys):
    args = ["eval", "icnet,width=0.25", "--sequences", "1", "--frames", "3", "--height", "32", "--width", "48"]
    assert main([*args, "--device", "cpu", "--out", str(tmp_path), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert printed == saved and saved["reports"][0]["model"] == "icnet,width=0.25"
    assert (tmp_path / "accuracy_vs_time.png").stat().st_size > 1000
    assert (tmp_path / "miou_by_keyframe_offset.png").stat().st_size > 1000
    assert np.isfinite(saved["reports"][0]["fip"])


def test_eval_cli_errors(tmp_path, capsys):
    assert main(["eval", "icnet", "--dataset", "camvid"]) == 2
    assert "needs --root" in capsys.readouterr().err
    assert main(["eval", "icnet", "--dataset", "camvid", "--root", str(tmp_path)]) == 2
    assert "expected layout" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "missing.safetensors")]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert main(["eval", "accel18,width=0.25", "--keyframe-policy", "adaptive,max_interval=0"]) == 2
    assert "max_interval" in capsys.readouterr().err
    assert main(["eval", "accel18,width=0.25", "--keyframe-policy", "sometimes"]) == 2
    assert "unknown keyframe policy 'sometimes'" in capsys.readouterr().err


def test_eval_cli_runs_keyframe_models_once_per_policy(tmp_path, capsys):
    from vseg_core.keyframes import AdaptiveConfig, AdaptiveKeyframes, FixedInterval

    spec = "accel18,width=0.25,motion=dis"
    size = ["--sequences", "2", "--frames", "5", "--height", "32", "--width", "48", "--device", "cpu"]
    policies = ["--keyframe-policy", "fixed,interval=2", "--keyframe-policy", "adaptive,max_interval=3"]
    torch.manual_seed(5)
    assert main(["eval", spec, "icnet,width=0.25", *size, *policies, "--json"]) == 0
    reports = json.loads(capsys.readouterr().out)["reports"]
    # The keyframe model once per policy, the single-frame model once.
    assert [r["model"] for r in reports] == [
        f"{spec} [fixed,interval=2]",
        f"{spec} [adaptive,max_interval=3]",
        "icnet,width=0.25",
    ]
    assert reports[0]["keyframe_share"] == 6 / 10  # frames 0, 2, 4 of each 5-frame sequence
    torch.manual_seed(5)
    model = create_model("accel18", num_classes=7, width=0.25, motion="dis").eval()
    sequences, palette = evaluation_sequences("synthetic", sequences=2, frames=5, height=32, width=48)
    for report, policy in zip(
        reports[:2], (FixedInterval(2), AdaptiveKeyframes(AdaptiveConfig(max_interval=3))), strict=True
    ):
        direct = evaluate(model, sequences, palette, device="cpu", keyframe_policy=policy)
        assert report["miou"] == direct["miou"] and report["keyframe_share"] == direct["keyframe_share"]
        assert report["miou_by_keyframe_offset"] == direct["miou_by_keyframe_offset"]


def test_eval_cli_takes_a_shipped_checkpoint_by_name(capsys):
    from vseg_core.checkpoint import load_checkpoint
    from vseg_core.pretrained import shipped_checkpoint

    assert main(["eval", "synthetic_icnet", "--sequences", "1", "--frames", "3", "--height", "64", "--width", "128",
                 "--device", "cpu", "--json"]) == 0  # fmt: skip
    (report,) = json.loads(capsys.readouterr().out)["reports"]
    assert report["model"] == "icnet (synthetic_icnet)"
    sequences, palette = evaluation_sequences("synthetic", sequences=1, frames=3, height=64, width=128)
    direct = evaluate(load_checkpoint(shipped_checkpoint("synthetic_icnet")).eval(), sequences, palette, device="cpu")
    assert report["miou"] == direct["miou"] and report["fip"] == direct["fip"]


def test_eval_cli_names_weights_that_produce_nan_in_one_line(tmp_path, capsys):
    from vseg_core.checkpoint import save_checkpoint

    model = create_model("icnet", num_classes=7, width=0.25)
    with torch.no_grad():
        next(p for p in model.parameters() if p.ndim == 4).fill_(float("nan"))
    path = save_checkpoint(model, tmp_path / "broken")
    assert main(["eval", str(path), "--sequences", "1", "--frames", "2", "--height", "32", "--width", "48",
                 "--device", "cpu", "--json"]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "icnet produced NaN or infinite logits" in err[0]


def test_eval_cli_runs_models_at_the_input_size_asked_and_scores_at_the_frames_size(capsys):
    from vseg_core.checkpoint import load_checkpoint
    from vseg_core.pretrained import shipped_checkpoint

    size = ["--sequences", "1", "--frames", "3", "--height", "64", "--width", "128", "--device", "cpu", "--json"]
    assert main(["eval", "synthetic_icnet", *size, "--input-size", "96x192"]) == 0
    (report,) = json.loads(capsys.readouterr().out)["reports"]
    assert report["input_size"] == [96, 192]
    # The same labels as the runtime's at that size, scored against the 64x128 ground truth.
    sequences, palette = evaluation_sequences("synthetic", sequences=1, frames=3, height=64, width=128)
    model = load_checkpoint(shipped_checkpoint("synthetic_icnet")).eval()
    segmenter, cm = VideoSegmenter(model, device="cpu", input_size=(96, 192)), ConfusionMatrix(7, palette.ignore_index)
    for frame, gt in zip(sequences[0].frames, sequences[0].labels, strict=True):
        labels = segmenter.step(frame).labels
        assert labels.shape == gt.shape
        cm.update(labels, gt)
    assert report["miou"] == cm.miou()
    assert main(["eval", "synthetic_icnet", *size]) == 0
    (native,) = json.loads(capsys.readouterr().out)["reports"]
    assert native["input_size"] is None and native["miou"] != report["miou"]
    # ONNX Runtime: exported at the size asked, not the frame's.
    assert main(["eval", "synthetic_icnet", *size, "--input-size", "96x192", "--backend", "onnxruntime"]) == 0
    (onnx,) = json.loads(capsys.readouterr().out)["reports"]
    assert onnx["input_size"] == [96, 192] and onnx["miou"] == pytest.approx(report["miou"], abs=1e-3)
    for bad in ("0x192", "96x", "big"):
        with pytest.raises(SystemExit):
            main(["eval", "synthetic_icnet", *size, "--input-size", bad])
        assert "--input-size: expected HEIGHTxWIDTH" in capsys.readouterr().err
