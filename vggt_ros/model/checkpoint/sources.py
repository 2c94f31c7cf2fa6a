"""Turning a checkpoint source (file, directory or Hugging Face repo id) into one local file."""

from __future__ import annotations

import os
from pathlib import Path

from vggt_ros.model.checkpoint.common import _Resolved
from vggt_ros.model.checkpoint.errors import CheckpointNotFoundError
from vggt_ros.model.checkpoint.formats import (
    SAFETENSORS_SUFFIXES,
    TORCH_SUFFIXES,
    _list_files,
    choose_checkpoint_file,
)
from vggt_ros.model.checkpoint.hub import _resolve_hub, parse_repo_source


def _looks_like_path(text: str, revision: str | None, filename: str | None) -> bool:
    """``./x``, ``/x``, ``~/x`` or ``dir/file.pt`` is a (missing) path, not a repo id."""
    if text.startswith(("/", ".", "~")) or "\\" in text:
        return True
    return revision is None and filename is None and text.endswith(SAFETENSORS_SUFFIXES + TORCH_SUFFIXES)


def _resolve(source: str | os.PathLike[str], token: str | bool | None) -> _Resolved:
    """The local file ``source`` names: an existing path (``file://`` allowed) or a repo id's download."""
    if isinstance(source, os.PathLike):
        return _resolve_local(Path(source))
    text = str(source)
    local = Path(text).expanduser()
    if local.exists() or text.startswith("file://"):
        return _resolve_local(Path(text.removeprefix("file://")).expanduser())
    repo = parse_repo_source(text)
    if repo is None or (_looks_like_path(text, repo[1], repo[2]) and not text.startswith("hf://")):
        raise CheckpointNotFoundError(
            f"checkpoint not found: {local} (no such file; a Hugging Face repo is written org/name)"
        )
    return _resolve_hub(text, *repo, token=token)


def _resolve_local(path: Path) -> _Resolved:
    if path.is_dir():
        path = path / choose_checkpoint_file(_list_files(path), where=f"directory {path}")
    elif not path.exists():
        raise CheckpointNotFoundError(f"checkpoint file not found: {path}")
    return _Resolved(source=str(path), path=path)
