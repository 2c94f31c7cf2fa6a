"""End-to-end tests of the ``vggt-ros`` CLI with the tiny (random) model on generated media."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from vggt_ros.cli import grid_points, main
from vggt_ros.eval.exports import read_ply
from vggt_ros.model import VGGT

RNG = np.random.default_rng(3)
TINY = ["--config", "vggt-tiny", "--device", "cpu", "-q"]
UNTRAINED_TINY = [*TINY, "--untrained"]


def _write_images(folder: Path, sizes: list[tuple[int, int]]) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i, (h, w) in enumerate(sizes):
        name = f"img{i}"
        cv2.imwrite(str(folder / f"{name}.png"), RNG.integers(0, 256, (h, w, 3), dtype=np.uint8))
        names.append(name)
    return names


def test_predict_image_folder_end_to_end(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    names = _write_images(tmp_path / "in", [(120, 160), (120, 160), (160, 120)])
    out = tmp_path / "out"
    code = main(
        [
            "predict",
            str(tmp_path / "in"),
            "--out",
            str(out),
            "--size",
            "182",
            "--tracks",
            "6",
            *UNTRAINED_TINY,
        ]
    )
    assert code == 0

    cameras = json.loads((out / "cameras.json").read_text())
    assert [f["name"] for f in cameras["frames"]] == names
    assert [(f["height"], f["width"]) for f in cameras["frames"]] == [(120, 160), (120, 160), (160, 120)]
    assert cameras["trained"] is False and cameras["scale"] == "normalized"
    np.testing.assert_allclose(cameras["frames"][0]["cam_to_world"], np.eye(4), atol=1e-9)
    scale = cameras["depth_png_scale"]
    for name, f in zip(names, cameras["frames"]):
        png = cv2.imread(str(out / "depth" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        npy = np.load(out / "depth" / f"{name}.npy")
        conf = np.load(out / "confidence" / f"{name}.npy")
        assert png.dtype == np.uint16 and png.shape == npy.shape == conf.shape == (f["height"], f["width"])
        good = np.isfinite(npy)
        np.testing.assert_allclose(png[good] / scale, npy[good], atol=0.51 / scale)
        assert (png[~good] == 0).all()

    ply = read_ply(out / "points.ply")
    summary = json.loads((out / "summary.json").read_text())
    assert len(ply["xyz"]) == summary["points"] > 0 and ply["rgb"].dtype == np.uint8
    # --conf-percentile 50 (default) keeps about half of the valid pixels.
    valid_pixels = sum(np.isfinite(np.load(out / "depth" / f"{n}.npy")).sum() for n in names)
    assert summary["points"] < 0.75 * valid_pixels
    tracks = np.load(out / "tracks.npz")
    assert tracks["tracks"].shape == (3, 6, 2) and tracks["visibility"].shape == (3, 6)
    np.testing.assert_array_equal(tracks["query_points"], grid_points(6, 120, 160))
    assert summary["frames"] == 3 and summary["trained"] is False


def test_predict_untrained_warns_loudly(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _write_images(tmp_path / "in", [(60, 80)])
    args = ["predict", str(tmp_path / "in"), "--out", str(tmp_path / "o"), "--size", "112"]
    assert main([*args, *UNTRAINED_TINY]) == 0
    err = capsys.readouterr().err
    assert "UNTRAINED, RANDOM weights" in err and "MEANINGLESS" in err


def test_predict_without_model_options_runs_the_embedded_model(tmp_path: Path) -> None:
    from vggt_ros.model.embedded import DEFAULT_MODEL

    _write_images(tmp_path / "in", [(120, 160), (120, 160)])
    assert main(["predict", str(tmp_path / "in"), "--out", str(tmp_path / "o"), "--device", "cpu", "-q"]) == 0
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["trained"] is True and summary["config"] == "vggt-compact"
    assert (
        summary["weights"]["model"] == DEFAULT_MODEL.name and summary["weights"]["card"] == DEFAULT_MODEL.card
    )
    assert summary["size"] == DEFAULT_MODEL.image_size and summary["model_hw"] == [224, 294]


@pytest.mark.parametrize(("fourcc", "suffix"), [("MJPG", ".avi"), ("mp4v", ".mp4")])
def test_predict_video_with_stride_and_max_frames(tmp_path: Path, fourcc: str, suffix: str) -> None:
    video = tmp_path / f"clip{suffix}"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*fourcc), 10.0, (96, 64))
    if not writer.isOpened():
        pytest.skip(f"this OpenCV build cannot write {fourcc}")
    for i in range(9):
        frame = np.full((64, 96, 3), 20 * i, np.uint8)
        cv2.rectangle(frame, (10 + 5 * i, 10), (40 + 5 * i, 40), (0, 0, 255), -1)
        writer.write(frame)
    writer.release()

    out = tmp_path / "out"
    args = ["predict", str(video), "--out", str(out), "--size", "112", "--every", "3", "--max-frames", "2"]
    assert main([*args, *UNTRAINED_TINY]) == 0
    cameras = json.loads((out / "cameras.json").read_text())
    assert [f["name"] for f in cameras["frames"]] == ["frame_000000", "frame_000003"]
    assert (out / "depth" / "frame_000003.png").is_file() and not (out / "tracks.npz").exists()
    assert cv2.imread(str(out / "depth" / "frame_000000.png"), cv2.IMREAD_UNCHANGED).shape == (64, 96)


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (lambda d: ["predict", str(d / "missing"), "--out", str(d / "o")], "input not found"),
        (lambda d: ["predict", str(d / "bad"), "--out", str(d / "o"), "--untrained"], "cannot decode image"),
        (
            lambda d: ["predict", str(d / "ok"), "--out", str(d / "o"), "--checkpoint", str(d / "nope.pt")],
            "nope.pt",
        ),
        (
            lambda d: ["predict", str(d / "ok"), "--out", str(d / "o"), "--checkpoint", str(d / "junk.pt")],
            "junk.pt",
        ),
        (lambda d: ["predict", str(d / "ok"), "--out", str(d / "o"), "--size", "100"], "multiple of 14"),
        (
            lambda d: [
                "predict",
                str(d / "ok"),
                "--out",
                str(d / "o"),
                "--size",
                "112",
                "--tracks",
                "4",
                "--untrained",
            ],
            "track head",
        ),
        (
            lambda d: ["predict", str(d / "ok"), "--out", str(d / "o")],  # tiny config, no weights
            "the embedded model is 'vggt-compact'",
        ),
        (
            lambda d: [
                "predict",
                str(d / "ok"),
                "--out",
                str(d / "o"),
                "--untrained",
                "--checkpoint",
                "x.pt",
            ],
            "choose one",
        ),
        (lambda d: ["predict", str(d / "ok"), "--out", str(d / "o"), "--device", "tpu"], "device"),
        (lambda d: ["bench", "--option", "graph_windw=false"], "unknown --option graph_windw"),
        (
            lambda d: ["predict", str(d / "ok"), "--out", str(d / "o"), "--global-key-stride", "-2"],
            "--global-key-stride must be >= 0",
        ),
    ],
)
def test_user_errors_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, make_args, message
) -> None:
    _write_images(tmp_path / "ok", [(60, 80)])
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    (tmp_path / "junk.pt").write_bytes(b"this is not a checkpoint")
    args = make_args(tmp_path)
    code = main([args[0], *TINY, *args[1:]])  # the case's own options come last and win
    err = capsys.readouterr().err
    assert code == 2
    error_lines = [line for line in err.splitlines() if "error:" in line]
    assert len(error_lines) == 1 and message in error_lines[0], err
    assert "Traceback" not in err


def test_no_subcommand_and_bad_option_exit_2(capsys: pytest.CaptureFixture) -> None:
    assert main([]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["predict"])  # INPUT and --out missing: argparse's own usage error
    assert exc.value.code == 2


def test_convert_checkpoint(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from vggt_ros.model.checkpoint import load_model

    torch.manual_seed(0)
    model = VGGT("vggt-tiny")
    src = tmp_path / "tiny.pt"
    torch.save({"model": model.state_dict()}, src)
    dst = tmp_path / "tiny.safetensors"
    assert main(["convert-checkpoint", str(src), str(dst), "--config", "vggt-tiny", "-q"]) == 0
    loaded, info = load_model(dst, config="vggt-tiny")
    assert info.trained
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)
    # A checkpoint of the wrong config is a user error, not a traceback.
    save_file({"x": torch.zeros(1)}, tmp_path / "wrong.safetensors")
    assert (
        main(
            [
                "convert-checkpoint",
                str(tmp_path / "wrong.safetensors"),
                str(tmp_path / "w2.safetensors"),
                "--config",
                "vggt-tiny",
                "-q",
            ]
        )
        == 2
    )


def test_grid_points_cover_the_image_evenly() -> None:
    pts = grid_points(12, 120, 160)
    assert pts.shape == (12, 2)
    assert pts[:, 0].min() > 0 and pts[:, 0].max() < 159 and pts[:, 1].min() > 0 and pts[:, 1].max() < 119
    assert len({tuple(p) for p in pts}) == 12  # distinct
    np.testing.assert_allclose(
        grid_points(4, 100, 100), [[24.5, 24.5], [74.5, 24.5], [24.5, 74.5], [74.5, 74.5]]
    )
    assert grid_points(0, 10, 10).shape == (0, 2)
