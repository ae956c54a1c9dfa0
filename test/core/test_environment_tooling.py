"""`make venv`'s own checks: missing tools are named, broken messages fail the build, re-runs are no-ops."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _path_without(tmp_path: Path, missing: set[str]) -> str:
    """A PATH holding links to the tools make venv needs, minus ``missing``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "python3", "cmake", "cc", "gcc", "c++", "g++", "make", "dirname", "cat"):
        found = shutil.which(tool)
        if tool not in missing and found:
            (bin_dir / tool).symlink_to(found)
    return str(bin_dir)


@pytest.mark.parametrize(
    ("missing", "named"),
    [({"cmake"}, "cmake"), ({"c++", "g++"}, "C++ compiler"), ({"cc", "gcc"}, "a C compiler")],
)
def test_check_tools_names_what_is_missing(tmp_path, missing, named):
    path = _path_without(tmp_path, missing)
    result = subprocess.run(
        [shutil.which("bash"), str(REPO / "scripts" / "check_tools.sh"), "python3"],
        env={"PATH": path},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "missing" in result.stderr
    assert named in result.stderr


def test_check_tools_passes_on_this_machine(tmp_path):
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "check_tools.sh"), "python3"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_a_broken_message_fails_the_interface_build_loudly(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("CMakeLists.txt", "package.xml", "msg", "scripts"):
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy2
        copy(REPO / name, src / name)
    with (src / "msg" / "SegmentationInfo.msg").open("a") as f:
        f.write("no_such_package/NoSuchType broken_field\n")
    prefix = tmp_path / "prefix"
    result = subprocess.run(
        ["bash", str(src / "scripts" / "build_interfaces.sh"), sys.prefix, str(tmp_path / "build"), str(prefix)],
        capture_output=True,
        text=True,
        check=False,
        env=dict(os.environ),
    )
    assert result.returncode != 0
    assert "build_interfaces:" in result.stderr and "failed" in result.stderr
    assert not (prefix / "lib").exists(), "a failed build must install nothing"


def test_make_venv_is_up_to_date_after_it_ran():
    # `make test` ran `make venv` before pytest; asking again must find nothing to do.
    result = subprocess.run(["make", "-q", "venv"], cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 0, "make venv would rebuild something although nothing changed"
