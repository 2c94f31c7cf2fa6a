"""vggt_ros.mapping.heap: freed heap memory goes back to the operating system (glibc)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from vggt_ros.mapping.heap import _malloc_trim, release_free_heap


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return float(line.split()[1]) / 1024.0
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not sys.platform.startswith("linux") or _malloc_trim() is None, reason="needs glibc")
def test_freed_small_blocks_are_returned_to_the_system():
    """100 MB of small blocks of which every 64th stays alive (the heap a long run leaves
    behind): glibc keeps the freed ones resident until trimmed. The heap's free memory is
    returned first: in a long test session the blocks would otherwise reuse chunks that are
    resident already, and the figures would show nothing."""
    release_free_heap()
    before = _rss_mb()
    blocks = [bytearray(4000) for _ in range(25_000)]
    kept = blocks[::64]
    del blocks
    held = _rss_mb() - before
    assert held > 50, held  # freed, but still resident
    assert release_free_heap()
    assert _rss_mb() - before < 0.5 * held
    assert len(kept) == 391


def test_release_is_safe_to_call_repeatedly():
    assert release_free_heap() in (True, False)
    assert release_free_heap() in (True, False)
