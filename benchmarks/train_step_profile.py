"""Where one training step's time goes: window rendering, the optimisation step, each head.

Takes the ``vggt-ros train`` options (model, loss, frames, batch size, ...) and times, on one
fixed batch, with the device synchronised around each measurement:

* ``render``: drawing and rendering one batch of procedural windows (``Trainer._batch``);
* ``train_step``: forward, losses, backward, clipping, AdamW and EMA on that batch;
* the same step with fewer heads trained (``camera,depth,point``, ``camera,depth``,
  ``camera``), which prices the track and point heads;
* with ``--table``, the torch profiler's top operators of two steps (CUDA and CPU time): when
  the CPU total is well above the CUDA total, the step is bound by Python and kernel launches.

    python benchmarks/train_step_profile.py --model vggt-compact --loss flow=1 \
        --track-queries 64 --frames 8 --batch-size 32 --table
    python benchmarks/train_step_profile.py --model vggt-tiny --frames 4 --batch-size 2 \
        --loss flow=1 --track-queries 16 --device cpu --repeats 2
    # the same step compiled block by block (vggt_ros.train.compile), first step = compile time
    python benchmarks/train_step_profile.py --model vggt-compact --loss flow=1 \
        --track-queries 64 --frames 8 --batch-size 32 --compile --no-subsets

Figures: docs/training.md ("seventh session").
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable

import torch

from vggt_ros.cli import build_parser
from vggt_ros.train.commands import config_from_args
from vggt_ros.train.targets import WindowBatch
from vggt_ros.train.trainer import Trainer

HEAD_SUBSETS = ("camera,depth,point", "camera,depth", "camera")


def _trainer(train_argv: list[str]) -> Trainer:
    """A trainer for ``vggt-ros train`` options, in a throw-away run folder."""
    args = build_parser().parse_args(
        ["train", "--out", tempfile.mkdtemp(prefix="step_profile_"), *train_argv]
    )
    return Trainer(config_from_args(args), args.out)


def _timed(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 0) -> float:
    """Mean seconds of ``fn`` over ``repeats`` calls, after ``warmup`` untimed calls."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        fn()
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync()
    return (time.perf_counter() - start) / repeats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per measurement")
    parser.add_argument("--table", action="store_true", help="also print the torch profiler's top operators")
    parser.add_argument("--no-subsets", action="store_true", help="skip the head-subset steps")
    ours, train_argv = parser.parse_known_args(argv)
    if ours.repeats < 1:
        parser.error("--repeats must be >= 1")
    if "--heads" in train_argv:
        parser.error("--heads is chosen by this script (all heads, then the subsets)")

    trainer = _trainer(train_argv)
    device = trainer.device
    step_index = iter(range(1, 1_000_000))
    render = _timed(lambda: trainer._batch(next(step_index)), device, ours.repeats, warmup=1)
    batch: WindowBatch = trainer._batch(0)
    # The first step pays one-off costs: with --compile, compiling (regional: a few blocks).
    first = _timed(lambda: trainer.train_step(batch), device, 1)
    step = _timed(lambda: trainer.train_step(batch), device, ours.repeats, warmup=1)
    c = trainer.config
    print(f"device {device}, model {c.model}, batch {c.batch_size} x {c.frames} frames, compile {c.compile}")
    print(f"render per batch      {render * 1000:8.1f} ms")
    print(f"first train_step      {first:8.1f} s")
    print(f"train_step, all heads {step * 1000:8.1f} ms  ({','.join(c.heads)})")

    if ours.table:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=activities) as prof:
            for _ in range(2):
                trainer.train_step(batch)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        averages = prof.key_averages()
        if device.type == "cuda":
            print(averages.table(sort_by="cuda_time_total", row_limit=20, max_name_column_width=60))
        print(averages.table(sort_by="cpu_time_total", row_limit=20, max_name_column_width=60))

    for heads in () if ours.no_subsets else HEAD_SUBSETS:
        subset = _trainer([*train_argv, "--heads", heads])
        seconds = _timed(lambda s=subset: s.train_step(batch), device, ours.repeats, warmup=2)
        print(f"train_step, {heads:<18} {seconds * 1000:8.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
