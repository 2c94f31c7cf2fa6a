"""What approximate sparse global attention costs in accuracy on long windows.

The runner option ``global_key_stride`` (node parameter ``model.global_key_stride``) lets every
token of a global block attend to a sample of the keys instead of all of them. Its speed is
timed by ``vggt-ros bench``; its accuracy needs a model that has learned to use global attention
and ground truth. This module renders held-out procedural windows of the asked lengths (a seed
stream no training or validation run draws from), runs a trained model on each window with exact
global attention and with every asked sparse setting, and reports per length and setting: depth
AbsRel after one median scale per window (against the ground truth), its change against exact
attention on the same windows, the relative difference of the depth maps themselves, and the
end-to-end time of one window.

Used by ``vggt-ros bench --sparse-accuracy K`` and ``benchmarks/long_window_accuracy.py``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from vggt_ros.engine.predictor import Predictor
from vggt_ros.eval.procedural import ProceduralSettings, render_windows, window_seeds
from vggt_ros.eval.synthetic import render_size
from vggt_ros.eval.window_metrics import window_depth_errors

# The seed stream of the held-out windows (training draws stream 0, validation 1 ... none 11).
STREAM = 11


@dataclass(frozen=True)
class SparseSetting:
    """One global attention setting: ``stride`` 0 is exact; ``weighted`` is the runner option
    ``global_key_weighting`` (each sampled key's logit + ln stride)."""

    stride: int
    weighted: bool = True

    @property
    def label(self) -> str:
        if self.stride == 0:
            return "exact"
        return f"{self.stride}, {'weighted' if self.weighted else 'unweighted'}"


EXACT = SparseSetting(0)


@dataclass(frozen=True)
class LongWindowRow:
    """Means over ``windows`` held-out windows of ``frames`` frames for one setting."""

    frames: int
    global_key_stride: int
    global_key_weighting: bool
    abs_rel: float  # depth AbsRel after a per-window median scale
    abs_rel_change: float  # against exact attention on the same windows
    depth_relative_difference: float  # mean |depth - exact depth| / mean |exact depth|
    ms: float  # median end-to-end time of one window (predict call)
    windows: int

    @property
    def setting(self) -> SparseSetting:
        return SparseSetting(self.global_key_stride, self.global_key_weighting)

    def to_dict(self) -> dict[str, float | int | bool]:
        return asdict(self)


def held_out_window(frames: int, index: int, height: int, width: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Held-out procedural window ``index`` of ``frames`` frames: RGB uint8 images [H, W, 3]
    and the ground-truth depth [S, H, W] in metres (camera z)."""
    settings = ProceduralSettings.held_out(height=height, width=width, frames=frames, track_queries=0)
    rendered = render_windows(settings, window_seeds(0, [index], STREAM), "cpu")
    return rendered.uint8_frames(0), rendered.depth[0].numpy()


def long_window_accuracy(
    predictor: Predictor,
    frames: Sequence[int],
    settings: Sequence[SparseSetting],
    windows: int,
    progress: Callable[[str], None] | None = None,
) -> list[LongWindowRow]:
    """Rows for exact attention and every setting in ``settings``, per length in ``frames``;
    ``progress`` is called after each window.

    ``predictor`` holds the trained model (float32 keeps the approximation's effect apart from
    precision's); its aggregator's ``global_key_stride`` / ``global_key_weighting`` are switched
    between runs on the same window and restored afterwards.

    Raises:
        ValueError: no windows, a length under 2 frames, or a model whose depth does not come out
            at the rendered size.
    """
    if windows < 1 or not frames or min(frames) < 2:
        raise ValueError("the sparse accuracy needs at least one window of at least 2 frames per length")
    aggregator = predictor.runner.model.aggregator
    saved = aggregator.global_key_stride, aggregator.global_key_weighting
    runs = [EXACT, *(s for s in dict.fromkeys(settings) if s != EXACT)]
    height, width = render_size(predictor.target_size)
    rows: list[LongWindowRow] = []
    try:
        for length in frames:
            seen: dict[SparseSetting, dict[str, list[float]]] = {
                s: {"abs_rel": [], "ms": [], "diff": []} for s in runs
            }
            for index in range(windows):
                images, gt_depth = held_out_window(length, index, height, width)
                exact_depth: np.ndarray | None = None
                for setting in runs:
                    aggregator.global_key_stride, aggregator.global_key_weighting = (
                        setting.stride,
                        setting.weighted,
                    )
                    start = time.perf_counter()
                    depth = predictor.predict(images).depth
                    seen[setting]["ms"].append((time.perf_counter() - start) * 1e3)
                    if depth.shape != gt_depth.shape:
                        raise ValueError(
                            f"model depth {depth.shape} against ground truth {gt_depth.shape}: the "
                            f"windows are rendered at {height}x{width} for input size {predictor.target_size}"
                        )
                    if exact_depth is None:
                        exact_depth = depth
                    seen[setting]["abs_rel"].append(window_depth_errors(depth, gt_depth)[0])
                    diff = np.abs(depth - exact_depth).mean() / max(float(np.abs(exact_depth).mean()), 1e-12)
                    seen[setting]["diff"].append(float(diff))
                if progress is not None:
                    progress(f"{length} frames, window {index + 1}/{windows} done")
            exact_abs_rel = statistics.fmean(seen[EXACT]["abs_rel"])
            for setting in runs:
                abs_rel = statistics.fmean(seen[setting]["abs_rel"])
                rows.append(
                    LongWindowRow(
                        frames=length,
                        global_key_stride=setting.stride,
                        global_key_weighting=setting.weighted,
                        abs_rel=abs_rel,
                        abs_rel_change=abs_rel - exact_abs_rel,
                        depth_relative_difference=statistics.fmean(seen[setting]["diff"]),
                        ms=statistics.median(seen[setting]["ms"]),
                        windows=windows,
                    )
                )
    finally:
        aggregator.global_key_stride, aggregator.global_key_weighting = saved
    return rows


def format_long_window_table(rows: Sequence[LongWindowRow]) -> str:
    """A markdown table of ``rows``."""
    lines = [
        "| frames | global_key_stride | depth AbsRel | change vs exact | depth rel. diff "
        "| end-to-end ms | windows |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        change = "" if r.global_key_stride == 0 else f"{r.abs_rel_change:+.4f}"
        lines.append(
            f"| {r.frames} | {r.setting.label} | {r.abs_rel:.4f} | {change} | "
            f"{r.depth_relative_difference:.4f} | {r.ms:.0f} | {r.windows} |"
        )
    return "\n".join(lines)


def sparse_predictor(
    checkpoint: str | None, config: str | None, device: torch.device | str
) -> tuple[Predictor, str]:
    """A float32 predictor of the trained model the sparse accuracy is judged on (the embedded
    compact model unless ``checkpoint`` is given) and its description."""
    from vggt_ros.model.checkpoint import load_model
    from vggt_ros.model.embedded import choose_model

    choice = choose_model(checkpoint, config)
    if choice.untrained:
        raise ValueError("the sparse accuracy needs trained weights")
    model, _ = load_model(choice.source, config=choice.config, device="cpu")
    return Predictor(
        model, device=device, precision="fp32", target_size=choice.image_size
    ), choice.description
