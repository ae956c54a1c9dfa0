"""`vseg bag eval` over many bags: plan, shards, merged report, torch.distributed ranks, resume, bad input.

The merged numbers are checked against :func:`evaluate_bag` run on each stream here, and the
distributed runs against a one-process run of the same command (exact confusion matrices).
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
from std_msgs.msg import Header

from vseg_core.data import dataset_palette
from vseg_core.keyframes import FixedInterval
from vseg_core.models.registry import create_model
from vseg_ros.bag_tools import LABEL_CLASSES_KEY, evaluate_bag
from vseg_ros.bags import BagWriter, read_messages
from vseg_ros.cli import main
from vseg_ros.fleet_bench import measure_fleet_scaling
from vseg_ros.fleet_eval import (
    Camera,
    FleetEvalError,
    FleetRequest,
    Stream,
    cameras_from_topics,
    find_bags,
    load_cameras,
    plan_streams,
    run_fleet_eval,
    shard_streams,
)

PALETTE = dataset_palette("synthetic")
FRONT = Camera("front", "/front/image_raw", "/front/labels")
REAR = Camera("rear", "/rear/image_raw", None)
HEIGHT, WIDTH = 64, 128


def _write_bag(path: Path, frames: int, *, seed: int, cameras=(FRONT, REAR), label_value=None, classes=PALETTE.names):
    """A bag with ``frames`` random images per camera at 15 Hz; ground truth on the cameras that
    have a label topic (random classes, or all ``label_value``); ``classes`` recorded as `bag make` does."""
    rng = np.random.default_rng(seed)
    custom = {LABEL_CLASSES_KEY: json.dumps(list(classes))} if classes else None
    from vseg_ros.conversions import labels_to_image, rgb_to_image

    with BagWriter(path, custom_data=custom) as bag:
        for i in range(frames):
            stamp = 1_700_000_000 * 10**9 + i * 66_666_667
            for camera in cameras:
                header = Header(frame_id=camera.name)
                header.stamp.sec, header.stamp.nanosec = divmod(stamp, 10**9)
                # Smooth blobs, so that a random network's labels are neither constant nor noise.
                small = rng.integers(0, 256, (4, 8, 3), dtype=np.uint8)
                frame = cv2.resize(small, (WIDTH, HEIGHT), interpolation=cv2.INTER_LINEAR)
                bag.write(camera.image_topic, stamp, rgb_to_image(frame, header))
                if camera.label_topic:
                    gt = rng.integers(0, PALETTE.num_classes, (HEIGHT, WIDTH), dtype=np.uint8)
                    if label_value is not None:
                        gt[:] = label_value
                    bag.write(camera.label_topic, stamp, labels_to_image(gt, header))
    return path


def _random_model():
    torch.manual_seed(0)  # as `vseg bag eval` draws random weights: the same network in every process
    return create_model("icnet", num_classes=PALETTE.num_classes).eval()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory) -> Path:
    """Four bags with front and rear cameras, of different lengths, in two folders."""
    root = tmp_path_factory.mktemp("fleet")
    for i, frames in enumerate((12, 7, 9, 5)):
        _write_bag(root / ("monday" if i < 2 else "tuesday") / f"drive{i}", frames, seed=i)
    return root


def _vseg(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vseg_ros.cli", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def _eval_args(path: Path, *, out: Path) -> list[str]:
    return [
        "bag", "eval", str(path), "--image-topic", FRONT.image_topic, "--label-topic", FRONT.label_topic,
        "--model", "icnet", "--out", str(out),
    ]  # fmt: skip


def _without_timings(value):
    """The report minus what depends on the clock (ms) and on where it was written."""
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if "ms_" not in k and k != "files"}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


# ---- inputs -----------------------------------------------------------------------------------------


def test_bags_are_found_in_folders_and_a_folder_without_bags_is_one_line(fleet, tmp_path):
    assert find_bags([fleet / "monday"]) == [(fleet / "monday" / f"drive{i}").resolve() for i in (0, 1)]
    everything = find_bags([fleet, fleet / "monday" / "drive0"], recursive=True)  # each bag once
    assert [p.name for p in everything] == ["drive0", "drive1", "drive2", "drive3"]
    with pytest.raises(FleetEvalError, match=r"no bags in .*fleet.*: a rosbag2 bag is a folder with metadata.yaml; "):
        find_bags([fleet])  # the bags are one level down
    (tmp_path / "empty").mkdir()
    with pytest.raises(FleetEvalError, match=r"no bags in .*empty"):
        find_bags([tmp_path / "empty"], recursive=True)
    with pytest.raises(FleetEvalError, match="no bag or folder at"):
        find_bags([tmp_path / "missing"])


def test_cameras_come_from_topics_or_yaml_and_bad_files_are_one_line(tmp_path):
    cameras = cameras_from_topics(["/front/image_raw", "/rear/image_raw"], ["/front/labels", ""])
    assert cameras == (Camera("front", "/front/image_raw", "/front/labels"), Camera("rear", "/rear/image_raw", None))
    assert [c.name for c in cameras_from_topics(["/a/image", "/a/image2"])] == ["a/image", "a/image2"]
    with pytest.raises(FleetEvalError, match="one --label-topic per --image-topic"):
        cameras_from_topics(["/a/image", "/b/image"], ["/a/labels"])
    good = tmp_path / "cameras.yaml"
    good.write_text(
        "cameras:\n  front: {image: /front/image_raw, labels: /front/labels}\n  rear: {image: /rear/image_raw}\n"
    )
    assert load_cameras(good) == (FRONT, REAR)
    for text, message in (
        ("cameras: [a, b]\n", "expected 'cameras:' mapping names"),
        ("cameras:\n  front: {labels: /x}\n", "camera 'front' needs 'image: /TOPIC'"),
        ("cameras:\n  front: {image: /x, lables: /y}\n", r"unknown keys \['lables'\]"),
        ("cameras: {front: [\n", "is not YAML"),
    ):
        good.write_text(text)
        with pytest.raises(FleetEvalError, match=message) as caught:
            load_cameras(good)
        assert "\n" not in str(caught.value)


def test_streams_go_largest_first_to_the_least_loaded_rank():
    streams = [Stream(f"/b{n}", FRONT, n, None) for n in (2, 10, 1, 8, 3, 9)]
    shards = shard_streams(streams, 2)
    # 10 -> r0; 9 -> r1; 8 -> r1 (9 < 10); 3, 2, 1 -> r0 (10, 13, 15 < 17)
    assert [[s.frames for s in shard] for shard in shards] == [[10, 3, 2, 1], [9, 8]]
    assert shard_streams(streams, 1) == [sorted(streams, key=lambda s: -s.frames)]
    assert shard_streams(streams[:1], 3) == [streams[:1], [], []]


def test_a_bag_without_a_camera_is_skipped_with_the_reason_and_label_sets_must_agree(fleet, tmp_path):
    front_only = _write_bag(tmp_path / "front_only", 3, seed=9, cameras=(FRONT,))
    bags = [*find_bags([fleet], recursive=True), front_only]
    streams, skipped = plan_streams(bags, (FRONT, REAR), PALETTE)
    assert [(Path(s.bag).name, s.camera.name, s.frames) for s in streams] == [
        ("drive0", "front", 12), ("drive0", "rear", 12), ("drive1", "front", 7), ("drive1", "rear", 7),
        ("drive2", "front", 9), ("drive2", "rear", 9), ("drive3", "front", 5), ("drive3", "rear", 5),
        ("front_only", "front", 3),
    ]  # fmt: skip
    assert len(skipped) == 1 and skipped[0]["camera"] == "rear"
    assert skipped[0]["reason"].startswith("no topic /rear/image_raw (its topics: /front/image_raw, /front/labels)")

    other = _write_bag(tmp_path / "other_labels", 3, seed=9, cameras=(FRONT,), classes=("road", "car"))
    with pytest.raises(FleetEvalError, match=r"the bags use different label sets: .* evaluate them separately"):
        plan_streams([*bags, other], (FRONT,), PALETTE)
    with pytest.raises(FleetEvalError, match=r"label 2 classes \(road, car, ...\) but the model predicts 7"):
        plan_streams([other], (FRONT,), PALETTE)


# ---- one process: the merged report against each stream evaluated on its own --------------------------


def test_the_merged_report_adds_up_what_each_stream_gives_alone(fleet, tmp_path):
    request = FleetRequest(
        paths=(str(fleet),), cameras=(FRONT, REAR), out=tmp_path / "results", settings={"model": "icnet"},
        recursive=True, interval=3, write=tmp_path / "written", progress=False,
    )  # fmt: skip
    model = _random_model()
    report = run_fleet_eval(request, lambda stream: model, PALETTE)

    expected = {}
    for bag in find_bags([fleet], recursive=True):
        for camera in (FRONT, REAR):
            expected[(bag.name, camera.name)] = evaluate_bag(
                bag, _random_model(), PALETTE, image_topic=camera.image_topic, label_topic=camera.label_topic,
                keyframe_policy=FixedInterval(3),
            )  # fmt: skip
    front = [r for (_, cam), r in expected.items() if cam == "front"]
    merged = sum(r.confusion.matrix for r in front)
    assert np.array_equal(np.asarray(report["overall"]["confusion"]), merged)
    assert report["overall"]["miou"] == pytest.approx(_miou(merged))
    pred_changes = sum(r.flicker.pred_changes for r in expected.values())
    pixels = sum(r.flicker.pixels for r in expected.values())
    assert report["overall"]["fip"] == pred_changes / pixels
    assert report["overall"]["frames_out"] == 2 * (12 + 7 + 9 + 5)
    assert report["by_camera"]["rear"]["miou"] is None and report["by_camera"]["front"]["labelled_frames"] == 33
    for entry in report["streams"]:
        alone = expected[(Path(entry["bag"]).name, entry["camera"])]
        assert entry["miou"] == (alone.report["miou"] if entry["camera"] == "front" else None)
        assert entry["fip"] == alone.report["fip"] and entry["keyframe_share"] == alone.report["keyframe_share"]
    labelled = [e["miou"] for e in report["streams"] if e["miou"] is not None]
    assert labelled == sorted(labelled) and report["streams"][0]["camera"] == "front"  # worst first
    assert all(e["miou"] is None for e in report["streams"][len(labelled) :])

    written = sorted((tmp_path / "written").iterdir())
    assert len(written) == 8 and not any(p.name.endswith(".partial") for p in written)
    drive3_rear = next(p for p in written if p.name.startswith("drive3.rear."))
    assert sum(1 for _ in read_messages(drive3_rear, {"/vseg/labels": type(_image())})) == 5

    markdown = (tmp_path / "results" / "report.md").read_text()
    worst = report["streams"][0]
    assert f"| {worst['bag']} | front | {worst['frames_out']} | {worst['miou']:.3f} |" in markdown
    plot = cv2.imread(str(tmp_path / "results" / "report.png"))
    assert plot is not None and plot.shape[0] > 100
    assert json.loads((tmp_path / "results" / "report.json").read_text())["overall"] == report["overall"]


def test_a_fleet_run_at_an_input_size_gives_what_each_bag_gives_alone_at_that_size(fleet, tmp_path):
    size = (32, 96)  # the bags' frames are 64x128
    request = FleetRequest(
        paths=(str(fleet),), cameras=(FRONT,), out=tmp_path / "results", recursive=True, input_size=size,
        settings={"model": "icnet", "input_size": list(size)}, progress=False,
    )  # fmt: skip
    model = _random_model()
    report = run_fleet_eval(request, lambda stream: model, PALETTE)
    bags = find_bags([fleet], recursive=True)
    topics = {"image_topic": FRONT.image_topic, "label_topic": FRONT.label_topic}
    alone = [evaluate_bag(bag, model, PALETTE, **topics, input_size=size) for bag in bags]
    assert np.array_equal(np.asarray(report["overall"]["confusion"]), sum(r.confusion.matrix for r in alone))
    at_frame_size = evaluate_bag(bags[0], model, PALETTE, **topics)
    assert not np.array_equal(at_frame_size.confusion.matrix, alone[0].confusion.matrix)  # the size mattered
    assert "model run at 32x96." in (tmp_path / "results" / "report.md").read_text()


def test_a_damaged_bag_is_reported_with_the_reason_and_tried_again_next_run(tmp_path):
    good = _write_bag(tmp_path / "bags" / "good", 4, seed=1, cameras=(FRONT,))
    damaged = _write_bag(tmp_path / "bags" / "damaged", 6, seed=2, cameras=(FRONT,))
    (mcap,) = damaged.glob("*.mcap")
    raw = bytearray(mcap.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # inside the chunks: found by their CRCs when the stream is read
    mcap.write_bytes(bytes(raw))
    request = FleetRequest(
        paths=(str(tmp_path / "bags"),), cameras=(FRONT,), out=tmp_path / "results", settings={}, progress=False
    )
    report = run_fleet_eval(request, lambda stream: _random_model(), PALETTE)
    assert [Path(e["bag"]).name for e in report["streams"]] == ["good"]
    (failed,) = report["skipped"]
    assert failed["bag"] == str(damaged.resolve()) and failed["camera"] == "front"
    assert failed["reason"].startswith(f"failed: cannot read bag {damaged.resolve()}: ")
    assert "fails its CRC" in failed["reason"]
    assert [p.name.split(".")[0] for p in (tmp_path / "results" / "streams").glob("*.json")] == ["good"]
    alone = evaluate_bag(good, _random_model(), PALETTE, image_topic=FRONT.image_topic, label_topic=FRONT.label_topic)
    assert report["overall"]["miou"] == alone.report["miou"]
    again = run_fleet_eval(request, lambda stream: _random_model(), PALETTE)  # the good stream is not redone
    assert again["skipped"] == report["skipped"] and again["overall"] == report["overall"]


def _image():
    from sensor_msgs.msg import Image

    return Image()


def _miou(matrix: np.ndarray) -> float:
    tp = np.diag(matrix).astype(float)
    union = matrix.sum(0) + matrix.sum(1) - tp
    return float(np.mean(tp[union > 0] / union[union > 0]))


# ---- torch.distributed: 1 and 2 processes, resume, a failing rank -------------------------------------------


@pytest.fixture(scope="module")
def one_process(fleet, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one") / "results"
    result = _vseg(*_eval_args(fleet, out=out), "--recursive", "--threads", "1")
    assert result.returncode == 0, result.stderr
    return out


def test_two_processes_give_exactly_the_numbers_of_one(fleet, one_process, tmp_path):
    out = tmp_path / "two"
    result = _vseg(*_eval_args(fleet, out=out), "--recursive", "--threads", "1", "--workers", "2")
    assert result.returncode == 0, result.stderr
    one, two = (json.loads((d / "report.json").read_text()) for d in (one_process, out))
    assert one["overall"]["confusion"] == two["overall"]["confusion"]
    assert _without_timings(one) == _without_timings(two)
    ranks = {json.loads(p.read_text())["rank"] for p in (out / "streams").glob("*.json")}
    assert ranks == {0, 1}
    summaries = [line for line in result.stdout.splitlines() if line.startswith("[")]
    assert len(summaries) == 4 and {"(rank 0)", "(rank 1)"} <= {line[-8:] for line in summaries}
    assert result.stderr.count("RANDOM weights") == 1


def test_a_killed_run_continues_to_the_report_of_an_uninterrupted_one(fleet, one_process, tmp_path):
    out = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, "-m", "vseg_ros.cli", *_eval_args(fleet, out=out), "--recursive", "--threads", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not list((out / "streams").glob("*.json")) and time.monotonic() < deadline:
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    before = {p.name: p.stat().st_mtime_ns for p in (out / "streams").glob("*.json")}
    assert 1 <= len(before) < 4, "the run was not stopped half way"

    result = _vseg(*_eval_args(fleet, out=out), "--recursive", "--threads", "1")
    assert result.returncode == 0, result.stderr
    assert f"{len(before)} finished before; {4 - len(before)} to evaluate" in result.stdout
    assert {p.name: p.stat().st_mtime_ns for p in (out / "streams").glob("*.json") if p.name in before} == before
    resumed, whole = (json.loads((d / "report.json").read_text()) for d in (out, one_process))
    assert _without_timings(resumed) == _without_timings(whole)


def test_a_rank_that_fails_fails_the_run_and_its_finished_streams_stay(fleet, tmp_path):
    bags = tmp_path / "bags"
    bags.mkdir()
    for bag in find_bags([fleet], recursive=True):
        os.symlink(bag, bags / bag.name)
    # Ids outside the 7 classes, no label set recorded: found only when the stream is evaluated.
    _write_bag(bags / "bad", 2, seed=5, cameras=(FRONT,), label_value=9, classes=None)
    # Shards (frames 12, 9, 7, 5, 2): rank 0 drive0, drive3; rank 1 drive2, drive1, bad.
    out = tmp_path / "results"
    result = _vseg(*_eval_args(bags, out=out), "--threads", "1", "--workers", "2")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("vseg bag:")]
    assert f"vseg bag: bag {(bags / 'bad').resolve()}, camera front: ground truth ids must be 0..6" in result.stderr
    assert errors[-1].startswith("vseg bag: rank 1 failed (exit 2; its error is above); the finished streams")
    assert "Traceback" not in result.stderr
    recorded = {p.name.split(".")[0] for p in (out / "streams").glob("*.json")}
    assert {"drive2", "drive1"} <= recorded and "bad" not in recorded  # rank 1's streams before the bad one

    (bags / "bad").rename(tmp_path / "bad_moved_away")
    result = _vseg(*_eval_args(bags, out=out), "--threads", "1")
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "report.json").read_text())["overall"]["streams"] == 4


def test_the_scaling_benchmark_runs_the_real_command_and_compares_the_metrics():
    result = measure_fleet_scaling(bags=3, frames=3, height=64, width=128)
    assert result.identical and result.frames == 9 and result.workers == 2
    assert min(result.one_s, result.many_s, result.all_cores_s) > 0
    assert result.speedup == result.one_s / result.many_s


# ---- bad input at the command line: one line each ------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["EMPTY"], "no bags in {EMPTY}: a rosbag2 bag is a folder with metadata.yaml"),
        (["FLEET", "--no-out"], "several streams need --out DIR"),
        (["FLEET", "--recursive", "--label-topic", "/rear/labels"], "give one --label-topic per --image-topic"),
        (["FLEET", "--recursive", "--workers", "0"], "--workers must be at least 1"),
        (
            ["FLEET", "--recursive", "--interval", "7"],
            "holds a run with other settings (interval 3 there, 7 now); give a new --out",
        ),
        (
            ["FLEET", "--recursive", "--interval", "3", "--input-size", "32x48"],
            "holds a run with other settings (input_size None there, [32, 48] now); give a new --out",
        ),
    ],
)
def test_bad_input_is_one_line(fleet, tmp_path, capsys, extra, message):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "results"
    out.mkdir()
    settings = {
        "model": "icnet", "weights": None, "weights_sha256": None, "backend": "torch", "classes": list(PALETTE.names),
        "interval": 3, "reset_gap_s": 1.0, "input_size": None,
    }  # fmt: skip
    (out / "run.json").write_text(json.dumps({"settings": settings}))  # a run of this command with --interval 3
    paths = {"EMPTY": str(tmp_path / "empty"), "FLEET": str(fleet)}
    args = ["bag", "eval", *(paths.get(a, a) for a in extra if a != "--no-out")]
    args += ["--image-topic", FRONT.image_topic, "--label-topic", FRONT.label_topic, "--model", "icnet"]
    if "--no-out" not in extra:
        args += ["--out", str(out)]
    assert main(args) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if "RANDOM weights" not in line]
    assert len(lines) == 1, lines
    assert message.format(**paths) in lines[0]
