"""The :class:`CheckpointError` hierarchy: every loading / saving failure is one of these."""

from __future__ import annotations

from collections.abc import Sequence

from vggt_ros.model.checkpoint.common import Shape
from vggt_ros.model.checkpoint.mismatch import KeyDiff, format_mismatch


class CheckpointError(RuntimeError):
    """Base class of every checkpoint loading / saving failure."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The file (or a checkpoint file inside a directory) does not exist."""


class CheckpointFormatError(CheckpointError, ValueError):
    """The file is not a readable checkpoint, or does not hold a state dict of tensors."""


class UnsafeCheckpointError(CheckpointError):
    """A pickle checkpoint asks for objects beyond tensors and plain containers (it could run code)."""


class HubCheckpointError(CheckpointError):
    """A Hugging Face repo id could not be turned into a local file.

    ``reason`` is one of ``offline``, ``unreachable``, ``gated``, ``repo_not_found``,
    ``revision_not_found``, ``file_not_found``, for callers (e.g. diagnostics) that branch on it.
    """

    def __init__(self, message: str, *, repo_id: str, reason: str) -> None:
        super().__init__(message)
        self.repo_id = repo_id
        self.reason = reason


class CheckpointMismatchError(CheckpointError):
    """The checkpoint's tensors do not fit the model: missing, unexpected or mis-shaped keys."""

    def __init__(self, diff: KeyDiff, *, source: str, target: str, hints: Sequence[str] = ()) -> None:
        self.diff = diff
        self.source = source
        self.target = target
        self.hints = list(hints)
        super().__init__(format_mismatch(diff, source=source, target=target, hints=self.hints))

    @property
    def missing(self) -> list[str]:
        return self.diff.missing

    @property
    def unexpected(self) -> list[str]:
        return self.diff.unexpected

    @property
    def mismatched(self) -> list[tuple[str, Shape, Shape]]:
        return self.diff.mismatched
