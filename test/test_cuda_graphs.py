"""CUDA-graph replay of the camera head and the tracker (GPU only; skipped on CPU-only CI).

Run on a GPU machine: ``python3 -m pytest -q test/test_cuda_graphs.py``.
"""

from __future__ import annotations

import pytest
import torch

from vggt_ros.engine.cuda_graphs import GraphedFunction
from vggt_ros.engine.runner import ModelRunner
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
