"""Accuracy and time of sparse global attention on long windows (runner option
``global_key_stride``) against exact attention, with a trained model and ground-truth depth.

Renders held-out procedural windows of 32 and 100 frames (the training renderer's held-out
settings and a seed stream of their own), runs the model on each with exact global attention
and with every given key stride, and prints per window length: depth AbsRel after one median
scale per window (against the ground truth), its change against exact attention, the relative
difference of the depth maps themselves, and the network time:

    python benchmarks/long_window_accuracy.py                         # embedded model, CPU
    python benchmarks/long_window_accuracy.py --device cuda --strides 4,8,16 --json out/long.json

On a GPU, ``vggt-ros bench --frames 32,100 --option global_key_stride=8`` gives the speed of
the same option against the official recipe.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from vggt_ros.engine.predictor import Predictor
from vggt_ros.eval.procedural.settings import ProceduralSettings
from vggt_ros.eval.window_metrics import window_depth_errors
from vggt_ros.model.checkpoint import load_model
from vggt_ros.model.embedded import choose_model
from vggt_ros.train.data import ProceduralSource

STREAM = 11  # a seed stream no training or validation run draws from


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=None, help="weights (default: the embedded model)")
    ap.add_argument("--config", default=None)
    ap.add_argument("--frames", default="32,100")
    ap.add_argument("--strides", default="4,8")
    ap.add_argument("--windows", type=int, default=2, help="windows per length")
    ap.add_argument(
        "--weighting",
        choices=("on", "off", "both"),
        default="on",
        help="sparse keys' logit weights (runner option global_key_weighting); both: a row each",
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    choice = choose_model(args.checkpoint, args.config)
    model, _ = load_model(choice.source, config=choice.config, device="cpu")
    weightings = {"on": [True], "off": [False], "both": [False, True]}[args.weighting]
    # (stride, weighted) settings; stride 0 is exact attention.
    strides = [(0, True)] + [(int(s), w) for s in args.strides.split(",") for w in weightings]
    # One predictor; the option is the aggregator attribute the runner sets from
    # ``runner_options={"global_key_stride": s}``, switched between runs on the same window.
    predictor = Predictor(model, device=args.device, precision="fp32", target_size=choice.image_size)
    rows = []
    for frames in (int(f) for f in args.frames.split(",")):
        settings = ProceduralSettings.held_out(height=140, width=182, frames=frames, track_queries=0)
        source = ProceduralSource(settings, seed=0, stream=STREAM)
        per_stride: dict[tuple[int, bool], dict[str, list[float]]] = {
            s: {"abs_rel": [], "ms": [], "diff": []} for s in strides
        }
        for w in range(args.windows):
            batch = source.windows([w], "cpu")
            images = [
                (batch.images[0, k].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
                for k in range(frames)
            ]
            gt = batch.depth[0].numpy()
            exact_depth = None
            for s in strides:
                aggregator = predictor.runner.model.aggregator
                aggregator.global_key_stride, aggregator.global_key_weighting = s
                t0 = time.perf_counter()
                pred = predictor.predict(images)
                ms = (time.perf_counter() - t0) * 1e3
                depth = pred.depth
                if depth.shape != gt.shape:
                    raise SystemExit(
                        f"model depth {depth.shape} vs ground truth {gt.shape}: use 140x182 input"
                    )
                abs_rel, _ = window_depth_errors(depth, gt)
                if s[0] == 0:
                    exact_depth = depth
                diff = float(np.abs(depth - exact_depth).mean() / np.abs(exact_depth).mean())
                per_stride[s]["abs_rel"].append(abs_rel)
                per_stride[s]["ms"].append(ms)
                per_stride[s]["diff"].append(diff)
        base = statistics.fmean(per_stride[strides[0]]["abs_rel"])
        for s in strides:
            r = per_stride[s]
            rows.append(
                {
                    "frames": frames,
                    "global_key_stride": s[0],
                    "global_key_weighting": s[1],
                    "abs_rel": statistics.fmean(r["abs_rel"]),
                    "abs_rel_change": statistics.fmean(r["abs_rel"]) - base,
                    "depth_relative_difference": statistics.fmean(r["diff"]),
                    "ms": statistics.median(r["ms"]),
                    "windows": len(r["ms"]),
                }
            )
    print(f"model: {choice.description}; device {args.device}; {torch.__version__}")
    print("| frames | global_key_stride | depth AbsRel | change vs exact | depth rel. diff | end-to-end ms |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        label = "exact" if r["global_key_stride"] == 0 else str(r["global_key_stride"])
        if r["global_key_stride"] and args.weighting == "both":
            label += ", weighted" if r["global_key_weighting"] else ", unweighted"
        print(
            f"| {r['frames']} | {label} | {r['abs_rel']:.4f} | {r['abs_rel_change']:+.4f} | "
            f"{r['depth_relative_difference']:.4f} | {r['ms']:.0f} |"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
