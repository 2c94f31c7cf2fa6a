"""Tests for vggt_ros.geometry: rotations, pose encoding, projection, intrinsics transforms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vggt_ros.geometry import (
    ImageTransform,
    camera_centers,
    camera_to_world,
    crop_intrinsics,
    depth_to_camera_points,
    depth_to_world_points,
    extrinsics_intrinsics_to_pose_encoding,
    invert_rigid,
    pose_encoding_to_extrinsics_intrinsics,
    project_points,
    quaternion_to_rotation_matrix,
    rotation_matrix_to_quaternion,
    scale_intrinsics,
    to_homogeneous,
)

DT = torch.float64


def axis_angle_quaternion(axis: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """[..., 3] axis, [...] angle -> [..., 4] xyzw (independent of the code under test)."""
    axis = axis / axis.norm(dim=-1, keepdim=True)
    return torch.cat((axis * torch.sin(angle / 2)[..., None], torch.cos(angle / 2)[..., None]), dim=-1)


def rodrigues(axis: torch.Tensor, angle: float) -> torch.Tensor:
    """3x3 rotation by the Rodrigues formula, for hand checks."""
    k = axis / axis.norm()
    Kx = torch.tensor([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]], dtype=DT)
    return torch.eye(3, dtype=DT) + math.sin(angle) * Kx + (1 - math.cos(angle)) * Kx @ Kx


def random_rotations(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n, 4, generator=g, dtype=DT)
    return quaternion_to_rotation_matrix(q)


def random_cameras(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 1)
    t = torch.randn(n, 3, 1, generator=g, dtype=DT)
    return torch.cat((random_rotations(n, seed), t), dim=-1)


def make_k(fx: float, fy: float, cx: float, cy: float, skew: float = 0.0) -> torch.Tensor:
    return torch.tensor([[fx, skew, cx], [0, fy, cy], [0, 0, 1]], dtype=DT)


# --------------------------------------------------------------------------- rotations


def test_quaternion_matches_rodrigues():
    g = torch.Generator().manual_seed(3)
    for _ in range(20):
        axis = torch.randn(3, generator=g, dtype=DT)
        angle = float(torch.rand(1, generator=g, dtype=DT)) * 2 * math.pi
        q = axis_angle_quaternion(axis, torch.tensor(angle, dtype=DT))
        torch.testing.assert_close(quaternion_to_rotation_matrix(q), rodrigues(axis, angle))


def test_quaternion_90_deg_about_z_by_hand():
    q = torch.tensor([0.0, 0.0, math.sqrt(0.5), math.sqrt(0.5)], dtype=DT)
    expected = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=DT)
    torch.testing.assert_close(quaternion_to_rotation_matrix(q), expected)
    torch.testing.assert_close(rotation_matrix_to_quaternion(expected), q)


def test_non_unit_quaternion_is_normalised():
    q = torch.tensor([0.1, -0.4, 0.3, 0.8], dtype=DT)
    torch.testing.assert_close(quaternion_to_rotation_matrix(5.0 * q), quaternion_to_rotation_matrix(q))
    R = quaternion_to_rotation_matrix(5.0 * q)
    torch.testing.assert_close(R @ R.T, torch.eye(3, dtype=DT))


@pytest.mark.parametrize("angle", [0.0, 1e-8, 0.3, 2.0, math.pi - 1e-3, math.pi - 1e-7, math.pi])
def test_rotation_round_trip_all_angles(angle):
    g = torch.Generator().manual_seed(7)
    axes = torch.randn(64, 3, generator=g, dtype=DT)
    axes[:3] = torch.eye(3, dtype=DT)  # pure x/y/z axes hit every branch at 180 degrees
    q = axis_angle_quaternion(axes, torch.full((64,), angle, dtype=DT))
    q = torch.where(q[..., 3:] < 0, -q, q)
    R = quaternion_to_rotation_matrix(q)
    q_back = rotation_matrix_to_quaternion(R)
    torch.testing.assert_close(quaternion_to_rotation_matrix(q_back), R, atol=1e-9, rtol=0)
    assert torch.all(q_back[..., 3] >= 0)
    if angle < math.pi - 1e-6:  # away from 180 degrees the sign-normalised quaternion is unique
        torch.testing.assert_close(q_back, q, atol=1e-7, rtol=0)


def test_rotation_round_trip_random_batch_shape():
    R = random_rotations(60).reshape(3, 4, 5, 3, 3)
    q = rotation_matrix_to_quaternion(R)
    assert q.shape == (3, 4, 5, 4)
    torch.testing.assert_close(q.norm(dim=-1), torch.ones(3, 4, 5, dtype=DT))
    torch.testing.assert_close(quaternion_to_rotation_matrix(q), R)


def test_quaternion_sign_convention_w_nonnegative():
    # 180 deg about x: w = 0, the quaternion is +x; any rotation with w < 0 input is flipped.
    Rx = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=DT))
    torch.testing.assert_close(rotation_matrix_to_quaternion(Rx), torch.tensor([1.0, 0, 0, 0], dtype=DT))
    q = torch.tensor([0.2, 0.1, -0.3, -0.9], dtype=DT)
    q = q / q.norm()
    torch.testing.assert_close(rotation_matrix_to_quaternion(quaternion_to_rotation_matrix(q)), -q)


def test_rotation_numpy_in_numpy_out():
    q = np.array([0.0, 0.0, 0.0, 1.0])
    R = quaternion_to_rotation_matrix(q)
    assert isinstance(R, np.ndarray)
    np.testing.assert_allclose(R, np.eye(3))
    assert isinstance(rotation_matrix_to_quaternion(np.eye(3)), np.ndarray)


def test_read_only_numpy_input_converts_without_a_warning():
    """Arrays from ROS messages or np.broadcast_to are read-only; torch must not share them."""
    import warnings

    q = np.array([0.0, 0.0, 0.0, 1.0])
    q.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        R = quaternion_to_rotation_matrix(q)
    np.testing.assert_allclose(R, np.eye(3))
    assert not q.flags.writeable and q[3] == 1.0


# --------------------------------------------------------------------------- pose encoding


def test_pose_encoding_decode_by_hand():
    H, W = 350, 518
    enc = torch.tensor([1.0, 2.0, 3.0, 0.0, 0.0, 0.0, 1.0, math.pi / 2, 2 * math.atan(0.5)], dtype=DT)
    extr, intr = pose_encoding_to_extrinsics_intrinsics(enc, (H, W))
    expected_extr = torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, 2], [0, 0, 1, 3]], dtype=DT)
    torch.testing.assert_close(extr, expected_extr)
    # fov_h = 90 deg -> fy = H/2; tan(fov_w/2) = 0.5 -> fx = W; principal point (W/2, H/2).
    torch.testing.assert_close(intr, make_k(W, H / 2, W / 2, H / 2))


def test_pose_encoding_round_trip():
    H, W = 294, 518
    extr = random_cameras(12).reshape(3, 4, 3, 4)
    f = torch.linspace(200.0, 900.0, 12, dtype=DT).reshape(3, 4)
    K = torch.zeros(3, 4, 3, 3, dtype=DT)
    K[..., 0, 0], K[..., 1, 1] = f, 1.1 * f
    K[..., 0, 2], K[..., 1, 2], K[..., 2, 2] = W / 2, H / 2, 1.0
    enc = extrinsics_intrinsics_to_pose_encoding(extr, K, (H, W))
    assert enc.shape == (3, 4, 9)
    extr_back, K_back = pose_encoding_to_extrinsics_intrinsics(enc, (H, W))
    torch.testing.assert_close(extr_back, extr)
    torch.testing.assert_close(K_back, K)
    torch.testing.assert_close(extrinsics_intrinsics_to_pose_encoding(extr_back, K_back, (H, W)), enc)


def test_pose_encoding_broadcasts_one_k_and_float32():
    extr = random_cameras(5).float()
    K = make_k(300.0, 300.0, 259.0, 175.0).float()
    enc = extrinsics_intrinsics_to_pose_encoding(extr, K, (350, 518))
    assert enc.shape == (5, 9) and enc.dtype == torch.float32
    torch.testing.assert_close(enc[:, 7], torch.full((5,), 2 * math.atan(175 / 300)))
    with pytest.raises(ValueError, match=r"\[\.\.\., 9\]"):
        pose_encoding_to_extrinsics_intrinsics(torch.zeros(5, 8), (350, 518))


# --------------------------------------------------------------------------- rigid transforms


def test_invert_rigid_shapes_and_identity():
    T = random_cameras(6)
    T_inv = invert_rigid(T)
    assert T_inv.shape == (6, 3, 4)
    torch.testing.assert_close(
        to_homogeneous(T) @ to_homogeneous(T_inv), torch.eye(4, dtype=DT).expand(6, 4, 4)
    )
    T4 = to_homogeneous(T)
    T4_inv = invert_rigid(T4)
    assert T4_inv.shape == (6, 4, 4)
    torch.testing.assert_close(T4_inv, torch.linalg.inv(T4))
    assert to_homogeneous(T4) is T4


def test_camera_centers_is_minus_rt_t():
    T = random_cameras(8)
    R, t = T[:, :, :3], T[:, :, 3]
    expected = -torch.einsum("nji,nj->ni", R, t)
    torch.testing.assert_close(camera_centers(T), expected)
    torch.testing.assert_close(camera_to_world(T)[:, :3, 3], expected)
    torch.testing.assert_close(camera_to_world(T)[:, :3, :3], R.transpose(-1, -2))


# --------------------------------------------------------------------------- projection


def ros_looking_forward_camera() -> tuple[torch.Tensor, torch.Tensor]:
    """Camera 1 m above the world origin looking along world +x (world z up, ROS style).

    Camera axes in world coordinates: x_c (right) = -y_w, y_c (down) = -z_w, z_c (fwd) = +x_w.
    """
    R_world_from_cam = torch.tensor([[0.0, 0, 1], [-1, 0, 0], [0, -1, 0]], dtype=DT)
    C = torch.tensor([0.0, 0.0, 1.0], dtype=DT)
    R = R_world_from_cam.T
    extr = torch.cat((R, (-R @ C)[:, None]), dim=-1)
    return extr, C


def test_project_known_point_by_hand():
    extr, C = ros_looking_forward_camera()
    K = make_k(100.0, 100.0, 320.0, 240.0)
    # 5 m ahead, 1 m to the right (world -y), 0.5 m above the camera -> camera (1, -0.5, 5).
    X = torch.tensor([[5.0, -1.0, 1.5], [2.0, 0.0, 1.0]], dtype=DT)
    pixels, depth = project_points(X, extr, K)
    torch.testing.assert_close(pixels, torch.tensor([[340.0, 230.0], [320.0, 240.0]], dtype=DT))
    torch.testing.assert_close(depth, torch.tensor([5.0, 2.0], dtype=DT))
    torch.testing.assert_close(camera_centers(extr), C)


def test_unproject_then_project_returns_pixel_grid():
    H, W = 7, 11
    extr = random_cameras(3)
    K = torch.stack(
        [make_k(20.0, 22.0, 5.2, 3.1), make_k(15.0, 15.0, 6.0, 2.0, skew=0.7), make_k(9, 9, 5, 3)]
    )
    g = torch.Generator().manual_seed(0)
    depth = 1.0 + 4.0 * torch.rand(3, H, W, 1, generator=g, dtype=DT)
    world = depth_to_world_points(depth, extr, K)
    assert world.shape == (3, H, W, 3)
    pixels, z = project_points(world.reshape(3, -1, 3), extr, K)
    v, u = torch.meshgrid(torch.arange(H, dtype=DT), torch.arange(W, dtype=DT), indexing="ij")
    grid = torch.stack((u, v), dim=-1).reshape(1, -1, 2).expand(3, -1, -1)
    torch.testing.assert_close(pixels, grid)
    torch.testing.assert_close(z, depth.reshape(3, -1))


def test_depth_to_camera_points_by_hand_and_shapes():
    K = make_k(2.0, 4.0, 1.0, 0.5)
    depth = torch.full((2, 3), 2.0, dtype=DT)
    pts = depth_to_camera_points(depth, K)
    assert pts.shape == (2, 3, 3)
    # pixel (u=2, v=1): x = (2 - 1) * 2 / 2 = 1, y = (1 - 0.5) * 2 / 4 = 0.25
    torch.testing.assert_close(pts[1, 2], torch.tensor([1.0, 0.25, 2.0], dtype=DT))
    torch.testing.assert_close(depth_to_camera_points(depth[..., None], K), pts)
    # One K broadcast over a batch of frames.
    assert depth_to_camera_points(depth.expand(4, 2, 3), K).shape == (4, 2, 3, 3)


def test_camera_numpy_in_numpy_out():
    extr, _ = ros_looking_forward_camera()
    K = make_k(100.0, 100.0, 320.0, 240.0)
    pixels, depth = project_points(np.array([[5.0, -1.0, 1.5]]), extr.numpy(), K.numpy())
    assert isinstance(pixels, np.ndarray) and isinstance(depth, np.ndarray)
    np.testing.assert_allclose(pixels, [[340.0, 230.0]])
    assert isinstance(depth_to_world_points(np.ones((2, 3)), extr.numpy(), K.numpy()), np.ndarray)
    assert isinstance(invert_rigid(extr.numpy()), np.ndarray)


# --------------------------------------------------------------------------- intrinsics


def random_points_in_front(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    p = torch.randn(n, 3, generator=g, dtype=DT)
    p[:, 2] = 1.0 + 5.0 * torch.rand(n, generator=g, dtype=DT)
    return p


def project_cam(points: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    return project_points(points, torch.eye(3, 4, dtype=DT), intrinsics)[0]


def test_scale_intrinsics_pixel_centre_convention():
    K = make_k(100.0, 80.0, 31.5, 23.5, skew=2.0)
    K2 = scale_intrinsics(K, 0.5, 2.0)
    torch.testing.assert_close(K2, make_k(50.0, 160.0, 15.5, 47.5, skew=1.0))
    # The image centre stays the image centre: (W-1)/2 = 31.5 of a 64-wide image -> 15.5 of 32.
    pts = random_points_in_front(50)
    expected = project_cam(pts, K)
    expected = torch.stack(((expected[:, 0] + 0.5) * 0.5 - 0.5, (expected[:, 1] + 0.5) * 2.0 - 0.5), -1)
    torch.testing.assert_close(project_cam(pts, K2), expected)


def test_crop_and_pad_intrinsics():
    K = make_k(100.0, 100.0, 50.0, 40.0)
    torch.testing.assert_close(crop_intrinsics(K, 10, 5), make_k(100.0, 100.0, 40.0, 35.0))
    torch.testing.assert_close(crop_intrinsics(K, -7, -3), make_k(100.0, 100.0, 57.0, 43.0))
    pts = random_points_in_front(20)
    torch.testing.assert_close(
        project_cam(pts, crop_intrinsics(K, 10, 5)), project_cam(pts, K) - torch.tensor([10.0, 5.0], dtype=DT)
    )


TRANSFORMS = [
    ImageTransform((480, 640), (392, 518), (518 / 640, 392 / 480), (0.0, 0.0), (0, 0, 518, 392)),
    ImageTransform((640, 480), (518, 518), (518 / 480, 700 / 640), (0.0, -91.0), (0, 0, 518, 518)),
    ImageTransform((480, 640), (518, 518), (518 / 640, 392 / 480), (0.0, 63.0), (0, 63, 518, 455)),
]


@pytest.mark.parametrize("tf", TRANSFORMS, ids=["resize", "crop", "pad"])
def test_image_transform_consistent_with_projection(tf):
    K = make_k(500.0, 510.0, 320.2, 239.7, skew=0.3)
    pts = random_points_in_front(100)
    via_pixels = tf.original_to_model_points(project_cam(pts, K))
    via_K = project_cam(pts, tf.intrinsics_to_model(K))
    torch.testing.assert_close(via_K, via_pixels)
    # The explicit per-axis formula, written out independently.
    raw = project_cam(pts, K)
    sx, sy = tf.scale
    tx, ty = tf.offset
    formula = torch.stack((sx * (raw[:, 0] + 0.5) - 0.5 + tx, sy * (raw[:, 1] + 0.5) - 0.5 + ty), -1)
    torch.testing.assert_close(via_pixels, formula)
    # Inverses.
    torch.testing.assert_close(tf.model_to_original_points(via_pixels), raw)
    torch.testing.assert_close(tf.intrinsics_to_original(tf.intrinsics_to_model(K)), K)
    # Composition matches scale_intrinsics then crop_intrinsics (a pad is a negative crop).
    torch.testing.assert_close(
        crop_intrinsics(scale_intrinsics(K, sx, sy), -tx, -ty), tf.intrinsics_to_model(K)
    )


def test_image_transform_edges_numpy_and_mask():
    tf = TRANSFORMS[2]
    # The original image's outer edges land on the content box's outer edges.
    corners = np.array([[-0.5, -0.5], [639.5, 479.5]])
    np.testing.assert_allclose(tf.original_to_model_points(corners), [[-0.5, 62.5], [517.5, 454.5]])
    assert isinstance(tf.intrinsics_to_model(np.eye(3)), np.ndarray)
    mask = tf.content_mask()
    assert mask.shape == (518, 518) and mask.sum() == 518 * 392 and mask[63, 0] and not mask[62, 0]
    with pytest.raises(ValueError, match=r"\[\.\.\., 2\]"):
        tf.original_to_model_points(np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"\[\.\.\., 3, 3\]"):
        tf.intrinsics_to_model(np.eye(4))


def _wall_camera(x: float, yaw_deg: float = 0.0) -> np.ndarray:
    """Camera at (x, 0, 0) looking along +z (turned ``yaw_deg`` about the y axis)."""
    a = math.radians(yaw_deg)
    T = np.eye(4)
    T[:3, :3] = [[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]]
    T[0, 3] = x
    return T


def test_view_overlap_of_a_wall_by_hand() -> None:
    """A wall 4 m ahead, 64 px wide images with f = 32: each camera sees 8 m of it. Shifted by
    2 m the other camera sees 6 of those 8 m; turned away it sees none; a nearer surface in
    front of the second camera (an occluder) hides all of it."""
    from vggt_ros.geometry.overlap import view_overlap

    K = np.array([[32.0, 0, 31.5], [0, 32.0, 23.5], [0, 0, 1]])
    wall = np.full((48, 64), 4.0)
    same = _wall_camera(0.0)
    assert view_overlap(wall, K, same, wall, K, same, step=1) == pytest.approx(1.0)
    assert view_overlap(wall, K, same, wall, K, _wall_camera(2.0), step=1) == pytest.approx(0.75, abs=0.02)
    assert view_overlap(wall, K, same, wall, K, _wall_camera(0.0, 180.0), step=1) == 0.0
    assert view_overlap(wall, K, same, np.full((48, 64), 2.0), K, _wall_camera(2.0), step=1) == 0.0
    unknown = np.full((48, 64), np.nan)
    assert view_overlap(unknown, K, same, wall, K, same) == 0.0


def test_mutual_view_overlap_is_the_smaller_direction() -> None:
    """A camera 4 m further back from the wall (8 m away) sees all of the near camera's 8 x 6 m
    of it; the near camera sees a quarter of the far camera's 16 x 12 m: the mutual share is
    that quarter."""
    from vggt_ros.geometry.overlap import mutual_view_overlap, view_overlap

    K = np.array([[32.0, 0, 31.5], [0, 32.0, 23.5], [0, 0, 1]])
    near, far = _wall_camera(0.0), _wall_camera(0.0)
    far[2, 3] = -4.0
    near_depth, far_depth = np.full((48, 64), 4.0), np.full((48, 64), 8.0)
    assert view_overlap(near_depth, K, near, far_depth, K, far, step=1) == pytest.approx(1.0)
    assert view_overlap(far_depth, K, far, near_depth, K, near, step=1) == pytest.approx(0.25, abs=0.03)
    assert mutual_view_overlap(near_depth, K, near, far_depth, K, far) == pytest.approx(0.25, abs=0.05)
