"""Built-in compiled-section backends for :class:`~vggt_ros.engine.runner.ModelRunner`.

- ``torch``: ``torch.compile`` (Inductor/Triton) of every transformer block and of the dense
  heads. Blocks are compiled one by one rather than the whole trunk so the Python bookkeeping
  around them (RoPE table cache, kept layers) stays eager and shapes guard simply.
  Options: ``torch_compile_mode`` ("default", "max-autotune-no-cudagraphs", "reduce-overhead").
- ``tensorrt``: ONNX-exported sections run as TensorRT engines (see
  :mod:`vggt_ros.engine.tensorrt_backend`); unavailable where TensorRT is not installed.
"""

from __future__ import annotations

import importlib.util

import torch

from vggt_ros.engine.backend_api import BACKENDS, BackendContext, BackendUnavailableError, Sections


def torch_compile_backend(ctx: BackendContext) -> Sections:
    """Compile blocks and heads in place; the eager section functions then run compiled code."""
    if not hasattr(torch, "compile"):
        raise BackendUnavailableError(f"torch {torch.__version__} has no torch.compile")
    if ctx.device.type == "cuda" and importlib.util.find_spec("triton") is None:
        raise BackendUnavailableError("Triton is not installed (torch.compile needs it on CUDA)")
    mode = ctx.options.get("torch_compile_mode", "default")
    # One compiled block function serves encoder, frame and global blocks, each at a few token
    # counts (window sizes, token chunks): allow more specialisations than dynamo's default 8
    # before it gives up and runs eager.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    model = ctx.model
    aggregator = model.aggregator
    for block in (*aggregator.patch_embed.blocks, *aggregator.frame_blocks, *aggregator.global_blocks):
        # Compile the per-token row steps, not the whole block: the token-chunk loop and the
        # attention call stay eager, so a long window keeps its bounded memory (a compiled
        # unrolled loop lets Inductor keep every chunk's intermediates alive at once).
        for step in ("project_rows", "project_q_rows", "project_kv_rows", "finish_rows"):
            setattr(block, step, torch.compile(getattr(block, step), mode=mode, dynamic=False))
    track_features = model.track_head.feature_extractor if model.track_head is not None else None
    for head in (model.depth_head, model.point_head, track_features):
        if head is not None:
            # Per frame chunk, not the whole head: a compiled chunk loop is unrolled and kept
            # several chunks' buffers alive at once (measured 1.7 GB live in the heads at 100
            # frames of 350x518).
            head.forward_chunk = torch.compile(head.forward_chunk, mode=mode, dynamic=False)
    # The camera head is left to the runner's CUDA graph: it is launch-bound, not compute-bound.
    # The sections keep their eager entry points: the modules they call are now compiled.
    return {}


def tensorrt_backend(ctx: BackendContext) -> Sections:
    """TensorRT engines for the trunk blocks and dense heads (imported only when asked for)."""
    if importlib.util.find_spec("tensorrt") is None:
        raise BackendUnavailableError("the tensorrt Python package is not installed")
    if ctx.device.type != "cuda":
        raise BackendUnavailableError("TensorRT needs a CUDA device")
    try:
        from vggt_ros.engine.tensorrt_backend import build_tensorrt_sections
    except ImportError as exc:
        raise BackendUnavailableError(f"TensorRT support failed to import: {exc}") from exc
    return build_tensorrt_sections(ctx)


BACKENDS.setdefault("torch", torch_compile_backend)
BACKENDS.setdefault("tensorrt", tensorrt_backend)
