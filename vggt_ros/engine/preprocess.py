"""Camera frames -> VGGT input tensors, with the exact pixel map of every frame.

Modes (sizes for the default target 518 and patch 14):

- ``"resize"``: the longest side becomes ``target_size``, the other side keeps the aspect ratio
  rounded to a multiple of ``patch_size``. Nothing is cropped or padded; sx and sy differ
  slightly because of the rounding, and the ImageTransform records both exactly.
- ``"crop"``: the official VGGT default. Width becomes ``target_size``, height keeps the aspect
  ratio rounded to a multiple of ``patch_size``; a height above ``target_size`` is centre-cropped
  to ``target_size`` (portrait images lose their top and bottom).
- ``"pad"``: the official pad mode. Like "resize", then padded with white (1.0), centred, to
  ``target_size`` x ``target_size``.

The rounding is the official one, ``round(side * scale / patch) * patch`` with Python's round,
floored at one patch so extreme aspect ratios still give a valid size.

All frames of one call share the model size planned from the first frame; a frame of another
size is fitted into that size keeping its aspect ratio and padded with white (its own
ImageTransform says where it landed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from vggt_ros.geometry.intrinsics import ImageTransform

PREPROCESS_MODES = ("resize", "crop", "pad")
PAD_VALUE = 1.0  # white, as the official loader pads


@dataclass(frozen=True)
class PreprocessedBatch:
    """Model input for one window of frames.

    Attributes:
        images: [S, 3, H, W] float32 RGB in [0, 1], H and W multiples of the patch size.
        transforms: per frame, the original -> model pixel map.
        model_hw: (H, W).
    """

    images: torch.Tensor
    transforms: list[ImageTransform]
    model_hw: tuple[int, int]


def _round_to_patch(length: float, patch_size: int) -> int:
    # Same arithmetic as the official loader (Python round, ties to even), but never below one
    # patch: a 5000x10 frame would otherwise get height 0.
    return max(patch_size, round(length / patch_size) * patch_size)


def _check_sizes(mode: str, target_size: int, patch_size: int) -> None:
    if mode not in PREPROCESS_MODES:
        raise ValueError(f"unknown preprocess mode {mode!r}; expected one of {PREPROCESS_MODES}")
    if patch_size <= 0 or target_size <= 0:
        raise ValueError(f"target_size and patch_size must be positive, got {target_size} and {patch_size}")
    if target_size % patch_size:
        raise ValueError(f"target_size {target_size} is not a multiple of patch_size {patch_size}")


def _plan_fit(original_hw: tuple[int, int], model_hw: tuple[int, int]) -> ImageTransform:
    """Largest aspect-preserving resize that fits model_hw, centred, padded."""
    (h, w), (mh, mw) = original_hw, model_hw
    s = min(mh / h, mw / w)
    new_h = min(mh, max(1, round(h * s)))
    new_w = min(mw, max(1, round(w * s)))
    left, top = (mw - new_w) // 2, (mh - new_h) // 2
    return ImageTransform(
        original_hw=(h, w),
        model_hw=(mh, mw),
        scale=(new_w / w, new_h / h),
        offset=(float(left), float(top)),
        content_box=(left, top, left + new_w, top + new_h),
    )


def plan_transform(
    original_hw: tuple[int, int],
    mode: str = "resize",
    target_size: int = 518,
    patch_size: int = 14,
    model_hw: tuple[int, int] | None = None,
) -> ImageTransform:
    """Plan how an image of ``original_hw`` becomes model input (see the module docstring).

    Args:
        original_hw: (H, W) of the original image, positive.
        mode: one of PREPROCESS_MODES; ignored when ``model_hw`` is given.
        target_size: model side length in pixels, a multiple of ``patch_size``.
        patch_size: the ViT patch size; model sides are multiples of it.
        model_hw: when given, fit the image into exactly this size instead (aspect kept,
            centred, padded); used for frames whose size differs from the batch's first frame.

    Returns:
        The ImageTransform (original -> model pixels, content box, sizes).
    """
    h, w = (int(v) for v in original_hw)
    if h <= 0 or w <= 0:
        raise ValueError(f"original_hw must be positive (height, width), got {original_hw!r}")
    _check_sizes(mode, target_size, patch_size)
    if model_hw is not None:
        return _plan_fit((h, w), (int(model_hw[0]), int(model_hw[1])))

    if mode == "crop" or w >= h:  # crop mode always fixes the width, whatever the aspect
        new_w = target_size
        new_h = _round_to_patch(h * (new_w / w), patch_size)
    else:
        new_h = target_size
        new_w = _round_to_patch(w * (new_h / h), patch_size)
    scale = (new_w / w, new_h / h)

    if mode == "crop":
        # Official: keep the middle target_size rows, (new_h - target) // 2 removed from the top.
        crop_top = max(0, (new_h - target_size) // 2)
        out_h = min(new_h, target_size)
        return ImageTransform((h, w), (out_h, new_w), scale, (0.0, float(-crop_top)), (0, 0, new_w, out_h))
    if mode == "pad":
        left, top = (target_size - new_w) // 2, (target_size - new_h) // 2
        return ImageTransform(
            (h, w),
            (target_size, target_size),
            scale,
            (float(left), float(top)),
            (left, top, left + new_w, top + new_h),
        )
    return ImageTransform((h, w), (new_h, new_w), scale, (0.0, 0.0), (0, 0, new_w, new_h))


def _validate_frame(index: int, frame: object, min_side: int) -> np.ndarray:
    where = f"frame {index}"
    if not isinstance(frame, np.ndarray):
        raise ValueError(f"{where}: expected a numpy array (H x W x 3 RGB), got {type(frame).__name__}")
    if frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] == 1):
        raise ValueError(
            f"{where}: grayscale image of shape {frame.shape}; convert it to 3-channel RGB first "
            "(e.g. cv2.cvtColor(img, cv2.COLOR_GRAY2RGB))"
        )
    if frame.ndim != 3:
        raise ValueError(f"{where}: expected 3 dims (H, W, 3), got {frame.ndim} dims, shape {frame.shape}")
    if frame.shape[2] != 3:
        hint = " (drop or blend the alpha channel first)" if frame.shape[2] == 4 else ""
        raise ValueError(f"{where}: expected 3 channels (RGB), got {frame.shape[2]}{hint}")
    h, w = frame.shape[:2]
    if min(h, w) < max(1, min_side):
        raise ValueError(f"{where}: image is {h}x{w} (HxW); both sides must be at least {max(1, min_side)}")
    if frame.dtype != np.uint8 and frame.dtype not in (np.float32, np.float64):
        raise ValueError(
            f"{where}: dtype {frame.dtype} not supported; use uint8 or float32/float64 in [0, 1]"
        )
    if frame.dtype != np.uint8:
        if not np.isfinite(frame).all():
            raise ValueError(f"{where}: contains NaN or inf values")
        lo, hi = float(frame.min()), float(frame.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"{where}: float values must be in [0, 1], found range [{lo:g}, {hi:g}]")
    return frame


def _render(frame: np.ndarray, transform: ImageTransform, out: np.ndarray) -> None:
    """Apply ``transform`` to one validated frame, writing its content into ``out``.

    ``out`` is the frame's [H, W, 3] slot of the batch canvas, already filled with padding:
    uint8 (0-255) when every frame of the batch is uint8, else float32 in [0, 1].
    """
    sx, sy = transform.scale
    h, w = frame.shape[:2]
    new_w, new_h = round(w * sx), round(h * sy)
    # Area averaging avoids aliasing when shrinking; cubic (as the official PIL BICUBIC) when
    # enlarging. uint8 frames are resized as uint8 (as the official loader does) to keep memory
    # low for large frames; floats as float32.
    interp = cv2.INTER_AREA if max(sx, sy) < 1.0 else cv2.INTER_CUBIC
    src = frame if frame.dtype == np.uint8 else frame.astype(np.float32, copy=False)
    src = np.ascontiguousarray(src)  # cv2 rejects negative strides (e.g. BGR->RGB views)
    if (new_h, new_w) != (h, w):
        src = cv2.resize(src, (new_w, new_h), interpolation=interp)
    if out.dtype != np.uint8:
        src = src.astype(np.float32) / 255.0 if src.dtype == np.uint8 else np.clip(src, 0.0, 1.0)
    # The resized image sits at (tx, ty) in model pixels; negative offsets crop it.
    tx, ty = int(transform.offset[0]), int(transform.offset[1])
    x0, y0, x1, y1 = transform.content_box
    out[y0:y1, x0:x1] = src[y0 - ty : y1 - ty, x0 - tx : x1 - tx]


def preprocess_frames(
    frames: Sequence[np.ndarray],
    mode: str = "resize",
    target_size: int = 518,
    patch_size: int = 14,
    min_side: int = 1,
    device: torch.device | str | None = None,
) -> PreprocessedBatch:
    """Turn RGB frames into one VGGT input batch.

    Args:
        frames: S images, each [H, W, 3] RGB, uint8 or float32/float64 in [0, 1]. A [S, H, W, 3]
            array is accepted as S frames.
        mode: one of PREPROCESS_MODES (module docstring).
        target_size: model side length, a multiple of ``patch_size``.
        patch_size: ViT patch size.
        min_side: reject frames whose smaller side is below this many pixels.
        device: where the returned images live (default: the CPU). uint8 batches are copied
            there as uint8 and converted on that device: a quarter of the bytes to move, and
            no float pass on the host.

    Returns:
        PreprocessedBatch with images [S, 3, H, W] float32 in [0, 1] (on ``device``), per-frame
        transforms and model_hw.

    Raises:
        ValueError: bad arguments or a bad frame (the message names the frame index).
    """
    _check_sizes(mode, target_size, patch_size)
    if isinstance(frames, np.ndarray):
        if frames.ndim == 3:
            raise ValueError("frames: got a single [H, W, 3] array; pass a list of frames, e.g. [image]")
        if frames.ndim != 4:
            raise ValueError(f"frames: a frame array must be [S, H, W, 3], got shape {frames.shape}")
    elif not isinstance(frames, Sequence) or isinstance(frames, (str, bytes)):
        raise ValueError(f"frames: expected a sequence of numpy images, got {type(frames).__name__}")
    if len(frames) == 0:
        raise ValueError("frames: empty; at least one frame is required")

    checked = [_validate_frame(i, f, min_side) for i, f in enumerate(frames)]
    first = plan_transform(checked[0].shape[:2], mode, target_size, patch_size)
    transforms = [
        first
        if f.shape[:2] == first.original_hw
        else plan_transform(f.shape[:2], mode, target_size, patch_size, model_hw=first.model_hw)
        for f in checked
    ]
    # One canvas for the batch; all-uint8 batches (camera frames) stay uint8 until the single
    # conversion below, a quarter of the bytes through every copy.
    all_uint8 = all(f.dtype == np.uint8 for f in checked)
    canvas = np.full(
        (len(checked), *first.model_hw, 3),
        round(PAD_VALUE * 255) if all_uint8 else PAD_VALUE,
        dtype=np.uint8 if all_uint8 else np.float32,
    )
    for f, t, out in zip(checked, transforms, canvas, strict=True):
        _render(f, t, out)
    # [S, H, W, 3] -> [S, 3, H, W] float32 in one strided copy, then uint8 / 255 rounded as
    # numpy's float32 division. The divisor is a tensor on the images' device: PyTorch's CUDA
    # kernels turn a division by a Python number into a multiplication by its reciprocal, which
    # rounds 126 of the 256 values differently.
    target = torch.device(device) if device is not None else torch.device("cpu")
    source = torch.from_numpy(canvas)
    if all_uint8:
        source = source.to(target)
    tensor = torch.empty((len(checked), 3, *first.model_hw), dtype=torch.float32, device=source.device)
    tensor.copy_(source.permute(0, 3, 1, 2))
    if all_uint8:
        tensor.div_(torch.tensor(255.0, device=tensor.device))
    tensor = tensor.to(target)
    return PreprocessedBatch(images=tensor, transforms=transforms, model_hw=first.model_hw)
