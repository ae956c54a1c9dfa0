"""Unlabelled video from disk: image folders and video files, their order, pixels and errors."""

from __future__ import annotations

import json
import operator
import re

import cv2
import numpy as np
import pytest
import torch

from vseg_core.data import DatasetLayoutError, ImageFolderVideo, VideoFileFrames
from vseg_core.data.folders import natural_key
from vseg_core.evaluate import evaluate, evaluation_sequences
from vseg_core.models.registry import create_model

H, W = 24, 32


def _frame(i: int) -> np.ndarray:
    """RGB frame i: red = 40 * i, a green square that moves right by 2 pixels a frame, blue 200."""
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[..., 0] = 40 * i
    rgb[8:16, 2 + 2 * i : 10 + 2 * i, 1] = 255
    rgb[..., 2] = 200
    return rgb


def _write_image(path, rgb: np.ndarray) -> None:
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def _write_video(path, frames, fps=10.0) -> None:
    # Motion JPEG in AVI: OpenCV writes it with its own encoder and reads it back with FFmpeg.
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (W, H))
    assert writer.isOpened(), "this OpenCV cannot write Motion JPEG AVI"
    for rgb in frames:
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()


@pytest.fixture
def folder(tmp_path):
    # Written so that plain string order (frame_1, frame_10, frame_2, ...) would be wrong.
    names = ["frame_10.png", "frame_2.bmp", "Frame_3.PNG", "frame_1.png", "frame_0.png"]
    order = [4, 2, 3, 1, 0]  # the index in natural order of each name above
    for name, i in zip(names, order, strict=True):
        _write_image(tmp_path / name, _frame(i))
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub.png").mkdir()  # a folder, whatever its name
    return tmp_path


def test_natural_key_orders_numbers_by_value():
    names = ["f10.png", "f2.png", "F1.png", "f01.png", "g0.png", "f.png", "f2.bmp"]
    expected = ["f.png", "F1.png", "f01.png", "f2.bmp", "f2.png", "f10.png", "g0.png"]
    assert sorted(names, key=natural_key) == expected


def test_image_folder_is_one_video_in_natural_order_with_exact_pixels(folder):
    video = ImageFolderVideo(folder)
    assert [p.name for p in video.paths] == ["frame_0.png", "frame_1.png", "frame_2.bmp", "Frame_3.PNG", "frame_10.png"]
    assert len(video) == 5 and video.size == (H, W)
    frames = list(video)
    for i, frame in enumerate(frames):
        assert frame.shape == (H, W, 3) and frame.dtype == np.uint8
        np.testing.assert_array_equal(frame, _frame(i))  # PNG and BMP are lossless; RGB order kept
    np.testing.assert_array_equal(video[-1], _frame(4))
    with pytest.raises(IndexError):
        video[5]
    only_png = ImageFolderVideo(folder, pattern="frame_*.png")
    assert [p.name for p in only_png.paths] == ["frame_0.png", "frame_1.png", "frame_10.png"]


def test_image_folder_errors_name_the_folder_or_the_file(folder, tmp_path_factory):
    missing = folder / "nowhere"
    with pytest.raises(DatasetLayoutError, match=rf"missing folder {re.escape(str(missing))}; .*\.png, \.jpg"):
        ImageFolderVideo(missing)
    empty = tmp_path_factory.mktemp("empty")
    (empty / "readme.txt").write_text("no frames here")
    with pytest.raises(
        DatasetLayoutError, match=rf"no images \(\.png, \.jpg, \.jpeg, \.bmp\) matching '\*' in {re.escape(str(empty))}"
    ):
        ImageFolderVideo(empty)
    with pytest.raises(DatasetLayoutError, match=r"no images .* matching '\*\.jpg'"):
        ImageFolderVideo(folder, pattern="*.jpg")

    (folder / "frame_4.png").write_bytes(b"\x89PNG but not really")
    video = ImageFolderVideo(folder)  # read lazily: a bad frame fails when it is read
    with pytest.raises(DatasetLayoutError, match=rf"cannot read {re.escape(str(folder / 'frame_4.png'))} as an image"):
        list(video)
    (folder / "frame_4.png").unlink()
    _write_image(folder / "frame_4.png", np.zeros((H, W + 2, 3), np.uint8))
    with pytest.raises(
        DatasetLayoutError, match=r"frame_4\.png is 34x24 pixels but the first image frame_0\.png is 32x24"
    ):
        ImageFolderVideo(folder)[4]  # frame_4 sorts between frame_3 and frame_10
    (folder / "frame_0.png").write_bytes(b"")  # the first image is read at construction
    with pytest.raises(DatasetLayoutError, match=r"cannot read .*frame_0\.png as an image"):
        ImageFolderVideo(folder)


@pytest.fixture
def video_file(tmp_path):
    path = tmp_path / "drive.avi"
    _write_video(path, [_frame(i) for i in range(6)])
    return path


def _close(decoded: np.ndarray, expected: np.ndarray) -> None:
    """Equal within Motion JPEG's loss: small on average, no pixel far off except at sharp edges."""
    diff = np.abs(decoded.astype(np.int16) - expected.astype(np.int16))
    assert diff.mean() < 4 and np.percentile(diff, 95) < 12, (diff.mean(), diff.max())


def test_video_file_frames_equal_what_was_written(video_file):
    video = VideoFileFrames(video_file)
    assert video.fps == video.source_fps == 10.0 and video.size == (H, W)
    assert video.frame_count == 6 and operator.length_hint(video) == 6
    frames = list(video)
    assert len(frames) == 6
    for i, frame in enumerate(frames):
        assert frame.shape == (H, W, 3) and frame.dtype == np.uint8
        _close(frame, _frame(i))
    # RGB, not OpenCV's BGR: blue stays 200 and red rises with the frame.
    assert abs(int(frames[5][0, 0, 2]) - 200) < 8 and abs(int(frames[5][0, 0, 0]) - 200) < 8
    for again, first in zip(video, frames, strict=True):  # every iteration decodes afresh
        np.testing.assert_array_equal(again, first)


def test_video_stride_and_max_frames(video_file):
    every_other = VideoFileFrames(video_file, stride=2)
    assert every_other.fps == 5.0 and every_other.frame_count == 3
    for frame, i in zip(every_other, [0, 2, 4], strict=True):
        _close(frame, _frame(i))
    capped = VideoFileFrames(video_file, stride=4, max_frames=1)
    assert capped.frame_count == 1 and len(list(capped)) == 1
    assert len(list(VideoFileFrames(video_file, stride=4))) == 2  # frames 0 and 4
    assert len(list(VideoFileFrames(video_file, max_frames=4))) == 4
    with pytest.raises(ValueError, match="stride must be at least 1"):
        VideoFileFrames(video_file, stride=0)
    with pytest.raises(ValueError, match="max_frames must be at least 1 or None"):
        VideoFileFrames(video_file, max_frames=0)


def test_video_errors_name_the_file(tmp_path):
    missing = tmp_path / "missing.mp4"
    with pytest.raises(DatasetLayoutError, match=rf"missing video file {re.escape(str(missing))}"):
        VideoFileFrames(missing)
    junk = tmp_path / "junk.avi"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(DatasetLayoutError, match=rf"OpenCV cannot decode the video file {re.escape(str(junk))}"):
        VideoFileFrames(junk)
    empty = tmp_path / "empty.avi"
    _write_video(empty, [])
    with pytest.raises(DatasetLayoutError, match=rf"video file {re.escape(str(empty))} holds no frames"):
        VideoFileFrames(empty)


def _model():
    torch.manual_seed(3)
    return create_model("icnet", num_classes=5, width=0.25).eval()


@pytest.mark.parametrize("kind", ["images", "video"])
def test_unlabelled_evaluation_reports_fip_and_time_but_no_miou(kind, folder, video_file):
    root = folder if kind == "images" else video_file
    sequences, palette = evaluation_sequences(kind, root=root)
    assert palette is None and [s.name for s in sequences] == [root.stem if kind == "video" else root.name]
    report = evaluate(_model(), sequences, palette, device="cpu")
    assert report["frames"] == report["sequences"][0]["frames"] == (5 if kind == "images" else 6)
    assert report["labelled_frames"] == 0 and report["fp"] is None and np.isnan(report["miou"])
    assert 0.0 <= report["fip"] <= 1.0 and report["ms_per_frame"] > 0
    assert list(report["iou"]) == [f"class_{i}" for i in range(5)]  # the model's classes, no ground truth
    with pytest.raises(ValueError, match=rf"dataset '{kind}' needs --root"):
        evaluation_sequences(kind)


def test_eval_cli_scores_an_image_folder_with_the_models_own_classes(folder, capsys):
    from vseg_core.cli import main

    torch.manual_seed(3)
    assert main(["eval", "icnet,width=0.25,num_classes=5", "--dataset", "images", "--root", str(folder),
                 "--device", "cpu", "--json"]) == 0  # fmt: skip
    (report,) = json.loads(capsys.readouterr().out)["reports"]
    sequences, _ = evaluation_sequences("images", root=folder)
    direct = evaluate(_model(), sequences, None, device="cpu")
    assert report["fip"] == direct["fip"] and report["fp"] is None and report["frames"] == 5
