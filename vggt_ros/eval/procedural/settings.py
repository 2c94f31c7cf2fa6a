"""What the procedural generator randomises, and within which ranges.

:class:`ProceduralSettings` is a frozen dataclass of plain numbers and tuples so it can be saved
next to a training run or a generated bag (``to_dict`` / ``from_dict``) and compared. Two
presets matter: the default (the training distribution of the shipped compact model) and
:meth:`ProceduralSettings.held_out`, scene settings the model never saw in training (larger and
emptier rooms, other motion mix, wider lenses), used with seeds from a separate stream to
measure accuracy honestly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

MOTIONS: tuple[str, ...] = ("drive", "turn", "orbit", "wall", "floor", "handheld", "strafe")
# Long, loop-rich paths for evaluation sequences (``vggt-ros generate --motion``), not training.
LOOP_MOTIONS: tuple[str, ...] = ("lap", "figure_eight", "there_and_back")
ALL_MOTIONS: tuple[str, ...] = MOTIONS + LOOP_MOTIONS


@dataclass(frozen=True)
class ProceduralSettings:
    """Ranges of everything the generator draws per window (``(low, high)`` pairs are uniform).

    Geometry is in metres in a z-up world (REP-103); cameras follow OpenCV optical axes.

    Attributes:
        height, width: rendered image size in pixels.
        frames: frames per window.
        fov_deg: horizontal field of view range (square pixels, principal point at the centre).
        motion_weights: relative frequency of each camera motion in :data:`MOTIONS`.
        step_scale: multiplies every motion's per-frame step (larger: wider baselines).
        room_x, room_y, room_z: room extent ranges (x, y, height).
        corridor_prob: chance that the room is a corridor (long and narrow).
        boxes, spheres, cylinders: (min, max) object counts; the max is the tensor capacity.
        low_texture_prob: chance that a surface is nearly uniform (little texture to match).
        mosaic_prob: chance that a textured surface is a mosaic: sharp-edged tiles of unrelated
            hashed colours instead of the two-colour checker and stripes (default 0, the
            training distribution of every shipped model; more texture variety for training).
        near_object_prob: chance that a window gets one more box standing 0.45-1.2 m in front of
            one of its cameras (a panel or crate filling part of the view or most of it, its base
            often out of view), as a turning robot meets beside furniture (default 0: nothing
            is drawn, so every window renders as before). Random placement makes such views
            rare, and without parallax (turning in place) the network must learn their distance
            from other cues: the compact model's worst turn-in-place errors (model card).
        ambient, sun, lamp: light strength ranges (ambient, directional, point lamp).
        shadows: cast shadows from the lamp.
        noise_sigma: sensor noise standard deviation range (in [0, 1] image units).
        exposure_jitter: per-frame relative exposure change (auto-exposure).
        vignetting: strength range of the radial darkening.
        supersample: colour rays per pixel side (2 = 4 rays per pixel); depth always uses the
            pixel centre.
        track_queries: query points per window for the track targets.
    """

    height: int = 140
    width: int = 182
    frames: int = 8
    fov_deg: tuple[float, float] = (50.0, 95.0)
    motion_weights: tuple[float, ...] = (0.22, 0.12, 0.2, 0.1, 0.06, 0.2, 0.1)
    step_scale: tuple[float, float] = (0.5, 1.6)
    room_x: tuple[float, float] = (4.0, 14.0)
    room_y: tuple[float, float] = (3.0, 10.0)
    room_z: tuple[float, float] = (2.4, 4.5)
    corridor_prob: float = 0.15
    boxes: tuple[int, int] = (2, 10)
    spheres: tuple[int, int] = (0, 3)
    cylinders: tuple[int, int] = (0, 3)
    low_texture_prob: float = 0.15
    mosaic_prob: float = 0.0
    near_object_prob: float = 0.0
    ambient: tuple[float, float] = (0.25, 0.6)
    sun: tuple[float, float] = (0.0, 0.6)
    lamp: tuple[float, float] = (0.3, 1.2)
    shadows: bool = True
    noise_sigma: tuple[float, float] = (0.0, 0.025)
    exposure_jitter: float = 0.08
    vignetting: tuple[float, float] = (0.0, 0.35)
    supersample: int = 1
    track_queries: int = 64
    # Free-form name recorded with runs and bags.
    name: str = "train"
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.height < 8 or self.width < 8:
            raise ValueError(f"image size {self.height}x{self.width} is too small (>= 8 px per side)")
        if self.frames < 1:
            raise ValueError(f"frames must be >= 1, got {self.frames}")
        if (
            len(self.motion_weights) != len(MOTIONS)
            or min(self.motion_weights) < 0
            or not any(self.motion_weights)
        ):
            raise ValueError(f"motion_weights needs {len(MOTIONS)} non-negative weights for {MOTIONS}")
        if not 1.0 <= self.fov_deg[0] <= self.fov_deg[1] < 170.0:
            raise ValueError(f"fov_deg must be an increasing range inside [1, 170), got {self.fov_deg}")
        for name in ("boxes", "spheres", "cylinders"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"{name} must be a (min, max) count range, got {(lo, hi)}")
        for name in ("corridor_prob", "low_texture_prob", "mosaic_prob", "near_object_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {getattr(self, name)}")
        if self.supersample < 1:
            raise ValueError(f"supersample must be >= 1, got {self.supersample}")
        if self.track_queries < 0:
            raise ValueError(f"track_queries must be >= 0, got {self.track_queries}")

    def replace(self, **changes: Any) -> ProceduralSettings:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.pop("extra")
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProceduralSettings:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown procedural settings: {', '.join(unknown)}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)

    @classmethod
    def held_out(cls, **changes: Any) -> ProceduralSettings:
        """Scene settings outside the training ranges: bigger rooms and corridors, fewer or more
        objects, wider lenses, more handheld and orbit motion, darker and noisier images."""
        base = cls(
            name="held_out",
            fov_deg=(45.0, 100.0),
            motion_weights=(0.2, 0.1, 0.25, 0.05, 0.05, 0.25, 0.1),
            room_x=(12.0, 18.0),
            room_y=(8.0, 12.0),
            room_z=(3.0, 5.0),
            corridor_prob=0.25,
            boxes=(1, 12),
            spheres=(0, 4),
            cylinders=(0, 4),
            ambient=(0.2, 0.5),
            noise_sigma=(0.0, 0.03),
        )
        return base.replace(**changes)

    def large_rooms(self) -> ProceduralSettings:
        """These settings in rooms larger than every held-out room, with room for more objects.

        Rooms 19-27 m long, 13-20 m wide and 3.5-6 m high (the held-out rooms are 12-18 x 8-12 x
        3-5 m, the training rooms 4-14 x 3-10 x 2.4-4.5 m), up to 14 boxes and 4 cylinders;
        image size, lenses, light and motions stay these settings' own. Training on a share of
        these teaches large rotations in big, sparse spaces (docs/training.md, sixteenth session)
        while the held-out rooms' floor plans stay unseen in between (only heights overlap).
        """
        return self.replace(
            name=f"{self.name}_large_rooms",
            room_x=(19.0, 27.0),
            room_y=(13.0, 20.0),
            room_z=(3.5, 6.0),
            boxes=(2, 14),
            cylinders=(0, 4),
        )

    @property
    def motion_names(self) -> tuple[str, ...]:
        return MOTIONS
