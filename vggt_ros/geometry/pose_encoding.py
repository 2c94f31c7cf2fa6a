"""VGGT's 9-d camera encoding <-> extrinsics and pinhole intrinsics.

Layout of the last axis (the official "absT_quaR_FoV" encoding):

    [0:3] translation t of the camera-from-world transform (OpenCV camera axes)
    [3:7] rotation R of the same transform as a quaternion (x, y, z, w)
    [7]   vertical field of view fov_h  = 2 * atan((H / 2) / fy), radians
    [8]   horizontal field of view fov_w = 2 * atan((W / 2) / fx), radians

Decoding places the principal point at (W / 2, H / 2) and uses no skew, exactly like the
official code. Note that under the OpenCV pixel-centre convention used elsewhere in this package
(pixel (0, 0) is centred at (0, 0)) the true image centre is ((W - 1) / 2, (H - 1) / 2), half a
pixel up-left of that principal point; we keep the official value because the network was
trained with it.
"""

from __future__ import annotations

import torch

from vggt_ros.geometry.rotation import (
    as_float_tensor,
    numpy_io,
    quaternion_to_rotation_matrix,
    rotation_matrix_to_quaternion,
)

POSE_ENCODING_DIM = 9


def _check_hw(image_hw: tuple[int, int]) -> tuple[int, int]:
    if len(image_hw) != 2 or min(image_hw) <= 0:
        raise ValueError(f"image_hw must be (height, width) with positive sides, got {image_hw!r}")
    return int(image_hw[0]), int(image_hw[1])


@numpy_io
def pose_encoding_to_extrinsics_intrinsics(
    pose_enc: torch.Tensor, image_hw: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode VGGT pose encodings.

    Args:
        pose_enc: [..., 9] encodings (layout in the module docstring).
        image_hw: (H, W) in pixels of the images the encoding refers to (the model input size).

    Returns:
        extrinsics: [..., 3, 4] camera-from-world [R | t], OpenCV camera axes.
        intrinsics: [..., 3, 3] pixel intrinsics, principal point (W/2, H/2), zero skew.
    """
    H, W = _check_hw(image_hw)
    pose_enc = as_float_tensor(pose_enc)
    if pose_enc.shape[-1] != POSE_ENCODING_DIM:
        raise ValueError(f"pose encoding must have shape [..., 9], got {tuple(pose_enc.shape)}")
    t, quat, fov_h, fov_w = pose_enc[..., :3], pose_enc[..., 3:7], pose_enc[..., 7], pose_enc[..., 8]
    extrinsics = torch.cat((quaternion_to_rotation_matrix(quat), t[..., None]), dim=-1)

    intrinsics = torch.zeros(pose_enc.shape[:-1] + (3, 3), dtype=pose_enc.dtype, device=pose_enc.device)
    intrinsics[..., 0, 0] = (W / 2.0) / torch.tan(fov_w / 2.0)
    intrinsics[..., 1, 1] = (H / 2.0) / torch.tan(fov_h / 2.0)
    intrinsics[..., 0, 2] = W / 2.0
    intrinsics[..., 1, 2] = H / 2.0
    intrinsics[..., 2, 2] = 1.0
    return extrinsics, intrinsics


@numpy_io
def extrinsics_intrinsics_to_pose_encoding(
    extrinsics: torch.Tensor, intrinsics: torch.Tensor, image_hw: tuple[int, int]
) -> torch.Tensor:
    """Encode cameras the way VGGT predicts them.

    Args:
        extrinsics: [..., 3, 4] (or [..., 4, 4]) camera-from-world, OpenCV camera axes.
        intrinsics: [..., 3, 3] pixel intrinsics; only fx and fy are used (the encoding assumes
            the principal point at the image centre).
        image_hw: (H, W) in pixels of the images the intrinsics refer to.

    Returns:
        [..., 9] encodings (layout in the module docstring), dtype of ``extrinsics``.
    """
    H, W = _check_hw(image_hw)
    extrinsics = as_float_tensor(extrinsics)
    intrinsics = as_float_tensor(intrinsics).to(extrinsics.dtype)
    if extrinsics.shape[-2:] not in ((3, 4), (4, 4)) or intrinsics.shape[-2:] != (3, 3):
        raise ValueError(
            "expected extrinsics [..., 3, 4] and intrinsics [..., 3, 3], got "
            f"{tuple(extrinsics.shape)} and {tuple(intrinsics.shape)}"
        )
    quat = rotation_matrix_to_quaternion(extrinsics[..., :3, :3])
    t = extrinsics[..., :3, 3]
    fov_h = 2.0 * torch.atan((H / 2.0) / intrinsics[..., 1, 1])
    fov_w = 2.0 * torch.atan((W / 2.0) / intrinsics[..., 0, 0])
    # Extrinsics and intrinsics may broadcast against each other (e.g. one K for all frames).
    batch = torch.broadcast_shapes(extrinsics.shape[:-2], intrinsics.shape[:-2])
    parts = (t, quat, fov_h[..., None], fov_w[..., None])
    return torch.cat([p.expand(batch + p.shape[-1:]) for p in parts], dim=-1)
