"""TensorRT sections: ONNX exports built into engines, cached on disk, run on torch CUDA tensors.

Written against the TensorRT 10 Python API (JetPack 6.1+ ships 10.3). **It has never run**:
TensorRT cannot be installed on the machines this project is developed and tested on. What is
tested there: the ONNX exports (onnxruntime parity), the engine cache, the fallback, and this
module's build path against a stand-in ``tensorrt`` module (flags, profiles, cache use).
See docs/tensorrt.md.

Flow (:func:`build_tensorrt_sections`): check TensorRT and CUDA -> resolve options -> per
section, an :class:`~vggt_ros.engine.engine_cache.EngineKey` -> cached engine bytes, or export
ONNX from a float32 copy of the model and build with the TensorRT builder (precision flags,
one optimisation profile over the frame axis) -> deserialise -> wrap as a callable with the
eager section's signature. Every condition that stops this raises
:class:`~vggt_ros.engine.runner.BackendUnavailableError` with the reason, so the runner falls
back to the next backend with one log line. At run time, a call outside the engine's profile
(another image size, more frames) runs the eager section instead, with one warning.

Options (``ModelRunner(..., options={...})``):
    image_hw: (H, W) the engines are built for (required: engines fix the image size).
    min_frames / opt_frames / max_frames: the trunk's frame profile (default 1 / 8 / 32).
    cache_dir: engine cache folder (default :func:`~vggt_ros.engine.engine_cache.default_cache_dir`).
    weights_identity: a string naming the exact weights (default: sha256 of the state dict).
    tensorrt_sections: sections to build (default aggregator, depth, points; camera possible).
    workspace_gb: builder workspace limit (default: TensorRT's, the device memory).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

from vggt_ros.engine import onnx_export
from vggt_ros.engine.backend_api import BackendContext, BackendUnavailableError, Sections
from vggt_ros.engine.engine_cache import EngineCache, EngineKey, FrameProfile
from vggt_ros.engine.modes import InferenceMode
from vggt_ros.model.vggt import VGGT

logger = logging.getLogger(__name__)

DEFAULT_SECTIONS = ("aggregator", "depth", "points")
ENGINE_SECTIONS = ("aggregator", "camera", "depth", "points")  # tracks stay in PyTorch

# Mode -> builder precision. "official" computes the trunk in bf16 (as the official README does).
PRECISION_OF_MODE = {"fp32": "fp32", "official": "bf16", "bf16": "bf16", "fp16": "fp16"}


@dataclass(frozen=True)
class TensorRTOptions:
    """Resolved backend options (see the module docstring)."""

    image_hw: tuple[int, int]
    profile: FrameProfile
    precision: str
    io_dtype: torch.dtype  # dtype of the layers passed between sections
    keep_all_layers: bool
    sections: tuple[str, ...]
    cache_dir: Path | None
    weights_identity: str | None
    workspace_bytes: int | None


def resolve_options(options: dict[str, Any], mode: InferenceMode) -> TensorRTOptions:
    """Validate ``ctx.options`` for this backend; raises BackendUnavailableError on bad ones."""
    if "image_hw" not in options:
        raise BackendUnavailableError(
            "TensorRT engines are built for one image size: pass options={'image_hw': (H, W)}"
        )
    try:
        h, w = (int(v) for v in options["image_hw"])
        profile = FrameProfile(
            int(options.get("min_frames", 1)),
            int(options.get("opt_frames", 8)),
            int(options.get("max_frames", 32)),
            h,
            w,
        )
    except (TypeError, ValueError) as exc:
        raise BackendUnavailableError(f"bad TensorRT options: {exc}") from exc
    sections = tuple(options.get("tensorrt_sections", DEFAULT_SECTIONS))
    unknown = sorted(set(sections) - set(ENGINE_SECTIONS))
    if unknown:
        raise BackendUnavailableError(
            f"cannot build TensorRT engines for {unknown}; known: {ENGINE_SECTIONS}"
        )
    if mode.name not in PRECISION_OF_MODE:
        raise BackendUnavailableError(f"no TensorRT precision for mode {mode.name!r}")
    workspace = options.get("workspace_gb")
    cache_dir = options.get("cache_dir")
    return TensorRTOptions(
        image_hw=(h, w),
        profile=profile,
        precision=PRECISION_OF_MODE[mode.name],
        io_dtype=mode.keep_dtype or torch.float32,
        keep_all_layers=mode.keep_all_layers,
        sections=sections,
        cache_dir=Path(cache_dir) if cache_dir is not None else None,
        weights_identity=options.get("weights_identity"),
        workspace_bytes=int(float(workspace) * 2**30) if workspace is not None else None,
    )


def import_tensorrt() -> ModuleType:
    """``import tensorrt``, requiring the TensorRT 10 API (name-based tensors, enqueueV3)."""
    try:
        trt = importlib.import_module("tensorrt")
    except ImportError as exc:
        raise BackendUnavailableError(f"the tensorrt Python package does not import ({exc})") from exc
    version = str(getattr(trt, "__version__", "0"))
    if int(version.split(".")[0] or 0) < 10:
        raise BackendUnavailableError(f"TensorRT {version} found; this backend needs TensorRT 10 or newer")
    return trt


def gpu_identity(device: torch.device) -> tuple[str, str]:
    """(GPU name, compute capability "major.minor"): engines are only valid on the same GPU."""
    major, minor = torch.cuda.get_device_capability(device)
    return torch.cuda.get_device_name(device), f"{major}.{minor}"


def weights_fingerprint(model: torch.nn.Module) -> str:
    """sha256 over every state-dict entry's name, dtype, shape and bytes (a few seconds for 1B)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).contiguous().view(torch.uint8).cpu().numpy().tobytes())
    return "sha256:" + digest.hexdigest()


def engine_variant(model: VGGT, section: str, opts: TensorRTOptions) -> str:
    """What else shapes the graph: export schema, opset, I/O dtype, exported layers."""
    parts = [f"schema={onnx_export.EXPORT_SCHEMA}", f"opset={onnx_export.OPSET}", f"io={opts.io_dtype}"]
    parts.append(f"config={model.config.name}")
    if section == "aggregator":
        parts.append("layers=" + ",".join(map(str, onnx_export.kept_layers(model, opts.keep_all_layers))))
    return ";".join(parts)


def section_profile(model: VGGT, section: str, profile: FrameProfile) -> FrameProfile:
    """Dense heads run frame chunks of at most ``frames_chunk_size``: their profile is capped."""
    head = {"depth": model.depth_head, "points": model.point_head}.get(section)
    if head is None:
        return profile
    # The last chunk of a window can hold a single frame, so head profiles always start at 1.
    chunk = head.frames_chunk_size if head.frames_chunk_size > 0 else profile.max_frames
    return dataclasses.replace(profile.clamp(chunk), min_frames=1)


_TORCH_TO_TRT = {torch.float32: "FLOAT", torch.float16: "HALF", torch.bfloat16: "BF16"}


def _trt_dtype(trt: ModuleType, dtype: torch.dtype) -> Any:
    return getattr(trt.DataType, _TORCH_TO_TRT[dtype])


def _torch_dtype(trt: ModuleType, dtype: Any) -> torch.dtype:
    for torch_dtype, name in _TORCH_TO_TRT.items():
        if dtype == getattr(trt.DataType, name):
            return torch_dtype
    raise BackendUnavailableError(f"engine tensor type {dtype} is not supported by this wrapper")


def build_serialized_engine(
    trt: ModuleType,
    exported: onnx_export.ExportedSection,
    precision: str,
    profile: FrameProfile,
    io_dtype: torch.dtype = torch.float32,
    workspace_bytes: int | None = None,
) -> bytes:
    """Parse an ONNX export and build a serialised engine with one frame-axis profile.

    Reduced precision is *allowed* (FP16/BF16 builder flags) rather than forced; normalisation
    layers are pinned to float32, as the PyTorch modes keep their norms in float32. The layers
    passed between sections use ``io_dtype`` so they cross memory in the mode's keep dtype.
    """
    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse_from_file(str(exported.path)):  # resolves external weight files beside it
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"ONNX parser rejected {exported.path.name}: {errors}")
    config = builder.create_builder_config()
    if workspace_bytes:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if precision == "fp32":
        config.clear_flag(trt.BuilderFlag.TF32)  # the fp32 mode is the accuracy reference
    else:
        config.set_flag(trt.BuilderFlag.FP16 if precision == "fp16" else trt.BuilderFlag.BF16)
        config.set_flag(trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            if layer.type == trt.LayerType.NORMALIZATION:
                layer.precision = trt.DataType.FLOAT
                for j in range(layer.num_outputs):
                    layer.set_output_type(j, trt.DataType.FLOAT)
    if io_dtype != torch.float32:
        io_type = _trt_dtype(trt, io_dtype)
        for i in range(network.num_inputs):
            if network.get_input(i).name.startswith("layer_"):
                network.get_input(i).dtype = io_type
        for i in range(network.num_outputs):
            if network.get_output(i).name.startswith("layer_"):
                network.get_output(i).dtype = io_type
    trt_profile = builder.create_optimization_profile()
    for name in exported.inputs:
        shapes = [
            exported.shapes_for(f)[name] for f in (profile.min_frames, profile.opt_frames, profile.max_frames)
        ]
        trt_profile.set_shape(name, *shapes)
    config.add_optimization_profile(trt_profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT could not build {exported.name} (see the TensorRT log above)")
    return bytes(serialized)


def load_engine(
    trt: ModuleType, runtime: Any, cache: EngineCache, key: EngineKey, build: Callable[[], bytes]
) -> Any:
    """Deserialise the cached engine for ``key`` (building and caching it when missing).

    An entry TensorRT refuses to deserialise is dropped and rebuilt once; a fresh build that
    still does not deserialise makes the backend unavailable.
    """
    data, cached = cache.get_or_build(key, build)
    engine = runtime.deserialize_cuda_engine(data)
    if engine is None and cached:
        logger.warning("TensorRT could not deserialise cached %s; rebuilding it", key.filename())
        cache.invalidate(key)
        data, _ = cache.get_or_build(key, build)
        engine = runtime.deserialize_cuda_engine(data)
    if engine is None:
        raise BackendUnavailableError(
            f"TensorRT could not deserialise the freshly built {key.section} engine"
        )
    return engine


def prepare_engines(
    trt: ModuleType,
    model: VGGT,
    opts: TensorRTOptions,
    gpu: tuple[str, str],
    cache: EngineCache,
    runtime: Any,
    workdir: Path,
) -> dict[str, Any]:
    """Deserialised engines by section; the model is exported only for sections not cached."""
    weights = opts.weights_identity or weights_fingerprint(model)
    export_model: VGGT | None = None
    engines = {}
    for section in opts.sections:
        profile = section_profile(model, section, opts.profile)
        key = EngineKey(
            section=section,
            weights_identity=weights,
            gpu_name=gpu[0],
            compute_capability=gpu[1],
            tensorrt_version=str(trt.__version__),
            precision=opts.precision,
            profile=profile,
            variant=engine_variant(model, section, opts),
        )

        def build(section: str = section, profile: FrameProfile = profile) -> bytes:
            nonlocal export_model
            if export_model is None:
                export_model = onnx_export.float32_copy(model)
            path = workdir / section / f"{section}.onnx"
            logger.info("exporting the %s section to ONNX for TensorRT", section)
            exported = onnx_export.export_section(
                export_model, section, path, opts.image_hw, profile.max_frames, opts.keep_all_layers
            )
            logger.info("building the %s TensorRT engine (%s); this takes minutes", section, opts.precision)
            return build_serialized_engine(
                trt, exported, opts.precision, profile, opts.io_dtype, opts.workspace_bytes
            )

        engines[section] = load_engine(trt, runtime, cache, key, build)
    return engines


class EngineRunner:
    """One engine and its execution context; called with torch CUDA tensors by name."""

    def __init__(self, trt: ModuleType, engine: Any, device: torch.device) -> None:
        self.engine = engine
        self.device = device
        self.context = engine.create_execution_context()
        if self.context is None:
            raise BackendUnavailableError("TensorRT could not create an execution context (out of memory?)")
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        self.dtypes = {n: _torch_dtype(trt, engine.get_tensor_dtype(n)) for n in names}
        first_shape = tuple(engine.get_tensor_shape(self.inputs[0]))
        self.token_count = int(first_shape[2]) if len(first_shape) == 4 else -1  # [1, S, T, C] layer inputs

    def __call__(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        feeds = {}
        for name in self.inputs:
            t = inputs[name].to(self.device, self.dtypes[name]).contiguous()
            feeds[name] = t  # kept alive until the enqueue below (same-stream reuse is safe)
            if not self.context.set_input_shape(name, tuple(t.shape)):
                raise RuntimeError(f"TensorRT rejected shape {tuple(t.shape)} for {name}")
            self.context.set_tensor_address(name, t.data_ptr())
        outputs = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            outputs[name] = torch.empty(shape, dtype=self.dtypes[name], device=self.device)
            self.context.set_tensor_address(name, outputs[name].data_ptr())
        if not self.context.execute_async_v3(torch.cuda.current_stream(self.device).cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        return outputs


class _Section:
    """Engine-backed section that hands calls outside the engine's profile to the eager one."""

    def __init__(
        self, name: str, runner: EngineRunner, eager: Callable[..., Any], profile: FrameProfile
    ) -> None:
        self.name = name
        self.runner = runner
        self.eager = eager
        self.profile = profile
        self._warned: set[str] = set()

    def fits(
        self, image_hw: Sequence[int] | None, frames: int | None = None, tokens: int | None = None
    ) -> bool:
        """Whether the engine can serve this call; warns once per kind of mismatch."""
        p = self.profile
        problem = None
        if image_hw is not None and tuple(image_hw) != (p.height, p.width):
            problem = f"is built for {p.height}x{p.width} images, not {image_hw[0]}x{image_hw[1]}"
        elif tokens is not None and tokens != self.tokens:
            problem = f"is built for {self.tokens} tokens per frame, not {tokens}"
        elif frames is not None and not p.min_frames <= frames <= p.max_frames:
            problem = f"takes {p.min_frames} to {p.max_frames} frames, not {frames}"
        if problem is None:
            return True
        kind = problem.split(" not ")[0]
        if kind not in self._warned:
            logger.warning("TensorRT %s engine %s; running that eagerly", self.name, problem)
            self._warned.add(kind)
        return False

    @property
    def tokens(self) -> int:
        """Tokens per frame the engine's first input takes (axis 2 of [1, S, T, C])."""
        return self.runner.token_count


class AggregatorSection(_Section):
    """``aggregate(images, with_tracks, keep_all_layers, keep_dtype)`` on the trunk engine."""

    def __init__(
        self, runner: EngineRunner, eager: Callable[..., Any], profile: FrameProfile, all_layers: bool
    ):
        super().__init__("aggregator", runner, eager, profile)
        self.all_layers = all_layers

    def __call__(self, images: Tensor, with_tracks: bool, keep_all_layers: bool = False, keep_dtype=None):
        if not self.fits(images.shape[-2:], frames=images.shape[1]) or (
            keep_all_layers and not self.all_layers
        ):
            return self.eager(images, with_tracks, keep_all_layers, keep_dtype)
        # Global attention mixes frames of one window only, so windows of a batch run one by one.
        per_window = [self.runner({"images": images[b : b + 1]}) for b in range(images.shape[0])]
        layers = {}
        for name in self.runner.outputs:
            layer = (
                torch.cat([out[name] for out in per_window]) if len(per_window) > 1 else per_window[0][name]
            )
            layers[int(name.split("_")[1])] = layer if keep_dtype is None else layer.to(keep_dtype)
        return layers


class DenseHeadSection(_Section):
    """``predict_depth`` / ``predict_points`` (layers, image_hw) -> (values, conf), chunked."""

    def __call__(self, layers: dict[int, Tensor], image_hw: tuple[int, int]) -> tuple[Tensor, Tensor]:
        first = layers[_layer_index(self.runner.inputs[0])]
        if not self.fits(image_hw):
            return self.eager(layers, image_hw)
        chunk = self.profile.max_frames
        values, conf = [], []
        for b in range(first.shape[0]):
            for start in range(0, first.shape[1], chunk):
                feeds = {
                    n: layers[_layer_index(n)][b : b + 1, start : start + chunk] for n in self.runner.inputs
                }
                out = self.runner(feeds)
                values.append(out["values"])
                conf.append(out["conf"])
        batch = first.shape[0]
        return _stack_chunks(values, batch), _stack_chunks(conf, batch)


class CameraSection(_Section):
    """``predict_cameras(layers)`` -> pose encodings per refinement step."""

    def __call__(self, layers: dict[int, Tensor]) -> list[Tensor]:
        (name,) = self.runner.inputs
        layer = layers[_layer_index(name)]
        if not self.fits(None, frames=layer.shape[1], tokens=layer.shape[2]):
            return self.eager(layers)
        per_window = [self.runner({name: layer[b : b + 1]}) for b in range(layer.shape[0])]
        return [torch.cat([out[n] for out in per_window]) for n in self.runner.outputs]


def _layer_index(tensor_name: str) -> int:
    """``layer_17`` -> 17 (the exports name the trunk layers they pass this way)."""
    return int(tensor_name.split("_")[1])


def _stack_chunks(chunks: list[Tensor], batch: int) -> Tensor:
    """Chunks in (window, frame-chunk) order -> [B, S, ...]."""
    per_window = len(chunks) // batch
    rows = [torch.cat(chunks[b * per_window : (b + 1) * per_window], dim=1) for b in range(batch)]
    return torch.cat(rows, dim=0)


def build_tensorrt_sections(ctx: BackendContext) -> Sections:
    """The ``tensorrt`` backend factory (registered in :mod:`vggt_ros.engine.backends`)."""
    trt = import_tensorrt()
    if ctx.device.type != "cuda" or not torch.cuda.is_available():
        raise BackendUnavailableError("TensorRT needs a CUDA device")
    opts = resolve_options(ctx.options, ctx.mode)
    model = ctx.model
    missing = [s for s in opts.sections if s != "aggregator" and _head(model, s) is None]
    if missing:
        raise BackendUnavailableError(f"the model has no {', '.join(missing)} head(s) to build engines for")
    cache = EngineCache(opts.cache_dir)
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    try:
        with tempfile.TemporaryDirectory(prefix="vggt_onnx_") as workdir:
            engines = prepare_engines(
                trt, model, opts, gpu_identity(ctx.device), cache, runtime, Path(workdir)
            )
    except BackendUnavailableError:
        raise
    except Exception as exc:  # export/build failures must fall back, never take the node down
        raise BackendUnavailableError(
            f"building TensorRT engines failed: {type(exc).__name__}: {exc}"
        ) from exc
    sections: Sections = {}
    for name, engine in engines.items():
        runner = EngineRunner(trt, engine, ctx.device)
        profile = section_profile(model, name, opts.profile)
        if name == "aggregator":
            sections[name] = AggregatorSection(runner, ctx.eager[name], profile, opts.keep_all_layers)
        elif name == "camera":
            sections[name] = CameraSection(name, runner, ctx.eager[name], profile)
        else:
            sections[name] = DenseHeadSection(name, runner, ctx.eager[name], profile)
    logger.info("TensorRT sections %s ready (%s, cache %s)", ", ".join(sections), opts.precision, cache.root)
    return sections


def _head(model: VGGT, section: str) -> Any:
    return {"camera": model.camera_head, "depth": model.depth_head, "points": model.point_head}.get(section)
