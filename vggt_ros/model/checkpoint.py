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
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import os
import pickle
import re
import struct
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor, nn

from vggt_ros.model.config import CONFIGS, VGGTConfig, get_config

if TYPE_CHECKING:
    from vggt_ros.model.vggt import VGGT

logger = logging.getLogger(__name__)

IdentityMethod = Literal["fast", "sha256"]
DeviceLike = str | torch.device

# File suffixes read as checkpoints (a file with another suffix is recognised by its content).
SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
# Files of training runs that look like checkpoints but never hold model weights.
_NOT_WEIGHTS = ("optimizer", "scheduler", "rng_state", "training_args", "trainer_state")
# Keys under which training scripts nest the model's state dict (checked in this order).
_WRAPPER_KEYS = ("model", "state_dict", "module")
# Prefixes that wrappers add to every key: DDP / DataParallel, torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# Heads that a config can switch off, by state-dict prefix.
_HEAD_FLAGS = {
    "camera_head": "enable_camera",
    "depth_head": "enable_depth",
    "point_head": "enable_point",
    "track_head": "enable_track",
}
_MIB = 1 << 20
_REPO_RE = re.compile(
    r"^(?:hf://)?(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)"
    r"(?:@(?P<revision>[^:@]+))?(?::(?P<filename>[^:@]+))?$"
)


# ----------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------
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
    def mismatched(self) -> list[tuple[str, tuple[int, ...], tuple[int, ...]]]:
        return self.diff.mismatched


# ----------------------------------------------------------------------------------------------
# WeightsInfo and identity
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WeightsInfo:
    """Where a model's weights came from, for logs, diagnostics and caches keyed on the weights.

    ``identity`` is 16 hex digits naming the file's content (see :func:`file_identity`;
    ``identity_method`` says how it was obtained: ``sha256`` of the whole file, or ``fast``);
    for an untrained model it is ``"untrained"``.
    """

    source: str | None
    path: str | None
    format: str
    identity: str
    identity_method: str
    config: str
    num_parameters: int
    dtype: str
    device: str
    revision: str | None = None
    missing_keys: tuple[str, ...] = ()
    unexpected_keys: tuple[str, ...] = ()
    load_seconds: float = 0.0

    @property
    def trained(self) -> bool:
        """False for a randomly initialised model (``load_model(None)``)."""
        return self.format != "untrained"

    def to_dict(self) -> dict[str, object]:
        """Plain JSON-friendly fields (for diagnostics and reports)."""
        out = asdict(self)
        out["trained"] = self.trained
        return out

    def __str__(self) -> str:
        tail = (
            f"config={self.config} params={_human_count(self.num_parameters)} "
            f"dtype={self.dtype} device={self.device}"
        )
        if not self.trained:
            return f"weights UNTRAINED (random init, outputs are meaningless) {tail}"
        source = self.source or self.path
        if self.revision:
            source = f"{source}@{self.revision[:10]}"
        if self.path and self.source and Path(self.source) != Path(self.path):
            source = f"{source} ({Path(self.path).name})"
        text = f"weights {source} [{self.format} {self.identity_method}:{self.identity}] {tail}"
        if self.missing_keys or self.unexpected_keys:
            text += f" NOT STRICT: missing={len(self.missing_keys)} unexpected={len(self.unexpected_keys)}"
        return f"{text} loaded in {self.load_seconds:.1f}s"


def file_identity(path: str | os.PathLike[str], method: IdentityMethod = "fast") -> str:
    """A short (16 hex digits) name for a file's content.

    - ``sha256``: hash of the whole content, streamed in chunks. Exact and portable (the same
      bytes anywhere give the same name), but reads the whole file: about 10 s for VGGT-1B's 5 GB.
    - ``fast``: hash of (size, modification time, first MiB, last MiB); milliseconds for any size.
      It changes whenever the file is rewritten or replaced, and also when the same bytes are
      copied without keeping the mtime. It does not see an in-place edit in the middle of a file
      that keeps size and mtime (deliberate tampering, not something a training run does).
      Files of at most 2 MiB are hashed whole.
    """
    path = Path(path)
    digest = hashlib.sha256()
    with path.open("rb") as f:
        if method == "sha256":
            for chunk in iter(lambda: f.read(8 * _MIB), b""):
                digest.update(chunk)
        elif method == "fast":
            stat = os.fstat(f.fileno())
            digest.update(f"fast:{stat.st_size}:{stat.st_mtime_ns}:".encode())
            digest.update(f.read(_MIB))
            if stat.st_size > _MIB:
                f.seek(max(stat.st_size - _MIB, _MIB))
                digest.update(f.read(_MIB))
        else:
            raise ValueError(f"unknown identity method {method!r} (use 'fast' or 'sha256')")
    return digest.hexdigest()[:16]


def _human_count(n: int) -> str:
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.3g}{suffix}"
    return str(n)


# ----------------------------------------------------------------------------------------------
# Key comparison and readable mismatch reports
# ----------------------------------------------------------------------------------------------
Shape = tuple[int, ...]
# Called with a checkpoint's {key: shape} and header metadata before its tensors are converted.
ShapeCheck = Callable[[dict[str, Shape], dict[str, str]], None]


@dataclass
class KeyDiff:
    """How a checkpoint's keys and shapes differ from a model's (keys in model / file order)."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, Shape, Shape]] = field(default_factory=list)  # key, file shape, model shape
    expected: dict[str, Shape] = field(default_factory=dict, repr=False)
    found: dict[str, Shape] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)


def compare_shapes(expected: Mapping[str, Shape], found: Mapping[str, Shape]) -> KeyDiff:
    """Compare a model's ``{key: shape}`` with a checkpoint's."""
    expected = {k: tuple(v) for k, v in expected.items()}
    found = {k: tuple(v) for k, v in found.items()}
    return KeyDiff(
        missing=[k for k in expected if k not in found],
        unexpected=[k for k in found if k not in expected],
        mismatched=[(k, found[k], expected[k]) for k in expected if k in found and found[k] != expected[k]],
        expected=expected,
        found=found,
    )


def _shapes(state_dict: Mapping[str, Tensor]) -> dict[str, Shape]:
    return {k: tuple(v.shape) for k, v in state_dict.items()}


def _prefix_counts(keys: Iterable[str]) -> Counter[str]:
    """How many keys lie under each proper dotted prefix (``a.b.c`` counts for ``a`` and ``a.b``)."""
    counts: Counter[str] = Counter()
    for key in keys:
        parts = key.split(".")
        for depth in range(1, len(parts)):
            counts[".".join(parts[:depth])] += 1
    return counts


def _collapse_subtrees(keys: Sequence[str], universe: Iterable[str]) -> list[tuple[str, int]]:
    """Replace keys by ``prefix.*`` where every key of ``universe`` under that prefix is listed.

    Returns ``(item, number of keys it stands for)`` in first-appearance order.
    """
    total = _prefix_counts(universe)
    listed = _prefix_counts(keys)
    items: dict[str, int] = {}
    for key in keys:
        parts = key.split(".")
        item = key
        for depth in range(1, len(parts)):
            prefix = ".".join(parts[:depth])
            if total[prefix] >= 2 and listed[prefix] == total[prefix]:
                item = prefix + ".*"
                break
        items[item] = items.get(item, 0) + 1
    return list(items.items())


def _ranges(numbers: Iterable[int]) -> str:
    """``[0, 1, 2, 3, 7, 9, 10]`` -> ``0..3,7,9..10``."""
    values = sorted(set(numbers))
    spans: list[str] = []
    start = prev = values[0]
    for n in values[1:] + [None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        spans.append(str(start) if start == prev else f"{start}..{prev}")
        if n is not None:
            start = prev = n
    return ",".join(spans)


def _collapse_indices(
    items: Sequence[tuple[str, int]], notes: Mapping[str, str] | None = None
) -> list[tuple[str, int]]:
    """Merge items that differ only in numeric path components: ``blocks.0.x`` .. ``blocks.23.x``
    becomes ``blocks.0..23.x``. Items with different ``notes`` (e.g. shapes) are kept apart."""
    notes = notes or {}
    groups: dict[tuple[tuple[str | None, ...], str], list[tuple[list[str], int]]] = {}
    for item, count in items:
        parts = item.split(".")
        template = tuple(None if p.isdigit() else p for p in parts)
        groups.setdefault((template, notes.get(item, "")), []).append((parts, count))
    merged: list[tuple[str, int]] = []
    for (template, note), members in groups.items():
        rendered = [
            p if p is not None else _ranges(int(parts[i]) for parts, _ in members)
            for i, p in enumerate(template)
        ]
        text = ".".join(rendered) + (f": {note}" if note else "")
        merged.append((text, sum(count for _, count in members)))
    return merged


def summarize_keys(
    keys: Sequence[str],
    universe: Iterable[str] | None = None,
    *,
    notes: Mapping[str, str] | None = None,
    limit: int = 8,
) -> list[str]:
    """Readable lines for a list of state-dict keys, grouped and truncated.

    Whole subtrees of ``universe`` (the model's or file's full key set) collapse to ``prefix.*``,
    block indices collapse to ranges (``frame_blocks.0..23.attn.qkv.weight``), and past ``limit``
    lines the rest is counted (``... and 57 more keys``).
    """
    if not keys:
        return []
    items = (
        _collapse_subtrees(keys, universe) if universe is not None and not notes else [(k, 1) for k in keys]
    )
    merged = _collapse_indices(items, notes)
    lines = [text if count == 1 else f"{text}  ({count} keys)" for text, count in merged[:limit]]
    rest = sum(count for _, count in merged[limit:])
    if rest:
        lines.append(f"... and {rest} more key{'s' if rest > 1 else ''}")
    return lines


def _fmt_shape(shape: Shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def format_mismatch(diff: KeyDiff, *, source: str, target: str, hints: Sequence[str] = ()) -> str:
    """The message of :class:`CheckpointMismatchError`."""
    counts = []
    if diff.missing:
        counts.append(f"{len(diff.missing)} missing")
    if diff.unexpected:
        counts.append(f"{len(diff.unexpected)} unexpected")
    if diff.mismatched:
        counts.append(f"{len(diff.mismatched)} with another shape")
    lines = [
        f"checkpoint {source} does not fit {target} ({len(diff.expected)} tensors expected, "
        f"{len(diff.found)} in the checkpoint): {', '.join(counts) or 'no difference'}"
    ]
    sections = [
        ("missing from the checkpoint", summarize_keys(diff.missing, diff.expected)),
        ("unexpected in the checkpoint", summarize_keys(diff.unexpected, diff.found)),
        (
            "shape differs (checkpoint vs model)",
            summarize_keys(
                [k for k, _, _ in diff.mismatched],
                notes={k: f"{_fmt_shape(f)} vs {_fmt_shape(m)}" for k, f, m in diff.mismatched},
            ),
        ),
    ]
    for title, body in sections:
        if body:
            lines.append(f"  {title}:")
            lines.extend(f"    {line}" for line in body)
    lines.extend(f"  hint: {hint}" for hint in hints)
    return "\n".join(lines)


def mismatch_hints(diff: KeyDiff) -> list[str]:
    """Guesses at why a checkpoint does not fit, from the key sets alone."""
    hints: list[str] = []
    if diff.found and not set(diff.found) & set(diff.expected):
        hints.append(_no_overlap_hint(diff))
    else:
        hints.extend(_head_hints(diff))
    expected_total = sum(_numel(s) for s in diff.expected.values())
    found_total = sum(_numel(s) for s in diff.found.values())
    if diff.mismatched:
        hints.append(
            f"the checkpoint holds {_human_count(found_total)} values, the model "
            f"{_human_count(expected_total)}: it was probably trained with another configuration (config=...)"
        )
    return hints


def _numel(shape: Shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _no_overlap_hint(diff: KeyDiff) -> str:
    """No key matches: look for an extra (or stripped) leading component on every key."""
    firsts = Counter(k.split(".", 1)[0] for k in diff.found)
    prefix, count = firsts.most_common(1)[0]
    stripped = {k.split(".", 1)[-1] for k in diff.found if k.startswith(prefix + ".")}
    if count == len(diff.found) and stripped & set(diff.expected):
        return f"every checkpoint key starts with '{prefix}.': it was saved from a wrapper around the model"
    return "no checkpoint key names a tensor of this model: is it a VGGT checkpoint at all?"


def _head_hints(diff: KeyDiff) -> list[str]:
    """A whole head absent from the file, or present in the file but disabled in the config."""
    hints = []
    missing_tops = _whole_top_levels(diff.missing, diff.expected)
    extra_tops = _whole_top_levels(diff.unexpected, diff.found)
    for top in missing_tops:
        flag = _HEAD_FLAGS.get(top)
        fix = f"a config with {flag}=False, e.g. get_config(...).replace({flag}=False), or " if flag else ""
        hints.append(f"the checkpoint has no '{top}' weights at all; use {fix}strict=False to keep it random")
    for top in extra_tops:
        flag = _HEAD_FLAGS.get(top)
        why = f" (the config sets {flag}=False)" if flag else ""
        hints.append(f"the checkpoint carries '{top}' weights that the model has no place for{why}")
    return hints


def _whole_top_levels(keys: Sequence[str], universe: Mapping[str, Shape]) -> list[str]:
    listed = Counter(k.split(".", 1)[0] for k in keys)
    total = Counter(k.split(".", 1)[0] for k in universe)
    return [top for top, n in listed.items() if n == total[top]]


# ----------------------------------------------------------------------------------------------
# Reading files
# ----------------------------------------------------------------------------------------------
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


def _convert(tensor: Tensor, device: torch.device, dtype: torch.dtype | None) -> Tensor:
    """Move to the target; only floating tensors change dtype (integer buffers stay exact)."""
    if dtype is not None and tensor.is_floating_point():
        return tensor.to(device=device, dtype=dtype)
    return tensor.to(device=device)


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


# ----------------------------------------------------------------------------------------------
# Resolving a source to a local file
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Resolved:
    source: str
    path: Path
    revision: str | None = None  # commit hash, for files from the Hugging Face cache
    sha256: str | None = None  # full content hash when known for free (Hugging Face blob name)


def parse_repo_source(source: str) -> tuple[str, str | None, str | None] | None:
    """``org/name[@revision][:filename]`` -> ``(repo_id, revision, filename)``; None if not one."""
    match = _REPO_RE.match(source)
    if match is None:
        return None
    return match["repo"], match["revision"], match["filename"]


def _looks_like_path(text: str, revision: str | None, filename: str | None) -> bool:
    """``./x``, ``/x``, ``~/x`` or ``dir/file.pt`` is a (missing) path, not a repo id."""
    if text.startswith(("/", ".", "~")) or "\\" in text:
        return True
    return revision is None and filename is None and text.endswith(SAFETENSORS_SUFFIXES + TORCH_SUFFIXES)


def _resolve(source: str | os.PathLike[str], token: str | bool | None) -> _Resolved:
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
        files = [str(p.relative_to(path)) for p in sorted(path.rglob("*")) if p.is_file()]
        path = path / choose_checkpoint_file(files, where=f"directory {path}")
    elif not path.exists():
        raise CheckpointNotFoundError(f"checkpoint file not found: {path}")
    return _Resolved(source=str(path), path=path)


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


def _hub_cache_dir() -> Path:
    """The Hugging Face cache, read from the environment now (huggingface_hub reads it at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _hub_offline() -> bool:
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE")
    if value is not None:
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(constants.HF_HUB_OFFLINE)


def _local_file_advice(repo_id: str) -> str:
    return (
        f"Pass a local file instead, e.g. load_model('/path/to/model.safetensors'); to get one, run "
        f"`hf download {repo_id} --local-dir DIR` on a machine with network access and copy DIR here"
    )


def _hub_error(
    exc: Exception, repo_id: str, revision: str | None, cache_dir: Path, offline: bool
) -> HubCheckpointError:
    """Translate a huggingface_hub failure into one message a person can act on."""
    from huggingface_hub.utils import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"Hugging Face repo '{repo_id}'" + (f" at revision '{revision}'" if revision else "")
    if isinstance(exc, GatedRepoError):
        reason = "gated"
        text = (
            f"{where} is gated: accept its licence at https://huggingface.co/{repo_id} while logged in, then "
            "provide a token of that account (`hf auth login`, HF_TOKEN=..., or load_model(..., token=...))"
        )
    elif isinstance(exc, RepositoryNotFoundError):
        reason = "repo_not_found"
        text = f"{where} does not exist or is private (private repos need a token: `hf auth login`, HF_TOKEN)"
    elif isinstance(exc, RevisionNotFoundError):
        reason = "revision_not_found"
        text = f"{where}: no such revision (branch, tag or commit)"
    elif isinstance(exc, EntryNotFoundError) and not isinstance(exc, LocalEntryNotFoundError):
        reason = "file_not_found"
        text = f"{where} has no such file ({str(exc)[:200]})"
    else:
        reason = "offline" if offline else "unreachable"
        why = (
            "offline mode is on (HF_HUB_OFFLINE=1)"
            if offline
            else f"the hub is unreachable ({str(exc)[:200]})"
        )
        text = f"cannot fetch the checkpoint of {where}: {why}, and it is not in the local cache {cache_dir}"
    return HubCheckpointError(f"{text}. {_local_file_advice(repo_id)}.", repo_id=repo_id, reason=reason)


def _list_hub_files(
    repo_id: str, revision: str | None, cache_dir: Path, token: object, offline: bool
) -> list[str]:
    """The repo's files: from the hub, or from the cached snapshot when offline or unreachable."""
    from huggingface_hub import list_repo_files, snapshot_download
    from huggingface_hub.utils import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    network_error: Exception | None = None
    if not offline:
        try:
            return list_repo_files(repo_id, revision=revision, token=token)
        except (GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError):
            raise
        except Exception as exc:  # connection errors: their classes depend on the HTTP library
            network_error = exc
            logger.warning(
                "cannot list %s on the hub (%s); trying the local cache. Set HF_HUB_OFFLINE=1 to skip "
                "the network at start-up.",
                repo_id,
                exc,
            )
    try:
        snapshot = Path(
            snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, local_files_only=True)
        )
    except LocalEntryNotFoundError:
        if network_error is not None:
            raise network_error from None  # the reason the cache was needed is the one to report
        raise
    return [str(p.relative_to(snapshot)) for p in sorted(snapshot.rglob("*")) if p.is_file()]


def _resolve_hub(
    source: str, repo_id: str, revision: str | None, filename: str | None, *, token: str | bool | None
) -> _Resolved:
    from huggingface_hub import hf_hub_download

    cache_dir = _hub_cache_dir()
    offline = _hub_offline()
    try:
        if filename is None:
            files = _list_hub_files(repo_id, revision, cache_dir, token, offline)
            filename = choose_checkpoint_file(files, where=f"Hugging Face repo '{repo_id}'")
        local = hf_hub_download(
            repo_id, filename, revision=revision, cache_dir=cache_dir, token=token, local_files_only=offline
        )
    except CheckpointError:
        raise
    except Exception as exc:
        raise _hub_error(exc, repo_id, revision, cache_dir, offline) from exc
    return _Resolved(
        source=source,
        path=Path(local),
        revision=_snapshot_commit(Path(local)),
        sha256=_blob_sha256(Path(local)),
    )


def _snapshot_commit(path: Path) -> str | None:
    """The commit of a file in the Hugging Face cache (``.../snapshots/<commit>/<file>``)."""
    parts = path.parts
    for i, part in enumerate(parts[:-1]):
        if part == "snapshots" and re.fullmatch(r"[0-9a-f]{40}", parts[i + 1]):
            return parts[i + 1]
    return None


def _blob_sha256(path: Path) -> str | None:
    """Large (LFS) files in the Hugging Face cache are stored under their content's sha256."""
    real = path.resolve()
    if real.parent.name == "blobs" and re.fullmatch(r"[0-9a-f]{64}", real.name):
        return real.name
    return None


# ----------------------------------------------------------------------------------------------
# Building and filling the model
# ----------------------------------------------------------------------------------------------
def load_weights_into(
    model: nn.Module, state_dict: Mapping[str, Tensor], *, strict: bool = True, source: str = "state dict"
) -> KeyDiff:
    """Put ``state_dict``'s tensors into ``model`` without copying them (``assign=True``).

    The model takes the tensors as they are (dtype, device, storage), so it may have been built on
    the ``meta`` device. Shapes must always match; with ``strict`` the key sets must match too,
    otherwise missing keys keep the model's values and unexpected ones are ignored. Buffers that
    checkpoints do not carry are refilled with ``model.reset_non_persistent_buffers()`` when they
    are still on ``meta``. Raises :class:`CheckpointMismatchError` (never torch's raw message).
    """
    diff = compare_shapes(_shapes(model.state_dict()), _shapes(state_dict))
    if diff.mismatched or (strict and not diff.ok):
        raise CheckpointMismatchError(
            diff, source=source, target=_describe_model(model), hints=mismatch_hints(diff)
        )
    usable = {k: v for k, v in state_dict.items() if k in diff.expected}
    model.load_state_dict(usable, strict=False, assign=True)
    _fill_non_persistent_buffers(model)
    left = [name for name, t in _named_tensors(model) if t.is_meta]
    if left:
        raise CheckpointMismatchError(
            diff,
            source=source,
            target=_describe_model(model),
            hints=[f"the model was built on 'meta' and these stayed without values: {', '.join(left[:5])}"],
        )
    return diff


def _named_tensors(model: nn.Module) -> Iterator[tuple[str, Tensor]]:
    yield from model.named_parameters()
    yield from model.named_buffers()


def _fill_non_persistent_buffers(model: nn.Module) -> None:
    if not any(b.is_meta for b in model.buffers()):
        return
    reset = getattr(model, "reset_non_persistent_buffers", None)
    if reset is None:
        names = [n for n, b in model.named_buffers() if b.is_meta]
        raise CheckpointError(
            f"{type(model).__name__} was built on the 'meta' device and its buffers {names[:5]} are not in "
            "checkpoints; the model needs a reset_non_persistent_buffers() method to refill them"
        )
    reset()


def _describe_model(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    name = getattr(config, "name", None)
    return f"{type(model).__name__} config '{name}'" if name else type(model).__name__


def _build(config: VGGTConfig, device: torch.device) -> VGGT:
    from vggt_ros.model.vggt import VGGT

    with device:
        return VGGT(config)


_SHAPES_CACHE: dict[VGGTConfig, dict[str, Shape]] = {}


def config_shapes(config: str | VGGTConfig) -> dict[str, Shape]:
    """``{key: shape}`` of a config's state dict, from a model built on ``meta`` (no memory)."""
    cfg = get_config(config)
    if cfg not in _SHAPES_CACHE:
        _SHAPES_CACHE[cfg] = _shapes(_build(cfg, torch.device("meta")).state_dict())
    return _SHAPES_CACHE[cfg]


def _config_hints(
    found: Mapping[str, Shape], requested: VGGTConfig, metadata: Mapping[str, str]
) -> list[str]:
    """Which named config the checkpoint fits, if any (only computed when loading failed)."""
    hints = []
    saved = metadata.get("config")
    if saved and saved != requested.name:
        hints.append(f"the file says it was saved from config '{saved}'")
    for name, cfg in CONFIGS.items():
        if name == requested.name:
            continue
        diff = compare_shapes(config_shapes(cfg), found)
        if diff.ok:
            hints.append(f"the checkpoint fits config '{name}': load_model(..., config='{name}')")
        elif not diff.mismatched and not diff.unexpected and _only_whole_heads_missing(diff):
            heads = ", ".join(_whole_top_levels(diff.missing, diff.expected))
            hints.append(f"the checkpoint fits config '{name}' without {heads}")
    return hints


def _only_whole_heads_missing(diff: KeyDiff) -> bool:
    return set(_whole_top_levels(diff.missing, diff.expected)) >= {k.split(".", 1)[0] for k in diff.missing}


def _shape_check(expected: dict[str, Shape], cfg: VGGTConfig, *, strict: bool, source: str) -> ShapeCheck:
    """A check raising :class:`CheckpointMismatchError`, with hints, for a checkpoint not fitting ``cfg``."""

    def check(found: dict[str, Shape], metadata: dict[str, str]) -> None:
        diff = compare_shapes(expected, found)
        if diff.mismatched or (strict and not diff.ok):
            hints = mismatch_hints(diff) + _config_hints(found, cfg, metadata)
            raise CheckpointMismatchError(
                diff, source=source, target=f"VGGT config '{cfg.name}'", hints=hints
            )

    return check


def _count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def load_model(
    source: str | os.PathLike[str] | None,
    *,
    config: str | VGGTConfig = "vggt-1b",
    device: DeviceLike = "cpu",
    dtype: torch.dtype = torch.float32,
    strict: bool = True,
    identity: IdentityMethod = "fast",
    token: str | bool | None = None,
) -> tuple[VGGT, WeightsInfo]:
    """Build ``VGGT(config)`` on ``device`` in ``dtype`` with the weights of ``source``, in eval mode.

    Args:
        source: local file or directory, Hugging Face repo id ``org/name[@revision][:filename]``,
            or None for an untrained (randomly initialised) model.
        config: named config (``vggt-1b``, ``vggt-small``, ``vggt-tiny``) or a :class:`VGGTConfig`.
        device, dtype: where the weights live; floating tensors are converted while reading, one
            at a time. The result equals ``VGGT(config).to(device, dtype)`` with the weights loaded.
        strict: the checkpoint must have exactly the model's keys. With ``strict=False`` missing
            tensors keep their random initialisation and unexpected ones are ignored (both listed
            in the WeightsInfo); that path builds the model for real first, so it needs room for
            the model and the checkpoint together. Shapes must match either way.
        identity: how :attr:`WeightsInfo.identity` is computed, see :func:`file_identity`. The
            default ``fast`` costs milliseconds, which is what a robot start-up wants: the name only
            has to change when the weights file changes (logs, compiled-engine caches). Use
            ``sha256`` when the name must be portable across machines (reports, published files).
            Files from the Hugging Face cache get their sha256 for free either way.
        token: Hugging Face token for gated or private repos (default: the logged-in one / HF_TOKEN).

    Raises:
        CheckpointError: one of its subclasses, with a message naming the file or repo.
    """
    start = time.perf_counter()
    cfg = get_config(config)
    device = torch.device(device)
    if source is None:
        model = _build(cfg, device).to(dtype=dtype).eval()
        info = WeightsInfo(
            source=None,
            path=None,
            format="untrained",
            identity="untrained",
            identity_method="none",
            config=cfg.name,
            num_parameters=_count_parameters(model),
            dtype=_dtype_name(dtype),
            device=str(_model_device(model, device)),
            load_seconds=time.perf_counter() - start,
        )
        logger.warning("%s", info)
        return model, info

    resolved = _resolve(source, token)
    # strict: build on meta and adopt the checkpoint's tensors (one copy of the model in memory).
    # Not strict: tensors missing from the file need real, initialised parameters to fall back to.
    model = _build(cfg, torch.device("meta") if strict else device)
    if not strict:
        model.to(dtype=dtype)
    check = _shape_check(_shapes(model.state_dict()), cfg, strict=strict, source=str(resolved.path))
    fmt, state, _ = _read_checkpoint(resolved.path, device, dtype, check)
    diff = load_weights_into(model, state, strict=strict, source=str(resolved.path))
    del state
    model = model.to(device=device, dtype=dtype).eval()  # non-persistent buffers follow the weights

    if resolved.sha256:
        ident, method = resolved.sha256[:16], "sha256"
    else:
        ident, method = file_identity(resolved.path, identity), identity
    info = WeightsInfo(
        source=resolved.source,
        path=str(resolved.path),
        format=fmt,
        identity=ident,
        identity_method=method,
        config=cfg.name,
        num_parameters=_count_parameters(model),
        dtype=_dtype_name(dtype),
        device=str(_model_device(model, device)),
        revision=resolved.revision,
        missing_keys=tuple(diff.missing),
        unexpected_keys=tuple(diff.unexpected),
        load_seconds=time.perf_counter() - start,
    )
    (logger.warning if diff.missing or diff.unexpected else logger.info)("%s", info)
    return model, info


def _model_device(model: nn.Module, default: torch.device) -> torch.device:
    return next((p.device for p in model.parameters()), default)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


# ----------------------------------------------------------------------------------------------
# Saving and converting
# ----------------------------------------------------------------------------------------------
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
        config_name = getattr(getattr(model_or_state_dict, "config", None), "name", None)
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


if __name__ == "__main__":
    sys.exit(main())
