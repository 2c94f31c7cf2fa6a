"""The CUDA-graph cache's shape policy (vggt_ros.engine.cuda_graphs.ShapeUsage): pure Python,
runs on the CPU. The graphs themselves are tested on a GPU (test_cuda_graphs.py)."""

import pytest

from vggt_ros.engine.cuda_graphs import ShapeUsage

STEADY, OTHER = ("window", 8), ("window", 12)


def _after(sequence, usage=None):
    usage = usage or ShapeUsage()
    for key in sequence:
        usage.record(key)
    return usage


def test_a_steady_shape_settles_near_one_over_one_minus_decay():
    usage = _after([STEADY] * 50)
    assert usage.count(STEADY) == pytest.approx(5.0, rel=1e-3)


def test_an_occasional_shape_may_not_evict_the_steady_one():
    usage = _after([STEADY] * 20 + [OTHER, OTHER])
    assert usage.count(OTHER) == pytest.approx(1.8)
    assert not usage.may_evict(OTHER, [STEADY])
    # ...nor when it comes back a few windows later.
    usage = _after([STEADY] * 3 + [OTHER, OTHER], usage)
    assert not usage.may_evict(OTHER, [STEADY])


def test_a_lasting_change_of_shape_takes_over_after_a_few_windows():
    usage = _after([STEADY] * 50)
    allowed = []
    for _ in range(8):
        usage.record(OTHER)
        allowed.append(usage.may_evict(OTHER, [STEADY]))
    assert allowed.index(True) == 3  # the fourth window of the new size is captured
    assert all(allowed[3:])


def test_an_empty_cache_takes_any_shape_and_unused_shapes_are_forgotten():
    usage = ShapeUsage()
    assert usage.may_evict(OTHER, [])
    usage = _after([OTHER] + [STEADY] * 40)
    assert usage.count(OTHER) == 0.0  # decayed below forget_below and dropped
    with pytest.raises(ValueError):
        ShapeUsage(decay=1.0)
