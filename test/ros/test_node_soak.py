"""`vseg node-bench --soak`: the node in its own process under a steady camera."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from vseg_core import create_model, save_checkpoint
from vseg_core.palette import CAMVID


def _vseg(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vseg_ros.cli", *args], capture_output=True, text=True, timeout=300, check=False
    )


@pytest.mark.slow
@pytest.mark.parametrize(("backend", "runs"), [("torch", "on cpu (fp32)"), ("onnxruntime", "in onnxruntime (cpu)")])
def test_a_short_soak_accounts_for_every_frame_and_measures_latency_and_memory(tmp_path, backend, runs):
    torch.manual_seed(4)
    checkpoint = save_checkpoint(create_model("icnet", num_classes=11, width=0.25), tmp_path / "icnet", palette=CAMVID)
    result = _vseg("node-bench", "icnet", "--weights", str(checkpoint), "--soak", "4", "--rate", "10",
                   "--height", "96", "--width", "128", "--backend", backend, "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    r = json.loads(result.stdout)
    assert 35 <= r["frames_sent"] <= 42  # 10 Hz for 4 s, counting the first frame at 0 s
    # Best effort may lose a sample in DDS, which the node cannot count; all it received is accounted for.
    assert r["frames_sent"] - 2 <= r["frames_received"] <= r["frames_sent"]
    assert r["frames_received"] == r["frames_processed"] + r["frames_dropped"] + r["frames_rejected"]
    assert r["frames_rejected"] == 0 and r["exit_status"] == 0
    assert 0 < r["latency_p50_ms"] <= r["latency_p95_ms"] < 5000
    assert r["rss_first_at_s"] == 2.0 and r["rss_first_mb"] > 100 and r["rss_end_mb"] > 100
    assert r["runs"] == runs  # the node's own start-up line: --backend reached it


def test_a_bad_soak_setting_is_a_one_line_error():
    result = _vseg("node-bench", "icnet", "--soak", "0")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("vseg node-bench: a soak needs seconds > 0")
