"""Training throughput of ``vggt-ros train`` variants, measured in one session.

Runs the same short training once per variant (``eager``, ``--render-process``, ``--compile``,
both), each in a fresh process and a throw-away run folder, and reports steps per second from
the run's ``log.jsonl`` after the warm-up steps (the first ``--log-every`` interval holds the
start-up: model build, compilation, the first batch), plus the time to the first logged step.

    # stage-2 settings of the compact model (H200: about a minute per variant plus compilation)
    python benchmarks/train_throughput.py --steps 150 --log-every 25 -- \\
        --model vggt-compact --loss flow=1 --track-queries 64 --frames 8 --batch-size 32
    # CPU smoke run
    python benchmarks/train_throughput.py --steps 6 --log-every 2 --variants eager,process -- \\
        --model vggt-tiny --size 140x140 --frames 2 --batch-size 2 --device cpu

Figures: docs/training.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS: dict[str, list[str]] = {
    "eager": [],
    "process": ["--render-process"],
    "compile": ["--compile"],
    "compile+process": ["--compile", "--render-process"],
}


def measure(
    train_args: list[str], steps: int, log_every: int, workdir: Path, name: str, timeout: float
) -> dict[str, float]:
    """One variant: steps/s after the first logged interval, and seconds to that interval.

    Raises RuntimeError when the run fails, logs too little, or outlasts ``timeout`` seconds."""
    out = workdir / name
    command = [
        sys.executable,
        "-m",
        "vggt_ros.cli",
        "train",
        "--out",
        str(out),
        *train_args,
        "--steps",
        str(steps),
        "--log-every",
        str(log_every),
        "--validate-every",
        "1000000",
        "--checkpoint-every",
        "1000000",
        "--quiet",
    ]
    start = time.monotonic()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{name}: stopped after {timeout:.0f} s (--variant-timeout)") from None
    wall = time.monotonic() - start
    if done.returncode != 0:
        raise RuntimeError(f"{name}: vggt-ros train failed ({done.returncode}):\n{done.stderr[-3000:]}")
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    timed = [row for row in rows if "elapsed_s" in row and "objective" in row]
    if len(timed) < 2:
        raise RuntimeError(f"{name}: fewer than two logged intervals; raise --steps or lower --log-every")
    first, last = timed[0], timed[-1]
    rate = (last["step"] - first["step"]) / max(1e-9, last["elapsed_s"] - first["elapsed_s"])
    return {"steps_per_s": rate, "first_log_s": first["elapsed_s"], "wall_s": wall}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list of {list(VARIANTS)}")
    parser.add_argument(
        "--variant-timeout",
        type=float,
        default=300.0,
        help="seconds one variant may take (a compile that runs away must not eat a device command)",
    )
    parser.add_argument("train_args", nargs="*", help="vggt-ros train options (after --)")
    args = parser.parse_args(argv)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    if args.steps < 2 * args.log_every:
        parser.error("--steps must hold at least two --log-every intervals")
    with tempfile.TemporaryDirectory(prefix="train_throughput_") as tmp:
        results: dict[str, dict[str, float]] = {}
        failures: dict[str, str] = {}
        for name in names:
            train_args = [*args.train_args, *VARIANTS[name]]
            try:
                results[name] = measure(
                    train_args, args.steps, args.log_every, Path(tmp), name, args.variant_timeout
                )
            except RuntimeError as exc:  # report it and measure the other variants
                failures[name] = str(exc)
                print(f"{name}: FAILED: {exc}", flush=True)
                continue
            print(f"{name}: {results[name]['steps_per_s']:.2f} steps/s", flush=True)
    if not results:
        return 1
    first = next(iter(results))
    base = results[first]["steps_per_s"]
    print(f"\n| variant | steps/s | vs {first} | first log (s) | wall (s) |")
    print("|---|---|---|---|---|")
    for name in names:
        if name in failures:
            print(f"| {name} | failed | | | {failures[name].splitlines()[0]} |")
            continue
        r = results[name]
        print(
            f"| {name} | {r['steps_per_s']:.2f} | {r['steps_per_s'] / base:.2f}x | "
            f"{r['first_log_s']:.1f} | {r['wall_s']:.1f} |"
        )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
