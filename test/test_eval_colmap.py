"""Keyframe bundle round trip and COLMAP export read back by pycolmap with matching poses and points."""

from __future__ import annotations

import numpy as np
import pytest

from vggt_ros.eval.synthetic import render_sequence
from vggt_ros.mapping.export.bundle import KeyframeBundle, read_bundle, write_bundle
from vggt_ros.mapping.export.colmap import read_colmap, write_colmap


@pytest.fixture(scope="module")
def bundle() -> KeyframeBundle:
    seq = render_sequence(5, 48, 64, seed=2)
    k = seq.num_frames
    K = np.repeat(seq.intrinsics[None], k, axis=0)
    # One keypoint track: the centre pixel of frame 0, seen in frames 0 and 1.
    return KeyframeBundle(
        keyframe_ids=np.arange(10, 10 + k),
        stamps=seq.stamps,
        camera_ids=np.array(["camera_optical_frame"] * k),
        cam_to_map=seq.cam_to_world,
        intrinsics=K,
        image_hw=np.tile([48, 64], (k, 1)),
        model_intrinsics=K.copy(),
        depth=seq.depth,
        depth_conf=np.full(seq.depth.shape, 2.0, np.float32),
        images=seq.images,
        track_points=np.array([[0.5, 0.2, 1.0], [np.nan, np.nan, np.nan]], np.float32),
        track_query_keyframe=np.array([10, 10]),
        track_query_pixel=np.array([[31.5, 23.5], [1.0, 1.0]], np.float32),
        obs_track=np.array([0, 0, 1]),
        obs_keyframe=np.array([10, 11, 10]),
        obs_pixel=np.array([[31.5, 23.5], [30.0, 22.0], [1.0, 1.0]], np.float32),
        obs_visibility=np.array([1.0, 0.9, 1.0], np.float32),
        obs_confidence=np.array([1.0, 0.8, 1.0], np.float32),
    )


def test_bundle_round_trip(tmp_path, bundle: KeyframeBundle) -> None:
    back = read_bundle(write_bundle(tmp_path / "kf.npz", bundle))
    for name in ("keyframe_ids", "cam_to_map", "depth", "obs_pixel", "images"):
        np.testing.assert_array_equal(getattr(back, name), getattr(bundle, name))
    assert back.camera_ids.tolist() == bundle.camera_ids.tolist()
    assert back.index_of(np.array([12, 99])).tolist() == [2, -1]
    np.savez(tmp_path / "other.npz", x=np.zeros(1))
    with pytest.raises(ValueError, match="not a keyframe bundle"):
        read_bundle(tmp_path / "other.npz")


@pytest.mark.parametrize("text", [False, True])
def test_colmap_model_reads_back_with_matching_poses_and_points(
    tmp_path, bundle: KeyframeBundle, text: bool
) -> None:
    names = [f"kf{i}.png" for i in range(bundle.num_keyframes)]
    write_colmap(tmp_path / "m", bundle, names, points_per_keyframe=100, text=text)
    model = read_colmap(tmp_path / "m")
    assert model.names == names
    np.testing.assert_allclose(model.cam_to_world, bundle.cam_to_map, atol=1e-9)
    np.testing.assert_allclose(model.intrinsics, bundle.intrinsics, atol=1e-9)
    assert model.sizes.tolist() == [[48, 64]] * 5
    # The keypoint track comes first, with its two observations; the NaN track is left out.
    np.testing.assert_allclose(model.xyz[0], [0.5, 0.2, 1.0], atol=1e-6)
    assert model.tracks[0] == [(0, 31.5, 23.5), (1, 30.0, 22.0)]
    dense = model.tracks[1:]
    assert len(dense) >= 400 and np.mean([len(t) for t in dense]) > 2.0  # multi-view tracks
    # Dense points come from exact depth: every observation reprojects onto its pixel.
    for xyz, obs in zip(model.xyz[1:], dense):
        for k, x, y in obs:
            w2c = np.linalg.inv(model.cam_to_world[k])
            p = model.intrinsics[k] @ (w2c[:3, :3] @ xyz + w2c[:3, 3])
            assert abs(p[0] / p[2] - x) < 1e-6 and abs(p[1] / p[2] - y) < 1e-6
    # Colours are sampled from the keyframe images.
    k, x, y = dense[0][0]
    np.testing.assert_array_equal(model.rgb[1], bundle.images[k, round(y), round(x)])
