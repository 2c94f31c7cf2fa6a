"""Parameters of ``perception_node``: declarations (description, range, read-only), validation.

Two groups:

* node parameters (:data:`NODE_PARAMS`): model, topics, frames, queue, outputs;
* mapping parameters: every field of ``vggt_ros.mapping.PipelineConfig`` as ``<section>.<field>``
  (``window.size``, ``keyframe.min_parallax_px``, ...), described by the field's docstring and
  validated by the dataclass itself, so the node never duplicates the mapping rules.

Cameras come from the string list ``cameras`` and, per name, ``camera.<name>.topic``,
``camera.<name>.transport`` ("raw" or "compressed"), ``camera.<name>.camera_info_topic``
(empty = none) and ``camera.<name>.frame_id`` (empty = the image header's frame).

This module imports no rclpy at module level beyond message types, so its tables are usable in
tests (e.g. to check that the launch file and YAML name only declared parameters).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import math
import re
from dataclasses import dataclass
from functools import cache
from typing import Any

TRANSPORTS = ("raw", "compressed")
# "" = the configuration of the weights (the embedded model's, or vggt-1b for a checkpoint).
MODEL_CONFIGS = ("", "vggt-1b", "vggt-small", "vggt-compact", "vggt-tiny")
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "fp8")
# TensorRT is left out: its engines are built for one image size, which the node does not know
# before the first image (see docs/tensorrt.md).
NODE_BACKENDS = ("eager", "torch")
DROP_POLICIES = ("oldest", "newest")
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


@dataclass(frozen=True)
class ParamSpec:
    """One node parameter.

    Attributes:
        default: default value (its Python type fixes the ROS type: bool, int, float, str, list).
        description: shown by ``ros2 param describe``.
        low, high: inclusive numeric range (None = open).
        choices: allowed strings.
        read_only: needs a restart (topics, model); changes at run time are refused.
        pattern: regular expression a string value must match.
    """

    default: Any
    description: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    read_only: bool = False
    pattern: str | None = None


NODE_PARAMS: dict[str, ParamSpec] = {
    # model
    "model.checkpoint": ParamSpec(
        "",
        "VGGT checkpoint: local file (.pt/.safetensors) or Hugging Face repo id (e.g. facebook/VGGT-1B). "
        "Empty: the compact model embedded in the package (docs/model_card_compact.md).",
        read_only=True,
    ),
    "model.config": ParamSpec(
        "",
        "Model architecture: vggt-1b (released checkpoints), vggt-small, vggt-compact (the embedded "
        "model), vggt-tiny (tests). Empty: with a checkpoint the config saved in its safetensors "
        "header, else vggt-1b; without, the embedded model's.",
        choices=MODEL_CONFIGS,
        read_only=True,
    ),
    "model.device": ParamSpec(
        "auto",
        "Torch device: auto (first CUDA GPU, else CPU), cpu, cuda or cuda:N.",
        read_only=True,
        pattern=_DEVICE_RE.pattern,
    ),
    "model.precision": ParamSpec(
        "auto",
        "Compute precision: auto (bf16/fp16 on GPU, fp32 on CPU), fp32, bf16, fp16, or fp8 (the "
        "trunk's linears as e4m3 products, the rest bf16; Ada/Hopper GPUs only).",
        choices=PRECISIONS,
        read_only=True,
    ),
    "model.backend": ParamSpec(
        "eager",
        "Compiled sections: eager (none), or torch (torch.compile: each new window size compiles "
        "once, about 12 s for VGGT-1B on an H200 and minutes on a CPU, then runs faster; see "
        "docs/benchmarks.md). Either way, on a GPU in bf16/fp16, windows of up to 16 frames are "
        "replayed as CUDA graphs once their size repeats.",
        choices=NODE_BACKENDS,
        read_only=True,
    ),
    "model.image_size": ParamSpec(
        0,
        "Longest side of the model input in pixels (multiple of 14). 0: the size the weights were "
        "trained at (518 for VGGT-1B, 294 for the embedded compact model).",
        low=0,
        high=1036,
        read_only=True,
    ),
    "model.frame_cache": ParamSpec(
        -1,
        "Keyframes whose encoder tokens are kept for the next windows (-1: two windows, i.e. 2 x "
        "window.size x cameras; 0: off). Windows overlap by window.size - window.stride keyframes; "
        "with the cache each keyframe is encoded once, same outputs (to rounding on a GPU). "
        "VGGT-1B, window 8 / stride 4, H100: 61 against 66 ms a window. Must hold at least one "
        "window (window.size x cameras). Not with TensorRT.",
        low=-1,
        high=4096,
        read_only=True,
    ),
    "model.global_key_stride": ParamSpec(
        0,
        "APPROXIMATE sparse global attention for long windows (0: exact, the default): each token "
        "attends to the first frame, every frame's camera and register tokens, and 1 in N patch "
        "tokens of the others. Measured on the default model (v10, 6 windows per length): N=8 "
        "changes depth AbsRel by -0.0028 at 100 frames and +0.0048 at 32 (v9: -0.0045 / +0.0055; "
        "v8: -0.0024 / +0.012; v7: +0.0001 / +0.011; "
        "v6: +0.0005 / +0.017; "
        "v5: +0.002 / +0.011; on v5 N=4 +0.003 / -0.002, N=12 or 16 0.015-0.07); VGGT-1B at "
        "100 frames on an "
        "H100: 3.1x the official recipe with N=8 (docs/benchmarks.md, 'Weighted sparse keys'). "
        "No gain at 8-frame windows. Not with TensorRT.",
        low=0,
        high=64,
        read_only=True,
    ),
    "model.global_key_weighting": ParamSpec(
        True,
        "With model.global_key_stride N > 1: each sampled key stands for the N keys it was drawn "
        "from (its attention logit + ln N). Off: the plain sample, a little faster on a GPU (3.3x "
        "against 3.1x at 100 frames, N=8, H100) and less accurate (AbsRel +0.012 against +0.0001 at "
        "100 frames on v7, +0.015 against +0.011 at 32; v6: +0.008 against +0.0005 at 100; v5: "
        "+0.016 against +0.002 at 100).",
        read_only=True,
    ),
    "model.mirror_depth": ParamSpec(
        False,
        "Also run each window's left-right mirror image and average the two depth maps "
        "(confidence-weighted, after matching their scale): more accurate depth for twice the "
        "network's work; the network's cameras are kept and the pose refinement measures on the "
        "unflipped pass's own depth, so window poses are unchanged. Embedded v10 (CPU, "
        "2026-12-08): window depth AbsRel 0.1231 -> 0.1203 on the model card's held-out "
        "sequences, 0.1448 -> 0.1420 on the wider set (rotation unchanged, APE 3.85 -> 3.63 %), "
        "0.164 -> 0.158 on 24 demo-room paths. H100: VGGT-1B 8 frames 105 -> 217 ms.",
        read_only=True,
    ),
    "model.untrained": ParamSpec(
        False,
        "Run on untrained random weights of model.config instead of a checkpoint (pipeline tests "
        "only: every output is meaningless). Refused together with model.checkpoint.",
        read_only=True,
    ),
    # inputs
    "cameras": ParamSpec(
        ["camera"],
        "Camera names; each has camera.<name>.topic / .transport / .camera_info_topic / "
        ".frame_id. The first is the reference camera (its keyframes form the path).",
        read_only=True,
    ),
    "odom_topic": ParamSpec(
        "",
        "nav_msgs/Odometry topic (odom <- base_link); enables map -> odom TF and odometry scale. "
        "Empty: none.",
        read_only=True,
    ),
    "metric_depth_topic": ParamSpec(
        "",
        "Metric depth image (32FC1 metres or 16UC1 millimetres) registered to the reference camera, "
        "for scale.source = depth. Empty: none.",
        read_only=True,
    ),
    # frames
    "map_frame": ParamSpec(
        "map", "Fixed frame of poses, points and the map (REP-105, z up).", read_only=True
    ),
    "odom_frame": ParamSpec("odom", "Odometry frame (parent of base_frame in the odometry).", read_only=True),
    "base_frame": ParamSpec("base_link", "Robot base frame (child of the odometry).", read_only=True),
    "publish_tf": ParamSpec(True, "Publish map -> odom (with odometry) or map -> camera frames on /tf."),
    "tf_child_frame": ParamSpec(
        "",
        "Without odometry: publish map -> this frame (e.g. base_link, using the camera -> "
        "child transform from /tf_static) instead of map -> camera optical frame. Empty: the camera frame.",
        read_only=True,
    ),
    "tf_republish_period_s": ParamSpec(
        0.1,
        "Re-send the latest map -> odom at this period with the current time (Nav2 needs a fresh "
        "transform); 0 disables re-sending.",
        low=0.0,
        high=10.0,
    ),
    "use_tf2_ros": ParamSpec(
        True,
        "Use tf2_ros when it is installed; false (or tf2_ros absent) publishes /tf and reads "
        "/tf_static directly.",
        read_only=True,
    ),
    # work queue
    "queue.size": ParamSpec(
        2,
        "Windows waiting for inference at most; more are dropped by queue.drop_policy and counted.",
        low=1,
        high=64,
        read_only=True,
    ),
    "queue.drop_policy": ParamSpec(
        "oldest",
        "When the queue is full: drop the oldest waiting window (keeps latency low) or the newest.",
        choices=DROP_POLICIES,
    ),
    "gil_switch_interval_ms": ParamSpec(
        0.0,
        "How long (ms) a Python thread may hold the GIL while another waits for it, for the whole "
        "process; 0 keeps the interpreter's (5 ms). The worker, the pose refinement's threads and "
        "the callbacks share the GIL; see vggt_ros/mapping/interpreter.py.",
        low=0.0,
        high=100.0,
        read_only=True,
    ),
    # outputs
    "publish_depth": ParamSpec(True, "Publish ~/depth/image, ~/depth/camera_info and ~/depth/confidence."),
    "publish_points": ParamSpec(True, "Publish the newest window's points on ~/points."),
    "publish_track_markers": ParamSpec(
        False,
        "Also publish the tracks as visualization_msgs/MarkerArray on ~/tracks/markers (RViz cannot "
        "draw vggt_ros/KeypointTracks).",
        read_only=True,
    ),
    "map_publish_period_s": ParamSpec(
        2.0,
        "Publish the accumulated map on ~/map at most this often (seconds); 0 = after every window.",
        low=0.0,
        high=3600.0,
    ),
    "diagnostics_period_s": ParamSpec(1.0, "Period of /diagnostics (seconds).", low=0.1, high=60.0),
    "output_dir": ParamSpec(
        "~/.ros/vggt_ros",
        "Directory for save_map / export_keyframes requests with relative or empty paths.",
    ),
}


def camera_param_specs(name: str) -> dict[str, ParamSpec]:
    """The per-camera parameters of camera ``name``."""
    return {
        f"camera.{name}.topic": ParamSpec(
            f"/{name}/image_raw",
            f"Image topic of camera {name} (for compressed transport the "
            "CompressedImage topic, e.g. /cam/image_raw/compressed).",
            read_only=True,
        ),
        f"camera.{name}.transport": ParamSpec(
            "raw",
            "raw (sensor_msgs/Image) or compressed (sensor_msgs/CompressedImage, jpeg/png).",
            choices=TRANSPORTS,
            read_only=True,
        ),
        f"camera.{name}.camera_info_topic": ParamSpec(
            "",
            f"CameraInfo topic of camera {name}; empty: VGGT estimates the intrinsics.",
            read_only=True,
        ),
        f"camera.{name}.frame_id": ParamSpec(
            "",
            "Optical frame id of this camera; empty: the image header's frame_id.",
            read_only=True,
        ),
    }


def validate_node_value(name: str, value: Any, spec: ParamSpec) -> str | None:
    """None when ``value`` is acceptable for ``spec``, else the reason it is not."""
    want = type(spec.default)
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if want is list:
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            return f"{name} must be a list of strings, got {value!r}"
    elif not isinstance(value, want) or (want is int and isinstance(value, bool)):
        return f"{name} must be a {want.__name__}, got {type(value).__name__} {value!r}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{name} must be finite, got {value}"
    if spec.low is not None and value < spec.low:
        return f"{name} = {value} is below its minimum {spec.low}"
    if spec.high is not None and value > spec.high:
        return f"{name} = {value} is above its maximum {spec.high}"
    if spec.choices and value not in spec.choices:
        return f"{name} = {value!r} must be one of {', '.join(spec.choices)}"
    if spec.pattern and not re.match(spec.pattern, value):
        return f"{name} = {value!r} does not match {spec.pattern}"
    if name == "model.image_size" and value % 14:
        return f"model.image_size = {value} must be a multiple of 14 (the ViT patch size)"
    if name == "model.image_size" and 0 < value < 112:
        return f"model.image_size = {value} is below 112 px (0 picks the weights' own size)"
    if name == "cameras":
        if not value:
            return "cameras must name at least one camera"
        bad = [v for v in value if not _NAME_RE.match(v)]
        if bad:
            return f"camera names must be letters, digits and _ (starting with a letter): {bad}"
        if len(set(value)) != len(value):
            return f"cameras lists a camera twice: {list(value)}"
    if name.endswith(".topic") and name.startswith("camera.") and not value:
        return f"{name} must not be empty"
    return None


# ----------------------------------------------------------------------------- mapping params


@cache
def _field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings of a dataclass (the string literal after each field)."""
    try:
        tree = ast.parse(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs: dict[str, str] = {}
    for prev, node in zip(body, body[1:]):
        if (
            isinstance(prev, ast.AnnAssign)
            and isinstance(prev.target, ast.Name)
            and isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            docs[prev.target.id] = " ".join(node.value.value.split())
    return docs


def mapping_param_specs() -> dict[str, tuple[Any, str]]:
    """``{"section.field": (default, description)}`` for every PipelineConfig field."""
    from vggt_ros.mapping import PipelineConfig

    cfg = PipelineConfig()
    out: dict[str, tuple[Any, str]] = {}
    for section_field in dataclasses.fields(cfg):
        section = getattr(cfg, section_field.name)
        docs = _field_docs(type(section))
        for f in dataclasses.fields(section):
            out[f"{section_field.name}.{f.name}"] = (getattr(section, f.name), docs.get(f.name, ""))
    return out


def validate_mapping(values: dict[str, Any]) -> str | None:
    """None when the mapping parameters build a valid PipelineConfig, else the reason."""
    from vggt_ros.mapping import PipelineConfig

    try:
        PipelineConfig.from_flat(values)
    except (ValueError, TypeError) as exc:
        return str(exc)
    return None
