"""Nearest-hit ray casting against a :class:`~.scene.SceneBatch` (torch, any device).

Rays are ``origin + t * direction`` with t > ``t_min``; directions need not be unit length, so
with the camera-frame direction (x_n, y_n, 1) rotated into the world, ``t`` is the z-depth.
The room encloses everything, so every ray hits something. Work is vectorised over windows and
rays and loops over object slots (a handful), which keeps temporaries at [W, R, 3].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vggt_ros.eval.procedural.scene import CYLINDER_CAP, CYLINDER_SIDE, SPHERE, SceneBatch

_TINY = 1e-12


@dataclass
class Hits:
    """Nearest hits of [W, R] rays: ``t`` [W, R] ray parameter, ``surface`` [W, R] int64 id."""

    t: Tensor
    surface: Tensor


def _safe(d: Tensor) -> Tensor:
    """Directions with exact zeros nudged (1 / 0 would give nan in 0 * inf below)."""
    return torch.where(d.abs() < _TINY, torch.full_like(d, _TINY), d)


def cast(scene: SceneBatch, origins: Tensor, directions: Tensor, t_min: float = 1e-4) -> Hits:
    """Nearest hit of each ray.

    Args:
        scene: W scenes.
        origins: [W, R, 3] or [W, 1, 3] world points inside the room, outside objects.
        directions: [W, R, 3] world directions.
        t_min: hits closer than this (in units of ``t``) are ignored (self-intersection).
    """
    d = _safe(directions)
    inv = 1.0 / d
    o = origins.expand_as(d)
    kb, ks, kc = scene.box_center.shape[1], scene.sphere_center.shape[1], scene.cylinder_center.shape[1]

    # Room seen from inside: the exit is the nearest far slab plane.
    lo, hi = scene.room_lo[:, None], scene.room_hi[:, None]
    far = torch.where(d > 0, hi - o, lo - o) * inv
    best_t, axis = far.min(dim=-1)
    best_s = axis * 2 + (d.gather(-1, axis[..., None])[..., 0] > 0).long()

    def keep(t: Tensor, surface: Tensor | int, hit: Tensor) -> None:
        nonlocal best_t, best_s
        hit = hit & (t > t_min) & (t < best_t)
        best_t = torch.where(hit, t, best_t)
        best_s = torch.where(
            hit, surface if isinstance(surface, Tensor) else torch.full_like(best_s, surface), best_s
        )

    for k in range(kb):
        c, h = scene.box_center[:, k, None], scene.box_half[:, k, None]  # [W, 1, 3]
        cos, sin = scene.box_yaw[:, k, None].cos(), scene.box_yaw[:, k, None].sin()  # [W, 1]
        rel = o - c
        lo_x = cos * rel[..., 0] + sin * rel[..., 1]
        lo_y = -sin * rel[..., 0] + cos * rel[..., 1]
        ld_x = cos * d[..., 0] + sin * d[..., 1]
        ld_y = -sin * d[..., 0] + cos * d[..., 1]
        lo_ = torch.stack((lo_x, lo_y, rel[..., 2]), dim=-1)
        ld = _safe(torch.stack((ld_x, ld_y, d[..., 2]), dim=-1))
        t1 = (-h - lo_) / ld
        t2 = (h - lo_) / ld
        t_near, ax = torch.minimum(t1, t2).max(dim=-1)
        t_far = torch.maximum(t1, t2).min(dim=-1).values
        # Entering towards -axis goes through the hi plane (side 1).
        side = (ld.gather(-1, ax[..., None])[..., 0] < 0).long()
        keep(t_near, 6 + 6 * k + ax * 2 + side, scene.box_active[:, k, None] & (t_near <= t_far))

    base = 6 + 6 * kb
    for j in range(ks):
        oc = o - scene.sphere_center[:, j, None]
        a = (d * d).sum(-1)
        b = (oc * d).sum(-1)
        cc = (oc * oc).sum(-1) - scene.sphere_radius[:, j, None] ** 2
        disc = b * b - a * cc
        t = (-b - disc.clamp_min(0.0).sqrt()) / a
        keep(t, base + j, scene.sphere_active[:, j, None] & (disc > 0))

    base += ks
    for m in range(kc):
        c = scene.cylinder_center[:, m, None]  # [W, 1, 3]
        r = scene.cylinder_radius[:, m, None]
        hh = scene.cylinder_half_height[:, m, None]
        active = scene.cylinder_active[:, m, None]
        ox, oy = o[..., 0] - c[..., 0], o[..., 1] - c[..., 1]
        a = d[..., 0] ** 2 + d[..., 1] ** 2
        b = ox * d[..., 0] + oy * d[..., 1]
        cc = ox * ox + oy * oy - r * r
        disc = b * b - a * cc
        t = (-b - disc.clamp_min(0.0).sqrt()) / a.clamp_min(_TINY)
        z = o[..., 2] + t * d[..., 2] - c[..., 2]
        keep(t, base + 2 * m, active & (disc > 0) & (z.abs() <= hh))
        for sign in (1.0, -1.0):  # top and bottom caps
            t = (c[..., 2] + sign * hh - o[..., 2]) * inv[..., 2]
            px, py = ox + t * d[..., 0], oy + t * d[..., 1]
            keep(t, base + 2 * m + 1, active & (px * px + py * py <= r * r))
    return Hits(best_t, best_s)


def surface_frame(scene: SceneBatch, surface: Tensor, points: Tensor) -> tuple[Tensor, Tensor]:
    """World normals and object-local coordinates of hit points.

    Args:
        surface: [W, R] surface ids; points: [W, R, 3] world hit points.

    Returns:
        normals [W, R, 3] unit, facing free space; local [W, R, 3] coordinates in the object's
        frame (yaw removed), which textures are functions of.
    """

    def gather(table: Tensor) -> Tensor:
        if table.dim() == 2:
            return table.gather(1, surface)
        return table.gather(1, surface[..., None].expand(-1, -1, table.shape[-1]))

    centre, cos, sin = gather(scene.surf_center), gather(scene.surf_cos), gather(scene.surf_sin)
    kind = gather(scene.surf_kind)
    rel = points - centre
    local = torch.stack(
        (cos * rel[..., 0] + sin * rel[..., 1], -sin * rel[..., 0] + cos * rel[..., 1], rel[..., 2]), dim=-1
    )
    n_local = gather(scene.surf_normal)
    n_local = torch.where((kind == SPHERE)[..., None], local, n_local)
    side = torch.stack((local[..., 0], local[..., 1], torch.zeros_like(local[..., 2])), dim=-1)
    n_local = torch.where((kind == CYLINDER_SIDE)[..., None], side, n_local)
    cap = torch.stack((torch.zeros_like(local[..., 0]),) * 2 + (torch.sign(local[..., 2]),), dim=-1)
    n_local = torch.where((kind == CYLINDER_CAP)[..., None], cap, n_local)
    # Back to world axes (inverse yaw rotation).
    normals = torch.stack(
        (
            cos * n_local[..., 0] - sin * n_local[..., 1],
            sin * n_local[..., 0] + cos * n_local[..., 1],
            n_local[..., 2],
        ),
        dim=-1,
    )
    return torch.nn.functional.normalize(normals, dim=-1), local
