"""``vggt-ros average-models``: the weighted mean of exported model files of one lineage."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from vggt_ros.cli import main
from vggt_ros.model.checkpoint import CheckpointError, load_model
from vggt_ros.train.averaging import average_models, normalized_weights


def _export(path: Path, state: dict[str, torch.Tensor], **metadata: str) -> Path:
    meta = {"format": "vggt_ros.model/1", "config": "tiny", "weights": "ema", "image_size": "56"}
    meta.update(metadata)
    save_file(state, str(path), metadata=meta)
    return path


def _pair(tmp_path: Path) -> tuple[Path, Path, dict, dict]:
    gen = torch.Generator().manual_seed(0)
    a = {"w": torch.randn(4, 3, generator=gen), "b": torch.randn(3, generator=gen)}
    b = {"w": torch.randn(4, 3, generator=gen), "b": torch.randn(3, generator=gen)}
    prov_a = json.dumps({"run": "A", "step": 10})
    return (
        _export(tmp_path / "a.safetensors", a, provenance=prov_a),
        _export(tmp_path / "b.safetensors", b, provenance=json.dumps({"run": "B"})),
        a,
        b,
    )


def test_weighted_mean_with_provenance_of_each_input(tmp_path: Path) -> None:
    path_a, path_b, a, b = _pair(tmp_path)
    out = average_models([path_a, path_b], tmp_path / "soup.safetensors", [3, 1], dtype=torch.float32)
    soup = load_file(str(out))
    for key in a:
        torch.testing.assert_close(soup[key], 0.75 * a[key] + 0.25 * b[key])
    with safe_open(str(out), framework="pt") as f:
        meta = f.metadata()
    assert meta["config"] == "tiny" and meta["image_size"] == "56" and meta["weights"] == "ema"
    inputs = json.loads(meta["provenance"])["average"]
    assert [i["file"] for i in inputs] == ["a.safetensors", "b.safetensors"]
    assert [i["weight"] for i in inputs] == [0.75, 0.25]
    assert inputs[0]["sha256"] == hashlib.sha256(path_a.read_bytes()).hexdigest()
    assert inputs[0]["provenance"] == {"run": "A", "step": 10}


def test_cli_writes_fp16_equal_mean_by_default(tmp_path: Path) -> None:
    path_a, path_b, a, b = _pair(tmp_path)
    out = tmp_path / "soup.safetensors"
    assert main(["average-models", str(path_a), str(path_b), "--out", str(out), "-q"]) == 0
    soup = load_file(str(out))
    assert soup["w"].dtype == torch.float16
    torch.testing.assert_close(soup["w"], ((a["w"] + b["w"]) / 2).half())


def test_averaged_real_model_loads_and_sits_between_its_inputs(tmp_path: Path) -> None:
    """Two randomly initialised vggt-tiny exports average into a file the loader accepts."""
    from vggt_ros.model import VGGT, get_config

    files = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        model = VGGT(get_config("vggt-tiny"))
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        files.append(_export(tmp_path / f"m{seed}.safetensors", state, config="vggt-tiny"))
    out = average_models(files, tmp_path / "soup.safetensors", dtype=torch.float32)
    model, _ = load_model(str(out), config="vggt-tiny", device="cpu")
    key = "aggregator.camera_token"
    inputs = [load_file(str(f))[key] for f in files]
    torch.testing.assert_close(model.state_dict()[key], (inputs[0] + inputs[1]) / 2)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"config": "other"}, "config"),
        ({"image_size": "70"}, "image_size"),
    ],
)
def test_inputs_of_other_lineages_are_refused(tmp_path: Path, change: dict, message: str) -> None:
    path_a, _, a, _ = _pair(tmp_path)
    other = _export(tmp_path / "c.safetensors", a, **change)
    with pytest.raises(CheckpointError, match=message):
        average_models([path_a, other], tmp_path / "soup.safetensors")
    assert not (tmp_path / "soup.safetensors").exists()


def test_different_tensors_or_shapes_are_refused(tmp_path: Path) -> None:
    path_a, _, a, _ = _pair(tmp_path)
    renamed = _export(tmp_path / "r.safetensors", {"w": a["w"], "bias": a["b"]})
    with pytest.raises(CheckpointError, match="different tensors"):
        average_models([path_a, renamed], tmp_path / "soup.safetensors")
    reshaped = _export(tmp_path / "s.safetensors", {"w": a["w"].T.contiguous(), "b": a["b"]})
    with pytest.raises(CheckpointError, match="shape"):
        average_models([path_a, reshaped], tmp_path / "soup.safetensors")


def test_bad_weights_and_missing_files_give_clear_errors(tmp_path: Path) -> None:
    path_a, path_b, _, _ = _pair(tmp_path)
    assert normalized_weights(None, 4) == [0.25] * 4
    with pytest.raises(ValueError, match="one weight per model"):
        normalized_weights([1.0], 2)
    with pytest.raises(ValueError, match=">= 0"):
        normalized_weights([1.0, -1.0], 2)
    with pytest.raises(ValueError, match="at least two"):
        normalized_weights(None, 1)
    with pytest.raises(CheckpointError, match="does not exist"):
        average_models([path_a, tmp_path / "missing.safetensors"], tmp_path / "soup.safetensors")
    out = str(tmp_path / "soup.safetensors")
    assert main(["average-models", str(path_a), str(path_b), "--weights", "1", "--out", out, "-q"]) == 2
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"not a safetensors file")
    assert main(["average-models", str(path_a), str(corrupt), "--out", out, "-q"]) == 2
