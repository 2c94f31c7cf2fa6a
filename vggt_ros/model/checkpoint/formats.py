"""Checkpoint files: which files hold weights, and reading one into a state dict.

Reads a local ``.safetensors`` file (memory-mapped) or a ``torch.save`` file (``weights_only``: a
pickle asking for more than tensors is refused) into ``{name: tensor}``, recognising the format
from the content, unwrapping ``{"model": ...}`` / ``{"state_dict": ...}`` and ``module.`` /
``_orig_mod.`` prefixes, and converting tensors to the target dtype and device one at a time.
:func:`choose_checkpoint_file` picks the weights file among a directory's or repo's files.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor

from vggt_ros.model.checkpoint.common import DeviceLike, ShapeCheck, _shapes
from vggt_ros.model.checkpoint.errors import (
    CheckpointError,
    CheckpointFormatError,
    CheckpointNotFoundError,
    UnsafeCheckpointError,
)

# File suffixes read as checkpoints (a file with another suffix is recognised by its content).
SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
# Files of training runs that look like checkpoints but never hold model weights.
_NOT_WEIGHTS = ("optimizer", "scheduler", "rng_state", "training_args", "trainer_state")
# Keys under which training scripts nest the model's state dict (checked in this order).
_WRAPPER_KEYS = ("model", "state_dict", "module")
# Prefixes that wrappers add to every key: DDP / DataParallel, torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def _detect_format(path: Path) -> str:
    """``safetensors``, ``torch`` (zip) or ``torch-legacy``, from the first bytes, not the suffix."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(9)
    if head.startswith(b"PK\x03\x04"):
        return "torch"  # zip container written by torch.save
    if len(head) == 9 and head[8:9] == b"{" and 8 + struct.unpack("<Q", head[:8])[0] <= size:
        return "safetensors"  # u64 header length, then a JSON header
    if head[:1] == b"\x80":
        return "torch-legacy"  # a bare pickle: torch.save(_use_new_zipfile_serialization=False)
    if path.suffix in SAFETENSORS_SUFFIXES + TORCH_SUFFIXES:
        what = "empty" if size == 0 else "neither a safetensors file nor a torch.save archive"
        raise CheckpointFormatError(
            f"cannot read checkpoint {path}: the file is {what} (truncated download?)"
        )
    raise CheckpointFormatError(
        f"cannot read checkpoint {path}: not a safetensors file or torch.save archive "
        f"(supported: {', '.join(SAFETENSORS_SUFFIXES + TORCH_SUFFIXES)})"
    )


# PyTorch's CPU allocator aligns storage to 64 bytes; tensors read from a memory-mapped
# safetensors file sit wherever the header put them (most are not 64-byte aligned).
_CPU_ALIGNMENT = 64


def _convert(tensor: Tensor, device: torch.device, dtype: torch.dtype | None) -> Tensor:
    """Move to the target; only floating tensors change dtype (integer buffers stay exact).

    A CPU result that is not 64-byte aligned is copied into fresh storage. Why: on AVX-512
    CPUs the matmul kernels take another path for unaligned operands, and a loaded model then
    differed from the one that was saved by one float32 ULP in its outputs (and ran its
    weights through the slower path).
    """
    if dtype is not None and tensor.is_floating_point():
        out = tensor.to(device=device, dtype=dtype)
    else:
        out = tensor.to(device=device)
    if out.device.type == "cpu" and out.numel() and out.data_ptr() % _CPU_ALIGNMENT:
        out = out.clone()
    return out


def _read_safetensors(
    path: Path, device: torch.device, dtype: torch.dtype | None, check: ShapeCheck | None
) -> tuple[dict[str, Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    state: dict[str, Tensor] = {}
    try:
        # Memory-mapped: each tensor is read and converted on its own, so at most one tensor
        # exists twice at a time.
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            stored = list(f.keys())  # noqa: SIM118  (safe_open is not a Mapping)
            names = _unprefixed(stored)
            if check is not None:  # from the header alone: nothing is read for a wrong file
                check({n: tuple(f.get_slice(o).get_shape()) for n, o in zip(names, stored)}, metadata)
            for name, key in zip(names, stored):
                state[name] = _convert(f.get_tensor(key), device, dtype)
    except CheckpointError:
        raise
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointFormatError(f"cannot read safetensors checkpoint {path}: {exc}") from None
    return state, metadata


def _saved_metadata(source: str | os.PathLike[str]) -> dict[str, str]:
    """A local safetensors file's header metadata; empty for anything else (a repo id, a
    directory, a ``torch.save`` file, an unreadable file)."""
    path = Path(source)
    try:
        if not path.is_file() or _detect_format(path) != "safetensors":
            return {}
        from safetensors import safe_open

        with safe_open(str(path), framework="pt", device="cpu") as f:
            return dict(f.metadata() or {})
    except Exception:  # noqa: BLE001  (a broken file is reported by the loader, with context)
        return {}


def saved_config_name(source: str | os.PathLike[str]) -> str | None:
    """The config name a local safetensors file says it was saved from (its header's ``config``).

    Reads only the header. ``None`` for anything else: a repo id, a directory, a ``torch.save``
    file, an unreadable file or a file without the field (the caller keeps its own default).
    """
    return _saved_metadata(source).get("config") or None


def saved_image_size(source: str | os.PathLike[str]) -> int | None:
    """The model image width a local safetensors file was trained at, or None.

    ``vggt-ros export-model`` writes it as the header's ``image_size``; files exported before
    that carry it as the procedural width in their ``provenance``. None for anything else (the
    caller keeps the config's size).
    """
    meta = _saved_metadata(source)
    value = meta.get("image_size")
    if value is None:
        try:
            procedural = (json.loads(meta.get("provenance", "{}")).get("data") or {}).get("procedural") or {}
        except (ValueError, AttributeError):
            return None
        value = procedural.get("width")
    try:
        size = int(value)
    except (TypeError, ValueError):
        return None
    return size if size > 0 else None


def _read_torch(path: Path, legacy: bool) -> object:
    try:
        # weights_only: the unpickler only builds tensors and plain containers and refuses any
        # other global, so a malicious file cannot run code. mmap keeps the weights in the page
        # cache instead of a private copy (zip archives only).
        with warnings.catch_warnings():  # noise about pickle protocols of files refused anyway
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(str(path), map_location="cpu", weights_only=True, mmap=not legacy)
    except pickle.UnpicklingError as exc:
        if "weights only" in str(exc).lower():
            raise UnsafeCheckpointError(_unsafe_message(path, str(exc))) from None
        raise CheckpointFormatError(f"cannot read PyTorch checkpoint {path}: {exc}") from None
    except Exception as exc:  # torch raises RuntimeError, KeyError, EOFError... for damaged files
        raise CheckpointFormatError(
            f"cannot read PyTorch checkpoint {path}: {type(exc).__name__}: {str(exc)[:300]}"
        ) from None


def _unsafe_message(path: Path, torch_message: str) -> str:
    detail = [
        line.strip()
        for line in torch_message.splitlines()
        if "unsupported" in line.lower() or ("global" in line.lower() and "weights_only" not in line)
    ]
    reason = "; ".join(detail)[:300] or "it asks for objects other than tensors"
    return (
        f"refused to load {path}: its pickle asks for more than tensors and plain containers ({reason}). "
        "Unpickling it could run arbitrary code, so it was not loaded. If you trust the file, extract the "
        "state dict once in a sandbox (torch.load(..., weights_only=False)) and save it with "
        "vggt_ros.model.checkpoint.save_checkpoint(state_dict, 'model.safetensors')."
    )


def _describe(obj: object) -> str:
    if isinstance(obj, Mapping):
        entries = ", ".join(f"{k!r}: {type(v).__name__}" for k, v in list(obj.items())[:6])
        more = f", ... ({len(obj)} entries)" if len(obj) > 6 else ""
        return f"a {type(obj).__name__} {{{entries}{more}}}"
    return f"a {type(obj).__name__}"


def _extract_state_dict(obj: object, path: Path) -> dict[str, Tensor]:
    """The ``{name: tensor}`` mapping inside a loaded checkpoint, unwrapped and de-prefixed."""
    found = obj
    for _ in range(3):  # e.g. {"state_dict": {"model": {...}}}
        if not isinstance(found, Mapping) or _is_tensor_dict(found):
            break
        inner = next((found[k] for k in _WRAPPER_KEYS if isinstance(found.get(k), Mapping)), None)
        if inner is None:
            break
        found = inner
    if not isinstance(found, Mapping) or not found or not _is_tensor_dict(found):
        raise CheckpointFormatError(
            f"checkpoint {path} does not hold a state dict (a mapping of names to tensors, possibly under "
            f"{' / '.join(repr(k) for k in _WRAPPER_KEYS)}): found {_describe(found)}"
        )
    return dict(zip(_unprefixed(list(found)), found.values()))


def _is_tensor_dict(mapping: Mapping) -> bool:
    return all(isinstance(k, str) and isinstance(v, Tensor) for k, v in mapping.items())


def _unprefixed(keys: Sequence[str]) -> list[str]:
    """Keys without ``module.`` (DDP) / ``_orig_mod.`` (torch.compile) when every key carries it."""
    keys = list(keys)
    changed = True
    while changed:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if keys and all(k.startswith(prefix) for k in keys):
                keys = [k[len(prefix) :] for k in keys]
                changed = True
    return keys


def _read_checkpoint(
    path: Path, device: torch.device, dtype: torch.dtype | None, check: ShapeCheck | None = None
) -> tuple[str, dict[str, Tensor], dict[str, str]]:
    """``(format, state_dict, metadata)`` of a local file, tensors converted one by one.

    ``check(shapes, metadata)`` runs before any tensor is converted (or moved to a GPU), so a
    wrong checkpoint fails with a readable error instead of, say, running out of memory.
    """
    if not path.is_file():
        raise CheckpointNotFoundError(f"checkpoint file not found: {path}")
    fmt = _detect_format(path)
    if fmt == "safetensors":
        state, metadata = _read_safetensors(path, device, dtype, check)
        return fmt, state, metadata
    raw = _extract_state_dict(_read_torch(path, legacy=fmt == "torch-legacy"), path)
    if check is not None:
        check(_shapes(raw), {})
    # Popping as we go lets each CPU original go as soon as its converted copy exists. Tensors that
    # need no conversion (float32 on CPU) stay memory-mapped from the file (copy-on-write).
    state = {key: _convert(raw.pop(key), device, dtype) for key in list(raw)}
    return "torch", state, {}


def load_state_dict_file(
    path: str | os.PathLike[str],
    device: DeviceLike = "cpu",
    dtype: torch.dtype | None = torch.float32,
) -> dict[str, Tensor]:
    """Read a local ``.safetensors`` / ``.pt`` / ``.pth`` / ``.bin`` file as ``{name: tensor}``.

    Floating tensors come out in ``dtype`` (``None`` keeps the file's) on ``device``. Wrapped
    checkpoints (``{"model": ...}``, ``{"state_dict": ...}``, ``module.`` keys) are unwrapped.
    Raises :class:`CheckpointNotFoundError`, :class:`CheckpointFormatError` or
    :class:`UnsafeCheckpointError`.
    """
    _, state, _ = _read_checkpoint(Path(path).expanduser(), torch.device(device), dtype)
    return state


def _list_files(root: Path) -> list[str]:
    """Every file under ``root``, as sorted paths relative to it (a directory's or a snapshot's)."""
    return [str(p.relative_to(root)) for p in sorted(root.rglob("*")) if p.is_file()]


def _file_rank(name: str) -> tuple[int, int, int] | None:
    """Sort key of a candidate checkpoint file (lower is better), None if not a weights file."""
    base = name.rsplit("/", 1)[-1]
    suffix = Path(base).suffix
    if base.startswith(_NOT_WEIGHTS):
        return None
    if suffix in SAFETENSORS_SUFFIXES:
        kind = 0
    elif suffix in (".pt", ".pth"):
        kind = 1
    elif suffix in (".bin", ".ckpt"):
        kind = 2
    else:
        return None
    return kind, name.count("/"), 0 if Path(base).stem == "model" else 1


def choose_checkpoint_file(files: Iterable[str], *, where: str) -> str:
    """Pick the weights file among a repo's (or directory's) files.

    Preference: ``*.safetensors``, then ``*.pt`` / ``*.pth``, then ``*.bin``; among those, files at
    the top level and files named ``model.*``. Two equally good candidates are an error (name one
    explicitly) rather than a guess.
    """
    files = list(files)
    ranked = sorted((rank, name) for name in files if (rank := _file_rank(name)) is not None)
    if not ranked:
        listing = ", ".join(files[:10]) + (f", ... ({len(files)} files)" if len(files) > 10 else "")
        raise CheckpointNotFoundError(
            f"no checkpoint file (*.safetensors, *.pt, *.pth, *.bin) in {where}; files: {listing or 'none'}"
        )
    best_rank = ranked[0][0]
    tied = [name for rank, name in ranked if rank == best_rank]
    if len(tied) > 1:
        raise CheckpointError(
            f"{where} holds several candidate checkpoints ({', '.join(tied[:6])}); name one: "
            "a path to the file, or org/name:filename for a Hugging Face repo (sharded checkpoints, "
            "model-0000x-of-0000y.safetensors, are not supported)"
        )
    return tied[0]
