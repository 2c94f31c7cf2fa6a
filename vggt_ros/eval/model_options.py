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
    "!!  NO --checkpoint GIVEN: running VGGT with UNTRAINED, RANDOM weights.\n"
    "!!  Every output (cameras, depth, point cloud, tracks) is MEANINGLESS; use this only\n"
    "!!  to test the pipeline. For real results pass --checkpoint facebook/VGGT-1B or a\n"
    "!!  local checkpoint file.\n" + "!" * 78
)


def add_model_options(parser: argparse.ArgumentParser | Any) -> None:
    """Add --checkpoint, --config, --device, --precision, --backend, --mode, --size to a parser
    (or an argument group)."""
    from vggt_ros.engine.precision import PRECISIONS
    from vggt_ros.engine.preprocess import PREPROCESS_MODES
    from vggt_ros.model.config import CONFIGS

    parser.add_argument(
        "--checkpoint",
        default=None,
        help="checkpoint file, folder or HF repo id (e.g. facebook/VGGT-1B); default: untrained weights",
    )
    parser.add_argument("--config", default="vggt-1b", choices=sorted(CONFIGS), help="model configuration")
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
        "--size", type=int, default=518, help="model image side, multiple of 14 (default 518)"
    )


def check_model_options(args: argparse.Namespace) -> None:
    """Refuse bad values before minutes of reading and loading (raises ValueError)."""
    from vggt_ros.engine.precision import resolve_device, resolve_precision

    if args.size <= 0 or args.size % 14:
        raise ValueError(f"--size must be a positive multiple of 14, got {args.size}")
    resolve_precision(args.precision, resolve_device(args.device))


def predictor_from_options(args: argparse.Namespace) -> Any:
    """Load the model the options name and wrap it in a Predictor (warns when untrained)."""
    from vggt_ros.engine.predictor import Predictor

    if args.checkpoint is None:
        logger.warning("%s", UNTRAINED_BANNER)
    return Predictor.from_checkpoint(
        args.checkpoint,
        config=args.config,
        device=args.device,
        precision=args.precision,
        mode=args.mode,
        target_size=args.size,
        backend=args.backend,
    )
