"""FP8 (e4m3) trunk linears: the layer against float32, the model against float32, the chunked
long-window path, and the refusal on hardware without e4m3 products."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vggt_ros.engine.fp8 import Fp8Linear, convert_trunk_linears, fp8_unsupported_reason
from vggt_ros.engine.modes import MODES
from vggt_ros.engine.precision import resolve_precision
from vggt_ros.engine.runner import ModelRunner
from vggt_ros.eval.bench import BenchCase, relative_errors, synthetic_frames
from vggt_ros.model import VGGT, VGGT_TINY

CPU = torch.device("cpu")


def fp8_devices() -> list:
    """Devices that run e4m3 products here: the CPU where its PyTorch build has row-wise
    ``_scaled_mm`` (a reference, not for speed), and a CUDA GPU of compute capability >= 8.9."""
    devices = []
    if fp8_unsupported_reason(CPU) is None:
        devices.append("cpu")
    if torch.cuda.is_available() and fp8_unsupported_reason(torch.device("cuda")) is None:
        devices.append("cuda")
    if not devices:
        reason = f"no FP8 device here (CPU: {fp8_unsupported_reason(CPU)})"
        return [pytest.param("none", marks=pytest.mark.skip(reason=reason))]
    return devices


on_fp8_devices = pytest.mark.parametrize("device", fp8_devices())


@on_fp8_devices
def test_fp8_linear_matches_the_float_layer(device: str) -> None:
    torch.manual_seed(0)
    layer = nn.Linear(64, 96).to(device)
    fp8 = Fp8Linear(layer)
    x = torch.randn(2, 7, 64, device=device) * torch.logspace(-2, 1, 7, device=device)[None, :, None]
    ref = layer(x)  # rows of every scale above
    out = fp8(x)
    assert out.dtype == torch.bfloat16 and out.shape == ref.shape
    rel = ((out.float() - ref).norm() / ref.norm()).item()
    assert rel < 0.05, rel  # e4m3 keeps 3 mantissa bits; sums of 64 products average it down
    assert rel > 1e-4  # it really is quantized
    # Any slice of the outputs (the chunked attention computes q, k, v apart) is the same slice
    # (bit for bit on the CPU; a GPU may pick another kernel, so one bf16 rounding step there).
    exact = dict(rtol=0, atol=0) if device == "cpu" else dict(rtol=8e-3, atol=1e-3)
    torch.testing.assert_close(fp8.rows(x, 32, 80), out[..., 32:80], **exact)
    # Per-row scales: scaling the input by a power of two scales the product exactly.
    no_bias = Fp8Linear(nn.Linear(64, 96, bias=False).to(device))
    torch.testing.assert_close(no_bias(x * 1024.0).float() / 1024.0, no_bias(x).float(), rtol=0, atol=0)


def test_conversion_touches_the_trunk_blocks_only() -> None:
    model = VGGT(VGGT_TINY)
    blocks = len(model.aggregator.frame_blocks) + len(model.aggregator.global_blocks)
    encoder_blocks = len(model.aggregator.patch_embed.blocks)
    replaced = convert_trunk_linears(model.aggregator)
    assert replaced == 3 * (blocks + encoder_blocks)  # q/k/v, fc1, fc2; not the output projection
    block = model.aggregator.global_blocks[0]
    assert isinstance(block.attn.qkv, Fp8Linear) and isinstance(block.mlp.fc2, Fp8Linear)
    assert not isinstance(block.attn.proj, Fp8Linear)  # the most sensitive to e4m3 (fp8.py)
    assert block.attn.qkv.weight_fp8.dtype == torch.float8_e4m3fn
    head_linears = [m for m in model.camera_head.modules() if isinstance(m, Fp8Linear)]
    assert not head_linears  # heads keep the bf16 mode's precision


@on_fp8_devices
def test_fp8_mode_on_the_trained_model_is_within_the_fast_mode_tolerance(device: str) -> None:
    """On the embedded compact model (trained weights: what FP8 is judged on), the fp8 mode
    stays within 2e-2 of float32 (DESIGN.md's bound for fast modes), and the chunked long-window
    path (q, k, v from slices of the quantized projection) gives the same window."""
    from vggt_ros.model.checkpoint import load_model
    from vggt_ros.model.embedded import DEFAULT_MODEL

    images = synthetic_frames(BenchCase(frames=4, height=140, width=182))

    def run(mode: str, **options):
        model, _ = load_model(DEFAULT_MODEL.path, config="vggt-compact", device=device)
        runner = ModelRunner(model, torch.device(device), MODES[mode], options=options)
        return {k: v.float() for k, v in runner.run(images).items() if torch.is_tensor(v)}

    ref = run("fp32")
    fp8 = run("fp8")
    errors = relative_errors(fp8, ref)
    assert errors["depth"] < 2e-2 and errors["world_points"] < 2e-2, errors
    assert errors["pose_enc"] < 2e-2, errors
    bf16 = relative_errors(run("bf16"), ref)
    assert errors["depth"] > bf16["depth"] * 0.5  # the e4m3 products are really used
    chunked = run("fp8", token_chunk=128)  # forces the row-chunked trunk path
    assert relative_errors(chunked, fp8)["depth"] < 5e-3


def test_fp8_is_refused_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 6))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA RTX A6000")
    reason = fp8_unsupported_reason(torch.device("cuda", 0))
    assert "compute capability 8.9" in reason and "A6000 is 8.6" in reason and "bf16" in reason
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert fp8_unsupported_reason(torch.device("cuda", 0)) is None
    assert "not on mps" in fp8_unsupported_reason(torch.device("mps"))
    if fp8_unsupported_reason(CPU) is None:
        assert resolve_precision("fp8", CPU) == torch.float8_e4m3fn
    else:
        with pytest.raises(ValueError, match="fp8 runs on CUDA"):
            resolve_precision("fp8", CPU)


@on_fp8_devices
def test_predictor_runs_and_reports_fp8(device: str) -> None:
    """`--precision fp8` end to end through the Predictor (what predict, eval and the node use)."""
    import numpy as np

    from vggt_ros.engine.predictor import Predictor
    from vggt_ros.model.checkpoint import load_model
    from vggt_ros.model.embedded import DEFAULT_MODEL

    model, _ = load_model(DEFAULT_MODEL.path, config="vggt-compact", device=device)
    predictor = Predictor(model, device=device, precision="fp8", target_size=182)
    assert predictor.precision == "fp8"
    assert isinstance(predictor.model.aggregator.frame_blocks[0].attn.qkv, Fp8Linear)
    frames = [np.random.default_rng(k).integers(0, 255, (140, 182, 3), dtype=np.uint8) for k in range(3)]
    out = predictor.predict(frames)
    assert out.depth.shape[0] == 3 and np.isfinite(out.depth).all()
    assert np.isfinite(out.cam_to_world).all()
