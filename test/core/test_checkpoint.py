"""safetensors + JSON checkpoints: exact round trips, and every way a file can be wrong."""

from __future__ import annotations

import json

import pytest
import torch

from vseg_core import create_model, load_checkpoint, save_checkpoint
from vseg_core.checkpoint import CheckpointError, read_checkpoint_record
from vseg_core.palette import CAMVID


@pytest.fixture
def saved(tmp_path):
    model = create_model("lstm_icnet_v2", num_classes=11, conv="separable", width=0.25)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1)
    path = save_checkpoint(model, tmp_path / "m", palette=CAMVID, dataset="camvid", steps=3)
    return model, path


def test_save_load_gives_identical_outputs_and_the_record(saved):
    model, path = saved
    loaded = load_checkpoint(path)
    frame = torch.rand(1, 3, 48, 64)
    with torch.no_grad():
        a = model.eval().forward_clip(torch.stack([frame, frame], 1), output_frames=(0, 1))
        b = loaded.eval().forward_clip(torch.stack([frame, frame], 1), output_frames=(0, 1))
    assert torch.equal(a, b)
    record = read_checkpoint_record(path)
    assert record.model == "lstm_icnet_v2" and record.config["conv"] == "separable"
    assert record.palette == CAMVID and record.metadata == {"dataset": "camvid", "steps": 3}
    assert loaded.checkpoint_record == record


def test_wrong_model_and_foreign_tensors_are_refused_whole(saved, tmp_path):
    _, path = saved
    with pytest.raises(CheckpointError, match="holds a 'lstm_icnet_v2' model, not 'icnet'"):
        load_checkpoint(path, expect_model="icnet")
    # A record that names another configuration: shapes no longer match.
    record = json.loads(path.with_suffix(".json").read_text())
    record["config"]["conv"] = "standard"
    path.with_suffix(".json").write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match=r"does not match 'lstm_icnet_v2': (missing|unexpected|wrong shape)"):
        load_checkpoint(path)
    # Tensors of another model under a record of this one.
    other = save_checkpoint(create_model("icnet", num_classes=11, width=0.25), tmp_path / "other")
    other.with_suffix(".json").write_text(path.with_suffix(".json").read_text())
    with pytest.raises(CheckpointError, match="missing: temporal"):
        load_checkpoint(other)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda w, j: w.write_bytes(b"\xff" * 4), "too short"),
        (lambda w, j: w.write_bytes((10**12).to_bytes(8, "little") + b"{}"), "not a valid safetensors file"),
        (lambda w, j: w.write_bytes(w.read_bytes()[:-100]), "bad entry for tensor"),
        (lambda w, j: w.write_bytes((2).to_bytes(8, "little") + b"[]"), "header is not a JSON object"),
        (lambda w, j: w.write_bytes((4).to_bytes(8, "little") + b"{no}"), "header is not JSON"),
        (lambda w, j: j.write_text("{not json"), "not valid JSON"),
        (lambda w, j: j.write_text('{"format": "other"}'), "not a vseg checkpoint record"),
        (lambda w, j: j.unlink(), "no checkpoint record"),
        (lambda w, j: w.unlink(), "no checkpoint weights"),
    ],
)
def test_damaged_files_say_what_is_wrong(saved, damage, message):
    _, path = saved
    damage(path, path.with_suffix(".json"))
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_loading_never_unpickles(saved, monkeypatch):
    _, path = saved

    def forbidden(*args, **kwargs):
        raise AssertionError("torch.load must not be used for checkpoints")

    monkeypatch.setattr(torch, "load", forbidden)
    load_checkpoint(path)


def test_only_registered_models_can_be_saved(tmp_path):
    with pytest.raises(CheckpointError, match="create_model"):
        save_checkpoint(torch.nn.Conv2d(3, 3, 1), tmp_path / "x")


def test_foreign_tensors_are_refused_from_the_header_before_reading_data(saved, tmp_path, monkeypatch):
    from vseg_core import checkpoint

    _, path = saved
    other = save_checkpoint(create_model("icnet", num_classes=11, width=0.25), tmp_path / "other")
    other.with_suffix(".json").write_text(path.with_suffix(".json").read_text())

    def no_reading(*args, **kwargs):
        raise AssertionError("tensor data must not be read for a file that cannot match")

    monkeypatch.setattr(checkpoint, "load_file", no_reading)
    with pytest.raises(CheckpointError, match=r"missing: temporal.*\(\d+\)"):
        load_checkpoint(other)


def test_weights_of_another_model_name_are_refused(saved, tmp_path):
    from safetensors.torch import load_file as read
    from safetensors.torch import save_file as write

    _, path = saved
    write(read(str(path)), str(path), metadata={"format": "vseg-checkpoint", "model": "lstm_icnet_v3"})
    with pytest.raises(CheckpointError, match="holds 'lstm_icnet_v3' weights but its record names 'lstm_icnet_v2'"):
        load_checkpoint(path)


def test_saving_replaces_both_files_whole(saved):
    model, path = saved
    save_checkpoint(model, path, steps=4)
    assert read_checkpoint_record(path).metadata == {"steps": 4}
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.json", "m.safetensors"]
