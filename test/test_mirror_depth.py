"""Depth averaged with the mirror image's (runner option ``mirror_depth``,
vggt_ros.engine.mirror_depth): the combination itself, the runner's two passes, the frame cache
beside it, and the options that reach it (CLI, node parameter)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vggt_ros.engine.mirror_depth import (
    mirror_average_depth,
    mirror_images,
    mirror_keys,
    mirror_query_points,
)
from vggt_ros.engine.predictor import Predictor
from vggt_ros.engine.runner import ModelRunner
from vggt_ros.eval.synthetic import render_sequence
from vggt_ros.model.vggt import VGGT


def _depth(
    b: int = 2, s: int = 3, h: int = 5, w: int = 7, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    depth = 1.0 + 4.0 * torch.rand(b, s, h, w, 1, generator=g)
    conf = 1.0 + torch.rand(b, s, h, w, generator=g)
    return depth, conf


def test_a_mirror_consistent_prediction_is_kept() -> None:
    depth, conf = _depth()
    # The mirrored pass saw the same scene flipped, at twice the scale: once flipped back and
    # brought to scale, it says the same thing.
    mirrored_depth, mirrored_conf = 2.0 * depth.flip(-2), conf.flip(-1)
    out, out_conf = mirror_average_depth(depth, conf, mirrored_depth, mirrored_conf)
    torch.testing.assert_close(out, depth)
    torch.testing.assert_close(out_conf, conf)


def test_estimates_are_weighted_by_confidence_after_the_scale_match() -> None:
    depth = torch.ones(1, 1, 2, 4, 1)
    conf = torch.ones(1, 1, 2, 4)
    other = depth.clone()
    other[0, 0, 0, 0, 0] = 3.0  # one pixel disagrees (left column; the mirror pass sees it on the right)
    other_conf = conf.clone()
    other_conf[0, 0, 0, 0] = 3.0
    out, out_conf = mirror_average_depth(depth, conf, other.flip(-2), other_conf.flip(-1))
    expected = depth.clone()
    expected[0, 0, 0, 0, 0] = (1.0 * 1.0 + 3.0 * 3.0) / 4.0  # the median ratio stays 1
    torch.testing.assert_close(out, expected)
    assert out_conf[0, 0, 0, 0] == 2.0 and out_conf[0, 0, 1, 1] == 1.0


def test_the_scale_match_is_per_window_and_ignores_unusable_pixels() -> None:
    depth, conf = _depth(b=2)
    mirrored = depth.flip(-2).clone()
    mirrored[1] *= 0.5
    mirrored[0, 0, 0, 0, 0] = float("nan")  # flipped back: the last column of the first row
    out, _ = mirror_average_depth(depth, conf, mirrored, conf.flip(-1))
    torch.testing.assert_close(out[1], depth[1])
    torch.testing.assert_close(out[0, :, :, :-1], depth[0, :, :, :-1])
    assert torch.isnan(out[0, 0, 0, -1, 0])  # NaN stays NaN (the predictor marks it invalid)


def test_mismatched_shapes_are_refused() -> None:
    depth, conf = _depth()
    with pytest.raises(ValueError, match="do not match"):
        mirror_average_depth(depth, conf, depth[:, :2], conf[:, :2])


def test_mirror_helpers() -> None:
    images = torch.arange(2 * 3 * 2 * 4, dtype=torch.float32).reshape(1, 2, 3, 2, 4)
    assert torch.equal(mirror_images(images)[..., 0], images[..., 3])
    assert torch.equal(mirror_images(mirror_images(images)), images)
    q = torch.tensor([[0.0, 5.0], [9.0, 1.0], [4.5, 2.0]])
    assert torch.equal(mirror_query_points(q, 10), torch.tensor([[9.0, 5.0], [0.0, 1.0], [4.5, 2.0]]))
    assert mirror_keys(None) is None
    assert mirror_keys([3, "a"]) == [("mirrored", 3), ("mirrored", "a")]


@pytest.fixture(scope="module")
def tiny_model() -> VGGT:
    torch.manual_seed(0)
    return VGGT("vggt-tiny").eval()


def _runner(model: VGGT, **options) -> ModelRunner:  # noqa: ANN003
    twin = VGGT("vggt-tiny").eval()
    twin.load_state_dict(model.state_dict())
    return ModelRunner(twin, "cpu", "fp32", options=options)


def test_the_runner_averages_its_two_passes_and_keeps_the_cameras(tiny_model) -> None:
    images = torch.rand(1, 3, 3, 140, 168, generator=torch.Generator().manual_seed(1))
    queries = torch.tensor([[[10.0, 20.0], [40.0, 30.0]]])
    plain = _runner(tiny_model)
    mirrored = _runner(tiny_model, mirror_depth=True)
    assert mirrored.mirror_depth and not plain.mirror_depth
    a = plain.run(images, queries)
    b = plain.run(mirror_images(images), mirror_query_points(queries, 168))
    out = mirrored.run(images, queries)
    depth, conf = mirror_average_depth(a["depth"], a["depth_conf"], b["depth"], b["depth_conf"])
    assert torch.equal(out["depth"], depth) and torch.equal(out["depth_conf"], conf)
    assert not torch.equal(out["depth"], a["depth"])  # the mirrored pass did change the depth
    assert torch.equal(out["depth_unflipped"], a["depth"]) and "depth_unflipped" not in a
    for key in ("pose_enc", "world_points", "track", "vis"):
        assert torch.equal(out[key], a[key]), key


def test_cached_mirrored_windows_equal_uncached_bit_for_bit(tiny_model) -> None:
    frames = list(render_sequence(8, 112, 140, seed=4, path="orbit").images)
    options = dict(device="cpu", precision="fp32", target_size=140)
    twin = VGGT("vggt-tiny").eval()
    twin.load_state_dict(tiny_model.state_dict())
    cached = Predictor(twin, runner_options={"frame_cache": 4, "mirror_depth": True}, **options)
    plain = Predictor(tiny_model, runner_options={"mirror_depth": True}, **options)
    assert cached.runner.frame_cache.capacity == 8  # room for every frame's mirror image too
    for start in (0, 2, 4):
        keys = list(range(start, start + 4))
        a = cached.predict(frames[start : start + 4], frame_keys=keys)
        b = plain.predict(frames[start : start + 4])
        for name in ("cam_to_world", "depth", "depth_conf", "depth_unflipped"):
            assert np.array_equal(getattr(a, name), getattr(b, name)), name
        assert a.depth_unflipped is not None and not np.array_equal(a.depth_unflipped, a.depth)
    stats = cached.runner.frame_cache.stats
    # Each frame and its mirror image are encoded once: 3 windows of 4, overlapping by 2.
    assert (stats.misses, stats.hits) == (2 * 8, 2 * 4)


def test_the_cli_option_reaches_the_runner() -> None:
    import argparse

    from vggt_ros.eval.model_options import add_model_options, predictor_from_options

    parser = argparse.ArgumentParser()
    add_model_options(parser)
    args = parser.parse_args(["--untrained", "--config", "vggt-tiny", "--device", "cpu", "--mirror-depth"])
    predictor = predictor_from_options(args)
    assert predictor.runner.mirror_depth and "mirror" in predictor.weights["depth"]
    args = parser.parse_args(["--untrained", "--config", "vggt-tiny", "--device", "cpu"])
    assert not predictor_from_options(args).runner.mirror_depth
