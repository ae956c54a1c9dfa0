"""Image messages <-> arrays, checked against conversions computed another way; no ROS graph."""

from __future__ import annotations

import os
import struct
import threading
import time
import tracemalloc
import zlib

import cv2
import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from vseg_ros.conversions import (
    MAX_PIXELS,
    MAX_SIDE,
    REJECTION_REASONS,
    SUPPORTED_ENCODINGS,
    ConversionError,
    SizeLimits,
    array_to_compressed,
    colorize,
    compressed_to_array,
    compressed_to_rgb,
    image_to_array,
    image_to_labels,
    image_to_native,
    image_to_rgb,
    labels_to_image,
    mono_to_image,
    native_to_rgb,
    overlay,
    rgb_to_image,
)
from vseg_ros.quiet_decode import decode_quietly

H, W = 6, 10
RNG = np.random.default_rng(3)
RGB = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)
ALPHA = RNG.integers(0, 256, (H, W, 1), dtype=np.uint8)
PACKED = RNG.integers(0, 256, (H, W, 2), dtype=np.uint8)  # any bytes are valid 4:2:2 data
MONO16 = RNG.integers(0, 65536, (H, W), dtype=np.uint16)


def _msg(pixels: np.ndarray, encoding: str, pad: int = 0, bigendian: bool = False) -> Image:
    """An Image whose rows carry ``pad`` bytes of junk after the pixels."""
    if pixels.dtype == np.uint16:
        pixels = pixels.astype(">u2" if bigendian else "<u2")
    rows = np.ascontiguousarray(pixels).view(np.uint8).reshape(pixels.shape[0], -1)
    padded = np.concatenate([rows, np.full((rows.shape[0], pad), 0xAB, np.uint8)], axis=1)
    return Image(
        height=pixels.shape[0],
        width=pixels.shape[1],
        encoding=encoding,
        is_bigendian=int(bigendian),
        step=padded.shape[1],
        data=padded.tobytes(),
    )


def _grey_rgb(mono8: np.ndarray) -> np.ndarray:
    return np.repeat(mono8[:, :, None], 3, axis=2)


def _mono16_to_8(values: np.ndarray) -> np.ndarray:
    return np.round(values.astype(np.float64) * 255.0 / 65535.0).astype(np.uint8)  # cv_bridge's scaling


# (encoding, message pixels, expected RGB); expectations by numpy slicing or OpenCV, not by the module.
CASES = {
    "rgb8": (RGB, RGB),
    "bgr8": (RGB[:, :, ::-1], RGB),
    "rgba8": (np.concatenate([RGB, ALPHA], axis=2), RGB),
    "bgra8": (np.concatenate([RGB[:, :, ::-1], ALPHA], axis=2), RGB),
    "mono8": (RGB[:, :, 0], _grey_rgb(RGB[:, :, 0])),
    "mono16": (MONO16, _grey_rgb(_mono16_to_8(MONO16))),
    "uyvy": (PACKED, cv2.cvtColor(PACKED, cv2.COLOR_YUV2RGB_UYVY)),
    "yuv422": (PACKED, cv2.cvtColor(PACKED, cv2.COLOR_YUV2RGB_UYVY)),
    "yuyv": (PACKED, cv2.cvtColor(PACKED, cv2.COLOR_YUV2RGB_YUYV)),
    "yuv422_yuy2": (PACKED, cv2.cvtColor(PACKED, cv2.COLOR_YUV2RGB_YUYV)),
}


def test_every_supported_encoding_is_tested():
    assert set(CASES) == set(SUPPORTED_ENCODINGS)


@pytest.mark.parametrize("pad", [0, 5])
@pytest.mark.parametrize("encoding", list(CASES))
def test_encodings_become_rgb_with_row_padding_skipped(encoding, pad):
    pixels, expected = CASES[encoding]
    msg = _msg(pixels, encoding, pad)
    out = image_to_rgb(msg)
    assert out.dtype == np.uint8 and out.shape == (H, W, 3)
    np.testing.assert_array_equal(out, expected)
    # image_to_array keeps mono images mono and is otherwise the same RGB.
    model_input = image_to_array(msg)
    np.testing.assert_array_equal(model_input, expected[:, :, 0] if encoding.startswith("mono") else expected)


def test_uyvy_and_yuyv_are_the_same_pixels_with_bytes_swapped_in_pairs():
    # Independent of OpenCV's code names: UYVY is YUYV with each (Y, U|V) byte pair swapped.
    yuyv = image_to_rgb(_msg(PACKED, "yuyv"))
    np.testing.assert_array_equal(image_to_rgb(_msg(PACKED[:, :, ::-1], "uyvy")), yuyv)
    # ... and the two orders are not interchangeable.
    assert not np.array_equal(image_to_rgb(_msg(PACKED, "uyvy")), yuyv)


def test_yuyv_grey_pixels_keep_their_luma():
    luma = np.array([[16, 235, 126, 60]], np.uint8)  # video range: 16 black, 235 white
    packed = np.stack([luma, np.full_like(luma, 128)], axis=2)  # U = V = 128: no colour
    out = image_to_rgb(_msg(packed, "yuyv"))
    expected = np.clip(np.round((luma.astype(float) - 16) * 255 / 219), 0, 255)
    assert np.abs(out.astype(float) - expected[:, :, None]).max() <= 1
    assert (out[:, :, 0] == out[:, :, 1]).all() and (out[:, :, 1] == out[:, :, 2]).all()


@pytest.mark.parametrize("pad", [0, 4])
def test_mono16_byte_order_is_honoured(pad):
    little = image_to_native(_msg(MONO16, "mono16", pad, bigendian=False))
    big = image_to_native(_msg(MONO16, "mono16", pad, bigendian=True))
    assert little.pixels.dtype == np.dtype("<u2") and big.pixels.dtype == np.dtype(">u2")
    np.testing.assert_array_equal(little.pixels, MONO16)
    np.testing.assert_array_equal(big.pixels, MONO16)
    np.testing.assert_array_equal(native_to_rgb(big), native_to_rgb(little))
    np.testing.assert_array_equal(image_to_array(_msg(MONO16, "mono16", pad, True)), _mono16_to_8(MONO16))


@pytest.mark.parametrize("pad", [0, 7])
@pytest.mark.parametrize("encoding", ["rgb8", "mono8"])
def test_rgb8_and_mono8_are_views_of_the_message_buffer(encoding, pad):
    pixels = CASES[encoding][0]
    msg = _msg(pixels, encoding, pad)
    buffer = np.frombuffer(msg.data, np.uint8)
    out = image_to_array(msg)
    assert np.shares_memory(out, buffer)
    np.testing.assert_array_equal(out, pixels)
    if encoding == "rgb8":
        assert np.shares_memory(image_to_rgb(msg), buffer)
        assert out.strides == (W * 3 + pad, 3, 1)  # rows read where they lie, padding skipped


@pytest.mark.parametrize("encoding", ["bgr8", "rgba8", "uyvy", "mono16"])
def test_other_encodings_are_converted_into_one_new_array(encoding):
    msg = _msg(CASES[encoding][0], encoding, pad=3)
    out = image_to_rgb(msg)
    assert out.flags.c_contiguous
    assert not np.shares_memory(out, np.frombuffer(msg.data, np.uint8))


@pytest.mark.parametrize("encoding", list(CASES))
def test_each_encoding_is_colour_converted_at_most_once(encoding, monkeypatch):
    calls = []
    real = cv2.cvtColor
    monkeypatch.setattr(cv2, "cvtColor", lambda src, code: calls.append(src.shape) or real(src, code))
    msg = _msg(CASES[encoding][0], encoding, pad=1)
    image_to_rgb(msg)
    assert len(calls) == (0 if encoding == "rgb8" else 1)
    calls.clear()
    image_to_array(msg)
    assert len(calls) == (0 if encoding in ("rgb8", "mono8", "mono16") else 1)


def test_unknown_bytes_after_height_x_step_are_ignored():
    msg = _msg(RGB[:, :, ::-1], "bgr8", pad=2)
    msg.data = bytes(msg.data) + b"\x00" * 9
    np.testing.assert_array_equal(image_to_rgb(msg), RGB)


@pytest.mark.parametrize("encoding", list(CASES))
def test_conversion_after_serialization_round_trip(encoding):
    pixels, expected = CASES[encoding]
    msg = _msg(pixels, encoding, pad=2, bigendian=encoding == "mono16")
    msg.header = Header(frame_id="cam")
    msg.header.stamp.sec, msg.header.stamp.nanosec = 12, 345
    back = deserialize_message(serialize_message(msg), Image)
    assert (back.header.frame_id, back.header.stamp.sec, back.header.stamp.nanosec) == ("cam", 12, 345)
    np.testing.assert_array_equal(image_to_rgb(back), expected)
    if encoding == "rgb8":
        assert np.shares_memory(image_to_rgb(back), np.frombuffer(back.data, np.uint8))


def test_labels_round_trip_as_mono8_and_little_endian_mono16():
    header = Header(frame_id="cam")
    labels8 = RNG.integers(0, 19, (H, W), dtype=np.uint8)
    msg = deserialize_message(serialize_message(labels_to_image(labels8, header)), Image)
    assert (msg.encoding, msg.height, msg.width, msg.step, msg.header.frame_id) == ("mono8", H, W, W, "cam")
    assert len(msg.data) == H * W
    np.testing.assert_array_equal(image_to_native(msg).pixels, labels8)

    labels16 = RNG.integers(0, 1000, (H, W), dtype=np.uint16)
    msg = deserialize_message(serialize_message(labels_to_image(labels16, header)), Image)
    assert (msg.encoding, msg.step, msg.is_bigendian, len(msg.data)) == ("mono16", 2 * W, 0, 2 * H * W)
    raw = np.frombuffer(msg.data, np.uint8).reshape(H, W, 2).astype(np.uint16)
    np.testing.assert_array_equal(raw[:, :, 0] + 256 * raw[:, :, 1], labels16)  # low byte first
    np.testing.assert_array_equal(image_to_native(msg).pixels, labels16)
    # Big-endian or strided input arrays come out little-endian and tight all the same.
    swapped = labels16.astype(">u2")[:, ::-1][:, ::-1]
    assert labels_to_image(swapped, header).data == labels_to_image(labels16, header).data


@pytest.mark.parametrize("pad", [0, 6])
def test_label_images_give_back_their_class_ids_unscaled_and_copied(pad):
    header = Header(frame_id="cam")
    labels8 = RNG.integers(0, 19, (H, W), dtype=np.uint8)
    labels16 = RNG.integers(0, 1000, (H, W), dtype=np.uint16)  # ids above 255: mono16 is not scaled to 8 bits
    for labels, big_endian in ((labels8, False), (labels16, False), (labels16, True)):
        msg = labels_to_image(labels, header)
        if big_endian:
            msg.data, msg.is_bigendian = labels.astype(">u2").tobytes(), 1
        if pad:  # rows padded to a longer step, as some drivers write them
            rows = np.frombuffer(bytes(msg.data), np.uint8).reshape(H, msg.step)
            msg.data = np.pad(rows, ((0, 0), (0, pad))).tobytes()
            msg.step += pad
        got = image_to_labels(msg)
        assert got.dtype == labels.dtype and got.dtype.isnative and got.flags.owndata
        np.testing.assert_array_equal(got, labels)
    with pytest.raises(ConversionError, match="label images must be mono8 or mono16, got 'rgb8'"):
        image_to_labels(rgb_to_image(np.zeros((2, 2, 3), np.uint8), header))


def test_rgb_and_mono_images_round_trip():
    header = Header(frame_id="x")
    for encoding in ("rgb8", "bgr8"):
        msg = deserialize_message(serialize_message(rgb_to_image(RGB, header, encoding)), Image)
        assert (msg.encoding, msg.step, msg.header.frame_id) == (encoding, 3 * W, "x")
        np.testing.assert_array_equal(image_to_rgb(msg), RGB)
    bgr = rgb_to_image(RGB, header, "bgr8")
    np.testing.assert_array_equal(np.frombuffer(bgr.data, np.uint8).reshape(H, W, 3), RGB[:, :, ::-1])
    strided = RGB[::2, ::2]  # not contiguous: still written tight
    np.testing.assert_array_equal(image_to_rgb(rgb_to_image(strided, header)), strided)
    mono = RGB[:, :, 1]
    msg = mono_to_image(mono, header)
    assert (msg.encoding, msg.step) == ("mono8", W)
    np.testing.assert_array_equal(image_to_array(msg), mono)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_colorize_matches_a_manual_lookup(dtype):
    palette = RNG.integers(0, 256, (300 if dtype == np.uint16 else 5, 3), dtype=np.uint8)
    labels = RNG.integers(0, len(palette), (H, W)).astype(dtype)
    color = colorize(labels, palette)
    manual = np.array([[palette[v] for v in row] for row in labels], dtype=np.uint8)
    assert color.shape == (H, W, 3) and color.dtype == np.uint8
    np.testing.assert_array_equal(color, manual)


def test_overlay_blends_and_shows_mono_in_grey():
    color = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)
    blended = overlay(RGB, color, 0.25)
    expected = np.round(0.75 * RGB.astype(np.float64) + 0.25 * color)
    assert blended.shape == (H, W, 3) and blended.dtype == np.uint8
    assert np.abs(blended - expected).max() <= 1
    np.testing.assert_array_equal(overlay(RGB, color, 1.0), color)
    np.testing.assert_array_equal(overlay(RGB[:, :, 0], color, 0.0), _grey_rgb(RGB[:, :, 0]))


SMOOTH = cv2.GaussianBlur(cv2.resize(RGB, (80, 48)), (9, 9), 3)  # jpeg-friendly content


def test_compressed_round_trip_png_exact_jpeg_close():
    header = Header(frame_id="cam")
    png = deserialize_message(serialize_message(array_to_compressed(SMOOTH, header, "png")), CompressedImage)
    assert (png.format, png.header.frame_id) == ("rgb8; png compressed bgr8", "cam")
    np.testing.assert_array_equal(compressed_to_rgb(png), SMOOTH)
    jpeg = array_to_compressed(SMOOTH, header, "jpeg", 95)
    assert jpeg.format == "rgb8; jpeg compressed bgr8"
    assert np.abs(compressed_to_array(jpeg).astype(int) - SMOOTH).mean() < 3.0
    # Channel order: decoding must agree with OpenCV's own reading of the file, turned to RGB.
    reference = cv2.imdecode(np.frombuffer(jpeg.data, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
    np.testing.assert_array_equal(compressed_to_rgb(jpeg), reference)


@pytest.mark.parametrize("fmt", ["", "png", "jpeg", "jpg", "bgr8; jpeg compressed bgr8", "mono8; png compressed mono8"])
def test_compressed_format_strings(fmt):
    codec = "png" if "png" in fmt or not fmt else "jpeg"
    msg = array_to_compressed(SMOOTH[:, :, 1], Header(), codec)  # mono comes back as grey RGB
    assert msg.format == f"mono8; {codec} compressed mono8"
    msg.format = fmt
    out = compressed_to_rgb(msg)
    assert out.shape == (48, 80, 3)
    assert np.abs(out.astype(int) - _grey_rgb(SMOOTH[:, :, 1])).max() <= (0 if codec == "png" else 12)


@pytest.mark.parametrize(
    ("msg", "message"),
    [
        (
            Image(height=2, width=2, encoding="32FC1", step=8, data=bytes(16)),
            "unsupported encoding '32FC1'; supported: rgb8",
        ),
        (Image(height=2, width=2, encoding="", step=8, data=bytes(16)), "unsupported encoding ''"),
        (Image(height=0, width=4, encoding="rgb8", step=12, data=b""), "empty: 4x0 pixels"),
        (Image(height=4, width=0, encoding="mono8", step=0, data=b""), "empty: 0x4 pixels"),
        (Image(height=4, width=4, encoding="rgb8", step=8, data=bytes(48)), "expected at least 12 bytes"),
        (Image(height=4, width=4, encoding="mono16", step=6, data=bytes(48)), "expected at least 8 bytes"),
        (Image(height=4, width=4, encoding="rgb8", step=12, data=bytes(47)), "needs 48 bytes, got 47"),
        (Image(height=3, width=4, encoding="bgra8", step=20, data=bytes(56)), "needs 60 bytes, got 56"),
        (Image(height=10**6, width=10**6, encoding="rgb8", step=3 * 10**6, data=bytes(12)), "larger than allowed"),
        (Image(height=MAX_SIDE + 1, width=1, encoding="mono8", step=1, data=bytes(8)), "larger than allowed"),
        (Image(height=2, width=3, encoding="yuyv", step=6, data=bytes(12)), "even width"),
    ],
)
def test_bad_images_raise_conversion_errors(msg, message):
    with pytest.raises(ConversionError, match=message.replace("(", r"\(")):
        image_to_rgb(msg)
    with pytest.raises(ValueError):  # ConversionError is a ValueError for callers that catch those
        image_to_array(msg)


def test_a_huge_declared_image_is_rejected_before_allocating():
    side = MAX_SIDE  # allowed per side; 2^28 pixels is the limit, 16384^2 = 2^28 exactly passes
    assert side * side <= MAX_PIXELS
    msg = Image(height=side, width=side, encoding="rgb8", step=3 * side, data=bytes(10))
    tracemalloc.start()  # numpy reports its buffers to tracemalloc
    try:
        with pytest.raises(ConversionError, match=f"needs {3 * side * side} bytes, got 10"):
            image_to_rgb(msg)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20  # nothing near the 805 MB the header declares


def _png_header(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))


def test_compressed_images_declaring_huge_sizes_are_refused_before_decoding():
    png = CompressedImage(format="png", data=_png_header(100_000, 100_000) + bytes(64))
    jpeg = bytearray(array_to_compressed(SMOOTH, Header(), "jpeg").data)
    sof = next(i for i in range(2, len(jpeg) - 1) if jpeg[i] == 0xFF and jpeg[i + 1] == 0xC0)
    jpeg[sof + 5 : sof + 9] = struct.pack(">HH", 60_000, 60_000)  # height, width
    tracemalloc.start()
    try:
        for msg in (png, CompressedImage(format="jpeg", data=bytes(jpeg))):
            with pytest.raises(ConversionError, match="larger than allowed"):
                compressed_to_rgb(msg)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_bad_compressed_images():
    jpeg = array_to_compressed(SMOOTH, Header(), "jpeg").data
    cases = [
        (
            CompressedImage(format="jpeg", data=jpeg[: len(jpeg) // 2]),
            r"jpeg image of 80x48 \(\d+ bytes\) is truncated: no end-of-image marker",
            "truncated",
        ),
        (CompressedImage(format="jpeg", data=b"\xff\xd8\xff garbage"), "no frame header", "corrupt"),
        (CompressedImage(format="jpeg", data=b"GIF89a" + bytes(20)), "neither jpeg nor png", "corrupt"),
        (CompressedImage(format="png", data=b""), "no data", "unknown_format"),
        (CompressedImage(format="png", data=_png_header(4, 4)[:20]), "truncated", "truncated"),
        (CompressedImage(format="png", data=_png_header(0, 4)), "empty", "empty"),
        (CompressedImage(format="png", data=jpeg), "names png, but the data is jpeg", "format_mismatch"),
        (
            CompressedImage(format="16UC1; compressedDepth png", data=b"x"),
            "not supported; expected jpeg or png",
            "unknown_format",
        ),
        (CompressedImage(format="theora", data=b"x"), "not supported", "unknown_format"),
    ]
    for msg, message, reason in cases:
        with pytest.raises(ConversionError, match=message) as info:
            compressed_to_rgb(msg)
        assert info.value.reason == reason and reason in REJECTION_REASONS


def test_bad_arrays_and_settings():
    header = Header()
    palette = np.zeros((5, 3), np.uint8)
    cases = [
        (
            lambda: colorize(np.full((2, 2), 7, np.uint8), palette),
            r"label 7 has no colour in a palette of 5 \(ids 0..4\)",
        ),
        (lambda: colorize(np.zeros((2, 2), np.int64), palette), r"labels must be an \(H, W\) uint8 or uint16 array"),
        (lambda: colorize(np.zeros((2, 2), np.uint8), palette.astype(np.int32)), "palette must be a non-empty"),
        (lambda: colorize(np.zeros((2, 2), np.uint8), palette[:, :2]), r"palette must be an \(N, 3\)"),
        (lambda: labels_to_image(np.zeros((2, 2), np.int32), header), "uint8 or uint16 array, got"),
        (lambda: labels_to_image(np.zeros((2, 2, 1), np.uint8), header), r"got \(2, 2, 1\) uint8"),
        (lambda: labels_to_image(np.zeros((0, 3), np.uint8), header), "empty"),
        (lambda: rgb_to_image(np.zeros((2, 2, 4), np.uint8), header), r"\(H, W, 3\) uint8 array"),
        (lambda: rgb_to_image(RGB, header, "rgba8"), "rgb8 or bgr8, not 'rgba8'"),
        (lambda: mono_to_image(np.zeros((2, 2), np.float32), header), "float32"),
        (lambda: overlay(RGB, RGB[:2], 0.5), "differ in size"),
        (lambda: overlay(RGB, RGB, 1.5), r"alpha must be in \[0, 1\]"),
        (lambda: array_to_compressed(RGB, header, "webp"), "'jpeg' or 'png'"),
        (lambda: array_to_compressed(RGB, header, "jpeg", 0), "quality"),
        (lambda: array_to_compressed(RGB.astype(np.uint16), header), "uint8"),
    ]
    for call, message in cases:
        with pytest.raises(ConversionError, match=message):
            call()


def _bomb_jpeg(width: int, height: int) -> bytes:
    """A small real jpeg whose frame header is rewritten to claim width x height: what the decoder
    would fill in to the claimed size (the decompression bomb of a lying header)."""
    data = bytearray(cv2.imencode(".jpg", np.full((16, 16, 3), 128, np.uint8))[1].tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def test_decompression_bombs_are_refused_from_their_headers_without_decoding():
    tracemalloc.start()
    try:
        started = time.perf_counter()
        for width, height in ((8000, 8000), (16384, 16384)):
            with pytest.raises(ConversionError, match="refused undecoded") as info:
                compressed_to_rgb(CompressedImage(format="jpeg", data=_bomb_jpeg(width, height)))
            assert info.value.reason == "implausible_size"
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20 and seconds < 0.5  # nothing decoded, nothing allocated
    # The node's limits come first: a real 5000x5000 jpeg is too large for a 16 MP limit.
    big = cv2.imencode(".jpg", np.zeros((10, 10, 3), np.uint8))[1].tobytes()
    limits = SizeLimits(max_side=4096, max_pixels=16_000_000, min_side=32)
    with pytest.raises(ConversionError, match=r"larger than allowed \(at most 4096 per side") as info:
        compressed_to_rgb(CompressedImage(format="jpeg", data=_bomb_jpeg(5000, 3000)), limits)
    assert info.value.reason == "too_large"
    with pytest.raises(ConversionError, match=r"10x10 pixels is smaller than allowed \(at least 32") as info:
        compressed_to_rgb(CompressedImage(format="jpeg", data=big), limits)
    assert info.value.reason == "too_small"


def test_real_images_pass_the_plausibility_floor_even_when_they_compress_best():
    # Constant images are what compresses best; every size and codec of them must still be taken.
    for height, width in ((32, 32), (480, 640), (1080, 1920)):
        for image in (np.zeros((height, width, 3), np.uint8), np.zeros((height, width), np.uint8)):
            for ext, params in ((".jpg", [cv2.IMWRITE_JPEG_QUALITY, 1]), (".png", [cv2.IMWRITE_PNG_COMPRESSION, 9])):
                data = cv2.imencode(ext, image, params)[1].tobytes()
                assert compressed_to_rgb(CompressedImage(format="", data=data)).shape == (height, width, 3)
    # A bilevel png packs 8 pixels a byte before deflate: its floor follows its bit depth.
    rows = np.zeros((2000, 2000), np.uint8)
    ok, png = cv2.imencode(".png", rows, [cv2.IMWRITE_PNG_BILEVEL, 1, cv2.IMWRITE_PNG_COMPRESSION, 9])
    assert ok and compressed_to_rgb(CompressedImage(format="png", data=png.tobytes())).shape == (2000, 2000, 3)


def test_truncated_files_are_refused_and_zero_padding_after_a_jpeg_is_not_truncation():
    jpeg = array_to_compressed(SMOOTH, Header(), "jpeg").data
    png = array_to_compressed(SMOOTH, Header(), "png").data
    np.testing.assert_array_equal(
        compressed_to_rgb(CompressedImage(format="jpeg", data=bytes(jpeg) + bytes(16))),
        compressed_to_rgb(CompressedImage(format="jpeg", data=bytes(jpeg))),
    )
    for codec, data in (("jpeg", jpeg[:-2]), ("png", png[:-12]), ("png", png[: len(png) // 2])):
        with pytest.raises(ConversionError, match="is truncated") as info:
            compressed_to_rgb(CompressedImage(format=codec, data=bytes(data)))
        assert info.value.reason == "truncated"


def _with_junk_before_eoi(jpeg: bytes, n: int = 37) -> bytes:
    """A complete jpeg with ``n`` bytes of garbage after its scan: libjpeg decodes it, and complains."""
    return jpeg[:-2] + bytes(range(1, n + 1)) + jpeg[-2:]


def test_damaged_jpeg_data_is_refused_with_the_codecs_complaint_and_nothing_reaches_stderr(capfd):
    jpeg = bytes(array_to_compressed(SMOOTH, Header(), "jpeg").data)
    message = r"jpeg image of \d+x\d+ has damaged data: Corrupt JPEG data: \d+ extraneous bytes before marker 0xd9"
    with pytest.raises(ConversionError, match=message) as info:
        compressed_to_rgb(CompressedImage(format="jpeg", data=_with_junk_before_eoi(jpeg)))
    assert info.value.reason == "corrupt"
    assert capfd.readouterr().err == ""
    # The same bytes through OpenCV alone: the codec writes its complaint to the process's stderr.
    assert cv2.imdecode(np.frombuffer(_with_junk_before_eoi(jpeg), np.uint8), cv2.IMREAD_COLOR) is not None
    assert "extraneous bytes before marker 0xd9" in capfd.readouterr().err


def test_other_output_to_stderr_while_frames_decode_is_passed_on_whole(capfd):
    damaged = np.frombuffer(_with_junk_before_eoi(bytes(array_to_compressed(SMOOTH, Header(), "jpeg").data)), np.uint8)
    stop, sent = threading.Event(), []

    def another_thread_logging() -> None:
        while not stop.is_set():
            os.write(2, f"log line {len(sent)}\n".encode())
            sent.append(len(sent))
            time.sleep(0.0001)

    thread = threading.Thread(target=another_thread_logging)
    thread.start()
    try:
        complaints = [decode_quietly(damaged, cv2.IMREAD_COLOR)[1] for _ in range(200)]
    finally:
        stop.set()
        thread.join()
    assert all(len(c) == 1 and c[0].startswith("Corrupt JPEG data") for c in complaints)
    # Every line of the other thread arrives once (those written during a decode after it), no codec line.
    assert sorted(capfd.readouterr().err.splitlines()) == sorted(f"log line {i}" for i in sent)


def _with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """``jpeg`` with an APP1 Exif segment (little-endian TIFF, one IFD entry: Orientation) after SOI."""
    tiff = b"II*\x00" + (8).to_bytes(4, "little") + (1).to_bytes(2, "little")
    tiff += (0x0112).to_bytes(2, "little") + (3).to_bytes(2, "little") + (1).to_bytes(4, "little")
    tiff += orientation.to_bytes(2, "little") + bytes(2) + bytes(4)
    payload = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload + jpeg[2:]


def test_exif_orientation_is_ignored_pixels_come_as_captured():
    for height, width in ((48, 80), (64, 64)):  # non-square (rotation would change the size) and square
        image = RNG.integers(0, 256, (height, width, 3), dtype=np.uint8)
        plain = cv2.imencode(".jpg", image)[1].tobytes()
        rotated = _with_exif_orientation(plain, 6)  # "rotate 90 clockwise to display"
        assert cv2.imdecode(np.frombuffer(rotated, np.uint8), cv2.IMREAD_COLOR).shape[:2] == (width, height)
        got = compressed_to_rgb(CompressedImage(format="jpeg", data=rotated))
        np.testing.assert_array_equal(got, compressed_to_rgb(CompressedImage(format="jpeg", data=plain)))


def test_every_rejection_of_an_image_message_has_its_reason():
    good = _msg(RGB, "rgb8")
    cases = {
        "unknown_encoding": Image(height=2, width=2, encoding="32FC1", step=16, data=bytes(32)),
        "bad_layout": Image(height=H, width=W, encoding="rgb8", step=W * 3 - 1, data=bytes(good.data)),
        "size_mismatch": Image(height=H, width=W, encoding="rgb8", step=W * 3, data=bytes(good.data)[:-1]),
        "empty": Image(height=0, width=W, encoding="rgb8", step=W * 3, data=b""),
        "too_small": good,
    }
    for reason, msg in cases.items():
        with pytest.raises(ConversionError) as info:
            image_to_array(msg, SizeLimits(min_side=32 if reason == "too_small" else 1))
        assert info.value.reason == reason, (reason, str(info.value))
    assert image_to_array(good, SizeLimits(min_side=H)).shape == (H, W, 3)
    with pytest.raises(ValueError, match="size limits must satisfy"):
        SizeLimits(max_side=10, min_side=20)
