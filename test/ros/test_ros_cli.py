"""The `vseg` command's ROS subcommands, run as users run them."""

from __future__ import annotations

import subprocess
import sys

from vseg_ros.node_bench import measure_node_overhead


def _vseg(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vseg_ros.cli", *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_bag_play_on_a_missing_bag_is_a_one_line_error(tmp_path):
    result = _vseg("bag", "play", str(tmp_path / "nope"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"vseg bag: no bag at {tmp_path / 'nope'}"]


def test_core_subcommands_are_there_too():
    result = _vseg("models", "icnet", "--height", "32", "--width", "32", "--json")
    assert result.returncode == 0 and '"name": "icnet"' in result.stdout


def test_node_overhead_is_the_node_path_minus_the_step():
    result = measure_node_overhead("icnet", height=48, width=64, frames=3, warmup=1)
    assert result.frames == 3
    assert result.node_ms >= result.step_ms > 0
    assert result.overhead_ms >= 0 and result.overhead_ratio == result.overhead_ms / result.step_ms
    assert result.latency_p95_ms >= result.latency_p50_ms > 0
    assert (result.backend, result.runner) == ("torch", "ICNet")


def test_node_overhead_with_onnxruntime_runs_the_export_made_at_the_frame_size():
    result = measure_node_overhead("icnet", height=48, width=64, frames=3, warmup=1, backend="onnxruntime")
    assert (result.backend, result.runner) == ("onnxruntime", "OnnxSegmenter")
    assert result.node_ms >= result.step_ms > 0 and result.overhead_ms >= 0
