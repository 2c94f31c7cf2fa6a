"""The garbage collector's pauses as a latency stage, and start-up's objects frozen out of its
reach (vggt_ros.mapping.interpreter)."""

from __future__ import annotations

import gc
import sys
import weakref

import pytest

from vggt_ros.mapping import interpreter


class Cycle:
    def __init__(self) -> None:
        self.me = self


def test_pause_ms_counts_every_collection_and_only_them() -> None:
    before = interpreter.pause_ms()
    assert interpreter.pause_ms() == before  # nothing collected in between
    garbage = [Cycle() for _ in range(20000)]
    del garbage
    gc.collect()
    after = interpreter.pause_ms()
    assert after > before  # 20,000 cycles take well over a microsecond to find
    interpreter.install()  # idempotent: one callback, not two
    assert gc.callbacks.count(interpreter._on_collection) == 1


def test_frozen_objects_are_not_walked_again_and_thaw_gives_them_back() -> None:
    keep = [Cycle() for _ in range(50000)]  # alive at start-up: frozen
    frozen = interpreter.freeze_survivors()
    assert frozen >= len(keep) == len([o for o in keep if o.me is o])
    assert gc.get_freeze_count() == frozen
    start = interpreter.pause_ms()
    gc.collect()
    walk_frozen = interpreter.pause_ms() - start
    interpreter.thaw()
    assert gc.get_freeze_count() == 0
    start = interpreter.pause_ms()
    gc.collect()
    walk_all = interpreter.pause_ms() - start
    assert walk_frozen < walk_all  # the frozen objects cost a full collection nothing
    # A frozen cycle that becomes garbage waits for thaw; then it is collected.
    dropped = Cycle()
    alive = weakref.ref(dropped)
    interpreter.freeze_survivors()
    del dropped
    gc.collect()
    assert alive() is not None
    interpreter.thaw()
    gc.collect()
    assert alive() is None


def test_the_switch_interval_is_set_for_the_process_and_checked() -> None:
    original = sys.getswitchinterval()
    try:
        previous = interpreter.set_switch_interval_ms(0.5)
        assert previous == pytest.approx(original * 1e3)
        assert sys.getswitchinterval() == pytest.approx(0.0005)
        for bad in (0.0, -1.0, float("nan"), float("inf")):
            with pytest.raises(ValueError, match="switch interval"):
                interpreter.set_switch_interval_ms(bad)
        assert sys.getswitchinterval() == pytest.approx(0.0005)  # a refused value changes nothing
    finally:
        sys.setswitchinterval(original)
