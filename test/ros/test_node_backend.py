"""segmentation_node with backend onnxruntime, on a real rclpy graph in this process: an export given
with `onnx_model`, or the weights exported at start-up, give exactly the labels that the core's
onnxruntime path gives (state carried from frame to frame), which agree with the torch path as the
export tests require; every bad combination is refused at start-up naming its parameter."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest
import rclpy
import torch
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from vseg.msg import SegmentationInfo
from vseg_core import VideoSegmenter, create_model, load_checkpoint, save_checkpoint
from vseg_core.export import ExportConfig, export_model
from vseg_core.palette import CAMVID
from vseg_core.runtime_onnx import BACKENDS
from vseg_ros.conversions import image_to_labels
from vseg_ros.parameters import BACKENDS as NODE_BACKENDS
from vseg_ros.parameters import ParameterError
from vseg_ros.segmentation_node import SegmentationNode

H, W = 48, 64
RELIABLE = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(13)
    model = create_model("lstm_icnet_v2", num_classes=11, width=0.25)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)  # labels that vary over the image and depend on the carried state
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "lstm", palette=CAMVID, dataset="test")


@pytest.fixture(scope="module")
def export(checkpoint, tmp_path_factory):
    return export_model(load_checkpoint(checkpoint), tmp_path_factory.mktemp("export"), ExportConfig(height=H, width=W))


def _frames() -> list[np.ndarray]:
    return [np.random.default_rng(i).integers(0, 256, (H, W, 3), dtype=np.uint8) for i in range(4)]


def _segment(ctx, overrides: dict) -> list[np.ndarray]:
    """Start the node with ``overrides``, send the frames 0.1 s apart, return the labels it publishes."""
    node = SegmentationNode(
        context=ctx, parameter_overrides=[Parameter(k, value=v) for k, v in {"device": "cpu", **overrides}.items()]
    )
    tester = rclpy.create_node("tester", context=ctx)
    executor = SingleThreadedExecutor(context=ctx)
    for n in (node, tester):
        executor.add_node(n)
    labels: list[Image] = []
    infos: list[SegmentationInfo] = []
    tester.create_subscription(Image, "/segmentation/labels", labels.append, RELIABLE)
    tester.create_subscription(SegmentationInfo, "/segmentation/info", infos.append, RELIABLE)
    camera = tester.create_publisher(Image, "image", RELIABLE)

    def spin_until(predicate, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not predicate():
            executor.spin_once(timeout_sec=0.02)
        return predicate()

    try:
        assert spin_until(lambda: camera.get_subscription_count() > 0)
        for i, frame in enumerate(_frames()):
            msg = Image(height=H, width=W, encoding="rgb8", step=W * 3, data=frame.tobytes())
            msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id = 100, i * 100_000_000, "cam"
            camera.publish(msg)
            assert spin_until(lambda n=i + 1: len(labels) >= n and len(infos) >= n), f"no labels for frame {i}"
        assert [info.state_reset for info in infos] == [True, False, False, False]  # one stream, state carried
        assert {info.model for info in infos} == {"lstm_icnet_v2"}  # `model` empty: the export's own
        return [image_to_labels(m) for m in labels]
    finally:
        executor.shutdown()
        node.destroy_node()
        tester.destroy_node()


def _core(runner, **kwargs) -> list[np.ndarray]:
    segmenter = VideoSegmenter(runner, **kwargs)
    return [segmenter.step(f).labels for f in _frames()]


def test_node_backends_are_the_cores():
    assert NODE_BACKENDS == BACKENDS


def test_a_given_export_runs_in_onnxruntime_with_the_cores_labels(ros_context, checkpoint, export):
    got = _segment(ros_context, {"backend": "onnxruntime", "onnx_model": str(export.parent)})
    expected = _core(export.parent, backend="onnxruntime")
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_array_equal(g, e)
    torch_labels = _core(load_checkpoint(checkpoint), device="cpu")
    assert min(float((g == t).mean()) for g, t in zip(got, torch_labels, strict=True)) >= 0.999


def test_weights_exported_at_start_up_give_the_labels_of_the_same_export(ros_context, checkpoint, export):
    overrides = {"backend": "onnxruntime", "weights": str(checkpoint), "input_width": W, "input_height": H}
    got = _segment(ros_context, overrides)
    for g, e in zip(got, _core(export.parent, backend="onnxruntime"), strict=True):
        np.testing.assert_array_equal(g, e)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"backend": "tensorrt"}, "parameter 'backend' must be one of torch, onnxruntime, got 'tensorrt'"),
        (
            {"backend": "onnxruntime", "device": "cuda", "input_width": W, "input_height": H},
            "parameter 'device' 'cuda'",
        ),
        ({"backend": "onnxruntime"}, "parameter 'onnx_model' is empty, so the weights are exported at start-up"),
        ({"backend": "onnxruntime", "precision": "fp16", "onnx_model": "x"}, "parameter 'precision': backend onnx"),
        ({"onnx_model": "EXPORT"}, "parameter 'onnx_model' needs backend:=onnxruntime"),
        ({"backend": "onnxruntime", "onnx_model": "MISSING"}, "parameter 'onnx_model': "),
        ({"backend": "onnxruntime", "onnx_model": "EXPORT", "providers": ["tensorrt"]}, "parameter 'providers': "),
        ({"backend": "onnxruntime", "onnx_model": "EXPORT", "providers": ["cpu", "cpu"]}, "distinct providers"),
        ({"backend": "onnxruntime", "onnx_model": "EXPORT", "model": "icnet"}, "is an export of 'lstm_icnet_v2', not"),
        ({"backend": "onnxruntime", "onnx_model": "DISAGREEING"}, "parameter 'onnx_model': "),
    ],
)
def test_bad_backend_settings_are_refused_naming_the_parameter(ros_context, export, tmp_path, overrides, message):
    disagreeing = tmp_path / "disagreeing"
    shutil.copytree(export.parent, disagreeing)
    sidecar = json.loads((disagreeing / export.name).read_text())
    sidecar["num_classes"] = 12  # the graphs give 11
    sidecar.pop("palette", None)
    (disagreeing / export.name).write_text(json.dumps(sidecar))
    paths = {"EXPORT": str(export.parent), "MISSING": str(tmp_path / "nowhere"), "DISAGREEING": str(disagreeing)}
    overrides = {k: paths.get(v, v) if isinstance(v, str) else v for k, v in overrides.items()}
    with pytest.raises(ParameterError) as info:
        SegmentationNode(
            context=ros_context,
            parameter_overrides=[Parameter(k, value=v) for k, v in {"device": "cpu", **overrides}.items()],
        )
    assert message in str(info.value) and "\n" not in str(info.value), str(info.value)
