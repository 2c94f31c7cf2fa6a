"""Window poses refined by geometry: each frame placed on an earlier one by PnP on the network's depth.

Why: the compact model's camera head gets the translation between close frames wrong, above all
along the optical axis, while the depth maps of the same window are good to a few per cent.
Measured with the embedded model on held-out generated sequences (2026-12-05, docs/mapping.md
"Pose refinement"): consecutive keyframes' steps off by a factor of about 1.5 (median |log
ratio| 0.41) and 10-60 degrees in direction; perspective-n-point on the window's own depth brought
the median to 0.16 and about 10 degrees.

For each frame k > 0 (in window order), j is the previous frame of the same camera (the
previous frame when camera ids are not given). Correspondences j -> k come first from SIFT
keypoints matched with Lowe's ratio test (scale-invariant: driving forward enlarges the image
between keyframes, and there Lucas-Kanade tracks come out short or fail, which made PnP shrink
the step), and where SIFT's placement is not used, from Shi-Tomasi corners of j tracked into k by
pyramidal Lucas-Kanade and kept when tracking back lands within ``BACK_TRACK_PX``. Their 3D
points come from j's depth; OpenCV's ``solvePnPRansac`` (then ``solvePnPRefineLM`` on the
inliers) gives k's pose relative to j. It replaces the head's relative pose only when it has
enough inliers (``min_sift_inliers``; for tracks ``min_inliers`` and ``min_inlier_share``), its
rotation agrees with the head's within ``max_rotation_deg`` (when set) and, optionally, its step
is within ``max_step_ratio`` of the head's; unless the head's rotation explains the inliers about
as well. That test gives the head's rotation the translation that best fits the inliers (the
head's translation is its weak part, above) and keeps it when its median reprojection error is
within ``1 + head_tolerance / sqrt(inliers)`` times PnP's (+ ``head_tolerance_px``): PnP fits the
depth's errors too, and where the correspondences cover a narrow band of the image (a strip of floor below a
blank wall) it trades rotation for translation. The frame then gets the head's rotation with that
fitted translation (method "head"). Poses are composed from frame 0, which does not move. A frame
whose camera has no earlier frame in the window keeps its head pose relative to frame 0.

Everything runs on the model-resolution maps of the window (``Prediction.colors``, ``depth``,
``model_intrinsics``, ``valid_mask``), downscaled by an integer factor to at most ``MAX_WIDTH``
pixels (SIFT: ``SIFT_MAX_WIDTH``), the frames' keypoints and then the pairs in ``refine.threads``
parallel threads. The image-only work (keypoints, matches, tracked corners) comes from a
:class:`~vggt_ros.mapping.refine_features.FeatureCache`, which can do it while the network runs
and keeps it for the next windows. The point head's
``world_points`` are not changed (the mapping pipeline unprojects depth and never reads them).
Cost per 8-frame window on the 2-core CPU: docs/mapping.md "Pose refinement".
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Collection
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, is_dataclass, replace
from typing import Any

import cv2
import numpy as np

from vggt_ros.mapping.config import RefineConfig
from vggt_ros.mapping.refine_features import (
    FeatureCache,
    FrameImages,
    Pixels,
    block_centres,
    downscaled_intrinsics,
    window_pairs,
)

RANSAC_ITERATIONS = 200
HEAD_EXPLAINS = "the head explains the correspondences"


@dataclass
class RefinedPoses:
    """Result of :func:`refine_window_poses`.

    Attributes:
        cam_to_world: [S, 4, 4] float64 refined poses in the window's frame (frame 0 unchanged).
        refined: [S] bool, True where frame k's pose was measured from the correspondences:
            placed by PnP, or the head's rotation with a fitted translation (method "head");
            always False for frame 0.
        inliers: [S] int, PnP inliers of frame k (0 where PnP did not run or failed).
        reasons: [S] str, why frame k kept the head's pose or rotation ("" where placed by PnP
            or frame 0).
        methods: [S] str, what placed frame k: "sift" (matched keypoints), "lk" (tracked
            corners), "head" (the head's rotation, the translation fitted to PnP's inliers) or
            "" (the head's pose).
        timings: milliseconds of its parts: "features_ms" (frames downscaled, SIFT
            keypoints found or taken from the cache), "pairs_ms" (matching, tracking, PnP of
            every pair, in ``refine.threads`` threads; the ``on_early`` callback's time left
            out), where ``on_early`` ran "early_ms" (that callback), and with a feature cache
            that prefetched the window: "prefetch_left" (its background tasks still running at
            the end), "prefetch_tracks" (1 where it tracked corners too) and, once all
            finished, "prefetch_end_ms" (when the last did, from this call's start; negative:
            before it).
    """

    cam_to_world: np.ndarray
    refined: np.ndarray
    inliers: np.ndarray
    reasons: list[str]
    methods: list[str]
    timings: dict[str, float] = field(default_factory=dict)


def _rotation_deg(rotation: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(rotation) - 1.0) / 2.0, -1.0, 1.0))))


def _median_reprojection_px(
    points_a: np.ndarray, pixels_b: np.ndarray, b_to_a: np.ndarray, k_b: np.ndarray
) -> np.ndarray:
    """Median distance (px) between ``pixels_b`` ([N, 2]) and ``points_a`` ([N, 3], camera a)
    seen by b, for each of the poses ``b_to_a`` ([P, 4, 4]): [P] (one projection call for all)."""
    # In numpy, not with the torch helpers of vggt_ros.geometry: on a few hundred points their
    # per-call overhead was 8x this (and torch's thread pool contends with the pair threads).
    rotation = b_to_a[:, :3, :3]  # [P, 3, 3], camera b -> a: x_b = R^T (x_a - t)
    cam = np.einsum("pji,pnj->pni", rotation, points_a[None] - b_to_a[:, None, :3, 3])  # [P, N, 3]
    uvw = cam @ k_b.T
    z = cam[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):  # points at z <= 0 are masked below
        pixels = uvw[..., :2] / uvw[..., 2:3]  # [P, N, 2]
    error = np.full(z.shape, np.inf)
    front = z > 1e-9
    error[front] = np.linalg.norm((pixels - pixels_b)[front], axis=-1)
    return np.median(error, axis=-1)


def fit_translation(
    points_a: np.ndarray,
    pixels_b: np.ndarray,
    rotation_a_to_b: np.ndarray,
    intrinsics_b: np.ndarray,
    iterations: int = 8,
) -> np.ndarray | None:
    """The translation t that, with a fixed rotation R, best reprojects 3D points into image b.

    A linear least-squares start (each point's two projection equations are linear in t once
    multiplied by its depth in b), then Gauss-Newton on the reprojection error with Huber
    weights (1 px), so a few bad points do not pull it.

    Args:
        points_a: [N, 3] points in camera a (N >= 2).
        pixels_b: [N, 2] their pixels (x, y) in image b.
        rotation_a_to_b: [3, 3] R of ``x_b = R x_a + t``.
        intrinsics_b: [3, 3] of image b.

    Returns:
        t [3] (camera b's frame), or None where the points do not fix it (fewer than two
        distinct) or an iterate puts a point behind b (no sensible fit: the caller keeps PnP's
        pose).
    """
    fx, fy, cx, cy = intrinsics_b[0, 0], intrinsics_b[1, 1], intrinsics_b[0, 2], intrinsics_b[1, 2]
    du, dv = cx - pixels_b[:, 0], cy - pixels_b[:, 1]  # [N]
    if len(du) < 2 or (np.ptp(du) == 0 and np.ptp(dv) == 0):
        return None  # one distinct pixel: no translation to fit
    rotated = np.asarray(points_a, np.float64) @ np.asarray(rotation_a_to_b, np.float64).T  # [N, 3]
    x, y, z = rotated[:, 0], rotated[:, 1], rotated[:, 2]
    # fx (x + tx) + (cx - u)(z + tz) = 0, and the same for y: linear in t. Its normal equations
    # are summed per point (3 x 3), never built as a [2N, 3] system.
    bx, by = -du * z - fx * x, -dv * z - fy * y
    n = len(du)
    normal = np.array(
        [
            [n * fx * fx, 0.0, fx * du.sum()],
            [0.0, n * fy * fy, fy * dv.sum()],
            [fx * du.sum(), fy * dv.sum(), (du * du + dv * dv).sum()],
        ]
    )
    try:
        t = np.linalg.solve(normal, [fx * bx.sum(), fy * by.sum(), (du * bx + dv * by).sum()])
    except np.linalg.LinAlgError:  # degenerate geometry: no translation to fit
        return None
    tolerance = 1e-6 * float(np.median(np.abs(z)))  # a millionth of the scene's depth
    for _ in range(iterations):
        px, py, pz = x + t[0], y + t[1], z + t[2]
        if np.any(pz <= 1e-9):
            return None
        inv = 1.0 / pz
        rx, ry = fx * px * inv + du, fy * py * inv + dv  # reprojection residuals (px)
        wx, wy = 1.0 / np.maximum(np.abs(rx), 1.0), 1.0 / np.maximum(np.abs(ry), 1.0)  # Huber, 1 px
        # Jacobian rows: x: (fx / z, 0, -fx px / z^2); y: (0, fy / z, -fy py / z^2).
        jx0, jx2 = fx * inv, -fx * px * inv * inv
        jy1, jy2 = fy * inv, -fy * py * inv * inv
        hessian = np.array(
            [
                [(wx * jx0 * jx0).sum(), 0.0, (wx * jx0 * jx2).sum()],
                [0.0, (wy * jy1 * jy1).sum(), (wy * jy1 * jy2).sum()],
                [0.0, 0.0, (wx * jx2 * jx2 + wy * jy2 * jy2).sum()],
            ]
        )
        hessian[2, 0], hessian[2, 1] = hessian[0, 2], hessian[1, 2]
        gradient = [(wx * jx0 * rx).sum(), (wy * jy1 * ry).sum(), (wx * jx2 * rx + wy * jy2 * ry).sum()]
        try:
            step = np.linalg.solve(hessian, np.negative(gradient))
        except np.linalg.LinAlgError:  # every point projects to one pixel: no direction to go
            return None
        t = t + step
        if np.linalg.norm(step) <= tolerance:
            break
    return t if np.all(z + t[2] > 1e-9) else None


def _head_rotation_fitted(
    points_a: np.ndarray, pixels_b: np.ndarray, head_b_to_a: np.ndarray, intrinsics_b: np.ndarray
) -> np.ndarray | None:
    """[4, 4] pose of b in a with the head's rotation and the translation that best fits the
    correspondences (:func:`fit_translation`), or None."""
    rotation = head_b_to_a[:3, :3].T  # a -> b
    t = fit_translation(points_a, pixels_b, rotation, intrinsics_b)
    if t is None:
        return None
    b_to_a = np.eye(4)
    b_to_a[:3, :3], b_to_a[:3, 3] = rotation.T, -(rotation.T @ t)  # the inverse of [R | t]
    return b_to_a


def place_by_pnp(
    pixels_a: np.ndarray,
    pixels_b: np.ndarray,
    depth_a: np.ndarray,
    intrinsics_a: np.ndarray,
    intrinsics_b: np.ndarray,
    config: RefineConfig,
    min_inliers: int,
    min_inlier_share: float,
    head_b_to_a: np.ndarray | None = None,
) -> tuple[np.ndarray | None, int, str]:
    """Pose of camera b in camera a's frame from correspondences and a's depth.

    Args:
        pixels_a, pixels_b: [M, 2] corresponding pixels (x, y) of images a and b.
        depth_a: [H, W] depth of a along its optical axis (any unit: the result's translation is
            in it); NaN or <= 0 where unknown (those correspondences are dropped).
        intrinsics_a, intrinsics_b: [3, 3] of those images (pixel centres at integers).
        min_inliers, min_inlier_share: fewest RANSAC inliers, and their smallest share of the
            correspondences, for a placement.
        head_b_to_a: the camera head's pose of b in a. Its rotation, with the translation that
            best fits the PnP inliers, is used instead of PnP's pose where its median
            reprojection error is within ``1 + config.head_tolerance / sqrt(inliers)`` times
            PnP's + ``config.head_tolerance_px`` (PnP fits the depth's errors too: a good head
            rotation is not replaced by a worse one; module docstring).

    Returns:
        (b_to_a [4, 4] or None, inliers, reason). Placed by PnP: the pose and reason "". Kept
        the head's rotation: the pose with the fitted translation and a reason starting with
        ``HEAD_EXPLAINS``. Not placed: None and why.
    """
    h, w = depth_a.shape
    cols, rows = np.rint(pixels_a[:, 0]).astype(int), np.rint(pixels_a[:, 1]).astype(int)
    inside = (cols >= 0) & (cols < w) & (rows >= 0) & (rows < h)
    inside &= (
        (pixels_b[:, 0] >= 0) & (pixels_b[:, 0] <= w - 1) & (pixels_b[:, 1] >= 0) & (pixels_b[:, 1] <= h - 1)
    )
    z = np.full(len(pixels_a), np.nan)
    z[inside] = depth_a[rows[inside], cols[inside]]
    keep = inside & np.isfinite(z) & (z > 0)
    pa, pb, z = pixels_a[keep], np.ascontiguousarray(pixels_b[keep], np.float64), z[keep]
    if len(pa) < min_inliers:
        return None, 0, f"{len(pa)} correspondences"
    fx, fy, cx, cy = intrinsics_a[0, 0], intrinsics_a[1, 1], intrinsics_a[0, 2], intrinsics_a[1, 2]
    points = np.stack([(pa[:, 0] - cx) / fx * z, (pa[:, 1] - cy) / fy * z, z], axis=1)
    k_b = np.asarray(intrinsics_b, np.float64)
    # AP3P minimal samples: a fifth of the default's time where half the matches are outliers.
    ok, rvec, tvec, inliers = cv2.solvePnPRansac(
        points,
        pb,
        k_b,
        None,
        iterationsCount=RANSAC_ITERATIONS,
        reprojectionError=config.reprojection_px,
        flags=cv2.SOLVEPNP_AP3P,
    )
    count = 0 if inliers is None else len(inliers)
    if not ok or count < min_inliers:
        return None, count, f"PnP: {count} inliers of {len(pa)}"
    if count < min_inlier_share * len(pa):
        return None, count, f"PnP: {count} inliers of {len(pa)} < {min_inlier_share:.2f}"
    # RANSAC's pose comes from a minimal sample: polish it on all inliers (Levenberg-Marquardt).
    used = inliers.ravel()
    rvec, tvec = cv2.solvePnPRefineLM(points[used], pb[used], k_b, None, rvec, tvec)
    rotation, _ = cv2.Rodrigues(rvec)
    a_to_b = np.eye(4)
    a_to_b[:3, :3], a_to_b[:3, 3] = rotation, tvec.ravel()
    b_to_a = np.linalg.inv(a_to_b)
    if head_b_to_a is not None:
        head = _head_rotation_fitted(points[used], pb[used], head_b_to_a, k_b)
        if head is not None:
            pnp_px, head_px = _median_reprojection_px(points[used], pb[used], np.stack([b_to_a, head]), k_b)
            allowance = (1.0 + config.head_tolerance / np.sqrt(count)) * pnp_px + config.head_tolerance_px
            if head_px <= allowance:
                return head, count, f"{HEAD_EXPLAINS} ({head_px:.2f} px, PnP {pnp_px:.2f})"
    return b_to_a, count, ""


@dataclass
class _Frame:
    """One frame's inputs to the pair estimates, downscaled to at most ``MAX_WIDTH`` pixels."""

    images: FrameImages  # grey images and the digests that key their cached work
    intrinsics: np.ndarray  # [3, 3] of images.small
    depth: np.ndarray  # [h, w] float64, window units
    usable: np.ndarray  # [h, w] bool: valid pixel with depth


def _frame(
    index: int,
    color: np.ndarray,
    intrinsics: np.ndarray,
    depth: np.ndarray,
    valid: np.ndarray | None,
    content: np.ndarray | None,
    config: RefineConfig,
    cache: FeatureCache,
) -> _Frame:
    content = np.ones(color.shape[:2], bool) if content is None else np.asarray(content, bool)
    images = cache.frame_images(index, color, content)
    if config.sift:  # keypoints without depth are dropped later: detection sees only the pixels
        cache.features(images)
    factor = images.factor
    depth_small = np.asarray(block_centres(np.asarray(depth), factor), np.float64)
    inside = images.content if valid is None else block_centres(np.asarray(valid, bool), factor)
    usable = inside & np.isfinite(depth_small) & (depth_small > 0)
    return _Frame(images, downscaled_intrinsics(intrinsics, factor), depth_small, usable)


@dataclass
class _PairResult:
    """Frame b placed on frame a (:func:`_pair_estimate`)."""

    relative: np.ndarray | None  # [4, 4] b in a, or None: the head's pose stays
    inliers: int
    reason: str  # why the head's pose or rotation stays ("" when placed by PnP)
    method: str  # "sift", "lk", "head" (its rotation, translation fitted) or ""
    tracked: bool  # the tracked corners were needed (SIFT's placement not used)


def _pair_estimate(
    a: _Frame, b: _Frame, head_relative: np.ndarray, config: RefineConfig, cache: FeatureCache
) -> _PairResult:
    """Frame b placed on frame a with the head checks.

    SIFT matches first (they survive the zoom of forward motion, where Lucas-Kanade tracks come
    out short and PnP shrinks the step), Lucas-Kanade tracks where SIFT's placement is not used;
    a head rotation that explains either set of inliers is kept, with its fitted translation.
    """

    def placement(pixels: Pixels, min_inliers: int, min_share: float) -> tuple[np.ndarray | None, int, str]:
        relative, count, reason = place_by_pnp(
            *pixels, a.depth, a.intrinsics, b.intrinsics, config, min_inliers, min_share, head_relative
        )
        return relative, count, reason or _head_disagreement(relative, head_relative, config)

    reasons = []
    if config.sift:
        relative, count, reason = placement(cache.matches(a.images, b.images), config.min_sift_inliers, 0.0)
        if not reason:
            return _PairResult(relative, count, "", "sift", False)
        if reason.startswith(HEAD_EXPLAINS):
            return _PairResult(relative, count, reason, "head", False)
        reasons.append(f"SIFT: {reason}")
    tracks = cache.tracks(a.images, b.images, a.usable, config.max_corners)
    relative, count, reason = placement(tracks, config.min_inliers, config.min_inlier_share)
    if not reason:
        return _PairResult(relative, count, "", "lk", True)
    if reason.startswith(HEAD_EXPLAINS):
        return _PairResult(relative, count, "; ".join([*reasons, f"tracks: {reason}"]), "head", True)
    reasons.append(f"tracks: {reason}" if reasons else reason)
    return _PairResult(None, count, "; ".join(reasons), "", True)


def _head_disagreement(relative: np.ndarray, head_relative: np.ndarray, config: RefineConfig) -> str:
    """Why a placement is not used next to the head's relative pose ("" when it is)."""
    disagreement = _rotation_deg(relative[:3, :3].T @ head_relative[:3, :3])
    if config.max_rotation_deg and disagreement > config.max_rotation_deg:
        return f"rotation {disagreement:.1f} deg from the head's > {config.max_rotation_deg}"
    if config.max_step_ratio:
        ratio = max(np.linalg.norm(relative[:3, 3]), 1e-12) / max(np.linalg.norm(head_relative[:3, 3]), 1e-12)
        if not 1.0 / config.max_step_ratio <= ratio <= config.max_step_ratio:
            return f"step {ratio:.2f} x the head's, beyond {config.max_step_ratio}"
    return ""


def refine_window_poses(
    colors: np.ndarray,
    depth: np.ndarray,
    intrinsics: np.ndarray,
    cam_to_world: np.ndarray,
    valid_mask: np.ndarray | None = None,
    camera_ids: list[str] | None = None,
    config: RefineConfig | None = None,
    feature_cache: FeatureCache | None = None,
    content_mask: np.ndarray | None = None,
    early_frames: Collection[int] = (),
    on_early: Callable[[np.ndarray], None] | None = None,
) -> RefinedPoses:
    """Place each frame of a window on an earlier one by PnP (module docstring).

    The frames' keypoints and then the pairs are computed in parallel threads (OpenCV releases
    the GIL), on images at most ``MAX_WIDTH`` pixels wide, and composed in window order.

    Args:
        colors: [S, H, W, 3] uint8 RGB model inputs.
        depth: [S, H, W] predicted depth (window units).
        intrinsics: [S, 3, 3] of the model-resolution maps.
        cam_to_world: [S, 4, 4] the head's poses (camera optical -> window frame).
        valid_mask: [S, H, W] bool, False on padding and where the depth is not finite
            (None: ``content_mask``).
        camera_ids: per frame, its camera (pairs stay within one camera); None: one camera.
        config: acceptance rules (``refine.*``; default :class:`RefineConfig`).
        feature_cache: keeps the frames' keypoints and the pairs' matches and tracked
            corners for the next windows (None: a cache for this call only). With a cache the
            frames are prepared in the calling thread and their work taken from it (or waited
            for while :meth:`FeatureCache.prefetch_window` does it, or done here): start the
            window with ``prefetch_window`` to do the new work while the network runs. Its
            ``prefetch_tracks`` is set to whether half or more of this window's pairs needed
            tracked corners.
        content_mask: [S, H, W] bool, False on padding: where SIFT looks for keypoints, so that
            they depend on the image alone and can be found before the depth exists
            (:meth:`FeatureCache.prefetch_window`). None: ``valid_mask`` (every pixel when
            that is None too).
        early_frames, on_early: where given, ``on_early`` is called (in this thread) with the
            window's poses ([S, 4, 4]) as soon as the pairs that place ``early_frames`` are done,
            while the other pairs still run: the frames of ``early_frames`` and those their
            poses are composed from have their final poses there (bit for bit), every other
            frame NaN. The mapping pipeline chains the window on the frames the map holds
            meanwhile (they come first in a window). What it raises propagates, after the
            pairs are done.

    Returns:
        :class:`RefinedPoses`.
    """
    config = config or RefineConfig()
    head = np.asarray(cam_to_world, np.float64)
    count = len(head)
    intrinsics = np.asarray(intrinsics, np.float64)
    pairs = window_pairs(count, camera_ids)
    previous: dict[int, int] = {k: j for j, k in pairs}  # frame -> the previous frame of its camera
    cache = feature_cache  # (not `or`: an empty cache has length 0)
    if cache is None:
        cache = FeatureCache(capacity=2 * count, threads=1, max_corners=config.max_corners)

    def prepare(k: int) -> _Frame:
        valid = None if valid_mask is None else valid_mask[k]
        content = valid if content_mask is None else content_mask[k]
        return _frame(k, colors[k], intrinsics[k], depth[k], valid, content, config, cache)

    def estimate(pair: tuple[int, int]) -> _PairResult:
        j, k = pair
        return _pair_estimate(frames[j], frames[k], np.linalg.inv(head[j]) @ head[k], config, cache)

    with ThreadPoolExecutor(max_workers=max(1, min(count, config.threads))) as pool:
        t0 = time.perf_counter()
        if feature_cache is not None:
            # Keypoints are cached, in flight (prefetch_window) or detected here; the rest of a
            # frame's preparation is cheaper in this thread than handed to the pool (8 frames
            # with cached keypoints: 1.3 against 2.9 ms on the 2-core CPU; 5 ms on the 16-core
            # GPU host, where the threads mostly wait for the GIL).
            frames = [prepare(k) for k in range(count)]
        else:
            frames = list(pool.map(prepare, range(count)))
        t1 = time.perf_counter()
        # In window order: the pool starts the earliest pairs first, which place the frames
        # the map holds (the early frames) when a caller asks for them.
        futures: dict[tuple[int, int], Future] = {pair: pool.submit(estimate, pair) for pair in pairs}
        early_ms = None
        if on_early is not None and early_frames:
            closure = _chains_to(early_frames, previous)
            needed = {(previous[k], k): futures[(previous[k], k)].result() for k in closure if k in previous}
            partial = _compose(head, needed, previous, closure)
            t_early = time.perf_counter()
            on_early(partial)
            early_ms = (time.perf_counter() - t_early) * 1e3
        estimates = {pair: future.result() for pair, future in futures.items()}
        t2 = time.perf_counter()
    if feature_cache is not None and estimates:
        # Tracking corners for every pair while the network runs pays where most pairs need
        # them (random weights: all); with a trained network a few pairs do, and prefetching
        # them all would take CPU from a network that runs on it.
        tracked = sum(e.tracked for e in estimates.values())
        feature_cache.prefetch_tracks = tracked >= 0.5 * len(estimates)
    out = _compose(head, estimates, previous, range(count))
    refined = np.zeros(count, bool)
    inliers = np.zeros(count, np.int64)
    reasons = [""] * count
    methods = [""] * count
    for k in range(1, count):
        j = previous.get(k)
        if j is None:  # the camera's first frame: the head's pose relative to frame 0
            reasons[k] = "first frame of its camera"
            continue
        pair = estimates[(j, k)]
        inliers[k], reasons[k], methods[k] = pair.inliers, pair.reason, pair.method
        refined[k] = pair.relative is not None
    timings = {"features_ms": (t1 - t0) * 1e3, "pairs_ms": (t2 - t1) * 1e3 - (early_ms or 0.0)}
    if early_ms is not None:
        timings["early_ms"] = early_ms
    if feature_cache is not None:
        # The background work of this window (prefetch_window): still running at the end
        # (it takes CPU from what follows), or when it finished relative to this call's start
        # (negative: before; positive: the refinement waited for it or ran beside it).
        status = feature_cache.prefetch_status()
        if status:
            timings["prefetch_left"] = status["left"]
            timings["prefetch_tracks"] = status["tracks"]
            if "finished_at" in status:
                timings["prefetch_end_ms"] = (status["finished_at"] - t0) * 1e3
    return RefinedPoses(out, refined, inliers, reasons, methods, timings)


def _chains_to(frames: Collection[int], previous: dict[int, int]) -> set[int]:
    """``frames`` and every frame their poses are composed from (back along ``previous``)."""
    closure: set[int] = set()
    for k in frames:
        while k not in closure:
            closure.add(k)
            if k not in previous:
                break
            k = previous[k]
    return closure


def _compose(
    head: np.ndarray,
    estimates: dict[tuple[int, int], _PairResult],
    previous: dict[int, int],
    frames: Collection[int],
) -> np.ndarray:
    """[S, 4, 4] window poses from frame 0 (unchanged): frame k = frame j's pose times the pair's
    relative pose (the head's where the pair placed nothing); a camera's first frame keeps its
    head pose relative to frame 0. Only ``frames`` (closed under ``previous``) are composed,
    in window order; the others are NaN."""
    out = np.full_like(head, np.nan)
    out[0] = head[0]
    for k in sorted(frames):
        if k == 0:
            continue
        j = previous.get(k)
        if j is None:
            out[k] = out[0] @ np.linalg.inv(head[0]) @ head[k]
            continue
        relative = estimates[(j, k)].relative
        if relative is None:
            relative = np.linalg.inv(head[j]) @ head[k]
        out[k] = out[j] @ relative
    return out


def refined_prediction(
    prediction: Any,
    camera_ids: list[str] | None,
    config: RefineConfig,
    feature_cache: FeatureCache | None = None,
    prefetch: bool = True,
    early_frames: Collection[int] = (),
    on_early: Callable[[Any], None] | None = None,
) -> tuple[Any, RefinedPoses | None]:
    """A copy of a ``Prediction`` with its poses refined (``cam_to_world`` and ``extrinsics``);
    the prediction itself and None when it carries no images (``colors``) to track in.

    ``prefetch``: start the window's image-only work in ``feature_cache``'s threads first
    (False when the caller already did, e.g. from ``Predictor.predict(on_model_inputs=...)``).
    ``early_frames``, ``on_early``: as in :func:`refine_window_poses`, but ``on_early`` gets a
    shallow copy of the prediction whose ``cam_to_world`` holds those poses (NaN elsewhere;
    its ``extrinsics`` are the head's). The poses are measured on ``depth_unflipped`` where the
    prediction has one (mirror-averaged depth), else on ``depth``."""
    if getattr(prediction, "colors", None) is None:
        return prediction, None
    valid = getattr(prediction, "valid_mask", None)
    # Where SIFT looks: the padding masks, else the valid mask, else every pixel (as in
    # refine_window_poses, so that prefetched keypoints are the ones it asks for).
    content = content_masks(prediction)
    if content is None:
        content = valid if valid is not None else np.ones(np.shape(prediction.colors)[:3], bool)
    if feature_cache is not None and prefetch:
        feature_cache.prefetch_window(prediction.colors, content, camera_ids)

    def early(partial: np.ndarray) -> None:
        copied = copy.copy(prediction)
        copied.cam_to_world = partial
        on_early(copied)

    # With mirror averaging (``depth_unflipped`` set) the poses are measured on the depth of the
    # camera head's own pass: on the wider held-out set the averaged depth made the refined
    # rotations worse (docs/model_card_compact.md, "Depth averaged with the mirror image").
    depth = getattr(prediction, "depth_unflipped", None)
    result = refine_window_poses(
        prediction.colors,
        prediction.depth if depth is None else depth,
        np.asarray(prediction.model_intrinsics, np.float64),
        prediction.cam_to_world,
        valid,
        camera_ids,
        config,
        feature_cache,
        content,
        early_frames,
        early if on_early is not None else None,
    )
    extrinsics = np.linalg.inv(result.cam_to_world)[:, :3, :]
    if is_dataclass(prediction):
        return replace(prediction, cam_to_world=result.cam_to_world, extrinsics=extrinsics), result
    copied = copy.copy(prediction)
    copied.cam_to_world, copied.extrinsics = result.cam_to_world, extrinsics
    return copied, result


def content_masks(prediction: Any) -> np.ndarray | None:
    """[S, Hm, Wm] bool, False on each model image's padding (from ``prediction.transforms``);
    None when the prediction carries no transforms."""
    transforms = getattr(prediction, "transforms", None)
    if not transforms:
        return None
    return np.stack([t.content_mask() for t in transforms])
