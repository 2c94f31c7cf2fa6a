"""Inference modes: which precision each part of VGGT runs in and how much it keeps.

A mode is a recipe for :class:`~vggt_ros.engine.runner.ModelRunner`:

- ``fp32``: everything in float32; the reference for accuracy.
- ``official``: what the official README runs (float32 weights, bf16 autocast over the trunk
  and the track head, camera/depth/point heads in float32, all 24 aggregator layers kept in
  float32). The baseline that speed and memory are compared against, side by side.
- ``fp8``: ``bf16`` with the trunk's block linears as e4m3 products (Ada/Hopper GPUs;
  :mod:`vggt_ros.engine.fp8`).
- ``bf16`` / ``fp16``: matrix weights (linear and convolution layers) *stored* in that dtype,
  so nothing is cast per call and the weights take half the memory; norms, layer scales,
  learned tokens and the residual stream stay float32 under autocast, which keeps the error
  close to the official mode's. Only the layers the heads read are kept, in the reduced dtype,
  and long windows' blocks update the residual stream in place. The camera head's matrix
  weights are stored in that dtype too (it reads 0.9 GB of float32 weights for a few tokens
  per frame; its pose guess still accumulates in float32), and the correlation tracker keeps
  float32 state (pixel coordinates).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class InferenceMode:
    """Precision and memory policy.

    Attributes:
        name: the mode's name (``MODES`` key).
        matmul_dtype: storage dtype of the linear/convolution weights of the trunk, the dense
            heads and the track feature extractor (norms and other parameters stay float32).
        autocast_dtype: autocast dtype for the trunk (and for the heads when
            ``heads_autocast``), or None for plain float32.
        heads_autocast: run the depth, point and track heads under autocast too (the official
            code runs its camera, depth and point heads in float32).
        keep_all_layers: keep every aggregator layer's output (the official behaviour) instead of
            only those the heads read.
        keep_dtype: dtype the kept layer outputs are stored in (None: as computed).
        token_chunk: above this many tokens per block call, the trunk's per-token steps run in
            chunks of this size (exact; bounds memory on long windows). None: never.
        tracker_autocast: autocast dtype for the correlation tracker's matrix products. Its
            weights and state stay float32: track coordinates are pixel positions up to ~518
            moving by fractions of a pixel, which bf16 (2-pixel steps above 256) cannot hold.
        camera_dtype: storage and autocast dtype of the camera head's matrix weights (None:
            float32, no autocast, as the official code runs it).
        inplace_residual: chunked trunk blocks (long windows) write their output over their
            input instead of a new buffer (same numbers, one [S*T, dim] float32 buffer less).
        head_chunk_frames: frames per chunk of the dense heads on windows longer than the
            configuration's chunk (8 for VGGT-1B); None: the configuration's. Smaller chunks
            lower the heads' peak memory on long windows; short windows keep one chunk (at 8
            frames, chunks of 4 cost 1.2 ms per head on an H200).
        graph_window_frames: on GPUs, windows of at most this many frames (batch x frames)
            are replayed as CUDA graphs once their shape repeats (see
            :class:`~vggt_ros.engine.cuda_graphs.WindowGraphs`); 0: never. Short windows are
            launch-bound: 1 frame of 350x518 took 26 ms eagerly and 11 ms replayed on an H200.
            Each captured shape holds about one window's peak memory between windows.
        fp8_linears: the trunk's block linears (q/k/v, projection, MLP) run as e4m3 products
            with row-wise scales (:mod:`vggt_ros.engine.fp8`); the rest as in ``bf16``.
    """

    name: str
    matmul_dtype: torch.dtype = torch.float32
    autocast_dtype: torch.dtype | None = None
    heads_autocast: bool = False
    keep_all_layers: bool = False
    keep_dtype: torch.dtype | None = None
    token_chunk: int | None = None
    tracker_autocast: torch.dtype | None = None
    camera_dtype: torch.dtype | None = None
    inplace_residual: bool = False
    head_chunk_frames: int | None = None
    graph_window_frames: int = 0
    fp8_linears: bool = False

    @property
    def reduced_precision(self) -> bool:
        return self.matmul_dtype != torch.float32 or self.autocast_dtype is not None


def _reduced(name: str, dtype: torch.dtype) -> InferenceMode:
    return InferenceMode(
        name,
        matmul_dtype=dtype,
        autocast_dtype=dtype,
        heads_autocast=True,
        keep_dtype=dtype,
        token_chunk=16384,
        tracker_autocast=dtype,
        camera_dtype=dtype,
        inplace_residual=True,
        # Half the official 8 on long windows: the heads' full-resolution tail is the peak of a
        # long window (measured 1.97 -> 1.11 GB of transient at 100 frames of 350x518, eager).
        head_chunk_frames=4,
        # Above 16 frames a window is GPU-bound: replaying saves nothing measurable.
        graph_window_frames=16,
    )


MODES: dict[str, InferenceMode] = {
    "fp32": InferenceMode("fp32"),
    "official": InferenceMode(
        "official", autocast_dtype=torch.bfloat16, keep_all_layers=True, tracker_autocast=torch.bfloat16
    ),
    "bf16": _reduced("bf16", torch.bfloat16),
    "fp16": _reduced("fp16", torch.float16),
    "fp8": dataclasses.replace(_reduced("fp8", torch.bfloat16), fp8_linears=True),
}


def get_mode(name: str | InferenceMode) -> InferenceMode:
    """Look up a mode by name (``fp32``, ``official``, ``bf16``, ``fp16``, ``fp8``)."""
    if isinstance(name, InferenceMode):
        return name
    try:
        return MODES[name]
    except KeyError:
        raise ValueError(f"unknown inference mode {name!r}; known: {', '.join(MODES)}") from None


def mode_for_precision(dtype: torch.dtype) -> InferenceMode:
    """The mode a plain precision request maps to (fp32 -> fp32, bf16 -> bf16, fp16 -> fp16,
    float8_e4m3fn -> fp8)."""
    return {
        torch.float32: MODES["fp32"],
        torch.bfloat16: MODES["bf16"],
        torch.float16: MODES["fp16"],
        torch.float8_e4m3fn: MODES["fp8"],
    }[dtype]
