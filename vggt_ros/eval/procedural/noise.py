"""Integer hashing and value noise on tensors: textures and sensor noise that are pure functions
of their inputs (no random state), so a window renders the same on any device, batch size or
number of training processes.

All arithmetic is int64 holding 32-bit values (masked after every multiply, so nothing overflows)
and float32 for the interpolation.
"""

from __future__ import annotations

import torch
from torch import Tensor

_MASK = 0xFFFFFFFF
# Odd 31-bit multipliers (products stay below 2**63 before masking).
_PRIMES = (0x27D4EB2D, 0x165667B1, 0x61C88647, 0x7FEB352D, 0x4D2A4E6B)


def hash32(*keys: Tensor) -> Tensor:
    """Mix integer tensors (broadcast together) into uint32 values held in int64, in [0, 2**32).

    Each key is folded in with its own multiplier, then the state goes through a
    xor-shift-multiply finaliser, so nearby keys give unrelated outputs.
    """
    state = torch.zeros((), dtype=torch.int64, device=keys[0].device)
    for i, key in enumerate(keys):
        state = (state ^ ((key.to(torch.int64) & _MASK) * _PRIMES[i % len(_PRIMES)])) & _MASK
        state = (state ^ (state >> 15)) & _MASK
    state = (state * 0x2C1B3C6D) & _MASK
    state = state ^ (state >> 12)
    state = (state * 0x297A2D39) & _MASK
    return state ^ (state >> 15)


def unit_float(h: Tensor, bits: int = 0) -> Tensor:
    """10 bits of a hash (starting at ``bits``) as float32 in [0, 1]."""
    return ((h >> bits) & 0x3FF).to(torch.float32) * (1.0 / 1023.0)


def value_noise3(points: Tensor, cell: Tensor, salt: Tensor, channels: int = 1) -> list[Tensor]:
    """Smooth 3D value noise in [0, 1]: hashed lattice values, smoothstep-trilinear in between.

    Args:
        points: [..., 3] float32 coordinates (metres).
        cell: [...] lattice spacing (metres), broadcast against ``points[..., 0]``.
        salt: [...] int64 per-surface seed.
        channels: up to 3 independent channels, each from 10 bits of the same lattice hash.

    Returns:
        ``channels`` tensors of shape [...].
    """
    g = points / cell[..., None]
    base = torch.floor(g)
    frac = g - base
    w = frac * frac * (3.0 - 2.0 * frac)  # smoothstep weights [..., 3]
    ib = base.to(torch.int64)
    out = [torch.zeros_like(frac[..., 0]) for _ in range(channels)]
    for dx in (0, 1):
        wx = w[..., 0] if dx else 1.0 - w[..., 0]
        for dy in (0, 1):
            wy = w[..., 1] if dy else 1.0 - w[..., 1]
            for dz in (0, 1):
                wz = w[..., 2] if dz else 1.0 - w[..., 2]
                h = hash32(ib[..., 0] + dx, ib[..., 1] + dy, ib[..., 2] + dz, salt)
                weight = wx * wy * wz
                for c in range(channels):
                    out[c] = out[c] + weight * unit_float(h, 10 * c)
    return out
