"""Weight averaging of exported models of one lineage (``vggt-ros average-models``).

Two fine-tunes that start from the same weights usually stay in one basin of the loss, so the
element-wise (weighted) mean of their parameters is a model too, often as good as the better of
the two on what each was good at ("model soups", Wortsman et al., ICML 2022). Averaging models
that do not share a starting point gives noise: this module checks only what it can (same
config, same image size, the same tensor names and shapes); the lineage is the caller's claim,
recorded in the output's provenance with every input's sha256 and provenance.

Every tensor is averaged in float64 and written in the output dtype; integer tensors (none in
VGGT today) must be equal in every input and are copied.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from vggt_ros.model.checkpoint import CheckpointError
from vggt_ros.train.checkpoints import EXPORT_FORMAT


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def normalized_weights(weights: Sequence[float] | None, count: int) -> list[float]:
    """The mixing weights for ``count`` models, scaled to sum to 1 (equal when ``weights`` is None).

    Raises:
        ValueError: not one weight per model, a weight below zero, or all zero.
    """
    if count < 2:
        raise ValueError(f"averaging needs at least two models, got {count}")
    if weights is None:
        return [1.0 / count] * count
    weights = [float(w) for w in weights]
    if len(weights) != count:
        raise ValueError(f"{len(weights)} weights for {count} models: give one weight per model")
    if any(not w >= 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"weights must be >= 0 and not all zero, got {weights}")
    total = sum(weights)
    return [w / total for w in weights]


def _header(path: Path) -> tuple[dict[str, str], dict[str, tuple[int, ...]]]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read model file {path}: {exc}") from None
    return metadata, shapes


def average_models(
    sources: Sequence[str | Path],
    out: str | Path,
    weights: Sequence[float] | None = None,
    dtype: torch.dtype = torch.float16,
) -> Path:
    """Write the weighted mean of exported model files (``vggt-ros export-model``) to ``out``.

    Args:
        sources: two or more safetensors model files of one config, image size and key set.
        out: output safetensors file; its metadata keeps the first input's config, weights kind
            and image size, and a provenance naming every input (path, sha256, weight and the
            input's own provenance).
        weights: one mixing weight per source (normalized to sum 1); equal when None.
        dtype: floating dtype of the written tensors.

    Raises:
        CheckpointError: a missing or unreadable file, or inputs that differ in config, image
            size, tensor names or shapes (named in the message).
        ValueError: bad weights (see :func:`normalized_weights`).
    """
    paths = [Path(s) for s in sources]
    mix = normalized_weights(weights, len(paths))
    for path in paths:
        if not path.is_file():
            raise CheckpointError(f"model file {path} does not exist")
    headers = [_header(p) for p in paths]
    first_meta, first_shapes = headers[0]
    for path, (meta, shapes) in zip(paths[1:], headers[1:]):
        for field in ("config", "image_size"):
            if meta.get(field) != first_meta.get(field):
                raise CheckpointError(
                    f"{path} has {field} {meta.get(field)!r} but {paths[0]} has "
                    f"{first_meta.get(field)!r}: only models of one lineage can be averaged"
                )
        if shapes.keys() != first_shapes.keys():
            extra = sorted(shapes.keys() - first_shapes.keys())[:5]
            missing = sorted(first_shapes.keys() - shapes.keys())[:5]
            raise CheckpointError(
                f"{path} and {paths[0]} hold different tensors (only in {path.name}: {extra}; "
                f"missing there: {missing})"
            )
        wrong = [k for k in shapes if shapes[k] != first_shapes[k]]
        if wrong:
            k = wrong[0]
            raise CheckpointError(
                f"{path} and {paths[0]} differ in {len(wrong)} tensor shape(s), e.g. {k}: "
                f"{shapes[k]} against {first_shapes[k]}"
            )
    averaged: dict[str, torch.Tensor] = {}
    with contextlib.ExitStack() as stack:
        handles = [stack.enter_context(safe_open(str(p), framework="pt", device="cpu")) for p in paths]
        for key in first_shapes:
            tensors = [h.get_tensor(key) for h in handles]
            if not tensors[0].is_floating_point():
                if any(not torch.equal(t, tensors[0]) for t in tensors[1:]):
                    raise CheckpointError(f"integer tensor {key} differs between the inputs: not averaged")
                averaged[key] = tensors[0].clone()
                continue
            total = sum(w * t.to(torch.float64) for w, t in zip(mix, tensors))
            averaged[key] = total.to(dtype).contiguous()
    inputs = []
    for path, weight, (meta, _) in zip(paths, mix, headers):
        try:
            provenance = json.loads(meta.get("provenance", "{}"))
        except ValueError:
            provenance = {}
        digest = _sha256(path)
        inputs.append({"file": path.name, "sha256": digest, "weight": weight, "provenance": provenance})
    metadata = {
        "format": EXPORT_FORMAT,
        "weights": first_meta.get("weights", "ema"),
        "provenance": json.dumps({"average": inputs}, sort_keys=True),
    }
    for field in ("config", "image_size"):
        if field in first_meta:
            metadata[field] = first_meta[field]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(averaged, str(out), metadata=metadata)
    return out
