"""Transformer building blocks shared by the encoder, the aggregator and the camera head.

Parameter names (``qkv``, ``proj``, ``norm1``, ``ls1.gamma``, ``mlp.fc1`` ...) are fixed by the
official VGGT checkpoints and must not change.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vggt_ros.model.rope import RopeTables, RotaryEmbedding2D


class Mlp(nn.Module):
    """Two-layer perceptron with GELU: ``fc2(gelu(fc1(x)))``. Shapes ``[..., in] -> [..., out]``."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int | None = None) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, out_features or in_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LayerScale(nn.Module):
    """Learned per-channel scale applied to a residual branch (``x * gamma``)."""

    def __init__(self, dim: int, init_value: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class Attention(nn.Module):
    """Multi-head self-attention with optional QK layer norm and 2D rotary position embedding.

    Uses ``F.scaled_dot_product_attention`` so PyTorch picks the flash / memory-efficient kernel
    where the device has one.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qk_norm: bool = False,
        rope: RotaryEmbedding2D | None = None,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        # Both norms exist only when enabled so the state dict matches the checkpoint layout.
        self.q_norm: nn.Module = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm: nn.Module = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)
        self.rope = rope

    def forward(self, x: Tensor, rope_tables: RopeTables | None = None) -> Tensor:
        """``x`` [N, T, dim]; ``rope_tables`` (cos, sin) [T, head_dim] when the block uses RoPE."""
        n, t, dim = x.shape
        qkv = self.qkv(x).view(n, t, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each [N, heads, T, head_dim]
        q = self.q_norm(q)
        k = self.k_norm(k)
        if self.rope is not None and rope_tables is not None:
            q = self.rope(q, rope_tables)
            k = self.rope(k, rope_tables)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(n, t, dim))


class TransformerBlock(nn.Module):
    """Pre-norm transformer block: ``x + ls1(attn(norm1(x)))`` then ``x + ls2(mlp(norm2(x)))``.

    ``layer_scale`` of 0 / None removes the LayerScale modules (none of VGGT's blocks do that,
    but the DINOv2 family allows it).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        layer_scale: float | None = 1.0,
        norm_eps: float = 1e-5,
        qk_norm: bool = False,
        rope: RotaryEmbedding2D | None = None,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qk_norm=qk_norm, rope=rope)
        self.ls1: nn.Module = LayerScale(dim, layer_scale) if layer_scale else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2: nn.Module = LayerScale(dim, layer_scale) if layer_scale else nn.Identity()

    def forward(self, x: Tensor, rope_tables: RopeTables | None = None) -> Tensor:
        x = x + self.ls1(self.attn(self.norm1(x), rope_tables))
        return x + self.ls2(self.mlp(self.norm2(x)))
