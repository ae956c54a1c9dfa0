"""Every installed executable started the way launch_ros starts it: its own arguments, then the
``--ros-args`` tail with the node name, namespace, parameters file and remaps; and every one of them
ends with exit status 0 and no traceback however many SIGINT/SIGTERM a terminal and launch send.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
import torch
from child_process import kill_group, start_logged, wait_or_dump
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image

from vseg_core import create_model, save_checkpoint
from vseg_ros.bags import BagWriter
from vseg_ros.ros_process import split_ros_args, use_local_large_image_transports

REPO = Path(__file__).resolve().parents[2]
H, W = 32, 48
RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(3)
    model = create_model("icnet", num_classes=11, width=0.25)
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "icnet", dataset="test")


def _image(seed: int, stamp_s: int) -> Image:
    frame = np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)
    msg = Image(height=H, width=W, encoding="rgb8", step=W * 3, data=frame.tobytes())
    msg.header.stamp.sec, msg.header.frame_id = stamp_s, "cam"
    return msg


@pytest.fixture
def bag(tmp_path):
    path = tmp_path / "bag"
    with BagWriter(path) as writer:
        for i in range(3):
            writer.write("/camera/image_raw", (1_700_000_000 + i) * 10**9, _image(i, 1_700_000_000 + i))
    return path


class Executable:
    """One executable as a child process with a log file, faulthandler on (:mod:`child_process`)."""

    def __init__(self, tmp_path: Path, name: str, *args: str) -> None:
        self.name = name
        self.log = tmp_path / f"{name}-{time.monotonic_ns()}.log"
        self.process = start_logged(self.log, str(REPO / "scripts" / name), *args)

    def output(self) -> str:
        return self.log.read_text()

    def signal_group(self, *signals: int, gap_s: float = 0.02) -> None:
        for sig in signals:
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                return
            time.sleep(gap_s)

    def wait(self, timeout: float = 300.0) -> int:  # generous: niced processes on a busy machine
        """The exit status; a process still running after ``timeout`` s fails the test with its stacks."""
        return wait_or_dump(self.process, timeout, self.name, self.output)

    def kill(self) -> None:
        """End the process group if it still runs (a test's clean-up after a failure)."""
        kill_group(self.process)


def _node_names(node) -> set[str]:
    return {f"{ns.rstrip('/')}/{name}" for name, ns in node.get_node_names_and_namespaces()}


_SIGNAL_BURST = """
import os, signal, sys, threading, time
from vseg_ros.ros_process import install_stop_handlers

stop = install_stop_handlers()
assert not stop.wait(0.05), "no signal yet: the wait times out"
pid = os.getpid()
threading.Timer(0.2, os.kill, (pid, signal.SIGINT)).start()
start = time.monotonic()
woken = stop.wait(30)
print(woken, f"{time.monotonic() - start:.1f}")

def burst():
    for i in range(20000):
        os.kill(pid, signal.SIGINT if i % 2 else signal.SIGTERM)

for _ in range(3):  # an Event-based handler deadlocked in about one burst of four
    sender = threading.Thread(target=burst, daemon=True)
    sender.start()
    while sender.is_alive():  # the main thread inside wait() as signals land, and handlers nested
        stop.wait(0.0001)
print("survived", stop.is_set())
"""


def test_stop_handlers_wake_a_waiting_main_thread_and_survive_signal_bursts():
    """A signal ends a wait on the stop request at once; bursts of SIGINT/SIGTERM land while the main
    thread waits and while earlier handlers still run. An event's lock made the handler wait for itself
    forever (``py-spy dump``: three nested ``on_signal`` frames in ``Condition.__enter__``)."""
    result = subprocess.run(
        [sys.executable, "-c", _SIGNAL_BURST], capture_output=True, text=True, timeout=300, check=False, cwd=REPO
    )
    assert result.returncode == 0, result.stderr
    woken, seconds, survived, requested = result.stdout.split()
    assert (woken, survived, requested) == ("True", "survived", "True")
    assert float(seconds) < 5.0  # woken by the signal at 0.2 s, not by the 30 s timeout


def test_ros_args_are_split_as_rcl_reads_them():
    argv = ["bag", "--rate", "2", "--ros-args", "-r", "__node:=p", "--", "--loop", "--ros-args", "-p", "a:=1"]
    assert split_ros_args(argv) == (
        ["bag", "--rate", "2", "--loop"],
        ["--ros-args", "-r", "__node:=p", "--ros-args", "-p", "a:=1"],
    )
    assert split_ros_args(["models"]) == (["models"], [])


def test_the_large_image_transports_are_set_unless_the_environment_names_its_own(monkeypatch):
    monkeypatch.delenv("FASTDDS_BUILTIN_TRANSPORTS", raising=False)
    use_local_large_image_transports()
    assert os.environ["FASTDDS_BUILTIN_TRANSPORTS"] == "SHM?max_msg_size=4MB&sockets_size=16MB"
    monkeypatch.setenv("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")
    use_local_large_image_transports()
    assert os.environ["FASTDDS_BUILTIN_TRANSPORTS"] == "LARGE_DATA"


def test_segmentation_node_honours_name_namespace_params_file_and_remap(ros_context, spin_until, tmp_path, checkpoint):
    params = tmp_path / "params.yaml"
    params.write_text(f"/**:\n  ros__parameters:\n    model: icnet\n    weights: {checkpoint}\n    device: cpu\n")
    ns = f"/exe{os.getpid()}"
    node_proc = Executable(
        tmp_path, "segmentation_node",
        "--ros-args", "-r", "__node:=seg_front", "-r", f"__ns:={ns}", "--params-file", str(params),
        "-r", f"image:={ns}/front/image_raw",
    )  # fmt: skip
    tester = rclpy.create_node("tester", context=ros_context)
    labels: list[Image] = []
    tester.create_subscription(Image, f"{ns}/seg_front/labels", labels.append, RELIABLE)
    camera = tester.create_publisher(Image, f"{ns}/front/image_raw", RELIABLE)
    try:
        up = spin_until(
            tester, lambda: node_proc.process.poll() is not None or camera.get_subscription_count() > 0, timeout=90
        )
        assert up and node_proc.process.poll() is None, node_proc.output()
        # Node names travel in their own discovery message, a moment after the endpoints.
        assert spin_until(tester, lambda: f"{ns}/seg_front" in _node_names(tester), timeout=10), _node_names(tester)
        for i in range(10):  # the first sample may beat the far side's discovery: resend until one arrives
            camera.publish(_image(i, 100 + i))
            if spin_until(tester, lambda: labels, timeout=3.0):
                break
        assert labels and (labels[0].height, labels[0].width) == (H, W), node_proc.output()
    finally:
        node_proc.signal_group(signal.SIGINT)
        assert node_proc.wait() == 0, node_proc.output()
    assert "Traceback" not in node_proc.output()


def test_bag_play_honours_node_name_remap_and_vseg_publishes_the_bag_clock(ros_context, spin_until, tmp_path, bag):
    ns = f"/exe{os.getpid()}"
    images: list[Image] = []
    clocks: list[Clock] = []
    tester = rclpy.create_node("tester", context=ros_context)
    tester.create_subscription(Image, f"{ns}/remapped", images.append, RELIABLE)
    clock_qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.BEST_EFFORT)  # as time sources subscribe
    tester.create_subscription(Clock, f"{ns}/clock", clocks.append, clock_qos)
    # As replay.launch.py starts it: own arguments first, launch_ros's tail after them.
    player = Executable(
        tmp_path, "bag_play", str(bag), "--rate", "1", "--wait-for-subscribers", "30", "--clock", "100",
        "--ros-args", "-r", "__node:=bag_play", "-r", f"__ns:={ns}", "-r", f"/camera/image_raw:={ns}/remapped",
        "-r", f"/clock:={ns}/clock", "-p", "use_sim_time:=true",
    )  # fmt: skip
    try:
        # The clock is best effort: what it sends before our side has matched it is lost (the player can
        # only see its own side), which on a loaded machine took longer than a 10x-rate play's 0.2 s.
        # At the bag's own rate it ticks for 2 s.
        assert spin_until(tester, lambda: len(images) == 3 and clocks, timeout=60), player.output()
        assert player.wait() == 0, player.output()
        spin_until(tester, lambda: False, timeout=0.5)  # the clock messages still queued
    finally:
        player.kill()
    assert [m.header.stamp.sec for m in images] == [1_700_000_000 + i for i in range(3)]
    # Bag time, never wall time; monotonic within a pass.
    seconds = [c.clock.sec + c.clock.nanosec / 1e9 for c in clocks]
    assert seconds and min(seconds) >= 1_700_000_000 and max(seconds) <= 1_700_000_002.0 + 1e-9
    assert seconds == sorted(seconds)

    # The `vseg` command itself takes the tail too (`ros2 run vseg vseg bag play ...`).
    images.clear()
    # At the bag's own rate (messages 1 s apart) the player lives ~2 s after it starts publishing: node
    # names travel in their own discovery message, after the endpoints, and must reach us while it lives.
    vseg = Executable(
        tmp_path, "vseg", "bag", "play", str(bag), "--rate", "1", "--wait-for-subscribers", "30",
        "--ros-args", "-r", "__node:=vseg_player", "-r", f"/camera/image_raw:={ns}/remapped",
    )  # fmt: skip
    seen: set[str] = set()

    def done() -> bool:
        seen.update(_node_names(tester))
        return vseg.process.poll() is not None or (len(images) == 3 and "/vseg_player" in seen)

    assert spin_until(tester, done, timeout=60), vseg.output()
    assert vseg.wait() == 0 and len(images) == 3 and "/vseg_player" in seen, (seen, vseg.output())


def test_commands_without_a_node_accept_the_tail_and_say_they_ignore_it(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "vseg"), "models", "icnet", "--height", "32", "--width", "32",
         "--json", "--ros-args", "-r", "__node:=x"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert '"name": "icnet"' in result.stdout
    ignored = "vseg models: runs no ROS node of its own, ignoring --ros-args -r __node:=x"
    assert result.stderr.strip().splitlines()[-1] == ignored


def test_a_bag_without_the_topic_is_a_one_line_error(tmp_path, bag):
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bag_play"), str(bag), "--topics", "/front/image",
         "--ros-args", "-r", "__node:=bag_play"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"vseg bag: bag {bag} has no topic /front/image"]


def _start_stop_cycles(tmp_path: Path, checkpoint: Path, cycles: int) -> None:
    """Start the node, then do what Ctrl-C under `ros2 launch` does: SIGINT to the whole group, launch's
    own SIGINT while the node cleans up, and at last SIGTERM."""
    for cycle in range(cycles):
        node = Executable(
            tmp_path, "segmentation_node",
            "--ros-args", "-r", "__node:=seg", "-r", f"__ns:=/cycle{os.getpid()}_{cycle}",
            "-p", "model:=icnet", "-p", f"weights:={checkpoint}", "-p", "device:=cpu",
        )  # fmt: skip
        # Odd cycles signal a node that is still starting (weights loaded, model not yet on its device).
        # Before the interpreter has run the script nothing can be done: the signals' defaults apply.
        ready = "loaded icnet weights" if cycle % 2 else "segmenting"
        deadline = time.monotonic() + 90.0
        while ready not in node.output() and node.process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        node.signal_group(signal.SIGINT, signal.SIGINT, signal.SIGTERM, signal.SIGINT)
        code = node.wait()
        assert (code, "Traceback" in node.output()) == (0, False), f"cycle {cycle}:\n{node.output()}"


def test_repeated_signals_during_shutdown_exit_0_without_a_traceback(tmp_path, checkpoint):
    _start_stop_cycles(tmp_path, checkpoint, cycles=2)


@pytest.mark.slow
@pytest.mark.timeout(3600)  # 10-30 s a cycle: each start imports torch and loads a model
def test_twenty_start_stop_cycles_under_sigint_to_the_process_group(tmp_path, checkpoint):
    _start_stop_cycles(tmp_path, checkpoint, cycles=20)


def test_bag_play_stops_cleanly_on_repeated_signals(ros_context, spin_until, tmp_path, bag):
    ns = f"/stop{os.getpid()}"
    images: list[Image] = []
    tester = rclpy.create_node("tester", context=ros_context)
    tester.create_subscription(Image, f"{ns}/camera/image_raw", images.append, RELIABLE)
    player = Executable(
        tmp_path, "bag_play", str(bag), "--loop", "--clock", "--rate", "10",
        "--ros-args", "-r", "__node:=bag_play", "-r", f"/camera/image_raw:={ns}/camera/image_raw",
    )  # fmt: skip
    assert spin_until(tester, lambda: images, timeout=300), player.output()  # playing, mid-loop
    player.signal_group(signal.SIGINT, signal.SIGINT, signal.SIGTERM)
    assert player.wait() == 0, player.output()
    assert "Traceback" not in player.output()
