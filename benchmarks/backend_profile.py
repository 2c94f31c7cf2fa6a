"""Where a long run's window time goes as the pose graph grows: replays a bag in a loop through
the soak's pipeline (`vggt-ros soak`'s configuration and model), one window after the other with
no clock (no window is dropped, so every run sees the same windows), and times the back end's
parts per window.

    vggt-ros generate /tmp/lapbag --scene procedural --held-out --motion lap --frames 160 \\
        --height 140 --width 182 --seed 2000
    python benchmarks/backend_profile.py /tmp/lapbag --windows 500 --out prof.jsonl
    python benchmarks/backend_profile.py --summary prof.jsonl [prof_before.jsonl ...]

Each line of the JSONL is one window: its stage times (``predict_ms`` ... ``loop_ms``), the graph
size, the loop counts, and for each timed function its milliseconds and calls in that window.
``--summary`` prints, per 100 windows, the mean and p95 window time and the mean of the stages.
Any option after ``--`` goes to `vggt-ros soak` (e.g. ``-- --param loop.max_keyframes=1000``).
Figures: docs/soak.md ("The back end's cost as the graph grows").
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from vggt_ros.mapping import backend, pipeline, pose_graph, voxel_map

TIMED = [
    (pose_graph.PoseGraph, "update"),
    (pose_graph.PoseGraph, "reoptimize_from"),
    (pose_graph.PoseGraph, "_restart_isam"),
    (pose_graph.PoseGraph, "poses"),
    (backend.BackEnd, "add_window"),
    (backend.BackEnd, "close_loops"),
    (backend.BackEnd, "verify"),
    (backend.BackEnd, "_spread_correction"),
    (backend.BackEnd, "cloud"),
    (pipeline.PerceptionPipeline, "_apply_back_end"),
    (voxel_map.VoxelMap, "insert"),
]
STAGES = ("predict_ms", "chain_ms", "scale_ms", "map_ms", "loop_ms")


def _instrument(totals: dict[str, list[float]]) -> None:
    """Wrap every TIMED method so that it adds its time and a call to ``totals[label]``."""
    for cls, name in TIMED:
        original = getattr(cls, name)
        label = f"{cls.__name__}.{name}"

        def timed(*args: Any, _original=original, _label=label, **kwargs: Any) -> Any:  # noqa: ANN401
            t0 = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                entry = totals.setdefault(_label, [0.0, 0])
                entry[0] += (time.perf_counter() - t0) * 1e3
                entry[1] += 1

        setattr(cls, name, functools.wraps(original)(timed))


def _replay(windows: int, out: Path, totals: dict[str, list[float]]):  # noqa: ANN202
    """``vggt_ros.eval.soak.run_soak`` without a clock (every window processed, in order), for
    ``windows`` windows, writing one JSONL row per window."""
    from vggt_ros.eval import soak

    run_soak = soak.run_soak

    def run(frames: list[Any], period: float, pipe: Any, *args: Any, **kwargs: Any) -> Any:
        f = out.open("w")
        done, before = 0, {}

        def row(result: Any, ms: float) -> None:
            nonlocal done, before
            stats = pipe.back_end_stats
            line: dict[str, Any] = {
                "window": done,
                "ms": ms,
                "accepted": result.accepted,
                "graph_keyframes": stats.get("graph_keyframes"),
                "loops_accepted": stats.get("loops_accepted"),
                "map_points": pipe.map_size,
                "map_rebuilt": result.map_rebuilt,
                **{k: result.timings.get(k, 0.0) for k in STAGES},
            }
            for label, (total_ms, calls) in totals.items():
                ms0, calls0 = before.get(label, (0.0, 0))
                line[label] = round(total_ms - ms0, 3)
                line[label + " calls"] = calls - calls0
            before = {k: tuple(v) for k, v in totals.items()}
            f.write(json.dumps(line) + "\n")
            done += 1
            if done % 50 == 0:
                print(f"{done} windows, graph {line['graph_keyframes']}", file=sys.stderr)

        kwargs.update(clock=False, max_windows=windows, on_window=row)
        try:
            return run_soak(frames, period, pipe, *args, **kwargs)
        finally:
            f.close()

    return run


def summarize(paths: list[Path]) -> None:
    for path in paths:
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        print(f"== {path} ({len(rows)} windows)")
        print("windows   graph  mean ms  p95 ms  " + "  ".join(s.removesuffix("_ms") for s in STAGES))
        for a in range(0, len(rows), 100):
            block = rows[a : a + 100]
            ms = np.array([r["ms"] for r in block])
            stages = "  ".join(f"{np.mean([r[s] for r in block]):.0f}" for s in STAGES)
            print(
                f"{a:4d}-{a + len(block) - 1:<4d} {block[-1]['graph_keyframes']:6.0f}  {ms.mean():7.0f}"
                f"  {np.percentile(ms, 95):6.0f}  {stages}"
            )


def main() -> int:
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    own, soak_args = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bag", type=Path, nargs="?")
    parser.add_argument("--windows", type=int, default=500)
    parser.add_argument("--out", type=Path, default=Path("backend_profile.jsonl"))
    parser.add_argument(
        "--summary", type=Path, nargs="+", help="print the summary of these profiles and exit"
    )
    args = parser.parse_args(own)
    if args.summary:
        summarize(args.summary)
        return 0
    if args.bag is None:
        parser.error("a bag is needed (or --summary)")
    from vggt_ros.cli import main as cli_main
    from vggt_ros.eval import soak

    totals: dict[str, list[float]] = {}
    _instrument(totals)
    soak.run_soak = _replay(args.windows, args.out, totals)
    soak.write_soak = lambda *_args, **_kwargs: []  # the profile is the output
    # --minutes only bounds the run: --windows ends it.
    code = cli_main(["soak", str(args.bag), "--out", str(args.out.parent), "--minutes", "100000", *soak_args])
    summarize([args.out])
    return code


if __name__ == "__main__":
    sys.exit(main())
