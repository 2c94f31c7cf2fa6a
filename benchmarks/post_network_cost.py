"""The CPU path from the network's end to a window's poses (refinement, chaining, scale, back end),
A/B between this working tree and earlier git revisions, on recorded windows of the trained
embedded model.

The embedded model runs once at 518 px over a 350x518 procedural forward drive (``--frames``,
default 44: six windows of 8 / stride 4) with the pipeline's defaults (loop closure on;
``--no-loops`` turns it off, e.g. where GTSAM is missing, as on the lent GPU machines); its
predictions are recorded. Then each package tree replays them in its own process with a
predictor double that reports the model inputs (so the refinement's prefetch runs as in the
node) and sleeps ``--network-ms`` (the GPU's time, the GIL released) before answering. Trees
alternate for ``--rounds`` rounds of ``--reps`` runs each; the first window of each run (nothing
to chain to) is left out.

    python benchmarks/post_network_cost.py 4edb86f          # the working tree against 4edb86f
    python benchmarks/post_network_cost.py --rounds 4 REV [REV ...]
    python benchmarks/post_network_cost.py gpujobs/old    # a folder holding vggt_ros/ (no git)

Prints per tree the time from the network's end to the poses (``poses_ms - predict_ms``, what
the node's TF waits for after the network) as p50 / p95 and each stage's median.
Figures: docs/benchmarks.md ("Latency in the node", run Q).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
STAGES = ("refine_ms", "chain_ms", "scale_ms", "back_end_ms")


def _sequence(frames: int):  # noqa: ANN202 - a SyntheticSequence
    from vggt_ros.eval.synthetic import render_sequence

    return render_sequence(frames, 350, 518, seed=11, path="forward")


def _config():  # noqa: ANN202 - a PipelineConfig: the defaults, loop closure off with VGGT_NO_LOOPS=1
    from vggt_ros.mapping import LoopConfig, PipelineConfig

    if os.environ.get("VGGT_NO_LOOPS") == "1":
        return PipelineConfig(loop=LoopConfig(enabled=False))
    return PipelineConfig()


def _windows(pipeline, seq) -> list:  # noqa: ANN001
    from vggt_ros.mapping import Frame

    results = []
    for i in range(seq.num_frames):
        job = pipeline.add_frame(Frame(seq.stamps[i], "cam", seq.images[i], intrinsics=seq.intrinsics))
        if job is not None:
            results.append(pipeline.process(job))
    return results


def _record(frames: int, path: Path) -> int:
    """Run the embedded model over the drive; pickle its predictions to ``path``."""
    import torch

    from vggt_ros.engine.predictor import Predictor
    from vggt_ros.mapping import PerceptionPipeline
    from vggt_ros.model.embedded import choose_model

    torch.set_num_threads(os.cpu_count() or 1)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    choice = choose_model(None, image_size=518)
    options = {"point_head": False}
    real = Predictor.from_checkpoint(
        choice.source, config=choice.config, device=device, target_size=518, runner_options=options
    )
    recorded = []

    class Recorder:
        def predict(self, images, query_points=None, **_):  # noqa: ANN001, ANN202
            prediction = real.predict(images, query_points)
            recorded.append(prediction)
            return prediction

    _windows(PerceptionPipeline(_config(), Recorder()), _sequence(frames))
    path.write_bytes(pickle.dumps(recorded))
    return len(recorded)


def _replay(frames: int, path: Path, network_ms: float, reps: int) -> list[dict[str, float]]:
    """(In a child process with one package tree on its path.) Every window's stages."""
    from vggt_ros.mapping import PerceptionPipeline

    recorded = pickle.loads(path.read_bytes())  # written by this script's own parent process
    seq = _sequence(frames)

    class Replayer:
        reports_model_inputs = True

        def __init__(self) -> None:
            self.calls = 0

        def predict(self, images, query_points=None, on_model_inputs=None, **_):  # noqa: ANN001, ANN202
            prediction = recorded[self.calls]
            self.calls += 1
            if on_model_inputs is not None:
                content = np.stack([t.content_mask() for t in prediction.transforms])
                on_model_inputs(prediction.colors, content)
            time.sleep(network_ms / 1e3)
            return copy.copy(prediction)

    rows = []
    for _ in range(reps):
        for result in _windows(PerceptionPipeline(_config(), Replayer()), seq)[1:]:
            t = result.timings
            stages = {k: t.get(k, 0.0) for k in STAGES}
            rows.append({"after_network_ms": t["poses_ms"] - t["predict_ms"], **stages})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "revisions", nargs="*", help="git revisions (or folders holding a vggt_ros/ tree) to compare with"
    )
    parser.add_argument("--frames", type=int, default=44)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    parser.add_argument("--reps", type=int, default=3, help="runs over the windows per tree and round")
    parser.add_argument("--network-ms", type=float, default=55.0, help="the stand-in network's time")
    parser.add_argument("--no-loops", action="store_true", help="loop closure off (no GTSAM needed)")
    parser.add_argument("--child", nargs=2, metavar=("RECORDED", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.no_loops:
        os.environ["VGGT_NO_LOOPS"] = "1"  # (the children inherit it)
    if args.child:
        rows = _replay(args.frames, Path(args.child[0]), args.network_ms, args.reps)
        Path(args.child[1]).write_text(json.dumps(rows))
        return 0
    work = Path(tempfile.mkdtemp(prefix="post_network_"))
    trees = {"working tree": REPO}
    for rev in args.revisions:
        if (Path(rev) / "vggt_ros").is_dir():  # a folder holding a package tree (no git there)
            trees[rev] = Path(rev)
            continue
        tree = work / rev
        tree.mkdir()
        archive = subprocess.run(
            ["git", "archive", rev, "vggt_ros"], cwd=REPO, check=True, capture_output=True
        )
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
        trees[rev] = tree
    recorded = work / "recorded.pkl"
    print(f"recorded {_record(args.frames, recorded)} windows", flush=True)
    rows: dict[str, list[dict[str, float]]] = {label: [] for label in trees}
    for _ in range(args.rounds):
        for label, tree in trees.items():
            out = work / "rows.json"
            command = [sys.executable, __file__, "--child", str(recorded), str(out)]
            command += ["--frames", str(args.frames), "--reps", str(args.reps)]
            command += ["--network-ms", str(args.network_ms)]
            subprocess.run(command, env={**os.environ, "PYTHONPATH": str(tree)}, check=True)
            rows[label] += json.loads(out.read_text())
    for label, found in rows.items():
        after = [r["after_network_ms"] for r in found]
        stages = " ".join(f"{k.removesuffix('_ms')} {np.median([r[k] for r in found]):.1f}" for k in STAGES)
        print(
            f"{label:>14s}: {len(found)} windows, network end -> poses p50 {np.median(after):.1f} "
            f"p95 {np.percentile(after, 95):.1f} ms | medians: {stages}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
