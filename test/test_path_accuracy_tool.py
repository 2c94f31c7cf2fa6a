"""The paired comparison of benchmarks/path_accuracy.py (which decides whether a candidate model
is worse on paths than the shipped one)."""

import numpy as np
import pytest
from benchmark_scripts import load_benchmark


def _tool():
    return load_benchmark("path_accuracy")


def test_a_consistent_shift_is_reported_with_an_interval_that_excludes_zero():
    rng = np.random.default_rng(3)
    reference = rng.uniform(1.0, 6.0, size=30)
    d = _tool().paired_difference(reference, reference + 0.5 + rng.normal(0, 0.05, size=30))
    assert d["mean"] == pytest.approx(0.5, abs=0.05)
    assert 0.4 < d["low"] < d["mean"] < d["high"] < 0.6
    assert (d["better"], d["worse"]) == (0, 30)


def test_differences_that_go_both_ways_give_an_interval_around_zero():
    # Per-sequence changes of up to 2x either way (what two equally good models do on paths)
    # pair up so that the mean difference is zero: the interval must contain it.
    reference = np.array([2.0, 4.0, 3.0, 5.0, 1.5, 2.5] * 4)
    other = np.array([4.0, 2.0, 5.0, 3.0, 2.5, 1.5] * 4)
    d = _tool().paired_difference(reference, other)
    assert d["mean"] == pytest.approx(0.0)
    assert d["low"] < 0.0 < d["high"]
    assert d["better"] == d["worse"] == 12


def test_no_pairs_is_an_error():
    with pytest.raises(ValueError):
        _tool().paired_difference(np.array([]), np.array([]))


def test_model_sizes_default_to_size_and_follow_each_models_own():
    sizes = _tool().model_sizes(["U:294"], ["v7", "U"], 252)
    assert sizes == {"v7": 252, "U": 294}


@pytest.mark.parametrize("spec", ["U=294", "W:294", "U:", "U:300", "U:abc"])
def test_model_sizes_refuse_a_malformed_spec_an_unknown_model_and_a_width_off_the_patch_grid(spec):
    with pytest.raises(ValueError):
        _tool().model_sizes([spec], ["v7", "U"], 252)
