"""``vggt-ros export-onnx``: the model's sections as ONNX files, for TensorRT (Jetson) builds.

    vggt-ros export-onnx --out out/onnx                      # embedded model, its own image size
    vggt-ros export-onnx --out out/onnx_1b --checkpoint facebook/VGGT-1B --image-hw 350x518 \\
        --max-frames 16 --sections aggregator,depth,points

Writes one ``<section>.onnx`` per section (``vggt_ros.engine.onnx_export``: float32, opset 18,
frame axis dynamic, image size fixed) and ``manifest.json`` (inputs, outputs, shapes, image size,
the weights' identity). Unless ``--no-check``, each export is run with onnxruntime at 1 frame
and at ``--max-frames`` against the PyTorch section (relative error, printed and stored; the
command fails above ``--tolerance``) and checked for what TensorRT cannot parse (float64,
custom-domain ops). docs/tensorrt.md says how to build engines from these files.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from vggt_ros.eval.model_options import model_choice

logger = logging.getLogger("vggt_ros.eval")

SECTIONS = ("aggregator", "depth", "points", "camera")


def add_export_onnx(subparsers: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    """Add ``vggt-ros export-onnx``."""
    from vggt_ros.model.config import CONFIGS

    p = subparsers.add_parser(
        "export-onnx",
        parents=parents,
        help="export the model's sections to ONNX (for TensorRT), checked against PyTorch",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", "-o", type=Path, required=True, help="output folder (created)")
    p.add_argument("--checkpoint", default=None, help="weights (default: the embedded compact model)")
    p.add_argument("--untrained", action="store_true", help="random weights of --config")
    p.add_argument("--config", default=None, choices=sorted(CONFIGS))
    p.add_argument(
        "--image-hw",
        default=None,
        help="HEIGHTxWIDTH the engines will take, multiples of 14 (default: square of the model's size)",
    )
    p.add_argument("--max-frames", type=int, default=8, help="largest window the export is traced for")
    p.add_argument(
        "--sections",
        default="aggregator,depth,points,camera",
        help=f"comma-separated subset of {', '.join(SECTIONS)} (tracks stay in PyTorch)",
    )
    p.add_argument("--all-layers", action="store_true", help="trunk keeps all layers (the 'official' mode)")
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime parity check")
    p.add_argument("--tolerance", type=float, default=1e-3, help="largest relative error accepted")
    p.set_defaults(handler=run_export_onnx)


def _image_hw(text: str | None, size: int) -> tuple[int, int]:
    if text is None:
        return size, size
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--image-hw must be HEIGHTxWIDTH like 350x518, got {text!r}") from None
    if h <= 0 or w <= 0 or h % 14 or w % 14:
        raise ValueError(f"--image-hw {h}x{w}: both sides must be positive multiples of 14")
    return h, w


def run_export_onnx(args: argparse.Namespace) -> int:
    """The ``export-onnx`` subcommand."""
    import importlib.util

    from vggt_ros.engine import onnx_export
    from vggt_ros.model.checkpoint import load_model

    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown or not sections:
        raise ValueError(f"--sections: unknown {unknown}; choose from {', '.join(SECTIONS)}")
    if args.max_frames < 1:
        raise ValueError("--max-frames must be >= 1")
    for module in ("onnx", "onnxscript") + (() if args.no_check else ("onnxruntime",)):
        if importlib.util.find_spec(module) is None:
            raise ValueError(f"export-onnx needs the {module!r} package: pip install 'vggt_ros[onnx]'")
    args.size = None
    choice = model_choice(args)
    hw = _image_hw(args.image_hw, choice.image_size)
    model, info = load_model(choice.source, config=choice.config, device="cpu")
    model = onnx_export.float32_copy(model).eval()
    args.out.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {
        "model": choice.description,
        "config": choice.config,
        "weights": {"source": info.source, "identity": info.identity, "format": info.format},
        "image_hw": list(hw),
        "max_frames": args.max_frames,
        "opset": onnx_export.OPSET,
        "export_schema": onnx_export.EXPORT_SCHEMA,
        "sections": {},
    }
    failed = []
    for name in sections:
        head = {"camera": model.camera_head, "depth": model.depth_head, "points": model.point_head}
        if name != "aggregator" and head[name] is None:
            raise ValueError(f"the model has no {name} head")
        t0 = time.perf_counter()
        section = onnx_export.export_section(
            model, name, args.out / f"{name}.onnx", hw, args.max_frames, keep_all_layers=args.all_layers
        )
        entry: dict[str, Any] = {
            "path": section.path.name,
            "inputs": list(section.inputs),
            "outputs": list(section.outputs),
            "input_shapes": {k: list(v) for k, v in section.input_shapes.items()},
            "max_frames": section.max_frames,
            "export_s": round(time.perf_counter() - t0, 2),
        }
        if not args.no_check:
            checks = sorted({1, section.max_frames})
            errors = {n: onnx_export.onnxruntime_parity(model, section, n) for n in checks}
            worst = max(max(e.values()) for e in errors.values())
            entry["onnxruntime_relative_error"] = {str(n): e for n, e in errors.items()}
            entry["tensorrt_incompatibilities"] = onnx_export.tensorrt_incompatibilities(section.path)
            ok = worst <= args.tolerance and not entry["tensorrt_incompatibilities"]
            print(
                f"{name}: {section.path} ({entry['export_s']} s); onnxruntime vs PyTorch at "
                f"{'/'.join(map(str, checks))} frames: max relative error {worst:.2e}"
                + ("" if ok else "  FAILED")
            )
            if not ok:
                failed.append(name)
        else:
            print(f"{name}: {section.path} ({entry['export_s']} s)")
        manifest["sections"][name] = entry
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {args.out / 'manifest.json'}")
    if failed:
        raise ValueError(
            f"export(s) {', '.join(failed)} differ from PyTorch by more than --tolerance "
            f"{args.tolerance} or hold ops TensorRT cannot parse (see manifest.json)"
        )
    return 0


SUBCOMMAND_ADDERS = [add_export_onnx]
