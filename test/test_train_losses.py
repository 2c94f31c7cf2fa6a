"""Training targets and losses (vggt_ros.train.targets / .losses)."""

from __future__ import annotations

import math

import pytest
import torch

from vggt_ros.eval.procedural import ProceduralSettings, render_windows, window_seeds
from vggt_ros.eval.window_metrics import window_depth_errors
from vggt_ros.geometry import pose_encoding_to_extrinsics_intrinsics
from vggt_ros.train.data import ProceduralSource
from vggt_ros.train.losses import (
    LossWeights,
    camera_loss,
    log_depth_loss,
    regression_loss,
    total_loss,
    track_loss,
)
from vggt_ros.train.targets import WindowBatch, normalize_window, unproject_depth

SETTINGS = ProceduralSettings(height=28, width=42, frames=3, track_queries=8)


@pytest.fixture(scope="module")
def batch() -> WindowBatch:
    return ProceduralSource(SETTINGS, seed=4).windows(range(3), "cpu")


def test_targets_are_in_camera_zero_at_unit_mean_distance(batch: WindowBatch) -> None:
    t = normalize_window(batch)
    torch.testing.assert_close(t.extrinsics[:, 0], torch.eye(4)[:3].expand(3, 3, 4), atol=1e-6, rtol=0)
    dist = t.world_points.norm(dim=-1)
    mean = (dist * t.valid).sum(dim=(1, 2, 3)) / t.valid.sum(dim=(1, 2, 3))
    torch.testing.assert_close(mean, torch.ones(3), atol=1e-5, rtol=0)
    # Depth, cameras and points agree: unprojecting depth with the extrinsics gives the points.
    R, tr = t.extrinsics[..., :3], t.extrinsics[..., 3]
    cam = unproject_depth(t.depth, t.intrinsics)
    world = torch.einsum("bsji,bshwj->bshwi", R, cam - tr[:, :, None, None])
    torch.testing.assert_close(world, t.world_points, atol=1e-4, rtol=1e-4)
    # The pose encoding decodes back to the extrinsics.
    extr, _ = pose_encoding_to_extrinsics_intrinsics(t.pose_enc.double(), (28, 42))
    torch.testing.assert_close(extr.float(), t.extrinsics, atol=1e-5, rtol=0)
    # Scale removes the metric: scaling the world by 3 changes nothing but `scale`.
    bigger = WindowBatch(**{**vars(batch)})
    bigger.cam_to_world = batch.cam_to_world.clone()
    bigger.cam_to_world[..., :3, 3] *= 3.0
    bigger.depth = batch.depth * 3.0
    t3 = normalize_window(bigger)
    torch.testing.assert_close(t3.pose_enc, t.pose_enc, atol=1e-5, rtol=0)
    torch.testing.assert_close(t3.scale, 3.0 * t.scale, atol=1e-4, rtol=1e-5)


def test_targets_without_depth_scale_by_camera_centres(batch: WindowBatch) -> None:
    posed = WindowBatch(images=batch.images, cam_to_world=batch.cam_to_world, intrinsics=batch.intrinsics)
    t = normalize_window(posed)
    assert t.depth is None and t.world_points is None and bool(t.frame_valid.all())
    centres = torch.linalg.inv(torch.cat((t.extrinsics, torch.tensor([0, 0, 0, 1.0]).expand(3, 3, 1, 4)), -2))
    torch.testing.assert_close(centres[..., :3, 3].norm(dim=-1).mean(dim=1), torch.ones(3), atol=1e-5, rtol=0)


def _perfect_outputs(t, conf: float = 2.0, iterations: int = 4) -> dict:
    b, s, h, w = t.depth.shape
    return {
        "pose_enc_list": [t.pose_enc.clone() for _ in range(iterations)],
        "depth": t.depth[..., None].clone(),
        "depth_conf": torch.full((b, s, h, w), conf),
        "world_points": t.world_points.clone(),
        "world_points_conf": torch.full((b, s, h, w), conf),
        "track_list": [t.tracks.clone() for _ in range(iterations)],
        "vis": t.track_visible.float().clamp(1e-4, 1 - 1e-4),
        "conf": torch.full_like(t.track_visible, 0.9999, dtype=torch.float32),
    }


def test_perfect_predictions_leave_only_the_confidence_prior(batch: WindowBatch) -> None:
    t = normalize_window(batch)
    w = LossWeights()
    _, terms = total_loss(_perfect_outputs(t), t, w)
    for key in ("camera", "camera_T", "camera_R", "camera_FL", "depth_reg", "point_reg", "track"):
        assert float(terms[key]) == pytest.approx(0.0, abs=1e-6), key
    # conf * 0 - alpha * log(conf), on the value term and on every gradient scale.
    prior = -w.alpha * math.log(2.0)
    assert float(terms["depth_conf"]) == pytest.approx(prior, rel=1e-5)
    assert float(terms["depth_grad"]) == pytest.approx(prior, rel=1e-5)
    assert float(terms["track_vis"]) < 1e-3 and float(terms["track_conf"]) < 1e-3


def test_camera_loss_weights_later_iterations_more(batch: WindowBatch) -> None:
    t = normalize_window(batch)
    w = LossWeights(camera_gamma=0.5)
    wrong = t.pose_enc + 0.3
    first_wrong = camera_loss([wrong, t.pose_enc, t.pose_enc], t, w)["camera"]
    last_wrong = camera_loss([t.pose_enc, t.pose_enc, wrong], t, w)["camera"]
    torch.testing.assert_close(first_wrong * 4, last_wrong)  # gamma ** 2 = 1 / 4
    # Huber: quadratic below delta, linear above.
    small = camera_loss([t.pose_enc + 0.01], t, w)["camera_T"]
    large = camera_loss([t.pose_enc + 1.0], t, w)["camera_T"]
    torch.testing.assert_close(small, torch.full_like(small, 0.5 * 0.01**2 / w.camera_huber_delta))
    torch.testing.assert_close(large, torch.full_like(large, 1.0 - 0.5 * w.camera_huber_delta))


def test_confidence_trades_error_for_log_prior(batch: WindowBatch) -> None:
    t = normalize_window(batch)
    mask = t.valid
    w = LossWeights(quantile=1.0)
    pred = t.depth[..., None] + 0.1

    # For a constant error e the best confidence is alpha / e: the loss there is lower than at
    # twice or half of it.
    def at(c: float) -> float:
        conf = torch.full(t.depth.shape, c)
        return float(regression_loss(pred, conf, t.depth[..., None], mask, w, "d")["d_conf"].mean())

    best = w.alpha / 0.1
    assert at(best) < at(2 * best) and at(best) < at(best / 2)


def test_quantile_drops_outliers(batch: WindowBatch) -> None:
    t = normalize_window(batch)
    pred = t.depth[..., None].clone()
    pred[:, :, :2] += 50.0  # two of 28 image rows (7 % of the pixels) are gross outliers
    conf = torch.ones(t.depth.shape)
    kept = regression_loss(pred, conf, t.depth[..., None], t.valid, LossWeights(quantile=0.9), "d")["d_reg"]
    full = regression_loss(pred, conf, t.depth[..., None], t.valid, LossWeights(quantile=1.0), "d")["d_reg"]
    assert float(kept.max()) < 1e-5 < float(full.min())


def test_track_loss_is_l1_on_visible_points_only(batch: WindowBatch) -> None:
    t = normalize_window(batch)
    shifted = t.tracks.clone()
    shifted[~t.track_visible] += 100.0  # errors where the point is hidden do not count
    out = track_loss(
        [shifted],
        t.track_visible.float(),
        torch.full_like(t.track_visible, 0.5, dtype=torch.float32),
        t,
        LossWeights(),
    )
    assert float(out["track"].max()) < 1e-6
    off = track_loss(
        [t.tracks + 2.0],
        t.track_visible.float(),
        torch.ones_like(t.track_visible, dtype=torch.float32),
        t,
        LossWeights(),
    )
    torch.testing.assert_close(off["track"], torch.full((3,), 2.0))


def test_batch_loss_is_the_mean_of_window_losses(batch: WindowBatch) -> None:
    """Per-window averaging: splitting a batch (as DDP does) gives the same mean loss."""
    t = normalize_window(batch)
    torch.manual_seed(0)
    out = _perfect_outputs(t)
    out["depth"] = out["depth"] * (1 + 0.3 * torch.rand_like(out["depth"]))
    out["pose_enc_list"] = [p + 0.05 * torch.randn_like(p) for p in out["pose_enc_list"]]
    whole, _ = total_loss(out, t, LossWeights())
    parts = []
    for i in range(3):
        sub = normalize_window(batch.select(slice(i, i + 1)))
        sub_out = {
            k: [x[i : i + 1] for x in v] if isinstance(v, list) else v[i : i + 1] for k, v in out.items()
        }
        parts.append(total_loss(sub_out, sub, LossWeights())[0])
    torch.testing.assert_close(whole, torch.stack(parts).mean(), atol=1e-5, rtol=1e-5)


def test_renderer_tracks_feed_the_targets() -> None:
    r = render_windows(SETTINGS, window_seeds(0, range(2)))
    assert r.tracks.shape == (2, 3, 8, 2) and r.track_visible.dtype == torch.bool


def _tokens_matching(t, patch: int, noise: float, seed: int = 0):
    """[B, S, 1 + P, C] tokens whose frame-k patch holding a track point repeats the frame-0
    token of its query patch (plus ``noise``); every other token is random."""
    g = torch.Generator().manual_seed(seed)
    b, s = t.images.shape[:2]
    gh, gw = t.images.shape[-2] // patch, t.images.shape[-1] // patch
    tokens = torch.randn(b, s, 1 + gh * gw, 32, generator=g)

    def cell(xy):
        return (xy[..., 1] // patch).clamp(0, gh - 1).long() * gw + (xy[..., 0] // patch).clamp(
            0, gw - 1
        ).long()

    q = cell(t.query_points)
    for i in range(b):
        for k in range(1, s):
            for n in range(q.shape[1]):
                if t.track_visible[i, k, n]:
                    target = cell(t.tracks[i, k, n])
                    tokens[i, k, 1 + target] = tokens[i, 0, 1 + q[i, n]] + noise * torch.randn(
                        32, generator=g
                    )
    return tokens


def test_match_loss_rewards_tokens_that_agree_across_views(batch: WindowBatch) -> None:
    from vggt_ros.train.losses import match_loss

    t = normalize_window(batch)
    patch = 7  # 28x42 images: a 4x6 grid
    w = LossWeights(match=1.0)
    good = match_loss(_tokens_matching(t, patch, 0.0), 1, patch, t, w)
    # Every visible point finds its patch, but for the few whose patch another query's token
    # overwrote (8 queries on a 4x6 grid share cells now and then).
    assert float(good["match_acc"].min()) > 0.85
    random = match_loss(torch.randn_like(_tokens_matching(t, patch, 0.0)), 1, patch, t, w)
    assert float(random["match_acc"].mean()) < 0.5
    assert float(good["match"].mean()) < float(random["match"].mean()) - 1.0
    # Per-window values, and in total_loss only with a positive weight and track targets.
    assert good["match"].shape == (3,)
    tokens = (_tokens_matching(t, patch, 0.5), 1, patch)
    with_match, terms = total_loss({"match_tokens": tokens}, t, w)
    assert "match" in terms and "match_acc" in terms
    torch.testing.assert_close(with_match, good["match"].new_tensor(float(terms["match"])))


def test_match_loss_reaches_the_global_attention() -> None:
    """The correspondence signal flows into the global blocks (the cross-frame path the camera
    loss alone fails to train; docs/training.md)."""
    from vggt_ros.model import VGGT, VGGT_TINY
    from vggt_ros.train.trainer import TrainingModel

    settings = ProceduralSettings(height=56, width=56, frames=2, track_queries=16)
    t = normalize_window(ProceduralSource(settings, seed=1).windows(range(2), "cpu"))
    torch.manual_seed(0)
    model = TrainingModel(VGGT(VGGT_TINY), ("camera",), match=True)
    out = model(t.images)
    assert "match_tokens" in out
    objective, terms = total_loss({"match_tokens": out["match_tokens"]}, t, LossWeights(match=1.0))
    objective.backward()
    grads = [p.grad for p in model.model.aggregator.global_blocks.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0
    assert 0.0 <= float(terms["match_acc"]) <= 1.0


def test_flow_loss_reads_each_patch_displacement_back_to_frame_zero(batch: WindowBatch) -> None:
    """Tokens whose readout channels (the first two of the global half) hold each track's
    displacement to frame 0 in patch units score near 0; random tokens far more; the loss is
    per window and enters total_loss only with its tokens."""
    from vggt_ros.train.losses import flow_loss

    t = normalize_window(batch)
    patch, dim = 7, 16  # 28x42 images: a 4x6 grid
    b, s = t.images.shape[:2]
    gh, gw = t.images.shape[-2] // patch, t.images.shape[-1] // patch
    good = torch.randn(b, s, 1 + gh * gw, 2 * dim, generator=torch.Generator().manual_seed(0))
    random = good.clone()
    for i in range(b):
        for k in range(1, s):
            for n in range(t.query_points.shape[1]):
                x, y = t.tracks[i, k, n].tolist()
                if t.track_visible[i, k, n] and 0 <= x < gw * patch and 0 <= y < gh * patch:
                    cell = int(y // patch) * gw + int(x // patch)
                    good[i, k, 1 + cell, dim : dim + 2] = (t.query_points[i, n] - t.tracks[i, k, n]) / patch
    right, wrong = flow_loss(good, 1, patch, t), flow_loss(random, 1, patch, t)
    assert right["flow"].shape == (b,)
    # Points sharing a cell disagree a little; random readouts miss by about a patch.
    assert float(right["flow"].mean()) < 0.3 * float(wrong["flow"].mean())
    assert float(right["flow_px"].mean()) < float(wrong["flow_px"].mean())
    objective, terms = total_loss({"flow_tokens": (good, 1, patch)}, t, LossWeights(flow=2.0))
    torch.testing.assert_close(objective, 2.0 * right["flow"].mean())
    assert "flow_px" in terms
    assert "flow" not in total_loss({}, t, LossWeights(flow=2.0))[1]


def test_flow_loss_reaches_the_global_blocks() -> None:
    """The training forward hands out the second-to-last layer for the flow loss and its
    gradient reaches the global blocks (the cross-frame path)."""
    from vggt_ros.model import VGGT, VGGT_TINY
    from vggt_ros.train.trainer import TrainingModel

    settings = ProceduralSettings(height=56, width=56, frames=2, track_queries=16)
    t = normalize_window(ProceduralSource(settings, seed=1).windows(range(2), "cpu"))
    torch.manual_seed(0)
    model = TrainingModel(VGGT(VGGT_TINY), ("camera",), flow=True)
    out = model(t.images)
    tokens = out["flow_tokens"][0]
    assert tokens.shape[:2] == (2, 2)
    objective, _ = total_loss({"flow_tokens": out["flow_tokens"]}, t, LossWeights(flow=1.0))
    objective.backward()
    last_global = model.model.aggregator.global_blocks[VGGT_TINY.aggregator.depth - 2]
    assert sum(float(p.grad.abs().sum()) for p in last_global.parameters() if p.grad is not None) > 0


def test_log_depth_loss_ignores_each_windows_scale_and_weighs_near_and_far_alike(batch: WindowBatch) -> None:
    t = normalize_window(batch)
    w = LossWeights(depth_log=1.0)
    outputs = _perfect_outputs(t)
    # A different scale per window costs nothing: the card's metric aligns it away.
    per_window = torch.tensor([0.5, 1.0, 3.0]).view(3, 1, 1, 1, 1)
    outputs["depth"] = t.depth[..., None] * per_window
    _, terms = total_loss(outputs, t, w)
    assert float(terms["depth_log"]) == pytest.approx(0.0, abs=1e-6)
    assert float(terms["depth_reg"]) > 0.1  # the official term is not scale-free
    # A 10 % error costs the same on a near pixel and on a far one (L1 in depth units does not).
    mask = t.valid & t.frame_valid[..., None, None]
    near = mask & (t.depth < t.depth[mask].median())
    for region in (near, mask & ~near):
        wrong = t.depth.clone()
        wrong[region] *= 1.1
        outputs["depth"] = wrong[..., None]
        _, terms = total_loss(outputs, t, w)
        share = region.float().sum() / mask.float().sum()
        # |log 1.1| on the region's pixels (the median shift stays 0: under half of them moved,
        # or all of the far half when the median lies in it, which is no larger than this).
        assert 0.0 < float(terms["depth_log"]) <= math.log(1.1) * float(share) * 1.05 + 1e-6
    # Off by default: the official recipe has no such term.
    _, terms = total_loss(_perfect_outputs(t), t, LossWeights())
    assert "depth_log" not in terms


def test_log_depth_loss_gradient_lowers_the_aligned_abs_rel(batch: WindowBatch) -> None:
    t = normalize_window(batch)
    mask = t.valid & t.frame_valid[..., None, None]
    noise = torch.exp(0.3 * torch.randn(t.depth.shape, generator=torch.Generator().manual_seed(0)))
    log_depth = torch.log(t.depth.clamp_min(1e-3) * noise * 2.0).requires_grad_(True)
    opt = torch.optim.SGD([log_depth], lr=200.0)

    def abs_rel() -> float:
        d = log_depth.detach().exp()
        return window_depth_errors(d[0].numpy(), t.depth[0].numpy(), mask[0].numpy())[0]

    before = abs_rel()
    for _ in range(20):
        loss = log_depth_loss(log_depth.exp(), t.depth, mask, LossWeights(depth_log=1.0)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert abs_rel() < 0.5 * before
