"""Evaluation report of a bag replay: metrics, report.json, report.md and PNG plots.

:func:`evaluate` turns a :class:`vggt_ros.eval.replay.ReplayResult` into a JSON-friendly dict:

* ``trajectory``: evo APE/RPE of the reference camera's keyframe poses against ground truth,
  Sim(3)-aligned when the pipeline's scale is normalized, SE(3) when metric (or as asked);
* ``depth``: AbsRel, SqRel, RMSE, delta<1.25^k pooled over the keyframes with ground-truth depth
  (median-scaled per keyframe when normalized), plus per-keyframe rows;
* ``latency``: per window (``process`` wall time and queue wait, ms, and the pipeline's stage
  timings) and per frame (``add_frame``, ms);
* ``rates``: keyframes per second of bag time, share of frames that became keyframes, replay
  speed; ``dropped``: windows/frames refused by the full queue (rate mode) and undecodable images.

:func:`write_report` writes ``report.json``, ``report.md``, the trajectories as TUM files and the
plots (matplotlib, Agg).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from vggt_ros.eval.exports import json_ready
from vggt_ros.eval.metrics import (
    DepthErrors,
    TrajectoryErrors,
    depth_errors,
    pool_depth_errors,
    relative_depth_error_map,
    trajectory_errors,
)
from vggt_ros.eval.replay import KeyframeRecord, ReplayResult
from vggt_ros.geometry.overlap import mutual_view_overlap
from vggt_ros.mapping.pipeline import REFINEMENT_COUNTERS

logger = logging.getLogger(__name__)
ALIGN_CHOICES = ("auto", "sim3", "se3", "none")
PLOT_FILES = ("trajectory_top.png", "trajectory_error.png", "depth_error_hist.png", "depth_grid.png")


def _stats(values: np.ndarray | list[float]) -> dict[str, float]:
    v = np.asarray(values, np.float64)
    if v.size == 0:
        return {"count": 0}
    return {
        "count": int(v.size),
        "mean": float(v.mean()),
        "median": float(np.median(v)),
        "p90": float(np.percentile(v, 90)),
        "p95": float(np.percentile(v, 95)),
        "max": float(v.max()),
        "min": float(v.min()),
    }


def sample_model_depth(
    depth: np.ndarray,
    conf: np.ndarray,
    model_intrinsics: np.ndarray,
    intrinsics: np.ndarray,
    original_hw: tuple[int, int],
    shape: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Model-resolution depth and confidence [Hm, Wm] sampled (nearest) on a [Hg, Wg] grid
    covering the original image of size ``original_hw`` (same field of view assumed).

    Returns:
        depth [Hg, Wg] float32 and confidence [Hg, Wg] float32; NaN where no model pixel maps.
    """
    hg, wg = shape
    h, w = original_hw
    v, u = np.mgrid[0:hg, 0:wg].astype(np.float64)
    # Ground-truth grid -> original pixels (pixel centres at integers) -> model pixels.
    x = (u + 0.5) * w / wg - 0.5
    y = (v + 0.5) * h / hg - 0.5
    M = model_intrinsics @ np.linalg.inv(intrinsics)
    xm = M[0, 0] * x + M[0, 1] * y + M[0, 2]
    ym = M[1, 1] * y + M[1, 2]
    hm, wm = depth.shape
    ui, vi = np.rint(xm).astype(np.int64), np.rint(ym).astype(np.int64)
    ok = (ui >= 0) & (ui < wm) & (vi >= 0) & (vi < hm)
    out_depth = np.full(shape, np.nan, np.float32)
    out_conf = np.full(shape, np.nan, np.float32)
    out_depth[ok] = depth[vi[ok], ui[ok]]
    out_conf[ok] = conf[vi[ok], ui[ok]]
    return out_depth, out_conf


def depth_at(record: KeyframeRecord, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The keyframe's model-resolution depth and confidence sampled (nearest) on a [Hg, Wg] grid
    covering its original image (the ground-truth depth's grid; same field of view assumed)."""
    original = record.image.shape[:2] if record.image.size else shape
    return sample_model_depth(
        record.depth, record.depth_conf, record.model_intrinsics, record.intrinsics, original, shape
    )


def _finite_or_none(value: float) -> float | None:
    """JSON-safe number: None for NaN or infinity (a window chaining could not align)."""
    return float(value) if np.isfinite(value) else None


def window_accuracy(result: ReplayResult) -> dict[str, Any]:
    """Per-window accuracy of every processed window (reference camera keyframes, >= 2 of them).

    Each window is scored in its own frame and scale (:mod:`vggt_ros.eval.window_metrics`):
    depth AbsRel after one median scale per window, relative rotation and translation-direction
    errors between its frames. The same scores of a constant-depth, identity-pose baseline come
    alongside. Ground-truth depth is assumed registered to the image at the image's resolution.
    """
    from vggt_ros.eval.window_metrics import score_window, summarize
    from vggt_ros.mapping.export.trajectory import interpolate

    gt = result.ground_truth
    if gt is None or len(gt) < 2 or not result.window_results:
        return {"skipped": "no ground-truth poses" if gt is None or len(gt) < 2 else "no window processed"}
    model, baseline, rows = [], [], []
    for r in result.window_results:
        ref = [i for i, c in enumerate(r.camera_ids) if c == result.reference_camera]
        if len(ref) < 2:
            continue
        stamps = np.asarray(r.stamps, np.float64)[ref]
        at, ok = interpolate(gt, stamps, max_gap=1.0)
        if not ok.all():
            continue
        gt_depths = [result.gt_depth_by_keyframe.get(int(r.keyframe_ids[i])) for i in ref]
        pred_depth = gt_depth = None
        if all(d is not None for d in gt_depths):
            gt_depth = np.stack(gt_depths).astype(np.float64)
            shape = gt_depth.shape[1:]
            pred_depth = np.stack(
                [
                    sample_model_depth(
                        r.depth[i], r.depth_conf[i], r.model_intrinsics[i], r.intrinsics[i], shape, shape
                    )[0]
                    for i in ref
                ]
            )
        pred_c2w = np.asarray(r.cam_to_map, np.float64)[ref]
        scores = score_window(pred_depth, gt_depth, pred_c2w, at.poses)
        constant = None if gt_depth is None else np.ones_like(gt_depth)
        base = score_window(constant, gt_depth, np.repeat(np.eye(4)[None], len(ref), 0), at.poses)
        model.append(scores)
        baseline.append(base)
        rows.append(
            {
                "window_id": int(r.window_id),
                "accepted": bool(r.accepted),
                "reason": r.reason,
                # chaining's alignment statistics, to relate its tests to the ground truth
                "residual": _finite_or_none(r.residual),
                "inlier_ratio": _finite_or_none(r.inlier_ratio),
                "center_residual": _finite_or_none(r.center_residual),
                "median_relative_residual": _finite_or_none(r.median_relative_residual),
                **scores.to_dict(),
            }
        )
    if not model:
        return {"skipped": "no window had two reference-camera keyframes with ground truth"}
    return {
        "model": summarize(model),
        "constant_identity_baseline": summarize(baseline),
        "per_window": rows,
    }


LOOP_TRUE_OVERLAP = 0.3  # a loop is true when its two cameras see this much of one surface ...
LOOP_TRUE_DISTANCE_M = 1.0  # ... or, without ground-truth depth, stood this close (ground truth)


def _loop_overlap(result: ReplayResult, ids: tuple[int, int], poses: np.ndarray) -> float | None:
    """The smaller share of either keyframe's ground-truth surface that the other sees, or None
    without ground-truth depth for both or the camera's camera_info."""
    depths = [result.gt_depth_by_keyframe.get(k) for k in ids]
    if any(d is None for d in depths) or result.reference_camera_info is None:
        return None
    K, (h, w) = result.reference_camera_info
    K = K.copy()  # camera_info of another resolution than the depth images: scale it
    K[0] *= depths[0].shape[1] / w
    K[1] *= depths[0].shape[0] / h
    return mutual_view_overlap(depths[0], K, poses[0], depths[1], K, poses[1])


def _offset_error(measured: np.ndarray, truth: np.ndarray, metres_per_unit: float) -> dict[str, float]:
    """How far a loop's measured offset (the new camera in the old one, [4, 4], G units) is
    from the ground truth's ([4, 4], metres), at the run's scale (metres per G unit)."""
    moved = float(np.linalg.norm(metres_per_unit * measured[:3, 3] - truth[:3, 3]))
    cos = (np.trace(measured[:3, :3].T @ truth[:3, :3]) - 1.0) / 2.0
    turned = float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))
    return {"offset_error_m": moved, "offset_error_deg": turned}


def _confirmation_apart(apart: tuple[float, float] | None) -> dict[str, float | None] | None:
    """{"units", "deg"}: how far two confirming loops' corrections for the later keyframe differ
    (G units and degrees), or None for a loop that confirmed none."""
    if apart is None:
        return None
    return {"units": _finite_or_none(apart[0]), "deg": _finite_or_none(apart[1])}


def loop_report(
    result: ReplayResult, alignment: str, rpe_delta: int, metres_per_unit: float | None = None
) -> dict[str, Any]:
    """Loop closures of a replay: verified / accepted / rejected, how many accepted ones are
    true, and the trajectory's APE before (as chained) and after the pose-graph optimisation.

    A loop is true when its two keyframes show the same place: with ground-truth depth, each
    camera sees at least ``LOOP_TRUE_OVERLAP`` of the other's surface
    (:func:`~vggt_ros.geometry.overlap.mutual_view_overlap`); without it, their ground-truth
    camera centres lie within ``LOOP_TRUE_DISTANCE_M``. Both figures are in every event's row
    where they can be computed, with how far the loop's measured offset is from the ground
    truth's.
    """
    from vggt_ros.mapping.export.trajectory import interpolate

    events = result.loops
    out: dict[str, Any] = {
        "verified": len(events),
        "accepted": sum(bool(e.accepted) for e in events),
        "rejected": sum(not e.accepted for e in events),
    }
    gt = result.ground_truth
    rows = []
    true_accepted = false_accepted = 0
    for e in events:
        row = {
            "query": int(e.query_id),
            "candidate": int(e.candidate_id),
            "accepted": bool(e.accepted),
            "reason": str(e.reason),
            "matches": int(e.matches),
            "similarity": _finite_or_none(e.similarity),
            "correction": float(e.correction_m),
            "path_since": float(e.path_since_m),
            "view_overlap": _finite_or_none(getattr(e, "view_overlap", float("nan"))),
            "correction_deg": _finite_or_none(e.correction_deg),
            "correction_scale": _finite_or_none(getattr(e, "correction_scale", float("nan"))),
            # Independent confirmation (loop.confirmation_keyframes): held for the size of its
            # correction; the held loop this one confirmed and how far their corrections differ.
            "held": bool(getattr(e, "held", False)),
            "confirmed_by": None if getattr(e, "confirmed_by", None) is None else int(e.confirmed_by),
            "confirmation_apart": _confirmation_apart(getattr(e, "confirmation_apart", None)),
            # Frames of the verification window placed by PnP (loop.refine_verification).
            "refined_frames": None if getattr(e, "refined_frames", None) is None else int(e.refined_frames),
        }
        stamps = [result.keyframe_stamps.get(int(k)) for k in (e.query_id, e.candidate_id)]
        if gt is not None and len(gt) > 1 and None not in stamps:
            at, ok = interpolate(gt, np.asarray(stamps, np.float64), max_gap=1.0)
            if ok.all():
                distance = float(np.linalg.norm(at.poses[0][:3, 3] - at.poses[1][:3, 3]))
                row["ground_truth_distance_m"] = distance
                overlap = _loop_overlap(result, (int(e.query_id), int(e.candidate_id)), at.poses)
                row["ground_truth_overlap"] = overlap
                if overlap is None:
                    row["true"] = distance < LOOP_TRUE_DISTANCE_M
                else:
                    row["true"] = overlap >= LOOP_TRUE_OVERLAP
                offset = getattr(e, "offset", None)
                if offset is not None and metres_per_unit is not None:
                    truth = np.linalg.inv(at.poses[1]) @ at.poses[0]  # query in candidate
                    row.update(_offset_error(offset, truth, metres_per_unit))
                if e.accepted:
                    true_accepted += row["true"]
                    false_accepted += not row["true"]
        rows.append(row)
    out["true_accepted"], out["false_accepted"] = true_accepted, false_accepted
    out["events"] = rows
    if gt is not None and result.chained_estimate is not None and len(result.chained_estimate) >= 3:
        try:
            chained = trajectory_errors(
                result.chained_estimate, gt, alignment, result.options.stamp_tolerance, rpe_delta
            )
            out["chained_ape_rmse_m"] = float(np.sqrt(np.mean(chained.ape_trans**2)))
            out["chained_ape_percent_of_length"] = chained.ape_percent_of_length
        except ValueError as exc:
            out["chained_ape"] = f"skipped: {exc}"
    return out


def evaluate(
    result: ReplayResult,
    align: str = "auto",
    rpe_delta: int = 1,
    max_depth: float | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Metrics of a replay.

    Returns:
        (report dict, JSON-ready; details for plots: TrajectoryErrors or None, per-keyframe
        DepthErrors, relative error maps).
    """
    if align not in ALIGN_CHOICES:
        raise ValueError(f"align must be one of {ALIGN_CHOICES}, got {align!r}")
    o = result.options
    scale = result.scale
    report: dict[str, Any] = {
        "format": "vggt_ros.eval_report/1",
        "inputs": {
            "image_topics": o.image_topics,
            "camera_info_topics": o.camera_info_topics,
            "depth_gt_topic": o.depth_gt_topic or None,
            "metric_depth_topic": o.metric_depth_topic or None,
            "odom_topic": o.odom_topic or None,
            "ground_truth": o.ground_truth.describe() if o.ground_truth else "none",
            "mode": "as fast as possible" if o.rate is None else f"{o.rate:g}x recorded rate",
            "warm_up": result.warm_up,
            "frame_cache": result.frame_cache,
        },
        "scale": {
            "value": float(getattr(scale, "value", 1.0)),
            "sigma": float(getattr(scale, "sigma", 0.0)),
            "source": str(getattr(scale, "source", "none")),
            "metric": result.metric,
        },
    }
    details: dict[str, Any] = {"trajectory": None, "depth": {}, "error_maps": {}}

    # Trajectory.
    alignment = ("se3" if result.metric else "sim3") if align == "auto" else align
    if result.ground_truth is None:
        report["trajectory"] = {"skipped": "no ground-truth poses (use --gt)"}
    elif len(result.estimate) < 3:
        report["trajectory"] = {"skipped": f"only {len(result.estimate)} estimated keyframe pose(s)"}
    else:
        try:
            errors = trajectory_errors(
                result.estimate, result.ground_truth, alignment, o.stamp_tolerance, rpe_delta
            )
        except ValueError as exc:
            report["trajectory"] = {"skipped": str(exc)}
        else:
            report["trajectory"] = errors.summary()
            details["trajectory"] = errors

    # Depth.
    rows, per_kf = [], {}
    median_scale = not result.metric
    for kf_id, rec in result.keyframes.items():
        if rec.gt_depth is None:
            continue
        pred, _ = depth_at(rec, rec.gt_depth.shape)
        try:
            err = depth_errors(pred, rec.gt_depth, median_scale=median_scale, max_depth=max_depth)
        except ValueError:
            continue
        per_kf[kf_id] = err
        details["error_maps"][kf_id] = relative_depth_error_map(pred, rec.gt_depth, err.scale)
        rows.append({"keyframe_id": kf_id, "stamp": rec.stamp, **err.summary()})
    details["depth"] = per_kf
    if per_kf:
        pooled: DepthErrors = pool_depth_errors(list(per_kf.values()))
        report["depth"] = {
            "median_scaled": median_scale,
            "keyframes": len(per_kf),
            **pooled.summary(),
            "per_keyframe": rows,
        }
    else:
        why = (
            "no ground-truth depth topic"
            if not o.depth_gt_topic
            else "no keyframe matched a ground-truth depth image"
        )
        report["depth"] = {"skipped": why}

    report["windows"] = window_accuracy(result)
    # The final trajectory's Sim(3) scale turns the loops' G units into metres.
    errors_now = details["trajectory"]
    metres_per_unit = errors_now.scale if errors_now is not None else None
    report["loops"] = loop_report(result, alignment, rpe_delta, metres_per_unit=metres_per_unit)

    # Latency, rates, drops.
    win = result.windows
    stage_names = sorted({k for w in win for k in w.timings})
    report["latency_ms"] = {
        "window": _stats([w.latency_ms for w in win]),
        "window_queue": _stats([w.queue_ms for w in win]) if o.rate is not None else {"count": 0},
        "window_stages": {k: _stats([w.timings[k] for w in win if k in w.timings]) for k in stage_names},
        # Queue wait + process start to poses ready (what the node's TF waits for, the map
        # stage excluded), of accepted windows.
        "window_to_poses": _stats(
            [w.queue_ms + w.timings["poses_ms"] for w in win if w.accepted and "poses_ms" in w.timings]
        ),
        "frame_add": _stats(result.frame_latency_ms),
        "per_keyframe": float(np.sum([w.latency_ms for w in win]) / max(1, len(result.keyframes))),
        # Every window's stages, to see which stage a slow window spent its time in.
        "per_window": [
            {
                "window_id": int(w.window_id),
                "accepted": bool(w.accepted),
                "queue_ms": round(float(w.queue_ms), 3),
                **{k: round(float(v), 3) for k, v in w.timings.items()},
            }
            for w in win
        ],
    }
    keyframes_seen = len(result.keyframes)
    report["counts"] = {
        "frames": result.num_frames,
        "keyframes": keyframes_seen,
        "windows": len(win),
        "windows_accepted": int(sum(w.accepted for w in win)),
        "windows_rejected": int(sum(not w.accepted for w in win)),
        "rejections": [{"window_id": w.window_id, "reason": w.reason} for w in win if not w.accepted],
        "map_points": int(len(result.points[0])),
    }
    report["rates"] = {
        "bag_duration_s": result.duration_s,
        "replay_wall_s": result.wall_s,
        "keyframe_rate_hz": keyframes_seen / result.duration_s if result.duration_s > 0 else None,
        "keyframe_ratio": keyframes_seen / result.num_frames if result.num_frames else None,
        "frames_per_second": result.num_frames / result.wall_s if result.wall_s > 0 else None,
        "realtime_factor": result.duration_s / result.wall_s if result.wall_s > 0 else None,
    }
    stats = result.pipeline_stats
    # What the window pose refinement did (docs/mapping.md, "Pose refinement"): frames placed by
    # PnP (by SIFT matches or tracked corners), frames that kept the camera head's pose.
    report["pose_refinement"] = {key: int(stats.get(key, 0)) for key in REFINEMENT_COUNTERS}
    report["dropped"] = {
        "windows": result.dropped_windows,
        "frames": result.dropped_frames,
        "decode_failures": result.decode_failures,
    }
    return json_ready(report), details


# ------------------------------------------------------------------------------------------------
# Files
# ------------------------------------------------------------------------------------------------
def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _row(label: str, stats: dict[str, Any], keys: tuple[str, ...]) -> str:
    return "| " + " | ".join([label, *(_fmt(stats[k]) for k in keys)]) + " |"


def accuracy_summary(report: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """The headline accuracy of a report, for the model and the constant-depth / identity-pose
    baseline: window depth AbsRel (one median scale per window), window relative rotation error
    (deg), translation direction (deg), baseline length against the window's depth
    (``100 |ln ratio|``, :mod:`vggt_ros.eval.window_metrics`), and the chained trajectory's APE
    RMSE as a percentage of its length."""
    win, tr = report.get("windows", {}), report.get("trajectory", {})
    out: dict[str, dict[str, float | None]] = {}
    for name, key in (("model", "model"), ("constant/identity baseline", "constant_identity_baseline")):
        w = win.get(key, {}) if "skipped" not in win else {}
        ape = (
            tr.get("ape_percent_of_length")
            if name == "model"
            else tr.get("static_baseline", {}).get("ape_percent_of_length")
        )
        out[name] = {
            "window_abs_rel": w.get("abs_rel"),
            "window_rotation_deg": w.get("rotation_deg_mean"),
            "window_translation_deg": w.get("translation_deg_mean"),
            "window_baseline_error_pct": w.get("baseline_error_pct"),
            "ape_percent_of_length": None if "skipped" in tr else ape,
        }
    return out


def accuracy_lines(report: dict[str, Any]) -> list[str]:
    """The accuracy table of report.md (see :func:`accuracy_summary`)."""
    rows = accuracy_summary(report)
    weights = report.get("weights", {})
    who = weights.get("model") or weights.get("source") or "untrained random weights"
    lines = [
        "## Accuracy",
        "",
        f"Weights: {who}{'' if weights.get('trained', True) else ' (UNTRAINED)'}. Window scores use each "
        "window's own frame and one median depth scale; APE is after one Sim(3) (or SE(3) when metric).",
        "",
        "| | depth AbsRel (window) | rotation error (deg, window pairs) | translation direction (deg) "
        "| baseline length error (100 abs ln) | APE RMSE (% of length) |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {_fmt(r['window_abs_rel'])} | {_fmt(r['window_rotation_deg'])} | "
            f"{_fmt(r['window_translation_deg'])} | {_fmt(r['window_baseline_error_pct'])} | "
            f"{_fmt(r['ape_percent_of_length'])} |"
        )
    return [*lines, ""]


def loop_lines(report: dict[str, Any]) -> list[str]:
    """The loop-closure section of report.md."""
    lp, tr = report.get("loops", {}), report.get("trajectory", {})
    if not lp:
        return []
    lines = [
        "## Loop closure",
        "",
        f"{lp['verified']} candidate(s) verified: {lp['accepted']} accepted ({lp['true_accepted']} true, "
        f"{lp['false_accepted']} false by the ground truth), {lp['rejected']} rejected.",
    ]
    if "chained_ape_rmse_m" in lp and "ape_trans_m" in tr:
        lines += [
            "",
            "| trajectory | APE RMSE | % of length |",
            "|---|---|---|",
            f"| as chained | {_fmt(lp['chained_ape_rmse_m'])} "
            f"| {_fmt(lp['chained_ape_percent_of_length'])} |",
            f"| after the pose graph | {_fmt(tr['ape_trans_m']['rmse'])} "
            f"| {_fmt(tr['ape_percent_of_length'])} |",
        ]
    if lp.get("events"):
        lines += [
            "",
            "| new | old | verdict | views share (window / truth) | truth: apart (m) "
            "| offset error (m / deg) | reason |",
            "|---|---|---|---|---|---|---|",
        ]
        for e in lp["events"]:
            verdict = "accepted" if e["accepted"] else "rejected"
            if "true" in e:
                verdict += " (true)" if e["true"] else " (FALSE)"
            lines.append(
                f"| {e['query']} | {e['candidate']} | {verdict} | {_fmt(e.get('view_overlap'))} / "
                f"{_fmt(e.get('ground_truth_overlap'))} | {_fmt(e.get('ground_truth_distance_m'))} "
                f"| {_fmt(e.get('offset_error_m'))} / {_fmt(e.get('offset_error_deg'))} | {e['reason']} |"
            )
    return [*lines, ""]


def _refinement_line(counts: dict[str, int]) -> str:
    if not counts:
        return "- pose refinement: not reported"
    return (
        f"- pose refinement: {counts['frames_refined']} frames measured from correspondences "
        f"({counts['frames_refined_by_sift']} placed by PnP on SIFT matches, "
        f"{counts.get('frames_head_rotation', 0)} kept the camera head's rotation with a fitted "
        f"translation), {counts['frames_not_refined']} kept the camera head's pose, "
        f"{counts['refine_failures']} windows failed; "
        f"{counts['frames_calibrated']} frames with camera_info intrinsics; image work from the cache "
        f"(done while the network ran or for an earlier window) / computed after it: keypoints "
        f"{_hits_of(counts, 'keypoints')}, matches {_hits_of(counts, 'matches')}, tracked corners "
        f"{_hits_of(counts, 'tracks')}"
    )


def _hits_of(counts: dict[str, int], kind: str) -> str:
    return f"{counts.get(f'refine_{kind}_hits', 0)} / {counts.get(f'refine_{kind}_misses', 0)}"


def markdown(report: dict[str, Any], bag: str) -> str:
    """report.md: the headline numbers as tables."""
    lines = [f"# vggt-ros eval: `{bag}`", ""]
    inputs = report["inputs"]
    lines += ["| input | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in inputs.items()]
    sc = report["scale"]
    lines += [
        "",
        f"Scale: **{'metric' if sc['metric'] else 'normalized'}** (source {sc['source']}, "
        f"value {_fmt(sc['value'])} ± {_fmt(sc['sigma'])}).",
        "",
    ]
    lines += accuracy_lines(report)
    lines += loop_lines(report)
    tr = report["trajectory"]
    lines += ["## Trajectory", ""]
    if "skipped" in tr:
        lines.append(f"Skipped: {tr['skipped']}.")
    else:
        lines += [
            f"{tr['matched']} keyframe poses, {tr['alignment'].upper()} alignment "
            f"(scale {_fmt(tr['scale'])}), "
            f"path length {_fmt(tr['path_length_m'])} m, RPE over {tr['rpe_delta_frames']} keyframe(s).",
            "",
            "| error | rmse | mean | median | max |",
            "|---|---|---|---|---|",
        ]
        for key, label in (
            ("ape_trans_m", "APE translation (m)"),
            ("ape_rot_deg", "APE rotation (deg)"),
            ("rpe_trans_m", "RPE translation (m)"),
            ("rpe_rot_deg", "RPE rotation (deg)"),
        ):
            s = tr[key]
            lines.append(_row(label, s, ("rmse", "mean", "median", "max")))
    dp = report["depth"]
    lines += ["", "## Depth", ""]
    if "skipped" in dp:
        lines.append(f"Skipped: {dp['skipped']}.")
    else:
        lines += [
            f"{dp['keyframes']} keyframes, {dp['count']} pixels, "
            f"{'median-scaled per keyframe' if dp['median_scaled'] else 'metric (no scaling)'}.",
            "",
            "| AbsRel | SqRel | RMSE | RMSE log | δ<1.25 | δ<1.25² | δ<1.25³ |",
            "|---|---|---|---|---|---|---|",
            f"| {_fmt(dp['abs_rel'])} | {_fmt(dp['sq_rel'])} | {_fmt(dp['rmse'])} | {_fmt(dp['rmse_log'])} | "
            f"{_fmt(dp['delta1'])} | {_fmt(dp['delta2'])} | {_fmt(dp['delta3'])} |",
        ]
    lat, counts, rates, dropped = report["latency_ms"], report["counts"], report["rates"], report["dropped"]
    lines += [
        "",
        "## Latency and rates",
        "",
        "| quantity | mean | median | p90 | max |",
        "|---|---|---|---|---|",
    ]
    for key, label in (
        ("window", "window process (ms)"),
        ("window_queue", "window queue wait (ms)"),
        ("window_to_poses", "queue + process to poses (ms)"),
        ("frame_add", "per-frame add_frame (ms)"),
    ):
        s = lat.get(key, {})
        if s.get("count"):
            lines.append(
                f"| {label} | {_fmt(s['mean'])} | {_fmt(s['median'])} | {_fmt(s['p90'])} | {_fmt(s['max'])} |"
            )
    for key, s in lat["window_stages"].items():
        if s.get("count"):
            lines.append(_row(f"stage {key}", s, ("mean", "median", "p90", "max")))
    lines += [
        "",
        f"- frames {counts['frames']}, keyframes {counts['keyframes']} "
        f"(ratio {_fmt(rates['keyframe_ratio'])}, {_fmt(rates['keyframe_rate_hz'])} Hz of bag time)",
        f"- windows {counts['windows']}: {counts['windows_accepted']} accepted, "
        f"{counts['windows_rejected']} rejected",
        f"- inference latency per keyframe {_fmt(lat['per_keyframe'])} ms",
        _refinement_line(report.get("pose_refinement", {})),
        f"- dropped: {dropped['windows']} windows / {dropped['frames']} keyframes (queue full), "
        f"{dropped['decode_failures']} undecodable images",
        f"- replay: {_fmt(rates['replay_wall_s'])} s wall for {_fmt(rates['bag_duration_s'])} s of bag "
        f"({_fmt(rates['realtime_factor'])}x real time)",
        "",
        "Plots: " + ", ".join(f"[{p}]({p})" for p in PLOT_FILES),
        "",
    ]
    return "\n".join(lines)


def write_plots(out: Path, result: ReplayResult, details: dict[str, Any], max_grid: int = 4) -> list[Path]:
    """The PNG plots of the module docstring; plots without data say so in the image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    errors: TrajectoryErrors | None = details["trajectory"]

    fig, ax = plt.subplots(figsize=(6, 5))
    if errors is not None:
        ax.plot(errors.reference[:, 0], errors.reference[:, 1], "k-", label="ground truth")
        ax.plot(
            errors.est_aligned[:, 0], errors.est_aligned[:, 1], "C1.-", label=f"estimate ({errors.alignment})"
        )
        ax.plot(*errors.reference[0, :2], "ko", ms=6)
        ax.set_aspect("equal", adjustable="datalim")
        ax.legend()
    elif len(result.estimate):
        ax.plot(
            result.estimate.positions[:, 0], result.estimate.positions[:, 1], "C1.-", label="estimate (map)"
        )
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no trajectory", ha="center", transform=ax.transAxes)
    ax.set_xlabel("x [m]")
    ax.set_ylabel("y [m]")
    ax.set_title("Trajectory, top view")
    written.append(_save(fig, out / "trajectory_top.png"))

    fig, axes = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    if errors is not None:
        t = errors.stamps - errors.stamps[0]
        axes[0].plot(t, errors.ape_trans, "C0.-", label="APE translation [m]")
        axes[0].plot(t[errors.rpe_delta :], errors.rpe_trans, "C2.-", label="RPE translation [m]")
        axes[1].plot(t, errors.ape_rot_deg, "C0.-", label="APE rotation [deg]")
        axes[1].plot(t[errors.rpe_delta :], errors.rpe_rot_deg, "C2.-", label="RPE rotation [deg]")
        for a in axes:
            a.legend()
            a.grid(alpha=0.3)
    else:
        axes[0].text(0.5, 0.5, "no ground-truth trajectory", ha="center", transform=axes[0].transAxes)
    axes[1].set_xlabel("time [s]")
    fig.suptitle("Trajectory error over time")
    written.append(_save(fig, out / "trajectory_error.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    maps = details["error_maps"]
    values = np.concatenate([m[np.isfinite(m)].ravel() for m in maps.values()]) if maps else np.zeros(0)
    if values.size:
        lim = float(np.clip(np.percentile(np.abs(values), 99), 1e-3, None))
        ax.hist(np.clip(values, -lim, lim), bins=80, color="C0")
        ax.set_xlabel("relative depth error (d - d*) / d*")
        ax.set_ylabel("pixels")
    else:
        ax.text(0.5, 0.5, "no ground-truth depth", ha="center", transform=ax.transAxes)
    ax.set_title("Depth error")
    written.append(_save(fig, out / "depth_error_hist.png"))

    chosen = [k for k in result.keyframes if k in details["depth"]] or list(result.keyframes)
    if len(chosen) > max_grid:
        chosen = [chosen[i] for i in np.linspace(0, len(chosen) - 1, max_grid).round().astype(int)]
    rows = max(1, len(chosen))
    fig, axes = plt.subplots(rows, 4, figsize=(12, 2.6 * rows), squeeze=False)
    for r, kf in enumerate(chosen):
        rec = result.keyframes[kf]
        scale = details["depth"][kf].scale if kf in details["depth"] else 1.0
        shape = rec.gt_depth.shape if rec.gt_depth is not None else rec.depth.shape
        pred, conf = depth_at(rec, shape) if rec.gt_depth is not None else (rec.depth, rec.depth_conf)
        finite = [d for d in (pred * scale, rec.gt_depth) if d is not None and np.isfinite(d).any()]
        vmax = (
            float(np.nanpercentile(np.concatenate([d[np.isfinite(d)] for d in finite]), 98))
            if finite
            else 1.0
        )
        panels = [
            (rec.image if rec.image.size else np.zeros((2, 2, 3), np.uint8), "image", None),
            (
                rec.gt_depth if rec.gt_depth is not None else np.full((2, 2), np.nan),
                "ground-truth depth",
                "viridis",
            ),
            (pred * scale, "predicted depth" + (" (median-scaled)" if scale != 1.0 else ""), "viridis"),
            (conf, "confidence", "magma"),
        ]
        for c, (img, title, cmap) in enumerate(panels):
            ax = axes[r, c]
            kwargs = {"vmin": 0.0, "vmax": vmax} if cmap == "viridis" else {}
            im = ax.imshow(img, cmap=cmap, **kwargs) if cmap else ax.imshow(img)
            if cmap:
                fig.colorbar(im, ax=ax, fraction=0.046)
            ax.set_title(f"{title}\nkeyframe {kf}" if c == 0 else title, fontsize=8)
            ax.axis("off")
    if not chosen:
        axes[0, 0].text(0.5, 0.5, "no keyframes", ha="center", transform=axes[0, 0].transAxes)
    written.append(_save(fig, out / "depth_grid.png"))
    return written


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_report(
    out_dir: str | Path,
    result: ReplayResult,
    bag: str,
    align: str = "auto",
    rpe_delta: int = 1,
    plots: bool = True,
    weights: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate and write report.json, report.md and (with ``plots``) the PNGs; returns the report.

    ``weights``: the predictor's weights identity (``Predictor.weights``), recorded in the report.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report, details = evaluate(result, align, rpe_delta)
    report["inputs"]["bag"] = bag
    report["weights"] = json_ready(dict(weights or {}))
    with (out / "report.json").open("w", encoding="utf-8") as f:
        json.dump(report, f, indent=2, allow_nan=False)
        f.write("\n")
    (out / "report.md").write_text(markdown(report, bag))
    write_trajectories(out, result, bag)
    if plots:
        write_plots(out, result, details)
    return report


def write_trajectories(out: Path, result: ReplayResult, bag: str = "") -> list[Path]:
    """The keyframe trajectories as TUM files for evo and other tools: ``trajectory.tum`` (the
    reference camera's optical frame in the map, after the pose graph), ``trajectory_chained.tum``
    (the same keyframes as chained, before loop corrections) and ``ground_truth.tum`` (the bag's
    ground truth, camera optical frame in its world). Not aligned: e.g. ``evo_ape tum
    ground_truth.tum trajectory.tum --align --correct_scale``. A trajectory that is missing or
    empty is not written."""
    from vggt_ros.mapping.export.trajectory import write_tum

    files = (
        (
            "trajectory.tum",
            result.estimate,
            "vggt_ros eval: keyframe camera (optical) -> map, after the pose graph",
        ),
        (
            "trajectory_chained.tum",
            result.chained_estimate,
            "vggt_ros eval: keyframe camera -> map, as chained",
        ),
        ("ground_truth.tum", result.ground_truth, "vggt_ros eval: ground-truth camera (optical) -> world"),
    )
    written = []
    for name, trajectory, comment in files:
        if trajectory is not None and len(trajectory):
            written.append(
                write_tum(out / name, trajectory.sorted(), f"{comment}\nbag: {bag}" if bag else comment)
            )
    return written
