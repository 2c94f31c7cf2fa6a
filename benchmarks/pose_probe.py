"""Can a model learn relative camera rotation at all? A CPU-sized learnability probe.

Pre-renders a fixed set of 2-frame procedural windows (one motion, larger steps, no shadows, so
rendering on a CPU stays affordable) and trains the camera head alone on it for many epochs
(official L1 camera loss, no field-of-view term), reporting the held-out rotation error next to
the identity baseline ("the camera did not move") every ``--validate-every`` steps. A model
that learns relative pose leaves the identity behind; one that does not stays on it.

    python benchmarks/pose_probe.py --size 112 --train-windows 2048 --steps 1000 --motion turn

Figures: docs/training.md ("2026-12-02: a 2-frame pose probe").
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from vggt_ros.eval.procedural import ProceduralSettings
from vggt_ros.eval.procedural.settings import MOTIONS
from vggt_ros.eval.window_metrics import summarize
from vggt_ros.model import VGGT
from vggt_ros.model.checkpoint import load_model
from vggt_ros.model.embedded import DEFAULT_MODEL
from vggt_ros.train.data import ProceduralSource
from vggt_ros.train.losses import LossWeights, total_loss
from vggt_ros.train.targets import WindowBatch, normalize_window
from vggt_ros.train.trainer import TrainingModel, _score_batch


def render(settings: ProceduralSettings, stream: int, count: int) -> WindowBatch:
    """``count`` windows of a seed stream (0 training, 1 validation), rendered once."""
    source = ProceduralSource(settings, seed=0, stream=stream, render_chunk=64)
    parts = [source.windows(range(i, min(count, i + 64)), "cpu") for i in range(0, count, 64)]
    return WindowBatch(
        **{
            k: None if getattr(parts[0], k) is None else torch.cat([getattr(p, k) for p in parts])
            for k in vars(parts[0])
        }
    )


def report(step: int, rotation: float, identity: float) -> None:
    print(f"step {step}: held-out rotation {rotation:.2f} deg (identity {identity:.2f})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=112, help="square image side (multiple of 14)")
    p.add_argument("--train-windows", type=int, default=2048)
    p.add_argument("--validation-windows", type=int, default=256)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--motion", default="turn", help=f"'+'-joined motions of {MOTIONS}")
    p.add_argument("--step-scale", default="1.0,2.0", help="LOW,HIGH factor on the motion steps")
    p.add_argument("--init", choices=("embedded", "scratch"), default="embedded")
    p.add_argument("--validate-every", type=int, default=250)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    chosen = set(args.motion.split("+"))
    weights = tuple(1.0 if m in chosen else 0.0 for m in MOTIONS)
    low, high = (float(v) for v in args.step_scale.split(","))
    settings = ProceduralSettings(
        height=args.size,
        width=args.size,
        frames=2,
        track_queries=0,
        motion_weights=weights,
        step_scale=(low, high),
        shadows=False,
    )
    t0 = time.time()
    train = render(settings, 0, args.train_windows)
    val = render(settings, 1, args.validation_windows)
    print(f"rendered {args.train_windows} + {args.validation_windows} windows in {time.time() - t0:.0f} s")

    if args.init == "embedded":
        model, _ = load_model(DEFAULT_MODEL.path, config=DEFAULT_MODEL.config, device="cpu")
        model = model.float()
    else:
        model = VGGT(DEFAULT_MODEL.config)
    model.train()
    for head in (model.depth_head, model.point_head, model.track_head):
        if head is not None:
            head.requires_grad_(False)
    model.aggregator.patch_embed.mask_token.requires_grad_(False)
    net = TrainingModel(model, ("camera",))
    params = [q for q in model.parameters() if q.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.95), weight_decay=0.05)
    loss_weights = LossWeights(focal=0.0, camera_huber_delta=0.0)

    def validate() -> tuple[float, float]:
        model.eval()
        scores = []
        with torch.no_grad():
            for i in range(0, args.validation_windows, 64):
                batch = val.select(slice(i, i + 64))
                targets = normalize_window(batch)
                scores += _score_batch(net(targets.images), batch, targets)
        model.train()
        s = summarize(scores)
        return s["rotation_deg_mean"], s["rotation_deg_identity"]

    report(0, *validate())
    rng = np.random.default_rng(0)
    for step in range(1, args.steps + 1):
        pick = torch.from_numpy(rng.choice(args.train_windows, args.batch, replace=False))
        batch = WindowBatch(**{k: None if v is None else v[pick] for k, v in vars(train).items()})
        targets = normalize_window(batch)
        for group in optimizer.param_groups:
            group["lr"] = args.lr * min(1.0, step / 100)
        objective, terms = total_loss(net(targets.images), targets, loss_weights)
        optimizer.zero_grad()
        objective.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        if step % 50 == 0:
            camera_r = float(terms["camera_R"].mean())
            print(f"step {step} ({time.time() - t0:.0f} s): train camera_R {camera_r:.5f}")
        if step % args.validate_every == 0:
            report(step, *validate())


if __name__ == "__main__":
    main()
