"""``vggt-ros``: command-line entry point.

Subcommands register themselves in :data:`SUBCOMMANDS` (a function adding a parser whose
defaults carry ``handler``), so later tools (``eval``, ``bench``, ``demo``) plug in without
touching :func:`main`. User errors (missing input, unreadable image, bad checkpoint, invalid
options) end with one ``error:`` line and exit code 2, never a traceback.

    vggt-ros predict INPUT --out DIR [--checkpoint facebook/VGGT-1B] [--tracks 64] ...
    vggt-ros convert-checkpoint SRC DST.safetensors [--dtype bf16] [--config vggt-1b]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vggt_ros.eval.commands import SUBCOMMAND_ADDERS as EVAL_SUBCOMMANDS
from vggt_ros.eval.model_options import (
    add_model_options,
    check_model_options,
    model_choice,
    predictor_from_options,
)
from vggt_ros.eval.onnx_commands import SUBCOMMAND_ADDERS as ONNX_SUBCOMMANDS
from vggt_ros.train.commands import SUBCOMMAND_ADDERS as TRAIN_SUBCOMMANDS

logger = logging.getLogger("vggt_ros.cli")

EXIT_OK = 0
EXIT_USAGE = 2  # user errors: bad input, bad checkpoint, bad options (argparse uses 2 as well)


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that are the user's input, not a bug (printed without traceback)."""
    from vggt_ros.eval.media import MediaError
    from vggt_ros.model.checkpoint import CheckpointError

    return (CliError, MediaError, CheckpointError, ValueError, FileNotFoundError, PermissionError)


# ------------------------------------------------------------------------------------------------
# predict
# ------------------------------------------------------------------------------------------------
def grid_points(n: int, height: int, width: int) -> np.ndarray:
    """``n`` query points (x, y) spread evenly over an image, at the centres of grid cells.

    The grid's aspect follows the image's so the spacing is about equal in x and y; the last
    row may be partly filled. Returns [n, 2] float64 pixel coordinates.
    """
    if n <= 0:
        return np.zeros((0, 2))
    cols = max(1, round(math.sqrt(n * width / height)))
    rows = math.ceil(n / cols)
    xs = (np.arange(cols) + 0.5) * width / cols - 0.5
    ys = (np.arange(rows) + 0.5) * height / rows - 0.5
    grid = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
    return grid[:n]


def _add_predict(subparsers: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "predict",
        parents=parents,
        help="run VGGT on an image folder or a video; write points, depth, cameras",
        description=(
            "Run VGGT on a folder of images (natural sort order) or a video file and write "
            "points.ply, depth/<name>.png (16-bit) + .npy, confidence/<name>.npy, cameras.json, "
            "tracks.npz (with --tracks) and summary.json to --out. All outputs are in the first "
            "camera's frame (OpenCV optical axes) at VGGT's normalized scale."
        ),
    )
    p.add_argument("input", type=Path, help="folder of images, a single image, or a video file")
    p.add_argument("--out", "-o", type=Path, required=True, help="output folder (created)")
    add_model_options(p)
    p.add_argument("--every", type=int, default=1, help="use every N-th image / video frame")
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    p.add_argument(
        "--conf-percentile",
        type=float,
        default=50.0,
        help="drop points below this confidence percentile from points.ply (default 50; 0 keeps all)",
    )
    p.add_argument(
        "--point-source",
        choices=("depth", "points"),
        default="depth",
        help="point cloud from depth + cameras (default, more accurate) or the point head",
    )
    p.add_argument("--tracks", type=int, default=0, help="track N grid points of the first frame")
    p.add_argument(
        "--depth-scale",
        type=float,
        default=None,
        help="16-bit PNG units per depth unit (default: chosen to fit the deepest value)",
    )
    p.set_defaults(handler=run_predict)


def _check_predict_args(args: argparse.Namespace) -> None:
    if args.every < 1:
        raise CliError(f"--every must be >= 1, got {args.every}")
    if args.max_frames is not None and args.max_frames < 1:
        raise CliError(f"--max-frames must be >= 1, got {args.max_frames}")
    if not 0.0 <= args.conf_percentile <= 100.0:
        raise CliError(f"--conf-percentile must be in [0, 100], got {args.conf_percentile}")
    if args.tracks < 0:
        raise CliError(f"--tracks must be >= 0, got {args.tracks}")
    if args.depth_scale is not None and not args.depth_scale > 0:
        raise CliError(f"--depth-scale must be positive, got {args.depth_scale}")
    if not args.input.exists():
        raise CliError(f"input not found: {args.input}")
    # Fail on an unusable device before minutes of reading and loading, not after.
    check_model_options(args)


def run_predict(args: argparse.Namespace) -> int:
    """The ``predict`` subcommand (see its --help)."""
    from tqdm import tqdm

    from vggt_ros.eval import exports
    from vggt_ros.eval.media import load_frames

    _check_predict_args(args)
    start = time.perf_counter()
    bars: list[tqdm] = []

    def reading_bar(total: int | None) -> Callable[[], None]:
        bars.append(tqdm(total=total, desc="reading", unit="frame", disable=args.quiet, leave=False))
        return lambda: bars[-1].update(1)

    try:
        names, frames = load_frames(args.input, args.every, args.max_frames, reading_bar)
    finally:
        for bar in bars:
            bar.close()
    h0, w0 = frames[0].shape[:2]
    logger.info("read %d frame(s) from %s (first %dx%d WxH)", len(frames), args.input, w0, h0)

    predictor = predictor_from_options(args)
    choice = model_choice(args)
    logger.info("model %s on %s, %s", choice.description, predictor.device, predictor.precision)
    queries = grid_points(args.tracks, h0, w0) if args.tracks else None
    prediction = predictor.predict(frames, queries)
    logger.info(
        "inference on %d frame(s) at %dx%d: %.0f ms",
        len(frames),
        prediction.model_hw[1],
        prediction.model_hw[0],
        prediction.timings["inference_ms"],
    )

    out: Path = args.out
    (out / "depth").mkdir(parents=True, exist_ok=True)
    (out / "confidence").mkdir(parents=True, exist_ok=True)
    depths = [prediction.depth_original(i) for i in range(len(frames))]
    scale = args.depth_scale or exports.auto_depth_png_scale(depths)
    for i, name in enumerate(tqdm(names, desc="writing", unit="frame", disable=args.quiet, leave=False)):
        exports.write_depth_png16(out / "depth" / f"{name}.png", depths[i], scale)
        exports.write_depth_npy(out / "depth" / f"{name}.npy", depths[i])
        exports.write_depth_npy(out / "confidence" / f"{name}.npy", prediction.depth_conf_original(i))

    xyz, rgb, conf = prediction.point_cloud(percentile=args.conf_percentile or None, source=args.point_source)
    exports.write_ply(out / "points.ply", xyz, rgb, conf)
    exports.write_cameras_json(out / "cameras.json", prediction, names, depth_png_scale=scale)
    if queries is not None:
        np.savez_compressed(
            out / "tracks.npz",
            tracks=prediction.tracks,
            visibility=prediction.track_vis,
            confidence=prediction.track_conf,
            query_points=prediction.query_points,
            names=np.array(names),
        )

    summary = _summary(args, prediction, names, len(xyz), scale, time.perf_counter() - start)
    with (out / "summary.json").open("w", encoding="utf-8") as f:
        json.dump(exports.json_ready(summary), f, indent=2, allow_nan=False)
        f.write("\n")
    logger.info(
        "wrote %d points, %d depth maps%s to %s (weights %s)",
        len(xyz),
        len(names),
        f", {args.tracks} tracks" if queries is not None else "",
        out,
        prediction.weights.get("model", "trained")
        if prediction.weights.get("trained")
        else "UNTRAINED - outputs meaningless",
    )
    return EXIT_OK


def _summary(
    args: argparse.Namespace, prediction: Any, names: Sequence[str], points: int, scale: float, seconds: float
) -> dict[str, Any]:
    return {
        "input": str(args.input),
        "frames": len(names),
        "names": list(names),
        "model_hw": list(prediction.model_hw),
        "config": model_choice(args).config,
        "mode": args.mode,
        "size": model_choice(args).image_size,
        "weights": prediction.weights,
        "trained": bool(prediction.weights.get("trained")),
        "scale": "normalized",
        "points": points,
        "point_source": args.point_source,
        "conf_percentile": args.conf_percentile,
        "depth_png_scale": scale,
        "tracks": args.tracks,
        "timings_ms": prediction.timings,
        "total_seconds": seconds,
    }


# ------------------------------------------------------------------------------------------------
# convert-checkpoint
# ------------------------------------------------------------------------------------------------
_DTYPE_NAMES = ("fp32", "bf16", "fp16")


def _add_convert(subparsers: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    from vggt_ros.model.config import CONFIGS

    p = subparsers.add_parser(
        "convert-checkpoint",
        parents=parents,
        help="convert a VGGT checkpoint (.pt/.bin/HF repo id) to safetensors",
        description="Convert a checkpoint to a .safetensors file (memory-mapped, no pickle on load).",
    )
    p.add_argument("src", help="local checkpoint file or Hugging Face repo id (org/name[@rev][:file])")
    p.add_argument("dst", type=Path, help="output .safetensors path")
    p.add_argument("--dtype", choices=_DTYPE_NAMES, default=None, help="convert floating tensors")
    p.add_argument("--config", choices=sorted(CONFIGS), default=None, help="check the tensors against it")
    p.set_defaults(handler=run_convert)


def run_convert(args: argparse.Namespace) -> int:
    """The ``convert-checkpoint`` subcommand."""
    import torch

    from vggt_ros.model.checkpoint import convert_checkpoint

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}.get(args.dtype)
    out = convert_checkpoint(args.src, args.dst, dtype=dtype, config=args.config)
    logger.info("wrote %s", out)
    return EXIT_OK


# ------------------------------------------------------------------------------------------------
# bench
# ------------------------------------------------------------------------------------------------
def _add_bench(subparsers: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    from vggt_ros.engine.modes import MODES
    from vggt_ros.model.config import CONFIGS

    p = subparsers.add_parser(
        "bench",
        parents=parents,
        help="time VGGT inference modes side by side (per stage, peak memory, accuracy)",
        description=(
            "Times each stage (aggregator, camera, depth, points, tracks) of every mode on synthetic "
            "frames, with the 'official' baseline (fp32 weights, bf16 autocast, fp32 heads, all "
            "layers kept) in the same process, and measures each mode's error against fp32."
        ),
    )
    p.add_argument("--config", choices=sorted(CONFIGS), default="vggt-1b")
    p.add_argument(
        "--weights",
        default="seeded",
        help="'seeded' (recipe weights, offline), 'untrained' (random init) or a checkpoint file",
    )
    p.add_argument("--frames", default="1,8,32,100", help="comma-separated frame counts")
    p.add_argument("--sizes", default="350x518", help="comma-separated HEIGHTxWIDTH (multiples of 14)")
    p.add_argument("--tracks", default="0", help="comma-separated numbers of query points")
    p.add_argument(
        "--modes",
        default="official:eager,bf16",
        help=f"comma-separated MODE[:BACKEND] from {', '.join(MODES)}; a bare MODE runs on every --backends",
    )
    p.add_argument("--backends", default="eager", help="comma-separated: eager, torch, tensorrt, auto")
    p.add_argument(
        "--compile-mode",
        default="default",
        choices=("default", "reduce-overhead", "max-autotune-no-cudagraphs", "max-autotune"),
        help="torch.compile mode for the 'torch' backend",
    )
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=(
            "runner/backend option (repeatable), e.g. graph_window=false, graph_window_frames=32, "
            "graph_camera=false, graph_tracks=false, head_chunk_frames=8, token_chunk=8192, "
            "inplace_residual=false, channels_last_heads=true"
        ),
    )
    p.add_argument(
        "--stride",
        type=int,
        default=0,
        help=(
            "time the node's steady state: sliding windows with STRIDE new frames each (e.g. 4 for "
            "window 8); every mode but 'official' reuses the encoder tokens of frames already "
            "seen (frame cache) and the table adds the time per new keyframe"
        ),
    )
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--accuracy", default="8x350x518", help="FRAMESxHxW[xTRACKS] case for accuracy, or 'none'")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", type=Path, default=None, help="also write the report as JSON here")
    sparse = p.add_argument_group(
        "sparse accuracy",
        "with --option global_key_stride=N: what the approximation costs in depth accuracy on a "
        "trained model, on held-out procedural windows of every --frames length (float32)",
    )
    sparse.add_argument(
        "--sparse-accuracy",
        type=int,
        default=0,
        metavar="K",
        help="windows per length (0: off; 6 gives changes good to a few thousandths)",
    )
    sparse.add_argument(
        "--sparse-accuracy-checkpoint",
        default=None,
        help="trained weights to judge on (default: the embedded compact model)",
    )
    sparse.add_argument("--sparse-accuracy-config", default=None, help="config of that checkpoint")
    p.set_defaults(handler=run_bench)


def _int_list(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise CliError(f"--{what} must be comma-separated integers, got {text!r}") from None
    if not values or min(values) < 0:
        raise CliError(f"--{what} must list non-negative integers, got {text!r}")
    return values


def run_bench(args: argparse.Namespace) -> int:
    """The ``bench`` subcommand."""
    from vggt_ros.engine.modes import get_mode
    from vggt_ros.engine.precision import resolve_device
    from vggt_ros.eval import bench

    device = resolve_device(args.device)
    if device.type == "cpu":
        from vggt_ros.engine.cpu_isa import make_cpu_bf16_safe

        make_cpu_bf16_safe()  # the official baseline runs bf16 autocast even on CPU
    sizes = bench.parse_sizes(args.sizes)
    cases = [
        bench.BenchCase(f, h, w, t)
        for (h, w) in sizes
        for f in _int_list(args.frames, "frames")
        for t in _int_list(args.tracks, "tracks")
    ]
    if any(c.frames < 1 or c.height % 14 or c.width % 14 for c in cases):
        raise CliError("frame counts must be >= 1 and sizes multiples of 14")
    if args.stride < 0 or (args.stride and any(args.stride >= c.frames for c in cases)):
        raise CliError("--stride must be >= 0 and smaller than every frame count (windows must overlap)")
    options = {"torch_compile_mode": args.compile_mode, **_parse_options(args.option)}
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    runs = []  # "bf16:torch" pins a backend; a bare mode runs with every --backends entry
    for item in (m.strip() for m in args.modes.split(",") if m.strip()):
        mode, _, backend = item.partition(":")
        get_mode(mode)
        runs += [(mode, backend)] if backend else [(mode, b) for b in backends]
    accuracy_case = None
    if args.accuracy != "none":
        parts = _int_list(args.accuracy.replace("x", ","), "accuracy")
        if len(parts) not in (3, 4):
            raise CliError("--accuracy is FRAMESxHxW[xTRACKS] or 'none'")
        accuracy_case = bench.BenchCase(*parts)
    sparse_settings = _sparse_accuracy_settings(args, options)
    weights, label = _bench_weights(args.weights, args.config)
    report = bench.run_benchmark(
        args.config,
        weights,
        cases,
        runs,
        device,
        repeats=args.repeats,
        warmup=args.warmup,
        accuracy_case=accuracy_case,
        progress=lambda message: logger.info("bench %s", message),
        weights_label=label,
        backend_options=options,
        stride=args.stride,
    )
    print(f"device {report.device}, torch {report.torch_version}, config {report.config}, weights {label}")
    print(bench.format_table(report))
    for line in bench.summarize_ratio(report):
        print(line)
    report_dict = bench.report_json(report)
    if sparse_settings:
        report_dict["sparse_accuracy"] = _run_sparse_accuracy(args, device, sparse_settings)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report_dict, indent=2) + "\n", encoding="utf-8")
    return EXIT_OK


def _sparse_accuracy_settings(args: argparse.Namespace, options: dict[str, Any]) -> list[Any]:
    """The sparse setting ``--sparse-accuracy`` judges (the one ``--option`` asks for), or [] when
    it is off. Checked before any timing runs."""
    from vggt_ros.eval.long_window import SparseSetting

    if args.sparse_accuracy < 0:
        raise CliError("--sparse-accuracy takes a number of windows >= 0")
    if not args.sparse_accuracy:
        return []
    stride = int(options.get("global_key_stride", 0) or 0)
    if stride < 2:
        raise CliError("--sparse-accuracy judges a sparse setting: add --option global_key_stride=N (N >= 2)")
    if min(_int_list(args.frames, "frames")) < 2:
        raise CliError("--sparse-accuracy needs --frames of at least 2 (long windows: 32, 100)")
    return [SparseSetting(stride, bool(options.get("global_key_weighting", True)))]


def _run_sparse_accuracy(args: argparse.Namespace, device: Any, settings: list[Any]) -> list[dict[str, Any]]:
    """Print and return the accuracy table of ``settings`` against exact attention."""
    from tqdm import tqdm

    from vggt_ros.eval.long_window import format_long_window_table, long_window_accuracy, sparse_predictor

    try:
        predictor, description = sparse_predictor(
            args.sparse_accuracy_checkpoint, args.sparse_accuracy_config, device
        )
    except ValueError as exc:
        raise CliError(f"--sparse-accuracy: {exc}") from None
    frames = _int_list(args.frames, "frames")
    total = len(frames) * args.sparse_accuracy
    with tqdm(total=total, desc="sparse accuracy", unit="window", disable=args.quiet, leave=False) as bar:

        def progress(message: str) -> None:
            bar.set_postfix_str(message)
            bar.update(1)

        rows = long_window_accuracy(predictor, frames, settings, args.sparse_accuracy, progress=progress)
    print(f"sparse accuracy on {description} ({args.sparse_accuracy} held-out windows per length, float32):")
    print(format_long_window_table(rows))
    return [row.to_dict() for row in rows]


def _parse_options(items: Sequence[str]) -> dict[str, Any]:
    """['a=true', 'n=3', 's=x'] -> {'a': True, 'n': 3, 's': 'x'}."""
    options: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise CliError(f"--option takes KEY=VALUE, got {item!r}")
        value: Any = text
        if text.lower() in ("true", "false"):
            value = text.lower() == "true"
        elif text.lstrip("-").isdigit():
            value = int(text)
        options[key.strip()] = value
    from vggt_ros.engine.runner import BACKEND_OPTIONS, RUNNER_OPTIONS, unknown_options

    unknown = unknown_options(options)
    if unknown:
        known = ", ".join(sorted(RUNNER_OPTIONS | BACKEND_OPTIONS))
        raise CliError(f"unknown --option {', '.join(unknown)}; known: {known}")
    return options


def _bench_weights(spec: str, config: str) -> tuple[Callable[[], dict] | None, str]:
    """'seeded' | 'untrained' | checkpoint path -> (state-dict factory or None, label)."""
    if spec == "untrained":
        return None, "untrained (random init)"
    if spec == "seeded":

        def seeded() -> dict:
            import torch

            from vggt_ros.model.seeded import seeded_weights_for
            from vggt_ros.model.vggt import VGGT

            with torch.device("meta"):
                layout = VGGT(config)
            return seeded_weights_for(layout, seed=0)

        return seeded, "seeded recipe (seed 0)"
    path = Path(spec)
    if not path.exists():
        raise CliError(f"--weights: no such checkpoint file {path} (or use 'seeded' / 'untrained')")

    def from_file() -> dict:
        from vggt_ros.model.checkpoint import load_state_dict_file

        return load_state_dict_file(path, device="cpu")

    return from_file, f"checkpoint {path.name}"


# ------------------------------------------------------------------------------------------------
# main
# ------------------------------------------------------------------------------------------------
# Each entry adds one subcommand parser (given the shared option parents) whose defaults carry
# ``handler``; later issues append theirs (eval, bench, demo).
SubcommandAdder = Callable[[argparse._SubParsersAction, list[argparse.ArgumentParser]], None]
SUBCOMMANDS: list[SubcommandAdder] = [
    _add_predict,
    _add_convert,
    _add_bench,
    *EVAL_SUBCOMMANDS,
    *ONNX_SUBCOMMANDS,
    *TRAIN_SUBCOMMANDS,
]


def build_parser() -> argparse.ArgumentParser:
    from vggt_ros import __version__

    parser = argparse.ArgumentParser(
        prog="vggt-ros", description="VGGT dense 3D perception tools (no ROS needed for these)."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    # Global options live on a parent parser so they also work after the subcommand name.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    common.add_argument(
        "-q", "--quiet", action="store_true", help="warnings and errors only, no progress bars"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(subparsers, [common])
    return parser


def _configure_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", force=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit code (0 ok, 2 user error, 130 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    _configure_logging(args.verbose, args.quiet)
    try:
        return int(args.handler(args))
    except _user_errors() as exc:
        # One line for the person at the terminal; the traceback only with --verbose.
        message = " ".join(str(exc).split()) or type(exc).__name__
        logger.debug("traceback", exc_info=True)
        print(f"vggt-ros {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("vggt-ros: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
