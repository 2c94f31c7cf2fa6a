"""Regional ``torch.compile`` of a model for training (``vggt-ros train --compile``).

Compiling the whole training forward hands Dynamo one graph of every block, head and
refinement iteration (the track head alone unrolls its iterations over several attention
blocks): on the H200 a compact stage-2 run (8 frames, batch 32, flow loss, all heads) had not
logged its first 25 steps after 7.5 minutes (2026-12-03), which a 10-minute device command cannot
afford. The repeated units are compiled instead, one by one, the way the inference engine does
(:mod:`vggt_ros.engine.backends`): every transformer block of the encoder, the aggregator, the
camera head and the tracker, and the dense heads' per-chunk function. Blocks of one class and
shape share one compiled graph (parameters are graph inputs), so compile time is that of a few
blocks, not of the model; the glue between them (RoPE tables, the correlation sampling, the
iteration loop) stays eager. ``nn.Module.compile`` compiles in place, so parameter names and the
state dict are unchanged (checkpoints stay interchangeable with eager runs).
"""

from __future__ import annotations

import torch
from torch import nn

from vggt_ros.model.layers import TransformerBlock
from vggt_ros.model.tracker_blocks import CrossAttentionBlock, SelfAttentionBlock

# Block classes compiled as whole modules (forward + their autograd graph).
COMPILED_BLOCKS: tuple[type[nn.Module], ...] = (TransformerBlock, SelfAttentionBlock, CrossAttentionBlock)


def compile_training_regions(
    model: nn.Module, mode: str | None = None, backend: str = "inductor"
) -> dict[str, int]:
    """Compile ``model``'s repeated regions in place; returns how many of each kind.

    Args:
        model: a :class:`~vggt_ros.model.vggt.VGGT` (anything with those blocks works; heads are
            looked up by attribute and skipped when absent).
        mode: the ``torch.compile`` mode (None: the backend's default).
        backend: the ``torch.compile`` backend ("aot_eager" traces forward and backward without
            generating code: the tests use it on machines without a C++ compiler).

    Shapes are static (``dynamic=False``): training feeds one window shape, validation perhaps a
    second batch size; the recompile limit is raised so a few specialisations never fall back to
    eager silently.
    """
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    counts = {"blocks": 0, "dense_heads": 0}
    for module in model.modules():
        if isinstance(module, COMPILED_BLOCKS):
            module.compile(backend=backend, mode=mode, dynamic=False)
            counts["blocks"] += 1
    track_head = getattr(model, "track_head", None)
    track_features = getattr(track_head, "feature_extractor", None)
    for head in (getattr(model, "depth_head", None), getattr(model, "point_head", None), track_features):
        if head is not None and hasattr(head, "forward_chunk"):
            head.forward_chunk = torch.compile(head.forward_chunk, backend=backend, mode=mode, dynamic=False)
            counts["dense_heads"] += 1
    return counts
