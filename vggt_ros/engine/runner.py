"""Runs VGGT stage by stage in an inference mode, with optional compiled sections.

The network is split into sections (``aggregator``, ``camera``, ``depth``, ``points``,
``tracks``). A *backend* may replace any section with a compiled version; backends are tried in
order and the first that can serve wins, so a missing TensorRT or compiler falls back to the
next one with one clear log line instead of failing:

    ModelRunner(model, device, "bf16", backend="auto")   # tensorrt -> torch -> eager

Backends register themselves in :data:`~vggt_ros.engine.backend_api.BACKENDS` (the built-in
ones in :mod:`vggt_ros.engine.backends`, which the package's ``__init__`` imports); the contract
they implement lives in :mod:`vggt_ros.engine.backend_api`, so neither side imports the other.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from vggt_ros.engine.backend_api import (
    BACKEND_OPTIONS,
    BACKENDS,
    SECTIONS,
    BackendContext,
    BackendUnavailableError,
    Sections,
)
from vggt_ros.engine.cuda_graphs import GraphedFunction, GraphStage, WindowGraphs
from vggt_ros.engine.frame_cache import FrameTokenCache
from vggt_ros.engine.mirror_depth import mirror_average_depth, mirror_images, mirror_keys, mirror_query_points
from vggt_ros.engine.modes import InferenceMode, get_mode
from vggt_ros.engine.timing import NullTimer, StageTimer
from vggt_ros.model.aggregator import AggregatedTokens
from vggt_ros.model.vggt import VGGT

logger = logging.getLogger(__name__)

AUTO_ORDER_CUDA = ("tensorrt", "torch", "eager")
AUTO_ORDER_CPU = ("eager",)  # compiling on CPU costs minutes and gains little for this model


__all__ = [  # the backend contract, re-exported for callers that knew it from here
    "BACKENDS",
    "BACKEND_OPTIONS",
    "SECTIONS",
    "BackendContext",
    "BackendUnavailableError",
    "ModelRunner",
    "RUNNER_OPTIONS",
    "Sections",
    "unknown_options",
]

# Every option a runner reads (a built-in backend's are BACKEND_OPTIONS); anything else is a
# typo and is refused.
RUNNER_OPTIONS = frozenset(
    {
        "graph_camera",
        "graph_tracks",
        "graph_window",
        "graph_window_frames",
        "channels_last_heads",
        "token_chunk",
        "inplace_residual",
        "head_chunk_frames",
        "frame_cache",
        "global_key_stride",
        "global_key_weighting",
        "point_head",
        "mirror_depth",
    }
)


def unknown_options(options: dict[str, Any]) -> list[str]:
    """The names in ``options`` that no runner or built-in backend reads, sorted."""
    return sorted(set(options) - RUNNER_OPTIONS - BACKEND_OPTIONS)


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
    if mode.fp8_linears:
        from vggt_ros.engine.fp8 import convert_trunk_linears, fp8_unsupported_reason

        reason = fp8_unsupported_reason(device)
        if reason is not None:
            raise ValueError(reason)
        convert_trunk_linears(model.aggregator)
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
            ``graph_window`` (default True) and ``graph_window_frames`` (override the mode's:
            replay whole windows of at most that many frames as CUDA graphs on GPUs, once a
            window shape repeats),
            ``channels_last_heads`` (NHWC dense heads), ``token_chunk`` (override the mode's;
            0 disables), ``inplace_residual`` and ``head_chunk_frames`` (override the mode's),
            ``frame_cache`` (frames whose encoder tokens are kept for the next windows; 0, the
            default, disables; see :mod:`vggt_ros.engine.frame_cache` and ``run(frame_keys=)``),
            ``global_key_stride`` (approximate sparse global attention for long windows, see
            ``Aggregator.global_key_stride``; 0, the default, is exact), ``global_key_weighting``
            (default True: each sampled key's logit + ln(stride); False: the unweighted sample of
            the fifth session), ``point_head``
            (default True; False skips the point-map head: the mapping pipeline unprojects the
            depth map and never reads the point map, which costs 5.4 of 63.8 ms at 8 frames of
            350x518 on an H200 plus its copy to the host),
            ``mirror_depth`` (default False: also run the window's left-right mirror image and
            average the two depth maps, :mod:`vggt_ros.engine.mirror_depth`; twice the network's
            time, more accurate depth, the network's cameras unchanged),
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
        unknown = unknown_options(options)
        if unknown:
            known = ", ".join(sorted(RUNNER_OPTIONS | BACKEND_OPTIONS))
            raise ValueError(f"unknown runner option(s) {', '.join(unknown)}; known: {known}")
        token_chunk = options.get("token_chunk", self.mode.token_chunk) or None
        inplace = bool(options.get("inplace_residual", self.mode.inplace_residual))
        aggregator = self.model.aggregator
        # The aggregator and the encoder never read a block's input after the block has run,
        # so their blocks may update it in place.
        for block in (*aggregator.patch_embed.blocks, *aggregator.frame_blocks, *aggregator.global_blocks):
            block.token_chunk = token_chunk
            block.inplace_residual = inplace
        key_stride = int(options.get("global_key_stride", 0) or 0)
        if key_stride < 0:
            raise ValueError(f"global_key_stride must be >= 0 (0: exact attention), got {key_stride}")
        aggregator.global_key_stride = key_stride
        aggregator.global_key_weighting = bool(options.get("global_key_weighting", True))
        self.point_head = bool(options.get("point_head", True)) and self.model.point_head is not None
        self.mirror_depth = bool(options.get("mirror_depth", False)) and self.model.depth_head is not None
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
        # Whole windows as CUDA graphs (short windows are launch-bound). Not over TensorRT
        # engines: their capture was never run here. Captured with the heads' plain functions:
        # a graph cannot capture the camera/tracker graphs inside it.
        window_frames = options.get("graph_window_frames", self.mode.graph_window_frames)
        self._graph_window_frames = int(window_frames or 0)
        self._window_graphs: WindowGraphs | None = None
        self._capturable_sections: Sections = {}
        graph_windows = options.get("graph_window", True) and self._graph_window_frames > 0
        if on_gpu and graph_windows and self.backend != "tensorrt":
            self._window_graphs = WindowGraphs()
            self._capturable_sections = {
                **self.sections,
                "camera": self.model.predict_cameras,
                "tracks": self.model.predict_tracks,
            }
        if key_stride > 1 and self.sections["aggregator"] != eager["aggregator"]:
            message = f"global_key_stride ignored: backend {self.backend} replaces the whole aggregator"
            logger.warning(message)
            self.fallback_log.append(message)
        self.frame_cache: FrameTokenCache | None = None
        capacity = int(options.get("frame_cache", 0) or 0)
        if capacity and self.sections["aggregator"] != eager["aggregator"]:
            # A compiled trunk (TensorRT engine) takes images, not encoder tokens.
            message = f"frame cache off: backend {self.backend} replaces the whole aggregator"
            logger.warning(message)
            self.fallback_log.append(message)
        elif capacity:
            # With mirror_depth every frame also has a mirrored entry: room for both.
            self.frame_cache = FrameTokenCache(capacity * (2 if self.mirror_depth else 1))
        # The frame cache's encoder calls replayed as CUDA graphs (GPU, window graphs on): eagerly,
        # the new frames' encoder (24 blocks) launched its kernels one by one before the graphed trunk
        # (13.6 ms for the 4 new frames of VGGT-1B at window 8 / stride 4 on the H200,
        # docs/benchmarks.md).
        self._encoder_graphs: GraphedFunction | None = None
        if self.frame_cache is not None and self._window_graphs is not None:
            encode = self.model.encode_frames
            self._encoder_graphs = GraphedFunction(
                lambda images: [encode(images)],
                autocast_dtype=self.mode.autocast_dtype,
                name="the frame encoder",
            )
        logger.info("VGGT runs in mode %s with backend %s on %s", self.mode.name, self.backend, self.device)

    def _encode_new_frames(self, images: Tensor) -> Tensor:
        """Encoder tokens of the frames the cache lacks: images [N, 3, H, W] -> [N, P, dim]; as a
        CUDA graph for N up to ``graph_window_frames`` (larger batches run eagerly: a long
        window's graph would only hold its memory pool)."""
        if self._encoder_graphs is None or images.shape[0] > self._graph_window_frames:
            return self.model.encode_frames(images)
        return self._encoder_graphs(images)[0]

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
        frame_keys: Sequence[Hashable] | None = None,
    ) -> dict[str, Any]:
        """Run every enabled head.

        Args:
            images: [S, 3, H, W] or [B, S, 3, H, W] float in [0, 1] (any device/dtype; moved).
            query_points: [N, 2] or [B, N, 2] model-image pixels, or None for no tracks.
            timer: collects per-stage milliseconds (``encoder`` with a frame cache,
                ``aggregator``, ``camera``, ``depth``, ``points``, ``tracks``) when given.
            frame_keys: one identity per frame of a single window (B = 1): with a frame cache
                (option ``frame_cache``), frames seen in earlier windows reuse their encoder
                tokens. Ignored without a cache.

        Returns:
            The same keys as ``VGGT.forward`` (tensors on ``device``, dtypes as computed). With
            ``mirror_depth``, ``depth`` / ``depth_conf`` are the mirror average and
            ``depth_unflipped`` [B, S, H, W, 1] is the unflipped pass's own depth.
        """
        timer = timer or NullTimer()
        model = self.model
        images = images.to(self.device, torch.float32, non_blocking=True)
        if query_points is not None:
            query_points = query_points.to(self.device)
        images, query_points = model.batched_inputs(images, query_points)
        with_tracks = query_points is not None and model.track_head is not None
        if not self.mirror_depth:
            return self._run_window(images, query_points, with_tracks, timer, frame_keys)
        # The mirrored pass first: with tracks too (mirrored queries, results dropped) so that
        # both passes are one window shape for the CUDA graphs.
        with timer.stage("mirror"):
            mirrored_queries = mirror_query_points(query_points, images.shape[-1]) if with_tracks else None
            mirrored = self._run_window(
                mirror_images(images), mirrored_queries, with_tracks, NullTimer(), mirror_keys(frame_keys)
            )
        out = self._run_window(images, query_points, with_tracks, timer, frame_keys)
        # The unflipped pass's own depth stays available: it is the one consistent with the
        # cameras of the same pass, and the pose refinement measures with it.
        out["depth_unflipped"] = out["depth"]
        out["depth"], out["depth_conf"] = mirror_average_depth(
            out["depth"], out["depth_conf"], mirrored["depth"], mirrored["depth_conf"]
        )
        return out

    def _run_window(
        self,
        images: Tensor,
        query_points: Tensor | None,
        with_tracks: bool,
        timer: StageTimer | NullTimer,
        frame_keys: Sequence[Hashable] | None,
    ) -> dict[str, Any]:
        """One pass of every enabled head over batched ``images`` [B, S, 3, H, W] (on device)."""
        patches = None
        if frame_keys is not None and self.frame_cache is not None:
            with timer.stage("encoder"), self._autocast(self.mode.autocast_dtype):
                patches = self.frame_cache.window_tokens(images, frame_keys, self._encode_new_frames)
        inputs = {
            "images": images,
            "query_points": query_points if with_tracks else None,
            "patches": patches,
        }
        state: dict[str, Any] | None = None
        if self._window_graphs is not None:
            if images.shape[0] * images.shape[1] <= self._graph_window_frames:
                stages = self._stages(self._capturable_sections, with_tracks)
                state = self._window_graphs.replay(inputs, stages, timer.stage, internal=("layers",))
            else:
                # The windows have outgrown the graphs: the short window's graph would only hold
                # its memory pool (measured +0.21 GB at the peak of a 100-frame window).
                self._window_graphs.clear()
        if state is None:  # eagerly (CPU, long windows, or a window shape seen for the first time)
            state = dict(inputs)
            for stage in self._stages(self.sections, with_tracks):
                with timer.stage(stage.name), self._autocast(stage.autocast_dtype):
                    stage.run(state)
        out: dict[str, Any] = {}
        if "pose_enc_list" in state:
            out["pose_enc"], out["pose_enc_list"] = state["pose_enc_list"][-1], state["pose_enc_list"]
        for key in ("depth", "depth_conf", "world_points", "world_points_conf"):
            if key in state:
                out[key] = state[key]
        if with_tracks:
            out["track"], out["vis"], out["conf"] = state["tracks"][-1], state["vis"], state["conf"]
        out["images"] = images
        return out

    def _stages(self, sections: Sections, with_tracks: bool) -> list[GraphStage]:
        """The window's work as stages over a state dict holding ``images`` [B, S, 3, H, W] and
        ``query_points`` [B, N, 2] (or None); each stage adds its results to the state."""
        model, mode = self.model, self.mode

        def aggregate(state: dict[str, Any]) -> None:
            # With cached encoder tokens ("patches", [B, S, P, dim]) the trunk skips the encoder.
            cached = {"patches": state["patches"]} if state.get("patches") is not None else {}
            state["layers"] = sections["aggregator"](
                state["images"], with_tracks, mode.keep_all_layers, mode.keep_dtype, **cached
            )

        def cameras(state: dict[str, Any]) -> None:
            state["pose_enc_list"] = sections["camera"](state["layers"])

        def depth(state: dict[str, Any]) -> None:
            state["depth"], state["depth_conf"] = sections["depth"](state["layers"], _image_hw(state))

        def points(state: dict[str, Any]) -> None:
            points_and_conf = sections["points"](state["layers"], _image_hw(state))
            state["world_points"], state["world_points_conf"] = points_and_conf

        def tracks(state: dict[str, Any]) -> None:
            state["tracks"], state["vis"], state["conf"] = sections["tracks"](
                state["layers"], _image_hw(state), state["query_points"]
            )

        heads_autocast = mode.autocast_dtype if mode.heads_autocast else None
        stages = [GraphStage("aggregator", aggregate, mode.autocast_dtype)]
        if model.camera_head is not None:
            stages.append(GraphStage("camera", cameras, mode.camera_dtype))
        if model.depth_head is not None:
            stages.append(GraphStage("depth", depth, heads_autocast))
        if self.point_head:
            stages.append(GraphStage("points", points, heads_autocast))
        if with_tracks:
            stages.append(GraphStage("tracks", tracks, mode.tracker_autocast))
        return stages


def _image_hw(state: dict[str, Any]) -> tuple[int, int]:
    images = state["images"]
    return images.shape[-2], images.shape[-1]
