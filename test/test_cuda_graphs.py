"""CUDA-graph replay of the camera head, the tracker and whole windows (GPU only; skipped on
CPU-only CI).

Run on a GPU machine: ``python3 -m pytest -q test/test_cuda_graphs.py``.
"""

from __future__ import annotations

import pytest
import torch

from vggt_ros.engine.cuda_graphs import GraphedFunction, GraphStage, WindowGraphs
from vggt_ros.engine.runner import ModelRunner
from vggt_ros.engine.timing import NullTimer, StageTimer
from vggt_ros.eval.bench import BenchCase, query_grid, synthetic_frames
from vggt_ros.model import VGGT, VGGT_TINY
from vggt_ros.model.seeded import seeded_weights_for

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _runner(mode: str, **options) -> ModelRunner:
    model = VGGT(VGGT_TINY)
    model.load_state_dict(seeded_weights_for(model, seed=0))
    return ModelRunner(model, "cuda", mode, options=options)


@pytest.mark.parametrize("mode", ["fp32", "bf16"])
def test_graphed_sections_equal_eager_across_window_sizes(mode):
    """Replays match eager runs, also after the least recently used shape was evicted and
    captured again (window sizes 2, 3, 4, then 2 with at most 2 graphs kept)."""
    graphed = _runner(mode)
    eager = _runner(mode, graph_camera=False, graph_tracks=False)
    for frames in (2, 3, 4, 2):
        images = synthetic_frames(BenchCase(frames, 140, 182))
        queries = query_grid(6, 140, 182)
        a, b = graphed.run(images, queries), eager.run(images, queries)
        for key in ("pose_enc", "track", "vis", "conf"):
            torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-5, msg=f"{mode} {frames} {key}")


def test_graph_keeps_only_the_most_recent_shapes():
    calls = []

    def double(x: torch.Tensor) -> list[torch.Tensor]:
        calls.append(x.shape[0])
        return [x * 2]

    graphed = GraphedFunction(double, warmup=1, max_graphs=2)
    for n in (1, 2, 3, 1):
        x = torch.arange(n, device="cuda", dtype=torch.float32)
        torch.testing.assert_close(graphed(x)[0], x * 2)
    assert [key[0][0] for key in graphed._graphs] == [(3,), (1,)]
    # Replays do not call the Python function: 1 warm-up + 1 capture per new shape (1 twice).
    assert calls == [1, 1, 2, 2, 3, 3, 1, 1]


def test_capture_failure_falls_back_to_eager(caplog):
    def synchronising(x: torch.Tensor) -> list[torch.Tensor]:
        return [x * float(x.sum().item())]  # a host sync: not capturable

    graphed = GraphedFunction(synchronising, warmup=1, name="the test function")
    x = torch.ones(3, device="cuda")
    torch.testing.assert_close(graphed(x)[0], x * 3)
    torch.testing.assert_close(graphed(x)[0], x * 3)
    assert "CUDA graph capture failed for the test function" in caplog.text


WINDOW_OUTPUTS = ("pose_enc", "depth", "depth_conf", "world_points", "world_points_conf")
WINDOW_OUTPUTS += ("track", "vis", "conf")


@pytest.mark.parametrize("mode", ["fp32", "bf16"])
def test_window_graphs_equal_eager_runs(mode):
    """Whole-window replays match plain eager runs for every output, across window sizes that
    repeat (captured), change (evicted, eager on first sight) and come back."""
    graphed = _runner(mode, graph_window_frames=16)
    eager = _runner(mode, graph_window=False, graph_camera=False, graph_tracks=False)
    frames_sequence = (2, 2, 2, 3, 3, 2, 2)
    for step, frames in enumerate(frames_sequence):
        images = synthetic_frames(BenchCase(frames, 140, 182), seed=step)  # new pixels each window
        queries = query_grid(6, 140, 182) + step
        a, b = graphed.run(images, queries), eager.run(images, queries)
        for key in WINDOW_OUTPUTS:
            torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-5, msg=f"{mode} step {step} {key}")
    # One graph kept (the default), for the last shape: 2 frames, 6 query points.
    (key,) = graphed._window_graphs._graphs
    ((images_shape, _, _),) = dict(key[1])["images"]
    assert images_shape[:2] == (1, 2)


def test_window_replays_return_fresh_tensors_and_time_each_stage():
    runner = _runner("bf16")
    first_images = synthetic_frames(BenchCase(2, 140, 182), seed=0)
    runner.run(first_images)  # first sight: eager
    first = runner.run(first_images)  # captured and replayed
    kept = first["depth"].clone()
    timer = StageTimer(torch.device("cuda"))
    runner.run(synthetic_frames(BenchCase(2, 140, 182), seed=1), timer=timer)  # replayed
    assert runner._window_graphs._graphs, "the repeated window shape was not captured"
    torch.testing.assert_close(first["depth"], kept, rtol=0, atol=0)  # not overwritten by the replay
    assert set(timer.results()) == {"aggregator", "camera", "depth", "points"}


def test_long_windows_release_the_short_window_graph():
    runner = _runner("bf16", graph_window_frames=3)
    short = synthetic_frames(BenchCase(2, 140, 182))
    runner.run(short)
    runner.run(short)
    assert runner._window_graphs._graphs
    runner.run(synthetic_frames(BenchCase(4, 140, 182)))  # above the limit: eager, graph dropped
    assert not runner._window_graphs._graphs  # (its memory pool goes with the last reference)


def _doubling_windows(graphs: WindowGraphs, sizes: tuple[int, ...]) -> list[int]:
    """Run a one-stage "window" (y = 2 x) of each size through ``graphs`` as the runner does
    (eagerly when ``replay`` returns None); the sizes the stage function was called with
    (eager runs, warm-ups and captures; replays call nothing)."""
    calls = []

    def double(state):
        calls.append(state["x"].shape[0])
        state["y"] = state["x"] * 2

    stages = [GraphStage("double", double)]
    for n in sizes:
        x = torch.arange(n, device="cuda", dtype=torch.float32)
        out = graphs.replay({"x": x}, stages, NullTimer().stage)
        if out is None:  # the caller runs the stages eagerly
            state = {"x": x}
            double(state)
            out = state
        torch.testing.assert_close(out["y"], x * 2)
    return calls


def test_window_capture_waits_for_a_repeated_shape():
    graphs = WindowGraphs(max_graphs=1)
    calls = _doubling_windows(graphs, (1, 2, 2, 2, 3, 2))
    # 1: eager (first sight). 2: eager; again: 1 warm-up + 1 capture, then replays (no call).
    # 3: eager (first sight, not captured), so the graph of 2 is still kept and replayed.
    assert calls == [1, 2, 2, 2, 3]
    assert len(graphs._graphs) == 1


def test_window_capture_failure_runs_eagerly(caplog):
    def synchronising(state):
        state["y"] = state["x"] * float(state["x"].sum().item())  # a host sync: not capturable

    graphs = WindowGraphs(name="the test window")
    stages = [GraphStage("sync", synchronising)]
    x = torch.ones(3, device="cuda")
    assert graphs.replay({"x": x}, stages, NullTimer().stage) is None  # first sight
    assert graphs.replay({"x": x}, stages, NullTimer().stage) is None  # capture fails
    assert graphs.replay({"x": x}, stages, NullTimer().stage) is None  # remembered
    assert "CUDA graph capture failed for the test window" in caplog.text
    assert caplog.text.count("capture failed") == 1


def test_an_occasional_window_size_does_not_evict_the_steady_graph():
    """A node's steady window of 2 with two windows of 3 in a row (say, extra anchors after a
    rejection): the 3s run eagerly and the graph of 2 is replayed again afterwards, without a
    second capture (each capture costs the warm-up and capture calls counted here)."""
    calls = _doubling_windows(WindowGraphs(max_graphs=1), (2, 2, 2, 2, 2, 2, 3, 3, 2, 2, 2))
    # 2: eager, then warm-up + capture; replays. 3, 3: eager both times. 2: replays again.
    assert calls == [2, 2, 2, 3, 3]


@pytest.mark.parametrize("mode", ["fp32", "bf16"])
def test_frame_cache_with_a_graphed_encoder_equals_uncached_windows(mode):
    """With the frame cache on a GPU the new frames' encoder replays as a CUDA graph; sliding
    windows (stride 2) give what the cache gives with every section eager. (Against a runner
    without the cache, float32 on a GPU differs in the last bits: the encoder's matrix products
    run on 2 frames instead of 4, another reduction order; test_frame_cache.py checks that
    equality bit for bit on the CPU.)"""
    cached = _runner(mode, frame_cache=16, graph_window_frames=16)
    plain = _runner(mode, frame_cache=16, graph_window=False, graph_camera=False, graph_tracks=False)
    frames = synthetic_frames(BenchCase(10, 140, 182), seed=5)  # [10, 3, H, W]
    for start in (0, 2, 4, 6):
        window = frames[start : start + 4]
        keys = list(range(start, start + 4))
        a, b = cached.run(window, frame_keys=keys), plain.run(window, frame_keys=keys)
        for key in ("pose_enc", "depth", "world_points"):
            torch.testing.assert_close(
                a[key], b[key], rtol=1e-4, atol=1e-4, msg=f"{mode} start {start} {key}"
            )
    assert cached.frame_cache.stats.hits == plain.frame_cache.stats.hits == 6  # 2 per later window
    assert plain._encoder_graphs is None
    assert cached._encoder_graphs is not None and len(cached._encoder_graphs._graphs) >= 1  # captured
