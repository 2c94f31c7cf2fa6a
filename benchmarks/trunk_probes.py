"""Does a model's trunk relate frames? Four CPU probes of one model file.

1. *Position*: a ridge regression from each layer's patch tokens to the patch's row and column
   (R^2 on held-out windows). A trunk that cannot tell where a token is cannot tell where its
   match moved.
2. *Flow*: the same from frame-k patch tokens to the displacement of the track points inside
   them back to frame 0 (pixels). Relative pose is a pooled version of this.
3. *Attention on the match*: for each global block, the attention a frame-k patch holding a
   track point gives to the frame-0 patch of the point, among frame 0's patches (uniform: one
   over the patches).
4. *Rotation*: relative rotation error on fresh windows of one camera motion against the
   identity's ("the camera did not move").

    python benchmarks/trunk_probes.py vggt_ros/model/weights/vggt-compact-v1.safetensors
    python benchmarks/trunk_probes.py run.safetensors --config vggt-tiny --size 84x84 --frames 2 \\
        --motion turn --step-scale 1.0,2.0

Figures: docs/training.md ("2026-12-02 (fourth session)").
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from torch import Tensor

from vggt_ros.eval.procedural import ProceduralSettings
from vggt_ros.eval.procedural.settings import MOTIONS
from vggt_ros.eval.window_metrics import summarize
from vggt_ros.model.checkpoint import load_model
from vggt_ros.model.config import get_config
from vggt_ros.train.attention_match import attention_match_loss
from vggt_ros.train.data import ProceduralSource
from vggt_ros.train.targets import WindowBatch, normalize_window
from vggt_ros.train.trainer import TrainingModel, _score_batch


def ridge_r2(features: np.ndarray, target: np.ndarray, ridge: float = 1.0) -> np.ndarray:
    """Fit on the first half of the rows, R^2 per target column on the second half."""
    half = len(features) // 2
    x = features - features[:half].mean(0)
    y_mean = target[:half].mean(0)
    gram = x[:half].T @ x[:half] + ridge * np.eye(x.shape[1])
    weights = np.linalg.solve(gram, x[:half].T @ (target[:half] - y_mean))
    error = ((x[half:] @ weights + y_mean - target[half:]) ** 2).sum(0)
    return 1.0 - error / ((target[half:] - target[half:].mean(0)) ** 2).sum(0)


def position_and_flow(model, batch: WindowBatch) -> None:
    """Probes 1 and 2 on every aggregator layer's global-block half (and the encoder)."""
    agg = model.aggregator
    b, s = batch.images.shape[:2]
    h, w = batch.images.shape[-2:]
    patch = model.config.patch_size
    gh, gw = h // patch, w // patch
    with torch.no_grad():
        encoder = agg.encode(batch.images.reshape(b * s, *batch.images.shape[2:])).reshape(b, s, gh * gw, -1)
        layers = agg(batch.images)
    features: dict[str, Tensor] = {"encoder": encoder}
    for index, tokens in sorted(layers.items()):
        dim = tokens.shape[-1] // 2
        features[f"layer {index}"] = tokens[:, :, agg.patch_start_idx :, dim:]
    rows = torch.arange(gh).repeat_interleave(gw).float()
    cols = torch.arange(gw).repeat(gh).float()
    position_target = torch.stack((rows, cols), 1).repeat(b * s, 1).numpy()

    # Flow samples: (window, frame, cell) of each visible track point, and its displacement.
    samples, flow = [], []
    for i in range(b):
        for k in range(1, s):
            for n in range(batch.query_points.shape[1]):
                x, y = batch.tracks[i, k, n].tolist()
                if batch.track_visible[i, k, n] and 0 <= x < gw * patch and 0 <= y < gh * patch:
                    samples.append((i, k, int(y // patch) * gw + int(x // patch)))
                    flow.append((batch.query_points[i, n] - batch.tracks[i, k, n]).tolist())
    flow_target = np.array(flow)
    print(f"position: {gh}x{gw} patches; flow: {len(flow)} points, std {flow_target.std(0).round(1)} px")
    index = tuple(torch.tensor(v) for v in zip(*samples, strict=True))
    for name, tokens in features.items():
        position = ridge_r2(tokens.reshape(-1, tokens.shape[-1]).double().numpy(), position_target)
        moved = ridge_r2(tokens[index].double().numpy(), flow_target)
        print(
            f"  {name:9s} position R^2 row {position[0]:6.3f} col {position[1]:6.3f}   "
            f"flow R^2 x {moved[0]:6.3f} y {moved[1]:6.3f}"
        )


def attention_on_match(model, batch: WindowBatch) -> None:
    """Probe 3: per global block, the mean attention of track patches on their frame-0 patch."""
    targets = normalize_window(batch)
    net = TrainingModel(model, ("camera",), attention_match=True)
    with torch.enable_grad():
        out = net(targets.images, targets.query_points)
    records, patch_start, patch = out["attention_taps"]
    h, w = batch.images.shape[-2:]
    uniform = 1.0 / ((h // patch) * (w // patch))
    shares = [
        float(attention_match_loss([r], patch_start, patch, targets)["attention_match_p"].mean())
        for r in records
    ]
    print(
        f"attention on the true match per global block (uniform {uniform:.4f}):",
        " ".join(f"{v:.4f}" for v in shares),
    )


def rotation(model, source: ProceduralSource, windows: int) -> None:
    """Probe 4: relative rotation error on fresh windows against the identity's."""
    net = TrainingModel(model, ("camera",))
    scores = []
    with torch.no_grad():
        for start in range(0, windows, 32):
            batch = source.windows(range(start, min(windows, start + 32)), "cpu")
            targets = normalize_window(batch)
            scores += _score_batch(net(targets.images), batch, targets)
    summary = summarize(scores)
    median = np.median([x.rotation_deg_mean for x in scores])
    median_identity = np.median([x.rotation_deg_identity for x in scores])
    print(
        f"rotation over {len(scores)} windows: mean {summary['rotation_deg_mean']:.2f} deg "
        f"(identity {summary['rotation_deg_identity']:.2f}), "
        f"median {median:.2f} (identity {median_identity:.2f})"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("weights", help="model file (.safetensors)")
    p.add_argument("--config", default="vggt-compact")
    p.add_argument("--size", default="140x182", help="HxW, multiples of 14")
    p.add_argument("--frames", type=int, default=4)
    p.add_argument("--motion", default="all", help=f"one of {MOTIONS}, or all (the training mix)")
    p.add_argument("--step-scale", default="0.5,1.6", help="LOW,HIGH factor on the motion steps")
    p.add_argument("--windows", type=int, default=96, help="windows for the rotation probe")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    h, w = (int(v) for v in args.size.split("x"))
    low, high = (float(v) for v in args.step_scale.split(","))
    scene: dict[str, object] = {"step_scale": (low, high)}
    if args.motion != "all":
        scene["motion_weights"] = tuple(1.0 if m == args.motion else 0.0 for m in MOTIONS)
    settings = ProceduralSettings(
        height=h, width=w, frames=args.frames, track_queries=128, shadows=False, **scene
    )
    model, info = load_model(args.weights, config=get_config(args.config), device="cpu")
    model = model.float().eval()
    print(info)
    probe_windows = ProceduralSource(settings, seed=123, stream=3, render_chunk=16).windows(range(24), "cpu")
    position_and_flow(model, probe_windows)
    attention_on_match(model, probe_windows)
    rotation(model, ProceduralSource(settings, seed=321, stream=3, render_chunk=32), args.windows)


if __name__ == "__main__":
    main()
