"""On-disk cache of serialised TensorRT engines, keyed by everything that makes an engine valid.

A TensorRT engine is only valid for the weights it was built from, the GPU model it was tuned
on (compute capability and name), the TensorRT version that serialised it, its precision and
its optimisation profile (frame range and image size). :class:`EngineKey` holds all of these;
its digest names the files, so any change of any field gives a different file and a rebuild.

Layout (one flat folder, default ``$XDG_CACHE_HOME/vggt_ros/tensorrt``)::

    <section>-<precision>-<digest16>.engine   the serialised engine (opaque bytes)
    <section>-<precision>-<digest16>.json     metadata: the full key, size and sha256 of the engine

An entry is used only when the metadata parses, its key equals the requested key field by field,
and the engine file has the recorded size and sha256; otherwise it is deleted and rebuilt, never
used. Writes go to a temporary file in the same folder and are renamed into place (atomic on
POSIX), engine first and metadata last, so a crash mid-write leaves no entry that looks valid.
This module needs neither TensorRT nor a GPU; it is tested on CPU.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1  # bump when the file layout or the key's meaning changes


def default_cache_dir() -> Path:
    """``$VGGT_ROS_ENGINE_CACHE``, else ``$XDG_CACHE_HOME/vggt_ros/tensorrt`` (``~/.cache``)."""
    explicit = os.environ.get("VGGT_ROS_ENGINE_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vggt_ros" / "tensorrt"


@dataclass(frozen=True)
class FrameProfile:
    """A TensorRT optimisation profile: frame-count range (min/opt/max) at a fixed image size."""

    min_frames: int
    opt_frames: int
    max_frames: int
    height: int
    width: int

    def __post_init__(self) -> None:
        if not 1 <= self.min_frames <= self.opt_frames <= self.max_frames:
            raise ValueError(
                f"profile frames must satisfy 1 <= min <= opt <= max, got "
                f"{self.min_frames}/{self.opt_frames}/{self.max_frames}"
            )
        if self.height <= 0 or self.width <= 0:
            raise ValueError(f"profile image size must be positive, got {self.height}x{self.width}")

    def clamp(self, max_frames: int) -> FrameProfile:
        """The same profile with every frame count capped at ``max_frames`` (head chunks)."""
        cap = max(1, max_frames)
        return dataclasses.replace(
            self,
            min_frames=min(self.min_frames, cap),
            opt_frames=min(self.opt_frames, cap),
            max_frames=min(self.max_frames, cap),
        )


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine's validity depends on.

    Attributes:
        section: ``aggregator``, ``camera``, ``depth`` or ``points``.
        weights_identity: identifies the exact weights (a checkpoint digest or
            :func:`~vggt_ros.engine.tensorrt_backend.weights_fingerprint`).
        gpu_name: e.g. ``Orin`` or ``NVIDIA H100 80GB HBM3``.
        compute_capability: e.g. ``8.7``.
        tensorrt_version: ``tensorrt.__version__``.
        precision: ``fp32``, ``fp16`` or ``bf16``.
        profile: frame range and image size.
        variant: anything else that changes the graph (exported layers, export schema).
    """

    section: str
    weights_identity: str
    gpu_name: str
    compute_capability: str
    tensorrt_version: str
    precision: str
    profile: FrameProfile
    variant: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EngineKey:
        fields = dict(data)
        fields["profile"] = FrameProfile(**fields["profile"])
        return cls(**fields)

    def digest(self) -> str:
        """sha256 of the canonical JSON of every field (stable across runs and machines)."""
        canonical = json.dumps(
            {"format": CACHE_FORMAT, **self.to_dict()}, sort_keys=True, separators=(",", ":")
        )
        return hashlib.sha256(canonical.encode()).hexdigest()

    def filename(self) -> str:
        """Stable file stem: readable prefix plus 16 hex digits of the digest."""
        return f"{self.section}-{self.precision}-{self.digest()[:16]}"


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class EngineCache:
    """Serialised engines in one folder; see the module docstring for layout and rules."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()

    def engine_path(self, key: EngineKey) -> Path:
        return self.root / f"{key.filename()}.engine"

    def metadata_path(self, key: EngineKey) -> Path:
        return self.root / f"{key.filename()}.json"

    def lookup(self, key: EngineKey) -> bytes | None:
        """The engine bytes for ``key``, or None. Invalid entries are deleted (and logged)."""
        meta_path, engine_path = self.metadata_path(key), self.engine_path(key)
        if not meta_path.exists():
            if engine_path.exists():  # an engine without metadata is a write that never finished
                self._drop(key, "engine file without metadata")
            return None
        problem = self._check(key, meta_path, engine_path)
        if problem is not None:
            self._drop(key, problem)
            return None
        return engine_path.read_bytes()

    def _check(self, key: EngineKey, meta_path: Path, engine_path: Path) -> str | None:
        """None when the entry is sound, else what is wrong with it."""
        try:
            meta = json.loads(meta_path.read_text())
            stored = EngineKey.from_dict(meta["key"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return f"unreadable metadata ({exc})"
        if meta.get("format") != CACHE_FORMAT:
            return f"cache format {meta.get('format')} != {CACHE_FORMAT}"
        if stored != key:
            changed = [k for k, v in key.to_dict().items() if stored.to_dict().get(k) != v]
            return f"metadata key differs in {', '.join(changed) or 'format'}"
        try:
            data = engine_path.read_bytes()
        except OSError as exc:
            return f"engine file unreadable ({exc})"
        if len(data) != meta.get("size") or hashlib.sha256(data).hexdigest() != meta.get("sha256"):
            return "engine file does not match its recorded size/sha256 (corrupt or truncated)"
        return None

    def _drop(self, key: EngineKey, why: str) -> None:
        logger.warning("TensorRT engine cache: discarding %s: %s", key.filename(), why)
        self.invalidate(key)

    def store(self, key: EngineKey, engine: bytes) -> Path:
        """Write ``engine`` for ``key`` atomically; returns the engine's path."""
        self.root.mkdir(parents=True, exist_ok=True)
        engine = bytes(engine)
        meta = {
            "format": CACHE_FORMAT,
            "key": key.to_dict(),
            "digest": key.digest(),
            "size": len(engine),
            "sha256": hashlib.sha256(engine).hexdigest(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        self.invalidate(key)  # no stale metadata may ever describe the new engine bytes
        _atomic_write(self.engine_path(key), engine)
        _atomic_write(self.metadata_path(key), json.dumps(meta, indent=2, sort_keys=True).encode())
        return self.engine_path(key)

    def invalidate(self, key: EngineKey) -> None:
        """Remove the entry for ``key`` (metadata first, so a half-removed entry is invalid)."""
        for path in (self.metadata_path(key), self.engine_path(key)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def get_or_build(self, key: EngineKey, build: Callable[[], bytes]) -> tuple[bytes, bool]:
        """Cached bytes for ``key``, or ``build()`` stored under it. Returns (bytes, was_cached)."""
        cached = self.lookup(key)
        if cached is not None:
            logger.info("TensorRT engine cache hit: %s", self.engine_path(key))
            return cached, True
        logger.info("TensorRT engine cache miss: building %s", key.filename())
        engine = build()
        self.store(key, engine)
        return bytes(engine), False

    def entries(self) -> Iterator[EngineKey]:
        """Keys of every entry whose metadata parses (for listing and cleaning up)."""
        if not self.root.is_dir():
            return
        for meta_path in sorted(self.root.glob("*.json")):
            try:
                yield EngineKey.from_dict(json.loads(meta_path.read_text())["key"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
