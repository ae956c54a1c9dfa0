"""The node's model from its parameters: a checkpoint (a path, or the name of one shipped in the
package), or random weights with a loud warning."""

from __future__ import annotations

from vseg_core.checkpoint import CheckpointError, load_checkpoint
from vseg_core.models.registry import create_model
from vseg_core.models.streaming import StreamingSegmenter
from vseg_core.palette import ClassPalette
from vseg_core.pretrained import checkpoint_path
from vseg_ros.parameters import NodeConfig, ParameterError

__all__ = ["load_model_for_node"]


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
