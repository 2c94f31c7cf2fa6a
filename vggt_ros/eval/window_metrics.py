"""Accuracy of one window's prediction against ground truth, the way the model card reports it.

VGGT predicts each window in its own frame (camera 0) at its own scale, so window metrics use
only what that frame and scale cannot change:

* depth AbsRel after aligning the whole window's depth with one median scale
  (``median(gt) / median(pred)`` over the window's valid pixels), and delta < 1.25;
* the relative rotation error between every pair of frames of the window, in degrees
  (``angle(R_pred_ij^T R_gt_ij)``, with ``R_ij`` the rotation from frame j's camera to frame i's);
* the relative translation direction error of every pair, in degrees (scale-free);
* the baseline length error of every pair against the window's own depth: the predicted
  baseline times the depth's median scale against the true baseline, as ``100 * |ln ratio|``
  (about a percentage when small). Depth AbsRel and the translation direction can both be right
  while the cameras move too far or too little for the depth they see, and chaining windows into
  a path needs the two to agree.

All functions take numpy arrays (float64 inside).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class WindowScores:
    """Scores of one window (see the module docstring); NaN when not computable."""

    abs_rel: float
    delta1: float
    rotation_deg_mean: float
    rotation_deg_max: float
    translation_deg_mean: float
    frames: int
    # The same rotation error for the "camera did not move" prediction (identity rotations):
    # what a camera head that learned nothing scores on this window.
    rotation_deg_identity: float = float("nan")
    # 100 * mean |ln(depth scale * predicted baseline / true baseline)| over the frame pairs
    # whose true baseline is at least MIN_BASELINE_FRACTION of the median true depth; NaN
    # without ground-truth depth or without such a pair (e.g. turning in place).
    baseline_error_pct: float = float("nan")

    def to_dict(self) -> dict[str, float]:
        return dict(vars(self))


# Pairs whose true baseline is shorter than this share of the window's median true depth are left
# out of the baseline length error: their length is mostly rounding and jitter (a camera turning
# in place), and a ratio of two near-zero lengths says nothing about the scale.
MIN_BASELINE_FRACTION = 0.02


def _depth_pixels(
    pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray] | None:
    """The predicted and true depths (float64, flat) of the pixels where both are finite and
    positive (and ``valid``); None with fewer than 10 such pixels."""
    pred = np.asarray(pred, np.float64)
    gt = np.asarray(gt, np.float64)
    ok = np.isfinite(pred) & np.isfinite(gt) & (pred > 0) & (gt > 0)
    if valid is not None:
        ok &= np.asarray(valid, bool)
    if ok.sum() < 10:
        return None
    return pred[ok], gt[ok]


def window_depth_errors(
    pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None
) -> tuple[float, float]:
    """AbsRel and delta<1.25 of a window's depth after one median scale.

    Args:
        pred, gt: [S, H, W] depth (pred in any scale); valid: [S, H, W] bool (default: both
            finite and positive).
    """
    pixels = _depth_pixels(pred, gt, valid)
    if pixels is None:
        return float("nan"), float("nan")
    return _scaled_depth_errors(*pixels, _median_scale(*pixels))


# Default true-depth ranges (metres) of depth_error_by_range: near objects, arm's length, a room,
# across a large room, far walls.
DEPTH_RANGE_EDGES: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 4.0, float("inf"))


@dataclass
class DepthErrorByRange:
    """A window's AbsRel (after its one median scale) split by true-depth range.

    ``edges`` are the K + 1 bin edges in metres (the last may be ``inf``); the other fields have
    one entry per bin: ``pixels`` counted, ``error_sum`` of the pixels' |scaled pred - gt| / gt
    (their sum over bins divided by the pixel total is the window's AbsRel) and the bin's own
    ``abs_rel`` (NaN for an empty bin).
    """

    edges: list[float]
    pixels: list[int]
    error_sum: list[float]
    abs_rel: list[float]


def depth_error_by_range(
    pred: np.ndarray,
    gt: np.ndarray,
    valid: np.ndarray | None = None,
    edges: tuple[float, ...] = DEPTH_RANGE_EDGES,
) -> DepthErrorByRange | None:
    """Where a window's depth error comes from: the window AbsRel of :func:`window_depth_errors`
    (one median scale for the whole window) split by the pixels' true depth.

    Args:
        pred, gt: [S, H, W] depth (pred in any scale, gt in metres); valid: [S, H, W] bool.
        edges: increasing bin edges in metres; pixels outside them are scaled with the rest but
            not counted in any bin.

    Returns:
        The split, or None with fewer than 10 scorable pixels.
    """
    bounds = np.asarray(edges, np.float64)
    if bounds.ndim != 1 or bounds.size < 2 or np.any(np.diff(bounds) <= 0):
        raise ValueError(f"edges must be at least two increasing values, got {edges}")
    pixels = _depth_pixels(pred, gt, valid)
    if pixels is None:
        return None
    p, g = pixels
    err = np.abs(p * _median_scale(p, g) - g) / g
    which = np.searchsorted(bounds, g, side="right") - 1  # bin i holds edges[i] <= gt < edges[i+1]
    inside = (which >= 0) & (which < bounds.size - 1)
    bins = bounds.size - 1
    count = np.bincount(which[inside], minlength=bins)
    total = np.bincount(which[inside], weights=err[inside], minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return DepthErrorByRange(
        edges=[float(e) for e in bounds],
        pixels=[int(c) for c in count],
        error_sum=[float(s) for s in total],
        abs_rel=[float(m) for m in mean],
    )


def _median_scale(pred: np.ndarray, gt: np.ndarray) -> float:
    """True / predicted depth scale of a window: ``median(gt) / median(pred)``."""
    return float(np.median(gt) / np.median(pred))


def _scaled_depth_errors(pred: np.ndarray, gt: np.ndarray, scale: float) -> tuple[float, float]:
    """AbsRel and delta<1.25 of flat depths after multiplying the prediction by ``scale``."""
    p = pred * scale
    abs_rel = float(np.mean(np.abs(p - gt) / gt))
    delta1 = float(np.mean(np.maximum(p / gt, gt / p) < 1.25))
    return abs_rel, delta1


def _angle_deg(rotation: np.ndarray) -> np.ndarray:
    cos = (np.trace(rotation, axis1=-2, axis2=-1) - 1.0) / 2.0
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def relative_pose_errors(pred_c2w: np.ndarray, gt_c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotation and translation-direction errors (degrees) of every frame pair i < j.

    Args:
        pred_c2w, gt_c2w: [S, 4, 4] camera-to-world poses (each in its own world and scale).

    Returns:
        rotation errors [P] and translation direction errors [P] (NaN where the true or the
        predicted baseline is zero), P = S (S - 1) / 2.
    """
    P = np.asarray(pred_c2w, np.float64)
    G = np.asarray(gt_c2w, np.float64)
    s = P.shape[0]
    rot, trans = [], []
    for i in range(s):
        for j in range(i + 1, s):
            rel_p = np.linalg.inv(P[i]) @ P[j]  # camera j -> camera i
            rel_g = np.linalg.inv(G[i]) @ G[j]
            rot.append(_angle_deg(rel_p[:3, :3].T @ rel_g[:3, :3]))
            tp, tg = rel_p[:3, 3], rel_g[:3, 3]
            npn, ngn = np.linalg.norm(tp), np.linalg.norm(tg)
            if npn < 1e-9 or ngn < 1e-9:
                trans.append(np.nan)
            else:
                trans.append(np.degrees(np.arccos(np.clip(tp @ tg / (npn * ngn), -1.0, 1.0))))
    return np.asarray(rot), np.asarray(trans)


def baseline_length_errors(
    pred_c2w: np.ndarray, gt_c2w: np.ndarray, depth_scale: float, min_baseline: float
) -> np.ndarray:
    """``100 * |ln(depth_scale * |t_pred_ij| / |t_gt_ij|)|`` of every frame pair i < j whose true
    baseline is at least ``min_baseline``.

    Args:
        pred_c2w, gt_c2w: [S, 4, 4] camera-to-world poses; the predicted ones in the units of the
            predicted depth, the true ones in metres.
        depth_scale: true / predicted depth scale of the window (``median(gt) / median(pred)``).
        min_baseline: shortest true baseline (metres) that is scored.

    Returns:
        [P'] errors of the scored pairs. Pairs predicted not to move at all (a baseline of
        exactly zero, e.g. the identity-pose baseline) have no length to compare and are left
        out too.
    """
    P = np.asarray(pred_c2w, np.float64)[:, :3, 3]
    G = np.asarray(gt_c2w, np.float64)[:, :3, 3]
    i, j = np.triu_indices(len(P), k=1)
    true = np.linalg.norm(G[j] - G[i], axis=1)
    predicted = depth_scale * np.linalg.norm(P[j] - P[i], axis=1)
    keep = (true >= min_baseline) & (predicted > 0)
    return 100.0 * np.abs(np.log(predicted[keep] / true[keep]))


def score_window(
    pred_depth: np.ndarray,
    gt_depth: np.ndarray | None,
    pred_c2w: np.ndarray,
    gt_c2w: np.ndarray,
    valid: np.ndarray | None = None,
) -> WindowScores:
    """All scores of one window (depth ones and the baseline length error NaN without
    ground-truth depth)."""
    abs_rel = delta1 = baseline = float("nan")
    pixels = None if gt_depth is None else _depth_pixels(pred_depth, gt_depth, valid)
    if pixels is not None:
        scale = _median_scale(*pixels)
        abs_rel, delta1 = _scaled_depth_errors(*pixels, scale)
        errors = baseline_length_errors(
            pred_c2w, gt_c2w, scale, MIN_BASELINE_FRACTION * float(np.median(pixels[1]))
        )
        baseline = float(errors.mean()) if errors.size else float("nan")
    rot, trans = relative_pose_errors(pred_c2w, gt_c2w)
    still = np.repeat(np.eye(4)[None], len(gt_c2w), 0)
    rot_identity, _ = relative_pose_errors(still, gt_c2w)
    return WindowScores(
        abs_rel=abs_rel,
        delta1=delta1,
        rotation_deg_mean=float(rot.mean()) if rot.size else float("nan"),
        rotation_deg_max=float(rot.max()) if rot.size else float("nan"),
        translation_deg_mean=float(np.nanmean(trans)) if np.isfinite(trans).any() else float("nan"),
        frames=int(pred_c2w.shape[0]),
        rotation_deg_identity=float(rot_identity.mean()) if rot_identity.size else float("nan"),
        baseline_error_pct=baseline,
    )


def summarize(scores: list[WindowScores]) -> dict[str, float]:
    """Means over windows (NaN-aware) and the window count."""
    if not scores:
        return {"windows": 0}
    out: dict[str, float] = {"windows": len(scores)}
    keys = (
        "abs_rel",
        "delta1",
        "rotation_deg_mean",
        "rotation_deg_max",
        "translation_deg_mean",
        "rotation_deg_identity",
        "baseline_error_pct",
    )
    for key in keys:
        values = np.array([getattr(s, key) for s in scores], np.float64)
        out[key] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
    return out
