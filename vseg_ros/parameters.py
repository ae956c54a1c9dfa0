"""segmentation_node's ROS parameters: declared with descriptors, turned into one frozen config.

This is the one place where ROS parameters become Python values; the node and everything below it
see only :class:`NodeConfig`. Defaults equal config/segmentation.yaml.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    ParameterType,
)
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.node import Node

__all__ = [
    "BACKENDS",
    "DEFAULT_WEIGHTS",
    "KEYFRAME_POLICIES",
    "PRECISIONS",
    "NodeConfig",
    "ParameterError",
    "declare_parameters",
    "read_config",
]

# The node's default: the shipped real-data model with the best CamVid val mIoU at the camera's size
# (DeepLab-Lite2 under the stride-4 decoder, 0.688; README). It is built for the vehicle's GPU: on a 2-core
# CPU at 360x480 it takes 136 ms a frame in torch and 61 ms in ONNX Runtime, so a CPU-only machine following
# a 15 Hz camera wants backend:=onnxruntime with weights:=camvid_deeplab_lite0 (40 ms).
DEFAULT_WEIGHTS = "camvid_deeplab_lite2_decoder"

PRECISIONS = ("fp32", "fp16", "bf16")
BACKENDS = ("torch", "onnxruntime")  # vseg_core.runtime_onnx.BACKENDS (a test holds them equal): the launch
# files import this module, and importing vseg_core would import torch into every launch
KEYFRAME_POLICIES = ("fixed", "adaptive")
MAX_INPUT_SIDE = 8192
# Smallest frame side the node takes (and smallest input_width/height): below 24 pixels ICNet's
# pyramid pooling has no cells; no camera is that small.
MIN_INPUT_SIDE = 32


class ParameterError(ValueError):
    """A parameter value the node cannot run with; the message names the parameter."""


@dataclass(frozen=True)
class NodeConfig:
    model: str  # "" until the checkpoint names it (the node fills it in when it loads the weights)
    weights: str
    device: str
    backend: str  # torch | onnxruntime
    onnx_model: str  # an export's folder or sidecar; "" with onnxruntime: export `weights` at start-up
    providers: tuple[str, ...]  # onnxruntime's, in order of preference
    precision: str
    cameras: tuple[str, ...]
    compressed: bool
    keyframe_policy: str
    keyframe_interval: int
    input_size: tuple[int, int] | None  # (height, width), None: the camera's size
    queue_depth: int  # frames kept per camera while the model is busy
    max_input_side: int  # frames beyond these are refused before decoding
    max_input_pixels: int
    palette_file: str
    publish_color: bool
    publish_overlay: bool
    publish_confidence: bool
    overlay_alpha: float
    jpeg_quality: int
    reset_gap_s: float  # inf: never reset on forward gaps


def _descriptor(description: str, type_: int, *, read_only: bool = True, **ranges) -> ParameterDescriptor:
    return ParameterDescriptor(description=description, type=type_, read_only=read_only, **ranges)


_STR, _BOOL, _INT, _DOUBLE, _STRS = (
    ParameterType.PARAMETER_STRING,
    ParameterType.PARAMETER_BOOL,
    ParameterType.PARAMETER_INTEGER,
    ParameterType.PARAMETER_DOUBLE,
    ParameterType.PARAMETER_STRING_ARRAY,
)

# name: (default, descriptor). Read-only ones need a restart: they decide what is loaded and subscribed.
PARAMETERS: dict[str, tuple[object, ParameterDescriptor]] = {
    "model": (
        "",
        _descriptor("registered model name (`vseg models` lists them); empty: the one `weights` holds", _STR),
    ),
    "weights": (
        DEFAULT_WEIGHTS,
        _descriptor(
            "checkpoint (.safetensors with .json) or a shipped name (camvid_icnet_lite2); "
            "empty: random weights of `model`",
            _STR,
        ),
    ),
    "device": ("auto", _descriptor("auto | cpu | cuda | cuda:N (backend torch)", _STR)),
    "backend": (
        "torch",
        _descriptor("torch | onnxruntime (runs an export: onnx_model, or weights exported at start-up)", _STR),
    ),
    "onnx_model": (
        "",
        _descriptor(
            "backend onnxruntime: an export (`vseg export` folder or its export.json); empty: export `weights` at "
            "start-up at input_width x input_height",
            _STR,
        ),
    ),
    "providers": (
        ["cpu"],
        _descriptor("backend onnxruntime: execution providers in order of preference (tensorrt, cuda, cpu)", _STRS),
    ),
    "precision": ("fp32", _descriptor("fp32 | fp16 | bf16 (fp16/bf16 need CUDA)", _STR)),
    "cameras": (
        [""],
        _descriptor('input namespaces: "" reads `image`, "front" reads `front/image`; one state each', _STRS),
    ),
    "compressed": (False, _descriptor("read <camera>/image/compressed (sensor_msgs/CompressedImage)", _BOOL)),
    "keyframe_policy": (
        "fixed",
        _descriptor("fixed | adaptive: when Accel/DFF models run their reference branch", _STR, read_only=False),
    ),
    "keyframe_interval": (
        5,
        _descriptor(
            "frames between keyframes (fixed) or at most (adaptive)",
            _INT,
            read_only=False,
            integer_range=[IntegerRange(from_value=1, to_value=1000, step=1)],
        ),
    ),
    "input_width": (
        0,
        _descriptor(
            "resize frames to this width before the model; 0 keeps the camera's size",
            _INT,
            integer_range=[IntegerRange(from_value=0, to_value=MAX_INPUT_SIDE, step=1)],
        ),
    ),
    "input_height": (
        0,
        _descriptor(
            "resize frames to this height before the model; 0 keeps the camera's size",
            _INT,
            integer_range=[IntegerRange(from_value=0, to_value=MAX_INPUT_SIDE, step=1)],
        ),
    ),
    "queue_depth": (
        1,
        _descriptor(
            "frames kept per camera while the model is busy: 1 keeps the newest only (live cameras: bounded "
            "latency); more keeps every frame of a replay that comes a little faster than the model",
            _INT,
            integer_range=[IntegerRange(from_value=1, to_value=1000, step=1)],
        ),
    ),
    "max_input_side": (
        4096,
        _descriptor(
            "frames with a longer side are refused from their header, before decoding (decompression bombs)",
            _INT,
            integer_range=[IntegerRange(from_value=MIN_INPUT_SIDE, to_value=16384, step=1)],
        ),
    ),
    "max_input_megapixels": (
        16.0,
        _descriptor(
            "frames of more pixels are refused from their header, before decoding",
            _DOUBLE,
            floating_point_range=[FloatingPointRange(from_value=0.001, to_value=268.0, step=0.0)],
        ),
    ),
    "palette_file": (
        "",
        _descriptor(
            "class names and colours, YAML like config/palettes/camvid.yaml; changeable at run time",
            _STR,
            read_only=False,
        ),
    ),
    "publish_color": (True, _descriptor("publish ~/color while someone subscribes", _BOOL)),
    "publish_overlay": (True, _descriptor("publish ~/overlay while someone subscribes", _BOOL)),
    "publish_confidence": (True, _descriptor("publish ~/confidence while someone subscribes", _BOOL)),
    "overlay_alpha": (
        0.5,
        _descriptor(
            "weight of the class colours in ~/overlay",
            _DOUBLE,
            floating_point_range=[FloatingPointRange(from_value=0.0, to_value=1.0, step=0.0)],
        ),
    ),
    "jpeg_quality": (
        90,
        _descriptor(
            "jpeg quality of ~/color/compressed and ~/overlay/compressed (~/labels/compressed is lossless png)",
            _INT,
            integer_range=[IntegerRange(from_value=1, to_value=100, step=1)],
        ),
    ),
    "reset_gap_s": (
        1.0,
        _descriptor("reset the temporal state when stamps jump forward by more than this; 0 never", _DOUBLE),
    ),
}


_TYPE_NAMES = {
    _STR: "a string",
    _BOOL: "true or false",
    _INT: "an integer",
    _DOUBLE: "a number",
    _STRS: "a list of strings",
}


def declare_parameters(node: Node) -> None:
    """Declare every parameter; a value given at start-up that has the wrong type or is out of its
    range is a ParameterError naming it (rclpy's own exception would end start-up with a traceback)."""
    # The value given (command line, parameters file): rclpy keeps the overrides in this attribute
    # in Humble and Jazzy alike; without it the message just leaves the value out.
    given = getattr(node, "_parameter_overrides", {})
    for name, (default, descriptor) in PARAMETERS.items():
        try:
            node.declare_parameter(name, default, descriptor)
        except (InvalidParameterTypeException, InvalidParameterValueException) as exc:
            ranges = descriptor.integer_range or descriptor.floating_point_range
            if isinstance(exc, InvalidParameterTypeException) or not ranges:
                expected = _TYPE_NAMES[descriptor.type]
            else:
                expected = f"in {ranges[0].from_value}..{ranges[0].to_value}"
            got = f", got {given[name].value!r}" if name in given else ""
            raise ParameterError(f"parameter '{name}' must be {expected}{got}") from None


def _choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ParameterError(f"parameter '{name}' must be one of {', '.join(choices)}, got {value!r}")
    return value


def check_keyframe_settings(policy: str, interval: int) -> None:
    """Validate the two run-time changeable parameters (also used by the set-parameters callback)."""
    _choice("keyframe_policy", policy, KEYFRAME_POLICIES)
    if not 1 <= interval <= 1000:
        raise ParameterError(f"parameter 'keyframe_interval' must be in 1..1000, got {interval}")


def read_config(node: Node) -> NodeConfig:
    """Read the declared parameters into a :class:`NodeConfig`; ParameterError names a bad one."""
    p = {name: node.get_parameter(name).value for name in PARAMETERS}
    if not p["model"] and not p["weights"]:
        raise ParameterError(
            f"parameters 'model' and 'weights' are both empty: name a checkpoint (weights:={DEFAULT_WEIGHTS}) or "
            "a registered model to run with random weights (`vseg models` lists them)"
        )
    device = p["device"]
    if not (device in ("auto", "cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit())):
        raise ParameterError(f"parameter 'device' must be auto, cpu, cuda or cuda:N, got {device!r}")
    backend = _choice("backend", p["backend"], BACKENDS)
    if backend == "onnxruntime":
        if device not in ("auto", "cpu"):
            raise ParameterError(
                f"parameter 'device' {device!r}: backend onnxruntime takes its device from 'providers' "
                "(providers:=[cuda,cpu]); leave device at auto"
            )
        if p["precision"] != "fp32":
            raise ParameterError("parameter 'precision': backend onnxruntime runs the export's fp32 graphs; use fp32")
        if not p["onnx_model"] and not p["input_width"]:
            raise ParameterError(
                "parameter 'onnx_model' is empty, so the weights are exported at start-up, at a fixed size: set "
                "input_width and input_height (or pass an export: onnx_model:=DIR from `vseg export`)"
            )
    elif p["onnx_model"]:
        raise ParameterError("parameter 'onnx_model' needs backend:=onnxruntime (backend torch runs `weights`)")
    providers = tuple(p["providers"])
    if not providers or len(set(providers)) != len(providers):
        raise ParameterError(
            f"parameter 'providers' must list distinct providers (tensorrt, cuda, cpu), got {list(providers)}"
        )
    cameras = tuple(p["cameras"])
    if not cameras or len(set(cameras)) != len(cameras):
        raise ParameterError(f"parameter 'cameras' must list distinct namespaces (\"\" for `image`), got {cameras}")
    for cam in cameras:
        if cam.startswith("/") or cam.endswith("/") or " " in cam:
            raise ParameterError(f"parameter 'cameras': {cam!r} must be a relative namespace like 'front'")
    check_keyframe_settings(p["keyframe_policy"], p["keyframe_interval"])
    width, height = p["input_width"], p["input_height"]
    if (width == 0) != (height == 0):
        raise ParameterError("parameters 'input_width' and 'input_height' must both be 0 or both be set")
    if width and min(width, height) < MIN_INPUT_SIDE:
        raise ParameterError(
            f"parameters 'input_width' and 'input_height' must be at least {MIN_INPUT_SIDE}, got {width}x{height}"
        )
    gap = p["reset_gap_s"]
    if math.isnan(gap) or gap < 0:
        raise ParameterError(f"parameter 'reset_gap_s' must be >= 0 seconds (0 never resets on gaps), got {gap}")
    return NodeConfig(
        model=p["model"],
        weights=p["weights"],
        device=device,
        backend=backend,
        onnx_model=p["onnx_model"],
        providers=providers,
        precision=_choice("precision", p["precision"], PRECISIONS),
        cameras=cameras,
        compressed=p["compressed"],
        keyframe_policy=p["keyframe_policy"],
        keyframe_interval=p["keyframe_interval"],
        input_size=(height, width) if width else None,
        queue_depth=p["queue_depth"],
        max_input_side=p["max_input_side"],
        max_input_pixels=round(p["max_input_megapixels"] * 1e6),
        palette_file=p["palette_file"],
        publish_color=p["publish_color"],
        publish_overlay=p["publish_overlay"],
        publish_confidence=p["publish_confidence"],
        overlay_alpha=p["overlay_alpha"],
        jpeg_quality=p["jpeg_quality"],
        reset_gap_s=gap if gap > 0 else math.inf,
    )
