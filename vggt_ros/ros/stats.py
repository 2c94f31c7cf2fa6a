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


# Stages of one window's way from image to TF, in order (see :meth:`Stats.stage`):
#   callback     image callback of the window's newest frame: decode, checks, keyframe choice
#   queue_wait   window queued -> the inference thread takes it
#   preprocess   resize / pad / upload of the window's images
#   network      the VGGT forward pass (on the GPU: until its outputs are ready)
#   postprocess  download, camera decoding, the Prediction
#   chaining     window pose refinement, Sim(3) chaining, scale, pose-graph bookkeeping
#   loops        loop verification and pose-graph optimisation (when a loop query ran)
#   publish      TF, odometry, path (the rest of the outputs come after TF)
#   image_to_tf  newest frame received -> its window's TF sent: what a planner waits for
LATENCY_STAGES = (
    "callback",
    "queue_wait",
    "preprocess",
    "network",
    "postprocess",
    "chaining",
    "gc",
    "map",
    "loops",
    "publish",
    "image_to_tf",
)


def percentiles(values: list[float]) -> dict[str, float]:
    """``{"p50", "p95", "max", "count"}`` of ``values`` (NaN when empty)."""
    if not values:
        return {"p50": float("nan"), "p95": float("nan"), "max": float("nan"), "count": 0}
    ordered = sorted(values)

    def at(q: float) -> float:
        # Linear interpolation between closest ranks (numpy's default percentile).
        pos = q * (len(ordered) - 1)
        lo = int(pos)
        hi = min(lo + 1, len(ordered) - 1)
        return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)

    return {"p50": at(0.5), "p95": at(0.95), "max": ordered[-1], "count": len(ordered)}


class Stats:
    """Counters (``count``), rates (``tick``), latest values (``set``) and recent stage
    latencies (``stage``), safe across threads.

    Counter names are free-form keys such as ``"drop.queue_full"`` or
    ``"input.front.decode_error"``; :meth:`snapshot` returns copies for the diagnostics timer.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._rates: dict[str, RateMeter] = {}
        self._values: dict[str, float | str] = {}
        self._stages: dict[str, deque[float]] = {}

    def count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] += n

    def tick(self, key: str) -> None:
        with self._lock:
            self._rates.setdefault(key, RateMeter()).tick()

    def set(self, key: str, value: float | str) -> None:
        with self._lock:
            self._values[key] = value

    def stage(self, name: str, ms: float, keep: int = 200) -> None:
        """Record one duration (milliseconds) of a latency stage (``LATENCY_STAGES``); the
        newest ``keep`` of each stage are kept."""
        with self._lock:
            self._stages.setdefault(name, deque(maxlen=keep)).append(float(ms))

    def clear_stages(self) -> None:
        """Forget the recorded stage latencies (e.g. after a warm-up)."""
        with self._lock:
            self._stages.clear()

    def stage_summary(self) -> dict[str, dict[str, float]]:
        """Per recorded stage: p50 / p95 / max milliseconds and the sample count."""
        with self._lock:
            copies = {k: list(v) for k, v in self._stages.items()}
        ordered = [k for k in LATENCY_STAGES if k in copies] + sorted(set(copies) - set(LATENCY_STAGES))
        return {k: percentiles(copies[k]) for k in ordered}

    def get(self, key: str) -> int:
        with self._lock:
            return self._counts[key]

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()
            self._rates.clear()
            self._values.clear()
            self._stages.clear()

    def snapshot(self) -> tuple[dict[str, int], dict[str, float], dict[str, float | str], list[float]]:
        """(counts, rates in Hz, values, the newest 50 image-to-TF latencies in milliseconds)."""
        with self._lock:
            now = time.monotonic()
            return (
                dict(self._counts),
                {k: m.rate(now) for k, m in self._rates.items()},
                dict(self._values),
                list(self._stages.get("image_to_tf", ()))[-50:],
            )
