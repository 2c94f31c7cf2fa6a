"""``vggt-ros train``, ``export-model`` and ``average-models`` (registered by :mod:`vggt_ros.cli`).

    vggt-ros train --out runs/compact --model vggt-compact --steps 20000 --batch-size 32
    vggt-ros train --out runs/compact --resume --time-limit 9      # continue for 9 minutes
    torchrun --nproc_per_node 2 -m vggt_ros.cli train --out runs/ddp ...   # several GPUs
    vggt-ros train --out runs/ft --model vggt-1b --init-checkpoint facebook/VGGT-1B \
        --freeze-encoder --bag recorded.mcap --no-procedural --batch-size 2
    vggt-ros export-model runs/compact --out model.safetensors      # EMA weights, fp16
    vggt-ros average-models a.safetensors b.safetensors --out soup.safetensors  # weight mean

See docs/training.md.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

logger = logging.getLogger("vggt_ros.train")

HEADS = ("camera", "depth", "point", "track")
# --dtype of the exported files: torch attribute names.
_DTYPES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH, got {text!r}") from None
    if h <= 0 or w <= 0 or h % 14 or w % 14:
        raise argparse.ArgumentTypeError(
            f"{text}: both sides must be positive multiples of 14 (the patch size)"
        )
    return h, w


def _pair(text: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH, got {text!r}") from None
    if not 0 < low <= high:
        raise argparse.ArgumentTypeError(f"{text}: need 0 < LOW <= HIGH")
    return low, high


def motion_weights(text: str) -> tuple[float, ...]:
    """``turn=1,handheld=2`` -> weights in the order of the renderer's motions (others 0)."""
    from vggt_ros.eval.procedural.settings import MOTIONS

    weights = dict.fromkeys(MOTIONS, 0.0)
    for item in text.split(","):
        name, _, value = item.partition("=")
        name = name.strip()
        if name not in weights:
            raise ValueError(f"--motions: unknown motion {name!r}; expected some of {', '.join(MOTIONS)}")
        try:
            weights[name] = float(value) if value.strip() else 1.0
        except ValueError:
            raise ValueError(f"--motions: {item!r} is not NAME=WEIGHT") from None
    if min(weights.values()) < 0 or not any(weights.values()):
        raise ValueError(f"--motions {text!r}: weights must be >= 0 and not all 0")
    return tuple(weights[m] for m in MOTIONS)


def _wants_match(items: list[str]) -> bool:
    """Whether ``--loss`` turns a correspondence loss on (match, attention_match, flow: they
    need track targets)."""
    weights = loss_weights(items)
    return weights.match > 0 or weights.attention_match > 0 or weights.flow > 0


def loss_weights(items: list[str]):  # -> LossWeights
    """``["camera=10", "focal=0"]`` -> :class:`~vggt_ros.train.losses.LossWeights` (others default)."""
    import dataclasses

    from vggt_ros.train.losses import LossWeights

    fields = {f.name: f.type for f in dataclasses.fields(LossWeights)}
    changes: dict[str, float | int] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or name not in fields:
            raise ValueError(f"--loss {item!r}: expected NAME=VALUE with NAME one of {', '.join(fields)}")
        try:
            number = int(value) if fields[name] in ("int", int) else float(value)
        except ValueError:
            raise ValueError(f"--loss {item!r}: {value!r} is not a number") from None
        if number < 0:
            raise ValueError(f"--loss {item!r}: must be >= 0")
        changes[name] = number
    return LossWeights(**changes)


def add_train(subparsers: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    """Add ``vggt-ros train``."""
    from vggt_ros.model.config import CONFIGS

    p = subparsers.add_parser(
        "train",
        parents=parents,
        help="train or fine-tune a VGGT model on procedural scenes and/or ground-truth bags",
        description=(
            "Train a named configuration from scratch or fine-tune one from a checkpoint with the VGGT "
            "losses (camera, depth and point with confidence, tracks). Data: procedural rooms rendered on "
            "the training device and/or bags with ground-truth poses (and depth) from `vggt-ros generate` "
            "or `vggt-ros convert-dataset`. Checkpoints go to OUT/checkpoints (resumable exactly with "
            "--resume), losses and validation metrics to OUT/tensorboard and OUT/log.jsonl. Several GPUs: "
            "start with torchrun. See docs/training.md."
        ),
    )
    p.add_argument("--out", "-o", type=Path, required=True, help="run directory (created)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out with its saved settings")
    g = p.add_argument_group("model")
    g.add_argument(
        "--model",
        choices=sorted(CONFIGS),
        default="vggt-compact",
        help="configuration (default vggt-compact)",
    )
    g.add_argument("--init-checkpoint", default=None, help="start from these weights (fine-tuning)")
    g.add_argument("--freeze-encoder", action="store_true", help="keep the per-frame encoder fixed")
    g.add_argument("--heads", default=",".join(HEADS), help=f"heads to train (default {','.join(HEADS)})")
    g.add_argument(
        "--position-init",
        choices=("default", "sincos"),
        default="default",
        help="encoder position table at the start: the model's own (random from scratch, the "
        "checkpoint's when fine-tuning) or a 2D sine-cosine table (recommended from scratch; "
        "docs/training.md)",
    )
    g.add_argument(
        "--layer-scale-init",
        type=float,
        default=0.0,
        help="start value of the trunk's and camera head's layer-scale gains (0: the model's own, "
        "0.01; 1.0 recommended from scratch, docs/training.md)",
    )
    g = p.add_argument_group("data")
    g.add_argument("--no-procedural", action="store_true", help="no procedural scenes (bags only)")
    g.add_argument("--bag", action="append", default=[], type=Path, help="ground-truth bag (repeatable)")
    g.add_argument("--bag-weight", type=float, default=0.5, help="share of bag windows next to procedural")
    g.add_argument("--bag-max-gap", type=int, default=3, help="largest frame step inside a bag window")
    g.add_argument(
        "--size",
        type=_size,
        default=(140, 182),
        help="training image size HxW (default 140x182); the exported model runs at its width",
    )
    g.add_argument("--frames", type=int, default=8, help="frames per window (default 8)")
    g.add_argument(
        "--min-frames",
        type=int,
        default=0,
        help="train each step on the first S frames of its windows, S drawn per step from "
        "[MIN_FRAMES, --frames] (default 0: always --frames); a model trained on one length does "
        "worse at others",
    )
    g.add_argument("--track-queries", type=int, default=64, help="track queries per window (default 64)")
    g.add_argument(
        "--large-rooms",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="share of procedural windows rendered in rooms larger than the held-out ones "
        "(19-27 m; default 0); teaches large rotations in big, sparse spaces",
    )
    g.add_argument(
        "--mosaic-prob",
        type=float,
        default=0.0,
        metavar="P",
        help="chance that a textured procedural surface is a mosaic of hashed-colour tiles instead "
        "of checkers and stripes (default 0, the shipped models' data): more texture variety",
    )
    g.add_argument(
        "--near-objects",
        type=float,
        default=0.0,
        metavar="P",
        help="chance that a procedural window gets a box standing 0.45-1.2 m in front of one of its "
        "cameras (default 0, the shipped models' data): views whose depth a camera turning in "
        "place cannot triangulate",
    )
    g.add_argument("--supersample", type=int, default=1, help="procedural colour rays per pixel side")
    g.add_argument(
        "--motions",
        default=None,
        metavar="NAME=WEIGHT,...",
        help="procedural camera motions and their relative frequency, e.g. turn=1,handheld=1 "
        "(unnamed motions get weight 0; default: the shipped model's mix)",
    )
    g.add_argument(
        "--step-scale",
        type=_pair,
        default=None,
        metavar="LOW,HIGH",
        help="range of the factor on every motion's per-frame step (default 0.5,1.6; smaller: "
        "smaller baselines and rotations, an easier start for the camera head)",
    )
    g.add_argument("--validation-windows", type=int, default=32, help="held-out windows per validation")
    g.add_argument(
        "--validation-seed",
        type=int,
        default=0,
        help="seed of the held-out validation windows (default 0, whatever --seed: runs compare)",
    )
    g = p.add_argument_group("optimisation")
    g.add_argument("--steps", type=int, default=None, help="optimizer steps of the schedule (default 10000)")
    g.add_argument("--batch-size", type=int, default=16, help="windows per step over all processes")
    g.add_argument("--lr", type=float, default=3e-4)
    g.add_argument("--min-lr-ratio", type=float, default=0.05, help="cosine floor as a share of --lr")
    g.add_argument("--warmup-steps", type=int, default=500)
    g.add_argument("--weight-decay", type=float, default=0.05)
    g.add_argument("--grad-clip", type=float, default=1.0)
    g.add_argument(
        "--loss",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a loss weight or constant (repeatable), e.g. camera=10 (default 5, the official "
        "recipe), focal=0 (no field-of-view term), camera_huber_delta=0 (L1 camera loss), match=1 "
        "(cross-view correspondence loss on the trunk's tokens, from --track-queries targets), flow=1 "
        "(the tokens' displacement back to frame 0, same targets); names: "
        "the fields of vggt_ros.train.losses.LossWeights",
    )
    g.add_argument("--ema-decay", type=float, default=0.999, help="0 disables the EMA weights")
    g.add_argument("--no-bf16", action="store_true", help="float32 on CUDA too (bf16 autocast by default)")
    g.add_argument("--gradient-checkpointing", action="store_true", help="recompute trunk activations")
    g.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile each transformer block and dense head (regional; see docs/training.md)",
    )
    g.add_argument(
        "--render-process",
        action="store_true",
        help="draw the next batch in a separate process instead of a thread (same batches)",
    )
    # --resume keeps the saved value of each option below that is not given again.
    g = p.add_argument_group("bookkeeping")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--checkpoint-every", type=int, default=None, help="steps between checkpoints (500)")
    g.add_argument("--keep-checkpoints", type=int, default=None, help="checkpoints kept (default 2)")
    g.add_argument("--validate-every", type=int, default=None, help="steps between validations (1000)")
    g.add_argument("--log-every", type=int, default=None, help="steps between log lines (default 20)")
    g.add_argument(
        "--time-limit", type=float, default=None, help="stop (with a checkpoint) after N minutes (none)"
    )
    g.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default auto)")
    p.set_defaults(handler=run_train)


# Options that --resume may change (the rest comes from the saved run): argument -> TrainConfig
# field, and the value a new run gets when the option is not given. Their parser default is None
# so that a resumed run keeps its saved value unless the option is given again: an earlier
# version replaced a saved 1,500-step schedule by the 10,000-step default on every --resume.
_RESUME_OVERRIDES = {
    "steps": ("steps", 10000),
    "time_limit": ("time_limit_minutes", 0.0),
    "checkpoint_every": ("checkpoint_every", 500),
    "keep_checkpoints": ("keep_checkpoints", 2),
    "validate_every": ("validate_every", 1000),
    "log_every": ("log_every", 20),
    "device": ("device", "auto"),
}


def _with_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """``args`` with the new-run default of every resumable option that was not given."""
    values = vars(args).copy()
    for key, (_, default) in _RESUME_OVERRIDES.items():
        if values[key] is None:
            values[key] = default
    return argparse.Namespace(**values)


def config_from_args(args: argparse.Namespace):  # -> TrainConfig
    """A :class:`~vggt_ros.train.config.TrainConfig` from the command line (a new run)."""
    args = _with_defaults(args)
    from vggt_ros.eval.procedural import ProceduralSettings
    from vggt_ros.train.config import TrainConfig

    heads = tuple(h.strip() for h in args.heads.split(",") if h.strip())
    if args.frames < 1:
        raise ValueError(f"--frames must be >= 1, got {args.frames}")
    procedural = None
    if not args.no_procedural:
        scene: dict[str, object] = {}
        if args.motions:
            scene["motion_weights"] = motion_weights(args.motions)
        if args.step_scale:
            scene["step_scale"] = args.step_scale
        procedural = ProceduralSettings(
            height=args.size[0],
            width=args.size[1],
            frames=args.frames,
            # Track targets feed the track head and the match loss (correspondences).
            track_queries=args.track_queries if "track" in heads or _wants_match(args.loss) else 0,
            supersample=args.supersample,
            mosaic_prob=args.mosaic_prob,
            near_object_prob=args.near_objects,
            **scene,
        )
    for bag in args.bag:
        if not bag.exists():
            raise FileNotFoundError(f"--bag {bag}: not found")
    if "track" in heads and min(args.size) < 128:
        raise ValueError(
            f"--size {args.size[0]}x{args.size[1]} is too small for the track head (>= 128 px per side); "
            "drop 'track' from --heads or use a larger --size"
        )
    loss = loss_weights(args.loss)
    return TrainConfig(
        model=args.model,
        loss=loss,
        init_checkpoint=args.init_checkpoint,
        freeze_encoder=args.freeze_encoder,
        heads=heads,
        position_init=args.position_init,
        layer_scale_init=args.layer_scale_init,
        procedural=procedural,
        large_room_share=args.large_rooms,
        bags=tuple(str(b) for b in args.bag),
        bag_weight=args.bag_weight,
        bag_max_gap=args.bag_max_gap,
        bag_size=args.size,
        bag_frames=args.frames,
        validation_windows=args.validation_windows,
        validation_seed=args.validation_seed,
        min_frames=args.min_frames,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        min_lr_ratio=args.min_lr_ratio,
        warmup_steps=args.warmup_steps,
        weight_decay=args.weight_decay,
        grad_clip=args.grad_clip,
        ema_decay=args.ema_decay,
        bf16=not args.no_bf16,
        gradient_checkpointing=args.gradient_checkpointing,
        compile=args.compile,
        render_process=args.render_process,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        keep_checkpoints=args.keep_checkpoints,
        validate_every=args.validate_every,
        log_every=args.log_every,
        time_limit_minutes=args.time_limit,
        device=args.device,
        progress=not args.quiet,
    )


def run_train(args: argparse.Namespace) -> int:
    """The ``train`` subcommand."""
    import dataclasses

    from vggt_ros.train.checkpoints import repeated_windows_warning
    from vggt_ros.train.config import TrainConfig
    from vggt_ros.train.trainer import Trainer

    saved = args.out / "config.json"
    if args.resume:
        if not saved.is_file():
            raise FileNotFoundError(f"--resume: {args.out} holds no run (no config.json)")
        config = TrainConfig.load(saved)
        changes = {
            field: getattr(args, key)
            for key, (field, _) in _RESUME_OVERRIDES.items()
            if getattr(args, key) is not None
        }
        if "time_limit_minutes" not in changes:
            changes["time_limit_minutes"] = 0.0  # a limit is per command, never inherited
        changes["compile"] = args.compile or config.compile
        changes["render_process"] = args.render_process or config.render_process
        changes["progress"] = not args.quiet
        config = dataclasses.replace(config, **changes)
    else:
        if saved.is_file():
            raise ValueError(
                f"{args.out} already holds a run: add --resume to continue it, or choose a new --out"
            )
        config = config_from_args(args)
        repeated = repeated_windows_warning(
            config.init_checkpoint,
            config.seed,
            None if config.procedural is None else config.procedural.to_dict(),
        )
        if repeated:
            logger.warning("%s", repeated)
    trainer = Trainer(config, args.out)
    try:
        result = trainer.run()
    finally:
        if trainer.distributed:
            import torch.distributed as dist

            dist.destroy_process_group()
    if trainer.rank == 0:
        summary = {
            "step": result.step,
            "samples": result.samples,
            "stopped_by": result.stopped_by,
            "checkpoint": str(result.checkpoint) if result.checkpoint else None,
            "seconds": round(result.seconds, 1),
            "losses": result.last_losses,
            "validation": result.validation,
        }
        logger.info("%s", json.dumps(summary))
    return 0


def add_export(subparsers: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    """Add ``vggt-ros export-model``."""
    p = subparsers.add_parser(
        "export-model",
        parents=parents,
        help="write a training run's weights as one safetensors model file",
        description=(
            "Export the newest checkpoint of a run (or --checkpoint DIR) as a safetensors file that "
            "--checkpoint options and the node load; EMA weights in fp16 by default, with the model "
            "config and the run's provenance (steps, windows seen, data) in the file's metadata."
        ),
    )
    p.add_argument("run", type=Path, help="run directory of `vggt-ros train`")
    p.add_argument("--out", "-o", type=Path, required=True, help="output .safetensors file")
    p.add_argument("--checkpoint", type=Path, default=None, help="a specific checkpoint folder of the run")
    p.add_argument("--raw", action="store_true", help="the raw weights instead of the EMA weights")
    p.add_argument("--dtype", choices=tuple(_DTYPES), default="fp16")
    p.set_defaults(handler=run_export)


def run_export(args: argparse.Namespace) -> int:
    import torch

    from vggt_ros.model.checkpoint import CheckpointError
    from vggt_ros.train.checkpoints import STATE_FILE, export_model, latest_checkpoint
    from vggt_ros.train.config import TrainConfig

    config = TrainConfig.load(args.run / "config.json") if (args.run / "config.json").is_file() else None
    if config is None:
        raise FileNotFoundError(f"{args.run} holds no training run (no config.json)")
    checkpoint = args.checkpoint or latest_checkpoint(args.run)
    if checkpoint is None:
        raise CheckpointError(f"{args.run} has no checkpoint yet")
    state = torch.load(checkpoint / STATE_FILE, map_location="cpu", weights_only=True)
    provenance = {
        "run": args.run.name,
        "step": int(state["step"]),
        "samples": int(state["samples"]),
        "train_seconds": round(float(state["elapsed_seconds"]), 1),
        "data": {
            "procedural": None if config.procedural is None else config.procedural.to_dict(),
            "bags": list(config.bags),
        },
        "seed": config.seed,
    }
    dtype = getattr(torch, _DTYPES[args.dtype])
    out = export_model(
        checkpoint,
        args.out,
        config.model,
        use_ema=not args.raw,
        dtype=dtype,
        provenance=provenance,
        image_size=config.image_hw[1],
    )
    logger.info(
        "wrote %s (%s, step %d, %.1f MB)", out, config.model, provenance["step"], out.stat().st_size / 1e6
    )
    return 0


def _weights(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def add_average(subparsers: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    """Add ``vggt-ros average-models``."""
    p = subparsers.add_parser(
        "average-models",
        parents=parents,
        help="write the weighted mean of exported model files of one lineage",
        description=(
            "Average two or more `vggt-ros export-model` files element-wise (a 'model soup': "
            "fine-tunes from the same weights). The inputs must share config, image size and "
            "tensor shapes; the output's provenance names each input with its sha256 and weight."
        ),
    )
    p.add_argument("models", type=Path, nargs="+", help="exported .safetensors model files (two or more)")
    p.add_argument("--out", "-o", type=Path, required=True, help="output .safetensors file")
    p.add_argument(
        "--weights", type=_weights, default=None, help="one weight per model, e.g. 0.5,0.5 (default: equal)"
    )
    p.add_argument("--dtype", choices=tuple(_DTYPES), default="fp16")
    p.set_defaults(handler=run_average)


def run_average(args: argparse.Namespace) -> int:
    import torch

    from vggt_ros.train.averaging import average_models, normalized_weights

    mix = normalized_weights(args.weights, len(args.models))
    dtype = getattr(torch, _DTYPES[args.dtype])
    out = average_models(args.models, args.out, mix, dtype)
    parts = ", ".join(f"{m.name} x {w:.3g}" for m, w in zip(args.models, mix))
    logger.info("wrote %s (%s; %.1f MB)", out, parts, out.stat().st_size / 1e6)
    return 0


SUBCOMMAND_ADDERS = (add_train, add_export, add_average)
