"""Building VGGT and filling it with a checkpoint's weights: :func:`load_model`.

The network is built on the ``meta`` device (no storage) and adopts the checkpoint's tensors,
already in the target dtype and device, so the model never exists twice in memory. The file's
shapes are checked against the config before any tensor is read, with hints naming the config
the checkpoint fits. :class:`WeightsInfo` records where the weights came from.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from vggt_ros.model.checkpoint.common import (
    DeviceLike,
    Shape,
    ShapeCheck,
    _config_name,
    _human_count,
    _shapes,
)
from vggt_ros.model.checkpoint.errors import CheckpointError, CheckpointMismatchError
from vggt_ros.model.checkpoint.formats import _read_checkpoint
from vggt_ros.model.checkpoint.identity import IdentityMethod, file_identity
from vggt_ros.model.checkpoint.mismatch import KeyDiff, _whole_top_levels, compare_shapes, mismatch_hints
from vggt_ros.model.checkpoint.sources import _resolve
from vggt_ros.model.config import CONFIGS, VGGTConfig, get_config

if TYPE_CHECKING:
    from vggt_ros.model.vggt import VGGT

logger = logging.getLogger(__package__)  # the package's logger, as before the split into modules


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
    name = _config_name(model)
    return f"{type(model).__name__} config '{name}'" if name else type(model).__name__


def _build(config: VGGTConfig, device: torch.device) -> VGGT:
    from vggt_ros.model.vggt import VGGT

    with device:
        return VGGT(config)


#: Seed of the untrained model's random initialisation (``load_model(None)``).
UNTRAINED_SEED = 0


def _untrained(config: VGGTConfig, device: torch.device) -> VGGT:
    """``VGGT(config)`` on ``device`` with its default initialisation drawn from ``UNTRAINED_SEED``;
    the random state of the CPU and of ``device`` is restored afterwards, other GPUs untouched."""
    cuda = device.type == "cuda"
    gpus = [device.index if device.index is not None else torch.cuda.current_device()] if cuda else []
    with torch.random.fork_rng(devices=gpus):
        torch.default_generator.manual_seed(UNTRAINED_SEED)
        for gpu in gpus:
            with torch.cuda.device(gpu):
                torch.cuda.manual_seed(UNTRAINED_SEED)
        return _build(config, device)


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
            or None for an untrained (randomly initialised) model: PyTorch's default
            initialisation drawn from the fixed seed ``UNTRAINED_SEED``, so every run of a config
            builds the same network (reports and baselines reproduce) and the caller's random
            state is left as it was.
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
        model = _untrained(cfg, device).to(dtype=dtype).eval()
        info = _weights_info(
            model,
            cfg,
            dtype,
            device,
            start,
            source=None,
            path=None,
            format="untrained",
            identity="untrained",
            identity_method="none",
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
    info = _weights_info(
        model,
        cfg,
        dtype,
        device,
        start,
        source=resolved.source,
        path=str(resolved.path),
        format=fmt,
        identity=ident,
        identity_method=method,
        revision=resolved.revision,
        missing_keys=tuple(diff.missing),
        unexpected_keys=tuple(diff.unexpected),
    )
    (logger.warning if diff.missing or diff.unexpected else logger.info)("%s", info)
    return model, info


def _weights_info(
    model: nn.Module,
    cfg: VGGTConfig,
    dtype: torch.dtype,
    device: torch.device,
    start: float,
    **fields: object,
) -> WeightsInfo:
    """A :class:`WeightsInfo` with the fields every loaded model shares, timed from ``start``."""
    return WeightsInfo(
        **fields,
        config=cfg.name,
        num_parameters=sum(p.numel() for p in model.parameters()),
        dtype=str(dtype).removeprefix("torch."),
        device=str(next((p.device for p in model.parameters()), device)),
        load_seconds=time.perf_counter() - start,
    )
