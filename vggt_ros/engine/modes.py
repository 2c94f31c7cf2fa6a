"""Inference modes: which precision each part of VGGT runs in and how much it keeps.

A mode is a recipe for :class:`~vggt_ros.engine.runner.ModelRunner`:

- ``fp32``: everything in float32; the reference for accuracy.
- ``official``: what the official README runs (float32 weights, bf16 autocast over the trunk,
  heads in float32, all 24 aggregator layers kept). The baseline that speed and memory are
  compared against, measured side by side in the same process.
- ``bf16`` / ``fp16``: weights stored in that dtype (half the memory, no per-call casts),
  only the layers the heads read are kept; the camera head (a few tokens per frame) stays in
  float32 because it costs nothing and pose accuracy matters most.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class InferenceMode:
    """Precision and memory policy.

    Attributes:
        name: the mode's name (``MODES`` key).
        trunk_dtype: dtype of the aggregator's weights.
        heads_dtype: dtype of the depth, point and track heads' weights.
        camera_dtype: dtype of the camera head's weights.
        autocast_dtype: autocast dtype around the trunk, or None for none.
        keep_all_layers: keep every aggregator layer's output (the official behaviour) instead of
            only those the heads read.
        tracker_dtype: dtype of the correlation tracker's weights and state. Track coordinates
            are pixel positions up to ~518 that move by fractions of a pixel: bf16 (8-bit
            mantissa, 2-pixel steps above 256) cannot hold them, so reduced-precision modes keep
            the tracker in float32 and run its matrix products under ``tracker_autocast``.
        tracker_autocast: autocast dtype for the tracker's matrix products, or None.
    """

    name: str
    trunk_dtype: torch.dtype
    heads_dtype: torch.dtype
    camera_dtype: torch.dtype = torch.float32
    autocast_dtype: torch.dtype | None = None
    keep_all_layers: bool = False
    tracker_dtype: torch.dtype = torch.float32
    tracker_autocast: torch.dtype | None = None

    @property
    def reduced_precision(self) -> bool:
        return self.trunk_dtype != torch.float32 or self.autocast_dtype is not None


MODES: dict[str, InferenceMode] = {
    "fp32": InferenceMode("fp32", torch.float32, torch.float32),
    # The official model runs its track head under the same bf16 autocast as the trunk.
    "official": InferenceMode(
        "official",
        torch.float32,
        torch.float32,
        autocast_dtype=torch.bfloat16,
        keep_all_layers=True,
        tracker_autocast=torch.bfloat16,
    ),
    "bf16": InferenceMode("bf16", torch.bfloat16, torch.bfloat16, tracker_autocast=torch.bfloat16),
    "fp16": InferenceMode("fp16", torch.float16, torch.float16, tracker_autocast=torch.float16),
}


def get_mode(name: str | InferenceMode) -> InferenceMode:
    """Look up a mode by name (``fp32``, ``official``, ``bf16``, ``fp16``)."""
    if isinstance(name, InferenceMode):
        return name
    try:
        return MODES[name]
    except KeyError:
        raise ValueError(f"unknown inference mode {name!r}; known: {', '.join(MODES)}") from None


def mode_for_precision(dtype: torch.dtype) -> InferenceMode:
    """The mode a plain precision request maps to (fp32 -> fp32, bf16 -> bf16, fp16 -> fp16)."""
    return {torch.float32: MODES["fp32"], torch.bfloat16: MODES["bf16"], torch.float16: MODES["fp16"]}[dtype]
