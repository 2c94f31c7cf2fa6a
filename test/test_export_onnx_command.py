"""``vggt-ros export-onnx``: ONNX files of the chosen sections, checked against PyTorch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vggt_ros.cli import main

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def test_exports_sections_with_a_manifest_and_parity(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "onnx"
    args = ["export-onnx", "--out", str(out), "--untrained", "--config", "vggt-tiny"]
    code = main([*args, "--image-hw", "28x42", "--max-frames", "2", "--sections", "aggregator,depth", "-q"])
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["image_hw"] == [28, 42] and set(manifest["sections"]) == {"aggregator", "depth"}
    for name, entry in manifest["sections"].items():
        assert (out / entry["path"]).stat().st_size > 10_000, name
        errors = entry["onnxruntime_relative_error"]
        assert set(errors) == {"1", "2"}  # one frame and the largest traced window
        assert max(max(e.values()) for e in errors.values()) < 1e-4, name
        assert entry["tensorrt_incompatibilities"] == []
    assert manifest["sections"]["aggregator"]["input_shapes"]["images"] == [1, -1, 3, 28, 42]
    assert "max relative error" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--image-hw", "30x42"], "multiples of 14"),
        (["--sections", "tracks"], "unknown ['tracks']"),
        (["--max-frames", "0"], "--max-frames must be >= 1"),
    ],
)
def test_refuses_bad_options(tmp_path: Path, capsys: pytest.CaptureFixture, extra, message) -> None:  # noqa: ANN001
    args = ["export-onnx", "--out", str(tmp_path / "o"), "--untrained", "--config", "vggt-tiny", *extra]
    assert main(args) == 2
    assert message in capsys.readouterr().err
