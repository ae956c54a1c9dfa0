"""FlowNetS (Accel layer list), DFF's scale field, and the motion sources behind one interface."""

from __future__ import annotations

import math

import pytest
import torch

from vseg_core.nn.flownet import FLOW_SCALE, FlowNetS, ScaleField
from vseg_core.nn.motion import DISFlow, LearnedFlow, build_motion


@pytest.fixture(scope="module")
def small_flownet():
    return FlowNetS(width=0.25).eval()


def test_paper_layer_list_channels():
    net = FlowNetS()
    convs = [net.conv1, net.conv2, net.conv3, net.conv3_1, net.conv4, net.conv4_1, net.conv5, net.conv5_1]
    convs += [net.conv6, net.conv6_1]
    assert [c[0].out_channels for c in convs] == [64, 128, 256, 256, 512, 512, 512, 512, 1024, 1024]
    assert [c[0].kernel_size[0] for c in convs] == [7, 5, 5, 3, 3, 3, 3, 3, 3, 3]
    assert all(c[1].negative_slope == 0.1 for c in convs)
    # conv2 (128) + deconv2 (64) + upsampled flow (2): the Concat5 the code pools to stride 16.
    assert net.out_channels == 194 and net.predict_flow.in_channels == 194


@pytest.mark.parametrize(("h", "w"), [(64, 96), (65, 97), (40, 50)])
def test_flow_lands_on_the_stride_16_grid(small_flownet, h, w):
    a, b = torch.rand(2, 1, 3, h, w)
    with torch.no_grad():
        flow, features = small_flownet(a, b)
    assert flow.shape == (1, 2, math.ceil(h / 16), math.ceil(w / 16))
    assert features.shape == (1, small_flownet.out_channels, *flow.shape[-2:])


def test_prediction_is_scaled_by_2_5(small_flownet):
    net = FlowNetS(width=0.25)
    net.load_state_dict(small_flownet.state_dict())
    with torch.no_grad():
        net.predict_flow.weight.zero_()
        net.predict_flow.bias.copy_(torch.tensor([1.0, -2.0]))
        flow, _ = net(*torch.rand(2, 1, 3, 32, 48))
    assert FLOW_SCALE == 2.5
    torch.testing.assert_close(flow[0, :, 0, 0], torch.tensor([2.5, -5.0]))


def test_scale_field_starts_as_the_identity():
    field = ScaleField(6, 5)
    assert [n for n, _ in field.named_parameters()] == ["conv.weight"]
    torch.testing.assert_close(field(torch.rand(2, 6, 3, 4)), torch.ones(2, 5, 3, 4))


def test_flownet_rejects_mismatched_pairs(small_flownet):
    with pytest.raises(ValueError, match=r"two \(B, 3, H, W\) frames of one shape"):
        small_flownet(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 48))


def test_unknown_motion_source_names_the_valid_ones():
    with pytest.raises(ValueError, match=r"'raft'.*flownet, dis"):
        build_motion("raft")


def test_learned_flow_checks_the_grid():
    source = build_motion("flownet", width=0.25)
    assert isinstance(source, LearnedFlow) and source.feature_channels > 0
    a, b = torch.rand(2, 1, 3, 64, 96)
    with torch.no_grad():
        assert source(a, b, grid=(4, 6)).flow.shape == (1, 2, 4, 6)
        with pytest.raises(ValueError, match=r"expected \(B, 2, h, w\) = \(1, 2, 5, 6\)"):
            source(a, b, grid=(5, 6))


def _texture(h: int, w: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    coarse = torch.rand(1, 3, h // 8, w // 8, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)


def test_dis_flow_points_from_the_current_frame_back_to_the_previous_one():
    source = build_motion("dis")
    assert isinstance(source, DISFlow) and source.feature_channels == 0
    scene = _texture(160, 256 + 32)
    previous, current = scene[..., 16 : 16 + 256], scene[..., :256]  # the content moved 16 px right
    motion = source(current, previous, grid=(10, 16))
    assert motion.features is None and motion.flow.shape == (1, 2, 10, 16)
    inner = motion.flow[0, :, 2:-2, 2:-2]
    # A current pixel was 16 frame pixels = 1 feature pixel further left in the previous frame.
    assert inner[0].median().item() == pytest.approx(-1.0, abs=0.15)
    assert inner[1].median().item() == pytest.approx(0.0, abs=0.15)


def test_dis_flow_costs_nothing_on_the_meta_device():
    a = torch.zeros(2, 3, 64, 96, device="meta")
    flow = build_motion("dis")(a, a, grid=(4, 6)).flow
    assert flow.device.type == "meta" and flow.shape == (2, 2, 4, 6)
