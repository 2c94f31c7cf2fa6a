"""Approximate sparse global attention for long windows (runner option ``global_key_stride``)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vggt_ros.engine.runner import ModelRunner
from vggt_ros.model.aggregator import global_sparse_keys
from vggt_ros.model.layers import SparseKeys, attention_compute_dtype, weighted_attention_in_parts
from vggt_ros.model.vggt import VGGT


def test_key_subset_keeps_frame_zero_special_tokens_and_covers_every_patch_position() -> None:
    frames, patch_start, patches, stride = 9, 5, 40, 4
    tokens = patch_start + patches
    sparse = global_sparse_keys(frames, tokens, patch_start, stride, torch.device("cpu"))
    keys = sparse.index
    kept = torch.zeros(frames * tokens, dtype=torch.bool)
    kept[keys] = True
    kept = kept.view(frames, tokens)
    assert kept[0].all()  # the reference frame, whole
    assert kept[:, :patch_start].all()  # every frame's camera and register tokens
    assert kept[1:, patch_start:].any(dim=0).all()  # the other frames together: every position
    assert kept[1:, patch_start:].sum(dim=1).tolist() == [patches // stride] * (frames - 1)
    assert len(keys) == tokens + (frames - 1) * (patch_start + patches // stride)
    assert len(torch.unique(keys)) == len(keys)
    # The keys kept whole come first, then the samples, which carry the weight ln(stride).
    frame, token = keys // tokens, keys % tokens
    is_sample = (frame > 0) & (token >= patch_start)
    assert sparse.whole == tokens + (frames - 1) * patch_start
    assert not is_sample[: sparse.whole].any() and is_sample[sparse.whole :].all()
    assert sparse.sample_log_weight == pytest.approx(math.log(stride))
    unweighted = global_sparse_keys(frames, tokens, patch_start, stride, torch.device("cpu"), weighted=False)
    assert unweighted.sample_log_weight == 0 and torch.equal(unweighted.index, keys)


def test_weighted_sample_of_repeated_keys_is_exact_attention() -> None:
    """Why the weights: when each sampled key stands for ``stride`` identical keys (a frame of
    ``stride``-fold repeated tokens), the weighted sparse attention equals exact attention, and the
    unweighted one gives the sampled frames 1 / stride of their weight."""
    frames, patch_start, patches, stride, dim = 4, 1, 12, 3, 8
    tokens = patch_start + patches
    gen = torch.Generator().manual_seed(0)
    # Every frame f > 0 repeats one patch key/value over each aligned run of `stride` positions:
    # the one the sample keeps there, (p + f) % stride == 0.
    k = torch.randn(1, 1, frames, tokens, dim, generator=gen)
    v = torch.randn(1, 1, frames, tokens, dim, generator=gen)
    for f in range(1, frames):
        for p in range(patches):
            source = (p // stride) * stride + (-f) % stride
            k[..., f, patch_start + p, :] = k[..., f, patch_start + source, :]
            v[..., f, patch_start + p, :] = v[..., f, patch_start + source, :]
    k, v = k.flatten(2, 3), v.flatten(2, 3)  # [1, 1, S * T, dim]
    q = torch.randn(1, 1, 5, dim, generator=gen)
    exact = F.scaled_dot_product_attention(q, k, v)
    sparse = global_sparse_keys(frames, tokens, patch_start, stride, torch.device("cpu"))
    torch.testing.assert_close(sparse.attend(q, *sparse.select(k, v)), exact)
    plain = sparse._replace(sample_log_weight=0.0)
    assert not torch.allclose(plain.attend(q, *plain.select(k, v)), exact, atol=1e-3)


def test_attention_in_two_parts_equals_one_call_with_the_bias() -> None:
    """The GPU path (two flash-attention calls merged by their log-sum-exps; here the CPU
    kernel) computes the same function as one call with an additive mask."""
    gen = torch.Generator().manual_seed(3)
    q = torch.randn(2, 3, 17, 16, generator=gen)
    k = torch.randn(2, 3, 40, 16, generator=gen) * 2
    v = torch.randn(2, 3, 40, 16, generator=gen)
    split, log_weight = 11, math.log(5)
    bias = torch.zeros(40)
    bias[split:] = log_weight
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=bias[None])
    torch.testing.assert_close(weighted_attention_in_parts(q, k, v, split, log_weight), expected)


def test_attention_dtype_under_autocast_is_autocasts() -> None:
    """Under bf16 autocast the query/key norms hand attention float32 tensors; the weighted GPU
    path must still see the bf16 it runs in (it once took the float-mask kernel instead, 7 ms
    more per VGGT-1B global block at 100 frames on an H100)."""
    q = torch.randn(1, 2, 4, 8)
    assert attention_compute_dtype(q) == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert attention_compute_dtype(q) == torch.bfloat16
    assert attention_compute_dtype(q.half()) == torch.float16


@pytest.fixture(scope="module")
def model() -> VGGT:
    torch.manual_seed(0)
    return VGGT("vggt-tiny").eval()


def test_stride_one_is_exact_and_chunking_does_not_change_sparse_results(model: VGGT) -> None:
    images = torch.rand(1, 6, 3, 56, 70, generator=torch.Generator().manual_seed(1))
    agg = model.aggregator
    with torch.no_grad():
        exact = model(images)
        agg.global_key_stride = 1
        same = model(images)
        agg.global_key_stride = 3
        sparse = model(images)
        agg.global_key_weighting = False
        unweighted = model(images)
        for block in agg.global_blocks:
            block.token_chunk = 150  # the long-window path: keys/values first, then query chunks
        unweighted_chunked = model(images)
        agg.global_key_weighting = True
        chunked = model(images)
    for block in agg.global_blocks:
        block.token_chunk = None
    agg.global_key_stride = 0
    assert torch.equal(exact["depth"], same["depth"]) and torch.equal(exact["pose_enc"], same["pose_enc"])
    assert not torch.equal(exact["depth"], sparse["depth"])  # it is an approximation
    assert not torch.allclose(sparse["pose_enc"], unweighted["pose_enc"])  # the weights take part
    torch.testing.assert_close(chunked["depth"], sparse["depth"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(unweighted_chunked["depth"], unweighted["depth"], rtol=1e-5, atol=1e-6)
    # A single frame has nothing to skip: sparse = exact.
    with torch.no_grad():
        one = model(images[:, :1])
        agg.global_key_stride = 3
        one_sparse = model(images[:, :1])
    agg.global_key_stride = 0
    assert torch.equal(one["depth"], one_sparse["depth"])


def test_runner_option_and_refusals(model: VGGT) -> None:
    runner = ModelRunner(VGGT("vggt-tiny"), "cpu", "fp32", options={"global_key_stride": 8})
    assert runner.model.aggregator.global_key_stride == 8 and runner.model.aggregator.global_key_weighting
    options = {"global_key_stride": 8, "global_key_weighting": False}
    unweighted = ModelRunner(VGGT("vggt-tiny"), "cpu", "fp32", options=options)
    assert not unweighted.model.aggregator.global_key_weighting
    with pytest.raises(ValueError, match="global_key_stride must be >= 0"):
        ModelRunner(VGGT("vggt-tiny"), "cpu", "fp32", options={"global_key_stride": -1})
    block = model.aggregator.global_blocks[0]
    x = torch.rand(1, 10, block.norm1.normalized_shape[0], requires_grad=True)
    with pytest.raises(NotImplementedError, match="inference option"):
        block(x, None, SparseKeys(torch.arange(5), whole=5))
