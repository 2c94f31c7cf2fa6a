"""Accuracy of a model on several sequences of the demo room, with and without the pose refinement.

The bundled demo sequence is one 16-frame path through the fixed room of
:mod:`vggt_ros.eval.synthetic` (another texture and lighting model than the procedural training
data): one path says little. This tool renders ``--sequences`` paths through that room (seeds
from ``--first-seed``; seed 0 is the demo's own) at the model's input size, replays each through
the node's pipeline with the demo's window settings (windows of 4, stride 2), once with the
defaults and once without the window pose refinement (the camera head alone), and reports per
sequence and on average: window depth AbsRel, window rotation error (deg), window translation
direction error (deg), baseline length error (%) and the chained trajectory's APE (% of length).

    python benchmarks/demo_room_accuracy.py                       # the embedded default
    python benchmarks/demo_room_accuracy.py --checkpoint U.safetensors --size 294 --out U.json
    python benchmarks/demo_room_accuracy.py --param refine.reprojection_px=2.33

About 40 s a sequence on two CPU cores at 196x252.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path
from typing import Any

from tqdm import tqdm

from vggt_ros.engine import Predictor
from vggt_ros.eval.accuracy import DEMO_WINDOW_SETTINGS, synthetic_sequence_accuracy
from vggt_ros.eval.commands import pipeline_config
from vggt_ros.eval.synthetic import render_sequence, render_size
from vggt_ros.model.checkpoint.errors import CheckpointError
from vggt_ros.model.embedded import choose_model

#: (key in the accuracy rows, column label)
METRICS = (
    ("window_abs_rel", "depth AbsRel"),
    ("window_rotation_deg", "rotation (deg)"),
    ("window_translation_deg", "translation dir (deg)"),
    ("window_baseline_error_pct", "baseline err %"),
    ("ape_percent_of_length", "APE %"),
)
MODES = {"defaults": True, "head only": False}


def means(rows: list[dict[str, float | None]]) -> dict[str, float | None]:
    """Mean of each metric over sequences, leaving out sequences without it (None or NaN)."""
    out: dict[str, float | None] = {}
    for key, _ in METRICS:
        values = [r[key] for r in rows if r.get(key) is not None and math.isfinite(r[key])]
        out[key] = statistics.fmean(values) if values else None
    return out


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=None, help="weights (default: the embedded model)")
    ap.add_argument("--config", default=None, help="config of --checkpoint (default: its header's)")
    ap.add_argument("--untrained", action="store_true", help="random weights of --config")
    ap.add_argument("--size", type=int, default=0, help="input width (default: the model's own)")
    ap.add_argument(
        "--render-size",
        type=int,
        default=0,
        help="render the paths this wide instead of at the model's input (the model resizes them)",
    )
    ap.add_argument("--sequences", type=int, default=8, help="paths through the room")
    ap.add_argument("--first-seed", type=int, default=0, help="seed of the first path (0 = the demo's)")
    ap.add_argument("--frames", type=int, default=16, help="frames per path (the demo's: 16)")
    ap.add_argument("--param", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    ap.add_argument("--no-head-only", action="store_true", help="skip the replay without the refinement")
    ap.add_argument(
        "--mirror-depth", action="store_true", help="average each window's depth with its mirror image's"
    )
    ap.add_argument("--out", type=Path, default=None, help="also write the rows and means as JSON")
    args = ap.parse_args(argv)
    if args.sequences < 1 or args.frames < 4:
        ap.error("--sequences must be at least 1 and --frames at least 4")
    if args.render_size < 0 or args.render_size % 14:
        ap.error("--render-size must be a positive multiple of 14 (0: the model's input width)")
    try:
        choice = choose_model(args.checkpoint, args.config, args.size or None, args.untrained)
        settings = [f"{k}={v}" for k, v in DEMO_WINDOW_SETTINGS.items()] + ["window.num_track_queries=0"]
        ns = argparse.Namespace(
            window_size=None, window_stride=None, tracks=None, scale_source=None, param=settings + args.param
        )
        flat = pipeline_config(ns).to_flat()
    except ValueError as error:
        ap.error(str(error))
    height, width = render_size(args.render_size or choice.image_size)
    try:
        predictor = Predictor.from_checkpoint(
            choice.source,
            config=choice.config,
            device="cpu",
            target_size=choice.image_size,
            runner_options={"mirror_depth": args.mirror_depth},
        )
    except CheckpointError as error:
        ap.error(str(error))
    print(
        f"{choice.description} at {choice.image_size} px; {args.sequences} demo-room paths, "
        f"{args.frames} frames rendered at {height}x{width}"
    )

    from vggt_ros.mapping import PipelineConfig

    modes = {m: r for m, r in MODES.items() if r or not args.no_head_only}
    rows: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    seeds = range(args.first_seed, args.first_seed + args.sequences)
    for seed in tqdm(seeds, desc="paths", unit="path"):
        seq = render_sequence(num_frames=args.frames, height=height, width=width, seed=seed)
        for mode, refine in modes.items():
            config = PipelineConfig.from_flat({**flat, "refine.enabled": refine})
            row = synthetic_sequence_accuracy(seq, {"model": predictor}, config)["model"]
            rows[mode].append({"seed": seed, **{k: row.get(k) for k, _ in METRICS}})

    summary = {mode: means(r) for mode, r in rows.items()}
    header = "| seed | mode | " + " | ".join(label for _, label in METRICS) + " |"
    lines = [header, "|" + "---|" * (len(METRICS) + 2)]
    for mode, mode_rows in rows.items():
        for r in mode_rows:
            lines.append(f"| {r['seed']} | {mode} | " + " | ".join(_cell(r[k]) for k, _ in METRICS) + " |")
    for mode, m in summary.items():
        lines.append(f"| **mean** | {mode} | " + " | ".join(_cell(m[k]) for k, _ in METRICS) + " |")
    print("\n".join(lines))
    if args.out is not None:
        record = {
            "model": choice.description,
            "input_size": choice.image_size,
            "rendered": [height, width],
            "params": args.param,
            "rows": rows,
            "means": summary,
        }
        args.out.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
