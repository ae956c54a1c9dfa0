"""`vseg models` and the FLOP counting behind it, checked against counts made by hand."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from vseg_core.cli import main, parse_config
from vseg_core.cost import model_cost
from vseg_core.models.registry import create_model


def test_cell_cost_equals_the_convolution_arithmetic():
    # LSTM-ICNet v2 at 64x64: the cell runs on the fused 8x8 map with 128 channels.
    cost = model_cost("lstm_icnet_v2", height=64, width=64, num_classes=5)
    c, k, pixels = 128, 3, 8 * 8
    macs = pixels * 4 * (c * c * k * k + c * c * k * k)  # 4 gates, x and h convolutions
    assert cost.cell_keyframe_gflops * 1e9 == 2 * macs
    model = create_model("lstm_icnet_v2", num_classes=5)
    assert cost.params == sum(p.numel() for p in model.parameters())
    assert cost.cell_params == sum(p.numel() for p in model.temporal.parameters())
    assert cost.nonkey_gflops == cost.keyframe_gflops and not cost.uses_keyframes


def test_separable_cells_meet_the_papers_savings_at_1024x2048():
    costs = {
        conv: model_cost("lstm_icnet_v2", height=1024, width=2048, conv=conv)
        for conv in ("standard", "spatial", "depthwise", "separable")
    }
    base = costs["standard"]
    for conv, minimum in (("spatial", 0.30), ("separable", 0.80), ("depthwise", 0.85)):
        assert 1 - costs[conv].cell_params / base.cell_params >= minimum, conv
        assert 1 - costs[conv].cell_keyframe_gflops / base.cell_keyframe_gflops >= minimum, conv


def test_models_json_matches_the_models(capsys):
    assert main(["models", "icnet", "lstm_icnet_v2", "--height", "64", "--width", "96", "--classes", "4",
                 "--config", "lstm_icnet_v2:conv=separable", "--json"]) == 0  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    rows = {r["name"]: r for r in report["models"]}
    sep = create_model("lstm_icnet_v2", num_classes=4, conv="separable")
    assert rows["lstm_icnet_v2"]["params"] == sum(p.numel() for p in sep.parameters())
    assert rows["lstm_icnet_v2"]["cell_params"] == sum(p.numel() for p in sep.temporal.parameters())
    assert rows["icnet"]["cell_params"] == 0
    assert rows["icnet"]["params"] == sum(p.numel() for p in create_model("icnet", num_classes=4).parameters())


def test_config_parsing():
    assert parse_config(["conv=separable", "lstm_icnet_v2:reduce_channels=32", "x:flag=true"]) == {
        "*": {"conv": "separable"},
        "lstm_icnet_v2": {"reduce_channels": 32},
        "x": {"flag": True},
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [(["models", "nope"], "unknown model 'nope'"), (["models", "--config", "conv"], "expects [MODEL:]KEY=VALUE")],
)
def test_cli_errors_are_one_line_with_status_2(args, message):
    result = subprocess.run([sys.executable, "-m", "vseg_core.cli", *args], capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
