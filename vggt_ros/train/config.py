"""Everything a training run is made of, in one dataclass saved next to its checkpoints.

A run directory holds ``config.json`` (this), ``checkpoints/step_XXXXXXX/`` (see
:mod:`vggt_ros.train.checkpoints`), ``tensorboard/`` and ``log.jsonl``. Resuming reads the
saved config; options that would change the run's meaning (model, data, batch) must match.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vggt_ros.eval.procedural import ProceduralSettings
from vggt_ros.train.losses import LossWeights

# Fields that may differ when a run is resumed (how long, how often, where): everything else
# defines the run and must match the saved config.
RESUMABLE_CHANGES = {
    "steps",
    "time_limit_minutes",
    "checkpoint_every",
    "keep_checkpoints",
    "validate_every",
    "log_every",
    "progress",
    "device",
    "compile",
    "dataloader_prefetch",
    "render_process",
}


@dataclass
class TrainConfig:
    """A training run.

    Model:
        model: named config (``vggt-compact``, ``vggt-tiny``, ``vggt-small``, ``vggt-1b``).
        init_checkpoint: weights to start from (fine-tuning): file, folder or HF repo id.
        freeze_encoder: keep the per-frame DINOv2 encoder fixed (only with init_checkpoint).
        heads: which heads to train (a subset of camera, depth, point, track).
        position_init: the encoder's position table at the start: ``default`` (the model's
            own: random ``trunc_normal(0.02)`` from scratch, the checkpoint's when fine-tuning)
            or ``sincos`` (a 2D sine-cosine table, overwriting the checkpoint's if any; see
            :meth:`~vggt_ros.model.encoder.PatchEncoder.init_sincos_positions`).
        layer_scale_init: start value of every layer-scale gain of the trunk's frame and global
            blocks and of the camera head's trunk (0: the model's own, 0.01 as VGGT-1B; applied
            after any ``init_checkpoint``). See :func:`~vggt_ros.train.trainer.set_trunk_layer_scale`.
    Data:
        procedural: settings of the renderer (None: no procedural data).
        large_room_share: share of the procedural windows rendered in rooms larger than every
            held-out room (:meth:`~vggt_ros.eval.procedural.ProceduralSettings.large_rooms`); 0
            renders every window with ``procedural`` as it is.
        bags: ground-truth bags (from ``vggt-ros generate`` / ``convert-dataset``).
        bag_weight: share of windows drawn from the bags when both are used.
        bag_max_gap: largest frame step inside a bag window.
        bag_size: image size (H, W) of bag windows when there is no procedural data (with it,
            bags are read at the procedural size: one batch, one size). See :attr:`image_hw`.
        bag_frames: frames per bag window when there is no procedural data (with it, the
            procedural ``frames``). See :attr:`frames`.
        validation_windows: held-out windows (procedural, validation seed stream, held-out
            settings) scored every ``validate_every`` steps.
        validation_seed: the seed those windows are drawn from (with the validation stream:
            never a training window, whatever ``seed``). Fixed by default so that runs with
            different ``seed`` values validate on the same windows and their figures compare;
            a run saved before this option existed keeps validating on its own ``seed``'s.
        min_frames: 0 trains every window at its full length (``frames``); from 2 to
            ``frames``, each step trains on the first S frames of its windows, S drawn per step
            uniformly from [min_frames, frames] (the same S on every process, a function of the
            seed and the step, so a resumed run draws the same). A model trained on one window
            length does worse at others (docs/training.md, tenth session); the node runs
            whatever ``window.size`` x cameras it is given.
    Optimisation:
        steps, batch_size (windows per step, all processes together), lr, min_lr_ratio (cosine
        floor), warmup_steps, weight_decay, betas, grad_clip, ema_decay (0: no EMA), bf16,
        gradient_checkpointing, compile (torch.compile each transformer block and dense head;
        see :mod:`vggt_ros.train.compile`).
    Bookkeeping:
        seed, checkpoint_every, keep_checkpoints, validate_every, log_every,
        time_limit_minutes (stop cleanly, with a checkpoint, after this long; 0: no limit),
        dataloader_prefetch (draw the next batch while a step trains), render_process (draw it
        in a separate process instead of a thread; see :mod:`vggt_ros.train.render_process`).
    """

    model: str = "vggt-compact"
    init_checkpoint: str | None = None
    freeze_encoder: bool = False
    heads: tuple[str, ...] = ("camera", "depth", "point", "track")
    position_init: str = "default"
    layer_scale_init: float = 0.0
    procedural: ProceduralSettings | None = field(default_factory=ProceduralSettings)
    large_room_share: float = 0.0
    bags: tuple[str, ...] = ()
    bag_weight: float = 0.5
    bag_max_gap: int = 3
    bag_size: tuple[int, int] = (140, 182)
    bag_frames: int = 8
    validation_windows: int = 32
    validation_seed: int = 0
    min_frames: int = 0
    steps: int = 10000
    batch_size: int = 16
    lr: float = 3e-4
    min_lr_ratio: float = 0.05
    warmup_steps: int = 500
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    bf16: bool = True
    gradient_checkpointing: bool = False
    compile: bool = False
    loss: LossWeights = field(default_factory=LossWeights)
    seed: int = 0
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    validate_every: int = 1000
    log_every: int = 20
    time_limit_minutes: float = 0.0
    device: str = "auto"
    progress: bool = True
    dataloader_prefetch: bool = True
    render_process: bool = False

    def __post_init__(self) -> None:
        bad_heads = set(self.heads) - {"camera", "depth", "point", "track"}
        if bad_heads or not self.heads:
            raise ValueError(
                f"heads must be a non-empty subset of camera, depth, point, track; got {self.heads}"
            )
        if (self.gradient_checkpointing or self.compile) and self.loss.attention_match > 0:
            raise ValueError(
                "the attention_match loss records the global blocks' attention inputs with forward "
                "hooks, which gradient checkpointing recomputes and torch.compile traces away: "
                "train it without --gradient-checkpointing and --compile"
            )
        if self.position_init not in ("default", "sincos"):
            raise ValueError(f"position_init must be 'default' or 'sincos', got {self.position_init!r}")
        if self.layer_scale_init < 0:
            raise ValueError(
                f"layer_scale_init must be >= 0 (0: keep the model's), got {self.layer_scale_init}"
            )
        if self.freeze_encoder and not self.init_checkpoint:
            raise ValueError("freeze_encoder needs init_checkpoint (a frozen random encoder learns nothing)")
        if self.procedural is None and not self.bags:
            raise ValueError("no training data: give procedural settings and/or bags")
        for name in (
            "steps",
            "batch_size",
            "checkpoint_every",
            "validate_every",
            "log_every",
            "keep_checkpoints",
            "bag_frames",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"lr must be > 0 and min_lr_ratio in [0, 1], got {self.lr}, {self.min_lr_ratio}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.min_frames and not 2 <= self.min_frames <= self.frames:
            raise ValueError(f"min_frames must be 0 or in [2, frames={self.frames}], got {self.min_frames}")
        if not 0 <= self.large_room_share <= 1:
            raise ValueError(f"large_room_share must be in [0, 1], got {self.large_room_share}")
        if self.large_room_share and self.procedural is None:
            raise ValueError("large_room_share needs procedural data (a share of the procedural windows)")
        if not 0 <= self.bag_weight <= 1:
            raise ValueError(f"bag_weight must be in [0, 1], got {self.bag_weight}")
        from vggt_ros.model.config import get_config

        patch = get_config(self.model).patch_size
        p = self.procedural
        if p is not None and (p.height % patch or p.width % patch):
            raise ValueError(
                f"procedural image size {p.height}x{p.width} must be multiples of {patch} (patch size)"
            )
        h, w = self.bag_size
        if p is None and (h <= 0 or w <= 0 or h % patch or w % patch):
            raise ValueError(f"bag image size {h}x{w} must be positive multiples of {patch} (patch size)")
        if p is None and "track" in self.heads and min(h, w) < 128:
            raise ValueError(
                f"bag image size {h}x{w} is too small for the track head (>= 128 px a side); "
                "drop 'track' from heads or train at a larger size"
            )
        if p is not None and "track" in self.heads and p.track_queries and min(p.height, p.width) < 128:
            raise ValueError(
                f"procedural image size {p.height}x{p.width} is too small for the track head "
                "(>= 128 px a side); drop 'track' from heads or render larger images"
            )

    @property
    def frames(self) -> int:
        """Frames per training window (the procedural ``frames``, else ``bag_frames``)."""
        return self.procedural.frames if self.procedural is not None else self.bag_frames

    @property
    def image_hw(self) -> tuple[int, int]:
        """(H, W) of every training image: the procedural size, else ``bag_size``. The model is
        trained at this size and runs best at it (``image_size`` = W in the exported file)."""
        if self.procedural is not None:
            return self.procedural.height, self.procedural.width
        return tuple(self.bag_size)  # type: ignore[return-value]

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["procedural"] = None if self.procedural is None else self.procedural.to_dict()
        out["loss"] = dataclasses.asdict(self.loss)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        data = dict(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training options: {', '.join(unknown)}")
        # Runs saved before validation_seed existed validated on their own seed's windows.
        data.setdefault("validation_seed", data.get("seed", 0))
        if data.get("procedural") is not None:
            data["procedural"] = ProceduralSettings.from_dict(data["procedural"])
        if "loss" in data:
            data["loss"] = LossWeights(**data["loss"])
        for key in ("heads", "bags", "betas", "bag_size"):
            if key in data and data[key] is not None:
                data[key] = tuple(data[key])
        return cls(**data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def differences(self, other: TrainConfig) -> list[str]:
        """Fields that define the run and differ between the two configs."""
        a, b = self.to_dict(), other.to_dict()
        return sorted(k for k in a if k not in RESUMABLE_CHANGES and a[k] != b[k])
