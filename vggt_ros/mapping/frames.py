"""Orienting the map z-up (REP-103) and relating it to odometry (REP-105).

The chained frame G is the first keyframe's optical frame (x right, y down, z forward). The map
is z-up; its pose relative to that first camera comes from, in order of preference:

1. odometry: ``map = odom`` at the first keyframe, i.e. ``map <- cam0 = odom <- base(t0) *
   base <- cam0``. map -> odom then starts as the identity and absorbs later drift;
2. the camera's mounting (``camera_to_base`` from /tf_static): base_link at the map origin,
   assumed level;
3. neither: only the axes are swapped, optical -> REP-103 body (x forward = optical z, y left =
   -optical x, z up = -optical y): z-up only as far as the first camera was level.

Without a known ``camera_to_base`` but with odometry, the camera is taken to sit at base_link
with the axis swap of case 3.
"""

from __future__ import annotations

import numpy as np

# Rows: body axes expressed in optical coordinates. body x = optical z, body y = -optical x,
# body z = -optical y.
BODY_FROM_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])

ORIENTATION_SOURCES = ("odometry", "camera_to_base", "optical-axes")


def default_camera_to_base() -> np.ndarray:
    """[4, 4] base_link <- optical frame of a forward-looking camera at the base origin."""
    T = np.eye(4)
    T[:3, :3] = BODY_FROM_OPTICAL
    return T


def map_anchor(odom_pose: np.ndarray | None, camera_to_base: np.ndarray | None) -> tuple[np.ndarray, str]:
    """Pose of the first keyframe's camera in the map, and which source oriented it.

    Args:
        odom_pose: [4, 4] odom <- base_link at the first keyframe, or None.
        camera_to_base: [4, 4] base_link <- camera optical frame, or None.

    Returns:
        ([4, 4] map <- first camera (rigid, metres), one of ORIENTATION_SOURCES).
    """
    mount = default_camera_to_base() if camera_to_base is None else np.asarray(camera_to_base, np.float64)
    if odom_pose is not None:
        return np.asarray(odom_pose, np.float64) @ mount, "odometry"
    if camera_to_base is not None:
        return mount.copy(), "camera_to_base"
    return default_camera_to_base(), "optical-axes"


def camera_in_odom(odom_pose: np.ndarray, camera_to_base: np.ndarray | None) -> np.ndarray:
    """[4, 4] odom <- camera optical frame (default mounting when ``camera_to_base`` is None)."""
    mount = default_camera_to_base() if camera_to_base is None else camera_to_base
    return np.asarray(odom_pose, np.float64) @ mount


def map_to_odom(
    cam_to_map: np.ndarray, odom_pose: np.ndarray, camera_to_base: np.ndarray | None
) -> np.ndarray:
    """REP-105 map <- odom from one camera's map pose and the odometry at the same stamp.

    ``map <- odom = (map <- cam) (odom <- cam)^-1``: the correction that makes odometry agree with
    the chained (drift-corrected) trajectory.
    """
    return np.asarray(cam_to_map, np.float64) @ np.linalg.inv(camera_in_odom(odom_pose, camera_to_base))
