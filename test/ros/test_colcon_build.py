"""The repository is a real colcon package: it builds in a workspace and installs what ROS users run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PY = f"python{sys.version_info.major}.{sys.version_info.minor}"


def _copy_sources(dest: Path) -> None:
    """Copy the files git knows about (tracked, or new and not ignored), as a clone into src/ would have."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    dest.mkdir(parents=True)
    for name in filter(None, files):
        src = REPO / os.fsdecode(name)
        if src.is_file():
            (dest / os.fsdecode(name)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / os.fsdecode(name))


@pytest.mark.slow
@pytest.mark.timeout(1800)  # a colcon build of the messages plus a run of the installed `vseg`
def test_colcon_build_installs_messages_python_packages_executable_launch_and_config(tmp_path):
    colcon = Path(sys.executable).with_name("colcon")
    if not colcon.exists():
        pytest.fail(f"colcon is not installed next to {sys.executable}; run `make venv`")
    _copy_sources(tmp_path / "src" / "vseg")
    prefix = sys.prefix
    env = dict(os.environ, AMENT_PREFIX_PATH=prefix, CMAKE_PREFIX_PATH=prefix)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    build = subprocess.run(
        [
            str(colcon), "build", "--base-paths", "src", "--build-base", "build", "--install-base", "install",
            "--event-handlers", "console_direct-", "--cmake-args", "-DBUILD_TESTING=OFF",
            f"-DPython3_EXECUTABLE={sys.executable}",
        ],
        check=False,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]

    install = tmp_path / "install" / "vseg"
    site = install / "lib" / PY / "site-packages"
    expected = [
        install / "share" / "vseg" / "package.xml",
        install / "share" / "vseg" / "msg" / "SegmentationInfo.msg",
        install / "share" / "vseg" / "msg" / "SegmentationClasses.msg",
        install / "share" / "vseg" / "launch" / "segmentation.launch.py",
        install / "share" / "vseg" / "launch" / "replay.launch.py",
        install / "share" / "vseg" / "config" / "vseg.rviz",
        install / "lib" / "vseg" / "bag_play",
        install / "share" / "vseg" / "config" / "segmentation.yaml",
        install / "share" / "vseg" / "config" / "palettes" / "camvid.yaml",
        install / "share" / "ament_index" / "resource_index" / "packages" / "vseg",
        install / "lib" / "vseg" / "segmentation_node",
        install / "lib" / "vseg" / "vseg",
        site / "vseg" / "msg" / "__init__.py",
        site / "vseg_core" / "__init__.py",
        site / "vseg_core" / "models" / "registry.py",
        site / "vseg_ros" / "__init__.py",
    ]
    assert [str(p.relative_to(tmp_path)) for p in expected if not p.exists()] == []
    for executable in ("segmentation_node", "managed_segmentation_node", "bag_play", "vseg"):
        assert os.access(install / "lib" / "vseg" / executable, os.X_OK), executable

    # After sourcing the workspace, Python finds the installed copies, not the sources of this checkout.
    probe = (
        "import vseg.msg, vseg_core, vseg_ros; "
        "from vseg.msg import SegmentationInfo; "
        "from rclpy.serialization import serialize_message, deserialize_message; "
        "m = SegmentationInfo(model='x', frames_dropped=7); "
        "assert deserialize_message(serialize_message(m), SegmentationInfo) == m; "
        "print(vseg.msg.__file__); print(vseg_core.__file__); print(vseg_ros.__file__)"
    )
    run = subprocess.run(
        ["bash", "-c", f'source install/setup.bash && "{sys.executable}" -c "{probe}"'],
        check=False,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    for line in run.stdout.split():
        assert Path(line).is_relative_to(site), f"{line} was imported from outside the workspace install"
    assert sysconfig.get_paths()["purelib"] not in run.stdout

    # `ros2 run vseg vseg ...` runs lib/vseg/vseg: the `vseg` command, from the workspace's copies,
    # with launch_ros's tail accepted.
    vseg = subprocess.run(
        ["bash", "-c", f'source install/setup.bash && "{sys.executable}" install/vseg/lib/vseg/vseg models icnet '
         "--height 32 --width 32 --json --ros-args -r __node:=vseg"],
        check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert vseg.returncode == 0 and '"name": "icnet"' in vseg.stdout, vseg.stderr[-4000:]
