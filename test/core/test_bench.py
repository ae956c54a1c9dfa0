import json

import pytest

from vseg_core.bench import BenchConfig, run_benchmark
from vseg_core.cli import main


def test_benchmark_reports_consistent_numbers_for_interleaved_models():
    config = BenchConfig(height=48, width=64, device="cpu", frames=4, warmup=1)
    results = run_benchmark([("icnet", {"width": 0.25}), ("lstm_icnet_v2", {"width": 0.25})], config)
    assert [r.name for r in results] == ["icnet,width=0.25", "lstm_icnet_v2,width=0.25"]
    assert results[0].ratio_to_first == 1.0
    assert results[1].ratio_to_first == pytest.approx(results[1].total_ms / results[0].total_ms)
    for r in results:
        assert r.frames == 4 and r.device == "cpu"
        assert r.total_p25_ms <= r.total_ms <= r.total_p75_ms
        assert r.total_ms >= r.model_ms > 0 and r.outside_model_ms > 0
        assert r.keyframe_ms is not None and r.nonkey_ms is None  # no keyframe models here


def test_bench_cli_json_and_errors(capsys):
    args = ["bench", "icnet", "--config", "width=0.25", "--height", "32", "--width", "48", "--frames", "2"]
    assert main([*args, "--device", "cpu", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["config"]["height"] == 32 and report["results"][0]["name"] == "icnet,width=0.25"
    assert main(["bench", "nope", "--device", "cpu"]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="at least 16 pixels"):
        BenchConfig(height=8)
