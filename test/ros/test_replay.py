"""replay.launch.py's processes, started with the arguments it gives them (launch itself is not
installable here): a 2023 bag played with --clock into a node with use_sim_time gives labels for
every frame, and latencies measured on bag time, not against the wall clock."""

from __future__ import annotations

import math
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
import torch
import yaml
from child_process import start_logged, wait_or_dump
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from vseg.msg import SegmentationInfo
from vseg_core import create_model, save_checkpoint
from vseg_ros.bags import BagWriter
from vseg_ros.launch_arguments import replay_node_parameters

REPO = Path(__file__).resolve().parents[2]
FRAMES, RATE_HZ = 20, 4.0  # the node needs well under 0.25 s a frame: none is replaced before it is segmented
T0 = 1_690_000_000  # July 2023: far from the wall clock, as in any recorded drive
RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(11)
    model = create_model("icnet", num_classes=11, width=0.25)
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "icnet", dataset="test")


def _bag(path: Path) -> Path:
    with BagWriter(path) as writer:
        for i in range(FRAMES):
            stamp = T0 * 10**9 + int(i * 1e9 / RATE_HZ)
            frame = np.random.default_rng(i).integers(0, 256, (36, 48, 3), dtype=np.uint8)
            msg = Image(height=36, width=48, encoding="rgb8", step=48 * 3, data=frame.tobytes())
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 10**9)
            msg.header.frame_id = "camera"
            writer.write("/camera/image_raw", stamp, msg)
    return path


@pytest.mark.slow
def test_replay_labels_every_frame_with_latency_on_bag_time(ros_context, spin_until, tmp_path, checkpoint):
    bag = _bag(tmp_path / "drive")
    overrides = tmp_path / "overrides.yaml"
    values = {"model": "icnet", "weights": str(checkpoint), "device": "cpu"}
    values.update(replay_node_parameters("/camera/image_raw"))  # what replay.launch.py adds
    overrides.write_text(yaml.safe_dump({"/**": {"ros__parameters": values}}))
    infos: list[SegmentationInfo] = []
    labels: list[Image] = []
    tester = rclpy.create_node("tester", context=ros_context)
    tester.create_subscription(SegmentationInfo, "/segmentation/info", infos.append, RELIABLE)
    tester.create_subscription(Image, "/segmentation/labels", labels.append, RELIABLE)
    # As replay.launch.py starts them (launch_ros's --ros-args tail, use_sim_time for both).
    node = start_logged(
        tmp_path / "node.log", str(REPO / "scripts" / "segmentation_node"),
        "--ros-args", "-r", "__node:=segmentation", "--params-file", str(REPO / "config" / "segmentation.yaml"),
        "--params-file", str(overrides), "-r", "image:=/camera/image_raw",
    )  # fmt: skip
    # The tester is an observer that must see every output: it has to be matched from both ends before
    # the first frame (launch starts the player at once; there a late RViz just misses the first frames).
    outputs = ("/segmentation/info", "/segmentation/labels")
    ready = lambda: node.poll() is not None or all(tester.count_publishers(t) for t in outputs)  # noqa: E731
    assert spin_until(tester, ready, timeout=120) and node.poll() is None, (tmp_path / "node.log").read_text()
    settle = time.monotonic() + 1.0
    spin_until(tester, lambda: time.monotonic() > settle, timeout=2.0)
    player = start_logged(
        tmp_path / "player.log", str(REPO / "scripts" / "bag_play"),
        str(bag), "--rate", "1.0", "--topics", "/camera/image_raw", "--wait-for-subscribers", "60", "--clock",
        "--ros-args", "-r", "__node:=bag_play", "-p", "use_sim_time:=true",
    )  # fmt: skip
    logs = lambda: (tmp_path / "node.log").read_text() + (tmp_path / "player.log").read_text()  # noqa: E731
    end = divmod(T0 * 10**9 + int((FRAMES - 1) * 1e9 / RATE_HZ), 10**9)
    last = lambda: bool(infos) and (infos[-1].header.stamp.sec, infos[-1].header.stamp.nanosec) == end  # noqa: E731
    try:
        # The newest frame is always segmented in the end, whatever the node had to drop before it.
        assert spin_until(tester, lambda: last() and len(labels) >= len(infos), timeout=300), logs()
        assert wait_or_dump(player, 60, "bag_play after the last frame", logs) == 0, logs()
    finally:
        for process in (node, player):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGINT)
        # Generous: on a machine whose cores are taken, a niced process may wait seconds for a slice.
        codes = [p.wait(timeout=120) for p in (node, player)]
    assert codes == [0, 0] and "Traceback" not in logs(), logs()
    played = [T0 + i / RATE_HZ for i in range(FRAMES)]
    stamps = [i.header.stamp.sec + i.header.stamp.nanosec / 1e9 for i in infos]
    assert set(stamps) <= set(played) and stamps == sorted(stamps)
    assert [m.header for m in labels] == [i.header for i in infos]
    final = infos[-1]
    # The target: every frame of the bag labelled (reliable from player to node, and the node needs
    # well under the 0.25 s between frames), with latency on bag time under 1 s.
    assert (final.frames_received, final.frames_processed, final.frames_dropped) == (FRAMES, FRAMES, 0)
    assert stamps == played
    latencies = [i.latency_ms for i in infos]
    # The first frame may beat the first /clock message to the node (latency unknown then); all the
    # others are measured on bag time: never the ~1e11 ms a wall clock gives against 2023 stamps (a
    # few ms below 0 when a frame overtakes the /clock message sent just before it).
    assert all(math.isfinite(x) for x in latencies[1:]), latencies
    assert all(-50.0 <= x < 1000.0 for x in latencies if math.isfinite(x)), latencies
