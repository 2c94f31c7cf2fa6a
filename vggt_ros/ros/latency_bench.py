"""``latency_bench``: image-in to TF-out latency of the real node, fed from a bag at a fixed rate.

A publisher node replays the reference camera of a bag (raw images + camera_info) over DDS at
``--rate-hz`` wall-clock frames per second, looping it with advancing stamps until
``--seconds`` have passed; a real ``PerceptionNode`` in the same process takes it as it would
take a robot's camera. Afterwards it prints, from the node's own stage stamps (the same numbers
its /diagnostics ``latency`` status carries), p50 / p95 / max milliseconds of every stage
(callback, queue wait, preprocess, network, postprocess, chaining, loops, publish) and of the
whole way from an image's arrival to its window's TF, the achieved frame and keyframe rates,
and the windows processed and dropped:

    python -m vggt_ros.ros.latency_bench BAG --rate-hz 15 --seconds 60 --out out/latency
    python -m vggt_ros.ros.latency_bench BAG --checkpoint facebook/VGGT-1B --device cuda \\
        --image-size 518 --every-frame --rate-hz 20

``--every-frame`` makes every frame a keyframe (the heaviest load a rate can give: a window
every ``stride`` frames); otherwise the node's keyframe policy decides. The first
``--warmup-s`` seconds (model warm-up, compilation, CUDA graph capture) are not counted.
Writes ``latency.json`` and ``latency.png`` (per-stage p50/p95 and the frames received in
each second) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from rclpy.executors import MultiThreadedExecutor
from rclpy.parameter import Parameter

from vggt_ros.ros import conversions as conv
from vggt_ros.ros.node import PerceptionNode

TOPIC = "/latency_bench/image_raw"
INFO_TOPIC = "/latency_bench/camera_info"


def node_overrides(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """The node's parameters for the benchmark."""
    overrides: dict[str, Any] = {
        "model.checkpoint": args.checkpoint,
        "model.config": args.config,
        "model.untrained": args.untrained,
        "model.device": args.device,
        "model.precision": args.precision,
        "model.image_size": args.image_size,
        "model.frame_cache": args.frame_cache,
        "cameras": ["cam"],
        "camera.cam.topic": TOPIC,
        "camera.cam.camera_info_topic": INFO_TOPIC,
        "camera.cam.frame_id": "cam_optical",
        "window.size": args.window,
        "window.stride": args.stride,
        "window.num_track_queries": args.track_queries,
        "queue.size": 1,
        "output_dir": str(out),
    }
    if args.every_frame:
        overrides.update(
            {
                # Every frame is older than max_interval_s after the previous keyframe (stamps
                # advance by one period per frame).
                "keyframe.min_interval_s": 0.0,
                "keyframe.max_interval_s": 0.5 / args.rate_hz,
            }
        )
    return overrides


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Replay, measure, return the report (see the module docstring)."""
    from sensor_msgs.msg import CameraInfo, Image

    from vggt_ros.eval.soak import load_frames  # bag reading lives in eval (see test_layering)

    frames, _ = load_frames(Path(args.bag))
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    node = PerceptionNode(
        parameter_overrides=[Parameter(k, value=v) for k, v in node_overrides(args, out).items()]
    )
    pub = rclpy.create_node("vggt_latency_bench_camera")
    image_pub = pub.create_publisher(Image, TOPIC, 10)
    info_pub = pub.create_publisher(CameraInfo, INFO_TOPIC, 10)
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    executor.add_node(pub)
    spinner = threading.Thread(target=executor.spin, name="latency-bench-spin", daemon=True)
    spinner.start()
    period = 1.0 / args.rate_hz
    h, w = frames[0].image.shape[:2]
    K = frames[0].intrinsics
    published = 0
    counted_from: dict[str, Any] | None = None
    # The node's received counter at each whole second of the measured span: shows whether
    # frames arrived throughout the run or only in bursts.
    received_at_second: list[int] = []
    try:
        start = time.monotonic()
        warm_end = start + args.warmup_s
        end = warm_end + args.seconds
        next_due = start
        while (now := time.monotonic()) < end:
            if counted_from is None and now >= warm_end:
                node.stats.clear_stages()
                counted_from = {"t": now, "published": published, **_counters(node)}
                received_at_second.append(counted_from["received"])
            elif counted_from is not None and now >= counted_from["t"] + len(received_at_second):
                received_at_second.append(node.stats.get("input.cam.received"))
            if now < next_due:
                time.sleep(min(0.002, next_due - now))
                continue
            frame = frames[published % len(frames)]
            header = conv.make_header(1000.0 + published * period, "cam_optical")
            if K is not None:
                info_pub.publish(conv.camera_info(K, h, w, header))
            image_pub.publish(conv.rgb_to_image(frame.image, "rgb8", header))
            published += 1
            next_due += period
            if time.monotonic() - next_due > 1.0:  # the publisher itself fell behind: no burst
                next_due = time.monotonic()
        measured_s = time.monotonic() - (counted_from or {"t": start})["t"]
        counters_end = _counters(node)
        # Let the window in flight finish so its latency counts; queued ones are what they are.
        deadline = time.monotonic() + args.drain_s
        while time.monotonic() < deadline and (node.busy_window is not None or node.queue_depth()):
            time.sleep(0.05)
        stages = node.stats.stage_summary()
    finally:
        node.shutdown()
        executor.shutdown(timeout_sec=2.0)
        spinner.join(timeout=2.0)
        node.destroy_node()
        pub.destroy_node()
    base = counted_from or {"published": 0, **{k: 0 for k in counters_end}}
    delta = {k: counters_end[k] - base[k] for k in counters_end}
    report = {
        "bag": str(args.bag),
        "model": node.model_description,
        "device": str(getattr(node.predictor, "device", "?")),
        "rate_hz": args.rate_hz,
        "window": args.window,
        "stride": args.stride,
        "every_frame": bool(args.every_frame),
        "frame_cache": args.frame_cache,
        "measured_s": measured_s,
        "frames_published": published - base["published"],
        "frames_received_per_s": delta["received"] / measured_s,
        # frames the node received in each whole second of the measured span, and after the
        # last whole second (the span's fraction of a second; the two add up to the total)
        "frames_received_by_second": np.diff(received_at_second).astype(int).tolist(),
        "frames_received_after_whole_seconds": int(
            delta["received"] - (received_at_second[-1] - received_at_second[0] if received_at_second else 0)
        ),
        "keyframes_per_s": delta["keyframes"] / measured_s,
        "windows_processed": delta["processed"],
        "windows_dropped_queue_full": delta["dropped"],
        "stages_ms": stages,
    }
    (out / "latency.json").write_text(json.dumps(report, indent=2) + "\n")
    _plot(report, out / "latency.png")
    return report


def _counters(node: PerceptionNode) -> dict[str, int]:
    return {
        "received": node.stats.get("input.cam.received"),
        "keyframes": int(node.pipeline.stats.get("keyframes", 0)) if node.pipeline is not None else 0,
        "processed": node.stats.get("windows.processed"),
        "dropped": node.stats.get("drop.queue_full"),
    }


def _plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = report["stages_ms"]
    names = [k for k in stages if stages[k]["count"]]
    fig, (ax, ax_rate) = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [2, 1]})
    x = np.arange(len(names))
    ax.bar(x - 0.2, [stages[k]["p50"] for k in names], 0.4, label="p50")
    ax.bar(x + 0.2, [stages[k]["p95"] for k in names], 0.4, label="p95")
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylabel("ms")
    window = f"window {report['window']} / stride {report['stride']}"
    ax.set_title(f"{report['model'][:60]}\n{report['rate_hz']} Hz, {window}")
    ax.legend()
    by_second = report["frames_received_by_second"]
    ax_rate.step(np.arange(1, len(by_second) + 1), by_second, where="pre", label="received")
    ax_rate.axhline(report["rate_hz"], color="gray", linestyle="--", label="published")
    ax_rate.set_xlabel("s after warm-up")
    ax_rate.set_ylabel("frames / s")
    ax_rate.set_ylim(bottom=0)
    ax_rate.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def format_report(report: dict[str, Any]) -> str:
    """Markdown table of the stages and the rates."""
    lines = [
        f"model: {report['model']} on {report['device']}",
        f"{report['rate_hz']} Hz for {report['measured_s']:.1f} s: received "
        f"{report['frames_received_per_s']:.1f} frames/s (slowest second "
        f"{min(report['frames_received_by_second'], default=0)}), "
        f"{report['keyframes_per_s']:.2f} keyframes/s, "
        f"{report['windows_processed']} windows processed, "
        f"{report['windows_dropped_queue_full']} dropped (queue full)",
        "",
        "| stage | p50 ms | p95 ms | max ms | windows |",
        "|---|---|---|---|---|",
    ]
    for name, q in report["stages_ms"].items():
        lines.append(f"| {name} | {q['p50']:.1f} | {q['p95']:.1f} | {q['max']:.1f} | {q['count']} |")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bag", help="bag with a camera (vggt-ros generate / convert-dataset / a recording)")
    ap.add_argument("--rate-hz", type=float, default=15.0, help="frames per second published")
    ap.add_argument("--seconds", type=float, default=30.0, help="measured time after the warm-up")
    ap.add_argument("--warmup-s", type=float, default=5.0, help="not counted (warm-up, compilation)")
    ap.add_argument("--drain-s", type=float, default=30.0, help="wait at most this long for the last window")
    ap.add_argument("--checkpoint", default="", help="weights (default: the embedded compact model)")
    ap.add_argument("--config", default="")
    ap.add_argument("--untrained", action="store_true")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--image-size", type=int, default=0, help="model input size (0: the weights' own)")
    ap.add_argument("--window", type=int, default=8)
    ap.add_argument("--stride", type=int, default=4)
    ap.add_argument("--track-queries", type=int, default=0)
    ap.add_argument("--every-frame", action="store_true", help="every frame is a keyframe")
    ap.add_argument(
        "--frame-cache",
        type=int,
        default=-1,
        help="model.frame_cache: reuse encoder tokens (-1: two windows, the node's default; 0: off)",
    )
    ap.add_argument("--out", default="out/latency")
    args = ap.parse_args(argv)
    if args.rate_hz <= 0 or args.seconds <= 0 or args.warmup_s < 0:
        ap.error("--rate-hz and --seconds must be > 0, --warmup-s >= 0")
    if not Path(args.bag).exists():
        ap.error(f"bag not found: {args.bag}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns 0 when at least one window's TF was measured."""
    args = parse_args(argv)
    rclpy.init()
    try:
        report = run(args)
    finally:
        rclpy.try_shutdown()
    print(format_report(report))
    print(f"wrote {Path(args.out) / 'latency.json'} and latency.png")
    return 0 if report["stages_ms"].get("image_to_tf", {}).get("count", 0) else 1


if __name__ == "__main__":
    raise SystemExit(main())
