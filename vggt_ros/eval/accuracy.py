"""Accuracy of weights on a ground-truth sequence, side by side with the baselines.

``sequence_accuracy`` replays one sequence bag through the node's pipeline
(:class:`vggt_ros.mapping.PerceptionPipeline`, as ``vggt-ros eval`` does) once per predictor and
collects the headline numbers of :func:`vggt_ros.eval.report.accuracy_summary`: window depth
AbsRel (one median scale per window), window relative rotation error, and the chained
trajectory's APE as a percentage of its length. The constant-depth / identity-pose baseline is
computed from the ground truth of the first run. ``make demo`` and the model card print these.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from vggt_ros.eval.report import accuracy_summary, evaluate

#: The window and keyframe settings ``make demo`` runs the node with (its bundled sequence has
#: 16 frames, so windows of 4 with stride 2), as flat pipeline parameters. The demo tests and
#: ``benchmarks/demo_room_accuracy.py`` replay with the same.
DEMO_WINDOW_SETTINGS: dict[str, float | int] = {
    "window.size": 4,
    "window.stride": 2,
    "keyframe.max_interval_s": 0.15,
}

COLUMNS = (
    ("window_abs_rel", "depth AbsRel"),
    ("window_rotation_deg", "rotation err (deg)"),
    ("ape_percent_of_length", "APE (% length)"),
)


def sequence_accuracy(
    bag: str | Path,
    predictors: dict[str, Any],
    pipeline_config: Any = None,
) -> dict[str, dict[str, float | None]]:
    """Headline accuracy of each predictor on ``bag`` plus the constant/identity baseline.

    Args:
        bag: a ground-truth bag (``vggt-ros generate`` layout).
        predictors: name -> Predictor (or any object with its ``predict`` contract).
        pipeline_config: a ``vggt_ros.mapping.PipelineConfig`` (default: the node's defaults).

    Returns:
        {row name: {"window_abs_rel", "window_rotation_deg", "window_translation_deg",
        "ape_percent_of_length"}}, the baseline last.
    """
    from vggt_ros.eval.replay import replay_bag
    from vggt_ros.mapping import PerceptionPipeline, PipelineConfig

    rows: dict[str, dict[str, float | None]] = {}
    baseline = None
    for name, predictor in predictors.items():
        pipeline = PerceptionPipeline(pipeline_config or PipelineConfig(), predictor)
        result = replay_bag(bag, pipeline)
        report, _ = evaluate(result)
        summary = accuracy_summary(report)
        rows[name] = summary["model"]
        baseline = baseline or summary["constant/identity baseline"]
    if baseline is not None:
        rows["constant depth / identity poses"] = baseline
    return rows


def format_accuracy_table(rows: dict[str, dict[str, float | None]]) -> str:
    """A fixed-width text table of :func:`sequence_accuracy` rows."""
    width = max(len(n) for n in rows) + 2
    head = "".ljust(width) + "".join(label.rjust(20) for _, label in COLUMNS)
    lines = [head]
    for name, r in rows.items():
        cells = "".join(("-" if r.get(k) is None else f"{r[k]:.3f}").rjust(20) for k, _ in COLUMNS)
        lines.append(name.ljust(width) + cells)
    return "\n".join(lines)


def synthetic_sequence_accuracy(
    seq: Any, predictors: dict[str, Any], pipeline_config: Any = None
) -> dict[str, dict[str, float | None]]:
    """:func:`sequence_accuracy` of a rendered ``SyntheticSequence`` (written to a temporary bag)."""
    from vggt_ros.eval.generate import write_sequence_bag

    with tempfile.TemporaryDirectory(prefix="vggt_ros_accuracy_") as tmp:
        bag = write_sequence_bag(seq, Path(tmp) / "sequence")
        return sequence_accuracy(bag, predictors, pipeline_config)
