"""One line per `vggt-ros eval` report under a folder: the time to poses and its stages.

    python benchmarks/latency_summary.py OUT    # OUT/<arm>/report.json, as benchmarks/latency_arms.sh writes

Prints, per report, ``window_to_poses`` (queue wait + processing until the window's poses are
ready, what the node's TF waits for) as p50 / p90 / p95 / max in ms, every stage's p50 / p95,
the pose refinement's placements (SIFT / head rotation kept / head pose kept), windows accepted,
windows dropped and the keyframe rate; then, where the report lists every window
(``latency_ms.per_window``), the slowest windows to poses with their stages.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def summary_line(name: str, report: dict) -> str:
    latency = report["latency_ms"]
    poses = latency["window_to_poses"]
    stages = latency["window_stages"]
    if not poses.get("count"):
        head = "no accepted window"
    else:
        head = "to poses p50/p90/p95/max " + "/".join(
            f"{poses[q]:.1f}" for q in ("median", "p90", "p95", "max")
        )
        head += " ms"
    stage_text = " ".join(
        f"{k.removesuffix('_ms')}={s['median']:.1f}/{s['p95']:.1f}"
        for k, s in sorted(stages.items())
        if s.get("count")
    )
    refine = report.get("pose_refinement", {})
    placed = (
        f"placed by SIFT {refine.get('frames_refined_by_sift')}, "
        f"head rotation {refine.get('frames_head_rotation')}, head pose {refine.get('frames_not_refined')}"
    )
    counts = report["counts"]
    rate = report["rates"].get("keyframe_rate_hz")
    windows = (
        f"accepted {counts['windows_accepted']}/{counts['windows']}, dropped {report['dropped']['windows']}"
    )
    return (
        f"{name}: windows {poses.get('count', 0)}, {head} | {stage_text} | "
        f"{placed} | {windows}, keyframes {rate if rate is None else round(rate, 2)}/s"
    )


SLOW_STAGES = (
    "predictor_preprocess_ms",
    "predictor_inference_ms",
    "predictor_postprocess_ms",
    "refine_features_ms",
    "refine_pairs_ms",
    "chain_ms",
    "scale_ms",
    "gc_ms",
    "refine_prefetch_tracks",
    "refine_prefetch_end_ms",
    "refine_prefetch_left",
)


def _short(stage: str) -> str:
    return stage.removesuffix("_ms").removeprefix("predictor_").removeprefix("refine_")


def slowest_windows(report: dict, count: int = 3) -> str:
    """The ``count`` accepted windows slowest to poses, each with its stages (ms)."""
    rows = [w for w in report["latency_ms"].get("per_window", []) if w.get("accepted") and "poses_ms" in w]
    rows.sort(key=lambda w: w["queue_ms"] + w["poses_ms"], reverse=True)
    parts = []
    for w in rows[:count]:
        stages = " ".join(f"{_short(k)}={w[k]:.1f}" for k in SLOW_STAGES if k in w)
        parts.append(f"window {w['window_id']}: {w['queue_ms'] + w['poses_ms']:.1f} ({stages})")
    return "; ".join(parts)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    reports = sorted(Path(argv[0]).glob("*/report.json"))
    if not reports:
        print(f"no */report.json under {argv[0]}", file=sys.stderr)
        return 1
    for path in reports:
        report = json.loads(path.read_text())
        print(summary_line(path.parent.name, report))
        slow = slowest_windows(report)
        if slow:
            print(f"  slowest to poses: {slow}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
