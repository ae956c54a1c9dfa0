"""vseg_core: hardware-agnostic PyTorch for semantic segmentation of video. Never imports ROS."""

from vseg_core.models import StepOutput, StreamingSegmenter, create_model, list_models, register_model

__version__ = "0.1.0"

__all__ = ["StepOutput", "StreamingSegmenter", "__version__", "create_model", "list_models", "register_model"]
