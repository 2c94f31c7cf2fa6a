"""CLI subcommands of the evaluation tools (registered in ``vggt_ros.cli.SUBCOMMANDS``).

    vggt-ros eval BAG --out DIR [--checkpoint ...] [--gt tum:FILE | /topic | tf:WORLD:BODY] ...
    vggt-ros generate OUT_BAG [--frames 16] [--trajectory orbit] [--baseline 0.2] ...
    vggt-ros convert-dataset FOLDER OUT_BAG [--kind tum|euroc]

User errors (missing bag, missing or mistyped topics, bad options) raise ValueError subclasses,
which ``vggt_ros.cli.main`` prints as one line with exit code 2.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from vggt_ros.eval.model_options import (
    add_frame_cache_option,
    add_model_options,
    check_model_options,
    predictor_from_options,
)

logger = logging.getLogger("vggt_ros.eval")


# ------------------------------------------------------------------------------------------------
# eval
# ------------------------------------------------------------------------------------------------
def add_eval(subparsers: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    """Add ``vggt-ros eval``."""
    from vggt_ros.eval.bags import STORAGES
    from vggt_ros.eval.report import ALIGN_CHOICES
    from vggt_ros.mapping.config import SCALE_SOURCES

    p = subparsers.add_parser(
        "eval",
        parents=parents,
        help="replay a rosbag through the perception pipeline and report errors against ground truth",
        description=(
            "Replay a rosbag2 (sqlite3 or mcap) or ROS 1 bag through the same keyframe / window / "
            "chaining pipeline as the node, and write report.json, report.md and PNG plots to --out: "
            "trajectory error (evo APE/RPE; Sim(3) alignment for normalized scale, SE(3) for metric), "
            "depth error against a ground-truth depth topic (AbsRel, RMSE, delta<1.25), latency, "
            "keyframe rate and dropped frames. See docs/evaluation.md."
        ),
    )
    p.add_argument("bag", type=Path, help="rosbag2 directory (or its .db3/.mcap) or ROS 1 .bag")
    p.add_argument("--out", "-o", type=Path, required=True, help="output folder (created)")
    g = p.add_argument_group("model")
    add_model_options(g)
    add_frame_cache_option(g)
    g = p.add_argument_group("topics (defaults follow `vggt-ros generate` bags)")
    g.add_argument(
        "--image-topic", action="append", default=None, help="camera image topic (repeat for a rig)"
    )
    g.add_argument("--camera-info-topic", action="append", default=None, help="one per --image-topic")
    g.add_argument("--depth-topic", default=None, help="ground-truth depth topic ('' to skip depth error)")
    g.add_argument(
        "--metric-depth-topic", default=None, help="depth topic fed to the pipeline (scale source depth)"
    )
    g.add_argument("--odom-topic", default=None, help="nav_msgs/Odometry topic ('' to ignore odometry)")
    g.add_argument(
        "--gt", default=None, help="ground truth: tum:FILE, topic:/name (or /name), tf:WORLD:BODY, or none"
    )
    g.add_argument(
        "--gt-frame", default=None, help="frame the ground-truth poses describe, if not the camera"
    )
    g = p.add_argument_group("replay")
    g.add_argument(
        "--rate",
        type=float,
        default=None,
        help="play at R x the recorded rate (default: as fast as possible)",
    )
    g.add_argument("--queue-size", type=int, default=1, help="window queue in --rate mode (full -> dropped)")
    g.add_argument(
        "--warmup-windows",
        type=int,
        default=2,
        help="--rate mode: windows of the bag's first image run before the clock starts "
        "(compilation, CUDA graph capture are start-up, not latency); 0 to time them too",
    )
    g.add_argument(
        "--switch-interval-ms",
        type=float,
        default=0.0,
        help="--rate mode: the GIL switch interval for the replay (ms; 0 keeps the interpreter's, "
        "5 ms: vggt_ros/mapping/interpreter.py); the node's gil_switch_interval_ms",
    )
    g.add_argument(
        "--max-frames", type=int, default=None, help="stop after this many reference-camera images"
    )
    g.add_argument("--stamp-tolerance", type=float, default=0.02, help="seconds to match depth/GT stamps")
    g = p.add_argument_group("pipeline (any field: --param section.field=value, e.g. window.size=8)")
    g.add_argument("--window-size", type=int, default=None, help="keyframes per window")
    g.add_argument("--window-stride", type=int, default=None, help="new keyframes between windows")
    g.add_argument("--tracks", type=int, default=None, help="track N query points per window")
    g.add_argument("--scale-source", choices=SCALE_SOURCES, default=None, help="metric scale source")
    g.add_argument(
        "--param", action="append", default=[], metavar="SECTION.FIELD=VALUE", help="pipeline parameter"
    )
    g = p.add_argument_group("outputs")
    g.add_argument(
        "--align", choices=ALIGN_CHOICES, default="auto", help="trajectory alignment (auto: by scale)"
    )
    g.add_argument("--rpe-delta", type=int, default=1, help="RPE pair distance in keyframes")
    g.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    g.add_argument("--export", action="store_true", help="also write SLAM warm-start files to OUT/export/")
    g.add_argument("--record", type=Path, default=None, help="record the pipeline outputs to this new bag")
    g.add_argument(
        "--record-storage", choices=STORAGES, default="mcap", help="storage of --record (default mcap)"
    )
    p.set_defaults(handler=run_eval)


def _parse_value(text: str) -> Any:
    """A --param value: a Python literal, true/false as ROS and YAML write them, else a string."""
    if text.strip().lower() in ("true", "false"):
        return text.strip().lower() == "true"
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare word (e.g. ransac) is a string


def pipeline_config(args: argparse.Namespace) -> Any:
    """PipelineConfig from the defaults, the shortcut options and ``--param`` (later wins)."""
    from vggt_ros.mapping import PipelineConfig

    flat = PipelineConfig().to_flat()
    shortcuts = {
        "window.size": args.window_size,
        "window.stride": args.window_stride,
        "window.num_track_queries": args.tracks,
        "scale.source": args.scale_source,
    }
    flat.update({k: v for k, v in shortcuts.items() if v is not None})
    if args.window_size is not None and args.window_stride is None:
        flat["window.stride"] = max(1, args.window_size // 2)
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep or key not in flat:
            raise ValueError(f"--param {item!r}: expected SECTION.FIELD=VALUE with a known field")
        flat[key] = _parse_value(value)
    return PipelineConfig.from_flat(flat)


def replay_options(args: argparse.Namespace) -> Any:
    from vggt_ros.eval.replay import GroundTruthSpec, ReplayOptions

    gt = None
    if args.gt is not None:
        gt = GroundTruthSpec() if args.gt == "none" else GroundTruthSpec.parse(args.gt)
    if args.gt_frame:
        gt = gt or GroundTruthSpec()
        gt.body = args.gt_frame
    if args.warmup_windows < 0:
        raise ValueError(f"--warmup-windows must be >= 0, got {args.warmup_windows}")
    for name in ("queue_size", "stamp_tolerance", "rpe_delta"):
        if not getattr(args, name) > 0:
            raise ValueError(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    if args.max_frames is not None and args.max_frames < 1:
        raise ValueError(f"--max-frames must be >= 1, got {args.max_frames}")
    return ReplayOptions(
        image_topics=args.image_topic,
        camera_info_topics=args.camera_info_topic,
        depth_gt_topic=args.depth_topic,
        metric_depth_topic=args.metric_depth_topic,
        odom_topic=args.odom_topic,
        ground_truth=gt,
        rate=args.rate,
        queue_size=args.queue_size,
        max_frames=args.max_frames,
        stamp_tolerance=args.stamp_tolerance,
    )


def run_eval(args: argparse.Namespace, predictor: Any = None) -> int:
    """The ``eval`` subcommand; ``predictor`` overrides the checkpoint (tests use a double)."""
    from tqdm import tqdm

    from vggt_ros.engine.frame_cache import resolve_frame_cache
    from vggt_ros.eval import bags
    from vggt_ros.eval.replay import replay_bag, resolve_options, warm_up_predictor
    from vggt_ros.eval.report import write_report
    from vggt_ros.mapping import PerceptionPipeline

    if not args.bag.exists():
        raise bags.BagError(f"bag not found: {args.bag}")
    if args.record is not None and args.record.exists():
        raise bags.BagError(f"--record {args.record} exists already; bags are never overwritten")
    config = pipeline_config(args)
    options = replay_options(args)
    topics = bags.bag_topics(args.bag)
    # Fail on an unreadable bag or a wrong topic before minutes of model loading.
    resolved = resolve_options(options, {t: i.msgtype for t, i in topics.items()})
    if predictor is None:
        check_model_options(args)
        window_frames = config.window.size * len(resolved.image_topics)
        frame_cache = resolve_frame_cache(args.frame_cache, window_frames, "--frame-cache")
        # The pipeline never reads the point map; the frame cache as in the node.
        predictor = predictor_from_options(args, point_head=False, frame_cache=frame_cache)
    pipeline = PerceptionPipeline(config, predictor)
    recorder = None
    if args.record is not None:
        from vggt_ros.eval.record import OutputRecorder

        recorder = OutputRecorder(args.record, storage=args.record_storage)
    image_topics = options.image_topics or ["/camera/image_raw"]
    total = sum(topics[t].count for t in image_topics if t in topics) or None
    if args.max_frames is not None and total is not None:
        total = min(total, args.max_frames * len(image_topics))
    warm = None
    if args.rate is not None:
        if args.switch_interval_ms:
            from vggt_ros.mapping import interpreter

            interpreter.set_switch_interval_ms(args.switch_interval_ms)
        window = config.window
        warm = warm_up_predictor(
            args.bag, predictor, window.size, window.overlap, args.warmup_windows, options, window.stride
        )
    cache = getattr(getattr(predictor, "runner", None), "frame_cache", None)
    cache_before = None if cache is None else dataclasses.replace(cache.stats)  # after the warm-up
    bar = tqdm(total=total, desc="replay", unit="frame", disable=args.quiet)
    try:
        result = replay_bag(
            args.bag, pipeline, options, progress=bar.update, on_result=recorder.write if recorder else None
        )
    finally:
        bar.close()
        if recorder is not None:
            recorder.close(pipeline)
    result.warm_up = warm
    result.frame_cache = None if cache is None else cache.usage_since(cache_before)
    report = write_report(
        args.out,
        result,
        str(args.bag),
        args.align,
        args.rpe_delta,
        plots=not args.no_plots,
        weights=getattr(predictor, "weights", None),
    )
    if args.export:
        from vggt_ros.eval.warmstart import export_warm_start

        export_warm_start(result, args.out / "export")
    _log_summary(report, args)
    return 0


def _log_summary(report: dict[str, Any], args: argparse.Namespace) -> None:
    tr, dp, c = report["trajectory"], report["depth"], report["counts"]
    logger.info(
        "%d frames -> %d keyframes, %d windows (%d rejected), scale %s",
        c["frames"],
        c["keyframes"],
        c["windows"],
        c["windows_rejected"],
        "metric" if report["scale"]["metric"] else "normalized",
    )
    if "skipped" in tr:
        logger.info("trajectory: skipped (%s)", tr["skipped"])
    else:
        logger.info(
            "trajectory (%s, %d poses): APE %.4f m rmse, RPE %.4f m / %.3f deg rmse",
            tr["alignment"],
            tr["matched"],
            tr["ape_trans_m"]["rmse"],
            tr["rpe_trans_m"]["rmse"],
            tr["rpe_rot_deg"]["rmse"],
        )
    if "skipped" in dp:
        logger.info("depth: skipped (%s)", dp["skipped"])
    else:
        logger.info(
            "depth (%d keyframes): AbsRel %.4f, RMSE %.4f, delta1 %.3f",
            dp["keyframes"],
            dp["abs_rel"],
            dp["rmse"],
            dp["delta1"],
        )
    from vggt_ros.eval.report import accuracy_summary

    lp = report.get("loops", {})
    if lp:
        logger.info(
            "loops: %d verified, %d accepted (%d true, %d false), %d rejected; "
            "APE as chained %s, optimised %s",
            lp["verified"],
            lp["accepted"],
            lp["true_accepted"],
            lp["false_accepted"],
            lp["rejected"],
            _number(lp.get("chained_ape_rmse_m")),
            _number(report["trajectory"].get("ape_trans_m", {}).get("rmse")),
        )

    for name, row in accuracy_summary(report).items():
        logger.info(
            "%s: window depth AbsRel %s, window rotation error %s deg, APE %s %% of the path length",
            name,
            *(_number(row[k]) for k in ("window_abs_rel", "window_rotation_deg", "ape_percent_of_length")),
        )
    logger.info("wrote %s", args.out / "report.md")


def _number(value: Any) -> str:
    return "-" if value is None else f"{value:.4g}"


# ------------------------------------------------------------------------------------------------
# generate
# ------------------------------------------------------------------------------------------------
def add_generate(subparsers: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    """Add ``vggt-ros generate``."""
    from vggt_ros.eval.bags import STORAGES
    from vggt_ros.eval.procedural.settings import ALL_MOTIONS
    from vggt_ros.eval.synthetic import PATHS

    p = subparsers.add_parser(
        "generate",
        parents=parents,
        help="render a procedural ground-truth sequence and write it as a rosbag",
        description=(
            "Render a procedural room (textured walls, floor, objects) along a smooth camera path "
            "and write a bag with images, camera_info, ground-truth depth, odometry, ground-truth "
            "poses and TF (layout: vggt_ros/eval/generate.py, docs/evaluation.md). --scene room "
            "(default) is the fixed single room of the demo and tests; --scene procedural draws a "
            "random scene of the training renderer (vggt_ros.eval.procedural), with --held-out its "
            "held-out settings, from a seed stream training never uses."
        ),
    )
    p.add_argument("--scene", choices=("room", "procedural"), default="room", help="scene generator")
    p.add_argument("--held-out", action="store_true", help="procedural: the held-out scene settings")
    p.add_argument(
        "--motion",
        choices=ALL_MOTIONS,
        default=None,
        help="procedural: force this camera motion (lap, figure_eight and "
        "there_and_back are long loop-rich paths for loop-closure evaluation)",
    )
    p.add_argument("out", type=Path, help="new rosbag2 directory (or a .bag file for ROS 1)")
    p.add_argument("--frames", type=int, default=16, help="number of frames (default 16)")
    p.add_argument("--height", type=int, default=120, help="image height (default 120)")
    p.add_argument("--width", type=int, default=160, help="image width (default 160)")
    p.add_argument("--seed", type=int, default=0, help="scene and path seed")
    p.add_argument("--fov", type=float, default=70.0, help="horizontal field of view, degrees")
    p.add_argument("--trajectory", choices=PATHS, default="orbit", help="camera path")
    p.add_argument(
        "--baseline", type=float, default=None, help="add a right camera this many metres along +x"
    )
    p.add_argument("--fps", type=float, default=10.0, help="frame rate of the stamps")
    p.add_argument("--storage", choices=STORAGES, default="sqlite3", help="rosbag2 storage")
    p.add_argument("--compress", action="store_true", help="zstd-compress the bag file (about 1/3 smaller)")
    p.add_argument("--tum", type=Path, default=None, help="also write the ground-truth camera poses as TUM")
    p.add_argument(
        "--odom-drift",
        type=float,
        default=0.0,
        help="odometry error as a share of the distance driven, e.g. 0.02 for wheel odometry that "
        "drifts 2 %% (default 0: exact odometry)",
    )
    p.set_defaults(handler=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from vggt_ros.eval.bags import BagError
    from vggt_ros.eval.generate import ground_truth_trajectory, write_sequence_bag
    from vggt_ros.eval.synthetic import render_sequence
    from vggt_ros.mapping.export.trajectory import write_tum

    if args.out.exists():
        raise BagError(f"{args.out} exists already; bags are never overwritten")
    if args.frames < 1 or args.height < 8 or args.width < 8:
        raise ValueError("--frames must be >= 1 and --height/--width >= 8")
    if not args.fps > 0:
        raise ValueError(f"--fps must be > 0, got {args.fps}")
    if not 0 <= args.odom_drift < 1:
        raise ValueError(f"--odom-drift must be in [0, 1), got {args.odom_drift}")
    logger.info(
        "rendering %d frames of %dx%d (%s, seed %d)",
        args.frames,
        args.width,
        args.height,
        args.trajectory,
        args.seed,
    )
    if args.scene == "procedural":
        from vggt_ros.eval.procedural import ProceduralSettings
        from vggt_ros.eval.procedural import render_sequence as render_procedural

        if args.baseline is not None:
            raise ValueError("--baseline (a camera rig) is only available with --scene room")
        make = ProceduralSettings.held_out if args.held_out else ProceduralSettings
        settings = make(height=args.height, width=args.width)
        seq = render_procedural(settings, args.seed, args.frames, args.motion, args.fps)
    else:
        if args.held_out or args.motion:
            raise ValueError("--held-out and --motion need --scene procedural")
        seq = render_sequence(
            args.frames,
            args.height,
            args.width,
            args.seed,
            args.fov,
            args.trajectory,
            args.baseline,
            args.fps,
        )
    with tqdm(total=args.frames, desc="writing", unit="frame", disable=args.quiet) as bar:
        path = write_sequence_bag(
            seq, args.out, args.storage, args.compress, progress=bar.update, odom_drift=args.odom_drift
        )
    if args.tum is not None:
        write_tum(
            args.tum,
            ground_truth_trajectory(seq),
            "vggt_ros synthetic ground truth: camera optical frame -> world",
        )
    logger.info("wrote %s", path)
    return 0


# ------------------------------------------------------------------------------------------------
# convert-dataset
# ------------------------------------------------------------------------------------------------
def add_convert_dataset(
    subparsers: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]
) -> None:
    """Add ``vggt-ros convert-dataset``."""
    from vggt_ros.eval.bags import STORAGES
    from vggt_ros.eval.datasets import DATASET_KINDS

    p = subparsers.add_parser(
        "convert-dataset",
        parents=parents,
        help="convert a TUM RGB-D or EuRoC folder to a rosbag2 for `vggt-ros eval`",
        description="Convert a TUM RGB-D or EuRoC MAV folder to a rosbag2 with the topics `eval` expects.",
    )
    p.add_argument("folder", type=Path, help="dataset folder (TUM: has rgb.txt; EuRoC: has mav0/)")
    p.add_argument("out", type=Path, help="new rosbag2 directory")
    p.add_argument("--kind", choices=DATASET_KINDS, default=None, help="layout (default: detected)")
    p.add_argument("--storage", choices=STORAGES, default="sqlite3", help="rosbag2 storage")
    p.add_argument("--max-frames", type=int, default=None, help="convert only the first N images")
    p.set_defaults(handler=run_convert_dataset)


def run_convert_dataset(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from vggt_ros.eval.bags import BagError
    from vggt_ros.eval.datasets import convert_dataset, dataset_frame_count, detect_kind

    if not args.folder.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {args.folder}")
    if args.out.exists():
        raise BagError(f"{args.out} exists already; bags are never overwritten")
    kind = args.kind or detect_kind(args.folder)
    total = dataset_frame_count(args.folder, kind)
    if args.max_frames:
        total = min(total, args.max_frames)
    with tqdm(total=total, desc=f"converting {kind}", unit="frame", disable=args.quiet) as bar:
        summary = convert_dataset(
            args.folder, args.out, kind, args.storage, args.max_frames, progress=bar.update
        )
    logger.info("%s", json.dumps({k: str(v) for k, v in vars(summary).items()}))
    return 0


# ------------------------------------------------------------------------------------------------
# soak
# ------------------------------------------------------------------------------------------------
def add_soak(subparsers: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    """Add ``vggt-ros soak``."""
    p = subparsers.add_parser(
        "soak",
        parents=parents,
        help="replay a bag over and over at camera rate and sample memory, CPU and latency",
        description=(
            "Long-run test of the node's pipeline: the bag's reference camera is replayed in a loop "
            "(stamps shifted each pass, so every pass revisits the earlier ones) at --rate x the recorded "
            "rate for --minutes, with inference on a worker thread behind a one-window queue as in the "
            "node. Every --sample-every seconds: memory, CPU, window latency, windows processed / dropped "
            "/ rejected / failed, map points, pose-graph size, loops. Writes soak.csv, soak.json, "
            "soak.png, map.ply and trajectory.tum to --out; with ground truth in the bag also "
            "consistency.json / consistency.png: the whole run's trajectory against it after one Sim(3), "
            "and each pass's scale (docs/soak.md)."
        ),
    )
    p.add_argument("bag", type=Path, help="rosbag2 directory (e.g. from `vggt-ros generate --motion lap`)")
    p.add_argument("--out", "-o", type=Path, required=True)
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--rate", type=float, default=1.0, help="x the recorded rate")
    p.add_argument("--sample-every", type=float, default=60.0, help="seconds between samples")
    p.add_argument(
        "--no-clock",
        action="store_true",
        help="process every window, one after the other, as fast as the pipeline goes (nothing dropped: "
        "two settings then see the same windows; latency is the processing time)",
    )
    p.add_argument(
        "--windows", type=int, default=None, help="stop after this many windows (also before --minutes)"
    )
    g = p.add_argument_group("model")
    add_model_options(g)
    add_frame_cache_option(g)
    g = p.add_argument_group("pipeline")
    g.add_argument("--window-size", type=int, default=None)
    g.add_argument("--window-stride", type=int, default=None)
    g.add_argument("--tracks", type=int, default=None)
    g.add_argument("--scale-source", default=None)
    g.add_argument("--param", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    p.set_defaults(handler=run_soak_command)


def run_soak_command(args: argparse.Namespace, predictor: Any = None) -> int:
    from vggt_ros.engine.frame_cache import resolve_frame_cache
    from vggt_ros.eval.soak import (
        growth_per_minute,
        load_frames,
        load_ground_truth,
        run_consistency,
        run_soak,
        write_consistency,
        write_soak,
    )
    from vggt_ros.mapping import PerceptionPipeline

    if not args.bag.exists():
        raise FileNotFoundError(f"bag not found: {args.bag}")
    for name in ("minutes", "rate", "sample_every"):
        if not getattr(args, name) > 0:
            raise ValueError(f"--{name.replace('_', '-')} must be > 0")
    if args.windows is not None and args.windows < 1:
        raise ValueError("--windows must be at least 1")
    config = pipeline_config(args)
    frames, period = load_frames(args.bag)
    ground_truth = load_ground_truth(args.bag, frames[0].camera_id)
    if predictor is None:
        check_model_options(args)
        # The reference camera only: windows of window.size frames; the frame cache as in the node.
        frame_cache = resolve_frame_cache(args.frame_cache, config.window.size, "--frame-cache")
        predictor = predictor_from_options(args, point_head=False, frame_cache=frame_cache)
    pipeline = PerceptionPipeline(config, predictor)

    def report(row: dict[str, float]) -> None:
        logger.info(
            "minute %.1f: RSS %.0f MB, CPU %.0f %%, latency p95 %.0f ms, %d windows (%d dropped, %d failed), "
            "%d map points, loops %d closed / %d rejected",
            row["minute"],
            row["rss_mb"],
            row["cpu_percent"],
            row["latency_p95_ms"],
            row["windows_processed"],
            row["windows_dropped"],
            row["windows_failed"],
            row["map_points"],
            row["loops_accepted"],
            row["loops_rejected"],
        )

    result = run_soak(
        frames,
        period,
        pipeline,
        args.minutes,
        args.rate,
        args.sample_every,
        progress=report,
        clock=not args.no_clock,
        max_windows=args.windows,
    )
    written = write_soak(args.out, result, pipeline)
    if ground_truth is None:
        logger.info("the bag has no ground truth: no consistency score")
    elif (consistency := run_consistency(pipeline.path(), ground_truth, frames[0].stamp, period)) is not None:
        written += write_consistency(args.out, consistency)
        logger.info(
            "whole run against the ground truth (one Sim(3) over %d keyframes of %d passes): APE RMSE %.3f m "
            "(%.2f %% of one pass's %.1f m); scale, last quarter of the passes over the first: %.3f",
            consistency.matched,
            len(consistency.pass_ape_m),
            consistency.ape_rmse_m,
            consistency.ape_percent_of_pass,
            consistency.pass_length_m,
            consistency.scale_drift,
        )
    logger.info(
        "soak totals %s; growth over the second half: RSS %.2f MB/min, map %.0f points/min; wrote %s",
        json.dumps(result.totals),
        growth_per_minute(result.samples, "rss_mb"),
        growth_per_minute(result.samples, "map_points"),
        ", ".join(str(w) for w in written),
    )
    return 0


SUBCOMMAND_ADDERS = (add_eval, add_generate, add_convert_dataset, add_soak)
