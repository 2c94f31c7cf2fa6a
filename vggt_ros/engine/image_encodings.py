"""ROS image encodings <-> numpy, without ROS: the one codec behind the node and the bag tools.

Works on the fields of a sensor_msgs/Image (``encoding``, ``height``, ``width``, ``step``,
``data``, ``is_bigendian``) or a CompressedImage (``format``, ``data``), so both
``vggt_ros.ros.conversions`` (rclpy messages) and ``vggt_ros.eval.bags`` (rosbags messages)
only pass fields through. Everything is vectorised numpy / OpenCV.

Conventions:

* Colour images decode to [H, W, 3] uint8 RGB whatever their encoding: alpha is dropped, mono
  is repeated, 16-bit values are scaled over the full range (65535 -> 255, rounded), float
  images are taken as [0, 1] gray. ``8UC3`` / ``8UC4`` are OpenCV's default order, BGR(A).
* 4:2:2 packed YUV: ``yuv422`` and ``uyvy`` are U Y0 V Y1; ``yuv422_yuy2`` and ``yuyv`` are
  Y0 U Y1 V (BT.601 video range, as OpenCV converts them).
* Bayer patterns are named by their top-left 2x2 block (``bayer_rggb8``: R G / G B), 8 or 16 bit.
* Depth images decode to [H, W] float32 metres: 16UC1/mono16 are millimetres by REP-118 (or
  ``depth_scale`` units per metre), float images are metres; 0, negative and non-finite
  values are "no depth" (NaN).
* Rows may be padded (``step`` > packed row); the last row's padding may be missing. Multi-byte
  pixels honour ``is_bigendian``; encoders write packed little-endian rows.

Bad input (unknown encoding, short buffer, step too small, empty or odd-sized image, corrupt
compressed data) raises :class:`ImageEncodingError`, a ValueError saying why.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np


class ImageEncodingError(ValueError):
    """Pixels that cannot be decoded or encoded as asked (the message says why)."""


# encoding -> (channels, numpy dtype) of the raw buffer, for plain (non-packed) encodings.
_PLAIN: dict[str, tuple[int, np.dtype]] = {
    "rgb8": (3, np.dtype(np.uint8)),
    "bgr8": (3, np.dtype(np.uint8)),
    "rgba8": (4, np.dtype(np.uint8)),
    "bgra8": (4, np.dtype(np.uint8)),
    "rgb16": (3, np.dtype(np.uint16)),
    "bgr16": (3, np.dtype(np.uint16)),
    "rgba16": (4, np.dtype(np.uint16)),
    "bgra16": (4, np.dtype(np.uint16)),
    "mono8": (1, np.dtype(np.uint8)),
    "8UC1": (1, np.dtype(np.uint8)),
    "8UC3": (3, np.dtype(np.uint8)),  # OpenCV's default channel order: BGR
    "8UC4": (4, np.dtype(np.uint8)),  # BGRA
    "mono16": (1, np.dtype(np.uint16)),
    "16UC1": (1, np.dtype(np.uint16)),
    "32FC1": (1, np.dtype(np.float32)),
    "64FC1": (1, np.dtype(np.float64)),
}
# Bayer patterns, named by their top-left 2x2 block; OpenCV names them by the second row's
# first two pixels, hence the apparent mismatch (the mapping cv_bridge uses).
_BAYER = {
    "rggb": cv2.COLOR_BayerBG2RGB,
    "bggr": cv2.COLOR_BayerRG2RGB,
    "gbrg": cv2.COLOR_BayerGR2RGB,
    "grbg": cv2.COLOR_BayerGB2RGB,
}
_YUV422 = {
    "yuv422": cv2.COLOR_YUV2RGB_UYVY,
    "uyvy": cv2.COLOR_YUV2RGB_UYVY,
    "yuv422_yuy2": cv2.COLOR_YUV2RGB_YUY2,
    "yuyv": cv2.COLOR_YUV2RGB_YUY2,
}
_FLOAT = ("32FC1", "64FC1")

# Every encoding that decodes to RGB.
ENCODINGS: tuple[str, ...] = tuple(
    sorted(list(_PLAIN) + list(_YUV422) + [f"bayer_{p}{bits}" for p in _BAYER for bits in (8, 16)])
)
# What cameras publish: every encoding but the float ones.
CAMERA_ENCODINGS: tuple[str, ...] = tuple(e for e in ENCODINGS if e not in _FLOAT)
DEPTH_ENCODINGS: tuple[str, ...] = ("16UC1", "mono16", "32FC1", "64FC1")
COMPRESSED_FORMATS = {"jpeg": ".jpg", "jpg": ".jpg", "png": ".png"}


def _bayer(encoding: str) -> str | None:
    """The pattern of a bayer_<pattern><8|16> encoding, else None."""
    if encoding.startswith("bayer_") and encoding[6:10] in _BAYER and encoding[10:] in ("8", "16"):
        return encoding[6:10]
    return None


def layout(encoding: str) -> tuple[int, np.dtype]:
    """(channels, dtype) of one pixel of ``encoding`` in the raw buffer (4:2:2: 2 uint8 per pixel)."""
    if encoding in _PLAIN:
        return _PLAIN[encoding]
    if encoding in _YUV422:
        return 2, np.dtype(np.uint8)
    if _bayer(encoding):
        return 1, np.dtype(np.uint16 if encoding.endswith("16") else np.uint8)
    raise ImageEncodingError(f"unsupported encoding {encoding!r} (supported: {', '.join(ENCODINGS)})")


def _buffer(data: Any) -> np.ndarray:
    """A message's ``data`` (bytes, bytearray, array.array, numpy array or list) as flat uint8."""
    if isinstance(data, np.ndarray):
        return data.reshape(-1) if data.dtype == np.uint8 else np.asarray(data, np.uint8).reshape(-1)
    try:
        return np.frombuffer(memoryview(data), dtype=np.uint8)
    except TypeError:
        return np.asarray(data, np.uint8).reshape(-1)


def raw_pixels(
    encoding: str, height: int, width: int, step: int, data: Any, is_bigendian: bool = False
) -> np.ndarray:
    """The pixels as stored: [H, W] or [H, W, C] of the encoding's dtype in native byte order
    (a view of ``data`` when no row padding or byte swap is needed)."""
    ch, dtype = layout(encoding)
    h, w, step = int(height), int(width), int(step)
    if h <= 0 or w <= 0:
        raise ImageEncodingError(f"empty image ({w}x{h})")
    row = w * ch * dtype.itemsize
    if step < row:
        raise ImageEncodingError(
            f"step {step} is smaller than width {w} x {ch * dtype.itemsize} bytes per pixel ({encoding})"
        )
    buf = _buffer(data)
    need = step * (h - 1) + row
    if buf.size < need:
        raise ImageEncodingError(f"truncated data: {buf.size} bytes for {w}x{h} {encoding} (need {need})")
    if step == row:
        rows = buf[: h * row].reshape(h, row)
    elif buf.size >= h * step:
        rows = np.ascontiguousarray(buf[: h * step].reshape(h, step)[:, :row])
    else:  # the last row's padding is missing
        padded = np.zeros(h * step, np.uint8)
        padded[: buf.size] = buf[: h * step]
        rows = np.ascontiguousarray(padded.reshape(h, step)[:, :row])
    if dtype.itemsize > 1:
        stored = dtype.newbyteorder(">" if is_bigendian else "<")
        px = rows.view(stored)
        if stored != dtype:
            px = px.astype(dtype)
    else:
        px = rows
    return px.reshape((h, w, ch) if ch > 1 else (h, w))


def _to8(values: np.ndarray) -> np.ndarray:
    """uint16 -> uint8 over the full 16-bit range (65535 -> 255, rounded)."""
    return ((values.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def decode_image(
    encoding: str, height: int, width: int, step: int, data: Any, is_bigendian: bool = False
) -> np.ndarray:
    """An image in any of :data:`ENCODINGS` -> [H, W, 3] uint8 RGB, C-contiguous (for unpadded
    rgb8 a view of ``data``, read-only when ``data`` is bytes)."""
    encoding = str(encoding)
    layout(encoding)  # unknown encodings first, whatever the sizes
    if encoding in _YUV422 and int(width) % 2:
        raise ImageEncodingError(f"{encoding} needs an even width, got {int(width)}")
    px = raw_pixels(encoding, height, width, step, data, is_bigendian)
    if encoding in _YUV422:
        return cv2.cvtColor(np.ascontiguousarray(px), _YUV422[encoding])
    if pattern := _bayer(encoding):
        if px.shape[0] < 2 or px.shape[1] < 2:
            raise ImageEncodingError(
                f"a bayer image needs at least 2x2 pixels, got {px.shape[1]}x{px.shape[0]}"
            )
        mosaic = _to8(px) if px.dtype == np.uint16 else px
        return cv2.cvtColor(np.ascontiguousarray(mosaic), _BAYER[pattern])
    if px.dtype == np.uint16:
        px = _to8(px)
    elif px.dtype.kind == "f":
        px = np.clip(np.nan_to_num(px) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if px.ndim == 2:
        return np.repeat(px[..., None], 3, axis=2)
    if encoding.startswith("bgr") or encoding in ("8UC3", "8UC4"):
        px = px[..., 2::-1]
    return np.ascontiguousarray(px[..., :3])


def decode_depth(
    encoding: str,
    height: int,
    width: int,
    step: int,
    data: Any,
    is_bigendian: bool = False,
    depth_scale: float | None = None,
) -> np.ndarray:
    """A depth image (:data:`DEPTH_ENCODINGS`) -> [H, W] float32 metres, NaN where there is none.

    Args:
        depth_scale: stored units per metre of integer images (default 1000: REP-118
            millimetres); float images are metres already.
    """
    encoding = str(encoding)
    if encoding not in DEPTH_ENCODINGS:
        raise ImageEncodingError(
            f"unsupported depth encoding {encoding!r} (expected {', '.join(DEPTH_ENCODINGS)})"
        )
    px = raw_pixels(encoding, height, width, step, data, is_bigendian)
    if px.dtype.kind == "f":
        d = px.astype(np.float32)  # a copy (astype copies), so writable whatever ``data`` is
    else:
        d = px.astype(np.float32) / float(depth_scale or 1000.0)
    d[~(np.isfinite(d) & (d > 0))] = np.nan
    return d


def encode_image(rgb: np.ndarray, encoding: str) -> tuple[int, bytes]:
    """[H, W, 3] uint8 RGB -> (step, packed little-endian bytes) in ``encoding`` (the inverse of
    :func:`decode_image`). Mono encodings store luma; bayer encodings sample the pattern and
    4:2:2 encodings subsample chroma, so those round trips are lossy."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ImageEncodingError(f"expected an HxWx3 RGB array, got shape {rgb.shape}")
    h, w = rgb.shape[:2]
    ch, dtype = layout(encoding)
    if encoding in _YUV422:
        if w % 2:
            raise ImageEncodingError(f"{encoding} needs an even width, got {w}")
        # BT.601 video range, the inverse of OpenCV's YUV2RGB_UYVY / _YUY2.
        f = rgb.astype(np.float32) / 255.0
        y = 16 + 65.481 * f[..., 0] + 128.553 * f[..., 1] + 24.966 * f[..., 2]
        cb = 128 - 37.797 * f[..., 0] - 74.203 * f[..., 1] + 112.0 * f[..., 2]
        cr = 128 + 112.0 * f[..., 0] - 93.786 * f[..., 1] - 18.214 * f[..., 2]
        u = 0.5 * (cb[:, 0::2] + cb[:, 1::2])
        v = 0.5 * (cr[:, 0::2] + cr[:, 1::2])
        packed = np.empty((h, w // 2, 4), np.float32)
        if encoding in ("yuv422", "uyvy"):
            packed[..., 0], packed[..., 1], packed[..., 2], packed[..., 3] = u, y[:, 0::2], v, y[:, 1::2]
        else:
            packed[..., 0], packed[..., 1], packed[..., 2], packed[..., 3] = y[:, 0::2], u, y[:, 1::2], v
        px = np.clip(np.round(packed), 0, 255).astype(np.uint8).reshape(h, w * 2)
    elif pattern := _bayer(encoding):
        chan = {"r": 0, "g": 1, "b": 2}
        px = np.empty((h, w), np.uint8)
        for dy in (0, 1):
            for dx in (0, 1):
                px[dy::2, dx::2] = rgb[dy::2, dx::2, chan[pattern[2 * dy + dx]]]
    elif ch == 1:
        px = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    else:
        px = rgb[..., ::-1] if encoding.startswith("bgr") or encoding in ("8UC3", "8UC4") else rgb
        if ch == 4:
            px = np.concatenate([px, np.full((h, w, 1), 255, np.uint8)], axis=2)
    if dtype == np.uint16:
        px = px.astype(np.uint16) * 257
    elif dtype.kind == "f":
        px = px.astype(dtype) / 255.0
    data = np.ascontiguousarray(px, dtype.newbyteorder("<"))
    return data.nbytes // h, data.tobytes()


def encode_pixels(array: np.ndarray, encoding: str | None = None) -> tuple[str, int, bytes]:
    """Raw pixels -> (encoding, step, packed little-endian bytes), the array stored as it is.

    Args:
        array: [H, W] or [H, W, C]; without ``encoding``: [H, W, 3] uint8 is rgb8, [H, W, 4]
            uint8 rgba8, [H, W] uint8 mono8, uint16 16UC1 (millimetres for depth), float32
            32FC1 (metres for depth), float64 64FC1.
        encoding: e.g. "bgr8" when the array already is BGR; it must match the array's dtype
            and channel count (see :func:`layout`).
    """
    a = np.asarray(array)
    channels = a.shape[2] if a.ndim == 3 else 1
    if encoding is None:
        encoding = {
            (np.dtype(np.uint8), 3): "rgb8",
            (np.dtype(np.uint8), 4): "rgba8",
            (np.dtype(np.uint8), 1): "mono8",
            (np.dtype(np.uint16), 1): "16UC1",
            (np.dtype(np.float32), 1): "32FC1",
            (np.dtype(np.float64), 1): "64FC1",
        }.get((a.dtype, channels))
        if encoding is None:
            raise ImageEncodingError(f"no default image encoding for dtype {a.dtype} and shape {a.shape}")
    ch, dtype = layout(encoding)
    if a.ndim not in (2, 3) or a.dtype != dtype or channels != ch:
        raise ImageEncodingError(
            f"encoding {encoding} needs {ch} channel(s) of {dtype}, got {a.dtype} {a.shape}"
        )
    data = np.ascontiguousarray(a, dtype.newbyteorder("<"))
    return encoding, a.shape[1] * ch * dtype.itemsize, data.tobytes()


def decode_compressed(data: Any, fmt: str = "") -> np.ndarray:
    """A CompressedImage's bytes (jpeg or png; ``fmt`` as image_transport writes it, e.g.
    "rgb8; jpeg compressed bgr8", or plain "jpeg", or empty) -> [H, W, 3] uint8 RGB."""
    low = str(fmt).lower()
    if "compresseddepth" in low:
        raise ImageEncodingError(f"compressedDepth images are not camera images (format {fmt!r})")
    if low and not any(k in low for k in COMPRESSED_FORMATS):
        raise ImageEncodingError(f"unsupported compressed format {fmt!r} (expected jpeg or png)")
    buf = _buffer(data)
    if buf.size == 0:
        raise ImageEncodingError("empty compressed image")
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise ImageEncodingError(f"corrupt or undecodable {fmt or 'compressed'} data ({buf.size} bytes)")
    if img.dtype == np.uint16:
        img = _to8(img)
    if img.ndim == 2:
        return np.repeat(img[..., None], 3, axis=2)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def encode_compressed(rgb: np.ndarray, fmt: str = "jpeg") -> bytes:
    """[H, W, 3] uint8 RGB -> jpeg or png bytes (``fmt`` "jpeg", "jpg" or "png")."""
    if fmt not in COMPRESSED_FORMATS:
        raise ImageEncodingError(f"unsupported compressed format {fmt!r} (expected jpeg or png)")
    ok, buf = cv2.imencode(
        COMPRESSED_FORMATS[fmt], cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)
    )
    if not ok:
        raise ImageEncodingError(f"OpenCV could not encode {fmt}")
    return buf.tobytes()
