"""Writing checkpoints: :func:`save_checkpoint` (atomic safetensors), :func:`convert_checkpoint`
(any supported source to safetensors) and :func:`main`, behind ``python -m vggt_ros.model.checkpoint``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from vggt_ros.model.checkpoint.common import _config_name
from vggt_ros.model.checkpoint.errors import CheckpointError, CheckpointFormatError
from vggt_ros.model.checkpoint.formats import _read_checkpoint
from vggt_ros.model.checkpoint.identity import file_identity
from vggt_ros.model.checkpoint.loading import _shape_check, config_shapes
from vggt_ros.model.checkpoint.sources import _resolve
from vggt_ros.model.config import VGGTConfig, get_config


def save_checkpoint(
    model_or_state_dict: nn.Module | Mapping[str, Tensor],
    path: str | os.PathLike[str],
    *,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write a model's (or a state dict's) tensors as a safetensors file, atomically.

    The file is written next to ``path`` and renamed into place, so a crash never leaves a
    half-written checkpoint under the final name. ``metadata`` (strings) goes into the header,
    along with the model's config name when it has one.
    """
    from safetensors.torch import save_file

    path = Path(path).expanduser()
    if isinstance(model_or_state_dict, nn.Module):
        state = model_or_state_dict.state_dict()
        config_name = _config_name(model_or_state_dict)
    else:
        state, config_name = dict(model_or_state_dict), None
    header = {"format": "pt", "producer": "vggt_ros"}
    if config_name:
        header["config"] = str(config_name)
    header.update({str(k): str(v) for k, v in (metadata or {}).items()})
    tensors = _savable(state)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=header)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return path


def _savable(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """CPU, contiguous, and no two tensors sharing memory (safetensors refuses shared storage)."""
    out: dict[str, Tensor] = {}
    storages: set[int] = set()
    for key, tensor in state.items():
        if not isinstance(tensor, Tensor):
            raise CheckpointFormatError(f"cannot save {key!r}: {type(tensor).__name__} is not a tensor")
        if tensor.is_meta:
            raise CheckpointFormatError(f"cannot save {key!r}: it is on the 'meta' device (no values)")
        t = tensor.detach().to("cpu").contiguous()
        if t.numel() and t.untyped_storage().data_ptr() in storages:
            t = t.clone()  # tied or viewed weights: each key gets its own copy in the file
        if t.numel():
            storages.add(t.untyped_storage().data_ptr())
        out[key] = t
    return out


def convert_checkpoint(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    dtype: torch.dtype | None = None,
    config: str | VGGTConfig | None = None,
    token: str | bool | None = None,
) -> Path:
    """Convert any supported checkpoint (local ``.pt`` / ``.bin``, repo id, ...) to ``dst`` (safetensors).

    ``dtype`` converts floating tensors (None keeps them); with ``config`` the tensors are checked
    against that configuration first (same errors as :func:`load_model`). The header records the
    source file name and its sha256 identity. Returns ``dst``.
    """
    dst = Path(dst).expanduser()
    if dst.suffix != ".safetensors":
        raise CheckpointError(f"convert_checkpoint writes safetensors: give {dst} a .safetensors suffix")
    resolved = _resolve(src, token)
    if dst.exists() and dst.resolve() == resolved.path.resolve():
        raise CheckpointError(f"refusing to convert {dst} onto itself")
    cfg = get_config(config) if config is not None else None
    check = _shape_check(config_shapes(cfg), cfg, strict=True, source=str(resolved.path)) if cfg else None
    _, state, metadata = _read_checkpoint(resolved.path, torch.device("cpu"), dtype, check)
    metadata = {
        **metadata,
        **({"config": cfg.name} if cfg else {}),
        "converted_from": resolved.source,
        "source_sha256": resolved.sha256[:16] if resolved.sha256 else file_identity(resolved.path, "sha256"),
    }
    return save_checkpoint(state, dst, metadata=metadata)


_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m vggt_ros.model.checkpoint SRC DST.safetensors [--dtype bf16] [--config vggt-1b]``."""
    parser = argparse.ArgumentParser(
        description="Convert a VGGT checkpoint (.pt/.bin/repo id) to safetensors."
    )
    parser.add_argument("src", help="local checkpoint file or Hugging Face repo id (org/name[@rev][:file])")
    parser.add_argument("dst", help="output .safetensors path")
    parser.add_argument("--dtype", choices=sorted(_DTYPES), default=None, help="convert floating tensors")
    parser.add_argument("--config", default=None, help="check the tensors against this config first")
    args = parser.parse_args(argv)
    try:
        out = convert_checkpoint(args.src, args.dst, dtype=_DTYPES.get(args.dtype), config=args.config)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {out} (sha256:{file_identity(out, 'sha256')})")
    return 0
