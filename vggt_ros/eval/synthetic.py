"""Procedural camera sequences with exact ground truth (images, z-depth, poses, intrinsics).

The scene is a room of axis-aligned boxes seen from inside (floor, ceiling, four walls) with a
few axis-aligned boxes standing in its middle. Every face carries a high-frequency procedural
texture that is a pure function of (face, surface point): a checker pattern mixed with hashed
value noise evaluated analytically at the hit point, times a constant Lambert-like factor per
face. Because nothing depends on the pixel grid, the same world point gives the same colour in
every view, which is what makes the reprojection tests in ``test/test_synthetic.py`` exact.

Rendering is vectorised numpy ray casting: one ray per pixel through the pixel centre, slab
intersection against all boxes at once, nearest hit wins. All geometry is float64.

Frames:
    * World: z-up, REP-103 (x forward, y left, z up). The room spans ``ROOM_LO`` .. ``ROOM_HI``
      metres; the floor is z = 0.
    * Cameras: OpenCV optical frames (x right, y down, z forward). ``cam_to_world`` maps optical
      frame coordinates to world coordinates; pixel (u, v) = (column, row) has its centre at
      integer coordinates and the principal point is ((W - 1) / 2, (H - 1) / 2).
    * Depth is z-depth (along the optical axis), in metres, as float32.

No ROS imports: later this module also feeds a rosbag writer; today :func:`save_sequence_images`
writes a folder the CLI demo reads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from vggt_ros.geometry.camera import invert_rigid

PathKind = Literal["orbit", "forward", "sideways"]
PATHS: tuple[str, ...] = ("orbit", "forward", "sideways")

# Room extent in world metres (x forward, y left, z up); the floor is z = 0.
# Aspect (height / width) of rendered sequences and windows: the procedural data's 140x182.
ASPECT = 140 / 182


def render_size(image_size: int) -> tuple[int, int]:
    """(height, width) at which a model of input width ``image_size`` sees a rendered sequence
    unresized: width ``image_size``, height the procedural aspect rounded to a multiple of 14
    (140x182 for 182, 196x252 for 252)."""
    return 14 * max(1, round(image_size * ASPECT / 14)), image_size


ROOM_LO = np.array([-4.0, -3.0, 0.0])
ROOM_HI = np.array([4.0, 3.0, 3.0])
# Objects stand inside this disc around the room centre (xy), so the camera paths, which stay
# outside it, never enter an object.
OBJECT_DISC_RADIUS = 1.3
# Minimum distance of every camera centre from every surface: keeps depth well above zero.
CAMERA_CLEARANCE = 0.25
DEFAULT_FPS = 10.0
# Unit vector towards the (directional) light used for the constant per-face shading.
_LIGHT = np.array([0.35, 0.55, 0.76]) / np.linalg.norm([0.35, 0.55, 0.76])
# Decorrelates a face's fine grain noise from its coarse blotches.
_GRAIN_SALT = np.uint32(0x9E3779B9)


# --------------------------------------------------------------------------------------------
# Scene
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SyntheticScene:
    """Axis-aligned boxes and their per-face texture parameters.

    Box 0 is the room (seen from inside); boxes 1.. are solid objects (seen from outside).
    Face ids are ``box * 6 + axis * 2 + side`` with ``side`` 0 for the plane ``lo[axis]`` and 1
    for ``hi[axis]``, so the plane of face f is ``axis = (f % 6) // 2`` at ``lo`` or ``hi``.

    Attributes:
        lo, hi: [B, 3] float64 box corners in world metres.
        color_a, color_b: [6 B, 3] float64 in [0, 1], the two checker colours of each face.
        checker: [6 B] float64 checker cell size in metres.
        salt: [6 B] uint32 seeds of the hashed value noise of each face.
        shade: [6 B] float64 constant Lambert-like brightness factor of each face.
    """

    lo: np.ndarray
    hi: np.ndarray
    color_a: np.ndarray
    color_b: np.ndarray
    checker: np.ndarray
    salt: np.ndarray
    shade: np.ndarray

    @property
    def num_boxes(self) -> int:
        return int(self.lo.shape[0])

    def face_plane(self, face: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Planes of faces: (axis [...] int, coordinate [...] float64); the plane is p[axis] = c."""
        face = np.asarray(face)
        box, axis, side = face // 6, (face % 6) // 2, face % 2
        coord = np.where(side == 1, self.hi[box, axis], self.lo[box, axis])
        return axis, coord

    def face_normal(self, face: np.ndarray) -> np.ndarray:
        """[..., 3] unit normals of faces, pointing into free space (towards any viewer)."""
        face = np.asarray(face)
        box, axis, side = face // 6, (face % 6) // 2, face % 2
        # Objects: the lo face looks towards -axis. The room is seen from inside, so it flips.
        sign = np.where(side == 1, 1.0, -1.0) * np.where(box == 0, -1.0, 1.0)
        return np.eye(3)[axis] * sign[..., None]

    def cast_rays(self, origins: np.ndarray, directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nearest surface hit of rays ``origins + t * directions``, t > 0.

        Args:
            origins: [N, 3] or [3] world points inside the room, outside objects.
            directions: [N, 3] world directions; need not be unit length. With the camera-frame
                direction (x_n, y_n, 1) rotated to the world, t is the z-depth.

        Returns:
            t: [N] float64 ray parameter of the nearest hit (finite: the room encloses all).
            face: [N] int64 face id (see the class docstring).
        """
        o = np.asarray(origins, np.float64)
        d = np.asarray(directions, np.float64)
        return self._cast([o[..., k] for k in range(3)], [np.ascontiguousarray(d[:, k]) for k in range(3)])

    def _cast(self, o_k: list[np.ndarray], d_k: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        # Works on per-axis 1-D arrays instead of [N, 3]: numpy reduces short trailing axes an
        # order of magnitude slower than it runs elementwise ops on long contiguous arrays.
        # An exactly axis-parallel ray would give 0 * inf = nan in the slab test; a tiny
        # substitute gives +-huge parameters instead, which the comparisons below handle.
        d_k = [np.where(dk == 0.0, 1e-300, dk) for dk in d_k]
        inv_k = [1.0 / dk for dk in d_k]
        pos_k = [dk > 0.0 for dk in d_k]

        # Room, from inside: the exit is the nearest of the three far slab planes; travelling
        # towards +axis the ray leaves through the hi plane (side 1).
        best_t = best_face = None
        for k in range(3):
            far = np.where(pos_k[k], self.hi[0, k] - o_k[k], self.lo[0, k] - o_k[k]) * inv_k[k]
            face = 2 * k + pos_k[k].astype(np.int64)
            if best_t is None:
                best_t, best_face = far, face
            else:
                closer = far < best_t
                best_t = np.where(closer, far, best_t)
                best_face = np.where(closer, face, best_face)

        for box in range(1, self.num_boxes):
            t_near = t_far = near_face = None
            for k in range(3):
                lo_t = (self.lo[box, k] - o_k[k]) * inv_k[k]
                hi_t = (self.hi[box, k] - o_k[k]) * inv_k[k]
                near, far = np.where(pos_k[k], lo_t, hi_t), np.where(pos_k[k], hi_t, lo_t)
                # Entering towards +axis goes through the lo plane (side 0).
                face = box * 6 + 2 * k + (~pos_k[k]).astype(np.int64)
                if t_near is None:
                    t_near, t_far, near_face = near, far, face
                else:
                    later = near > t_near
                    t_near = np.where(later, near, t_near)
                    near_face = np.where(later, face, near_face)
                    t_far = np.minimum(t_far, far)
            hit = (t_near <= t_far) & (t_near > 0.0) & (t_near < best_t)
            best_t = np.where(hit, t_near, best_t)
            best_face = np.where(hit, near_face, best_face)
        return best_t, best_face

    def surface_color(self, points: np.ndarray, face: np.ndarray) -> np.ndarray:
        """Texture colour of surface points: a pure function of (point, face).

        Only the two in-plane coordinates of a point are used, so points need not lie exactly
        on the face plane.

        Args:
            points: [N, 3] world points on the faces.
            face: [N] face ids.

        Returns:
            [N, 3] uint8 RGB.
        """
        points = np.asarray(points, np.float64)
        return self._color([points[:, k] for k in range(3)], np.asarray(face, np.int64))

    def _color(self, p_k: list[np.ndarray], face: np.ndarray) -> np.ndarray:
        axis = (face % 6) // 2
        px, py, pz = p_k
        # In-plane coordinates: the two world axes after the face normal, cyclically, so the
        # texture does not depend on where the viewer is.
        a = np.where(axis == 0, py, np.where(axis == 1, pz, px))
        b = np.where(axis == 0, pz, np.where(axis == 1, px, py))
        cell = self.checker[face]
        dark = (np.floor(a / cell) + np.floor(b / cell)) % 2.0 > 0.5
        salt = self.salt[face]
        # Coarse blotches modulate brightness; fine coloured grain gives per-pixel texture.
        blotch = 0.5 + 0.5 * _value_noise(a, b, 0.23, salt)[0]
        grain = _value_noise(a, b, 0.045, salt ^ _GRAIN_SALT, channels=3)
        shade = self.shade[face]
        rgb = np.empty((face.shape[0], 3), np.uint8)
        for c in range(3):
            base = np.where(dark, self.color_b[face, c], self.color_a[face, c])
            value = np.clip((base * blotch + 0.35 * (grain[c] - 0.5)) * shade, 0.0, 1.0)
            rgb[:, c] = np.floor(value * 255.0 + 0.5)
        return rgb

    def is_free(self, points: np.ndarray, clearance: float = CAMERA_CLEARANCE) -> np.ndarray:
        """[N] bool: points at least ``clearance`` metres inside the room and outside objects."""
        p = np.atleast_2d(np.asarray(points, np.float64))
        free = np.all((p >= self.lo[0] + clearance) & (p <= self.hi[0] - clearance), axis=1)
        for box in range(1, self.num_boxes):
            inside = np.all((p > self.lo[box] - clearance) & (p < self.hi[box] + clearance), axis=1)
            free &= ~inside
        return free


def _hash(ix: np.ndarray, iy: np.ndarray, salt: np.ndarray) -> np.ndarray:
    """Deterministic uint32 hash of integer lattice points (uint32 arithmetic wraps)."""
    x = ix.astype(np.int64).astype(np.uint32)
    y = iy.astype(np.int64).astype(np.uint32)
    h = (x * np.uint32(0x27D4EB2D)) ^ (y * np.uint32(0x165667B1)) ^ salt
    h ^= h >> np.uint32(15)
    h *= np.uint32(0x2C1B3C6D)
    h ^= h >> np.uint32(12)
    h *= np.uint32(0x297A2D39)
    h ^= h >> np.uint32(15)
    return h


def _value_noise(
    a: np.ndarray, b: np.ndarray, cell: float, salt: np.ndarray, channels: int = 1
) -> list[np.ndarray]:
    """Smooth value noise in [0, 1]: hashed lattice values, smoothstep-bilinear in between.

    Returns ``channels`` (<= 3) [N] arrays; each channel takes its own 10 bits of one lattice
    hash, so extra channels cost no extra hashing.
    """
    ga, gb = a / cell, b / cell
    ia, ib = np.floor(ga), np.floor(gb)
    fa, fb = ga - ia, gb - ib
    fa, fb = fa * fa * (3.0 - 2.0 * fa), fb * fb * (3.0 - 2.0 * fb)
    corners = [_hash(ia + da, ib + db, salt) for da, db in ((0, 0), (1, 0), (0, 1), (1, 1))]
    w = [(1 - fa) * (1 - fb), fa * (1 - fb), (1 - fa) * fb, fa * fb]
    out = []
    for c in range(channels):
        shift = np.uint32(10 * c)
        value = sum(wi * ((h >> shift) & np.uint32(0x3FF)) for wi, h in zip(w, corners))
        out.append(value * (1.0 / 1023.0))
    return out


def make_scene(seed: int = 0) -> SyntheticScene:
    """The room plus 4-6 seeded boxes inside ``OBJECT_DISC_RADIUS`` of the room centre (xy).

    Most boxes stand on the floor; one floats at shelf height so the upper part of the view
    has structure too.
    """
    rng = np.random.default_rng([seed, 0x5CE2E])
    lo, hi = [ROOM_LO.copy()], [ROOM_HI.copy()]
    num_objects = int(rng.integers(4, 7))
    for k in range(num_objects):
        half = rng.uniform(0.15, 0.4, size=2)
        # Keep the whole footprint in the disc: centre radius + half diagonal <= disc radius.
        max_r = OBJECT_DISC_RADIUS - float(np.hypot(*half))
        r, phi = max_r * np.sqrt(rng.uniform()), rng.uniform(0.0, 2.0 * np.pi)
        centre = np.array([r * np.cos(phi), r * np.sin(phi)])
        if k == num_objects - 1:
            z0 = rng.uniform(1.7, 2.0)
            z = (z0, z0 + rng.uniform(0.2, 0.5))
        else:
            z = (0.0, rng.uniform(0.3, 1.4))
        lo.append(np.array([*(centre - half), z[0]]))
        hi.append(np.array([*(centre + half), z[1]]))
    lo_arr, hi_arr = np.stack(lo), np.stack(hi)

    num_faces = 6 * lo_arr.shape[0]
    color_a = rng.uniform(0.15, 0.95, size=(num_faces, 3))
    # The second checker colour is a darker, hue-shifted copy so the checker edges are strong.
    color_b = np.clip(color_a[:, [1, 2, 0]] * rng.uniform(0.3, 0.6, size=(num_faces, 1)), 0.0, 1.0)
    checker = rng.uniform(0.25, 0.6, size=num_faces)
    salt = rng.integers(0, 2**32, size=num_faces, dtype=np.uint64).astype(np.uint32)
    scene = SyntheticScene(lo_arr, hi_arr, color_a, color_b, checker, salt, np.ones(num_faces))
    normals = scene.face_normal(np.arange(num_faces))
    shade = 0.65 + 0.35 * np.clip(normals @ _LIGHT, 0.0, 1.0)
    return SyntheticScene(lo_arr, hi_arr, color_a, color_b, checker, salt, shade)


# --------------------------------------------------------------------------------------------
# Cameras
# --------------------------------------------------------------------------------------------


def intrinsics_from_fov(height: int, width: int, fov_deg: float) -> np.ndarray:
    """[3, 3] float64 pinhole intrinsics with horizontal field of view ``fov_deg``.

    Square pixels, no skew, principal point ((W - 1) / 2, (H - 1) / 2). The image spans
    x in [-0.5, W - 0.5] (pixel centres at integers), so fx = W / (2 tan(fov / 2)).
    """
    if not 0.0 < fov_deg < 180.0:
        raise ValueError(f"fov_deg must be in (0, 180), got {fov_deg}")
    f = width / (2.0 * np.tan(np.deg2rad(fov_deg) / 2.0))
    return np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


def look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """[4, 4] cam_to_world of an OpenCV camera at ``eye`` looking at ``target``, world z up.

    Columns of the rotation are the camera's x (right), y (down) and z (forward) axes in the
    world; the horizon stays level (camera x has no world z component).
    """
    eye, target = np.asarray(eye, np.float64), np.asarray(target, np.float64)
    forward = target - eye
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    T = np.eye(4)
    T[:3, :3] = np.stack((right, down, forward), axis=1)
    T[:3, 3] = eye
    return T


def _heading(yaw: np.ndarray, pitch: np.ndarray) -> np.ndarray:
    """[..., 3] unit world directions from yaw about z (0 = +x) and pitch (positive up)."""
    return np.stack((np.cos(pitch) * np.cos(yaw), np.cos(pitch) * np.sin(yaw), np.sin(pitch)), axis=-1)


def camera_path(path: str, num_frames: int, seed: int = 0) -> np.ndarray:
    """Smooth seeded camera trajectories through the room, as [S, 4, 4] cam_to_world.

    * ``orbit``: circles the objects at 2.2-2.5 m radius, ~15 cm per frame, looking at them.
    * ``forward``: walks along a side of the room (y = +-2 m), ~12 cm per frame, looking
      ahead with a gentle yaw sway and a slight downward pitch.
    * ``sideways``: translates across the room (along y) near an end wall, ~10 cm per frame,
      with a fixed orientation facing the objects (a stereo-like sweep).

    Long sequences shrink the step so the path stays in the room (orbit simply goes round).
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    rng = np.random.default_rng([seed, 0xCA3E7A, PATHS.index(path)])
    i = np.arange(num_frames, dtype=np.float64)
    phase = rng.uniform(0.0, 2.0 * np.pi)
    if path == "orbit":
        radius = rng.uniform(2.2, 2.5)
        step = 0.15 * rng.uniform(0.85, 1.15) / radius  # radians per frame
        direction = rng.choice([-1.0, 1.0])
        theta = rng.uniform(0.0, 2.0 * np.pi) + direction * step * i
        eyes = np.stack(
            (radius * np.cos(theta), radius * np.sin(theta), 1.45 + 0.12 * np.sin(0.4 * i + phase)), axis=-1
        )
        target = np.array([rng.uniform(-0.2, 0.2), rng.uniform(-0.2, 0.2), 0.6])
        # The target drifts a little so the view direction does not just track the centre.
        targets = target + 0.15 * np.stack((np.sin(0.3 * i + phase), np.cos(0.25 * i), 0.0 * i), axis=-1)
        return np.stack([look_at(e, t) for e, t in zip(eyes, targets)])

    if path == "forward":
        side, travel = rng.choice([-1.0, 1.0], size=2)
        step = min(0.12 * rng.uniform(0.85, 1.15), 6.3 / max(num_frames - 1, 1))
        x = travel * (-3.3 + step * i)
        y = side * (2.0 + rng.uniform(-0.2, 0.2)) + 0.05 * np.sin(0.5 * i + phase)
        z = 1.4 + rng.uniform(-0.1, 0.1) + 0.04 * np.sin(0.7 * i + phase)
        base_yaw = 0.0 if travel > 0 else np.pi
        # Bias the view a little towards the room centre (the objects) and sway around it.
        yaw = base_yaw - side * travel * 0.25 + 0.15 * np.sin(0.35 * i + phase)
        pitch = -0.15 + 0.05 * np.sin(0.45 * i + phase)
    else:  # sideways
        end, move = rng.choice([-1.0, 1.0], size=2)
        step = min(0.1 * rng.uniform(0.85, 1.15), 3.6 / max(num_frames - 1, 1))
        x = end * -3.2 + 0.0 * i
        y = move * (-1.8 + step * i)
        z = 1.35 + rng.uniform(-0.1, 0.1) + 0.0 * i
        yaw = (0.0 if end > 0 else np.pi) + rng.uniform(-0.1, 0.1) + 0.0 * i
        pitch = -0.2 + 0.0 * i
    eyes = np.stack(np.broadcast_arrays(x, y, z), axis=-1)
    forward = _heading(yaw, pitch)
    return np.stack([look_at(e, e + f) for e, f in zip(eyes, forward)])


def _camera_rays(intrinsics: np.ndarray, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Camera-frame ray directions (x_n, y_n, 1) through pixel positions uv [N, 2] as (x_n, y_n).

    Same arithmetic as ``depth_to_camera_points`` (skew included), so a grid render and a
    render at the same integer positions agree bit for bit with the geometry helpers.
    """
    K = np.asarray(intrinsics, np.float64)
    fx, s, cx, fy, cy = K[0, 0], K[0, 1], K[0, 2], K[1, 1], K[1, 2]
    y_n = (uv[:, 1] - cy) / fy
    x_n = (uv[:, 0] - cx - s * y_n) / fx
    return x_n, y_n


def render_pixels(
    scene: SyntheticScene, cam_to_world: np.ndarray, intrinsics: np.ndarray, uv: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Render arbitrary (sub-)pixel positions of one camera.

    Args:
        scene: the scene.
        cam_to_world: [4, 4] (or [3, 4]) optical frame -> world.
        intrinsics: [3, 3] pixel intrinsics.
        uv: [N, 2] (u, v) = (column, row) pixel positions, centres at integers.

    Returns:
        rgb: [N, 3] uint8; depth: [N] float64 z-depth in metres; points: [N, 3] float64 world
        hit points; face: [N] int64 face ids.
    """
    T = np.asarray(cam_to_world, np.float64)
    R, origin = T[:3, :3], T[:3, 3]
    x_n, y_n = _camera_rays(intrinsics, np.asarray(uv, np.float64).reshape(-1, 2))
    # World direction R (x_n, y_n, 1), one component at a time (see SyntheticScene._cast).
    d_k = [R[k, 0] * x_n + R[k, 1] * y_n + R[k, 2] for k in range(3)]
    o_k = [origin[k] for k in range(3)]
    # The camera-frame ray has z = 1, so the ray parameter of the hit is its z-depth.
    depth, face = scene._cast(o_k, d_k)
    # Snap onto the face plane: removes rounding across the plane, so the texture sees exactly
    # the surface coordinates (the in-plane ones are untouched).
    axis, coord = scene.face_plane(face)
    p_k = [np.where(axis == k, coord, o_k[k] + depth * d_k[k]) for k in range(3)]
    return scene._color(p_k, face), depth, np.stack(p_k, axis=-1), face


def render_views(
    scene: SyntheticScene, cam_to_world: np.ndarray, intrinsics: np.ndarray, height: int, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render full images, one ray per pixel centre.

    Args:
        cam_to_world: [S, 4, 4] optical frame -> world.
        intrinsics: [3, 3].

    Returns:
        images [S, H, W, 3] uint8 RGB, depth [S, H, W] float32 z-depth (m), face ids
        [S, H, W] int16.
    """
    poses = np.asarray(cam_to_world, np.float64).reshape(-1, 4, 4)
    v, u = np.mgrid[0:height, 0:width]
    uv = np.stack((u.ravel(), v.ravel()), axis=-1).astype(np.float64)
    images = np.empty((len(poses), height, width, 3), np.uint8)
    depth = np.empty((len(poses), height, width), np.float32)
    faces = np.empty((len(poses), height, width), np.int16)
    # One frame at a time keeps the working set to a few MB (cache friendly and fast enough).
    for k, T in enumerate(poses):
        rgb, z, _, face = render_pixels(scene, T, intrinsics, uv)
        images[k] = rgb.reshape(height, width, 3)
        depth[k] = z.reshape(height, width)
        faces[k] = face.reshape(height, width)
    return images, depth, faces


# --------------------------------------------------------------------------------------------
# Sequences
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SyntheticSequence:
    """One camera's rendered frames with exact ground truth.

    Attributes:
        images: [S, H, W, 3] uint8 RGB.
        depth: [S, H, W] float32 z-depth in metres (positive and finite everywhere).
        cam_to_world: [S, 4, 4] float64, camera optical frame (x right, y down, z forward) ->
            world (z-up, REP-103). This is the pose TF would publish for the camera.
        intrinsics: [3, 3] float64, principal point ((W - 1) / 2, (H - 1) / 2).
        stamps: [S] float64 seconds (frame i at i / fps).
        face_ids: [S, H, W] int16 id of the face each pixel sees (see :class:`SyntheticScene`);
            zeros for sequences of the procedural renderer.
        scene: the scene, to re-render or sample the texture at any point (None for sequences
            of the procedural renderer, :func:`vggt_ros.eval.procedural.render_sequence`).
        path: the trajectory kind; seed: the seed of scene and trajectory.
        baseline: for the primary camera of a rig, the rig's baseline in metres, else None.
        right: the second camera of a rig (``baseline`` metres along +x of the primary's optical
            frame, same orientation and stamps), else None. Its own ``right`` is None.
    """

    images: np.ndarray
    depth: np.ndarray
    cam_to_world: np.ndarray
    intrinsics: np.ndarray
    stamps: np.ndarray
    face_ids: np.ndarray
    scene: SyntheticScene | None
    path: str
    seed: int
    baseline: float | None = None
    right: SyntheticSequence | None = None

    @property
    def num_frames(self) -> int:
        return int(self.images.shape[0])

    @property
    def height(self) -> int:
        return int(self.images.shape[1])

    @property
    def width(self) -> int:
        return int(self.images.shape[2])

    @property
    def extrinsics(self) -> np.ndarray:
        """[S, 3, 4] camera-from-world, the convention of ``vggt_ros.geometry`` and VGGT."""
        return invert_rigid(self.cam_to_world)[:, :3, :]


def render_sequence(
    num_frames: int = 8,
    height: int = 240,
    width: int = 320,
    seed: int = 0,
    fov_deg: float = 70.0,
    path: PathKind = "orbit",
    second_camera_baseline: float | None = None,
    fps: float = DEFAULT_FPS,
) -> SyntheticSequence:
    """Render a seeded camera sequence through a procedural room (see the module docstring).

    Args:
        num_frames: S.
        height, width: image size in pixels.
        seed: selects the scene layout, textures and trajectory variation.
        fov_deg: horizontal field of view; square pixels.
        path: "orbit", "forward" or "sideways" (see :func:`camera_path`).
        second_camera_baseline: when given, also render a second camera rigidly mounted this
            many metres to the right (+x of the optical frame); it is returned as ``.right``.
        fps: frame rate of the stamps.

    Returns:
        The :class:`SyntheticSequence`.

    Raises:
        ValueError: bad arguments, or a camera (e.g. the second one, for a large baseline)
            would be closer than ``CAMERA_CLEARANCE`` to a surface.
    """
    if height < 1 or width < 1:
        raise ValueError(f"height and width must be positive, got {height}x{width}")
    scene = make_scene(seed)
    K = intrinsics_from_fov(height, width, fov_deg)
    poses = camera_path(path, num_frames, seed)
    stamps = np.arange(num_frames, dtype=np.float64) / fps

    def render(
        cam_to_world: np.ndarray, baseline: float | None, right: SyntheticSequence | None
    ) -> SyntheticSequence:
        if not np.all(scene.is_free(cam_to_world[:, :3, 3])):
            raise ValueError(f"a camera of the {path!r} path comes too close to a surface")
        images, depth, faces = render_views(scene, cam_to_world, K, height, width)
        return SyntheticSequence(
            images, depth, cam_to_world, K.copy(), stamps.copy(), faces, scene, path, seed, baseline, right
        )

    second = None
    if second_camera_baseline is not None:
        offset = np.eye(4)
        offset[0, 3] = float(second_camera_baseline)
        second = render(poses @ offset, None, None)
    return render(poses, None if second is None else float(second_camera_baseline), second)


def save_sequence_images(seq: SyntheticSequence, folder: str | Path) -> Path:
    """Write a sequence for the CLI demo; returns the path of the ground-truth JSON.

    Layout of ``folder``:
        * ``frame_0000.png`` ... RGB frames;
        * ``depth.npy``: [S, H, W] float32 z-depth in metres;
        * ``ground_truth.json``: intrinsics, per-frame file name, stamp and cam_to_world
          (optical frame -> world, row-major 4x4), conventions, and ``second_camera``;
        * ``right/``: the second camera of a rig in the same layout (only when present).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    frames = []
    for k in range(seq.num_frames):
        name = f"frame_{k:04d}.png"
        # OpenCV writes BGR.
        if not cv2.imwrite(str(folder / name), cv2.cvtColor(seq.images[k], cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write {folder / name}")
        frames.append(
            {"file": name, "stamp": float(seq.stamps[k]), "cam_to_world": seq.cam_to_world[k].tolist()}
        )
    np.save(folder / "depth.npy", seq.depth)
    second = None
    if seq.right is not None:
        save_sequence_images(seq.right, folder / "right")
        second = {"folder": "right", "baseline": seq.baseline}
    gt = {
        "format": "vggt_ros.synthetic/1",
        "conventions": {
            "world": "z-up, REP-103 (x forward, y left, z up), metres",
            "camera": "OpenCV optical frame (x right, y down, z forward)",
            "cam_to_world": "maps optical-frame points to world points",
            "pixels": "(u, v) = (column, row), pixel centres at integer coordinates",
            "depth": "z-depth along the optical axis, metres, float32 [S, H, W]",
        },
        "path": seq.path,
        "seed": seq.seed,
        "height": seq.height,
        "width": seq.width,
        "intrinsics": seq.intrinsics.tolist(),
        "depth_file": "depth.npy",
        "frames": frames,
        "second_camera": second,
    }
    out = folder / "ground_truth.json"
    out.write_text(json.dumps(gt, indent=2))
    return out
