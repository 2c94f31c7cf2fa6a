"""Time ``WindowChainer.align`` (the node's "chain" latency stage) on the CPU, A/B against the
chaining and alignment code of an earlier git revision, alternated in one process.

A synthetic map of one window, then a window that shares ``--shared`` of its keyframes (the
node's window 8 / stride 4 shares 4), its depth perturbed by ``--depth-noise``; default
chaining settings. ``--outlier-share`` gives that share of the new window's pixels a wrong
depth (a trained network's chaining alignments have about 12 % inliers at the default inlier
threshold, so RANSAC draws its whole budget: ``--outlier-share 0.85`` is the realistic case).

    python benchmarks/chaining_align.py --baseline 5eab3a3~1
    python benchmarks/chaining_align.py --baseline HEAD --outlier-share 0.85
    python benchmarks/chaining_align.py --size 350x518 --frames 8 --shared 4 --repeats 60

Figures: docs/benchmarks.md ("Latency in the node").
"""

from __future__ import annotations

import argparse
import time
import types

import numpy as np
from revisions import module_at

from vggt_ros.geometry.alignment import Sim3
from vggt_ros.mapping import chaining
from vggt_ros.mapping.config import ChainingConfig


def _chaining_at(revision: str) -> types.ModuleType:
    """``vggt_ros.mapping.chaining`` as it was at a git revision, fitting with that revision's
    ``robust_umeyama`` (its Sim3 stays today's: the two share one interface)."""
    module = module_at(revision, "vggt_ros/mapping/chaining.py", "chaining_baseline")
    alignment = module_at(revision, "vggt_ros/geometry/alignment.py", "alignment_baseline")
    module.robust_umeyama = alignment.robust_umeyama
    return module


def _window(
    poses: np.ndarray, depth: np.ndarray, conf: np.ndarray, intrinsics: np.ndarray
) -> types.SimpleNamespace:
    """Prediction-like: cam_to_world [S,4,4], depth / depth_conf / valid_mask [S,H,W]."""
    return types.SimpleNamespace(
        cam_to_world=poses,
        depth=depth,
        depth_conf=conf,
        valid_mask=np.ones(depth.shape, bool),
        model_intrinsics=np.stack([intrinsics] * len(poses)),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="350x518", help="HxW of the depth maps")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--shared", type=int, default=4, help="keyframes shared with the map")
    parser.add_argument("--depth-noise", type=float, default=0.01, help="relative, per pixel")
    parser.add_argument(
        "--outlier-share", type=float, default=0.0, help="share of the new window's pixels with a wrong depth"
    )
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--baseline", default="", help="git revision to compare with (empty: none)")
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.split("x"))
    frames, shared = args.frames, args.shared
    if not 0 < shared <= frames:
        parser.error("--shared must be in 1..--frames")

    rng = np.random.default_rng(0)
    K = np.array([[400.0, 0.0, width / 2], [0.0, 400.0, height / 2], [0.0, 0.0, 1.0]])
    poses = np.stack([np.eye(4)] * (2 * frames - shared))
    poses[:, 0, 3] = 0.1 * np.arange(len(poses))
    depth = (2.0 + rng.random((len(poses), height, width))).astype(np.float32)
    conf = (1.0 + rng.random(depth.shape)).astype(np.float32)
    mapped = _window(poses[:frames], depth[:frames], conf[:frames], K)
    start = frames - shared
    noisy = depth[start:] * (1.0 + args.depth_noise * rng.standard_normal(depth[start:].shape))
    wrong = rng.random(noisy.shape) < args.outlier_share
    noisy[wrong] *= rng.uniform(0.5, 1.5, int(wrong.sum()))
    window = _window(poses[start:], noisy.astype(np.float32), conf[start:], K)
    window_ids = list(range(start, start + frames))

    modules = {"current": chaining}
    if args.baseline:
        modules = {f"baseline {args.baseline}": _chaining_at(args.baseline), **modules}
    chainers = {}
    for name, module in modules.items():
        chainer = module.WindowChainer(ChainingConfig())
        chainer.commit(mapped, list(range(frames)), Sim3.identity(), window_id=0, segment=0)
        chainers[name] = chainer
    times: dict[str, list[float]] = {name: [] for name in chainers}
    for repeat in range(args.repeats):
        for name, chainer in chainers.items():  # alternated: both see the same machine load
            t0 = time.perf_counter()
            outcome = chainer.align(window, window_ids, window_id=repeat + 1)
            times[name].append((time.perf_counter() - t0) * 1e3)
            if repeat == 0:
                print(
                    f"{name}: accepted {outcome.accepted}, scale {outcome.transform.scale:.5f}, "
                    f"residual {outcome.residual:.4f}, inlier share {outcome.inlier_ratio:.3f}"
                )
    print(
        f"align, {height}x{width}, {frames} frames, {shared} shared, outlier share "
        f"{args.outlier_share}, {args.repeats} repeats:"
    )
    for name, values in times.items():
        print(f"  {name}: p50 {np.median(values):.1f} ms, p90 {np.percentile(values, 90):.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
