"""How much accuracy FP8 (e4m3) matrix products would cost VGGT, simulated on the CPU.

    python3 benchmarks/fp8_simulation.py [--frames 4] [--size 140x182]     # VGGT-1B, seeded weights
    python3 benchmarks/fp8_simulation.py --weights embedded --windows 4     # the trained compact model

Every linear layer of the trunk (encoder and aggregator) is replaced by an FP8 simulation:
activations quantised per row and weights per output channel to e4m3 (scale = 448 / amax),
then multiplied in float32, as a scaled FP8 GEMM with float32 accumulation would. Everything else stays
float32. Prints the relative L2 error of poses, depth and points against float32 with the
seeded recipe weights, for all trunk linears and for the MLP layers only, and the error of one
such GEMM on random input. No GPU needed: the question is numerical, not speed.

With ``--weights embedded`` (or a checkpoint file and ``--config``) the model is a trained one
and the inputs are held-out procedural windows with ground-truth depth: it also prints the depth
AbsRel (one median scale per window) in float32 and with FP8, and the change.
"""

from __future__ import annotations

import argparse
import copy

import torch
import torch.nn.functional as F
from torch import nn

from vggt_ros.eval.bench import BenchCase, parse_sizes, synthetic_frames
from vggt_ros.eval.window_metrics import window_depth_errors
from vggt_ros.model.config import get_config
from vggt_ros.model.seeded import seeded_weights_for
from vggt_ros.model.vggt import VGGT

E4M3_MAX = 448.0
OUTPUTS = ("pose_enc", "depth", "world_points")


def quantize_e4m3(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Round ``x`` to e4m3 with one scale per slice along ``dim``; returned dequantised."""
    scale = E4M3_MAX / x.abs().amax(dim=dim, keepdim=True).clamp_min(1e-12)
    return (x * scale).to(torch.float8_e4m3fn).float() / scale


class SimulatedFp8Linear(nn.Module):
    """A linear layer whose weights and inputs pass through e4m3 (per channel / per row)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.weight = quantize_e4m3(linear.weight.detach().float(), dim=1)
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(quantize_e4m3(x.float(), dim=-1), self.weight, self.bias)


def replace_linears(module: nn.Module, names: set[str] | None) -> None:
    """Swap every ``nn.Linear`` (or only those whose attribute name is in ``names``)."""
    for name, child in module.named_children():
        if isinstance(child, nn.Linear) and (names is None or name in names):
            setattr(module, name, SimulatedFp8Linear(child))
        else:
            replace_linears(child, names)


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.double() - ref.double()).norm() / ref.double().norm())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--size", default="140x182", help="HEIGHTxWIDTH, multiples of 14")
    parser.add_argument(
        "--weights", default="seeded", help="'seeded' (VGGT-1B recipe), 'embedded' or a checkpoint file"
    )
    parser.add_argument("--config", default=None, help="config of a checkpoint file")
    parser.add_argument("--windows", type=int, default=4, help="held-out windows (trained weights)")
    args = parser.parse_args()
    ((height, width),) = parse_sizes(args.size)
    if args.weights != "seeded":
        trained(args, height, width)
        return
    with torch.device("meta"):
        model = VGGT(get_config("vggt-1b"))
    model.load_state_dict(seeded_weights_for(model, seed=0), assign=True)
    model.reset_non_persistent_buffers()
    model.eval()
    images = synthetic_frames(BenchCase(args.frames, height, width))[None]
    with torch.inference_mode():
        reference = model(images)
        for label, names in (("all trunk linear layers", None), ("MLP layers only", {"fc1", "fc2"})):
            simulated = copy.deepcopy(model)
            replace_linears(simulated.aggregator, names)
            out = simulated(images)
            errors = ", ".join(f"{k} {relative_error(out[k], reference[k]):.2e}" for k in OUTPUTS)
            print(f"FP8 {label}: {errors}")
        linear = model.aggregator.global_blocks[10].mlp.fc1
        x = torch.randn(2048, linear.in_features, generator=torch.Generator().manual_seed(0))
        error = relative_error(SimulatedFp8Linear(linear)(x), F.linear(x, linear.weight, linear.bias))
        print(f"one FP8 GEMM (global block 10 fc1, random input): {error:.2e}")


def trained(args: argparse.Namespace, height: int, width: int) -> None:
    """FP8 on a trained model, judged against float32 and against ground-truth depth."""
    from vggt_ros.eval.procedural import ProceduralSettings
    from vggt_ros.model.checkpoint import load_model
    from vggt_ros.model.embedded import choose_model
    from vggt_ros.train.data import ProceduralSource

    choice = choose_model(None if args.weights == "embedded" else args.weights, args.config)
    model, _ = load_model(choice.source, config=choice.config, device="cpu")
    model.eval()
    settings = ProceduralSettings.held_out(height=height, width=width, frames=args.frames, track_queries=0)
    batch = ProceduralSource(settings, seed=0, stream=12).windows(range(args.windows), "cpu")
    print(f"model: {choice.description}; {args.windows} held-out windows of {args.frames} frames")
    variants = {"float32": model}
    for label, names in (("FP8 all trunk linear layers", None), ("FP8 MLP layers only", {"fc1", "fc2"})):
        variants[label] = copy.deepcopy(model)
        replace_linears(variants[label].aggregator, names)
    results: dict[str, list[dict[str, torch.Tensor]]] = {k: [] for k in variants}
    with torch.inference_mode():
        for w in range(args.windows):
            for label, m in variants.items():
                results[label].append(m(batch.images[w : w + 1]))
    for label in variants:
        abs_rel = [
            window_depth_errors(out["depth"][0, ..., 0].numpy(), batch.depth[w].numpy())[0]
            for w, out in enumerate(results[label])
        ]
        mean = sum(abs_rel) / len(abs_rel)
        line = f"{label}: depth AbsRel {mean:.4f}"
        if label != "float32":
            errors = {
                k: sum(relative_error(o[k], r[k]) for o, r in zip(results[label], results["float32"]))
                / args.windows
                for k in OUTPUTS
            }
            line += ", vs float32: " + ", ".join(f"{k} {v:.2e}" for k, v in errors.items())
        print(line)


if __name__ == "__main__":
    main()
