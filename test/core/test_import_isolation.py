"""vseg_core is hardware- and middleware-agnostic: it never imports ROS."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import vseg_core

CORE_ROOT = Path(vseg_core.__file__).parent
ROS_MODULES = ("rclpy", "rosidl", "rmw", "vseg.msg", "vseg_ros", "launch", "rosbag2")


def _is_ros(module: str) -> bool:
    interface_package = any(part.endswith(("_msgs", "_srvs", "_interfaces")) for part in module.split("."))
    return interface_package or any(module == m or module.startswith(m + ".") for m in ROS_MODULES)


def test_no_core_source_imports_ros():
    offenders = []
    for path in sorted(CORE_ROOT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{path.relative_to(CORE_ROOT)}:{node.lineno} imports {n}" for n in names if _is_ros(n)]
    assert not offenders, "\n".join(offenders)


def test_importing_every_core_module_loads_no_ros_module():
    modules = sorted(
        ".".join(("vseg_core", *p.relative_to(CORE_ROOT).with_suffix("").parts)).removesuffix(".__init__")
        for p in CORE_ROOT.rglob("*.py")
    )
    script = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print('\\n'.join(sorted(sys.modules)))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True).stdout.split()
    assert "vseg_core.models" in loaded
    assert [m for m in loaded if _is_ros(m)] == []


def test_the_checker_recognises_ros_modules():
    # Guards the guard: the predicate above must flag what it is meant to flag.
    assert all(_is_ros(m) for m in ("rclpy", "rclpy.node", "sensor_msgs.msg", "std_srvs.srv", "vseg.msg"))
    assert not any(_is_ros(m) for m in ("torch", "numpy", "vseg_core.metrics", "torchvision.ops"))
