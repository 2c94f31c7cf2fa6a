"""Replay fixed-shape GPU work as CUDA graphs, where kernel-launch latency would dominate.

The camera head runs ~250 tiny kernels on a handful of tokens per frame, and the track stage
about 3900 small kernels per window (8 frames, 256 points, profiled): on a GPU both take
milliseconds of launch time for little arithmetic. A CUDA graph launches them all at once.
One graph is captured per input shape (a robot's window size is fixed, so in practice one).

Memory: a captured graph keeps its intermediates in a private pool between replays, so each
shape holds about the memory of one eager call (plus a copy of its inputs). Only the most
recently used shapes keep their graphs (``max_graphs``): a node's first windows grow frame by
frame before reaching their steady size, and every size would otherwise stay resident.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

logger = logging.getLogger(__name__)


_SIDE_STREAMS: dict[torch.device, torch.cuda.Stream] = {}


def _side_stream(device: torch.device) -> torch.cuda.Stream:
    """One warm-up stream per device for every capture: each new stream that runs a matrix
    product gets its own cuBLAS workspace, which is never freed."""
    stream = _SIDE_STREAMS.get(device)
    if stream is None:
        stream = _SIDE_STREAMS[device] = torch.cuda.Stream(device=device)
    return stream


class GraphedFunction:
    """Wraps ``fn(*inputs: Tensor) -> Sequence[Tensor]`` (pure, fixed kernels for given shapes).

    The first call for a set of input shapes warms ``fn`` up on a side stream and captures it;
    later calls copy the inputs into the captured buffers, replay, and return clones of the
    outputs (the captured buffers are overwritten by the next replay). Inputs on the CPU run
    ``fn`` directly.

    Args:
        fn: the function; it must not synchronise with the host (no ``.item()``, no
            data-dependent shapes).
        warmup: eager calls before capture (lazy initialisation stays out of the graph).
        autocast_dtype: run ``fn`` under CUDA autocast in this dtype. Autocast's weight-cast
            cache is disabled inside: cached casts made outside the capture would be freed
            when the caller's autocast region ends while the graph still reads them.
        name: what the log line calls it when a capture fails (it then runs eagerly).
        max_graphs: how many input shapes keep a captured graph; the least recently used
            one is dropped (and its memory pool freed) to make room.
    """

    def __init__(
        self,
        fn: Callable[..., Sequence[Tensor]],
        warmup: int = 2,
        autocast_dtype: torch.dtype | None = None,
        name: str = "function",
        max_graphs: int = 2,
    ) -> None:
        self.fn = fn
        self.warmup = warmup
        self.autocast_dtype = autocast_dtype
        self.name = name
        self.max_graphs = max(1, max_graphs)
        self._graphs: OrderedDict[tuple, tuple[torch.cuda.CUDAGraph, list[Tensor], list[Tensor]]] = (
            OrderedDict()
        )
        self._eager_keys: set[tuple] = set()  # shapes whose capture failed

    def _call(self, *inputs: Tensor) -> Sequence[Tensor]:
        if self.autocast_dtype is None:
            with torch.autocast("cuda", enabled=False):
                return self.fn(*inputs)
        with torch.autocast("cuda", dtype=self.autocast_dtype, cache_enabled=False):
            return self.fn(*inputs)

    def __call__(self, *inputs: Tensor) -> list[Tensor]:
        if inputs[0].device.type != "cuda":
            return list(self.fn(*inputs))
        key = tuple((tuple(x.shape), x.dtype, x.device) for x in inputs)
        if key in self._eager_keys:
            return list(self._call(*inputs))
        entry = self._graphs.get(key)
        if entry is not None:
            self._graphs.move_to_end(key)
        else:
            while len(self._graphs) >= self.max_graphs:
                self._graphs.popitem(last=False)  # frees that graph's pool for the new capture
            try:
                entry = self._capture(inputs)
            except RuntimeError as exc:  # e.g. an op that synchronises with the host
                logger.warning("CUDA graph capture failed for %s, running it eagerly: %s", self.name, exc)
                self._eager_keys.add(key)
                return list(self._call(*inputs))
            self._graphs[key] = entry
        graph, static_inputs, static_outputs = entry
        for static, x in zip(static_inputs, inputs, strict=True):
            static.copy_(x)
        graph.replay()
        return [t.clone() for t in static_outputs]

    def _capture(self, inputs: Sequence[Tensor]) -> tuple[torch.cuda.CUDAGraph, list[Tensor], list[Tensor]]:
        static_inputs = [x.clone() for x in inputs]
        device = static_inputs[0].device
        side = _side_stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(self.warmup):  # lazy inits (cuBLAS handles, workspaces) stay out of the graph
                self._call(*static_inputs)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_outputs = self._call(*static_inputs)
        return graph, static_inputs, list(static_outputs)
