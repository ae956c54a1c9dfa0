"""`vseg models` and the FLOP counting behind it, checked against counts made by hand."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from vseg_core.cli import main, parse_config, parse_spec
from vseg_core.cost import count_cost, model_cost
from vseg_core.models.registry import create_model


def test_cell_cost_equals_the_convolution_arithmetic():
    # LSTM-ICNet v2 at 64x64: the cell runs on the fused 8x8 map with 128 channels.
    cost = model_cost("lstm_icnet_v2", height=64, width=64, num_classes=5)
    c, k, pixels = 128, 3, 8 * 8
    macs = pixels * 4 * (c * c * k * k + c * c * k * k)  # 4 gates, x and h convolutions
    assert cost.cell_keyframe_gflops * 1e9 == 2 * macs
    model = create_model("lstm_icnet_v2", num_classes=5)
    assert cost.params == sum(p.numel() for p in model.parameters())
    assert cost.cell_params == sum(p.numel() for p in model.temporal["fused"].cell.parameters())
    assert cost.nonkey_gflops == cost.keyframe_gflops and not cost.uses_keyframes
    assert cost.cell_nonkey_gflops == cost.cell_keyframe_gflops


def test_cells_at_one_sixteenth_and_the_faster_reduction_cost_what_their_convolutions_do():
    # v4 at 64x64: two cells on the 4x4 maps of the low and medium branches.
    c, k = 128, 3
    v4 = model_cost("lstm_icnet_v4", height=64, width=64, num_classes=5)
    assert v4.cell_keyframe_gflops * 1e9 == 2 * (2 * 16 * 4 * 2 * c * c * k * k)
    assert [p.name for p in v4.parts if p.is_cell] == ["temporal.sub4.cell", "temporal.sub2.cell"]
    # v2 with reduce_channels=32: the two bias-free 1x1 convolutions (128 -> 32 and 128 -> 96) on
    # the 8x8 map are the block's own FLOPs, the 32-channel cell has its own row.
    faster = {
        p.name: p for p in model_cost("lstm_icnet_v2", height=64, width=64, num_classes=5, reduce_channels=32).parts
    }
    assert faster["temporal.fused"].keyframe_gflops * 1e9 == 2 * 64 * (c * 32 + c * 96)
    assert faster["temporal.fused.cell"].keyframe_gflops * 1e9 == 2 * 64 * 4 * 2 * 32 * 32 * k * k


@pytest.mark.parametrize(
    ("name", "config"),
    [
        ("icnet", {}),
        ("lstm_icnet_v6", {"conv": "spatial"}),
        ("lstm_icnet_v5", {"conv": "separable", "reduce_channels": 48}),
    ],
)
def test_parts_add_up_to_the_totals(name, config):
    model = create_model(name, num_classes=4, width=0.5, **config)
    cost = count_cost(model, height=96, width=160)
    assert sum(p.params for p in cost.parts) == cost.params == sum(p.numel() for p in model.parameters())
    assert sum(p.keyframe_gflops for p in cost.parts) == pytest.approx(cost.keyframe_gflops, rel=1e-12)
    # The whole model counted in one piece by the FLOP counter, without hooks.
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(torch.zeros(1, 3, 96, 160))
    assert counter.get_total_flops() / 1e9 == pytest.approx(cost.keyframe_gflops, rel=1e-12)


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
    assert rows["lstm_icnet_v2"]["cell_params"] == sum(p.numel() for p in sep.temporal["fused"].cell.parameters())
    for row in rows.values():
        assert sum(p["params"] for p in row["parts"]) == row["params"]
        assert sum(p["keyframe_gflops"] for p in row["parts"]) == pytest.approx(row["keyframe_gflops"], abs=0.01)
    assert rows["icnet"]["cell_params"] == 0
    assert rows["icnet"]["params"] == sum(p.numel() for p in create_model("icnet", num_classes=4).parameters())


def test_models_takes_each_name_with_its_own_settings(capsys):
    assert main(["models", "icnet", "icnet,backbone=lite0", "lstm_icnet_v2,backbone=lite0,conv=separable",
                 "--height", "64", "--width", "96", "--classes", "4", "--json"]) == 0  # fmt: skip
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["models"]}
    for spec, model in (
        ("icnet", create_model("icnet", num_classes=4)),
        ("icnet,backbone=lite0", create_model("icnet", num_classes=4, backbone="lite0")),
        ("lstm_icnet_v2,backbone=lite0,conv=separable",
         create_model("lstm_icnet_v2", num_classes=4, backbone="lite0", conv="separable")),
    ):  # fmt: skip
        assert rows[spec]["params"] == sum(p.numel() for p in model.parameters()), spec
    assert rows["icnet"]["params"] != rows["icnet,backbone=lite0"]["params"]


def test_a_spec_s_own_settings_come_after_config_s():
    config = parse_config(["conv=spatial", "lstm_icnet_v2:reduce_channels=32", "icnet:backbone=lite0"])
    assert parse_spec("lstm_icnet_v2,conv=separable,hidden=null", config) == (
        "lstm_icnet_v2",
        {"conv": "separable", "reduce_channels": 32, "hidden": None},
    )
    assert parse_spec("fixed,interval=5") == ("fixed", {"interval": 5})


def test_config_parsing():
    assert parse_config(["conv=separable", "lstm_icnet_v2:reduce_channels=32", "x:flag=true"]) == {
        "*": {"conv": "separable"},
        "lstm_icnet_v2": {"reduce_channels": 32},
        "x": {"flag": True},
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["models", "nope"], "vseg models: unknown model 'nope'; registered models: "),
        (["models", "--config", "conv"], "vseg models: --config expects [MODEL:]KEY=VALUE"),
        (["models", "--height", "0"], "vseg models: argument --height: expected a positive integer, got 0"),
        (
            ["models", "icnet", "--config", "conv=separable"],
            "vseg models: model 'icnet' does not accept these settings",
        ),
        (["models", "lstm_icnet_v2", "--config", "conv=dilated"], "LSTM-ICNet convs: standard, spatial"),
        (["models", "icnet,backbone"], "vseg models: 'icnet,backbone': expected NAME[,KEY=VALUE...], got 'backbone'"),
        (["bench", "icnet,icnet:backbone=lite0"], "expected NAME[,KEY=VALUE...], got 'icnet:backbone=lite0'"),
        (["models", "icnet,backbone=lite9"], "vseg models: unknown ICNet backbone 'lite9'; backbones: "),
    ],
)
def test_cli_errors_are_one_line_with_status_2(args, message, capsys):
    try:
        status = main(args)
    except SystemExit as exc:  # argparse's own errors leave through exit()
        status = exc.code
    err = capsys.readouterr().err
    assert status == 2
    assert message in err and len(err.strip().splitlines()) == 1


def test_the_console_command_exits_with_status_2_and_one_line():
    result = subprocess.run(
        [sys.executable, "-m", "vseg_core.cli", "models", "nope"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert result.stderr.startswith("vseg models: unknown model 'nope'") and len(result.stderr.splitlines()) == 1


def test_models_table_lists_the_parts_on_request(capsys):
    assert main(["models", "lstm_icnet_v4", "--height", "64", "--width", "64", "--classes", "5", "--parts"]) == 0
    out = capsys.readouterr().out.splitlines()
    cost = model_cost("lstm_icnet_v4", height=64, width=64, num_classes=5)
    row = next(line for line in out if line.startswith("lstm_icnet_v4"))
    assert row.split()[2] == f"{cost.params:,d}" and row.split()[5] == f"{cost.cell_params:,d}"
    cells = [line.split() for line in out if line.endswith("ConvLSTM cell")]
    assert [c[0] for c in cells] == ["temporal.sub4.cell", "temporal.sub2.cell"]
    assert [c[1] for c in cells] == [f"{cost.cell_params // 2:,d}"] * 2
