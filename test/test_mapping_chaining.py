"""WindowChainer: a window's Sim(3) to the map from the keyframes it shares with it."""

from __future__ import annotations

import types

import numpy as np
from scipy.spatial.transform import Rotation

from vggt_ros.geometry.alignment import Sim3
from vggt_ros.mapping.chaining import WindowChainer
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
