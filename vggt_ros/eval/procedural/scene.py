"""Random indoor scenes for one window each, drawn on the CPU and stacked into tensors.

A scene is a room (an axis-aligned box seen from inside) holding boxes turned about the vertical
axis, spheres and vertical cylinders, lit by ambient light, a sun (directional) and a lamp
(point light, with shadows), and a camera path (:mod:`.motion`). Every random number of a
window comes from that window's own ``numpy`` generator, so a window is a pure function of its
seed: the same on CPU and GPU, in any batch and for any number of training processes.

Surfaces (each with its own material) are numbered per scene:

* ``0..5``: room faces ``axis * 2 + side`` (side 0: the ``lo`` plane, 1: ``hi``);
* ``6 + 6 k + axis * 2 + side``: faces of box ``k``;
* ``6 + 6 Kb + j``: sphere ``j``;
* ``6 + 6 Kb + Ks + 2 m`` (side) and ``+ 1`` (caps): cylinder ``m``.

``Kb``, ``Ks``, ``Kc`` are the capacities of the batch (the settings' maxima); unused slots are
inactive and never hit.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import Tensor

from vggt_ros.eval.procedural.motion import sample_motion
from vggt_ros.eval.procedural.settings import ALL_MOTIONS, MOTIONS, ProceduralSettings

# Surface kinds (how normals and texture coordinates are derived from a hit).
PLANE, SPHERE, CYLINDER_SIDE, CYLINDER_CAP = 0, 1, 2, 3
# Material features per surface, in this order.
MATERIAL_FIELDS = (
    "color_a",  # 3: first base colour (linear RGB)
    "color_b",  # 3: second base colour
    "checker_w",  # 1: weight of the 3D checker pattern
    "checker_cell",  # 1: checker cell size (m)
    "stripe_w",  # 1: weight of stripes
    "stripe_period",  # 1: stripe period (m)
    "stripe_axis",  # 1: local axis the stripes run across (0, 1, 2)
    "coarse_cell",  # 1: blotch noise cell (m)
    "coarse_amp",  # 1: blotch brightness amplitude
    "fine_cell",  # 1: coloured grain cell (m)
    "fine_amp",  # 1: grain amplitude
    "mosaic_w",  # 1: 1 for a mosaic surface (hashed colour per tile), else 0
    "mosaic_cell",  # 1: mosaic tile size (m)
)
MATERIAL_WIDTH = 17
CLEARANCE = 0.3  # metres between any camera centre (or the lamp) and any object


@dataclass
class SceneBatch:
    """W scenes with their camera windows as tensors (shapes in brackets; S frames).

    Geometry: room_lo/room_hi [W, 3]; box_center/box_half [W, Kb, 3], box_yaw [W, Kb],
    box_active [W, Kb]; sphere_center [W, Ks, 3], sphere_radius [W, Ks], sphere_active;
    cylinder_center [W, Kc, 3] (mid-height), cylinder_radius, cylinder_half_height,
    cylinder_active [W, Kc].
    Surfaces (NS of them): surf_kind [W, NS] int64, surf_center [W, NS, 3], surf_cos/surf_sin
    [W, NS] (yaw), surf_normal [W, NS, 3] local normal of planar faces, material [W, NS, 17],
    salt [W, NS] int64.
    Light: ambient [W], sun [W], sun_dir [W, 3] (towards the sun), lamp [W], lamp_pos [W, 3],
    lamp_falloff [W] (m).
    Camera: cam_to_world [W, S, 4, 4] (optical frame -> world), intrinsics [W, 3, 3] (principal
    point ((w - 1) / 2, (h - 1) / 2), pixel centres at integers).
    Response: white [W, 3], gamma [W], noise [W], vignette [W], exposure [W, S] relative gain,
    brightness [W] target mean.
    seed [W] int64 (per-pixel sensor noise), motion [W] int64 index into ALL_MOTIONS.
    """

    room_lo: Tensor
    room_hi: Tensor
    box_center: Tensor
    box_half: Tensor
    box_yaw: Tensor
    box_active: Tensor
    sphere_center: Tensor
    sphere_radius: Tensor
    sphere_active: Tensor
    cylinder_center: Tensor
    cylinder_radius: Tensor
    cylinder_half_height: Tensor
    cylinder_active: Tensor
    surf_kind: Tensor
    surf_center: Tensor
    surf_cos: Tensor
    surf_sin: Tensor
    surf_normal: Tensor
    material: Tensor
    salt: Tensor
    ambient: Tensor
    sun: Tensor
    sun_dir: Tensor
    lamp: Tensor
    lamp_pos: Tensor
    lamp_falloff: Tensor
    cam_to_world: Tensor
    intrinsics: Tensor
    white: Tensor
    gamma: Tensor
    noise: Tensor
    vignette: Tensor
    exposure: Tensor
    brightness: Tensor
    seed: Tensor
    motion: Tensor

    @property
    def num_windows(self) -> int:
        return int(self.room_lo.shape[0])

    @property
    def num_frames(self) -> int:
        return int(self.cam_to_world.shape[1])

    def to(self, device: torch.device | str) -> SceneBatch:
        return SceneBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def select(self, index: slice) -> SceneBatch:
        """The scenes ``index`` (a slice over W)."""
        return SceneBatch(**{f.name: getattr(self, f.name)[index] for f in fields(self)})


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB, all in [0, 1]: [N] each -> [N, 3]."""
    i = np.floor(h * 6.0).astype(np.int64) % 6
    f = h * 6.0 - np.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    table = np.stack(
        (
            np.stack((v, t, p), -1),
            np.stack((q, v, p), -1),
            np.stack((p, v, t), -1),
            np.stack((p, q, v), -1),
            np.stack((t, p, v), -1),
            np.stack((v, p, q), -1),
        ),
        axis=1,
    )  # [N, 6, 3]
    return table[np.arange(len(h)), i]


def _materials(
    rng: np.random.Generator, n: int, low_texture_prob: float, mosaic_prob: float = 0.0
) -> np.ndarray:
    """[n, MATERIAL_WIDTH] random materials (layout: MATERIAL_FIELDS).

    With ``mosaic_prob`` 0 no mosaic values are drawn, so a scene's random stream, and every
    sequence rendered from a seed, is what it was before mosaics existed."""
    a = _hsv_to_rgb(rng.uniform(size=n), rng.uniform(0.0, 0.8, n), rng.uniform(0.25, 0.95, n))
    darker = np.clip(a[:, [1, 2, 0]] * rng.uniform(0.3, 0.65, (n, 1)), 0.0, 1.0)  # hue-shifted
    other = _hsv_to_rgb(rng.uniform(size=n), rng.uniform(0.0, 0.9, n), rng.uniform(0.1, 0.9, n))
    b = np.where(rng.uniform(size=(n, 1)) < 0.5, darker, other)
    m = np.zeros((n, MATERIAL_WIDTH))
    m[:, 0:3], m[:, 3:6] = a, b
    m[:, 6] = (rng.uniform(size=n) < 0.4).astype(np.float64)
    m[:, 7] = rng.uniform(0.1, 0.8, n)
    m[:, 8] = np.where(rng.uniform(size=n) < 0.2, rng.uniform(0.5, 1.0, n), 0.0)
    m[:, 9] = rng.uniform(0.05, 0.5, n)
    m[:, 10] = rng.integers(0, 3, n)
    m[:, 11] = rng.uniform(0.15, 1.2, n)
    m[:, 12] = rng.uniform(0.1, 0.5, n)
    m[:, 13] = rng.uniform(0.012, 0.06, n)
    m[:, 14] = rng.uniform(0.1, 0.45, n)
    # Nearly uniform surfaces: no checker or stripes, faint blotches and grain.
    low = rng.uniform(size=n) < low_texture_prob
    m[low, 6] = 0.0
    m[low, 8] = 0.0
    m[low, 12] = rng.uniform(0.0, 0.08, int(low.sum()))
    m[low, 14] = rng.uniform(0.0, 0.05, int(low.sum()))
    if mosaic_prob > 0.0:
        m[:, 15] = ((rng.uniform(size=n) < mosaic_prob) & ~low).astype(np.float64)
        m[:, 16] = rng.uniform(0.04, 0.4, n)
    return m


def _box_sdf(p: np.ndarray, centre: np.ndarray, half: np.ndarray, yaw: float) -> np.ndarray:
    """Signed distance [N] of points [N, 3] to a box turned by ``yaw`` about z."""
    c, s = np.cos(yaw), np.sin(yaw)
    d = p - centre
    local = np.stack((c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1], d[:, 2]), axis=-1)
    q = np.abs(local) - half
    return np.linalg.norm(np.maximum(q, 0.0), axis=-1) + np.minimum(q.max(axis=-1), 0.0)


def _cylinder_sdf(p: np.ndarray, centre: np.ndarray, radius: float, half_height: float) -> np.ndarray:
    q = np.stack(
        (
            np.hypot(p[:, 0] - centre[0], p[:, 1] - centre[1]) - radius,
            np.abs(p[:, 2] - centre[2]) - half_height,
        ),
        axis=-1,
    )
    return np.linalg.norm(np.maximum(q, 0.0), axis=-1) + np.minimum(q.max(axis=-1), 0.0)


@dataclass
class _Scene:
    """One window's scene as numpy arrays (the fields of :class:`SceneBatch` without W)."""

    arrays: dict[str, np.ndarray]


def capacities(settings: ProceduralSettings) -> tuple[int, int, int]:
    """Object slots (boxes incl. an orbit's focus object and, with ``near_object_prob``, the near
    object; spheres; cylinders) of a batch."""
    near = 1 if settings.near_object_prob > 0.0 else 0
    return settings.boxes[1] + 1 + near, settings.spheres[1], settings.cylinders[1]


# The near object (ProceduralSettings.near_object_prob): distance of its near face from the
# camera it stands in front of, its half depth along that camera's heading and half width across.
NEAR_OBJECT_DISTANCE = (0.45, 1.2)
NEAR_OBJECT_HALF_DEPTH = (0.05, 0.3)
NEAR_OBJECT_HALF_WIDTH = (0.1, 0.45)


def _near_object(
    rng: np.random.Generator, cam_to_world: np.ndarray, keep_clear: np.ndarray, room_height: float
) -> tuple[np.ndarray, np.ndarray, float] | None:
    """A box (centre [3], half extents [3], yaw) standing on the floor in front of one camera of
    the window [S, 4, 4], its near face NEAR_OBJECT_DISTANCE from that camera along the camera's
    horizontal heading (shifted sideways by up to 0.7 of that distance, so that it fills part of
    the view or most of it), its top from 0.4 m below the camera to 1.0 m above it (within
    0.3 m and the room's height); pushed back 0.15 m at a time (four tries) until every point of
    ``keep_clear`` [N, 3] is CLEARANCE away. None when the chosen camera looks within ~17 degrees
    of straight down or up, or no try keeps clear."""
    frame = int(rng.integers(len(cam_to_world)))
    eye, forward = cam_to_world[frame, :3, 3], cam_to_world[frame, :3, 2]
    distance = rng.uniform(*NEAR_OBJECT_DISTANCE)
    half = np.array([rng.uniform(*NEAR_OBJECT_HALF_DEPTH), rng.uniform(*NEAR_OBJECT_HALF_WIDTH), 0.0])
    side = rng.uniform(-0.7, 0.7)
    top = float(np.clip(eye[2] + rng.uniform(-0.4, 1.0), 0.3, room_height))
    yaw_jitter = rng.normal(0.0, 0.2)
    heading = np.array([forward[0], forward[1], 0.0])
    if np.linalg.norm(heading) < 0.3:  # within ~17 degrees of vertical: no "in front" to stand in
        return None
    heading /= np.linalg.norm(heading)
    across = np.array([-heading[1], heading[0], 0.0])
    half[2] = top / 2
    yaw = float(np.arctan2(heading[1], heading[0]) + yaw_jitter)  # box x axis ~ along the heading
    for push in range(4):
        d = distance + 0.15 * push
        centre = eye + (d + half[0]) * heading + side * d * across
        centre[2] = top / 2
        if _box_sdf(keep_clear, centre, half, yaw).min() >= CLEARANCE:
            return centre, half, yaw
    return None


def sample_scene(
    seed: int | np.random.SeedSequence, settings: ProceduralSettings, motion_name: str | None = None
) -> _Scene:
    """Draw one window's scene, lights, camera path and camera response from ``seed``.

    ``motion_name`` forces a camera motion (any of :data:`~.settings.ALL_MOTIONS`, the loop-rich
    evaluation paths included) instead of drawing one by ``settings.motion_weights``.
    """
    rng = np.random.default_rng(seed)
    kb, ks, kc = capacities(settings)
    h, w, frames = settings.height, settings.width, settings.frames

    # Room.
    if rng.uniform() < settings.corridor_prob:
        size = np.array([rng.uniform(10.0, 25.0), rng.uniform(1.8, 3.2), rng.uniform(2.4, 3.2)])
        if rng.uniform() < 0.5:
            size[[0, 1]] = size[[1, 0]]
    else:
        size = np.array(
            [rng.uniform(*settings.room_x), rng.uniform(*settings.room_y), rng.uniform(*settings.room_z)]
        )
    room_lo = np.array([-size[0] / 2, -size[1] / 2, 0.0])
    room_hi = np.array([size[0] / 2, size[1] / 2, size[2]])

    # Camera path first; objects too close to it are dropped below.
    weights = np.asarray(settings.motion_weights, np.float64)
    motion = int(rng.choice(len(MOTIONS), p=weights / weights.sum()))
    if motion_name is not None:
        motion = ALL_MOTIONS.index(motion_name)
    cam_to_world, focus = sample_motion(
        rng, ALL_MOTIONS[motion], frames, room_lo, room_hi, step_scale=rng.uniform(*settings.step_scale)
    )
    eyes = cam_to_world[:, :3, 3]
    lamp_pos = np.array(
        [
            rng.uniform(room_lo[0] + 0.5, room_hi[0] - 0.5),
            rng.uniform(room_lo[1] + 0.5, room_hi[1] - 0.5),
            size[2] - 0.3,
        ]
    )
    keep_clear = np.vstack((eyes, lamp_pos))

    box_center, box_half = np.zeros((kb, 3)), np.full((kb, 3), 0.1)
    box_yaw, box_active = np.zeros(kb), np.zeros(kb, bool)
    n_boxes = int(rng.integers(settings.boxes[0], settings.boxes[1] + 1))
    slots = list(range(1, 1 + n_boxes))
    if focus is not None:
        slots = [0, *slots]
    for k in slots:
        half = np.array([rng.uniform(0.1, 1.0), rng.uniform(0.1, 1.0), 0.0])
        if k == 0:  # the orbit's focus object, centred on the focus point
            half[:2] = np.minimum(half[:2], 0.45)
            centre_xy = focus[:2]
        else:
            centre_xy = np.array([rng.uniform(room_lo[0], room_hi[0]), rng.uniform(room_lo[1], room_hi[1])])
        if rng.uniform() < 0.12 and k != 0:  # floating shelf
            z0 = rng.uniform(0.5, max(0.6, size[2] - 1.0))
            z1 = min(z0 + rng.uniform(0.05, 0.5), size[2] - 0.05)
        else:
            z0, z1 = 0.0, min(rng.uniform(0.2, 2.6), size[2])
        half[2] = (z1 - z0) / 2
        yaw = (
            rng.choice([0.0, np.pi / 2]) + rng.normal(0.0, 0.02)
            if rng.uniform() < 0.5
            else rng.uniform(0, np.pi)
        )
        centre = np.array([*centre_xy, (z0 + z1) / 2])
        if _box_sdf(keep_clear, centre, half, yaw).min() < CLEARANCE:
            continue
        box_center[k], box_half[k], box_yaw[k], box_active[k] = centre, half, yaw, True

    sphere_center, sphere_radius, sphere_active = np.zeros((ks, 3)), np.full(ks, 0.1), np.zeros(ks, bool)
    for j in range(int(rng.integers(settings.spheres[0], settings.spheres[1] + 1))):
        r = rng.uniform(0.1, 0.6)
        z = r if rng.uniform() < 0.7 else rng.uniform(r, max(r, size[2] - r))
        centre = np.array([rng.uniform(room_lo[0], room_hi[0]), rng.uniform(room_lo[1], room_hi[1]), z])
        if (np.linalg.norm(keep_clear - centre, axis=-1) - r).min() < CLEARANCE:
            continue
        sphere_center[j], sphere_radius[j], sphere_active[j] = centre, r, True

    cylinder_center, cylinder_radius = np.zeros((kc, 3)), np.full(kc, 0.1)
    cylinder_half, cylinder_active = np.full(kc, 0.1), np.zeros(kc, bool)
    for m in range(int(rng.integers(settings.cylinders[0], settings.cylinders[1] + 1))):
        r = rng.uniform(0.08, 0.4)
        top = size[2] if rng.uniform() < 0.4 else rng.uniform(0.3, size[2])
        centre = np.array([rng.uniform(room_lo[0], room_hi[0]), rng.uniform(room_lo[1], room_hi[1]), top / 2])
        if _cylinder_sdf(keep_clear, centre, r, top / 2).min() < CLEARANCE:
            continue
        cylinder_center[m], cylinder_radius[m], cylinder_half[m], cylinder_active[m] = (
            centre,
            r,
            top / 2,
            True,
        )

    # The near object, last so that with near_object_prob 0 nothing above or below is drawn
    # differently (its slot is the extra one capacities() adds).
    if settings.near_object_prob > 0.0 and rng.uniform() < settings.near_object_prob:
        near = _near_object(rng, cam_to_world, keep_clear, float(size[2]))
        if near is not None:
            box_center[kb - 1], box_half[kb - 1], box_yaw[kb - 1] = near
            box_active[kb - 1] = True

    # Surface tables.
    ns = 6 + 6 * kb + ks + 2 * kc
    kind = np.zeros(ns, np.int64)
    centre_tab, cos_tab, sin_tab = np.zeros((ns, 3)), np.ones(ns), np.zeros(ns)
    normal_tab = np.zeros((ns, 3))
    for face in range(6):
        axis, side = divmod(face, 2)
        normal_tab[face, axis] = -1.0 if side else 1.0  # the room is seen from inside
    for k in range(kb):
        for face in range(6):
            axis, side = divmod(face, 2)
            s = 6 + 6 * k + face
            normal_tab[s, axis] = 1.0 if side else -1.0
            centre_tab[s], cos_tab[s], sin_tab[s] = box_center[k], np.cos(box_yaw[k]), np.sin(box_yaw[k])
    base = 6 + 6 * kb
    kind[base : base + ks] = SPHERE
    centre_tab[base : base + ks] = sphere_center
    base += ks
    kind[base : base + 2 * kc : 2] = CYLINDER_SIDE
    kind[base + 1 : base + 2 * kc : 2] = CYLINDER_CAP
    centre_tab[base : base + 2 * kc : 2] = cylinder_center
    centre_tab[base + 1 : base + 2 * kc : 2] = cylinder_center
    material = _materials(rng, ns, settings.low_texture_prob, settings.mosaic_prob)
    salt = rng.integers(0, 2**31 - 1, size=ns, dtype=np.int64)

    # Light and camera.
    elevation, azimuth = rng.uniform(0.5, 1.4), rng.uniform(-np.pi, np.pi)
    sun_dir = np.array(
        [np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)]
    )
    fov = np.deg2rad(rng.uniform(*settings.fov_deg))
    f = w / (2.0 * np.tan(fov / 2.0))
    K = np.array([[f, 0.0, (w - 1) / 2.0], [0.0, f, (h - 1) / 2.0], [0.0, 0.0, 1.0]])
    exposure = 1.0 + settings.exposure_jitter * rng.uniform(-1.0, 1.0, size=frames)

    arrays = {
        "room_lo": room_lo,
        "room_hi": room_hi,
        "box_center": box_center,
        "box_half": box_half,
        "box_yaw": box_yaw,
        "box_active": box_active,
        "sphere_center": sphere_center,
        "sphere_radius": sphere_radius,
        "sphere_active": sphere_active,
        "cylinder_center": cylinder_center,
        "cylinder_radius": cylinder_radius,
        "cylinder_half_height": cylinder_half,
        "cylinder_active": cylinder_active,
        "surf_kind": kind,
        "surf_center": centre_tab,
        "surf_cos": cos_tab,
        "surf_sin": sin_tab,
        "surf_normal": normal_tab,
        "material": material,
        "salt": salt,
        "ambient": np.array(rng.uniform(*settings.ambient)),
        "sun": np.array(rng.uniform(*settings.sun)),
        "sun_dir": sun_dir,
        "lamp": np.array(rng.uniform(*settings.lamp)),
        "lamp_pos": lamp_pos,
        "lamp_falloff": np.array(rng.uniform(2.0, 6.0)),
        "cam_to_world": cam_to_world,
        "intrinsics": K,
        "white": 1.0 + 0.06 * rng.normal(size=3),
        "gamma": np.array(rng.uniform(1.8, 2.4)),
        "noise": np.array(rng.uniform(*settings.noise_sigma)),
        "vignette": np.array(rng.uniform(*settings.vignetting)),
        "exposure": exposure,
        "brightness": np.array(rng.uniform(0.35, 0.55)),
        "seed": np.array(rng.integers(0, 2**31 - 1), np.int64),
        "motion": np.array(motion, np.int64),
    }
    return _Scene(arrays)


def stack_scenes(scenes: list[_Scene], device: torch.device | str = "cpu") -> SceneBatch:
    """Stack per-window scenes into a :class:`SceneBatch` (float32, int64 and bool tensors)."""
    out = {}
    for f in fields(SceneBatch):
        values = np.stack([s.arrays[f.name] for s in scenes])
        if values.dtype == np.float64:
            values = values.astype(np.float32)
        out[f.name] = torch.from_numpy(values).to(device)
    return SceneBatch(**out)


def window_seeds(base_seed: int, indices: list[int] | range, stream: int = 0) -> list[np.random.SeedSequence]:
    """Independent seeds of windows ``indices`` of a stream (0: training, 1: validation, ...)."""
    return [np.random.SeedSequence([int(base_seed) & 0xFFFFFFFF, int(stream), int(i)]) for i in indices]


def sample_scenes(
    settings: ProceduralSettings,
    seeds: list[int | np.random.SeedSequence],
    device: torch.device | str = "cpu",
) -> SceneBatch:
    """A :class:`SceneBatch` of one scene per seed."""
    if not seeds:
        raise ValueError("need at least one seed")
    return stack_scenes([sample_scene(s, settings) for s in seeds], device)
