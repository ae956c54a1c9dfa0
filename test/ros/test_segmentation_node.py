"""segmentation_node in its own process, started as users start it, against a real rclpy graph.

Expected labels come from a VideoSegmenter run here on the same checkpoint and the same frames:
the node must publish exactly what the core computes.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_srvs.srv import Trigger

from vseg.msg import SegmentationClasses, SegmentationInfo
from vseg_core import VideoSegmenter, create_model, load_checkpoint, save_checkpoint
from vseg_core.palette import CAMVID

REPO = Path(__file__).resolve().parents[2]
H, W = 48, 64
RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(7)
    model = create_model("lstm_icnet_v2", num_classes=11, conv="separable", width=0.25)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
        # Batch-norm statistics from one pass over random frames, so that random weights still give
        # labels that vary across the image and over time (untouched statistics saturate to one class).
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = 1.0
        model.train().forward_clip(torch.rand(2, 2, 3, H, W), output_frames=(0, 1))
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = 0.1
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "lstm", palette=CAMVID, dataset="test")


def _frame(seed: int, h: int = H, w: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _image(frame: np.ndarray, stamp_s: float, frame_id: str = "cam", encoding: str = "rgb8") -> Image:
    msg = Image(height=frame.shape[0], width=frame.shape[1], encoding=encoding, step=frame.shape[1] * 3)
    msg.header.stamp.sec = int(stamp_s)
    msg.header.stamp.nanosec = round((stamp_s % 1) * 1e9)
    msg.header.frame_id = frame_id
    msg.data = frame.tobytes()
    return msg


def _labels(msg: Image) -> np.ndarray:
    assert msg.encoding == "mono8"
    return np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.width)


class NodeUnderTest:
    """The installed executable with --ros-args, and a test node that talks to it."""

    def __init__(self, ctx, spin_until, tmp_path, params: dict, cameras=("",)):
        compressed = params.get("compressed", False)
        self.ns = f"/t{os.getpid()}_{int(time.monotonic() * 1000) % 100000}"
        params_file = tmp_path / "params.yaml"
        lines = ["/**:", "  ros__parameters:"] + [f"    {k}: {v!r}" for k, v in params.items()]
        lines.append(f"    cameras: {list(cameras)!r}")
        params_file.write_text("\n".join(lines).replace("'", '"') + "\n")
        # A file, not a pipe: a pipe nobody reads can fill up and block the node.
        self.log = tmp_path / f"node{self.ns.replace('/', '_')}.log"
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(REPO / "scripts" / "segmentation_node"), "--ros-args",
                 "--params-file", str(params_file), "-r", f"__ns:={self.ns}"],
                stdout=log, stderr=subprocess.STDOUT, text=True,
            )  # fmt: skip
        self.spin_until = spin_until
        self.node = rclpy.create_node("tester", context=ctx)
        self.labels: dict[str, list[Image]] = {c: [] for c in cameras}
        self.infos: dict[str, list[SegmentationInfo]] = {c: [] for c in cameras}
        self.diagnostics: list[DiagnosticArray] = []
        self.classes: list[SegmentationClasses] = []
        self.pubs = {}
        for cam in cameras:
            base = f"{self.ns}/segmentation" + (f"/{cam}" if cam else "")
            self.node.create_subscription(Image, f"{base}/labels", self.labels[cam].append, RELIABLE)
            self.node.create_subscription(SegmentationInfo, f"{base}/info", self.infos[cam].append, RELIABLE)
            topic = f"{self.ns}/" + (f"{cam}/" if cam else "") + ("image/compressed" if compressed else "image")
            self.pubs[cam] = self.node.create_publisher(CompressedImage if compressed else Image, topic, RELIABLE)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, RELIABLE)
        latched = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        self.node.create_subscription(
            SegmentationClasses, f"{self.ns}/segmentation/classes", self.classes.append, latched
        )

        outputs = [
            f"{self.ns}/segmentation" + (f"/{c}" if c else "") + f"/{o}" for c in cameras for o in ("labels", "info")
        ]

        def ready() -> bool:
            if self.process.poll() is not None:
                return True
            return all(p.get_subscription_count() > 0 for p in self.pubs.values()) and all(
                self.node.count_publishers(t) > 0 for t in outputs
            )

        assert spin_until(self.node, ready, timeout=90.0), "the node never subscribed:\n" + self.output()
        assert self.process.poll() is None, self.output()
        # Discovery is seen from both ends at slightly different times; a best-effort sample sent the
        # moment one end has matched can still be lost at the other. Let both ends settle.
        deadline = time.monotonic() + 1.0
        spin_until(self.node, lambda: time.monotonic() > deadline, timeout=2.0)

    def send(self, cam: str, msg: Image, *, wait: bool = True, timeout: float = 60.0) -> None:
        before = len(self.infos[cam])
        self.pubs[cam].publish(msg)
        if wait:
            assert self.spin_until(
                self.node, lambda: len(self.infos[cam]) > before and len(self.labels[cam]) > before, timeout
            ), f"no result for a frame on {cam or 'image'}\n" + self.output()

    def output(self) -> str:
        return self.log.read_text()

    def stop(self) -> int:
        self.node.destroy_node()
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=30)
        finally:
            if self.process.poll() is None:
                self.process.kill()


@pytest.fixture
def start_node(ros_context, spin_until, tmp_path):
    started = []

    def start(params, cameras=("",)):
        node = NodeUnderTest(ros_context, spin_until, tmp_path, {"device": "cpu", **params}, cameras)
        started.append(node)
        return node

    yield start
    for node in started:
        assert node.stop() == 0, "the node did not exit cleanly on SIGINT:\n" + node.output()


def _expected(checkpoint, frames_and_resets):
    seg = VideoSegmenter(load_checkpoint(checkpoint), device="cpu")
    return [seg.step(f, reset_reason=r).labels for f, r in frames_and_resets]


@pytest.mark.slow
def test_labels_are_the_cores_with_state_kept_and_reset_on_a_stamp_jump(start_node, checkpoint, spin_until):
    node = start_node({"model": "lstm_icnet_v2", "weights": str(checkpoint), "reset_gap_s": 1.0})
    frames = [_frame(i) for i in range(4)]
    stamps = [100.0, 100.1, 100.2, 50.0]  # the last one jumps back: a bag loop
    for f, s in zip(frames, stamps, strict=True):
        node.send("", _image(f, s))
    got = [_labels(m) for m in node.labels[""]]
    expected = _expected(checkpoint, [(frames[0], None), (frames[1], None), (frames[2], None), (frames[3], "x")])
    for i in range(4):
        np.testing.assert_array_equal(got[i], expected[i], err_msg=f"frame {i}")
    # The state persisted: frame 1 differs from what a fresh state gives for it.
    fresh = _expected(checkpoint, [(frames[1], None)])[0]
    assert not np.array_equal(got[1], fresh)
    infos = node.infos[""]
    assert [i.reset_reason for i in infos] == ["first_frame", "", "", "stamp_backwards"]
    for msg, info, stamp in zip(node.labels[""], infos, stamps, strict=True):
        assert (msg.height, msg.width, msg.header.frame_id) == (H, W, "cam")
        assert (
            msg.header.stamp == info.header.stamp
            and abs(info.header.stamp.sec + info.header.stamp.nanosec / 1e9 - stamp) < 1e-6
        )
        assert info.model == "lstm_icnet_v2" and info.total_ms > 0 and info.features_ms > 0
    assert infos[-1].frames_received == infos[-1].frames_processed == 4
    assert spin_until(node.node, lambda: node.classes, timeout=10.0)
    assert list(node.classes[0].names) == list(CAMVID.names) and node.classes[0].ignore_index == 11

    def status():
        for array in node.diagnostics:
            for st in array.status:
                values = {kv.key: kv.value for kv in st.values}
                if values.get("topic") == f"{node.ns}/image" and values.get("frames_processed") == "4":
                    return values
        return None

    assert spin_until(node.node, lambda: status() is not None, timeout=10.0), "no diagnostics after 4 frames"
    values = status()
    assert values["model"] == "lstm_icnet_v2" and values["resets"] == "2" and values["frames_dropped"] == "0"


@pytest.mark.slow
def test_two_cameras_keep_separate_states_and_reset_service(start_node, checkpoint, spin_until, ros_context):
    node = start_node({"model": "lstm_icnet_v2", "weights": str(checkpoint)}, cameras=("front", "rear"))
    front, rear = [_frame(10 + i) for i in range(3)], [_frame(20 + i) for i in range(3)]
    for i in range(3):
        node.send("front", _image(front[i], 10 + 0.1 * i, "front_cam"))
        node.send("rear", _image(rear[i], 10 + 0.1 * i, "rear_cam"))
    for cam, frames in (("front", front), ("rear", rear)):
        expected = _expected(checkpoint, [(f, None) for f in frames])
        for got, exp in zip(node.labels[cam], expected, strict=True):
            np.testing.assert_array_equal(_labels(got), exp)
    client = node.node.create_client(Trigger, f"{node.ns}/segmentation/reset")
    assert client.wait_for_service(timeout_sec=20.0)
    future = client.call_async(Trigger.Request())
    assert spin_until(node.node, future.done, timeout=20.0) and future.result().success
    node.send("front", _image(front[0], 10.3, "front_cam"))
    assert node.infos["front"][-1].reset_reason == "service"
    np.testing.assert_array_equal(_labels(node.labels["front"][-1]), _expected(checkpoint, [(front[0], None)])[0])


@pytest.mark.slow
def test_drops_are_counted_and_bad_frames_do_not_stop_the_node(start_node, checkpoint, spin_until):
    node = start_node({"model": "lstm_icnet_v2", "weights": str(checkpoint)})
    bad = Image(height=4, width=4, encoding="32FC1", step=16, data=bytes(64))

    def rejected() -> int:
        counts = [
            int(kv.value)
            for array in node.diagnostics
            for status in array.status
            for kv in status.values
            if kv.key == "frames_rejected"
        ]
        return max(counts, default=0)

    # Best effort may lose a sample, and a newer frame may replace it before the worker takes it:
    # send the bad frame alone until the node's diagnostics report it rejected.
    sent_bad = 0
    for _ in range(5):
        node.send("", bad, wait=False)
        sent_bad += 1
        if node.spin_until(node.node, lambda: rejected() >= 1, timeout=3.0):
            break
    assert rejected() >= 1, "the node never reported the bad frame as rejected\n" + node.output()
    big = [_frame(100 + i, 240, 320) for i in range(25)]
    for i, f in enumerate(big):  # far faster than the model runs
        node.send("", _image(f, 200 + 0.01 * i), wait=False)
    # A last frame after the burst: the newest frame is always the one processed in the end.
    node.send("", _image(_frame(999, 240, 320), 201.0), wait=False)
    newest = lambda: bool(node.infos[""]) and node.infos[""][-1].header.stamp.sec == 201  # noqa: E731
    assert spin_until(node.node, newest, timeout=120.0), "the newest frame was never processed\n" + node.output()
    last = node.infos[""][-1]
    assert last.frames_rejected >= 1
    assert last.frames_dropped > 0
    # Sensor-data QoS may also lose samples inside DDS (history depth 5), which no node can count;
    # every image that reached the node is accounted for.
    assert 2 <= last.frames_received <= sent_bad + len(big) + 1
    assert last.frames_processed + last.frames_dropped + last.frames_rejected == last.frames_received


@pytest.mark.slow
def test_a_bad_weights_parameter_stops_start_up_naming_it(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "segmentation_node"), "--ros-args",
         "-p", "model:=lstm_icnet_v2", "-p", f"weights:={tmp_path / 'missing.safetensors'}", "-p", "device:=cpu"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "parameter 'weights'" in result.stdout + result.stderr


def test_a_node_that_failed_to_start_still_shuts_down_cleanly(tmp_path):
    """rclpy destroys a context's nodes at shutdown, the half-built one too: that must not raise."""
    from rclpy.context import Context
    from rclpy.parameter import Parameter

    from vseg_ros.segmentation_node import SegmentationNode

    ctx = Context()
    rclpy.init(context=ctx)
    try:
        overrides = [
            Parameter("model", value="lstm_icnet_v2"),
            Parameter("weights", value=str(tmp_path / "missing.safetensors")),
            Parameter("device", value="cpu"),
        ]
        failure = None
        try:
            SegmentationNode(context=ctx, parameter_overrides=overrides)
        except ValueError as exc:
            failure = exc  # its traceback keeps the half-built node alive, as in a caller that logs it
        assert failure is not None and "parameter 'weights'" in str(failure)
    finally:
        ctx.shutdown()
    assert not ctx.ok()


def test_weights_by_shipped_name_load_that_checkpoint(tmp_path):
    from rclpy.context import Context
    from rclpy.parameter import Parameter

    from vseg_core.pretrained import shipped_checkpoint, shipped_record
    from vseg_ros.segmentation_node import SegmentationNode

    ctx = Context()
    rclpy.init(context=ctx)
    try:
        params = [Parameter("model", value="icnet"), Parameter("device", value="cpu")]
        node = SegmentationNode(
            context=ctx, parameter_overrides=[*params, Parameter("weights", value="camvid_icnet_lite2")]
        )
        try:
            frame = _frame(4)
            got = node._cameras[""].segmenter.step(frame).labels
            expected = VideoSegmenter(load_checkpoint(shipped_checkpoint("camvid_icnet_lite2")), device="cpu").step(
                frame
            )
            np.testing.assert_array_equal(got, expected.labels)
            assert node.classes == shipped_record("camvid_icnet_lite2").palette == CAMVID
        finally:
            node.destroy_node()
        failure = None
        try:
            SegmentationNode(context=ctx, parameter_overrides=[*params, Parameter("weights", value="camvid_icnett")])
        except ValueError as exc:
            failure = str(exc)
        assert failure is not None and "'camvid_icnett' is neither a checkpoint path" in failure
        assert "shipped: camvid_accel_lite0, " in failure
    finally:
        ctx.shutdown()


def test_default_weights_are_the_best_shipped_camvid_model_and_name_the_model():
    from rclpy.context import Context
    from rclpy.parameter import Parameter

    from vseg_core.pretrained import shipped_checkpoint, shipped_record
    from vseg_ros.parameters import DEFAULT_WEIGHTS
    from vseg_ros.segmentation_node import SegmentationNode

    assert DEFAULT_WEIGHTS == "camvid_deeplab_lite2_decoder"
    assert shipped_record(DEFAULT_WEIGHTS).metadata["dataset"] == "camvid"
    ctx = Context()
    rclpy.init(context=ctx)
    try:
        node = SegmentationNode(context=ctx, parameter_overrides=[Parameter("device", value="cpu")])
        try:
            assert (node.config.weights, node.config.model) == (DEFAULT_WEIGHTS, "deeplab_lite2")  # model from the file
            frame = _frame(5, 96, 128)
            got = node._cameras[""].segmenter.step(frame).labels
            expected = VideoSegmenter(load_checkpoint(shipped_checkpoint(DEFAULT_WEIGHTS)), device="cpu").step(frame)
            np.testing.assert_array_equal(got, expected.labels)
        finally:
            node.destroy_node()
        refusals = {
            "lstm_icnet_v2": "holds a 'deeplab_lite2' model, not 'lstm_icnet_v2'",  # a model that is not the file's
            "": f"parameters 'model' and 'weights' are both empty: name a checkpoint (weights:={DEFAULT_WEIGHTS})",
        }
        for model, message in refusals.items():
            params = [Parameter("device", value="cpu"), Parameter("model", value=model)]
            if not model:
                params.append(Parameter("weights", value=""))
            with pytest.raises(ValueError, match=re.escape(message)):
                SegmentationNode(context=ctx, parameter_overrides=params)
    finally:
        ctx.shutdown()


@pytest.mark.slow
def test_compressed_input_gives_the_labels_of_the_decoded_frame(start_node, checkpoint):
    from std_msgs.msg import Header

    from vseg_ros.conversions import array_to_compressed, compressed_to_array

    node = start_node({"model": "lstm_icnet_v2", "weights": str(checkpoint), "compressed": True})
    header = Header(frame_id="cam")
    header.stamp.sec = 5
    msg = array_to_compressed(_frame(3), header, "png")
    node.send("", msg)
    np.testing.assert_array_equal(
        _labels(node.labels[""][0]), _expected(checkpoint, [(compressed_to_array(msg), None)])[0]
    )
    assert node.labels[""][0].header.frame_id == "cam" and node.infos[""][0].header.stamp.sec == 5
