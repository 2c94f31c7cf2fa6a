"""DINOv2-style ViT with register tokens: turns each frame into normalized patch tokens.

This is ``aggregator.patch_embed`` in the official checkpoints (ViT-L/14 with 4 registers for
VGGT-1B). Only inference is supported: no masking, no stochastic depth.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from vggt_ros.model.config import EncoderConfig
from vggt_ros.model.layers import TransformerBlock


def sincos_position_table(grid: int, dim: int, temperature: float = 10000.0) -> Tensor:
    """Fixed 2D sine-cosine position table (as MAE initialises its ViT): [grid * grid, dim].

    Row-major over a ``grid x grid`` patch grid; the first half of the channels encodes the
    row, the second half the column, each as ``dim / 4`` sines then ``dim / 4`` cosines of
    geometrically spaced frequencies. Every row has norm ``sqrt(dim / 2)``, comparable to a
    freshly initialised patch projection's output, so position stays readable in the tokens.
    """
    if dim % 4:
        raise ValueError(f"a 2D sine-cosine table needs a width divisible by 4, got {dim}")
    quarter = dim // 4
    omega = 1.0 / temperature ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    rows, cols = torch.meshgrid(
        torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64), indexing="ij"
    )
    parts = []
    for coordinate in (rows.reshape(-1, 1), cols.reshape(-1, 1)):
        angle = coordinate * omega
        parts += [angle.sin(), angle.cos()]
    return torch.cat(parts, dim=1).float()


class PatchProjection(nn.Module):
    """Non-overlapping ``patch x patch`` convolution: [N, 3, H, W] -> [N, H/p * W/p, dim]."""

    def __init__(self, patch_size: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: Tensor) -> Tensor:
        return self.proj(images).flatten(2).transpose(1, 2)


class PatchEncoder(nn.Module):
    """DINOv2 encoder. Input normalized images [N, 3, H, W]; output patch tokens [N, P, dim].

    ``P = (H / patch) * (W / patch)`` in row-major order. The class and register tokens are
    used inside the encoder and dropped from the output, as VGGT does.
    """

    # Training only: recompute each block's activations in the backward pass instead of keeping
    # them (less memory, about a third more compute). Set by the trainer.
    gradient_checkpointing: bool = False

    def __init__(self, cfg: EncoderConfig, patch_size: int) -> None:
        super().__init__()
        dim = cfg.embed_dim
        self.patch_size = patch_size
        self.pos_embed_grid = cfg.pos_embed_grid
        self.num_register_tokens = cfg.num_register_tokens
        self.patch_embed = PatchProjection(patch_size, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + cfg.pos_embed_grid**2, dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, cfg.num_register_tokens, dim))
        # Only used for masked training; kept so official checkpoints load with strict=True.
        self.mask_token = nn.Parameter(torch.zeros(1, dim))
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, cfg.num_heads, cfg.mlp_ratio, layer_scale=cfg.init_values, norm_eps=1e-6)
            for _ in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        nn.init.normal_(self.register_tokens, std=1e-6)

    @torch.no_grad()
    def init_sincos_positions(self) -> None:
        """Overwrite the learned position table with :func:`sincos_position_table` (training from
        scratch; the table stays learnable).

        Why: the default ``trunc_normal(0.02)`` table is about 5 % of a patch token's norm, and
        a small model trained from scratch on our data never grew it: its tokens carry no
        readable position (a linear probe of the patch row and column from any layer of
        ``vggt-compact-v1`` scores R^2 < 0), so a patch matched across frames tells the trunk
        nothing about *where* it moved, which is what relative pose needs.
        """
        table = sincos_position_table(self.pos_embed_grid, self.pos_embed.shape[-1])
        self.pos_embed[0, 1:].copy_(table.to(self.pos_embed.dtype))
        self.pos_embed[0, :1].zero_()

    def position_embedding(self, grid_hw: tuple[int, int]) -> Tensor:
        """Learned position table resampled to a ``gh x gw`` patch grid: [1, 1 + gh * gw, dim].

        The table is learned on a square grid; other grids get a bicubic, antialiased
        resampling computed in float32 (the reference behaviour), except the native square
        grid which is used as stored.
        """
        gh, gw = grid_hw
        table = self.pos_embed
        if gh == gw == self.pos_embed_grid:
            return table
        g, dim = self.pos_embed_grid, table.shape[-1]
        patch_table = table[:, 1:].float().reshape(1, g, g, dim).permute(0, 3, 1, 2)
        patch_table = F.interpolate(patch_table, size=(gh, gw), mode="bicubic", antialias=True)
        patch_table = patch_table.permute(0, 2, 3, 1).reshape(1, gh * gw, dim)
        return torch.cat((table[:, :1].float(), patch_table), dim=1).to(table.dtype)

    def forward(self, images: Tensor) -> Tensor:
        n, _, h, w = images.shape
        grid_hw = (h // self.patch_size, w // self.patch_size)
        x = self.patch_embed(images)
        x = torch.cat((self.cls_token.expand(n, -1, -1), x), dim=1)
        x = x + self.position_embedding(grid_hw).to(x.dtype)
        # Registers go between the class token and the patches and carry no position.
        x = torch.cat((x[:, :1], self.register_tokens.expand(n, -1, -1), x[:, 1:]), dim=1)
        recompute = self.gradient_checkpointing and torch.is_grad_enabled()
        for block in self.blocks:
            x = checkpoint(block, x, use_reentrant=False) if recompute else block(x)
        return self.norm(x)[:, 1 + self.num_register_tokens :]
