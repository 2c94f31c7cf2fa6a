"""Window poses refined by geometry: each frame placed on an earlier one by PnP on the network's depth.

Why: the compact model's camera head gets the translation between close frames wrong, above all
along the optical axis, while the depth maps of the same window are good to a few per cent.
Measured with the embedded model on held-out generated sequences (2026-12-05, docs/mapping.md
"Pose refinement"): consecutive keyframes' steps off by a factor of about 1.5 (median |log
ratio| 0.41) and 10-60 degrees in direction; perspective-n-point on the window's own depth brought
the median to 0.16 and about 10 degrees.

For each frame k > 0 (in window order), j is the previous frame of the same camera (the
previous frame when camera ids are not given): Shi-Tomasi corners of j (on valid pixels with
depth) are tracked into k by pyramidal Lucas-Kanade and kept when tracking back lands within
``BACK_TRACK_PX``; their 3D points come from j's depth; OpenCV's ``solvePnPRansac`` (then
``solvePnPRefineLM`` on the inliers) gives k's pose relative to j. It replaces the head's relative
pose only when it has enough inliers (count and share), its rotation agrees with the head's
within ``max_rotation_deg``, the head's own pose does not reproject the inliers about as well
(``head_tolerance_px``: PnP fits the depth's noise too) and, optionally, its step is within
``max_step_ratio`` of the head's. Poses are composed from frame 0, which does not move. A frame
whose camera has no earlier frame in the window keeps its head pose relative to frame 0.

Everything runs on the model-resolution maps of the window (``Prediction.colors``, ``depth``,
``model_intrinsics``, ``valid_mask``), downscaled by an integer factor to at most ``MAX_WIDTH``
pixels, the pairs in ``THREADS`` parallel threads. The point head's ``world_points`` are not changed (the
mapping pipeline unprojects depth and never reads them). Cost on the 2-core CPU: about 35 ms
per 8-frame window at 140x182 and at 350x518 (downscaled to 259 px).
"""

from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, is_dataclass, replace
from typing import Any

import cv2
import numpy as np

from vggt_ros.geometry.camera import invert_rigid, project_points
from vggt_ros.mapping.config import RefineConfig

# Forward-backward Lucas-Kanade: a track is kept when tracking it back lands this close (px).
BACK_TRACK_PX = 0.5
# Shi-Tomasi corners: quality relative to the strongest corner, and spacing (px). The low
# quality keeps corners in dim, low-contrast images (the held-out procedural rooms).
CORNER_QUALITY = 0.005
CORNER_SPACING_PX = 4
LK_WINDOW = (15, 15)
LK_LEVELS = 3
RANSAC_ITERATIONS = 200
MAX_WIDTH = 320  # larger model images are downscaled by an integer factor first
THREADS = 4  # frame pairs estimated at once


@dataclass
class RefinedPoses:
    """Result of :func:`refine_window_poses`.

    Attributes:
        cam_to_world: [S, 4, 4] float64 refined poses in the window's frame (frame 0 unchanged).
        refined: [S] bool, True where frame k was placed by PnP (always False for frame 0).
        inliers: [S] int, PnP inliers of frame k (0 where PnP did not run or failed).
        reasons: [S] str, why frame k kept the head's pose ("" where refined or frame 0).
    """

    cam_to_world: np.ndarray
    refined: np.ndarray
    inliers: np.ndarray
    reasons: list[str]


def _rotation_deg(rotation: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(rotation) - 1.0) / 2.0, -1.0, 1.0))))


def _median_reprojection_px(
    points_a: np.ndarray, pixels_b: np.ndarray, b_to_a: np.ndarray, k_b: np.ndarray
) -> float:
    """Median distance (px) between ``pixels_b`` and ``points_a`` ([N, 3], camera a) seen by b."""
    pixels, z = project_points(points_a, invert_rigid(b_to_a), k_b)
    error = np.full(len(points_a), np.inf)
    front = z > 1e-9
    error[front] = np.linalg.norm(pixels[front] - pixels_b[front], axis=1)
    return float(np.median(error))


def pnp_relative_pose(
    gray_a: np.ndarray,
    gray_b: np.ndarray,
    depth_a: np.ndarray,
    intrinsics_a: np.ndarray,
    intrinsics_b: np.ndarray,
    usable_a: np.ndarray,
    config: RefineConfig,
    head_b_to_a: np.ndarray | None = None,
) -> tuple[np.ndarray | None, int, int, str]:
    """Pose of camera b in camera a's frame from a's depth and tracks a -> b.

    Args:
        gray_a, gray_b: [H, W] uint8 images.
        depth_a: [H, W] depth of a along its optical axis (any unit: the result's translation is
            in it); NaN or <= 0 where unknown.
        intrinsics_a, intrinsics_b: [3, 3] of those images (pixel centres at integers).
        usable_a: [H, W] bool, pixels of a where corners may be taken (e.g. not padding).
        head_b_to_a: the camera head's pose of b in a; when it explains the PnP inliers within
            ``config.head_tolerance_px`` of PnP's own median reprojection error, it is kept
            (PnP fits the depth's noise too: a good head is not replaced by a noisier estimate).

    Returns:
        (b_to_a [4, 4] or None, inliers, tracked points used, reason when None).
    """
    valid = usable_a & np.isfinite(depth_a) & (depth_a > 0)
    corners = cv2.goodFeaturesToTrack(
        gray_a,
        config.max_corners,
        CORNER_QUALITY,
        CORNER_SPACING_PX,
        mask=valid.astype(np.uint8) * 255,
    )
    if corners is None or len(corners) < config.min_inliers:
        return None, 0, 0, "too few corners"
    tracked, status, _ = cv2.calcOpticalFlowPyrLK(
        gray_a,
        gray_b,
        corners,
        None,
        winSize=LK_WINDOW,
        maxLevel=LK_LEVELS,
    )
    back, status_back, _ = cv2.calcOpticalFlowPyrLK(
        gray_b, gray_a, tracked, None, winSize=LK_WINDOW, maxLevel=LK_LEVELS
    )
    error = np.linalg.norm((back - corners).reshape(-1, 2), axis=1)
    good = (status.ravel() == 1) & (status_back.ravel() == 1) & (error < BACK_TRACK_PX)
    pa, pb = corners.reshape(-1, 2)[good], tracked.reshape(-1, 2)[good].astype(np.float64)
    h, w = depth_a.shape
    inside = (pb[:, 0] >= 0) & (pb[:, 0] <= w - 1) & (pb[:, 1] >= 0) & (pb[:, 1] <= h - 1)
    pa, pb = pa[inside], pb[inside]
    if len(pa) < config.min_inliers:
        return None, 0, len(pa), f"{len(pa)} points tracked"
    cols, rows = np.rint(pa[:, 0]).astype(int), np.rint(pa[:, 1]).astype(int)
    z = depth_a[rows, cols].astype(np.float64)
    fx, fy, cx, cy = intrinsics_a[0, 0], intrinsics_a[1, 1], intrinsics_a[0, 2], intrinsics_a[1, 2]
    points = np.stack([(pa[:, 0] - cx) / fx * z, (pa[:, 1] - cy) / fy * z, z], axis=1)
    ok, rvec, tvec, inliers = cv2.solvePnPRansac(
        points,
        pb,
        np.asarray(intrinsics_b, np.float64),
        None,
        iterationsCount=RANSAC_ITERATIONS,
        reprojectionError=config.reprojection_px,
    )
    count = 0 if inliers is None else len(inliers)
    if not ok or count < config.min_inliers:
        return None, count, len(pa), f"PnP: {count} inliers of {len(pa)}"
    if count < config.min_inlier_share * len(pa):
        return None, count, len(pa), f"PnP: {count} inliers of {len(pa)} < {config.min_inlier_share:.2f}"
    # RANSAC's pose comes from a minimal sample: polish it on all inliers (Levenberg-Marquardt).
    keep = inliers.ravel()
    rvec, tvec = cv2.solvePnPRefineLM(
        points[keep], pb[keep], np.asarray(intrinsics_b, np.float64), None, rvec, tvec
    )
    rotation, _ = cv2.Rodrigues(rvec)
    a_to_b = np.eye(4)
    a_to_b[:3, :3], a_to_b[:3, 3] = rotation, tvec.ravel()
    b_to_a = np.linalg.inv(a_to_b)
    if head_b_to_a is not None:
        k_b = np.asarray(intrinsics_b, np.float64)
        pnp_px = _median_reprojection_px(points[keep], pb[keep], b_to_a, k_b)
        head_px = _median_reprojection_px(points[keep], pb[keep], head_b_to_a, k_b)
        if head_px <= pnp_px + config.head_tolerance_px:
            return None, count, len(pa), f"the head explains the tracks ({head_px:.2f} px, PnP {pnp_px:.2f})"
    return b_to_a, count, len(pa), ""


def _downscaled_image(gray: np.ndarray, intrinsics: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """The image at 1/``factor`` of its size (area average) and its intrinsics (pixel centres at
    integers kept exact)."""
    if factor == 1:
        return gray, intrinsics
    h, w = gray.shape[0] // factor, gray.shape[1] // factor
    k = np.asarray(intrinsics, np.float64).copy()
    k[:2, :2] /= factor
    k[:2, 2] = (k[:2, 2] + 0.5) / factor - 0.5
    return cv2.resize(gray[: h * factor, : w * factor], (w, h), interpolation=cv2.INTER_AREA), k


def _block_centres(values: np.ndarray, factor: int) -> np.ndarray:
    """A map at 1/``factor`` of its size, each block's centre pixel (no mixing across edges)."""
    if factor == 1:
        return values
    h, w = values.shape[0] // factor, values.shape[1] // factor
    return values[np.ix_(np.arange(h) * factor + factor // 2, np.arange(w) * factor + factor // 2)]


def _pair_estimate(
    gray: list[np.ndarray],
    depth: np.ndarray,
    intrinsics: np.ndarray,
    valid_mask: np.ndarray | None,
    j: int,
    k: int,
    head_relative: np.ndarray,
    config: RefineConfig,
) -> tuple[np.ndarray | None, int, str]:
    """PnP of frame k on frame j with the head checks: (k in j or None, inliers, reason)."""
    factor = max(1, int(np.ceil(gray[j].shape[1] / MAX_WIDTH)))
    usable = np.ones(depth[j].shape, bool) if valid_mask is None else np.asarray(valid_mask[j], bool)
    gray_j, k_j = _downscaled_image(gray[j], intrinsics[j], factor)
    gray_k, k_k = _downscaled_image(gray[k], intrinsics[k], factor)
    depth_j = _block_centres(np.asarray(depth[j], np.float64), factor)
    usable_j = _block_centres(usable, factor)
    relative, count, _, reason = pnp_relative_pose(
        gray_j, gray_k, depth_j, k_j, k_k, usable_j, config, head_relative
    )
    if relative is None:
        return None, count, reason
    disagreement = _rotation_deg(relative[:3, :3].T @ head_relative[:3, :3])
    if disagreement > config.max_rotation_deg:
        return None, count, f"rotation {disagreement:.1f} deg from the head's > {config.max_rotation_deg}"
    if config.max_step_ratio:
        ratio = max(np.linalg.norm(relative[:3, 3]), 1e-12) / max(np.linalg.norm(head_relative[:3, 3]), 1e-12)
        if not 1.0 / config.max_step_ratio <= ratio <= config.max_step_ratio:
            return None, count, f"step {ratio:.2f} x the head's, beyond {config.max_step_ratio}"
    return relative, count, ""


def refine_window_poses(
    colors: np.ndarray,
    depth: np.ndarray,
    intrinsics: np.ndarray,
    cam_to_world: np.ndarray,
    valid_mask: np.ndarray | None = None,
    camera_ids: list[str] | None = None,
    config: RefineConfig | None = None,
) -> RefinedPoses:
    """Place each frame of a window on an earlier one by PnP (module docstring).

    The pairs are estimated in parallel threads (OpenCV releases the GIL), on images at most
    ``MAX_WIDTH`` pixels wide, and composed in window order.

    Args:
        colors: [S, H, W, 3] uint8 RGB model inputs.
        depth: [S, H, W] predicted depth (window units).
        intrinsics: [S, 3, 3] of the model-resolution maps.
        cam_to_world: [S, 4, 4] the head's poses (camera optical -> window frame).
        valid_mask: [S, H, W] bool, False on padding (None: every pixel).
        camera_ids: per frame, its camera (pairs stay within one camera); None: one camera.
        config: acceptance rules (``refine.*``; default :class:`RefineConfig`).

    Returns:
        :class:`RefinedPoses`.
    """
    config = config or RefineConfig()
    head = np.asarray(cam_to_world, np.float64)
    count = len(head)
    gray = [cv2.cvtColor(np.ascontiguousarray(c), cv2.COLOR_RGB2GRAY) for c in colors]
    intrinsics = np.asarray(intrinsics, np.float64)
    previous: dict[int, int | None] = {}  # frame -> the previous frame of its camera
    last_of_camera: dict[str, int] = {}
    for k in range(count):
        camera = camera_ids[k] if camera_ids is not None else ""
        previous[k] = last_of_camera.get(camera)
        last_of_camera[camera] = k
    pairs = [(previous[k], k) for k in range(1, count) if previous[k] is not None]

    def estimate(pair: tuple[int, int]) -> tuple[np.ndarray | None, int, str]:
        j, k = pair
        head_relative = np.linalg.inv(head[j]) @ head[k]
        return _pair_estimate(gray, depth, intrinsics, valid_mask, j, k, head_relative, config)

    with ThreadPoolExecutor(max_workers=max(1, min(len(pairs), THREADS))) as pool:
        estimates = dict(zip(pairs, pool.map(estimate, pairs)))
    out = head.copy()
    refined = np.zeros(count, bool)
    inliers = np.zeros(count, np.int64)
    reasons = [""] * count
    for k in range(1, count):
        j = previous[k]
        if j is None:  # the camera's first frame: the head's pose relative to frame 0
            out[k] = out[0] @ np.linalg.inv(head[0]) @ head[k]
            reasons[k] = "first frame of its camera"
            continue
        relative, inliers[k], reasons[k] = estimates[(j, k)]
        if relative is None:
            relative = np.linalg.inv(head[j]) @ head[k]
        else:
            refined[k] = True
        out[k] = out[j] @ relative
    return RefinedPoses(out, refined, inliers, reasons)


def refined_prediction(
    prediction: Any, camera_ids: list[str] | None, config: RefineConfig
) -> tuple[Any, RefinedPoses | None]:
    """A copy of a ``Prediction`` with its poses refined (``cam_to_world`` and ``extrinsics``);
    the prediction itself and None when it carries no images (``colors``) to track in."""
    if getattr(prediction, "colors", None) is None:
        return prediction, None
    result = refine_window_poses(
        prediction.colors,
        prediction.depth,
        np.asarray(prediction.model_intrinsics, np.float64),
        prediction.cam_to_world,
        getattr(prediction, "valid_mask", None),
        camera_ids,
        config,
    )
    extrinsics = np.linalg.inv(result.cam_to_world)[:, :3, :]
    if is_dataclass(prediction):
        return replace(prediction, cam_to_world=result.cam_to_world, extrinsics=extrinsics), result
    copied = copy.copy(prediction)
    copied.cam_to_world, copied.extrinsics = result.cam_to_world, extrinsics
    return copied, result
