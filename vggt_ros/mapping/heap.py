"""Hand freed heap memory back to the operating system (glibc's ``malloc_trim``).

A long run frees far more than it keeps: every map rebuild drops a voxel map and millions of
temporary points, every re-seed half the pose graph and its stored keyframe points. glibc keeps
such freed blocks in its arenas (one per thread that allocated) instead of returning them, so
the process's resident memory climbs although the live data is bounded: in the 30-minute soak
of 2026-12-04 it rose 620 -> 1,060 MB, and ``malloc_trim(0)`` took 110-270 MB back each time it
was called (docs/soak.md). The pipeline calls :func:`release_free_heap` after each map rebuild
and each re-seed of the pose graph. Elsewhere (macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.lru_cache(maxsize=1)
def _malloc_trim() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    """glibc's ``int malloc_trim(size_t pad)``, or None where the C library has none."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_free_heap() -> bool:
    """Return the C heap's free memory to the operating system where the C library can
    (glibc); True when it released some."""
    trim = _malloc_trim()
    if trim is None:
        return False
    return bool(trim(0))
