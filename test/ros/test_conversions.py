"""Image messages <-> arrays, checked against conversions computed another way."""

from __future__ import annotations

import tracemalloc

import cv2
import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from vseg_ros.conversions import (
    ConversionError,
    array_to_compressed,
    colorize,
    compressed_to_array,
    image_to_array,
    labels_to_image,
    mono_to_image,
    overlay,
    rgb_to_image,
)

H, W = 7, 10
RNG = np.random.default_rng(3)
RGB = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)


def _msg(pixels: np.ndarray, encoding: str, pad: int = 0) -> Image:
    """An Image whose rows carry ``pad`` bytes of junk after the pixels."""
    rows = pixels.reshape(pixels.shape[0], -1)
    junk = np.full((rows.shape[0], pad), 0xAB, dtype=np.uint8)
    padded = np.concatenate([rows, junk], axis=1)
    return Image(
        height=pixels.shape[0], width=pixels.shape[1], encoding=encoding, step=padded.shape[1], data=padded.tobytes()
    )


@pytest.mark.parametrize("pad", [0, 5])
def test_colour_encodings_become_rgb(pad):
    rgba = np.concatenate([RGB, RNG.integers(0, 256, (H, W, 1), dtype=np.uint8)], axis=2)
    cases = {
        "rgb8": RGB,
        "bgr8": RGB[:, :, ::-1],
        "rgba8": rgba,
        "bgra8": rgba[:, :, [2, 1, 0, 3]],
    }
    for encoding, pixels in cases.items():
        out = image_to_array(_msg(np.ascontiguousarray(pixels), encoding, pad))
        assert out.dtype == np.uint8 and out.shape == (H, W, 3), encoding
        np.testing.assert_array_equal(out, RGB, err_msg=encoding)


@pytest.mark.parametrize(
    ("encoding", "code"),
    [
        ("yuv422", cv2.COLOR_YUV2RGB_UYVY),
        ("uyvy", cv2.COLOR_YUV2RGB_UYVY),
        ("yuyv", cv2.COLOR_YUV2RGB_YUYV),
        ("yuv422_yuy2", cv2.COLOR_YUV2RGB_YUYV),
    ],
)
def test_yuv_encodings_match_opencv_with_padding(encoding, code):
    packed = RNG.integers(0, 256, (H, W, 2), dtype=np.uint8)
    out = image_to_array(_msg(packed, encoding, pad=6))
    np.testing.assert_array_equal(out, cv2.cvtColor(packed, code))
    # UYVY and YUYV differ: the same bytes read the other way give other colours.
    assert encoding in ("yuyv", "yuv422_yuy2") or not np.array_equal(out, cv2.cvtColor(packed, cv2.COLOR_YUV2RGB_YUYV))


def test_tight_rgb8_and_mono8_are_views_of_the_message_buffer():
    msg = _msg(RGB, "rgb8")
    assert np.shares_memory(image_to_array(msg), np.frombuffer(msg.data, np.uint8))
    mono = RGB[:, :, 0].copy()
    msg = _msg(mono, "mono8", pad=3)
    out = image_to_array(msg)
    np.testing.assert_array_equal(out, mono)
    assert np.shares_memory(out, np.frombuffer(msg.data, np.uint8))


def test_conversion_after_serialization_round_trip():
    msg = _msg(RGB[:, :, ::-1].copy(), "bgr8", pad=2)
    msg.header.frame_id = "cam"
    back = deserialize_message(serialize_message(msg), Image)
    np.testing.assert_array_equal(image_to_array(back), RGB)


def test_labels_round_trip_as_mono8_and_little_endian_mono16():
    header = Header(frame_id="cam")
    labels8 = RNG.integers(0, 19, (H, W), dtype=np.uint8)
    msg = deserialize_message(serialize_message(labels_to_image(labels8, header)), Image)
    assert (msg.encoding, msg.step, msg.header.frame_id) == ("mono8", W, "cam")
    np.testing.assert_array_equal(np.frombuffer(msg.data, np.uint8).reshape(H, W), labels8)
    labels16 = RNG.integers(0, 1000, (H, W), dtype=np.uint16)
    msg = labels_to_image(labels16, header)
    assert (msg.encoding, msg.step, msg.is_bigendian) == ("mono16", 2 * W, 0)
    raw = np.frombuffer(msg.data, np.uint8).reshape(H, W, 2).astype(np.uint16)
    np.testing.assert_array_equal(raw[:, :, 0] + 256 * raw[:, :, 1], labels16)


def test_rgb_mono_colorize_and_overlay():
    header = Header(frame_id="x")
    np.testing.assert_array_equal(image_to_array(rgb_to_image(RGB, header)), RGB)
    np.testing.assert_array_equal(image_to_array(mono_to_image(RGB[:, :, 1].copy(), header)), RGB[:, :, 1])
    palette = RNG.integers(0, 256, (5, 3), dtype=np.uint8)
    labels = RNG.integers(0, 5, (H, W), dtype=np.uint8)
    color = colorize(labels, palette)
    manual = np.array([[palette[v] for v in row] for row in labels], dtype=np.uint8)
    np.testing.assert_array_equal(color, manual)
    blended = overlay(RGB, color, 0.25)
    expected = np.round(0.75 * RGB.astype(np.float64) + 0.25 * color).astype(np.uint8)
    assert np.abs(blended.astype(int) - expected).max() <= 1
    grey = overlay(RGB[:, :, 0].copy(), color, 0.0)
    np.testing.assert_array_equal(grey, np.repeat(RGB[:, :, :1], 3, axis=2))


def test_compressed_round_trip_png_exact_jpeg_close():
    header = Header(frame_id="cam")
    smooth = cv2.GaussianBlur(cv2.resize(RGB, (80, 56)), (9, 9), 3)
    png = array_to_compressed(smooth, header, "png")
    np.testing.assert_array_equal(compressed_to_array(png), smooth)
    jpeg = deserialize_message(serialize_message(array_to_compressed(smooth, header, "jpeg", 95)), CompressedImage)
    assert jpeg.header.frame_id == "cam" and "jpeg" in jpeg.format
    assert np.abs(compressed_to_array(jpeg).astype(int) - smooth).mean() < 3.0


@pytest.mark.parametrize(
    ("msg", "message"),
    [
        (Image(height=2, width=2, encoding="32FC1", step=8, data=bytes(16)), "unsupported encoding '32FC1'"),
        (Image(height=0, width=4, encoding="rgb8", step=12, data=b""), "empty"),
        (Image(height=4, width=4, encoding="rgb8", step=8, data=bytes(48)), "step 8 is shorter than a row"),
        (Image(height=4, width=4, encoding="rgb8", step=12, data=bytes(47)), "needs 48 bytes, got 47"),
        (Image(height=10**6, width=10**6, encoding="rgb8", step=3 * 10**6, data=bytes(12)), "larger than allowed"),
        (Image(height=2, width=3, encoding="yuyv", step=6, data=bytes(12)), "even width"),
    ],
)
def test_bad_images_raise_conversion_errors(msg, message):
    with pytest.raises(ConversionError, match=message):
        image_to_array(msg)


def test_bad_compressed_images_and_arrays():
    with pytest.raises(ConversionError, match="does not decode"):
        compressed_to_array(CompressedImage(format="jpeg", data=b"\xff\xd8\xff garbage"))
    with pytest.raises(ConversionError, match="no data"):
        compressed_to_array(CompressedImage(format="png", data=b""))
    with pytest.raises(ConversionError, match="not supported"):
        compressed_to_array(CompressedImage(format="16UC1; compressedDepth", data=b"x"))
    with pytest.raises(ConversionError, match="no colour"):
        colorize(np.full((2, 2), 7, np.uint8), np.zeros((5, 3), np.uint8))
    with pytest.raises(ConversionError, match="uint8 or uint16"):
        labels_to_image(np.zeros((2, 2), np.int32), Header())


def test_a_huge_declared_image_is_rejected_before_allocating():
    msg = Image(height=16000, width=16000, encoding="rgb8", step=48000, data=bytes(10))
    tracemalloc.start()  # numpy reports its buffers to tracemalloc
    try:
        with pytest.raises(ConversionError, match="needs 768000000 bytes"):
            image_to_array(msg)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20  # nothing near the 768 MB the header declares
