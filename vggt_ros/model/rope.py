"""2D rotary position embedding (RoPE) for patch tokens.

Each attention head of width ``D`` is split in two halves: the first half is rotated by the
token's patch row (y), the second by its patch column (x). Within a half of width ``h`` the
features pair up as ``(i, i + h/2)`` and rotate by ``angle = position * base**(-2i/h)``.

Patch positions are ``(row + 1, col + 1)``; the special tokens (camera, registers) sit at
position 0, which is the identity rotation, so they carry no position.

The cos/sin tables depend only on the patch grid, so they are built once per grid shape,
device and dtype and cached.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

RopeTables = tuple[Tensor, Tensor]
"""(cos, sin), each [T, head_dim]: per-token rotation factors for one frame's tokens."""


class RotaryEmbedding2D(nn.Module):
    """Applies 2D RoPE given precomputed per-token tables (see :meth:`tables`)."""

    def __init__(self, head_dim: int, base_frequency: float = 100.0) -> None:
        super().__init__()
        if head_dim % 4:
            raise ValueError(f"2D RoPE needs a head dimension divisible by 4, got {head_dim}")
        self.head_dim = head_dim
        self.base_frequency = base_frequency
        self._cache: dict[tuple, RopeTables] = {}

    def _axis_tables(self, positions: Tensor) -> RopeTables:
        """cos/sin [T, head_dim/2] for one axis from integer positions [T]."""
        half = self.head_dim // 2
        exponents = torch.arange(0, half, 2, device=positions.device, dtype=torch.float32) / half
        inv_freq = 1.0 / (self.base_frequency**exponents)  # [half/2]
        angles = positions.to(torch.float32)[:, None] * inv_freq[None, :]
        angles = torch.cat((angles, angles), dim=-1)  # [T, half]: pairs (i, i + half/2) share an angle
        return angles.cos(), angles.sin()

    def tables(
        self, grid_hw: tuple[int, int], num_special: int, device: torch.device, dtype: torch.dtype
    ) -> RopeTables:
        """Tables for one frame: ``num_special`` identity tokens then the row-major patch grid.

        Returns (cos, sin), each [num_special + gh * gw, head_dim], in ``dtype``.
        """
        key = (tuple(grid_hw), num_special, device, dtype)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        gh, gw = grid_hw
        rows = torch.arange(gh, device=device).repeat_interleave(gw) + 1
        cols = torch.arange(gw, device=device).repeat(gh) + 1
        special = torch.zeros(num_special, dtype=rows.dtype, device=device)
        cos_y, sin_y = self._axis_tables(torch.cat((special, rows)))
        cos_x, sin_x = self._axis_tables(torch.cat((special, cols)))
        # Cast after the float32 trigonometry, as the reference does for reduced precision.
        tables = (torch.cat((cos_y, cos_x), -1).to(dtype), torch.cat((sin_y, sin_x), -1).to(dtype))
        self._cache[key] = tables
        return tables

    @staticmethod
    def _rotate_pairs(x: Tensor) -> Tensor:
        """Per axis half ``[a, b] -> [-b, a]`` (quarters of the head dimension)."""
        q1, q2, q3, q4 = x.chunk(4, dim=-1)
        return torch.cat((-q2, q1, -q4, q3), dim=-1)

    def forward(self, x: Tensor, tables: RopeTables) -> Tensor:
        """Rotate ``x`` [N, heads, T, head_dim] with tables [T, head_dim] (broadcast over N, heads)."""
        cos, sin = tables
        return x * cos + self._rotate_pairs(x) * sin
