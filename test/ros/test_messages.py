"""The generated messages match what vseg_core writes into them."""

from __future__ import annotations

from vseg.msg import SegmentationClasses, SegmentationInfo
from vseg_core import resets


def test_reset_reasons_of_the_core_are_the_message_constants():
    core = {name: getattr(resets, name) for name in resets.__all__ if name.startswith("RESET_")}
    msg = {name: getattr(SegmentationInfo, name) for name in dir(SegmentationInfo) if name.startswith("RESET_")}
    assert core == msg


def test_info_fields_cover_every_stage_of_the_runtime():
    from vseg_core.timing import STAGES

    fields = SegmentationInfo.get_fields_and_field_types()
    assert {f"{stage}_ms" for stage in STAGES} | {"total_ms", "latency_ms"} <= set(fields)
    assert fields["frames_dropped"] == "uint64"


def test_classes_message_holds_names_colours_and_ignore_index():
    msg = SegmentationClasses(names=["road", "car"], colors=[128, 64, 128, 0, 0, 142], ignore_index=255)
    assert len(msg.colors) == 3 * len(msg.names)
    assert SegmentationClasses.get_fields_and_field_types()["ignore_index"] == "int32"
