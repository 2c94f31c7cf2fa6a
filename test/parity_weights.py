"""Rebuild the seeded VGGT weights of the parity fixture from the state-dict manifest.

The recipe is fixed by test/fixtures/vggt_parity/README.md: every tensor comes from its own
generator seeded by the weight seed and the CRC32 of its key, so the state dict can be rebuilt
from the manifest alone.
"""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import torch


def load_manifest(parity_dir: Path) -> list[tuple[str, list[int]]]:
    with open(parity_dir / "vggt1b_state_dict_manifest.json") as f:
        return [(key, list(shape)) for key, shape in json.load(f)]


def recipe_tensor(key: str, shape: list[int], seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(key.encode())) % 2**63)
    t = torch.randn(shape, generator=generator, dtype=torch.float32)
    if len(shape) >= 2:
        return t / math.sqrt(math.prod(shape[1:]))
    if key.endswith(".weight"):
        return 1.0 + 0.1 * t
    return 0.05 * t


def recipe_state_dict(manifest: list[tuple[str, list[int]]], seed: int) -> dict[str, torch.Tensor]:
    return {key: recipe_tensor(key, shape, seed) for key, shape in manifest}
