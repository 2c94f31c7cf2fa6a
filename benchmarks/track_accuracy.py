"""Track head accuracy on held-out procedural windows with exact ground-truth tracks.

The work is :mod:`vggt_ros.eval.track_accuracy`: held-out windows rendered at the model's input
size, query points in frame 0, and their true positions and visibility in every frame; per model
the median pixel error, the share within 1-16 px (and their mean, delta_avg), the visibility
accuracy, next to untrained weights and a static baseline (points stay where queried):

    python benchmarks/track_accuracy.py                                    # embedded model, CPU
    python benchmarks/track_accuracy.py --checkpoint m.safetensors --windows 32 --json out/tracks.json
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm import tqdm

from vggt_ros.engine import Predictor
from vggt_ros.eval.track_accuracy import format_table, held_out_track_windows, track_accuracy
from vggt_ros.model.embedded import choose_model


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=None, help="weights (default: the embedded model)")
    ap.add_argument("--config", default=None)
    ap.add_argument("--size", type=int, default=None, help="model input width (default: the weights' own)")
    ap.add_argument("--windows", type=int, default=16)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--queries", type=int, default=64, help="query points per window")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip-untrained", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    choice = choose_model(args.checkpoint, args.config, args.size)
    print(f"model: {choice.description}; {choice.image_size} px; device {args.device}")
    windows = held_out_track_windows(args.windows, args.frames, args.queries, choice.image_size)
    predictors = {
        "model": Predictor.from_checkpoint(
            choice.source, config=choice.config, device=args.device, target_size=choice.image_size
        )
    }
    if not args.skip_untrained:
        torch.manual_seed(0)
        predictors["untrained"] = Predictor.from_checkpoint(
            None, config=choice.config, device=args.device, target_size=choice.image_size
        )
    with tqdm(total=len(windows), desc="windows") as bar:
        scores = track_accuracy(predictors, windows, progress=lambda _: bar.update(1))
    print(format_table(scores))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({k: asdict(v) for k, v in scores.items()}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
