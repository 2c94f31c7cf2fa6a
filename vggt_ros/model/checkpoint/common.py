"""Type aliases and small helpers shared by the checkpoint modules."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

DeviceLike = str | torch.device
Shape = tuple[int, ...]
# Called with a checkpoint's {key: shape} and header metadata before its tensors are converted.
ShapeCheck = Callable[[dict[str, Shape], dict[str, str]], None]


@dataclass(frozen=True)
class _Resolved:
    """A checkpoint source (path, directory or repo id) turned into one local file."""

    source: str
    path: Path
    revision: str | None = None  # commit hash, for files from the Hugging Face cache
    sha256: str | None = None  # full content hash when known for free (Hugging Face blob name)


def _shapes(state_dict: Mapping[str, Tensor]) -> dict[str, Shape]:
    return {k: tuple(v.shape) for k, v in state_dict.items()}


def _human_count(n: int) -> str:
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.3g}{suffix}"
    return str(n)


def _config_name(model: object) -> str | None:
    """The name of a model's config (``model.config.name``), None when it has none."""
    return getattr(getattr(model, "config", None), "name", None)
