"""The procedural renderer (vggt_ros.eval.procedural): reproducible, exact ground truth."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vggt_ros.eval.procedural import MOTIONS, ProceduralSettings, render_windows, sample_scenes, window_seeds
from vggt_ros.eval.procedural.motion import sample_motion
from vggt_ros.eval.procedural.raycast import cast
from vggt_ros.eval.procedural.scene import (
    CLEARANCE,
    NEAR_OBJECT_DISTANCE,
    _box_sdf,
    _cylinder_sdf,
    sample_scene,
)

SMALL = ProceduralSettings(height=36, width=48, frames=3, track_queries=24)


def test_windows_are_pure_functions_of_their_seeds() -> None:
    seeds = window_seeds(7, range(4))
    together = render_windows(SMALL, seeds, chunk=4)
    split = render_windows(SMALL, seeds, chunk=1)
    again = render_windows(SMALL, window_seeds(7, range(4)))
    for name in ("images", "depth", "cam_to_world", "intrinsics", "query_points", "tracks", "track_visible"):
        a, b, c = getattr(together, name), getattr(split, name), getattr(again, name)
        assert torch.equal(a, b) and torch.equal(a, c), name
    other = render_windows(SMALL, window_seeds(8, range(4)))
    assert not torch.equal(other.images, together.images)
    # A window does not depend on which other windows share its batch (up to float rounding in
    # batched matrix products).
    alone = render_windows(SMALL, window_seeds(7, [2]))
    torch.testing.assert_close(alone.images[0], together.images[2], atol=1e-5, rtol=0)


def test_shapes_ranges_and_cameras() -> None:
    r = render_windows(SMALL, window_seeds(1, range(3)))
    assert r.images.shape == (3, 3, 3, 36, 48) and r.depth.shape == (3, 3, 36, 48)
    assert float(r.images.min()) >= 0.0 and float(r.images.max()) <= 1.0
    assert bool(torch.isfinite(r.depth).all()) and float(r.depth.min()) > 0.05
    R = r.cam_to_world[..., :3, :3].double()
    eye = torch.eye(3, dtype=torch.float64).expand_as(R)
    torch.testing.assert_close(R @ R.transpose(-1, -2), eye, atol=1e-5, rtol=0)
    assert torch.allclose(torch.linalg.det(R), torch.ones(3, 3, dtype=torch.float64), atol=1e-5)
    # Extrinsics invert the poses.
    T = torch.cat((r.extrinsics, torch.tensor([0.0, 0, 0, 1]).expand(3, 3, 1, 4)), dim=-2)
    torch.testing.assert_close(T @ r.cam_to_world, torch.eye(4).expand(3, 3, 4, 4), atol=1e-4, rtol=0)


def test_depth_is_exact_along_each_pixel_ray() -> None:
    """Unprojecting a pixel with its depth gives a point on a surface: a ray from another
    camera towards it stops there unless something nearer blocks it."""
    settings = SMALL.replace(frames=2, track_queries=0)
    seeds = window_seeds(3, range(2))
    r = render_windows(settings, seeds)
    scenes = sample_scenes(settings, seeds)
    K = r.intrinsics[:, 0]
    v, u = torch.meshgrid(torch.arange(36.0), torch.arange(48.0), indexing="ij")
    z = r.depth[:, 0]  # [W, H, W]
    cam = torch.stack(
        (
            (u - K[:, 0, 2, None, None]) / K[:, 0, 0, None, None] * z,
            (v - K[:, 1, 2, None, None]) / K[:, 1, 1, None, None] * z,
            z,
        ),
        dim=-1,
    )
    T0 = r.cam_to_world[:, 0]
    world = torch.einsum("wij,whkj->whki", T0[:, :3, :3], cam) + T0[:, None, None, :3, 3]
    eye1 = r.cam_to_world[:, 1, :3, 3]
    seg = (world.reshape(2, -1, 3) - eye1[:, None]).float()
    t = cast(scenes, eye1[:, None], seg).t
    # t == 1 where frame 1 sees the point, < 1 where something is in front; never beyond it.
    assert float(t.max()) < 1.0 + 1e-3
    assert float((t > 1.0 - 1e-3).float().mean()) > 0.3


def test_track_targets_agree_with_depth_and_occlusion() -> None:
    r = render_windows(
        ProceduralSettings(height=48, width=64, frames=4, track_queries=64), window_seeds(5, range(4))
    )
    w, s, n = r.track_visible.shape
    assert torch.equal(r.tracks[:, 0], r.query_points) and bool(r.track_visible[:, 0].all())
    ext = r.extrinsics
    # The 3D point of each query, from frame 0's exact depth along the query ray.
    K = r.intrinsics[:, 0]
    q = r.query_points
    hits = []
    for k in range(1, s):
        vis = r.track_visible[:, k]
        uv = r.tracks[:, k]
        inside = (uv[..., 0] >= 0) & (uv[..., 0] <= 63) & (uv[..., 1] >= 0) & (uv[..., 1] <= 47)
        ui, vi = uv[..., 0].round().long().clamp(0, 63), uv[..., 1].round().long().clamp(0, 47)
        seen = r.depth[torch.arange(w)[:, None], k, vi, ui]  # depth map of frame k at the track
        # Projected depth of the track point in frame k.
        x = (q[..., 0] - K[:, None, 0, 2]) / K[:, None, 0, 0]
        y = (q[..., 1] - K[:, None, 1, 2]) / K[:, None, 1, 1]
        ray = torch.stack((x, y, torch.ones_like(x)), -1)
        T0 = r.cam_to_world[:, 0]
        d0 = r.depth[torch.arange(w)[:, None], 0, q[..., 1].round().long(), q[..., 0].round().long()]
        world = torch.einsum("wij,wnj->wni", T0[:, :3, :3], ray * d0[..., None]) + T0[:, None, :3, 3]
        zk = torch.einsum("wj,wnj->wn", ext[:, k, 2, :3], world) + ext[:, k, 2, 3, None]
        rel = (seen - zk).abs() / zk.clamp_min(1e-3)
        hits.append(
            (
                (rel[vis & inside] < 0.05).float().mean(),
                (seen[~vis & inside] < zk[~vis & inside]).float().mean(),
            )
        )
    agree_visible = torch.stack([h[0] for h in hits]).nanmean()
    occluded_in_front = torch.stack([h[1] for h in hits if not torch.isnan(h[1])]).mean()
    assert float(agree_visible) > 0.9  # visible tracks land where that frame sees their depth
    assert float(occluded_in_front) > 0.8  # hidden ones have something in front of them
    assert 0.05 < float(r.track_visible[:, 1:].float().mean()) < 1.0


@pytest.mark.parametrize("motion", MOTIONS)
def test_every_motion_keeps_cameras_in_the_room_and_clear_of_objects(motion: str) -> None:
    weights = tuple(1.0 if m == motion else 0.0 for m in MOTIONS)
    settings = ProceduralSettings(height=8, width=8, frames=12, motion_weights=weights)
    for i in range(25):
        scene = sample_scene(np.random.SeedSequence([11, i]), settings).arrays
        eyes = scene["cam_to_world"][:, :3, 3]
        assert (eyes > scene["room_lo"] + 0.3).all() and (eyes < scene["room_hi"] - 0.3).all()
        for k in np.flatnonzero(scene["box_active"]):
            sdf = _box_sdf(eyes, scene["box_center"][k], scene["box_half"][k], scene["box_yaw"][k])
            assert sdf.min() >= CLEARANCE - 1e-9
        for k in np.flatnonzero(scene["sphere_active"]):
            assert (
                np.linalg.norm(eyes - scene["sphere_center"][k], axis=-1) - scene["sphere_radius"][k]
            ).min() >= CLEARANCE - 1e-9
        for k in np.flatnonzero(scene["cylinder_active"]):
            sdf = _cylinder_sdf(
                eyes,
                scene["cylinder_center"][k],
                scene["cylinder_radius"][k],
                scene["cylinder_half_height"][k],
            )
            assert sdf.min() >= CLEARANCE - 1e-9
        assert MOTIONS[int(scene["motion"])] == motion


def test_motion_paths_move_as_described() -> None:
    rng = np.random.default_rng(0)
    lo, hi = np.array([-5.0, -4.0, 0.0]), np.array([5.0, 4.0, 3.0])
    turn, _ = sample_motion(rng, "turn", 10, lo, hi)
    assert np.ptp(turn[:, :3, 3], axis=0).max() < 0.7  # turning in place barely moves
    drive, _ = sample_motion(rng, "drive", 10, lo, hi)
    forward = drive[:, :3, 2]
    assert (forward[:, 2] < 0.1).all()  # looks ahead or slightly down
    floor, _ = sample_motion(rng, "floor", 10, lo, hi)
    assert (floor[:, 2, 2] < -0.7).all()  # optical axis points down at the floor
    orbit, focus = sample_motion(rng, "orbit", 10, lo, hi)
    to_focus = focus - orbit[:, :3, 3]
    cos = np.sum(to_focus * orbit[:, :3, 2], axis=1) / np.linalg.norm(to_focus, axis=1)
    assert (cos > 0.9).all()  # keeps looking at the focus object
    with pytest.raises(ValueError, match="unknown motion"):
        sample_motion(rng, "fly", 3, lo, hi)


@pytest.mark.parametrize(
    "room",
    [(10.0, 8.0, 3.0), (2.05, 10.04, 2.9), (22.5, 2.46, 2.6)],
    ids=["room", "y-corridor", "x-corridor"],
)
def test_figure_eights_turn_like_a_robot_even_in_corridors(room: tuple[float, float, float]) -> None:
    # A thin eight across a corridor turned up to 119 degrees between two frames of a 200-frame
    # held-out sequence (seeds 6003, 6004, 6009 at 196x252), which no visual method can follow.
    lo, hi = np.zeros(3), np.array(room)
    for seed in range(5):
        poses, _ = sample_motion(np.random.default_rng(seed), "figure_eight", 200, lo, hi)
        r = np.einsum("sji,sjk->sik", poses[:-1, :3, :3], poses[1:, :3, :3])  # R_i^T R_i+1
        step = np.degrees(np.arccos(np.clip((np.trace(r, axis1=1, axis2=2) - 1) / 2, -1, 1)))
        assert step.max() < 10.0
        extent = np.ptp(poses[:, :2, 3], axis=0)
        assert extent[int(np.argmax(room[:2]))] > 1.0  # still an eight along the long side


def test_settings_validate_and_round_trip() -> None:
    s = ProceduralSettings.held_out(height=70, width=98)
    assert ProceduralSettings.from_dict(s.to_dict()) == s
    assert s.room_x != ProceduralSettings().room_x
    with pytest.raises(ValueError, match="motion_weights"):
        ProceduralSettings(motion_weights=(1.0,))
    with pytest.raises(ValueError, match="fov_deg"):
        ProceduralSettings(fov_deg=(90.0, 30.0))
    with pytest.raises(ValueError, match="unknown procedural settings"):
        ProceduralSettings.from_dict({"rooms": 3})


def test_mosaic_surfaces_are_opt_in_tiled_and_view_independent() -> None:
    """``mosaic_prob`` turns textured surfaces into tiles of hashed colours (more texture variety
    for training); at 0, the default, no surface is a mosaic and nothing else changes."""
    from vggt_ros.eval.procedural.render import albedo

    seeds = window_seeds(3, range(4))
    plain = sample_scenes(SMALL, seeds)
    assert not plain.material[..., 15].any()
    tiled = sample_scenes(SMALL.replace(mosaic_prob=1.0), seeds)
    mosaic = tiled.material[..., 15]
    # Every textured surface is a mosaic at probability 1; nearly uniform ones (grain amplitude
    # under 0.05) stay uniform.
    textured = tiled.material[..., 14] >= 0.1
    assert textured.any() and not textured.all()
    assert torch.equal(mosaic == 1, textured)
    assert not torch.equal(
        render_windows(SMALL.replace(mosaic_prob=1.0), seeds).images, render_windows(SMALL, seeds).images
    )

    # Without blotches and grain a mosaic surface's albedo is constant inside a tile and changes
    # between tiles; it depends on the surface point alone (the same in every view).
    w = 0
    surface = int(torch.nonzero(mosaic[w] == 1)[0, 0])
    tiled.material[w, surface, 12] = 0.0  # coarse blotch amplitude
    tiled.material[w, surface, 14] = 0.0  # grain amplitude
    cell = float(tiled.material[w, surface, 16])
    one = tiled.select(slice(w, w + 1))
    inside = (torch.rand(1, 50, 3, generator=torch.Generator().manual_seed(0)) * 0.98 + 0.01) * cell
    across = inside + torch.tensor([cell * 3.0, 0.0, 0.0])
    where = torch.full((1, 50), surface, dtype=torch.int64)
    colors_inside = albedo(one, where, inside)
    assert torch.equal(colors_inside, colors_inside[:, :1].expand_as(colors_inside))
    assert not torch.equal(albedo(one, where, across), colors_inside)
    assert torch.equal(albedo(one, where, inside.flip(1)), colors_inside.flip(1))
    with pytest.raises(ValueError, match="mosaic_prob"):
        ProceduralSettings(mosaic_prob=1.5)


def test_near_objects_are_opt_in_in_view_and_keep_clear_of_every_camera() -> None:
    """``near_object_prob`` stands one more box 0.45-1.2 m in front of a camera of the window
    (the views the compact model gets most wrong when it turns in place); at 0, the default,
    the scenes are the ones drawn before the option existed (same slots, same random stream)."""
    settings = ProceduralSettings(
        height=48, width=64, frames=4, track_queries=0, motion_weights=(0, 1, 0, 0, 0, 0, 0)
    )
    seeds = window_seeds(11, range(12))
    plain = sample_scenes(settings, seeds)
    near = sample_scenes(settings.replace(near_object_prob=1.0), seeds)
    kb = plain.box_active.shape[1]
    assert near.box_active.shape[1] == kb + 1  # one extra slot, the near object's
    # Everything drawn before the near object is unchanged: rooms, cameras, the other objects.
    for name in (
        "room_hi",
        "cam_to_world",
        "box_center",
        "box_half",
        "box_active",
        "sphere_center",
        "cylinder_center",
    ):
        a, b = getattr(plain, name), getattr(near, name)
        if name.startswith("box_"):
            b = b[:, :kb]
        assert torch.equal(a, b), name
    placed = near.box_active[:, kb]
    assert int(placed.sum()) >= 10  # nearly every window of a turning camera gets one
    for w in torch.nonzero(placed)[:, 0].tolist():
        eyes = near.cam_to_world[w, :, :3, 3].double().numpy()
        centre = near.box_center[w, kb].double().numpy()
        half = near.box_half[w, kb].double().numpy()
        yaw = float(near.box_yaw[w, kb])
        gap = _box_sdf(eyes, centre, half, yaw)
        assert gap.min() >= CLEARANCE - 1e-4  # no camera inside or against it
        assert gap.min() <= NEAR_OBJECT_DISTANCE[1] + 0.15 * 3 + 0.05  # and it stands near one of them
        assert abs(float(centre[2]) - float(half[2])) < 1e-5  # standing on the floor
    # Rendered, the near object fills part of the view: many more pixels nearer than 1 m.
    r_plain = render_windows(settings, seeds)
    r_near = render_windows(settings.replace(near_object_prob=1.0), seeds)
    share_plain = float((r_plain.depth < 1.0).float().mean())
    share_near = float((r_near.depth < 1.0).float().mean())
    assert share_near > share_plain + 0.1, (share_plain, share_near)
    with pytest.raises(ValueError, match="near_object_prob"):
        ProceduralSettings(near_object_prob=-0.1)
