"""Per-stage timing that measures GPU work, not kernel launches.

Two kinds of stage:

- :meth:`StageTimer.stage`, for GPU work: on CUDA bracketed by CUDA events (read once, after
  one synchronisation at the end, so timing does not serialise the stream); on CPU by
  ``time.perf_counter``.
- :meth:`StageTimer.host_stage`, for host work (decoding, resizing, numpy post-processing):
  wall-clock time between two device synchronisations, so queued GPU work is neither charged
  to it nor hidden from the stage before it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

import torch


class StageTimer:
    """Collects named stage durations in milliseconds for one run, in the order they ran."""

    def __init__(self, device: torch.device, track_memory: bool = False) -> None:
        self.device = device
        self._cuda = device.type == "cuda"
        # (stage, milliseconds when read): events are read only in results().
        self._records: list[tuple[str, Callable[[], float]]] = []
        # Per-stage peak memory costs a synchronisation per stage: only for memory passes.
        self.track_memory = track_memory and self._cuda
        self.peak_gb: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self.track_memory:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            yield
            torch.cuda.synchronize(self.device)
            self.peak_gb[name] = torch.cuda.max_memory_allocated(self.device) / 1e9
        elif self._cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
            self._records.append((name, lambda: start.elapsed_time(end)))
        else:
            with self._wall_clock(name):
                yield

    @contextlib.contextmanager
    def host_stage(self, name: str) -> Iterator[None]:
        if self.track_memory:
            with self.stage(name):
                yield
            return
        self._synchronize()
        with self._wall_clock(name):
            yield
            self._synchronize()

    @contextlib.contextmanager
    def _wall_clock(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        ms = 1000.0 * (time.perf_counter() - t0)
        self._records.append((name, lambda: ms))

    def _synchronize(self) -> None:
        if self._cuda:
            torch.cuda.synchronize(self.device)

    def results(self) -> dict[str, float]:
        """Stage -> milliseconds, summed over repeats of a name (synchronises the device once)."""
        self._synchronize()
        out: dict[str, float] = {}
        for name, read in self._records:
            out[name] = out.get(name, 0.0) + read()
        return out


class NullTimer:
    """A timer that records nothing (the default when nobody asks for timings)."""

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        yield

    @contextlib.contextmanager
    def host_stage(self, name: str) -> Iterator[None]:
        yield

    def results(self) -> dict[str, float]:
        return {}
