"""sensor_msgs images <-> numpy arrays, careful with row padding and byte order (cv_bridge's job).

Reading an :class:`~sensor_msgs.msg.Image` happens in two steps so that no pixel is copied twice:

1. :func:`image_to_native` checks the header and returns a :class:`NativeImage`: the pixels in the
   message's own layout as a **view of** ``msg.data`` (rows cut out of ``step`` by striding, not by
   copying; 16-bit data viewed with the message's byte order).
2. :func:`native_to_rgb` (or :func:`native_to_model_input`, which keeps mono images mono) converts
   that view to RGB in one pass, or returns it untouched when it already is tight-enough RGB.

:func:`image_to_rgb` and :func:`image_to_array` do both. A tight or padded ``rgb8`` (and ``mono8``
for :func:`image_to_array`) image never gets copied: the array shares memory with ``msg.data``, so
keep the message alive as long as the array and do not write into it. (It is left writable on
purpose: ``torch.from_numpy`` warns on read-only arrays.)

Every failure raises :class:`ConversionError` saying what was expected, with a ``reason`` code (one of
:data:`REJECTION_REASONS`) that the node counts. Sizes are checked against :class:`SizeLimits`
(the node's from its parameters; :data:`MAX_SIDE` and :data:`MAX_PIXELS` at most) before anything is
allocated, so a message that declares a huge image with little data, or a PNG/JPEG whose header
declares one, costs nothing. Compressed data must also be complete (a jpeg's end-of-image marker, a
png's IEND chunk: a truncated file is refused, not filled in by the decoder) and plausibly large for
the size it declares (far fewer bytes than any encoder writes is a decompression bomb); jpeg EXIF
orientation is ignored, as camera drivers publish pixels as captured.

Encodings (names as in ROS 2 ``sensor_msgs/image_encodings.hpp``): ``rgb8``, ``bgr8``, ``rgba8``,
``bgra8``, ``mono8``, ``mono16``, and packed YUV 4:2:2: ``uyvy`` (bytes U Y0 V Y1) with its
deprecated alias ``yuv422``, and ``yuyv`` (bytes Y0 U Y1 V) with its deprecated alias
``yuv422_yuy2``. cv_bridge reads ``yuv422`` with ``COLOR_YUV2*_UYVY`` and ``yuv422_yuy2`` with
``COLOR_YUV2*_YUY2``, and so do we (OpenCV's BT.601 video-range matrices). ``mono16`` becomes 8-bit
by the scaling cv_bridge uses (x 255/65535).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from vseg_ros.quiet_decode import decode_quietly

__all__ = [
    "DEFAULT_LIMITS",
    "ENCODINGS",
    "MAX_PIXELS",
    "MAX_SIDE",
    "REJECTION_REASONS",
    "SUPPORTED_ENCODINGS",
    "ConversionError",
    "NativeImage",
    "PixelFormat",
    "SizeLimits",
    "array_to_compressed",
    "check_compressed",
    "colorize",
    "compressed_to_array",
    "compressed_to_labels",
    "compressed_to_rgb",
    "image_to_array",
    "image_to_labels",
    "image_to_native",
    "image_to_rgb",
    "labels_to_compressed",
    "labels_to_image",
    "mono_to_image",
    "native_to_model_input",
    "native_to_rgb",
    "overlay",
    "rgb_to_image",
]

MAX_SIDE = 16384
"""Largest accepted width or height, in pixels: above any automotive or robot camera (8K is 7680)."""
MAX_PIXELS = 1 << 28
"""Largest accepted width x height: 268 M pixels, 805 MB as rgb8. Guards against headers that lie."""
# Fewest bytes per pixel a complete file can have: deflate cannot compress beyond 1032:1 (png, of
# its raw rows); a baseline or progressive jpeg spends at least one bit per 8x8 block and channel
# (measured: a constant image is 85 pixels per byte at any quality). Margins of 2x and 4x.
_PNG_MAX_RATIO = 2064
_JPEG_MAX_PIXELS_PER_BYTE = 2048


REJECTION_REASONS = (
    "unknown_encoding",  # Image.encoding is none of SUPPORTED_ENCODINGS
    "bad_layout",  # step shorter than a row, odd width for 4:2:2
    "size_mismatch",  # fewer data bytes than height x step
    "empty",  # 0 pixels
    "too_small",  # a side below SizeLimits.min_side
    "too_large",  # a side or the pixel count above SizeLimits
    "unknown_format",  # CompressedImage.format neither jpeg nor png, or no data
    "format_mismatch",  # the format names one codec, the bytes are the other
    "corrupt",  # no jpeg or png header, broken markers, damaged data the codec complained about
    "truncated",  # a jpeg without its end-of-image marker, a png without IEND
    "implausible_size",  # far fewer bytes than any encoder writes for the declared size
    "decode_failed",  # the decoder refused, or decoded another size than the header says
    "invalid",  # anything else (arrays handed to the encoders)
)
"""Why a frame was refused: the reason codes of :class:`ConversionError`."""


class ConversionError(ValueError):
    """An image message or array that cannot be converted; the message says what was expected and
    ``reason`` (one of :data:`REJECTION_REASONS`) says which kind of problem it is."""

    def __init__(self, message: str, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class SizeLimits:
    """Frame sizes that are accepted: at least ``min_side`` and at most ``max_side`` pixels per side,
    at most ``max_pixels`` in all. Checked from headers, before any pixel is allocated or decoded."""

    max_side: int = MAX_SIDE
    max_pixels: int = MAX_PIXELS
    min_side: int = 1

    def __post_init__(self) -> None:
        if not (1 <= self.min_side <= self.max_side <= MAX_SIDE and 1 <= self.max_pixels <= MAX_PIXELS):
            raise ValueError(
                f"size limits must satisfy 1 <= min_side <= max_side <= {MAX_SIDE} and 1 <= max_pixels <= "
                f"{MAX_PIXELS}, got {self}"
            )


DEFAULT_LIMITS = SizeLimits()
"""The widest limits: :data:`MAX_SIDE` and :data:`MAX_PIXELS`."""


@dataclass(frozen=True)
class PixelFormat:
    """How one ROS encoding lays out its pixels.

    channels: values per pixel in the native array (2 for packed YUV 4:2:2: Y plus U or V).
    dtype: numpy type of one value; 16-bit formats get their byte order from ``is_bigendian``.
    to_rgb: OpenCV ``cvtColor`` code to RGB, or None where no colour conversion is needed.
    """

    encoding: str
    channels: int
    dtype: type[np.generic]
    to_rgb: int | None
    mono: bool = False
    even_width: bool = False  # 4:2:2: two neighbouring pixels share one U and one V

    @property
    def bytes_per_pixel(self) -> int:
        return self.channels * np.dtype(self.dtype).itemsize


_UYVY = PixelFormat("uyvy", 2, np.uint8, cv2.COLOR_YUV2RGB_UYVY, even_width=True)
_YUYV = PixelFormat("yuyv", 2, np.uint8, cv2.COLOR_YUV2RGB_YUYV, even_width=True)
ENCODINGS: dict[str, PixelFormat] = {
    "rgb8": PixelFormat("rgb8", 3, np.uint8, None),
    "bgr8": PixelFormat("bgr8", 3, np.uint8, cv2.COLOR_BGR2RGB),
    "rgba8": PixelFormat("rgba8", 4, np.uint8, cv2.COLOR_RGBA2RGB),
    "bgra8": PixelFormat("bgra8", 4, np.uint8, cv2.COLOR_BGRA2RGB),
    "mono8": PixelFormat("mono8", 1, np.uint8, cv2.COLOR_GRAY2RGB, mono=True),
    "mono16": PixelFormat("mono16", 1, np.uint16, cv2.COLOR_GRAY2RGB, mono=True),
    # ROS 2 names "uyvy"/"yuyv"; "yuv422"/"yuv422_yuy2" are the older names of the same layouts.
    "uyvy": _UYVY,
    "yuv422": _UYVY,
    "yuyv": _YUYV,
    "yuv422_yuy2": _YUYV,
}
SUPPORTED_ENCODINGS = tuple(ENCODINGS)


@dataclass(frozen=True)
class NativeImage:
    """Pixels of an Image message in the message's own layout, usually a view of ``msg.data``.

    pixels: (H, W) for one channel, else (H, W, C); dtype ``format.dtype`` with the message's byte
        order (``'>u2'`` or ``'<u2'`` for 16-bit, which may differ from the machine's).
    encoding: the message's encoding as written (``format.encoding`` is the canonical name).
    """

    pixels: np.ndarray
    encoding: str
    format: PixelFormat

    @property
    def height(self) -> int:
        return self.pixels.shape[0]

    @property
    def width(self) -> int:
        return self.pixels.shape[1]


def _check_size(height: int, width: int, what: str, limits: SizeLimits = DEFAULT_LIMITS) -> None:
    if height <= 0 or width <= 0:
        raise ConversionError(f"{what} is empty: {width}x{height} pixels; expected at least 1x1", "empty")
    if height > limits.max_side or width > limits.max_side or height * width > limits.max_pixels:
        raise ConversionError(
            f"{what} of {width}x{height} pixels is larger than allowed "
            f"(at most {limits.max_side} per side and {limits.max_pixels} pixels)",
            "too_large",
        )
    if min(height, width) < limits.min_side:
        raise ConversionError(
            f"{what} of {width}x{height} pixels is smaller than allowed (at least {limits.min_side} per side)",
            "too_small",
        )


# ------------------------------------------------------------------------------------ Image -> numpy
def image_to_native(msg: Image, limits: SizeLimits = DEFAULT_LIMITS) -> NativeImage:
    """Check ``msg`` and view its pixels without copying (see :class:`NativeImage`).

    Checks, in this order and before touching the data: known encoding, sane size, even width for
    4:2:2, ``step`` at least one row of pixels, ``data`` at least ``height x step`` bytes (as the
    message definition says; bytes beyond are ignored).
    """
    fmt = ENCODINGS.get(msg.encoding.lower())
    if fmt is None:
        raise ConversionError(
            f"unsupported encoding {msg.encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}", "unknown_encoding"
        )
    height, width, step = msg.height, msg.width, msg.step
    _check_size(height, width, f"{msg.encoding} image", limits)
    if fmt.even_width and width % 2:
        raise ConversionError(f"{msg.encoding} needs an even width (2 pixels share U and V), got {width}", "bad_layout")
    row_bytes = width * fmt.bytes_per_pixel
    if step < row_bytes:
        raise ConversionError(
            f"step {step} is shorter than a row of {width} {msg.encoding} pixels; expected at least {row_bytes} bytes",
            "bad_layout",
        )
    data = np.frombuffer(msg.data, dtype=np.uint8)  # a view: msg.data is array.array or bytes
    if data.size < height * step:
        raise ConversionError(
            f"{msg.encoding} image of {width}x{height} with step {step} needs {height * step} bytes, got {data.size}",
            "size_mismatch",
        )
    # Padding is skipped by slicing: strides (step, 1), still a view of msg.data.
    rows = data[: height * step].reshape(height, step)[:, :row_bytes]
    if fmt.dtype is np.uint16:
        # The byte order lives in the dtype, so this is still a view; the swap, if any, happens in
        # the one conversion that follows.
        rows = rows.view(">u2" if msg.is_bigendian else "<u2")
    pixels = rows if fmt.channels == 1 else rows.reshape(height, width, fmt.channels)
    return NativeImage(pixels, msg.encoding, fmt)


def _mono16_to_8(pixels: np.ndarray) -> np.ndarray:
    # cv_bridge's 16 -> 8 bit scaling (convertTo with 255/65535, rounded). OpenCV reads only native
    # byte order and row strides that are whole pixels, so a foreign-endian view or an odd step is
    # made native and tight first (one extra pass, only then).
    if not (pixels.dtype.isnative and pixels.flags.aligned):
        pixels = np.ascontiguousarray(pixels, dtype=pixels.dtype.newbyteorder("="))
    return cv2.convertScaleAbs(pixels, alpha=255.0 / 65535.0)


def native_to_model_input(native: NativeImage) -> np.ndarray:
    """(H, W, 3) uint8 RGB for colour encodings, (H, W) uint8 for mono8/mono16.

    rgb8 and mono8 come back as the very same view (no copy); everything else is converted once.
    """
    fmt = native.format
    if fmt.mono:
        return native.pixels if fmt.dtype is np.uint8 else _mono16_to_8(native.pixels)
    return _colour_to_rgb(native)


def native_to_rgb(native: NativeImage) -> np.ndarray:
    """(H, W, 3) uint8 RGB for every encoding; rgb8 is returned as the same view (no copy)."""
    fmt = native.format
    if fmt.mono:
        return cv2.cvtColor(native_to_model_input(native), cv2.COLOR_GRAY2RGB)
    return _colour_to_rgb(native)


def _colour_to_rgb(native: NativeImage) -> np.ndarray:
    code = native.format.to_rgb
    if code is None:
        return native.pixels
    # OpenCV takes the row stride as it is, so padded rows are read in place, not compacted first.
    return cv2.cvtColor(native.pixels, code)


def image_to_rgb(msg: Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB of any supported encoding; rgb8 is a view of ``msg.data``."""
    return native_to_rgb(image_to_native(msg))


def image_to_labels(msg: Image) -> np.ndarray:
    """Class ids of a label image, the inverse of :func:`labels_to_image`: (H, W) uint8 from mono8,
    (H, W) uint16 from mono16 (ids as they are, not scaled like pixel values), in native byte order
    and copied out of ``msg.data``. Other encodings are not label images: ConversionError."""
    if msg.encoding not in ("mono8", "mono16"):
        raise ConversionError(f"label images must be mono8 or mono16, got {msg.encoding!r}")
    pixels = image_to_native(msg).pixels
    return pixels.astype(np.uint8 if pixels.dtype.itemsize == 1 else np.uint16)


def image_to_array(msg: Image, limits: SizeLimits = DEFAULT_LIMITS) -> np.ndarray:
    """What the segmenter takes: (H, W, 3) uint8 RGB, or (H, W) uint8 for mono8/mono16 images.

    rgb8 and mono8 are views of ``msg.data``; other encodings are converted once.
    """
    return native_to_model_input(image_to_native(msg, limits))


# -------------------------------------------------------------------------- CompressedImage -> numpy
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers carry the size; C4 (DHT), C8 (JPG) and CC (DAC) share the range.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_NO_LENGTH = frozenset([0x01, *range(0xD0, 0xD8)])  # TEM and RSTn stand alone


def _declared_size(data: bytes | memoryview) -> tuple[str, int, int]:
    """(codec, width, height) from a PNG or JPEG header, without decoding anything."""
    if bytes(data[:8]) == _PNG_MAGIC:
        if len(data) < 24 or bytes(data[12:16]) != b"IHDR":
            raise ConversionError("png data is truncated before its IHDR header", "truncated")
        return "png", int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if bytes(data[:2]) == b"\xff\xd8":
        pos = 2
        while pos + 4 <= len(data):
            if data[pos] != 0xFF:
                raise ConversionError(f"jpeg data is corrupt: expected a marker at byte {pos}", "corrupt")
            marker = data[pos + 1]
            if marker == 0xFF:  # fill byte before a marker
                pos += 1
                continue
            if marker in _JPEG_NO_LENGTH:
                pos += 2
                continue
            length = int.from_bytes(data[pos + 2 : pos + 4], "big")
            if marker in _JPEG_SOF:
                if pos + 9 > len(data):
                    break
                height = int.from_bytes(data[pos + 5 : pos + 7], "big")
                width = int.from_bytes(data[pos + 7 : pos + 9], "big")
                return "jpeg", width, height
            if marker in (0xD9, 0xDA) or length < 2:  # end of image or scan data before any frame
                break
            pos += 2 + length
        raise ConversionError("jpeg data is corrupt: no frame header (SOF) found", "corrupt")
    head = bytes(data[:8]).hex(" ")
    raise ConversionError(f"compressed data is neither jpeg nor png (starts with {head or 'nothing'})", "corrupt")


def _check_complete_and_plausible(codec: str, data: np.ndarray, width: int, height: int) -> None:
    """Refuse truncated files and files far smaller than their declared size allows (see above)."""
    if codec == "jpeg":
        end = len(data)
        while end > 2 and data[end - 1] == 0:  # some camera drivers pad frames with zero bytes
            end -= 1
        if bytes(data[end - 2 : end]) != b"\xff\xd9":
            raise ConversionError(
                f"jpeg image of {width}x{height} ({data.size} bytes) is truncated: no end-of-image marker", "truncated"
            )
        least = width * height // _JPEG_MAX_PIXELS_PER_BYTE
    else:
        if data.size < 45 or bytes(data[-8:-4]) != b"IEND":
            raise ConversionError(
                f"png image of {width}x{height} ({data.size} bytes) is truncated: it does not end with IEND",
                "truncated",
            )
        bit_depth, colour_type = int(data[24]), int(data[25])
        channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(colour_type, 4)
        raw = height * (1 + (width * channels * bit_depth + 7) // 8)  # filter byte + packed samples per row
        least = raw // _PNG_MAX_RATIO
    if data.size < least:
        raise ConversionError(
            f"{codec} image declares {width}x{height} pixels in {data.size} bytes, fewer than the {least} any "
            "complete file of that size needs: refused undecoded (a decompression bomb or a damaged header)",
            "implausible_size",
        )


_FORMAT_CODEC = re.compile(r"\b(jpeg|jpg|png)\b")


def check_compressed(msg: CompressedImage, limits: SizeLimits = DEFAULT_LIMITS) -> tuple[np.ndarray, str, int, int]:
    """Every check :func:`compressed_to_rgb` makes before decoding (format, header, size, completeness,
    plausible size), without decoding: cheap enough for a subscription callback. Returns (data as
    uint8 array, codec, width, height); raises ConversionError."""
    fmt = msg.format.lower()
    named = _FORMAT_CODEC.search(fmt)
    if "compresseddepth" in fmt or (fmt and named is None):
        raise ConversionError(
            f"compressed format {msg.format!r} is not supported; expected jpeg or png", "unknown_format"
        )
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size == 0:
        raise ConversionError("compressed image has no data; expected jpeg or png bytes", "unknown_format")
    codec, width, height = _declared_size(memoryview(data))
    if named is not None and codec != ("jpeg" if named.group(1) == "jpg" else named.group(1)):
        raise ConversionError(
            f"compressed format {msg.format!r} names {named.group(1)}, but the data is {codec}", "format_mismatch"
        )
    _check_size(height, width, f"{codec} image", limits)
    _check_complete_and_plausible(codec, data, width, height)
    return data, codec, width, height


def compressed_to_rgb(msg: CompressedImage, limits: SizeLimits = DEFAULT_LIMITS) -> np.ndarray:
    """(H, W, 3) uint8 RGB from a jpeg or png CompressedImage.

    ``msg.format`` may be empty, a codec ("jpeg", "png") or image_transport's
    "<encoding>; <codec> compressed <encoding>"; compressedDepth and other codecs are refused, and
    a named codec must match the data's magic bytes. Like image_transport's decoder, the decoded
    image is taken as OpenCV's BGR order (what ``cv2.imencode`` writes), grey is replicated to
    three channels and 16-bit PNGs are reduced to 8 bits. The size in the file's header is checked
    against ``limits``, and the file for completeness and a plausible size, before decoding, so a
    small file declaring a huge image is refused without allocating it. EXIF orientation is ignored.
    """
    data, codec, width, height = check_compressed(msg, limits)
    # Pixels as captured: camera drivers do not rotate by EXIF, and a rotated non-square image would
    # no longer match its header.
    bgr, complaints = decode_quietly(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if complaints:  # decoded on by the codec, but from damaged data: garbage pixels
        raise ConversionError(f"{codec} image of {width}x{height} has damaged data: {complaints[0]}", "corrupt")
    if bgr is None:
        raise ConversionError(f"{codec} image of {width}x{height} ({data.size} bytes) does not decode", "decode_failed")
    if bgr.shape[:2] != (height, width):
        raise ConversionError(
            f"{codec} image decoded to {bgr.shape[1]}x{bgr.shape[0]}, but its header says {width}x{height}",
            "decode_failed",
        )
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def compressed_to_array(msg: CompressedImage, limits: SizeLimits = DEFAULT_LIMITS) -> np.ndarray:
    """What the segmenter takes from a CompressedImage: (H, W, 3) uint8 RGB (see compressed_to_rgb)."""
    return compressed_to_rgb(msg, limits)


# ------------------------------------------------------------------------------------ numpy -> Image
def _check_array(array: object, ndim: int, dtypes: tuple[type[np.generic], ...], what: str) -> np.ndarray:
    ok = isinstance(array, np.ndarray) and array.ndim == ndim and array.dtype.newbyteorder("=") in dtypes
    ok = ok and (ndim == 2 or array.shape[2] == 3)
    if not ok:
        names = " or ".join(np.dtype(d).name for d in dtypes)
        got = f"{array.shape} {array.dtype}" if isinstance(array, np.ndarray) else type(array).__name__
        raise ConversionError(f"{what} must be an {'(H, W)' if ndim == 2 else '(H, W, 3)'} {names} array, got {got}")
    _check_size(array.shape[0], array.shape[1], what)
    return array


def _image(array: np.ndarray, header: Header, encoding: str) -> Image:
    height, width = array.shape[:2]
    row_bytes = width * (array.shape[2] if array.ndim == 3 else 1) * array.dtype.itemsize
    msg = Image(height=height, width=width, encoding=encoding, is_bigendian=0, step=row_bytes)
    msg.header = header
    # bytes, not an ndarray: rclpy's setter iterates over an ndarray (about 100x slower). tobytes()
    # writes C order whatever the strides, so this is the one and only copy.
    msg.data = array.tobytes()
    return msg


def labels_to_image(labels: np.ndarray, header: Header) -> Image:
    """mono8 Image of (H, W) uint8 class ids, or mono16 (little-endian, step 2W) of uint16 ids."""
    _check_array(labels, 2, (np.uint8, np.uint16), "labels")
    if labels.dtype == np.uint8:
        return _image(labels, header, "mono8")
    return _image(labels.astype("<u2", copy=False), header, "mono16")  # no-op on little-endian hosts


def rgb_to_image(rgb: np.ndarray, header: Header, encoding: str = "rgb8") -> Image:
    """rgb8 (or bgr8, channels reversed) Image of an (H, W, 3) uint8 RGB array."""
    _check_array(rgb, 3, (np.uint8,), "RGB image")
    if encoding == "rgb8":
        return _image(rgb, header, "rgb8")
    if encoding == "bgr8":
        return _image(rgb[:, :, ::-1], header, "bgr8")  # reversed by the copy tobytes() makes anyway
    raise ConversionError(f"rgb_to_image writes rgb8 or bgr8, not {encoding!r}")


def mono_to_image(mono: np.ndarray, header: Header) -> Image:
    """mono8 Image of an (H, W) uint8 array (e.g. confidence x 255)."""
    _check_array(mono, 2, (np.uint8,), "mono image")
    return _image(mono, header, "mono8")


# ------------------------------------------------------------------------------- colours, overlays
def colorize(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 colours of (H, W) uint8/uint16 class ids through an (N, 3) uint8 palette.

    A label without a colour (>= N) is an error rather than a made-up colour: it means the palette
    does not belong to the model.
    """
    _check_array(labels, 2, (np.uint8, np.uint16), "labels")
    if not (isinstance(palette, np.ndarray) and palette.ndim == 2 and palette.shape[1] == 3):
        raise ConversionError(f"palette must be an (N, 3) uint8 array, got {getattr(palette, 'shape', palette)!r}")
    if palette.dtype != np.uint8 or len(palette) == 0:
        raise ConversionError(f"palette must be a non-empty (N, 3) uint8 array, got {palette.shape} {palette.dtype}")
    top = int(labels.max())
    if top >= len(palette):
        raise ConversionError(f"label {top} has no colour in a palette of {len(palette)} (ids 0..{len(palette) - 1})")
    return np.take(palette, labels, axis=0)  # 4x faster than palette[labels] at 1280x720


def overlay(image: np.ndarray, color: np.ndarray, alpha: float) -> np.ndarray:
    """(H, W, 3) uint8 blend ``(1 - alpha) x image + alpha x color``, rounded.

    image: (H, W, 3) uint8 RGB or (H, W) uint8 mono (shown in grey); color: (H, W, 3) uint8.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ConversionError(f"alpha must be in [0, 1], got {alpha}")
    if isinstance(image, np.ndarray) and image.ndim == 2:
        image = cv2.cvtColor(_check_array(image, 2, (np.uint8,), "overlay image"), cv2.COLOR_GRAY2RGB)
    _check_array(image, 3, (np.uint8,), "overlay image")
    _check_array(color, 3, (np.uint8,), "overlay colours")
    if image.shape != color.shape:
        raise ConversionError(f"image {image.shape} and colours {color.shape} differ in size")
    return cv2.addWeighted(image, 1.0 - alpha, color, alpha, 0.0)


# ------------------------------------------------------------------------- numpy -> CompressedImage
def array_to_compressed(image: np.ndarray, header: Header, fmt: str = "jpeg", quality: int = 90) -> CompressedImage:
    """jpeg or png CompressedImage of an (H, W, 3) uint8 RGB or (H, W) uint8 mono array.

    The format string follows image_transport ("rgb8; jpeg compressed bgr8", "mono8; png
    compressed mono8"), so ROS tools and :func:`compressed_to_rgb` read it back. quality: 1..100,
    jpeg only (png is lossless).
    """
    if fmt not in ("jpeg", "png"):
        raise ConversionError(f"format must be 'jpeg' or 'png', got {fmt!r}")
    if not 1 <= quality <= 100:
        raise ConversionError(f"jpeg quality must be in 1..100, got {quality}")
    if isinstance(image, np.ndarray) and image.ndim == 2:
        _check_array(image, 2, (np.uint8,), "image to compress")
        pixels, fmt_string = image, f"mono8; {fmt} compressed mono8"
    else:
        _check_array(image, 3, (np.uint8,), "image to compress")
        pixels, fmt_string = cv2.cvtColor(image, cv2.COLOR_RGB2BGR), f"rgb8; {fmt} compressed bgr8"
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if fmt == "jpeg" else []
    ok, encoded = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", pixels, params)
    if not ok:
        raise ConversionError(f"OpenCV could not encode a {image.shape} image as {fmt}")
    msg = CompressedImage(format=fmt_string)
    msg.header = header
    msg.data = encoded.tobytes()
    return msg


def labels_to_compressed(labels: np.ndarray, header: Header) -> CompressedImage:
    """Lossless png CompressedImage of (H, W) uint8 or uint16 class ids (image_transport's format
    string "mono8; png compressed mono8", or mono16); :func:`compressed_to_labels` reads it back."""
    _check_array(labels, 2, (np.uint8, np.uint16), "labels")
    encoding = "mono8" if labels.dtype == np.uint8 else "mono16"
    # Fastest zlib level: label maps are long runs, level 1 is already small and costs a third of level 3.
    ok, encoded = cv2.imencode(
        ".png", labels.astype(labels.dtype.newbyteorder("="), copy=False), [cv2.IMWRITE_PNG_COMPRESSION, 1]
    )
    if not ok:
        raise ConversionError(f"OpenCV could not encode {labels.shape} labels as png")
    msg = CompressedImage(format=f"{encoding}; png compressed {encoding}")
    msg.header = header
    msg.data = encoded.tobytes()
    return msg


def compressed_to_labels(msg: CompressedImage) -> np.ndarray:
    """Class ids of a png label image (the inverse of :func:`labels_to_compressed`): (H, W) uint8 or
    uint16 exactly as encoded. jpeg is refused: it changes ids at class borders."""
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size == 0:
        raise ConversionError("compressed labels have no data; expected png bytes")
    codec, width, height = _declared_size(memoryview(data))
    if codec != "png":
        raise ConversionError(f"compressed labels must be png (lossless), got {codec}")
    _check_size(height, width, "png labels")
    labels, complaints = decode_quietly(data, cv2.IMREAD_UNCHANGED)
    if complaints:
        raise ConversionError(f"png labels have damaged data: {complaints[0]}", "corrupt")
    if labels is None or labels.ndim != 2 or labels.dtype not in (np.uint8, np.uint16):
        got = "nothing" if labels is None else f"{labels.shape} {labels.dtype}"
        raise ConversionError(f"png labels must decode to one 8- or 16-bit channel, got {got}")
    return labels
