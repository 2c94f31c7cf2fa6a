"""vggt_ros.engine.image_encodings: the one ROS-free image codec (node and bag tools share it)."""

from __future__ import annotations

import array

import cv2
import numpy as np
import pytest

from vggt_ros.engine import image_encodings as enc

RNG = np.random.default_rng(0)


def _blocks(h: int = 48, w: int = 64) -> np.ndarray:
    small = RNG.integers(0, 256, (h // 4, w // 4, 3), dtype=np.uint8)
    return np.repeat(np.repeat(small, 4, 0), 4, 1)


def _decode(rgb: np.ndarray, encoding: str) -> np.ndarray:
    step, data = enc.encode_image(rgb, encoding)
    return enc.decode_image(encoding, rgb.shape[0], rgb.shape[1], step, data)


@pytest.mark.parametrize("encoding", enc.ENCODINGS)
def test_every_encoding_round_trips(encoding: str) -> None:
    rgb = _blocks()
    out = _decode(rgb, encoding)
    assert out.shape == rgb.shape and out.dtype == np.uint8 and out.flags.c_contiguous
    ch, _ = enc.layout(encoding)
    gray = ch == 1 and not encoding.startswith("bayer")
    ref = np.repeat(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[..., None], 3, 2) if gray else rgb
    err = np.abs(out.astype(int) - ref.astype(int))
    # bayer and 4:2:2 are lossy at block edges only; the bulk must match
    assert np.median(err) <= 1 and np.mean(err) < 25, (encoding, np.median(err), np.mean(err))
    if not gray:  # a flat colour comes back (a wrong channel order or bayer pattern would not)
        flat = np.empty((16, 16, 3), np.uint8)
        flat[:] = (200, 30, 90)
        assert np.abs(_decode(flat, encoding).astype(int) - flat).max() <= 2, encoding


def test_channel_orders_and_bit_depths() -> None:
    rgb = RNG.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    h, w = rgb.shape[:2]
    for encoding, pixels in (
        ("rgb8", rgb),
        ("bgr8", rgb[..., ::-1]),
        ("8UC3", rgb[..., ::-1]),  # OpenCV order
        ("rgba8", np.dstack([rgb, np.full((h, w), 9, np.uint8)])),
        ("bgra8", np.dstack([rgb[..., ::-1], np.zeros((h, w), np.uint8)])),
        ("rgb16", rgb.astype(np.uint16) * 257),
    ):
        name, step, data = enc.encode_pixels(np.ascontiguousarray(pixels), encoding)
        assert name == encoding and step == w * pixels.shape[2] * pixels.itemsize
        np.testing.assert_array_equal(enc.decode_image(encoding, h, w, step, data), rgb, err_msg=encoding)
    # 16 bit -> 8 bit over the full range, rounded: 65535 -> 255, 257 k -> k, (k << 8) | 0x7F -> k.
    mono16 = np.array([[0, 65535, 257 * 100, (100 << 8) | 0x7F]], np.uint16)
    _, step, data = enc.encode_pixels(mono16, "mono16")
    assert enc.decode_image("mono16", 1, 4, step, data)[0, :, 0].tolist() == [0, 255, 100, 100]
    # float images are [0, 1] gray
    f = np.array([[0.0, 0.5, 1.0, np.nan, 7.0]], np.float32)
    _, step, data = enc.encode_pixels(f)
    assert enc.decode_image("32FC1", 1, 5, step, data)[0, :, 1].tolist() == [0, 128, 255, 0, 255]


def test_bayer_patterns_and_uyvy_by_hand() -> None:
    flat = np.zeros((8, 8, 3), np.uint8)
    flat[:] = (200, 100, 30)
    for pattern in ("rggb", "bggr", "gbrg", "grbg"):
        mosaic = np.zeros((8, 8), np.uint8)
        for k, ch in enumerate(pattern):
            mosaic[k // 2 :: 2, k % 2 :: 2] = flat[0, 0, "rgb".index(ch)]
        out = enc.decode_image(f"bayer_{pattern}8", 8, 8, 8, mosaic.tobytes())
        np.testing.assert_array_equal(out[2:-2, 2:-2], flat[2:-2, 2:-2], err_msg=pattern)
    # UYVY with neutral chroma (U = V = 128) is gray, brighter where Y is larger.
    uyvy = np.full((2, 4, 2), 128, np.uint8)
    uyvy[..., 1] = [[50, 50, 200, 200], [50, 50, 200, 200]]
    out = enc.decode_image("yuv422", 2, 4, 8, uyvy.tobytes()).astype(int)
    assert np.abs(out - out[..., :1]).max() <= 1 and out[0, 3, 0] > out[0, 0, 0] + 100


def test_padding_big_endian_and_buffer_types() -> None:
    rgb = _blocks(8, 12)
    step, data = enc.encode_image(rgb, "rgb8")
    padded = np.zeros((8, step + 5), np.uint8)
    padded[:, :step] = np.frombuffer(data, np.uint8).reshape(8, step)
    flat = padded.ravel()
    for buf in (padded.tobytes(), flat, array.array("B", padded.tobytes()), flat.tolist()):
        np.testing.assert_array_equal(enc.decode_image("rgb8", 8, 12, step + 5, buf), rgb)
    # the last row's padding may be missing
    np.testing.assert_array_equal(enc.decode_image("rgb8", 8, 12, step + 5, padded.tobytes()[:-5]), rgb)
    gray16 = (RNG.integers(0, 65536, (3, 4))).astype(np.uint16)
    big = gray16.astype(">u2").tobytes()
    little = enc.decode_image("mono16", 3, 4, 8, gray16.astype("<u2").tobytes())
    np.testing.assert_array_equal(enc.decode_image("mono16", 3, 4, 8, big, is_bigendian=True), little)


def test_depth() -> None:
    depth_mm = np.array([[1000, 0], [2500, 65535]], np.uint16)
    rows = depth_mm.astype(">u2").view(np.uint8).reshape(2, 4)
    data = np.concatenate([rows, np.zeros((2, 3), np.uint8)], axis=1).tobytes()
    d = enc.decode_depth("16UC1", 2, 2, 7, data, is_bigendian=True)
    assert d.dtype == np.float32 and d[0, 0] == 1.0 and np.isnan(d[0, 1]) and d[1, 0] == 2.5
    assert enc.decode_depth("16UC1", 2, 2, 7, data, True, depth_scale=5000.0)[1, 0] == 0.5
    metres = np.array([[1.5, 0.0], [-1.0, np.inf]], np.float32)
    _, step, data = enc.encode_pixels(metres)
    d = enc.decode_depth("32FC1", 2, 2, step, data)  # read-only bytes in, writable array out
    assert d[0, 0] == 1.5 and np.isnan(d).sum() == 3
    with pytest.raises(enc.ImageEncodingError, match="unsupported depth encoding 'rgb8'"):
        enc.decode_depth("rgb8", 2, 2, 6, bytes(12))


def test_compressed_round_trip_and_errors() -> None:
    rgb = _blocks()
    assert np.array_equal(enc.decode_compressed(enc.encode_compressed(rgb, "png"), "png"), rgb)
    flat = np.full((32, 48, 3), (200, 30, 90), np.uint8)
    out = enc.decode_compressed(enc.encode_compressed(flat, "jpeg"), "rgb8; jpeg compressed bgr8")
    assert out.shape == flat.shape and np.abs(out.astype(int) - flat).max() <= 4
    gray16 = cv2.imencode(".png", np.full((4, 4), 65535, np.uint16))[1]
    assert (enc.decode_compressed(gray16, "png") == 255).all()
    for data, fmt, match in (
        (b"\xff\xd8garbage", "jpeg", "corrupt"),
        (b"x", "16UC1; compressedDepth", "compressedDepth"),
        (b"x", "webp", "unsupported compressed format"),
        (b"", "jpeg", "empty"),
    ):
        with pytest.raises(enc.ImageEncodingError, match=match):
            enc.decode_compressed(data, fmt)
    with pytest.raises(ValueError, match="unsupported compressed format"):
        enc.encode_compressed(rgb, "bmp")


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("weird16", 2, 2, 4, bytes(8)), "unsupported encoding 'weird16'"),
        (("bgr8", 48, 64, 192, bytes(100)), "truncated data"),
        (("rgb8", 2, 2, 5, bytes(12)), "step 5 is smaller"),
        (("rgb8", 0, 2, 6, b""), "empty image"),
        (("yuv422", 2, 3, 6, bytes(12)), "even width"),
        (("bayer_rggb8", 1, 4, 4, bytes(4)), "at least 2x2"),
    ],
)
def test_bad_input_raises(args, match: str) -> None:
    with pytest.raises(enc.ImageEncodingError, match=match):
        enc.decode_image(*args)
    assert issubclass(enc.ImageEncodingError, ValueError)


def test_encoder_checks_arrays() -> None:
    assert enc.encode_pixels(np.zeros((2, 3), np.uint16))[:2] == ("16UC1", 6)
    assert enc.encode_pixels(np.zeros((2, 3, 4), np.uint8))[:2] == ("rgba8", 12)
    with pytest.raises(ValueError, match="needs 3 channel"):
        enc.encode_pixels(np.zeros((2, 3), np.uint8), "rgb8")
    with pytest.raises(ValueError, match="no default image encoding"):
        enc.encode_pixels(np.zeros((2, 3), np.int32))
    with pytest.raises(ValueError, match="unsupported encoding"):
        enc.encode_image(np.zeros((2, 2, 3), np.uint8), "xyz")
