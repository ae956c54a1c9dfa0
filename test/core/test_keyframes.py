"""Keyframe policies driven the way the runtime drives them, against schedules worked out by hand."""

import numpy as np
import pytest
import torch

from vseg_core.keyframes import AdaptiveConfig, AdaptiveKeyframes, FixedInterval, make_keyframe_policy


def _run(policy, extras_per_frame, frames):
    """Simulate the runtime: a keyframe first, then ask, step (observe), count."""
    keys, distance = [True], 0
    for i in range(1, frames):
        key = policy.should_key(distance + 1)
        keys.append(key)
        policy.observe(extras_per_frame(i), is_keyframe=key)
        distance = 0 if key else distance + 1
    return keys


def _flow(px_per_frame, width=40):
    flow = torch.zeros(1, 2, 10, width)
    flow[:, 0] = px_per_frame
    return {"flow": flow}


def test_fixed_interval():
    assert _run(FixedInterval(3), lambda i: {}, 8) == [True, False, False, True, False, False, True, False]
    assert all(_run(FixedInterval(1), lambda i: {}, 4))


def test_adaptive_keys_on_accumulated_motion_within_bounds():
    # 1 px per frame on a 40 px wide flow map = 2.5 % of the width per frame: passes 4 % on the 2nd frame.
    policy = AdaptiveKeyframes(AdaptiveConfig(max_interval=10, motion_threshold=0.04))
    assert _run(policy, lambda i: _flow(1.0), 7) == [True, False, False, True, False, False, True]
    # A still scene keys only at the maximum interval.
    still = AdaptiveKeyframes(AdaptiveConfig(max_interval=4))
    assert _run(still, lambda i: _flow(0.0), 9) == [True, False, False, False, True, False, False, False, True]
    # min_interval holds keyframes apart even under fast motion.
    fast = AdaptiveKeyframes(AdaptiveConfig(max_interval=10, min_interval=3, motion_threshold=0.01))
    assert _run(fast, lambda i: _flow(5.0), 7) == [True, False, False, True, False, False, True]


def test_adaptive_keys_on_disagreement():
    policy = AdaptiveKeyframes(AdaptiveConfig(max_interval=10, disagreement_threshold=0.2))
    share = {1: 0.05, 2: 0.3, 3: 0.0, 4: 0.0}
    keys = _run(policy, lambda i: {"disagreement": torch.tensor(share.get(i, 0.0))}, 5)
    assert keys == [True, False, False, True, False]


def test_adaptive_takes_disagreement_from_the_two_score_maps():
    # Reference says class 0 everywhere; the update branch says class 1 on `share` of the 10 columns.
    share = {1: 0.1, 2: 0.3}

    def scores(i):
        ref = torch.zeros(1, 2, 4, 10)
        ref[:, 0] = 1.0
        upd = ref.clone()
        upd[:, 1, :, : round(share.get(i, 0.0) * 10)] = 2.0
        return {"reference_scores": ref, "update_scores": upd}

    policy = AdaptiveKeyframes(AdaptiveConfig(max_interval=10, disagreement_threshold=0.2))
    assert _run(policy, scores, 5) == [True, False, False, True, False]
    with pytest.raises(ValueError, match="one shape"):
        policy.observe(
            {"reference_scores": torch.zeros(1, 2, 4, 4), "update_scores": torch.zeros(1, 3, 4, 4)}, is_keyframe=False
        )


def test_large_maps_are_estimated_on_a_grid_close_to_the_exact_share_and_motion():
    # 360x480 maps: the policy samples a grid (about 8k points) instead of every pixel.
    gen = torch.Generator().manual_seed(0)
    ref = torch.randn(1, 11, 360, 480, generator=gen)
    upd = ref.clone()
    blobs = torch.nn.functional.interpolate(torch.rand(1, 1, 12, 16, generator=gen), size=(360, 480)) > 0.7
    upd[:, 3] += 10.0 * blobs[:, 0]  # the update branch says class 3 wherever a blob is
    exact = (ref.argmax(1) != upd.argmax(1)).float().mean().item()
    flow = torch.randn(1, 2, 360, 480, generator=gen)
    exact_motion = (flow.norm(dim=1).mean() / 480).item()
    policy = AdaptiveKeyframes(AdaptiveConfig(max_interval=10))
    policy.observe({"flow": flow, "reference_scores": ref, "update_scores": upd}, is_keyframe=False)
    policy.should_key(1)
    assert 0.2 < exact < 0.5
    assert policy.disagreement == pytest.approx(exact, abs=0.01)
    assert policy.motion == pytest.approx(exact_motion, rel=0.01)


def test_reset_forgets_accumulated_motion():
    policy = AdaptiveKeyframes(AdaptiveConfig(max_interval=10, motion_threshold=0.04))
    policy.observe(_flow(1.0), is_keyframe=False)
    policy.observe(_flow(1.0), is_keyframe=False)
    policy.reset()
    assert not policy.should_key(1) and policy.motion == 0.0


def test_bad_settings_and_names():
    for bad in (0, 2.0, True, "3"):
        with pytest.raises(ValueError, match="keyframe interval must be an integer >= 1"):
            FixedInterval(bad)
    assert FixedInterval(np.int64(3)).max_interval == 3  # numpy ints are fine
    with pytest.raises(ValueError, match="max_interval must be an integer"):
        AdaptiveConfig(max_interval=2.5)
    with pytest.raises(ValueError, match="keyframe policy 'fixed' takes interval; got \\['max_interval'\\]"):
        make_keyframe_policy("fixed", max_interval=3)
    with pytest.raises(ValueError, match="min_interval <= max_interval"):
        AdaptiveConfig(max_interval=2, min_interval=3)
    with pytest.raises(ValueError, match="motion_threshold"):
        AdaptiveConfig(motion_threshold=0)
    with pytest.raises(ValueError, match="unknown keyframe policy 'often'; policies: fixed, adaptive"):
        make_keyframe_policy("often")
    assert make_keyframe_policy("fixed", interval=4).max_interval == 4
    assert make_keyframe_policy("adaptive", max_interval=7).max_interval == 7
    with pytest.raises(ValueError, match="flow"):
        AdaptiveKeyframes().observe({"flow": torch.zeros(1, 3, 4, 4)}, is_keyframe=False)
