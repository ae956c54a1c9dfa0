"""Launch files and parameter files name only things that exist, and the launch files' argument checks
and RViz config (launch_ros is not installable here, so the launch files themselves are checked
statically, and run with launch's Python API only where launch_ros is installed; the node loads the
YAML for real in the node tests, test_executables and test_replay start the executables as launch does)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from vseg_ros.launch_arguments import (
    MODEL_PARAMETERS,
    LaunchArgumentError,
    check_namespace,
    node_parameter_arguments,
    parse_cameras,
    replay_node_parameters,
    segmentation_topics,
)
from vseg_ros.parameters import DEFAULT_WEIGHTS, PARAMETERS
from vseg_ros.rviz_config import RvizTemplateError, render_rviz_config

REPO = Path(__file__).resolve().parents[2]


def _installed_executables() -> set[str]:
    cmake = (REPO / "CMakeLists.txt").read_text()
    (programs,) = re.findall(r"install\(PROGRAMS ([^)]+?) DESTINATION", cmake)
    return {Path(p).name for p in programs.split()}


def test_default_parameters_file_matches_the_declared_parameters():
    data = yaml.safe_load((REPO / "config" / "segmentation.yaml").read_text())
    params = data["/**"]["ros__parameters"]
    assert set(params) == set(PARAMETERS)
    for name, value in params.items():
        assert value == PARAMETERS[name][0], f"{name}: YAML {value!r}, node default {PARAMETERS[name][0]!r}"


def test_launch_files_compile_and_name_existing_executables_parameters_and_files():
    launch_files = sorted((REPO / "launch").glob("*.launch.py"))
    assert {p.name for p in launch_files} >= {"segmentation.launch.py", "replay.launch.py"}
    for path in launch_files:
        tree = ast.parse(path.read_text(), filename=str(path))
        compile(tree, str(path), "exec")
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
        names = {getattr(n.func, "id", getattr(n.func, "attr", "")) for n in calls}
        assert not names & {"eval", "exec", "ExecuteProcess", "PythonExpression"}, (
            f"{path.name} evaluates or shells out"
        )
        for call in calls:
            kwargs = {k.arg: k.value for k in call.keywords}
            package = kwargs.get("package")
            executable = kwargs.get("executable")
            choices = [executable.body, executable.orelse] if isinstance(executable, ast.IfExp) else [executable]
            if getattr(package, "value", None) == "vseg":
                assert all(isinstance(c, ast.Constant) for c in choices), f"{path.name}: executable not a name"
                assert {c.value for c in choices} <= _installed_executables(), path.name
        strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
        for ref in strings & {"config", "segmentation.yaml", "vseg.rviz"}:
            assert ref == "config" or (REPO / "config" / ref).exists(), f"{path.name} names config/{ref}"
        # Parameters set from launch arguments are parameters the node declares, and every one of
        # them is declared as a launch argument (from the node's own defaults and descriptions).
        comprehensions = [n for n in ast.walk(tree) if isinstance(n, ast.DictComp)]
        loops = [c.generators[0].iter for c in comprehensions]
        assert loops and all(isinstance(loop, ast.Name) and loop.id == "MODEL_PARAMETERS" for loop in loops)
        starred = [n.value for n in ast.walk(tree) if isinstance(n, ast.Starred) and isinstance(n.value, ast.Call)]
        assert any(
            getattr(c.func, "id", "") == "node_parameter_arguments" and [a.id for a in c.args] == ["MODEL_PARAMETERS"]
            for c in starred
        ), f"{path.name} does not declare the node's model parameters as launch arguments"
    assert set(MODEL_PARAMETERS) <= set(PARAMETERS)


def test_launch_arguments_for_node_parameters_carry_the_nodes_defaults_and_descriptions():
    arguments = {name: (default, text) for name, default, text in node_parameter_arguments()}
    assert list(arguments) == list(MODEL_PARAMETERS)
    assert arguments["weights"][0] == DEFAULT_WEIGHTS and arguments["device"][0] == "auto"
    for name, (default, text) in arguments.items():
        node_default, descriptor = PARAMETERS[name]
        assert default == node_default and text == descriptor.description and text


def _displays(config: dict) -> dict[str, dict]:
    return {d["Name"]: d["Topic"] for d in config["Visualization Manager"]["Displays"]}


def test_rviz_config_shows_the_camera_overlay_and_the_latched_legend():
    displays = _displays(yaml.safe_load((REPO / "config" / "vseg.rviz").read_text()))
    assert {n: t["Value"] for n, t in displays.items()} == {
        "Camera": "/camera/image_raw",
        "Segmentation overlay": "/segmentation/overlay",
        "Legend": "/segmentation/legend",
    }
    assert displays["Legend"]["Durability Policy"] == "Transient Local"  # published once, latched


def test_rviz_config_follows_namespace_image_and_cameras():
    template = (REPO / "config" / "vseg.rviz").read_text()
    one = segmentation_topics(namespace="car1", node="segmentation", image="/drive/image_raw", cameras=("",))
    assert {n: t["Value"] for n, t in _displays(yaml.safe_load(render_rviz_config(template, one))).items()} == {
        "Camera": "/drive/image_raw",
        "Segmentation overlay": "/car1/segmentation/overlay",
        "Legend": "/car1/segmentation/legend",
    }
    two = segmentation_topics(namespace="/car1", node="segmentation", image="ignored", cameras=("front", "rear"))
    rendered = yaml.safe_load(render_rviz_config(template, two))
    assert {n: t["Value"] for n, t in _displays(rendered).items()} == {
        "Camera (front)": "/car1/front/image",
        "Segmentation overlay (front)": "/car1/segmentation/front/overlay",
        "Camera (rear)": "/car1/rear/image",
        "Segmentation overlay (rear)": "/car1/segmentation/rear/overlay",
        "Legend": "/car1/segmentation/legend",
    }
    assert rendered["Window Geometry"] == yaml.safe_load(template)["Window Geometry"]  # the rest is kept
    with pytest.raises(RvizTemplateError, match="lacks the display"):
        render_rviz_config("Visualization Manager:\n  Displays: []\n", one)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", ("",)), ("front", ("front",)), (" front, rear ", ("front", "rear")), ("cam/left", ("cam/left",))],
)
def test_cameras_argument(text, expected):
    assert parse_cameras(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("front,front", "names a camera twice"),
        ("/front", "relative namespace like 'front', got '/front'"),
        ("front,,rear", "got ''"),
        ("~front", "relative namespace"),
        ("front cam", "must not contain characters other than"),
    ],
)
def test_bad_cameras_argument_is_one_line_naming_it(text, message):
    with pytest.raises(LaunchArgumentError, match="launch argument 'cameras'") as info:
        parse_cameras(text)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_namespace_argument():
    assert check_namespace("") == "" and check_namespace("car1/perception") == "car1/perception"
    for bad in ("car 1", "car-1", "car1//x", "1car"):
        with pytest.raises(LaunchArgumentError, match=f"launch argument 'namespace' '{bad}'") as info:
            check_namespace(bad)
        assert "\n" not in str(info.value)


def test_launch_files_run_with_launch_api_where_installed():
    pytest.importorskip(
        "launch_ros", reason="launch and launch_ros are not on PyPI and no ROS install is here; see test_executables"
    )
    from launch.launch_description_sources import PythonLaunchDescriptionSource

    for name in ("segmentation.launch.py", "replay.launch.py"):
        description = PythonLaunchDescriptionSource(str(REPO / "launch" / name)).get_launch_description(None)
        assert description.entities


def test_replay_subscribes_reliably_on_bag_time_and_refuses_a_bad_image_topic():
    assert replay_node_parameters("camera/image_raw") == {
        "use_sim_time": True,
        "qos_overrides./camera/image_raw.subscription.reliability": "reliable",
        "qos_overrides./camera/image_raw.subscription.depth": 64,
        "queue_depth": 64,
    }
    with pytest.raises(LaunchArgumentError, match="launch argument 'image' 'camera//raw'") as info:
        replay_node_parameters("camera//raw")
    assert "\n" not in str(info.value)
