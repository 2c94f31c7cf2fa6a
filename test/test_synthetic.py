"""Procedural synthetic sequences: exact ground truth, determinism, speed, files on disk."""

from __future__ import annotations

import json
import time

import cv2
import numpy as np
import pytest

from vggt_ros.eval.synthetic import (
    PATHS,
    SyntheticScene,
    camera_path,
    intrinsics_from_fov,
    look_at,
    make_scene,
    render_pixels,
    render_sequence,
    render_views,
    save_sequence_images,
)
from vggt_ros.geometry import depth_to_camera_points, depth_to_world_points, invert_rigid, project_points

H, W = 120, 160


@pytest.fixture(scope="module", params=PATHS)
def seq(request):
    return render_sequence(num_frames=8, height=H, width=W, seed=3, path=request.param)


def _reproject(
    scene: SyntheticScene,
    intrinsics: np.ndarray,
    src: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    dst: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> dict[str, np.ndarray]:
    """Unproject ``src``'s depth to the world, project into ``dst`` and re-render there.

    src, dst: (image [H, W, 3], depth [H, W], face ids [H, W], cam_to_world [4, 4]).
    Returns per in-view source pixel: projected (u, v) and z in dst, dst's re-rendered depth,
    colour, hit point and face at (u, v), the source world point, colour and face, and the
    source pixel's flat index.
    """
    img_i, depth_i, face_i, T_i = src
    _, _, _, T_j = dst
    ext_i, ext_j = invert_rigid(T_i)[:3], invert_rigid(T_j)[:3]
    # float64: the helpers keep the input dtype, and float32 world coordinates would be the
    # dominant error (~1e-5 m) instead of the float32 depth itself (~1e-7 relative).
    X = depth_to_world_points(depth_i.astype(np.float64), ext_i, intrinsics).reshape(-1, 3)
    uv, z = project_points(X, ext_j, intrinsics)
    h, w = depth_i.shape
    # Pixel (u, v) covers [u - 0.5, u + 0.5): inside the image means nearest pixel exists.
    inside = (z > 0) & (uv[:, 0] >= -0.5) & (uv[:, 0] < w - 0.5) & (uv[:, 1] >= -0.5) & (uv[:, 1] < h - 0.5)
    idx = np.flatnonzero(inside)
    rgb_j, depth_j, pts_j, fid_j = render_pixels(scene, T_j, intrinsics, uv[idx])
    return {
        "idx": idx,
        "uv": uv[idx],
        "z": z[idx],
        "depth_j": depth_j,
        "rgb_j": rgb_j,
        "pts_j": pts_j,
        "face_j": fid_j,
        "X": X[idx],
        "rgb_i": img_i.reshape(-1, 3)[idx],
        "face_i": face_i.reshape(-1)[idx],
    }


def _frame(s, k: int):
    return s.images[k], s.depth[k], s.face_ids[k], s.cam_to_world[k]


def test_intrinsics_and_first_pose_are_as_asked():
    for path in PATHS:
        s = render_sequence(num_frames=4, height=60, width=80, seed=5, fov_deg=70.0, path=path)
        f = 80 / (2 * np.tan(np.deg2rad(35.0)))
        np.testing.assert_allclose(s.intrinsics, [[f, 0, 39.5], [0, f, 29.5], [0, 0, 1]], rtol=0, atol=1e-12)
        np.testing.assert_array_equal(s.intrinsics, intrinsics_from_fov(60, 80, 70.0))
        # The trajectory is the requested one, and its start does not depend on its length.
        np.testing.assert_array_equal(s.cam_to_world, camera_path(path, 4, seed=5))
        np.testing.assert_array_equal(s.cam_to_world, camera_path(path, 8, seed=5)[:4])
        for T in s.cam_to_world:
            R = T[:3, :3]
            np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-12)
            assert np.linalg.det(R) == pytest.approx(1.0)
            np.testing.assert_array_equal(T[3], [0, 0, 0, 1])
            # Upright camera in a z-up world: level x axis, y (down) points down-ish.
            assert abs(R[2, 0]) < 1e-12 and R[2, 1] < -0.8
        np.testing.assert_allclose(s.stamps, np.arange(4) / 10.0)
        assert s.images.shape == (4, 60, 80, 3) and s.images.dtype == np.uint8
        assert s.depth.shape == (4, 60, 80) and s.depth.dtype == np.float32
        assert s.cam_to_world.dtype == np.float64 and s.right is None and s.baseline is None
        # The stored frames are exactly the render of the stored poses.
        images, depth, faces = render_views(s.scene, s.cam_to_world[:1], s.intrinsics, 60, 80)
        np.testing.assert_array_equal(images[0], s.images[0])
        np.testing.assert_array_equal(depth[0], s.depth[0])
        np.testing.assert_array_equal(faces[0], s.face_ids[0])
        np.testing.assert_allclose(s.extrinsics, invert_rigid(s.cam_to_world)[:, :3], atol=0)


def test_hand_computed_depth_fronto_parallel_wall_and_floor():
    scene = make_scene(0)
    K = intrinsics_from_fov(48, 64, 70.0)
    # 1 m in front of the +x wall (x = 4), looking straight at it: z-depth is 1 everywhere.
    T = look_at([3.0, 0.0, 1.5], [4.0, 0.0, 1.5])
    np.testing.assert_array_equal(T[:3, :3], [[0, 0, 1], [-1, 0, 0], [0, -1, 0]])
    _, depth, faces = render_views(scene, T[None], K, 48, 64)
    np.testing.assert_array_equal(depth, 1.0)
    np.testing.assert_array_equal(faces, 1)  # room (box 0), axis x, hi side
    # Straight down from 1 m above the floor, away from the objects: depth 1, floor face.
    T = np.eye(4)
    T[:3, :3] = np.array([[0, -1, 0], [-1, 0, 0], [0, 0, -1]]).T  # columns: right, down, fwd
    T[:3, 3] = [2.5, 1.5, 1.0]
    _, depth, faces = render_views(scene, T[None], K, 48, 64)
    np.testing.assert_allclose(depth, 1.0, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(faces, 4)  # room, axis z, lo side (z = 0)
    # The hit points are the unprojected pixel centres, and colour is the texture there.
    v, u = np.mgrid[0:48, 0:64]
    uv = np.stack((u.ravel(), v.ravel()), -1).astype(float)
    rgb, z, pts, face = render_pixels(scene, T, K, uv)
    expected = depth_to_world_points(np.ones((48, 64)), invert_rigid(T)[:3], K).reshape(-1, 3)
    np.testing.assert_allclose(pts, expected, atol=1e-12)
    np.testing.assert_array_equal(rgb, scene.surface_color(expected, face))


def test_camera_rays_agree_with_geometry_helpers():
    # Rays through pixel centres are the helpers' unprojection of unit depth, and the stored
    # depth is exactly the float32 of the rendered one (no other rounding on the way).
    s = render_sequence(num_frames=1, height=30, width=40, seed=1)
    cam = depth_to_camera_points(np.ones((30, 40)), s.intrinsics)
    world = cam.reshape(-1, 3) @ s.cam_to_world[0, :3, :3].T + s.cam_to_world[0, :3, 3]
    v, u = np.mgrid[0:30, 0:40]
    _, depth, pts, _ = render_pixels(s.scene, s.cam_to_world[0], s.intrinsics, np.stack((u, v), -1))
    np.testing.assert_array_equal(depth.reshape(30, 40).astype(np.float32), s.depth[0])
    ray = (pts - s.cam_to_world[0, :3, 3]) / depth[:, None]
    np.testing.assert_allclose(ray, world - s.cam_to_world[0, :3, 3], atol=1e-9)


def test_depth_positive_finite_and_views_textured(seq):
    assert np.all(np.isfinite(seq.depth))
    # Cameras keep >= 0.25 m from every surface; the room diagonal bounds depth from above.
    assert seq.depth.min() > 0.1
    assert seq.depth.max() < np.linalg.norm([8.0, 6.0, 3.0])
    assert seq.face_ids.min() >= 0 and seq.face_ids.max() < 6 * seq.scene.num_boxes
    gray = seq.images.astype(np.float64).mean(-1)
    blocks = gray[:, : H // 16 * 16, : W // 16 * 16].reshape(len(gray), H // 16, 16, W // 16, 16)
    # Every frame is textured nearly everywhere (no blank walls, no sky).
    textured = blocks.std(axis=(2, 4)) > 8.0
    assert textured.mean(axis=(1, 2)).min() > 0.95
    # Several surfaces in view: the room and at least one object in most frames.
    sees_object = (seq.face_ids >= 6).any(axis=(1, 2))
    assert sees_object.mean() >= 0.5


def test_motion_is_smooth_with_parallax(seq):
    centres = seq.cam_to_world[:, :3, 3]
    steps = np.linalg.norm(np.diff(centres, axis=0), axis=1)
    assert steps.min() > 0.03 and steps.max() < 0.3
    # Consecutive steps change gradually (no jumps).
    assert np.abs(np.diff(steps)).max() < 0.05
    R = seq.cam_to_world[:, :3, :3]
    rel = np.einsum("sji,sjk->sik", R[:-1], R[1:])
    angles = np.degrees(np.arccos(np.clip((np.trace(rel, axis1=1, axis2=2) - 1) / 2, -1, 1)))
    assert angles.max() < 10.0


@pytest.mark.parametrize("pair", [(0, 1), (1, 0), (2, 5), (0, 7)])
def test_reprojection_is_exact(seq, pair):
    i, j = pair
    r = _reproject(seq.scene, seq.intrinsics, _frame(seq, i), _frame(seq, j))
    assert len(r["idx"]) > 0.3 * H * W
    z, depth_j = r["z"], r["depth_j"]
    # Nothing sees through a surface: along dst's ray to X the first hit is at or before X.
    # (Tolerances cover the float32 depth maps: relative error ~1e-7.)
    assert np.all(depth_j <= z * (1 + 1e-4) + 1e-6)
    visible = depth_j >= z * (1 - 1e-4) - 1e-6
    assert visible.mean() > (0.7 if j - i in (1, -1) else 0.3)
    # Non-occluded: same surface point, same face, same colour.
    # The float32 depth's rounding (~1e-7 relative) moves X off its surface a little; seen at a
    # grazing angle from dst that grows, hence a quantile plus a loose bound far below a pixel
    # footprint (~1e-2 m here) rather than one tight tolerance.
    err = np.linalg.norm(r["pts_j"][visible] - r["X"][visible], axis=1)
    assert np.quantile(err, 0.999) < 1e-5 and err.max() < 1e-3
    assert (r["face_j"][visible] == r["face_i"][visible]).mean() > 0.999
    same_colour = np.all(r["rgb_j"][visible] == r["rgb_i"][visible], axis=1)
    assert same_colour.mean() > 0.999
    # And through dst's depth map at the nearest pixel centre (what a consumer does): the world
    # point from depth lies on X's face plane where the nearest pixel sees that face, within
    # float32 precision, and within about a pixel footprint of X.
    u_n, v_n = np.rint(r["uv"][visible]).astype(int).T
    ext_j = invert_rigid(seq.cam_to_world[j])[:3]
    Y = depth_to_world_points(seq.depth[j].astype(np.float64), ext_j, seq.intrinsics)[v_n, u_n]
    same_face = seq.face_ids[j][v_n, u_n] == r["face_i"][visible]
    # Not all: a face seen head-on in src but at a grazing angle in dst squeezes into a strip a
    # pixel or two wide there, whose nearest pixel centres often lie on the neighbouring face.
    assert same_face.mean() > 0.85
    axis, coord = seq.scene.face_plane(r["face_i"][visible][same_face])
    on_plane = Y[same_face][np.arange(same_face.sum()), axis]
    np.testing.assert_allclose(on_plane, coord, rtol=0, atol=1e-5)
    footprint = z[visible] / seq.intrinsics[0, 0]
    dist = np.linalg.norm(Y - r["X"][visible], axis=1)
    assert np.median(dist / footprint) < 1.0


def test_determinism_and_seed_variation():
    a = render_sequence(num_frames=3, height=40, width=50, seed=11, path="forward")
    b = render_sequence(num_frames=3, height=40, width=50, seed=11, path="forward")
    for name in ("images", "depth", "cam_to_world", "intrinsics", "stamps", "face_ids"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    c = render_sequence(num_frames=3, height=40, width=50, seed=12, path="forward")
    assert not np.array_equal(a.images, c.images)
    assert not np.array_equal(a.depth, c.depth)
    assert not np.array_equal(a.cam_to_world, c.cam_to_world)
    # Paths differ from one another for the same seed.
    poses = [camera_path(p, 3, seed=11) for p in PATHS]
    assert not np.array_equal(poses[0], poses[1]) and not np.array_equal(poses[1], poses[2])


def test_texture_is_a_function_of_the_surface_point():
    scene = make_scene(2)
    rng = np.random.default_rng(0)
    face = rng.integers(0, 6 * scene.num_boxes, 1000)
    pts = rng.uniform(-3, 3, (1000, 3))
    axis, coord = scene.face_plane(face)
    pts[np.arange(1000), axis] = coord
    first = scene.surface_color(pts, face)
    # Same point, different order and batch: same colour; the off-plane coordinate is ignored.
    perm = rng.permutation(1000)
    np.testing.assert_array_equal(scene.surface_color(pts[perm], face[perm]), first[perm])
    shifted = pts.copy()
    shifted[np.arange(1000), axis] += 0.01
    np.testing.assert_array_equal(scene.surface_color(shifted, face), first)
    # High frequency: 2 cm apart along the surface usually changes the colour.
    moved = pts.copy()
    moved[np.arange(1000), (axis + 1) % 3] += 0.02
    assert np.any(scene.surface_color(moved, face) != first, axis=1).mean() > 0.9


def test_second_camera_is_a_rectified_stereo_rig():
    b = 0.2
    s = render_sequence(num_frames=3, height=H, width=W, seed=4, path="sideways", second_camera_baseline=b)
    r = s.right
    assert r is not None and s.baseline == b and r.right is None
    offset = np.eye(4)
    offset[0, 3] = b
    np.testing.assert_allclose(
        invert_rigid(s.cam_to_world) @ r.cam_to_world, np.broadcast_to(offset, (3, 4, 4)), atol=1e-12
    )
    np.testing.assert_array_equal(r.stamps, s.stamps)
    np.testing.assert_array_equal(r.intrinsics, s.intrinsics)
    assert not np.array_equal(r.images, s.images)
    rep = _reproject(s.scene, s.intrinsics, _frame(s, 1), _frame(r, 1))
    # Rectified: same row, disparity f b / z.
    v, u = np.divmod(rep["idx"], W)
    f = s.intrinsics[0, 0]
    np.testing.assert_allclose(rep["uv"][:, 1], v, atol=1e-6)
    np.testing.assert_allclose(rep["uv"][:, 0], u - f * b / rep["z"], atol=1e-5)
    visible = rep["depth_j"] >= rep["z"] * (1 - 1e-4)
    assert visible.mean() > 0.8
    assert np.all(rep["rgb_j"][visible] == rep["rgb_i"][visible], axis=1).mean() > 0.999
    with pytest.raises(ValueError, match="too close"):
        render_sequence(num_frames=2, height=10, width=10, path="forward", second_camera_baseline=5.0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="path"):
        render_sequence(num_frames=2, height=10, width=10, path="spiral")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_frames"):
        render_sequence(num_frames=0, height=10, width=10)
    with pytest.raises(ValueError, match="fov"):
        render_sequence(num_frames=1, height=10, width=10, fov_deg=180.0)
    with pytest.raises(ValueError, match="height"):
        render_sequence(num_frames=1, height=0, width=10)


def test_long_sequences_stay_in_the_room():
    for path in PATHS:
        poses = camera_path(path, 200, seed=7)
        assert np.all(make_scene(7).is_free(poses[:, :3, 3]))


def test_save_sequence_images(tmp_path):
    s = render_sequence(num_frames=3, height=40, width=50, seed=2, path="orbit", second_camera_baseline=0.1)
    gt_path = save_sequence_images(s, tmp_path / "seq")
    assert gt_path == tmp_path / "seq" / "ground_truth.json"
    gt = json.loads(gt_path.read_text())
    assert [f["file"] for f in gt["frames"]] == ["frame_0000.png", "frame_0001.png", "frame_0002.png"]
    for k, frame in enumerate(gt["frames"]):
        img = cv2.cvtColor(cv2.imread(str(tmp_path / "seq" / frame["file"])), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(img, s.images[k])
        np.testing.assert_array_equal(np.array(frame["cam_to_world"]), s.cam_to_world[k])
        assert frame["stamp"] == s.stamps[k]
    np.testing.assert_array_equal(np.array(gt["intrinsics"]), s.intrinsics)
    assert (gt["height"], gt["width"], gt["path"], gt["seed"]) == (40, 50, "orbit", 2)
    np.testing.assert_array_equal(np.load(tmp_path / "seq" / gt["depth_file"]), s.depth)
    assert gt["second_camera"] == {"folder": "right", "baseline": 0.1}
    right = json.loads((tmp_path / "seq" / "right" / "ground_truth.json").read_text())
    np.testing.assert_array_equal(np.array(right["frames"][0]["cam_to_world"]), s.right.cam_to_world[0])
    assert right["second_camera"] is None
    np.testing.assert_array_equal(np.load(tmp_path / "seq" / "right" / "depth.npy"), s.right.depth)


def test_speed():
    render_sequence(num_frames=1, height=24, width=32)  # warm caches and lazy imports
    start = time.perf_counter()
    render_sequence(num_frames=8, height=240, width=320, path="orbit")
    elapsed = time.perf_counter() - start
    assert elapsed < 5.0, f"8 frames at 240x320 took {elapsed:.2f} s"
