"""Intrinsics and pixel coordinates under resize, crop and pad.

Pixel convention (OpenCV): the centre of the top-left pixel is (0, 0), so an image W pixels wide
spans x in [-0.5, W - 0.5]. Resizing by a factor s maps the *edges* -0.5 -> -0.5 and
W - 0.5 -> s W - 0.5, hence x' = s (x + 0.5) - 0.5 (this is what cv2.resize and PIL do).
Cropping ``left`` columns shifts x' = x - left; padding is a crop by a negative amount.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vggt_ros.geometry.rotation import as_float_tensor, numpy_io


def _affine(sx: float, sy: float, tx: float, ty: float) -> np.ndarray:
    """3x3 pixel map (x, y, 1) -> (sx (x + 0.5) - 0.5 + tx, sy (y + 0.5) - 0.5 + ty, 1)."""
    return np.array(
        [[sx, 0.0, 0.5 * sx - 0.5 + tx], [0.0, sy, 0.5 * sy - 0.5 + ty], [0.0, 0.0, 1.0]],
        dtype=np.float64,
    )


def _apply_to_intrinsics(pixel_map: np.ndarray, intrinsics: torch.Tensor) -> torch.Tensor:
    K = as_float_tensor(intrinsics)
    if K.shape[-2:] != (3, 3):
        raise ValueError(f"intrinsics must have shape [..., 3, 3], got {tuple(K.shape)}")
    # A pixel map composes with K on the left: pixels' = A K X_cam (skew scales with the x row).
    return torch.as_tensor(pixel_map, dtype=K.dtype, device=K.device) @ K


def _apply_to_points(pixel_map: np.ndarray, pts: torch.Tensor) -> torch.Tensor:
    pts = as_float_tensor(pts)
    if pts.shape[-1] != 2:
        raise ValueError(f"points must have shape [..., 2] (x, y), got {tuple(pts.shape)}")
    A_t = torch.as_tensor(pixel_map, dtype=pts.dtype, device=pts.device)
    return pts @ A_t[:2, :2].T + A_t[:2, 2]


@numpy_io
def scale_intrinsics(intrinsics: torch.Tensor, sx: float, sy: float) -> torch.Tensor:
    """Intrinsics after resizing the image by (sx, sy) = (new_W / W, new_H / H).

    Args:
        intrinsics: [..., 3, 3] pixel intrinsics of the original image.

    Returns:
        [..., 3, 3]: fx' = sx fx, cx' = sx (cx + 0.5) - 0.5 (likewise for y).
    """
    return _apply_to_intrinsics(_affine(sx, sy, 0.0, 0.0), intrinsics)


@numpy_io
def crop_intrinsics(intrinsics: torch.Tensor, left: float, top: float) -> torch.Tensor:
    """Intrinsics after cropping ``left`` columns and ``top`` rows (negative values pad).

    Args:
        intrinsics: [..., 3, 3] pixel intrinsics of the original image.

    Returns:
        [..., 3, 3]: cx' = cx - left, cy' = cy - top.
    """
    return _apply_to_intrinsics(_affine(1.0, 1.0, -left, -top), intrinsics)


@dataclass(frozen=True)
class ImageTransform:
    """Map from an original image's pixels to the model input's pixels.

    x_model = sx (x_orig + 0.5) - 0.5 + tx and y_model = sy (y_orig + 0.5) - 0.5 + ty: a resize
    by (sx, sy) followed by a shift (tx, ty) in model pixels (positive = padding on the
    left/top, negative = cropped away).

    Attributes:
        original_hw: (H, W) of the original image.
        model_hw: (H, W) of the model input.
        scale: (sx, sy), exactly resized_W / W and resized_H / H.
        offset: (tx, ty) in model pixels.
        content_box: (x0, y0, x1, y1) model pixel indices, half-open: model pixels
            [y0:y1, x0:x1] hold image data, all others are padding.
    """

    original_hw: tuple[int, int]
    model_hw: tuple[int, int]
    scale: tuple[float, float]
    offset: tuple[float, float]
    content_box: tuple[int, int, int, int]

    def matrix(self) -> np.ndarray:
        """3x3 float64 homogeneous map original pixels -> model pixels."""
        return _affine(self.scale[0], self.scale[1], self.offset[0], self.offset[1])

    def inverse_matrix(self) -> np.ndarray:
        """3x3 float64 homogeneous map model pixels -> original pixels."""
        (sx, sy), (tx, ty) = self.scale, self.offset
        # Invert x' = sx (x + 0.5) - 0.5 + tx: x = (x' + 0.5 - tx) / sx - 0.5.
        return _affine(1.0 / sx, 1.0 / sy, -tx / sx, -ty / sy)

    @numpy_io
    def original_to_model_points(self, pts: torch.Tensor) -> torch.Tensor:
        """[..., 2] (x, y) original pixels -> [..., 2] model pixels."""
        return _apply_to_points(self.matrix(), pts)

    @numpy_io
    def model_to_original_points(self, pts: torch.Tensor) -> torch.Tensor:
        """[..., 2] (x, y) model pixels -> [..., 2] original pixels (padding maps outside)."""
        return _apply_to_points(self.inverse_matrix(), pts)

    @numpy_io
    def intrinsics_to_model(self, intrinsics: torch.Tensor) -> torch.Tensor:
        """[..., 3, 3] intrinsics of the original image -> those of the model input."""
        return _apply_to_intrinsics(self.matrix(), intrinsics)

    @numpy_io
    def intrinsics_to_original(self, intrinsics: torch.Tensor) -> torch.Tensor:
        """[..., 3, 3] intrinsics of the model input (e.g. decoded by VGGT) -> original image."""
        return _apply_to_intrinsics(self.inverse_matrix(), intrinsics)

    def content_mask(self) -> np.ndarray:
        """[H, W] bool over the model input: True where pixels hold image data."""
        mask = np.zeros(self.model_hw, dtype=bool)
        x0, y0, x1, y1 = self.content_box
        mask[y0:y1, x0:x1] = True
        return mask
