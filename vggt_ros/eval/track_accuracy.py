"""Keypoint tracks against ground truth on held-out procedural windows.

The node publishes the track head's 2D tracks of query points (``window.num_track_queries``);
this scores them where the truth is known exactly: held-out procedural windows (the held-out
scene settings, their own seed stream) rendered at the model's input size, with each query
point's true position in every frame (its 3D surface point projected) and whether it is visible
there (in front, inside the image, not occluded; :func:`~vggt_ros.eval.procedural.render_windows`).

Per window, over frames 1..S-1 (frame 0 holds the queries themselves):

* position: the pixel distance between predicted and true positions where the point is
  visible; its median, and the share within 1, 2, 4, 8 and 16 px, whose mean is ``delta_avg``
  (TAP-Vid's position metric, here in pixels of the model-size image, not of a 256x256 one);
* visibility: the share of (frame, point) pairs whose predicted visibility (``track_vis`` above
  0.5) matches the truth.

A *static* baseline (every point stays where it was queried, always visible) shows what motion
the tracks actually follow. ``python benchmarks/track_accuracy.py`` prints the table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from vggt_ros.engine.predictor import Predictor
from vggt_ros.eval.procedural import ProceduralSettings, render_windows, window_seeds
from vggt_ros.eval.synthetic import render_size

STREAM = 12  # seed stream of these windows (training 0, validation 1, long windows 11)
THRESHOLDS_PX = (1.0, 2.0, 4.0, 8.0, 16.0)
VISIBLE_ABOVE = 0.5  # predicted visibility above this counts as visible
STATIC = "static (query stays put)"


@dataclass(frozen=True)
class TrackWindow:
    """One held-out window with its ground-truth tracks.

    Attributes:
        images: S RGB uint8 frames [H, W, 3].
        queries: [N, 2] float64 (x, y) pixels in frame 0.
        tracks: [S, N, 2] float64 true (x, y) of each query's surface point in every frame.
        visible: [S, N] bool, the point visible in that frame.
    """

    images: list[np.ndarray]
    queries: np.ndarray
    tracks: np.ndarray
    visible: np.ndarray


@dataclass(frozen=True)
class TrackScores:
    """Means over windows of the per-window figures (NaN-free: windows without a visible pair
    are skipped for the position figures).

    Attributes:
        windows: windows scored.
        pairs: visible (frame, point) pairs behind the position figures, all windows together.
        median_px: each window's median position error (pixels), averaged over windows.
        within_px: share of visible pairs within each of :data:`THRESHOLDS_PX`.
        delta_avg: mean of ``within_px``.
        visibility_accuracy: share of (frame, point) pairs whose visibility is right.
    """

    windows: int
    pairs: int
    median_px: float
    within_px: tuple[float, ...]
    delta_avg: float
    visibility_accuracy: float


def held_out_track_windows(count: int, frames: int, queries: int, image_size: int) -> list[TrackWindow]:
    """``count`` held-out windows of ``frames`` frames and ``queries`` query points, rendered at
    the size a model of input width ``image_size`` sees unresized."""
    if count < 1 or frames < 2 or queries < 1:
        raise ValueError("track accuracy needs at least one window, 2 frames and 1 query point")
    height, width = render_size(image_size)
    settings = ProceduralSettings.held_out(height=height, width=width, frames=frames, track_queries=queries)
    rendered = render_windows(settings, window_seeds(0, range(count), STREAM), "cpu")
    assert rendered.query_points is not None and rendered.tracks is not None
    assert rendered.track_visible is not None
    return [
        TrackWindow(
            rendered.uint8_frames(w),
            rendered.query_points[w].numpy().astype(np.float64),
            rendered.tracks[w].numpy().astype(np.float64),
            rendered.track_visible[w].numpy().astype(bool),
        )
        for w in range(count)
    ]


def score_window(
    tracks: np.ndarray, visible: np.ndarray | None, truth: np.ndarray, truth_visible: np.ndarray
) -> dict[str, float | int | np.ndarray]:
    """Scores of one window's predicted ``tracks`` ([S, N, 2] pixels) and ``visible`` ([S, N]
    probabilities, or None: always visible) against the truth, over frames 1..S-1.

    Returns ``errors`` (the visible pairs' pixel errors, 1D), ``median_px``, ``within_px``
    (array), ``visibility_accuracy``.
    """
    if tracks.shape != truth.shape or truth_visible.shape != truth.shape[:2]:
        raise ValueError(
            f"tracks {tracks.shape} / visibility {truth_visible.shape} do not match {truth.shape}"
        )
    seen = truth_visible[1:]
    errors = np.linalg.norm(tracks[1:] - truth[1:], axis=-1)[seen]
    predicted = np.ones_like(seen) if visible is None else np.asarray(visible)[1:] > VISIBLE_ABOVE
    within = np.array([(errors <= t).mean() if errors.size else np.nan for t in THRESHOLDS_PX])
    return {
        "errors": errors,
        "median_px": float(np.median(errors)) if errors.size else float("nan"),
        "within_px": within,
        "visibility_accuracy": float((predicted == seen).mean()),
    }


def _summarize(rows: list[dict]) -> TrackScores:
    scored = [r for r in rows if r["errors"].size]
    within = (
        np.mean([r["within_px"] for r in scored], axis=0) if scored else np.full(len(THRESHOLDS_PX), np.nan)
    )
    return TrackScores(
        windows=len(rows),
        pairs=int(sum(r["errors"].size for r in rows)),
        median_px=float(np.mean([r["median_px"] for r in scored])) if scored else float("nan"),
        within_px=tuple(float(x) for x in within),
        delta_avg=float(np.mean(within)),
        visibility_accuracy=float(np.mean([r["visibility_accuracy"] for r in rows])),
    )


def track_accuracy(
    predictors: Mapping[str, Predictor],
    windows: list[TrackWindow],
    progress: Callable[[str], None] | None = None,
) -> dict[str, TrackScores]:
    """Scores of every predictor's tracks on ``windows``, and of the static baseline.

    Every predictor must run at the windows' size (``target_size`` = their width), so that its
    tracks come back in the rendered pixels unresized.

    Raises:
        ValueError: no windows, a predictor at another size, or one without a track head.
    """
    if not windows:
        raise ValueError("no windows to score")
    width = windows[0].images[0].shape[1]
    for name, predictor in predictors.items():
        if predictor.target_size != width:
            raise ValueError(f"{name} runs at {predictor.target_size} px; the windows are {width} px wide")
    rows: dict[str, list[dict]] = {name: [] for name in (*predictors, STATIC)}
    for i, window in enumerate(windows):
        for name, predictor in predictors.items():
            pred = predictor.predict(window.images, query_points=window.queries)
            if pred.tracks is None:
                raise ValueError(f"{name} returned no tracks (no track head?)")
            rows[name].append(score_window(pred.tracks, pred.track_vis, window.tracks, window.visible))
        static = np.broadcast_to(window.queries, window.tracks.shape)
        rows[STATIC].append(score_window(static, None, window.tracks, window.visible))
        if progress is not None:
            progress(f"window {i + 1}/{len(windows)} done")
    return {name: _summarize(r) for name, r in rows.items()}


def format_table(scores: Mapping[str, TrackScores]) -> str:
    """The scores as a markdown table."""
    heads = " | ".join(f"<= {t:g} px" for t in THRESHOLDS_PX)
    lines = [
        f"| tracks | median error (px) | {heads} | delta_avg | visibility accuracy | visible pairs |",
        "|---|---|" + "---|" * len(THRESHOLDS_PX) + "---|---|---|",
    ]
    for name, s in scores.items():
        within = " | ".join(f"{x:.3f}" for x in s.within_px)
        figures = f"{s.median_px:.2f} | {within} | {s.delta_avg:.3f} | {s.visibility_accuracy:.3f}"
        lines.append(f"| {name} | {figures} | {s.pairs} |")
    return "\n".join(lines)
