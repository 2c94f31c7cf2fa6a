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


def _rows(n: int, depth_shift: float, rotation_shift: float, loop_closed_shift: float) -> dict:
    """n sequences of a reference model "ref" and a model "new" whose figures are shifted."""
    rng = np.random.default_rng(7)
    rows = {}
    for k in range(n):
        ref = {
            "chained_ape_percent": float(rng.uniform(1.0, 5.0)),
            "ape_percent": float(rng.uniform(0.5, 2.0)),
            "loops": 3,
            "false_loops": 0,
            "window_abs_rel": float(rng.uniform(0.08, 0.14)),
            "window_rotation_deg": float(rng.uniform(1.0, 2.5)),
        }
        new = dict(ref)
        new["ape_percent"] += loop_closed_shift + float(rng.normal(0, 0.01))
        new["window_abs_rel"] += depth_shift + float(rng.normal(0, 0.0005))
        new["window_rotation_deg"] += rotation_shift + float(rng.normal(0, 0.01))
        new["loops"] = 2
        rows[f"lap_{6000 + k}"] = {"ref": ref, "new": new}
    return rows


def test_the_summary_pairs_the_windows_depth_and_rotation_beside_the_paths():
    """A model whose windows' depth is worse on every sequence (what candidate A2 did on the thirty
    loop sequences) shows it in the window pairs, while its rotation change stays across zero."""
    summary = _tool().summarize(_rows(20, 0.004, 0.0, 0.1), ["ref", "new"])
    assert summary["paired"] == 20
    against = summary["models"]["new"]["against_ref"]
    assert set(against) == {"chained_ape_percent", "ape_percent", "window_abs_rel", "window_rotation_deg"}
    assert against["window_abs_rel"]["mean"] == pytest.approx(0.004, abs=5e-4)
    assert against["window_abs_rel"]["low"] > 0 and against["window_abs_rel"]["worse"] == 20
    assert against["window_rotation_deg"]["low"] < 0 < against["window_rotation_deg"]["high"]
    assert against["ape_percent"]["low"] > 0 and against["chained_ape_percent"]["mean"] == 0.0
    assert summary["models"]["ref"]["loops"] == 60 and summary["models"]["new"]["loops"] == 40
    assert "against_ref" not in summary["models"]["ref"]


def test_a_missing_window_figure_is_left_out_of_its_pairs_only():
    rows = _rows(6, 0.0, 0.0, 0.0)
    rows["lap_6000"]["new"]["window_abs_rel"] = None  # a replay whose windows were not scored
    summary = _tool().summarize(rows, ["ref", "new"])
    against = summary["models"]["new"]["against_ref"]
    assert against["window_abs_rel"]["better"] + against["window_abs_rel"]["worse"] <= 5
    assert against["ape_percent"]["better"] + against["ape_percent"]["worse"] == 6


def test_the_markdown_has_a_path_table_and_a_window_table():
    tool = _tool()
    text = tool.markdown(tool.summarize(_rows(8, 0.004, 0.0, 0.1), ["ref", "new"]), ["ref", "new"], "head")
    lines = text.splitlines()
    assert lines[0] == "head"
    path_rows = [line for line in lines if line.startswith("| new |")]
    assert len(path_rows) == 2  # one in each table
    assert "(0)" in path_rows[0] and ", 0 / 8 |" in path_rows[1]  # the depth got worse on all 8
    assert "window depth AbsRel" in text and "| ref | " in text


def test_each_models_own_eval_arguments():
    own = _tool().model_eval_args(
        ["v10", "v10_7px", "v10m"], ["v10_7px:keyframe.min_parallax_px=7"], ["v10m"]
    )
    assert own == {
        "v10": [],
        "v10_7px": ["--param", "keyframe.min_parallax_px=7"],
        "v10m": ["--mirror-depth"],
    }


@pytest.mark.parametrize(
    ("params", "mirror"),
    [(["x:keyframe.min_parallax_px=7"], []), (["v10:no_equals"], []), (["v10"], []), ([], ["x"])],
)
def test_own_eval_arguments_refuse_unknown_models_and_malformed_specs(params, mirror):
    with pytest.raises(ValueError):
        _tool().model_eval_args(["v10"], params, mirror)
