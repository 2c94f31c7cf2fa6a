"""Window pose refinement (vggt_ros.mapping.pose_refine): PnP on the window's own depth.

A rendered room with exact depth stands in for the network's depth; the "camera head" poses are
the ground truth with translations stretched and turned (what the compact model's head does on
forward motion) and rotations a few degrees off, and the refinement must bring them back, keep
the head where it cannot see (a plain image) or where PnP disagrees with the head's rotation,
keep a right head rotation that PnP on a narrow band of biased depth would trade for
translation, and pair frames per camera.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from vggt_ros.engine.predictor import Prediction
from vggt_ros.engine.preprocess import ImageTransform
from vggt_ros.eval.synthetic import render_sequence
from vggt_ros.geometry.camera import invert_rigid, project_points
from vggt_ros.mapping import PipelineConfig, pose_refine, refine_features
from vggt_ros.mapping.config import RefineConfig
from vggt_ros.mapping.pose_refine import (
    HEAD_EXPLAINS,
    _head_rotation_fitted,
    _median_reprojection_px,
    fit_translation,
    place_by_pnp,
    refine_window_poses,
    refined_prediction,
)
from vggt_ros.mapping.refine_features import FeatureCache, frame_images


@pytest.fixture(scope="module")
def forward():
    return render_sequence(6, 120, 160, seed=3, path="forward")


def _window(seq) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(colors, depth, intrinsics, ground-truth cam_to_world in frame 0's frame)."""
    poses = np.linalg.inv(seq.cam_to_world[0]) @ seq.cam_to_world
    intrinsics = np.repeat(seq.intrinsics[None], len(seq.images), 0)
    return seq.images, seq.depth, intrinsics, poses


def _bad_head(
    poses: np.ndarray, stretch: float = 1.6, turn_deg: float = 30.0, tilt_deg: float = 3.0
) -> np.ndarray:
    """Each relative translation stretched and turned about the camera's y axis, each relative
    rotation tilted by ``tilt_deg`` about the camera's x axis (0: rotations exact)."""
    turn = Rotation.from_euler("y", turn_deg, degrees=True).as_matrix()
    tilt = Rotation.from_euler("x", tilt_deg, degrees=True).as_matrix()
    head = poses.copy()
    for k in range(1, len(poses)):
        relative = np.linalg.inv(poses[k - 1]) @ poses[k]
        relative[:3, 3] = stretch * turn @ relative[:3, 3]
        relative[:3, :3] = relative[:3, :3] @ tilt
        head[k] = head[k - 1] @ relative
    return head


def _relative_errors(poses: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Largest consecutive-frame translation error relative to the step, and rotation (deg)."""
    t_err, r_err = 0.0, 0.0
    for k in range(1, len(poses)):
        a = np.linalg.inv(poses[k - 1]) @ poses[k]
        b = np.linalg.inv(truth[k - 1]) @ truth[k]
        t_err = max(t_err, np.linalg.norm(a[:3, 3] - b[:3, 3]) / np.linalg.norm(b[:3, 3]))
        r_err = max(r_err, np.degrees(Rotation.from_matrix(a[:3, :3].T @ b[:3, :3]).magnitude()))
    return t_err, r_err


def test_refinement_recovers_the_steps_the_head_got_wrong(forward) -> None:
    colors, depth, intrinsics, truth = _window(forward)
    head = _bad_head(truth)
    assert _relative_errors(head, truth)[0] > 0.5  # the head's steps are far off
    out = refine_window_poses(colors, depth, intrinsics, head)
    assert out.refined[1:].all() and not out.refined[0]
    assert (out.inliers[1:] >= 20).all()
    np.testing.assert_allclose(out.cam_to_world[0], head[0])
    t_err, r_err = _relative_errors(out.cam_to_world, truth)
    assert t_err < 0.1 and r_err < 0.5, (t_err, r_err)  # measured 0.062, 0.09 deg


def test_sift_places_large_forward_steps_that_tracks_miss() -> None:
    """Every 5th frame of a forward drive (steps of about a fifth of the scene's depth): the image
    grows between keyframes, Lucas-Kanade tracks fail or come out short, scale-invariant SIFT
    matches still place every frame."""
    seq = render_sequence(26, 120, 160, seed=3, path="forward")
    window = seq.images[::5], seq.depth[::5], np.repeat(seq.intrinsics[None], 6, 0)
    truth = np.linalg.inv(seq.cam_to_world[0]) @ seq.cam_to_world[::5]
    head = _bad_head(truth)
    with_sift = refine_window_poses(*window, head)
    assert with_sift.methods[1:] == ["sift"] * 5
    assert _relative_errors(with_sift.cam_to_world, truth)[0] < 0.05
    tracks_only = refine_window_poses(*window, head, config=RefineConfig(sift=False))
    assert "sift" not in tracks_only.methods
    assert _relative_errors(tracks_only.cam_to_world, truth)[0] > 0.2


@pytest.mark.parametrize(
    ("width", "sift_width"), [(182, 182), (252, 252), (294, 294), (320, 320), (322, 161), (518, 129)]
)
def test_sift_sees_compact_model_images_whole_and_vggt_1b_at_a_quarter(width: int, sift_width: int) -> None:
    """Compact-model images up to 320 pixels reach SIFT undivided (halving the 252-pixel images
    cost the pose refinement rotation accuracy); wider ones are downscaled, VGGT-1B's 518 pixels
    to a quarter (the refinement's CPU time)."""
    height = width * 140 // 182
    color = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    images = frame_images(color, np.ones((height, width), bool))
    assert images.sift_image.shape[1] == sift_width


def test_the_feature_cache_reuses_shared_frames_and_changes_nothing(forward) -> None:
    """Two overlapping windows (frames 0-3 and 2-5): the second detects only its two new frames
    and matches only its two new pairs, and the poses equal those computed without a cache; a
    changed image is detected and matched anew; the cache keeps at most its capacity."""
    colors, depth, intrinsics, truth = _window(forward)
    head = _bad_head(truth)
    cache = FeatureCache(capacity=5)
    for frames in (slice(0, 4), slice(2, 6)):
        window = colors[frames], depth[frames], intrinsics[frames], head[frames]
        cached = refine_window_poses(*window, feature_cache=cache)
        np.testing.assert_array_equal(cached.cam_to_world, refine_window_poses(*window).cam_to_world)
        assert cached.methods[1:] == ["sift"] * 3
    counts = cache.counts()
    assert (counts["keypoints_misses"], counts["matches_misses"], counts["matches_hits"]) == (6, 5, 1)
    assert counts["tracks_misses"] == 0 and not cache.prefetch_tracks  # SIFT placed every pair
    assert len(cache) == 5
    changed = colors[2:6].copy()
    changed[0] = 255 - changed[0]
    refine_window_poses(changed, depth[2:6], intrinsics[2:6], head[2:6], feature_cache=cache)
    counts = cache.counts()
    assert (counts["keypoints_misses"], counts["matches_misses"], counts["matches_hits"]) == (7, 6, 3)
    with pytest.raises(ValueError, match="capacity"):
        FeatureCache(0)


def _padded_window_with_a_depth_hole(forward):  # noqa: ANN001, ANN202
    """(colors, depth, intrinsics, head, valid, content): a padded band in every frame, and a
    patch of frame 2 without depth (invalid, but still content)."""
    colors, depth, intrinsics, truth = _window(forward)
    content = np.ones(depth.shape, bool)
    content[:, :, :4] = False  # a padded band
    valid = content.copy()
    depth = depth.copy()
    depth[2, 40:60, 50:90] = np.nan
    valid[2, 40:60, 50:90] = False
    return colors, depth, intrinsics, _bad_head(truth), valid, content


def test_prefetched_keypoints_and_matches_are_found_once_and_change_nothing(forward) -> None:
    """``prefetch_window`` (started while the network runs) finds each frame's keypoints and each
    pair's matches once: the refinement that follows, even before the prefetch has finished,
    waits for them rather than computing them again, and its poses equal those computed without
    any cache. Keypoints and matches come from the image and its padding alone (not the depth),
    so a frame with holes in its depth still hits."""
    colors, depth, intrinsics, head, valid, content = _padded_window_with_a_depth_hole(forward)
    expected = refine_window_poses(colors, depth, intrinsics, head, valid, content_mask=content)
    pairs = len(colors) - 1
    for wait in (True, False):
        cache = FeatureCache(capacity=8)
        futures = cache.prefetch_window(colors, content)
        assert len(futures) == len(colors) + pairs
        if wait:
            for future in futures:
                future.result()
            counts = cache.counts()
            assert (counts["keypoints_misses"], counts["matches_misses"]) == (len(colors), pairs)
            assert counts["tracks_misses"] == 0  # not asked for: the last window needed none
        out = refine_window_poses(
            colors, depth, intrinsics, head, valid, feature_cache=cache, content_mask=content
        )
        for future in futures:
            future.result()
        counts = cache.counts()
        assert (counts["keypoints_misses"], counts["matches_misses"]) == (len(colors), pairs), (wait, counts)
        assert counts["matches_hits"] == pairs
        np.testing.assert_array_equal(out.cam_to_world, expected.cam_to_world)
        assert out.methods == expected.methods and out.refined[1:].all()
        assert {"features_ms", "pairs_ms", "prefetch_left", "prefetch_tracks"} <= set(out.timings)
        assert out.timings["prefetch_tracks"] == 0.0  # the last window needed no tracked corners
        if wait:  # every background task had finished before the refinement began
            assert out.timings["prefetch_left"] == 0 and out.timings["prefetch_end_ms"] < 0


def test_the_refinement_takes_the_prefetched_images_only_where_its_inputs_are_equal(forward) -> None:
    """The grey, downscaled images that ``prefetch_window`` made are the ones the refinement
    uses (the same objects: not made twice), but only for a frame whose colour and content
    mask equal the prefetched ones: a frame changed since (or another index) is made again, and
    the poses equal those computed without any cache."""
    colors, depth, intrinsics, head, valid, content = _padded_window_with_a_depth_hole(forward)
    cache = FeatureCache(capacity=8)
    futures = cache.prefetch_window(colors, content)
    prefetched = [future.result() for future in futures[: len(colors)]]
    assert cache.frame_images(1, colors[1].copy(), content[1].copy()) is prefetched[1]
    assert cache.frame_images(2, colors[1], content[1]) is not prefetched[2]  # other inputs
    assert cache.frame_images(len(colors), colors[0], content[0]) is not prefetched[0]  # no such frame
    changed = colors[3].copy()
    changed[10, 10] ^= 1
    remade = cache.frame_images(3, changed, content[3])
    assert remade is not prefetched[3] and remade.sift_key != prefetched[3].sift_key
    other_mask = content[3].copy()
    other_mask[:, -4:] = False
    assert cache.frame_images(3, colors[3], other_mask) is not prefetched[3]
    made = []
    original = refine_features.frame_images
    with pytest.MonkeyPatch.context() as patch:
        counting = lambda *a: made.append(1) or original(*a)  # noqa: E731
        patch.setattr(refine_features, "frame_images", counting)
        patch.setattr(pose_refine, "frame_images", counting, raising=False)  # an import of it there
        out = refine_window_poses(
            colors, depth, intrinsics, head, valid, feature_cache=cache, content_mask=content
        )
    assert made == []  # every frame's images came from the prefetch
    expected = refine_window_poses(colors, depth, intrinsics, head, valid, content_mask=content)
    np.testing.assert_array_equal(out.cam_to_world, expected.cam_to_world)
    assert out.methods == expected.methods


def test_tracked_corners_are_prefetched_after_a_window_that_needed_them(forward) -> None:
    """Tracked corners are the fallback where SIFT's placement is not used (here: SIFT off).
    After a window that needed them the cache prefetches them for the next; the refinement
    takes the prefetched ones where the frame's usable pixels equal its content (a hit, same
    poses) and tracks again where the depth has holes (frame 2: a miss, same poses)."""
    colors, depth, intrinsics, head, valid, content = _padded_window_with_a_depth_hole(forward)
    config = RefineConfig(sift=False)
    expected = refine_window_poses(
        colors, depth, intrinsics, head, valid, config=config, content_mask=content
    )
    assert expected.methods[1:] == ["lk"] * (len(colors) - 1)
    cache = FeatureCache(capacity=8, sift=False)
    assert not cache.prefetch_tracks
    for future in cache.prefetch_window(colors, content):
        future.result()
    assert cache.counts()["tracks_misses"] == 0 and cache.counts()["keypoints_misses"] == 0
    out = refine_window_poses(
        colors, depth, intrinsics, head, valid, config=config, feature_cache=cache, content_mask=content
    )
    np.testing.assert_array_equal(out.cam_to_world, expected.cam_to_world)
    assert cache.prefetch_tracks and cache.counts()["tracks_misses"] == len(colors) - 1
    # the next window: other images (flipped), so nothing is cached yet
    flipped = np.ascontiguousarray(colors[:, :, ::-1])
    flipped_content = np.ascontiguousarray(content[:, :, ::-1])
    flipped_valid = np.ascontiguousarray(valid[:, :, ::-1])
    flipped_depth = np.ascontiguousarray(depth[:, :, ::-1])
    expected = refine_window_poses(
        flipped, flipped_depth, intrinsics, head, flipped_valid, config=config, content_mask=flipped_content
    )
    for future in cache.prefetch_window(flipped, flipped_content):
        future.result()
    assert cache.counts()["tracks_misses"] == 2 * (len(colors) - 1)
    out = refine_window_poses(
        flipped,
        flipped_depth,
        intrinsics,
        head,
        flipped_valid,
        config=config,
        feature_cache=cache,
        content_mask=flipped_content,
    )
    np.testing.assert_array_equal(out.cam_to_world, expected.cam_to_world)
    assert out.methods == expected.methods
    counts = cache.counts()
    # pair (2, 3) starts at frame 2, whose usable pixels lack the hole: tracked again
    assert (counts["tracks_hits"], counts["tracks_misses"]) == (len(colors) - 2, 2 * (len(colors) - 1) + 1)


def test_a_plain_image_keeps_the_head(forward) -> None:
    colors, depth, intrinsics, truth = _window(forward)
    colors = colors.copy()
    colors[3] = 128  # nothing to track into or from frame 3
    head = _bad_head(truth)
    out = refine_window_poses(colors, depth, intrinsics, head)
    assert not out.refined[3] and not out.refined[4] and out.refined[[1, 2, 5]].all()
    assert out.reasons[3] and out.reasons[4]
    # frames 3 and 4 keep the head's steps from their predecessors
    for k in (3, 4):
        np.testing.assert_allclose(
            np.linalg.inv(out.cam_to_world[k - 1]) @ out.cam_to_world[k],
            np.linalg.inv(head[k - 1]) @ head[k],
            atol=1e-9,
        )


def test_a_placement_that_disagrees_with_the_heads_rotation_is_not_used(forward) -> None:
    colors, depth, intrinsics, truth = _window(forward)
    head = _bad_head(truth)
    tilt = np.eye(4)
    tilt[:3, :3] = Rotation.from_euler("x", 8.0, degrees=True).as_matrix()
    head[2:] = head[2:] @ tilt  # the head turns frame 2 by 8 deg (and carries it on)
    out = refine_window_poses(colors, depth, intrinsics, head, config=RefineConfig(max_rotation_deg=5.0))
    assert not out.refined[2] and "rotation" in out.reasons[2]
    assert out.refined[[1, 3, 4, 5]].all()
    loose = refine_window_poses(colors, depth, intrinsics, head, config=RefineConfig(max_rotation_deg=20.0))
    assert loose.refined[1:].all()
    assert refine_window_poses(colors, depth, intrinsics, head).refined[1:].all()  # default: no check


def test_max_step_ratio_keeps_the_head_where_the_steps_differ_too_much(forward) -> None:
    colors, depth, intrinsics, truth = _window(forward)
    head = _bad_head(truth, stretch=3.0, turn_deg=0.0)
    assert refine_window_poses(colors, depth, intrinsics, head).refined[1:].all()  # default: no limit
    limited = refine_window_poses(colors, depth, intrinsics, head, config=RefineConfig(max_step_ratio=2.0))
    assert not limited.refined.any() and all("x the head's" in r for r in limited.reasons[1:])


def test_a_head_rotation_that_explains_the_matches_is_kept_with_a_fitted_translation(forward) -> None:
    """PnP also fits the depth's errors: where the head's rotation, given the translation that
    best fits PnP's inliers, reprojects them about as well (``head_tolerance``,
    ``head_tolerance_px``), the frame keeps that rotation and takes the fitted translation, which
    repairs the head's stretched and turned steps."""
    colors, depth, intrinsics, truth = _window(forward)
    head = _bad_head(truth, tilt_deg=0.0)  # rotations exact, steps 1.6x and turned 30 deg
    out = refine_window_poses(colors, depth, intrinsics, head)
    assert out.methods[1:] == ["head"] * (len(truth) - 1) and out.refined[1:].all()
    assert all(r.startswith(HEAD_EXPLAINS) for r in out.reasons[1:])
    t_err, r_err = _relative_errors(out.cam_to_world, truth)
    assert r_err < 1e-6 and t_err < 0.1, (t_err, r_err)  # the head's steps were 0.9 off
    strict = RefineConfig(head_tolerance=0.0, head_tolerance_px=0.0, sift=False)
    strict_out = refine_window_poses(colors, depth, intrinsics, head, config=strict)
    assert "lk" in strict_out.methods  # without the tolerance PnP, fitting the noise too, replaces it


def test_a_narrow_band_of_biased_depth_does_not_turn_a_right_head() -> None:
    """A sideways step seen only on a strip of floor whose depth is tilted by the network: PnP
    on it trades rotation for translation (8 deg off here); the head's rotation with a fitted
    translation reprojects the strip as well, so it stays, and the step comes out nearly right."""
    h, w, f = 120, 160, 100.0
    k = np.array([[f, 0.0, 80.0], [0.0, f, 60.0], [0.0, 0.0, 1.0]])
    rows = np.mgrid[0:h, 0:w][0].astype(float)
    floor = np.where(rows > 62, f / np.maximum(rows - 60.0, 1e-3), 3.0)  # 1 m below; a wall above
    rng = np.random.default_rng(0)
    pixels_a = np.stack([rng.uniform(5, 155, 150), rng.uniform(95, 118, 150)], 1)  # the strip
    z = floor[np.rint(pixels_a[:, 1]).astype(int), np.rint(pixels_a[:, 0]).astype(int)]
    points = np.stack([(pixels_a[:, 0] - 80) / f * z, (pixels_a[:, 1] - 60) / f * z, z], 1)
    b_in_a = np.eye(4)
    b_in_a[:3, :3] = Rotation.from_euler("y", 2.0, degrees=True).as_matrix()
    b_in_a[:3, 3] = [0.3, 0.0, 0.02]
    a_to_b = np.linalg.inv(b_in_a)
    seen = points @ a_to_b[:3, :3].T + a_to_b[:3, 3]
    pixels_b = f * seen[:, :2] / seen[:, 2:] + [80.0, 60.0] + rng.normal(0, 0.3, (150, 2))
    biased = floor * (1 + 0.25 * (rows - 106) / 12.0)  # the network's depth, tilted across the strip
    head = b_in_a.copy()
    head[:3, 3] *= 1.6  # the head's step too long, its rotation right

    def rotation_error(pose: np.ndarray) -> float:
        return float(np.degrees(Rotation.from_matrix(pose[:3, :3].T @ b_in_a[:3, :3]).magnitude()))

    def place(config: RefineConfig) -> tuple[np.ndarray, str]:
        pose, count, reason = place_by_pnp(pixels_a, pixels_b, biased, k, k, config, 12, 0.0, head)
        assert pose is not None and count >= 12
        return pose, reason

    pnp, reason = place(RefineConfig(head_tolerance=0.0, head_tolerance_px=0.0))
    assert reason == "" and rotation_error(pnp) > 4.0  # measured 7.8 deg
    kept, reason = place(RefineConfig())
    assert reason.startswith(HEAD_EXPLAINS) and rotation_error(kept) < 1e-9
    step_error = np.linalg.norm(kept[:3, 3] - b_in_a[:3, 3])
    assert step_error < 0.15 * np.linalg.norm(b_in_a[:3, 3])  # measured 11 % (PnP's: 126 %)
    assert step_error < 0.2 * np.linalg.norm(pnp[:3, 3] - b_in_a[:3, 3])


def test_fit_translation_recovers_the_step_for_a_given_rotation() -> None:
    """Exact points: the translation comes back exactly; a fifth of the pixels thrown off by
    20-40 px move it little (Huber weights)."""
    rng = np.random.default_rng(1)
    k = np.array([[120.0, 0.0, 80.0], [0.0, 120.0, 60.0], [0.0, 0.0, 1.0]])
    points = np.stack([rng.uniform(-1, 1, 80), rng.uniform(-0.8, 0.8, 80), rng.uniform(2, 5, 80)], 1)
    rotation = Rotation.from_euler("xyz", [2.0, -5.0, 1.0], degrees=True).as_matrix()
    t = np.array([0.2, -0.05, 0.3])
    seen = points @ rotation.T + t
    pixels = (seen[:, :2] / seen[:, 2:]) * 120.0 + [80.0, 60.0]
    np.testing.assert_allclose(fit_translation(points, pixels, rotation, k), t, atol=1e-9)
    noisy = pixels.copy()
    noisy[:16] += rng.uniform(20, 40, (16, 2)) * rng.choice([-1, 1], (16, 2))
    assert np.linalg.norm(fit_translation(points, noisy, rotation, k) - t) < 0.02
    # one distinct pixel fixes no translation
    assert fit_translation(points[:5], np.repeat(pixels[:1], 5, 0), rotation, k) is None


def test_the_refinements_numpy_reprojection_matches_the_geometry_helpers() -> None:
    """The pair stage projects in numpy (the torch helpers cost 8x on a few hundred points):
    same medians as ``project_points(points, invert_rigid(b_to_a), K)``; a point behind b
    counts as an infinite error; the fitted head pose is the inverse of [R | t]."""
    rng = np.random.default_rng(3)
    k = np.array([[150.0, 0.0, 90.0], [0.0, 140.0, 70.0], [0.0, 0.0, 1.0]])
    points = np.stack([rng.uniform(-1, 1, 60), rng.uniform(-1, 1, 60), rng.uniform(1, 4, 60)], 1)
    poses = np.tile(np.eye(4), (3, 1, 1))
    poses[:, :3, :3] = Rotation.from_rotvec(rng.normal(0, 0.1, (3, 3))).as_matrix()
    poses[:, :3, 3] = rng.normal(0, 0.2, (3, 3))
    pixels = rng.uniform(0, 160, (60, 2))
    reference, z = project_points(points, invert_rigid(poses), k)
    expected = np.median(np.where(z > 1e-9, np.linalg.norm(reference - pixels, axis=-1), np.inf), -1)
    np.testing.assert_allclose(_median_reprojection_px(points, pixels, poses, k), expected, rtol=1e-12)
    behind = poses.copy()
    behind[:, 2, 3] = 10.0  # b sits 10 units ahead of a: every point is behind it
    assert np.isinf(_median_reprojection_px(points, pixels, behind, k)).all()
    step = np.array([0.1, -0.2, 0.05])
    seen = points @ poses[0, :3, :3] + step  # x_b = R x_a + t with R = the head's R_ab^T
    fitted = _head_rotation_fitted(points, (seen[:, :2] / seen[:, 2:]) @ k[:2, :2].T + k[:2, 2], poses[0], k)
    a_to_b = np.eye(4)
    a_to_b[:3, :3], a_to_b[:3, 3] = poses[0, :3, :3].T, step
    np.testing.assert_allclose(fitted, invert_rigid(a_to_b), atol=1e-9)


def test_frames_pair_with_the_previous_frame_of_their_own_camera(forward) -> None:
    colors, depth, intrinsics, truth = _window(forward)
    order = [0, 3, 1, 4, 2, 5]  # two "cameras": frames 0-2 (a) and 3-5 (b) interleaved
    cams = ["a", "b", "a", "b", "a", "b"]
    head = _bad_head(truth)[order]
    out = refine_window_poses(colors[order], depth[order], intrinsics[order], head, camera_ids=cams)
    assert not out.refined[1] and out.reasons[1] == "first frame of its camera"
    assert out.refined[[2, 3, 4, 5]].all()
    # a's frames: 0 -> 1 -> 2 of the sequence; b's 3 -> 4 -> 5, placed on b's first (head) pose
    t_err, _ = _relative_errors(out.cam_to_world[[0, 2, 4]], truth[[0, 1, 2]])
    assert t_err < 0.1


def make_prediction(colors, depth, intrinsics, cam_to_world) -> Prediction:  # noqa: ANN001
    s, h, w = depth.shape
    transform = ImageTransform((h, w), (h, w), (1.0, 1.0), (0.0, 0.0), (0, 0, w, h))
    return Prediction(
        cam_to_world=cam_to_world,
        extrinsics=np.linalg.inv(cam_to_world)[:, :3, :],
        intrinsics=intrinsics,
        model_intrinsics=intrinsics,
        depth=depth.astype(np.float32),
        depth_conf=np.ones((s, h, w), np.float32),
        world_points=None,
        world_points_conf=None,
        valid_mask=np.ones((s, h, w), bool),
        colors=colors,
        model_hw=(h, w),
        original_sizes=[(h, w)] * s,
        transforms=[transform] * s,
    )


def test_prefetch_pairs_frames_per_camera_as_the_refinement_does(forward) -> None:
    """Two interleaved cameras: ``prefetch_window`` with the camera ids matches exactly the pairs
    the refinement then asks for (each frame with the previous frame of its own camera), so the
    refinement computes no match itself, and its poses equal an uncached refinement's."""
    colors, depth, intrinsics, truth = _window(forward)
    order = [0, 3, 1, 4, 2, 5]
    cams = ["a", "b", "a", "b", "a", "b"]
    window = colors[order], depth[order], intrinsics[order], _bad_head(truth)[order]
    expected = refine_window_poses(*window, camera_ids=cams)
    cache = FeatureCache(capacity=8)
    content = np.ones(window[1].shape, bool)
    for future in cache.prefetch_window(window[0], content, cams):
        future.result()
    assert cache.counts()["matches_misses"] == 4  # a: 0-2, 2-4; b: 1-3, 3-5
    out = refine_window_poses(*window, camera_ids=cams, feature_cache=cache)
    counts = cache.counts()
    assert (counts["matches_hits"], counts["matches_misses"], counts["keypoints_misses"]) == (4, 4, 6)
    np.testing.assert_array_equal(out.cam_to_world, expected.cam_to_world)


def test_refined_prediction_updates_extrinsics_and_leaves_the_rest(forward) -> None:
    colors, depth, intrinsics, truth = _window(forward)
    prediction = make_prediction(colors, depth, intrinsics, _bad_head(truth))
    config = RefineConfig()
    refined, result = refined_prediction(prediction, None, config)
    assert result is not None and result.refined[1:].all()
    np.testing.assert_allclose(refined.extrinsics, np.linalg.inv(refined.cam_to_world)[:, :3, :])
    assert refined.depth is prediction.depth and refined.colors is prediction.colors
    assert prediction.cam_to_world is not refined.cam_to_world  # the input is not modified
    without_images = make_prediction(None, depth, intrinsics, truth)
    same, nothing = refined_prediction(without_images, None, config)
    assert same is without_images and nothing is None


def test_mirror_averaged_predictions_are_refined_on_the_unflipped_passs_depth(forward) -> None:
    # With model.mirror_depth the published depth is the mirror average; the poses are measured
    # on depth_unflipped (the camera head's own pass). Here the averaged depth is wrong
    # (scaled from 0.5 to 2 down the image rows) and the unflipped one exact: the refinement must give the
    # poses of the exact depth.
    colors, depth, intrinsics, truth = _window(forward)
    head = _bad_head(truth)
    exact = refined_prediction(make_prediction(colors, depth, intrinsics, head), None, RefineConfig())[0]
    distorted = depth * np.linspace(0.5, 2.0, depth.shape[1])[None, :, None]
    wrong = refined_prediction(make_prediction(colors, distorted, intrinsics, head), None, RefineConfig())[0]
    assert not np.allclose(wrong.cam_to_world, exact.cam_to_world, atol=1e-6)
    mirrored = dataclasses.replace(
        make_prediction(colors, distorted, intrinsics, head), depth_unflipped=depth.astype(np.float32)
    )
    refined = refined_prediction(mirrored, None, RefineConfig())[0]
    np.testing.assert_array_equal(refined.cam_to_world, exact.cam_to_world)
    assert refined.depth is mirrored.depth  # the averaged depth is still the one published


def test_refine_parameters_are_validated() -> None:
    flat = PipelineConfig().to_flat()
    assert flat["refine.enabled"] is True and flat["refine.max_rotation_deg"] == 0.0
    assert flat["refine.max_step_ratio"] == 0.0  # no limit by default
    assert PipelineConfig.from_flat({"refine.max_step_ratio": 1.5}).refine.max_step_ratio == 1.5
    for key, value in (
        ("refine.min_inlier_share", 1.5),
        ("refine.min_inliers", 2),
        ("refine.enabled", "yes"),
        ("refine.max_step_ratio", 0.5),
        ("refine.head_tolerance_px", -1.0),
        ("refine.max_rotation_deg", -5.0),
        ("refine.threads", 0),
    ):
        with pytest.raises(ValueError, match=key):
            PipelineConfig.from_flat({key: value})


class StretchedHead:
    """A predictor double whose camera head stretches and turns each step by a random amount
    (log-normal length, 0.4; direction up to 40 degrees; as the compact model's head errs on
    forward motion) while its depth is good (FakePredictor's, 1 % noise)."""

    def __init__(self, fake) -> None:  # noqa: ANN001
        self.fake = fake
        self.rng = np.random.default_rng(7)

    def predict(self, images, query_points=None):  # noqa: ANN001, ANN201
        from dataclasses import replace

        prediction = self.fake.predict(images, query_points)
        poses = np.asarray(prediction.cam_to_world, np.float64)
        head = poses.copy()
        for k in range(1, len(poses)):
            relative = np.linalg.inv(poses[k - 1]) @ poses[k]
            turn = Rotation.from_euler("xy", self.rng.uniform(-40, 40, 2), degrees=True).as_matrix()
            relative[:3, 3] = np.exp(self.rng.normal(0, 0.4)) * turn @ relative[:3, 3]
            head[k] = head[k - 1] @ relative
        return replace(prediction, cam_to_world=head, extrinsics=np.linalg.inv(head)[:, :3, :])


def test_the_pipeline_chains_the_refined_poses(forward) -> None:
    """End to end: with refinement on, the chained path of a forward walk keeps its shape despite
    the stretched head; off, the head's error is chained."""
    from test_mapping_fakes import FakePredictor, path_error_of_extent, sequence_tuple

    from vggt_ros.mapping import Frame, KeyframeConfig, PerceptionPipeline, RefineConfig, WindowConfig

    seq = render_sequence(30, 120, 160, seed=3, path="forward")
    errors, refined = {}, {}
    for enabled in (True, False):
        config = PipelineConfig(
            window=WindowConfig(size=6, stride=3),
            keyframe=KeyframeConfig(min_parallax_px=4.0),
            refine=RefineConfig(enabled=enabled),
        )
        fake = FakePredictor([sequence_tuple(seq)], seed=2, outlier_share=0.0)
        pipeline = PerceptionPipeline(config, StretchedHead(fake))
        results = []
        for i in range(len(seq.images)):
            frame = Frame(seq.stamps[i], "cam", seq.images[i], intrinsics=seq.intrinsics)
            if (job := pipeline.add_frame(frame)) is not None:
                results.append(pipeline.process(job))
        assert len(results) >= 3 and all("refine_ms" in r.timings for r in results)
        errors[enabled] = path_error_of_extent(pipeline.path(), seq)
        refined[enabled] = pipeline.stats["frames_refined"]
    assert refined[False] == 0 and refined[True] > 0
    assert errors[True] < 0.3 * errors[False], errors  # measured 0.7 % and 5.1 % of the extent


class ReportsInputs(StretchedHead):
    """A predictor that, like ``Predictor``, hands its model inputs to ``on_model_inputs``
    before its "network" (here: the stretched head) returns."""

    reports_model_inputs = True
    in_predict = False

    def predict(self, images, query_points=None, on_model_inputs=None):  # noqa: ANN001, ANN201
        prediction = super().predict(images, query_points)
        if on_model_inputs is not None:
            content = np.stack([t.content_mask() for t in prediction.transforms])
            ReportsInputs.in_predict = True
            on_model_inputs(prediction.colors, content)
            ReportsInputs.in_predict = False
        return prediction


def test_the_pipeline_prefetches_keypoints_and_gets_the_same_path(forward, monkeypatch) -> None:
    """With a predictor that reports its inputs, the pipeline starts every window's keypoints
    before the network's result is back (else when the refinement starts); either way once per
    window, each keyframe's keypoints are found once, and the paths are equal bit for bit."""
    from test_mapping_fakes import FakePredictor, sequence_tuple

    from vggt_ros.mapping import Frame, KeyframeConfig, PerceptionPipeline, WindowConfig

    seq = render_sequence(24, 120, 160, seed=3, path="forward")
    prefetched: list[tuple[int, bool]] = []  # (frames, from inside predict)
    original = FeatureCache.prefetch_window

    def counting(self, colors, content, camera_ids=None):  # noqa: ANN001, ANN202
        prefetched.append((len(colors), ReportsInputs.in_predict))
        return original(self, colors, content, camera_ids)

    monkeypatch.setattr(FeatureCache, "prefetch_window", counting)
    paths, caches = {}, {}
    calls = {}
    for wrapper in (StretchedHead, ReportsInputs):
        prefetched.clear()
        config = PipelineConfig(
            window=WindowConfig(size=6, stride=3), keyframe=KeyframeConfig(min_parallax_px=4.0)
        )
        pipeline = PerceptionPipeline(config, wrapper(FakePredictor([sequence_tuple(seq)], seed=2)))
        windows = 0
        for i in range(len(seq.images)):
            if job := pipeline.add_frame(
                Frame(seq.stamps[i], "cam", seq.images[i], intrinsics=seq.intrinsics)
            ):
                pipeline.process(job)
                windows += 1
        paths[wrapper] = pipeline.path()
        caches[wrapper] = pipeline._refine_features
        calls[wrapper] = list(prefetched)
    assert windows >= 3
    assert calls[StretchedHead] == [(6, False)] * windows
    assert calls[ReportsInputs] == [(6, True)] * windows
    assert [t for t, _ in paths[ReportsInputs]] == [t for t, _ in paths[StretchedHead]]
    for (_, prefetched_pose), (_, pose) in zip(paths[ReportsInputs], paths[StretchedHead]):
        np.testing.assert_array_equal(prefetched_pose, pose)
    # the same keypoints were found as often (once per keyframe) with and without prefetching
    assert caches[ReportsInputs].misses == caches[StretchedHead].misses > 0


def test_a_failing_refinement_keeps_the_heads_window(forward, monkeypatch) -> None:
    """An exception inside the refinement (e.g. OpenCV on a malformed image) is logged and
    counted; the window goes on with the camera head's poses."""
    from test_mapping_fakes import FakePredictor, sequence_tuple

    from vggt_ros.mapping import Frame, KeyframeConfig, PerceptionPipeline, WindowConfig
    from vggt_ros.mapping import pipeline as pipeline_module

    def broken(*_args, **_kwargs):  # noqa: ANN002, ANN003, ANN202
        raise RuntimeError("cv2.error: bad image")

    monkeypatch.setattr(pipeline_module, "refined_prediction", broken)
    seq = render_sequence(12, 120, 160, seed=3, path="forward")
    config = PipelineConfig(
        window=WindowConfig(size=4, stride=2), keyframe=KeyframeConfig(min_parallax_px=4.0)
    )
    pipeline = PerceptionPipeline(config, FakePredictor([sequence_tuple(seq)], seed=2))
    results = []
    for i in range(len(seq.images)):
        if job := pipeline.add_frame(Frame(seq.stamps[i], "cam", seq.images[i], intrinsics=seq.intrinsics)):
            results.append(pipeline.process(job))
    assert results and all(r.accepted for r in results)
    assert pipeline.stats["refine_failures"] == len(results) and pipeline.stats["frames_refined"] == 0


def test_early_frames_get_their_final_poses_while_the_other_pairs_run(forward) -> None:
    """``on_early`` gets the poses of the early frames and of the frames they are composed from,
    exactly the final ones, before the refinement returns; every other frame is NaN. With two
    interleaved cameras an early frame's chain follows its own camera."""
    colors, depth, intrinsics, truth = _window(forward)
    head = _bad_head(truth)
    expected = refine_window_poses(colors, depth, intrinsics, head)
    seen: list[np.ndarray] = []
    out = refine_window_poses(colors, depth, intrinsics, head, early_frames=[2], on_early=seen.append)
    np.testing.assert_array_equal(out.cam_to_world, expected.cam_to_world)
    assert len(seen) == 1 and "early_ms" in out.timings
    np.testing.assert_array_equal(seen[0][:3], expected.cam_to_world[:3])
    assert np.isnan(seen[0][3:]).all()
    cams = ["a", "b"] * (len(colors) // 2)  # frame 3 (b) comes from 1 (b), its camera's first
    seen.clear()
    out = refine_window_poses(
        colors, depth, intrinsics, head, camera_ids=cams, early_frames=[3], on_early=seen.append
    )
    ready = [0, 1, 3]
    np.testing.assert_array_equal(seen[0][ready], out.cam_to_world[ready])
    assert np.isnan(np.delete(seen[0], ready, axis=0)).all()
    assert not np.isnan(out.cam_to_world).any()


def test_the_pipeline_chains_during_the_refinement_with_the_same_outcome(forward) -> None:
    """The pipeline aligns each window to the map on the mapped frames' refined poses while the
    refinement still places the new frames: every window's outcome, poses and path equal those
    of chaining after the refinement, bit for bit; chaining's time counts as chaining."""
    from test_mapping_fakes import FakePredictor, sequence_tuple

    from vggt_ros.mapping import Frame, KeyframeConfig, PerceptionPipeline, WindowConfig
    from vggt_ros.mapping.chaining import WindowChainer

    seq = render_sequence(24, 120, 160, seed=3, path="forward")
    partial_calls = []
    original = WindowChainer.align

    def counting(self, prediction, keyframe_ids, window_id=0):  # noqa: ANN001, ANN202
        partial_calls.append(bool(np.isnan(np.asarray(prediction.cam_to_world)).any()))
        return original(self, prediction, keyframe_ids, window_id)

    runs = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(WindowChainer, "align", counting)
        for during in (True, False):
            partial_calls.clear()
            config = PipelineConfig(
                window=WindowConfig(size=6, stride=3), keyframe=KeyframeConfig(min_parallax_px=4.0)
            )
            pipeline = PerceptionPipeline(config, StretchedHead(FakePredictor([sequence_tuple(seq)], seed=2)))
            pipeline._chain_during_refinement = during
            results = []
            for i in range(len(seq.images)):
                if job := pipeline.add_frame(
                    Frame(seq.stamps[i], "cam", seq.images[i], intrinsics=seq.intrinsics)
                ):
                    results.append(pipeline.process(job))
            runs[during] = (results, pipeline.path(), list(partial_calls))
    (during, path_during, calls_during), (after, path_after, calls_after) = runs[True], runs[False]
    assert len(during) == len(after) >= 3 and pipeline.stats["frames_refined"] > 0
    # The first window has nothing mapped: chained after; the others during (partial poses).
    assert calls_during == [False] + [True] * (len(during) - 1) and not any(calls_after)
    for a, b in zip(during, after):
        assert (a.accepted, a.reason, a.residual, a.inlier_ratio) == (
            b.accepted,
            b.reason,
            b.residual,
            b.inlier_ratio,
        )
        np.testing.assert_array_equal(a.cam_to_map, b.cam_to_map)
        assert a.timings["chain_ms"] > 0 and a.timings["refine_ms"] > 0 and "refine_early_ms" not in a.timings
    for (t_a, pose_a), (t_b, pose_b) in zip(path_during, path_after):
        assert t_a == t_b
        np.testing.assert_array_equal(pose_a, pose_b)
