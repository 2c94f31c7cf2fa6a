"""The accuracy cost of sparse global attention on long windows (``vggt_ros.eval.long_window``,
``vggt-ros bench --sparse-accuracy``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vggt_ros.cli import main
from vggt_ros.engine.predictor import Predictor
from vggt_ros.eval.long_window import (
    SparseSetting,
    format_long_window_table,
    held_out_window,
    long_window_accuracy,
    render_size,
)
from vggt_ros.model.vggt import VGGT


@pytest.fixture(scope="module")
def tiny_predictor() -> Predictor:
    torch.manual_seed(0)
    model = VGGT("vggt-tiny").eval()
    return Predictor(model, device="cpu", precision="fp32", target_size=70)


def test_render_size_keeps_the_model_input_unresized() -> None:
    assert render_size(182) == (140, 182)
    assert render_size(518) == (392, 518)
    height, width = render_size(70)
    assert width == 70 and height % 14 == 0


def test_held_out_windows_are_reproducible_and_distinct() -> None:
    images, depth = held_out_window(3, 0, 56, 70)
    again, _ = held_out_window(3, 0, 56, 70)
    other, _ = held_out_window(3, 1, 56, 70)
    assert len(images) == 3 and images[0].shape == (56, 70, 3) and images[0].dtype == np.uint8
    assert depth.shape == (3, 56, 70) and np.isfinite(depth).all() and (depth > 0).all()
    assert all(np.array_equal(a, b) for a, b in zip(images, again, strict=True))
    assert not np.array_equal(images[0], other[0])


def test_sparse_settings_change_depth_exact_ones_do_not(tiny_predictor: Predictor) -> None:
    aggregator = tiny_predictor.runner.model.aggregator
    before = aggregator.global_key_stride, aggregator.global_key_weighting
    settings = [SparseSetting(1), SparseSetting(2, weighted=True), SparseSetting(2, weighted=False)]
    rows = long_window_accuracy(tiny_predictor, [4], settings, windows=1)
    assert [(r.global_key_stride, r.global_key_weighting) for r in rows] == [
        (0, True),
        (1, True),
        (2, True),
        (2, False),
    ]
    exact, stride_one, weighted, plain = rows
    assert exact.abs_rel_change == 0 and exact.depth_relative_difference == 0
    # Stride 1 keeps every key: the exact function.
    assert stride_one.depth_relative_difference == 0 and stride_one.abs_rel == exact.abs_rel
    # Stride 2 drops keys; the two weightings differ from exact and from each other.
    assert weighted.depth_relative_difference > 0 and plain.depth_relative_difference > 0
    assert weighted.abs_rel != plain.abs_rel
    assert weighted.abs_rel_change == pytest.approx(weighted.abs_rel - exact.abs_rel)
    assert (aggregator.global_key_stride, aggregator.global_key_weighting) == before  # restored
    table = format_long_window_table(rows)
    assert "| 4 | 2, weighted |" in table and "| 4 | exact |" in table


def test_sparse_accuracy_refuses_short_windows(tiny_predictor: Predictor) -> None:
    with pytest.raises(ValueError, match="at least 2 frames"):
        long_window_accuracy(tiny_predictor, [1], [SparseSetting(2)], windows=1)
    with pytest.raises(ValueError, match="at least one window"):
        long_window_accuracy(tiny_predictor, [4], [SparseSetting(2)], windows=0)


def test_bench_reports_speed_and_the_accuracy_change_on_the_embedded_model(tmp_path, capsys) -> None:
    """One command: the sparse option's time against the official recipe, and the AbsRel change
    it causes on the trained embedded model (held-out windows, ground truth)."""
    out = tmp_path / "bench.json"
    code = main(
        [
            "bench", "--config", "vggt-tiny", "--weights", "untrained", "--device", "cpu", "--frames", "4",
            "--sizes", "56x70", "--modes", "official:eager,fp32:eager", "--option", "global_key_stride=2",
            "--repeats", "1", "--warmup", "0", "--accuracy", "none", "--sparse-accuracy", "1",
            "--json", str(out), "-q",
        ]
    )  # fmt: skip
    assert code == 0
    report = json.loads(out.read_text())
    assert {r["mode"] for r in report["rows"]} == {"official", "fp32"}
    exact, sparse = report["sparse_accuracy"]
    assert (exact["global_key_stride"], sparse["global_key_stride"]) == (0, 2)
    assert sparse["global_key_weighting"] is True and sparse["frames"] == 4
    # A trained model on real ground truth: sane AbsRel, a measured change.
    assert 0.0 < exact["abs_rel"] < 0.5 and sparse["depth_relative_difference"] > 0
    printed = capsys.readouterr().out
    assert "sparse accuracy on embedded model" in printed and "| 4 | 2, weighted |" in printed


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--sparse-accuracy", "2"], "add --option global_key_stride=N"),
        (["--sparse-accuracy", "2", "--option", "global_key_stride=1"], "add --option global_key_stride=N"),
        (["--sparse-accuracy", "-1"], "number of windows"),
        (["--sparse-accuracy", "1", "--option", "global_key_stride=2", "--frames", "1"], "at least 2"),
    ],
)
def test_bench_sparse_accuracy_refusals(extra, message, capsys) -> None:
    args = ["bench", "--config", "vggt-tiny", "--device", "cpu", "--frames", "4", "--accuracy", "none", "-q"]
    assert main(args + extra) == 2
    assert message in capsys.readouterr().err
