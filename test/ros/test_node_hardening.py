"""segmentation_node under bad input, on a real rclpy graph in this process: every refused frame is
counted under its reason (in /diagnostics too), a decompression bomb is refused from its header,
and no refused frame touches the temporal state: the stream goes on as if it had not come."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from diagnostic_msgs.msg import DiagnosticArray
from node_graph import NodeGraph
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image

from vseg.msg import SegmentationInfo
from vseg_core import VideoSegmenter, create_model, load_checkpoint, save_checkpoint
from vseg_core.palette import CAMVID
from vseg_ros.conversions import image_to_labels
from vseg_ros.parameters import ParameterError
from vseg_ros.segmentation_node import SegmentationNode

REPO = Path(__file__).resolve().parents[2]
H, W = 48, 64
RELIABLE = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(21)
    model = create_model("lstm_icnet_v2", num_classes=11, width=0.25)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "lstm", palette=CAMVID, dataset="test")


def _frame(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def _raw(frame: np.ndarray, stamp_ns: int, **fields) -> Image:
    msg = Image(height=frame.shape[0], width=frame.shape[1], encoding="rgb8", step=frame.shape[1] * 3)
    msg.data = frame.tobytes()
    for key, value in fields.items():
        setattr(msg, key, value)
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    msg.header.frame_id = "cam"
    return msg


def _jpeg(frame: np.ndarray, stamp_ns: int, data: bytes | None = None) -> CompressedImage:
    msg = CompressedImage(format="jpeg")
    msg.data = data if data is not None else cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))[1].tobytes()
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    msg.header.frame_id = "cam"
    return msg


def _bomb(width: int, height: int) -> bytes:
    data = bytearray(cv2.imencode(".jpg", np.full((16, 16, 3), 128, np.uint8))[1].tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


class Graph(NodeGraph):
    def __init__(self, ctx, checkpoint, compressed: bool, **extra) -> None:
        params = {
            "model": "lstm_icnet_v2", "weights": str(checkpoint), "device": "cpu", "compressed": compressed,
            # Reliable, so that every message sent reaches the node and the counts are exact.
            f"qos_overrides./image{'/compressed' if compressed else ''}.subscription.reliability": "reliable",
            f"qos_overrides./image{'/compressed' if compressed else ''}.subscription.depth": 100,
        }  # fmt: skip
        overrides = [Parameter(k, value=v) for k, v in {**params, **extra}.items()]
        super().__init__(ctx, SegmentationNode(context=ctx, parameter_overrides=overrides), timeout=30.0)
        msg_type = CompressedImage if compressed else Image
        self.camera = self.tester.create_publisher(msg_type, "image/compressed" if compressed else "image", RELIABLE)
        self.infos: list[SegmentationInfo] = []
        self.labels: list[Image] = []
        self.diagnostics: list[DiagnosticArray] = []
        self.tester.create_subscription(SegmentationInfo, "/segmentation/info", self.infos.append, RELIABLE)
        self.tester.create_subscription(Image, "/segmentation/labels", self.labels.append, RELIABLE)
        self.tester.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, RELIABLE)
        assert self.spin_until(lambda: self.camera.get_subscription_count() > 0)

    def refused(self) -> dict[str, int]:
        return self.node._cameras[""].stats.snapshot(time.monotonic()).rejected_by_reason

    def send_bad(self, msg, reason: str) -> None:
        before = self.refused().get(reason, 0)
        self.camera.publish(msg)
        assert self.spin_until(lambda: self.refused().get(reason, 0) == before + 1), (reason, self.refused())

    def send_good(self, msg) -> SegmentationInfo:
        count = len(self.infos)
        self.camera.publish(msg)
        assert self.spin_until(lambda: len(self.infos) > count and len(self.labels) > count)
        return self.infos[-1]


@pytest.fixture
def graph(ros_context, checkpoint):
    made: list[Graph] = []

    def make(compressed: bool = False, **extra) -> Graph:
        made.append(Graph(ros_context, checkpoint, compressed, **extra))
        return made[-1]

    yield make
    for g in made:
        g.close()


def test_refused_raw_frames_are_counted_by_reason_and_leave_the_stream_untouched(graph, checkpoint):
    g = graph()
    frames = [_frame(0), _frame(1)]
    expected = [r.labels for r in map(VideoSegmenter(load_checkpoint(checkpoint), device="cpu").step, frames)]
    t0 = 100 * 10**9
    assert g.send_good(_raw(frames[0], t0)).reset_reason == "first_frame"
    tiny = _frame(2)[:16, :16]
    bad = [
        (_raw(frames[0], t0 + 1, encoding="32FC1"), "unknown_encoding"),
        (_raw(frames[0], t0 + 2, step=W * 3 - 1), "bad_layout"),
        (_raw(frames[0], t0 + 3, data=frames[0].tobytes()[:-1]), "size_mismatch"),
        # A new, tiny size and a backward stamp: the next good frame must not inherit either reset.
        (_raw(tiny, t0 - 10**9), "too_small"),
        # A header claiming 5000x5000 with a few bytes: refused before the data size is even looked at.
        (_raw(frames[0], t0 + 5, height=5000, width=5000, step=15000), "too_large"),
    ]
    for msg, reason in bad:
        g.send_bad(msg, reason)
    info = g.send_good(_raw(frames[1], t0 + 100_000_000))
    assert (info.state_reset, info.reset_reason) == (False, "")
    np.testing.assert_array_equal(image_to_labels(g.labels[-1]), expected[1])  # the state of frame 0 carried on
    assert info.frames_rejected == len(bad)
    assert dict(zip(info.rejected_reasons, info.rejected_counts, strict=True)) == {reason: 1 for _, reason in bad}
    assert info.frames_received == info.frames_processed + info.frames_rejected + info.frames_dropped == 2 + len(bad)

    def reported() -> dict[str, int]:
        values = {kv.key: kv.value for a in g.diagnostics for s in a.status for kv in s.values}
        return {k.removeprefix("rejected_"): int(v) for k, v in values.items() if k.startswith("rejected_")}

    assert g.spin_until(lambda: len(reported()) == len(bad), timeout=5.0)
    assert reported() == {reason: 1 for _, reason in bad} == g.refused()


def test_a_burst_of_malformed_frames_is_refused_frame_by_frame_none_dropped_uninspected(graph):
    g = graph()
    t0 = 100 * 10**9
    g.send_good(_raw(_frame(0), t0))
    for i in range(30):  # far faster than frames are segmented: the mailbox would keep only the last
        g.camera.publish(_raw(_frame(0), t0 + 1 + i, encoding="bayer_rggb8" if i % 2 else "32FC1"))
    assert g.spin_until(lambda: g.refused().get("unknown_encoding", 0) == 30), g.refused()
    info = g.send_good(_raw(_frame(1), t0 + 100_000_000))
    assert (info.frames_received, info.frames_rejected, info.frames_dropped, info.frames_processed) == (32, 30, 0, 2)
    assert (list(info.rejected_reasons), list(info.rejected_counts)) == (["unknown_encoding"], [30])


@pytest.mark.parametrize("depth", [1, 10])
def test_queue_depth_keeps_a_burst_in_order_or_only_its_newest_frame(graph, checkpoint, depth):
    g = graph(queue_depth=depth)
    segmenter = g.node._cameras[""].segmenter
    step = segmenter.step

    def slow_first_step(*args, **kwargs):  # the worker is busy while the rest of the burst arrives
        segmenter.step = step
        time.sleep(1.0)
        return step(*args, **kwargs)

    segmenter.step = slow_first_step
    frames = [_frame(10 + i) for i in range(8)]
    t0 = 100 * 10**9
    for i, frame in enumerate(frames):
        g.camera.publish(_raw(frame, t0 + i * 50_000_000))
    last = (100, 7 * 50_000_000)
    assert g.spin_until(lambda: g.infos and (g.infos[-1].header.stamp.sec, g.infos[-1].header.stamp.nanosec) == last)
    info = g.infos[-1]
    assert info.frames_received == 8 and info.frames_processed + info.frames_dropped == 8
    if depth == 10:  # every frame, in order, with the state carried as the core carries it
        expected = [r.labels for r in map(VideoSegmenter(load_checkpoint(checkpoint), device="cpu").step, frames)]
        assert info.frames_dropped == 0 and g.spin_until(lambda: len(g.labels) == 8)
        for got, want in zip(g.labels, expected, strict=True):
            np.testing.assert_array_equal(image_to_labels(got), want)
    else:  # the first frame (if the worker took it before the burst replaced it), then the newest only
        assert info.frames_processed <= 2 and info.frames_dropped >= 6


def test_a_decompression_bomb_costs_nothing_and_truncated_jpegs_are_refused(graph):
    g = graph(compressed=True)
    t0 = 100 * 10**9
    g.send_good(_jpeg(_frame(0), t0))
    started = time.monotonic()
    # Within the node's limits (4096 per side, 16 MP), 4000x4000 in a few hundred bytes is a bomb;
    # beyond them, the limits refuse it first.
    g.send_bad(_jpeg(_frame(0), t0 + 1, data=_bomb(4000, 4000)), "implausible_size")
    g.send_bad(_jpeg(_frame(0), t0 + 2, data=_bomb(16384, 16384)), "too_large")
    assert time.monotonic() - started < 5.0  # decoded, the first would take seconds and gigabytes
    full = cv2.imencode(".jpg", _frame(3))[1].tobytes()
    g.send_bad(_jpeg(_frame(0), t0 + 3, data=full[: len(full) // 2]), "truncated")
    g.send_bad(_jpeg(_frame(0), t0 + 4, data=cv2.imencode(".jpg", _frame(4)[:8, :8])[1].tobytes()), "too_small")
    info = g.send_good(_jpeg(_frame(1), t0 + 100_000_000))
    assert not info.state_reset and info.frames_rejected == 4
    assert g.refused() == {"implausible_size": 1, "too_large": 1, "truncated": 1, "too_small": 1}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"input_width": 16, "input_height": 16}, "must be at least 32, got 16x16"),
        ({"keyframe_interval": -1}, "parameter 'keyframe_interval' must be in 1..1000, got -1"),
        ({"keyframe_interval": "five"}, "parameter 'keyframe_interval' must be an integer, got 'five'"),
        ({"overlay_alpha": 2.0}, r"parameter 'overlay_alpha' must be in 0.0..1.0, got 2.0"),
        ({"input_width": 100000}, "parameter 'input_width' must be in 0..8192, got 100000"),
        ({"max_input_side": 8}, "parameter 'max_input_side' must be in 32..16384, got 8"),
        ({"cameras": "front"}, "parameter 'cameras' must be a list of strings, got 'front'"),
    ],
)
def test_bad_start_up_parameters_are_one_line_naming_them(ros_context, checkpoint, params, message):
    overrides = {"weights": str(checkpoint), "device": "cpu", **params}
    with pytest.raises(ParameterError, match=message) as info:
        SegmentationNode(context=ros_context, parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])
    assert "\n" not in str(info.value)


def test_a_wrongly_typed_parameter_on_the_command_line_ends_start_up_with_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "segmentation_node"), "--ros-args",
         "-p", "device:=cpu", "-p", "keyframe_interval:=five"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stdout + result.stderr
    (line,) = [ln for ln in (result.stdout + result.stderr).splitlines() if ln.strip()]
    assert line.endswith("cannot start: parameter 'keyframe_interval' must be an integer, got 'five'")


@pytest.mark.parametrize(
    ("error", "reason"),
    [(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), "out_of_memory"),
     (RuntimeError("a kernel failed"), "model_failed")],
)  # fmt: skip
def test_a_frame_the_model_fails_on_is_refused_and_the_stream_goes_on_without_it(graph, checkpoint, error, reason):
    """On a GPU an oversized frame can run out of memory inside the model: injected here on the CPU."""
    g = graph()
    frames = [_frame(s) for s in (30, 31, 32)]
    t0 = 100 * 10**9
    g.send_good(_raw(frames[0], t0))
    model = g.node._cameras[""].segmenter.model
    real_step = model.step

    def fails_once(*args, **kwargs):
        model.step = real_step
        raise error

    model.step = fails_once
    g.send_bad(_raw(frames[1], t0 + 66_000_000), reason)
    info = g.send_good(_raw(frames[2], t0 + 133_000_000))
    assert (info.state_reset, info.frames_rejected) == (False, 1)
    assert dict(zip(info.rejected_reasons, info.rejected_counts, strict=True)) == {reason: 1}
    core = VideoSegmenter(load_checkpoint(checkpoint), device="cpu")
    expected = [core.step(f).labels for f in (frames[0], frames[2])]  # the failed frame never happened
    np.testing.assert_array_equal(image_to_labels(g.labels[-1]), expected[-1])
