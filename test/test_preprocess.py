"""Tests for vggt_ros.engine.preprocess: model sizes, pixel maps, white padding, input checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vggt_ros.engine.preprocess import PREPROCESS_MODES, PreprocessedBatch, plan_transform, preprocess_frames
from vggt_ros.geometry import project_points

# (H, W): portrait, landscape, square, tiny, huge, very wide, odd sizes.
SIZES = [(640, 480), (480, 640), (300, 300), (3, 5), (4000, 6000), (20, 1000), (1080, 1920), (517, 389)]


def official_side(length: float, patch: int = 14) -> int:
    """The official loader's rounding, written out for comparison."""
    return round(length / patch) * patch


@pytest.mark.parametrize("hw", SIZES)
@pytest.mark.parametrize("mode", PREPROCESS_MODES)
def test_planned_sizes(hw, mode):
    h, w = hw
    tf = plan_transform(hw, mode)
    mh, mw = tf.model_hw
    assert mh % 14 == 0 and mw % 14 == 0 and mh >= 14 and mw >= 14
    assert tf.original_hw == hw
    if mode == "resize":
        assert max(mh, mw) == 518
        assert tf.content_box == (0, 0, mw, mh) and tf.offset == (0.0, 0.0)
        # Aspect kept up to the rounding to a patch multiple.
        short, long_ = min(h, w), max(h, w)
        assert abs(min(mh, mw) - max(14, official_side(short * 518 / long_))) == 0
    elif mode == "pad":
        assert (mh, mw) == (518, 518)
        x0, y0, x1, y1 = tf.content_box
        assert max(x1 - x0, y1 - y0) == 518
        # Centred: the two padding bands differ by at most one pixel.
        assert abs(x0 - (518 - x1)) <= 1 and abs(y0 - (518 - y1)) <= 1
    else:
        assert mw == 518 and mh <= 518
        assert tf.content_box == (0, 0, mw, mh)
    # The recorded scale is exactly the resized size over the original size.
    sx, sy = tf.scale
    assert math.isclose(sx * w, round(sx * w)) and math.isclose(sy * h, round(sy * h))


def test_official_sizes_by_hand():
    # Landscape VGA: 480 * 518 / 640 = 388.5 -> 27.75 patches -> 28 -> 392.
    assert plan_transform((480, 640), "crop").model_hw == (392, 518)
    assert plan_transform((480, 640), "resize").model_hw == (392, 518)
    pad = plan_transform((480, 640), "pad")
    assert pad.model_hw == (518, 518) and pad.content_box == (0, 63, 518, 455) and pad.offset == (0.0, 63.0)
    # Portrait VGA in crop mode: width 518, height 640 * 518 / 480 = 690.7 -> 49 patches = 686,
    # centre-cropped to 518 starting at row (686 - 518) // 2 = 84.
    crop = plan_transform((640, 480), "crop")
    assert crop.model_hw == (518, 518) and crop.offset == (0.0, -84.0)
    assert crop.scale == (518 / 480, 686 / 640)
    assert plan_transform((640, 480), "resize").model_hw == (518, 392)
    # 1080p: 1080 * 518 / 1920 = 291.4 -> 20.8 patches -> 21 -> 294, padded 112 above.
    assert plan_transform((1080, 1920), "pad").content_box == (0, 112, 518, 406)
    # Extreme aspect: never below one patch (the official formula would give 0 rows).
    assert plan_transform((10, 5000), "resize").model_hw == (14, 518)


def test_fit_into_given_model_size():
    tf = plan_transform((100, 300), model_hw=(392, 518))
    assert tf.model_hw == (392, 518)
    x0, y0, x1, y1 = tf.content_box
    assert (x0, x1) == (0, 518) and y1 - y0 == 173 and abs(y0 - (392 - y1)) <= 1
    assert tf.scale == (518 / 300, 173 / 100)


# --------------------------------------------------------------------------- pixel mapping


def make_marked_frame(
    hw: tuple[int, int], centre_frac: tuple[float, float], block: int
) -> tuple[np.ndarray, tuple]:
    """Grey frame with a bright block; returns the frame and the block centre (x, y) in pixels."""
    h, w = hw
    frame = np.full((h, w, 3), 50, dtype=np.uint8)
    block = min(block, h, w)
    x0 = min(w - block, int(centre_frac[0] * w))
    y0 = min(h - block, int(centre_frac[1] * h))
    frame[y0 : y0 + block, x0 : x0 + block] = 200
    return frame, (x0 + (block - 1) / 2, y0 + (block - 1) / 2)


def bright_centroid(image: torch.Tensor, box: tuple[int, int, int, int]) -> np.ndarray:
    """(x, y) intensity centroid of the above-background signal inside the content box."""
    x0, y0, x1, y1 = box
    signal = (image[0].numpy() - 50 / 255)[y0:y1, x0:x1]
    signal = np.clip(signal, 0.0, None)
    ys, xs = np.mgrid[y0:y1, x0:x1]
    return np.array([(xs * signal).sum(), (ys * signal).sum()]) / signal.sum()


@pytest.mark.parametrize("hw", [(640, 480), (480, 640), (300, 300), (3, 5), (2000, 3000), (37, 91)])
@pytest.mark.parametrize("mode", PREPROCESS_MODES)
def test_marked_pixel_lands_where_transform_says(hw, mode):
    tf = plan_transform(hw, mode)
    # Big enough to cover a few model pixels after shrinking, so its centroid survives resampling.
    block = max(1, math.ceil(4 / min(tf.scale)))
    frame, centre = make_marked_frame(hw, (0.3, 0.6), block)
    batch = preprocess_frames([frame], mode=mode)
    assert batch.transforms[0] == tf
    expected = tf.original_to_model_points(np.array(centre))
    found = bright_centroid(batch.images[0], tf.content_box)
    assert np.all(np.abs(found - expected) <= 0.5), (found, expected)
    # And back to the original image.
    back = tf.model_to_original_points(found)
    assert np.all(np.abs(back - np.array(centre)) <= 0.5 / np.array(tf.scale) + 1e-9)


def test_mixed_sizes_fit_into_first_frame_size():
    first, _ = make_marked_frame((480, 640), (0.5, 0.5), 4)
    second, centre = make_marked_frame((300, 200), (0.7, 0.2), 4)
    batch = preprocess_frames([first, second], mode="resize")
    assert batch.model_hw == (392, 518) and batch.images.shape == (2, 3, 392, 518)
    tf = batch.transforms[1]
    assert tf.model_hw == (392, 518) and tf.original_hw == (300, 200)
    x0, y0, x1, y1 = tf.content_box
    assert (y0, y1) == (0, 392) and 0 < x0 < x1 < 518
    # Aspect kept (to the pixel), padding white, the mark where the transform says.
    assert abs((x1 - x0) / (y1 - y0) - 200 / 300) < 1 / 392
    img = batch.images[1]
    assert torch.all(img[:, :, :x0] == 1.0) and torch.all(img[:, :, x1:] == 1.0)
    found = bright_centroid(img, tf.content_box)
    assert np.all(np.abs(found - tf.original_to_model_points(np.array(centre))) <= 0.5)


@pytest.mark.parametrize("mode", PREPROCESS_MODES)
def test_transform_intrinsics_match_pixel_map(mode):
    hw = (640, 480)
    tf = plan_transform(hw, mode)
    K = np.array([[400.0, 0.0, 241.3], [0.0, 405.0, 318.9], [0.0, 0.0, 1.0]])
    rng = np.random.default_rng(0)
    pts = np.column_stack((rng.normal(size=(50, 2)), rng.uniform(1, 5, size=50)))
    E = np.eye(3, 4)
    pix_orig, _ = project_points(pts, E, K)
    pix_model, _ = project_points(pts, E, tf.intrinsics_to_model(K))
    np.testing.assert_allclose(tf.original_to_model_points(pix_orig), pix_model, atol=1e-9)
    np.testing.assert_allclose(tf.intrinsics_to_original(tf.intrinsics_to_model(K)), K, atol=1e-9)


# --------------------------------------------------------------------------- content


def test_output_format_padding_and_channels():
    frame = np.zeros((480, 640, 3), dtype=np.uint8)
    frame[..., 0] = 255  # pure red
    batch = preprocess_frames([frame, frame], mode="pad")
    assert isinstance(batch, PreprocessedBatch)
    assert batch.images.dtype == torch.float32 and batch.images.shape == (2, 3, 518, 518)
    mask = torch.from_numpy(batch.transforms[0].content_mask())
    content, padding = batch.images[0][:, mask], batch.images[0][:, ~mask]
    assert torch.all(padding == 1.0)  # white, as the official pad mode
    torch.testing.assert_close(content[0], torch.ones_like(content[0]))
    torch.testing.assert_close(content[1:], torch.zeros_like(content[1:]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_input_and_range(dtype):
    rng = np.random.default_rng(1)
    frame = rng.uniform(0.0, 1.0, size=(50, 70, 3)).astype(dtype)
    frame[0, 0] = [0.0, 1.0, 0.0]
    batch = preprocess_frames([frame], mode="resize")  # enlarging: cubic, clipped
    assert batch.images.dtype == torch.float32
    assert batch.images.min() >= 0.0 and batch.images.max() <= 1.0
    assert batch.model_hw == (364, 518)
    # Same image as uint8 gives nearly the same tensor.
    as_u8 = preprocess_frames([np.round(frame * 255).astype(np.uint8)], mode="resize")
    assert (batch.images - as_u8.images).abs().mean() < 2 / 255


def test_huge_frame_and_stacked_array():
    frames = np.zeros((2, 3000, 4000, 3), dtype=np.uint8)
    batch = preprocess_frames(frames, mode="crop")
    assert batch.images.shape == (2, 3, 392, 518)


def test_non_contiguous_bgr_view_is_accepted():
    bgr = np.zeros((60, 80, 3), dtype=np.uint8)
    bgr[..., 0] = 255  # blue in BGR
    batch = preprocess_frames([bgr[..., ::-1]], mode="resize")
    assert torch.all(batch.images[0, 2] == 1.0) and torch.all(batch.images[0, 0] == 0.0)


# --------------------------------------------------------------------------- bad input

GOOD = np.zeros((20, 30, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    ("frames", "kwargs", "pattern"),
    [
        ([], {}, r"empty"),
        ([GOOD, [[1, 2, 3]]], {}, r"frame 1: expected a numpy array.*list"),
        ([GOOD.astype(np.int16)], {}, r"frame 0: dtype int16"),
        ([GOOD.astype(np.float16)], {}, r"frame 0: dtype float16"),
        ([GOOD, GOOD[..., 0]], {}, r"frame 1: grayscale.*convert"),
        ([GOOD[..., :1]], {}, r"frame 0: grayscale.*convert"),
        ([GOOD[None]], {}, r"frame 0: expected 3 dims.*4 dims"),
        ([GOOD[0, 0]], {}, r"frame 0: expected 3 dims.*1 dims"),
        ([np.zeros((20, 30, 4), np.uint8)], {}, r"frame 0: expected 3 channels.*got 4.*alpha"),
        ([np.zeros((20, 30, 2), np.uint8)], {}, r"frame 0: expected 3 channels.*got 2"),
        ([GOOD / 1.0, np.full((20, 30, 3), np.nan)], {}, r"frame 1: contains NaN or inf"),
        ([np.full((20, 30, 3), np.inf, np.float32)], {}, r"frame 0: contains NaN or inf"),
        ([np.full((20, 30, 3), 255.0)], {}, r"frame 0: float values must be in \[0, 1\].*255"),
        ([np.full((20, 30, 3), -0.1)], {}, r"frame 0: float values must be in \[0, 1\]"),
        ([GOOD, GOOD[:4]], {"min_side": 8}, r"frame 1: image is 4x30.*at least 8"),
        ([np.zeros((0, 30, 3), np.uint8)], {}, r"frame 0: image is 0x30"),
        (GOOD, {}, r"single \[H, W, 3\] array"),
        ("frame.png", {}, r"expected a sequence of numpy images"),
        ([GOOD], {"mode": "stretch"}, r"unknown preprocess mode 'stretch'"),
        ([GOOD], {"target_size": 500}, r"not a multiple of patch_size"),
    ],
)
def test_bad_input_messages(frames, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        preprocess_frames(frames, **kwargs)


def test_plan_transform_rejects_bad_size():
    with pytest.raises(ValueError, match="positive"):
        plan_transform((0, 10))


def _mixed_batches() -> list[list[np.ndarray]]:
    rng = np.random.default_rng(3)
    return [
        [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((120, 160), (200, 120))],
        [rng.random((120, 160, 3)), rng.integers(0, 256, (90, 90, 3), dtype=np.uint8)],
    ]


@pytest.mark.parametrize("mode", PREPROCESS_MODES)
def test_uint8_batches_convert_exactly_like_numpy(mode):
    """The uint8 canvas path gives the float32 ``x / 255`` of the pixels, padding 1.0."""
    frame = np.random.default_rng(4).integers(0, 256, (140, 182, 3), dtype=np.uint8)
    if mode == "resize":  # model size = frame size: no resampling, so the values are known
        batch = preprocess_frames([frame, frame], mode, 182, 14)
        expected = torch.from_numpy(frame.astype(np.float32) / 255.0).permute(2, 0, 1)
        assert torch.equal(batch.images[1], expected)
    for frames in _mixed_batches():
        images = preprocess_frames(frames, mode, 182, 14).images
        assert images.dtype == torch.float32 and images.min() >= 0.0 and images.max() <= 1.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("mode", PREPROCESS_MODES)
def test_preprocessing_on_the_gpu_equals_the_cpu(mode):
    for frames in _mixed_batches():
        on_cpu = preprocess_frames(frames, mode, 182, 14).images
        on_gpu = preprocess_frames(frames, mode, 182, 14, device="cuda").images
        assert on_gpu.device.type == "cuda"
        assert torch.equal(on_gpu.cpu(), on_cpu)
