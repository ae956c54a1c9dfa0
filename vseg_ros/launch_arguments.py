"""The launch files' arguments checked and turned into values, before any process starts.

The launch files call these from an ``OpaqueFunction`` that runs before their nodes, so a bad
argument (or an RViz asked for but not installed) stops the launch with one line and leaves no
process behind. Nothing here imports launch, so the checks are tested where launch is not installed.
"""

from __future__ import annotations

from dataclasses import dataclass

from rclpy.exceptions import NameValidationException
from rclpy.validate_full_topic_name import validate_full_topic_name
from rclpy.validate_namespace import validate_namespace
from rclpy.validate_topic_name import validate_topic_name

from vseg_ros.parameters import PARAMETERS

__all__ = [
    "MODEL_PARAMETERS",
    "LaunchArgumentError",
    "SegmentationTopics",
    "check_namespace",
    "node_parameter_arguments",
    "parse_cameras",
    "replay_node_parameters",
    "rviz_installed",
    "segmentation_topics",
]


REPLAY_QUEUE_DEPTH = 64  # frames: two seconds of a 30 Hz camera
#: Node parameters both launch files take as launch arguments of the same name (what runs, and where).
MODEL_PARAMETERS = ("model", "weights", "device", "precision", "backend", "onnx_model")


class LaunchArgumentError(ValueError):
    """A launch argument that cannot work; the message names it and says what to pass instead."""


def node_parameter_arguments(names: tuple[str, ...] = MODEL_PARAMETERS) -> tuple[tuple[str, str, str], ...]:
    """(name, default, description) of the launch arguments that set the node parameters ``names``:
    the node's own defaults and descriptions, so that a launch file cannot drift from the node."""
    return tuple((name, str(PARAMETERS[name][0]), PARAMETERS[name][1].description) for name in names)


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0].rstrip(":")


def check_namespace(namespace: str) -> str:
    """The node's namespace as launch_ros takes it ("" or a name like "car1" or "/car1/perception")."""
    if namespace:
        try:
            validate_namespace(namespace if namespace.startswith("/") else "/" + namespace)
        except NameValidationException as exc:
            raise LaunchArgumentError(f"launch argument 'namespace' {namespace!r}: {_first_line(exc)}") from None
    return namespace


def parse_cameras(text: str) -> tuple[str, ...]:
    """``cameras:=front,rear`` as the node's ``cameras`` parameter; "" is the one `image` topic."""
    if not text.strip():
        return ("",)
    cameras = tuple(c.strip() for c in text.split(","))
    for camera in cameras:
        if not camera or camera.startswith(("/", "~")):
            raise LaunchArgumentError(
                f"launch argument 'cameras' {text!r}: each camera is a relative namespace like 'front', got {camera!r}"
            )
        try:
            validate_topic_name(camera)
        except NameValidationException as exc:
            raise LaunchArgumentError(f"launch argument 'cameras' {text!r}: {_first_line(exc)}") from None
    if len(set(cameras)) != len(cameras):
        raise LaunchArgumentError(f"launch argument 'cameras' {text!r} names a camera twice")
    return cameras


@dataclass(frozen=True)
class SegmentationTopics:
    """Fully qualified topics of one segmentation_node, per camera: what RViz is pointed at."""

    cameras: tuple[str, ...]
    inputs: tuple[str, ...]
    overlays: tuple[str, ...]
    legend: str


def _absolute(namespace: str, name: str) -> str:
    return "/" + "/".join(p for p in (*namespace.split("/"), *name.split("/")) if p)


def segmentation_topics(*, namespace: str, node: str, image: str, cameras: tuple[str, ...]) -> SegmentationTopics:
    """The topics a node named ``node`` in ``namespace`` reads and writes, with ``image`` remapped
    (the remap applies to the plain `image` topic only; cameras read ``<camera>/image``)."""
    check_namespace(namespace)
    base = _absolute(namespace, node)
    remapped = image if image.startswith("/") else _absolute(namespace, image)
    inputs = tuple(_absolute(namespace, f"{c}/image") if c else remapped for c in cameras)
    overlays = tuple(_absolute(base, f"{c}/overlay" if c else "overlay") for c in cameras)
    return SegmentationTopics(cameras=cameras, inputs=inputs, overlays=overlays, legend=_absolute(base, "legend"))


def rviz_installed() -> bool:
    from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

    try:
        get_package_share_directory("rviz2")
    except PackageNotFoundError:
        return False
    return True


def replay_node_parameters(image: str) -> dict[str, object]:
    """What replay.launch.py gives segmentation_node on top of its parameters file: the bag's time,
    a reliable subscription to the played ``image`` topic, and a queue of frames.

    Live, the node subscribes best effort (sensor data: a lost frame is better than a late one) and
    keeps only the newest frame; a replay is an evaluation, the player publishes reliably, and the
    node queues up to REPLAY_QUEUE_DEPTH frames, so a moment in which the model is slower than the
    bag (a first frame of a new size, another process on the cores) loses no frame. A model that is
    slower than the bag for longer still drops the oldest ones, and says so in ~/info.
    """
    topic = image if image.startswith("/") else "/" + image
    try:
        validate_full_topic_name(topic)
    except NameValidationException as exc:
        raise LaunchArgumentError(f"launch argument 'image' {image!r}: {_first_line(exc)}") from None
    return {
        "use_sim_time": True,
        f"qos_overrides.{topic}.subscription.reliability": "reliable",
        f"qos_overrides.{topic}.subscription.depth": REPLAY_QUEUE_DEPTH,
        "queue_depth": REPLAY_QUEUE_DEPTH,
    }
