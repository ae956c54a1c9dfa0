"""The node under test and a tester node in one executor of this process, spun by the test."""

from __future__ import annotations

import time
from collections.abc import Callable

import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node


class NodeGraph:
    """``node`` and a node named ``tester`` (for the test's publishers, subscriptions and clients)
    in one executor; ``spin_until`` spins both until a predicate holds or ``timeout`` seconds pass."""

    def __init__(self, ctx: Context, node: Node, *, timeout: float = 20.0) -> None:
        self.node = node
        self.tester = rclpy.create_node("tester", context=ctx)
        self.executor = SingleThreadedExecutor(context=ctx)
        self.executor.add_node(node)
        self.executor.add_node(self.tester)
        self.timeout = timeout

    def spin_until(self, predicate: Callable[[], object], timeout: float | None = None) -> bool:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while time.monotonic() < deadline and not predicate():
            self.executor.spin_once(timeout_sec=0.02)
        return bool(predicate())

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self.tester.destroy_node()
