"""Launch files and parameter files name only things that exist (launch_ros is not installable here,
so the launch files are checked statically; the node loads the YAML for real in the node tests)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import yaml

from vseg_ros.parameters import PARAMETERS

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
            if isinstance(kwargs.get("executable"), ast.Constant) and getattr(package, "value", None) == "vseg":
                assert kwargs["executable"].value in _installed_executables(), path.name
        strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
        for ref in strings & {"config", "segmentation.yaml", "vseg.rviz"}:
            assert ref == "config" or (REPO / "config" / ref).exists(), f"{path.name} names config/{ref}"
        # Parameters set from launch arguments are parameters the node declares.
        for dict_node in (n for n in ast.walk(tree) if isinstance(n, ast.DictComp)):
            loop = dict_node.generators[0].iter
            if isinstance(loop, ast.Tuple):
                assert {e.value for e in loop.elts} <= set(PARAMETERS)


def test_rviz_config_shows_the_camera_overlay_and_colours():
    config = yaml.safe_load((REPO / "config" / "vseg.rviz").read_text())
    topics = {d["Topic"]["Value"] for d in config["Visualization Manager"]["Displays"]}
    assert topics == {"/camera/image_raw", "/segmentation/overlay", "/segmentation/color"}
