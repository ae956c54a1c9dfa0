"""sensor_msgs images <-> numpy arrays, careful with row padding and byte order (cv_bridge's job).

Every failure raises :class:`ConversionError` saying what was expected. Sizes are checked before
anything is allocated, so a message that declares a huge image with little data costs nothing.
Tight rgb8 and mono8 images become zero-copy views of the message's buffer; other encodings are
converted once, by OpenCV.
"""

from __future__ import annotations

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

__all__ = [
    "MAX_PIXELS",
    "MAX_SIDE",
    "SUPPORTED_ENCODINGS",
    "ConversionError",
    "array_to_compressed",
    "colorize",
    "compressed_to_array",
    "image_to_array",
    "labels_to_image",
    "mono_to_image",
    "overlay",
    "rgb_to_image",
]

MAX_SIDE = 16384  # pixels per side; larger than any camera we know of
MAX_PIXELS = 1 << 28  # 268 M pixels: 805 MB as rgb8

# encoding -> (bytes per pixel, OpenCV conversion to RGB or None when already RGB/mono).
# ROS's "yuv422" is UYVY byte order (sensor_msgs/image_encodings.hpp); "yuv422_yuy2" and the newer
# "yuyv" name YUYV.
_ENCODINGS: dict[str, tuple[int, int | None]] = {
    "rgb8": (3, None),
    "mono8": (1, None),
    "bgr8": (3, cv2.COLOR_BGR2RGB),
    "rgba8": (4, cv2.COLOR_RGBA2RGB),
    "bgra8": (4, cv2.COLOR_BGRA2RGB),
    "yuv422": (2, cv2.COLOR_YUV2RGB_UYVY),
    "uyvy": (2, cv2.COLOR_YUV2RGB_UYVY),
    "yuv422_yuy2": (2, cv2.COLOR_YUV2RGB_YUYV),
    "yuyv": (2, cv2.COLOR_YUV2RGB_YUYV),
}
SUPPORTED_ENCODINGS = tuple(_ENCODINGS)
_YUV = {"yuv422", "uyvy", "yuv422_yuy2", "yuyv"}


class ConversionError(ValueError):
    """An image message or array that cannot be converted; the message says what was expected."""


def _check_size(height: int, width: int, what: str) -> None:
    if height <= 0 or width <= 0:
        raise ConversionError(f"{what} is empty: {width}x{height} pixels")
    if height > MAX_SIDE or width > MAX_SIDE or height * width > MAX_PIXELS:
        raise ConversionError(
            f"{what} of {width}x{height} pixels is larger than allowed ({MAX_SIDE} per side, {MAX_PIXELS} pixels)"
        )


def image_to_array(msg: Image) -> np.ndarray:
    """RGB (H, W, 3) uint8 for colour encodings, (H, W) uint8 for mono8.

    Row padding (``step`` > width x bytes per pixel) is skipped without a copy; ``is_bigendian``
    does not matter for these 8-bit encodings.
    """
    encoding = msg.encoding.lower()
    if encoding not in _ENCODINGS:
        raise ConversionError(f"unsupported encoding {msg.encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}")
    bpp, code = _ENCODINGS[encoding]
    height, width, step = msg.height, msg.width, msg.step
    _check_size(height, width, f"{msg.encoding} image")
    if encoding in _YUV and width % 2:
        raise ConversionError(f"{msg.encoding} needs an even width (2 pixels share U and V), got {width}")
    if step < width * bpp:
        raise ConversionError(
            f"step {step} is shorter than a row of {width} {msg.encoding} pixels ({width * bpp} bytes)"
        )
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size < height * step:
        raise ConversionError(
            f"{msg.encoding} image of {width}x{height} with step {step} needs {height * step} bytes, got {data.size}"
        )
    rows = data[: height * step].reshape(height, step)[:, : width * bpp]
    if bpp == 1:
        return rows
    pixels = rows.reshape(height, width, bpp)
    if code is None:
        return pixels
    return cv2.cvtColor(np.ascontiguousarray(pixels), code)


def compressed_to_array(msg: CompressedImage) -> np.ndarray:
    """RGB (H, W, 3) uint8 from a jpeg or png CompressedImage."""
    fmt = msg.format.lower()
    if fmt and not any(name in fmt for name in ("jpeg", "jpg", "png")):
        raise ConversionError(f"compressed format {msg.format!r} is not supported; expected jpeg or png")
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size == 0:
        raise ConversionError("compressed image has no data")
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ConversionError(f"compressed image ({msg.format or 'no format'}, {data.size} bytes) does not decode")
    _check_size(*bgr.shape[:2], "decoded image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _image(array: np.ndarray, header: Header, encoding: str, bpp: int) -> Image:
    height, width = array.shape[:2]
    msg = Image(height=height, width=width, encoding=encoding, is_bigendian=0, step=width * bpp)
    msg.header = header
    msg.data = np.ascontiguousarray(array).tobytes()  # bytes: assigning an ndarray is 100x slower
    return msg


def labels_to_image(labels: np.ndarray, header: Header) -> Image:
    """mono8 for (H, W) uint8 class ids, mono16 (little-endian) for uint16."""
    if labels.ndim != 2 or labels.dtype not in (np.uint8, np.uint16):
        raise ConversionError(f"labels must be (H, W) uint8 or uint16, got {labels.shape} {labels.dtype}")
    if labels.dtype == np.uint8:
        return _image(labels, header, "mono8", 1)
    return _image(labels.astype("<u2", copy=False), header, "mono16", 2)


def rgb_to_image(rgb: np.ndarray, header: Header) -> Image:
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ConversionError(f"expected an (H, W, 3) uint8 RGB array, got {rgb.shape} {rgb.dtype}")
    return _image(rgb, header, "rgb8", 3)


def mono_to_image(mono: np.ndarray, header: Header) -> Image:
    if mono.ndim != 2 or mono.dtype != np.uint8:
        raise ConversionError(f"expected an (H, W) uint8 array, got {mono.shape} {mono.dtype}")
    return _image(mono, header, "mono8", 1)


def colorize(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 colours of (H, W) class ids through an (N, 3) uint8 palette."""
    if palette.ndim != 2 or palette.shape[1] != 3 or palette.dtype != np.uint8:
        raise ConversionError(f"palette must be (N, 3) uint8, got {palette.shape} {palette.dtype}")
    if labels.size and int(labels.max()) >= len(palette):
        raise ConversionError(f"label {int(labels.max())} has no colour in a palette of {len(palette)}")
    return palette[labels]


def overlay(image: np.ndarray, color: np.ndarray, alpha: float) -> np.ndarray:
    """(1 - alpha) x image + alpha x color, rounded; a mono image is shown in grey."""
    if not 0.0 <= alpha <= 1.0:
        raise ConversionError(f"alpha must be in [0, 1], got {alpha}")
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape != color.shape:
        raise ConversionError(f"image {image.shape} and colours {color.shape} differ in size")
    return cv2.addWeighted(image, 1.0 - alpha, color, alpha, 0.0)


def array_to_compressed(rgb: np.ndarray, header: Header, fmt: str = "jpeg", quality: int = 90) -> CompressedImage:
    """jpeg or png CompressedImage of an (H, W, 3) uint8 RGB array."""
    if fmt not in ("jpeg", "png"):
        raise ConversionError(f"format must be jpeg or png, got {fmt!r}")
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ConversionError(f"expected an (H, W, 3) uint8 RGB array, got {rgb.shape} {rgb.dtype}")
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if fmt == "jpeg" else []
    ok, encoded = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ConversionError(f"OpenCV could not encode a {rgb.shape} image as {fmt}")
    msg = CompressedImage(format=f"rgb8; {fmt} compressed bgr8")
    msg.header = header
    msg.data = encoded.tobytes()
    return msg
