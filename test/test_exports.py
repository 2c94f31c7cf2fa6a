"""Tests for vggt_ros.eval.exports (PLY, 16-bit depth PNG, cameras JSON) and eval.media."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from vggt_ros.eval.exports import (
    auto_depth_png_scale,
    read_ply,
    write_cameras_json,
    write_depth_npy,
    write_depth_png16,
    write_ply,
)
from vggt_ros.eval.media import MediaError, list_images, load_frames, read_image


def test_ply_round_trip_with_and_without_confidence(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    xyz = rng.normal(size=(50, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, (50, 3), dtype=np.uint8)
    conf = rng.random(50).astype(np.float32)

    path = write_ply(tmp_path / "a.ply", xyz, rgb, conf)
    header = path.read_bytes()[:400].split(b"end_header\n")[0].decode()
    assert "format binary_little_endian 1.0" in header and "element vertex 50" in header
    assert "property float confidence" in header and "property uchar red" in header
    # 3 float32 + 3 uchar + 1 float32 per vertex.
    assert path.stat().st_size == len(header) + len("end_header\n") + 50 * 19
    back = read_ply(path)
    np.testing.assert_array_equal(back["xyz"], xyz)
    np.testing.assert_array_equal(back["rgb"], rgb)
    np.testing.assert_array_equal(back["confidence"], conf)

    back = read_ply(write_ply(tmp_path / "b.ply", xyz.astype(np.float64), rgb))
    assert "confidence" not in back
    np.testing.assert_array_equal(back["xyz"], xyz)


def test_ply_rejects_bad_arrays(tmp_path: Path) -> None:
    xyz = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match="rgb must be uint8"):
        write_ply(tmp_path / "x.ply", xyz, np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match=r"xyz must be \[M, 3\]"):
        write_ply(tmp_path / "x.ply", np.zeros((4, 2)), np.zeros((4, 2), np.uint8))
    with pytest.raises(ValueError, match="conf must be"):
        write_ply(tmp_path / "x.ply", xyz, np.zeros((4, 3), np.uint8), np.zeros(3))


def test_depth_png16_round_trip_and_invalid_values(tmp_path: Path) -> None:
    depth = np.array([[0.5, 1.25, np.nan], [-1.0, 2.0, 100.0]], dtype=np.float32)
    path = write_depth_png16(tmp_path / "d.png", depth, scale=1000.0)
    stored = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert stored.dtype == np.uint16 and stored.shape == (2, 3)
    # NaN and negative -> 0 (no depth); 100 m * 1000 clips at 65535.
    np.testing.assert_array_equal(stored, [[500, 1250, 0], [0, 2000, 65535]])

    write_depth_npy(tmp_path / "d.npy", depth)
    np.testing.assert_array_equal(np.load(tmp_path / "d.npy"), depth)


def test_auto_depth_scale_fits_16_bits() -> None:
    depths = [np.array([[0.1, 3.0]]), np.array([[np.nan, 1.0]])]
    scale = auto_depth_png_scale(depths)
    assert scale == np.floor(0.9 * 65535 / 3.0)
    assert 3.0 * scale <= 65535 and 3.0 * (scale + 1) > 0.9 * 65535
    assert auto_depth_png_scale([np.full((2, 2), np.nan)]) == 1000.0


class _FakePrediction:
    """The fields write_cameras_json reads, with known values."""

    num_frames = 2
    original_sizes = [(100, 200), (60, 80)]
    model_hw = (56, 112)
    K = np.array([[100.0, 0, 50], [0, 90.0, 30], [0, 0, 1]])
    intrinsics = np.stack([K, 2 * K])
    model_intrinsics = np.stack([K, K])
    extrinsics = np.stack([np.eye(4)[:3], np.hstack([np.eye(3), [[1.0], [2.0], [3.0]]])])
    cam_to_world = np.stack([np.eye(4), np.eye(4)])
    weights = {"source": "a.safetensors", "trained": True, "identity": "abc", "missing": np.float64(np.inf)}
    timings = {"inference_ms": 12.5}


def test_cameras_json_fields(tmp_path: Path) -> None:
    path = write_cameras_json(tmp_path / "c.json", _FakePrediction(), ["a", "b"], depth_png_scale=20000.0)
    data = json.loads(path.read_text())
    assert [f["name"] for f in data["frames"]] == ["a", "b"]
    assert (data["frames"][1]["width"], data["frames"][1]["height"]) == (80, 60)
    np.testing.assert_array_equal(data["frames"][1]["K"], 2 * _FakePrediction.K)
    np.testing.assert_array_equal(data["frames"][1]["extrinsics"], _FakePrediction.extrinsics[1])
    assert np.array(data["frames"][0]["cam_to_world"]).shape == (4, 4)
    assert (data["model_height"], data["model_width"]) == (56, 112)
    assert data["trained"] is True and data["scale"] == "normalized"
    assert data["depth_png_scale"] == 20000.0 and data["weights"]["identity"] == "abc"
    assert data["weights"]["missing"] is None  # non-finite -> null, the file stays strict JSON
    with pytest.raises(ValueError, match="2 frames"):
        write_cameras_json(tmp_path / "c.json", _FakePrediction(), ["a"])


def test_cameras_json_from_a_real_prediction_is_consistent(tmp_path: Path) -> None:
    from vggt_ros.engine import Predictor
    from vggt_ros.model import VGGT

    pred = Predictor(VGGT("vggt-tiny"), device="cpu", target_size=112).predict(
        [np.zeros((60, 90, 3), np.uint8)]
    )
    data = json.loads(write_cameras_json(tmp_path / "c.json", pred, ["only"]).read_text())
    assert data["trained"] is False
    np.testing.assert_allclose(data["frames"][0]["K"], pred.intrinsics[0])
    assert data["frames"][0]["width"] == 90
    np.testing.assert_allclose(data["frames"][0]["cam_to_world"], np.eye(4), atol=1e-9)


# ------------------------------------------------------------------------------------------------
# media
# ------------------------------------------------------------------------------------------------
def test_list_images_natural_order_and_read_rgb(tmp_path: Path) -> None:
    img = np.zeros((4, 5, 3), np.uint8)
    img[..., 2] = 255  # BGR red
    for name in ("f10.png", "f2.png", "f1.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"x") if name.endswith(".txt") else cv2.imwrite(
            str(tmp_path / name), img
        )
    assert [p.name for p in list_images(tmp_path)] == ["f1.jpg", "f2.png", "f10.png"]
    rgb = read_image(tmp_path / "f2.png")
    assert rgb.shape == (4, 5, 3) and (rgb[..., 0] == 255).all() and (rgb[..., 2] == 0).all()
    names, frames = load_frames(tmp_path, every=2)
    assert names == ["f1", "f10"] and len(frames) == 2


def test_media_errors(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="input not found"):
        load_frames(tmp_path / "nope")
    with pytest.raises(MediaError, match="no images"):
        load_frames(tmp_path)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(MediaError, match="cannot decode image .*bad.png"):
        load_frames(tmp_path)
    (tmp_path / "clip.mp4").write_bytes(b"garbage")
    with pytest.raises(MediaError, match="video"):
        load_frames(tmp_path / "clip.mp4")
