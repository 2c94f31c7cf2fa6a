"""Checkpoints of training runs, resumable exactly, and the export of a trained model.

Layout of ``RUN/checkpoints/step_0001234/`` (written to a temporary folder, then renamed, so a
run killed mid-write never leaves a half checkpoint behind):

* ``model.safetensors``: the network's fp32 weights (loadable by ``vggt-ros predict``);
* ``ema.safetensors``: the exponential moving average of the weights (when the run keeps one);
* ``trainer_state.pt``: optimizer and scheduler state, step, samples seen, elapsed time,
  written with ``torch.save`` and read back with ``torch.load(weights_only=True)`` (tensors and
  plain containers only, never arbitrary objects).

:func:`export_model` writes one safetensors file (fp16 by default) with the model config and
the run's provenance in its metadata: what ships as the embedded default.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from vggt_ros.model.checkpoint import CheckpointError

CHECKPOINT_DIR = "checkpoints"
MODEL_FILE, EMA_FILE, STATE_FILE = "model.safetensors", "ema.safetensors", "trainer_state.pt"
EXPORT_FORMAT = "vggt_ros.model/1"


class ExponentialMovingAverage:
    """fp32 running average of a model's floating tensors (parameters and buffers).

    ``decay`` warms up as ``min(decay, (1 + n) / (10 + n))`` over the first updates so early,
    random weights fade out quickly.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = float(decay)
        self.updates = 0
        self.shadow = {
            k: v.detach().float().clone() for k, v in model.state_dict().items() if v.is_floating_point()
        }

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for k, v in model.state_dict().items():
            if k in self.shadow:
                self.shadow[k].lerp_(v.detach().float(), 1.0 - d)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, state: dict[str, torch.Tensor], updates: int) -> None:
        missing = set(self.shadow) - set(state)
        if missing:
            raise CheckpointError(f"EMA checkpoint lacks {len(missing)} tensors, e.g. {sorted(missing)[:3]}")
        for k in self.shadow:
            self.shadow[k].copy_(state[k])
        self.updates = updates

    def copy_to(self, model: nn.Module) -> None:
        """Load the averaged weights into ``model`` (same architecture)."""
        state = model.state_dict()
        model.load_state_dict({**state, **{k: v.to(state[k].dtype) for k, v in self.shadow.items()}})


@dataclass
class TrainerState:
    step: int = 0
    samples: int = 0
    elapsed_seconds: float = 0.0


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def checkpoint_dirs(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("step_*") if p.is_dir() and (p / STATE_FILE).is_file())


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = checkpoint_dirs(run_dir)
    return found[-1] if found else None


def save_checkpoint(
    run_dir: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: TrainerState,
    ema: ExponentialMovingAverage | None,
    keep: int = 2,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write a checkpoint of ``state.step`` atomically and keep only the ``keep`` newest."""
    root = Path(run_dir) / CHECKPOINT_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{state.step:07d}"
    tmp = root / f".tmp_step_{state.step:07d}_{time.time_ns()}"
    tmp.mkdir()
    meta = {"format": "vggt_ros.train_checkpoint/1", "step": str(state.step), **(metadata or {})}
    save_file(_contiguous(model.state_dict()), str(tmp / MODEL_FILE), metadata=meta)
    if ema is not None:
        save_file(_contiguous(ema.state_dict()), str(tmp / EMA_FILE), metadata=meta)
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "step": state.step,
            "samples": state.samples,
            "elapsed_seconds": state.elapsed_seconds,
            "ema_updates": ema.updates if ema is not None else 0,
        },
        tmp / STATE_FILE,
    )
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    for old in checkpoint_dirs(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    ema: ExponentialMovingAverage | None = None,
) -> TrainerState:
    """Restore a checkpoint written by :func:`save_checkpoint` into the given objects.

    Raises:
        CheckpointError: missing files, or weights that do not fit the model (named keys).
    """
    path = Path(path)
    for name in (MODEL_FILE, STATE_FILE):
        if not (path / name).is_file():
            raise CheckpointError(f"{path} is not a training checkpoint: {name} is missing")
    device = next(model.parameters()).device
    weights = load_file(str(path / MODEL_FILE), device=str(device))
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(weights)), sorted(set(weights) - set(own))
    wrong = sorted(k for k in set(own) & set(weights) if own[k].shape != weights[k].shape)
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{path / MODEL_FILE} does not fit the model: {len(missing)} missing (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]}), {len(wrong)} of another shape "
            f"(e.g. {wrong[:3]}); was the run started with another --model?"
        )
    model.load_state_dict(weights)
    trainer = torch.load(path / STATE_FILE, map_location=device, weights_only=True)
    if optimizer is not None:
        optimizer.load_state_dict(trainer["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(trainer["scheduler"])
    if ema is not None:
        if not (path / EMA_FILE).is_file():
            raise CheckpointError(f"{path} has no {EMA_FILE} but the run keeps an EMA")
        ema.load_state_dict(load_file(str(path / EMA_FILE), device=str(device)), int(trainer["ema_updates"]))
    return TrainerState(int(trainer["step"]), int(trainer["samples"]), float(trainer["elapsed_seconds"]))


def export_model(
    checkpoint: str | Path,
    out: str | Path,
    config_name: str,
    use_ema: bool = True,
    dtype: torch.dtype = torch.float16,
    provenance: dict[str, Any] | None = None,
    image_size: int | None = None,
) -> Path:
    """One safetensors file of a checkpoint's weights (EMA by default) in ``dtype``, with the
    model config, the image width it was trained at (``image_size``: tools load the file at it)
    and ``provenance`` (JSON) in its metadata."""
    checkpoint = Path(checkpoint)
    source = checkpoint / (EMA_FILE if use_ema and (checkpoint / EMA_FILE).is_file() else MODEL_FILE)
    if not source.is_file():
        raise CheckpointError(f"{checkpoint} has no {MODEL_FILE}")
    state = load_file(str(source))
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    metadata = {
        "format": EXPORT_FORMAT,
        "config": config_name,
        "weights": "ema" if source.name == EMA_FILE else "raw",
        "provenance": json.dumps(provenance or {}, sort_keys=True),
    }
    if image_size:
        metadata["image_size"] = str(int(image_size))
    save_file(_contiguous(state), str(out), metadata=metadata)
    return out


def repeated_windows_warning(
    init_checkpoint: str | None, seed: int, procedural: dict[str, Any] | None
) -> str | None:
    """Why a run from ``init_checkpoint`` would train on windows its weights already saw, or None.

    Procedural window ``k`` is a pure function of the data seed and ``k``
    (:mod:`vggt_ros.train.data`), and every run draws from window 0. A restart with the seed and
    procedural settings of the run that exported ``init_checkpoint`` (its ``provenance``
    metadata, :func:`export_model`) therefore sees that run's windows again, in the same order.
    Only local exported files are read; anything else (a folder, a hub id, a file without
    provenance) gives None.
    """
    if not init_checkpoint or not str(init_checkpoint).endswith(".safetensors"):
        return None
    path = Path(init_checkpoint)
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        provenance = json.loads(meta.get("provenance", "{}"))
    except (OSError, ValueError):
        return None
    data = provenance.get("data") or {}
    if procedural is not None:
        procedural = json.loads(json.dumps(procedural))  # tuples as the metadata's JSON lists
    if provenance.get("seed") != seed or procedural is None or data.get("procedural") != procedural:
        return None
    return (
        f"{path.name} was trained on the procedural windows of --seed {seed} with these scene "
        f"settings ({provenance.get('samples', '?')} windows from window 0, run "
        f"{provenance.get('run', '?')}); this run draws the same windows again in the same order. "
        "Pass a --seed that no earlier run of these weights used."
    )
