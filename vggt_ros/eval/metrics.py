"""Trajectory error (APE / RPE through evo) and depth error (AbsRel, RMSE, delta thresholds).

Trajectory error follows the usual SLAM protocol: associate estimated and reference poses by
stamp, align the estimate to the reference (Umeyama: Sim(3) when the estimate's scale is
arbitrary, i.e. VGGT's normalized scale; SE(3) when it is metric), then

* APE: per pose the translation error ``|t_ref - t_est_aligned|`` (metres) and the rotation
  angle of ``R_ref^T R_est_aligned`` (degrees);
* RPE: per pair of poses ``delta`` frames apart, the same errors of the relative motion
  ``(P_i^-1 P_{i+delta})`` between estimate and reference.

Depth error (Eigen et al. 2014 conventions) on pixels where both maps are finite and positive:
AbsRel = mean |d - d*| / d*, SqRel = mean (d - d*)^2 / d*, RMSE = sqrt(mean (d - d*)^2), and
delta_k = fraction with max(d / d*, d* / d) < 1.25^k. With ``median_scale`` the prediction is
first multiplied by median(d*) / median(d) (per frame), as is standard for scale-free methods.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from vggt_ros.mapping.export.trajectory import Trajectory, associate

ALIGNMENTS = ("sim3", "se3", "none")
DELTA_BASE = 1.25


# ------------------------------------------------------------------------------------------------
# Trajectory
# ------------------------------------------------------------------------------------------------
def _stats(values: np.ndarray) -> dict[str, float]:
    v = np.asarray(values, np.float64)
    if v.size == 0:
        return {k: float("nan") for k in ("rmse", "mean", "median", "std", "min", "max")}
    return {
        "rmse": float(np.sqrt(np.mean(v**2))),
        "mean": float(v.mean()),
        "median": float(np.median(v)),
        "std": float(v.std()),
        "min": float(v.min()),
        "max": float(v.max()),
    }


@dataclass
class TrajectoryErrors:
    """Result of :func:`trajectory_errors`.

    Attributes:
        alignment: "sim3", "se3" or "none"; "sim3-origin" / "se3-origin" when the positions are
            collinear (Umeyama undetermined) and the first poses were aligned instead.
        scale: the alignment's scale (1 unless Sim(3)): metres per estimate unit.
        alignment_transform: [4, 4] rigid part applied (after scaling) to the estimate.
        matched: number of associated pose pairs; unmatched: estimated poses with no reference.
        stamps: [N] stamps of the matched pairs.
        ape_trans, ape_rot_deg: [N] per-pose errors (metres, degrees).
        rpe_trans, rpe_rot_deg: [N - delta] per-pair errors; rpe_delta: frames between pairs.
        est_aligned, reference: [N, 3] positions (reference world frame, metres).
        path_length: metres travelled by the matched reference poses.
    """

    alignment: str
    scale: float
    alignment_transform: np.ndarray
    matched: int
    unmatched: int
    stamps: np.ndarray
    ape_trans: np.ndarray
    ape_rot_deg: np.ndarray
    rpe_trans: np.ndarray
    rpe_rot_deg: np.ndarray
    rpe_delta: int
    est_aligned: np.ndarray
    reference: np.ndarray
    path_length: float

    @property
    def ape_percent_of_length(self) -> float:
        """APE translation RMSE as a percentage of the reference path length (NaN if it is 0)."""
        rmse = float(np.sqrt(np.mean(self.ape_trans**2))) if self.ape_trans.size else float("nan")
        return 100.0 * rmse / self.path_length if self.path_length > 0 else float("nan")

    @property
    def static_baseline_rmse(self) -> float:
        """APE RMSE of a trajectory that never moves (identity poses), after its best alignment:
        the RMS distance of the reference positions to their centroid."""
        ref = self.reference
        return float(np.sqrt(np.mean(np.sum((ref - ref.mean(axis=0)) ** 2, axis=1)))) if len(ref) else 0.0

    def summary(self) -> dict[str, Any]:
        """JSON-friendly statistics (rmse, mean, median, std, min, max of each error)."""
        length = self.path_length
        return {
            "alignment": self.alignment,
            "scale": self.scale,
            "matched": self.matched,
            "unmatched": self.unmatched,
            "path_length_m": self.path_length,
            "ape_percent_of_length": self.ape_percent_of_length,
            "static_baseline": {
                "ape_rmse_m": self.static_baseline_rmse,
                "ape_percent_of_length": 100.0 * self.static_baseline_rmse / length if length > 0 else None,
            },
            "rpe_delta_frames": self.rpe_delta,
            "ape_trans_m": _stats(self.ape_trans),
            "ape_rot_deg": _stats(self.ape_rot_deg),
            "rpe_trans_m": _stats(self.rpe_trans),
            "rpe_rot_deg": _stats(self.rpe_rot_deg),
        }


def _to_evo(trajectory: Trajectory):  # -> evo.core.trajectory.PoseTrajectory3D
    """The trajectory as evo's PoseTrajectory3D (evo imported lazily: it is slow)."""
    from evo.core.trajectory import PoseTrajectory3D

    return PoseTrajectory3D(poses_se3=list(trajectory.poses), timestamps=trajectory.stamps.copy())


def trajectory_errors(
    estimate: Trajectory,
    reference: Trajectory,
    alignment: str = "sim3",
    max_diff: float = 0.02,
    rpe_delta: int = 1,
) -> TrajectoryErrors:
    """APE and RPE of ``estimate`` against ``reference`` with evo (see the module docstring).

    Args:
        estimate, reference: poses of the same body (e.g. the camera optical frame) in their
            own world frames.
        alignment: "sim3" (normalized scale), "se3" (metric) or "none" (same world frame).
        max_diff: maximum stamp difference (s) for associating poses.
        rpe_delta: RPE pair distance in (matched) frames.

    Raises:
        ValueError: fewer than 3 associated poses (Sim(3)/SE(3) alignment is undetermined), or
            a bad ``alignment`` name.
    """
    from evo.core import metrics
    from evo.core.geometry import GeometryException

    if alignment not in ALIGNMENTS:
        raise ValueError(f"alignment must be one of {ALIGNMENTS}, got {alignment!r}")
    est, ref = estimate.sorted(), reference.sorted()
    i, j = associate(est.stamps, ref.stamps, max_diff)
    if len(i) < 3:
        raise ValueError(
            f"only {len(i)} estimated pose(s) have a reference pose within {max_diff} s "
            f"({len(est)} estimated, {len(ref)} reference); need at least 3"
        )
    est_m, ref_m = (
        _to_evo(Trajectory(ref.stamps[j], est.poses[i])),
        _to_evo(Trajectory(ref.stamps[j], ref.poses[j])),
    )
    scale, transform = 1.0, np.eye(4)
    if alignment != "none":
        try:
            r, t, s = est_m.align(ref_m, correct_scale=alignment == "sim3")
            scale = float(s) if alignment == "sim3" else 1.0
            transform[:3, :3], transform[:3, 3] = r, t
        except GeometryException:
            # Collinear positions (a robot driving straight) leave the rotation about the line
            # free: anchor on the first pose instead, with the path-length ratio as scale.
            if alignment == "sim3":
                est_len = Trajectory(est_m.timestamps, est.poses[i]).path_length()
                scale = Trajectory(ref_m.timestamps, ref.poses[j]).path_length() / max(est_len, 1e-12)
                est_m.scale(scale)
            transform = np.asarray(est_m.align_origin(ref_m), np.float64)
            alignment = f"{alignment}-origin"

    def run(metric: Any) -> np.ndarray:
        metric.process_data((ref_m, est_m))
        return np.asarray(metric.error, np.float64)

    relation = metrics.PoseRelation
    delta = int(min(rpe_delta, len(i) - 1))
    rpe = {"delta": delta, "delta_unit": metrics.Unit.frames, "all_pairs": False}
    return TrajectoryErrors(
        alignment=alignment,
        scale=scale,
        alignment_transform=transform,
        matched=int(len(i)),
        unmatched=int(len(est) - len(i)),
        stamps=ref.stamps[j],
        ape_trans=run(metrics.APE(relation.translation_part)),
        ape_rot_deg=run(metrics.APE(relation.rotation_angle_deg)),
        rpe_trans=run(metrics.RPE(relation.translation_part, **rpe)),
        rpe_rot_deg=run(metrics.RPE(relation.rotation_angle_deg, **rpe)),
        rpe_delta=delta,
        est_aligned=np.asarray(est_m.positions_xyz, np.float64),
        reference=np.asarray(ref_m.positions_xyz, np.float64),
        path_length=Trajectory(ref.stamps[j], ref.poses[j]).path_length(),
    )


# ------------------------------------------------------------------------------------------------
# Depth
# ------------------------------------------------------------------------------------------------
@dataclass
class DepthErrors:
    """Depth error of one frame or of many pooled (see :func:`pool_depth_errors`).

    Attributes:
        abs_rel, sq_rel, rmse, rmse_log: see the module docstring (rmse in metres when the
            ground truth is metric); rmse_log uses natural logs.
        delta1, delta2, delta3: fractions in [0, 1] below 1.25, 1.25^2, 1.25^3.
        scale: factor applied to the prediction (1 without median scaling; mean over frames
            when pooled).
        count: evaluated pixels.
    """

    abs_rel: float
    sq_rel: float
    rmse: float
    rmse_log: float
    delta1: float
    delta2: float
    delta3: float
    scale: float
    count: int
    # Sums kept so frames can be pooled pixel-weighted (not a mean of per-frame means).
    _sums: dict[str, float] = field(default_factory=dict, repr=False)

    def summary(self) -> dict[str, float]:
        out = asdict(self)
        out.pop("_sums")
        return out


def depth_valid_mask(
    pred: np.ndarray, gt: np.ndarray, min_depth: float = 1e-3, max_depth: float | None = None
) -> np.ndarray:
    """Pixels where both depths are finite and inside [min_depth, max_depth] (ground truth)."""
    ok = np.isfinite(pred) & np.isfinite(gt) & (pred > 0) & (gt >= min_depth)
    if max_depth is not None:
        ok &= gt <= max_depth
    return ok


def depth_errors(
    pred: np.ndarray,
    gt: np.ndarray,
    median_scale: bool = False,
    mask: np.ndarray | None = None,
    min_depth: float = 1e-3,
    max_depth: float | None = None,
) -> DepthErrors:
    """Depth error of one prediction against ground truth of the same size.

    Args:
        pred, gt: [H, W] depth (gt in metres); NaN / <= 0 mark missing values.
        median_scale: multiply ``pred`` by median(gt) / median(pred) over the valid pixels.
        mask: optional extra [H, W] bool selection.

    Raises:
        ValueError: shapes differ or no pixel is valid.
    """
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in size")
    ok = depth_valid_mask(pred, gt, min_depth, max_depth)
    if mask is not None:
        ok &= mask
    if not ok.any():
        raise ValueError("no pixel has both a valid prediction and a valid ground-truth depth")
    p, g = pred[ok], gt[ok]
    scale = float(np.median(g) / np.median(p)) if median_scale else 1.0
    p = p * scale
    ratio = np.maximum(p / g, g / p)
    sums = {
        "abs_rel": float(np.sum(np.abs(p - g) / g)),
        "sq_rel": float(np.sum((p - g) ** 2 / g)),
        "sq": float(np.sum((p - g) ** 2)),
        "sq_log": float(np.sum((np.log(p) - np.log(g)) ** 2)),
        **{f"delta{k}": float(np.sum(ratio < DELTA_BASE**k)) for k in (1, 2, 3)},
        "scale": scale,
        "frames": 1.0,
    }
    return _from_sums(sums, int(ok.sum()))


def _from_sums(sums: dict[str, float], n: int) -> DepthErrors:
    return DepthErrors(
        abs_rel=sums["abs_rel"] / n,
        sq_rel=sums["sq_rel"] / n,
        rmse=float(np.sqrt(sums["sq"] / n)),
        rmse_log=float(np.sqrt(sums["sq_log"] / n)),
        delta1=sums["delta1"] / n,
        delta2=sums["delta2"] / n,
        delta3=sums["delta3"] / n,
        scale=sums["scale"] / sums["frames"],
        count=n,
        _sums=sums,
    )


def pool_depth_errors(frames: list[DepthErrors]) -> DepthErrors:
    """Pixel-weighted pooling of per-frame errors (every pixel counts once)."""
    if not frames:
        raise ValueError("no depth errors to pool")
    keys = frames[0]._sums.keys()
    sums = {k: float(sum(f._sums[k] for f in frames)) for k in keys}
    return _from_sums(sums, int(sum(f.count for f in frames)))


def relative_depth_error_map(pred: np.ndarray, gt: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """[H, W] signed relative error (scale * pred - gt) / gt; NaN where either is invalid."""
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    out = np.full(gt.shape, np.nan)
    ok = depth_valid_mask(pred, gt)
    out[ok] = (scale * pred[ok] - gt[ok]) / gt[ok]
    return out
