"""Long-run behaviour: a bag replayed over and over at camera rate through the node's pipeline.

``vggt-ros soak BAG --minutes 30`` loads the bag's reference-camera images once, then feeds them
in a loop (each pass's stamps shifted by the bag's duration, so time keeps increasing and every
pass revisits the places of the earlier ones: loop closures all along) at ``--rate`` x the
recorded rate, with inference on a worker thread behind a one-window queue, as the node runs it:
windows that arrive while the worker is busy are dropped *and counted*. Every ``--sample-every``
seconds it records the process's memory (RSS) and CPU use, window latency (p50 / p95 / max over
the interval), keyframes, windows processed / dropped / rejected / failed, map points, pose-graph
size and loop counts, to ``soak.csv`` / ``soak.json`` with a plot (``soak.png``); at the end it
saves the map (``map.ply``) and the trajectory (``trajectory.tum``). When the bag has ground
truth, :func:`run_consistency` scores the whole run's trajectory against it: every pass revisits
the same ground-truth path, so one Sim(3) over all passes shows whether later passes were mapped
where the earlier ones were (``consistency.json``).
"""

from __future__ import annotations

import csv
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vggt_ros.eval import bags
from vggt_ros.eval.replay import ReplayOptions, _decode_image, _ground_truth, _read_context, resolve_options
from vggt_ros.mapping.export.trajectory import Trajectory, interpolate

logger = logging.getLogger(__name__)


def _rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return float(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@dataclass
class SoakResult:
    """Samples (one dict per interval) and totals of a soak run."""

    samples: list[dict[str, float]] = field(default_factory=list)
    totals: dict[str, float] = field(default_factory=dict)


def load_frames(bag: Path, options: ReplayOptions | None = None) -> tuple[list[Any], float]:
    """The reference camera's frames of a bag as ``vggt_ros.mapping.Frame`` (in memory) and the
    bag's duration (seconds)."""
    from vggt_ros.mapping import Frame

    topics = {t: i.msgtype for t, i in bags.bag_topics(bag).items()}
    o = resolve_options(options or ReplayOptions(odom_topic=""), topics)
    ctx = _read_context(bag, o, topics)
    info = o.camera_info_topics[0]
    K = ctx.camera_info[info][0] if info and info in ctx.camera_info else None
    frames = []
    for _, msgtype, _, msg in bags.read_messages(bag, [o.image_topics[0]]):
        rgb = _decode_image(msgtype, msg)
        frames.append(
            Frame(
                stamp=bags.stamp_of(msg), camera_id=msg.header.frame_id or "camera", image=rgb, intrinsics=K
            )
        )
    if len(frames) < 2:
        raise bags.BagError(f"{bag}: fewer than two images to replay")
    stamps = np.array([f.stamp for f in frames])
    period = float(stamps[-1] - stamps[0] + np.median(np.diff(stamps)))
    return frames, period


def load_ground_truth(bag: Path, camera_id: str, options: ReplayOptions | None = None) -> Trajectory | None:
    """Ground-truth poses of camera ``camera_id``'s optical frame (in the ground truth's world) over
    one pass of the bag, or None when the bag has none (the `vggt-ros eval` default: the
    ``/ground_truth/pose`` topic)."""
    topics = {t: i.msgtype for t, i in bags.bag_topics(bag).items()}
    o = resolve_options(options or ReplayOptions(odom_topic=""), topics)
    ctx = _read_context(bag, o, topics)
    empty = Trajectory(np.zeros(0), np.zeros((0, 4, 4)))
    return _ground_truth(ctx, o, empty, camera_id)


@dataclass
class RunConsistency:
    """How well the whole run's trajectory agrees with the ground truth it revisits every pass.

    Attributes:
        ape_rmse_m: APE RMSE (metres) of every reference keyframe of the run after one Sim(3).
        ape_percent_of_pass: the same as a share of one pass's ground-truth path length (%).
        pass_length_m: one pass's path length (m).
        matched: keyframes scored.
        pass_scale: {pass: metres per map unit of that pass's keyframes alone (own Sim(3))}.
        scale_spread: largest over smallest ``pass_scale`` (1 = no scale drift between passes).
        scale_drift: median ``pass_scale`` of the last quarter of the passes over that of the
            first quarter (1 = the map's unit stayed the same size; below 1: later passes were
            mapped larger).
        pass_ape_m: {pass: APE RMSE (m) of that pass's keyframes under the run's one Sim(3)}.
        pass_own_ape_m: {pass: APE RMSE (m) of that pass alone after its own Sim(3)}: small
            here and large in ``pass_ape_m`` = each pass is right, the passes disagree.
    """

    ape_rmse_m: float
    ape_percent_of_pass: float
    pass_length_m: float
    matched: int
    pass_scale: dict[int, float]
    scale_spread: float
    scale_drift: float
    pass_ape_m: dict[int, float]
    pass_own_ape_m: dict[int, float]

    def summary(self) -> dict[str, Any]:
        return {
            "ape_rmse_m": self.ape_rmse_m,
            "ape_percent_of_pass": self.ape_percent_of_pass,
            "pass_length_m": self.pass_length_m,
            "matched": self.matched,
            "scale_spread": self.scale_spread,
            "scale_drift": self.scale_drift,
            "pass_scale": {str(k): v for k, v in self.pass_scale.items()},
            "pass_ape_m": {str(k): v for k, v in self.pass_ape_m.items()},
            "pass_own_ape_m": {str(k): v for k, v in self.pass_own_ape_m.items()},
        }


def run_consistency(
    path: list[tuple[float, np.ndarray]], ground_truth: Trajectory, first_stamp: float, period: float
) -> RunConsistency | None:
    """Score a soak's final trajectory (``pipeline.path()``: [(stamp, [4, 4] cam_to_map)], stamps
    shifted by ``period`` each pass from ``first_stamp``) against one pass of ``ground_truth``.

    Each keyframe's stamp is folded back into the bag's time to find its true pose; one Sim(3)
    aligns the whole run (a map whose later passes drifted away from the earlier ones scores
    badly however good each pass is alone). Returns None with fewer than 3 keyframes matched.
    """
    from vggt_ros.eval.metrics import trajectory_errors

    if len(path) < 3 or len(ground_truth) < 2:
        return None
    stamps = np.array([s for s, _ in path], np.float64)
    poses = np.stack([np.asarray(T, np.float64) for _, T in path])
    # The small margin keeps a pass's first frame in its own pass despite float rounding.
    passes = np.floor((stamps - first_stamp) / period + 1e-6).astype(int)
    folded = stamps - passes * period
    truth, ok = interpolate(ground_truth, folded, max_gap=0.2)
    if ok.sum() < 3:
        return None
    stamps, poses, passes = stamps[ok], poses[ok], passes[ok]
    est, ref = Trajectory(stamps, poses), Trajectory(stamps, truth.poses)
    errors = trajectory_errors(est, ref, alignment="sim3", max_diff=1e-6)
    matched_pass = passes[np.searchsorted(stamps, errors.stamps)]  # errors follow their stamps
    pass_length = float(ground_truth.path_length())
    pass_scale, pass_ape, pass_own_ape = {}, {}, {}
    for p in np.unique(passes):
        pass_ape[int(p)] = float(np.sqrt(np.mean(errors.ape_trans[matched_pass == p] ** 2)))
        sel = passes == p
        if sel.sum() >= 3:
            own = trajectory_errors(
                Trajectory(stamps[sel], poses[sel]),
                Trajectory(stamps[sel], truth.poses[sel]),
                alignment="sim3",
                max_diff=1e-6,
            )
            pass_scale[int(p)] = own.scale
            pass_own_ape[int(p)] = float(np.sqrt(np.mean(own.ape_trans**2)))
    scales = np.array(list(pass_scale.values()))
    quarter = max(1, len(scales) // 4)
    drift = float(np.median(scales[-quarter:]) / np.median(scales[:quarter])) if scales.size else float("nan")
    rmse = float(np.sqrt(np.mean(errors.ape_trans**2)))
    return RunConsistency(
        ape_rmse_m=rmse,
        ape_percent_of_pass=100.0 * rmse / max(pass_length, 1e-12),
        pass_length_m=pass_length,
        matched=int(errors.matched),
        pass_scale=pass_scale,
        scale_spread=float(scales.max() / scales.min()) if scales.size else float("nan"),
        scale_drift=drift,
        pass_ape_m=pass_ape,
        pass_own_ape_m=pass_own_ape,
    )


def run_soak(
    frames: list[Any],
    period: float,
    pipeline: Any,
    minutes: float,
    rate: float = 1.0,
    sample_every_s: float = 60.0,
    progress: Callable[[dict[str, float]], None] | None = None,
    clock: bool = True,
    max_windows: int | None = None,
    on_window: Callable[[Any, float], None] | None = None,
) -> SoakResult:
    """Replay ``frames`` in a loop for ``minutes`` of wall time (see the module docstring).

    ``clock=False`` feeds the frames as fast as the pipeline takes them and processes every
    window on the calling thread, one after the other: nothing is dropped, so two settings
    see the same windows (latency is then the processing time). ``max_windows`` ends the run
    after that many windows (processed or dropped) even before ``minutes``. ``on_window(result,
    ms)`` is called after every processed window (on the worker thread with the clock) with the
    pipeline's WindowResult and the time from queueing to the end of processing.
    """
    import dataclasses

    jobs: queue.Queue = queue.Queue(maxsize=1)
    lock = threading.Lock()
    latencies: list[float] = []
    counts = {
        "frames": 0,
        "windows_processed": 0,
        "windows_dropped": 0,
        "windows_failed": 0,
        "windows_rejected": 0,
    }

    def process(job: Any, queued: float) -> None:
        try:
            result = pipeline.process(job)
        except Exception as exc:  # noqa: BLE001 - counted, like the node does
            logger.warning("window %s failed: %s", getattr(job, "window_id", "?"), exc)
            with lock:
                counts["windows_failed"] += 1
            return
        ms = (time.perf_counter() - queued) * 1e3
        with lock:
            latencies.append(ms)
            counts["windows_processed"] += 1
            counts["windows_rejected"] += not result.accepted
        if on_window is not None:
            on_window(result, ms)

    def work() -> None:
        while (item := jobs.get()) is not None:
            process(*item)

    worker = threading.Thread(target=work, name="soak-worker", daemon=True)
    if clock:
        worker.start()
    windows = 0
    result = SoakResult()
    start = time.perf_counter()
    cpu0, wall0 = time.process_time(), start
    next_sample = start + sample_every_s
    end = start + 60.0 * minutes
    pass_index = 0

    def sample(now: float) -> None:
        nonlocal cpu0, wall0
        with lock:
            lat = np.array(latencies)
            latencies.clear()
            row = {"minute": (now - start) / 60.0, **counts}
        p50, p95, top = (
            (np.percentile(lat, 50), np.percentile(lat, 95), lat.max()) if lat.size else (np.nan,) * 3
        )
        cpu = time.process_time()
        stats = pipeline.back_end_stats
        row.update(
            rss_mb=_rss_mb(),
            cpu_percent=100.0 * (cpu - cpu0) / max(now - wall0, 1e-9),
            latency_p50_ms=float(p50),
            latency_p95_ms=float(p95),
            latency_max_ms=float(top),
            keyframes=float(pipeline.stats["keyframes"]),
            map_points=float(pipeline.map_size),
            graph_keyframes=float(stats.get("graph_keyframes", 0)),
            loops_accepted=float(stats.get("loops_accepted", 0)),
            loops_rejected=float(stats.get("loops_rejected", 0)),
            # The pose graph's own share of the back end's cost (median of its recent updates).
            graph_update_ms=float(stats.get("graph_update_ms_median", np.nan)),
            unit_median=float(stats.get("graph_unit_median", np.nan)),
            unit_newest=float(stats.get("graph_unit_newest", np.nan)),
            passes=float(pass_index),
        )
        cpu0, wall0 = cpu, now
        result.samples.append(row)
        if progress is not None:
            progress(row)

    try:
        while time.perf_counter() < end:
            t_pass = time.perf_counter()
            offset = pass_index * period
            for frame in frames:
                due = t_pass + (frame.stamp - frames[0].stamp) / rate
                while clock and (now := time.perf_counter()) < due:
                    time.sleep(min(0.01, due - now))
                now = time.perf_counter()
                if now >= next_sample:
                    sample(now)
                    next_sample += sample_every_s
                if now >= end or (max_windows is not None and windows >= max_windows):
                    break
                job = pipeline.add_frame(dataclasses.replace(frame, stamp=frame.stamp + offset))
                counts["frames"] += 1
                if job is None:
                    continue
                windows += 1
                if not clock:
                    process(job, time.perf_counter())
                    continue
                try:
                    jobs.put_nowait((job, time.perf_counter()))
                except queue.Full:
                    with lock:
                        counts["windows_dropped"] += 1
            pass_index += 1
            if max_windows is not None and windows >= max_windows:
                break
    finally:
        if clock:
            jobs.put(None)
            worker.join()
    sample(time.perf_counter())
    result.totals = {**counts, "passes": pass_index, "minutes": (time.perf_counter() - start) / 60.0}
    return result


def write_soak(out: Path, result: SoakResult, pipeline: Any) -> list[Path]:
    """soak.csv, soak.json, soak.png, map.ply and trajectory.tum in ``out``."""
    from vggt_ros.mapping.export.trajectory import Trajectory, write_tum

    out.mkdir(parents=True, exist_ok=True)
    written = []
    keys = list(result.samples[0]) if result.samples else []
    with (out / "soak.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(result.samples)
    written.append(out / "soak.csv")
    (out / "soak.json").write_text(
        json.dumps({"totals": result.totals, "samples": result.samples}, indent=2) + "\n"
    )
    written.append(out / "soak.json")
    pipeline.refresh_map()  # a loop's correction may still wait for its map rebuild
    if len(pipeline.global_map):
        written.append(Path(pipeline.global_map.save(out / "map.ply")))
    path = pipeline.path()
    if path:
        traj = Trajectory([s for s, _ in path], [T for _, T in path])
        written.append(Path(write_tum(out / "trajectory.tum", traj, "vggt_ros soak: reference keyframes")))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [r["minute"] for r in result.samples]
    fig, axes = plt.subplots(2, 3, figsize=(15, 6))
    series = [
        ("rss_mb", "memory (RSS, MB)"),
        ("cpu_percent", "CPU (% of one core)"),
        ("latency_p95_ms", "window latency p95 (ms)"),
        ("map_points", "map points"),
        ("unit_median", "keyframe unit, median (1 = first window)"),
        ("graph_keyframes", "pose-graph keyframes"),
    ]
    for ax, (key, label) in zip(axes.ravel(), series):
        ax.plot(minutes, [r[key] for r in result.samples], ".-")
        ax.set_title(label)
        ax.set_xlabel("minutes")
    fig.tight_layout()
    fig.savefig(out / "soak.png", dpi=100)
    plt.close(fig)
    written.append(out / "soak.png")
    return written


def write_consistency(out: Path, consistency: RunConsistency) -> list[Path]:
    """consistency.json and consistency.png (each pass's APE under the run's one Sim(3), and its
    own scale relative to the first pass's) in ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    (out / "consistency.json").write_text(json.dumps(consistency.summary(), indent=2) + "\n")
    fig, (ax_ape, ax_scale) = plt.subplots(1, 2, figsize=(11, 4))
    passes = sorted(consistency.pass_ape_m)
    ax_ape.plot(passes, [consistency.pass_ape_m[p] for p in passes], ".-", label="one Sim(3) for the run")
    own = sorted(consistency.pass_own_ape_m)
    ax_ape.plot(own, [consistency.pass_own_ape_m[p] for p in own], ".-", label="each pass's own Sim(3)")
    ax_ape.legend()
    ax_ape.set_title(f"APE RMSE per pass (whole run {consistency.ape_rmse_m:.3f} m)")
    ax_ape.set_xlabel("pass")
    ax_ape.set_ylabel("m")
    scaled = sorted(consistency.pass_scale)
    if scaled:
        first = consistency.pass_scale[scaled[0]]
        ax_scale.plot(scaled, [consistency.pass_scale[p] / first for p in scaled], ".-")
    ax_scale.set_title("metres per map unit, own Sim(3) per pass (1 = first pass)")
    ax_scale.set_xlabel("pass")
    fig.tight_layout()
    fig.savefig(out / "consistency.png", dpi=100)
    plt.close(fig)
    return [out / "consistency.json", out / "consistency.png"]


def growth_per_minute(samples: list[dict[str, float]], key: str) -> float:
    """Least-squares slope of ``key`` over the second half of the run (units per minute): what
    keeps growing once the run has warmed up."""
    half = samples[len(samples) // 2 :]
    if len(half) < 2 or half[-1]["minute"] - half[0]["minute"] < 0.5:
        return float("nan")  # too short to tell
    x = np.array([r["minute"] for r in half])
    y = np.array([r[key] for r in half])
    return float(np.polyfit(x, y, 1)[0])
