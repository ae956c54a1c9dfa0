"""Fixtures for tests with a real rclpy: a private context per test, spin helpers."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor


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
