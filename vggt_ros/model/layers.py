"""Transformer building blocks shared by the encoder, the aggregator and the camera head.

Parameter names (``qkv``, ``proj``, ``norm1``, ``ls1.gamma``, ``mlp.fc1`` ...) are fixed by the
official VGGT checkpoints and must not change.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vggt_ros.model.rope import RopeTables, RotaryEmbedding2D

logger = logging.getLogger(__name__)


class SparseKeys(NamedTuple):
    """The keys every query of an approximate sparse attention call sees (inference only).

    ``index`` [K]: token positions (into the block's T tokens) whose keys and values are kept,
    the ``whole`` keys kept with all their neighbours first, then the sampled ones.
    ``sample_log_weight``: added to each sampled key's attention logit, ln(m) for a 1-in-m
    sample (the key stands for m keys of the full sequence); 0 adds nothing. With it the
    softmax gives each sampled region about the weight its m keys would have had together,
    instead of the weight of one key.
    """

    index: Tensor
    whole: int
    sample_log_weight: float = 0.0

    def select(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values [N, heads, T, hd] -> the kept ones [N, heads, K, hd]."""
        return k.index_select(2, self.index), v.index_select(2, self.index)

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Queries [N, heads, L, hd] over the kept keys and values [N, heads, K, hd] (``select``)
        -> [N, heads, L, hd]."""
        if not self.sample_log_weight:
            return F.scaled_dot_product_attention(q, k, v)
        dtype = attention_compute_dtype(q)
        if q.is_cuda and dtype in (torch.float16, torch.bfloat16):
            # Two attention calls (the whole keys, the sampled ones) merged through their
            # log-sum-exps: with a float mask the call takes a slower kernel (17.5 against
            # 11.2 ms for one global block of VGGT-1B at 100 frames on an H100, docs/benchmarks.md).
            # The private kernels below are not on autocast's lists: cast as autocast would.
            q, k, v = (x.to(dtype) for x in (q, k, v))
            return weighted_attention_in_parts(q, k, v, self.whole, self.sample_log_weight)
        mask = torch.zeros(k.shape[2], dtype=q.dtype, device=q.device)
        mask[self.whole :] = self.sample_log_weight
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask[None])


def attention_compute_dtype(q: Tensor) -> torch.dtype:
    """The dtype ``scaled_dot_product_attention(q, ...)`` computes in here: autocast's where it
    is on for q's device (under bf16 autocast the query/key norms hand attention float32 tensors,
    which autocast then casts), else q's own."""
    device_type = q.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return q.dtype


# CUDA device index -> whether cuDNN attention with a log-sum-exp ran there (False after the
# first refusal: flash from then on).
_CUDNN_WITH_LSE: dict[int | None, bool] = {}


def _attention_with_lse(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """Plain attention [N, heads, L, hd] and its log-sum-exp [N, heads, L] (float32), from the
    fastest kernel that returns it: cuDNN on CUDA where it runs (11.2 ms against flash's 15.0
    for one VGGT-1B global block at 100 frames on an H100), else flash; the CPU flash kernel."""
    if not q.is_cuda:
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v)[:2]
        return out, lse
    if _CUDNN_WITH_LSE.get(q.device.index, True):
        try:
            # One memory layout for all three ([N, heads, L, hd] contiguous, as the selected keys
            # are): the layout the 11.2 ms above was measured with.
            q_, k_, v_ = (x.contiguous() for x in (q, k, v))
            out, lse = torch.ops.aten._scaled_dot_product_cudnn_attention(q_, k_, v_, None, True)[:2]
            return out, lse.reshape(q.shape[:-1])
        except RuntimeError as exc:  # no cuDNN attention for this GPU, dtype or shape: flash
            _CUDNN_WITH_LSE[q.device.index] = False
            logger.warning("weighted sparse attention: cuDNN unavailable (%s); flash attention instead", exc)
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v)[:2]
    return out, lse


def weighted_attention_in_parts(q: Tensor, k: Tensor, v: Tensor, split: int, log_weight: float) -> Tensor:
    """Attention of q [N, heads, L, hd] over k, v [N, heads, K, hd] where keys ``split:`` have
    ``log_weight`` added to their logits, computed as two plain attention calls (keys ``:split``
    and ``split:``) whose outputs are mixed by their softmax masses (log-sum-exps).

    Equals ``scaled_dot_product_attention(q, k, v, attn_mask=bias)`` with bias 0 on the first
    ``split`` keys and ``log_weight`` on the rest (up to rounding).
    """
    out_a, lse_a = _attention_with_lse(q, k[:, :, :split], v[:, :, :split])
    out_b, lse_b = _attention_with_lse(q, k[:, :, split:], v[:, :, split:])
    lse_b = lse_b + log_weight
    top = torch.maximum(lse_a, lse_b)
    w_a, w_b = torch.exp(lse_a - top), torch.exp(lse_b - top)
    total = w_a + w_b
    # In place on the outputs, the weights cast to their dtype (two passes, no float32 copy).
    w_a, w_b = (w_a / total).to(out_a.dtype)[..., None], (w_b / total).to(out_a.dtype)[..., None]
    return out_a.mul_(w_a).addcmul_(out_b, w_b)


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

    # Inference only: the per-token steps (norms, projections, MLP) run on at most this many
    # tokens at a time, so their float32 and 4x-wide intermediates never exist for a whole long
    # window at once; attention itself still sees all tokens. None: all tokens in one chunk.
    # Set by the engine.
    token_chunk: int | None = None
    # Inference only, chunked calls only: write the output over the input tensor instead of a
    # new one (saves one [N, T, dim] float32 buffer). Only for callers that never read a block's
    # input after the call (the aggregator and the encoder). Set by the engine.
    inplace_residual: bool = False

    def forward(
        self, x: Tensor, rope_tables: RopeTables | None = None, sparse_keys: SparseKeys | None = None
    ) -> Tensor:
        """``x`` [N, T, dim] -> [N, T, dim].

        ``sparse_keys`` (inference only): the [K] token positions whose keys and values every
        query attends to instead of all T, and their logit weights (approximate sparse attention
        for long windows; see ``Aggregator.global_key_stride``). None: exact attention.
        """
        if torch.is_grad_enabled():
            if sparse_keys is not None:
                raise NotImplementedError("sparse attention (sparse_keys) is an inference option")
            x = x + self.ls1(self.attn(self.norm1(x), rope_tables))
            return x + self.ls2(self.mlp(self.norm2(x)))
        # Inference: the same function through project_rows / finish_rows (which the engine may
        # compile), in token chunks when the call is larger than token_chunk.
        n, t, dim = x.shape
        if self.token_chunk and n * t > self.token_chunk:
            return self._infer_in_token_chunks(x, rope_tables, self.token_chunk, sparse_keys)
        tables = None if rope_tables is None else (rope_tables[0][:, None], rope_tables[1][:, None])
        q, k, v = (y.transpose(1, 2) for y in self.project_rows(x, tables))  # [N, heads, T, head_dim]
        if sparse_keys is None:
            attended = F.scaled_dot_product_attention(q, k, v)
        else:
            attended = sparse_keys.attend(q, *sparse_keys.select(k, v))
        attended = attended.transpose(1, 2).reshape(n, t, dim)
        return self.finish_rows(x, attended)

    def _infer_in_token_chunks(
        self, x: Tensor, rope_tables: RopeTables | None, chunk: int, sparse_keys: SparseKeys | None = None
    ) -> Tensor:
        """Tokens handled as ``N * T`` rows, the per-token work ``chunk`` rows at a time.

        First the keys and values of all rows (attention needs them all); then, chunk by chunk,
        the chunk's queries, their attention over all keys, and both residual steps. Peak memory
        holds the key/value buffer and one chunk's intermediates: no full-size query, attention
        output or MLP-wide buffer. Each row's output depends only on its own input row and the
        keys/values, so with ``inplace_residual`` a chunk's output can overwrite its input rows.

        With several sequences (``N > 1``) a chunk holds whole sequences.
        """
        n, t, dim = x.shape
        attn = self.attn
        rows = x.reshape(n * t, dim)
        if n > 1:
            chunk = max(chunk // t, 1) * t
        spans = [(r0, min(r0 + chunk, n * t)) for r0 in range(0, n * t, chunk)]

        def chunk_tables(r0: int, r1: int) -> RopeTables | None:
            if rope_tables is None:
                return None
            token = torch.arange(r0, r1, device=x.device) % t  # position of each row in its sequence
            return rope_tables[0][token][:, None], rope_tables[1][token][:, None]

        tables = [chunk_tables(r0, r1) for r0, r1 in spans]  # both passes below read them

        # Keys and values, each contiguous [N*T, heads, head_dim] (the [N, T, heads, head_dim]
        # layout fused attention kernels read without a copy).
        kv: Tensor | None = None
        for (r0, r1), chunk_rope in zip(spans, tables, strict=True):
            k, v = self.project_kv_rows(rows[r0:r1], chunk_rope)
            if kv is None:
                kv = torch.empty(2, n * t, attn.num_heads, attn.head_dim, dtype=v.dtype, device=x.device)
            kv[0, r0:r1], kv[1, r0:r1] = k, v
        assert kv is not None
        keys, values = kv.view(2, n, t, attn.num_heads, attn.head_dim).transpose(2, 3).unbind(0)
        if sparse_keys is not None:  # sparse attention: every query sees the same key subset
            keys, values = sparse_keys.select(keys, values)

        out = rows if self.inplace_residual else torch.empty_like(rows)
        for (r0, r1), chunk_rope in zip(spans, tables, strict=True):
            q = self.project_q_rows(rows[r0:r1], chunk_rope)  # [rows, heads, head_dim]
            if n == 1:
                q, k, v = q[None].transpose(1, 2), keys, values
            else:  # whole sequences r0 // t .. r1 // t
                q = q.view(-1, t, attn.num_heads, attn.head_dim).transpose(1, 2)
                k, v = keys[r0 // t : r1 // t], values[r0 // t : r1 // t]
            if sparse_keys is None:
                attended = F.scaled_dot_product_attention(q, k, v)
            else:
                attended = sparse_keys.attend(q, k, v)
            attended = attended.transpose(1, 2).reshape(r1 - r0, dim)
            out[r0:r1] = self.finish_rows(rows[r0:r1], attended)
        return out.view(n, t, dim)

    def project_rows(self, rows: Tensor, rope_tables: RopeTables | None) -> tuple[Tensor, Tensor, Tensor]:
        """Tokens [..., dim] -> q, k, v [..., heads, head_dim] (normed and rotated where enabled);
        ``rope_tables`` (cos, sin) broadcast as [..., 1, head_dim]."""
        q, k, v = self._projected(rows, first=0, count=3).unbind(-3)
        return (
            self._normed_rotated(q, self.attn.q_norm, rope_tables),
            self._normed_rotated(k, self.attn.k_norm, rope_tables),
            v,
        )

    def project_q_rows(self, rows: Tensor, rope_tables: RopeTables | None) -> Tensor:
        """The query part of :meth:`project_rows`: [..., dim] -> q [..., heads, head_dim]."""
        q = self._projected(rows, first=0, count=1).squeeze(-3)
        return self._normed_rotated(q, self.attn.q_norm, rope_tables)

    def project_kv_rows(self, rows: Tensor, rope_tables: RopeTables | None) -> tuple[Tensor, Tensor]:
        """The key/value part of :meth:`project_rows`: [..., dim] -> k, v [..., heads, head_dim]."""
        k, v = self._projected(rows, first=1, count=2).unbind(-3)
        return self._normed_rotated(k, self.attn.k_norm, rope_tables), v

    def _projected(self, rows: Tensor, first: int, count: int) -> Tensor:
        """Normed rows through ``count`` parts of the q/k/v projection from part ``first``
        (0 q, 1 k, 2 v): [..., count, heads, head_dim]."""
        attn = self.attn
        lo, hi = first * rows.shape[-1], (first + count) * rows.shape[-1]
        if hasattr(attn.qkv, "rows"):  # a quantized projection computes a slice of its outputs
            out = attn.qkv.rows(self.norm1(rows), lo, hi)
        else:
            bias = None if attn.qkv.bias is None else attn.qkv.bias[lo:hi]
            out = F.linear(self.norm1(rows), attn.qkv.weight[lo:hi], bias)
        return out.view(*rows.shape[:-1], count, attn.num_heads, attn.head_dim)

    def _normed_rotated(self, x: Tensor, norm: nn.Module, rope_tables: RopeTables | None) -> Tensor:
        """Query/key norm, then RoPE where the block uses it."""
        x = norm(x)
        if self.attn.rope is not None and rope_tables is not None:
            x = self.attn.rope(x, rope_tables)
        return x

    def finish_rows(self, rows: Tensor, attended: Tensor) -> Tensor:
        """Both residual steps for tokens [..., dim] given their attention output [..., dim]."""
        rows = rows + self.ls1(self.attn.proj(attended))
        return rows + self.ls2(self.mlp(self.norm2(rows)))
