"""FP8 (e4m3) matrix products for the trunk's linear layers (``--precision fp8``).

The attention q/k/v and the two MLP linears of every encoder and aggregator block (11/12 of
the blocks' linear FLOPs) become :class:`Fp8Linear`: its weight is quantized once to e4m3
with one scale per output channel, each call quantizes its input with one scale per token
(row), and ``torch._scaled_mm`` multiplies the two with float32 accumulation and writes bf16. Everything
else (norms, softmax, RoPE, layer scales, the residual stream, the attention output
projection, the heads) keeps the ``bf16`` mode's precision. The output projection stays out
because its input, the attention output, loses the most to e4m3: on ``vggt-compact-v3``, 4
frames at 140x182, CPU, against float32, relative depth / point error 0.024 / 0.019 with it
in FP8 (over DESIGN.md's 2e-2 for fast modes), 0.010 / 0.015 without (2026-12-03). Row-wise
scales on both sides follow the accuracy measured by ``benchmarks/fp8_simulation.py`` on the
trained compact model (depth AbsRel +0.0007).

Hardware: NVIDIA GPUs of compute capability 8.9 or newer (Ada, Hopper and later) run e4m3
products; :func:`fp8_unsupported_reason` says why another device cannot. A CPU runs them only
where its PyTorch build has a CPU ``_scaled_mm`` (as a reference for tests, not for speed).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

E4M3_MAX = 448.0  # largest finite float8_e4m3fn
FP8_DTYPE = torch.float8_e4m3fn
_TINY = 1e-12


def fp8_unsupported_reason(device: torch.device) -> str | None:
    """Why ``device`` cannot run the FP8 path, or None when it can."""
    if not hasattr(torch, "float8_e4m3fn") or not hasattr(torch, "_scaled_mm"):
        return f"this PyTorch ({torch.__version__}) has no float8 matrix products"
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        if (major, minor) < (8, 9):
            name = torch.cuda.get_device_name(device)
            return (
                f"fp8 needs an NVIDIA GPU of compute capability 8.9 or newer (Ada, Hopper); "
                f"{name} is {major}.{minor}: use bf16 or fp16"
            )
        return None
    if device.type == "cpu":
        try:
            # Probe the row-wise scaling Fp8Linear uses: some CPU builds (PyTorch 2.11) only
            # take per-tensor scales and fail on the first real call otherwise.
            a = torch.ones((16, 16), dtype=FP8_DTYPE)
            rows = torch.ones((16, 1), dtype=torch.float32)
            torch._scaled_mm(a, a.t(), scale_a=rows, scale_b=rows.t(), out_dtype=torch.bfloat16)
        except (RuntimeError, NotImplementedError) as exc:
            return f"fp8 runs on CUDA GPUs (compute capability >= 8.9); this CPU build cannot ({exc})"
        return None
    return f"fp8 runs on CUDA GPUs (compute capability >= 8.9), not on {device.type}"


def quantize_rows(x: Tensor) -> tuple[Tensor, Tensor]:
    """Rows of ``x`` [M, K] -> (e4m3 values [M, K], float32 scales [M, 1]) with
    ``x ~ values * scales``; each row's largest magnitude maps to the e4m3 maximum."""
    amax = x.abs().amax(dim=-1, keepdim=True).float().clamp_min(_TINY)
    scale = amax / E4M3_MAX
    return (x.float() / scale).clamp(-E4M3_MAX, E4M3_MAX).to(FP8_DTYPE), scale


class Fp8Linear(nn.Module):
    """A frozen ``nn.Linear`` computed in e4m3 (see the module docstring).

    Buffers: ``weight_fp8`` [out, in] e4m3 (row-major, so its transpose is the column-major
    operand ``_scaled_mm`` wants), ``weight_scale`` [1, out] float32, ``bias`` [out] float32 or
    None. Inputs [..., in] of any float dtype; outputs [..., out] bf16.
    """

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        values, scale = quantize_rows(linear.weight.detach())
        self.register_buffer("weight_fp8", values.contiguous())
        self.register_buffer("weight_scale", scale.t().contiguous())
        bias = None if linear.bias is None else linear.bias.detach().float().clone()
        self.register_buffer("bias", bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.rows(x, 0, self.out_features)

    def rows(self, x: Tensor, lo: int, hi: int) -> Tensor:
        """Output features ``lo:hi`` only (the chunked attention path computes q, k and v
        separately): [..., in] -> [..., hi - lo]."""
        lead = x.shape[:-1]
        values, scale = quantize_rows(x.reshape(-1, self.in_features))
        out = torch._scaled_mm(
            values,
            self.weight_fp8[lo:hi].t(),
            scale_a=scale,
            scale_b=self.weight_scale[:, lo:hi],
            out_dtype=torch.bfloat16,
        )
        if self.bias is not None:
            out = out + self.bias[lo:hi].to(out.dtype)
        return out.reshape(*lead, hi - lo)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, e4m3 row-wise"


# (module, linear) pairs of a block that run in FP8; the attention output projection does not
# (module docstring).
TRUNK_LINEARS = (("attn", "qkv"), ("mlp", "fc1"), ("mlp", "fc2"))


def convert_trunk_linears(trunk: nn.Module) -> int:
    """Replace the q/k/v and MLP linears of every transformer block under ``trunk`` (encoder
    and aggregator) by :class:`Fp8Linear`; returns how many were replaced."""
    from vggt_ros.model.layers import TransformerBlock

    replaced = 0
    for block in trunk.modules():
        if not isinstance(block, TransformerBlock):
            continue
        for parent_name, name in TRUNK_LINEARS:
            parent = getattr(block, parent_name, None)
            layer = getattr(parent, name, None)
            if isinstance(layer, nn.Linear):
                setattr(parent, name, Fp8Linear(layer))
                replaced += 1
    return replaced
