"""Export VGGT's sections to ONNX (for TensorRT) and check them against PyTorch.

One function per section:

- :func:`export_aggregator`: the trunk, DINOv2 encoder plus the alternating frame/global
  blocks. Input ``images`` [1, S, 3, H, W] in [0, 1]; outputs ``layer_<i>`` [1, S, T, 2 * dim]
  for the kept layers. The frame axis S is dynamic; H and W are fixed per export because the
  encoder's interpolated position table and the RoPE tables depend on them: both are computed
  here for the exported size and stored as constants.
- :func:`export_dense_head`: the depth or point DPT head over one chunk of frames. Inputs
  ``layer_<i>`` [1, s, T, 2 * dim] for the four layers it reads (s dynamic, up to the head's
  ``frames_chunk_size``); outputs ``values`` [1, s, H, W, C] and ``conf`` [1, s, H, W].
- :func:`export_camera_head`: the camera head. Input the last layer [1, S, T, 2 * dim] (S
  dynamic); outputs ``pose_enc_<k>`` [1, S, 9], one per refinement step.

Batch is fixed at 1 (the node runs one window at a time); callers loop over a batch.
The track head (iterative correlation sampling) is not exported; it stays in PyTorch.

The wrappers call the model's own modules; only the top-level glue of the trunk is restated so
that shape-dependent tables become constants. :func:`onnxruntime_parity` runs an export with
onnxruntime and compares it with the eager section, which is how the tests hold the two
together. Exports are float32; TensorRT lowers precision at build time.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from vggt_ros.model.aggregator import Aggregator, _first_and_rest
from vggt_ros.model.dpt_head import DPTHead
from vggt_ros.model.vggt import VGGT

logger = logging.getLogger(__name__)

# The dynamo exporter's lowest opset. TensorRT 10 parses opsets up to 20 (and LayerNormalization
# from 17, which keeps norms as one normalization layer it can run in float32).
OPSET = 18
FRAMES = "frames"  # name of the dynamic axis in every export
EXPORT_SCHEMA = 1  # bump when the exported graphs change meaning (part of the engine cache key)


@dataclass(frozen=True)
class ExportedSection:
    """An ONNX file and what a runtime needs to bind it.

    Attributes:
        name: section name (``aggregator``, ``depth``, ``points``, ``camera``).
        path: the .onnx file (weights may sit beside it as external data).
        inputs / outputs: tensor names in order.
        input_shapes: per input its shape, with ``-1`` on the dynamic frame axis.
        image_hw: the image size the export is fixed to.
        max_frames: the largest frame count the export was traced for.
    """

    name: str
    path: Path
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    input_shapes: dict[str, tuple[int, ...]]
    image_hw: tuple[int, int]
    max_frames: int

    def shapes_for(self, frames: int) -> dict[str, tuple[int, ...]]:
        """Concrete input shapes for ``frames`` frames (for optimisation profiles)."""
        return {
            name: tuple(frames if d == -1 else d for d in shape) for name, shape in self.input_shapes.items()
        }


def float32_copy(model: VGGT) -> VGGT:
    """A float32 CPU copy of ``model`` (the runner may store its weights in bf16/fp16 on a GPU).

    Built on the meta device and filled by assignment, so no random initialisation is paid.
    """
    with torch.device("meta"):
        copy = VGGT(model.config)
    state = {k: v.detach().to("cpu", torch.float32) for k, v in model.state_dict().items()}
    copy.load_state_dict(state, strict=True, assign=True)
    copy.reset_non_persistent_buffers()
    return copy.eval()


@contextlib.contextmanager
def _plain_blocks(module: nn.Module) -> Iterator[None]:
    """Disable the runner's token chunking (a Python loop over concrete sizes) while tracing."""
    saved = []
    for m in module.modules():
        if "token_chunk" in vars(m):
            saved.append((m, m.token_chunk))
            m.token_chunk = None
    try:
        yield
    finally:
        for m, value in saved:
            m.token_chunk = value


class AggregatorTrunk(nn.Module):
    """Export form of :class:`Aggregator`: images [1, S, 3, H, W] -> kept layers [1, S, T, 2*dim].

    Same computation as ``Aggregator.forward`` (the parity tests hold them together), with the
    encoder's resampled position table and the RoPE tables precomputed for one image size.
    """

    def __init__(self, aggregator: Aggregator, image_hw: tuple[int, int], keep_layers: Sequence[int]) -> None:
        super().__init__()
        h, w = image_hw
        p = aggregator.patch_size
        if h % p or w % p:
            raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {p}")
        self.aggregator = aggregator
        self.keep_layers = tuple(sorted(keep_layers))
        grid = (h // p, w // p)
        ref = aggregator.camera_token
        with torch.no_grad():
            pos = aggregator.patch_embed.position_embedding(grid).to(ref.dtype).clone()
            cos, sin = aggregator.rope.tables(grid, aggregator.patch_start_idx, ref.device, ref.dtype)
        self.register_buffer("pos_embed", pos, persistent=False)
        self.register_buffer("rope_cos", cos.clone(), persistent=False)
        self.register_buffer("rope_sin", sin.clone(), persistent=False)

    def _encode(self, images: Tensor) -> Tensor:
        """``PatchEncoder.forward`` with the position table of the exported size."""
        enc = self.aggregator.patch_embed
        n = images.shape[0]
        x = enc.patch_embed(images)
        x = torch.cat((enc.cls_token.expand(n, -1, -1), x), dim=1) + self.pos_embed
        x = torch.cat((x[:, :1], enc.register_tokens.expand(n, -1, -1), x[:, 1:]), dim=1)
        for block in enc.blocks:
            x = block(x)
        return enc.norm(x)[:, 1 + enc.num_register_tokens :]

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        agg = self.aggregator
        b, s, c, h, w = images.shape
        normalized = (images - agg.image_mean) / agg.image_std
        patches = self._encode(normalized.reshape(b * s, c, h, w))
        tokens = torch.cat(
            (_first_and_rest(agg.camera_token, b, s), _first_and_rest(agg.register_token, b, s), patches),
            dim=1,
        )
        t, dim = tokens.shape[1], tokens.shape[2]
        frame_rope = (self.rope_cos, self.rope_sin)
        global_rope = (self.rope_cos.repeat(s, 1), self.rope_sin.repeat(s, 1))
        outputs = []
        for i in range(self.keep_layers[-1] + 1):
            tokens = agg.frame_blocks[i](tokens.reshape(b * s, t, dim), frame_rope)
            frame_out = tokens.reshape(b, s, t, dim)
            tokens = agg.global_blocks[i](tokens.reshape(b, s * t, dim), global_rope)
            if i in self.keep_layers:
                outputs.append(torch.cat((frame_out, tokens.reshape(b, s, t, dim)), dim=-1))
        return tuple(outputs)


class DenseHeadChunk(nn.Module):
    """Export form of a DPT head over one chunk of frames: four layers -> (values, conf)."""

    def __init__(self, head: DPTHead, image_hw: tuple[int, int], patch_start_idx: int) -> None:
        super().__init__()
        if head.feature_only:
            raise ValueError("only prediction heads (depth, points) are exported")
        self.head = head
        self.image_hw = tuple(image_hw)
        self.patch_start_idx = patch_start_idx

    def forward(self, first: Tensor, second: Tensor, third: Tensor, fourth: Tensor) -> tuple[Tensor, Tensor]:
        layers = (first, second, third, fourth)  # DPT reads exactly four layers
        patches = [layer[:, :, self.patch_start_idx :] for layer in layers]
        return self.head.forward_chunk(patches, self.image_hw)


class CameraHeadExport(nn.Module):
    """Export form of the camera head: last layer [1, S, T, 2*dim] -> pose encodings."""

    def __init__(self, model: VGGT) -> None:
        super().__init__()
        if model.camera_head is None:
            raise ValueError("this model has no camera head")
        self.head = model.camera_head
        self.last_layer = model.config.aggregator.depth - 1

    def forward(self, layer: Tensor) -> tuple[Tensor, ...]:
        return tuple(self.head({self.last_layer: layer}, last_layer=self.last_layer))


def _token_count(model: VGGT, image_hw: tuple[int, int]) -> int:
    p = model.config.patch_size
    return model.aggregator.patch_start_idx + (image_hw[0] // p) * (image_hw[1] // p)


def kept_layers(model: VGGT, keep_all_layers: bool = False) -> tuple[int, ...]:
    """Layers the trunk export returns: everything any head (tracks included) reads, or all."""
    if keep_all_layers:
        return tuple(range(model.config.aggregator.depth))
    return tuple(sorted(model.layers_needed(with_tracks=True)))


def _export(
    module: nn.Module,
    example: tuple[Tensor, ...],
    path: Path,
    inputs: Sequence[str],
    outputs: Sequence[str],
    frame_axis: int,
    max_frames: int,
) -> None:
    """torch.export + ONNX with the frame axis of every input dynamic in [1, max_frames]."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = torch.export.Dim(FRAMES, min=1, max=max_frames)
    dynamic = tuple({frame_axis: frames} for _ in inputs)  # positional, one per input
    with _plain_blocks(module), torch.no_grad():
        program = torch.onnx.export(
            module,
            example,
            dynamo=True,
            verbose=False,
            input_names=list(inputs),
            output_names=list(outputs),
            dynamic_shapes=dynamic,
            opset_version=OPSET,
            optimize=True,
            external_data=True,
        )
        program.save(str(path), external_data=_needs_external_data(module))


def _needs_external_data(module: nn.Module) -> bool:
    """Protobuf caps a file at 2 GB; VGGT-1B's trunk (4.8 GB in float32) needs external data."""
    size = sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))
    return size > 1_500_000_000


def _example_images(model: VGGT, image_hw: tuple[int, int], frames: int) -> Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.rand(
        1, frames, 3, *image_hw, generator=generator, device=model.aggregator.camera_token.device
    )


def export_aggregator(
    model: VGGT,
    path: str | Path,
    image_hw: tuple[int, int],
    max_frames: int = 64,
    keep_all_layers: bool = False,
    example_frames: int = 2,
) -> ExportedSection:
    """Export the trunk (encoder + alternating blocks) with a dynamic frame axis.

    Args:
        model: a float32 model (see :func:`float32_copy`).
        path: where to write the .onnx file.
        image_hw: the fixed image size (multiples of the patch size).
        max_frames: upper bound of the dynamic frame axis.
        keep_all_layers: return all layers instead of those the heads read.
        example_frames: frames in the tracing example (>= 2: sizes 0 and 1 are specialised).
    """
    keep = kept_layers(model, keep_all_layers)
    module = AggregatorTrunk(model.aggregator, image_hw, keep).eval()
    outputs = tuple(f"layer_{i}" for i in keep)
    _export(
        module,
        (_example_images(model, image_hw, example_frames),),
        Path(path),
        ("images",),
        outputs,
        1,
        max_frames,
    )
    return ExportedSection(
        "aggregator",
        Path(path),
        ("images",),
        outputs,
        {"images": (1, -1, 3, *image_hw)},
        tuple(image_hw),
        max_frames,
    )


def _example_layers(
    model: VGGT, image_hw: tuple[int, int], frames: int, indices: Sequence[int]
) -> tuple[Tensor, ...]:
    """Realistic inputs for a head: the trunk's own layers for random images."""
    with torch.no_grad():
        layers = model.aggregate(
            _example_images(model, image_hw, frames), with_tracks=True, keep_all_layers=True
        )
    return tuple(layers[i].float().contiguous() for i in indices)


def export_dense_head(
    model: VGGT,
    section: str,
    path: str | Path,
    image_hw: tuple[int, int],
    max_frames: int | None = None,
    example_frames: int = 2,
) -> ExportedSection:
    """Export the ``depth`` or ``points`` DPT head for one frame chunk (dynamic chunk axis).

    ``max_frames`` defaults to the head's ``frames_chunk_size``: the runtime feeds chunks of at
    most that many frames, as the eager head does, so memory stays flat with the window size.
    """
    head = {"depth": model.depth_head, "points": model.point_head}.get(section)
    if head is None:
        raise ValueError(f"no dense head {section!r} in this model (depth, points)")
    max_frames = max_frames or max(head.frames_chunk_size, example_frames)
    module = DenseHeadChunk(head, image_hw, model.aggregator.patch_start_idx).eval()
    example = _example_layers(model, image_hw, example_frames, head.layer_indices)
    # The head caches its sin/cos position maps per shape; filling the cache eagerly first makes
    # the traced graph read real constants instead of tracing (and caching) placeholder tensors.
    with torch.no_grad():
        module(*example)
    inputs = tuple(f"layer_{i}" for i in head.layer_indices)
    _export(module, example, Path(path), inputs, ("values", "conf"), 1, max_frames)
    head._position_cache.clear()  # drop anything the tracer may have left behind
    tokens, width = _token_count(model, image_hw), example[0].shape[-1]
    shapes = {name: (1, -1, tokens, width) for name in inputs}
    return ExportedSection(
        section, Path(path), inputs, ("values", "conf"), shapes, tuple(image_hw), max_frames
    )


def export_camera_head(
    model: VGGT, path: str | Path, image_hw: tuple[int, int], max_frames: int = 64, example_frames: int = 2
) -> ExportedSection:
    """Export the camera head (input: the last trunk layer; dynamic frame axis)."""
    module = CameraHeadExport(model).eval()
    last = model.config.aggregator.depth - 1
    (example,) = _example_layers(model, image_hw, example_frames, (last,))
    outputs = tuple(f"pose_enc_{k}" for k in range(module.head.iterations))
    input_name = f"layer_{last}"
    _export(module, (example,), Path(path), (input_name,), outputs, 1, max_frames)
    shapes = {input_name: (1, -1, _token_count(model, image_hw), example.shape[-1])}
    return ExportedSection("camera", Path(path), (input_name,), outputs, shapes, tuple(image_hw), max_frames)


def export_section(
    model: VGGT,
    section: str,
    path: str | Path,
    image_hw: tuple[int, int],
    max_frames: int,
    keep_all_layers: bool = False,
) -> ExportedSection:
    """Export one section by name (``aggregator``, ``camera``, ``depth``, ``points``)."""
    if section == "aggregator":
        return export_aggregator(model, path, image_hw, max_frames, keep_all_layers)
    if section == "camera":
        return export_camera_head(model, path, image_hw, max_frames)
    if section in ("depth", "points"):
        head = model.depth_head if section == "depth" else model.point_head
        chunk = head.frames_chunk_size if head is not None and head.frames_chunk_size > 0 else max_frames
        return export_dense_head(model, section, path, image_hw, min(chunk, max_frames))
    raise ValueError(f"section {section!r} cannot be exported (aggregator, camera, depth, points)")


def eager_section_outputs(
    model: VGGT, section: ExportedSection, inputs: dict[str, Tensor]
) -> dict[str, Tensor]:
    """What the model's own eager code returns for ``inputs``, named like the export's outputs."""
    with torch.no_grad():
        if section.name == "aggregator":
            layers = model.aggregate(inputs["images"], with_tracks=True, keep_all_layers=True)
            return {name: layers[int(name.split("_")[1])] for name in section.outputs}
        layers = {int(name.split("_")[1]): t for name, t in inputs.items()}
        if section.name == "camera":
            return dict(zip(section.outputs, model.predict_cameras(layers), strict=True))
        predict = model.predict_depth if section.name == "depth" else model.predict_points
        return dict(zip(section.outputs, predict(layers, section.image_hw), strict=True))


def example_inputs(model: VGGT, section: ExportedSection, frames: int, seed: int = 1) -> dict[str, Tensor]:
    """Inputs for ``frames`` frames: random images, or the trunk's layers for random images."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(1, frames, 3, *section.image_hw, generator=generator)
    if section.name == "aggregator":
        return {"images": images}
    with torch.no_grad():
        layers = model.aggregate(images, with_tracks=True, keep_all_layers=True)
    return {name: layers[int(name.split("_")[1])].contiguous() for name in section.inputs}


def run_onnxruntime(path: str | Path, inputs: dict[str, Tensor]) -> dict[str, np.ndarray]:
    """Run an exported section with onnxruntime on the CPU; outputs by name."""
    import onnxruntime as ort  # optional dependency: only exports are checked with it

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feeds = {name: t.detach().cpu().numpy() for name, t in inputs.items()}
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |actual - expected| / max |expected|: scale-aware, and stable where values cross 0."""
    scale = float(np.abs(expected).max())
    return float(np.abs(actual - expected).max()) / (scale if scale > 0 else 1.0)


def onnxruntime_parity(model: VGGT, section: ExportedSection, frames: int, seed: int = 1) -> dict[str, float]:
    """Relative error of every output of the export (onnxruntime) against the eager model."""
    inputs = example_inputs(model, section, frames, seed)
    expected = eager_section_outputs(model, section, inputs)
    actual = run_onnxruntime(section.path, inputs)
    errors = {}
    for name in section.outputs:
        want = expected[name].float().cpu().numpy()
        if actual[name].shape != want.shape:
            raise AssertionError(
                f"{section.name}.{name}: onnxruntime shape {actual[name].shape} != {want.shape}"
            )
        errors[name] = relative_error(actual[name], want)
    return errors


def tensorrt_incompatibilities(path: str | Path) -> list[str]:
    """Things in an ONNX graph that TensorRT cannot take: float64 tensors, non-standard domains."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    problems = []
    double = onnx.TensorProto.DOUBLE
    for init in proto.graph.initializer:
        if init.data_type == double:
            problems.append(f"float64 initializer {init.name}")
    for node in proto.graph.node:
        if node.domain not in ("", "ai.onnx"):
            problems.append(f"node {node.name} in domain {node.domain!r}")
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i == double:
                problems.append(f"Cast to float64 at {node.name}")
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == double:
                problems.append(f"float64 constant at {node.name}")
    for value in (*proto.graph.input, *proto.graph.output, *proto.graph.value_info):
        if value.type.tensor_type.elem_type == double:
            problems.append(f"float64 tensor {value.name}")
    return problems
