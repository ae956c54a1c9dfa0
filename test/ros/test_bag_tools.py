"""vseg bag make -> vseg bag eval gives what vseg eval gives on the same frames."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from sensor_msgs.msg import Image

from vseg.msg import SegmentationInfo
from vseg_core.checkpoint import save_checkpoint
from vseg_core.evaluate import evaluate, evaluation_sequences
from vseg_core.export import ExportConfig, export_model
from vseg_core.models.registry import create_model
from vseg_core.runtime_onnx import OnnxSegmenter
from vseg_ros.bag_tools import evaluate_bag, write_sequences_bag
from vseg_ros.bags import BagError, list_topics, read_messages
from vseg_ros.conversions import image_to_labels


def _vseg(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vseg_ros.cli", *args], capture_output=True, text=True, timeout=300, check=False
    )


@pytest.fixture(scope="module")
def data():
    sequences, palette = evaluation_sequences("synthetic", sequences=2, frames=4, height=48, width=64)
    torch.manual_seed(5)
    model = create_model("lstm_icnet_v2", num_classes=palette.num_classes, conv="separable", width=0.25).eval()
    return sequences, palette, model


def test_bag_eval_equals_eval_on_the_same_frames_and_writes_a_complete_bag(tmp_path, data):
    sequences, palette, model = data
    bag = tmp_path / "bag"
    assert write_sequences_bag(sequences, [15.0, 15.0], bag) == 8
    result = evaluate_bag(
        bag, model, palette, image_topic="/camera/image_raw", label_topic="/camera/labels", device="cpu",
        write=tmp_path / "out",
    )  # fmt: skip
    direct = evaluate(model, sequences, palette, device="cpu")
    assert result.frames_read == result.frames_evaluated == 8 and result.labels_without_image == 0
    for key in ("miou", "fp", "fip", "iou", "miou_by_keyframe_offset", "labelled_frames"):
        assert result.report[key] == direct[key], key
    assert [s["reset_reason"] for s in result.report["sequences"]] == ["first_frame", "stamp_gap"]
    topics = {t.name: t.count for t in list_topics(tmp_path / "out")}
    assert topics == {"/camera/image_raw": 8, "/camera/labels": 8, "/vseg/labels": 8, "/vseg/color": 8, "/vseg/info": 8}
    infos = [m for _, _, m in read_messages(tmp_path / "out", {"/vseg/info": SegmentationInfo})]
    assert [i.state_reset for i in infos] == [True, False, False, False, True, False, False, False]
    labels = [m for _, _, m in read_messages(tmp_path / "out", {"/vseg/labels": Image})]
    images = [m for _, _, m in read_messages(tmp_path / "out", {"/camera/image_raw": Image})]
    assert [m.header for m in labels] == [m.header for m in images]


def test_compressed_bag_gives_close_results(tmp_path, data):
    sequences, palette, model = data
    write_sequences_bag(sequences, [15.0, 15.0], tmp_path / "raw")
    write_sequences_bag(sequences, [15.0, 15.0], tmp_path / "jpeg", compressed=True)
    kwargs = {"image_topic": "/camera/image_raw", "label_topic": "/camera/labels", "device": "cpu"}
    raw = evaluate_bag(tmp_path / "raw", model, palette, **kwargs).report
    jpeg = evaluate_bag(tmp_path / "jpeg", model, palette, **kwargs).report
    assert jpeg["frames"] == raw["frames"] == 8
    assert abs(jpeg["miou"] - raw["miou"]) < 0.1 and abs(jpeg["fip"] - raw["fip"]) < 0.1


def test_bag_eval_names_missing_topics(tmp_path, data):
    sequences, palette, model = data
    write_sequences_bag(sequences[:1], [15.0], tmp_path / "bag", label_topic=None)
    with pytest.raises(BagError, match=r"no topic /image; its topics: /camera/image_raw \[sensor_msgs/msg/Image\]"):
        evaluate_bag(tmp_path / "bag", model, palette, image_topic="/image")
    with pytest.raises(BagError, match="no topic /camera/labels"):
        evaluate_bag(tmp_path / "bag", model, palette, image_topic="/camera/image_raw", label_topic="/camera/labels")


def test_bag_make_writes_cityscapes_snippets_with_their_one_label(tmp_path):
    import subprocess
    import sys

    from cityscapes_fixture import make_cityscapes

    make_cityscapes(tmp_path / "cs")
    out = subprocess.run(
        [sys.executable, "-m", "vseg_ros.cli", "bag", "make", "--dataset", "cityscapes", "--root",
         str(tmp_path / "cs"), "--split", "val", "--sequences", "2", "-o", str(tmp_path / "bag")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    topics = {t.name: t.count for t in list_topics(tmp_path / "bag")}
    assert topics == {"/camera/image_raw": 40, "/camera/labels": 2}


def test_bag_eval_in_onnxruntime_gives_the_torch_labels_and_refuses_a_mismatched_export(tmp_path, data):
    sequences, palette, model = data
    bag = tmp_path / "bag"
    write_sequences_bag(sequences, [15.0, 15.0], bag)
    kwargs = {"image_topic": "/camera/image_raw", "label_topic": "/camera/labels", "device": "cpu"}
    by_torch = evaluate_bag(bag, model, palette, **kwargs, write=tmp_path / "torch").report
    sidecar = export_model(model, tmp_path / "export", ExportConfig(height=48, width=64))
    by_ort = evaluate_bag(bag, OnnxSegmenter(sidecar), palette, **kwargs, write=tmp_path / "ort").report
    assert (by_torch["backend"], by_ort["backend"]) == ("torch", "onnxruntime")
    assert by_ort["frames"] == 8 and [s["reset_reason"] for s in by_ort["sequences"]] == ["first_frame", "stamp_gap"]
    labels = {
        name: [image_to_labels(m) for _, _, m in read_messages(tmp_path / name, {"/vseg/labels": Image})]
        for name in ("torch", "ort")
    }
    assert min(float((a == b).mean()) for a, b in zip(labels["torch"], labels["ort"], strict=True)) >= 0.999

    # The command: exported at the bag's frame size, the same graph as above, so the same numbers.
    with_weights = save_checkpoint(model, tmp_path / "ckpt", palette=palette, dataset="synthetic")
    topics = ["--image-topic", "/camera/image_raw", "--label-topic", "/camera/labels"]
    common = ["bag", "eval", str(bag), *topics, "--model", "lstm_icnet_v2", "--weights", str(with_weights)]
    common += ["--backend", "onnxruntime", "--json"]
    result = _vseg(*common)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["backend"], report["miou"], report["fip"]) == ("onnxruntime", by_ort["miou"], by_ort["fip"])
    result = _vseg(*common[:8], "icnet", "--backend", "onnxruntime", "--onnx-model", str(sidecar.parent))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"vseg bag: --onnx-model {sidecar.parent} is an export of 'lstm_icnet_v2', not 'icnet'"
    ]


def test_bag_eval_at_an_input_size_equals_eval_at_that_size_in_torch_and_onnxruntime(tmp_path, data):
    """--input-size runs the model as the node's input_height/input_width do; labels stay at the frame's size."""
    sequences, palette, model = data
    bag = tmp_path / "bag"
    write_sequences_bag(sequences, [15.0, 15.0], bag)
    kwargs = {"image_topic": "/camera/image_raw", "label_topic": "/camera/labels", "device": "cpu"}
    resized = evaluate_bag(bag, model, palette, **kwargs, input_size=(32, 48), write=tmp_path / "torch").report
    direct = evaluate(model, sequences, palette, device="cpu", input_size=(32, 48))
    for key in ("miou", "fp", "fip", "iou", "miou_by_keyframe_offset", "input_size"):
        assert resized[key] == direct[key], key
    assert resized["input_size"] == [32, 48]
    assert evaluate_bag(bag, model, palette, **kwargs).report["input_size"] is None
    torch_labels = [image_to_labels(m) for _, _, m in read_messages(tmp_path / "torch", {"/vseg/labels": Image})]
    assert {labels.shape for labels in torch_labels} == {(48, 64)}

    # The command with onnxruntime exports at that size (not the bag's 48x64) and gives the torch labels.
    with_weights = save_checkpoint(model, tmp_path / "ckpt", palette=palette, dataset="synthetic")
    result = _vseg(
        "bag", "eval", str(bag), "--image-topic", "/camera/image_raw", "--label-topic", "/camera/labels",
        "--model", "lstm_icnet_v2", "--weights", str(with_weights), "--backend", "onnxruntime",
        "--input-size", "32x48", "--write", str(tmp_path / "ort"), "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["backend"], report["input_size"]) == ("onnxruntime", [32, 48])
    ort_labels = [image_to_labels(m) for _, _, m in read_messages(tmp_path / "ort", {"/vseg/labels": Image})]
    assert min(float((a == b).mean()) for a, b in zip(torch_labels, ort_labels, strict=True)) >= 0.999

    result = _vseg(
        "bag", "eval", str(bag), "--image-topic", "/camera/image_raw", "--model", "icnet", "--input-size", "0x48"
    )
    assert result.returncode == 2 and "expected HEIGHTxWIDTH in positive pixels, got '0x48'" in result.stderr
