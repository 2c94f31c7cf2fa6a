"""The contract between :class:`~vggt_ros.engine.runner.ModelRunner` and the backends that
replace its sections with compiled versions.

A backend is a factory ``(BackendContext) -> Sections`` registered by name in
:data:`BACKENDS`; it returns the sections it replaces (a subset of :data:`SECTIONS`) or raises
:class:`BackendUnavailableError` with the reason, and the runner tries the next backend. The
built-in ``torch`` and ``tensorrt`` backends register themselves in
:mod:`vggt_ros.engine.backends`, which ``vggt_ros.engine``'s ``__init__`` imports, so importing
anything from the engine package registers them. Keeping the contract here, apart from the
runner, means the runner and the backends never import each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from vggt_ros.engine.modes import InferenceMode
from vggt_ros.model.vggt import VGGT

SECTIONS = ("aggregator", "camera", "depth", "points", "tracks")
Sections = dict[str, Callable[..., Any]]


class BackendUnavailableError(RuntimeError):
    """A backend cannot serve here (missing library, unsupported device...); says why."""


@dataclass
class BackendContext:
    """What a backend gets to build its sections from."""

    model: VGGT
    mode: InferenceMode
    device: torch.device
    eager: Sections
    options: dict[str, Any] = field(default_factory=dict)


# name -> factory(context) returning the sections it replaces (a subset of SECTIONS), or raising
# BackendUnavailableError. Filled by vggt_ros.engine.backends at import time.
BACKENDS: dict[str, Callable[[BackendContext], Sections]] = {}

# Every option a built-in backend reads (the runner's own are runner.RUNNER_OPTIONS).
BACKEND_OPTIONS = frozenset(
    {
        "torch_compile_mode",
        # TensorRT (vggt_ros.engine.tensorrt_backend)
        "image_hw",
        "min_frames",
        "opt_frames",
        "max_frames",
        "cache_dir",
        "weights_identity",
        "tensorrt_sections",
        "workspace_gb",
    }
)
