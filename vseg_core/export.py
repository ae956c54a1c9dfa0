"""ONNX export of a streaming model: graphs with explicit temporal state, and the JSON sidecar.

Every graph takes the frame as the runtime receives it, uint8 (H, W, 3) RGB, and does the
preprocessing itself (to float, / 255, the model's own normalisation), so a backend uploads bytes.
What a graph carries from frame to frame is an explicit input and output:

- single-frame models (ICNet, DeepLab): graph ``step``: frame -> logits;
- ConvLSTM models (LSTM-ICNet): graph ``step``: (frame, h_TAP, c_TAP per cell) -> (logits,
  h_TAP_out, c_TAP_out); the state starts as zeros of the shapes the sidecar lists;
- keyframe models (DFF, Accel): graph ``keyframe``: frame -> (logits, features_out) on keyframes;
  graph ``nonkey``: (frame, previous frame | flow, features) -> (logits, features_out, [flow],
  [reference_scores, update_scores]) on the others. FlowNetS runs inside ``nonkey`` (it takes the
  previous frame's bytes); OpenCV DIS has no ONNX form, so it runs on the host and ``nonkey`` takes
  its flow (1, 2, h, w) in feature pixels. The extra outputs are what keyframe policies read.

Logits leave the graphs at the graph's input size, float32: the runtime's postprocessing (resize
to the frame, argmax, confidence, the finite check) and the metrics need them, and keeping it
outside keeps every backend's labels the same code's.

Two layers have no ONNX form as PyTorch writes them and are replaced, in a copy of the model, by
equal formulations of standard ops: torchvision's deformable convolution (ONNX DeformConv exists
only from opset 19, and ONNX Runtime and TensorRT do not implement it) becomes bilinear sampling
(GridSample) and one matrix product; adaptive average pooling of unknown size (ICNet's pyramid,
``--dynamic``) is decomposed by the torch.export-based exporter. The sidecar (``export.json``) is
the contract with the backends: model name and config, classes, input, state tensors, which graph
runs when, and what runs on the host.
"""

from __future__ import annotations

import copy
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import DeformConv2d

from vseg_core.models.accel import Accel, ScoreFusion
from vseg_core.models.lstm_icnet import LSTMICNet
from vseg_core.models.streaming import StatelessSegmenter, StreamingSegmenter
from vseg_core.nn.motion import DISFlow, LearnedFlow
from vseg_core.nn.warp import warp
from vseg_core.palette import ClassPalette
from vseg_core.timing import NullTimer

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MIN_OPSET",
    "SIDECAR",
    "ExportConfig",
    "ExportError",
    "SampledDeformConv2d",
    "export_model",
    "frame_to_input",
    "state_shapes_at",
]

FORMAT = "vseg-onnx-export"
FORMAT_VERSION = 1
SIDECAR = "export.json"
#: The torch.export-based exporter writes opset 18 and later (GridSample, Resize with antialias).
MIN_OPSET = 18
DEFAULT_OPSET = 18
#: The smallest frame side a --dynamic graph accepts (the coarsest maps are 1/32 of it).
_MIN_DYNAMIC_SIDE = 32
_MAX_DYNAMIC_SIDE = 8192
DIS_NOTE = "OpenCV DIS flow has no ONNX form: it runs on the host and the 'nonkey' graph takes its flow as input"
_NULL_TIMER = NullTimer()


class ExportError(ValueError):
    """A model, setting or exported file that cannot be used as asked; one line that says what was expected."""


@dataclass(frozen=True)
class ExportConfig:
    """height, width: the frame size the graphs take (fixed shapes: what TensorRT builds best);
    with ``dynamic`` they only size the example frame, and any frame of at least 32 x 32 runs.
    opset: ONNX opset (>= 18)."""

    height: int | None = None
    width: int | None = None
    dynamic: bool = False
    opset: int = DEFAULT_OPSET

    def __post_init__(self) -> None:
        if (self.height is None) != (self.width is None):
            raise ExportError("give both height and width (the camera's frame size), or neither with dynamic")
        if self.height is None and not self.dynamic:
            raise ExportError("give the frame size (height and width) of the graphs, or dynamic=True for any size")
        if self.height is not None and (self.height < _MIN_DYNAMIC_SIDE or self.width < _MIN_DYNAMIC_SIDE):
            raise ExportError(f"height and width must be at least {_MIN_DYNAMIC_SIDE}, got {self.height}x{self.width}")
        if self.opset < MIN_OPSET:
            raise ExportError(
                f"opset must be >= {MIN_OPSET} (the exporter's and GridSample's minimum), got {self.opset}"
            )


def frame_to_input(frame: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) RGB in [0, 1]: the runtime's preprocessing, inside the graph."""
    return frame.permute(2, 0, 1).unsqueeze(0).to(dtype).div(255.0)


# ------------------------------------------------------------------------------------ export-friendly layers
class SampledDeformConv2d(nn.Module):
    """torchvision's ``deform_conv2d`` (DCNv1: offsets, no mask) as bilinear sampling and a matrix product.

    Each kernel tap samples the input at its deformed position with ``grid_sample`` (zeros outside,
    as torchvision's kernel reads them), the taps are stacked into columns and one matrix product
    with the weight gives the output: the same sum as torchvision's im2col, in ops that ONNX (opset
    16+), ONNX Runtime and TensorRT all have. Shares the weights of the layer it replaces.
    ``forward``: (B, C, H, W) -> (B, O, Ho, Wo).
    """

    def __init__(self, conv: DeformConv2d) -> None:
        super().__init__()
        if conv.groups != 1:
            raise ExportError(f"a grouped deformable convolution (groups={conv.groups}) has no export here; groups=1")
        self.weight = conv.weight
        self.bias = conv.bias
        self.offset = conv.offset
        self.stride, self.padding, self.dilation = conv.stride, conv.padding, conv.dilation
        self.offset_groups = conv.offset_groups

    def forward(self, x: Tensor) -> Tensor:
        offset = self.offset(x)
        b, c, h, w = x.shape
        out_channels, _, kh, kw = self.weight.shape
        ho, wo = offset.shape[-2:]
        g, k = self.offset_groups, kh * kw
        off = offset.reshape(b, g, k, 2, ho, wo)  # per tap (dy, dx), torchvision's layout
        dtype = torch.promote_types(x.dtype, torch.float32)
        ys = (torch.arange(ho, device=x.device, dtype=dtype) * self.stride[0] - self.padding[0]).view(1, 1, 1, -1, 1)
        xs = (torch.arange(wo, device=x.device, dtype=dtype) * self.stride[1] - self.padding[1]).view(1, 1, 1, 1, -1)
        tap_y = (torch.arange(kh, device=x.device, dtype=dtype) * self.dilation[0]).repeat_interleave(kw)
        tap_x = (torch.arange(kw, device=x.device, dtype=dtype) * self.dilation[1]).repeat(kh)
        py = ys + tap_y.view(1, 1, k, 1, 1) + off[:, :, :, 0].to(dtype)  # (B, G, K, Ho, Wo) input rows
        px = xs + tap_x.view(1, 1, k, 1, 1) + off[:, :, :, 1].to(dtype)
        # Pixel i -> (2 i + 1) / n - 1 is the align_corners=False convention: exact for every size.
        grid = torch.stack([(2.0 * px + 1.0) / w - 1.0, (2.0 * py + 1.0) / h - 1.0], dim=-1)
        cols = F.grid_sample(
            x.to(dtype).reshape(b * g, c // g, h, w),
            grid.reshape(b * g, k * ho, wo, 2),
            mode="bilinear",
            padding_mode="zeros",
            align_corners=False,
        )  # (B * G, C / G, K * Ho, Wo)
        cols = cols.reshape(b, c * k, ho * wo)  # channel-major, tap-minor: the weight's (C, kh, kw) order
        out = torch.matmul(self.weight.reshape(out_channels, c * k).to(dtype), cols).to(x.dtype)
        out = out.reshape(b, out_channels, ho, wo)
        return out if self.bias is None else out + self.bias.view(1, -1, 1, 1)


def _exportable_copy(model: StreamingSegmenter, dtype: torch.dtype) -> StreamingSegmenter:
    """A CPU eval copy of ``model`` with every layer that has no ONNX form replaced by an equal one."""
    clone = copy.deepcopy(model).cpu().eval()
    for name, module in list(clone.named_modules()):
        if isinstance(module, DeformConv2d):
            if not hasattr(module, "offset"):
                raise ExportError(f"{name}: a DeformConv2d without its own offset layer cannot be exported")
            parent_name, _, child = name.rpartition(".")
            parent = clone.get_submodule(parent_name) if parent_name else clone
            setattr(parent, child, SampledDeformConv2d(module))
    return clone.to(dtype).requires_grad_(False)


# ------------------------------------------------------------------------------------ the graphs
class _StatelessGraph(nn.Module):
    def __init__(self, model: StatelessSegmenter, dtype: torch.dtype) -> None:
        super().__init__()
        self.model, self.dtype = model, dtype

    def forward(self, frame: Tensor) -> Tensor:
        return self.model.segment(frame_to_input(frame, self.dtype), _NULL_TIMER).float()


class _ConvLSTMGraph(nn.Module):
    """(frame, h_0, c_0, h_1, c_1, ...) -> (logits, h_0', c_0', ...), cells in ``taps`` order."""

    def __init__(self, model: LSTMICNet, dtype: torch.dtype) -> None:
        super().__init__()
        self.model, self.dtype, self.taps = model, dtype, list(model.temporal)

    def forward(self, frame: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        pairs = {tap: (state[2 * i], state[2 * i + 1]) for i, tap in enumerate(self.taps)}
        out = self.model.step(frame_to_input(frame, self.dtype), pairs)
        flat = [t for tap in self.taps for t in out.state[tap]]
        return (out.logits.float(), *flat)


class _KeyframeGraph(nn.Module):
    def __init__(self, model: Accel, dtype: torch.dtype) -> None:
        super().__init__()
        self.model, self.dtype = model, dtype

    def forward(self, frame: Tensor) -> tuple[Tensor, Tensor]:
        logits, features = self.model.keyframe(frame_to_input(frame, self.dtype))
        return logits.float(), features


class _NonKeyGraph(nn.Module):
    """(frame, previous | flow, features) -> (logits, features_out, [flow], [reference_scores, update_scores])."""

    def __init__(self, model: Accel, dtype: torch.dtype) -> None:
        super().__init__()
        self.model, self.dtype = model, dtype
        self.learned_flow = isinstance(model.motion, LearnedFlow)
        self.score_fusion = isinstance(model.fusion, ScoreFusion)

    def forward(self, frame: Tensor, motion_input: Tensor, features: Tensor) -> tuple[Tensor, ...]:
        x = frame_to_input(frame, self.dtype)
        motion_features = None
        if self.learned_flow:
            motion = self.model.motion(x, frame_to_input(motion_input, self.dtype), grid=tuple(features.shape[-2:]))
            flow, motion_features = motion.flow, motion.features
        else:
            flow = motion_input.to(self.dtype)
        warped = warp(features, flow)
        logits, _, extras = self.model._nonkey_logits(x, warped, motion_features, _NULL_TIMER)
        outputs = [logits.float(), warped]
        if self.learned_flow:
            outputs.append(flow.float())
        if self.score_fusion:
            outputs += [extras["reference_scores"].float(), extras["update_scores"].float()]
        return tuple(outputs)


# ------------------------------------------------------------------------------------ export
def _kind(model: StreamingSegmenter) -> str:
    if isinstance(model, StatelessSegmenter):
        return "single_frame"
    if isinstance(model, LSTMICNet):
        return "convlstm"
    if isinstance(model, Accel):
        return "keyframe"
    raise ExportError(
        f"no ONNX export for {type(model).__name__}: export knows single-frame models, LSTM-ICNet and DFF/Accel"
    )


def _spec(name: str, tensor: Tensor, dynamic_dims: dict[int, str]) -> dict[str, Any]:
    dtype = {torch.uint8: "uint8", torch.float32: "float32", torch.float16: "float16"}[tensor.dtype]
    shape = [dynamic_dims.get(i, int(n)) for i, n in enumerate(tensor.shape)]
    return {"name": name, "dtype": dtype, "shape": shape}


def _dynamic_map(tensor: Tensor, prefix: str, *, image: bool) -> dict[int, str]:
    """Which dims of a graph tensor follow the frame size in a --dynamic export, named for the sidecar."""
    if image:  # an (H, W, 3) frame
        return {0: "height", 1: "width"}
    return {tensor.ndim - 2: f"{prefix}_h", tensor.ndim - 1: f"{prefix}_w"}


def _run_export(
    module: nn.Module,
    args: tuple[Tensor, ...],
    path: Path,
    *,
    names: tuple[list, list],
    config: ExportConfig,
    label: str,
) -> None:
    """torch.onnx.export (torch.export-based) with one-line errors."""
    input_names, output_names = names
    dynamic_shapes = None
    if config.dynamic:
        height = torch.export.Dim("height", min=_MIN_DYNAMIC_SIDE, max=_MAX_DYNAMIC_SIDE)
        width = torch.export.Dim("width", min=_MIN_DYNAMIC_SIDE, max=_MAX_DYNAMIC_SIDE)
        specs: list[Any] = []
        for i, arg in enumerate(args):
            if arg.dtype == torch.uint8 and arg.ndim == 3:
                specs.append({0: height, 1: width})
            else:  # state and flow follow the frame: let the exporter derive their sizes
                specs.append({arg.ndim - 2: torch.export.Dim.AUTO, arg.ndim - 1: torch.export.Dim.AUTO} if i else None)
        dynamic_shapes = tuple(specs)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module,
                args,
                dynamo=True,
                opset_version=config.opset,
                input_names=input_names,
                output_names=output_names,
                dynamic_shapes=dynamic_shapes,
                verbose=False,
                report=False,
            )
            program.save(str(path))
    except ExportError:
        raise
    except Exception as exc:  # the exporter raises many types; the user needs the op and the model
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise ExportError(f"cannot export {label} to ONNX (opset {config.opset}): {first[:300]}") from None


def export_model(
    model: StreamingSegmenter,
    out_dir: str | Path,
    config: ExportConfig,
    *,
    palette: ClassPalette | None = None,
) -> Path:
    """Write the graphs of ``model`` and ``export.json`` into ``out_dir``; return the sidecar's path.

    ``model`` should come from ``create_model`` or ``load_checkpoint`` (it then knows its registered
    name and config, and a checkpoint its classes); ``palette`` overrides the classes. Raises
    :class:`ExportError` (one line) for models, layers or settings that cannot be exported.
    """
    if not isinstance(model, StreamingSegmenter):
        raise ExportError(f"model must be a vseg_core StreamingSegmenter, got {type(model).__name__}")
    kind = _kind(model)
    name = getattr(model, "model_name", type(model).__name__)
    if palette is None:
        record = getattr(model, "checkpoint_record", None)
        palette = record.palette if record is not None else None
    if palette is not None and palette.num_classes != model.num_classes:
        raise ExportError(f"the palette has {palette.num_classes} classes, {name} predicts {model.num_classes}")
    dtype = torch.float32  # graphs in fp32; TensorRT builds fp16 engines from them (trtexec --fp16)
    height, width = (config.height, config.width) if config.height is not None else (128, 192)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    net = _exportable_copy(model, dtype)
    # Seeded example frame: the graphs do not depend on it, but a deterministic one keeps exports repeatable.
    generator = torch.Generator().manual_seed(0)
    frame = torch.randint(0, 256, (height, width, 3), dtype=torch.uint8, generator=generator)
    frame_dims = _dynamic_map(frame, "", image=True) if config.dynamic else {}
    graphs: dict[str, dict[str, Any]] = {}
    state: list[dict[str, Any]] = []
    host: dict[str, Any] | None = None
    notes: list[str] = []

    def dims(t: Tensor, prefix: str) -> dict[int, str]:
        return _dynamic_map(t, prefix, image=False) if config.dynamic else {}

    def add_graph(graph_name: str, runs: str, module: nn.Module, inputs: dict[str, Tensor], prefixes: dict[str, str]):
        with torch.no_grad():
            outputs = module(*inputs.values())
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        output_names = list(prefixes)[len(inputs) :]
        path = out / f"{graph_name}.onnx"
        _run_export(
            module, tuple(inputs.values()), path, names=(list(inputs), output_names), config=config,
            label=f"{name} '{graph_name}'",
        )  # fmt: skip
        graphs[graph_name] = {
            "file": path.name,
            "runs": runs,
            "inputs": [
                _spec(n, t, frame_dims if t.dtype == torch.uint8 else dims(t, prefixes[n])) for n, t in inputs.items()
            ],
            "outputs": [_spec(n, t, dims(t, prefixes[n])) for n, t in zip(output_names, outputs, strict=True)],
        }
        return dict(zip(output_names, outputs, strict=True))

    if kind == "single_frame":
        add_graph(
            "step", "every frame", _StatelessGraph(net, dtype), {"frame": frame}, {"frame": "", "logits": "frame"}
        )
    elif kind == "convlstm":
        with torch.no_grad():
            first = net.step(frame_to_input(frame, dtype), net.init_state(frame_to_input(frame, dtype)))
        inputs: dict[str, Tensor] = {"frame": frame}
        prefixes = {"frame": ""}
        for tap in net.temporal:
            h, c = first.state[tap]
            inputs[f"h_{tap}"], inputs[f"c_{tap}"] = torch.zeros_like(h), torch.zeros_like(c)
            prefixes[f"h_{tap}"] = prefixes[f"c_{tap}"] = tap
        prefixes["logits"] = "frame"
        for tap in net.temporal:
            prefixes[f"h_{tap}_out"] = prefixes[f"c_{tap}_out"] = tap
        add_graph("step", "every frame", _ConvLSTMGraph(net, dtype), inputs, prefixes)
        for tap in net.temporal:
            for part in ("h", "c"):
                spec = _spec(f"{part}_{tap}", inputs[f"{part}_{tap}"], dims(inputs[f"{part}_{tap}"], tap))
                state.append({**spec, "output": f"{part}_{tap}_out", "initial": "zeros"})
    else:
        key = add_graph(
            "keyframe",
            "the first frame after a reset and every frame the keyframe policy picks",
            _KeyframeGraph(net, dtype),
            {"frame": frame},
            {"frame": "", "logits": "frame", "features_out": "features"},
        )
        features = key["features_out"]
        learned = isinstance(net.motion, LearnedFlow)
        if learned:
            motion_name, motion_input = "previous", torch.roll(frame, 2, dims=1)
        elif isinstance(net.motion, DISFlow):
            motion_name = "flow"
            motion_input = torch.zeros(1, 2, *features.shape[-2:], dtype=dtype)
            host = {"motion": "dis", "preset": net.motion.preset, "output": "flow", "stride": net.motion.stride}
            notes.append(DIS_NOTE)
        else:
            raise ExportError(f"no ONNX export for the motion source {type(net.motion).__name__}")
        prefixes = {"frame": "", motion_name: "" if learned else "features", "features": "features"}
        prefixes.update({"logits": "frame", "features_out": "features"})
        if learned:
            prefixes["flow"] = "features"
        if isinstance(net.fusion, ScoreFusion):
            prefixes["reference_scores"] = prefixes["update_scores"] = "scores"
        add_graph(
            "nonkey",
            "every other frame: warps the previous frame's features to this one",
            _NonKeyGraph(net, dtype),
            {"frame": frame, motion_name: motion_input, "features": features},
            prefixes,
        )
        state.append({**_spec("features", features, dims(features, "features")), "output": "features_out",
                      "initial": "from the keyframe graph"})  # fmt: skip
        state.append({"name": "previous", "dtype": "uint8", "shape": graphs["keyframe"]["inputs"][0]["shape"],
                      "initial": "the keyframe's frame", "on": "host"})  # fmt: skip

    sidecar = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "model": name,
        "config": getattr(model, "model_config", {}),
        "kind": kind,
        "num_classes": model.num_classes,
        "classes": list(palette.names) if palette is not None else None,
        "palette": palette.to_dict() if palette is not None else None,
        "input": {
            "name": "frame",
            "dtype": "uint8",
            "layout": "HWC RGB",
            "height": None if config.dynamic else height,
            "width": None if config.dynamic else width,
            "dynamic": config.dynamic,
            "preprocessing": "in the graph: / 255, then the model's normalisation",
        },
        "precision": "fp32",
        "opset": config.opset,
        "graphs": graphs,
        "state": state,
        "host": host,
        "notes": notes,
        "exported_with": {"torch": torch.__version__},
    }
    path = out / SIDECAR
    path.write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")
    return path


def state_shapes_at(model_name: str, config: dict[str, Any], height: int, width: int) -> dict[str, tuple[int, ...]]:
    """Shapes of a ConvLSTM model's state tensors for (height, width) frames, from its registered
    builder on the ``meta`` device (no weights, no compute): what a --dynamic export's zero state needs."""
    from vseg_core.models.registry import create_model

    with torch.device("meta"):
        net = create_model(model_name, **config).eval()
    if not isinstance(net, LSTMICNet):
        raise ExportError(f"{model_name} has no zero-initialised state")
    frame = torch.zeros(1, 3, height, width, device="meta")
    with torch.no_grad():
        out = net.step(frame, net.init_state(frame))
    shapes = {}
    for tap, (h, c) in out.state.items():
        shapes[f"h_{tap}"], shapes[f"c_{tap}"] = tuple(h.shape), tuple(c.shape)
    return shapes
