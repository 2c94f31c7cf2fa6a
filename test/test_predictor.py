"""Tests for vggt_ros.engine: precision selection, the Predictor and its Prediction.

Random weights give arbitrary numbers, so every mapping (tracks, intrinsics, depth resampling,
first-frame anchoring) is checked with ``FakeVGGT``, a test double whose outputs are known
exactly; the real tiny model only checks shapes, frames and plumbing.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from vggt_ros.engine import Prediction, Predictor, inference_context, resolve_device, resolve_precision
from vggt_ros.model import VGGT

RNG = np.random.default_rng(0)


def rgb(h: int, w: int) -> np.ndarray:
    # Values < 250 so no content pixel is pure white (FakeVGGT marks white pixels as padding).
    return RNG.integers(0, 250, (h, w, 3), dtype=np.uint8)


def quat_z(angle: float) -> list[float]:
    """xyzw quaternion of a rotation by ``angle`` about z."""
    return [0.0, 0.0, math.sin(angle / 2), math.cos(angle / 2)]


def rot_z(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


class FakeVGGT(nn.Module):
    """Test double with VGGT's forward contract and exactly known outputs.

    - pose_enc: the given [S, 9] encodings.
    - depth[s, y, x] = x (the model column), plus 1000 on pure-white (padding) pixels so any
      leak of padding into resampled depth is visible; depth_conf = 1 + x.
    - world_points: depth unprojected with the encoded cameras in the double's own world frame,
      computed here by hand (fx, fy from the fovs, principal point (W/2, H/2)).
    - track[s] = query points (model pixels) + s * shift; vis = 0.75, conf = 0.5.
    """

    def __init__(self, pose_enc: list[list[float]], shift=(0.0, 0.0), with_track: bool = True) -> None:
        super().__init__()
        self.config = SimpleNamespace(patch_size=14)
        self.camera_head = nn.Identity()
        self.depth_head = nn.Identity()
        self.track_head = nn.Identity() if with_track else None
        self.anchor = nn.Parameter(torch.zeros(()))  # so .to(device) has something to move
        self.pose_enc = torch.tensor(pose_enc, dtype=torch.float64)
        self.shift = torch.tensor(shift, dtype=torch.float64)
        self.seen_queries: torch.Tensor | None = None

    def forward(self, images: torch.Tensor, query_points: torch.Tensor | None = None) -> dict:
        S, _, H, W = images.shape
        x = torch.arange(W, dtype=torch.float64).expand(S, H, W)
        white = (images == 1.0).all(dim=1)
        depth = x + 1000.0 * white
        enc = self.pose_enc[:S]
        fy = (H / 2) / torch.tan(enc[:, 7] / 2)
        fx = (W / 2) / torch.tan(enc[:, 8] / 2)
        u = torch.arange(W, dtype=torch.float64)[None, None, :]
        v = torch.arange(H, dtype=torch.float64)[None, :, None]
        cam = torch.stack(
            [(u - W / 2) / fx[:, None, None] * depth, (v - H / 2) / fy[:, None, None] * depth, depth], -1
        )
        quat = enc[:, 3:7].numpy()
        R = torch.tensor(np.stack([_quat_to_matrix(q) for q in quat]))
        t = enc[:, :3]
        world = torch.einsum("sji,shwj->shwi", R, cam - t[:, None, None, :])  # R^T (p - t)
        out = {
            "pose_enc": enc[None].float(),
            "depth": depth[None, ..., None].float(),
            "depth_conf": (1.0 + x)[None].float(),
            "world_points": world[None].float(),
            "world_points_conf": (2.0 + x)[None].float(),
        }
        if query_points is not None:
            # Like VGGT: [N, 2] or [B, N, 2]; remembered as [N, 2] (batch of one).
            self.seen_queries = query_points.detach().cpu().double().reshape(-1, 2)
            steps = torch.arange(S, dtype=torch.float64)[:, None, None]
            track = self.seen_queries[None] + steps * self.shift
            out["track"] = track[None].float()
            out["vis"] = torch.full((1, S, track.shape[1]), 0.75)
            out["conf"] = torch.full((1, S, track.shape[1]), 0.5)
        return out


def _quat_to_matrix(q: np.ndarray) -> np.ndarray:
    x, y, z, w = q / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


# Model 224x112 for the portrait 400x200 frame (scale 0.56 both ways); fx_model = 100, fy = 200.
FOV_W = 2 * math.atan(56 / 100)
FOV_H = 2 * math.atan(112 / 200)
IDENTITY_ENC = [0, 0, 0, 0, 0, 0, 1, FOV_H, FOV_W]
SECOND_ENC = [0.1, -0.2, 0.3, *quat_z(0.3), FOV_H, FOV_W]


def fake_predictor(encs=None, shift=(0.0, 0.0), mode="resize", target=224, **kw) -> Predictor:
    model = FakeVGGT(encs or [IDENTITY_ENC, SECOND_ENC, SECOND_ENC], shift=shift, **kw)
    return Predictor(model, device="cpu", precision="fp32", mode=mode, target_size=target)


# ------------------------------------------------------------------------------------------------
# precision.py
# ------------------------------------------------------------------------------------------------
def test_resolve_device_cpu_and_auto() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("gpu-please")
    with pytest.raises(ValueError, match="unsupported device"):
        resolve_device("meta")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message when CUDA is absent")
def test_resolve_device_cuda_absent_says_so() -> None:
    for spec in ("cuda", "cuda:1"):
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device(spec)


def test_resolve_precision() -> None:
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == torch.float32
    assert resolve_precision("fp32", cpu) == torch.float32
    assert resolve_precision("bf16", cpu) == torch.bfloat16
    assert resolve_precision("FP16", cpu) == torch.float16
    with pytest.raises(ValueError, match="unknown precision"):
        resolve_precision("int8", cpu)
    if torch.cuda.is_available():
        gpu = torch.device("cuda:0")
        expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        assert resolve_precision("auto", gpu) == expected


def test_inference_context_autocasts_only_reduced_precision() -> None:
    cpu = torch.device("cpu")
    a = torch.randn(4, 4)
    with inference_context(cpu, torch.bfloat16):
        assert torch.is_inference_mode_enabled()
        assert (a @ a).dtype == torch.bfloat16
    with inference_context(cpu, torch.float32):
        assert torch.is_inference_mode_enabled()
        assert (a @ a).dtype == torch.float32
    assert not torch.is_inference_mode_enabled()


# ------------------------------------------------------------------------------------------------
# Exact mappings with the test double
# ------------------------------------------------------------------------------------------------
def test_tracks_map_to_original_pixels_of_each_frame() -> None:
    # Frame 0 portrait 500x250 -> model 280x140 (scale 0.56; >= 128 px for the tracker). Frame 1
    # landscape 125x250 is fitted into 280x140: scale 0.56, 70 rows, 105 rows of padding on top.
    # Frame 2 has frame 0's size.
    predictor = fake_predictor(shift=(5.6, 112.0), target=280)
    queries = np.array([[50.0, 100.0], [0.0, 0.0], [249.0, 499.0]])
    pred = predictor.predict([rgb(500, 250), rgb(125, 250), rgb(500, 250)], queries)

    assert pred.model_hw == (280, 140)
    seen = predictor.model.seen_queries.numpy()
    np.testing.assert_allclose(seen, 0.56 * (queries + 0.5) - 0.5, atol=1e-5)
    # Frame 0 (shift 0) comes back exactly where it was queried.
    np.testing.assert_allclose(pred.tracks[0], queries, atol=1e-4)
    # Frame 1: model shift (5.6, 112) = (10, 200) original px, minus the padding 105 / 0.56.
    np.testing.assert_allclose(pred.tracks[1, 0], [60.0, 112.5], atol=1e-4)
    np.testing.assert_allclose(pred.tracks[1], queries + [10.0, 200.0 - 187.5], atol=1e-4)
    # Frame 2: same size as frame 0, shifted twice.
    np.testing.assert_allclose(pred.tracks[2], queries + [20.0, 400.0], atol=1e-4)
    np.testing.assert_allclose(pred.model_tracks[1], seen + [5.6, 112.0], atol=1e-4)
    assert pred.track_vis.shape == pred.track_conf.shape == (3, 3)
    assert np.all(pred.track_vis == 0.75) and np.all(pred.track_conf == 0.5)
    np.testing.assert_array_equal(pred.query_points, queries)


def test_intrinsics_for_original_sizes_by_hand_and_by_projection() -> None:
    pred = fake_predictor().predict([rgb(400, 200), rgb(100, 200)])
    # Model intrinsics: fx = 100, fy = 200, principal point (W/2, H/2) = (56, 112).
    np.testing.assert_allclose(pred.model_intrinsics[0], [[100, 0, 56], [0, 200, 112], [0, 0, 1]], atol=1e-9)
    # Frame 0: scale 0.56 -> f / 0.56, c' = (c + 0.5) / 0.56 - 0.5. (The pose encoding passes
    # through float32, hence rtol 1e-6.)
    K0 = np.array([[100 / 0.56, 0, 56.5 / 0.56 - 0.5], [0, 200 / 0.56, 112.5 / 0.56 - 0.5], [0, 0, 1]])
    np.testing.assert_allclose(pred.intrinsics[0], K0, rtol=1e-6)
    # Frame 1: padded by 84 rows on top.
    K1 = K0.copy()
    K1[1, 2] = (112.5 - 84) / 0.56 - 0.5
    np.testing.assert_allclose(pred.intrinsics[1], K1, rtol=1e-6)

    # Projection: a world point seen at model pixel m must land at the original pixel that the
    # preprocessing maps to m.
    X = np.array([[0.3, -0.2, 2.0], [-0.5, 0.4, 3.0]])
    for i, (ty, h) in enumerate(((0.0, 400), (84.0, 100))):
        E = pred.extrinsics[i]
        cam = X @ E[:, :3].T + E[:, 3]
        m = cam @ pred.model_intrinsics[i].T
        m = m[:, :2] / m[:, 2:]
        o = cam @ pred.intrinsics[i].T
        o = o[:, :2] / o[:, 2:]
        expected = np.stack([(m[:, 0] + 0.5) / 0.56 - 0.5, (m[:, 1] + 0.5 - ty) / 0.56 - 0.5], -1)
        np.testing.assert_allclose(o, expected, atol=1e-9)
        assert pred.original_sizes[i] == (h, 200)


def test_cameras_are_anchored_to_the_first_frame() -> None:
    first = [1.0, 2.0, -0.5, *quat_z(-0.7), FOV_H, FOV_W]
    predictor = fake_predictor([first, SECOND_ENC])
    pred = predictor.predict([rgb(400, 200), rgb(400, 200)])

    np.testing.assert_allclose(pred.cam_to_world[0], np.eye(4), atol=1e-12)
    np.testing.assert_allclose(pred.extrinsics[0], np.eye(4)[:3], atol=1e-12)
    # Relative pose is kept: E1' = E1 E0^-1.
    E0 = np.eye(4)
    E0[:3, :3], E0[:3, 3] = rot_z(-0.7), first[:3]
    E1 = np.eye(4)
    E1[:3, :3], E1[:3, 3] = rot_z(0.3), SECOND_ENC[:3]
    np.testing.assert_allclose(pred.extrinsics[1], (E1 @ np.linalg.inv(E0))[:3], atol=1e-6)
    np.testing.assert_allclose(pred.cam_to_world[1], np.linalg.inv(E1 @ np.linalg.inv(E0)), atol=1e-6)
    # The point head's map moved with the cameras: it matches depth + cameras again.
    np.testing.assert_allclose(pred.world_points, pred.points_from_depth(), atol=2e-3)

    raw = Predictor(
        predictor.model, device="cpu", precision="fp32", target_size=224, anchor_first_frame=False
    )
    raw_pred = raw.predict([rgb(400, 200), rgb(400, 200)])
    np.testing.assert_allclose(raw_pred.extrinsics[0], E0[:3], atol=1e-6)
    np.testing.assert_allclose(raw_pred.world_points, raw_pred.points_from_depth(), atol=2e-3)


def test_depth_original_excludes_padding_and_samples_exactly() -> None:
    pred = fake_predictor().predict([rgb(400, 200), rgb(100, 200)])
    # Frame 1 content is model rows 84..139; everything else is padding.
    assert pred.valid_mask[1, 84:140].all() and not pred.valid_mask[1, :84].any()
    assert not pred.valid_mask[1, 140:].any() and pred.valid_mask[0].all()

    x = np.arange(200)
    mx = 0.56 * (x + 0.5) - 0.5  # model column of each original column
    nearest = pred.depth_original(1, "nearest")
    bilinear = pred.depth_original(1, "bilinear")
    assert nearest.shape == bilinear.shape == (100, 200)
    # Depth equals the model column, so the samples are the (clamped) model columns; padding
    # (+1000) never leaks in, not even through bilinear weights at row 0 (model row 83.78).
    np.testing.assert_array_equal(nearest, np.broadcast_to(np.clip(np.floor(mx + 0.5), 0, 111), (100, 200)))
    np.testing.assert_allclose(bilinear, np.broadcast_to(np.clip(mx, 0, 111), (100, 200)), atol=1e-4)
    assert np.isfinite(bilinear).all() and bilinear.max() < 1000
    conf = pred.depth_conf_original(1, "nearest")
    np.testing.assert_array_equal(conf, nearest + 1)


def test_depth_original_crop_mode_marks_cropped_rows_nan() -> None:
    # Crop: width 200 -> 224 (scale 1.12), height 448 cropped to 224 (56 rows off the top... of
    # the resized image: 112 model rows). Original rows 0..99 and 300..399 are cut away.
    pred = fake_predictor([IDENTITY_ENC], mode="crop").predict([rgb(400, 200)], resample_to_original=True)
    assert pred.model_hw == (224, 224)
    d = pred.depth_original(0)
    assert np.isnan(d[:100]).all() and np.isnan(d[300:]).all() and np.isfinite(d[100:300]).all()
    assert ("depth", 0, "nearest") in pred._original_cache  # filled eagerly


def test_point_cloud_sources_thresholds_and_colors() -> None:
    frame = np.full((400, 200, 3), (10, 20, 30), dtype=np.uint8)
    pred = fake_predictor([IDENTITY_ENC, SECOND_ENC]).predict([frame, rgb(100, 200)])
    content = 224 * 112 + 56 * 112
    # depth is x, and column 0 has depth 0 -> still a finite point; conf 1 + x.
    xyz, colors, conf = pred.point_cloud()
    assert xyz.shape == (content, 3) and colors.shape == (content, 3) and conf.shape == (content,)
    assert xyz.dtype == np.float32 and colors.dtype == np.uint8
    first = pred.point_cloud()[1][: 224 * 112]
    assert (first == (10, 20, 30)).all()
    _, _, c_thr = pred.point_cloud(conf_threshold=57.0)  # x >= 56: half the columns
    assert c_thr.min() >= 57.0 and len(c_thr) == content // 2
    _, _, c_pct = pred.point_cloud(percentile=50.0)
    assert len(c_pct) == pytest.approx(content / 2, rel=0.02)
    _, _, c_pts = pred.point_cloud(source="points")
    np.testing.assert_array_equal(np.sort(c_pts), np.sort(conf + 1))  # world_points_conf = 2 + x
    with pytest.raises(ValueError, match="source must be one of"):
        pred.point_cloud(source="mesh")
    with pytest.raises(ValueError, match="percentile must be in"):
        pred.point_cloud(percentile=150)


def test_points_from_depth_unprojects_through_model_intrinsics() -> None:
    pred = fake_predictor([IDENTITY_ENC]).predict([rgb(400, 200)])
    pts = pred.points_from_depth()
    assert pts.shape == (1, 224, 112, 3)
    # Pixel (u=100, v=12), depth 100: x = (100 - 56) / 100 * 100, y = (12 - 112) / 200 * 100.
    np.testing.assert_allclose(pts[0, 12, 100], [44.0, -50.0, 100.0], rtol=1e-6)


# ------------------------------------------------------------------------------------------------
# Validation
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("frames", "match"),
    [
        ([], "empty"),
        ([np.zeros((50, 60, 3), np.int32)], "dtype int32 not supported"),
        ([np.zeros((50, 60, 4), np.uint8)], "expected 3 channels"),
        ([np.zeros((50, 60), np.uint8)], "grayscale"),
        ([np.full((50, 60, 3), np.nan, np.float32)], "NaN"),
        ("frame.png", "expected a sequence"),
    ],
)
def test_bad_frames_raise_value_error(frames, match) -> None:
    with pytest.raises(ValueError, match=match):
        fake_predictor().predict(frames)


@pytest.mark.parametrize(
    ("queries", "match"),
    [
        (np.array([[10.0, 500.0]]), r"outside frame 0 \(250x500 WxH\)"),
        (np.array([[-1.0, 5.0]]), "outside frame 0"),
        (np.array([[1.0, 2.0, 3.0]]), r"must be \[N, 2\]"),
        (np.zeros((0, 2)), "empty"),
        (np.array([[np.nan, 1.0]]), "NaN"),
        (np.array([["a", "b"]]), "numeric"),
    ],
)
def test_bad_query_points_raise_value_error(queries, match) -> None:
    with pytest.raises(ValueError, match=match):
        fake_predictor(target=280).predict([rgb(500, 250)], queries)


def test_query_points_in_cropped_area_rejected() -> None:
    with pytest.raises(ValueError, match="cropped away by mode 'crop'"):
        fake_predictor(mode="crop").predict([rgb(400, 200)], np.array([[100.0, 20.0]]))


def test_track_head_needs_128_px_model_images() -> None:
    # 280x140 model images track fine; 224x112 are too narrow.
    assert fake_predictor(target=280).predict([rgb(500, 250)], np.array([[10.0, 10.0]])).tracks.shape == (
        1,
        1,
        2,
    )
    with pytest.raises(ValueError, match="224x112 are too small for the track head.*128 px"):
        fake_predictor(target=224).predict([rgb(400, 200)], np.array([[10.0, 10.0]]))


def test_queries_without_track_head_rejected() -> None:
    with pytest.raises(ValueError, match="no track head"):
        fake_predictor(with_track=False, target=280).predict([rgb(500, 250)], np.array([[10.0, 10.0]]))


def test_constructor_validation() -> None:
    with pytest.raises(ValueError, match="multiple of 14"):
        Predictor(FakeVGGT([IDENTITY_ENC]), device="cpu", target_size=100)
    with pytest.raises(ValueError, match="unknown preprocess mode"):
        Predictor(FakeVGGT([IDENTITY_ENC]), device="cpu", mode="stretch")
    with pytest.raises(ValueError, match="resample_to_original"):
        fake_predictor().predict([rgb(400, 200)], resample_to_original="cubic")


# ------------------------------------------------------------------------------------------------
# The real (tiny, random) network
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_model() -> VGGT:
    torch.manual_seed(0)
    return VGGT("vggt-tiny").eval()


def test_tiny_model_mixed_sizes_shapes_and_frames(tiny_model: VGGT) -> None:
    # Landscape first (model 140x182, big enough for the tracker), then portrait and square.
    predictor = Predictor(tiny_model, device="cpu", precision="fp32", target_size=182)
    frames = [rgb(120, 160), rgb(200, 120), rgb(70, 70)]
    queries = np.array([[5.0, 5.0], [150.0, 110.0], [80.0, 45.0]])
    pred = predictor.predict(frames, queries, resample_to_original=True)

    assert isinstance(pred, Prediction)
    S, (Hm, Wm) = 3, pred.model_hw
    assert (Hm, Wm) == (140, 182)
    assert pred.cam_to_world.shape == (S, 4, 4) and pred.extrinsics.shape == (S, 3, 4)
    assert pred.intrinsics.shape == pred.model_intrinsics.shape == (S, 3, 3)
    for name in ("depth", "depth_conf", "world_points_conf", "valid_mask"):
        assert getattr(pred, name).shape == (S, Hm, Wm), name
    assert pred.world_points.shape == pred.colors.shape == (S, Hm, Wm, 3)
    assert pred.colors.dtype == np.uint8 and pred.valid_mask.dtype == bool
    assert pred.tracks.shape == (S, 3, 2) and pred.track_vis.shape == pred.track_conf.shape == (S, 3)
    assert pred.original_sizes == [(120, 160), (200, 120), (70, 70)]
    # The portrait frame is fitted into the landscape size: padding left and right is invalid.
    assert not pred.valid_mask[1, :, 0].any() and pred.valid_mask[1, :, Wm // 2].all()
    for i, (h, w) in enumerate(pred.original_sizes):
        assert pred.depth_original(i).shape == (h, w)
    np.testing.assert_allclose(pred.cam_to_world[0], np.eye(4), atol=1e-9)
    for c2w, ext in zip(pred.cam_to_world, pred.extrinsics):
        np.testing.assert_allclose(c2w @ np.vstack([ext, [0, 0, 0, 1]]), np.eye(4), atol=1e-6)
    assert np.isfinite(pred.intrinsics).all()
    assert pred.points_from_depth().shape == (S, Hm, Wm, 3)
    assert set(pred.timings) == {"preprocess_ms", "inference_ms", "postprocess_ms"}
    assert pred.weights["trained"] is False


def test_stage_timer_sees_every_stage_in_run_order(tiny_model: VGGT) -> None:
    from vggt_ros.engine.timing import StageTimer

    predictor = Predictor(tiny_model, device="cpu", precision="fp32", target_size=182)
    timer = StageTimer(torch.device("cpu"))
    predictor.predict([rgb(280, 364), rgb(280, 364)], np.array([[20.0, 30.0]]), timer=timer)
    ms = timer.results()
    # "inference" closes after the network's own stages, which it contains.
    network_stages = ["aggregator", "camera", "depth", "points", "tracks"]
    assert list(ms) == ["preprocess", *network_stages, "inference", "postprocess"]
    assert all(v > 0 for v in ms.values())
    network = sum(ms[k] for k in network_stages)
    assert network <= ms["inference"]


def test_from_checkpoint_untrained_reports_it() -> None:
    predictor = Predictor.from_checkpoint(None, config="vggt-tiny", device="cpu", target_size=112)
    assert predictor.precision == "fp32" and predictor.device.type == "cpu"
    pred = predictor.predict([rgb(60, 80)])
    assert pred.weights["trained"] is False and pred.weights["config"] == "vggt-tiny"
    assert pred.depth.shape == (1, 84, 112)


def test_frame_descriptors_are_per_frame_encoder_means(tiny_model: VGGT) -> None:
    predictor = Predictor(tiny_model, device="cpu", precision="fp32", target_size=182)
    a, b, c = rgb(120, 160), rgb(120, 160) // 2, rgb(120, 160)[::-1].copy()
    both = predictor.frame_descriptors([a, b, c], chunk=2)
    assert both.shape == (3, tiny_model.config.embed_dim) and both.dtype == np.float32
    # No cross-frame attention: a frame's descriptor does not depend on the frames beside it.
    np.testing.assert_allclose(predictor.frame_descriptors([b])[0], both[1], rtol=1e-5, atol=1e-6)
    assert not np.allclose(both[0], both[1])
    with pytest.raises(ValueError, match="at least one frame"):
        predictor.frame_descriptors([])


def test_point_head_option_skips_only_the_point_map(tiny_model: VGGT) -> None:
    """Runner option ``point_head=False`` (the node's and ``vggt-ros eval``'s: the mapping
    pipeline unprojects depth): no point-map stage, no point map, everything else identical."""
    from vggt_ros.engine.timing import StageTimer

    frames = [rgb(280, 364) for _ in range(3)]
    full = Predictor(tiny_model, device="cpu", precision="fp32", target_size=182)
    lean = Predictor(
        tiny_model, device="cpu", precision="fp32", target_size=182, runner_options={"point_head": False}
    )
    timer = StageTimer(torch.device("cpu"))
    a, b = full.predict(frames), lean.predict(frames, timer=timer)
    assert "points" not in timer.results() and "depth" in timer.results()
    assert a.world_points is not None and b.world_points is None and b.world_points_conf is None
    np.testing.assert_array_equal(a.depth, b.depth)
    np.testing.assert_array_equal(a.depth_conf, b.depth_conf)
    np.testing.assert_array_equal(a.cam_to_world, b.cam_to_world)
    assert b.points_from_depth().shape == a.world_points.shape


def test_on_model_inputs_sees_the_colors_and_padding_before_the_network(tiny_model: VGGT) -> None:
    """The callback gets the model inputs (the later ``Prediction.colors``) and their content
    masks once, before the network runs (so the pose refinement's keypoints can be found
    meanwhile), and changes nothing."""
    predictor = Predictor(tiny_model, device="cpu", precision="fp32", mode="pad", target_size=182)
    frames = [rgb(120, 200), rgb(120, 200)]
    seen: list[tuple[np.ndarray, np.ndarray, int]] = []
    calls = {"network": 0}
    run = predictor.runner.run

    def counting_run(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls["network"] += 1
        return run(*args, **kwargs)

    predictor.runner.run = counting_run
    contiguous = []
    with_callback = predictor.predict(
        frames,
        on_model_inputs=lambda c, m: (
            contiguous.append(c.flags.c_contiguous),
            seen.append((c.copy(), m.copy(), calls["network"])),
        ),
    )
    # C-contiguous: the refinement converts each frame to grey without copying it first
    assert contiguous == [True] and with_callback.colors.flags.c_contiguous
    del predictor.runner.run
    plain = predictor.predict(frames)
    assert len(seen) == 1 and calls["network"] == 1
    colors, content, network_calls_before = seen[0]
    assert network_calls_before == 0
    assert colors.dtype == np.uint8 and colors.shape == with_callback.colors.shape
    np.testing.assert_array_equal(colors, with_callback.colors)
    np.testing.assert_array_equal(content, np.stack([t.content_mask() for t in with_callback.transforms]))
    assert not content.all() and content.any()  # "pad" left padding rows
    np.testing.assert_array_equal(with_callback.depth, plain.depth)
    np.testing.assert_array_equal(with_callback.cam_to_world, plain.cam_to_world)
