"""Safe checkpoint loading and saving for VGGT: one entry point, :func:`load_model`.

``load_model(source, config=..., device=..., dtype=...)`` returns a ready ``VGGT`` (eval mode) and
a :class:`WeightsInfo` describing where its weights came from. ``source`` is one of

- a local ``.safetensors`` file (memory-mapped; tensors are converted one at a time);
- a local ``.pt`` / ``.pth`` / ``.bin`` file holding a state dict, plain or under a ``model`` /
  ``state_dict`` key, possibly with DDP's ``module.`` prefix. It is read with
  ``torch.load(weights_only=True)``: a pickle that asks for anything but tensors and plain
  containers (i.e. one that could run code) is refused with :class:`UnsafeCheckpointError`;
- a directory holding one checkpoint file;
- a Hugging Face repo id, ``org/name[@revision][:filename]`` (e.g. ``facebook/VGGT-1B``), fetched
  through the Hugging Face cache; the file is discovered from the repo listing;
- ``None``: a randomly initialised model, reported as untrained.

Memory: the network is built on the ``meta`` device (no storage), and the checkpoint's tensors,
already in the target dtype and device, are assigned to it, so the model never exists twice.
Buffers that checkpoints do not carry are refilled through ``model.reset_non_persistent_buffers()``.

Every failure is a :class:`CheckpointError` with a message meant for a person reading a robot's
start-up log: missing files name the path, wrong checkpoints list (grouped) missing, unexpected
and mis-shaped tensors with a hint about the likely cause, hub failures say how to pass a local
file instead.

Layout of this package (each module has one job; this ``__init__`` re-exports the public API):

- :mod:`.errors`: the :class:`CheckpointError` hierarchy;
- :mod:`.identity`: :func:`file_identity`, short content names of weights files;
- :mod:`.formats`: reading safetensors / ``torch.save`` files into state dicts, choosing the
  weights file among a directory's or repo's files;
- :mod:`.hub`: Hugging Face repo ids, listing, download and hub errors;
- :mod:`.sources`: a source (file, directory, repo id) to one local file;
- :mod:`.mismatch`: key / shape comparison and the readable grouped mismatch message;
- :mod:`.loading`: :func:`load_model`, :func:`load_weights_into`, :class:`WeightsInfo`;
- :mod:`.saving`: :func:`save_checkpoint`, :func:`convert_checkpoint` and the ``python -m`` CLI;
- :mod:`.common`: type aliases and helpers the modules share.
"""

from __future__ import annotations

import logging

from vggt_ros.model.checkpoint.common import DeviceLike, Shape, ShapeCheck
from vggt_ros.model.checkpoint.errors import (
    CheckpointError,
    CheckpointFormatError,
    CheckpointMismatchError,
    CheckpointNotFoundError,
    HubCheckpointError,
    UnsafeCheckpointError,
)
from vggt_ros.model.checkpoint.formats import (
    SAFETENSORS_SUFFIXES,
    TORCH_SUFFIXES,
    choose_checkpoint_file,
    load_state_dict_file,
)
from vggt_ros.model.checkpoint.hub import parse_repo_source
from vggt_ros.model.checkpoint.identity import IdentityMethod, file_identity
from vggt_ros.model.checkpoint.loading import (
    WeightsInfo,
    _shape_check,
    config_shapes,
    load_model,
    load_weights_into,
)
from vggt_ros.model.checkpoint.mismatch import (
    KeyDiff,
    compare_shapes,
    format_mismatch,
    mismatch_hints,
    summarize_keys,
)
from vggt_ros.model.checkpoint.saving import convert_checkpoint, main, save_checkpoint

logger = logging.getLogger(__name__)  # the one logger of every module in this package

__all__ = [
    "SAFETENSORS_SUFFIXES",
    "TORCH_SUFFIXES",
    "CheckpointError",
    "CheckpointFormatError",
    "CheckpointMismatchError",
    "CheckpointNotFoundError",
    "DeviceLike",
    "HubCheckpointError",
    "IdentityMethod",
    "KeyDiff",
    "Shape",
    "ShapeCheck",
    "UnsafeCheckpointError",
    "WeightsInfo",
    "_shape_check",
    "choose_checkpoint_file",
    "compare_shapes",
    "config_shapes",
    "convert_checkpoint",
    "file_identity",
    "format_mismatch",
    "load_model",
    "load_state_dict_file",
    "load_weights_into",
    "logger",
    "main",
    "mismatch_hints",
    "parse_repo_source",
    "save_checkpoint",
    "summarize_keys",
]
