"""Replay fixed-shape GPU work as CUDA graphs, where kernel-launch latency would dominate.

The camera head runs ~250 tiny kernels on a handful of tokens per frame: on a GPU it takes
milliseconds of launch time for microseconds of arithmetic. A CUDA graph launches them all at
once. One graph is captured per input shape (a robot's window size is fixed, so in practice one).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


class GraphedFunction:
    """Wraps ``fn(x: Tensor) -> list[Tensor]`` (pure, fixed kernels for a given shape).

    The first call for a shape warms ``fn`` up on a side stream and captures it; later calls
    copy the input into the captured buffer, replay, and return clones of the outputs (the
    captured buffers are overwritten by the next replay).
    """

    def __init__(self, fn: Callable[[Tensor], list[Tensor]], warmup: int = 2) -> None:
        self.fn = fn
        self.warmup = warmup
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, Tensor, list[Tensor]]] = {}

    def __call__(self, x: Tensor) -> list[Tensor]:
        if x.device.type != "cuda":
            return self.fn(x)
        key = (tuple(x.shape), x.dtype, x.device)
        entry = self._graphs.get(key)
        if entry is None:
            entry = self._capture(x)
            self._graphs[key] = entry
        graph, static_in, static_out = entry
        static_in.copy_(x)
        graph.replay()
        return [t.clone() for t in static_out]

    def _capture(self, x: Tensor) -> tuple[torch.cuda.CUDAGraph, Tensor, list[Tensor]]:
        static_in = x.clone()
        side = torch.cuda.Stream(device=x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):
            for _ in range(self.warmup):  # lazy inits (cuBLAS handles, workspaces) stay out of the graph
                self.fn(static_in)
        torch.cuda.current_stream(x.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self.fn(static_in)
        return graph, static_in, list(static_out)
