"""Replay fixed-shape GPU work as CUDA graphs, where kernel-launch latency would dominate.

Two wrappers:

- :class:`GraphedFunction` replays one function. The camera head runs ~250 tiny kernels on a
  handful of tokens per frame, and the track stage about 3900 small kernels per window
  (8 frames, 256 points, profiled): on a GPU both take milliseconds of launch time for little
  arithmetic.
- :class:`WindowGraphs` replays a whole window, stage by stage (aggregator, heads), one graph
  per stage in one shared memory pool so per-stage timing survives. A 1-frame window of
  VGGT-1B launches about 1700 kernels from Python: eagerly it took 26 ms of host time for
  about 11 ms of GPU work on an H200.

One graph is captured per input shape (a robot's window size is fixed, so in practice one).
A node also runs other window sizes now and then (a window with extra anchor keyframes after a
rejection, a loop-verification window): :class:`ShapeUsage` keeps such an occasional shape
from evicting the steady one, which would cost two captures (on the H200 about 0.3 s for the
compact model, the tail of its latency; docs/benchmarks.md, run H).

Memory: a captured graph keeps its intermediates in a private pool between replays, so each
shape holds about the memory of one eager call (plus a copy of its inputs). Only the most
recently used shapes keep their graphs (``max_graphs``): a node's first windows grow frame by
frame before reaching their steady size, and every size would otherwise stay resident.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import torch
from torch import Tensor

logger = logging.getLogger(__name__)


# Captures run on the node's inference thread while its executor threads keep receiving
# messages: only this thread's own CUDA calls may break a capture, not theirs.
CAPTURE_ERROR_MODE = "thread_local"

_SIDE_STREAMS: dict[torch.device, torch.cuda.Stream] = {}


def _side_stream(device: torch.device) -> torch.cuda.Stream:
    """One warm-up stream per device for every capture: each new stream that runs a matrix
    product gets its own cuBLAS workspace, which is never freed."""
    stream = _SIDE_STREAMS.get(device)
    if stream is None:
        stream = _SIDE_STREAMS[device] = torch.cuda.Stream(device=device)
    return stream


def _autocast(dtype: torch.dtype | None) -> AbstractContextManager[None]:
    """CUDA autocast in ``dtype`` (None: autocast off) with the weight-cast cache disabled:
    cached casts made outside a capture would be freed when the caller's autocast region ends
    while the graph still reads them."""
    if dtype is None:
        return torch.autocast("cuda", enabled=False)
    return torch.autocast("cuda", dtype=dtype, cache_enabled=False)


def shape_key(tensors: Sequence[Tensor | None]) -> tuple:
    """What a captured graph is specialised on: each input's shape, dtype and device."""
    return tuple(None if x is None else (tuple(x.shape), x.dtype, x.device) for x in tensors)


Captured = TypeVar("Captured")


class _GraphCache(Generic[Captured]):
    """Captured graphs by input shape: least recently used first out, failed shapes remembered.

    Args:
        name: what the log line calls the work when a capture fails (it then runs eagerly).
        max_graphs: how many input shapes keep a captured graph; the least recently used
            one is dropped (and its memory pool freed) to make room.
    """

    def __init__(self, name: str, max_graphs: int) -> None:
        self.name = name
        self.max_graphs = max(1, max_graphs)
        self._graphs: OrderedDict[tuple, Captured] = OrderedDict()
        self._eager_keys: set[tuple] = set()  # shapes whose capture failed

    def clear(self) -> None:
        """Drop every captured graph and free its memory pool (failed shapes stay remembered)."""
        self._graphs.clear()

    def _get_or_capture(self, key: tuple, capture: Callable[[], Captured]) -> Captured | None:
        """The graph for ``key``, captured now if needed; None when this shape runs eagerly."""
        if key in self._eager_keys:
            return None
        entry = self._graphs.get(key)
        if entry is not None:
            self._graphs.move_to_end(key)
            return entry
        while len(self._graphs) >= self.max_graphs:
            self._graphs.popitem(last=False)  # frees that graph's pool for the new capture
        try:
            entry = capture()
        except RuntimeError as exc:  # e.g. an op that synchronises with the host
            logger.warning("CUDA graph capture failed for %s, running it eagerly: %s", self.name, exc)
            self._eager_keys.add(key)
            return None
        self._graphs[key] = entry
        return entry


class GraphedFunction(_GraphCache[tuple[torch.cuda.CUDAGraph, list[Tensor], list[Tensor]]]):
    """Wraps ``fn(*inputs: Tensor) -> Sequence[Tensor]`` (pure, fixed kernels for given shapes).

    The first call for a set of input shapes warms ``fn`` up on a side stream and captures it;
    later calls copy the inputs into the captured buffers, replay, and return clones of the
    outputs (the captured buffers are overwritten by the next replay). Inputs on the CPU run
    ``fn`` directly.

    Args:
        fn: the function; it must not synchronise with the host (no ``.item()``, no
            data-dependent shapes).
        warmup: eager calls before capture (lazy initialisation stays out of the graph).
        autocast_dtype: run ``fn`` under CUDA autocast in this dtype (see :func:`_autocast`).
        name: what the log line calls it when a capture fails (it then runs eagerly).
        max_graphs: how many input shapes keep a captured graph (least recently used out).
    """

    def __init__(
        self,
        fn: Callable[..., Sequence[Tensor]],
        warmup: int = 2,
        autocast_dtype: torch.dtype | None = None,
        name: str = "function",
        max_graphs: int = 2,
    ) -> None:
        super().__init__(name, max_graphs)
        self.fn = fn
        self.warmup = warmup
        self.autocast_dtype = autocast_dtype

    def _call(self, *inputs: Tensor) -> Sequence[Tensor]:
        with _autocast(self.autocast_dtype):
            return self.fn(*inputs)

    def __call__(self, *inputs: Tensor) -> list[Tensor]:
        if inputs[0].device.type != "cuda":
            return list(self.fn(*inputs))
        entry = self._get_or_capture(shape_key(inputs), lambda: self._capture(inputs))
        if entry is None:
            return list(self._call(*inputs))
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
        with torch.cuda.graph(graph, capture_error_mode=CAPTURE_ERROR_MODE):
            static_outputs = self._call(*static_inputs)
        return graph, static_inputs, list(static_outputs)


@dataclass(frozen=True)
class GraphStage:
    """One stage of a window: ``run(state)`` reads entries of the shared state dict and adds
    its results to it. It must not synchronise with the host (see :class:`GraphedFunction`)."""

    name: str
    run: Callable[[dict[str, Any]], None]
    autocast_dtype: torch.dtype | None = None


@dataclass
class _CapturedWindow:
    graphs: list[tuple[str, torch.cuda.CUDAGraph]]  # (stage name, its graph), in run order
    inputs: dict[str, Tensor]  # the buffers the graphs read their inputs from
    state: dict[str, Any]  # inputs plus every stage's results, overwritten by each replay


def _cloned(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.clone()
    if isinstance(value, (list, tuple)):
        return type(value)(_cloned(v) for v in value)
    return value


class ShapeUsage:
    """How often each window shape ran lately: an exponentially decaying count per shape
    (every call multiplies all counts by ``decay`` and adds 1 to its own shape).

    A full graph cache captures a new shape only when that shape is now used at least as much
    as the cached shape it would evict. A steady window size settles near ``1 / (1 - decay)``
    (5 at 0.8); a shape seen twice in a row now and then reaches 1.8 and never evicts it; a
    lasting change of window size takes over after about four windows.

    Args:
        decay: per-call factor in (0, 1).
        forget_below: counts under this are dropped (the table stays small).
    """

    def __init__(self, decay: float = 0.8, forget_below: float = 0.01) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.forget_below = forget_below
        self._counts: dict[tuple, float] = {}

    def record(self, key: tuple) -> None:
        """Count one call of shape ``key``."""
        counts = {k: v * self.decay for k, v in self._counts.items() if v * self.decay >= self.forget_below}
        counts[key] = counts.get(key, 0.0) + 1.0
        self._counts = counts

    def count(self, key: tuple) -> float:
        """The decayed count of ``key`` (0 when unseen or forgotten)."""
        return self._counts.get(key, 0.0)

    def may_evict(self, key: tuple, cached: Sequence[tuple]) -> bool:
        """Whether ``key`` may replace the least used of the ``cached`` shapes."""
        return not cached or self.count(key) >= min(self.count(k) for k in cached)


class WindowGraphs(_GraphCache[_CapturedWindow]):
    """Replays a window's stages as CUDA graphs, one graph per stage, once its shape repeats.

    A shape is captured on its second call in a row: the first call runs eagerly (for compiled
    sections it is also their compile), so the growing windows of a node's start-up, each seen
    once, never pay a capture. When the cache is full, a new shape is captured only once it is
    used at least as much as the shape it would evict (:class:`ShapeUsage`): an occasional
    other size runs eagerly instead of costing two captures. The stages' graphs share one
    memory pool and are replayed in capture order, so a stage reuses the memory its
    predecessors freed, as it does eagerly: the pool holds about one eager window's peak.

    Args:
        name: what the log line calls the work when a capture fails (that shape then runs
            eagerly from then on).
        max_graphs: window shapes that keep their graphs (least recently used out). One by
            default: a robot's window has one steady size, and each shape holds a window's
            peak memory.
        warmup: eager runs on a side stream before the capture.
    """

    def __init__(self, name: str = "the window", max_graphs: int = 1, warmup: int = 1) -> None:
        super().__init__(name, max_graphs)
        self.warmup = warmup
        self._last_key: tuple | None = None
        self.usage = ShapeUsage()

    def replay(
        self,
        inputs: dict[str, Tensor | None],
        stages: Sequence[GraphStage],
        stage_context: Callable[[str], AbstractContextManager[Any]],
        internal: Collection[str] = (),
    ) -> dict[str, Any] | None:
        """Run ``stages`` on ``inputs`` from graphs; None when this call must run eagerly.

        Args:
            inputs: the window's input tensors by state name (CUDA; None entries stay None).
            stages: the stages in run order (their functions are captured, not called, on a
                replay).
            stage_context: wraps each stage's replay, e.g. a timer's ``stage``.
            internal: stage results passed between stages only, not returned.

        Returns:
            The stages' results by name, cloned (the next replay overwrites the graphs'
            buffers); or None: the caller runs the stages itself (first call of a shape, CPU
            inputs, or a shape whose capture failed).
        """
        present = {name: x for name, x in inputs.items() if x is not None}
        if not present or any(x.device.type != "cuda" for x in present.values()):
            return None
        key = (
            tuple(stage.name for stage in stages),
            tuple(sorted((name, shape_key([x])) for name, x in inputs.items())),
        )
        self.usage.record(key)
        cached = key in self._graphs
        first_sighting = not cached and key != self._last_key
        self._last_key = key
        if first_sighting:
            return None
        full = len(self._graphs) >= self.max_graphs
        if not cached and full and not self.usage.may_evict(key, list(self._graphs)):
            return None  # an occasional shape: eager, and the steady shape keeps its graph
        entry = self._get_or_capture(key, lambda: self._capture(inputs, stages))
        if entry is None:
            return None
        for name, static in entry.inputs.items():
            static.copy_(present[name])
        for name, graph in entry.graphs:
            with stage_context(name):
                graph.replay()
        return {
            name: _cloned(value)
            for name, value in entry.state.items()
            if name not in inputs and name not in internal
        }

    def _capture(self, inputs: dict[str, Tensor | None], stages: Sequence[GraphStage]) -> _CapturedWindow:
        static_inputs = {name: x.clone() for name, x in inputs.items() if x is not None}
        device = next(iter(static_inputs.values())).device

        def run_stage(stage: GraphStage, state: dict[str, Any]) -> None:
            with _autocast(stage.autocast_dtype):
                stage.run(state)

        side = _side_stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(self.warmup):  # lazy inits (cuBLAS handles, workspaces) stay out of the graphs
                warm_state: dict[str, Any] = {**inputs, **static_inputs}
                for stage in stages:
                    run_stage(stage, warm_state)
                del warm_state
        torch.cuda.current_stream(device).wait_stream(side)
        state: dict[str, Any] = {**inputs, **static_inputs}
        pool = torch.cuda.graph_pool_handle()
        graphs: list[tuple[str, torch.cuda.CUDAGraph]] = []
        for stage in stages:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool, capture_error_mode=CAPTURE_ERROR_MODE):
                run_stage(stage, state)
            graphs.append((stage.name, graph))
        # The warm-up's blocks sit cached in the ordinary pool while the graphs hold their own:
        # hand them back (on a Jetson, GPU memory is the robot's RAM).
        torch.cuda.empty_cache()
        return _CapturedWindow(graphs, static_inputs, state)
