"""benchmarks/demo_room_accuracy.py: several demo-room paths through the real pipeline, with and
without the pose refinement, averaged per mode."""

import json
import math

import pytest
from benchmark_scripts import load_benchmark


def _tool():
    return load_benchmark("demo_room_accuracy")


def test_means_leave_out_missing_and_nan_values():
    tool = _tool()
    rows = [
        {"window_abs_rel": 0.1, "window_rotation_deg": 1.0, "window_translation_deg": None,
         "window_baseline_error_pct": math.nan, "ape_percent_of_length": 2.0},
        {"window_abs_rel": 0.3, "window_rotation_deg": 3.0, "window_translation_deg": 5.0,
         "window_baseline_error_pct": math.nan, "ape_percent_of_length": 4.0},
    ]  # fmt: skip
    m = tool.means(rows)
    assert m["window_abs_rel"] == pytest.approx(0.2)
    assert m["window_translation_deg"] == pytest.approx(5.0)
    assert m["window_baseline_error_pct"] is None
    assert m["ape_percent_of_length"] == pytest.approx(3.0)


def test_two_paths_replayed_with_and_without_the_refinement(tmp_path):
    out = tmp_path / "rooms.json"
    args = ["--untrained", "--config", "vggt-tiny", "--size", "182", "--sequences", "2", "--frames", "8"]
    assert _tool().main([*args, "--first-seed", "1", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["rendered"] == [140, 182] and record["input_size"] == 182
    assert set(record["rows"]) == {"defaults", "head only"}
    for mode, rows in record["rows"].items():
        assert [r["seed"] for r in rows] == [1, 2]
        apes = [r["ape_percent_of_length"] for r in rows]
        assert all(a is not None and a >= 0 for a in apes)
        assert record["means"][mode]["ape_percent_of_length"] == pytest.approx(sum(apes) / 2)
    # Depth is the network's in both modes; only the poses differ.
    depth = [r["window_abs_rel"] for r in record["rows"]["defaults"]]
    assert depth == pytest.approx([r["window_abs_rel"] for r in record["rows"]["head only"]])


def test_an_unknown_pipeline_parameter_is_refused():
    with pytest.raises(SystemExit) as info:
        _tool().main(["--untrained", "--config", "vggt-tiny", "--size", "182", "--param", "window.sise=4"])
    assert info.value.code == 2


def test_a_missing_checkpoint_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        _tool().main(["--checkpoint", str(tmp_path / "nope.safetensors"), "--config", "vggt-compact"])
    assert info.value.code == 2 and "checkpoint not found" in capsys.readouterr().err
