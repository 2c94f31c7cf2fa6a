"""Building blocks of the iterative point tracker (:mod:`vggt_ros.model.tracker`).

The tracker refines point tracks with a transformer that alternates attention along time (each
track over its frames) with attention across tracks routed through a small set of learned
"virtual" tracks. Attribute names that hold parameters (``norm1``, ``norm_context``, ``attn``,
``cross_attn``, ``in_proj_weight``, ``out_proj``, ``mlp.fc1``, ``virual_tracks`` ...) are fixed by
the official VGGT checkpoints (``track_head.tracker.updateformer.*``) and must not change.

Attention is ``nn.MultiheadAttention`` (its packed ``in_proj_weight`` layout is what the checkpoints
store) called exactly as upstream does, default ``need_weights`` included: that flag selects a
different kernel whose rounding differs in the last bits, and the tracker's refinement loop
amplifies last-bit differences by orders of magnitude per iteration (see the tracker's module
docstring), so matching the upstream kernels is what keeps us at float32 parity.

Also here: the sampling helpers and the fixed sinusoidal embeddings the tracker feeds to the
transformer. Their exact conventions (pixel-centre coordinates, padding, frequency layouts) are
part of the function the released weights were trained for.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vggt_ros.model.layers import Mlp

# ----------------------------------------------------------------------------------------------
# Sampling and fixed embeddings
# ----------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def _pixels_to_unit(width: int, height: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Scale [2] from pixels (x, y) to grid_sample's [-1, 1] span, -1/+1 at the outer pixel
    centres (align_corners=True). A map one pixel wide keeps the scale finite; grid_sample then
    reads its single column everywhere.

    Cached: building it is a host-to-device copy, which a CUDA graph capture of the tracker
    cannot contain.
    """
    return torch.tensor([2.0 / max(width - 1, 1), 2.0 / max(height - 1, 1)], dtype=dtype, device=device)


def sample_at_pixels(maps: Tensor, points: Tensor, padding_mode: str = "border") -> Tensor:
    """Bilinearly sample ``maps`` at pixel coordinates.

    Args:
        maps: [M, C, H, W].
        points: [M, P, Q, 2] (x, y) in pixels of ``maps``; integer values hit pixel centres, so
            ``(0, 0)`` is the centre of the top-left pixel and ``(W - 1, H - 1)`` that of the
            bottom-right one.
        padding_mode: what lies outside the map, ``"border"`` (nearest edge value) or ``"zeros"``.

    Returns:
        [M, C, P, Q].

    The sampling positions are detached: the tracker never backpropagates through *where* it
    samples, only through what it samples.
    """
    height, width = maps.shape[-2:]
    grid = points.detach().to(maps.dtype) * _pixels_to_unit(width, height, maps.dtype, maps.device) - 1.0
    return F.grid_sample(maps, grid, mode="bilinear", padding_mode=padding_mode, align_corners=True)


def sample_point_features(maps: Tensor, points: Tensor) -> Tensor:
    """Features of ``maps`` [M, C, H, W] at ``points`` [M, P, 2] (x, y pixels): [M, P, C].

    Points outside the map take the value of the nearest border pixel.
    """
    sampled = sample_at_pixels(maps, points.unsqueeze(2), padding_mode="border")  # [M, C, P, 1]
    return sampled.squeeze(-1).transpose(1, 2)


def sincos_grid_embedding(dim: int, height: int, width: int) -> Tensor:
    """Fixed 2D sin/cos embedding of every pixel of an ``height`` x ``width`` grid: [dim, H, W].

    Channel layout (``q = dim / 4`` frequencies ``w_k = 10000 ** (-k / q)``, ``k = 0 .. q-1``):
    ``[sin(x w), cos(x w), sin(y w), cos(y w)]`` where x is the column and y the row index. Computed
    in float64 and returned as float32 (the values the released weights were trained with).
    """
    if dim % 4:
        raise ValueError(f"grid embedding width {dim} must be divisible by 4")
    quarter = dim // 4
    freqs = 1.0 / 10000.0 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    cols = torch.arange(width, dtype=torch.float64)
    rows = torch.arange(height, dtype=torch.float64)
    col_angles = cols[:, None] * freqs  # [W, q]
    row_angles = rows[:, None] * freqs  # [H, q]
    col_part = torch.cat([col_angles.sin(), col_angles.cos()], dim=-1)  # [W, 2q]
    row_part = torch.cat([row_angles.sin(), row_angles.cos()], dim=-1)  # [H, 2q]
    table = torch.cat(
        [col_part[None, :, :].expand(height, -1, -1), row_part[:, None, :].expand(-1, width, -1)], dim=-1
    )  # [H, W, dim]
    return table.permute(2, 0, 1).float()


def displacement_embedding(offsets: Tensor, dim: int) -> Tensor:
    """Sin/cos embedding of 2D displacements: [..., 2] -> [..., 2 * dim].

    Each axis gets ``dim`` channels, interleaved ``sin(t f_0), cos(t f_0), sin(t f_1), ...`` with
    *linearly* spaced frequencies ``f_j = 2 j * 1000 / dim`` (``j = 0 .. dim/2 - 1``); the x
    block comes before the y block. Computed in float32.
    """
    if dim % 2:
        raise ValueError(f"displacement embedding width {dim} must be even")
    freqs = torch.arange(0, dim, 2, device=offsets.device, dtype=torch.float32) * (1000.0 / dim)
    angles = offsets.float().unsqueeze(-1) * freqs  # [..., 2, dim/2]
    # stack on a new last axis then flatten: sin and cos of one frequency end up side by side.
    waves = torch.stack([angles.sin(), angles.cos()], dim=-1)  # [..., 2, dim/2, 2]
    return waves.flatten(-3)


# ----------------------------------------------------------------------------------------------
# Transformer pieces
# ----------------------------------------------------------------------------------------------


class SelfAttentionBlock(nn.Module):
    """Pre-norm self-attention block: [M, L, D] -> [M, L, D].

    Unlike a textbook pre-norm block, the residual stream continues from the *normalised* input
    (``h = norm1(x); h = h + attn(h); h = h + mlp(norm2(h))``); the released weights expect this.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm1(x)
        h = h + self.attn(h, h, h)[0]
        return h + self.mlp(self.norm2(h))


class CrossAttentionBlock(nn.Module):
    """Cross-attention block: ``x`` [M, L, D] reads ``context`` [M, L', D] -> [M, L, D].

    Same residual convention as :class:`SelfAttentionBlock` (the stream continues from
    ``norm1(x)``); the context gets its own layer norm.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(dim)
        self.cross_attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        h = self.norm1(x)
        context = self.norm_context(context)
        h = h + self.cross_attn(h, context, context)[0]
        return h + self.mlp(self.norm2(h))


class TrackUpdateTransformer(nn.Module):
    """Predicts per-frame corrections for a set of tracks from their per-frame input tokens.

    Each of the ``depth`` layers first lets every track attend over its own frames (time
    attention), then exchanges information between tracks within each frame. Instead of full
    attention over all tracks, ``num_virtual`` learned virtual tracks (initialised identically in
    every frame) first gather from the real tracks, attend among themselves, and are then read
    back by the real tracks, which keeps the cost linear in the number of tracks.

    Input [B, N, S, in_dim] (batch, tracks, frames); output [B, N, S, out_dim].
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        out_dim: int,
        depth: int,
        num_heads: int,
        num_virtual: int,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        self.num_virtual = num_virtual
        self.input_norm = nn.LayerNorm(in_dim)
        self.input_transform = nn.Linear(in_dim, hidden_dim)
        # (sic) "virual": the checkpoint's spelling.
        self.virual_tracks = nn.Parameter(torch.randn(1, num_virtual, 1, hidden_dim))
        self.time_blocks = nn.ModuleList(
            [SelfAttentionBlock(hidden_dim, num_heads, mlp_ratio) for _ in range(depth)]
        )
        self.space_virtual_blocks = nn.ModuleList(
            [SelfAttentionBlock(hidden_dim, num_heads, mlp_ratio) for _ in range(depth)]
        )
        self.space_point2virtual_blocks = nn.ModuleList(
            [CrossAttentionBlock(hidden_dim, num_heads, mlp_ratio) for _ in range(depth)]
        )
        self.space_virtual2point_blocks = nn.ModuleList(
            [CrossAttentionBlock(hidden_dim, num_heads, mlp_ratio) for _ in range(depth)]
        )
        self.output_norm = nn.LayerNorm(hidden_dim)
        self.flow_head = nn.Linear(hidden_dim, out_dim)
        self._init_linears()

    def _init_linears(self) -> None:
        # Training-from-scratch initialisation; loaded checkpoints overwrite it. A tiny output
        # layer makes the first refinement steps near-identity moves.
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.trunc_normal_(self.flow_head.weight, std=0.001)

    def forward(self, tokens: Tensor) -> Tensor:
        """[B, N, S, in_dim] -> [B, N, S, out_dim]."""
        batch, num_tracks, frames, _ = tokens.shape
        x = self.input_transform(self.input_norm(tokens))
        skip = x
        hidden = x.shape[-1]
        virtual = self.virual_tracks.to(x.dtype).expand(batch, -1, frames, -1)
        x = torch.cat([x, virtual], dim=1)  # [B, N + V, S, D]
        total = num_tracks + self.num_virtual

        for time_block, gather, mix, scatter in zip(
            self.time_blocks,
            self.space_virtual2point_blocks,
            self.space_virtual_blocks,
            self.space_point2virtual_blocks,
        ):
            x = time_block(x.reshape(batch * total, frames, hidden)).reshape(batch, total, frames, hidden)
            # Across tracks, one frame at a time: [B * S, N + V, D].
            per_frame = x.transpose(1, 2).reshape(batch * frames, total, hidden)
            real, virt = per_frame[:, :num_tracks], per_frame[:, num_tracks:]
            virt = mix(gather(virt, real))
            real = scatter(real, virt)
            per_frame = torch.cat([real, virt], dim=1)
            x = per_frame.reshape(batch, frames, total, hidden).transpose(1, 2)

        x = x[:, :num_tracks] + skip
        return self.flow_head(self.output_norm(x))


def correlation_window_offsets(radius: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Offsets of the (2r+1)^2 correlation window, [(2r+1)^2, 2] as (dx, dy).

    Window cell ``a * (2r+1) + b`` is offset by ``dx = a - r``, ``dy = b - r``: the *slow* index
    walks along x. This ordering fixes which input of the correlation MLP sees which displacement,
    so it must match the released weights.
    """
    steps = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    dx, dy = torch.meshgrid(steps, steps, indexing="ij")
    return torch.stack([dx, dy], dim=-1).reshape(-1, 2)


__all__ = [
    "CrossAttentionBlock",
    "SelfAttentionBlock",
    "TrackUpdateTransformer",
    "correlation_window_offsets",
    "displacement_embedding",
    "sample_at_pixels",
    "sample_point_features",
    "sincos_grid_embedding",
]
