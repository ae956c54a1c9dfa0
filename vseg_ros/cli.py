"""The `vseg` command: the core subcommands plus those that need ROS (`bag play`, `node-bench`).

ROS modules are imported only inside the ROS subcommands, so `vseg models` and `vseg bench` work
where rclpy is not installed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from vseg_core.cli import CliError, build_parser, run

__all__ = ["main"]


def _bag_play(args: argparse.Namespace) -> int:
    import rclpy
    from rclpy.executors import ExternalShutdownException

    from vseg_ros.bag_play import PlayConfig, play_bag
    from vseg_ros.bags import BagError

    try:
        config = PlayConfig(
            rate=args.rate, loop=args.loop, topics=tuple(args.topics), wait_for_subscribers_s=args.wait_for_subscribers
        )
    except ValueError as exc:
        raise CliError(str(exc)) from None
    rclpy.init()
    node = rclpy.create_node("vseg_bag_play")
    try:
        count = play_bag(args.bag, config, node)
    except BagError as exc:
        raise CliError(str(exc)) from None
    except (KeyboardInterrupt, ExternalShutdownException):
        return 0
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    print(f"published {count} messages from {args.bag}")
    return 0


def _node_bench(args: argparse.Namespace) -> int:
    from vseg_ros.node_bench import measure_node_overhead

    try:
        result = measure_node_overhead(
            args.model, weights=args.weights, height=args.height, width=args.width, frames=args.frames,
            device=args.device,
        )  # fmt: skip
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print(json.dumps(result.as_dict()))
        return 0
    print(
        f"{result.model} at {result.width}x{result.height} ({result.frames} frames, medians): node frame path "
        f"{result.node_ms:.1f} ms, VideoSegmenter.step {result.step_ms:.1f} ms, node overhead "
        f"{result.overhead_ms:.1f} ms = {result.overhead_ratio:.1%} of the step; latency stamp->info "
        f"p50 {result.latency_p50_ms:.1f} ms, p95 {result.latency_p95_ms:.1f} ms"
    )
    return 0


def build_ros_parser() -> argparse.ArgumentParser:
    parser, commands = build_parser()
    bag = commands.add_parser("bag", help="rosbag2 tools that need no ROS install")
    bag_commands = bag.add_subparsers(dest="bag_command", required=True, metavar="BAG_COMMAND")
    p = bag_commands.add_parser("play", help="publish a bag's topics through rclpy at the recorded rate")
    p.add_argument("bag", help="rosbag2 directory (mcap or sqlite3)")
    p.add_argument("--rate", type=float, default=1.0, help="speed factor (default 1.0)")
    p.add_argument("--loop", action="store_true", help="start over at the end until interrupted")
    p.add_argument("--topics", nargs="*", default=[], help="only these topics")
    p.add_argument(
        "--wait-for-subscribers", type=float, default=0.0, metavar="S", help="wait up to S s for subscribers first"
    )
    p.set_defaults(handler=_bag_play)

    p = commands.add_parser("node-bench", help="time the node's own work per frame against the core step")
    p.add_argument("model", help="registered model name")
    p.add_argument("--weights", default="", help="checkpoint (default: random weights)")
    p.add_argument("--height", type=int, default=720)
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--frames", type=int, default=10)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_node_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_ros_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
