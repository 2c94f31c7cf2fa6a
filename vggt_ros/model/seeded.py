"""Deterministic seeded weights for any VGGT configuration, without a checkpoint.

Every tensor comes from its own generator seeded by ``seed`` and the CRC32 of its key, so the
same state dict can be rebuilt from the key list alone (this is the recipe of the reference
parity fixture, test/fixtures/vggt_parity/README.md). Matrices are scaled by 1/sqrt(fan-in) so
activations stay in range through 24 layers; norms' weights sit near 1 and biases near 0.
Used by the parity tests and by benchmarks that need realistic-magnitude weights offline.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Sequence

import torch


def seeded_tensor(key: str, shape: Sequence[int], seed: int) -> torch.Tensor:
    """The recipe tensor for one state-dict entry (float32, CPU)."""
    generator = torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(key.encode())) % 2**63)
    t = torch.randn(list(shape), generator=generator, dtype=torch.float32)
    if len(shape) >= 2:
        return t / math.sqrt(math.prod(shape[1:]))
    if key.endswith(".weight"):
        return 1.0 + 0.1 * t
    return 0.05 * t


def seeded_state_dict(entries: Iterable[tuple[str, Sequence[int]]], seed: int) -> dict[str, torch.Tensor]:
    """Recipe tensors for ``(key, shape)`` entries (e.g. a model's state-dict layout)."""
    return {key: seeded_tensor(key, shape, seed) for key, shape in entries}


def seeded_weights_for(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Recipe state dict matching ``model``'s own layout (works for every configuration)."""
    return seeded_state_dict(((k, tuple(v.shape)) for k, v in model.state_dict().items()), seed)
