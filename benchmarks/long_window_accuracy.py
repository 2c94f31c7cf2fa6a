"""Accuracy and time of sparse global attention on long windows (runner option
``global_key_stride``) against exact attention, with a trained model and ground-truth depth.

Several strides, and both weightings, in one run (``vggt-ros bench --sparse-accuracy K`` judges
the one setting it times). The work is ``vggt_ros.eval.long_window``: held-out procedural
windows of 32 and 100 frames, each run exactly and with every given stride; per window length,
depth AbsRel after one median scale per window, its change against exact attention, the relative
difference of the depth maps themselves, and the end-to-end time:

    python benchmarks/long_window_accuracy.py                         # embedded model, CPU
    python benchmarks/long_window_accuracy.py --device cuda --strides 4,8,16 --json out/long.json

On a GPU, ``vggt-ros bench --frames 32,100 --option global_key_stride=8 --sparse-accuracy 6``
gives the speed of the same option against the official recipe and its accuracy together.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from vggt_ros.eval.long_window import (
    SparseSetting,
    format_long_window_table,
    long_window_accuracy,
    sparse_predictor,
)


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
    weightings = {"on": [True], "off": [False], "both": [False, True]}[args.weighting]
    settings = [SparseSetting(int(s), w) for s in args.strides.split(",") for w in weightings]
    predictor, description = sparse_predictor(args.checkpoint, args.config, args.device)
    frames = [int(f) for f in args.frames.split(",")]
    rows = long_window_accuracy(predictor, frames, settings, args.windows, progress=print)
    print(f"model: {description}; device {args.device}; {torch.__version__}")
    print(format_long_window_table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([r.to_dict() for r in rows], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
