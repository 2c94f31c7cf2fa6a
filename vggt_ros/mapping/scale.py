"""Metric scale: metres per unit of the chained (normalized) map frame.

Every metric source turns one accepted window into ratio samples ``metres / map units``:

* odometry: distances between keyframe camera positions in odom (metres) over the same
  distances between their chained positions; pairs with less than ``min_baseline_m`` motion are
  skipped (their ratio is dominated by noise);
* depth: per keyframe, the median over confident pixels of sensor depth / predicted depth;
* rig: per keyframe time, the known distance between two cameras (from their camera_to_base)
  over their predicted distance;
* fixed / none: no samples.

The estimate is the median of the newest ``history`` samples in log space (robust to outlier
samples, smoothed over windows); its sigma is the standard error of that median from the
median absolute deviation, ``1.4826 * MAD * sqrt(pi / 2) / sqrt(n)``.
"""

from __future__ import annotations

from collections import deque

import cv2
import numpy as np

from vggt_ros.mapping.config import ScaleConfig
from vggt_ros.mapping.types import ScaleEstimate

MAD_TO_SIGMA = 1.4826
# Asymptotic standard error of a median relative to that of a mean (Gaussian data).
MEDIAN_EFFICIENCY = float(np.sqrt(np.pi / 2.0))


class ScaleEstimator:
    """Accumulates scale samples and reports the current :class:`ScaleEstimate`."""

    def __init__(self, config: ScaleConfig) -> None:
        self.config = config
        self._log_samples: deque[float] = deque(maxlen=config.history)

    def reset(self) -> None:
        self._log_samples.clear()

    def add_samples(self, ratios: np.ndarray | list[float]) -> int:
        """Add ``metres / map unit`` ratios (non-finite or non-positive ones are dropped).

        Returns:
            The number of samples kept.
        """
        r = np.asarray(ratios, np.float64).reshape(-1)
        r = r[np.isfinite(r) & (r > 0)]
        self._log_samples.extend(np.log(r).tolist())
        return int(r.size)

    @property
    def num_samples(self) -> int:
        return len(self._log_samples)

    def estimate(self) -> ScaleEstimate:
        cfg = self.config
        if cfg.source == "none":
            return ScaleEstimate(1.0, 0.0, "none", False, 0)
        if cfg.source == "fixed":
            return ScaleEstimate(cfg.fixed_factor, 0.0, "fixed", True, 0)
        n = len(self._log_samples)
        if n == 0:
            return ScaleEstimate(1.0, float("inf"), cfg.source, False, 0)
        logs = np.fromiter(self._log_samples, np.float64, n)
        center = float(np.median(logs))
        mad = float(np.median(np.abs(logs - center)))
        value = float(np.exp(center))
        # sigma of log(scale) -> of scale by the first-order delta method.
        sigma = value * MAD_TO_SIGMA * mad * MEDIAN_EFFICIENCY / np.sqrt(n) if n > 1 else float("inf")
        return ScaleEstimate(value, float(sigma), cfg.source, n >= cfg.min_samples, n)


def odometry_ratios(
    map_positions: np.ndarray, odom_positions: np.ndarray, min_baseline_m: float
) -> np.ndarray:
    """Scale samples from every pair of keyframes with enough odometry motion.

    Args:
        map_positions: [K, 3] camera (or base) positions in the chained map frame (map units).
        odom_positions: [K, 3] the same points in the odom frame (metres).
        min_baseline_m: pairs closer than this in odom are skipped.

    Returns:
        [P] ratios ``|odom baseline| / |map baseline|``.
    """
    a = np.asarray(map_positions, np.float64)
    b = np.asarray(odom_positions, np.float64)
    i, j = np.triu_indices(len(a), k=1)
    d_map = np.linalg.norm(a[i] - a[j], axis=1)
    d_odom = np.linalg.norm(b[i] - b[j], axis=1)
    keep = (d_odom >= max(min_baseline_m, 1e-9)) & (d_map > 1e-12)
    return d_odom[keep] / d_map[keep]


def depth_ratio(
    predicted: np.ndarray,
    confidence: np.ndarray,
    sensor: np.ndarray,
    conf_percentile: float,
    depth_min_m: float,
    depth_max_m: float,
    min_pixels: int = 50,
) -> float:
    """One scale sample: median of sensor / predicted depth over confident, measured pixels.

    Args:
        predicted: [H, W] predicted z-depth in map units.
        confidence: [H, W] its confidence.
        sensor: [H', W'] metric depth in metres; resampled (nearest) to [H, W] when sizes differ.
        conf_percentile: only pixels above this percentile of the valid confidences.
        depth_min_m, depth_max_m: valid sensor range.
        min_pixels: fewer usable pixels give NaN.

    Returns:
        The ratio (metres per map unit), or NaN when too few pixels qualify.
    """
    h, w = predicted.shape
    sensor = np.asarray(sensor, np.float32)
    if sensor.shape != (h, w):
        sensor = cv2.resize(sensor, (w, h), interpolation=cv2.INTER_NEAREST)
    valid = (
        np.isfinite(predicted)
        & (predicted > 0)
        & np.isfinite(confidence)
        & np.isfinite(sensor)
        & (sensor >= depth_min_m)
        & (sensor <= depth_max_m)
    )
    if valid.sum() < min_pixels:
        return float("nan")
    valid &= confidence >= np.percentile(confidence[valid], conf_percentile)
    if valid.sum() < min_pixels:
        return float("nan")
    return float(np.median(sensor[valid] / predicted[valid]))


def rig_ratios(map_positions: np.ndarray, metric_positions: np.ndarray, min_baseline_m: float) -> np.ndarray:
    """Scale samples from the cameras of one keyframe time with known extrinsics.

    Args:
        map_positions: [C, 3] predicted camera positions (map units).
        metric_positions: [C, 3] the same cameras in base_link from camera_to_base (metres).
        min_baseline_m: camera pairs closer than this are skipped.
    """
    return odometry_ratios(map_positions, metric_positions, min_baseline_m)
