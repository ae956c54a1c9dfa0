"""Test tiers and the environment every ROS test shares.

Folders set the tier (test/core -> ``core``, test/ros -> ``ros``); ``gpu`` tests are skipped where
torch sees no CUDA device. The DDS settings below are set before any rclpy import and are inherited
by the node processes the tests start, because every process of a run must share them.
"""

from __future__ import annotations

import gc
import os
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from vseg_ros.ros_process import use_local_large_image_transports

# One DDS domain per test run, so that parallel runs on one machine do not see each other.
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
os.environ.setdefault("ROS_LOG_DIR", tempfile.mkdtemp(prefix="vseg-ros-log-"))
# HD images between processes arrive whole: shared memory with large segments, as in vseg demo.
use_local_large_image_transports()
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")

TEST_ROOT = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    has_cuda = torch.cuda.is_available()
    for item in items:
        tier = Path(item.fspath).relative_to(TEST_ROOT).parts[0]
        if tier in ("core", "ros"):
            item.add_marker(getattr(pytest.mark, tier))
        if item.get_closest_marker("gpu") and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device; torch sees none"))


_exit_status: list[int] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _exit_status.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """End the run with pytest's status, skipping the interpreter's finalisation.

    A failed test's traceback stays alive until exit (pytest keeps it in ``sys.last_traceback``), and
    with it every rclpy node, executor and context in its frames. Left to interpreter finalisation,
    those are destroyed in no particular order after DDS's own threads began to stop, and Fast DDS
    can then block forever in a participant's destructor (a run that had printed its last test
    result never ended). So: drop the traceback and collect while everything is still alive, then
    leave with pytest's exit status once the report is written.
    """
    if not _exit_status:  # pytest ended before a session (usage error, --help): nothing to guard
        return
    sys.last_type = sys.last_value = sys.last_traceback = None
    if hasattr(sys, "last_exc"):
        sys.last_exc = None
    gc.collect()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_exit_status[-1])


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    yield
