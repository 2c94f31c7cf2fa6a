"""Per-stage timing that measures GPU work, not kernel launches.

On CUDA each stage is bracketed by CUDA events (read once, after one synchronisation at the
end, so timing does not serialise the stream); on CPU by ``time.perf_counter``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import torch


class StageTimer:
    """Collects named stage durations in milliseconds for one run."""

    def __init__(self, device: torch.device, track_memory: bool = False) -> None:
        self.device = device
        self._cuda = device.type == "cuda"
        self._events: list[tuple[str, torch.cuda.Event, torch.cuda.Event]] = []
        self._cpu_ms: dict[str, float] = {}
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
            self._events.append((name, start, end))
        else:
            t0 = time.perf_counter()
            yield
            self._cpu_ms[name] = self._cpu_ms.get(name, 0.0) + 1000.0 * (time.perf_counter() - t0)

    def results(self) -> dict[str, float]:
        """Stage -> milliseconds (synchronises the device once)."""
        if not self._cuda:
            return dict(self._cpu_ms)
        torch.cuda.synchronize(self.device)
        out: dict[str, float] = {}
        for name, start, end in self._events:
            out[name] = out.get(name, 0.0) + start.elapsed_time(end)
        return out


class NullTimer:
    """A timer that records nothing (the default when nobody asks for timings)."""

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        yield

    def results(self) -> dict[str, float]:
        return {}
