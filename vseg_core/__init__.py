"""vseg_core: hardware-agnostic PyTorch for semantic segmentation of video. Never imports ROS."""

from vseg_core.checkpoint import load_checkpoint, save_checkpoint
from vseg_core.models import StepOutput, StreamingSegmenter, create_model, list_models, register_model
from vseg_core.stream import SegmentationResult, VideoSegmenter

__version__ = "0.1.0"

__all__ = [
    "SegmentationResult",
    "StepOutput",
    "StreamingSegmenter",
    "VideoSegmenter",
    "__version__",
    "create_model",
    "list_models",
    "load_checkpoint",
    "register_model",
    "save_checkpoint",
]
