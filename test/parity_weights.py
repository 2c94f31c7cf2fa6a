"""Rebuild the seeded VGGT weights of the parity fixture from its state-dict manifest."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from vggt_ros.model.seeded import seeded_state_dict


def load_manifest(parity_dir: Path) -> list[tuple[str, list[int]]]:
    with open(parity_dir / "vggt1b_state_dict_manifest.json") as f:
        return [(key, list(shape)) for key, shape in json.load(f)]


def recipe_state_dict(manifest: list[tuple[str, list[int]]], seed: int) -> dict[str, torch.Tensor]:
    return seeded_state_dict(manifest, seed)
