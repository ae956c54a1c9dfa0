"""The managed (lifecycle) segmentation node, driven through its lifecycle services as a lifecycle
manager or `ros2 lifecycle set` drives it, on a real rclpy graph.

Expected labels come from a VideoSegmenter run here on the same checkpoint and frames.
"""

from __future__ import annotations

import gc
import os
import signal
import weakref
from pathlib import Path

import numpy as np
import pytest
import rclpy
import torch
from child_process import start_logged, wait_or_dump
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from node_graph import NodeGraph
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from vseg.msg import SegmentationClasses
from vseg_core import VideoSegmenter, create_model, load_checkpoint, save_checkpoint
from vseg_core.palette import CAMVID
from vseg_ros.conversions import image_to_labels
from vseg_ros.segmentation_node import ManagedSegmentationNode

REPO = Path(__file__).resolve().parents[2]
H, W = 32, 48
RELIABLE = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(9)
    model = create_model("lstm_icnet_v2", num_classes=11, width=0.25)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)  # labels that vary over the image and depend on the state carried over
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "lstm", palette=CAMVID, dataset="test")


def _frame(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def _image(frame: np.ndarray, stamp_s: float) -> Image:
    msg = Image(height=H, width=W, encoding="rgb8", step=W * 3, data=frame.tobytes())
    msg.header.stamp.sec, msg.header.stamp.nanosec = int(stamp_s), round((stamp_s % 1) * 1e9)
    msg.header.frame_id = "cam"
    return msg


class Managed(NodeGraph):
    """The managed node and a tester (its lifecycle client, camera and listener) in one executor."""

    def __init__(self, ctx, weights: str) -> None:
        super().__init__(
            ctx,
            ManagedSegmentationNode(
                context=ctx,
                parameter_overrides=[
                    Parameter("model", value="lstm_icnet_v2"),
                    Parameter("weights", value=weights),
                    Parameter("device", value="cpu"),
                ],
            ),
        )
        self.change = self.tester.create_client(ChangeState, "/segmentation/change_state")
        self.get = self.tester.create_client(GetState, "/segmentation/get_state")
        self.camera = self.tester.create_publisher(Image, "image", RELIABLE)
        self.labels: list[Image] = []
        self.classes: list[SegmentationClasses] = []
        self.tester.create_subscription(Image, "/segmentation/labels", self.labels.append, RELIABLE)
        self.tester.create_subscription(SegmentationClasses, "/segmentation/classes", self.classes.append, LATCHED)
        assert self.spin_until(lambda: self.change.service_is_ready() and self.get.service_is_ready())

    def _call(self, client, request):
        future = client.call_async(request)
        assert self.spin_until(future.done, timeout=60.0), "no answer from the lifecycle service"
        return future.result()

    def transition(self, transition_id: int) -> bool:
        return self._call(self.change, ChangeState.Request(transition=Transition(id=transition_id))).success

    def state(self) -> str:
        return self._call(self.get, GetState.Request()).current_state.label

    def subscribed(self) -> bool:
        return self.camera.get_subscription_count() > 0

    def send(self, frame: np.ndarray, stamp_s: float) -> Image:
        before = len(self.labels)
        self.camera.publish(_image(frame, stamp_s))
        assert self.spin_until(lambda: len(self.labels) > before), f"no labels for the frame at {stamp_s}"
        return self.labels[-1]


@pytest.fixture
def managed(ros_context):
    made: list[Managed] = []

    def make(weights: str) -> Managed:
        made.append(Managed(ros_context, weights))
        return made[-1]

    yield make
    for m in made:
        m.close()


def test_configure_loads_activate_segments_deactivate_keeps_state_cleanup_frees(managed, checkpoint):
    m = managed(str(checkpoint))
    assert m.state() == "unconfigured" and not m.node.configured
    # Out of order: rcl_lifecycle refuses, nothing changes.
    assert not m.transition(Transition.TRANSITION_ACTIVATE)
    assert m.state() == "unconfigured"

    assert m.transition(Transition.TRANSITION_CONFIGURE)
    assert m.state() == "inactive" and m.node.configured
    model = weakref.ref(m.node._cameras[""].segmenter.model)
    m.spin_until(m.subscribed, timeout=1.0)
    assert not m.subscribed() and not m.classes  # configured: loaded, warm, but neither reading nor publishing

    assert m.transition(Transition.TRANSITION_ACTIVATE)
    assert m.state() == "active" and m.spin_until(m.subscribed)
    assert m.spin_until(lambda: m.classes) and list(m.classes[-1].names) == list(CAMVID.names[:11])
    frames = [_frame(i) for i in range(3)]
    reference = VideoSegmenter(load_checkpoint(checkpoint), device="cpu")
    expected = [reference.step(f).labels for f in frames]
    np.testing.assert_array_equal(image_to_labels(m.send(frames[0], 100.0)), expected[0])

    assert m.transition(Transition.TRANSITION_DEACTIVATE)
    assert m.state() == "inactive" and m.spin_until(lambda: not m.subscribed())
    count = len(m.labels)
    m.camera.publish(_image(frames[1], 100.1))  # nobody reads it now
    m.spin_until(lambda: len(m.labels) > count, timeout=1.0)
    assert len(m.labels) == count

    # Re-activated, the temporal state is the one before: frame 1 follows frame 0 as in the reference.
    assert m.transition(Transition.TRANSITION_ACTIVATE) and m.spin_until(m.subscribed)
    np.testing.assert_array_equal(image_to_labels(m.send(frames[1], 100.2)), expected[1])
    without_state = VideoSegmenter(load_checkpoint(checkpoint), device="cpu").step(frames[1]).labels
    assert not np.array_equal(expected[1], without_state)  # so the comparison above shows the state was kept

    assert m.transition(Transition.TRANSITION_DEACTIVATE)
    assert m.transition(Transition.TRANSITION_CLEANUP)
    assert m.state() == "unconfigured" and not m.node.configured
    gc.collect()
    assert model() is None  # the model and its state are gone, not merely unreachable from the node

    # And it can come up again, from the weights, with a fresh state.
    assert m.transition(Transition.TRANSITION_CONFIGURE) and m.transition(Transition.TRANSITION_ACTIVATE)
    assert m.spin_until(m.subscribed)
    np.testing.assert_array_equal(image_to_labels(m.send(frames[0], 200.0)), expected[0])


def test_configure_with_bad_weights_fails_naming_them_and_stays_unconfigured(managed, tmp_path):
    m = managed(str(tmp_path / "missing.safetensors"))
    assert not m.transition(Transition.TRANSITION_CONFIGURE)
    assert m.state() == "unconfigured" and not m.node.configured
    assert not m.transition(Transition.TRANSITION_ACTIVATE)  # still refused: nothing to activate
    assert m.state() == "unconfigured"


def test_managed_executable_starts_unconfigured_and_stops_on_sigint(ros_context, spin_until, tmp_path, checkpoint):
    ns = f"/managed{os.getpid()}"
    log = tmp_path / "managed.log"
    process = start_logged(
        log, str(REPO / "scripts" / "managed_segmentation_node"), "--ros-args",
        "-r", f"__ns:={ns}", "-p", "model:=lstm_icnet_v2", "-p", f"weights:={checkpoint}", "-p", "device:=cpu",
    )  # fmt: skip
    tester = rclpy.create_node("tester", context=ros_context)
    get = tester.create_client(GetState, f"{ns}/segmentation/get_state")
    change = tester.create_client(ChangeState, f"{ns}/segmentation/change_state")
    try:
        assert spin_until(tester, lambda: get.service_is_ready() and change.service_is_ready(), timeout=90), (
            log.read_text()
        )
        future = get.call_async(GetState.Request())
        assert spin_until(tester, future.done, timeout=30) and future.result().current_state.label == "unconfigured"
        future = change.call_async(ChangeState.Request(transition=Transition(id=Transition.TRANSITION_CONFIGURE)))
        assert spin_until(tester, future.done, timeout=120) and future.result().success, log.read_text()
    finally:
        os.killpg(process.pid, signal.SIGINT)
        code = wait_or_dump(process, 120, "the managed node after SIGINT", log.read_text)
    assert code == 0 and "Traceback" not in log.read_text(), log.read_text()
