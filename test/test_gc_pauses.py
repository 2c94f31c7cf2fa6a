"""The garbage collector's pauses as a latency stage, and start-up's objects frozen out of its
reach (vggt_ros.mapping.gc_pauses)."""

from __future__ import annotations

import gc
import weakref

from vggt_ros.mapping import gc_pauses


class Cycle:
    def __init__(self) -> None:
        self.me = self


def test_pause_ms_counts_every_collection_and_only_them() -> None:
    before = gc_pauses.pause_ms()
    assert gc_pauses.pause_ms() == before  # nothing collected in between
    garbage = [Cycle() for _ in range(20000)]
    del garbage
    gc.collect()
    after = gc_pauses.pause_ms()
    assert after > before  # 20,000 cycles take well over a microsecond to find
    gc_pauses.install()  # idempotent: one callback, not two
    assert gc.callbacks.count(gc_pauses._on_collection) == 1


def test_frozen_objects_are_not_walked_again_and_thaw_gives_them_back() -> None:
    keep = [Cycle() for _ in range(50000)]  # alive at start-up: frozen
    frozen = gc_pauses.freeze_survivors()
    assert frozen >= len(keep) == len([o for o in keep if o.me is o])
    assert gc.get_freeze_count() == frozen
    start = gc_pauses.pause_ms()
    gc.collect()
    walk_frozen = gc_pauses.pause_ms() - start
    gc_pauses.thaw()
    assert gc.get_freeze_count() == 0
    start = gc_pauses.pause_ms()
    gc.collect()
    walk_all = gc_pauses.pause_ms() - start
    assert walk_frozen < walk_all  # the frozen objects cost a full collection nothing
    # A frozen cycle that becomes garbage waits for thaw; then it is collected.
    dropped = Cycle()
    alive = weakref.ref(dropped)
    gc_pauses.freeze_survivors()
    del dropped
    gc.collect()
    assert alive() is not None
    gc_pauses.thaw()
    gc.collect()
    assert alive() is None
