"""VideoSegmenter against the model's own logits computed directly with the same weights."""

from __future__ import annotations

import inspect

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vseg_core.keyframes import FixedInterval
from vseg_core.models.registry import create_model, get_model_entry, list_models
from vseg_core.models.streaming import StatelessSegmenter, StepOutput, StreamingSegmenter
from vseg_core.resets import RESET_FIRST_FRAME, RESET_NONE, RESET_REQUESTED, RESET_SIZE_CHANGED, RESET_STAMP_GAP
from vseg_core.stream import VideoSegmenter, resolve_device

# Small real networks for the runtime's own tests (random weights); the registry-wide runtime tests
# run the registered models.


class PixelClassifier(StatelessSegmenter):
    def __init__(self, num_classes: int = 5) -> None:
        super().__init__(num_classes)
        self.conv = nn.Conv2d(3, num_classes, 3, padding=1)

    def segment(self, frame, timer):
        with timer.stage("features"):
            return self.conv(frame * 2 - 1)


class RunningMean(StreamingSegmenter):
    """Logits from the mean of all frames so far: the output depends on the whole history."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__(num_classes)
        self.conv = nn.Conv2d(3, num_classes, 1)

    def init_state(self, frame):
        return (torch.zeros_like(frame), 0)

    def step(self, frame, state, *, is_keyframe=True, timer=None):
        total, n = state
        total = total + frame
        return StepOutput(logits=self.conv(total / (n + 1)), state=(total, n + 1), ran=frozenset({"conv"}))


class CachedKeyframe(StreamingSegmenter):
    """Keyframes compute and cache features; other frames reuse them plus a cheap correction."""

    uses_keyframes = True

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__(num_classes)
        self.reference = nn.Conv2d(3, num_classes, 3, padding=1)
        self.update = nn.Conv2d(3, num_classes, 1)

    def init_state(self, frame):
        return None

    def step(self, frame, state, *, is_keyframe=True, timer=None):
        if is_keyframe:
            cached = self.reference(frame)
            return StepOutput(logits=cached, state=cached, is_keyframe=True, ran=frozenset({"reference"}))
        return StepOutput(logits=state + self.update(frame), state=state, is_keyframe=False, ran=frozenset({"update"}))


def _frames(n, h=24, w=32, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def _tensor(frame):
    return torch.from_numpy(frame).permute(2, 0, 1).unsqueeze(0).float() / 255.0


def test_stateless_labels_equal_argmax_of_the_models_logits():
    model = PixelClassifier()
    seg = VideoSegmenter(model, device="cpu", confidence=True)
    for frame in _frames(3):
        result = seg.step(frame)
        with torch.no_grad():
            logits = model(_tensor(frame))
        np.testing.assert_array_equal(result.labels, logits.argmax(1)[0].numpy().astype(np.uint8))
        expected_conf = np.round(logits.softmax(1).amax(1)[0].numpy() * 255).astype(np.uint8)
        assert np.abs(result.confidence.astype(int) - expected_conf).max() <= 1
        assert result.labels.dtype == np.uint8 and result.labels.shape == frame.shape[:2]
        assert result.info.is_keyframe and result.info.keyframe_interval == 1


def test_state_carries_across_frames_and_reset_starts_over():
    model = RunningMean()
    seg = VideoSegmenter(model, device="cpu")
    frames = _frames(4)
    results = [seg.step(f) for f in frames]
    with torch.no_grad():
        mean = torch.stack([_tensor(f) for f in frames]).mean(0)
        expected = model.conv(mean).argmax(1)[0].numpy()
    np.testing.assert_array_equal(results[-1].labels, expected)
    assert [r.info.reset_reason for r in results] == [RESET_FIRST_FRAME, RESET_NONE, RESET_NONE, RESET_NONE]
    # An explicit reset: the next result equals a fresh segmenter's on that frame.
    again = seg.step(frames[0], reset_reason=RESET_STAMP_GAP)
    np.testing.assert_array_equal(again.labels, VideoSegmenter(model, device="cpu").step(frames[0]).labels)
    assert again.info.state_reset and again.info.reset_reason == RESET_STAMP_GAP


def test_frame_size_change_resets_the_state():
    seg = VideoSegmenter(RunningMean(), device="cpu")
    seg.step(_frames(1, 24, 32)[0])
    seg.step(_frames(1, 24, 32, seed=1)[0])
    result = seg.step(_frames(1, 30, 20)[0])
    assert result.info.reset_reason == RESET_SIZE_CHANGED and result.labels.shape == (30, 20)


def test_input_size_resizes_on_the_device_and_labels_come_back_at_frame_size():
    model = PixelClassifier(num_classes=6)
    seg = VideoSegmenter(model, device="cpu", input_size=(12, 16))
    frame = _frames(1, 48, 64)[0]
    result = seg.step(frame)
    with torch.no_grad():
        # On the CPU a frame is shrunk as bytes: the float path's result rounded to bytes.
        as_bytes = F.interpolate(
            torch.from_numpy(frame).permute(2, 0, 1).unsqueeze(0), size=(12, 16), mode="bilinear",
            align_corners=False, antialias=True,
        )  # fmt: skip
        as_floats = F.interpolate(_tensor(frame), size=(12, 16), mode="bilinear", align_corners=False, antialias=True)
        assert (as_bytes.float() / 255.0 - as_floats).abs().max() <= 1.0 / 255.0
        small = as_bytes.float() / 255.0
        # A frame 4x the model's input per side: bilinear to twice the input, then nearest.
        logits = F.interpolate(model(small), size=(24, 32), mode="bilinear", align_corners=False)
    assert result.labels.shape == (48, 64)
    np.testing.assert_array_equal(result.labels, logits.argmax(1)[0].numpy().repeat(2, 0).repeat(2, 1))


@pytest.mark.parametrize("mono", [False, True])
def test_frames_smaller_than_the_input_are_enlarged_as_floats_and_mono_is_widened(mono):
    model = PixelClassifier(num_classes=6)
    frame = _frames(1, 10, 12)[0]
    frame = frame[..., 0].copy() if mono else frame
    seen = []
    model.conv.register_forward_hook(lambda _m, args, _out: seen.append(args[0]))
    VideoSegmenter(model, device="cpu", input_size=(20, 24)).step(frame)
    rgb = np.repeat(frame[..., None], 3, axis=2) if mono else frame
    expected = F.interpolate(_tensor(rgb), size=(20, 24), mode="bilinear", align_corners=False, antialias=True)
    torch.testing.assert_close(seen[-1], expected * 2 - 1, rtol=0, atol=1e-6)


def test_keyframe_policy_drives_keyframes_and_is_swappable():
    seg = VideoSegmenter(CachedKeyframe(), device="cpu", keyframe_policy=FixedInterval(3))
    keys = [seg.step(f).info.is_keyframe for f in _frames(7)]
    assert keys == [True, False, False, True, False, False, True]
    seg.set_keyframe_policy(FixedInterval(1))
    assert all(seg.step(f).info.is_keyframe for f in _frames(3))
    info = seg.step(_frames(1)[0]).info
    assert info.keyframe_interval == 1 and info.frames_since_keyframe == 0


def test_non_keyframe_labels_equal_cached_reference_plus_update():
    model = CachedKeyframe()
    seg = VideoSegmenter(model, device="cpu", keyframe_policy=FixedInterval(5))
    f0, f1 = _frames(2)
    seg.step(f0)
    result = seg.step(f1)
    with torch.no_grad():
        expected = (model.reference(_tensor(f0)) + model.update(_tensor(f1))).argmax(1)[0].numpy()
    np.testing.assert_array_equal(result.labels, expected)
    assert result.info.frames_since_keyframe == 1


def test_mono_frames_and_many_classes():
    model = PixelClassifier(num_classes=300)
    result = VideoSegmenter(model, device="cpu").step(_frames(1)[0][:, :, 0].copy())
    with torch.no_grad():
        expected = model(_tensor(_frames(1)[0][:, :, [0, 0, 0]].copy())).argmax(1)[0].numpy()
    assert result.labels.dtype == np.uint16
    np.testing.assert_array_equal(result.labels, expected)


def test_timings_cover_every_stage():
    info = VideoSegmenter(PixelClassifier(), device="cpu").step(_frames(1)[0]).info
    assert {"preprocess", "flow", "features", "fusion", "postprocess", "total"} <= info.timings_ms.keys()
    assert info.timings_ms["features"] > 0
    assert info.timings_ms["total"] >= info.timings_ms["preprocess"] + info.timings_ms["postprocess"]


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (np.zeros((4, 4, 3), np.float32), "dtype float32"),
        (np.zeros((4, 4, 4), np.uint8), r"shape \(4, 4, 4\)"),
        (np.zeros((0, 4, 3), np.uint8), "empty"),
        ([[1, 2]], "list"),
    ],
)
def test_bad_frames_say_what_was_expected(frame, message):
    with pytest.raises(ValueError, match=message):
        VideoSegmenter(PixelClassifier(), device="cpu").step(frame)


def test_nan_weights_give_a_clear_error_and_reset():
    model = PixelClassifier()
    with torch.no_grad():
        model.conv.bias.fill_(float("nan"))
    seg = VideoSegmenter(model, device="cpu")
    with pytest.raises(FloatingPointError, match="NaN or infinite logits"):
        seg.step(_frames(1)[0])


def test_bad_settings():
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        VideoSegmenter(PixelClassifier(), device="cpu", precision="fp16")
    with pytest.raises(ValueError, match="precision must be one of"):
        VideoSegmenter(PixelClassifier(), device="cpu", precision="int8")
    with pytest.raises(ValueError, match="input_size"):
        VideoSegmenter(PixelClassifier(), device="cpu", input_size=(0, 4))
    with pytest.raises(ValueError, match="StreamingSegmenter"):
        VideoSegmenter(nn.Conv2d(3, 3, 1), device="cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda:0")
    with pytest.raises(ValueError, match="device must be"):
        resolve_device("tpu")


def test_bf16_on_cpu_runs_under_autocast():
    model = PixelClassifier()
    frame = _frames(1)[0]
    fp32 = VideoSegmenter(model, device="cpu").step(frame).labels
    bf16 = VideoSegmenter(model, device="cpu", precision="bf16").step(frame).labels
    assert (fp32 == bf16).mean() > 0.9  # bf16 keeps 8 bits of mantissa: near-ties may flip


@pytest.mark.gpu
def test_cuda_fp16_matches_fp32_labels_mostly():
    model = PixelClassifier()
    frame = _frames(1, 64, 96)[0]
    cpu = VideoSegmenter(model, device="cpu").step(frame).labels
    gpu = VideoSegmenter(model, device="cuda", precision="fp16").step(frame)
    assert (gpu.labels == cpu).mean() > 0.95 and gpu.info.timings_ms["total"] > 0


# ------------------------------------------------------------------------------------------------
# Every registered model through the runtime, against its own step unrolled by hand.


def _small_registered(name: str) -> StreamingSegmenter:
    params = inspect.signature(get_model_entry(name).builder).parameters
    config = {"num_classes": 5}
    if "width" in params:
        config["width"] = 0.25
    if "small" in params:
        config["small"] = True
    torch.manual_seed(0)
    return create_model(name, **config).eval()


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_gives_the_argmax_of_its_own_unrolled_steps(name):
    model = _small_registered(name)
    frames = _frames(4, 48, 64, seed=3)
    interval = 2  # keyframe models: key, non-key, key, non-key
    seg = VideoSegmenter(model, device="cpu", keyframe_policy=FixedInterval(interval))
    results = [seg.step(f) for f in frames]
    with torch.no_grad():
        state = model.init_state(_tensor(frames[0]))
        for t, (frame, result) in enumerate(zip(frames, results, strict=True)):
            out = model.step(_tensor(frame), state, is_keyframe=t % interval == 0)
            state = out.state
            np.testing.assert_array_equal(result.labels, out.logits.argmax(1)[0].numpy(), err_msg=f"frame {t}")
            assert result.info.is_keyframe == out.is_keyframe
            assert result.info.is_keyframe == (not model.uses_keyframes or t % interval == 0)


# ------------------------------------------------------------------------------------------------
# Frames as the node hands them over, and what a failing frame leaves behind.


def test_padded_and_read_only_frames_give_the_same_labels_as_contiguous_ones():
    model = PixelClassifier()
    frame = _frames(1)[0]
    padded = np.zeros((24, 40, 3), np.uint8)  # a message with row padding, viewed without a copy
    padded[:, :32] = frame
    view = padded[:, :32]
    read_only = frame.copy()
    read_only.flags.writeable = False
    flipped_back = np.ascontiguousarray(frame[::-1])[::-1]  # negative row stride
    # At the model's size, and shrunk first (the CPU reads writable frames where they lie).
    for input_size in (None, (12, 16)):
        expected = VideoSegmenter(model, device="cpu", input_size=input_size).step(frame).labels
        seg = VideoSegmenter(model, device="cpu", input_size=input_size)
        for f in (view, read_only, flipped_back):
            before = f.copy()
            np.testing.assert_array_equal(seg.step(f).labels, expected)
            np.testing.assert_array_equal(f, before)  # read, never written


def test_mono_and_rgb_at_one_size_keep_the_state():
    seg = VideoSegmenter(RunningMean(), device="cpu")
    seg.step(_frames(1)[0])
    assert seg.step(_frames(1)[0][:, :, 1].copy()).info.reset_reason == RESET_NONE


def test_a_rejected_frame_leaves_the_stream_untouched():
    model = RunningMean()
    frames = _frames(3)
    plain = VideoSegmenter(model, device="cpu")
    expected = [plain.step(f).labels for f in frames]
    seg = VideoSegmenter(model, device="cpu")
    seg.step(frames[0])
    with pytest.raises(ValueError):
        seg.step(np.zeros((24, 32, 4), np.uint8))
    r1, r2 = seg.step(frames[1]), seg.step(frames[2])
    np.testing.assert_array_equal(r2.labels, expected[2])
    assert r1.info.reset_reason == RESET_NONE


def test_a_frame_the_model_fails_on_leaves_the_stream_and_its_pending_reset_untouched():
    # ICNet's pyramid pooling has no cells in an 8x8 frame: the model raises inside the step, after
    # the new size would have meant a reset. The stream goes on as if the frame had never come.
    torch.manual_seed(0)
    model = create_model("lstm_icnet_v2", num_classes=5, width=0.25).eval()
    frames = _frames(3, 48, 64)
    plain = VideoSegmenter(model, device="cpu")
    expected = [plain.step(f).labels for f in frames]
    seg = VideoSegmenter(model, device="cpu")
    seg.step(frames[0])
    with pytest.raises(RuntimeError):
        seg.step(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(RuntimeError):
        seg.step(np.zeros((8, 8, 3), np.uint8), reset_reason=RESET_STAMP_GAP)  # nor does an asked-for reset
    r1, r2 = seg.step(frames[1]), seg.step(frames[2])
    assert (r1.info.state_reset, r1.info.reset_reason) == (False, RESET_NONE)
    np.testing.assert_array_equal(r1.labels, expected[1])
    np.testing.assert_array_equal(r2.labels, expected[2])


def test_frames_far_larger_than_the_model_input_get_labels_from_twice_its_size_by_nearest():
    torch.manual_seed(1)
    seg = VideoSegmenter(RunningMean(), device="cpu", input_size=(24, 32), confidence=True)
    logits = torch.randn(1, 5, 24, 32)
    # Up to twice the logits' size per side: bilinear, as always.
    labels, conf, finite = seg._postprocess(logits, (40, 64))
    fine = F.interpolate(logits, size=(40, 64), mode="bilinear", align_corners=False)[0]
    np.testing.assert_array_equal(labels, fine.argmax(0).numpy())
    # Beyond: bilinear to twice the size, then nearest (OpenCV's nearest computed independently).
    labels, conf, finite = seg._postprocess(logits, (480, 640))
    fine = F.interpolate(logits, size=(48, 64), mode="bilinear", align_corners=False)[0]
    small = fine.argmax(0).numpy().astype(np.uint8)
    np.testing.assert_array_equal(labels, cv2.resize(small, (640, 480), interpolation=cv2.INTER_NEAREST))
    small_conf = (255.0 / torch.exp(fine - fine.amax(0)).sum(0)).round().to(torch.uint8).numpy()
    np.testing.assert_array_equal(conf, cv2.resize(small_conf, (640, 480), interpolation=cv2.INTER_NEAREST))
    assert finite and labels.shape == conf.shape == (480, 640)


def test_wide_labels_and_confidence_share_the_one_download():
    model = PixelClassifier(num_classes=300)
    frame = _frames(1)[0]
    result = VideoSegmenter(model, device="cpu", confidence=True, timing=False).step(frame)
    with torch.no_grad():
        logits = model(_tensor(frame))
    np.testing.assert_array_equal(result.labels, logits.argmax(1)[0].numpy())
    expected_conf = np.round(logits.softmax(1).amax(1)[0].numpy() * 255)
    assert result.labels.dtype == np.uint16 and result.confidence.dtype == np.uint8
    assert np.abs(result.confidence.astype(int) - expected_conf).max() <= 1
    assert result.info.timings_ms == {}


def test_reset_reasons_are_reported_once():
    seg = VideoSegmenter(PixelClassifier(), device="cpu")
    with pytest.raises(ValueError, match="reset reason must be a string"):
        seg.reset(3)
    seg.step(_frames(1)[0])
    seg.reset()
    infos = [seg.step(f).info for f in _frames(2)]
    assert [(i.state_reset, i.reset_reason) for i in infos] == [(True, RESET_REQUESTED), (False, RESET_NONE)]


def test_wide_labels_reach_large_frames_at_the_same_pixels_as_narrow_ones():
    from vseg_core.stream import _nearest

    ids = torch.randint(0, 256, (37, 53), dtype=torch.uint8)
    for size in [(1080, 1920), (111, 4000), (74, 106), (2160, 3840)]:
        narrow = _nearest(ids, size)
        wide = _nearest(ids.to(torch.int32), size, wide=True)
        assert narrow.dtype == torch.uint8 and wide.dtype == torch.int32
        assert torch.equal(narrow.to(torch.int32), wide), size
