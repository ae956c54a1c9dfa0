"""segmentation_node's outputs for recorders and RViz: compressed images under image_transport's
names (only while subscribed, labels lossless), the latched legend, palette changes at run time, and
its clock handling under use_sim_time. The node runs in this process on a real rclpy graph."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from node_graph import NodeGraph
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from vseg.msg import SegmentationClasses, SegmentationInfo
from vseg_core import create_model, save_checkpoint
from vseg_core.palette import CAMVID, ClassPalette
from vseg_ros import segmentation_node
from vseg_ros.conversions import (
    ConversionError,
    array_to_compressed,
    compressed_to_labels,
    compressed_to_rgb,
    image_to_labels,
    image_to_rgb,
    labels_to_compressed,
)
from vseg_ros.legend import ROW_HEIGHT, render_legend
from vseg_ros.parameters import ParameterError

H, W = 32, 48
RELIABLE = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(5)
    model = create_model("icnet", num_classes=11, width=0.25)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)  # random labels that vary over the image, so that every class id is exercised
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "icnet", palette=CAMVID, dataset="test")


class Graph(NodeGraph):
    """The node and a tester in one executor; the node's worker thread publishes."""

    def __init__(self, ctx, checkpoint, **params) -> None:
        overrides = [Parameter(k, value=v) for k, v in {"model": "icnet", "weights": str(checkpoint), **params}.items()]
        node = segmentation_node.SegmentationNode(
            context=ctx, parameter_overrides=[Parameter("device", value="cpu"), *overrides]
        )
        super().__init__(ctx, node)
        self.camera = self.tester.create_publisher(Image, "image", RELIABLE)
        self.got: dict[str, list] = {}

    def listen(self, topic: str, msg_type, qos=RELIABLE) -> list:
        received = self.got.setdefault(topic, [])
        self.tester.create_subscription(msg_type, f"/segmentation/{topic}", received.append, qos)
        return received

    def send(self, frame: np.ndarray, stamp_s: int, wait_for: str = "info") -> None:
        results = self.got[wait_for]
        before = len(results)
        self.spin_until(lambda: self.camera.get_subscription_count() > 0)
        msg = Image(height=frame.shape[0], width=frame.shape[1], encoding="rgb8", step=frame.shape[1] * 3)
        msg.header.stamp.sec, msg.header.frame_id = stamp_s, "cam"
        msg.data = frame.tobytes()
        self.camera.publish(msg)
        assert self.spin_until(lambda: len(results) > before), f"no {wait_for} for the frame at {stamp_s}"


@pytest.fixture
def graph(ros_context, checkpoint):
    made = []

    def make(**params) -> Graph:
        made.append(Graph(ros_context, checkpoint, **params))
        return made[-1]

    yield make
    for g in made:
        g.close()


def _frame(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def test_png_labels_round_trip_exactly_and_jpeg_labels_are_refused():
    header = Header(frame_id="cam")
    ids8 = np.random.default_rng(0).integers(0, 256, (37, 53), dtype=np.uint8)
    ids16 = np.random.default_rng(1).integers(0, 65536, (37, 53), dtype=np.uint16)
    for ids, encoding in ((ids8, "mono8"), (ids16, "mono16")):
        msg = labels_to_compressed(ids, header)
        assert msg.format == f"{encoding}; png compressed {encoding}" and msg.header.frame_id == "cam"
        back = compressed_to_labels(msg)
        assert back.dtype == ids.dtype
        np.testing.assert_array_equal(back, ids)
    with pytest.raises(ConversionError, match="must be png"):
        compressed_to_labels(array_to_compressed(ids8, header, "jpeg"))


def test_legend_draws_each_class_colour_in_its_row():
    colors = np.asarray(CAMVID.colors, np.uint8)
    legend = render_legend(CAMVID.names, colors)
    assert legend.dtype == np.uint8 and legend.shape[0] == len(CAMVID.names) * ROW_HEIGHT and legend.shape[2] == 3
    for i, color in enumerate(colors):
        np.testing.assert_array_equal(legend[i * ROW_HEIGHT + ROW_HEIGHT // 2, 6 + 14], color)
    many = ClassPalette.generic(100)
    assert render_legend(many.names, np.asarray(many.colors, np.uint8)).shape[0] == 40 * ROW_HEIGHT  # 3 columns
    with pytest.raises(ValueError, match="one colour per class name"):
        render_legend(["a", "b"], colors[:1])


def test_compressed_outputs_only_while_subscribed_and_labels_png_decode_to_the_exact_ids(graph, monkeypatch):
    encoded: list[str] = []
    for name in ("labels_to_compressed", "array_to_compressed"):
        real = getattr(segmentation_node, name)
        monkeypatch.setattr(
            segmentation_node, name, lambda *a, _real=real, _name=name, **k: (encoded.append(_name), _real(*a, **k))[1]
        )
    g = graph(jpeg_quality=95)
    labels = g.listen("labels", Image)
    g.listen("info", SegmentationInfo)
    g.send(_frame(0), 10)
    assert encoded == []  # nobody subscribes to a compressed output: nothing was encoded

    png = g.listen("labels/compressed", CompressedImage)
    color = g.listen("color", Image)
    color_jpeg = g.listen("color/compressed", CompressedImage)
    overlay_jpeg = g.listen("overlay/compressed", CompressedImage)
    g.spin_until(lambda: all(g.node.count_subscribers(f"/segmentation/{t}") for t in g.got))
    g.send(_frame(1), 11)
    assert g.spin_until(lambda: png and color and color_jpeg and overlay_jpeg)
    assert sorted(encoded) == ["array_to_compressed", "array_to_compressed", "labels_to_compressed"]
    ids = image_to_labels(labels[-1])
    assert len(np.unique(ids)) > 1
    np.testing.assert_array_equal(compressed_to_labels(png[-1]), ids)
    assert png[-1].header == labels[-1].header == color_jpeg[-1].header == overlay_jpeg[-1].header
    assert color_jpeg[-1].format == "rgb8; jpeg compressed bgr8"
    decoded = compressed_to_rgb(color_jpeg[-1]).astype(int)
    assert decoded.shape == (H, W, 3) and np.abs(decoded - image_to_rgb(color[-1]).astype(int)).mean() < 12


def test_legend_is_latched_and_follows_palette_changes_and_too_short_palettes_are_refused(graph, tmp_path):
    g = graph()
    legends = g.listen("legend", Image, LATCHED)  # subscribed after the node published it: latched
    classes = g.listen("classes", SegmentationClasses, LATCHED)
    assert g.spin_until(lambda: legends and classes)
    expected = render_legend(CAMVID.names, np.asarray(CAMVID.colors, np.uint8))
    assert legends[-1].encoding == "rgb8"
    np.testing.assert_array_equal(image_to_rgb(legends[-1]), expected)

    renamed = ClassPalette(tuple(f"thing_{i}" for i in range(12)), tuple((i * 20, 0, 255 - i * 20) for i in range(12)))
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(renamed.to_dict()))
    result = g.node.set_parameters([Parameter("palette_file", value=str(tmp_path / "mine.yaml"))])[0]
    assert result.successful, result.reason
    assert g.spin_until(lambda: len(legends) >= 2 and len(classes) >= 2)
    assert list(classes[-1].names) == list(renamed.names[:11])  # the model's 11 of the file's 12
    np.testing.assert_array_equal(
        image_to_rgb(legends[-1]), render_legend(renamed.names[:11], np.asarray(renamed.colors[:11], np.uint8))
    )

    short = ClassPalette(("a", "b", "c"), ((0, 0, 0), (1, 1, 1), (2, 2, 2)))
    (tmp_path / "short.yaml").write_text(yaml.safe_dump(short.to_dict()))
    result = g.node.set_parameters([Parameter("palette_file", value=str(tmp_path / "short.yaml"))])[0]
    assert not result.successful
    short_path = tmp_path / "short.yaml"
    assert result.reason == f"parameter 'palette_file': {short_path} names 3 classes, the model predicts 11"
    assert g.node.get_parameter("palette_file").value == str(tmp_path / "mine.yaml")
    with pytest.raises(ParameterError, match="names 3 classes, the model predicts 11"):
        graph(palette_file=str(tmp_path / "short.yaml"))


def test_under_sim_time_without_clock_diagnostics_still_report_and_latency_is_unknown(graph):
    g = graph(use_sim_time=True)
    arrays: list[DiagnosticArray] = []
    g.tester.create_subscription(DiagnosticArray, "/diagnostics", arrays.append, RELIABLE)
    infos = g.listen("info", SegmentationInfo)
    assert g.spin_until(lambda: arrays, timeout=10.0), "no /diagnostics under use_sim_time without /clock"
    g.send(_frame(2), 1_700_000_000)
    assert math.isnan(infos[-1].latency_ms)  # no /clock yet: the node's time is 0, not a wall-clock guess
