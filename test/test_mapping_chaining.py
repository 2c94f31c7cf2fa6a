"""WindowChainer: a window's Sim(3) to the map from the keyframes it shares with it."""

from __future__ import annotations

import types

import numpy as np
from scipy.spatial.transform import Rotation

from vggt_ros.geometry.alignment import Sim3
from vggt_ros.mapping.chaining import WindowChainer, weighted_median
from vggt_ros.mapping.config import ChainingConfig

H, W = 60, 80
K = np.array([[70.0, 0.0, W / 2], [0.0, 70.0, H / 2], [0.0, 0.0, 1.0]])


def _window(poses: np.ndarray, depth: np.ndarray, conf: np.ndarray, valid: np.ndarray | None = None):
    """A prediction-like window: cam_to_world [S,4,4], depth/depth_conf/valid_mask [S,H,W]."""
    s = len(poses)
    return types.SimpleNamespace(
        cam_to_world=poses,
        depth=depth.astype(np.float32),
        depth_conf=conf.astype(np.float32),
        valid_mask=np.ones(depth.shape, bool) if valid is None else valid,
        model_intrinsics=np.stack([K] * s),
    )


def _mapped_window(rng: np.random.Generator, frames: int = 4):
    poses = np.stack([np.eye(4) for _ in range(frames)])
    poses[:, :3, :3] = Rotation.from_rotvec(rng.normal(0, 0.1, (frames, 3))).as_matrix()
    poses[:, :3, 3] = rng.normal(0, 0.3, (frames, 3))
    depth = 2.0 + rng.random((frames, H, W))
    conf = 1.0 + 4.0 * rng.random((frames, H, W))
    return poses, depth, conf


def test_recovers_the_sim3_between_a_window_and_the_map() -> None:
    rng = np.random.default_rng(0)
    poses, depth, conf = _mapped_window(rng)
    chainer = WindowChainer(ChainingConfig(points_per_keyframe=300))
    chainer.commit(_window(poses, depth, conf), [0, 1, 2, 3], Sim3.identity(), window_id=0, segment=0)
    # The next window sees keyframes 2 and 3 again, in its own frame W: G = truth(W).
    truth = Sim3(1.7, Rotation.from_rotvec([0.2, -0.1, 0.3]).as_matrix(), np.array([0.5, -1.0, 2.0]))
    poses_w = truth.inverse().transform_poses(poses[2:])
    window = _window(poses_w, depth[2:] / truth.scale, conf[2:])
    outcome = chainer.align(window, [2, 3], window_id=1)
    assert outcome.accepted, outcome.reason
    assert outcome.num_shared == 2
    assert abs(outcome.transform.scale - truth.scale) < 1e-6
    np.testing.assert_allclose(outcome.transform.rotation, truth.rotation, atol=1e-6)
    np.testing.assert_allclose(outcome.transform.translation, truth.translation, atol=1e-6)
    assert outcome.median_relative_residual < 1e-6 and outcome.center_residual < 1e-6


def test_weighted_median() -> None:
    values = np.array([3.0, 1.0, 10.0, 2.0])
    assert weighted_median(values, np.array([1.0, 1.0, 0.0, 1.0])) == 2.0
    assert weighted_median(values, np.array([1.0, 1.0, 5.0, 1.0])) == 10.0
    assert np.isnan(weighted_median(values, np.zeros(4)))
    assert np.isnan(weighted_median(np.zeros(0), np.zeros(0)))


def _shifted_window(seed: int, depth_noise: float = 0.0, center_shift: float = 0.0):
    """A chainer holding keyframes 0-3, and the next window's view of keyframes 1-3 in its own
    frame, with multiplicative depth noise U(-depth_noise, depth_noise) and keyframe 3's camera
    (centre and the points it sees) moved by ``center_shift`` x the median depth."""
    rng = np.random.default_rng(seed)
    poses, depth, conf = _mapped_window(rng)
    chainer = WindowChainer(ChainingConfig(points_per_keyframe=300))
    chainer.commit(_window(poses, depth, conf), [0, 1, 2, 3], Sim3.identity(), window_id=0, segment=0)
    truth = Sim3(0.8, Rotation.from_rotvec([0.1, 0.2, -0.1]).as_matrix(), np.array([1.0, 0.0, -0.5]))
    poses_w = truth.inverse().transform_poses(poses[1:])
    depth_w = depth[1:] / truth.scale * (1.0 + rng.uniform(-depth_noise, depth_noise, depth[1:].shape))
    poses_w[-1, :3, 3] += center_shift * float(np.median(depth)) / truth.scale * np.array([1.0, 0.0, 0.0])
    return chainer, _window(poses_w, depth_w, conf[1:])


def test_median_relative_residual_measures_depth_disagreement() -> None:
    """Depth off by U(-0.1, 0.1) in the new window: each point's residual is |e| of its depth
    (along its ray), whose median is 0.05."""
    chainer, window = _shifted_window(5, depth_noise=0.1)
    outcome = chainer.align(window, [1, 2, 3], window_id=1)
    assert 0.035 < outcome.median_relative_residual < 0.065


def test_camera_centre_test_has_its_own_bound() -> None:
    """One of three shared cameras 10 % of the depth off: its points are outliers (a third of
    the weight, so the inlier share still passes) and its centre fails a max_center_residual of
    0.05 alone; raising the bound accepts the same fit."""
    chainer, window = _shifted_window(6, center_shift=0.1)
    chainer.config = ChainingConfig(points_per_keyframe=300, max_center_residual=0.05)
    outcome = chainer.align(window, [1, 2, 3], window_id=1)
    assert not outcome.accepted and outcome.reason.startswith("shared camera centres disagree")
    assert outcome.center_residual > 0.05
    chainer.config = ChainingConfig(points_per_keyframe=300, max_center_residual=1.0)
    relaxed = chainer.align(window, [1, 2, 3], window_id=1)
    assert relaxed.accepted, relaxed.reason
    assert relaxed.center_residual == outcome.center_residual


def test_dense_pairs_are_confident_pixels_drawn_from_the_whole_image() -> None:
    rng = np.random.default_rng(1)
    poses, depth, conf = _mapped_window(rng, frames=1)
    chainer = WindowChainer(ChainingConfig(points_per_keyframe=500, conf_percentile=30.0))
    chainer.commit(_window(poses, depth, conf), [0], Sim3.identity(), window_id=0, segment=0)
    conf_w = 1.0 + 4.0 * rng.random((1, H, W))
    p_w, p_g, weight, depth_g = chainer._dense_pairs(
        _window(poses, depth, conf_w), 0, chainer.keyframes[0], np.random.default_rng(2)
    )
    assert len(p_w) == len(p_g) == len(weight) == len(depth_g) == 500
    np.testing.assert_allclose(p_w, p_g, atol=1e-5)  # same pose and depth: the same points
    # Pixels below either confidence percentile are left out (the cut comes from a sample of
    # the pixels, so it is close to, not exactly at, the image's percentile).
    world_to_cam = np.linalg.inv(poses[0])
    pixels = (p_g @ world_to_cam[:3, :3].T + world_to_cam[:3, 3]) @ K.T
    cols = np.rint(pixels[:, 0] / pixels[:, 2]).astype(int)
    rows = np.rint(pixels[:, 1] / pixels[:, 2]).astype(int)
    below = (conf_w[0, rows, cols] < np.percentile(conf_w, 25)) | (
        conf[0, rows, cols] < np.percentile(conf, 25)
    )
    assert below.mean() < 0.02
    # ... and they cover the image, not one corner of it.
    assert rows.min() < H / 4 and rows.max() > 3 * H / 4 and cols.min() < W / 4 and cols.max() > 3 * W / 4


def test_sparse_valid_pixels_fall_back_to_every_pixel() -> None:
    """A prediction valid on a 15x20 patch only: the pixel sample holds too few valid pixels,
    so every pixel is tested and every confident valid pixel is used."""
    rng = np.random.default_rng(3)
    poses, depth, conf = _mapped_window(rng, frames=1)
    chainer = WindowChainer(ChainingConfig(points_per_keyframe=500, conf_percentile=30.0))
    chainer.commit(_window(poses, depth, conf), [0], Sim3.identity(), window_id=0, segment=0)
    valid = np.zeros((1, H, W), bool)
    valid[0, 20:35, 30:50] = True
    pairs = chainer._dense_pairs(
        _window(poses, depth, conf, valid), 0, chainer.keyframes[0], np.random.default_rng(4)
    )
    # Both cuts (the window's confidence, then the map's: the same array here) on the patch.
    patch_conf = conf[0][valid[0]]
    kept = patch_conf[patch_conf >= np.percentile(patch_conf, 30.0)]
    expected = int((kept >= np.percentile(kept, 30.0)).sum())
    assert 100 < len(pairs[0]) == expected


def test_median_relative_residual_bound_rejects_disagreeing_depth() -> None:
    """Depth off by U(-0.1, 0.1) (median disagreement 0.05) with only the median test active:
    refused under a 0.03 bound, accepted under 0.1."""
    off = {"max_residual": 1000.0, "min_inlier_ratio": 0.0, "max_center_residual": 1000.0}
    chainer, window = _shifted_window(7, depth_noise=0.1)
    chainer.config = ChainingConfig(points_per_keyframe=300, max_median_relative_residual=0.03, **off)
    refused = chainer.align(window, [1, 2, 3], window_id=1)
    assert not refused.accepted and refused.reason.startswith("points disagree by 0.0")
    chainer.config = ChainingConfig(points_per_keyframe=300, max_median_relative_residual=0.1, **off)
    assert chainer.align(window, [1, 2, 3], window_id=1).accepted
