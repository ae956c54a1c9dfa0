import math

import pytest

from vseg_core.resets import (
    RESET_FIRST_FRAME,
    RESET_FRAME_ID_CHANGED,
    RESET_NONE,
    RESET_STAMP_BACKWARDS,
    RESET_STAMP_GAP,
    ResetConfig,
    StreamResetDetector,
)

S = 1_000_000_000


def test_reasons_follow_stamps_and_frame_ids():
    detector = StreamResetDetector(ResetConfig(max_gap_s=0.5))
    reasons = [
        detector.check(10 * S, "cam"),  # first frame
        detector.check(10 * S + S // 30, "cam"),  # next frame at 30 Hz
        detector.check(10 * S + S // 30, "cam"),  # same stamp again: not a jump
        detector.check(10 * S + S // 2 + S // 30, "cam"),  # exactly the gap: still continuous
        detector.check(12 * S, "cam"),  # 1.47 s later
        detector.check(11 * S, "cam"),  # backwards (bag loop)
        detector.check(11 * S + 1, "other"),  # another camera
        detector.check(11 * S + 2, "other"),
    ]
    assert reasons == [
        RESET_FIRST_FRAME,
        RESET_NONE,
        RESET_NONE,
        RESET_NONE,
        RESET_STAMP_GAP,
        RESET_STAMP_BACKWARDS,
        RESET_FRAME_ID_CHANGED,
        RESET_NONE,
    ]


def test_infinite_gap_never_resets_forward_and_forget_starts_over():
    detector = StreamResetDetector(ResetConfig(max_gap_s=math.inf))
    assert detector.check(0, "a") == RESET_FIRST_FRAME
    assert detector.check(10**6 * S, "a") == RESET_NONE
    detector.forget()
    assert detector.check(0, "a") == RESET_FIRST_FRAME


@pytest.mark.parametrize("gap", [0.0, -1.0, math.nan])
def test_gap_must_be_positive(gap):
    with pytest.raises(ValueError, match="max_gap_s"):
        ResetConfig(max_gap_s=gap)
