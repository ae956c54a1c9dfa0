"""`vseg node-fuzz` as users run it: the real node, malformed messages of every kind, and checks
that hold only when the node refuses each under its reason and answers every valid frame."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from vseg_core import create_model, save_checkpoint
from vseg_core.palette import CAMVID
from vseg_ros import node_fuzz
from vseg_ros.node_fuzz import MALFORMED, FuzzConfig, run_fuzz


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(2)
    model = create_model("icnet", num_classes=11, width=0.25)
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "icnet", palette=CAMVID, dataset="test")


@pytest.mark.slow
def test_short_fuzz_run_finds_the_node_sound(checkpoint):
    result = subprocess.run(
        [sys.executable, "-m", "vseg_ros.cli", "node-fuzz", "--per-kind", "3", "--good-every", "5",
         "--weights", str(checkpoint), "--json"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    reports = {r["transport"]: r for r in json.loads(result.stdout)}
    assert set(reports) == {"raw", "compressed"}
    for transport, r in reports.items():
        kinds = {reason for t, reason in MALFORMED if t == transport}
        assert r["ok"] and r["problems"] == []
        assert r["sent"] == r["refused"] == dict.fromkeys(kinds, 3)
        assert r["good_answered"] == r["good_sent"] > 3 * len(kinds) // 5
        assert r["received"] == 3 * len(kinds) + r["good_sent"] == r["processed"] + r["rejected"] + r["dropped"]
        assert r["exit_status"] == 0


@pytest.mark.slow
def test_a_message_refused_under_another_reason_or_not_at_all_is_reported(checkpoint, monkeypatch):
    # Two "malformed" kinds that are not what they claim: a valid frame, and an empty one said to be
    # too small. The run must say so rather than pass.
    monkeypatch.setitem(MALFORMED, ("raw", "too_small"), node_fuzz._raw)
    monkeypatch.setitem(MALFORMED, ("raw", "bad_layout"), lambda r: node_fuzz._raw(r, width=0, step=0, data=b""))
    (report,) = run_fuzz(FuzzConfig(per_kind=2, good_every=4, weights=str(checkpoint), transports=("raw",)))
    assert not report.ok
    assert report.refused.get("too_small", 0) == 0 and report.refused["empty"] == 4
    assert any(p.startswith("refused by reason") for p in report.problems), report.problems


@pytest.mark.slow
def test_a_node_that_dds_never_matches_is_restarted_and_then_fuzzed(checkpoint, undiscoverable_starts):
    starts, calls = undiscoverable_starts
    starts += [True, False]
    (report,) = run_fuzz(FuzzConfig(per_kind=1, good_every=3, weights=str(checkpoint), transports=("raw",)))
    assert calls == ["raw", "raw.start2"]
    assert report.ok, report.problems
    assert report.node_starts == 2 and report.good_answered == report.good_sent
