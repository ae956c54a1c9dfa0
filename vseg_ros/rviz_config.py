"""An RViz configuration for one segmentation_node, written from config/vseg.rviz at launch time.

The shipped file is a working RViz config for the defaults and the template for everything else:
its displays named ``Camera``, ``Segmentation overlay`` and ``Legend`` are copied per camera and
pointed at the topics that the launch's namespace, image remap and cameras produce. The YAML is
edited as data (no text substitution, no shell, no eval), so any other display a user adds to the
template is kept as it is.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import yaml

from vseg_ros.launch_arguments import SegmentationTopics

__all__ = ["TEMPLATE_DISPLAYS", "RvizTemplateError", "render_rviz_config", "write_rviz_config"]

CAMERA, OVERLAY, LEGEND = "Camera", "Segmentation overlay", "Legend"
TEMPLATE_DISPLAYS = (CAMERA, OVERLAY, LEGEND)


class RvizTemplateError(ValueError):
    """The template lacks a display the launch files fill in."""


def _with_topic(display: dict, name: str, topic: str) -> dict:
    out = copy.deepcopy(display)
    out["Name"] = name
    out.setdefault("Topic", {})["Value"] = topic
    return out


def render_rviz_config(template: str, topics: SegmentationTopics) -> str:
    """The template's YAML with one camera and one overlay display per camera, and the legend."""
    config = yaml.safe_load(template)
    try:
        displays = config["Visualization Manager"]["Displays"]
    except (TypeError, KeyError):
        raise RvizTemplateError("RViz template has no 'Visualization Manager: Displays' list") from None
    by_name = {d.get("Name"): d for d in displays if isinstance(d, dict)}
    missing = [n for n in TEMPLATE_DISPLAYS if n not in by_name]
    if missing:
        raise RvizTemplateError(f"RViz template lacks the display(s) {', '.join(missing)}")
    filled = []
    for camera, image, overlay in zip(topics.cameras, topics.inputs, topics.overlays, strict=True):
        suffix = f" ({camera})" if camera else ""
        filled.append(_with_topic(by_name[CAMERA], CAMERA + suffix, image))
        filled.append(_with_topic(by_name[OVERLAY], OVERLAY + suffix, overlay))
    filled.append(_with_topic(by_name[LEGEND], LEGEND, topics.legend))
    others = [d for d in displays if not (isinstance(d, dict) and d.get("Name") in TEMPLATE_DISPLAYS)]
    config["Visualization Manager"]["Displays"] = filled + others
    return yaml.safe_dump(config, sort_keys=False)


def write_rviz_config(template_path: str | Path, topics: SegmentationTopics) -> Path:
    """Render the template into a new file for this launch (RViz reads it once, at start)."""
    text = render_rviz_config(Path(template_path).read_text(encoding="utf-8"), topics)
    with tempfile.NamedTemporaryFile("w", prefix="vseg-", suffix=".rviz", delete=False, encoding="utf-8") as out:
        out.write(text)
    return Path(out.name)
