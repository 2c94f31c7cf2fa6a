"""Where a window's time and memory go, on a CUDA GPU: kernel categories and a memory walk.

    python3 benchmarks/profile_window.py [--frames 8] [--mode bf16] [--backend torch]
                                         [--memory-frames 100] [--memory-backend eager]

1. **Kernels** (``--frames``): the runner's whole window under ``torch.profiler``; CUDA kernel
   time summed by category (GEMM, attention, convolution, Triton-fused, other) per window,
   against the wall time of the window. Wall minus kernel time is launch and host overhead.
2. **Memory walk** (``--memory-frames``): the bytes allocated before every block / head call
   and the peak reached inside it, so the peak of a long window can be attributed.

VGGT-1B with its own random initialisation: timing and memory do not depend on weight values.
"""

from __future__ import annotations

import argparse
import gc
import re
import statistics
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from vggt_ros.engine.cpu_isa import make_cpu_bf16_safe
from vggt_ros.engine.runner import ModelRunner
from vggt_ros.eval.bench import BenchCase, query_grid, synthetic_frames
from vggt_ros.model.config import get_config
from vggt_ros.model.vggt import VGGT

CATEGORIES = (
    ("attention", re.compile(r"sdpa|fmha|flash|attention|softmax", re.I)),
    ("gemm", re.compile(r"gemm|nvjet|xmma|cutlass|sm90_|matmul|gemv", re.I)),
    ("conv", re.compile(r"conv|implicit|winograd|dgrad|wgrad|cudnn", re.I)),
    ("triton", re.compile(r"^triton_", re.I)),
    ("copy/cast", re.compile(r"copy|cast|cat|fill|index", re.I)),
)


def category(kernel: str) -> str:
    for name, pattern in CATEGORIES:
        if pattern.search(kernel):
            return name
    return "other"


def build_runner(mode: str, backend: str, options: dict) -> ModelRunner:
    return ModelRunner(VGGT(get_config("vggt-1b")), "cuda", mode, backend=backend, options=options)


def kernel_breakdown(runner: ModelRunner, frames: int, tracks: int, repeats: int = 3) -> None:
    case = BenchCase(frames, 350, 518, tracks)
    images = synthetic_frames(case).cuda()
    queries = query_grid(tracks, 350, 518).cuda() if tracks else None
    for _ in range(3):
        runner.run(images, queries)
    torch.cuda.synchronize()
    walls = []
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            runner.run(images, queries)
            end.record()
            torch.cuda.synchronize()
            walls.append(start.elapsed_time(end))
    by_category: dict[str, float] = defaultdict(float)
    by_kernel: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for event in prof.events():
        if event.device_type != torch.autograd.DeviceType.CUDA:
            continue
        us = event.device_time
        by_category[category(event.name)] += us / 1e3 / repeats
        by_kernel[event.name] += us / 1e3 / repeats
        counts[category(event.name)] += 1
    busy = sum(by_category.values())
    wall = statistics.median(walls)
    print(f"\n## kernels, {frames} frames, {tracks} tracks, mode {runner.mode.name}/{runner.backend}")
    print(f"wall {wall:.1f} ms, kernel time {busy:.1f} ms, gap {wall - busy:.1f} ms")
    for name, ms in sorted(by_category.items(), key=lambda kv: -kv[1]):
        print(f"  {name:10s} {ms:7.2f} ms  {counts[name] // repeats:5d} kernels")
    print("  top kernels:")
    for name, ms in sorted(by_kernel.items(), key=lambda kv: -kv[1])[:12]:
        print(f"    {ms:7.2f} ms  {name[:110]}")


def memory_walk(runner: ModelRunner, frames: int) -> None:
    model = runner.model
    agg = model.aggregator
    watched = {
        "encoder[0]": agg.patch_embed.blocks[0],
        "encoder[23]": agg.patch_embed.blocks[-1],
        "frame[0]": agg.frame_blocks[0],
        "global[0]": agg.global_blocks[0],
        "global[4]": agg.global_blocks[4],
        "frame[23]": agg.frame_blocks[-1],
        "global[23]": agg.global_blocks[-1],
        "depth_head": model.depth_head,
        "point_head": model.point_head,
    }
    rows: list[tuple[str, float, float]] = []

    def pre(name: str):
        def hook(module, args):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            rows.append((name, torch.cuda.memory_allocated() / 1e9, float("nan")))

        return hook

    def post(name: str):
        def hook(module, args, output):
            torch.cuda.synchronize()
            before = rows[-1][1]
            rows[-1] = (name, before, torch.cuda.max_memory_allocated() / 1e9)

        return hook

    handles = []
    for name, module in watched.items():
        if module is not None:
            handles.append(module.register_forward_pre_hook(pre(name)))
            handles.append(module.register_forward_hook(post(name)))
    weights_gb = sum(p.numel() * p.element_size() for p in model.parameters()) / 1e9
    images = synthetic_frames(BenchCase(frames, 350, 518)).cuda()
    runner.run(images)  # warm
    rows.clear()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    runner.run(images)
    for h in handles:
        h.remove()
    print(f"\n## memory walk, {frames} frames, mode {runner.mode.name}/{runner.backend}")
    print(f"parameters {weights_gb:.2f} GB")
    for sub, module in (
        ("encoder", agg.patch_embed),
        ("aggregator blocks", torch.nn.ModuleList([*agg.frame_blocks, *agg.global_blocks])),
        ("camera head", model.camera_head),
        ("depth head", model.depth_head),
        ("point head", model.point_head),
        ("track head", model.track_head),
    ):
        if module is not None:
            gb = sum(p.numel() * p.element_size() for p in module.parameters()) / 1e9
            print(f"  {sub:18s} {gb:.3f} GB")
    print("| call | allocated before GB | peak inside GB | transient GB |")
    for name, before, peak in rows:
        print(f"| {name} | {before:.2f} | {peak:.2f} | {peak - before:.2f} |")


def _our_frame(frames: list[dict]) -> str:
    """The innermost stack frame in this package (where an allocation was asked for)."""
    for frame in frames:
        if "vggt_ros" in frame["filename"]:
            return f"{frame['filename'].split('vggt_ros/')[-1]}:{frame['line']} {frame['name']}"
    return frames[0]["name"] if frames else "?"


def peak_breakdown(runner: ModelRunner, frames: int, top: int = 14) -> None:
    """Live allocations at the peak of one window, grouped by the line that made them."""
    images = synthetic_frames(BenchCase(frames, 350, 518)).cuda()
    runner.run(images)  # warm (compiles)
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    torch.cuda.memory._record_memory_history(max_entries=2_000_000, stacks="python")
    runner.run(images)
    torch.cuda.synchronize()
    snapshot = torch.cuda.memory._snapshot()
    torch.cuda.memory._record_memory_history(enabled=None)
    live: dict[int, tuple[int, str]] = {}
    current = peak = 0
    at_peak: dict[int, tuple[int, str]] = {}
    for event in snapshot["device_traces"][0]:
        action = event["action"]
        if action == "alloc":
            live[event["addr"]] = (event["size"], _our_frame(event.get("frames", [])))
            current += event["size"]
            if current > peak:
                peak, at_peak = current, dict(live)
        elif action == "free_completed" and event["addr"] in live:
            current -= live.pop(event["addr"])[0]
    groups: dict[str, float] = defaultdict(float)
    for size, where in at_peak.values():
        groups[where] += size / 1e9
    print(f"\n## peak breakdown, {frames} frames, mode {runner.mode.name}/{runner.backend}")
    peak_gb = torch.cuda.max_memory_allocated() / 1e9
    print(f"allocated before the window {base / 1e9:.2f} GB; peak {peak_gb:.2f} GB")
    print(f"allocated during the window and live at its peak: {peak / 1e9:.2f} GB")
    for where, gb in sorted(groups.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {gb:6.3f} GB  {where}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--tracks", default="0", help="comma-separated query-point counts, e.g. 0,256")
    parser.add_argument("--mode", default="bf16")
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--option", action="append", default=[], help="runner option KEY=VALUE (int/bool)")
    parser.add_argument("--memory-frames", type=int, default=0)
    parser.add_argument("--memory-backend", default="eager")
    parser.add_argument("--peak-frames", type=int, default=0, help="peak breakdown at this window size")
    args = parser.parse_args()
    make_cpu_bf16_safe()
    options = {}
    for item in args.option:
        key, value = item.split("=", 1)
        options[key] = {"true": True, "false": False}.get(
            value.lower(), int(value) if value.isdigit() else value
        )
    if args.frames:
        runner = build_runner(args.mode, args.backend, options)
        for tracks in (int(n) for n in args.tracks.split(",")):
            kernel_breakdown(runner, args.frames, tracks)
        del runner
    if args.memory_frames:
        torch._dynamo.reset()  # compiled code holds the first runner's model alive
        gc.collect()
        torch.cuda.empty_cache()
        memory_walk(build_runner(args.mode, args.memory_backend, options), args.memory_frames)
    if args.peak_frames:
        torch._dynamo.reset()
        gc.collect()
        torch.cuda.empty_cache()
        peak_breakdown(build_runner(args.mode, args.backend, options), args.peak_frames)


if __name__ == "__main__":
    main()
