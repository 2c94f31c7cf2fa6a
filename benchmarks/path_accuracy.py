"""Paired path accuracy of several models over many held-out loop and path sequences.

One sequence says little about a trajectory: two models whose windows are equally good drift
differently over 200 frames, and a path's chained APE moves by up to a factor of two either way
between them (docs/training.md, twenty-ninth session). This tool replays the same held-out
sequences (``vggt-ros generate --scene procedural --held-out``, the loop motions by default) with
every model through the node's pipeline (``vggt-ros eval``, CPU) and compares each model with the
first one sequence by sequence: the mean paired difference of the chained and the loop-closed
(optimised) APE with a bootstrap 95 % interval, and how many sequences got better or worse; and
the same for the replays' windows (depth AbsRel and rotation).

    python benchmarks/path_accuracy.py --out out/paths --model v10=embedded --model A=A.safetensors
    python benchmarks/path_accuracy.py --out out/paths --model v10=embedded --model v10_7px=embedded \
        --model-param v10_7px:keyframe.min_parallax_px=7
    python benchmarks/path_accuracy.py --out out/paths --model v10=embedded --model v7=v7.safetensors \
        --model-size v7:252
    python benchmarks/path_accuracy.py --out out/paths --model v10=embedded --model v10m=embedded \
        --model-mirror-depth v10m

A model given its own input size (``--model-size``) replays the same scenes (same seeds and
camera paths) rendered at its size, so a 252-px model pairs with the 294-px default sequence by
sequence.

Reports are kept (``OUT/NAME/SEQUENCE/report.json``), so an interrupted run resumes where it
stopped and a model added later reuses the bags and the other models' reports; they are found
by model name, so give a model whose weights or settings changed a new name. Writes
``OUT/paths.json``, ``OUT/paths.md`` and ``OUT/paths.png`` (each model against the first).
About 30-45 s a 200-frame sequence and model on two CPU cores at 196x252.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from vggt_ros.cli import main as cli
from vggt_ros.eval.procedural.settings import LOOP_MOTIONS
from vggt_ros.eval.report import accuracy_summary
from vggt_ros.eval.synthetic import render_size
from vggt_ros.model.embedded import DEFAULT_MODEL


def paired_difference(
    reference: np.ndarray, other: np.ndarray, resamples: int = 10000, seed: int = 0
) -> dict[str, float]:
    """Mean of ``other - reference`` over sequences [N] with a percentile-bootstrap 95 % interval.

    Resamples sequences with replacement (the pairs stay together), so the interval reflects how
    much the mean moves with the choice of sequences; it excludes 0 only when the difference is
    consistent across them.
    """
    diff = np.asarray(other, np.float64) - np.asarray(reference, np.float64)
    if diff.size == 0:
        raise ValueError("no paired sequences")
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, diff.size, size=(resamples, diff.size))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {
        "mean": float(diff.mean()),
        "low": float(low),
        "high": float(high),
        "better": int((diff < 0).sum()),
        "worse": int((diff > 0).sum()),
    }


PATH_KEYS = ("chained_ape_percent", "ape_percent")
"""The trajectory figures compared: chained and loop-closed APE, % of the path's length."""
WINDOW_DIGITS = {"window_abs_rel": 4, "window_rotation_deg": 2}
"""The window figures compared on the same replays (decimals shown): depth AbsRel (median-scaled)
and rotation error in degrees. They show whether a model's windows changed with its paths:
candidate A2's depth, better on the model card's ten sequences, was worse on these (+0.004, 6 of
30 better) beside its worse loop-closed paths (docs/training.md, forty-second session)."""
WINDOW_KEYS = tuple(WINDOW_DIGITS)


def _figures(report: dict[str, Any]) -> dict[str, float | None]:
    """The path and window figures of one ``vggt-ros eval`` report (APE in % of the path's length)."""
    loops, trajectory = report["loops"], report["trajectory"]
    windows = accuracy_summary(report)["model"]
    return {
        "chained_ape_percent": loops.get("chained_ape_percent_of_length"),
        "ape_percent": trajectory.get("ape_percent_of_length"),
        "loops": loops.get("accepted"),
        "false_loops": loops.get("false_accepted"),
        "window_rotation_deg": windows["window_rotation_deg"],
        "window_abs_rel": windows["window_abs_rel"],
    }


def summarize(complete: dict[str, dict[str, dict]], names: list[str]) -> dict[str, Any]:
    """Means, medians and paired differences of the figures over the sequences every model has.

    Args:
        complete: ``{sequence: {model: _figures(...)}}``, every model with its trajectory figures.
        names: model names, the first the reference every other one is paired with.

    Returns:
        ``{"paired": N, "models": {name: {key: {"mean", "median"}, "loops", "false_loops",
        "against_<first>": {key: paired_difference(...)}}}}`` for the keys of PATH_KEYS and
        WINDOW_KEYS; a window figure is paired over the sequences where both models have it.
    """
    summary: dict[str, Any] = {"paired": len(complete), "models": {}}
    for name in names:
        per = [complete[s][name] for s in complete]
        entry: dict[str, Any] = {}
        for key in PATH_KEYS + WINDOW_KEYS:
            values = [p[key] for p in per if p.get(key) is not None]
            if values:
                entry[key] = {"mean": statistics.fmean(values), "median": statistics.median(values)}
        entry["loops"] = sum(p["loops"] or 0 for p in per)
        entry["false_loops"] = sum(p["false_loops"] or 0 for p in per)
        if name != names[0]:
            against: dict[str, dict[str, float]] = {}
            for key in PATH_KEYS + WINDOW_KEYS:
                pair = (names[0], name)
                both = [s for s in complete if None not in (complete[s][n].get(key) for n in pair)]
                if both:
                    against[key] = paired_difference(
                        np.array([complete[s][names[0]][key] for s in both]),
                        np.array([complete[s][name][key] for s in both]),
                    )
            entry["against_" + names[0]] = against
        summary["models"][name] = entry
    return summary


def _paired_cell(d: dict[str, float] | None, digits: int) -> str:
    if d is None:
        return "-"
    mean, low, high = (f"{d[k]:+.{digits}f}" for k in ("mean", "low", "high"))
    return f"{mean} [{low}, {high}], {d['better']} / {d['worse']}"


def markdown(summary: dict[str, Any], names: list[str], header: str) -> str:
    """Two tables: the paths (chained and loop-closed APE) and the same replays' windows."""
    ref = names[0]
    lines = [
        header,
        "",
        "| model | chained APE % mean / median | optimised APE % mean / median | loops (false) "
        f"| chained: paired difference to {ref} [95 %], better / worse "
        "| optimised: paired difference [95 %], better / worse |",
        "|---|---|---|---|---|---|",
    ]
    for name in names:
        e = summary["models"][name]
        cells = [f"{e[k]['mean']:.2f} / {e[k]['median']:.2f}" for k in PATH_KEYS]
        pairs = ["-", "-"]
        if name != ref:
            pairs = [_paired_cell(e["against_" + ref].get(k), 2) for k in PATH_KEYS]
        loops = f"{e['loops']} ({e['false_loops']})"
        lines.append(f"| {name} | {cells[0]} | {cells[1]} | {loops} | {pairs[0]} | {pairs[1]} |")
    lines += [
        "",
        "| model | window depth AbsRel mean | window rotation (deg) mean "
        f"| depth: paired difference to {ref} [95 %], better / worse "
        "| rotation: paired difference [95 %], better / worse |",
        "|---|---|---|---|---|",
    ]
    for name in names:
        e = summary["models"][name]
        cells = [f"{e[k]['mean']:.{digits}f}" if k in e else "-" for k, digits in WINDOW_DIGITS.items()]
        pairs = ["-", "-"]
        if name != ref:
            pairs = [_paired_cell(e["against_" + ref].get(k), digits) for k, digits in WINDOW_DIGITS.items()]
        lines.append(f"| {name} | {cells[0]} | {cells[1]} | {pairs[0]} | {pairs[1]} |")
    return "\n".join(lines) + "\n"


def _parse_model(spec: str) -> tuple[str, list[str]]:
    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"--model wants NAME=CHECKPOINT or NAME=embedded, got {spec!r}")
    return name, ([] if path == "embedded" else ["--checkpoint", path])


def model_eval_args(names: list[str], param_specs: list[str], mirrored: list[str]) -> dict[str, list[str]]:
    """The ``vggt-ros eval`` arguments of each model of its own: ``--param KEY=VALUE`` for every
    ``NAME:KEY=VALUE`` of ``--model-param`` and ``--mirror-depth`` for every NAME of
    ``--model-mirror-depth``.

    Raises:
        ValueError: a malformed spec or a NAME that is not one of ``names``.
    """
    own: dict[str, list[str]] = {name: [] for name in names}
    for spec in param_specs:
        name, sep, kv = spec.partition(":")
        if not sep or name not in own or "=" not in kv:
            raise ValueError(f"--model-param wants NAME:KEY=VALUE with a NAME of --model, got {spec!r}")
        own[name] += ["--param", kv]
    for name in mirrored:
        if name not in own:
            raise ValueError(f"--model-mirror-depth wants a NAME of --model, got {name!r}")
        own[name].append("--mirror-depth")
    return own


def model_sizes(specs: list[str], names: list[str], default: int) -> dict[str, int]:
    """Each model's input width: ``default`` unless a ``NAME:SIZE`` spec names it.

    Raises ValueError for a spec that is malformed, names no model, or gives a width that is not a
    positive multiple of 14 (the patch size).
    """
    sizes = dict.fromkeys(names, default)
    for spec in specs:
        name, sep, value = spec.partition(":")
        if not sep or name not in sizes or not value.isdigit():
            raise ValueError(f"--model-size wants NAME:SIZE with a NAME of --model, got {spec!r}")
        sizes[name] = int(value)
    for name, size in sizes.items():
        if size <= 0 or size % 14:
            raise ValueError(f"input size of {name} must be a positive multiple of 14, got {size}")
    return sizes


def _plot(rows: dict[str, dict[str, dict]], names: list[str], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
    for ax, key in zip(axes, PATH_KEYS):
        ref = [rows[s][names[0]][key] for s in rows]
        top = 1.05 * max(max(ref), *(rows[s][n][key] for s in rows for n in names[1:]))
        ax.plot([0, top], [0, top], color="0.6", lw=1)
        for name in names[1:]:
            ax.scatter(ref, [rows[s][name][key] for s in rows], s=18, label=name)
        ax.set_xlabel(f"{names[0]}: {key} (% of length)")
        ax.set_ylabel("other model (below the line: better)")
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        ax.legend()
    fig.suptitle(f"{len(rows)} held-out sequences, paired")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument(
        "--model",
        action="append",
        type=_parse_model,
        required=True,
        metavar="NAME=CHECKPOINT",
        help="a model to replay (repeatable; CHECKPOINT 'embedded' for the shipped default); "
        "every other model is compared with the first",
    )
    ap.add_argument("--config", default="vggt-compact", help="config of the checkpoints given")
    ap.add_argument("--motions", default=",".join(LOOP_MOTIONS), help="comma-separated camera motions")
    ap.add_argument("--per-motion", type=int, default=10, help="sequences per motion")
    ap.add_argument("--seed", type=int, default=6000, help="first seed (every motion uses the same seeds)")
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument(
        "--size",
        type=int,
        default=DEFAULT_MODEL.image_size,
        help="model input width (default: the embedded model's); sequences rendered to match",
    )
    ap.add_argument(
        "--model-size",
        action="append",
        default=[],
        metavar="NAME:SIZE",
        help="input width of one model only (repeatable); its sequences are the same scenes rendered "
        "at that size, paired with the others by sequence",
    )
    ap.add_argument(
        "--param", action="append", default=[], metavar="KEY=VALUE", help="pipeline parameter of every model"
    )
    ap.add_argument(
        "--model-param",
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE",
        help="pipeline parameter of one model only (repeatable), e.g. v7_7px:keyframe.min_parallax_px=7 "
        "with --model v7_7px=embedded: the same weights with other settings",
    )
    ap.add_argument(
        "--model-mirror-depth",
        action="append",
        default=[],
        metavar="NAME",
        help="replay this model with `vggt-ros eval --mirror-depth` (repeatable; depth averaged with "
        "the mirror image's, twice the network's work), e.g. --model v10m=embedded --model-mirror-depth v10m",
    )
    args = ap.parse_args()
    names = [name for name, _ in args.model]
    if len(set(names)) != len(names):
        ap.error("model names must differ")
    if args.per_motion < 1:
        ap.error("--per-motion must be at least 1")
    try:
        sizes = model_sizes(args.model_size, names, args.size)
    except ValueError as error:
        ap.error(str(error))
    motions = [m for m in args.motions.split(",") if m]
    sequences = [(f"{m}_{args.seed + k}", m, args.seed + k) for m in motions for k in range(args.per_motion)]
    params = [arg for kv in args.param for arg in ("--param", kv)]
    try:
        own_params = model_eval_args(names, args.model_param, args.model_mirror_depth)
    except ValueError as error:
        ap.error(str(error))

    rows: dict[str, dict[str, dict]] = {}
    with tqdm(total=len(sequences) * len(args.model), desc="replays", unit="replay") as bar:
        for sequence, motion, seed in sequences:
            rows[sequence] = {}
            for name, model_args in args.model:
                height, width = render_size(sizes[name])
                bag = args.out / f"bags-{height}x{width}" / sequence
                if not bag.exists():
                    generate = ["generate", str(bag), "--scene", "procedural", "--held-out"]
                    generate += ["--motion", motion, "--frames", str(args.frames)]
                    generate += ["--height", str(height), "--width", str(width)]
                    if cli([*generate, "--seed", str(seed), "-q"]) != 0:
                        raise SystemExit(f"could not generate {bag}")
                out = args.out / name / sequence
                if not (out / "report.json").exists():
                    config = ["--config", args.config] if model_args else []
                    command = ["eval", str(bag), "--out", str(out), "--no-plots", "--device", "cpu"]
                    command += [*model_args, *config, "--size", str(sizes[name]), *params, *own_params[name]]
                    command.append("-q")
                    if cli(command) != 0:
                        raise SystemExit(f"vggt-ros eval failed on {bag} with {name}")
                rows[sequence][name] = _figures(json.loads((out / "report.json").read_text()))
                bar.update()

    # A sequence without a trajectory figure (too few windows for a Sim(3)) is left out of the pairs.
    complete = {
        s: r
        for s, r in rows.items()
        if all(r[n]["chained_ape_percent"] is not None and r[n]["ape_percent"] is not None for n in names)
    }
    if not complete:
        print("no sequence has a trajectory for every model (too few windows?): nothing to compare")
        return 1
    summary = summarize(complete, names)
    summary["sequences"] = len(rows)
    summary["input_sizes"] = sizes
    (args.out / "paths.json").write_text(json.dumps({"summary": summary, "sequences": rows}, indent=2) + "\n")

    shown_sizes = ", ".join(f"{name} {'x'.join(map(str, render_size(sizes[name])))}" for name in names)
    header = (
        f"{len(complete)} of {len(rows)} sequences with a trajectory for every model "
        f"({', '.join(motions)}; seeds from {args.seed}; {shown_sizes})"
    )
    text = markdown(summary, names, header)
    (args.out / "paths.md").write_text(text)
    print(text)
    if len(names) > 1 and complete:
        _plot(complete, names, args.out / "paths.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
