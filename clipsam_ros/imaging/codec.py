"""sensor_msgs/Image and CompressedImage <-> numpy, without ROS.

The inspection pipeline wants one thing from a camera: an RGB uint8 HxWx3
array. This module gets there from any message-like object with the right
fields (duck typing), so the same code serves rclpy messages, `rosbags`
messages and `types.SimpleNamespace` stand-ins in tests; it never imports
rclpy or cv_bridge.

Decoding follows cv_bridge's reading of the encodings (generic `8UC3` etc. are
OpenCV's BGR/BGRA order) and reduces everything to RGB uint8 for inspection:

* 16-bit data is scaled by 1/256 (``>> 8``), which maps 257*k back to k exactly;
* float (32FC1/64FC1) and signed (8SC1/16SC1/32SC1) data map their finite
  min..max to 0..255; a constant image gives 0, NaN/inf give 0;
* mono is replicated to three channels, alpha is dropped;
* bayer is demosaiced with OpenCV's bilinear demosaic, yuv422/uyvy/yuyv and
  nv12/nv21 with OpenCV's BT.601 conversions.

`is_bigendian` is honoured for multi-byte data and `step` may exceed a row
(each row's first width*bytes_per_pixel bytes are used). For nv12/nv21,
`height` is the picture height, `step` the stride of both the Y and the
interleaved UV plane, and the data holds height*3/2 such rows.

Anything malformed raises ImageDecodeError with a one-line message naming
the field, its value and what was expected; no other exception type escapes
and no wrong image is returned. In particular data *longer* than
step*height is refused: cv_bridge tolerates it, but it means the sender
mis-computed step or height, and guessing which would risk a sheared image.
Frames above `max_pixels` are refused before anything is allocated.
"""
from __future__ import annotations

import array
import operator
import re
from typing import Iterator

import cv2
import numpy as np

from ..errors import ClipsamError

MAX_PIXELS = 100_000_000  # default frame size limit (100 megapixels)

# encoding -> (channels per pixel, little-endian numpy dtype, kind).
# For the yuv kinds "channels" is bytes per pixel (2 for 4:2:2); nv12/nv21 are
# a 1-byte-per-pixel Y plane followed by a half-height UV plane.
_ENCODINGS: dict[str, tuple[int, str, str]] = {
    "rgb8": (3, "u1", "rgb"), "bgr8": (3, "u1", "bgr"),
    "rgba8": (4, "u1", "rgba"), "bgra8": (4, "u1", "bgra"),
    "rgb16": (3, "<u2", "rgb"), "bgr16": (3, "<u2", "bgr"),
    "rgba16": (4, "<u2", "rgba"), "bgra16": (4, "<u2", "bgra"),
    "mono8": (1, "u1", "mono"), "mono16": (1, "<u2", "mono"),
    "8UC1": (1, "u1", "mono"), "8UC3": (3, "u1", "bgr"), "8UC4": (4, "u1", "bgra"),
    "16UC1": (1, "<u2", "mono"), "16UC3": (3, "<u2", "bgr"), "16UC4": (4, "<u2", "bgra"),
    "8SC1": (1, "i1", "mono"), "16SC1": (1, "<i2", "mono"), "32SC1": (1, "<i4", "mono"),
    "32FC1": (1, "<f4", "mono"), "64FC1": (1, "<f8", "mono"),
    "bayer_rggb8": (1, "u1", "bayer_rggb"), "bayer_bggr8": (1, "u1", "bayer_bggr"),
    "bayer_gbrg8": (1, "u1", "bayer_gbrg"), "bayer_grbg8": (1, "u1", "bayer_grbg"),
    "bayer_rggb16": (1, "<u2", "bayer_rggb"), "bayer_bggr16": (1, "<u2", "bayer_bggr"),
    "bayer_gbrg16": (1, "<u2", "bayer_gbrg"), "bayer_grbg16": (1, "<u2", "bayer_grbg"),
    "yuv422": (2, "u1", "uyvy"), "uyvy": (2, "u1", "uyvy"),
    "yuv422_yuy2": (2, "u1", "yuyv"), "yuyv": (2, "u1", "yuyv"),
    "nv12": (1, "u1", "nv12"), "nv21": (1, "u1", "nv21"),
}
_BY_LOWER = {name.lower(): name for name in _ENCODINGS}

# OpenCV names bayer patterns after the second row's pixels 2-3, so ROS's
# RGGB is OpenCV's "BG" (OpenCV 5 adds BayerRGGB2RGB as an alias of the same
# code; the old names work on 4.x and 5.x alike).
_CV_CODES = {
    "bayer_rggb": cv2.COLOR_BayerBG2RGB, "bayer_bggr": cv2.COLOR_BayerRG2RGB,
    "bayer_gbrg": cv2.COLOR_BayerGR2RGB, "bayer_grbg": cv2.COLOR_BayerGB2RGB,
    "uyvy": cv2.COLOR_YUV2RGB_UYVY, "yuyv": cv2.COLOR_YUV2RGB_YUY2,
    "nv12": cv2.COLOR_YUV2RGB_NV12, "nv21": cv2.COLOR_YUV2RGB_NV21,
    "bgr": cv2.COLOR_BGR2RGB, "bgra": cv2.COLOR_BGRA2RGB, "rgba": cv2.COLOR_RGBA2RGB,
    "mono": cv2.COLOR_GRAY2RGB,
}

_JPEG_MAGIC = b"\xff\xd8"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_DEPTH_HEADER = 12  # compressedDepth: int32 format + 2 float32 quantisation params


class ImageDecodeError(ClipsamError, ValueError):
    """A message that cannot be turned into an image; the text is one line
    naming the field, its value and what was expected."""


def supported_encodings() -> list[str]:
    """Encodings image_to_rgb accepts (matching is case-insensitive)."""
    return list(_ENCODINGS)


# ---------------------------------------------------------------- helpers

def _field(msg, name: str):
    try:
        return getattr(msg, name)
    except AttributeError:
        raise ImageDecodeError(
            f"message {type(msg).__name__} has no field '{name}'") from None


def _uint_field(msg, name: str, minimum: int = 0) -> int:
    value = _field(msg, name)
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)   # accepts int and numpy ints, not floats
    except TypeError:
        raise ImageDecodeError(
            f"{name}={value!r}: expected an integer >= {minimum}") from None
    if number < minimum:
        raise ImageDecodeError(f"{name}={number}: expected an integer >= {minimum}")
    return number


def _bytes_of(data, field: str = "data") -> np.ndarray:
    """Message bytes as a flat uint8 array, without copying where possible."""
    if isinstance(data, np.ndarray):
        if data.dtype.itemsize != 1 or data.dtype.kind not in "ui":
            raise ImageDecodeError(
                f"{field}: numpy array of dtype {data.dtype}, expected uint8")
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    if isinstance(data, array.array):
        if data.itemsize != 1:
            raise ImageDecodeError(
                f"{field}: array.array with typecode {data.typecode!r}, expected 'B'")
        return np.frombuffer(data, np.uint8)
    if isinstance(data, (bytes, bytearray)):
        return np.frombuffer(data, np.uint8)
    if isinstance(data, (list, tuple)):
        if data and isinstance(data[0], (bytes, bytearray)):
            # byte-typed fields (ROS 'byte[]') arrive as a list of 1-byte bytes
            try:
                return np.frombuffer(b"".join(data), np.uint8)
            except TypeError:
                raise ImageDecodeError(
                    f"{field}: list mixing bytes and other values") from None
        try:
            values = np.asarray(data)
        except (ValueError, TypeError):
            raise ImageDecodeError(f"{field}: list is not a flat list of ints") from None
        if values.size == 0:
            return np.zeros(0, np.uint8)
        if values.ndim != 1 or values.dtype.kind not in "iub":
            raise ImageDecodeError(
                f"{field}: list of {values.dtype} values, expected ints 0..255")
        if values.min() < 0 or values.max() > 255:
            raise ImageDecodeError(
                f"{field}: list values span {values.min()}..{values.max()}, "
                "expected ints 0..255")
        return values.astype(np.uint8)
    if isinstance(data, str):
        raise ImageDecodeError(f"{field}: got str, expected bytes")
    try:
        view = memoryview(data)
    except TypeError:
        raise ImageDecodeError(
            f"{field}: {type(data).__name__} is not a byte buffer, expected "
            "bytes/bytearray/memoryview/array.array/list/numpy uint8") from None
    if view.itemsize != 1:
        raise ImageDecodeError(
            f"{field}: buffer with item size {view.itemsize}, expected bytes")
    try:
        return np.frombuffer(view.cast("B") if view.ndim != 1 else view, np.uint8)
    except (TypeError, ValueError):
        raise ImageDecodeError(f"{field}: buffer is not contiguous") from None


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """Scale any supported sample type to uint8 for display/inspection."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.uint16:
        return (arr >> 8).astype(np.uint8)
    # float and signed data have no fixed range: stretch finite min..max
    finite = np.isfinite(arr)
    all_finite = bool(finite.all())
    if not all_finite and not finite.any():
        return np.zeros(arr.shape, np.uint8)
    valid = arr if all_finite else arr[finite]
    lo, hi = float(valid.min()), float(valid.max())
    if not hi > lo:
        # a flat image (one finite value, ±0 included) is a valid image: black
        return np.zeros(arr.shape, np.uint8)
    # float64 keeps 32-bit ints and wide float ranges exact enough for 8 bits
    with np.errstate(invalid="ignore", over="ignore"):  # NaN/inf pixels are zeroed below
        scaled = arr.astype(np.float64)
        span = hi - lo
        if np.isfinite(span):
            # divide by the span, never multiply by its reciprocal: 255 / span overflows
            # when the finite range is subnormal (e.g. 0 .. 5e-324)
            scaled -= lo
            scaled /= span
        else:
            # data near ±1.8e308: hi - lo overflows, halves do not
            scaled = scaled * 0.5 - lo * 0.5
            scaled /= hi * 0.5 - lo * 0.5
        scaled *= 255.0
        np.rint(scaled, out=scaled)
        np.clip(scaled, 0, 255, out=scaled)
        if not all_finite:
            scaled[~finite] = 0
        return scaled.astype(np.uint8)


def _cvt(img: np.ndarray, kind: str) -> np.ndarray:
    try:
        return cv2.cvtColor(img, _CV_CODES[kind])
    except cv2.error as exc:  # should not happen after validation; never leak cv2.error
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "cv2 error"
        raise ImageDecodeError(
            f"encoding {kind!r}: OpenCV conversion failed ({first})") from None


def _check_pixels(height: int, width: int, max_pixels: int, what: str) -> None:
    if height * width > max_pixels:
        raise ImageDecodeError(
            f"{what} height*width={height}*{width}={height * width} pixels: "
            f"expected at most max_pixels={max_pixels}")


# ---------------------------------------------------------------- raw images

def image_to_rgb(msg, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode a sensor_msgs/Image-like object to a fresh RGB uint8 HxWx3 array.

    Reads .encoding .height .width .step .is_bigendian .data. `data` may be
    bytes, bytearray, memoryview, array.array('B'), a list of ints or a numpy
    uint8 array. Data longer than step*height is refused (unlike cv_bridge),
    as is data shorter than that. Raises ImageDecodeError on anything
    malformed; see the module docstring for the scaling rules.
    """
    encoding = _field(msg, "encoding")
    if isinstance(encoding, bytes):
        encoding = encoding.decode("ascii", "replace")
    if not isinstance(encoding, str) or not encoding.strip():
        raise ImageDecodeError(
            f"encoding={encoding!r}: expected a non-empty encoding name such as 'rgb8'")
    name = _BY_LOWER.get(encoding.strip().lower())
    if name is None:
        raise ImageDecodeError(
            f"encoding={encoding!r}: unknown, expected one of {', '.join(_ENCODINGS)}")
    channels, dtype_str, kind = _ENCODINGS[name]

    height = _uint_field(msg, "height", 1)
    width = _uint_field(msg, "width", 1)
    _check_pixels(height, width, max_pixels, "image")

    big = _field(msg, "is_bigendian")
    if isinstance(big, (bool, np.bool_)):
        big = int(big)
    if big not in (0, 1):
        raise ImageDecodeError(f"is_bigendian={big!r}: expected 0 or 1")
    dtype = np.dtype(dtype_str)
    if big and dtype.itemsize > 1:
        dtype = dtype.newbyteorder(">")

    row_bytes = width * channels * dtype.itemsize
    step = _uint_field(msg, "step", 1)
    if step < row_bytes:
        raise ImageDecodeError(
            f"step={step}: expected >= width*bytes_per_pixel = {width}*"
            f"{channels * dtype.itemsize} = {row_bytes} for encoding {name!r}")

    rows = height
    if kind in ("uyvy", "yuyv") and width % 2:
        raise ImageDecodeError(
            f"width={width}: expected an even width for 4:2:2 encoding {name!r}")
    if kind in ("nv12", "nv21"):
        if width % 2 or height % 2:
            raise ImageDecodeError(
                f"height={height}, width={width}: expected both even for 4:2:0 "
                f"encoding {name!r}")
        rows = height * 3 // 2  # Y plane plus half-height interleaved UV plane

    buf = _bytes_of(_field(msg, "data"))
    expected = step * rows
    if buf.size != expected:
        plane = "step*height*3/2" if rows != height else "step*height"
        raise ImageDecodeError(
            f"data: {buf.size} bytes, expected exactly {plane} = {expected} "
            f"(step={step}, height={height}, encoding {name!r})")

    # Drop row padding; the copy (only when padded) also aligns multi-byte samples.
    raw = buf.reshape(rows, step)[:, :row_bytes]
    pixels = np.ascontiguousarray(raw).view(dtype)
    if dtype.byteorder not in ("=", "|"):
        pixels = pixels.astype(dtype.newbyteorder("="))  # cv2 needs native order

    if kind in ("uyvy", "yuyv"):
        return _cvt(pixels.reshape(height, width, 2), kind)
    if kind in ("nv12", "nv21"):
        return _cvt(pixels.reshape(rows, width), kind)
    if kind.startswith("bayer_"):
        # demosaic at full depth, then reduce
        return _to_uint8(_cvt(pixels.reshape(height, width), kind))

    img = _to_uint8(pixels.reshape(height, width, channels))
    if kind == "rgb":
        # frombuffer views share the sender's (possibly read-only) buffer
        return img.copy() if np.may_share_memory(img, buf) else np.ascontiguousarray(img)
    if kind == "mono":
        return _cvt(img[:, :, 0], kind)
    return _cvt(img, kind)


# ---------------------------------------------------------------- compressed

def _png_size(buf: bytes) -> tuple[int, int] | None:
    # IHDR is always the first chunk: width, height as big-endian uint32
    if len(buf) < 24 or buf[12:16] != b"IHDR":
        return None
    return int.from_bytes(buf[20:24], "big"), int.from_bytes(buf[16:20], "big")


# a marker inside entropy-coded data: FF (fill FFs allowed) then neither a stuffed 00 nor RST0-7
_JPEG_MARKER_IN_SCAN = re.compile(rb"\xff+[^\x00\xd0-\xd7\xff]")
_JPEG_CUT = (-1, -1)    # what _jpeg_markers yields when the data ends before end-of-image


def _jpeg_markers(buf: bytes) -> Iterator[tuple[int, int]]:
    """(marker, offset) of each JPEG segment after SOI, in order, skipping the entropy-coded
    data after each SOS; ends at EOI (FFD9, yielded), at a byte where a marker must be but is
    not (a layout left to OpenCV), or with _JPEG_CUT when the data runs out first."""
    i, n = 2, len(buf)
    while i < n:
        if buf[i] != 0xFF:
            return
        if i + 1 >= n:
            break
        marker = buf[i + 1]
        if marker == 0xFF:                 # fill byte
            i += 1
            continue
        yield marker, i
        if marker == 0xD9:
            return
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:   # markers without a length
            i += 2
            continue
        if i + 4 > n:
            break
        i += 2 + int.from_bytes(buf[i + 2:i + 4], "big")
        if marker == 0xDA:                 # start of scan: entropy-coded data up to the next marker
            found = _JPEG_MARKER_IN_SCAN.search(buf, min(i, n))
            if found is None:
                break
            i = found.end() - 2
    yield _JPEG_CUT


def _jpeg_size(buf: bytes) -> tuple[int, int] | None:
    """(width, height) from the first SOFn frame header, or None before one is found."""
    for marker, i in _jpeg_markers(buf):
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if i + 9 > len(buf):
                return None
            return int.from_bytes(buf[i + 7:i + 9], "big"), int.from_bytes(buf[i + 5:i + 7], "big")
        if marker == 0xDA:   # scan data before any frame header
            return None
    return None


def _jpeg_cut_short(buf: bytes) -> bool:
    """Whether the JPEG's data ends before its end-of-image marker. OpenCV decodes such a
    file anyway and fills the missing rows with grey, which could pass a defect. An EXIF
    thumbnail's own FFD9 does not count (it sits inside an APP1 segment)."""
    return _JPEG_CUT in _jpeg_markers(buf)


def compressed_to_rgb(msg, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode a sensor_msgs/CompressedImage-like object (.format, .data) to RGB uint8.

    The container is recognised from the data's magic bytes (JPEG FFD8, PNG
    89504E47), so free-form `format` text ("jpeg", "bgr8; jpeg compressed
    bgr8", ...) is fine. image_transport's "compressedDepth" PNGs (12-byte
    header) are decoded as depth and scaled like 16UC1/32FC1. A JPEG cut
    short before its end marker raises ImageDecodeError (OpenCV would fill
    the missing rows with grey), as does data OpenCV cannot decode.
    """
    fmt = _field(msg, "format")
    fmt = fmt if isinstance(fmt, str) else repr(fmt)
    buf = _bytes_of(_field(msg, "data"))
    if buf.size == 0:
        raise ImageDecodeError(f"data: empty (format={fmt!r}), expected JPEG or PNG bytes")
    head = buf[:_DEPTH_HEADER + 32].tobytes()

    depth = head[:2] != _JPEG_MAGIC and head[:8] != _PNG_MAGIC and \
        head[_DEPTH_HEADER:_DEPTH_HEADER + 8] == _PNG_MAGIC and "compresseddepth" in fmt.lower()
    if depth:
        return _compressed_depth_to_rgb(buf, fmt, max_pixels)

    if head[:8] == _PNG_MAGIC:
        kind, size = "PNG", _png_size(head)
    elif head[:2] == _JPEG_MAGIC:
        kind, size = "JPEG", _jpeg_size(buf[:65536].tobytes())
    else:
        raise ImageDecodeError(
            f"data: starts with {head[:8].hex()} (format={fmt!r}), expected "
            "JPEG (ffd8) or PNG (89504e47) magic bytes")
    if size is not None:
        _check_pixels(size[1], size[0], max_pixels, kind)
    if kind == "JPEG" and _jpeg_cut_short(buf.tobytes()):
        raise ImageDecodeError(
            f"data: {buf.size} bytes of JPEG (format={fmt!r}) that end before its end-of-image "
            "marker (ffd9): truncated in transport, expected a complete image")

    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if bgr is None or bgr.size == 0:
        raise ImageDecodeError(
            f"data: {buf.size} bytes of {kind} (format={fmt!r}) that OpenCV cannot "
            "decode, expected a complete image")
    _check_pixels(bgr.shape[0], bgr.shape[1], max_pixels, kind)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _compressed_depth_to_rgb(buf: np.ndarray, fmt: str, max_pixels: int) -> np.ndarray:
    png = buf[_DEPTH_HEADER:]
    size = _png_size(png[:32].tobytes())
    if size is not None:
        _check_pixels(size[1], size[0], max_pixels, "compressedDepth PNG")
    raw = cv2.imdecode(png, cv2.IMREAD_UNCHANGED)
    if raw is None or raw.ndim != 2 or raw.dtype != np.uint16:
        raise ImageDecodeError(
            f"data: compressedDepth payload (format={fmt!r}) is not a decodable "
            "16-bit single-channel PNG")
    if "32fc1" in fmt.lower():
        # image_transport stores inverse depth: q = A / depth + B, 0 = invalid
        a, b = np.frombuffer(buf[4:12].tobytes(), "<f4").astype(np.float64)
        q = raw.astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            depth_m = np.where(raw > 0, a / (q - b), np.nan)
        return cv2.cvtColor(_to_uint8(depth_m), cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(_to_uint8(raw), cv2.COLOR_GRAY2RGB)


# ---------------------------------------------------------------- outgoing

# encoding -> (channels, little-endian dtype it is written as)
_OUT_ENCODINGS = {"mono8": (1, "u1"), "32FC1": (1, "<f4"), "rgb8": (3, "u1"), "bgr8": (3, "u1")}


def rgb_to_image_fields(array_: np.ndarray, encoding: str) -> dict:
    """Fields for an outgoing sensor_msgs/Image: height, width, encoding,
    is_bigendian, step, data (bytes, tightly packed, little-endian).

    mono8 takes HxW uint8, 32FC1 HxW float (written as float32), rgb8 and bgr8
    take an RGB HxWx3 uint8 image (bgr8 swaps the channels). Spread the dict
    into any message type: ``Image(header=h, **rgb_to_image_fields(rgb, "bgr8"))``.
    Raises ValueError for a wrong encoding, shape or dtype.
    """
    if encoding not in _OUT_ENCODINGS:
        raise ValueError(
            f"encoding={encoding!r}: expected one of {', '.join(_OUT_ENCODINGS)}")
    channels, dtype_str = _OUT_ENCODINGS[encoding]
    arr = np.asarray(array_)
    if channels == 1 and arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    want_ndim = 2 if channels == 1 else 3
    if arr.ndim != want_ndim or (channels == 3 and arr.shape[2] != 3):
        shape = "HxW" if channels == 1 else "HxWx3"
        raise ValueError(f"array shape {arr.shape}: expected {shape} for {encoding!r}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"array shape {arr.shape}: expected non-zero height and width")
    if dtype_str == "u1" and arr.dtype != np.uint8:
        raise ValueError(f"array dtype {arr.dtype}: expected uint8 for {encoding!r}")
    if dtype_str == "<f4" and arr.dtype.kind != "f":
        raise ValueError(f"array dtype {arr.dtype}: expected float32 for {encoding!r}")
    if encoding == "bgr8":
        arr = arr[:, :, ::-1]
    out = np.ascontiguousarray(arr, dtype=np.dtype(dtype_str))
    height, width = out.shape[:2]
    return {
        "height": int(height),
        "width": int(width),
        "encoding": encoding,
        "is_bigendian": 0,
        "step": int(width * channels * out.dtype.itemsize),
        "data": out.tobytes(),
    }
