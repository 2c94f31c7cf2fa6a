"""Thread-safe counters and rate meters behind /diagnostics (no ROS imports)."""

from __future__ import annotations

import threading
import time
from collections import Counter, deque


class RateMeter:
    """Events per second over a sliding time span (monotonic clock)."""

    def __init__(self, span_s: float = 5.0) -> None:
        self.span_s = span_s
        self._times: deque[float] = deque()

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._times.append(now)
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._times and now - self._times[0] > self.span_s:
            self._times.popleft()

    def rate(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        self._trim(now)
        if len(self._times) < 2:
            return 0.0
        return (len(self._times) - 1) / max(self._times[-1] - self._times[0], 1e-9)


class Stats:
    """Counters (``count``), rates (``tick``) and latest values (``set``), safe across threads.

    Counter names are free-form keys such as ``"drop.queue_full"`` or
    ``"input.front.decode_error"``; :meth:`snapshot` returns copies for the diagnostics timer.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._rates: dict[str, RateMeter] = {}
        self._values: dict[str, float | str] = {}
        self._latency: deque[float] = deque(maxlen=50)

    def count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] += n

    def tick(self, key: str) -> None:
        with self._lock:
            self._rates.setdefault(key, RateMeter()).tick()

    def set(self, key: str, value: float | str) -> None:
        with self._lock:
            self._values[key] = value

    def latency(self, seconds: float) -> None:
        with self._lock:
            self._latency.append(seconds)

    def get(self, key: str) -> int:
        with self._lock:
            return self._counts[key]

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()
            self._rates.clear()
            self._values.clear()
            self._latency.clear()

    def snapshot(self) -> tuple[dict[str, int], dict[str, float], dict[str, float | str], list[float]]:
        """(counts, rates in Hz, values, recent latencies in seconds)."""
        with self._lock:
            now = time.monotonic()
            return (
                dict(self._counts),
                {k: m.rate(now) for k, m in self._rates.items()},
                dict(self._values),
                list(self._latency),
            )
