"""Approximate sparse global attention for long windows (runner option ``global_key_stride``)."""

from __future__ import annotations

import pytest
import torch

from vggt_ros.engine.runner import ModelRunner
from vggt_ros.model.aggregator import global_key_subset
from vggt_ros.model.vggt import VGGT


def test_key_subset_keeps_frame_zero_special_tokens_and_covers_every_patch_position() -> None:
    frames, patch_start, patches, stride = 9, 5, 40, 4
    tokens = patch_start + patches
    keys = global_key_subset(frames, tokens, patch_start, stride, torch.device("cpu"))
    kept = torch.zeros(frames * tokens, dtype=torch.bool)
    kept[keys] = True
    kept = kept.view(frames, tokens)
    assert kept[0].all()  # the reference frame, whole
    assert kept[:, :patch_start].all()  # every frame's camera and register tokens
    assert kept[1:, patch_start:].any(dim=0).all()  # the other frames together: every position
    assert kept[1:, patch_start:].sum(dim=1).tolist() == [patches // stride] * (frames - 1)
    assert len(keys) == tokens + (frames - 1) * (patch_start + patches // stride)
    assert torch.equal(keys, torch.sort(keys).values)


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
        for block in agg.global_blocks:
            block.token_chunk = 150  # the long-window path: keys/values first, then query chunks
        chunked = model(images)
    for block in agg.global_blocks:
        block.token_chunk = None
    agg.global_key_stride = 0
    assert torch.equal(exact["depth"], same["depth"]) and torch.equal(exact["pose_enc"], same["pose_enc"])
    assert not torch.equal(exact["depth"], sparse["depth"])  # it is an approximation
    torch.testing.assert_close(chunked["depth"], sparse["depth"], rtol=1e-5, atol=1e-6)
    # A single frame has nothing to skip: sparse = exact.
    with torch.no_grad():
        one = model(images[:, :1])
        agg.global_key_stride = 3
        one_sparse = model(images[:, :1])
    agg.global_key_stride = 0
    assert torch.equal(one["depth"], one_sparse["depth"])


def test_runner_option_and_refusals(model: VGGT) -> None:
    runner = ModelRunner(VGGT("vggt-tiny"), "cpu", "fp32", options={"global_key_stride": 8})
    assert runner.model.aggregator.global_key_stride == 8
    with pytest.raises(ValueError, match="global_key_stride must be >= 0"):
        ModelRunner(VGGT("vggt-tiny"), "cpu", "fp32", options={"global_key_stride": -1})
    block = model.aggregator.global_blocks[0]
    x = torch.rand(1, 10, block.norm1.normalized_shape[0], requires_grad=True)
    with pytest.raises(NotImplementedError, match="inference option"):
        block(x, None, torch.arange(5))
