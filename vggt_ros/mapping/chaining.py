"""Chaining windows into one global frame with a robust Sim(3) from their shared keyframes.

Each VGGT window comes in its own frame (its first camera) and its own normalized scale. The
global frame G is the first accepted window's frame and scale. A later window W shares
keyframes with the map; for each shared keyframe two kinds of correspondence fix the
similarity ``G <- W``:

* its camera centre, as predicted by W and as already mapped in G;
* its dense points: the same pixel of the same image unprojected with W's depth and camera and
  with the stored (G) depth and camera. Pixels correspond exactly because the images are the
  same; both predictions' confidences weight the pair.

The robust fit (``vggt_ros.geometry.alignment.robust_umeyama``) gives inliers and a residual;
residuals are reported relative to the shared keyframes' median depth, so thresholds do not
depend on the (arbitrary) scale of G. A window whose residual or inlier share fails the
thresholds is rejected and nothing of it is stored.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from vggt_ros.geometry.alignment import Sim3, robust_umeyama
from vggt_ros.mapping.config import ChainingConfig

# Dense maps of this many most recent mapped keyframes are kept for chaining; poses of all.
DEFAULT_DENSE_MEMORY = 64


@dataclass
class MappedKeyframe:
    """A keyframe in the global frame G.

    Attributes:
        pose: [4, 4] camera optical frame -> G (rigid, translation in G units).
        depth: [Hm, Wm] float32 z-depth in G units, or None once evicted.
        conf: [Hm, Wm] float32 depth confidence, or None.
        valid: [Hm, Wm] bool usable pixels, or None.
        model_intrinsics: [3, 3] of the depth map.
        window_id: the window that mapped it; segment: its map segment.
    """

    pose: np.ndarray
    depth: np.ndarray | None
    conf: np.ndarray | None
    valid: np.ndarray | None
    model_intrinsics: np.ndarray
    window_id: int
    segment: int


@dataclass(frozen=True)
class ChainOutcome:
    """Result of aligning one window.

    Attributes:
        accepted: passes every test.
        reason: "first window", "ok" or what failed.
        transform: G <- W (the attempted one when rejected).
        residual: inlier RMS / median shared depth (dimensionless); inf when not computed.
        inlier_ratio: confidence-weighted share of inlier correspondences.
        num_shared: mapped keyframes used.
        center_residual: largest shared camera-centre residual / median shared depth.
        median_relative_residual: confidence-weighted median over the dense correspondences of
            each point's residual divided by its depth in G (an AbsRel-like disagreement between
            the window and the map after the fit; NaN without dense correspondences).
    """

    accepted: bool
    reason: str
    transform: Sim3
    residual: float
    inlier_ratio: float
    num_shared: int
    center_residual: float = 0.0
    median_relative_residual: float = float("nan")


def weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    """Median of ``values`` [N] under non-negative ``weights`` [N] (NaN when all weights are 0)."""
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    if len(values) == 0 or cumulative[-1] <= 0:
        return float("nan")
    return float(values[order][np.searchsorted(cumulative, 0.5 * cumulative[-1])])


def median_relative_residual(residuals: np.ndarray, depths: np.ndarray, weights: np.ndarray) -> float:
    """Weighted median of ``residuals`` [N] / ``depths`` [N] (same units; depths floored at
    1e-9): how far, relative to their depth, an alignment leaves its points from their targets."""
    return weighted_median(residuals / np.maximum(depths, 1e-9), weights)


def unproject_pixels(
    depth: np.ndarray, intrinsics: np.ndarray, rows: np.ndarray, cols: np.ndarray
) -> np.ndarray:
    """[N, 3] camera-frame points of pixels (cols = x, rows = y) with z = depth[rows, cols]."""
    z = depth[rows, cols].astype(np.float64)
    fx, fy, cx, cy, skew = (
        intrinsics[0, 0],
        intrinsics[1, 1],
        intrinsics[0, 2],
        intrinsics[1, 2],
        intrinsics[0, 1],
    )
    y = (rows - cy) / fy
    x = (cols - cx - skew * y) / fx
    return np.stack((x * z, y * z, z), axis=1)


PERCENTILE_SAMPLES = 16384
CANDIDATES_PER_POINT = 4  # pixels sampled per dense correspondence wanted (see _dense_pairs)


def _percentile(values: np.ndarray, pct: float) -> float:
    """``np.percentile`` of a flat array, from an evenly strided subsample of at most
    :data:`PERCENTILE_SAMPLES` values: a confidence cut needs no exact order statistic, and a
    full 350x518 map costs ~2 ms per call (four keyframes, two maps each, on every window)."""
    step = max(1, -(-len(values) // PERCENTILE_SAMPLES))
    return float(np.percentile(values[::step], pct))


def _to_frame(pose: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ pose[:3, :3].T + pose[:3, 3]


class WindowChainer:
    """Holds the mapped keyframes and aligns new windows to them.

    The prediction passed in is anything with VGGT Prediction's ``cam_to_world`` [S,4,4],
    ``depth``/``depth_conf`` [S,Hm,Wm], ``valid_mask`` and ``model_intrinsics`` [S,3,3].
    """

    def __init__(
        self, config: ChainingConfig, dense_memory: int = DEFAULT_DENSE_MEMORY, seed: int = 0
    ) -> None:
        self.config = config
        self.dense_memory = dense_memory
        self._seed = seed
        self.reset()

    def reset(self) -> None:
        self.keyframes: OrderedDict[int, MappedKeyframe] = OrderedDict()

    @property
    def empty(self) -> bool:
        return not self.keyframes

    def has_dense(self, keyframe_id: int) -> bool:
        kf = self.keyframes.get(keyframe_id)
        return kf is not None and kf.depth is not None

    def align(self, prediction: object, keyframe_ids: list[int], window_id: int = 0) -> ChainOutcome:
        """Estimate G <- W for a window whose frame i is keyframe ``keyframe_ids[i]``."""
        if self.empty:
            return ChainOutcome(True, "first window", Sim3.identity(), 0.0, 1.0, 0)
        cfg = self.config
        shared = [(i, k) for i, k in enumerate(keyframe_ids) if self.has_dense(k)]
        if len(shared) < cfg.min_shared_keyframes:
            return ChainOutcome(
                False,
                f"only {len(shared)} mapped keyframe(s) in the window (need {cfg.min_shared_keyframes})",
                Sim3.identity(),
                float("inf"),
                0.0,
                len(shared),
            )
        rng = np.random.default_rng([self._seed, window_id])
        src, dst, weight, depths = [], [], [], []
        centers_w = np.array([prediction.cam_to_world[i][:3, 3] for i, _ in shared])
        centers_g = np.array([self.keyframes[k].pose[:3, 3] for _, k in shared])
        for i, k in shared:
            pair = self._dense_pairs(prediction, i, self.keyframes[k], rng)
            if pair is not None:
                src.append(pair[0])
                dst.append(pair[1])
                weight.append(pair[2])
                depths.append(pair[3])
        n_dense = sum(len(s) for s in src)
        if n_dense:
            scene = float(np.median(np.concatenate(depths)))
            w_dense = np.concatenate(weight)
            w_dense *= (1.0 - cfg.center_weight) / w_dense.sum()
            w_center = np.full(len(shared), cfg.center_weight / len(shared))
            src_all = np.concatenate([centers_w, *src])
            dst_all = np.concatenate([centers_g, *dst])
            w_all = np.concatenate([w_center, w_dense])
        else:
            spread = np.linalg.norm(centers_g - centers_g.mean(axis=0), axis=1)
            scene = float(max(spread.max(), 1e-9))
            src_all, dst_all, w_all = centers_w, centers_g, np.ones(len(shared))
        if int((w_all > 0).sum()) < 3:
            return ChainOutcome(
                False, "too few correspondences to align", Sim3.identity(), float("inf"), 0.0, len(shared)
            )
        try:
            fit = robust_umeyama(
                src_all,
                dst_all,
                w_all,
                with_scale=True,
                inlier_threshold=cfg.inlier_threshold * scene,
                method=cfg.robust_method,
                rng=rng,
                scale_estimator=cfg.scale_estimator,
            )
        except ValueError as err:
            return ChainOutcome(
                False, f"alignment failed: {err}", Sim3.identity(), float("inf"), 0.0, len(shared)
            )
        inlier_ratio = float((w_all * fit.inliers).sum() / w_all.sum())
        residual = fit.rms / scene
        center_residual = float(fit.residuals[: len(shared)].max() / scene) if n_dense else residual
        relative = float("nan")
        if n_dense:
            relative = median_relative_residual(
                fit.residuals[len(shared) :], np.concatenate(depths), w_all[len(shared) :]
            )
        reasons = []
        if not np.isfinite(residual) or residual > cfg.max_residual:
            reasons.append(f"residual {residual:.4f} > {cfg.max_residual}")
        if inlier_ratio < cfg.min_inlier_ratio:
            reasons.append(f"inlier share {inlier_ratio:.2f} < {cfg.min_inlier_ratio}")
        if np.isfinite(relative) and relative > cfg.max_median_relative_residual:
            reasons.append(
                f"points disagree by {relative:.3f} of their depth (median) > "
                f"{cfg.max_median_relative_residual}"
            )
        if n_dense and center_residual > cfg.max_center_residual:
            reasons.append(
                f"shared camera centres disagree ({center_residual:.4f} > {cfg.max_center_residual})"
            )
        accepted = not reasons
        return ChainOutcome(
            accepted,
            "ok" if accepted else "; ".join(reasons),
            fit.transform,
            float(residual),
            inlier_ratio,
            len(shared),
            center_residual,
            relative,
        )

    def _dense_pairs(
        self, prediction: object, i: int, mapped: MappedKeyframe, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """Pixel-for-pixel 3D pairs (W points, G points, weights, G depths) of one keyframe.

        The pairs are drawn from a random sample of :data:`CANDIDATES_PER_POINT` x
        ``points_per_keyframe`` pixels: testing all 181,300 pixels of a 350x518 map for validity
        and confidence took about a third of the alignment's time (four shared keyframes per
        window; docs/benchmarks.md), and the sample's confidence percentiles are close to the
        image's. Where fewer valid pixels than needed survive in the sample (masked sky, a
        sparse prediction), every pixel is tested.
        """
        depth_w = np.asarray(prediction.depth[i])
        if mapped.depth is None or depth_w.shape != mapped.depth.shape:
            # Same image, different model size (a rig whose first camera changed): no pixel
            # correspondence; the camera centre still counts.
            return None
        needed = self.config.points_per_keyframe
        height, width = depth_w.shape
        pixels = height * width
        sample = rng.choice(pixels, min(pixels, CANDIDATES_PER_POINT * needed), replace=False)
        picked = self._confident_pixels(prediction, i, mapped, sample)
        if len(sample) < pixels and (picked is None or len(picked) < needed):
            picked = self._confident_pixels(prediction, i, mapped, np.arange(pixels))
        if picked is None or len(picked) == 0:
            return None
        if len(picked) > needed:
            picked = picked[rng.choice(len(picked), needed, replace=False)]
        rows, cols = np.divmod(picked, width)
        conf_w = np.asarray(prediction.depth_conf[i])
        p_w = _to_frame(
            np.asarray(prediction.cam_to_world[i]),
            unproject_pixels(depth_w, np.asarray(prediction.model_intrinsics[i]), rows, cols),
        )
        p_g = _to_frame(mapped.pose, unproject_pixels(mapped.depth, mapped.model_intrinsics, rows, cols))
        w = np.sqrt(np.maximum(conf_w[rows, cols], 0) * np.maximum(mapped.conf[rows, cols], 0)).astype(
            np.float64
        )
        return p_w, p_g, w, mapped.depth[rows, cols].astype(np.float64)

    def _confident_pixels(
        self, prediction: object, i: int, mapped: MappedKeyframe, pixels: np.ndarray
    ) -> np.ndarray | None:
        """The flat pixel indices among ``pixels`` valid in both predictions and above the
        confidence percentile in both; None when fewer than 10 are valid."""
        depth_w = np.asarray(prediction.depth[i]).ravel()[pixels]
        conf_w = np.asarray(prediction.depth_conf[i]).ravel()[pixels]
        valid_w = np.asarray(prediction.valid_mask[i]).ravel()[pixels]
        depth_g = mapped.depth.ravel()[pixels]
        conf_g = mapped.conf.ravel()[pixels]
        ok = (
            valid_w
            & np.isfinite(depth_w)
            & (depth_w > 0)
            & np.isfinite(conf_w)
            & mapped.valid.ravel()[pixels]
            & np.isfinite(depth_g)
            & (depth_g > 0)
        )
        if ok.sum() < 10:
            return None
        pct = self.config.conf_percentile
        ok &= conf_w >= _percentile(conf_w[ok], pct)
        ok &= conf_g >= _percentile(conf_g[ok], pct)
        return pixels[ok]

    def commit(
        self, prediction: object, keyframe_ids: list[int], transform: Sim3, window_id: int, segment: int
    ) -> list[int]:
        """Store the window's keyframes not yet mapped, expressed in G; returns their ids.

        Keyframes already mapped keep their pose: published poses do not jump, and the next
        window chains to the same geometry the map was built from.
        """
        added = []
        for i, k in enumerate(keyframe_ids):
            if k in self.keyframes:
                continue
            self.keyframes[k] = MappedKeyframe(
                pose=transform.transform_poses(np.asarray(prediction.cam_to_world[i], np.float64)),
                depth=(np.asarray(prediction.depth[i], np.float32) * transform.scale).astype(np.float32),
                conf=np.asarray(prediction.depth_conf[i], np.float32).copy(),
                valid=np.asarray(prediction.valid_mask[i], bool).copy(),
                model_intrinsics=np.asarray(prediction.model_intrinsics[i], np.float64).copy(),
                window_id=window_id,
                segment=segment,
            )
            added.append(k)
        self._evict_dense()
        return added

    def _evict_dense(self) -> None:
        dense = [k for k, kf in self.keyframes.items() if kf.depth is not None]
        for k in dense[: max(0, len(dense) - self.dense_memory)]:
            kf = self.keyframes[k]
            kf.depth = kf.conf = kf.valid = None

    def median_depth(self, keyframe_id: int) -> float:
        """Median valid depth (G units) of a mapped keyframe, NaN without dense data."""
        kf = self.keyframes.get(keyframe_id)
        if kf is None or kf.depth is None:
            return float("nan")
        ok = kf.valid & np.isfinite(kf.depth) & (kf.depth > 0)
        return float(np.median(kf.depth[ok])) if ok.any() else float("nan")
