"""A window's map points: the confident pixels of its depth maps, unprojected into the map frame.

Only the pixels the map keeps are unprojected (every ``pixel_stride``-th pixel, above the
confidence threshold), each frame's camera-to-world pose and the window's world-to-map Sim(3)
folded into one 3x4 transform per frame: the map stage's share of the node's latency is spent
here and in the voxel insertion (docs/benchmarks.md, "The map stage's window points and voxel insertion").
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vggt_ros.geometry.alignment import Sim3
from vggt_ros.mapping.chaining import unproject_pixels
from vggt_ros.mapping.types import PointsMap


def window_map_points(
    prediction: Any, to_map: Sim3, pixel_stride: int, conf_percentile: float, min_confidence: float
) -> PointsMap:
    """Points of every ``pixel_stride``-th model pixel whose confidence passes
    max(percentile ``conf_percentile`` of the window's valid confidences, ``min_confidence``).

    Args:
        prediction: needs ``depth`` [S, H, W] (model resolution), ``depth_conf`` [S, H, W],
            ``colors`` [S, H, W, 3] uint8, ``valid_mask`` [S, H, W] bool, ``extrinsics``
            [S, 3, 4] camera-from-world and ``model_intrinsics`` [S, 3, 3]; without extrinsics,
            ``points_from_depth()`` [S, H, W, 3] world points.
        to_map: window world -> map frame.

    Returns:
        PointsMap in the map frame (float32 xyz, uint8 rgb, float32 conf), in frame-major,
        row-major pixel order.
    """
    st = pixel_stride
    conf = np.asarray(prediction.depth_conf)[:, ::st, ::st]
    rgb = np.asarray(prediction.colors)[:, ::st, ::st]
    extrinsics = getattr(prediction, "extrinsics", None)
    if extrinsics is None:  # a prediction that only has its own point map
        xyz = np.asarray(prediction.points_from_depth())[:, ::st, ::st]
        finite = np.isfinite(xyz).all(axis=-1)
    else:
        depth = np.asarray(prediction.depth)[:, ::st, ::st]
        finite = np.isfinite(depth)
    keep = np.asarray(prediction.valid_mask)[:, ::st, ::st] & finite & np.isfinite(conf)
    keep &= conf > 1e-5
    if keep.any():
        keep &= conf >= max(np.percentile(conf[keep], conf_percentile), min_confidence)
    if extrinsics is None:
        pts = to_map.apply(xyz[keep].astype(np.float64)).astype(np.float32)
        return PointsMap(pts, rgb[keep].astype(np.uint8), conf[keep].astype(np.float32))

    frame, row, col = np.nonzero(keep)  # frame-major: one contiguous slice per frame
    full_depth = np.asarray(prediction.depth)
    K = np.asarray(prediction.model_intrinsics, np.float64)
    # map_from_cam = to_map o world_from_cam, world_from_cam = [R^T, -R^T t] of camera-from-world.
    E = np.asarray(extrinsics, np.float64)
    R, t = E[:, :3, :3], E[:, :3, 3]
    rot = to_map.scale * to_map.rotation @ R.transpose(0, 2, 1)  # [S, 3, 3]
    shift = to_map.translation - np.einsum("sij,sj->si", rot, t)  # [S, 3]
    pts = np.empty((len(frame), 3))
    bounds = np.searchsorted(frame, np.arange(len(E) + 1))
    for s in range(len(E)):
        a, b = bounds[s], bounds[s + 1]
        # Kept pixel (row, col) of the strided grid is pixel (st * row, st * col) of the model's.
        cam = unproject_pixels(full_depth[s], K[s], st * row[a:b], st * col[a:b])  # [n, 3]
        pts[a:b] = cam @ rot[s].T + shift[s]
    finite_pts = np.isfinite(pts).all(axis=1)
    if not finite_pts.all():  # a finite depth can still overflow (an extreme pose)
        pts, row, col, frame = pts[finite_pts], row[finite_pts], col[finite_pts], frame[finite_pts]
    rgb, conf = rgb[frame, row, col], conf[frame, row, col]
    return PointsMap(pts.astype(np.float32), rgb.astype(np.uint8), conf.astype(np.float32))
