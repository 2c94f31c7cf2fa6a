"""VGGT network: checkpoint layout, reference parity, configurations and shape contracts."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from parity_weights import load_manifest, recipe_state_dict

from vggt_ros.model import CONFIGS, VGGT, VGGT_1B, VGGT_TINY, get_config
from vggt_ros.model.config import DPTHeadConfig

PARITY_TOLERANCE = 1e-3  # relative L2 error, float32 on CPU (fixture README)
OUTPUT_KEYS = ("pose_enc", "depth", "depth_conf", "world_points", "world_points_conf", "track", "vis", "conf")


def relative_error(actual: torch.Tensor, expected: np.ndarray) -> float:
    expected_t = torch.as_tensor(expected, dtype=torch.float64)
    return float(torch.linalg.norm(actual.double() - expected_t) / torch.linalg.norm(expected_t))


def test_vggt1b_state_dict_matches_official_manifest(parity_dir):
    with torch.device("meta"):
        model = VGGT()
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    manifest = dict(load_manifest(parity_dir))
    assert sorted(set(manifest) - set(ours)) == []
    assert sorted(set(ours) - set(manifest)) == []
    assert {k: s for k, s in ours.items() if manifest[k] != s} == {}
    assert sum(v.numel() for v in model.state_dict().values()) == 1_256_537_516


# The track head's outputs are a chaotic function of its inputs under the fixture's seeded random
# weights: perturbing the aggregated tokens by 1e-7 (relative) moves the official implementation's
# tracks by ~4e-4, vis by 6e-3 and conf by 2.4e-2 (4 refinement iterations amplify rounding
# ~100x each). The official code (44b3afb) run here on torch 2.13 CPU gives exactly our numbers
# (track 7.2e-4, vis 1.44e-2, conf 1.60e-2 against the fixture), so those three outputs are held
# to the spread that rounding alone causes; every other output is held to the fixture's 1e-3.
CHAOTIC_TOLERANCE = {"track": 1e-2, "vis": 1e-1, "conf": 1e-1}


@pytest.mark.slow
def test_parity_with_official_outputs(parity_dir):
    """Seeded VGGT-1B weights reproduce the official implementation's outputs."""
    case = np.load(parity_dir / "public_s2_140x182.npz")
    torch.manual_seed(0)
    model = VGGT().eval()
    model.load_state_dict(recipe_state_dict(load_manifest(parity_dir), seed=0), strict=True)
    images = torch.from_numpy(case["images"])
    queries = torch.from_numpy(case["query_points"])
    with torch.no_grad():
        out = model(images[0], query_points=queries[0])
    for key in OUTPUT_KEYS:
        assert tuple(out[key].shape) == case[key].shape, key
    errors = {key: relative_error(out[key], case[key]) for key in OUTPUT_KEYS}
    errors["pose_enc_list"] = relative_error(torch.stack(out["pose_enc_list"]), case["pose_enc_list"])
    failures = {k: e for k, e in errors.items() if not e < CHAOTIC_TOLERANCE.get(k, PARITY_TOLERANCE)}
    assert failures == {}, errors
    # Frame 0 of every track is its query point, exactly.
    torch.testing.assert_close(out["track"][:, 0], queries, rtol=0, atol=0)


def test_named_configs():
    assert get_config("vggt-1b") is VGGT_1B
    assert get_config(VGGT_TINY) is VGGT_TINY
    assert {"vggt-1b", "vggt-small", "vggt-tiny"} <= set(CONFIGS)
    with pytest.raises(ValueError, match="unknown VGGT configuration 'vggt-2b'.*vggt-1b"):
        get_config("vggt-2b")


def test_tiny_config_is_small_and_has_every_head():
    model = VGGT("vggt-tiny")
    params = model.count_parameters()
    assert 1_000_000 < params < 5_000_000, params
    for head in ("camera_head", "depth_head", "point_head", "track_head"):
        assert getattr(model, head) is not None


def test_compact_deep_config_fits_the_compact_budget_without_a_point_head():
    """vggt-compact-deep trades the unused point head for three more trunk layers and must still
    fit the embedded model's 15 MB fp16 budget (7.5 M parameters)."""
    cfg = get_config("vggt-compact-deep")
    assert cfg.aggregator.depth == 9 and not cfg.enable_point
    assert max(cfg.dpt.layer_indices) == cfg.aggregator.depth - 1
    torch.manual_seed(0)
    model = VGGT(cfg).eval()
    params = model.count_parameters()
    assert params <= 7_500_000, params
    assert 2 * params <= 15_000_000
    assert model.point_head is None
    with torch.no_grad():
        out = model(torch.rand(2, 3, 140, 182))
    assert out["depth"].shape == (1, 2, 140, 182, 1)
    assert "world_points" not in out and torch.isfinite(out["depth"]).all()


def test_config_validation():
    with pytest.raises(ValueError, match="divisible by 4"):
        dataclasses.replace(
            VGGT_TINY, embed_dim=60, encoder=dataclasses.replace(VGGT_TINY.encoder, embed_dim=60)
        )
    with pytest.raises(ValueError, match="layer_indices"):
        dataclasses.replace(VGGT_TINY, dpt=DPTHeadConfig(layer_indices=(0, 1, 2, 9)))


def _tiny_model(seed: int = 0, **changes) -> VGGT:
    torch.manual_seed(seed)
    cfg = VGGT_TINY.replace(**changes) if changes else VGGT_TINY
    return VGGT(cfg).eval()


def test_tiny_forward_shapes_non_square():
    model = _tiny_model()
    s, h, w, n = 3, 140, 196, 5
    images = torch.rand(s, 3, h, w)
    queries = torch.rand(n, 2) * torch.tensor([w - 1, h - 1])
    with torch.no_grad():
        out = model(images, query_points=queries)
    assert out["pose_enc"].shape == (1, s, 9)
    assert len(out["pose_enc_list"]) == VGGT_TINY.camera.iterations
    assert out["depth"].shape == (1, s, h, w, 1)
    assert out["depth_conf"].shape == (1, s, h, w)
    assert out["world_points"].shape == (1, s, h, w, 3)
    assert out["world_points_conf"].shape == (1, s, h, w)
    assert out["track"].shape == (1, s, n, 2)
    assert out["vis"].shape == out["conf"].shape == (1, s, n)
    assert (out["depth"] > 0).all() and (out["depth_conf"] > 1).all()
    assert torch.isfinite(out["world_points"]).all()
    assert ((out["vis"] >= 0) & (out["vis"] <= 1)).all()


def test_batch_items_are_independent():
    model = _tiny_model(seed=1)
    images = torch.rand(2, 2, 3, 140, 140)
    queries = torch.rand(2, 4, 2) * 139
    with torch.no_grad():
        both = model(images, query_points=queries)
        first = model(images[0], query_points=queries[0])
    for key in OUTPUT_KEYS:
        torch.testing.assert_close(both[key][:1], first[key], rtol=1e-4, atol=1e-4)


def test_dense_heads_in_frame_chunks_equal_one_pass():
    one_pass = _tiny_model(seed=2, dpt=dataclasses.replace(VGGT_TINY.dpt, frames_chunk_size=16))
    chunked = _tiny_model(seed=2, dpt=dataclasses.replace(VGGT_TINY.dpt, frames_chunk_size=2))
    chunked.load_state_dict(one_pass.state_dict())
    images = torch.rand(5, 3, 56, 70)
    with torch.no_grad():
        a, b = one_pass(images), chunked(images)
    for key in ("depth", "depth_conf", "world_points", "world_points_conf"):
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-5)


def test_first_frame_gets_its_own_camera_token():
    """Swapping frames changes the anchor frame: the first-frame token slot must matter."""
    model = _tiny_model(seed=3)
    with torch.no_grad():
        model.aggregator.camera_token[:, 0].normal_()
        images = torch.rand(2, 3, 56, 56)
        a = model(images)["pose_enc"][0]
        b = model(images.flip(0))["pose_enc"][0].flip(0)
    assert not torch.allclose(a, b, atol=1e-4)


def test_only_needed_aggregator_layers_are_kept():
    model = _tiny_model()
    assert model.layers_needed(with_tracks=False) == {0, 1, 2, 3}
    no_dense = _tiny_model(enable_depth=False, enable_point=False, enable_track=False)
    assert no_dense.layers_needed(with_tracks=False) == {VGGT_TINY.aggregator.depth - 1}
    with torch.no_grad():
        layers = no_dense.aggregator(torch.rand(1, 2, 3, 28, 28), keep_layers={3})
    assert set(layers) == {3}
    assert layers[3].shape == (1, 2, 1 + 4 + 4, 2 * VGGT_TINY.embed_dim)


def test_rejects_bad_shapes():
    model = _tiny_model()
    with pytest.raises(ValueError, match="multiple of the patch size"):
        model(torch.rand(2, 3, 50, 56))
    with pytest.raises(ValueError, match=r"\[S, 3, H, W\]"):
        model(torch.rand(3, 56, 56))
    with pytest.raises(ValueError, match="query_points"):
        model(torch.rand(2, 3, 56, 56), query_points=torch.rand(4, 3))


@pytest.mark.parametrize("inplace", [False, True])
def test_token_chunked_blocks_compute_the_same_function(inplace):
    """Chunking the per-token steps (long windows) must not change the result, nor must
    writing block outputs over their inputs (the aggregator must store each kept layer's
    frame half before the global block overwrites it)."""
    model = _tiny_model(seed=4)
    images = torch.rand(3, 3, 56, 70)
    with torch.no_grad():
        plain = model(images)
        blocks = (*model.aggregator.patch_embed.blocks, *model.aggregator.frame_blocks)
        for block in (*blocks, *model.aggregator.global_blocks):
            # Not a divisor of the 3 * 26 global tokens: uneven last chunk; frame and encoder
            # blocks (3 sequences) get whole-sequence chunks.
            block.token_chunk = 37
            block.inplace_residual = inplace
        chunked = model(images)
    for key in ("pose_enc", "depth", "depth_conf", "world_points", "world_points_conf"):
        torch.testing.assert_close(chunked[key], plain[key], rtol=1e-4, atol=1e-5)


def test_dense_heads_in_smaller_chunks_on_long_windows_compute_the_same_function():
    """``long_window_chunk_size`` only regroups frames: same outputs, and short windows (up to
    one configured chunk) are not split."""
    model = _tiny_model(seed=5)
    head = model.depth_head
    images = torch.rand(head.frames_chunk_size + 2, 3, 28, 42)
    with torch.no_grad():
        layers = model.aggregate(images[None], with_tracks=False)
        plain = head(layers, (28, 42), model.aggregator.patch_start_idx)
        head.long_window_chunk_size = 3
        calls = []
        original = head.forward_chunk
        head.forward_chunk = lambda tokens, hw: calls.append(tokens[0].shape[1]) or original(tokens, hw)
        chunked = head(layers, (28, 42), model.aggregator.patch_start_idx)
        assert calls == [3, 3, 3, 1]
        calls.clear()
        short = {i: t[:, : head.frames_chunk_size] for i, t in layers.items()}
        head(short, (28, 42), model.aggregator.patch_start_idx)
        assert calls == [head.frames_chunk_size]
    for a, b in zip(chunked, plain, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
