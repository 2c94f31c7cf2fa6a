"""The Python interpreter's own share of a window's latency: the GIL's switch interval and the
garbage collector's pauses.

**Switch interval.** The node runs Python on several threads at once (the inference worker, the
refinement's keypoint and pair threads, ROS callbacks, a replay's reader). A thread that gives
up the GIL (a CUDA synchronisation, an OpenCV call) and wants it back waits until the holder
lets go, at the latest after ``sys.getswitchinterval()`` (5 ms by default), and each such wait
lands on the window. How much depends on the interval in ways that are not monotonic: on the
2-core development CPU (2026-12-07, ``python benchmarks/gil_switch_interval.py --intervals 5 1
0.5 0.2``, medians of three runs that agreed within 3 %) 50 small numpy steps, each followed by
an OpenCV call, took 2.3 ms alone and, while one other thread ran Python, 11.4 ms at 5 ms, 72.9
at 1 ms, 40.1 at 0.5 ms and 21.8 at 0.2 ms. So the interpreter's default stays unless set:
:func:`set_switch_interval_ms` sets it for the process (the node's ``gil_switch_interval_ms``,
``vggt-ros eval --switch-interval-ms``), to be measured on the robot's own workload.

**Collector pauses.** A collection of the oldest generation walks every container object
alive and stops every Python thread meanwhile. A process that holds a loaded model,
torch.compile's graphs and guards and the ROS and mapping state holds hundreds of thousands
of them: a full collection of 212,000 objects (``gc.collect()`` after importing the
evaluation's modules alone, three times) took 94-101 ms on the 2-core development CPU
(2026-12-06), longer than a window's latency budget.

- :func:`pause_ms`: the collector's total pause time since the process started measuring
  (:func:`install`); the mapping pipeline reads it around a window and reports the difference
  as the window's ``gc_ms`` stage, so a collection that lands on the path to TF shows up as
  such on ``/diagnostics`` and in ``vggt-ros eval``'s report instead of inflating another stage.
- :func:`freeze_survivors`: after the start-up work (model loading, compilation, the warm-up
  windows) every object alive moves to the permanent generation (``gc.freeze``): those are
  never walked again, so later collections cost what the objects made since cost.
  :func:`thaw` undoes it where a long-lived owner (a node's model) is dropped, so that its
  reference cycles can be collected.
"""

from __future__ import annotations

import gc
import sys
import threading
import time
from typing import Any

_lock = threading.Lock()
_installed = False
_started: float | None = None  # perf_counter at the running collection's start
_total_ms = 0.0


def set_switch_interval_ms(milliseconds: float) -> float:
    """Set how long a thread may hold the GIL while another waits for it (process-wide);
    returns the previous value in milliseconds.

    Raises:
        ValueError: not a positive finite number.
    """
    value = float(milliseconds)
    if not 0.0 < value < float("inf"):
        raise ValueError(f"the GIL switch interval must be a positive number of ms, got {milliseconds}")
    previous = sys.getswitchinterval() * 1e3
    sys.setswitchinterval(value / 1e3)
    return previous


def _on_collection(phase: str, info: dict[str, Any]) -> None:
    # Called by the interpreter before and after each collection, in the thread that runs it.
    global _started, _total_ms
    if phase == "start":
        _started = time.perf_counter()
    elif _started is not None:
        _total_ms += (time.perf_counter() - _started) * 1e3
        _started = None


def install() -> None:
    """Start measuring the collector's pauses (idempotent)."""
    global _installed
    with _lock:
        if not _installed:
            gc.callbacks.append(_on_collection)
            _installed = True


def pause_ms() -> float:
    """Milliseconds the collector has run since :func:`install` (installs it on first use)."""
    install()
    return _total_ms


def freeze_survivors() -> int:
    """Collect once, then move every object still alive to the permanent generation, where
    collections no longer look (call after start-up work). Returns how many are frozen now."""
    install()
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def thaw() -> None:
    """Give the frozen objects back to the collector (before dropping a long-lived owner,
    e.g. a node's model on cleanup, so that its reference cycles can be collected)."""
    gc.unfreeze()
