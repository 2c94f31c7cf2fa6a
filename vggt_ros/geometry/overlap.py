"""How much of one camera's surface another camera sees (ground truth or predicted depth)."""

from __future__ import annotations

import numpy as np

from vggt_ros.geometry.camera import depth_to_world_points, invert_rigid, project_points


def view_overlap(
    depth_a: np.ndarray,
    intrinsics_a: np.ndarray,
    cam_to_world_a: np.ndarray,
    depth_b: np.ndarray,
    intrinsics_b: np.ndarray,
    cam_to_world_b: np.ndarray,
    step: int = 4,
    tolerance: float = 0.1,
) -> float:
    """Share of camera a's surface that camera b sees too (ground-truth or predicted depth).

    Every ``step``-th pixel of a with a valid depth is lifted to the world and projected into b;
    it counts as seen when it lands inside b's image, in front of it, and not hidden: b's own
    depth there agrees with its distance within ``tolerance`` (relative).

    Args:
        depth_a, depth_b: [H, W] depth along the optical axis, in the unit of the poses'
            translations (NaN or <= 0 where unknown).
        intrinsics_a, intrinsics_b: [3, 3] of those depth images (pixel centres at integers).
        cam_to_world_a, cam_to_world_b: [4, 4] camera optical frame -> world.

    Returns:
        The share in [0, 1] (0 when a has no valid depth).
    """
    depth_a = np.asarray(depth_a, np.float64)
    world = depth_to_world_points(depth_a, invert_rigid(cam_to_world_a), intrinsics_a)[::step, ::step]
    z = depth_a[::step, ::step]
    valid = np.isfinite(z) & (z > 0)
    if not valid.any():
        return 0.0
    pixels, zb = project_points(world[valid], invert_rigid(cam_to_world_b), intrinsics_b)
    front = zb > 1e-6
    hb, wb = depth_b.shape
    col, row = (np.rint(np.where(front[:, None], pixels, -1.0)).astype(int)).T
    inside = front & (col >= 0) & (col < wb) & (row >= 0) & (row < hb)
    seen = np.zeros_like(inside)
    surface = np.asarray(depth_b, np.float64)[row[inside], col[inside]]
    seen[inside] = np.isfinite(surface) & (np.abs(surface - zb[inside]) <= tolerance * zb[inside])
    return float(seen.mean())


def mutual_view_overlap(
    depth_a: np.ndarray,
    intrinsics_a: np.ndarray,
    cam_to_world_a: np.ndarray,
    depth_b: np.ndarray,
    intrinsics_b: np.ndarray,
    cam_to_world_b: np.ndarray,
    tolerance: float = 0.1,
) -> float:
    """The smaller of :func:`view_overlap` a -> b and b -> a: the share of surface *each* camera
    shares with the other (a camera that backed away from a wall sees all of the nearer
    camera's view, the nearer one only part of its)."""
    a_in_b = view_overlap(
        depth_a, intrinsics_a, cam_to_world_a, depth_b, intrinsics_b, cam_to_world_b, tolerance=tolerance
    )
    b_in_a = view_overlap(
        depth_b, intrinsics_b, cam_to_world_b, depth_a, intrinsics_a, cam_to_world_a, tolerance=tolerance
    )
    return min(a_in_b, b_in_a)
