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
rotation agrees with the head's within ``max_rotation_deg`` (when set), the head's own pose does not
reproject the inliers about as well (``head_tolerance_px``: PnP fits the depth's noise too) and,
optionally, its step is within ``max_step_ratio`` of the head's. Poses are composed from frame 0,
which does not move. A frame whose camera has no earlier frame in the window keeps its head pose
relative to frame 0.

Everything runs on the model-resolution maps of the window (``Prediction.colors``, ``depth``,
``model_intrinsics``, ``valid_mask``), downscaled by an integer factor to at most ``MAX_WIDTH``
pixels (SIFT: ``SIFT_MAX_WIDTH``), the frames' keypoints and then the pairs in ``refine.threads``
parallel threads; a :class:`FeatureCache` keeps keypoints for the next windows. The point head's
``world_points`` are not changed (the mapping pipeline unprojects depth and never reads them).
Cost per 8-frame window on the 2-core CPU: docs/mapping.md "Pose refinement".
"""

from __future__ import annotations

import copy
import hashlib
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, is_dataclass, replace
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
# SIFT: keypoints per image, contrast threshold (low: the dim held-out rooms) and Lowe's ratio.
SIFT_FEATURES = 800
SIFT_CONTRAST = 0.004
SIFT_RATIO = 0.8
HEAD_EXPLAINS = "the head explains the correspondences"
MAX_WIDTH = 320  # larger model images are downscaled by an integer factor first
# SIFT doubles its input internally: it sees a copy at most this wide (the 182-pixel model
# images as they are; 350x518 at a third instead of a half: a window's whole refinement took
# 168 -> 76 ms on the 2-core CPU).
SIFT_MAX_WIDTH = 192


@dataclass
class RefinedPoses:
    """Result of :func:`refine_window_poses`.

    Attributes:
        cam_to_world: [S, 4, 4] float64 refined poses in the window's frame (frame 0 unchanged).
        refined: [S] bool, True where frame k was placed by PnP (always False for frame 0).
        inliers: [S] int, PnP inliers of frame k (0 where PnP did not run or failed).
        reasons: [S] str, why frame k kept the head's pose ("" where refined or frame 0).
        methods: [S] str, what placed frame k: "sift" (matched keypoints), "lk" (tracked
            corners) or "" (the head's pose).
        timings: milliseconds of its two parts: "features_ms" (frames downscaled, SIFT
            keypoints found or taken from the cache) and "pairs_ms" (matching, tracking, PnP of
            every pair, in ``refine.threads`` threads).
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
    pixels, z = project_points(points_a, invert_rigid(b_to_a), k_b)  # [P, N, 2], [P, N]
    error = np.full(z.shape, np.inf)
    front = z > 1e-9
    error[front] = np.linalg.norm((pixels - pixels_b)[front], axis=-1)
    return np.median(error, axis=-1)


@dataclass
class FrameFeatures:
    """SIFT keypoints of one (downscaled) image.

    Attributes:
        pixels: [N, 2] float64 keypoint positions (x, y).
        descriptors: [N, 128] float32, or None when the image has no keypoints.
    """

    pixels: np.ndarray
    descriptors: np.ndarray | None


def sift_features(gray: np.ndarray, usable: np.ndarray) -> FrameFeatures:
    """SIFT keypoints of ``gray`` ([H, W] uint8) on the ``usable`` ([H, W] bool) pixels."""
    detector = cv2.SIFT_create(nfeatures=SIFT_FEATURES, contrastThreshold=SIFT_CONTRAST)
    keypoints, descriptors = detector.detectAndCompute(gray, usable.astype(np.uint8) * 255)
    pixels = np.array([kp.pt for kp in keypoints], np.float64).reshape(-1, 2)
    return FrameFeatures(pixels, descriptors if len(keypoints) else None)


class FeatureCache:
    """Bounded least-recently-used map: image content -> its SIFT keypoints.

    Consecutive windows share most of their frames (window 8, stride 4: half), and a frame's
    keypoints depend on its pixels alone (detection uses the padding mask, not the window's
    depth), so they are reused. The key is a digest of the image and mask bytes: equal content
    gives equal keypoints, nothing else is trusted. Safe to use from several threads: a content
    being computed by one thread is waited for, not computed again, by the others.

    :meth:`prefetch_window` starts a window's keypoints in background threads as soon as the
    model's input images exist, so that they are found while the network runs (the mapping
    pipeline does this through the predictor's ``on_model_inputs``).

    Args:
        capacity: images kept (the least recently used are evicted first).
        threads: background threads of :meth:`prefetch_window` (``refine.threads``).
    """

    def __init__(self, capacity: int = 64, threads: int = 4) -> None:
        if capacity < 1:
            raise ValueError(f"feature cache capacity must be >= 1, got {capacity}")
        if threads < 1:
            raise ValueError(f"feature cache threads must be >= 1, got {threads}")
        self.capacity = int(capacity)
        self.threads = int(threads)
        self._entries: OrderedDict[bytes, FrameFeatures] = OrderedDict()
        self._in_flight: dict[bytes, threading.Event] = {}
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def features(self, gray: np.ndarray, usable: np.ndarray) -> FrameFeatures:
        """:func:`sift_features` of ``gray`` on ``usable``, computed once per distinct content."""
        digest = hashlib.blake2b(digest_size=16)
        digest.update(np.asarray(gray.shape, np.int64).tobytes())
        digest.update(np.ascontiguousarray(gray).tobytes())
        digest.update(np.packbits(usable).tobytes())
        key = digest.digest()
        while True:
            with self._lock:
                found = self._entries.get(key)
                if found is not None:
                    self._entries.move_to_end(key)
                    self.hits += 1
                    return found
                running = self._in_flight.get(key)
                if running is None:
                    done = self._in_flight[key] = threading.Event()
                    break
            running.wait()  # another thread computes it; then it is an entry (or it failed)
        try:
            features = sift_features(gray, usable)  # outside the lock: other frames go on meanwhile
            with self._lock:
                self.misses += 1
                self._entries[key] = features
                self._entries.move_to_end(key)
                while len(self._entries) > self.capacity:
                    self._entries.popitem(last=False)
        finally:
            with self._lock:
                del self._in_flight[key]
            done.set()
        return features

    def prefetch_window(self, colors: np.ndarray, content: np.ndarray) -> list[Future]:
        """Start the keypoints of a window's frames in background threads; returns at once.

        Args:
            colors: [S, H, W, 3] uint8 RGB model inputs (``Prediction.colors``).
            content: [S, H, W] bool, False on padding (the transforms' content masks).

        Returns:
            One future per frame (callers may ignore them: :func:`refine_window_poses` with this
            cache waits for a frame still in flight).
        """
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="sift-prefetch")
        return [self._pool.submit(self._prefetch_frame, colors[k], content[k]) for k in range(len(colors))]

    def _prefetch_frame(self, color: np.ndarray, content: np.ndarray) -> None:
        gray = cv2.cvtColor(np.ascontiguousarray(color), cv2.COLOR_RGB2GRAY)
        image, mask, _ = sift_input(gray, content)
        self.features(image, mask)


def sift_input(gray: np.ndarray, content: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """The image SIFT sees for a model-resolution frame: (image [h, w] uint8, mask [h, w] bool,
    factor), downscaled by the integer ``factor`` (to at most ``MAX_WIDTH`` and then
    ``SIFT_MAX_WIDTH`` pixels); ``content`` ([H, W] bool) is False on padding."""
    factor = max(1, int(np.ceil(gray.shape[1] / MAX_WIDTH)))
    small = _downscaled_image(gray, np.eye(3), factor)[0]
    return _sift_input_of_small(small, _block_centres(np.asarray(content, bool), factor))


def _sift_input_of_small(small: np.ndarray, content_small: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """:func:`sift_input` from the frame already downscaled to at most ``MAX_WIDTH`` pixels."""
    sift_factor = max(1, int(np.ceil(small.shape[1] / SIFT_MAX_WIDTH)))
    image = _downscaled_image(small, np.eye(3), sift_factor)[0]
    return image, _block_centres(content_small, sift_factor), sift_factor


def match_features(a: FrameFeatures, b: FrameFeatures) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-neighbour descriptor matches a -> b that pass Lowe's ratio test: ([M, 2], [M, 2])."""
    if a.descriptors is None or b.descriptors is None or len(b.pixels) < 2:
        return np.zeros((0, 2)), np.zeros((0, 2))
    pairs = cv2.BFMatcher(cv2.NORM_L2).knnMatch(a.descriptors, b.descriptors, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < SIFT_RATIO * p[1].distance]
    return (
        a.pixels[[m.queryIdx for m in good]].reshape(-1, 2),
        b.pixels[[m.trainIdx for m in good]].reshape(-1, 2),
    )


def track_corners(
    gray_a: np.ndarray, gray_b: np.ndarray, usable_a: np.ndarray, max_corners: int
) -> tuple[np.ndarray, np.ndarray]:
    """Shi-Tomasi corners of a on ``usable_a`` tracked into b by forward-backward pyramidal
    Lucas-Kanade: (pixels in a [M, 2], pixels in b [M, 2]) of the tracks that come back."""
    corners = cv2.goodFeaturesToTrack(
        gray_a, max_corners, CORNER_QUALITY, CORNER_SPACING_PX, mask=usable_a.astype(np.uint8) * 255
    )
    if corners is None:
        return np.zeros((0, 2)), np.zeros((0, 2))
    tracked, status, _ = cv2.calcOpticalFlowPyrLK(
        gray_a, gray_b, corners, None, winSize=LK_WINDOW, maxLevel=LK_LEVELS
    )
    back, status_back, _ = cv2.calcOpticalFlowPyrLK(
        gray_b, gray_a, tracked, None, winSize=LK_WINDOW, maxLevel=LK_LEVELS
    )
    error = np.linalg.norm((back - corners).reshape(-1, 2), axis=1)
    good = (status.ravel() == 1) & (status_back.ravel() == 1) & (error < BACK_TRACK_PX)
    return corners.reshape(-1, 2)[good].astype(np.float64), tracked.reshape(-1, 2)[good].astype(np.float64)


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
        head_b_to_a: the camera head's pose of b in a; when it explains the PnP inliers within
            ``config.head_tolerance_px`` of PnP's own median reprojection error, it is kept
            (PnP fits the depth's noise too: a good head is not replaced by a noisier estimate).

    Returns:
        (b_to_a [4, 4] or None, inliers, reason when None). The reason starts with
        ``HEAD_EXPLAINS`` when the head was kept for explaining the inliers.
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
        pnp_px, head_px = _median_reprojection_px(
            points[used], pb[used], np.stack([b_to_a, head_b_to_a]), k_b
        )
        if head_px <= pnp_px + config.head_tolerance_px:
            return None, count, f"{HEAD_EXPLAINS} ({head_px:.2f} px, PnP {pnp_px:.2f})"
    return b_to_a, count, ""


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
    first = factor // 2
    return values[first : first + h * factor : factor, first : first + w * factor : factor]  # a view


@dataclass
class _Frame:
    """One frame's inputs to the pair estimates, downscaled to at most ``MAX_WIDTH`` pixels."""

    gray: np.ndarray  # [h, w] uint8
    intrinsics: np.ndarray  # [3, 3]
    depth: np.ndarray  # [h, w] float64, window units
    usable: np.ndarray  # [h, w] bool: valid pixel with depth
    features: FrameFeatures | None  # SIFT keypoints (None: SIFT not used)


def _frame(
    gray: np.ndarray,
    intrinsics: np.ndarray,
    depth: np.ndarray,
    valid: np.ndarray | None,
    content: np.ndarray | None,
    config: RefineConfig,
    cache: FeatureCache | None,
) -> _Frame:
    factor = max(1, int(np.ceil(gray.shape[1] / MAX_WIDTH)))
    small, k = _downscaled_image(gray, intrinsics, factor)
    depth_small = np.asarray(_block_centres(np.asarray(depth), factor), np.float64)
    content = np.ones(gray.shape, bool) if content is None else np.asarray(content, bool)
    inside = _block_centres(np.asarray(content if valid is None else valid, bool), factor)
    features = None
    if config.sift:  # keypoints without depth are dropped later: detection sees only the pixels
        sift_image, sift_inside, sift_factor = _sift_input_of_small(small, _block_centres(content, factor))
        found = (
            cache.features(sift_image, sift_inside)
            if cache is not None
            else sift_features(sift_image, sift_inside)
        )
        # back to the frame's pixels (pixel centres at integers at both sizes)
        features = FrameFeatures((found.pixels + 0.5) * sift_factor - 0.5, found.descriptors)
    usable = inside & np.isfinite(depth_small) & (depth_small > 0)
    return _Frame(small, k, depth_small, usable, features)


def _pair_estimate(
    a: _Frame, b: _Frame, head_relative: np.ndarray, config: RefineConfig
) -> tuple[np.ndarray | None, int, str, str]:
    """Frame b placed on frame a with the head checks: (b in a or None, inliers, reason, method).

    SIFT matches first (they survive the zoom of forward motion, where Lucas-Kanade tracks come
    out short and PnP shrinks the step), Lucas-Kanade tracks where SIFT's placement is not used;
    a head that explains either set of inliers is kept.
    """

    def placement(
        pixels: tuple[np.ndarray, np.ndarray], min_inliers: int, min_share: float
    ) -> tuple[np.ndarray | None, int, str]:
        relative, count, reason = place_by_pnp(
            *pixels, a.depth, a.intrinsics, b.intrinsics, config, min_inliers, min_share, head_relative
        )
        return relative, count, reason or _head_disagreement(relative, head_relative, config)

    reasons = []
    if a.features is not None and b.features is not None:
        matches = match_features(a.features, b.features)
        relative, count, reason = placement(matches, config.min_sift_inliers, 0.0)
        if not reason:
            return relative, count, "", "sift"
        if reason.startswith(HEAD_EXPLAINS):
            return None, count, reason, ""
        reasons.append(f"SIFT: {reason}")
    tracks = track_corners(a.gray, b.gray, a.usable, config.max_corners)
    relative, count, reason = placement(tracks, config.min_inliers, config.min_inlier_share)
    if not reason:
        return relative, count, "", "lk"
    reasons.append(f"tracks: {reason}" if reasons else reason)
    return None, count, "; ".join(reasons), ""


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
        feature_cache: keeps frames' SIFT keypoints for the next windows (None: none kept).
            With a cache the frames are prepared in the calling thread, their keypoints taken
            from it (or waited for while :meth:`FeatureCache.prefetch_window` finds them, or
            found here): start the window with ``prefetch_window`` to find new ones in parallel.
        content_mask: [S, H, W] bool, False on padding: where SIFT looks for keypoints, so that
            they depend on the image alone and can be found before the depth exists
            (:meth:`FeatureCache.prefetch_window`). None: ``valid_mask`` (every pixel when
            that is None too).

    Returns:
        :class:`RefinedPoses`.
    """
    config = config or RefineConfig()
    head = np.asarray(cam_to_world, np.float64)
    count = len(head)
    intrinsics = np.asarray(intrinsics, np.float64)
    previous: dict[int, int | None] = {}  # frame -> the previous frame of its camera
    last_of_camera: dict[str, int] = {}
    for k in range(count):
        camera = camera_ids[k] if camera_ids is not None else ""
        previous[k] = last_of_camera.get(camera)
        last_of_camera[camera] = k
    pairs = [(previous[k], k) for k in range(1, count) if previous[k] is not None]

    def prepare(k: int) -> _Frame:
        gray = cv2.cvtColor(np.ascontiguousarray(colors[k]), cv2.COLOR_RGB2GRAY)
        valid = None if valid_mask is None else valid_mask[k]
        content = valid if content_mask is None else content_mask[k]
        return _frame(gray, intrinsics[k], depth[k], valid, content, config, feature_cache)

    def estimate(pair: tuple[int, int]) -> tuple[np.ndarray | None, int, str, str]:
        j, k = pair
        return _pair_estimate(frames[j], frames[k], np.linalg.inv(head[j]) @ head[k], config)

    with ThreadPoolExecutor(max_workers=max(1, min(count, config.threads))) as pool:
        t0 = time.perf_counter()
        if feature_cache is not None and config.sift:
            # Keypoints are cached, in flight (prefetch_window) or detected here; the rest of a
            # frame's preparation is cheaper in this thread than handed to the pool (8 frames
            # with cached keypoints: 1.3 against 2.9 ms on the 2-core CPU; 5 ms on the 16-core
            # GPU host, where the threads mostly wait for the GIL).
            frames = [prepare(k) for k in range(count)]
        else:
            frames = list(pool.map(prepare, range(count)))
        t1 = time.perf_counter()
        estimates = dict(zip(pairs, pool.map(estimate, pairs)))
        t2 = time.perf_counter()
    out = head.copy()
    refined = np.zeros(count, bool)
    inliers = np.zeros(count, np.int64)
    reasons = [""] * count
    methods = [""] * count
    for k in range(1, count):
        j = previous[k]
        if j is None:  # the camera's first frame: the head's pose relative to frame 0
            out[k] = out[0] @ np.linalg.inv(head[0]) @ head[k]
            reasons[k] = "first frame of its camera"
            continue
        relative, inliers[k], reasons[k], methods[k] = estimates[(j, k)]
        if relative is None:
            relative = np.linalg.inv(head[j]) @ head[k]
        else:
            refined[k] = True
        out[k] = out[j] @ relative
    timings = {"features_ms": (t1 - t0) * 1e3, "pairs_ms": (t2 - t1) * 1e3}
    return RefinedPoses(out, refined, inliers, reasons, methods, timings)


def refined_prediction(
    prediction: Any,
    camera_ids: list[str] | None,
    config: RefineConfig,
    feature_cache: FeatureCache | None = None,
    prefetch: bool = True,
) -> tuple[Any, RefinedPoses | None]:
    """A copy of a ``Prediction`` with its poses refined (``cam_to_world`` and ``extrinsics``);
    the prediction itself and None when it carries no images (``colors``) to track in.

    ``prefetch``: start the frames' keypoints in ``feature_cache``'s threads first (False when
    the caller already did, e.g. from ``Predictor.predict(on_model_inputs=...)``)."""
    if getattr(prediction, "colors", None) is None:
        return prediction, None
    valid = getattr(prediction, "valid_mask", None)
    # Where SIFT looks: the padding masks, else the valid mask, else every pixel (as in
    # refine_window_poses, so that prefetched keypoints are the ones it asks for).
    content = content_masks(prediction)
    if content is None:
        content = valid if valid is not None else np.ones(np.shape(prediction.colors)[:3], bool)
    if feature_cache is not None and config.sift and prefetch:
        feature_cache.prefetch_window(prediction.colors, content)
    result = refine_window_poses(
        prediction.colors,
        prediction.depth,
        np.asarray(prediction.model_intrinsics, np.float64),
        prediction.cam_to_world,
        valid,
        camera_ids,
        config,
        feature_cache,
        content,
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
