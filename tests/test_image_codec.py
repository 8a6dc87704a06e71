"""Tests for sensor_msgs image decoding/encoding (clipsam_ros.imaging.codec)."""
from __future__ import annotations

import array
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clipsam_ros.imaging.codec import (
    ImageDecodeError,
    compressed_to_rgb,
    image_to_rgb,
    rgb_to_image_fields,
    supported_encodings,
)

H, W = 6, 8  # small and even, so every encoding (yuv, nv12) accepts it


def rgb_image(h: int = H, w: int = W, seed: int = 0) -> np.ndarray:
    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    img[0, 0] = 0      # both extremes present, so min-max stretching is exact
    img[0, 1] = 255
    return img


def msg(pixels: np.ndarray, encoding: str, *, big: bool = False, step: int | None = None,
        pad: int = 0xAB, rows: int | None = None, width: int | None = None):
    """Image-like namespace from an HxW[xC] array (byte order and padding applied here)."""
    pixels = np.ascontiguousarray(pixels)
    if pixels.dtype.itemsize > 1:
        pixels = pixels.astype(pixels.dtype.newbyteorder(">" if big else "<"))
    height = pixels.shape[0] if rows is None else rows
    row = pixels.reshape(pixels.shape[0], -1).view(np.uint8)
    step = row.shape[1] if step is None else step
    data = np.full((row.shape[0], step), pad, np.uint8)
    data[:, :row.shape[1]] = row
    return SimpleNamespace(encoding=encoding, height=height,
                           width=pixels.shape[1] if width is None else width,
                           step=step, is_bigendian=int(big), data=data.tobytes())


def gray3(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[:, :, None], 3, axis=2)


# ------------------------------------------------------------ plain encodings

COLOR_8 = {  # encoding -> how the test builds its pixels from RGB
    "rgb8": lambda c: c, "bgr8": lambda c: c[:, :, ::-1],
    "rgba8": lambda c: np.dstack([c, np.full(c.shape[:2], 7, np.uint8)]),
    "bgra8": lambda c: np.dstack([c[:, :, ::-1], np.full(c.shape[:2], 7, np.uint8)]),
    "8UC3": lambda c: c[:, :, ::-1],
    "8UC4": lambda c: np.dstack([c[:, :, ::-1], np.full(c.shape[:2], 7, np.uint8)]),
}
COLOR_16 = {"rgb16": "rgb8", "bgr16": "bgr8", "rgba16": "rgba8", "bgra16": "bgra8",
            "16UC3": "8UC3", "16UC4": "8UC4"}


@pytest.mark.parametrize("encoding", sorted(COLOR_8))
def test_color_8bit_exact(encoding):
    rgb = rgb_image()
    out = image_to_rgb(msg(COLOR_8[encoding](rgb), encoding))
    assert out.dtype == np.uint8 and out.shape == (H, W, 3)
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize("encoding", sorted(COLOR_16))
@pytest.mark.parametrize("big", [False, True])
def test_color_16bit_scaled_exact(encoding, big):
    rgb = rgb_image()
    pixels = COLOR_8[COLOR_16[encoding]](rgb).astype(np.uint16) * 257
    np.testing.assert_array_equal(image_to_rgb(msg(pixels, encoding, big=big)), rgb)


@pytest.mark.parametrize("encoding", ["mono8", "8UC1"])
def test_mono8_replicated(encoding):
    gray = rgb_image()[:, :, 0]
    np.testing.assert_array_equal(image_to_rgb(msg(gray, encoding)), gray3(gray))


@pytest.mark.parametrize("encoding", ["mono16", "16UC1"])
def test_mono16_shifted(encoding):
    gray = rgb_image()[:, :, 0]
    out = image_to_rgb(msg((gray.astype(np.uint16) << 8) | 0xFF, encoding))  # low byte ignored
    np.testing.assert_array_equal(out, gray3(gray))


@pytest.mark.parametrize("encoding,dtype", [("32FC1", np.float32), ("64FC1", np.float64),
                                            ("8SC1", np.int8), ("16SC1", np.int16),
                                            ("32SC1", np.int32)])
def test_float_and_signed_stretch_min_max(encoding, dtype):
    gray = rgb_image()[:, :, 0]
    if np.dtype(dtype).kind == "f":
        values = gray.astype(dtype) * dtype(0.01) - dtype(1.0)
    else:
        values = (gray.astype(np.int64) - 128).astype(dtype)
    np.testing.assert_array_equal(image_to_rgb(msg(values, encoding)), gray3(gray))


@pytest.mark.parametrize("encoding,dtype", [("32FC1", np.float32), ("64FC1", np.float64)])
def test_float_nonfinite_and_constant(encoding, dtype):
    values = np.full((H, W), 3.5, dtype)
    assert not image_to_rgb(msg(values, encoding)).any()        # constant -> 0
    values[0, 0], values[0, 1], values[0, 2] = np.nan, np.inf, -np.inf
    values[1, 0] = 1.5
    out = image_to_rgb(msg(values, encoding))
    assert out[0, :3].max() == 0 and out[1, 0].max() == 0       # NaN/inf -> 0, min -> 0
    assert (out[2:] == 255).all()                               # max -> 255
    values[:] = np.nan
    assert not image_to_rgb(msg(values, encoding)).any()


def test_float_extreme_range():
    values = np.array([[-1e308, 0.0, 1e308, np.nan]], np.float64)
    assert image_to_rgb(msg(values, "64FC1"))[0, :, 0].tolist() == [0, 128, 255, 0]
    values = np.array([[np.finfo(np.float32).min, np.finfo(np.float32).max]], np.float32)
    assert image_to_rgb(msg(values, "32FC1"))[0, :, 0].tolist() == [0, 255]


# Every edge of the float / integer encodings is a valid frame: it is decoded, never rejected.
# (name -> encoding, values, expected first-channel row); one row of pixels each, both byte orders.
F32, F64 = np.finfo(np.float32), np.finfo(np.float64)
EDGES = {
    "subnormal_f64_range": ("64FC1", np.array([0.0, 5e-324], np.float64), [0, 255]),
    "subnormal_f32_range": ("32FC1", np.array([0.0, F32.smallest_subnormal], np.float32), [0, 255]),
    "subnormal_between_normals": ("64FC1", np.array([-1.0, 5e-324, 1.0], np.float64), [0, 128, 255]),
    "zero_width_f32": ("32FC1", np.full(4, 7.25, np.float32), [0, 0, 0, 0]),
    "zero_width_f64_subnormal": ("64FC1", np.full(3, 5e-324, np.float64), [0, 0, 0]),
    "plus_and_minus_zero": ("32FC1", np.array([0.0, -0.0, 0.0], np.float32), [0, 0, 0]),
    "minus_zero_to_one": ("64FC1", np.array([-0.0, 1.0], np.float64), [0, 255]),
    "inf_nan_around_finite": ("32FC1", np.array([np.inf, -1.0, np.nan, 1.0, -np.inf], np.float32),
                              [0, 0, 0, 255, 0]),
    "one_finite_among_nonfinite": ("64FC1", np.array([np.nan, 2.0, np.inf], np.float64), [0, 0, 0]),
    "only_nonfinite": ("32FC1", np.array([np.nan, np.inf, -np.inf], np.float32), [0, 0, 0]),
    "f64_full_range": ("64FC1", np.array([F64.min, 0.0, F64.max], np.float64), [0, 128, 255]),
    "f32_full_range": ("32FC1", np.array([F32.min, F32.max], np.float32), [0, 255]),
    "int32_full_range": ("32SC1", np.array([-2**31, 0, 2**31 - 1], np.int32), [0, 128, 255]),
    "int32_flat": ("32SC1", np.full(3, -2**31, np.int32), [0, 0, 0]),
    "int16_full_range": ("16SC1", np.array([-2**15, 2**15 - 1], np.int16), [0, 255]),
    "int8_full_range": ("8SC1", np.array([-128, 127], np.int8), [0, 255]),
    "uint16_full_range": ("16UC1", np.array([0, 257, 65535], np.uint16), [0, 1, 255]),
    "uint16_flat_max": ("mono16", np.full(2, 65535, np.uint16), [255, 255]),
}


@pytest.mark.parametrize("big", [False, True], ids=["little_endian", "big_endian"])
@pytest.mark.parametrize("edge", sorted(EDGES))
def test_encoding_edges_decode(edge, big):
    encoding, values, expected = EDGES[edge]
    out = image_to_rgb(msg(values[None, :], encoding, big=big))
    assert out.shape == (1, len(values), 3) and out.dtype == np.uint8
    assert out[0, :, 0].tolist() == expected, edge
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


@pytest.mark.parametrize("encoding,dtype", [("16UC1", np.uint16), ("32FC1", np.float32),
                                            ("64FC1", np.float64), ("rgb16", np.uint16)])
def test_big_and_little_endian_agree(encoding, dtype):
    rng = np.random.default_rng(1)
    shape = (H, W, 3) if encoding == "rgb16" else (H, W)
    values = (rng.random(shape) * 60000).astype(dtype)
    little, big = msg(values, encoding, big=False), msg(values, encoding, big=True)
    assert little.data != big.data
    np.testing.assert_array_equal(image_to_rgb(little), image_to_rgb(big))
    # decoding big-endian bytes as if little-endian must give a different image
    big.is_bigendian = 0
    assert not np.array_equal(image_to_rgb(little), image_to_rgb(big))


# ------------------------------------------------------------ bayer, yuv, nv

BAYER_CV = {  # cv2's own demosaic for each ROS pattern (OpenCV names it by row 2)
    "rggb": cv2.COLOR_BayerBG2RGB, "bggr": cv2.COLOR_BayerRG2RGB,
    "gbrg": cv2.COLOR_BayerGR2RGB, "grbg": cv2.COLOR_BayerGB2RGB,
}


def mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    index = {"r": 0, "g": 1, "b": 2}
    raw = np.zeros(rgb.shape[:2], rgb.dtype)
    for k, (dy, dx) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        raw[dy::2, dx::2] = rgb[dy::2, dx::2, index[pattern[k]]]
    return raw


@pytest.mark.parametrize("pattern", sorted(BAYER_CV))
@pytest.mark.parametrize("bits", [8, 16])
def test_bayer_matches_cv2_demosaic(pattern, bits):
    raw = mosaic(rgb_image(7, 9), pattern)  # odd sizes are fine for bayer
    if bits == 16:
        raw = raw.astype(np.uint16) * 257
    out = image_to_rgb(msg(raw, f"bayer_{pattern}{bits}", big=bits == 16))
    expected = cv2.cvtColor(raw, BAYER_CV[pattern])
    np.testing.assert_array_equal(out, expected if bits == 8 else (expected >> 8).astype(np.uint8))


@pytest.mark.parametrize("pattern", sorted(BAYER_CV))
def test_bayer_pattern_gives_true_colour(pattern):
    flat = np.empty((8, 8, 3), np.uint8)
    flat[:] = (200, 100, 50)
    out = image_to_rgb(msg(mosaic(flat, pattern), f"bayer_{pattern}8"))
    np.testing.assert_array_equal(out[2:-2, 2:-2], flat[2:-2, 2:-2])


YUV = {"yuv422": cv2.COLOR_YUV2RGB_UYVY, "uyvy": cv2.COLOR_YUV2RGB_UYVY,
       "yuv422_yuy2": cv2.COLOR_YUV2RGB_YUY2, "yuyv": cv2.COLOR_YUV2RGB_YUY2}


@pytest.mark.parametrize("encoding", sorted(YUV))
def test_yuv422_matches_cv2(encoding):
    raw = np.random.default_rng(2).integers(0, 256, (H, W, 2), dtype=np.uint8)
    out = image_to_rgb(msg(raw, encoding, step=2 * W + 4))
    np.testing.assert_array_equal(out, cv2.cvtColor(raw, YUV[encoding]))


@pytest.mark.parametrize("encoding,order", [("yuv422", "uyvy"), ("uyvy", "uyvy"),
                                            ("yuv422_yuy2", "yuyv"), ("yuyv", "yuyv")])
def test_yuv422_byte_order(encoding, order):
    # luma 200 with neutral chroma is grey only when read in the right byte order
    pair = [128, 200] if order == "uyvy" else [200, 128]
    raw = np.tile(np.array(pair, np.uint8), (H, W, 1))
    out = image_to_rgb(msg(raw, encoding)).astype(int)
    assert (out.max(axis=2) - out.min(axis=2)).max() <= 1 and out.mean() > 180


@pytest.mark.parametrize("encoding", ["nv12", "nv21"])
def test_nv_matches_cv2(encoding):
    # colour constant over each 2x2 block, so 4:2:0 subsampling loses nothing
    rgb = rgb_image(H // 2, W // 2).repeat(2, axis=0).repeat(2, axis=1) // 2 + 60
    yuv = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)  # Y plane, then U and V planes
    flat, n = yuv.ravel(), H * W
    y, u, v = yuv[:H], flat[n:n + n // 4], flat[n + n // 4:]
    uv = np.stack([u, v] if encoding == "nv12" else [v, u], axis=1).reshape(H // 2, W)
    raw = np.vstack([y, uv])
    out = image_to_rgb(msg(raw, encoding, rows=H, step=W + 2))
    code = cv2.COLOR_YUV2RGB_NV12 if encoding == "nv12" else cv2.COLOR_YUV2RGB_NV21
    np.testing.assert_array_equal(out, cv2.cvtColor(raw, code))
    assert np.abs(out.astype(int) - rgb).max() <= 4  # right colours, so U/V order is right


# ------------------------------------------------------------ layout and data types

@pytest.mark.parametrize("encoding,pixels", [
    ("rgb8", rgb_image()), ("mono8", rgb_image()[:, :, 0]),
    ("16UC1", rgb_image()[:, :, 0].astype(np.uint16) * 257),
    ("32FC1", rgb_image()[:, :, 0].astype(np.float32)),
])
@pytest.mark.parametrize("extra", [1, 3, 16])
def test_step_padding_is_skipped(encoding, pixels, extra):
    tight = image_to_rgb(msg(pixels, encoding))
    padded = msg(pixels, encoding, step=pixels[0].nbytes + extra, big=True)
    np.testing.assert_array_equal(image_to_rgb(padded), tight)


@pytest.mark.parametrize("kind", ["bytes", "bytearray", "memoryview", "array", "list",
                                  "numpy", "numpy2d", "list_of_bytes"])
def test_data_container_types(kind):
    rgb = rgb_image()
    m = msg(rgb, "rgb8")
    raw = m.data
    m.data = {
        "bytes": raw, "bytearray": bytearray(raw), "memoryview": memoryview(raw),
        "array": array.array("B", raw), "list": list(raw),
        "numpy": np.frombuffer(raw, np.uint8), "numpy2d": np.frombuffer(raw, np.uint8).reshape(H, -1),
        "list_of_bytes": [bytes([b]) for b in raw],
    }[kind]
    out = image_to_rgb(m)
    np.testing.assert_array_equal(out, rgb)
    out[:] = 0  # the result is a writable copy, never a view of the message
    assert image_to_rgb(m)[0, 1].tolist() == [255, 255, 255]


BYTES_PER_PIXEL = {  # the test's own table, independent of the module's
    "rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "rgb16": 6, "bgr16": 6, "rgba16": 8,
    "bgra16": 8, "mono8": 1, "mono16": 2, "8UC1": 1, "8UC3": 3, "8UC4": 4, "16UC1": 2,
    "16UC3": 6, "16UC4": 8, "8SC1": 1, "16SC1": 2, "32SC1": 4, "32FC1": 4, "64FC1": 8,
    "bayer_rggb8": 1, "bayer_bggr8": 1, "bayer_gbrg8": 1, "bayer_grbg8": 1,
    "bayer_rggb16": 2, "bayer_bggr16": 2, "bayer_gbrg16": 2, "bayer_grbg16": 2,
    "yuv422": 2, "uyvy": 2, "yuv422_yuy2": 2, "yuyv": 2, "nv12": 1, "nv21": 1,
}


@pytest.mark.parametrize("encoding", sorted(BYTES_PER_PIXEL))
def test_every_encoding_decodes_zeros(encoding):
    step = 6 * BYTES_PER_PIXEL[encoding] + 2
    rows = 6 if encoding.startswith("nv") else 4
    m = SimpleNamespace(encoding=encoding, height=4, width=6, step=step, is_bigendian=1,
                        data=bytes(step * rows))
    out = image_to_rgb(m)
    assert out.shape == (4, 6, 3) and out.dtype == np.uint8
    m.data = bytes(step * rows + 1)
    with pytest.raises(ImageDecodeError, match="data"):
        image_to_rgb(m)


def test_supported_encodings_listed():
    assert set(supported_encodings()) == set(BYTES_PER_PIXEL)
    assert image_to_rgb(msg(rgb_image(), "RGB8")).shape == (H, W, 3)  # case-insensitive


# ------------------------------------------------------------ malformed messages

def _good():
    return msg(rgb_image(), "rgb8")


MALFORMED = {
    "empty encoding": (dict(encoding=""), "encoding"),
    "unknown encoding": (dict(encoding="rgb9"), "encoding"),
    "encoding not str": (dict(encoding=None), "encoding"),
    "height 0": (dict(height=0, data=b""), "height"),
    "width 0": (dict(width=0, data=b""), "width"),
    "negative height": (dict(height=-6), "height"),
    "float width": (dict(width=8.0), "width"),
    "step too small": (dict(step=3 * W - 1), "step"),
    "data short": (dict(data=bytes(H * W * 3 - 1)), "data"),
    "data long": (dict(data=bytes(H * W * 3 + 1)), "data"),
    "data empty": (dict(data=b""), "data"),
    "data str": (dict(data="abc"), "data"),
    "data None": (dict(data=None), "data"),
    "data list out of range": (dict(data=[300] * (H * W * 3)), "data"),
    "data list of floats": (dict(data=[1.5] * (H * W * 3)), "data"),
    "data array.array of uint16": (dict(data=array.array("H", [0] * (H * W * 3))), "data"),
    "data numpy uint16": (dict(data=np.zeros(H * W * 3, np.uint16)), "data"),
    "is_bigendian 2": (dict(is_bigendian=2), "is_bigendian"),
    "yuv422 odd width": (dict(encoding="yuv422", width=3, step=6, height=2, data=bytes(12)), "width"),
    "nv12 odd height": (dict(encoding="nv12", width=4, step=4, height=3, data=bytes(18)), "height"),
    "16-bit step too small": (dict(encoding="16UC1", width=4, step=7, height=2, data=bytes(14)), "step"),
    "too many pixels": (dict(height=200_000, width=200_000, step=600_000, data=b""), "height"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_raises_one_line_error(case):
    changes, field = MALFORMED[case]
    m = _good()
    vars(m).update(changes)
    with pytest.raises(ImageDecodeError) as info:
        image_to_rgb(m)
    text = str(info.value)
    assert field in text and "\n" not in text and len(text) < 400, text


def test_missing_field_and_max_pixels_parameter():
    m = _good()
    del m.step
    with pytest.raises(ImageDecodeError, match="step"):
        image_to_rgb(m)
    with pytest.raises(ImageDecodeError, match="max_pixels=10"):
        image_to_rgb(_good(), max_pixels=10)
    assert image_to_rgb(_good(), max_pixels=H * W).shape == (H, W, 3)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(encoding=st.sampled_from(supported_encodings() + ["", "rgb9"]),
       height=st.integers(-1, 5), width=st.integers(-1, 5), step=st.integers(-1, 48),
       big=st.sampled_from([0, 1, True, 2]), data=st.binary(max_size=200))
def test_fuzz_only_images_or_decode_errors(encoding, height, width, step, big, data):
    m = SimpleNamespace(encoding=encoding, height=height, width=width, step=step,
                        is_bigendian=big, data=data)
    try:
        out = image_to_rgb(m)
    except ImageDecodeError as err:
        assert "\n" not in str(err)
    else:
        assert out.shape == (height, width, 3) and out.dtype == np.uint8
        assert len(data) == step * (height * 3 // 2 if encoding.startswith("nv") else height)


# ------------------------------------------------------------ compressed

def compressed(rgb: np.ndarray, ext: str, fmt: str | None = None, **kw):
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if rgb.ndim == 3 else rgb, **kw)
    assert ok
    return SimpleNamespace(format=fmt if fmt is not None else ext[1:], data=buf.tobytes())


def smooth_rgb(h: int = 48, w: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.dstack([xx * 255 // w, yy * 255 // h, (xx + yy) * 255 // (h + w)]).astype(np.uint8)


def test_png_round_trip_exact_any_format_text():
    rgb = rgb_image(20, 30)
    for fmt in ["png", "bgr8; png compressed bgr8", "", "whatever"]:
        np.testing.assert_array_equal(compressed_to_rgb(compressed(rgb, ".png", fmt)), rgb)


def test_png_gray_and_16bit_become_rgb8():
    gray = rgb_image(10, 12)[:, :, 0]
    np.testing.assert_array_equal(compressed_to_rgb(compressed(gray, ".png")), gray3(gray))
    np.testing.assert_array_equal(
        compressed_to_rgb(compressed(gray.astype(np.uint16) * 257, ".png")), gray3(gray))


@pytest.mark.parametrize("kind", ["bytes", "array", "numpy", "list"])
def test_jpeg_round_trip_approx(kind):
    rgb = smooth_rgb()
    m = compressed(rgb, ".jpg", "rgb8; jpeg compressed bgr8", params=[cv2.IMWRITE_JPEG_QUALITY, 95])
    m.data = {"bytes": m.data, "array": array.array("B", m.data),
              "numpy": np.frombuffer(m.data, np.uint8), "list": list(m.data)}[kind]
    out = compressed_to_rgb(m)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - rgb).mean() < 3


@pytest.mark.parametrize("case", ["empty", "garbage", "png truncated", "jpeg header only",
                                  "png header only", "magic only"])
def test_compressed_bad_data_raises(case):
    png = compressed(rgb_image(20, 30), ".png").data
    jpg = compressed(smooth_rgb(), ".jpg").data
    data = {"empty": b"", "garbage": bytes(range(256)) * 4, "png truncated": png[:len(png) // 2],
            "jpeg header only": jpg[:60], "png header only": png[:33],
            "magic only": b"\xff\xd8"}[case]
    with pytest.raises(ImageDecodeError) as info:
        compressed_to_rgb(SimpleNamespace(format="jpeg", data=data))
    assert "data" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.9, 0.99])
def test_a_jpeg_cut_short_is_refused_not_filled_with_grey(fraction):
    jpg = bytes(compressed(smooth_rgb(), ".jpg").data)
    with pytest.raises(ImageDecodeError, match="end-of-image"):
        compressed_to_rgb(SimpleNamespace(format="jpeg", data=jpg[:int(len(jpg) * fraction)]))
    # the whole file, and the whole file padded with zeros or trailing bytes, decode
    for whole in (jpg, jpg + bytes(16), jpg + b"\xff\xd8 trailing"):
        assert compressed_to_rgb(SimpleNamespace(format="jpeg", data=whole)).shape == (48, 64, 3)


def test_a_progressive_jpeg_with_an_exif_thumbnail_is_complete_only_with_its_own_end():
    ok, thumb = cv2.imencode(".jpg", smooth_rgb()[:8, :8])
    ok2, main = cv2.imencode(".jpg", smooth_rgb(), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert ok and ok2
    exif = b"Exif\0\0" + bytes(thumb)                     # a thumbnail with its own SOS ... FFD9
    app1 = b"\xff\xe1" + (len(exif) + 2).to_bytes(2, "big") + exif
    jpg = bytes(main[:2]) + app1 + bytes(main[2:])
    assert compressed_to_rgb(SimpleNamespace(format="jpeg", data=jpg)).shape == (48, 64, 3)
    with pytest.raises(ImageDecodeError, match="end-of-image"):
        compressed_to_rgb(SimpleNamespace(format="jpeg", data=jpg[:-40]))


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_compressed_max_pixels_checked_from_header(ext):
    m = compressed(smooth_rgb(), ext)
    with pytest.raises(ImageDecodeError, match="64\\*48|48\\*64"):
        compressed_to_rgb(m, max_pixels=1000)
    assert compressed_to_rgb(m, max_pixels=48 * 64).shape == (48, 64, 3)


def test_compressed_depth_16uc1():
    depth = (rgb_image(10, 12)[:, :, 0].astype(np.uint16) * 257)
    ok, png = cv2.imencode(".png", depth)
    header = np.array([0], "<i4").tobytes() + np.array([0, 0], "<f4").tobytes()
    m = SimpleNamespace(format="16UC1; compressedDepth png", data=header + png.tobytes())
    np.testing.assert_array_equal(compressed_to_rgb(m), gray3((depth >> 8).astype(np.uint8)))


# ------------------------------------------------------------ outgoing fields

def test_rgb_to_image_fields_round_trips():
    rgb = rgb_image()
    for encoding in ["rgb8", "bgr8"]:
        fields = rgb_to_image_fields(rgb, encoding)
        assert fields["step"] == 3 * W and isinstance(fields["data"], bytes)
        np.testing.assert_array_equal(image_to_rgb(SimpleNamespace(**fields)), rgb)
    bgr = np.frombuffer(rgb_to_image_fields(rgb, "bgr8")["data"], np.uint8).reshape(H, W, 3)
    np.testing.assert_array_equal(bgr, rgb[:, :, ::-1])

    gray = rgb[:, :, 0]
    fields = rgb_to_image_fields(gray, "mono8")
    assert (fields["height"], fields["width"], fields["step"], fields["is_bigendian"]) == (H, W, W, 0)
    np.testing.assert_array_equal(image_to_rgb(SimpleNamespace(**fields)), gray3(gray))

    scores = np.linspace(0, 1, H * W, dtype=np.float32).reshape(H, W)
    fields = rgb_to_image_fields(scores, "32FC1")
    assert fields["step"] == 4 * W
    np.testing.assert_array_equal(np.frombuffer(fields["data"], "<f4").reshape(H, W), scores)
    np.testing.assert_array_equal(rgb_to_image_fields(scores.astype(np.float64), "32FC1")["data"],
                                  fields["data"])


@pytest.mark.parametrize("array_,encoding", [
    (np.zeros((4, 4), np.uint8), "rgb8"), (np.zeros((4, 4, 3), np.uint8), "mono8"),
    (np.zeros((4, 4), np.float32), "mono8"), (np.zeros((4, 4), np.uint8), "32FC1"),
    (np.zeros((4, 4, 4), np.uint8), "bgr8"), (np.zeros((0, 4, 3), np.uint8), "rgb8"),
    (np.zeros((4, 4), np.uint8), "mono16"),
])
def test_rgb_to_image_fields_rejects_bad_input(array_, encoding):
    with pytest.raises(ValueError):
        rgb_to_image_fields(array_, encoding)


# ------------------------------------------------------------ real message types

def test_rclpy_image_message():
    try:
        from sensor_msgs.msg import Image  # no rclpy.init needed for message classes
    except ImportError as exc:
        pytest.skip(f"sensor_msgs not importable (set AMENT_PREFIX_PATH?): {exc}")
    rgb = rgb_image()
    real = Image(**rgb_to_image_fields(rgb, "bgr8"))
    assert isinstance(real.data, array.array)
    np.testing.assert_array_equal(image_to_rgb(real), rgb)
    real.is_bigendian = 1
    real.encoding = "mono16"
    real.step = 2 * W
    real.data = bytes(2 * H * W)
    assert not image_to_rgb(real).any()


def test_rosbags_image_message():
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_JAZZY)
    Image = ts.types["sensor_msgs/msg/Image"]
    Header = ts.types["std_msgs/msg/Header"]
    Time = ts.types["builtin_interfaces/msg/Time"]
    rgb = rgb_image()
    fields = rgb_to_image_fields(rgb, "rgb8")
    fields["data"] = np.frombuffer(fields["data"], np.uint8)
    m = Image(header=Header(stamp=Time(sec=1, nanosec=2), frame_id="cam"), **fields)
    np.testing.assert_array_equal(image_to_rgb(m), rgb)
    # and through rosbags' CDR serialisation, as read from a bag
    decoded = ts.deserialize_cdr(ts.serialize_cdr(m, Image.__msgtype__), Image.__msgtype__)
    np.testing.assert_array_equal(image_to_rgb(decoded), rgb)
