"""Tests of the iterative correlation tracker (``vggt_ros.model.tracker``).

Numerical parity with the official tracker is checked outside the repository (the official code
is not a dependency). These tests pin down the checkpoint layout, the sampling / embedding
conventions the released weights rely on, and structural properties of the network that hold for
any weights: batch independence, permutation equivariance over tracks and over non-query frames.

With the seeded random weights used here the refinement loop amplifies rounding differences by
~100x per iteration (see the tracker's module docstring), so comparisons between two
differently-batched runs use one iteration with those weights, or the module's own
initialisation (tiny position steps, but O(1) descriptor updates) for all iterations.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from vggt_ros.model.config import VGGT_TINY, TrackHeadConfig
from vggt_ros.model.tracker import CorrelationPyramid, CorrelationTracker
from vggt_ros.model.tracker_blocks import (
    correlation_window_offsets,
    displacement_embedding,
    sample_point_features,
    sincos_grid_embedding,
)

PREFIX = "track_head.tracker."
TINY = VGGT_TINY.track


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def _seed_weights(module: torch.nn.Module, seed: int) -> None:
    """Deterministic non-trivial weights (scaled like the parity fixture's recipe)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            values = torch.randn(tensor.shape, generator=gen)
            if values.dim() >= 2:
                values = values / math.sqrt(values[0].numel())
            elif name.endswith("weight"):
                values = 1.0 + 0.1 * values
            else:
                values = 0.05 * values
            tensor.copy_(values)


def _inputs(cfg: TrackHeadConfig, batch: int, frames: int, tracks: int, height: int, width: int, seed: int):
    """Random feature maps [B, S, C, H, W] and query points [B, N, 2] inside the image."""
    gen = torch.Generator().manual_seed(seed)
    fmaps = torch.randn(batch, frames, cfg.features, height, width, generator=gen)
    image_max = torch.tensor([width * cfg.stride - 1.0, height * cfg.stride - 1.0])
    queries = torch.rand(batch, tracks, 2, generator=gen) * image_max
    return queries, fmaps


def _tracker(cfg: TrackHeadConfig, seed: int | None) -> CorrelationTracker:
    torch.manual_seed(1234)
    model = CorrelationTracker(cfg).eval()
    if seed is not None:
        _seed_weights(model, seed)
    return model


# ---------------------------------------------------------------------------------- checkpoint


def test_state_dict_matches_official_manifest(parity_dir: Path) -> None:
    manifest = json.loads((parity_dir / "vggt1b_state_dict_manifest.json").read_text())
    expected = {key[len(PREFIX) :]: shape for key, shape in manifest if key.startswith(PREFIX)}
    assert expected, "manifest has no tracker entries"
    ours = {
        key: list(value.shape) for key, value in CorrelationTracker(TrackHeadConfig()).state_dict().items()
    }
    assert sorted(ours) == sorted(expected)
    mismatched = {key: (ours[key], expected[key]) for key in expected if ours[key] != expected[key]}
    assert not mismatched


def test_tiny_config_builds_with_scaled_shapes() -> None:
    state = CorrelationTracker(TINY).state_dict()
    token_dim = 3 * TINY.features + 4
    window = (2 * TINY.corr_radius + 1) ** 2
    assert state["query_ref_token"].shape == (1, 2, token_dim)
    assert state["corr_mlp.fc1.weight"].shape == (TINY.hidden_size, TINY.corr_levels * window)
    assert state["updateformer.virual_tracks"].shape == (1, TINY.num_virtual_tracks, 1, TINY.hidden_size)
    assert state["updateformer.flow_head.weight"].shape == (TINY.features + 2, TINY.hidden_size)
    assert sum(key.startswith("updateformer.time_blocks.") for key in state) == 12 * TINY.depth


# ---------------------------------------------------------------------------------- conventions


def test_window_offsets_walk_x_slowly() -> None:
    offsets = correlation_window_offsets(1, torch.device("cpu"), torch.float32)
    expected = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 0), (0, 1), (1, -1), (1, 0), (1, 1)]
    assert offsets.tolist() == [[float(dx), float(dy)] for dx, dy in expected]


def test_correlation_lookup_matches_direct_dot_products() -> None:
    """At integer centres the lookup is a plain dot product with window pixels, zero outside."""
    gen = torch.Generator().manual_seed(0)
    batch, frames, tracks, channels, height, width, radius = 1, 2, 3, 8, 8, 12, 1
    fmaps = torch.randn(batch, frames, channels, height, width, generator=gen)
    desc = torch.randn(batch, frames, tracks, channels, generator=gen)
    coords = torch.tensor([[0.0, 0.0], [5.0, 3.0], [11.0, 7.0]]).expand(batch, frames, tracks, 2)
    out = CorrelationPyramid(fmaps, levels=2, radius=radius).lookup(desc, coords)
    assert out.shape == (batch, frames, tracks, 2 * 9)

    pooled = torch.nn.functional.avg_pool2d(fmaps[0], 2)  # level 1, [S, C, H/2, W/2]
    for s in range(frames):
        for n in range(tracks):
            for level, maps in enumerate((fmaps[0, s], pooled[s])):
                cx, cy = (coords[0, s, n] / 2**level).tolist()
                for cell, (dx, dy) in enumerate(
                    correlation_window_offsets(radius, fmaps.device, fmaps.dtype)
                ):
                    x, y = cx + dx.item(), cy + dy.item()
                    if (
                        x.is_integer()
                        and y.is_integer()
                        and 0 <= x < maps.shape[2]
                        and 0 <= y < maps.shape[1]
                    ):
                        want = (desc[0, s, n] @ maps[:, int(y), int(x)]).item() / math.sqrt(channels)
                    elif x <= -1 or y <= -1 or x >= maps.shape[2] or y >= maps.shape[1]:
                        want = 0.0  # every interpolation corner lies outside the map
                    else:
                        continue  # fractional level-1 centre: interpolated, checked elsewhere
                    got = out[0, s, n, level * 9 + cell].item()
                    assert got == pytest.approx(want, abs=1e-5), (s, n, level, cell)


def test_correlation_lookup_interpolates_bilinearly() -> None:
    gen = torch.Generator().manual_seed(1)
    fmaps = torch.randn(1, 1, 4, 6, 6, generator=gen)
    desc = torch.randn(1, 1, 1, 4, generator=gen)
    pyramid = CorrelationPyramid(fmaps, levels=1, radius=0)
    corners = [
        pyramid.lookup(desc, torch.tensor([[[[x, y]]]])).item() for x, y in ((2, 3), (3, 3), (2, 4), (3, 4))
    ]
    got = pyramid.lookup(desc, torch.tensor([[[[2.25, 3.5]]]])).item()
    want = 0.5 * (0.75 * corners[0] + 0.25 * corners[1]) + 0.5 * (0.75 * corners[2] + 0.25 * corners[3])
    assert got == pytest.approx(want, abs=1e-6)


def test_pyramid_rejects_too_small_maps() -> None:
    with pytest.raises(ValueError, match="too small"):
        CorrelationPyramid(torch.zeros(1, 1, 4, 32, 80), levels=7, radius=4)


def test_point_sampling_uses_pixel_centres_and_clamps() -> None:
    maps = torch.arange(12.0).reshape(1, 1, 3, 4)  # value = 4 * row + col
    points = torch.tensor([[[0.0, 0.0], [3.0, 2.0], [1.5, 0.5], [-5.0, 1.0], [10.0, 10.0]]])
    got = sample_point_features(maps, points)[0, :, 0]
    assert got.tolist() == pytest.approx([0.0, 11.0, 3.5, 4.0, 11.0])


def test_displacement_embedding_layout() -> None:
    offsets = torch.tensor([[0.3, -1.7]])
    emb = displacement_embedding(offsets, 8)  # per axis: 4 frequencies 0, 250, 500, 750
    assert emb.shape == (1, 16)
    freqs = [0.0, 250.0, 500.0, 750.0]
    for axis, value in enumerate((0.3, -1.7)):
        for j, f in enumerate(freqs):
            angle = torch.tensor(value, dtype=torch.float32) * f
            assert emb[0, axis * 8 + 2 * j].item() == pytest.approx(math.sin(angle.item()), abs=1e-6)
            assert emb[0, axis * 8 + 2 * j + 1].item() == pytest.approx(math.cos(angle.item()), abs=1e-6)


def test_grid_embedding_layout() -> None:
    dim, height, width = 12, 3, 5
    table = sincos_grid_embedding(dim, height, width)
    assert table.shape == (dim, height, width) and table.dtype == torch.float32
    freqs = [10000.0 ** (-k / 3) for k in range(3)]
    row, col = 2, 4
    want = (
        [math.sin(col * f) for f in freqs]
        + [math.cos(col * f) for f in freqs]
        + [math.sin(row * f) for f in freqs]
        + [math.cos(row * f) for f in freqs]
    )
    assert table[:, row, col].tolist() == pytest.approx(want, abs=1e-6)


# ---------------------------------------------------------------------------------- forward


@pytest.mark.parametrize("cfg", [TrackHeadConfig(), TINY], ids=["vggt-1b", "tiny"])
def test_output_shapes_and_ranges(cfg: TrackHeadConfig) -> None:
    model = _tracker(cfg, seed=0)
    queries, fmaps = _inputs(cfg, batch=2, frames=3, tracks=5, height=64, width=70, seed=1)
    with torch.no_grad():
        tracks, vis, conf = model(queries, fmaps)
    assert len(tracks) == cfg.iterations
    for step in tracks:
        assert step.shape == (2, 3, 5, 2)
        # Frame 0 is pinned to the query, in image pixels.
        torch.testing.assert_close(step[:, 0], queries, rtol=0, atol=1e-4)
    assert vis.shape == conf.shape == (2, 3, 5)
    assert bool(((vis > 0) & (vis < 1) & (conf > 0) & (conf < 1)).all())
    # The seeded weights move the tracks in the other frames.
    assert (tracks[-1][:, 1:] - queries[:, None]).abs().mean() > 0.1


def test_iterations_argument_and_single_frame() -> None:
    model = _tracker(TINY, seed=0)
    queries, fmaps = _inputs(TINY, batch=1, frames=1, tracks=4, height=64, width=64, seed=2)
    with torch.no_grad():
        tracks, vis, _ = model(queries, fmaps, iterations=2)
        none_tracks, none_vis, _ = model(queries, fmaps, iterations=0)
    assert len(tracks) == 2 and none_tracks == []
    torch.testing.assert_close(tracks[-1][:, 0], queries, rtol=0, atol=1e-4)
    assert vis.shape == none_vis.shape == (1, 1, 4)


def test_rejects_wrong_channel_count() -> None:
    model = _tracker(TINY, seed=None)
    with pytest.raises(ValueError, match="channels"):
        model(torch.zeros(1, 2, 2), torch.zeros(1, 2, TINY.features + 1, 64, 64))


def _check_batch_independence(model: CorrelationTracker, cfg: TrackHeadConfig, iterations: int) -> None:
    queries, fmaps = _inputs(cfg, batch=2, frames=3, tracks=6, height=64, width=72, seed=3)
    with torch.no_grad():
        both = model(queries, fmaps, iterations=iterations)
        for b in range(2):
            one = model(queries[b : b + 1], fmaps[b : b + 1], iterations=iterations)
            for step_both, step_one in zip(both[0], one[0]):
                moved_both = step_both[b : b + 1] - queries[b : b + 1, None]
                moved_one = step_one - queries[b : b + 1, None]
                torch.testing.assert_close(moved_both, moved_one, rtol=1e-4, atol=1e-5)
            # Float rounding of batched products depends on the batch size (AVX-512 kernels
            # differ by ~1e-5 after a few iterations); mixing entries would differ by far more.
            torch.testing.assert_close(both[1][b : b + 1], one[1], rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(both[2][b : b + 1], one[2], rtol=1e-4, atol=1e-5)


def test_batch_entries_are_independent_full_size() -> None:
    # One step with seeded weights: every reshape between the batch / track / frame layouts is
    # exercised; later steps only re-run the same code (covered by the tiny config below).
    _check_batch_independence(_tracker(TrackHeadConfig(), seed=0), TrackHeadConfig(), iterations=1)


def test_batch_entries_are_independent_tiny() -> None:
    _check_batch_independence(_tracker(TINY, seed=0), TINY, iterations=1)
    # All steps with the module's own initialisation: checks the state carried between steps.
    _check_batch_independence(_tracker(TINY, seed=None), TINY, iterations=TINY.iterations)


def test_tracks_are_permutation_equivariant() -> None:
    """Tracks interact only through attention (virtual tracks): reordering queries reorders outputs."""
    for seed, iterations in ((0, 1), (None, TINY.iterations)):
        model = _tracker(TINY, seed=seed)
        queries, fmaps = _inputs(TINY, batch=2, frames=3, tracks=7, height=64, width=64, seed=4)
        perm = torch.tensor([3, 0, 6, 1, 5, 2, 4])
        with torch.no_grad():
            tracks, vis, conf = model(queries, fmaps, iterations=iterations)
            p_tracks, p_vis, p_conf = model(queries[:, perm], fmaps, iterations=iterations)
        torch.testing.assert_close(p_tracks[-1], tracks[-1][:, :, perm], rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(p_vis, vis[:, :, perm], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(p_conf, conf[:, :, perm], rtol=1e-5, atol=1e-6)


def test_search_frames_are_permutation_equivariant() -> None:
    """Frame 0 holds the queries; the other frames carry no order (no temporal position code)."""
    for seed, iterations in ((0, 1), (None, TINY.iterations)):
        model = _tracker(TINY, seed=seed)
        queries, fmaps = _inputs(TINY, batch=1, frames=4, tracks=5, height=64, width=64, seed=5)
        order = torch.tensor([0, 3, 1, 2])
        with torch.no_grad():
            tracks, vis, conf = model(queries, fmaps, iterations=iterations)
            p_tracks, p_vis, p_conf = model(queries, fmaps[:, order], iterations=iterations)
        torch.testing.assert_close(p_tracks[-1], tracks[-1][:, order], rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(p_vis, vis[:, order], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(p_conf, conf[:, order], rtol=1e-5, atol=1e-6)


def test_query_frame_is_special() -> None:
    """Swapping frame 0 with another frame is *not* a symmetry (guards against a lost frame marker)."""
    model = _tracker(TINY, seed=0)
    queries, fmaps = _inputs(TINY, batch=1, frames=3, tracks=5, height=64, width=64, seed=6)
    # Identical frames 0 and 1: only the query-frame token tells them apart.
    fmaps[:, 1] = fmaps[:, 0]
    with torch.no_grad():
        _, vis, _ = model(queries, fmaps, iterations=1)
    assert (vis[:, 0] - vis[:, 1]).abs().max() > 1e-3


def test_gradients_reach_features_and_parameters() -> None:
    model = _tracker(dataclasses.replace(TINY, iterations=2), seed=0).train()
    queries, fmaps = _inputs(TINY, batch=1, frames=2, tracks=3, height=64, width=64, seed=7)
    fmaps.requires_grad_(True)
    tracks, vis, conf = model(queries, fmaps)
    (tracks[-1].sum() + vis.sum() + conf.sum()).backward()
    assert fmaps.grad is not None and fmaps.grad.abs().sum() > 0
    assert model.updateformer.flow_head.weight.grad is not None
    assert model.corr_mlp.fc1.weight.grad.abs().sum() > 0
