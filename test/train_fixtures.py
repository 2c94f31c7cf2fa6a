"""Small training configurations shared by the training tests (CPU, vggt-tiny, seconds a step)."""

from __future__ import annotations

from vggt_ros.eval.procedural import ProceduralSettings
from vggt_ros.train.config import TrainConfig

SMALL = ProceduralSettings(height=42, width=56, frames=3, track_queries=0)
HEADS = ("camera", "depth", "point")


def small_config(**changes) -> TrainConfig:
    """A 6-step vggt-tiny run on 42x56 procedural windows; ``changes`` override any field."""
    base = dict(
        model="vggt-tiny",
        procedural=SMALL,
        heads=HEADS,
        steps=6,
        batch_size=2,
        lr=1e-3,
        warmup_steps=2,
        ema_decay=0.9,
        checkpoint_every=3,
        validate_every=1000,
        validation_windows=2,
        log_every=1,
        device="cpu",
        progress=False,
        dataloader_prefetch=False,
    )
    base.update(changes)
    return TrainConfig(**base)
