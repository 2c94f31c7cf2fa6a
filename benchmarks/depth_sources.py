"""Where a window's depth is best read from, on held-out procedural windows (model card, "Known
limitations"): the depth head, the point head's world points moved into each camera with the
predicted poses, blends of the two, and the same frames inside longer or shorter windows; and
where the depth head's error comes from, by true-depth range.

    python benchmarks/depth_sources.py heads --windows 24      # depth head vs point head vs blends
    python benchmarks/depth_sources.py lengths --windows 16    # frames 0-7 in windows of 8, 12, 16
    python benchmarks/depth_sources.py ranges --bag out/card/bags-224x294/procedural-turn

``ranges`` scores consecutive eight-frame windows of each ``--bag`` (a ``vggt-ros generate`` bag,
e.g. the ones ``model_card_eval.py`` leaves in its output folder; read at the model's size) or,
without ``--bag``, held-out windows, and splits each sequence's error sum by the pixels' true
depth (``depth_error_by_range``): the pixel share, the error share and the AbsRel of each range.

Depth AbsRel after one median scale per scored set of frames (``window_depth_errors``), fp32 on
the CPU; the embedded model unless ``--checkpoint`` (and ``--config``) is given. Windows come from
the held-out seed stream of ``vggt_ros.eval.long_window`` (heads from index 1000, lengths from
2000), rendered at the model's own size.
"""

from __future__ import annotations

import argparse

import numpy as np

from vggt_ros.eval.long_window import held_out_window, sparse_predictor
from vggt_ros.eval.synthetic import render_size
from vggt_ros.eval.window_metrics import DEPTH_RANGE_EDGES, depth_error_by_range, window_depth_errors


def point_head_depth(world_points: np.ndarray, extrinsics: np.ndarray) -> np.ndarray:
    """Camera-z depth [S, H, W] of world points [S, H, W, 3] seen by cameras [S, 3, 4]
    (camera-from-world); NaN behind the camera."""
    rotation, translation = extrinsics[:, :, :3], extrinsics[:, :, 3]
    z = np.einsum("sj,shwj->shw", rotation[:, 2], world_points) + translation[:, None, None, 2]
    return np.where(z > 0, z, np.nan)


def heads_row(predictor, index: int, height: int, width: int) -> dict[str, float]:
    images, gt = held_out_window(8, 1000 + index, height, width)
    p = predictor.predict(images)
    if p.world_points is None:
        raise SystemExit("the model has no point head")
    depth = p.depth.astype(np.float64)
    points = point_head_depth(p.world_points.astype(np.float64), p.extrinsics)
    filled = np.where(np.isfinite(points), points, depth)
    c_depth, c_points = p.depth_conf.astype(np.float64), p.world_points_conf.astype(np.float64)
    candidates = {
        "depth head": depth,
        "point head": points,
        "mean": 0.5 * (depth + filled),
        "geometric mean": np.sqrt(depth * filled),
        "confidence-weighted": (c_depth * depth + c_points * filled) / (c_depth + c_points),
    }
    return {k: window_depth_errors(v, gt, p.valid_mask)[0] for k, v in candidates.items()}


def lengths_row(predictor, index: int, height: int, width: int) -> dict[str, float]:
    images, gt = held_out_window(16, 2000 + index, height, width)
    row = {}
    for length in (16, 12, 8):
        p = predictor.predict(images[:length])
        row[f"frames 0-7 in {length}"] = window_depth_errors(p.depth[:8], gt[:8], p.valid_mask[:8])[0]
    return row


def range_split(predictor, windows) -> dict[str, list[float]]:
    """Pixel share, error share and AbsRel per true-depth range (DEPTH_RANGE_EDGES) over ``windows``
    (pairs of S frames [S, H, W, 3] uint8 and depth [S, H, W] metres), and the mean window AbsRel."""
    pixels = np.zeros(len(DEPTH_RANGE_EDGES) - 1)
    errors = np.zeros(len(DEPTH_RANGE_EDGES) - 1)
    window_abs_rel = []
    for images, gt in windows:
        p = predictor.predict(list(images))
        split = depth_error_by_range(p.depth, gt, p.valid_mask)
        if split is None:
            continue
        pixels += split.pixels
        errors += split.error_sum
        # The ranges cover 0 to infinity, so their sums are the whole window's.
        window_abs_rel.append(sum(split.error_sum) / sum(split.pixels))
    return {
        "window AbsRel": [float(np.mean(window_abs_rel))] if window_abs_rel else [float("nan")],
        "pixel share": list(pixels / max(pixels.sum(), 1)),
        "error share": list(errors / max(errors.sum(), 1e-12)),
        "AbsRel": list(np.where(pixels > 0, errors / np.maximum(pixels, 1), np.nan)),
    }


def bag_windows(path: str, height: int, width: int, frames: int = 8):
    """Consecutive ``frames``-frame windows of a bag's reference camera at the model's size."""
    from vggt_ros.eval.sequences import read_bag_sequence

    seq = read_bag_sequence(path, (height, width))
    if seq.depth is None:
        raise SystemExit(f"{path}: no ground-truth depth")
    for start in range(0, len(seq) - frames + 1, frames):
        yield seq.images[start : start + frames], seq.depth[start : start + frames]


def print_ranges(name: str, split: dict[str, list[float]]) -> None:
    labels = [f"{lo:g}-{hi:g} m" for lo, hi in zip(DEPTH_RANGE_EDGES[:-1], DEPTH_RANGE_EDGES[1:])]
    print(f"{name}: window AbsRel {split['window AbsRel'][0]:.3f}")
    print("| | " + " | ".join(labels) + " |")
    print("|" + "---|" * (len(labels) + 1))
    for key in ("pixel share", "error share", "AbsRel"):
        print(f"| {key} | " + " | ".join(f"{v:.3f}" for v in split[key]) + " |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("study", choices=("heads", "lengths", "ranges"))
    ap.add_argument("--windows", type=int, default=16)
    ap.add_argument("--bag", action="append", default=[], help="ranges: a ground-truth bag (repeatable)")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--config", default=None)
    args = ap.parse_args()
    predictor, description = sparse_predictor(args.checkpoint, args.config, "cpu")
    height, width = render_size(predictor.target_size)
    if args.study == "ranges":
        print(f"model: {description}; true-depth ranges of consecutive 8-frame windows at {height}x{width}")
        if not args.bag:
            windows = [held_out_window(8, 3000 + i, height, width) for i in range(args.windows)]
            print_ranges(f"{args.windows} held-out windows", range_split(predictor, windows))
        for bag in args.bag:
            print_ranges(bag, range_split(predictor, bag_windows(bag, height, width)))
        return 0
    study = heads_row if args.study == "heads" else lengths_row
    rows = []
    for index in range(args.windows):
        rows.append(study(predictor, index, height, width))
        print(index, "  ".join(f"{k} {v:.4f}" for k, v in rows[-1].items()), flush=True)
    print(f"model: {description}; {args.windows} windows at {height}x{width}")
    print("| " + " | ".join(rows[0]) + " |")
    print("|" + "---|" * len(rows[0]))
    print("| " + " | ".join(f"{np.nanmean([r[k] for r in rows]):.4f}" for k in rows[0]) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
