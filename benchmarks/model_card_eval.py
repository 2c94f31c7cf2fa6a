"""Accuracy of a model on held-out sequences, for its model card (docs/model_card_compact.md).

Generates ground-truth bags the model never trained on with ``vggt-ros generate`` (procedural
scenes with the held-out settings, from the sequence seed stream, one per camera motion; and the
fixed demo room along its three paths), replays each with ``vggt-ros eval`` for the given weights
and for untrained random weights, and prints the mean of the headline numbers with the
constant-depth / identity-pose baseline:

    python benchmarks/model_card_eval.py --out out/model_card            # embedded model, at 252
    python benchmarks/model_card_eval.py --out out/ft --checkpoint model.safetensors  # at its own size
    python benchmarks/model_card_eval.py --out out/ft182 --checkpoint m.safetensors --size 182
    python benchmarks/model_card_eval.py --out out/wider --seed 5000 --per-motion 2 --no-rooms

The last is the card's wider held-out set: fourteen procedural sequences (two per motion, seeds
5000-5013) that the pose refinement's ``head_tolerance`` was chosen on (docs/mapping.md).
Everything runs on the CPU (about 5 minutes for the compact model and the card's ten sequences).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections.abc import Callable
from pathlib import Path

from vggt_ros.cli import main as cli
from vggt_ros.eval.procedural import MOTIONS
from vggt_ros.eval.report import accuracy_summary
from vggt_ros.eval.synthetic import render_size
from vggt_ros.model.embedded import choose_model

KEYS = ("window_abs_rel", "window_rotation_deg", "window_baseline_error_pct", "ape_percent_of_length")


def _over_sequences(
    rows: dict[str, dict[str, dict[str, float | None]]], labels: list[str], what: str, reduce: Callable
) -> None:
    """Print one table: each label's ``reduce`` (mean, median) over the sequences of every KEY."""
    print()
    print(
        f"| {what} over sequences | depth AbsRel (window) | rotation error (deg) "
        "| baseline length error (100 abs ln) | APE (% of length) |"
    )
    print("|---|---|---|---|---|")
    for label in labels:
        cells = []
        for key in KEYS:
            # None: not measured; NaN: not defined there (no baseline long enough to score)
            values = [v for name in rows if (v := rows[name][label][key]) is not None and math.isfinite(v)]
            cells.append(f"{reduce(values):.3f}" if values else "-")
        print(f"| {label} | " + " | ".join(cells) + " |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--checkpoint", default=None, help="weights (default: the embedded model)")
    ap.add_argument("--config", default=None)
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--seed", type=int, default=1000, help="first sequence seed")
    ap.add_argument(
        "--per-motion",
        type=int,
        default=1,
        help="procedural sequences per camera motion (seeds in order: each motion's in turn)",
    )
    ap.add_argument("--no-rooms", action="store_true", help="leave out the demo room's three paths")
    ap.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="pipeline parameter passed to every `vggt-ros eval` (repeatable), e.g. "
        "chaining.min_inlier_ratio=0.02",
    )
    ap.add_argument("--skip-untrained", action="store_true", help="replay the given weights only")
    ap.add_argument(
        "--mirror-depth",
        action="store_true",
        help="every `vggt-ros eval` of the given weights with --mirror-depth (depth averaged with the "
        "mirror image's)",
    )
    ap.add_argument(
        "--size",
        type=int,
        default=None,
        help="model input width (default: the weights' own, 294 for the embedded vggt-compact-v10); "
        "the sequences are rendered at it (140x182 for 182, 196x252 for 252: the same scenes and "
        "paths) and every `vggt-ros eval` runs with it, the untrained row too",
    )
    args = ap.parse_args()
    if args.size is None:
        args.size = choose_model(args.checkpoint, args.config).image_size
    if args.size <= 0 or args.size % 14:
        ap.error("--size must be a positive multiple of 14")
    if args.per_motion < 1:
        ap.error("--per-motion must be at least 1")
    height, width = render_size(args.size)
    args.out.mkdir(parents=True, exist_ok=True)
    cases = [
        (
            f"procedural-{m}" + (f"-{r}" if args.per_motion > 1 else ""),
            ["--scene", "procedural", "--held-out", "--motion", m],
        )
        for m in MOTIONS
        for r in range(args.per_motion)
    ]
    if not args.no_rooms:
        cases += [
            (f"room-{p}", ["--scene", "room", "--trajectory", p]) for p in ("orbit", "forward", "sideways")
        ]
    model_args = (["--checkpoint", args.checkpoint] if args.checkpoint else []) + (
        ["--config", args.config] if args.config else []
    )
    rows: dict[str, dict[str, dict[str, float | None]]] = {}
    # The card's own bags keep their folder; other sizes get one each.
    bags = args.out / ("bags" if args.size == 182 else f"bags-{height}x{width}")
    for i, (name, gen) in enumerate(cases):
        bag = bags / name
        if not bag.exists():
            size = [
                "--height",
                str(height),
                "--width",
                str(width),
                "--frames",
                str(args.frames),
                "--seed",
                str(args.seed + i),
            ]
            assert cli(["generate", str(bag), *gen, *size, "-q"]) == 0
        rows[name] = {}
        labels = [("model", model_args + (["--mirror-depth"] if args.mirror_depth else []))]
        if not args.skip_untrained:
            labels.append(("untrained", ["--untrained", "--config", args.config or "vggt-compact"]))
        params = [arg for kv in args.param for arg in ("--param", kv)]
        for label, extra in labels:
            out = args.out / "reports" / f"{name}-{label}"
            command = ["eval", str(bag), "--out", str(out), "--no-plots", "--device", "cpu", *extra, *params]
            command += ["--size", str(args.size)]
            assert cli([*command, "-q"]) == 0
            summary = accuracy_summary(json.loads((out / "report.json").read_text()))
            rows[name][label] = summary["model"]
            rows[name]["constant/identity"] = summary["constant/identity baseline"]
    (args.out / "accuracy.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(
        "| sequence | weights | depth AbsRel (window) | rotation error (deg) "
        "| baseline length error (100 abs ln) | APE (% of length) |"
    )
    print("|---|---|---|---|---|---|")
    for name, by_label in rows.items():
        for label, r in by_label.items():
            print(
                f"| {name} | {label} | "
                + " | ".join("-" if r[k] is None else f"{r[k]:.3f}" for k in KEYS)
                + " |"
            )
    every_label = [label for label, _ in labels] + ["constant/identity"]
    _over_sequences(rows, every_label, "mean", statistics.fmean)
    _over_sequences(rows, every_label, "median", statistics.median)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
