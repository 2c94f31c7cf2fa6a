"""Long-run behaviour: a bag replayed over and over at camera rate through the node's pipeline.

``vggt-ros soak BAG --minutes 30`` loads the bag's reference-camera images once, then feeds them
in a loop (each pass's stamps shifted by the bag's duration, so time keeps increasing and every
pass revisits the places of the earlier ones: loop closures all along) at ``--rate`` x the
recorded rate, with inference on a worker thread behind a one-window queue, as the node runs it:
windows that arrive while the worker is busy are dropped *and counted*. Every ``--sample-every``
seconds it records the process's memory (RSS) and CPU use, window latency (p50 / p95 / max over
the interval), keyframes, windows processed / dropped / rejected / failed, map points, pose-graph
size and loop counts, to ``soak.csv`` / ``soak.json`` with a plot (``soak.png``); at the end it
saves the map (``map.ply``) and the trajectory (``trajectory.tum``).
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
from vggt_ros.eval.replay import ReplayOptions, _decode_image, _read_context, resolve_options

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


def run_soak(
    frames: list[Any],
    period: float,
    pipeline: Any,
    minutes: float,
    rate: float = 1.0,
    sample_every_s: float = 60.0,
    progress: Callable[[dict[str, float]], None] | None = None,
) -> SoakResult:
    """Replay ``frames`` in a loop for ``minutes`` of wall time (see the module docstring)."""
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

    def work() -> None:
        while True:
            item = jobs.get()
            if item is None:
                return
            job, queued = item
            try:
                result = pipeline.process(job)
            except Exception as exc:  # noqa: BLE001 - counted, like the node does
                logger.warning("window %s failed: %s", getattr(job, "window_id", "?"), exc)
                with lock:
                    counts["windows_failed"] += 1
                continue
            with lock:
                latencies.append((time.perf_counter() - queued) * 1e3)
                counts["windows_processed"] += 1
                counts["windows_rejected"] += not result.accepted

    worker = threading.Thread(target=work, name="soak-worker", daemon=True)
    worker.start()
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
                while (now := time.perf_counter()) < due:
                    time.sleep(min(0.01, due - now))
                if now >= next_sample:
                    sample(now)
                    next_sample += sample_every_s
                if now >= end:
                    break
                job = pipeline.add_frame(dataclasses.replace(frame, stamp=frame.stamp + offset))
                counts["frames"] += 1
                if job is None:
                    continue
                try:
                    jobs.put_nowait((job, time.perf_counter()))
                except queue.Full:
                    with lock:
                        counts["windows_dropped"] += 1
            pass_index += 1
    finally:
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


def growth_per_minute(samples: list[dict[str, float]], key: str) -> float:
    """Least-squares slope of ``key`` over the second half of the run (units per minute): what
    keeps growing once the run has warmed up."""
    half = samples[len(samples) // 2 :]
    if len(half) < 2 or half[-1]["minute"] - half[0]["minute"] < 0.5:
        return float("nan")  # too short to tell
    x = np.array([r["minute"] for r in half])
    y = np.array([r[key] for r in half])
    return float(np.polyfit(x, y, 1)[0])
