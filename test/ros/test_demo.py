"""`vseg demo`, run as users run it: the real segmentation_node per model, frames over rclpy.

Expected numbers come from another path through the code: ``vseg_core.evaluate`` (the `vseg eval`
scorer) and a ``VideoSegmenter`` run here on the same frames and checkpoints. The demo's table,
results.json and labels must equal them; its pictures must decode with the sizes the layout gives.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from child_process import start_logged, wait_or_dump

from vseg_core import VideoSegmenter, create_model, load_checkpoint, save_checkpoint
from vseg_core.checkpoint import CheckpointRecord, read_checkpoint_record
from vseg_core.data import CITYSCAPES, SYNTHETIC
from vseg_core.data.camvid import CAMVID_DEMO_CLIP
from vseg_core.demo_media import (
    SHEET_HEADER_HEIGHT,
    SHEET_TILE_MAX_WIDTH,
    OverlayVideoWriter,
    colour_labels,
    sheet_frame_indices,
)
from vseg_core.evaluate import evaluate, evaluation_sequences
from vseg_core.export import ExportConfig, export_model
from vseg_core.pretrained import shipped_checkpoint, shipped_checkpoints
from vseg_ros.cli import main
from vseg_ros.demo import DemoConfig, DemoError, DemoModel, assign_streams, prepare_output, run_demo
from vseg_ros.node_process import NodeProcess

H, W, FRAMES = 64, 128, 12
MODELS = ("icnet", "lstm_icnet_v2")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, str]:
    """Two tiny models whose batch-norm statistics come from synthetic frames, so that their random
    weights still give labels that vary across the image and over time."""
    (clip,), _ = evaluation_sequences("synthetic", split="train", sequences=1, frames=4, height=H, width=W)
    frames = torch.from_numpy(np.stack(clip.frames)).permute(0, 3, 1, 2).float().div(255).unsqueeze(0)
    folder = tmp_path_factory.mktemp("checkpoints")
    paths = {}
    torch.manual_seed(3)
    for name in MODELS:
        model = create_model(name, num_classes=SYNTHETIC.num_classes, width=0.25)
        norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        with torch.no_grad():
            for m in norms:
                m.momentum = 1.0
            model.train().forward_clip(frames, output_frames=(0, 1, 2, 3))
            for m in norms:
                m.momentum = 0.1
        paths[name] = str(save_checkpoint(model.eval(), folder / f"tiny_{name}", palette=SYNTHETIC, dataset="test"))
    return paths


@pytest.fixture(scope="module")
def demo_run(checkpoints, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo_output"
    result = subprocess.run(
        [sys.executable, "-m", "vseg_ros.cli", "demo", "--models", *checkpoints.values(), "--frames", str(FRAMES),
         "--height", str(H), "--width", str(W), "--out", str(out), "--device", "cpu", "--timeout", "120"],
        capture_output=True, text=True, timeout=400, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result, out


@pytest.fixture(scope="module")
def sequence():
    (seq,), _ = evaluation_sequences("synthetic", split="val", sequences=1, frames=FRAMES, height=H, width=W)
    return seq


def _core_labels(checkpoint: str, frames) -> list[np.ndarray]:
    segmenter = VideoSegmenter(load_checkpoint(checkpoint), device="cpu")
    return [segmenter.step(f).labels for f in frames]


@pytest.mark.slow
def test_table_json_and_labels_equal_the_cores_evaluation(demo_run, checkpoints, sequence):
    result, out = demo_run
    report = json.loads((out / "results.json").read_text())
    # Checkpoints with the synthetic classes run on the synthetic stream only: no CamVid clip, files untagged.
    (stream,) = report["streams"]
    assert (stream["name"], stream["frames"], stream["height"], stream["width"]) == ("synthetic", FRAMES, H, W)
    assert stream["files"] == {"video": "overlay.mp4", "contact_sheet": "contact_sheet.png", "labels": "labels.npz"}
    rows = {r["model"]: r for r in report["models"]}
    assert list(rows) == list(MODELS) and {r["stream"] for r in rows.values()} == {"synthetic"}
    labels = np.load(out / "labels.npz")
    for name, checkpoint in checkpoints.items():
        row = rows[name]
        expected = evaluate(load_checkpoint(checkpoint), [sequence], SYNTHETIC, device="cpu")
        for key in ("miou", "fp", "fip", "keyframe_share"):
            assert row[key] == pytest.approx(expected[key], rel=1e-12, abs=1e-15), key
        assert row["iou"] == pytest.approx({k: v for k, v in expected["iou"].items() if v is not None})
        assert 0.05 < row["fip"] < 0.9, "labels that never change over time would make the comparison weak"
        assert row["frames_sent"] == row["frames_received"] == row["frames_processed"] == FRAMES
        assert row["frames_dropped"] == row["frames_rejected"] == row["frames_without_result"] == 0
        assert row["ms_per_frame"] > 0 and row["node_exit_status"] == 0
        # The node's labels are what the core computes on the same frames with the same checkpoint.
        got = labels[row["name"]]
        assert got.shape == (FRAMES, H, W) and labels[f"{row['name']}.valid"].all()
        for i, exp in enumerate(_core_labels(checkpoint, sequence.frames)):
            np.testing.assert_array_equal(got[i], exp, err_msg=f"{name}, frame {i}")
        # The printed table shows the same numbers.
        line = next(li for li in result.stdout.splitlines() if li.startswith(row["name"] + " "))
        assert line.split() == [
            row["name"], "synthetic", f"{row['miou']:.3f}", f"{row['fp']:.4f}", f"{row['fip']:.4f}",
            f"{row['ms_per_frame']:.1f}",
            "100%", *[str(FRAMES)] * 3, "0", "0",  # sent, received, processed, dropped, no result
        ]  # fmt: skip
    wrote = [li.removeprefix("wrote ") for li in result.stdout.splitlines() if li.startswith("wrote ")]
    assert wrote == [str(out / n) for n in ("overlay.mp4", "contact_sheet.png", "labels.npz", "results.json")]


@pytest.mark.slow
def test_onnxruntime_backend_gives_the_labels_of_the_cores_onnxruntime_path(checkpoints, sequence, tmp_path):
    out = tmp_path / "demo_output"
    result = subprocess.run(
        [sys.executable, "-m", "vseg_ros.cli", "demo", "--models", *checkpoints.values(), "--frames", str(FRAMES),
         "--height", str(H), "--width", str(W), "--out", str(out), "--backend", "onnxruntime", "--timeout", "120"],
        capture_output=True, text=True, timeout=400, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "note: every node ran backend onnxruntime, its weights exported at its stream's frame size" in result.stdout
    rows = {r["model"]: r for r in json.loads((out / "results.json").read_text())["models"]}
    labels = np.load(out / "labels.npz")
    for name, checkpoint in checkpoints.items():
        row = rows[name]
        assert row["backend"] == "onnxruntime"
        assert row["frames_processed"] == FRAMES and row["node_exit_status"] == 0
        # The node exported the weights at the stream's size when it started: the same graph as this one.
        sidecar = export_model(load_checkpoint(checkpoint), tmp_path / name, ExportConfig(height=H, width=W))
        segmenter = VideoSegmenter(sidecar.parent, backend="onnxruntime")
        torch_labels = _core_labels(checkpoint, sequence.frames)
        for i, frame in enumerate(sequence.frames):
            np.testing.assert_array_equal(labels[row["name"]][i], segmenter.step(frame).labels, err_msg=f"{name} {i}")
            assert (labels[row["name"]][i] == torch_labels[i]).mean() >= 0.999


@pytest.mark.slow
def test_video_and_contact_sheet_decode_with_the_layouts_sizes(demo_run, checkpoints, sequence):
    _, out = demo_run
    capture = cv2.VideoCapture(str(out / "overlay.mp4"))
    shapes = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        shapes.append(frame.shape)
    capture.release()
    # Rows: input | ground truth, then one per model; columns: overlay | colour labels.
    assert shapes == [((1 + len(MODELS)) * H, 2 * W, 3)] * FRAMES

    sheet = cv2.cvtColor(cv2.imread(str(out / "contact_sheet.png")), cv2.COLOR_BGR2RGB)
    columns = sheet_frame_indices(FRAMES)
    rows = 2 + len(MODELS)  # input, ground truth, models
    assert sheet.shape[0] == SHEET_HEADER_HEIGHT + rows * H
    left = sheet.shape[1] - len(columns) * W
    assert 0 < left < 300, "the name column"
    colours = np.asarray(SYNTHETIC.colors, np.uint8)

    def tile(row: int, col: int) -> np.ndarray:
        top = SHEET_HEADER_HEIGHT + row * H
        return sheet[top : top + H, left + col * W : left + (col + 1) * W]

    for c, i in enumerate(columns):
        np.testing.assert_array_equal(tile(0, c), sequence.frames[i])
        np.testing.assert_array_equal(tile(1, c), colour_labels(sequence.labels[i], colours))
    for r, checkpoint in enumerate(checkpoints.values()):
        expected = _core_labels(checkpoint, sequence.frames)
        for c, i in enumerate(columns):
            np.testing.assert_array_equal(tile(2 + r, c), colour_labels(expected[i], colours))


def _decoded_frame_shapes(path) -> list[tuple[int, ...]]:
    capture = cv2.VideoCapture(str(path))
    shapes = []
    while (frame := capture.read()[1]) is not None:
        shapes.append(frame.shape)
    capture.release()
    return shapes


def test_each_model_runs_on_the_stream_of_the_data_it_was_trained_on():
    # Records only (no weights loaded): what the demo decides from.
    models = [
        DemoModel(name, path, record, record.palette)
        for name, path in shipped_checkpoints().items()
        for record in [read_checkpoint_record(path)]
    ]
    said: list[str] = []
    plan = assign_streams(models, named=False, echo=said.append)
    assert list(plan) == ["synthetic", "camvid"] and said == []
    assert {d: sorted(m.name for m in chosen) for d, chosen in plan.items()} == {
        d: sorted(m.name for m in models if m.name.startswith(f"{d}_")) for d in plan
    }
    # No demo dataset recorded ("test"): the classes pick the stream.
    tiny = DemoModel("tiny", models[0].path, CheckpointRecord("icnet", {}, SYNTHETIC, {"dataset": "test"}), SYNTHETIC)
    assert assign_streams([tiny], named=False) == {"synthetic": [tiny]}
    # Other data: left out of the default set with a word, run on the synthetic video (unscored) when named.
    city = DemoModel("city", models[0].path, CheckpointRecord("icnet", {}, CITYSCAPES, {"dataset": "x"}), CITYSCAPES)
    plan = assign_streams([city, *models], named=False, echo=said.append)
    assert sum(map(len, plan.values())) == len(models) and len(said) == 1 and said[0].startswith("left out city: ")
    assert assign_streams([city, *models], named=True)["synthetic"][0] is city
    assert assign_streams([city], named=False) == {"synthetic": [city]}, "nothing else to run: it runs"


CAMVID_FRAMES = 6
CLIP_NAMES = [f"0016E5_{7959 + 2 * i:05d}" for i in range(CAMVID_FRAMES)]


@pytest.fixture(scope="module")
def two_stream_run(tmp_path_factory):
    """A shipped CamVid and a shipped synthetic checkpoint, named in that order: each runs on its stream."""
    out = tmp_path_factory.mktemp("demo_two_streams") / "demo_output"
    result = subprocess.run(
        [sys.executable, "-m", "vseg_ros.cli", "demo", "--models", "camvid_icnet_lite2", "synthetic_icnet",
         "--frames", str(CAMVID_FRAMES), "--height", str(H), "--width", str(W), "--out", str(out),
         "--device", "cpu", "--timeout", "120"],
        capture_output=True, text=True, timeout=400, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result, out


@pytest.mark.slow
def test_a_camvid_checkpoint_runs_on_the_shipped_camvid_clip_and_scores_against_its_labels(two_stream_run):
    result, out = two_stream_run
    report = json.loads((out / "results.json").read_text())
    assert [(s["name"], s["frames"], s["height"], s["width"], s["models"]) for s in report["streams"]] == [
        ("synthetic", CAMVID_FRAMES, H, W, ["synthetic_icnet"]),
        ("camvid", CAMVID_FRAMES, 360, 480, ["camvid_icnet_lite2"]),
    ]
    assert report["streams"][1]["fps"] == 15.0
    camvid_files = {"video_camvid": "overlay_camvid.mp4", "contact_sheet_camvid": "contact_sheet_camvid.png"}
    assert report["streams"][1]["files"] == camvid_files | {"labels_camvid": "labels_camvid.npz"}
    synthetic, row = report["models"]
    assert (synthetic["name"], synthetic["stream"]) == ("synthetic_icnet", "synthetic")
    assert (row["name"], row["stream"], row["trained_on"]) == ("camvid_icnet_lite2", "camvid", "camvid")
    assert row["frames_sent"] == row["frames_processed"] == CAMVID_FRAMES and row["frames_without_result"] == 0

    labels = np.load(out / "labels_camvid.npz")
    got = labels["camvid_icnet_lite2"]
    assert got.shape == (CAMVID_FRAMES, 360, 480) and labels["camvid_icnet_lite2.valid"].all()
    # The mIoU from the node's labels and the clip's label PNGs, with numpy alone (void = 11 is ignored).
    truth = np.stack(
        [cv2.imread(str(CAMVID_DEMO_CLIP / "valannot" / f"{n}.png"), cv2.IMREAD_UNCHANGED) for n in CLIP_NAMES]
    )
    keep = truth != 11
    confusion = np.bincount(truth[keep].astype(np.int64) * 11 + got[keep], minlength=11 * 11).reshape(11, 11)
    tp, union = np.diag(confusion), confusion.sum(0) + confusion.sum(1) - np.diag(confusion)
    miou = float(np.mean(tp[union > 0] / union[union > 0]))
    assert row["miou"] == pytest.approx(miou, rel=1e-12)
    assert miou > 0.3, "a trained CamVid model on CamVid frames, not noise"
    # The node's labels are the core's on the clip's JPEG frames with the same checkpoint.
    frames = [
        cv2.cvtColor(cv2.imread(str(CAMVID_DEMO_CLIP / "val" / f"{n}.jpg")), cv2.COLOR_BGR2RGB) for n in CLIP_NAMES
    ]
    for i, expected in enumerate(_core_labels(str(shipped_checkpoint("camvid_icnet_lite2")), frames)):
        np.testing.assert_array_equal(got[i], expected, err_msg=f"frame {i}")

    # One table for both streams, then each stream's files, the synthetic one's untagged.
    lines = result.stdout.splitlines()
    assert next(li for li in lines if li.startswith("camvid_icnet_lite2 ")).split()[:3] == [
        "camvid_icnet_lite2",
        "camvid",
        f"{row['miou']:.3f}",
    ]
    assert next(li for li in lines if li.startswith("synthetic_icnet ")).split()[1] == "synthetic"
    wrote = [li.removeprefix("wrote ") for li in lines if li.startswith("wrote ")]
    assert wrote == [str(out / n) for n in (
        "overlay.mp4", "contact_sheet.png", "labels.npz", *camvid_files.values(), "labels_camvid.npz", "results.json"
    )]  # fmt: skip
    # The clip's pictures: input | ground truth over the model's row; the sheet's tiles at most 320 wide.
    assert _decoded_frame_shapes(out / "overlay_camvid.mp4") == [(2 * 360, 2 * 480, 3)] * CAMVID_FRAMES
    sheet = cv2.imread(str(out / "contact_sheet_camvid.png"))
    tile_h = 360 * SHEET_TILE_MAX_WIDTH // 480
    assert sheet.shape[0] == SHEET_HEADER_HEIGHT + 3 * tile_h
    assert 0 < sheet.shape[1] - len(sheet_frame_indices(CAMVID_FRAMES)) * SHEET_TILE_MAX_WIDTH < 300


def _one_line_error(capsys, *args: str) -> str:
    assert main(["demo", *args]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


def test_a_bag_without_image_topics_is_a_one_line_error_listing_its_topics(tmp_path, capsys):
    from std_msgs.msg import String

    from vseg_ros.bags import BagWriter

    with BagWriter(tmp_path / "bag") as bag:
        bag.write("/chatter", 1_000_000_000, String(data="hello"))
    error = _one_line_error(capsys, "--bag", str(tmp_path / "bag"))
    assert error == (
        f"vseg demo: bag {tmp_path / 'bag'} has no image topics (sensor_msgs/msg/Image or "
        "sensor_msgs/msg/CompressedImage); its topics: /chatter [std_msgs/msg/String]"
    )


def test_a_missing_or_undecodable_video_is_a_one_line_error(tmp_path, capsys):
    missing = tmp_path / "missing.mp4"
    assert _one_line_error(capsys, "--video", str(missing)) == f"vseg demo: no video file at {missing}"
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    # In a process of its own: FFmpeg writes to the C-level stderr, which only a subprocess sees whole.
    result = subprocess.run(
        [sys.executable, "-m", "vseg_ros.cli", "demo", "--video", str(junk)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"vseg demo: cannot read video {junk}: OpenCV decodes no frame from it"
    ]


def _processes_with(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(entry.name))
        except OSError:  # gone meanwhile
            pass
    return found


def test_ctrl_c_bursts_end_the_demo_with_130_and_stop_its_node(checkpoints, tmp_path):
    """Ctrl-C pressed three times while a node segments: the demo says it was interrupted, exits 130,
    and leaves no segmentation_node behind (a handler that took an event's lock could hang here)."""
    out = tmp_path / "demo_output"
    log = tmp_path / "demo.log"
    demo = start_logged(
        log, "-m", "vseg_ros.cli", "demo", "--models", checkpoints["icnet"], "--frames", "2000", "--rate", "5",
        "--height", str(H), "--width", str(W), "--out", str(out), "--device", "cpu", "--timeout", "120",
    )  # fmt: skip
    segmenting = lambda: any("segmenting" in f.read_text() for f in (out / "logs").glob("*.node.log"))  # noqa: E731
    deadline = time.monotonic() + 240
    while not segmenting() and demo.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(2.0)  # frames flowing
    assert demo.poll() is None and "node up" not in log.read_text(), log.read_text()  # still streaming
    assert _processes_with(str(out / "logs")), log.read_text()  # the node: its parameters file is there
    for _ in range(3):  # a terminal's Ctrl-C reaches the demo and its node (one process group)
        os.killpg(demo.pid, signal.SIGINT)
        time.sleep(0.02)
    assert wait_or_dump(demo, 120, "vseg demo after Ctrl-C", log.read_text) == 130, log.read_text()
    assert log.read_text().strip().splitlines()[-1] == "vseg demo: interrupted"
    deadline = time.monotonic() + 30
    while _processes_with(str(out / "logs")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _processes_with(str(out / "logs"))


def test_without_checkpoints_the_demo_refuses_instead_of_running_random_weights(tmp_path, capsys):
    error = _one_line_error(capsys, "--weights-dir", str(tmp_path))
    assert error.startswith(f"vseg demo: no trained checkpoints in {tmp_path} and --models names none")
    assert "never runs random weights" in error
    assert _one_line_error(capsys, "--models", "nonexistent", "--weights-dir", str(tmp_path)) == (
        f"vseg demo: no shipped checkpoint 'nonexistent' in {tmp_path}; shipped: none"
    )


def test_a_node_that_is_never_matched_is_restarted_once_and_then_serves(undiscoverable_starts, checkpoints, tmp_path):
    starts, calls = undiscoverable_starts
    starts += [True, False]
    said: list[str] = []
    config = DemoConfig(models=(checkpoints["icnet"],), frames=3, height=H, width=W, out=tmp_path / "out", device="cpu")
    result = run_demo(config, echo=said.append)
    (row,) = result.rows
    assert calls == ["tiny_icnet", "tiny_icnet.start2"]
    assert row["node_starts"] == 2 and row["frames_processed"] == 3 and row["frames_without_result"] == 0
    (restart,) = [line for line in said if "restarting it" in line]
    assert "DDS has not matched it (missing: a subscription matching its publisher on /vseg_demo_" in restart
    # The first node really was up: it said so in its own log, which the restart did not overwrite.
    assert "]: segmenting " in (tmp_path / "out" / "logs" / "tiny_icnet.node.log").read_text()


def test_a_node_still_unmatched_after_its_restart_is_an_error_naming_what_is_missing(
    undiscoverable_starts, checkpoints, tmp_path
):
    starts, calls = undiscoverable_starts
    starts += [True, True]
    config = DemoConfig(
        models=(checkpoints["icnet"],), frames=3, height=H, width=W, out=tmp_path / "out", device="cpu",
        start_timeout_s=25.0,
    )  # fmt: skip
    with pytest.raises(DemoError) as error:
        run_demo(config, echo=lambda _: None)
    assert len(calls) == 2, "restarted once, and the restarted node had the whole start timeout"
    message = str(error.value)
    assert "segmentation_node for tiny_icnet did not come up within 25 s (start 2; missing: a subscription" in message
    assert "/segmentation/labels; a publisher of /vseg_demo_" in message and "/segmentation/info)" in message
    assert "tiny_icnet.start2.node.log, last said: [INFO]" in message and "]: segmenting image with icnet" in message


def test_an_output_folder_that_cannot_be_made_is_a_one_line_error(tmp_path, capsys, checkpoints):
    (tmp_path / "file").write_text("not a folder")
    out = tmp_path / "file" / "demo_output"
    error = _one_line_error(capsys, "--models", checkpoints["icnet"], "--frames", "2", "--out", str(out))
    assert error.startswith(f"vseg demo: cannot create the output folder {out}: ")


def test_an_output_folder_without_room_is_refused_before_any_node_starts(tmp_path):
    with pytest.raises(DemoError, match=r"not enough free disk space in .*: \d+ MB free, the demo needs about"):
        prepare_output(tmp_path / "out", need_bytes=1 << 62)


def test_contact_sheet_columns_spread_over_the_stream():
    assert sheet_frame_indices(12) == [0, 2, 4, 7, 9, 11]
    assert sheet_frame_indices(3) == [0, 1, 2]
    assert sheet_frame_indices(1) == [0]


def test_video_falls_back_to_motion_jpeg_where_mp4v_cannot_be_opened(tmp_path, monkeypatch):
    real = cv2.VideoWriter

    def without_mp4v(path, fourcc, fps, size):
        return real() if fourcc == cv2.VideoWriter_fourcc(*"mp4v") else real(path, fourcc, fps, size)

    monkeypatch.setattr(cv2, "VideoWriter", without_mp4v)
    with OverlayVideoWriter(tmp_path / "overlay.mp4", 15.0, (33, 47)) as video:
        for i in range(3):
            video.write(np.full((33, 47, 3), 60 * i, np.uint8))
    assert video.path == tmp_path / "overlay.avi" and not (tmp_path / "overlay.mp4").exists()
    assert "Motion JPEG" in video.fallback_note
    capture = cv2.VideoCapture(str(video.path))
    shapes = []
    while (frame := capture.read()[1]) is not None:
        shapes.append(frame.shape)
    assert shapes == [(34, 48, 3)] * 3, "odd sizes are padded to even ones"


def test_the_announcement_is_found_when_the_log_gains_it_in_pieces(tmp_path, monkeypatch):
    """announced() reads only what the log gained since its last call, yet finds the line when a
    read ends inside it, and never reads the part before what it kept."""
    log = tmp_path / "node.log"
    log.write_bytes(b"[INFO] [1.0] [seg.node]: loading weights\n" * 50)
    process = object.__new__(NodeProcess)  # the log watcher alone, no node started
    process.log, process.announced_at, process._unsearched = log, None, 0
    read_from = []
    real_open = type(log).open

    def recording_open(path, *args, **kwargs):
        handle = real_open(path, *args, **kwargs)
        real_seek = handle.seek
        handle.seek = lambda offset, *a: read_from.append(offset) or real_seek(offset, *a)
        return handle

    monkeypatch.setattr(type(log), "open", recording_open)
    assert not process.announced()
    before = log.stat().st_size
    for piece in (b"[INFO] [2.0] [seg.node", b"]: segm", b"enting /cam/image with icnet\n"):
        assert not process.announced()  # the whole line arrives with the last piece
        with real_open(log, "ab") as out:
            out.write(piece)
    assert process.announced() and process.announced_at is not None
    # The first read starts at 0, each later one within the announcement's length of the end of the last.
    assert read_from[0] == 0 and all(start >= before - len(process._ANNOUNCEMENT) for start in read_from[1:])
    # Once seen, the log is not opened again.
    calls = len(read_from)
    assert process.announced() and len(read_from) == calls
