"""``Predictor``: RGB frames of any size -> cameras, depth, points and tracks as numpy.

Frames and units of every output (see :class:`Prediction`):

- Camera frame: OpenCV optical frame (x right, y down, z forward), i.e. the ROS ``*_optical``
  frame of each image.
- World frame: the first frame's camera. The predictor re-anchors the network's output so that
  frame 0 is exactly the identity (the network only learned to predict it approximately), and
  moves the point map with it, so cameras, depth-derived points and the point head agree.
- Scale: normalized per call (VGGT has no metric scale); depth, translations and points share it.
- Pixels: OpenCV convention (pixel (0, 0) centred at (0, 0)). "Original" pixels refer to the
  frames as passed in; "model" pixels to the resized/cropped/padded network input of size
  ``model_hw`` (dense maps live there; ``transforms[i]`` maps between the two).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from vggt_ros.engine.modes import get_mode, mode_for_precision
from vggt_ros.engine.precision import (
    inference_context,
    precision_name,
    resolve_device,
    resolve_precision,
    synchronize,
)
from vggt_ros.engine.preprocess import PREPROCESS_MODES, PreprocessedBatch, plan_transform, preprocess_frames
from vggt_ros.engine.runner import ModelRunner
from vggt_ros.engine.timing import NullTimer, StageTimer
from vggt_ros.geometry import (
    ImageTransform,
    camera_to_world,
    depth_to_world_points,
    invert_rigid,
    pose_encoding_to_extrinsics_intrinsics,
    to_homogeneous,
)
from vggt_ros.model.vggt import VGGT

# The tracker's 7-level correlation pyramid halves stride-2 feature maps six times and needs at
# least one cell at the coarsest level: model images must be >= 2 * 2**6 = 128 px on each side.
TRACK_MIN_MODEL_SIDE = 128
INTERPOLATIONS = ("nearest", "bilinear")
POINT_SOURCES = ("depth", "points")
MIN_FOV = 1e-4  # radians; trained VGGT predicts fields of view far from 0 and pi


def _resample_to_original(values: np.ndarray, transform: ImageTransform, interpolation: str) -> np.ndarray:
    """Sample a model-resolution map [Hm, Wm, ...] at every original pixel -> [H, W, ...] float32.

    Only content pixels of the model image are read (padding never leaks in, also not through
    bilinear weights); original pixels with no model content (cropped away) become NaN.
    The pixel map is axis aligned, so rows and columns are sampled separately.
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    h, w = transform.original_hw
    x0, y0, x1, y1 = transform.content_box
    (sx, sy), (tx, ty) = transform.scale, transform.offset

    def axis(
        n: int, s: float, t: float, lo: int, hi: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        m = s * (np.arange(n) + 0.5) - 0.5 + t  # model coordinate of each original pixel centre
        inside = (m >= lo - 0.5) & (m <= hi - 0.5)
        m = np.clip(m, lo, hi - 1)
        if interpolation == "nearest":
            i0 = np.clip(np.floor(m + 0.5).astype(np.int64), lo, hi - 1)
            return i0, i0, np.zeros(n), inside
        i0 = np.clip(np.floor(m).astype(np.int64), lo, max(lo, hi - 2))
        i1 = np.minimum(i0 + 1, hi - 1)
        return i0, i1, m - i0, inside

    c0, c1, wx, ok_x = axis(w, sx, tx, x0, x1)
    r0, r1, wy, ok_y = axis(h, sy, ty, y0, y1)
    v = values.astype(np.float32, copy=False)
    extra = (1,) * (v.ndim - 2)
    wx = wx.reshape((1, w) + extra).astype(np.float32)
    wy = wy.reshape((h, 1) + extra).astype(np.float32)
    top = v[r0][:, c0] * (1 - wx) + v[r0][:, c1] * wx
    bottom = v[r1][:, c0] * (1 - wx) + v[r1][:, c1] * wx
    out = top * (1 - wy) + bottom * wy
    out[~(ok_y[:, None] & ok_x[None, :])] = np.nan
    return out


@dataclass
class Prediction:
    """Everything one forward pass predicts for S frames, as numpy (conventions: module docstring).

    Attributes:
        cam_to_world: [S, 4, 4] float64 pose of each camera in the world (= camera 0), frame 0
            the identity; translations in the normalized scale.
        extrinsics: [S, 3, 4] float64 camera-from-world [R | t] (inverse of ``cam_to_world``).
        intrinsics: [S, 3, 3] float64 pixel intrinsics for each ORIGINAL image size.
        model_intrinsics: [S, 3, 3] float64 intrinsics of the model-resolution maps.
        depth: [S, Hm, Wm] float32 z-depth (along the optical axis), normalized scale.
        depth_conf: [S, Hm, Wm] float32 confidence (>= 1 for trained weights; higher is better).
        depth_unflipped: [S, Hm, Wm] float32 or None. With the runner option ``mirror_depth``,
            ``depth`` is the average with the mirror image's depth and this is the unflipped
            pass's own, the depth consistent with that pass's cameras: the pose refinement
            measures poses with it. None otherwise (``depth`` is then the only estimate).
        world_points: [S, Hm, Wm, 3] float32 point head output in the world frame, or None when
            the model has no point head.
        world_points_conf: [S, Hm, Wm] float32, or None.
        valid_mask: [S, Hm, Wm] bool, False on padding and non-finite depth.
        colors: [S, Hm, Wm, 3] uint8 RGB of the model input (padding is white).
        model_hw: (Hm, Wm).
        original_sizes: per frame (H, W) of the frame as passed in.
        transforms: per frame the original <-> model pixel map.
        tracks: [S, N, 2] float64 (x, y) in ORIGINAL pixels of each frame, or None.
        model_tracks: [S, N, 2] the same in model pixels (to look up depth), or None.
        track_vis: [S, N] float32 visibility in [0, 1], or None.
        track_conf: [S, N] float32 confidence in [0, 1], or None.
        query_points: [N, 2] float64 queries in original pixels of frame 0, or None.
        timings: {"preprocess_ms", "inference_ms", "postprocess_ms"}.
        weights: identity of the weights: at least "source" and "trained" (False = untrained
            random weights, outputs meaningless).
    """

    cam_to_world: np.ndarray
    extrinsics: np.ndarray
    intrinsics: np.ndarray
    model_intrinsics: np.ndarray
    depth: np.ndarray
    depth_conf: np.ndarray
    world_points: np.ndarray | None
    world_points_conf: np.ndarray | None
    valid_mask: np.ndarray
    colors: np.ndarray
    model_hw: tuple[int, int]
    original_sizes: list[tuple[int, int]]
    transforms: list[ImageTransform]
    depth_unflipped: np.ndarray | None = None
    tracks: np.ndarray | None = None
    model_tracks: np.ndarray | None = None
    track_vis: np.ndarray | None = None
    track_conf: np.ndarray | None = None
    query_points: np.ndarray | None = None
    timings: dict[str, float] = field(default_factory=dict)
    weights: dict[str, Any] = field(default_factory=dict)
    _original_cache: dict[tuple[str, int, str], np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def num_frames(self) -> int:
        return int(self.depth.shape[0])

    def _frame_index(self, i: int) -> int:
        if not -self.num_frames <= i < self.num_frames:
            raise IndexError(f"frame {i} out of range for {self.num_frames} frames")
        return i % self.num_frames

    def map_to_original(self, i: int, values: np.ndarray, interpolation: str = "nearest") -> np.ndarray:
        """Resample any model-resolution map of frame ``i`` ([Hm, Wm, ...]) to its original size.

        Returns:
            [H, W, ...] float32; NaN where the original pixel has no model content (cropped).
        """
        i = self._frame_index(i)
        if values.shape[:2] != self.model_hw:
            raise ValueError(f"expected a map of size {self.model_hw}, got {values.shape[:2]}")
        return _resample_to_original(values, self.transforms[i], interpolation)

    def depth_original(self, i: int, interpolation: str = "nearest") -> np.ndarray:
        """Depth of frame ``i`` at its original size, [H, W] float32.

        Nearest keeps depth edges sharp (no "flying" points between surfaces); bilinear is
        smoother. Only content pixels are read; pixels cropped away (mode "crop") are NaN.
        Results are cached.
        """
        i = self._frame_index(i)
        key = ("depth", i, interpolation)
        if key not in self._original_cache:
            self._original_cache[key] = self.map_to_original(i, self.depth[i], interpolation)
        return self._original_cache[key]

    def depth_conf_original(self, i: int, interpolation: str = "nearest") -> np.ndarray:
        """Depth confidence of frame ``i`` at its original size, [H, W] float32 (cached)."""
        i = self._frame_index(i)
        key = ("depth_conf", i, interpolation)
        if key not in self._original_cache:
            self._original_cache[key] = self.map_to_original(i, self.depth_conf[i], interpolation)
        return self._original_cache[key]

    def points_from_depth(self) -> np.ndarray:
        """Unproject the depth maps with the predicted cameras: [S, Hm, Wm, 3] float32 world points.

        Usually more accurate than the point head (the VGGT paper reports depth + camera beats
        the point map).
        """
        points = depth_to_world_points(self.depth.astype(np.float64), self.extrinsics, self.model_intrinsics)
        return points.astype(np.float32)

    def point_cloud(
        self,
        conf_threshold: float | None = None,
        percentile: float | None = None,
        source: str = "depth",
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Coloured, confidence-filtered world points of all frames.

        Args:
            conf_threshold: keep points with confidence >= this value.
            percentile: keep points whose confidence is at or above this percentile (0-100) of
                the valid points' confidences, e.g. 50 drops the less confident half.
            source: "depth" (depth + cameras, with depth_conf) or "points" (point head, with
                world_points_conf).

        Returns:
            xyz [M, 3] float32 (world frame), rgb [M, 3] uint8, conf [M] float32.
        """
        if source not in POINT_SOURCES:
            raise ValueError(f"source must be one of {POINT_SOURCES}, got {source!r}")
        if source == "depth":
            xyz, conf = self.points_from_depth(), self.depth_conf
        else:
            if self.world_points is None or self.world_points_conf is None:
                raise ValueError("this prediction has no point-head output (model without point head)")
            xyz, conf = self.world_points, self.world_points_conf
        # 1e-5 as the official demo: a zero confidence marks pixels the network gave up on.
        keep = self.valid_mask & np.isfinite(xyz).all(axis=-1) & np.isfinite(conf) & (conf > 1e-5)
        if percentile is not None:
            if not 0.0 <= percentile <= 100.0:
                raise ValueError(f"percentile must be in [0, 100], got {percentile}")
            if keep.any():
                keep &= conf >= np.percentile(conf[keep], percentile)
        if conf_threshold is not None:
            keep &= conf >= conf_threshold
        return xyz[keep].astype(np.float32), self.colors[keep], conf[keep].astype(np.float32)


def _weights_identity(weights: Any) -> dict[str, Any]:
    """A JSON-friendly description of where the weights came from."""
    if weights is None:
        # A bare model gives no evidence of training; claiming it would hide random weights.
        return {"source": None, "trained": False, "note": "model passed without WeightsInfo"}
    if isinstance(weights, dict):
        info = dict(weights)
    elif hasattr(weights, "to_dict"):  # checkpoint.WeightsInfo, with its `trained` property
        info = dict(weights.to_dict())
    elif dataclasses.is_dataclass(weights):
        info = dataclasses.asdict(weights)
    else:
        info = {k: v for k, v in vars(weights).items() if not k.startswith("_")}
    if hasattr(weights, "trained") and "trained" not in info:
        info["trained"] = weights.trained
    plain = (str, int, float, bool, type(None), list, dict)
    info = {
        k: list(v) if isinstance(v, tuple) else v if isinstance(v, plain) else str(v) for k, v in info.items()
    }
    if "trained" not in info:
        info["trained"] = info.get("source") is not None
    info["trained"] = bool(info["trained"])
    return info


def _quantised_colors(images: torch.Tensor) -> np.ndarray:
    """[S, 3, H, W] model inputs in [0, 1] -> [S, H, W, 3] uint8 on the host, C-contiguous. Rounds
    half to even (as np.rint) in float32, on the device: 1 byte per channel to copy.

    Contiguous because elementwise ops keep the permuted strides: without it every consumer (the
    pose refinement's grey conversion, per frame) copied the frame again (0.7 ms a 350x518 frame
    on the 2-core CPU, about 1 ms on the GPU host, in the path from image to TF)."""
    quantised = (images.permute(0, 2, 3, 1) * 255.0).round().clamp(0, 255).to(torch.uint8)
    return quantised.contiguous().cpu().numpy()


def _moved_points(points: torch.Tensor, transform: np.ndarray) -> torch.Tensor:
    """Points [S, H, W, 3] -> ``R p + t`` for the rigid 4x4 ``transform``, float32 on their device.

    Computed in float64 one frame at a time (the transient stays one frame's size, 100 frames
    of 350x518 would otherwise take 0.4 GB of float64 at once).
    """
    matrix = torch.from_numpy(np.asarray(transform, dtype=np.float64)).to(points.device)
    rotation_t, translation = matrix[:3, :3].T, matrix[:3, 3]
    moved = torch.empty(points.shape, dtype=torch.float32, device=points.device)
    for i in range(points.shape[0]):
        moved[i] = points[i].double() @ rotation_t + translation
    return moved


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    # Autocast may hand back bf16/fp16; numpy has no bf16, and consumers expect float32.
    return t.detach().float().cpu().numpy()


class Predictor:
    """Runs a VGGT model on lists of RGB frames and returns :class:`Prediction` objects.

    Args:
        model: a ``vggt_ros.model.VGGT`` (or a module with the same forward contract and a
            ``config`` with ``patch_size``); it is moved to ``device`` and put in eval mode.
        weights: the WeightsInfo from ``load_model`` (or a dict) identifying the weights.
        device: "auto", "cpu", "cuda", "cuda:N".
        precision: "auto", "fp32", "bf16", "fp16": the inference mode of that precision (weights
            stored in it; see :mod:`vggt_ros.engine.modes`), unless ``inference_mode`` is given.
        inference_mode: an explicit mode name ("fp32", "official", "bf16", "fp16").
        backend: compiled sections: "eager", "torch", "tensorrt" or "auto" (ordered fallback).
        runner_options: options for :class:`~vggt_ros.engine.runner.ModelRunner` (CUDA graphs,
            token chunks, TensorRT engine options...).
        mode: preprocessing mode ("resize", "crop", "pad").
        target_size: model side length in pixels (multiple of the patch size).
        anchor_first_frame: re-express everything so frame 0 is exactly the identity (default);
            False returns the network's raw world frame.
    """

    def __init__(
        self,
        model: nn.Module,
        weights: Any = None,
        *,
        device: str | torch.device = "auto",
        precision: str | torch.dtype = "auto",
        mode: str = "resize",
        target_size: int = 518,
        anchor_first_frame: bool = True,
        inference_mode: str | None = None,
        backend: str = "eager",
        runner_options: dict[str, Any] | None = None,
    ) -> None:
        if mode not in PREPROCESS_MODES:
            raise ValueError(f"unknown preprocess mode {mode!r}; expected one of {PREPROCESS_MODES}")
        config = getattr(model, "config", None)
        self.patch_size = int(getattr(config, "patch_size", 14))
        if target_size <= 0 or target_size % self.patch_size:
            raise ValueError(f"target_size {target_size} must be a positive multiple of {self.patch_size}")
        if getattr(model, "camera_head", True) is None or getattr(model, "depth_head", True) is None:
            raise ValueError("the Predictor needs a model with camera and depth heads")
        self.device = resolve_device(device)
        self.dtype = resolve_precision(precision, self.device)
        self.runner: ModelRunner | None = None
        if isinstance(model, VGGT):
            run_mode = get_mode(inference_mode) if inference_mode else mode_for_precision(self.dtype)
            self.runner = ModelRunner(model, self.device, run_mode, backend=backend, options=runner_options)
            self.model = self.runner.model
        else:
            # Any module with VGGT's forward contract runs as is, under autocast.
            self.model = model.to(self.device).eval()
        self.weights = _weights_identity(weights)
        self.mode = mode
        self.target_size = int(target_size)
        self.anchor_first_frame = anchor_first_frame

    @classmethod
    def from_checkpoint(
        cls,
        source: str | None = None,
        config: str = "vggt-1b",
        device: str | torch.device = "auto",
        precision: str | torch.dtype = "auto",
        *,
        mode: str = "resize",
        target_size: int = 518,
        strict: bool = True,
        anchor_first_frame: bool = True,
        inference_mode: str | None = None,
        backend: str = "eager",
        runner_options: dict[str, Any] | None = None,
    ) -> Predictor:
        """Load weights with ``vggt_ros.model.checkpoint.load_model`` and wrap them.

        Args:
            source: checkpoint path or Hugging Face repo id; None builds untrained random weights
                (``prediction.weights["trained"]`` is then False).
            config: named model configuration ("vggt-1b", "vggt-small", "vggt-tiny").

        Raises:
            The checkpoint module's errors for missing or mismatching checkpoints.
        """
        from vggt_ros.model.checkpoint import load_model  # heavy (hub client); only when needed

        resolved = resolve_device(device)
        model, info = load_model(
            source, config=config, device=str(resolved), dtype=torch.float32, strict=strict
        )
        return cls(
            model,
            info,
            device=resolved,
            precision=precision,
            mode=mode,
            target_size=target_size,
            anchor_first_frame=anchor_first_frame,
            inference_mode=inference_mode,
            backend=backend,
            runner_options=runner_options,
        )

    @property
    def precision(self) -> str:
        return precision_name(self.dtype)

    @property
    def caches_frames(self) -> bool:
        """Whether ``predict(frame_keys=...)`` reuses encoder tokens across windows."""
        return self.runner is not None and self.runner.frame_cache is not None

    #: ``predict(on_model_inputs=...)`` is supported (the mapping pipeline checks for it).
    reports_model_inputs = True

    @property
    def has_track_head(self) -> bool:
        return getattr(self.model, "track_head", None) is not None

    def tracking_refusal(self, image_hw: tuple[int, int]) -> str | None:
        """Why query points on frames of ``image_hw`` (H, W) would be refused, or None.

        Lets a caller (the mapping pipeline) skip tracks up front instead of losing a window.
        """
        if not self.has_track_head:
            return "the model has no track head"
        mh, mw = plan_transform(image_hw, self.mode, self.target_size, self.patch_size).model_hw
        if min(mh, mw) < TRACK_MIN_MODEL_SIDE:
            return (
                f"model images of {mh}x{mw} are below the track head's {TRACK_MIN_MODEL_SIDE} px per side "
                "(raise the model image size)"
            )
        return None

    def _check_queries(self, query_points: Any, transform: ImageTransform) -> np.ndarray:
        if not self.has_track_head:
            raise ValueError("query_points given but the model has no track head (config enable_track=False)")
        q = np.asarray(query_points)
        if not np.issubdtype(q.dtype, np.number):
            raise ValueError(f"query_points must be numeric, got dtype {q.dtype}")
        q = q.astype(np.float64)
        if q.ndim != 2 or q.shape[1] != 2:
            raise ValueError(f"query_points must be [N, 2] (x, y), got shape {q.shape}")
        if q.shape[0] == 0:
            raise ValueError("query_points is empty; pass None for no tracks")
        if not np.isfinite(q).all():
            raise ValueError("query_points contains NaN or inf")
        mh, mw = transform.model_hw
        if min(mh, mw) < TRACK_MIN_MODEL_SIDE:
            raise ValueError(
                f"model images of {mh}x{mw} are too small for the track head: its 7-level correlation "
                f"pyramid needs at least {TRACK_MIN_MODEL_SIDE} px on each side (raise target_size / --size)"
            )
        h, w = transform.original_hw
        # Pixel centres run 0..W-1; the image itself spans [-0.5, W - 0.5].
        outside = (q[:, 0] < -0.5) | (q[:, 0] > w - 0.5) | (q[:, 1] < -0.5) | (q[:, 1] > h - 0.5)
        if outside.any():
            k = int(np.flatnonzero(outside)[0])
            raise ValueError(
                f"{int(outside.sum())} query point(s) outside frame 0 ({w}x{h} WxH), first: index {k} "
                f"(x={q[k, 0]:g}, y={q[k, 1]:g})"
            )
        m = transform.original_to_model_points(q)
        x0, y0, x1, y1 = transform.content_box
        cut = (m[:, 0] < x0 - 0.5) | (m[:, 0] > x1 - 0.5) | (m[:, 1] < y0 - 0.5) | (m[:, 1] > y1 - 0.5)
        if cut.any():
            k = int(np.flatnonzero(cut)[0])
            raise ValueError(
                f"query point {k} (x={q[k, 0]:g}, y={q[k, 1]:g}) lies in the part of frame 0 cropped "
                f"away by mode {self.mode!r}; use mode 'resize' or 'pad' to keep the whole image"
            )
        return q

    def predict(
        self,
        frames: Sequence[np.ndarray],
        query_points: np.ndarray | None = None,
        resample_to_original: bool | str = False,
        timer: StageTimer | NullTimer | None = None,
        frame_keys: Sequence[Hashable] | None = None,
        on_model_inputs: Callable[[np.ndarray, np.ndarray], None] | None = None,
    ) -> Prediction:
        """Run the model on one window of frames.

        Args:
            frames: S images [H, W, 3] RGB, uint8 (or float in [0, 1]); sizes and aspect ratios
                may differ (frames after the first are fitted into frame 0's model size).
            query_points: [N, 2] (x, y) pixels in ORIGINAL coordinates of frame 0 to track, or
                None. Needs a track head and model images >= 128 px per side.
            resample_to_original: fill ``depth_original`` for every frame now (True = nearest,
                or an interpolation name).
            timer: collects per-stage milliseconds when given: ``preprocess`` (decode, resize,
                upload), ``inference`` (the whole network) and inside it the runner's stages
                (``aggregator``, ``camera``, ``depth``, ``points``, ``tracks``), then
                ``postprocess`` (download, camera decoding, frames, resampling).
            frame_keys: one identity per frame (e.g. keyframe ids): with a frame cache
                (``runner_options={"frame_cache": N}``, see :attr:`caches_frames`) frames seen
                in earlier windows reuse their encoder tokens; same outputs, less work.
            on_model_inputs: called after preprocessing, before the network, with the model
                input images ([S, Hm, Wm, 3] uint8 RGB, the later ``Prediction.colors``) and
                their content masks ([S, Hm, Wm] bool, False on padding), so that per-frame work
                on them (the pose refinement's keypoints) can run while the network does. It
                should return quickly; what it raises propagates.

        Returns:
            Prediction (conventions in the module docstring).

        Raises:
            ValueError: empty input, wrong dtype/shape/channels, NaN, bad query points, images too
                small for tracking, query points for a model without a track head.
        """
        if isinstance(resample_to_original, str) and resample_to_original not in INTERPOLATIONS:
            raise ValueError(f"resample_to_original must be a bool or one of {INTERPOLATIONS}")
        timer = timer or NullTimer()
        t0 = time.perf_counter()
        with timer.host_stage("preprocess"):
            batch = self._preprocess(frames)
            queries = None if query_points is None else self._check_queries(query_points, batch.transforms[0])
            images = batch.images  # already on self.device
            model_queries = None
            if queries is not None:
                model_queries = torch.from_numpy(batch.transforms[0].original_to_model_points(queries)).to(
                    self.device, torch.float32
                )
            synchronize(self.device)
            colors = _quantised_colors(images)
            if on_model_inputs is not None:
                on_model_inputs(colors, np.stack([t.content_mask() for t in batch.transforms]))
        t1 = time.perf_counter()
        with timer.stage("inference"):
            if self.runner is not None:
                out = self.runner.run(images, model_queries, timer=timer, frame_keys=frame_keys)
            else:
                with inference_context(self.device, self.dtype):
                    out = self.model(images, model_queries)
        synchronize(self.device)
        t2 = time.perf_counter()
        with timer.host_stage("postprocess"):
            prediction = self._postprocess(out, colors, batch.transforms, batch.model_hw, queries)
            if resample_to_original:
                interp = "nearest" if resample_to_original is True else str(resample_to_original)
                for i in range(prediction.num_frames):
                    prediction.depth_original(i, interp)
        t3 = time.perf_counter()
        prediction.timings = {
            "preprocess_ms": (t1 - t0) * 1e3,
            "inference_ms": (t2 - t1) * 1e3,
            "postprocess_ms": (t3 - t2) * 1e3,
        }
        return prediction

    def _preprocess(self, frames: Sequence[np.ndarray]) -> PreprocessedBatch:
        """Frames -> the model's input batch on this device (``preprocess_frames``)."""
        return preprocess_frames(
            frames,
            mode=self.mode,
            target_size=self.target_size,
            patch_size=self.patch_size,
            device=self.device,
        )

    def frame_descriptors(self, frames: Sequence[np.ndarray], chunk: int = 16) -> np.ndarray:
        """One global descriptor per frame for place recognition: the mean of the frame's
        encoder patch tokens (``VGGT.encode_frames``; no cross-frame attention, so a frame's
        descriptor does not depend on the others).

        Args:
            frames: N images [H, W, 3] RGB uint8 (or float in [0, 1]), preprocessed as for
                :meth:`predict` (frames after the first fitted into frame 0's model size).
            chunk: frames per encoder call.

        Returns:
            [N, dim] float32 descriptors (dim: the encoder's token width).
        """
        if len(frames) == 0:
            raise ValueError("frame_descriptors needs at least one frame")
        batch = self._preprocess(frames)
        out = []
        with torch.no_grad(), inference_context(self.device, self.dtype):
            for part in batch.images.split(chunk):
                out.append(self.model.encode_frames(part).float().mean(dim=1))
        return torch.cat(out).cpu().numpy()

    def _postprocess(
        self,
        out: dict[str, Any],
        colors: np.ndarray,
        transforms: list[ImageTransform],
        model_hw: tuple[int, int],
        queries: np.ndarray | None,
    ) -> Prediction:
        """Network outputs (batch of one) -> Prediction in the documented frames.

        ``out`` stays on the model's device: the point map is re-anchored there, so only results
        are copied to the host (at 8 frames of 350x518 the same work in numpy took about 40 ms).
        ``colors``: [S, H, W, 3] uint8, the model inputs (:func:`_quantised_colors`).
        """
        pose_enc = _to_numpy(out["pose_enc"][0]).astype(np.float64)
        # A field of view of 0 or pi (untrained weights; the head's ReLU can output exactly 0)
        # would give infinite or negative focal lengths and NaN intrinsics after the pixel map.
        pose_enc[:, 7:9] = np.clip(pose_enc[:, 7:9], MIN_FOV, np.pi - MIN_FOV)
        extrinsics, model_K = pose_encoding_to_extrinsics_intrinsics(pose_enc, model_hw)
        depth = _to_numpy(out["depth"][0])[..., 0]
        depth_conf = _to_numpy(out["depth_conf"][0])
        depth_unflipped = _to_numpy(out["depth_unflipped"][0])[..., 0] if "depth_unflipped" in out else None
        points_conf = _to_numpy(out["world_points_conf"][0]) if "world_points_conf" in out else None
        world_points = out["world_points"][0] if "world_points" in out else None  # [S, H, W, 3]

        if self.anchor_first_frame:
            # New world = camera 0: every camera-from-world composes with world-from-camera0, and
            # world points move by camera0-from-world.
            first = to_homogeneous(extrinsics[0])
            extrinsics = extrinsics @ invert_rigid(first)
            if world_points is not None:
                world_points = _moved_points(world_points, first)
        points = _to_numpy(world_points) if world_points is not None else None
        extrinsics = extrinsics[:, :3, :4]
        cam_to_world = camera_to_world(extrinsics)
        intrinsics = np.stack([t.intrinsics_to_original(k) for t, k in zip(transforms, model_K)])

        content = np.stack([t.content_mask() for t in transforms])
        valid = content & np.isfinite(depth)

        tracks = model_tracks = vis = conf = None
        if queries is not None:
            model_tracks = _to_numpy(out["track"][0]).astype(np.float64)
            tracks = np.stack([t.model_to_original_points(p) for t, p in zip(transforms, model_tracks)])
            vis, conf = _to_numpy(out["vis"][0]), _to_numpy(out["conf"][0])

        return Prediction(
            cam_to_world=cam_to_world,
            extrinsics=extrinsics,
            intrinsics=intrinsics,
            model_intrinsics=model_K,
            depth=depth,
            depth_conf=depth_conf,
            depth_unflipped=depth_unflipped,
            world_points=points,
            world_points_conf=points_conf,
            valid_mask=valid,
            colors=colors,
            model_hw=tuple(model_hw),
            original_sizes=[t.original_hw for t in transforms],
            transforms=list(transforms),
            tracks=tracks,
            model_tracks=model_tracks,
            track_vis=vis,
            track_conf=conf,
            query_points=queries,
            weights=dict(self.weights),
        )


def warm_up_window_shapes(
    predictor: Any, image: np.ndarray, frame_counts: Sequence[int], windows: int = 2, new_frames: int = 0
) -> list[int]:
    """Run ``windows`` windows of ``image`` repeated, for each frame count, so that the one-off
    costs of a new input shape (torch.compile compiling, CUDA graph capture, kernel selection:
    tens of seconds with compiled sections) are paid before real windows arrive.

    Args:
        predictor: anything with ``predict(list of [H, W, 3] uint8 frames)``.
        image: [H, W, 3] uint8, a real frame of the stream (its size fixes the model input).
        frame_counts: window sizes to prepare, the steady size FIRST: it runs last, because a
            graphed window keeps the most recent shape's CUDA graph
            (``vggt_ros.engine.cuda_graphs.WindowGraphs``).
        windows: windows per size (2: the second call of a shape in a row is the one captured).
        new_frames: with a frame cache (``predictor.caches_frames``), the frames each steady
            window adds (window stride x cameras): sliding windows of the steady size with that
            many new frames run last, so the encoder's call on the new frames alone (another
            shape: compiled, captured) and the window's cached-tokens graph are ready too. The
            cache is emptied afterwards.

    Returns:
        The frame counts in the order they ran.
    """
    order = [int(n) for n in dict.fromkeys(reversed(list(frame_counts))) if int(n) > 0]
    for frames in order:
        for _ in range(windows):
            predictor.predict([image] * frames)
    steady = order[-1] if order else 0
    if 0 < new_frames < steady and getattr(predictor, "caches_frames", False):
        keys = [("warm-up", i) for i in range(steady)]
        predictor.predict([image] * steady, frame_keys=keys)  # every frame new
        for _ in range(windows + 1):  # then new_frames new a window, as in the steady state
            last = keys[-1][1]
            keys = keys[new_frames:] + [("warm-up", last + 1 + i) for i in range(new_frames)]
            predictor.predict([image] * steady, frame_keys=keys)
        predictor.runner.frame_cache.clear()
    return order
