"""Time PyTorch SDPA backends on VGGT's attention shapes (bf16, head dim 64), on a CUDA GPU.

    python3 benchmarks/attention_backends.py [--frames 8,100] [--tokens-per-frame 930]

Global attention sees all frames' tokens at once (B=1, T=S*930 at 350x518); frame attention
sees one frame (B=S, T=930). Prints median ms and achieved TFLOP/s (4*B*H*T^2*D per call).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

BACKENDS = {
    "flash": SDPBackend.FLASH_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
}


def time_ms(fn, repeats: int = 10) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", default="8,100")
    parser.add_argument("--tokens-per-frame", type=int, default=930)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--head-dim", type=int, default=64)
    args = parser.parse_args()
    h, d, p = args.heads, args.head_dim, args.tokens_per_frame
    print("| kind | frames | B | T | backend | ms | TFLOP/s |\n|---|---|---|---|---|---|---|")
    for s in (int(v) for v in args.frames.split(",")):
        for kind, b, t in (("global", 1, s * p), ("frame", s, p)):
            q, k, v = (torch.randn(b, h, t, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
            flops = 4 * b * h * t * t * d
            reference = None
            for name, backend in BACKENDS.items():
                try:
                    with sdpa_kernel(backend):
                        out = F.scaled_dot_product_attention(q, k, v)
                        ms = time_ms(lambda: F.scaled_dot_product_attention(q, k, v))  # noqa: B023
                except RuntimeError as exc:
                    print(f"| {kind} | {s} | {b} | {t} | {name} | unavailable: {str(exc)[:60]} | |")
                    continue
                if reference is None:
                    reference = out.float()
                err = float((out.float() - reference).norm() / reference.norm())
                print(
                    f"| {kind} | {s} | {b} | {t} | {name} | {ms:.2f} "
                    f"| {flops / ms / 1e9:.0f} (err {err:.1e}) |"
                )


if __name__ == "__main__":
    main()
