"""Rigid transforms, unprojection of depth maps and projection of points.

Conventions: OpenCV camera axes (x right, y down, z forward, = ROS optical frames); extrinsics
are camera-from-world [R | t] ([..., 3, 4]); intrinsics are pixel matrices [..., 3, 3]. Pixel
(u, v) = (column, row) has its centre at integer coordinates, so the depth value at
``depth[v, u]`` is unprojected through pixel position (u, v).

All functions take torch tensors with arbitrary leading batch dims that broadcast against each
other, or numpy arrays (then they return numpy).
"""

from __future__ import annotations

import torch

from vggt_ros.geometry.rotation import as_float_tensor, numpy_io


def _check_rigid(transform: torch.Tensor, name: str = "transform") -> None:
    if transform.shape[-2:] not in ((3, 4), (4, 4)):
        raise ValueError(f"{name} must have shape [..., 3, 4] or [..., 4, 4], got {tuple(transform.shape)}")


@numpy_io
def to_homogeneous(transform: torch.Tensor) -> torch.Tensor:
    """[..., 3, 4] rigid transforms -> [..., 4, 4] with bottom row (0, 0, 0, 1).

    A [..., 4, 4] input is returned unchanged.
    """
    T = as_float_tensor(transform)
    _check_rigid(T)
    if T.shape[-2] == 4:
        return T
    bottom = torch.zeros(T.shape[:-2] + (1, 4), dtype=T.dtype, device=T.device)
    bottom[..., 0, 3] = 1.0
    return torch.cat((T, bottom), dim=-2)


@numpy_io
def invert_rigid(transform: torch.Tensor) -> torch.Tensor:
    """Inverse of rigid transforms [R | t] -> [R^T | -R^T t], same shape as the input.

    Args:
        transform: [..., 3, 4] or [..., 4, 4] [R | t]; R must be a rotation (R^-1 = R^T is
            used, not a general inverse).
    """
    T = as_float_tensor(transform)
    _check_rigid(T)
    Rt = T[..., :3, :3].transpose(-1, -2)
    t_inv = -(Rt @ T[..., :3, 3:])
    top = torch.cat((Rt, t_inv), dim=-1)
    return to_homogeneous(top) if T.shape[-2] == 4 else top


@numpy_io
def camera_to_world(extrinsics: torch.Tensor) -> torch.Tensor:
    """World-from-camera poses [..., 4, 4] (the camera's pose in the world, as TF publishes it).

    Args:
        extrinsics: [..., 3, 4] or [..., 4, 4] camera-from-world.
    """
    return invert_rigid(to_homogeneous(extrinsics))


@numpy_io
def camera_centers(extrinsics: torch.Tensor) -> torch.Tensor:
    """Camera centres in world coordinates, C = -R^T t.

    Args:
        extrinsics: [..., 3, 4] or [..., 4, 4] camera-from-world.

    Returns:
        [..., 3]
    """
    extrinsics = as_float_tensor(extrinsics)
    _check_rigid(extrinsics, "extrinsics")
    R, t = extrinsics[..., :3, :3], extrinsics[..., :3, 3:]
    return -(R.transpose(-1, -2) @ t)[..., 0]


def _squeeze_depth(depth: torch.Tensor) -> torch.Tensor:
    # A trailing singleton axis is the channel of VGGT's [..., H, W, 1] depth output.
    if depth.ndim >= 3 and depth.shape[-1] == 1:
        depth = depth[..., 0]
    if depth.ndim < 2:
        raise ValueError(f"depth must have shape [..., H, W] or [..., H, W, 1], got {tuple(depth.shape)}")
    return depth


@numpy_io
def depth_to_camera_points(depth: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """Unproject depth maps to points in the camera frame.

    Args:
        depth: [..., H, W] or [..., H, W, 1] z-depth (distance along the optical axis, not along
            the ray). A trailing axis of size 1 is always read as that channel.
        intrinsics: [..., 3, 3] pixel intrinsics (skew allowed), broadcast against depth's
            leading dims.

    Returns:
        [..., H, W, 3] points (x, y, z) in the camera frame; z equals depth.
    """
    depth = _squeeze_depth(as_float_tensor(depth))
    K = as_float_tensor(intrinsics).to(depth.dtype)
    H, W = depth.shape[-2:]
    u = torch.arange(W, dtype=depth.dtype, device=depth.device)
    v = torch.arange(H, dtype=depth.dtype, device=depth.device)[:, None]
    # Per-pixel entries of K as [..., 1, 1] so they broadcast over the [H, W] grid.
    fx, s, cx = K[..., 0, 0, None, None], K[..., 0, 1, None, None], K[..., 0, 2, None, None]
    fy, cy = K[..., 1, 1, None, None], K[..., 1, 2, None, None]
    # Normalised image coordinates: the inverse of u = fx x + s y + cx, v = fy y + cy.
    y_n = (v - cy) / fy
    x_n = (u - cx - s * y_n) / fx
    x_n, y_n, depth = torch.broadcast_tensors(x_n, y_n, depth)
    return torch.stack((x_n * depth, y_n * depth, depth), dim=-1)


@numpy_io
def depth_to_world_points(
    depth: torch.Tensor, extrinsics: torch.Tensor, intrinsics: torch.Tensor
) -> torch.Tensor:
    """Unproject depth maps to world points (VGGT's "depth + camera" point map).

    Args:
        depth: [..., H, W] or [..., H, W, 1] z-depth.
        extrinsics: [..., 3, 4] or [..., 4, 4] camera-from-world.
        intrinsics: [..., 3, 3] pixel intrinsics.

    Returns:
        [..., H, W, 3] points in world coordinates.
    """
    cam = depth_to_camera_points(depth, intrinsics)
    extrinsics = as_float_tensor(extrinsics).to(cam.dtype)
    _check_rigid(extrinsics, "extrinsics")
    R, t = extrinsics[..., None, :3, :3], extrinsics[..., None, None, :3, 3]
    # p_world = R^T (p_cam - t); with row vectors that is (p_cam - t) @ R. R gets one extra axis
    # so matmul treats each image row [W, 3] as one matrix.
    return (cam - t) @ R


@numpy_io
def project_points(
    points_world: torch.Tensor, extrinsics: torch.Tensor, intrinsics: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Project world points into cameras.

    Args:
        points_world: [..., N, 3] world points.
        extrinsics: [..., 3, 4] or [..., 4, 4] camera-from-world.
        intrinsics: [..., 3, 3] pixel intrinsics.

    Returns:
        pixels: [..., N, 2] (u, v) pixel coordinates (OpenCV: pixel centres at integers). Not
            meaningful for points with depth <= 0 (inf/nan at depth 0): mask with ``depth > 0``.
        depth: [..., N] z in the camera frame.
    """
    points_world = as_float_tensor(points_world)
    extrinsics = as_float_tensor(extrinsics).to(points_world.dtype)
    K = as_float_tensor(intrinsics).to(points_world.dtype)
    _check_rigid(extrinsics, "extrinsics")
    R, t = extrinsics[..., :3, :3], extrinsics[..., None, :3, 3]
    cam = points_world @ R.transpose(-1, -2) + t
    uvw = cam @ K.transpose(-1, -2)
    depth = cam[..., 2]
    return uvw[..., :2] / uvw[..., 2:3], depth
