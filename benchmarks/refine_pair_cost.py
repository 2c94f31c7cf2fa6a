"""Time the window pose refinement's pair stage (PnP per frame pair plus the head-rotation
test) on the CPU, A/B against ``pose_refine.py`` of earlier git revisions, alternated in one
process.

The window: eight frames of the synthetic orbit (``vggt_ros.eval.synthetic``) at 196x252 with
ground-truth depth, and a camera head whose rotations are each tilted by ``--tilt`` degrees, so
that every pair runs the head-rotation test. The frames' keypoints and the pairs' matches are
cached by a first call, so what is timed is the pair stage (the part that runs on the latency
path after the network in the node; its features are prefetched while the network runs).

    python benchmarks/refine_pair_cost.py 056a056 ca75dac   # before the numpy reprojection; before the test
    python benchmarks/refine_pair_cost.py --repeats 30 --rounds 3 REV [REV ...]

Figures: docs/benchmarks.md ("Run N").
"""

from __future__ import annotations

import argparse
import time
import types

import numpy as np
from revisions import module_at
from scipy.spatial.transform import Rotation

from vggt_ros.eval.synthetic import render_sequence
from vggt_ros.mapping import pose_refine
from vggt_ros.mapping.refine_features import FeatureCache


def _pose_refine_at(revision: str) -> types.ModuleType:
    """``vggt_ros.mapping.pose_refine`` as it was at a git revision (today's dependencies)."""
    name = f"pose_refine_{revision.replace('~', '_').replace('^', '_')}"
    return module_at(revision, "vggt_ros/mapping/pose_refine.py", name)


def _time(module: types.ModuleType, window: tuple, repeats: int) -> tuple[float, list[str]]:
    """Median milliseconds of ``repeats`` calls after one that fills the feature cache."""
    colors, depth, intrinsics, head = window
    cache = FeatureCache()
    module.refine_window_poses(colors, depth, intrinsics, head, feature_cache=cache)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = module.refine_window_poses(colors, depth, intrinsics, head, feature_cache=cache)
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times)), list(out.methods)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("revisions", nargs="*", help="git revisions to compare with")
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    parser.add_argument("--tilt", type=float, default=1.0, help="head rotation error (deg) per frame")
    args = parser.parse_args()
    seq = render_sequence(8, 196, 252, seed=3, path="orbit")
    truth = np.linalg.inv(seq.cam_to_world[0]) @ seq.cam_to_world  # [8, 4, 4] in frame 0
    head = truth.copy()
    head[1:, :3, :3] = head[1:, :3, :3] @ Rotation.from_euler("x", args.tilt, degrees=True).as_matrix()
    intrinsics = np.repeat(seq.intrinsics[None], len(seq.images), 0)
    window = (seq.images, seq.depth, intrinsics, head)
    modules = {"working tree": pose_refine} | {rev: _pose_refine_at(rev) for rev in args.revisions}
    results: dict[str, list[float]] = {label: [] for label in modules}
    methods: dict[str, list[str]] = {}
    for _ in range(args.rounds):
        for label, module in modules.items():
            median, methods[label] = _time(module, window, args.repeats)
            results[label].append(median)
    print(f"pair stage, 8 frames at 196x252, head tilted {args.tilt} deg; median ms per round")
    for label, medians in results.items():
        print(f"{label:>14s}: {' / '.join(f'{m:.2f}' for m in medians)}  methods {methods[label]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
