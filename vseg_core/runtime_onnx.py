"""The ONNX Runtime backend: an exported model (graphs + ``export.json``) that steps like a model.

:class:`OnnxSegmenter` reads the sidecar, checks it against the graphs (names, dtypes, shapes,
classes) before anything runs, and speaks the streaming protocol of
:class:`~vseg_core.models.streaming.StreamingSegmenter` on uint8 frames: ``init_state(frame)`` and
``step(frame, state, is_keyframe=...)`` -> :class:`StepOutput` with logits as CPU tensors, so that
``VideoSegmenter`` keeps its reset rules, keyframe policies, timings and postprocessing whichever
backend runs. The state is explicit (numpy arrays named as in the sidecar). Nothing in an export
can run code: ONNX graphs and JSON only, no pickle, no custom-op libraries.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vseg_core.export import FORMAT, FORMAT_VERSION, SIDECAR, ExportError, state_shapes_at
from vseg_core.json_records import read_json_record
from vseg_core.models.streaming import StepOutput
from vseg_core.nn.motion import DISFlow
from vseg_core.palette import ClassPalette, PaletteError
from vseg_core.timing import NullTimer, StageTimer

__all__ = ["BACKENDS", "PROVIDERS", "OnnxSegmenter", "available_providers", "resolve_providers"]

BACKENDS = ("torch", "onnxruntime")
#: Short names of the ONNX Runtime execution providers vseg uses, fastest first.
PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
_ORT_DTYPES = {"uint8": "tensor(uint8)", "float32": "tensor(float)", "float16": "tensor(float16)"}
_NP_DTYPES = {"uint8": np.uint8, "float32": np.float32, "float16": np.float16}
_NULL_TIMER = NullTimer()


def _ort():
    try:
        import onnxruntime
    except ImportError:
        raise ExportError("backend 'onnxruntime' needs the onnxruntime package (pip install onnxruntime)") from None
    return onnxruntime


def available_providers() -> list[str]:
    """Short names (``PROVIDERS``) of the execution providers the installed onnxruntime has."""
    have = set(_ort().get_available_providers())
    return [short for short, full in PROVIDERS.items() if full in have]


def resolve_providers(providers: Sequence[str] | None) -> list[str]:
    """["cuda", "cpu"] or full provider names -> ONNX Runtime's names; refuses ones not installed.
    None: the CPU provider."""
    if providers is None:
        providers = ["cpu"]
    if isinstance(providers, str) or not providers:
        raise ExportError(f"providers must be a non-empty list such as ['cuda', 'cpu'], got {providers!r}")
    have = set(_ort().get_available_providers())
    resolved = []
    for p in providers:
        full = PROVIDERS.get(p, p)
        if full not in PROVIDERS.values():
            raise ExportError(f"unknown ONNX Runtime provider {p!r}; providers: {', '.join(PROVIDERS)}")
        if full not in have:
            short = next(k for k, v in PROVIDERS.items() if v == full)
            raise ExportError(
                f"provider {short!r} ({full}) is not in this onnxruntime; installed: {', '.join(available_providers())}"
                + (" (install onnxruntime-gpu)" if short != "cpu" else "")
            )
        resolved.append(full)
    return resolved


def _sidecar_path(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        sidecar = path / SIDECAR
    elif path.suffix == ".onnx" or path.name == SIDECAR:
        sidecar = path.with_name(SIDECAR)
    else:
        raise ExportError(f"{path} is not an export: give the folder `vseg export` wrote, its {SIDECAR} or a graph")
    if not sidecar.is_file():
        raise ExportError(
            f"no sidecar {sidecar}: an exported graph runs only with the {SIDECAR} that `vseg export` writes beside it"
        )
    return sidecar


def _read_sidecar(sidecar: Path) -> dict[str, Any]:
    data = read_json_record(sidecar, what="vseg export sidecar", fmt=FORMAT, version=FORMAT_VERSION, error=ExportError)
    missing = [k for k in ("model", "kind", "num_classes", "input", "graphs", "state") if k not in data]
    if missing:
        raise ExportError(f"{sidecar} lacks {', '.join(missing)}")
    expected = {"single_frame": {"step"}, "convlstm": {"step"}, "keyframe": {"keyframe", "nonkey"}}
    if data["kind"] not in expected or set(data["graphs"]) != expected[data["kind"]]:
        raise ExportError(f"{sidecar}: kind {data['kind']!r} with graphs {sorted(data['graphs'])} is not an export")
    classes = data.get("classes")
    if classes is not None and len(classes) != data["num_classes"]:
        raise ExportError(f"{sidecar} names {len(classes)} classes but says num_classes {data['num_classes']}")
    return data


def _sidecar_palette(spec: dict[str, Any], sidecar: Path) -> ClassPalette | None:
    if spec.get("palette") is None:
        return None
    try:
        palette = ClassPalette.from_dict(spec["palette"], source=str(sidecar))
    except PaletteError as exc:
        raise ExportError(str(exc)) from None
    if palette.num_classes != int(spec["num_classes"]):
        raise ExportError(f"{sidecar}: palette of {palette.num_classes} classes, {spec['num_classes']} expected")
    return palette


def read_export_record(path: str | Path) -> tuple[str, ClassPalette | None]:
    """(model name, palette or None) of an export, from its sidecar only: no session, no graph read."""
    sidecar = _sidecar_path(path)
    spec = _read_sidecar(sidecar)
    return spec["model"], _sidecar_palette(spec, sidecar)


def _check_graph(session, graph: dict[str, Any], where: str, num_classes: int) -> None:
    """The graph's inputs and outputs must be the sidecar's: names in order, dtypes, fixed dims."""
    for side, actual in (("inputs", session.get_inputs()), ("outputs", session.get_outputs())):
        wanted = graph[side]
        if [a.name for a in actual] != [w["name"] for w in wanted]:
            raise ExportError(
                f"{where} {side} are {[a.name for a in actual]}, the sidecar says {[w['name'] for w in wanted]}"
            )
        for a, w in zip(actual, wanted, strict=True):
            if a.type != _ORT_DTYPES.get(w["dtype"]):
                raise ExportError(f"{where} {w['name']} is {a.type}, the sidecar says {w['dtype']}")
            fixed_ok = len(a.shape) == len(w["shape"]) and all(
                not isinstance(s, int) or s == d for s, d in zip(w["shape"], a.shape, strict=True)
            )
            if not fixed_ok:
                raise ExportError(f"{where} {w['name']} has shape {list(a.shape)}, the sidecar says {w['shape']}")
    logits = session.get_outputs()[0]
    if logits.name != "logits" or logits.shape[1] != num_classes:
        raise ExportError(f"{where} gives {logits.shape[1]} classes of logits, the sidecar says {num_classes}")


class OnnxSegmenter:
    """An export run by ONNX Runtime, stepping like a model (see the module docstring).

    path: the export folder, its ``export.json``, or one of its graphs.
    providers: short names ("tensorrt", "cuda", "cpu") or ONNX Runtime's, in order of preference;
        None: the CPU. A provider the installed onnxruntime lacks is refused.
    threads: intra-op threads of each session (None: ONNX Runtime's default, one per core).
    Raises :class:`~vseg_core.export.ExportError` (a ValueError, one line) for a missing or
    disagreeing sidecar and for providers that are not installed.
    """

    def __init__(self, path: str | Path, *, providers: Sequence[str] | None = None, threads: int | None = None) -> None:
        ort = _ort()
        sidecar = _sidecar_path(path)
        self.spec = spec = _read_sidecar(sidecar)
        self.providers = resolve_providers(providers)
        self.model_name: str = spec["model"]
        self.model_config: dict[str, Any] = dict(spec.get("config") or {})
        self.num_classes: int = int(spec["num_classes"])
        self.kind: str = spec["kind"]
        self.uses_keyframes = self.kind == "keyframe"
        self.precision: str = spec.get("precision", "fp32")
        self.palette = _sidecar_palette(spec, sidecar)
        inp = spec["input"]
        self.input_size: tuple[int, int] | None = (
            None if inp.get("dynamic") else (int(inp["height"]), int(inp["width"]))
        )
        options = ort.SessionOptions()
        # ONNX Runtime's pool threads spin-wait after each run by default; the postprocessing (torch)
        # and the next camera's work then share the cores with spinning threads. Off: 19.0 vs 20.9 ms
        # a frame for DeepLab-18 (width 0.25, 360x480) on 2 CPU cores, medians of 10 frames.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads is not None:
            options.intra_op_num_threads = int(threads)
        self.sessions = {}
        for name, graph in spec["graphs"].items():
            file = graph.get("file", "")
            if Path(file).name != file or not file.endswith(".onnx"):
                raise ExportError(f"{sidecar}: graph file {file!r} must be a plain .onnx name beside the sidecar")
            graph_path = sidecar.with_name(file)
            if not graph_path.is_file():
                raise ExportError(f"{sidecar} names the graph {file}, which is not in {sidecar.parent}")
            try:
                session = ort.InferenceSession(str(graph_path), sess_options=options, providers=self.providers)
            except Exception as exc:  # onnxruntime's own error types
                raise ExportError(
                    f"{graph_path} could not be loaded by onnxruntime: {str(exc).splitlines()[0]}"
                ) from None
            _check_graph(session, graph, str(graph_path), self.num_classes)
            self.sessions[name] = session
        self._state_specs = {s["name"]: s for s in spec["state"]}
        self._dis = DISFlow(preset=spec["host"]["preset"]) if (spec.get("host") or {}).get("motion") == "dis" else None
        self._motion_input = spec["graphs"]["nonkey"]["inputs"][1]["name"] if self.uses_keyframes else None
        self._score_outputs = self.uses_keyframes and any(
            o["name"] == "reference_scores" for o in spec["graphs"]["nonkey"]["outputs"]
        )

    def __repr__(self) -> str:
        return f"OnnxSegmenter({self.model_name}, {self.kind}, input={self.input_size}, providers={self.providers})"

    # ------------------------------------------------------------------------------ state
    def _check_frame(self, frame: object) -> np.ndarray:
        size = "any size" if self.input_size is None else f"{self.input_size[0]}x{self.input_size[1]}"
        if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            got = f"{frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
            raise ValueError(f"the {self.model_name} export takes (H, W, 3) uint8 RGB frames ({size}), got {got}")
        if self.input_size is not None and frame.shape[:2] != self.input_size:
            raise ValueError(
                f"the {self.model_name} export takes {size} frames (fixed at export), got {frame.shape[0]}x"
                f"{frame.shape[1]}; resize first or export with --dynamic"
            )
        return np.ascontiguousarray(frame)

    def state_shapes(self, height: int, width: int) -> dict[str, tuple[int, ...]]:
        """Shapes of the zero-initialised state tensors for (height, width) frames."""
        specs = {n: s for n, s in self._state_specs.items() if s.get("initial") == "zeros"}
        if all(isinstance(d, int) for s in specs.values() for d in s["shape"]):
            return {n: tuple(s["shape"]) for n, s in specs.items()}
        return state_shapes_at(self.model_name, self.model_config, height, width)

    def init_state(self, frame: np.ndarray) -> dict[str, np.ndarray] | None:
        """The state before ``frame`` (zeros for ConvLSTM cells; None for the other kinds)."""
        if self.kind != "convlstm":
            return None
        frame = self._check_frame(frame)
        shapes = self.state_shapes(frame.shape[0], frame.shape[1])
        return {n: np.zeros(shape, _NP_DTYPES[self._state_specs[n]["dtype"]]) for n, shape in shapes.items()}

    def _check_state(self, state: object, frame: np.ndarray) -> dict[str, np.ndarray]:
        shapes = self.state_shapes(frame.shape[0], frame.shape[1])
        if not isinstance(state, dict) or set(state) != set(shapes):
            got = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"{self.model_name} state must map {sorted(shapes)} to arrays, got {got}")
        for name, shape in shapes.items():
            value = state[name]
            dtype = _NP_DTYPES[self._state_specs[name]["dtype"]]
            if not isinstance(value, np.ndarray) or value.shape != shape or value.dtype != dtype:
                got = f"{value.dtype} {value.shape}" if isinstance(value, np.ndarray) else type(value).__name__
                raise ValueError(f"state tensor {name} must be {np.dtype(dtype)} {shape} (from the sidecar), got {got}")
        return state

    # ------------------------------------------------------------------------------ step
    def step(
        self, frame: np.ndarray, state: Any, *, is_keyframe: bool = True, timer: StageTimer = _NULL_TIMER
    ) -> StepOutput:
        """One (H, W, 3) uint8 frame -> :class:`StepOutput` (logits (1, C, H, W) float32 CPU tensor)."""
        frame = self._check_frame(frame)
        if self.kind == "single_frame":
            with timer.stage("features"):
                (logits,) = self.sessions["step"].run(None, {"frame": frame})
            return StepOutput(torch.from_numpy(logits), None, ran=frozenset({"step"}))
        if self.kind == "convlstm":
            state = self._check_state(state, frame)
            with timer.stage("features"):
                logits, *new = self.sessions["step"].run(None, {"frame": frame, **state})
            names = [s["name"] for s in self.spec["graphs"]["step"]["inputs"][1:]]
            return StepOutput(torch.from_numpy(logits), dict(zip(names, new, strict=True)), ran=frozenset({"step"}))
        if is_keyframe or state is None:
            with timer.stage("features"):
                logits, features = self.sessions["keyframe"].run(None, {"frame": frame})
            new_state = {"features": features, "previous": frame.copy()}
            return StepOutput(torch.from_numpy(logits), new_state, is_keyframe=True, ran=frozenset({"keyframe"}))
        if not isinstance(state, dict) or set(state) != {"features", "previous"}:
            raise ValueError(f"{self.model_name} state must be the dict a previous step returned (features, previous)")
        if state["previous"].shape != frame.shape:
            raise ValueError(
                f"frame of shape {frame.shape} does not continue a stream of {state['previous'].shape} frames"
            )
        extras: dict[str, torch.Tensor] = {}
        if self._dis is not None:
            with timer.stage("flow"):
                grid = tuple(state["features"].shape[-2:])
                current, previous = (torch.from_numpy(f).permute(2, 0, 1).unsqueeze(0).float().div(255.0)
                                     for f in (frame, state["previous"]))  # fmt: skip
                flow = self._dis(current, previous, grid=grid).flow
            motion = flow.numpy().astype(_NP_DTYPES[self.spec["graphs"]["nonkey"]["inputs"][1]["dtype"]])
            extras["flow"] = flow
        else:
            motion = state["previous"]
        with timer.stage("features"):
            outputs = self.sessions["nonkey"].run(
                None, {"frame": frame, self._motion_input: motion, "features": state["features"]}
            )
        logits, features, *rest = outputs
        if self._dis is None:
            extras["flow"] = torch.from_numpy(rest.pop(0))
        if self._score_outputs:
            extras["reference_scores"], extras["update_scores"] = (torch.from_numpy(a) for a in rest)
        new_state = {"features": features, "previous": frame.copy()}
        return StepOutput(
            torch.from_numpy(logits), new_state, is_keyframe=False, ran=frozenset({"nonkey"}), extras=extras
        )
