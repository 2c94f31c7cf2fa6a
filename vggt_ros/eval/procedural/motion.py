"""Robot-like camera motions for one window, as [S, 4, 4] camera-to-world poses.

World: z-up (REP-103), metres. Cameras: OpenCV optical axes (x right, y down, z forward).
Every motion stays ``margin`` metres inside the room box; objects are placed afterwards and
dropped where they would come too close to a camera (:mod:`.scene`), so every window is valid
by construction.

Motions (the names of :data:`~.settings.MOTIONS`):

* ``drive``: a wheeled robot driving forward with a slowly changing yaw rate, camera 0.15-1.6 m
  above the floor, pitched slightly down;
* ``turn``: turning in place; the camera sits up to 0.3 m ahead of the rotation axis;
* ``orbit``: handheld orbit around an object (returned as the focus point), with hand jitter;
* ``wall``: facing a wall at 0.6-2.5 m while sliding along it (a nearly planar scene);
* ``floor``: looking down at the floor while moving (planar, fronto-parallel);
* ``handheld``: a smooth random walk with a wandering gaze;
* ``strafe``: sideways translation with a fixed gaze (stereo-like sweep).

Loop-rich paths for evaluation sequences (:data:`~.settings.LOOP_MOTIONS`, not used in
training): ``lap`` (1.3 laps of a rounded rectangle inside the room, looking ahead: the end
revisits the start with the same heading), ``figure_eight`` (1.2 figure eights, looking ahead)
and ``there_and_back`` (out along a line facing sideways at the objects, back the same way, so
every place is seen twice from nearly the same pose).
"""

from __future__ import annotations

import numpy as np

from vggt_ros.eval.procedural.settings import ALL_MOTIONS, LOOP_MOTIONS


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cross product of [..., 3] arrays (np.cross is slow on short arrays)."""
    return np.stack(
        (
            a[..., 1] * b[..., 2] - a[..., 2] * b[..., 1],
            a[..., 2] * b[..., 0] - a[..., 0] * b[..., 2],
            a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0],
        ),
        axis=-1,
    )


def pose_from_angles(
    eye: np.ndarray, yaw: np.ndarray, pitch: np.ndarray, roll: np.ndarray | float = 0.0
) -> np.ndarray:
    """Camera-to-world of optical cameras at ``eye`` [S, 3] (or [3]) with heading ``yaw`` (about
    world z, 0 = +x), ``pitch`` (positive looks up) and ``roll`` (about the viewing axis), radians,
    each [S] or scalar. Returns [S, 4, 4] (or [4, 4] for scalar inputs)."""
    eye = np.asarray(eye, np.float64)
    single = eye.ndim == 1
    eye = np.atleast_2d(eye)
    n = eye.shape[0]
    yaw, pitch, roll = (np.broadcast_to(np.asarray(x, np.float64), (n,)) for x in (yaw, pitch, roll))
    forward = np.stack((np.cos(pitch) * np.cos(yaw), np.cos(pitch) * np.sin(yaw), np.sin(pitch)), axis=-1)
    left = np.stack((-np.sin(yaw), np.cos(yaw), np.zeros(n)), axis=-1)
    up = _cross(forward, left)
    # Roll turns the image plane axes about the forward axis.
    right = -left * np.cos(roll)[:, None] + up * np.sin(roll)[:, None]
    down = _cross(forward, right)
    T = np.repeat(np.eye(4)[None], n, axis=0)
    T[:, :3, :3] = np.stack((right, down, forward), axis=-1)
    T[:, :3, 3] = eye
    return T[0] if single else T


def look_at_pose(eye: np.ndarray, target: np.ndarray, roll: np.ndarray | float = 0.0) -> np.ndarray:
    """Camera-to-world looking from ``eye`` at ``target`` ([S, 3] or [3]) with a level horizon
    (plus roll)."""
    d = np.asarray(target, np.float64) - np.asarray(eye, np.float64)
    yaw = np.arctan2(d[..., 1], d[..., 0])
    pitch = np.arctan2(d[..., 2], np.hypot(d[..., 0], d[..., 1]))
    return pose_from_angles(np.asarray(eye, np.float64), yaw, pitch, roll)


def _fit(points: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Shift a path into the box [lo, hi] (per axis), or squeeze it about its centre if it is
    larger than the box."""
    p = points.copy()
    for k in range(3):
        span = p[:, k].max() - p[:, k].min()
        room = hi[k] - lo[k]
        if span > room:
            centre = 0.5 * (p[:, k].max() + p[:, k].min())
            p[:, k] = centre + (p[:, k] - centre) * (room / span)
        shift = max(0.0, lo[k] - p[:, k].min()) - max(0.0, p[:, k].max() - hi[k])
        p[:, k] += shift
    return p


def _between(rng: np.random.Generator, low: float, high: float) -> float:
    """Uniform in [low, high], or their midpoint when the range is empty (a small room)."""
    return float(rng.uniform(low, high)) if low < high else 0.5 * (low + high)


def _smooth_walk(rng: np.random.Generator, n: int, sigma: float, momentum: float = 0.8) -> np.ndarray:
    """[n] smooth 1-D random walk starting at 0 (velocity with momentum)."""
    v, x, out = 0.0, 0.0, np.zeros(n)
    for i in range(1, n):
        v = momentum * v + rng.normal(0.0, sigma)
        x += v
        out[i] = x
    return out


def sample_motion(
    rng: np.random.Generator,
    kind: str,
    frames: int,
    room_lo: np.ndarray,
    room_hi: np.ndarray,
    step_scale: float = 1.0,
    margin: float = 0.35,
) -> tuple[np.ndarray, np.ndarray | None]:
    """One window's camera path.

    Args:
        rng: the window's generator.
        kind: one of :data:`MOTIONS`.
        frames: S.
        room_lo, room_hi: [3] room corners (floor at ``room_lo[2]``).
        step_scale: multiplies the per-frame step.
        margin: minimum distance of camera centres from the room's walls, floor and ceiling.

    Returns:
        cam_to_world [S, 4, 4] float64, and the focus point [3] of an orbit (where an object
        should stand), else None.
    """
    if kind not in ALL_MOTIONS:
        raise ValueError(f"unknown motion {kind!r}; expected one of {ALL_MOTIONS}")
    if kind in LOOP_MOTIONS:
        return _loop_motion(rng, kind, frames, room_lo, room_hi, margin), None
    lo, hi = room_lo + margin, room_hi - margin
    i = np.arange(frames, dtype=np.float64)
    size = room_hi - room_lo
    focus = None

    def uniform_point(z_range: tuple[float, float]) -> np.ndarray:
        z = np.clip(rng.uniform(*z_range), lo[2], hi[2])
        return np.array([rng.uniform(lo[0], hi[0]), rng.uniform(lo[1], hi[1]), z])

    if kind == "drive":
        step = rng.uniform(0.06, 0.3) * step_scale
        yaw = rng.uniform(-np.pi, np.pi) + np.cumsum(np.full(frames, rng.normal(0.0, 0.04)))
        yaw += _smooth_walk(rng, frames, 0.01)
        height = rng.uniform(0.15, 1.6)
        heading = np.stack((np.cos(yaw), np.sin(yaw), np.zeros(frames)), axis=-1)
        eyes = np.cumsum(heading * step, axis=0) - heading[0] * step
        eyes[:, 2] = height + 0.01 * np.sin(1.3 * i + rng.uniform(0, 6.3))
        eyes = _fit(eyes + uniform_point((height, height)) - eyes[frames // 2], lo, hi)
        pitch = rng.uniform(-0.35, 0.08) + 0.01 * rng.normal(size=frames)
        roll = 0.01 * rng.normal(size=frames)
        poses = pose_from_angles(eyes, yaw, pitch, roll)
    elif kind == "turn":
        rate = rng.choice([-1.0, 1.0]) * rng.uniform(0.04, 0.22) * step_scale
        yaw = rng.uniform(-np.pi, np.pi) + rate * i
        centre = uniform_point((0.2, 1.7))
        arm = rng.uniform(0.0, 0.3)
        eyes = centre + arm * np.stack((np.cos(yaw), np.sin(yaw), np.zeros(frames)), axis=-1)
        eyes = _fit(eyes, lo, hi)
        pitch = rng.uniform(-0.3, 0.15) + 0.01 * rng.normal(size=frames)
        poses = pose_from_angles(eyes, yaw, pitch, 0.005 * rng.normal(size=frames))
    elif kind == "orbit":
        radius = _between(rng, 0.9, min(3.0, 0.45 * min(size[0], size[1])))
        focus = np.array(
            [
                _between(rng, room_lo[0] + radius + margin, room_hi[0] - radius - margin),
                _between(rng, room_lo[1] + radius + margin, room_hi[1] - radius - margin),
                rng.uniform(0.2, 1.2),
            ]
        )
        step = rng.choice([-1.0, 1.0]) * rng.uniform(0.04, 0.18) * step_scale
        theta = rng.uniform(-np.pi, np.pi) + step * i
        height = focus[2] + rng.uniform(0.2, 1.2) + 0.1 * np.sin(0.5 * i + rng.uniform(0, 6.3))
        eyes = np.stack(
            (focus[0] + radius * np.cos(theta), focus[1] + radius * np.sin(theta), height), axis=-1
        )
        eyes += 0.015 * rng.normal(size=eyes.shape)  # hand jitter
        eyes = _fit(eyes, lo, hi)
        aim = focus + 0.15 * rng.normal(size=(frames, 3))
        poses = look_at_pose(eyes, aim, 0.03 * rng.normal(size=frames))
    elif kind in ("wall", "floor"):
        step = rng.uniform(0.04, 0.22) * step_scale
        if kind == "wall":
            axis = int(rng.integers(0, 2))
            side = int(rng.integers(0, 2))
            distance = min(rng.uniform(0.6, 2.5), size[axis] - 2 * margin)
            normal = np.zeros(3)
            normal[axis] = -1.0 if side else 1.0  # points from the wall into the room
            wall = room_hi[axis] if side else room_lo[axis]
            along = np.zeros(3)
            along[1 - axis] = rng.choice([-1.0, 1.0])
            start = uniform_point((0.4, 2.0))
            start[axis] = wall + normal[axis] * distance
            eyes = start + np.outer(i * step, along)
            eyes[:, 2] += _smooth_walk(rng, frames, 0.01)
            eyes = _fit(eyes, lo, hi)
            yaw = (
                np.arctan2(-normal[1], -normal[0]) + rng.uniform(-0.5, 0.5) + _smooth_walk(rng, frames, 0.01)
            )
            pitch = rng.uniform(-0.3, 0.3) + _smooth_walk(rng, frames, 0.01)
        else:
            height = rng.uniform(0.5, 1.6)
            start = uniform_point((height, height))
            direction = rng.uniform(-np.pi, np.pi)
            eyes = start + np.outer(i * step, [np.cos(direction), np.sin(direction), 0.0])
            eyes = _fit(eyes, lo, hi)
            yaw = rng.uniform(-np.pi, np.pi) + _smooth_walk(rng, frames, 0.01)
            pitch = rng.uniform(-1.5, -0.8) + _smooth_walk(rng, frames, 0.01)
        poses = pose_from_angles(eyes, yaw, pitch, 0.02 * rng.normal(size=frames))
    elif kind == "handheld":
        sigma = rng.uniform(0.01, 0.04) * step_scale
        eyes = uniform_point((0.8, 1.8)) + np.stack([_smooth_walk(rng, frames, sigma) for _ in range(3)], -1)
        eyes = _fit(eyes, lo, hi)
        yaw = rng.uniform(-np.pi, np.pi) + _smooth_walk(rng, frames, 0.03 * step_scale)
        pitch = rng.uniform(-0.5, 0.2) + _smooth_walk(rng, frames, 0.015 * step_scale)
        roll = rng.uniform(-0.1, 0.1) + _smooth_walk(rng, frames, 0.01)
        poses = pose_from_angles(eyes, yaw, pitch, roll)
    else:  # strafe
        step = rng.uniform(0.04, 0.2) * step_scale
        yaw0 = rng.uniform(-np.pi, np.pi)
        sideways = np.array([-np.sin(yaw0), np.cos(yaw0), 0.0]) * rng.choice([-1.0, 1.0])
        eyes = uniform_point((0.3, 1.8)) + np.outer(i * step, sideways)
        eyes = _fit(eyes, lo, hi)
        pitch = rng.uniform(-0.35, 0.1)
        poses = pose_from_angles(eyes, yaw0 + 0.01 * rng.normal(size=frames), pitch, 0.0)
    return poses, focus


# Longest figure eight relative to its lobes' width (see _loop_motion).
FIGURE_EIGHT_MAX_ASPECT = 6.0


def _loop_motion(
    rng: np.random.Generator, kind: str, frames: int, room_lo: np.ndarray, room_hi: np.ndarray, margin: float
) -> np.ndarray:
    """The loop-rich paths of the module docstring, as [S, 4, 4] camera-to-world."""
    centre = 0.5 * (room_lo + room_hi)
    half = 0.5 * (room_hi - room_lo) - margin - 0.4
    height = rng.uniform(0.8, 1.5)
    u = np.linspace(0.0, 1.0, frames)
    if kind == "lap":
        a = 2 * np.pi * (1.3 * u) + rng.uniform(-np.pi, np.pi)
        # A rounded rectangle: |cos|^0.5 keeps the path near the walls on the long sides.
        x = centre[0] + half[0] * 0.8 * np.sign(np.cos(a)) * np.abs(np.cos(a)) ** 0.5
        y = centre[1] + half[1] * 0.8 * np.sign(np.sin(a)) * np.abs(np.sin(a)) ** 0.5
    elif kind == "figure_eight":
        a = 2 * np.pi * (1.2 * u) + rng.uniform(-0.5, 0.5)
        # A Lissajous eight x = L sin a, y = W sin 2a, looking ahead: it turns L / 2W radians per
        # unit of a at its two ends and 4 sqrt(2) W / L at its lobes' outer sides. Its long axis
        # used to be x whatever the room: across a corridor along y (W >> L) it turned up to 119
        # degrees between two frames, a motion no robot makes and no visual method follows, and
        # along a corridor (W << L) 18. So L lies along the longer side (W <= 0.75 L) and is at
        # most 6 W (at most about 9 degrees a frame over 200 frames); other rooms are unchanged.
        long_axis = int(np.argmax(half[:2]))
        width = 0.6 * half[1 - long_axis]
        length = min(0.8 * half[long_axis], FIGURE_EIGHT_MAX_ASPECT * width)
        along = centre[long_axis] + length * np.sin(a)
        across = centre[1 - long_axis] + width * np.sin(a) * np.cos(a) * 2
        x, y = (along, across) if long_axis == 0 else (across, along)
    else:  # there_and_back
        t = 1.0 - np.abs(2.0 * u - 1.0)  # 0 -> 1 -> 0
        axis = int(np.argmax(half[:2]))
        x = np.full(frames, centre[0] + rng.uniform(-0.3, 0.3) * half[0])
        y = np.full(frames, centre[1] + rng.uniform(-0.3, 0.3) * half[1])
        along = (2 * t - 1) * 0.85 * half[axis] + centre[axis]
        if axis == 0:
            x = along
        else:
            y = along
    eyes = np.stack((x, y, np.full(frames, height) + 0.02 * np.sin(7 * u)), axis=-1)
    if kind == "there_and_back":
        axis = int(np.argmax(half[:2]))
        yaw0 = (np.pi / 2 if axis == 0 else 0.0) + rng.choice([0.0, np.pi])
        yaw = yaw0 + 0.1 * np.sin(5 * np.pi * u)
    else:
        step = np.gradient(eyes[:, :2], axis=0)
        yaw = np.unwrap(np.arctan2(step[:, 1], step[:, 0]))
    pitch = -0.15 + 0.03 * np.sin(3 * np.pi * u)
    return pose_from_angles(eyes, yaw, pitch, 0.0)
