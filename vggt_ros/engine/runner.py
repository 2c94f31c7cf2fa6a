"""Runs VGGT stage by stage in an inference mode, with optional compiled sections.

The network is split into sections (``aggregator``, ``camera``, ``depth``, ``points``,
``tracks``). A *backend* may replace any section with a compiled version; backends are tried in
order and the first that can serve wins, so a missing TensorRT or compiler falls back to the
next one with one clear log line instead of failing:

    ModelRunner(model, device, "bf16", backend="auto")   # tensorrt -> torch -> eager

Backends register themselves in :data:`BACKENDS` (see :mod:`vggt_ros.engine.backends`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from vggt_ros.engine.cuda_graphs import GraphedFunction
from vggt_ros.engine.modes import InferenceMode, get_mode
from vggt_ros.engine.timing import NullTimer, StageTimer
from vggt_ros.model.aggregator import AggregatedTokens
from vggt_ros.model.vggt import VGGT

logger = logging.getLogger(__name__)

SECTIONS = ("aggregator", "camera", "depth", "points", "tracks")
Sections = dict[str, Callable[..., Any]]


class BackendUnavailableError(RuntimeError):
    """A backend cannot serve here (missing library, unsupported device...); says why."""


@dataclass
class BackendContext:
    """What a backend gets to build its sections from."""

    model: VGGT
    mode: InferenceMode
    device: torch.device
    eager: Sections
    options: dict[str, Any] = field(default_factory=dict)


# name -> factory(context) returning the sections it replaces (a subset of SECTIONS), or raising
# BackendUnavailableError. Filled by vggt_ros.engine.backends at import time.
BACKENDS: dict[str, Callable[[BackendContext], Sections]] = {}

AUTO_ORDER_CUDA = ("tensorrt", "torch", "eager")
AUTO_ORDER_CPU = ("eager",)  # compiling on CPU costs minutes and gains little for this model


MATMUL_MODULES = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)


def store_matmul_weights(module: nn.Module, dtype: torch.dtype) -> None:
    """Store the weights of every linear/convolution layer of ``module`` in ``dtype``.

    Norms, layer scales and learned tokens keep float32: under autocast they (and the residual
    stream they feed) stay in float32, which is where reduced precision loses most accuracy.
    """
    for m in module.modules():
        if isinstance(m, MATMUL_MODULES):
            m.to(dtype)


def _prepare_model(model: VGGT, mode: InferenceMode, device: torch.device) -> VGGT:
    """Move the model to ``device`` with its matrix weights stored in the mode's dtype."""
    model = model.eval().to(device, torch.float32)
    if mode.matmul_dtype != torch.float32:
        store_matmul_weights(model.aggregator, mode.matmul_dtype)
        for head in (model.depth_head, model.point_head):
            if head is not None:
                store_matmul_weights(head, mode.matmul_dtype)
        if model.track_head is not None:
            store_matmul_weights(model.track_head.feature_extractor, mode.matmul_dtype)
    if mode.camera_dtype is not None and model.camera_head is not None:
        store_matmul_weights(model.camera_head, mode.camera_dtype)
    return model


class ModelRunner:
    """Owns a prepared model and runs it; ``run`` returns the model's usual output dict.

    Args:
        model: a VGGT (any configuration). It is moved and converted in place.
        device: where to run.
        mode: an :class:`InferenceMode` or its name.
        backend: "eager", "torch", "tensorrt", or "auto" (ordered fallback), or a sequence of
            names to try in order.
        options: runner and backend options: ``graph_camera`` and ``graph_tracks`` (default
            True: replay the camera head / the correlation tracker as CUDA graphs on GPUs),
            ``channels_last_heads`` (NHWC dense heads), ``token_chunk`` (override the mode's;
            0 disables), ``inplace_residual`` and ``head_chunk_frames`` (override the mode's),
            ``torch_compile_mode``, and the TensorRT backend's (``cache_dir``, ``weights_identity``...).
    """

    def __init__(
        self,
        model: VGGT,
        device: torch.device | str,
        mode: InferenceMode | str = "fp32",
        backend: str | Sequence[str] = "eager",
        options: dict[str, Any] | None = None,
    ) -> None:
        from vggt_ros.engine import backends as _  # noqa: F401  (registers the built-in backends)

        self.device = torch.device(device)
        self.mode = get_mode(mode)
        self.model = _prepare_model(model, self.mode, self.device)
        eager: Sections = {
            "aggregator": self.model.aggregate,
            "camera": self.model.predict_cameras,
            "depth": self.model.predict_depth,
            "points": self.model.predict_points,
            "tracks": self.model.predict_tracks,
        }
        options = dict(options or {})
        token_chunk = options.get("token_chunk", self.mode.token_chunk) or None
        inplace = bool(options.get("inplace_residual", self.mode.inplace_residual))
        aggregator = self.model.aggregator
        # The aggregator and the encoder never read a block's input after the block has run,
        # so their blocks may update it in place.
        for block in (*aggregator.patch_embed.blocks, *aggregator.frame_blocks, *aggregator.global_blocks):
            block.token_chunk = token_chunk
            block.inplace_residual = inplace
        head_chunk = options.get("head_chunk_frames", self.mode.head_chunk_frames)
        if head_chunk:
            track_features = self.model.track_head.feature_extractor if self.model.track_head else None
            for head in (self.model.depth_head, self.model.point_head, track_features):
                if head is not None:
                    head.long_window_chunk_size = int(head_chunk)
        on_gpu = self.device.type == "cuda"
        if on_gpu and self.model.camera_head is not None and options.get("graph_camera", True):
            eager["camera"] = self._graphed_camera_section()
        if on_gpu and self.model.track_head is not None and options.get("graph_tracks", True):
            eager["tracks"] = self._graphed_track_section()
        if options.get("channels_last_heads", False):
            # cuDNN's fastest reduced-precision convolutions take NHWC; outputs follow the weights.
            for head in (self.model.depth_head, self.model.point_head):
                if head is not None:
                    head.to(memory_format=torch.channels_last)
        self.sections: Sections = dict(eager)
        self.backend = "eager"
        self.fallback_log: list[str] = []
        context = BackendContext(self.model, self.mode, self.device, eager, options)
        for name in self._backend_order(backend):
            if name == "eager":
                break
            factory = BACKENDS.get(name)
            try:
                if factory is None:
                    raise BackendUnavailableError(f"no backend called {name!r}; known: {', '.join(BACKENDS)}")
                replaced = factory(context)
            except BackendUnavailableError as exc:
                message = f"backend {name} unavailable ({exc}); trying the next one"
                logger.warning(message)
                self.fallback_log.append(message)
                continue
            self.sections.update(replaced)
            self.backend = name
            break
        logger.info("VGGT runs in mode %s with backend %s on %s", self.mode.name, self.backend, self.device)

    def _graphed_camera_section(self) -> Callable[[AggregatedTokens], list[Tensor]]:
        """The camera head replayed as a CUDA graph (launch-bound: ~250 kernels on S tokens)."""
        head = self.model.camera_head
        last = self.model.config.aggregator.depth - 1
        graphed = GraphedFunction(
            lambda tokens: head.refine(tokens, head.iterations),
            autocast_dtype=self.mode.camera_dtype,
            name="the camera head",
        )

        def camera(layers: AggregatedTokens) -> list[Tensor]:
            return graphed(layers[last][:, :, 0].to(head.token_norm.weight.dtype))

        return camera

    def _graphed_track_section(self) -> Callable[..., tuple[list[Tensor], Tensor, Tensor]]:
        """Track features eagerly (or compiled), then the correlation tracker as a CUDA graph:
        it is launch-bound (the track stage ran about 3900 small kernels per window, about
        25 ms of kernels in 45 ms of wall time, on an H200)."""
        head = self.model.track_head
        patch_start = self.model.aggregator.patch_start_idx

        def track(query_points: Tensor, feature_maps: Tensor) -> list[Tensor]:
            tracks, vis, conf = head.track(query_points, feature_maps)
            return [*tracks, vis, conf]

        graphed = GraphedFunction(track, autocast_dtype=self.mode.tracker_autocast, name="the tracker")

        def tracks(
            layers: AggregatedTokens, image_hw: tuple[int, int], query_points: Tensor
        ) -> tuple[list[Tensor], Tensor, Tensor]:
            outputs = graphed(query_points, head.features(layers, image_hw, patch_start))
            return outputs[:-2], outputs[-2], outputs[-1]

        return tracks

    def _backend_order(self, backend: str | Sequence[str]) -> tuple[str, ...]:
        if isinstance(backend, str):
            if backend == "auto":
                return AUTO_ORDER_CUDA if self.device.type == "cuda" else AUTO_ORDER_CPU
            return (backend, "eager")
        return (*backend, "eager")

    @contextlib.contextmanager
    def _autocast(self, dtype: torch.dtype | None) -> Iterator[None]:
        if dtype is None:
            yield
        else:
            with torch.autocast(self.device.type, dtype=dtype):
                yield

    @torch.inference_mode()
    def run(
        self,
        images: Tensor,
        query_points: Tensor | None = None,
        timer: StageTimer | NullTimer | None = None,
    ) -> dict[str, Any]:
        """Run every enabled head.

        Args:
            images: [S, 3, H, W] or [B, S, 3, H, W] float in [0, 1] (any device/dtype; moved).
            query_points: [N, 2] or [B, N, 2] model-image pixels, or None for no tracks.
            timer: collects per-stage milliseconds (``aggregator``, ``camera``, ``depth``,
                ``points``, ``tracks``) when given.

        Returns:
            The same keys as ``VGGT.forward`` (tensors on ``device``, dtypes as computed).
        """
        timer = timer or NullTimer()
        model = self.model
        images = images.to(self.device, torch.float32, non_blocking=True)
        if query_points is not None:
            query_points = query_points.to(self.device)
        images, query_points = model.batched_inputs(images, query_points)
        with_tracks = query_points is not None and model.track_head is not None
        image_hw = (images.shape[-2], images.shape[-1])
        out: dict[str, Any] = {}
        with timer.stage("aggregator"), self._autocast(self.mode.autocast_dtype):
            layers = self.sections["aggregator"](
                images, with_tracks, self.mode.keep_all_layers, self.mode.keep_dtype
            )
        if model.camera_head is not None:
            with timer.stage("camera"), self._autocast(self.mode.camera_dtype):
                encodings = self.sections["camera"](layers)
            out["pose_enc"], out["pose_enc_list"] = encodings[-1], encodings
        heads_autocast = self.mode.autocast_dtype if self.mode.heads_autocast else None
        if model.depth_head is not None:
            with timer.stage("depth"), self._autocast(heads_autocast):
                out["depth"], out["depth_conf"] = self.sections["depth"](layers, image_hw)
        if model.point_head is not None:
            with timer.stage("points"), self._autocast(heads_autocast):
                out["world_points"], out["world_points_conf"] = self.sections["points"](layers, image_hw)
        if with_tracks:
            with timer.stage("tracks"), self._autocast(self.mode.tracker_autocast):
                tracks, vis, conf = self.sections["tracks"](layers, image_hw, query_points)
            out["track"], out["vis"], out["conf"] = tracks[-1], vis, conf
        out["images"] = images
        return out
