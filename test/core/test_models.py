"""Every registered model, timm style: shapes, finite outputs, gradients, recurrence, dtype, clips."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

from vseg_core.models.registry import create_model, get_model_entry, list_models, register_model
from vseg_core.models.streaming import StatelessSegmenter

H, W, CLASSES = 65, 97, 7  # odd sizes, a class count no model defaults to


def _small(name: str, **extra) -> nn.Module:
    """The model at a width that runs in milliseconds on a CPU (when the builder has one)."""
    params = inspect.signature(get_model_entry(name).builder).parameters
    config = {"num_classes": CLASSES, **extra}
    if "width" in params:
        config["width"] = 0.25
    if "small" in params:
        config["small"] = True
    return create_model(name, **config)


def _clip(t: int = 3, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    base = torch.rand(1, 1, 3, H, W, generator=g, dtype=dtype)
    # Consecutive frames differ a little, like video.
    return (base + 0.05 * torch.rand(1, t, 3, H, W, generator=g, dtype=dtype)).clamp(0, 1)


def _perturbed(model: nn.Module) -> nn.Module:
    """The model with every parameter nudged by noise. Some inits switch a branch off on purpose
    (Accel-101's fusion starts as the identity on the update branch, DFF's scale field as weight
    0), which hides at initialisation whether the branch is wired in; the nudge tests the wiring."""
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


MODELS = list_models()


@pytest.mark.parametrize("name", MODELS)
def test_shape_and_finite_logits_at_an_odd_size(name):
    model = _small(name).eval()
    frame = _clip(1)[:, 0]
    with torch.no_grad():
        out = model.step(frame, model.init_state(frame))
    assert out.logits.shape == (1, CLASSES, H, W)
    assert torch.isfinite(out.logits).all()
    assert out.is_keyframe


@pytest.mark.parametrize("name", MODELS)
def test_every_parameter_gets_a_gradient_through_a_clip(name):
    model = _perturbed(_small(name)).train()
    logits = model.forward_clip(_clip(3), output_frames=(0, 1, 2))
    assert logits.shape == (1, 3, CLASSES, H, W)
    logits.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert missing == []


@pytest.mark.parametrize("name", MODELS)
def test_unrolled_steps_equal_the_clip_forward(name):
    # float64, so that a clip forward that batches or reorders work agrees to rounding, not to
    # float32 noise; the clip starts on a keyframe and warps from it for the rest (streaming.py).
    model = _small(name).double().eval()
    clip = _clip(3, torch.float64)
    with torch.no_grad():
        expected = model.forward_clip(clip, output_frames=(-1, 0))
        state = model.init_state(clip[:, 0])
        steps = []
        for t in range(3):
            out = model.step(clip[:, t], state, is_keyframe=t == 0)
            state = out.state
            steps.append(out.logits)
    torch.testing.assert_close(expected[:, 0], steps[2])
    torch.testing.assert_close(expected[:, 1], steps[0])


@pytest.mark.parametrize("name", MODELS)
def test_state_carried_across_steps_changes_the_output(name):
    # The same frame after two different first frames: only the state differs between the runs.
    model = _perturbed(_small(name)).eval()
    if isinstance(model, StatelessSegmenter):
        pytest.skip("single-frame model: no state")
    clip = _clip(3)
    frame = clip[:, 2]
    with torch.no_grad():
        outputs = []
        for first in (clip[:, 0], clip[:, 1]):
            state = model.step(first, model.init_state(first)).state
            outputs.append(model.step(frame, state, is_keyframe=False).logits)
    assert not torch.allclose(outputs[0], outputs[1]), "the state of the previous frame made no difference"


@pytest.mark.parametrize("name", MODELS)
def test_state_follows_the_input_dtype(name):
    model = _small(name).double().eval()
    frame = _clip(1, torch.float64)[:, 0]
    with torch.no_grad():
        out = model.step(frame, model.init_state(frame))
        out = model.step(frame, out.state, is_keyframe=False)
    assert out.logits.dtype == torch.float64
    assert all(t.dtype in (torch.float64, torch.int64, torch.bool) for t in _tensors(out.state))


def _tensors(value) -> list[torch.Tensor]:
    """Every tensor inside a model state (tensors, dicts, sequences, dataclasses)."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    elif hasattr(value, "__dataclass_fields__"):
        value = [getattr(value, f) for f in value.__dataclass_fields__]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    return []


@pytest.mark.parametrize("name", MODELS)
def test_state_follows_the_input_device(name):
    # The meta device stands in for a second device: nothing is computed, only placed.
    model = _small(name).to("meta").eval()
    frame = torch.zeros(1, 3, H, W, device="meta")
    with torch.no_grad():
        out = model.step(frame, model.init_state(frame))
        out = model.step(frame, out.state, is_keyframe=False)
    assert out.logits.device.type == "meta" and out.logits.shape == (1, CLASSES, H, W)
    assert all(t.device.type == "meta" for t in _tensors(out.state))


def test_registry_refuses_duplicates_and_names_the_valid_models():
    with pytest.raises(ValueError, match="already registered"):
        register_model("icnet", family="convlstm")(lambda **kw: nn.Identity())
    with pytest.raises(ValueError, match=r"unknown model 'nope'; registered models: .*icnet.*lstm_icnet_v2"):
        create_model("nope")
    with pytest.raises(ValueError, match="does not accept these settings"):
        create_model("icnet", colour="red")


def test_created_models_remember_their_name_and_config():
    model = create_model("lstm_icnet_v2", num_classes=5, conv="separable", width=0.25)
    assert model.model_name == "lstm_icnet_v2"
    assert model.model_config == {"num_classes": 5, "conv": "separable", "width": 0.25}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"conv": "dilated"}, "unknown conv 'dilated'; LSTM-ICNet convs: standard, spatial, depthwise, separable"),
        ({"reduce_channels": 50}, "reduce_channels must be None or one of 64, 48, 32"),
        ({"num_classes": 0}, "num_classes must be at least 1"),
        ({"width": 0}, "width must be in"),
    ],
)
def test_invalid_lstm_icnet_settings(config, message):
    with pytest.raises(ValueError, match=message):
        create_model("lstm_icnet_v2", **config)


def test_bad_frames_are_refused_at_the_edge():
    model = _small("lstm_icnet_v2")
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model.step(torch.zeros(1, 4, 32, 32), model.init_state(torch.zeros(1, 3, 32, 32)))
    with pytest.raises(ValueError, match="floating point"):
        model(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="init_state"):
        model.step(torch.zeros(1, 3, 32, 32), {})
