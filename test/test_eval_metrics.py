"""Metrics against hand-computed cases: depth errors, APE/RPE with each alignment, TUM files."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from vggt_ros.eval.metrics import depth_errors, pool_depth_errors, relative_depth_error_map, trajectory_errors
from vggt_ros.mapping.export.trajectory import Trajectory, associate, interpolate, read_tum, write_tum


def straight_line(n: int = 10, step: float = 1.0) -> Trajectory:
    poses = np.tile(np.eye(4), (n, 1, 1))
    poses[:, 0, 3] = step * np.arange(n)
    return Trajectory(np.arange(n) * 0.1, poses)


def random_trajectory(n: int = 20, seed: int = 0) -> Trajectory:
    rng = np.random.default_rng(seed)
    poses = np.tile(np.eye(4), (n, 1, 1))
    poses[:, :3, :3] = Rotation.random(n, random_state=seed).as_matrix()
    poses[:, :3, 3] = np.cumsum(rng.normal(size=(n, 3)), axis=0)
    return Trajectory(np.arange(n) * 0.1, poses)


# ------------------------------------------------------------------------------------------------
# Depth
# ------------------------------------------------------------------------------------------------
def test_depth_errors_hand_computed() -> None:
    # pred 2 everywhere; gt 1, 2, 4 and one missing pixel.
    pred = np.full((2, 2), 2.0)
    gt = np.array([[1.0, 2.0], [4.0, np.nan]])
    e = depth_errors(pred, gt)
    assert e.count == 3
    assert e.abs_rel == pytest.approx((1 / 1 + 0 + 2 / 4) / 3)
    assert e.sq_rel == pytest.approx((1 / 1 + 0 + 4 / 4) / 3)
    assert e.rmse == pytest.approx(math.sqrt((1 + 0 + 4) / 3))
    assert e.rmse_log == pytest.approx(math.sqrt((math.log(2) ** 2 * 2) / 3))
    # ratios max(d/d*, d*/d) = 2, 1, 2: only the exact pixel is below 1.25, 1.5625 and 1.953.
    assert (e.delta1, e.delta2, e.delta3) == pytest.approx((1 / 3, 1 / 3, 1 / 3))
    assert e.scale == 1.0


def test_depth_median_scaling_removes_a_global_factor() -> None:
    gt = np.random.default_rng(1).uniform(1.0, 5.0, size=(8, 8))
    e = depth_errors(0.3 * gt, gt, median_scale=True)
    assert e.scale == pytest.approx(1 / 0.3)
    assert e.abs_rel == pytest.approx(0.0, abs=1e-12)
    assert e.delta1 == 1.0
    assert depth_errors(0.3 * gt, gt).abs_rel == pytest.approx(0.7)


def test_depth_pooling_is_pixel_weighted_and_rejects_empty() -> None:
    a = depth_errors(np.full((1, 1), 2.0), np.full((1, 1), 1.0))  # abs_rel 1, one pixel
    b = depth_errors(np.full((1, 3), 1.0), np.full((1, 3), 1.0))  # abs_rel 0, three pixels
    assert pool_depth_errors([a, b]).abs_rel == pytest.approx(0.25)
    with pytest.raises(ValueError, match="no pixel"):
        depth_errors(np.full((2, 2), np.nan), np.ones((2, 2)))
    with pytest.raises(ValueError, match="differ in size"):
        depth_errors(np.ones((2, 2)), np.ones((3, 2)))
    m = relative_depth_error_map(np.array([[2.0, 1.0]]), np.array([[1.0, 0.0]]))
    assert m[0, 0] == 1.0 and np.isnan(m[0, 1])


# ------------------------------------------------------------------------------------------------
# Trajectories
# ------------------------------------------------------------------------------------------------
def test_sim3_alignment_recovers_scaled_rotated_copy() -> None:
    ref = random_trajectory()
    S = np.eye(4)
    S[:3, :3] = Rotation.from_euler("zyx", [0.7, -0.2, 0.4]).as_matrix()
    S[:3, 3] = [1.0, -2.0, 3.0]
    est = ref.transformed(left=S)
    est.poses[:, :3, 3] *= 0.25
    e = trajectory_errors(est, ref, "sim3")
    assert e.scale == pytest.approx(4.0)
    assert e.summary()["ape_trans_m"]["max"] < 1e-9
    assert e.summary()["ape_rot_deg"]["max"] < 1e-6
    assert e.summary()["rpe_trans_m"]["max"] < 1e-9
    # SE(3) cannot undo the scale.
    assert trajectory_errors(est, ref, "se3").summary()["ape_trans_m"]["rmse"] > 1.0


def test_ape_and_rpe_hand_computed_without_alignment() -> None:
    ref = straight_line(5)
    est = straight_line(5)
    est.poses[2, 1, 3] = 0.3  # one pose off by 0.3 m sideways
    e = trajectory_errors(est, ref, "none")
    np.testing.assert_allclose(e.ape_trans, [0, 0, 0.3, 0, 0], atol=1e-12)
    # Relative motions 1->2 and 2->3 are each off by 0.3 m.
    np.testing.assert_allclose(e.rpe_trans, [0, 0.3, 0.3, 0], atol=1e-12)
    assert e.summary()["ape_trans_m"]["rmse"] == pytest.approx(math.sqrt(0.09 / 5))
    assert e.path_length == pytest.approx(4.0)


def test_collinear_trajectory_falls_back_to_origin_alignment() -> None:
    ref = straight_line(6)
    est = straight_line(6, step=0.5)
    e = trajectory_errors(est, ref, "sim3")
    assert e.alignment == "sim3-origin"
    assert e.scale == pytest.approx(2.0)
    assert e.summary()["ape_trans_m"]["max"] < 1e-9


def test_rotation_error_in_degrees() -> None:
    ref = straight_line(4)
    est = straight_line(4)
    est.poses[1, :3, :3] = Rotation.from_euler("z", 10, degrees=True).as_matrix()
    e = trajectory_errors(est, ref, "none")
    np.testing.assert_allclose(e.ape_rot_deg, [0, 10, 0, 0], atol=1e-9)


def test_association_tolerance_and_too_few_poses() -> None:
    ref = random_trajectory(10)
    est = Trajectory(ref.stamps + 0.005, ref.poses)
    assert trajectory_errors(est, ref, "se3", max_diff=0.01).matched == 10
    with pytest.raises(ValueError, match="need at least 3"):
        trajectory_errors(Trajectory(ref.stamps + 0.05, ref.poses), ref, "se3", max_diff=0.01)
    with pytest.raises(ValueError, match="alignment"):
        trajectory_errors(est, ref, "affine")
    i, j = associate(np.array([0.0, 0.1, 0.2, 5.0]), np.array([0.01, 0.19, 0.2]), 0.02)
    assert i.tolist() == [0, 2] and j.tolist() == [0, 2]


def test_interpolation_is_linear_and_masks_gaps() -> None:
    ref = straight_line(3, step=2.0)  # x = 0, 2, 4 at t = 0, 0.1, 0.2
    at, ok = interpolate(ref, np.array([0.05, 0.15, 0.3]))
    assert ok.tolist() == [True, True, False]
    np.testing.assert_allclose(at.positions[:, 0], [1.0, 3.0])
    _, ok = interpolate(ref, np.array([0.05]), max_gap=0.01)
    assert not ok[0]


def test_tum_round_trip_and_bad_lines(tmp_path) -> None:
    ref = random_trajectory(7)
    path = write_tum(tmp_path / "t.tum", ref, "hello")
    back = read_tum(path)
    np.testing.assert_allclose(back.stamps, ref.stamps)
    np.testing.assert_allclose(back.poses, ref.poses, atol=1e-8)
    (tmp_path / "bad.tum").write_text("# c\n0 1 2 3\n")
    with pytest.raises(ValueError, match="bad.tum:2: expected 8 numbers"):
        read_tum(tmp_path / "bad.tum")


def test_window_scores_carry_the_identity_baseline():
    """Each window's score carries the rotation error of "the camera did not move", so training
    logs and reports show whether a camera head beats it; exact for an identity prediction."""
    from vggt_ros.eval.window_metrics import score_window, summarize

    gt = np.repeat(np.eye(4)[None], 3, 0)
    gt[1, :3, :3] = Rotation.from_euler("z", 10, degrees=True).as_matrix()
    gt[2, :3, :3] = Rotation.from_euler("x", 20, degrees=True).as_matrix()
    gt[1:, :3, 3] = [[0.1, 0, 0], [0.2, 0.1, 0]]
    still = np.repeat(np.eye(4)[None], 3, 0)
    scores = score_window(None, None, still, gt)
    assert scores.rotation_deg_identity == pytest.approx(scores.rotation_deg_mean)
    perfect = score_window(None, None, gt, gt)
    assert perfect.rotation_deg_mean < 1e-4  # arccos near 1: about 1e-6 degrees of rounding
    assert perfect.rotation_deg_identity == pytest.approx(scores.rotation_deg_identity)
    # pairs (0,1) 10 deg, (0,2) 20 deg, (1,2) the angle between the two rotations
    pair = np.degrees(Rotation.from_matrix(gt[1, :3, :3].T @ gt[2, :3, :3]).magnitude())
    assert perfect.rotation_deg_identity == pytest.approx((10 + 20 + pair) / 3)
    summary = summarize([perfect, scores])
    assert summary["rotation_deg_identity"] == pytest.approx(perfect.rotation_deg_identity)


def test_baseline_length_error_measures_translation_against_the_window_depth():
    """The baseline length error is zero for any prediction whose depth and translations share
    one scale, 100 ln 2 when the cameras move twice as far as the depth implies, leaves out pairs
    that barely move (turning in place) and the identity-pose prediction, and needs true depth."""
    from vggt_ros.eval.window_metrics import (
        MIN_BASELINE_FRACTION,
        baseline_length_errors,
        score_window,
        summarize,
    )

    gt = np.repeat(np.eye(4)[None], 3, 0)
    gt[1, :3, 3] = [0.5, 0.0, 0.0]
    gt[2, :3, 3] = [0.5, 0.2, 0.0]
    gt_depth = np.full((3, 6, 8), 4.0)
    gt_depth[:, :3] = 2.0  # median 3 m
    half = gt.copy()
    half[:, :3, 3] *= 0.5  # the whole window at half scale: depth and baselines agree
    assert score_window(gt_depth * 0.5, gt_depth, half, gt).baseline_error_pct == pytest.approx(0.0, abs=1e-9)
    far = gt.copy()
    far[:, :3, 3] *= 2.0  # the cameras move twice as far as this depth implies
    scores = score_window(gt_depth, gt_depth, far, gt)
    assert scores.baseline_error_pct == pytest.approx(100 * np.log(2.0))
    assert scores.abs_rel == pytest.approx(0.0) and scores.translation_deg_mean == pytest.approx(
        0.0, abs=1e-5
    )
    # a pair that barely moves is not scored, however wrong its length: frames 1 and 2 are 1 cm
    # apart in truth and 30 cm in the prediction; pairs (0, 1) and (0, 2) are exact
    short = np.repeat(np.eye(4)[None], 3, 0)
    short[1, :3, 3] = [0.5, 0.0, 0.0]
    short[2, :3, 3] = [0.51, 0.0, 0.0]
    predicted = short.copy()
    predicted[2, :3, 3] = [0.5, 0.3, 0.0]
    errors = baseline_length_errors(predicted, short, 1.0, MIN_BASELINE_FRACTION * 3.0)
    assert errors.shape == (2,) and errors[0] == pytest.approx(0.0)
    assert errors[1] == pytest.approx(100 * np.log(np.hypot(0.5, 0.3) / 0.51))
    assert baseline_length_errors(predicted, short, 1.0, 0.0).shape == (3,)
    still = np.repeat(np.eye(4)[None], 3, 0)
    assert np.isnan(score_window(np.ones_like(gt_depth), gt_depth, still, gt).baseline_error_pct)
    assert np.isnan(score_window(None, None, far, gt).baseline_error_pct)
    summary = summarize([scores, score_window(None, None, far, gt)])
    assert summary["baseline_error_pct"] == pytest.approx(100 * np.log(2.0))  # NaN windows left out


def test_depth_error_by_range_splits_the_window_abs_rel_by_true_depth():
    from vggt_ros.eval.window_metrics import depth_error_by_range, window_depth_errors

    rng = np.random.default_rng(3)
    gt = rng.uniform(0.2, 6.0, size=(2, 12, 16))
    pred = gt * 2.0  # right shape at another scale: no error anywhere
    pred[gt < 0.5] = 3.0  # near pixels put far away (the turn-in-place failure)
    valid = np.ones_like(gt, bool)
    valid[1, :2] = False
    split = depth_error_by_range(pred, gt, valid, (0.0, 0.5, 1.0, np.inf))
    assert split is not None
    ok = valid & (gt > 0)
    near = ok & (gt < 0.5)
    assert split.pixels == [
        int(near.sum()),
        int((ok & (gt >= 0.5) & (gt < 1.0)).sum()),
        int((ok & (gt >= 1.0)).sum()),
    ]
    # the bins' error sums add up to the window AbsRel of the same median scale
    abs_rel, _ = window_depth_errors(pred, gt, valid)
    assert sum(split.error_sum) / sum(split.pixels) == pytest.approx(abs_rel)
    scale = np.median(gt[ok]) / np.median(pred[ok])
    assert split.abs_rel[0] == pytest.approx(np.mean(np.abs(3.0 * scale - gt[near]) / gt[near]))
    assert split.abs_rel[0] > 1.0 > split.abs_rel[2]
    # an empty bin is NaN; too few pixels is None; bad edges are refused
    empty = depth_error_by_range(pred, gt, valid, (0.0, 0.1, np.inf))
    assert empty is not None and empty.pixels[0] == 0 and math.isnan(empty.abs_rel[0])
    assert depth_error_by_range(pred[:, :1, :2], gt[:, :1, :2]) is None
    with pytest.raises(ValueError, match="increasing"):
        depth_error_by_range(pred, gt, valid, (1.0, 0.5))
