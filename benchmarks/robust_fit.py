"""Time ``robust_umeyama`` (RANSAC + IRLS, symmetric scale) on the chaining stage's typical
problem: 6,000 weighted pairs of which ~12 % agree (a trained network's window against the
map at the default inlier threshold), A/B against the alignment code of earlier git
revisions, alternated in one process.

    python benchmarks/robust_fit.py de8959a              # against the code before the batching
    python benchmarks/robust_fit.py --pairs 6000 --inliers 0.12 --repeats 30 REV [REV ...]

Figures: docs/benchmarks.md ("Latency in the node").
"""

from __future__ import annotations

import argparse
import time
import types

import numpy as np
from revisions import module_at

from vggt_ros.geometry import alignment


def _alignment_at(revision: str) -> types.ModuleType:
    """``vggt_ros.geometry.alignment`` as it was at a git revision."""
    name = f"alignment_{revision.replace('~', '_').replace('^', '_')}"
    return module_at(revision, "vggt_ros/geometry/alignment.py", name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("revisions", nargs="*", help="git revisions to compare with")
    parser.add_argument("--pairs", type=int, default=6000)
    parser.add_argument("--inliers", type=float, default=0.12, help="share of pairs that agree")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    rng = np.random.default_rng(12)
    n = args.pairs
    src = rng.uniform(-2.0, 2.0, (n, 3))
    dst = 1.3 * src + 0.5 + rng.normal(0.0, 0.005, (n, 3))
    wrong = rng.random(n) > args.inliers
    dst[wrong] += rng.normal(0.0, 1.0, (int(wrong.sum()), 3))
    weights = rng.random(n)
    modules = {rev: _alignment_at(rev) for rev in args.revisions}
    modules["current"] = alignment
    times: dict[str, list[float]] = {name: [] for name in modules}
    for repeat in range(args.repeats):
        for name, module in modules.items():  # alternated: all see the same machine load
            t0 = time.perf_counter()
            fit = module.robust_umeyama(
                src,
                dst,
                weights,
                inlier_threshold=0.05,
                method="ransac",
                rng=repeat,
                scale_estimator="symmetric",
            )
            times[name].append((time.perf_counter() - t0) * 1e3)
            if repeat == 0:
                share = fit.inliers.mean()
                print(f"{name}: scale {fit.transform.scale:.6f} (truth 1.3), inlier share {share:.3f}")
    print(f"robust_umeyama, {n} pairs, {args.inliers:.0%} agreeing, {args.repeats} repeats:")
    for name, values in times.items():
        print(f"  {name}: p50 {np.median(values):.1f} ms, p90 {np.percentile(values, 90):.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
