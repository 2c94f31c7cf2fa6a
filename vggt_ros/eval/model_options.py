"""Command-line options that choose and load the model, shared by every ``vggt-ros`` tool.

One definition keeps ``predict`` and ``eval`` (and any later tool) in step: the same flags,
defaults, validation and the same loud warning when no checkpoint is given.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

logger = logging.getLogger("vggt_ros.cli")

BACKEND_CHOICES = ("eager", "torch", "tensorrt", "auto")

UNTRAINED_BANNER = (
    "\n" + "!" * 78 + "\n"
    "!!  --untrained: running VGGT with UNTRAINED, RANDOM weights.\n"
    "!!  Every output (cameras, depth, point cloud, tracks) is MEANINGLESS; use this only\n"
    "!!  to test the pipeline or as a baseline. Without --untrained and --checkpoint the\n"
    "!!  embedded compact model runs; --checkpoint facebook/VGGT-1B gives the released one.\n" + "!" * 78
)


def add_model_options(parser: argparse.ArgumentParser | Any) -> None:
    """Add --checkpoint, --untrained, --config, --device, --precision, --backend, --mode, --size to
    a parser (or an argument group)."""
    from vggt_ros.engine.precision import PRECISIONS
    from vggt_ros.engine.preprocess import PREPROCESS_MODES
    from vggt_ros.model.config import CONFIGS

    parser.add_argument(
        "--checkpoint",
        default=None,
        help=(
            "checkpoint file, folder or HF repo id (e.g. facebook/VGGT-1B); default: the embedded "
            "compact model shipped with the package (see docs/model_card_compact.md)"
        ),
    )
    parser.add_argument(
        "--untrained",
        action="store_true",
        help="random weights instead of a checkpoint (pipeline tests and baselines only)",
    )
    parser.add_argument(
        "--config",
        default=None,
        choices=sorted(CONFIGS),
        help=(
            "model configuration (default: with --checkpoint the config saved in a safetensors "
            "file's header, else vggt-1b; without, the embedded model's)"
        ),
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument(
        "--precision", default="auto", choices=PRECISIONS, help="compute precision (default auto)"
    )
    parser.add_argument(
        "--backend",
        default="eager",
        choices=BACKEND_CHOICES,
        help="compiled sections: torch.compile, TensorRT, or auto (ordered fallback); default eager",
    )
    parser.add_argument(
        "--mode", default="resize", choices=PREPROCESS_MODES, help="preprocessing (default resize)"
    )
    parser.add_argument(
        "--size",
        type=int,
        default=None,
        help="model image side, multiple of 14 (default: 518 for vggt-1b, else the config's own size)",
    )
    parser.add_argument(
        "--global-key-stride",
        type=int,
        default=0,
        help=(
            "APPROXIMATE sparse global attention for long windows: each token attends to the first "
            "frame and to 1 in N patch tokens of the others (e.g. 8; default 0 = exact; "
            "docs/benchmarks.md, 'Long windows')"
        ),
    )
    parser.add_argument(
        "--mirror-depth",
        action="store_true",
        help=(
            "also run each window's left-right mirror image and average the two depth maps: more "
            "accurate depth, the network's cameras unchanged, twice its time (as the node's "
            "model.mirror_depth)"
        ),
    )


def add_frame_cache_option(parser: argparse.ArgumentParser | Any) -> None:
    """Add --frame-cache (the tools that replay windows through the pipeline, as the node does)."""
    parser.add_argument(
        "--frame-cache",
        type=int,
        default=-1,
        help=(
            "keyframes whose encoder tokens are kept for the next windows, as the node's "
            "model.frame_cache: -1 two windows (the default), 0 off; same outputs (to rounding on a GPU)"
        ),
    )


def check_model_options(args: argparse.Namespace) -> None:
    """Refuse bad values before minutes of reading and loading (raises ValueError)."""
    from vggt_ros.engine.precision import resolve_device, resolve_precision

    if args.size is not None and (args.size <= 0 or args.size % 14):
        raise ValueError(f"--size must be a positive multiple of 14, got {args.size}")
    if getattr(args, "global_key_stride", 0) < 0:
        raise ValueError(f"--global-key-stride must be >= 0 (0: exact), got {args.global_key_stride}")
    resolve_precision(args.precision, resolve_device(args.device))
    model_choice(args)


def model_choice(args: argparse.Namespace) -> Any:
    """The :class:`~vggt_ros.model.embedded.ModelChoice` of the options (cached on ``args``)."""
    from vggt_ros.model.embedded import choose_model

    if getattr(args, "_model_choice", None) is None:
        args._model_choice = choose_model(args.checkpoint, args.config, args.size, args.untrained)
    return args._model_choice


def predictor_from_options(args: argparse.Namespace, point_head: bool = True, frame_cache: int = 0) -> Any:
    """Load the model the options name and wrap it in a Predictor (warns when untrained).
    ``point_head=False`` skips the point-map head (for the mapping pipeline, which unprojects
    depth and never reads the point map); ``frame_cache``: frames whose encoder tokens the
    runner keeps (0: none; the pipeline passes keyframe identities when it is on)."""
    from vggt_ros.engine.predictor import Predictor

    choice = model_choice(args)
    if choice.untrained:
        logger.warning("%s", UNTRAINED_BANNER)
    else:
        logger.info("model: %s", choice.description)
    predictor = Predictor.from_checkpoint(
        choice.source,
        config=choice.config,
        device=args.device,
        precision=args.precision,
        mode=args.mode,
        target_size=choice.image_size,
        backend=args.backend,
        runner_options={
            "global_key_stride": int(getattr(args, "global_key_stride", 0) or 0),
            "point_head": point_head,
            "frame_cache": int(frame_cache),
            "mirror_depth": bool(getattr(args, "mirror_depth", False)),
        },
    )
    if choice.embedded is not None:
        predictor.weights["model"] = choice.embedded.name
        predictor.weights["card"] = choice.embedded.card
    if getattr(args, "mirror_depth", False):  # the reports say how their depth was made
        predictor.weights["depth"] = "averaged with the mirror image's (--mirror-depth)"
    return predictor
