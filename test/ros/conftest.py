"""Fixtures for tests with a real rclpy: a private context per test, spin helpers."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator

import pytest
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor

from vseg_ros import node_process


@pytest.fixture
def ros_context() -> Iterator[Context]:
    """A context of its own, so tests never share rclpy's global state."""
    ctx = Context()
    rclpy.init(context=ctx)
    try:
        yield ctx
    finally:
        ctx.try_shutdown()


@pytest.fixture
def spin_until(ros_context: Context) -> Callable[..., bool]:
    """``spin_until(node, predicate, timeout=10.0)``: spin ``node`` until ``predicate()`` is true."""
    executors: list[SingleThreadedExecutor] = []

    def spin(node, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        executor = SingleThreadedExecutor(context=ros_context)
        executor.add_node(node)
        executors.append(executor)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            executor.spin_once(timeout_sec=0.05)
        return predicate()

    yield spin
    for executor in executors:
        executor.shutdown()


@pytest.fixture
def undiscoverable_starts(monkeypatch):
    """``starts[i]`` True: the i-th segmentation_node started through vseg_ros.node_process (demo,
    node-fuzz, node-bench --soak) runs in another DDS domain, so it comes up, says it is segmenting and
    is never matched, as when discovery stalls; ``calls`` gets each start's name. Restarts come after
    15 s of that instead of 30."""
    starts: list[bool] = []
    calls: list[str] = []
    real = node_process.start_node_process
    other_domain = str(int(os.environ["ROS_DOMAIN_ID"]) + 101)  # test runs use 1-100 (test/conftest.py)

    def start(params, **kwargs):
        in_other_domain = starts[len(calls)]
        calls.append(kwargs["name"])
        with monkeypatch.context() as env:
            if in_other_domain:
                env.setenv("ROS_DOMAIN_ID", other_domain)
            return real(params, **kwargs)

    monkeypatch.setattr(node_process, "start_node_process", start)
    monkeypatch.setattr(node_process, "DISCOVERY_S", 15.0)
    return starts, calls
