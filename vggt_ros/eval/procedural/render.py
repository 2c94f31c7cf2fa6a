"""Render windows of a :class:`~.scene.SceneBatch`: images, exact z-depth, cameras and tracks.

Colour: a procedural albedo (3D checker, stripes or a mosaic of hashed-colour tiles, blotch and
grain value noise, all functions of the object-local surface point, so a point has the same
albedo in every view), Lambert shading by ambient light, a sun and a lamp (with shadow rays),
then a camera response: auto-exposure with per-frame jitter, white balance, gamma, vignetting
and sensor noise (hashed, so reproducible).

Depth is the z-depth of the ray through each pixel centre; with ``supersample`` > 1 the colour
averages a grid of sub-pixel rays (anti-aliasing) while depth stays at the centre.

Tracks: query pixels of frame 0 are lifted to 3D with frame 0's depth and projected into every
frame; a track is visible in a frame when its point lies in front of the camera, inside the
image and nothing else lies on the ray from that camera to the point (a shadow-ray test, exact
occlusion handling).
"""

from __future__ import annotations

import math
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from torch import Tensor

from vggt_ros.eval.procedural.noise import hash32, unit_float, value_noise3
from vggt_ros.eval.procedural.raycast import cast, surface_frame
from vggt_ros.eval.procedural.scene import SceneBatch, sample_scene, sample_scenes, stack_scenes
from vggt_ros.eval.procedural.settings import ProceduralSettings


@dataclass
class RenderedWindows:
    """W windows of S frames with exact ground truth.

    Attributes:
        images: [W, S, 3, H, W] float32 RGB in [0, 1].
        depth: [W, S, H, W] float32 z-depth in metres (positive everywhere).
        cam_to_world: [W, S, 4, 4] float32 camera (OpenCV optical) -> world (z-up).
        intrinsics: [W, S, 3, 3] float32 pixel intrinsics (pixel centres at integers).
        query_points: [W, N, 2] float32 (x, y) pixels in frame 0, or None.
        tracks: [W, S, N, 2] float32 pixel positions of the query points' 3D points in each frame.
        track_visible: [W, S, N] bool (in front, inside the image, not occluded).
        motion: [W] int64 index into :data:`~.settings.ALL_MOTIONS`.
    """

    images: Tensor
    depth: Tensor
    cam_to_world: Tensor
    intrinsics: Tensor
    query_points: Tensor | None
    tracks: Tensor | None
    track_visible: Tensor | None
    motion: Tensor

    @property
    def extrinsics(self) -> Tensor:
        """[W, S, 3, 4] camera-from-world (the VGGT convention)."""
        R = self.cam_to_world[..., :3, :3]
        t = self.cam_to_world[..., :3, 3:]
        Rt = R.transpose(-1, -2)
        return torch.cat((Rt, -Rt @ t), dim=-1)

    def uint8_frames(self, window: int) -> list[np.ndarray]:
        """Window ``window``'s frames as a camera would deliver them: S RGB uint8 [H, W, 3]."""
        rgb = self.images[window].permute(0, 2, 3, 1).cpu().numpy()  # [S, H, W, 3] in [0, 1]
        return [(frame * 255).round().astype(np.uint8) for frame in rgb]


def _rotate(rotation: Tensor, v: Tensor) -> Tensor:
    """``rotation @ v`` for rotation [..., 3, 3] and v [..., 3] (broadcast), written out element
    by element.

    Why not einsum / matmul: batched matrix products pick their kernel blocking from the batch
    size, and on AVX-512 CPUs the rounding then depends on how many windows are rendered
    together; shading and shadow tests amplify that to whole pixels. Element-wise products keep
    every window a pure function of its seed, whatever the chunk.
    """
    return torch.stack(
        [
            rotation[..., i, 0] * v[..., 0]
            + rotation[..., i, 1] * v[..., 1]
            + rotation[..., i, 2] * v[..., 2]
            for i in range(3)
        ],
        dim=-1,
    )


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """Dot product over the last axis (size 3) written out element by element (see _rotate)."""
    return a[..., 0] * b[..., 0] + a[..., 1] * b[..., 1] + a[..., 2] * b[..., 2]


def camera_rays(
    scene: SceneBatch, height: int, width: int, offsets: tuple[float, float] = (0.0, 0.0)
) -> Tensor:
    """World ray directions [W, S * H * W, 3] (camera-frame z = 1) through pixel positions
    (u + du, v + dv), frame-major then row-major."""
    device = scene.intrinsics.device
    v, u = torch.meshgrid(
        torch.arange(height, device=device, dtype=torch.float32) + offsets[1],
        torch.arange(width, device=device, dtype=torch.float32) + offsets[0],
        indexing="ij",
    )
    K = scene.intrinsics
    x = (u.reshape(1, -1) - K[:, 0, 2, None]) / K[:, 0, 0, None]  # [W, P]
    y = (v.reshape(1, -1) - K[:, 1, 2, None]) / K[:, 1, 1, None]
    cam = torch.stack((x, y, torch.ones_like(x)), dim=-1)  # [W, P, 3]
    R = scene.cam_to_world[..., :3, :3]  # [W, S, 3, 3]
    world = _rotate(R[:, :, None], cam[:, None])  # [W, S, P, 3]
    return world.reshape(world.shape[0], -1, 3)


def camera_origins(scene: SceneBatch, pixels: int) -> Tensor:
    """[W, S * pixels, 3] camera centres repeated per pixel (frame-major)."""
    eye = scene.cam_to_world[..., :3, 3]  # [W, S, 3]
    return eye[:, :, None].expand(-1, -1, pixels, -1).reshape(eye.shape[0], -1, 3)


_MOSAIC_SALT = 0x3C6EF372  # keeps the tiles' hash apart from the blotch and grain lattices


def albedo(scene: SceneBatch, surface: Tensor, local: Tensor) -> Tensor:
    """Surface colour [W, R, 3] in [0, 1] (linear) at object-local points [W, R, 3]."""
    mat = scene.material.gather(1, surface[..., None].expand(-1, -1, scene.material.shape[-1]))
    salt = scene.salt.gather(1, surface)
    color_a, color_b = mat[..., 0:3], mat[..., 3:6]
    checker_w, checker_cell, stripe_w, stripe_period = mat[..., 6], mat[..., 7], mat[..., 8], mat[..., 9]
    stripe_axis = mat[..., 10].long().clamp(0, 2)
    coarse_cell, coarse_amp, fine_cell, fine_amp = mat[..., 11], mat[..., 12], mat[..., 13], mat[..., 14]

    cells = torch.floor(local / checker_cell[..., None]).sum(-1)
    checker = torch.remainder(cells, 2.0)
    along = local.gather(-1, stripe_axis[..., None])[..., 0]
    stripes = 0.5 + 0.5 * torch.sin(2.0 * math.pi * along / stripe_period)
    mix = (checker_w * checker + stripe_w * stripes).clamp(0.0, 1.0)[..., None]
    base = color_a * (1.0 - mix) + color_b * mix
    mosaic_w, mosaic_cell = mat[..., 15], mat[..., 16]
    if bool((mosaic_w > 0).any()):  # skipped without mosaics: the default renders as before
        tile = torch.floor(local / mosaic_cell.clamp_min(1e-3)[..., None]).to(torch.int64)
        h = hash32(tile[..., 0], tile[..., 1], tile[..., 2], salt ^ _MOSAIC_SALT)
        tile_color = 0.05 + 0.9 * torch.stack([unit_float(h, 10 * c) for c in range(3)], dim=-1)
        base = torch.where(mosaic_w[..., None] > 0, tile_color, base)
    (blotch,) = value_noise3(local, coarse_cell, salt)
    grain = torch.stack(value_noise3(local, fine_cell, salt ^ 0x5BD1E995, channels=3), dim=-1)
    color = base * (1.0 - coarse_amp[..., None] + 2.0 * coarse_amp[..., None] * blotch[..., None])
    color = color + fine_amp[..., None] * (grain - 0.5)
    return color.clamp(0.02, 1.0)


def shade(scene: SceneBatch, origins: Tensor, directions: Tensor, shadows: bool) -> tuple[Tensor, Tensor]:
    """Radiance [W, R, 3] and hit parameter t [W, R] of rays."""
    hits = cast(scene, origins, directions)
    points = origins + hits.t[..., None] * directions
    normals, local = surface_frame(scene, hits.surface, points)
    light = scene.ambient[:, None] + scene.sun[:, None] * _dot(normals, scene.sun_dir[:, None]).clamp_min(0)
    to_lamp = scene.lamp_pos[:, None] - points
    dist = to_lamp.norm(dim=-1).clamp_min(1e-3)
    lambert = (_dot(normals, to_lamp) / dist).clamp_min(0.0)
    lamp = scene.lamp[:, None] * lambert / (1.0 + (dist / scene.lamp_falloff[:, None]) ** 2)
    if shadows:
        start = points + 1e-3 * normals
        blocked = cast(scene, start, scene.lamp_pos[:, None] - start).t < 1.0 - 1e-4
        lamp = torch.where(blocked, torch.zeros_like(lamp), lamp)
    radiance = albedo(scene, hits.surface, local) * (light + lamp)[..., None]
    return radiance, hits.t


def _sensor_noise(seed: Tensor, shape: tuple[int, int, int, int, int]) -> Tensor:
    """Approximately standard-normal noise [W, S, 3, H, W] from a hash of (seed, element index)."""
    w, rest = shape[0], int(np.prod(shape[1:]))
    index = torch.arange(rest, device=seed.device, dtype=torch.int64)[None]
    total = torch.zeros((w, rest), device=seed.device)
    for k in range(3):  # Irwin-Hall with 3 uniforms: mean 1.5, variance 1/4
        total = total + unit_float(hash32(seed[:, None], index, torch.tensor(k, device=seed.device)))
    return ((total - 1.5) * 2.0).reshape(shape)


def render_scenes(
    scene: SceneBatch,
    height: int,
    width: int,
    supersample: int = 1,
    shadows: bool = True,
    track_queries: int = 0,
) -> RenderedWindows:
    """Render every frame of every window of ``scene`` (see the module docstring)."""
    w, s = scene.num_windows, scene.num_frames
    pixels = height * width
    origins = camera_origins(scene, pixels)
    center_dirs = camera_rays(scene, height, width)
    if supersample == 1:
        radiance, t = shade(scene, origins, center_dirs, shadows)
    else:
        t = cast(scene, origins, center_dirs).t
        radiance = torch.zeros_like(center_dirs)
        for i in range(supersample):
            for j in range(supersample):
                off = ((i + 0.5) / supersample - 0.5, (j + 0.5) / supersample - 0.5)
                radiance = (
                    radiance + shade(scene, origins, camera_rays(scene, height, width, off), shadows)[0]
                )
        radiance = radiance / supersample**2
    depth = t.reshape(w, s, height, width)
    radiance = radiance.reshape(w, s, height, width, 3).permute(0, 1, 4, 2, 3)

    # Camera response: exposure from the window's mean brightness, per-frame jitter, white
    # balance, vignetting, gamma, noise.
    mean = radiance.mean(dim=(1, 2, 3, 4)).clamp_min(1e-4)
    gain = (scene.brightness**scene.gamma) / mean  # linear gain so the mean lands near target
    image = (
        radiance
        * (gain[:, None] * scene.exposure)[..., None, None, None]
        * scene.white[:, None, :, None, None]
    )
    v, u = torch.meshgrid(
        torch.linspace(-1, 1, height, device=image.device),
        torch.linspace(-1, 1, width, device=image.device),
        indexing="ij",
    )
    image = image * (1.0 - scene.vignette[:, None, None, None, None] * 0.5 * (u * u + v * v))
    image = image.clamp_min(0.0) ** (1.0 / scene.gamma[:, None, None, None, None])
    image = image + scene.noise[:, None, None, None, None] * _sensor_noise(scene.seed, tuple(image.shape))
    image = image.clamp(0.0, 1.0)

    queries = tracks = visible = None
    if track_queries > 0:
        queries, tracks, visible = _tracks(scene, depth, track_queries)
    return RenderedWindows(
        images=image,
        depth=depth,
        cam_to_world=scene.cam_to_world,
        intrinsics=scene.intrinsics[:, None].expand(-1, s, -1, -1),
        query_points=queries,
        tracks=tracks,
        track_visible=visible,
        motion=scene.motion,
    )


def _tracks(scene: SceneBatch, depth: Tensor, n: int) -> tuple[Tensor, Tensor, Tensor]:
    """Query points [W, N, 2], tracks [W, S, N, 2] and visibility [W, S, N] (see module doc)."""
    w, s, h, wd = depth.shape
    device = depth.device
    index = torch.arange(n, device=device, dtype=torch.int64)[None]
    seed = scene.seed[:, None]
    # Query pixels: hashed positions (reproducible), kept a pixel away from the border.
    qx = 1.0 + unit_float(hash32(seed, index, torch.tensor(11, device=device))) * (wd - 3)
    qy = 1.0 + unit_float(hash32(seed, index, torch.tensor(12, device=device))) * (h - 3)
    queries = torch.stack((qx, qy), dim=-1)  # [W, N, 2]
    K = scene.intrinsics
    # Exact 3D points: cast the query rays of frame 0 (depth at sub-pixel positions).
    x = (qx - K[:, 0, 2, None]) / K[:, 0, 0, None]
    y = (qy - K[:, 1, 2, None]) / K[:, 1, 1, None]
    cam = torch.stack((x, y, torch.ones_like(x)), dim=-1)
    T0 = scene.cam_to_world[:, 0]
    dirs = _rotate(T0[:, None, :3, :3], cam)
    origin0 = T0[:, None, :3, 3]
    points = origin0 + cast(scene, origin0, dirs).t[..., None] * dirs  # [W, N, 3]

    # Project into every frame.
    R = scene.cam_to_world[..., :3, :3]  # [W, S, 3, 3]
    eye = scene.cam_to_world[..., :3, 3]  # [W, S, 3]
    rel = points[:, None] - eye[:, :, None]  # [W, S, N, 3]
    pc = _rotate(R.transpose(-1, -2)[:, :, None], rel)  # camera coordinates
    z = pc[..., 2]
    zs = z.clamp_min(1e-6)
    u = K[:, None, 0, 0, None] * pc[..., 0] / zs + K[:, None, 0, 2, None]
    v = K[:, None, 1, 1, None] * pc[..., 1] / zs + K[:, None, 1, 2, None]
    tracks = torch.stack((u, v), dim=-1)
    inside = (z > 1e-3) & (u >= -0.5) & (u <= wd - 0.5) & (v >= -0.5) & (v <= h - 0.5)
    # Occlusion: anything on the segment camera -> point (short of the point itself)?
    origins = eye[:, :, None].expand(-1, -1, n, -1).reshape(w, s * n, 3)
    seg = rel.reshape(w, s * n, 3)
    t_hit = cast(scene, origins, seg).t.reshape(w, s, n)
    visible = inside & (t_hit > 1.0 - 2e-3)
    visible[:, 0] = True  # the query frame sees its own query
    tracks[:, 0] = queries
    return queries, tracks, visible


def render_windows(
    settings: ProceduralSettings,
    seeds: list,
    device: torch.device | str = "cpu",
    chunk: int = 8,
    pool: Executor | None = None,
) -> RenderedWindows:
    """Sample one scene per seed and render it, ``chunk`` windows at a time (bounds memory).

    ``pool`` (e.g. a process pool) draws the scenes in parallel; the result is the same.
    """
    if pool is None:
        scenes = sample_scenes(settings, seeds, device)
    else:
        scenes = stack_scenes(list(pool.map(partial(sample_scene, settings=settings), seeds)), device)
    parts = []
    for start in range(0, scenes.num_windows, chunk):
        part = scenes.select(slice(start, start + chunk))
        parts.append(
            render_scenes(
                part,
                settings.height,
                settings.width,
                settings.supersample,
                settings.shadows,
                settings.track_queries,
            )
        )
    if len(parts) == 1:
        return parts[0]

    def cat(name: str) -> Tensor | None:
        values = [getattr(p, name) for p in parts]
        return None if values[0] is None else torch.cat(values)

    return RenderedWindows(**{name: cat(name) for name in RenderedWindows.__dataclass_fields__})


def render_sequence(
    settings: ProceduralSettings,
    seed: int,
    frames: int,
    motion: str | None = None,
    fps: float = 10.0,
    chunk_frames: int = 16,
):  # -> vggt_ros.eval.synthetic.SyntheticSequence
    """One long camera sequence of a procedural scene, as the bag writer takes it.

    Args:
        settings: scene settings (``frames`` is replaced by ``frames``).
        seed: the sequence seed (drawn from stream 2, apart from training and validation).
        motion: force one motion of :data:`~.settings.ALL_MOTIONS` (default: drawn by weight;
            the loop-rich ``lap``, ``figure_eight`` and ``there_and_back`` only when asked).
        chunk_frames: frames rendered at once (bounds memory).
    """
    from vggt_ros.eval.procedural.scene import window_seeds
    from vggt_ros.eval.procedural.settings import ALL_MOTIONS
    from vggt_ros.eval.synthetic import SyntheticSequence

    if motion is not None and motion not in ALL_MOTIONS:
        raise ValueError(f"unknown motion {motion!r}; expected one of {ALL_MOTIONS}")
    settings = settings.replace(frames=int(frames), track_queries=0)
    scene = stack_scenes([sample_scene(window_seeds(seed, [0], stream=2)[0], settings, motion)])
    images, depth = [], []
    for start in range(0, frames, chunk_frames):
        part = scene.select(slice(0, 1))
        part.cam_to_world = scene.cam_to_world[:, start : start + chunk_frames]
        part.exposure = scene.exposure[:, start : start + chunk_frames]
        r = render_scenes(part, settings.height, settings.width, settings.supersample, settings.shadows)
        images.append(r.images[0])
        depth.append(r.depth[0])
    image_u8 = (torch.cat(images).permute(0, 2, 3, 1) * 255.0).round().clamp(0, 255).to(torch.uint8)
    return SyntheticSequence(
        images=image_u8.numpy(),
        depth=torch.cat(depth).numpy().astype(np.float32),
        cam_to_world=scene.cam_to_world[0].double().numpy(),
        intrinsics=scene.intrinsics[0].double().numpy(),
        stamps=np.arange(frames, dtype=np.float64) / fps,
        face_ids=np.zeros((frames, settings.height, settings.width), np.int16),
        scene=None,
        path=f"procedural:{ALL_MOTIONS[int(scene.motion[0])]}",
        seed=int(seed),
    )
