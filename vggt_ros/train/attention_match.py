"""Supervising the global attention to find correspondences (``--loss attention_match=W``).

The diagnosis in docs/training.md ("Why poses are not learned") found the trunk's global
attention uniform: a frame-k patch gives its true frame-0 match no more weight than any other
patch, so nothing relates the views and the camera head has nothing to read. This loss asks the
attention itself to find the match: for each track point visible in frame k, the query of the
frame-k patch it lands in, against the keys of frame 0's patches, with the patch holding the
track's query point as the target. The attention is recomputed for those few queries from the
block's own normalised input, projections, QK norms and RoPE, exactly as the block computes it
(restricted to frame 0's patch keys), so the loss acts on what the block attends to.

:class:`GlobalAttentionTap` records each global block's attention input during a training
forward; :func:`attention_match_loss` turns the records into the loss.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vggt_ros.train.targets import Targets, inside_grid, patch_cells


class GlobalAttentionTap:
    """Forward pre-hooks on the global blocks' attention that keep (module, x [B, S*T, dim],
    rope tables) of the current forward, for :func:`attention_match_loss`. Needs the plain
    training forward (no gradient checkpointing: a recomputed block would be recorded twice)."""

    def __init__(self, global_blocks: nn.ModuleList) -> None:
        self.records: list[tuple[nn.Module, Tensor, Any]] = []
        self._handles = [block.attn.register_forward_pre_hook(self._record) for block in global_blocks]

    def _record(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        if torch.is_grad_enabled():
            self.records.append((module, args[0], args[1] if len(args) > 1 else None))

    def take(self) -> list[tuple[nn.Module, Tensor, Any]]:
        """The records of the forward just run (and forget them)."""
        records, self.records = self.records, []
        return records

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def frame0_attention(
    attn: nn.Module, x: Tensor, tables: Any, q_index: Tensor, patch_start: int, patches: int
) -> Tensor:
    """Head-averaged attention of the tokens ``q_index`` [B, M] over frame 0's patch tokens,
    renormalised over those keys: [B, M, patches]. Computed as ``attn`` computes it: the same
    q/k projections, QK norms, RoPE (``tables`` (cos, sin) [L, head_dim]) and 1/sqrt(head_dim)
    scale, on ``x`` [B, L, dim], the block's normalised input."""
    b, dim = x.shape[0], x.shape[-1]
    heads, hd = attn.num_heads, attn.head_dim
    weight, bias = attn.qkv.weight, attn.qkv.bias
    keys = slice(patch_start, patch_start + patches)
    x_q = x.gather(1, q_index[..., None].expand(-1, -1, dim))  # [B, M, dim]
    q = F.linear(x_q, weight[:dim], None if bias is None else bias[:dim])
    k = F.linear(x[:, keys], weight[dim : 2 * dim], None if bias is None else bias[dim : 2 * dim])
    q = attn.q_norm(q.view(b, -1, heads, hd).transpose(1, 2))  # [B, heads, M, hd]
    k = attn.k_norm(k.view(b, patches, heads, hd).transpose(1, 2))  # [B, heads, P, hd]
    if attn.rope is not None and tables is not None:
        cos, sin = tables
        q = attn.rope(q, (cos[q_index][:, None], sin[q_index][:, None]))
        k = attn.rope(k, (cos[keys], sin[keys]))
    logits = (q.float() @ k.float().transpose(-1, -2)) * hd**-0.5  # [B, heads, M, P]
    return logits.softmax(dim=-1).mean(dim=1)


def attention_match_loss(
    records: list[tuple[nn.Module, Tensor, Any]], patch_start: int, patch_size: int, targets: Targets
) -> dict[str, Tensor]:
    """Cross-entropy of the head-averaged attention of frame-k track patches over frame 0's
    patches, the target being the query point's patch; averaged over the recorded blocks.

    Args:
        records: from :meth:`GlobalAttentionTap.take`: (attention module, its input
            [B, S * T, dim], rope tables (cos, sin) [S * T, head_dim] or None).
        targets: with ``query_points`` [B, N, 2], ``tracks`` [B, S, N, 2], ``track_visible``.

    Returns:
        {"attention_match": [B] loss, "attention_match_p": [B] mean attention the true match
        gets among frame 0's patches (uniform: one over the patches)}, per window.
    """
    b, s = targets.images.shape[:2]
    h, w = targets.images.shape[-2:]
    gh, gw = h // patch_size, w // patch_size
    p = gh * gw
    queries = targets.query_points.float()
    tracks, visible = targets.tracks[:, 1:].float(), targets.track_visible[:, 1:]
    n = queries.shape[1]
    t = patch_start + p
    frame = torch.arange(1, s, device=queries.device)[None, :, None]
    q_index = (frame * t + patch_start + patch_cells(tracks, patch_size, (gh, gw))).reshape(b, -1)  # [B, M]
    target = patch_cells(queries, patch_size, (gh, gw))[:, None, :].expand(b, s - 1, n).reshape(b, -1)

    inside = inside_grid(tracks, patch_size, (gh, gw)) & inside_grid(queries, patch_size, (gh, gw))[:, None]
    ok = (visible & inside).reshape(b, -1).float()
    losses, probs = [], []
    for attn, x, tables in records:
        attention = frame0_attention(attn, x, tables, q_index, patch_start, p)  # [B, M, P]
        true = attention.gather(2, target[..., None]).squeeze(-1).clamp_min(1e-8)  # [B, M]
        count = ok.sum(dim=1).clamp_min(1.0)
        losses.append((-true.log() * ok).sum(dim=1) / count)
        probs.append(((true * ok).sum(dim=1) / count).detach())
    return {"attention_match": torch.stack(losses).mean(0), "attention_match_p": torch.stack(probs).mean(0)}
