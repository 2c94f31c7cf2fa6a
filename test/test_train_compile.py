"""Regional torch.compile for training (``vggt-ros train --compile``).

The ``aot_eager`` backend traces forward and backward through Dynamo and AOTAutograd exactly as
the real one does, without generating C++/Triton code, so these run on any CI machine.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from train_fixtures import small_config

from vggt_ros.eval.procedural import ProceduralSettings
from vggt_ros.model.vggt import VGGT
from vggt_ros.train import trainer as trainer_module
from vggt_ros.train.compile import COMPILED_BLOCKS, compile_training_regions
from vggt_ros.train.config import TrainConfig
from vggt_ros.train.data import ProceduralSource
from vggt_ros.train.losses import total_loss
from vggt_ros.train.targets import normalize_window
from vggt_ros.train.trainer import Trainer, TrainingModel

# The track head needs >= 128 px a side; two frames keep the trace short.
TRACKED = ProceduralSettings(height=140, width=140, frames=2, track_queries=8)
ALL_HEADS = ("camera", "depth", "point", "track")


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _gradients(model: VGGT, targets) -> tuple[float, dict[str, torch.Tensor]]:
    out = TrainingModel(model, ALL_HEADS)(targets.images, targets.query_points)
    config = TrainConfig(model="vggt-tiny", heads=ALL_HEADS, procedural=TRACKED)
    loss = total_loss(out, targets, config.loss)[0]
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return float(loss.detach()), grads


def test_compiled_regions_give_the_eager_loss_and_gradients() -> None:
    targets = normalize_window(ProceduralSource(TRACKED).windows(range(1), "cpu"))
    torch.manual_seed(0)
    eager = VGGT("vggt-tiny")
    torch.manual_seed(0)
    compiled = VGGT("vggt-tiny")
    keys = list(compiled.state_dict())

    counts = compile_training_regions(compiled, backend="aot_eager")

    blocks = [m for m in compiled.modules() if isinstance(m, COMPILED_BLOCKS)]
    assert counts == {"blocks": len(blocks), "dense_heads": 3}
    assert len(blocks) > 10  # encoder, aggregator, camera head and tracker blocks
    assert all(getattr(b, "_compiled_call_impl", None) is not None for b in blocks)
    # In place: checkpoints keep their parameter names (no "_orig_mod." prefix).
    assert list(compiled.state_dict()) == keys

    loss_eager, grads_eager = _gradients(eager, targets)
    loss_compiled, grads_compiled = _gradients(compiled, targets)
    assert loss_compiled == pytest.approx(loss_eager, rel=1e-5)
    assert grads_compiled.keys() == grads_eager.keys()
    for name in grads_eager:
        torch.testing.assert_close(grads_compiled[name], grads_eager[name], atol=1e-5, rtol=1e-4)


def test_trainer_compile_option_compiles_the_regions(tmp_path: Path, monkeypatch) -> None:
    calls = []

    def aot_eager_regions(model):
        calls.append(model)
        return compile_training_regions(model, backend="aot_eager")

    monkeypatch.setattr(trainer_module, "compile_training_regions", aot_eager_regions)
    config = small_config(steps=2, warmup_steps=1, checkpoint_every=2, validate_every=2, compile=True)
    trainer = Trainer(config, tmp_path / "run")
    result = trainer.run()

    assert calls == [trainer.model]
    assert result.stopped_by == "steps" and trainer.state.step == 2
    assert all(torch.isfinite(torch.tensor(v)) for v in result.last_losses.values())
    # validation (no_grad, eval mode) ran through the same compiled blocks
    assert "val/abs_rel" in result.validation
    block = trainer.model.aggregator.frame_blocks[0]
    assert block._compiled_call_impl is not None
    assert not any("_orig_mod" in k for k in trainer.model.state_dict())
