"""The attention-match loss (vggt_ros.train.attention_match): it scores the attention the global
blocks really compute, its gradient reaches them, and the CLI wires it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vggt_ros.cli import main
from vggt_ros.eval.procedural import ProceduralSettings
from vggt_ros.model import VGGT, VGGT_TINY
from vggt_ros.train.attention_match import frame0_attention
from vggt_ros.train.data import ProceduralSource
from vggt_ros.train.losses import LossWeights, total_loss
from vggt_ros.train.targets import normalize_window
from vggt_ros.train.trainer import TrainingModel


@pytest.fixture(scope="module")
def targets():
    settings = ProceduralSettings(height=56, width=70, frames=3, track_queries=12)
    return normalize_window(ProceduralSource(settings, seed=2).windows(range(2), "cpu"))


def test_recomputed_attention_is_the_blocks_own(targets) -> None:
    """For every recorded global block, the attention of frame-1/2 tokens over frame 0's patches
    equals the block's full softmax attention (queries, keys, QK norm, RoPE as the block runs
    them) restricted to those keys and renormalised."""
    torch.manual_seed(0)
    model = TrainingModel(VGGT(VGGT_TINY), ("camera",), attention_match=True)
    out = model(targets.images)
    records, patch_start, patch = out["attention_taps"]
    assert len(records) == len(model.model.aggregator.global_blocks)
    gh, gw = 56 // patch, 70 // patch
    t = patch_start + gh * gw
    q_index = torch.tensor([[t + patch_start, 2 * t + patch_start + 5, t + patch_start + 7]] * 2)
    for attn, x, tables in records:
        b, n_tok, dim = x.shape
        qkv = attn.qkv(x).view(b, n_tok, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
        q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
        q, k = attn.rope(q, tables), attn.rope(k, tables)
        full = (q @ k.transpose(-1, -2)) * attn.head_dim**-0.5  # [B, heads, L, L]
        keys = full[:, :, :, patch_start:t]  # frame 0's patches
        expected = keys.softmax(-1).mean(1).gather(1, q_index[..., None].expand(-1, -1, gh * gw))
        got = frame0_attention(attn, x, tables, q_index, patch_start, gh * gw)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_loss_reaches_the_global_attention_and_is_near_uniform_at_start(targets) -> None:
    torch.manual_seed(0)
    model = TrainingModel(VGGT(VGGT_TINY), ("camera",), attention_match=True)
    out = model(targets.images)
    objective, terms = total_loss(
        {"attention_taps": out["attention_taps"]}, targets, LossWeights(attention_match=1.0)
    )
    objective.backward()
    qkv_grads = [b.attn.qkv.weight.grad for b in model.model.aggregator.global_blocks]
    assert all(g is not None and float(g.abs().sum()) > 0 for g in qkv_grads)
    # A random trunk attends nearly uniformly: the match gets about one over the 20 patches.
    assert 0.02 < float(terms["attention_match_p"]) < 0.15
    assert float(terms["attention_match"]) == pytest.approx(float(torch.log(torch.tensor(20.0))), abs=0.7)
    # No records outside a gradient-enabled forward (validation).
    with torch.no_grad():
        assert "attention_taps" not in model(targets.images)


def test_the_attention_learns_to_find_the_match(targets) -> None:
    """Optimising this loss alone on a fixed batch raises the attention on the true match well
    above uniform: the signal is learnable by the blocks it supervises."""
    torch.manual_seed(0)
    model = TrainingModel(VGGT(VGGT_TINY), ("camera",), attention_match=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    history = []
    for _ in range(25):
        out = model(targets.images)
        objective, terms = total_loss(
            {"attention_taps": out["attention_taps"]}, targets, LossWeights(attention_match=1.0)
        )
        optimizer.zero_grad()
        objective.backward()
        optimizer.step()
        history.append(float(terms["attention_match_p"]))
    assert history[-1] > 2 * history[0] and history[-1] > 0.15, history


def test_cli_wires_it_and_refuses_gradient_checkpointing(tmp_path: Path) -> None:
    args = [
        "train", "--out", str(tmp_path / "run"), "--model", "vggt-tiny", "--size", "42x56",
        "--frames", "2", "--heads", "camera", "--steps", "2", "--batch-size", "2",
        "--validate-every", "10", "--device", "cpu", "-q", "--track-queries", "8",
        "--log-every", "1", "--loss", "attention_match=1",
    ]  # fmt: skip
    assert main(args) == 0
    last = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[-1])
    assert last["attention_match"] > 0 and 0 < last["attention_match_p"] < 1
    bad = [*args[:2], str(tmp_path / "bad"), *args[3:], "--gradient-checkpointing"]
    assert main(bad) == 2
    assert main([*args[:2], str(tmp_path / "bad2"), *args[3:], "--compile"]) == 2
