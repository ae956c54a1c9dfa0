"""The node's model from its parameters: a checkpoint (a path, or the name of one shipped in the
package), or random weights with a loud warning; for backend onnxruntime, an export (given, or
written at start-up from those weights into a folder the caller owns)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vseg_core.checkpoint import CheckpointError, load_checkpoint
from vseg_core.export import ExportConfig, ExportError, export_model
from vseg_core.models.registry import create_model
from vseg_core.models.streaming import StreamingSegmenter
from vseg_core.palette import ClassPalette
from vseg_core.pretrained import checkpoint_path
from vseg_core.runtime_onnx import OnnxSegmenter, resolve_providers
from vseg_ros.parameters import NodeConfig, ParameterError

__all__ = ["LoadedModel", "load_model_for_node", "load_runner_for_node"]


def load_model_for_node(config: NodeConfig, logger) -> tuple[StreamingSegmenter, ClassPalette]:
    """(model, classes) for ``config``; ParameterError naming 'model' or 'weights' when unusable."""
    if config.weights:
        try:
            path = checkpoint_path(config.weights)
        except ValueError as exc:
            raise ParameterError(f"parameter 'weights': {exc}") from None
        try:
            model = load_checkpoint(path, expect_model=config.model or None)
        except CheckpointError as exc:
            raise ParameterError(f"parameter 'weights': {exc}") from None
        record = model.checkpoint_record
        palette = record.palette or ClassPalette.generic(model.num_classes)
        logger.info(f"loaded {record.model} weights from {path} ({record.metadata.get('dataset', 'dataset unknown')})")
        return model, palette
    try:
        model = create_model(config.model)
    except ValueError as exc:
        raise ParameterError(f"parameter 'model': {exc}") from None
    logger.warning(
        f"parameter 'weights' is empty: {config.model} runs with RANDOM weights; its labels mean nothing. "
        "Pass a checkpoint (weights:=/path/model.safetensors) for real segmentation."
    )
    return model, ClassPalette.generic(model.num_classes)


@dataclass(frozen=True)
class LoadedModel:
    """What the node runs: ``runner`` (a model, or an ONNX Runtime export for backend onnxruntime),
    its registered ``name`` and its ``classes``."""

    runner: StreamingSegmenter | OnnxSegmenter
    name: str
    classes: ClassPalette


def load_runner_for_node(config: NodeConfig, logger, export_dir: Path) -> LoadedModel:
    """The model for ``config.backend``; ParameterError naming the parameter when unusable.

    onnxruntime with ``onnx_model`` empty: ``weights`` (or ``model``) is exported into ``export_dir``
    at ``input_size`` first. An export is checked against its sidecar by OnnxSegmenter, and against
    ``model`` here: a node never runs a graph of another model than the one it was asked for.
    """
    if config.backend == "torch":
        model, classes = load_model_for_node(config, logger)
        return LoadedModel(model, getattr(model, "model_name", config.model), classes)
    try:  # before any slow export: a provider this onnxruntime lacks is refused at once
        resolve_providers(list(config.providers))
    except ExportError as exc:
        raise ParameterError(f"parameter 'providers': {exc}") from None
    if config.onnx_model:
        source, what = config.onnx_model, "onnx_model"
        if config.weights:
            logger.info(f"parameter 'weights' ({config.weights}) is not used: the export {source} is the model")
    else:
        model, classes = load_model_for_node(config, logger)
        height, width = config.input_size
        logger.info(f"exporting {getattr(model, 'model_name', config.model)} at {height}x{width} for onnxruntime")
        try:
            source = export_model(model, export_dir, ExportConfig(height=height, width=width), palette=classes)
        except ExportError as exc:
            raise ParameterError(f"parameter 'backend' onnxruntime: {exc}") from None
        what = "weights"
    try:
        runner = OnnxSegmenter(source, providers=list(config.providers))
    except ExportError as exc:
        raise ParameterError(f"parameter '{what}': {exc}") from None
    if config.model and runner.model_name != config.model:
        raise ParameterError(
            f"parameter 'onnx_model': {config.onnx_model} is an export of {runner.model_name!r}, not {config.model!r}"
        )
    classes = runner.palette or ClassPalette.generic(runner.num_classes)
    logger.info(f"onnxruntime runs {runner.model_name} from {source} on {', '.join(runner.providers)}")
    return LoadedModel(runner, runner.model_name, classes)
