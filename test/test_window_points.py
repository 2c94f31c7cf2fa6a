"""A window's map points (vggt_ros.mapping.window_points) against the plain definition:
unproject every pixel, take every stride-th, keep the confident ones, move them to the map."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from vggt_ros.geometry.alignment import Sim3
from vggt_ros.geometry.camera import depth_to_world_points
from vggt_ros.mapping.window_points import window_map_points


def _prediction(frames: int = 3, h: int = 13, w: int = 17, seed: int = 0) -> SimpleNamespace:
    rng = np.random.default_rng(seed)
    depth = rng.uniform(0.5, 6.0, (frames, h, w)).astype(np.float32)
    depth[0, 2, 4] = np.nan  # a pixel without depth
    conf = rng.uniform(0.0, 5.0, (frames, h, w)).astype(np.float32)
    valid = rng.random((frames, h, w)) > 0.1
    extrinsics = np.zeros((frames, 3, 4))
    extrinsics[:, :, :3] = Rotation.random(frames, random_state=seed).as_matrix()
    extrinsics[:, :, 3] = rng.normal(size=(frames, 3))
    K = np.array([[[20.0 + f, 0.3 * f, 8.1], [0.0, 19.0 - f, 6.2], [0.0, 0.0, 1.0]] for f in range(frames)])
    colors = rng.integers(0, 256, (frames, h, w, 3)).astype(np.uint8)
    return SimpleNamespace(
        depth=depth,
        depth_conf=conf,
        valid_mask=valid,
        extrinsics=extrinsics,
        model_intrinsics=K,
        colors=colors,
        points_from_depth=lambda: depth_to_world_points(depth.astype(np.float64), extrinsics, K),
    )


def _reference(pred: SimpleNamespace, to_map: Sim3, stride: int, percentile: float, floor: float):
    xyz = np.asarray(pred.points_from_depth())[:, ::stride, ::stride]
    conf = pred.depth_conf[:, ::stride, ::stride]
    keep = pred.valid_mask[:, ::stride, ::stride] & np.isfinite(xyz).all(-1) & (conf > 1e-5)
    keep &= conf >= max(np.percentile(conf[keep], percentile), floor)
    return to_map.apply(xyz[keep]), pred.colors[:, ::stride, ::stride][keep], conf[keep]


@pytest.mark.parametrize(("stride", "percentile", "floor"), [(1, 30.0, 0.0), (2, 50.0, 0.0), (3, 10.0, 2.5)])
def test_points_equal_unprojecting_every_pixel_then_selecting(stride: int, percentile: float, floor: float):
    pred = _prediction()
    to_map = Sim3(1.7, Rotation.from_euler("xyz", [0.3, -0.2, 1.1]).as_matrix(), np.array([4.0, -2.0, 0.5]))
    got = window_map_points(pred, to_map, stride, percentile, floor)
    xyz, rgb, conf = _reference(pred, to_map, stride, percentile, floor)
    assert 0 < len(got.xyz) < pred.depth[:, ::stride, ::stride].size  # the threshold removed some
    assert got.xyz.dtype == np.float32 and got.rgb.dtype == np.uint8 and got.conf.dtype == np.float32
    np.testing.assert_allclose(got.xyz, xyz, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got.rgb, rgb)
    np.testing.assert_array_equal(got.conf, conf)
    assert conf.min() >= floor


def test_without_extrinsics_the_predictions_own_points_are_used() -> None:
    pred = _prediction(seed=1)
    own = SimpleNamespace(**{k: v for k, v in vars(pred).items() if k != "extrinsics"})
    to_map = Sim3(0.5, np.eye(3), np.array([1.0, 2.0, 3.0]))
    got, want = window_map_points(own, to_map, 2, 30.0, 0.0), window_map_points(pred, to_map, 2, 30.0, 0.0)
    np.testing.assert_allclose(got.xyz, want.xyz, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got.conf, want.conf)


def test_a_window_without_confident_pixels_gives_no_points() -> None:
    pred = _prediction(seed=2)
    pred.depth_conf = np.zeros_like(pred.depth_conf)
    got = window_map_points(pred, Sim3.identity(), 2, 30.0, 0.0)
    assert got.xyz.shape == (0, 3) and got.rgb.shape == (0, 3) and got.conf.shape == (0,)
