"""Whole networks. Importing this package registers every built-in model."""

from vseg_core.models.registry import ModelEntry, create_model, get_model_entry, list_models, register_model
from vseg_core.models.streaming import StatelessSegmenter, StepOutput, StreamingSegmenter

# Each import registers that module's models.
from vseg_core.models import accel, deeplab, icnet, lstm_icnet  # noqa: F401  isort: skip

__all__ = [
    "ModelEntry",
    "StatelessSegmenter",
    "StepOutput",
    "StreamingSegmenter",
    "create_model",
    "get_model_entry",
    "list_models",
    "register_model",
]
