"""DFF and Accel: keyframes are DeepLab-101, DFF is Accel without its update branch, steps run what
they claim, incremental warping, the clip forward equals the unrolled steps, freezing, bad input."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vseg_core.models.accel import FUSION_ONLY, Accel, FeatureFusion
from vseg_core.models.deeplab import build_deeplab
from vseg_core.models.registry import create_model
from vseg_core.nn.motion import Motion, MotionSource
from vseg_core.nn.warp import warp

H, W, C = 64, 96, 5


def _clip(t=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(1, 1, 3, H, W, generator=g)
    return (base + 0.05 * torch.rand(1, t, 3, H, W, generator=g)).clamp(0, 1)


@pytest.fixture(scope="module")
def accel18():
    torch.manual_seed(0)
    return create_model("accel18", num_classes=C, width=0.25).eval()


@pytest.fixture(scope="module")
def accel101():
    torch.manual_seed(0)
    return create_model("accel101", num_classes=C, width=0.25).eval()


@pytest.fixture(scope="module")
def dff():
    torch.manual_seed(0)
    return create_model("dff", num_classes=C, width=0.25).eval()


def _deeplab101_of(model: Accel) -> nn.Module:
    deeplab = build_deeplab(101, num_classes=C, width=0.25).eval()
    deeplab.features.load_state_dict(model.reference.state_dict())
    deeplab.head.load_state_dict(model.reference_head.state_dict())
    return deeplab


def _steps(model, clip, keys):
    state, outs = model.init_state(clip[:, 0]), []
    with torch.no_grad():
        for t, key in enumerate(keys):
            out = model.step(clip[:, t], state, is_keyframe=key)
            state = out.state
            outs.append(out)
    return outs


def test_at_keyframe_interval_1_accel_is_deeplab101(accel18):
    clip = _clip(3)
    deeplab = _deeplab101_of(accel18)
    for t, out in enumerate(_steps(accel18, clip, [True, True, True])):
        assert out.is_keyframe
        with torch.no_grad():
            torch.testing.assert_close(out.logits, deeplab(clip[:, t]))


def test_fresh_accel101_is_deeplab101_on_every_frame(accel101):
    # The code initialises the feature fusion as the identity on the update (= reference) features.
    clip = _clip(3)
    deeplab = _deeplab101_of(accel101)
    for t, out in enumerate(_steps(accel101, clip, [True, False, False])):
        with torch.no_grad():
            torch.testing.assert_close(out.logits, deeplab(clip[:, t]), rtol=1e-4, atol=1e-5)
    assert isinstance(accel101.fusion, FeatureFusion) and accel101.update is None and accel101.shares_reference


def test_dff_equals_accel_with_the_update_branch_switched_off(accel18):
    dff = create_model("dff", num_classes=C, width=0.25).eval()
    missing, unexpected = dff.load_state_dict(accel18.state_dict(), strict=False)
    assert missing == ["scale_field.conv.weight"]
    assert {k.split(".")[0] for k in unexpected} == {"update", "update_head", "fusion"}
    switched_off = Accel(
        num_classes=C, reference=accel18.reference, reference_head=accel18.reference_head, motion=accel18.motion
    ).eval()
    clip = _clip(4)
    keys = [True, False, False, True]
    for a, b in zip(_steps(dff, clip, keys), _steps(switched_off, clip, keys), strict=True):
        torch.testing.assert_close(a.logits, b.logits)


def _count_calls(model, names):
    calls = Counter()
    hooks = [
        getattr(model, n).register_forward_hook(lambda *_, n=n: calls.update([n]))
        for n in names
        if getattr(model, n) is not None
    ]
    return calls, hooks


@pytest.mark.parametrize(
    ("name", "key_calls", "nonkey_calls", "nonkey_ran"),
    [
        (
            "accel18",
            {"reference": 1, "reference_head": 1},
            {"motion": 1, "reference_head": 1, "update": 1, "update_head": 1, "fusion": 1},
            {"flow", "task_head", "update", "fusion"},
        ),
        (
            "accel101",
            {"reference": 1, "reference_head": 1},
            {"motion": 1, "reference": 1, "reference_head": 1, "fusion": 1},  # the update net is the reference
            {"flow", "task_head", "update", "fusion"},
        ),
        (
            "dff",
            {"reference": 1, "reference_head": 1},
            {"motion": 1, "scale_field": 1, "reference_head": 1},
            {"flow", "scale_field", "task_head"},
        ),
    ],
)
def test_steps_run_the_networks_they_claim(request, name, key_calls, nonkey_calls, nonkey_ran):
    model = request.getfixturevalue(name)
    names = ["reference", "reference_head", "motion", "scale_field", "update", "update_head", "fusion"]
    calls, hooks = _count_calls(model, names)
    try:
        clip = _clip(2)
        with torch.no_grad():
            key = model.step(clip[:, 0], model.init_state(clip[:, 0]), is_keyframe=True)
            assert dict(calls) == key_calls and key.ran == {"reference", "task_head"} and key.is_keyframe
            calls.clear()
            nonkey = model.step(clip[:, 1], key.state, is_keyframe=False)
            assert dict(calls) == nonkey_calls and nonkey.ran == nonkey_ran and not nonkey.is_keyframe
    finally:
        for hook in hooks:
            hook.remove()
    assert nonkey.extras["flow"].shape == (1, 2, 4, 6)
    assert int(nonkey.state.since_key) == 1 and int(key.state.since_key) == 0


def test_the_first_frame_is_a_keyframe_whatever_the_caller_says(dff):
    frame = _clip(1)[:, 0]
    with torch.no_grad():
        out = dff.step(frame, dff.init_state(frame), is_keyframe=False)
    assert out.is_keyframe and out.ran == {"reference", "task_head"}


class _ConstantFlow(MotionSource):
    """Integer flow of one feature pixel to the right; records the pairs it sees."""

    def __init__(self, shape=None):
        super().__init__()
        self.pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.shape = shape

    def forward(self, current, previous, *, grid):
        self.pairs.append((current, previous))
        flow = torch.zeros(current.shape[0], 2, *(self.shape or grid))
        flow[:, 0] = 1.0
        return Motion(flow)


def test_warping_is_incremental_frame_to_frame(dff):
    source = _ConstantFlow()
    model = Accel(num_classes=C, reference=dff.reference, reference_head=dff.reference_head, motion=source).eval()
    clip = _clip(3)
    outs = _steps(model, clip, [True, False, False])
    ((c1, p1), (c2, p2)) = source.pairs
    assert c1 is clip[:, 1] or torch.equal(c1, clip[:, 1])
    assert torch.equal(p1, clip[:, 0]) and torch.equal(c2, clip[:, 2]) and torch.equal(p2, clip[:, 1])
    flow = torch.zeros(1, 2, 4, 6)
    flow[:, 0] = 1.0
    key_features = outs[0].state.features
    torch.testing.assert_close(outs[2].state.features, warp(warp(key_features, flow), flow))
    torch.testing.assert_close(outs[2].state.features[..., :4], key_features[..., 2:])


@pytest.mark.parametrize("name", ["accel18", "accel101", "dff"])
def test_unrolled_steps_equal_the_clip_forward(request, name):
    model = request.getfixturevalue(name)
    clip = _clip(4)
    outs = _steps(model, clip, [True, False, False, False])
    with torch.no_grad():
        logits = model.forward_clip(clip, output_frames=(3, 0, 2))
    for i, t in enumerate((3, 0, 2)):
        torch.testing.assert_close(logits[:, i], outs[t].logits, rtol=1e-4, atol=1e-5)


def test_clip_gradients_reach_flow_and_both_branches():
    model = create_model("accel18", num_classes=C, width=0.25).train()
    model.forward_clip(_clip(3)).square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert missing == []


def test_phase_1_trains_only_the_fusion_layer():
    model = create_model("accel18", num_classes=C, width=0.25)
    model.set_trainable(FUSION_ONLY)
    model.train()
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"fusion"}
    assert not model.reference.training and not model.update.training and model.fusion.training
    model.forward_clip(_clip(2)).mean().backward()
    assert all(p.grad is None for n, p in model.named_parameters() if not n.startswith("fusion."))
    model.set_trainable(["reference", "motion", "update", "fusion"])
    assert all(p.requires_grad for p in model.parameters()) and model.reference.training
    with pytest.raises(ValueError, match="unknown parts"):
        model.set_trainable(["backbone"])


def test_accel101_trains_its_shared_net_as_one(accel101):
    with pytest.raises(ValueError, match="train or freeze both together"):
        accel101.set_trainable(["update", "fusion"])


def test_a_frame_of_another_size_is_refused(dff):
    clip = _clip(1)
    with torch.no_grad():
        out = dff.step(clip[:, 0], dff.init_state(clip[:, 0]))
        with pytest.raises(ValueError, match=r"\(1, 3, 64, 96\).*init_state"):
            dff.step(torch.rand(1, 3, 64, 80), out.state, is_keyframe=False)
        with pytest.raises(ValueError, match="init_state"):
            dff.step(torch.rand(1, 3, 64, 80), out.state, is_keyframe=True)


def test_flow_of_the_wrong_shape_is_refused(dff):
    model = Accel(
        num_classes=C, reference=dff.reference, reference_head=dff.reference_head, motion=_ConstantFlow((3, 6))
    ).eval()
    clip = _clip(2)
    outs = _steps(model, clip, [True])
    with torch.no_grad(), pytest.raises(ValueError, match=r"\(1, 2, 4, 6\)"):
        model.step(clip[:, 1], outs[0].state, is_keyframe=False)


def test_bad_settings():
    with pytest.raises(ValueError, match="flownet, dis"):
        create_model("accel18", motion="lucas-kanade", width=0.25)
    with pytest.raises(ValueError, match="no features for a scale field"):
        create_model("dff", motion="dis", scale_field=True, width=0.25)


def test_a_reference_on_the_enlarged_frame_is_its_deeplab_there_resized_back():
    torch.manual_seed(2)
    model = create_model("accel_lite0", num_classes=C, reference="lite0", reference_scale=1.5).eval()
    with torch.no_grad():
        nn.init.normal_(model.fusion.conv.weight, 0.0, 0.5)  # a fusion that mixes both branches
    clip = _clip(3)
    outs = _steps(model, clip, [True, False, False])
    with torch.no_grad():
        # By hand: the frame at 1.5x (96x144), the reference and its head there (x16, 6x9 cells), the
        # logits resized to the frame.
        big = F.interpolate(clip[:, 0], size=(96, 144), mode="bilinear", align_corners=False)
        features = model.reference(model.normalize(big))
        scores = F.interpolate(model.reference_head(features, None), size=(96, 144), mode="bilinear")
        key = F.interpolate(scores, size=(H, W), mode="bilinear")
        # A non-key frame: the warped 6x9 reference map and the 4x6 update map meet at the frame's size.
        warped = outs[1].state.features
        reference = F.interpolate(model.reference_head(warped, None), size=(96, 144), mode="bilinear")
        reference = F.interpolate(reference, size=(H, W), mode="bilinear")
        update = model.update_head(model.update(model.normalize(clip[:, 1])), (H, W))
        nonkey = model.fusion(reference, update)
        clip_logits = model.forward_clip(clip, output_frames=(2, 0))
    torch.testing.assert_close(outs[0].logits, key, rtol=1e-4, atol=1e-5)
    assert features.shape[-2:] == outs[0].state.features.shape[-2:] == outs[1].extras["flow"].shape[-2:] == (6, 9)
    torch.testing.assert_close(outs[1].logits, nonkey, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(outs[1].logits, reference, atol=1e-3)  # the update branch counts
    for i, t in enumerate((2, 0)):  # the clip forward is the unrolled stream
        torch.testing.assert_close(clip_logits[:, i], outs[t].logits, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=r"reference_scale must be from 1 to 4 .*got 0\.5"):
        create_model("accel_lite0", num_classes=C, reference_scale=0.5)
    with pytest.raises(ValueError, match=r"reference_scale 1\.5 needs flow on the reference's grid: use motion='dis'"):
        create_model("accel_lite0", num_classes=C, motion="flownet", reference_scale=1.5)


def test_dis_motion_runs_without_weights():
    model = create_model("accel18", num_classes=C, motion="dis", width=0.25).eval()
    assert not any("motion" in n for n, _ in model.named_parameters())
    outs = _steps(model, _clip(2), [True, False])
    assert outs[1].logits.shape == (1, C, H, W) and outs[1].extras["flow"].shape == (1, 2, 4, 6)


@pytest.mark.parametrize(("height", "width"), [(H, W), (48, 64)])  # 48x64: score grids of 3x4 and 4x4
def test_score_fusion_equals_fusing_the_upsampled_maps(height, width):
    # The code upsamples both score maps to the frame and fuses them there; where the two grids
    # agree in size the model fuses first and upsamples once.
    torch.manual_seed(1)
    model = create_model("accel18", num_classes=C, width=0.25).eval()
    with torch.no_grad():
        nn.init.normal_(model.fusion.conv.weight, 0.0, 0.5)  # a fusion that mixes both branches
        nn.init.normal_(model.fusion.conv.bias, 0.0, 0.5)
    clip = _clip(2)[..., :height, :width]
    outs = _steps(model, clip, [True, False])
    with torch.no_grad():
        warped = outs[1].state.features  # the keyframe's features warped to frame 1
        update = model.update(model.normalize(clip[:, 1]))
        size = (height, width)
        expected = model.fusion(model.reference_head(warped, size), model.update_head(update, size))
    # Equal up to float32 rounding of the reordered sums: 1e-4 of the largest logit.
    scale = expected.abs().max().item()
    torch.testing.assert_close(outs[1].logits, expected, rtol=0, atol=1e-4 * scale)
    same_grid = update.shape[-2:] == warped.shape[-2:]
    assert same_grid == ((height, width) == (H, W))
    scores_size = warped.shape[-2:] if same_grid else size
    assert scale > 0.05 and outs[1].extras["reference_scores"].shape[-2:] == scores_size


@pytest.mark.slow  # builds the seven full-size models (about 15 s on 2 CPU cores)
def test_the_readme_accel_cost_table_is_what_its_command_prints(capsys):
    from vseg_core.cli import main

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("**Accel vs DeepLab-101**") :]
    command = re.search(r"`vseg (models [^`]+)`", section).group(1).split()
    rows = re.findall(
        r"^\| (\w+) \| ([\d.]+) \| ([\d.]+|-) \| ([\d.]+|-) \| \**([\d.]+)", section.split("\n\n")[1], re.M
    )
    assert [row[0] for row in rows] == command[1:]
    assert main(command) == 0
    # The printed table: model, family, params, key GFLOPs, non-key GFLOPs, ...
    printed = {cells[0]: cells[3:5] for cells in map(str.split, capsys.readouterr().out.splitlines()[3:])}
    reference = float(printed["deeplab101"][0])

    def shown(text: str, value: float) -> bool:  # text is value rounded (ratios come from rounded GFLOPs)
        return abs(float(text) - value) <= 0.5 * 10 ** -len(text.partition(".")[2]) + 2e-5

    for name, key, nonkey, ratio, amortised in rows:
        assert [key, nonkey] == printed[name], name
        if nonkey == "-":
            assert ratio == "-" and shown(amortised, float(key) / reference), name
            continue
        interval = 3 if name == "accel101" else 5  # Accel-101's own keyframe interval
        assert shown(ratio, float(nonkey) / reference), name
        assert shown(amortised, (float(key) + (interval - 1) * float(nonkey)) / interval / reference), name


@pytest.mark.slow  # builds the full-size Lite models twice (about 10 s on 2 CPU cores)
def test_the_readme_accel_lite_cost_table_is_what_its_commands_print(capsys):
    from vseg_core.cli import main

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("**Accel-Lite0 vs its reference**") :]
    scaled = re.search(r"`vseg (models [^`]+)`", section).group(1).split()
    plain = scaled[: scaled.index("--config")]

    def printed(command: list[str]) -> dict[str, list[str]]:  # model -> [key GFLOPs, non-key GFLOPs]
        assert main(command) == 0
        return {cells[0]: cells[3:5] for cells in map(str.split, capsys.readouterr().out.splitlines()[3:])}

    costs = printed(plain)
    costs["accel_lite0 scaled"] = printed(scaled)["accel_lite0"]
    rows = re.findall(r"^\| (\w+)(, `reference_scale)?[^|]*\| ([\d.]+) \| ([\d.]+|-) \| \**([\d.]+|-)",
                      section.split("\n\n")[1], re.M)  # fmt: skip
    labels = [name + (" scaled" if scale else "") for name, scale, *_ in rows]
    assert labels == ["deeplab_lite0", "deeplab_lite2", "accel_lite0", "accel_lite0 scaled"]
    for label, (_, _, key, nonkey, amortised) in zip(labels, rows, strict=True):
        assert [key, nonkey] == costs[label], label
        if nonkey != "-":
            own = (float(key) + 4 * float(nonkey)) / 5 / float(key)  # its reference: the keyframe network
            assert abs(float(amortised) - own) <= 0.005 + 1e-6, label
