"""``perception_node``: camera streams in; TF, depth, points, map, tracks, odometry out.

Threads:

* the executor's callback threads decode images, check stamps, build a ``Frame`` and call
  ``PerceptionPipeline.add_frame`` (cheap: keyframe test and window bookkeeping); a due window is
  put on a bounded queue. Callbacks never wait for the GPU;
* one worker thread takes windows off the queue, runs ``PerceptionPipeline.process`` (VGGT,
  chaining, scale, map) and publishes the outputs.

When the queue is full, ``queue.drop_policy`` drops the oldest or the newest window; every dropped
window, undecodable image, out-of-order or repeated stamp and mismatching camera_info is logged
(throttled) and counted in /diagnostics. The mapping logic itself lives in
``vggt_ros.mapping``; this node only wires ROS to it.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from nav_msgs.msg import Odometry
from nav_msgs.msg import Path as PathMsg
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_srvs.srv import Trigger

from vggt_ros.msg import KeypointTracks
from vggt_ros.ros import conversions as conv
from vggt_ros.ros.params import (
    NODE_PARAMS,
    ParamSpec,
    camera_param_specs,
    mapping_param_specs,
    validate_mapping,
    validate_node_value,
)
from vggt_ros.ros.stats import Stats
from vggt_ros.ros.tf import TfIO
from vggt_ros.srv import ExportKeyframes, SaveMap

NODE_NAME = "vggt_perception"
MAP_QOS = QoSProfile(
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
    history=HistoryPolicy.KEEP_LAST,
)
OUTPUT_QOS = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
ODOM_MATCH_S = 0.1  # odometry within this many seconds of a frame is used for it
DEPTH_MATCH_S = 0.02  # metric depth within this many seconds of a frame is used for it


class ConfigError(ValueError):
    """A parameter value the node refuses at start-up (the message says which and why)."""


@dataclass
class CameraConfig:
    """One entry of the ``cameras`` parameter."""

    name: str
    topic: str
    transport: str
    camera_info_topic: str
    frame_id: str


@dataclass
class _KeyframeRecord:
    """What the node keeps per keyframe for export_keyframes (bounded by ``export.max_keyframes``)."""

    stamp: float
    camera_id: str
    intrinsics: np.ndarray
    image_hw: tuple[int, int]
    model_intrinsics: np.ndarray
    depth: np.ndarray
    depth_conf: np.ndarray
    jpeg: bytes | None


def _descriptor(name: str, spec: ParamSpec) -> ParameterDescriptor:
    desc = ParameterDescriptor(name=name, description=spec.description, read_only=spec.read_only)
    if spec.choices:
        desc.additional_constraints = f"one of: {', '.join(spec.choices)}"
    if spec.low is not None and spec.high is not None:
        if isinstance(spec.default, int) and not isinstance(spec.default, bool):
            desc.integer_range = [IntegerRange(from_value=int(spec.low), to_value=int(spec.high), step=0)]
        elif isinstance(spec.default, float):
            desc.floating_point_range = [
                FloatingPointRange(from_value=float(spec.low), to_value=float(spec.high), step=0.0)
            ]
    return desc


class PerceptionNode(Node):
    """The VGGT perception node (see the module docstring and README for topics/parameters).

    Raises:
        ConfigError: a parameter is missing, mistyped or out of range (message says why).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.stats = Stats()
        self._mapping_keys: list[str] = []
        self._declare()
        self._p = {name: self._value(name) for name in NODE_PARAMS}
        self.cameras = self._read_cameras()
        self._pipeline_cfg = self._mapping_config()

        self._sensor_group = MutuallyExclusiveCallbackGroup()
        self._service_group = MutuallyExclusiveCallbackGroup()
        self._timer_group = MutuallyExclusiveCallbackGroup()

        self.predictor = self._load_predictor()
        from vggt_ros.mapping import PerceptionPipeline

        self.pipeline = PerceptionPipeline(self._pipeline_cfg, self.predictor)
        self._pipeline_lock = threading.Lock()  # add_frame / reset
        self._map_lock = threading.Lock()  # process / map readers (services)
        self._generation = 0
        self._queue: deque[tuple[int, Any]] = deque()
        self._queue_cv = threading.Condition()
        self._stop = threading.Event()

        # per camera state
        self._last_stamp_ns: dict[str, int] = {}
        self._camera_info: dict[str, CameraInfo] = {}
        self._frame_ids: dict[str, str] = {c.name: c.frame_id for c in self.cameras}
        self._camera_to_base: dict[str, np.ndarray] = {}
        self._stamps: OrderedDict[tuple[str, float], tuple[Time, float]] = OrderedDict()
        self._odom: deque[tuple[float, np.ndarray]] = deque(maxlen=400)
        self._depth: deque[tuple[float, np.ndarray]] = deque(maxlen=10)
        self._keyframes: OrderedDict[int, _KeyframeRecord] = OrderedDict()
        self._last_map_pub = 0.0
        self._last_map_to_odom: np.ndarray | None = None
        self._log_times: dict[str, float] = {}

        self._make_interfaces()
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._worker = threading.Thread(target=self._work, name="vggt_inference", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"ready: {len(self.cameras)} camera(s) {[c.topic for c in self.cameras]}, "
            f"{self.model_description} on {self.predictor.device} ({self._precision_name()}, "
            f"{self._inference_backend()} backend), TF backend {self.tf.backend}"
        )

    # ----------------------------------------------------------------------------- parameters

    def _declare_one(self, name: str, spec: ParamSpec) -> None:
        value: Any = spec.default
        if isinstance(value, list) and not value:
            value = Parameter.Type.STRING_ARRAY
        try:
            self.declare_parameter(name, value, _descriptor(name, spec))
        except Exception as exc:  # rclpy raises several types for bad overrides
            raise ConfigError(f"parameter {name}: {exc}") from None
        current = self._value(name)
        if current is None and isinstance(spec.default, list):
            return
        reason = validate_node_value(name, current, spec)
        if reason:
            raise ConfigError(reason)

    def _declare(self) -> None:
        for name, spec in NODE_PARAMS.items():
            self._declare_one(name, spec)
        for name in self._value("cameras"):
            for pname, spec in camera_param_specs(name).items():
                self._declare_one(pname, spec)
        for name, (default, doc) in mapping_param_specs().items():
            spec = ParamSpec(default, f"{doc} (mapping; changes apply on ~/reset)")
            self._declare_one(name, spec)
            self._mapping_keys.append(name)
        self._declare_one(
            "export.max_keyframes",
            ParamSpec(
                300,
                "Newest keyframes kept (images, depth) for ~/export_keyframes.",
                low=1,
                high=100000,
                read_only=True,
            ),
        )

    def _value(self, name: str) -> Any:
        param = self.get_parameter_or(name, None)
        value = None if param is None else param.value
        if isinstance(value, tuple):
            value = list(value)
        return value

    def _mapping_values(self, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        values = {k: self._value(k) for k in self._mapping_keys}
        values.update(overrides or {})
        for k, v in values.items():
            if v is None:
                values[k] = []
            elif isinstance(v, tuple):
                values[k] = list(v)
        return values

    def _mapping_config(self, overrides: dict[str, Any] | None = None) -> Any:
        from vggt_ros.mapping import PipelineConfig

        values = self._mapping_values(overrides)
        if len(self.cameras) > 1 and not values.get("window.rig_cameras"):
            values["window.rig_cameras"] = [c.name for c in self.cameras]
        reason = validate_mapping(values)
        if reason:
            raise ConfigError(reason)
        return PipelineConfig.from_flat(values)

    def _read_cameras(self) -> list[CameraConfig]:
        cams = []
        for name in self._value("cameras"):
            g = lambda key, n=name: self._value(f"camera.{n}.{key}")  # noqa: E731
            cams.append(CameraConfig(name, g("topic"), g("transport"), g("camera_info_topic"), g("frame_id")))
        topics = [c.topic for c in cams]
        if len(set(topics)) != len(topics):
            raise ConfigError(f"two cameras share an image topic: {topics}")
        return cams

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        mapping: dict[str, Any] = {}
        for p in params:
            value = list(p.value) if isinstance(p.value, tuple) else p.value
            if p.name in NODE_PARAMS:
                reason = validate_node_value(p.name, value, NODE_PARAMS[p.name])
                if reason:
                    return SetParametersResult(successful=False, reason=reason)
            elif p.name in self._mapping_keys:
                mapping[p.name] = value
        if mapping:
            reason = validate_mapping(self._mapping_values(mapping))
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        for p in params:
            if p.name in NODE_PARAMS:
                self._p[p.name] = list(p.value) if isinstance(p.value, tuple) else p.value
        if mapping:
            self.get_logger().info(f"mapping parameters {sorted(mapping)} changed: they apply on ~/reset")
        return SetParametersResult(successful=True)

    # -------------------------------------------------------------------------- model / setup

    def _load_predictor(self) -> Any:
        from vggt_ros.engine import Predictor
        from vggt_ros.model.embedded import choose_model

        try:
            choice = choose_model(
                self._p["model.checkpoint"].strip() or None,
                self._p["model.config"] or None,
                int(self._p["model.image_size"]) or None,
                bool(self._p["model.untrained"]),
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        self.model_description = choice.description
        predictor = Predictor.from_checkpoint(
            choice.source,
            config=choice.config,
            device=self._p["model.device"],
            precision=self._p["model.precision"],
            target_size=choice.image_size,
            backend=self._p["model.backend"],
        )
        if choice.untrained:
            self.get_logger().warning(
                "UNTRAINED WEIGHTS (model.untrained): VGGT runs on random weights; every output is "
                "produced but the geometry is meaningless"
            )
        else:
            self.get_logger().info(f"model: {choice.description}")
        if choice.embedded is not None:
            predictor.weights["model"] = choice.embedded.name
        return predictor

    def _precision_name(self) -> str:
        return str(getattr(self.predictor, "dtype", "?")).replace("torch.", "")

    def _inference_backend(self) -> str:
        """The compiled-section backend the model runs with (after any fallback)."""
        runner = getattr(self.predictor, "runner", None)
        return runner.backend if runner is not None else "eager"

    def _make_interfaces(self) -> None:
        sensor_qos = qos_profile_sensor_data
        self._subs = []
        for cam in self.cameras:
            if cam.transport == "compressed":
                cb = lambda msg, c=cam: self._on_image(c, msg, compressed=True)  # noqa: E731
                self._subs.append(
                    self.create_subscription(
                        CompressedImage, cam.topic, cb, sensor_qos, callback_group=self._sensor_group
                    )
                )
            else:
                cb = lambda msg, c=cam: self._on_image(c, msg, compressed=False)  # noqa: E731
                self._subs.append(
                    self.create_subscription(
                        Image, cam.topic, cb, sensor_qos, callback_group=self._sensor_group
                    )
                )
            if cam.camera_info_topic:
                info_cb = lambda msg, c=cam: self._camera_info.__setitem__(c.name, msg)  # noqa: E731
                self._subs.append(
                    self.create_subscription(
                        CameraInfo,
                        cam.camera_info_topic,
                        info_cb,
                        sensor_qos,
                        callback_group=self._sensor_group,
                    )
                )
        if self._p["odom_topic"]:
            self._subs.append(
                self.create_subscription(
                    Odometry, self._p["odom_topic"], self._on_odom, 50, callback_group=self._sensor_group
                )
            )
        if self._p["metric_depth_topic"]:
            self._subs.append(
                self.create_subscription(
                    Image,
                    self._p["metric_depth_topic"],
                    self._on_depth,
                    sensor_qos,
                    callback_group=self._sensor_group,
                )
            )
        self.tf = TfIO(self, use_tf2_ros=bool(self._p["use_tf2_ros"]), callback_group=self._sensor_group)

        self.pub_depth = self.create_publisher(Image, "~/depth/image", OUTPUT_QOS)
        self.pub_depth_info = self.create_publisher(CameraInfo, "~/depth/camera_info", OUTPUT_QOS)
        self.pub_conf = self.create_publisher(Image, "~/depth/confidence", OUTPUT_QOS)
        self.pub_points = self.create_publisher(PointCloud2, "~/points", OUTPUT_QOS)
        self.pub_map = self.create_publisher(PointCloud2, "~/map", MAP_QOS)
        self.pub_tracks = self.create_publisher(KeypointTracks, "~/tracks", OUTPUT_QOS)
        self.pub_odom = self.create_publisher(Odometry, "~/odometry", OUTPUT_QOS)
        self.pub_path = self.create_publisher(PathMsg, "~/path", OUTPUT_QOS)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

        self.create_service(Trigger, "~/reset", self._srv_reset, callback_group=self._service_group)
        self.create_service(SaveMap, "~/save_map", self._srv_save_map, callback_group=self._service_group)
        self.create_service(
            ExportKeyframes, "~/export_keyframes", self._srv_export, callback_group=self._service_group
        )
        self._diag_timer = self.create_timer(
            float(self._p["diagnostics_period_s"]),
            self._publish_diagnostics,
            callback_group=self._timer_group,
        )
        if self._p["tf_republish_period_s"] > 0:
            self._tf_timer = self.create_timer(
                float(self._p["tf_republish_period_s"]), self._republish_tf, callback_group=self._timer_group
            )

    # ------------------------------------------------------------------------------- inputs

    def _warn(self, key: str, text: str, period_s: float = 5.0) -> None:
        """Log at most once per ``period_s`` per key (bad input can arrive at camera rate)."""
        now = time.monotonic()
        if now - self._log_times.get(key, -1e9) >= period_s:
            self._log_times[key] = now
            self.get_logger().warning(text)

    def _reject(self, cam: CameraConfig, reason: str, text: str) -> None:
        self.stats.count(f"input.{cam.name}.{reason}")
        self.stats.count(f"drop.{reason}")
        self._warn(
            f"{cam.name}.{reason}.{text[:24]}", f"[{cam.name}] {text} (counted as {reason}; frame dropped)"
        )

    def _on_image(self, cam: CameraConfig, msg: Any, compressed: bool) -> None:
        """Image callback: decode, check, add to the pipeline, queue a due window. Never raises."""
        received = time.monotonic()
        try:
            self._handle_image(cam, msg, compressed, received)
        except Exception as exc:  # noqa: BLE001 - the node must survive any single message
            self._reject(cam, "error", f"unexpected error on an image: {type(exc).__name__}: {exc}")

    def _handle_image(self, cam: CameraConfig, msg: Any, compressed: bool, received: float) -> None:
        self.stats.count(f"input.{cam.name}.received")
        self.stats.tick(f"input.{cam.name}")
        stamp_ns = int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)
        last = self._last_stamp_ns.get(cam.name)
        if last is not None and stamp_ns <= last:
            reason = "repeated_stamp" if stamp_ns == last else "out_of_order"
            self._reject(
                cam, reason, f"stamp {stamp_ns * 1e-9:.6f} s is not after the last {last * 1e-9:.6f} s"
            )
            return
        try:
            rgb = conv.compressed_to_rgb(msg) if compressed else conv.image_to_rgb(msg)
        except conv.DecodeError as exc:
            self._reject(cam, "decode_error", f"cannot decode image: {exc}")
            return
        self._last_stamp_ns[cam.name] = stamp_ns
        if not cam.frame_id and msg.header.frame_id:
            self._frame_ids[cam.name] = msg.header.frame_id
        frame_id = self._frame_ids.get(cam.name) or f"{cam.name}_optical_frame"
        self._frame_ids[cam.name] = frame_id

        K = None
        info = self._camera_info.get(cam.name)
        if info is not None:
            if (int(info.height), int(info.width)) != rgb.shape[:2]:
                self.stats.count(f"input.{cam.name}.camera_info_size_mismatch")
                self._warn(
                    f"{cam.name}.info_size",
                    f"[{cam.name}] camera_info is {info.width}x{info.height} but the image is "
                    f"{rgb.shape[1]}x{rgb.shape[0]}: ignoring camera_info (VGGT estimates intrinsics)",
                )
            else:
                try:
                    K = conv.camera_info_intrinsics(info)
                except conv.DecodeError as exc:
                    self.stats.count(f"input.{cam.name}.camera_info_invalid")
                    self._warn(f"{cam.name}.info_invalid", f"[{cam.name}] {exc}: ignoring camera_info")

        t = conv.stamp_to_sec(msg.header.stamp)
        if cam.name not in self._camera_to_base:
            T = self.tf.lookup_static(self._p["base_frame"], frame_id)
            if T is not None:
                self._camera_to_base[cam.name] = T
        from vggt_ros.mapping import Frame

        frame = Frame(
            stamp=t,
            camera_id=cam.name,
            image=rgb,
            intrinsics=K,
            odom_pose=self._odom_at(t),
            metric_depth=self._depth_at(t) if cam is self.cameras[0] else None,
            camera_to_base=self._camera_to_base.get(cam.name),
        )
        self._stamps[(cam.name, frame.stamp)] = (msg.header.stamp, received)
        while len(self._stamps) > 5000:
            self._stamps.popitem(last=False)
        with self._pipeline_lock:
            generation = self._generation
            job = self.pipeline.add_frame(frame)
        if job is not None:
            self._enqueue(generation, job)

    def _on_odom(self, msg: Odometry) -> None:
        try:
            self._odom.append((conv.stamp_to_sec(msg.header.stamp), conv.pose_to_matrix(msg.pose.pose)))
        except ValueError as exc:
            self.stats.count("input.odom.invalid")
            self._warn("odom", f"ignoring odometry: {exc}")

    def _odom_at(self, t: float) -> np.ndarray | None:
        best = None
        for s, T in reversed(self._odom):
            if abs(s - t) <= ODOM_MATCH_S and (best is None or abs(s - t) < abs(best[0] - t)):
                best = (s, T)
        return None if best is None else best[1]

    def _on_depth(self, msg: Image) -> None:
        try:
            self._depth.append((conv.stamp_to_sec(msg.header.stamp), conv.image_to_float(msg)))
        except conv.DecodeError as exc:
            self.stats.count("input.metric_depth.decode_error")
            self._warn("depth", f"ignoring metric depth: {exc}")

    def _depth_at(self, t: float) -> np.ndarray | None:
        for s, d in reversed(self._depth):
            if abs(s - t) <= DEPTH_MATCH_S:
                return d
        return None

    # --------------------------------------------------------------------------- work queue

    def _enqueue(self, generation: int, job: Any) -> None:
        with self._queue_cv:
            if len(self._queue) >= int(self._p["queue.size"]):
                if self._p["queue.drop_policy"] == "newest":
                    self.stats.count("drop.queue_full")
                    self._warn("queue", "inference queue full: dropped the newest window (queue.drop_policy)")
                    return
                self._queue.popleft()
                self.stats.count("drop.queue_full")
                self._warn("queue", "inference queue full: dropped the oldest waiting window")
            self._queue.append((generation, job))
            self.stats.count("windows.queued")
            self._queue_cv.notify()

    def _work(self) -> None:
        """Worker thread: process queued windows and publish their outputs until stopped."""
        while not self._stop.is_set():
            with self._queue_cv:
                if not self._queue:
                    self._queue_cv.wait(0.2)
                    continue
                generation, job = self._queue.popleft()
            if generation != self._generation:
                self.stats.count("drop.reset")
                continue
            try:
                t0 = time.perf_counter()
                with self._map_lock:
                    result = self.pipeline.process(job)
                    if generation != self._generation:
                        continue
                    self._remember_keyframes(job, result)
                self.stats.set("inference_ms", (time.perf_counter() - t0) * 1e3)
                self.stats.tick("inference")
                self._publish_result(job, result)
            except Exception as exc:  # noqa: BLE001 - a failed window must not kill the worker
                if self._stop.is_set() or not self.context.ok():
                    break  # shutting down: publishers are gone
                self.stats.count("windows.failed")
                text = f"{type(exc).__name__}: {exc}"
                self._warn(
                    f"failed.{text[:40]}", f"window {getattr(job, 'window_id', '?')} failed: {text}", 5.0
                )

    def queue_depth(self) -> int:
        with self._queue_cv:
            return len(self._queue)

    # ------------------------------------------------------------------------------ outputs

    def _source_stamp(self, camera_id: str, stamp: float) -> tuple[Time, float | None]:
        hit = self._stamps.get((camera_id, float(stamp)))
        return (hit[0], hit[1]) if hit else (conv.sec_to_stamp(stamp), None)

    def _publish_result(self, job: Any, r: Any) -> None:
        self.stats.count("windows.processed")
        self.stats.set("window.last_reason", str(r.reason))
        self.stats.set("window.residual", float(r.residual))
        self.stats.set("scale.value", float(r.scale.value))
        self.stats.set("scale.source", f"{r.scale.source} ({'metric' if r.scale.metric else 'normalized'})")
        for stage, ms in (r.timings or {}).items():
            self.stats.set(f"timing.{stage}", float(ms))
        if not r.accepted:
            self.stats.count("windows.rejected")
            self._warn("rejected", f"window {r.window_id} rejected, not merged: {r.reason}", 2.0)
            return
        self.stats.count("windows.accepted")
        map_frame = self._p["map_frame"]
        # newest keyframe of each camera in the window
        newest: dict[str, int] = {}
        for i, (cam, s) in enumerate(zip(r.camera_ids, r.stamps)):
            if cam not in newest or s > r.stamps[newest[cam]]:
                newest[cam] = i
        ref = self.cameras[0].name if self.cameras[0].name in newest else next(iter(newest))
        ref_stamp, ref_received = self._source_stamp(ref, r.stamps[newest[ref]])

        if self._p["publish_depth"]:
            for cam, i in newest.items():
                stamp, _ = self._source_stamp(cam, r.stamps[i])
                header = conv.make_header(stamp, self._frame_ids.get(cam, cam))
                depth = np.asarray(r.depth[i], np.float32)
                self.pub_depth.publish(conv.float_image(depth, header))
                self.pub_depth_info.publish(
                    conv.camera_info(r.model_intrinsics[i], depth.shape[0], depth.shape[1], header)
                )
                self.pub_conf.publish(conv.float_image(np.asarray(r.depth_conf[i], np.float32), header))
        if self._p["publish_points"]:
            pts = r.points_map
            self.pub_points.publish(
                conv.pointcloud2(pts.xyz, pts.rgb, pts.conf, conv.make_header(ref_stamp, map_frame))
            )

        # TF, odometry and path
        transforms = []
        if r.map_to_odom is not None:
            self._last_map_to_odom = np.asarray(r.map_to_odom, np.float64)
            transforms.append(
                conv.transform_stamped(r.map_to_odom, map_frame, self._p["odom_frame"], ref_stamp)
            )
        else:
            for cam, i in newest.items():
                stamp, _ = self._source_stamp(cam, r.stamps[i])
                child, T = self._tf_child(cam, np.asarray(r.cam_to_map[i]))
                transforms.append(conv.transform_stamped(T, map_frame, child, stamp))
        if self._p["publish_tf"]:
            self.tf.send(transforms)
        child, T_ref = self._tf_child(ref, np.asarray(r.cam_to_map[newest[ref]]))
        self.pub_odom.publish(conv.odometry(T_ref, map_frame, child, ref_stamp))
        try:
            path = self.pipeline.path()
        except Exception:  # noqa: BLE001
            path = []
        self.pub_path.publish(conv.path_msg(path, map_frame, ref_stamp))

        if r.tracks is not None:
            self.pub_tracks.publish(self._tracks_msg(r, map_frame, ref_stamp))

        period = float(self._p["map_publish_period_s"])
        now = time.monotonic()
        if period == 0 or now - self._last_map_pub >= period:
            self._publish_map(ref_stamp)
            self._last_map_pub = now
        if ref_received is not None:
            self.stats.latency(time.monotonic() - ref_received)

    def _tf_child(self, cam: str, cam_to_map: np.ndarray) -> tuple[str, np.ndarray]:
        """(child frame, map <- child) for a camera pose, honouring ``tf_child_frame``."""
        frame = self._frame_ids.get(cam, cam)
        child = self._p["tf_child_frame"]
        if child and child != frame:
            T_cam_child = self.tf.lookup_static(frame, child)
            if T_cam_child is not None:
                return child, cam_to_map @ T_cam_child
            self._warn("tf_child", f"no static transform {frame} <- {child}: publishing the camera frame")
        return frame, cam_to_map

    def _publish_map(self, stamp: Time) -> None:
        with self._map_lock:
            gm = self.pipeline.global_map
            xyz, rgb, conf = gm.points(), gm.colors(), gm.confidences()
        self.stats.set("map.points", float(len(xyz)))
        self.pub_map.publish(conv.pointcloud2(xyz, rgb, conf, conv.make_header(stamp, self._p["map_frame"])))

    def _tracks_msg(self, r: Any, frame_id: str, stamp: Time) -> KeypointTracks:
        tr = r.tracks
        index = {kid: i for i, kid in enumerate(r.keyframe_ids)}
        rows = [index[k] for k in tr.keyframe_ids]
        pixels = np.asarray(tr.pixels, np.float32)  # [F, N, 2]
        F, N = pixels.shape[0], pixels.shape[1]
        msg = KeypointTracks(header=conv.make_header(stamp, frame_id))
        msg.window_id = int(r.window_id)
        msg.num_tracks, msg.num_frames = N, F
        msg.frame_stamps = [self._source_stamp(r.camera_ids[i], r.stamps[i])[0] for i in rows]
        msg.frame_ids = [self._frame_ids.get(r.camera_ids[i], r.camera_ids[i]) for i in rows]
        msg.camera_ids = [str(r.camera_ids[i]) for i in rows]
        msg.keyframe_ids = [int(k) for k in tr.keyframe_ids]
        msg.track_ids = list(range(N))
        q = (
            list(tr.keyframe_ids).index(tr.query_keyframe_id)
            if tr.query_keyframe_id in tr.keyframe_ids
            else 0
        )
        msg.query_frame = [q] * N
        msg.query_pixels = np.asarray(tr.query_pixels, np.float32).reshape(-1)
        pts = np.asarray(tr.points_map, np.float32).reshape(N, 3)
        msg.has_point = [bool(v) for v in np.all(np.isfinite(pts), axis=1)]
        msg.points = pts.reshape(-1)
        msg.pixels = np.ascontiguousarray(pixels.transpose(1, 0, 2)).reshape(-1)
        msg.visibility = np.ascontiguousarray(np.asarray(tr.visibility, np.float32).T).reshape(-1)
        msg.confidence = np.ascontiguousarray(np.asarray(tr.confidence, np.float32).T).reshape(-1)
        return msg

    def _republish_tf(self) -> None:
        if self._last_map_to_odom is not None and self._p["publish_tf"]:
            self.tf.send(
                [
                    conv.transform_stamped(
                        self._last_map_to_odom,
                        self._p["map_frame"],
                        self._p["odom_frame"],
                        self.get_clock().now().to_msg(),
                    )
                ]
            )

    # --------------------------------------------------------------------------- keyframes

    def _remember_keyframes(self, job: Any, r: Any) -> None:
        if not r.accepted:
            return
        import cv2

        frames = {k.id: k.frame for k in job.keyframes}
        for i, kid in enumerate(r.keyframe_ids):
            frame = frames.get(kid)
            if kid in self._keyframes or frame is None:
                continue
            ok, buf = cv2.imencode(".jpg", cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR))
            self._keyframes[kid] = _KeyframeRecord(
                stamp=float(r.stamps[i]),
                camera_id=str(r.camera_ids[i]),
                intrinsics=np.asarray(r.intrinsics[i], np.float64),
                image_hw=(frame.height, frame.width),
                model_intrinsics=np.asarray(r.model_intrinsics[i], np.float64),
                depth=np.asarray(r.depth[i], np.float32),
                depth_conf=np.asarray(r.depth_conf[i], np.float32),
                jpeg=buf.tobytes() if ok else None,
            )
        limit = int(self._value("export.max_keyframes"))
        while len(self._keyframes) > limit:
            self._keyframes.popitem(last=False)

    # ----------------------------------------------------------------------------- services

    def _output_path(self, given: str, default_name: str) -> Path:
        base = Path(os.path.expanduser(self._p["output_dir"]))
        path = Path(os.path.expanduser(given)) if given else base / default_name
        return path if path.is_absolute() else base / path

    def _srv_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        with self._pipeline_lock:
            self._generation += 1
            with self._queue_cv:
                dropped = len(self._queue)
                self._queue.clear()
            with self._map_lock:
                try:
                    cfg = self._mapping_config()
                except ConfigError as exc:
                    response.success, response.message = False, f"reset refused: {exc}"
                    return response
                if cfg != self._pipeline_cfg:
                    from vggt_ros.mapping import PerceptionPipeline

                    self.pipeline = PerceptionPipeline(cfg, self.predictor)
                    self._pipeline_cfg = cfg
                else:
                    self.pipeline.reset()
                self._keyframes.clear()
                self._last_stamp_ns.clear()
                self._last_map_to_odom = None
        self.stats.count("resets")
        self._publish_map(self.get_clock().now().to_msg())
        response.success = True
        response.message = f"map, keyframes and trajectory cleared ({dropped} queued window(s) discarded)"
        self.get_logger().info(response.message)
        return response

    def _srv_save_map(self, request: SaveMap.Request, response: SaveMap.Response) -> SaveMap.Response:
        path = self._output_path(request.path, f"map_{int(time.time())}.ply")
        if path.suffix.lower() not in (".ply", ".pcd"):
            response.success, response.message = False, f"{path.name}: the file must end in .ply or .pcd"
            return response
        try:
            with self._map_lock:
                n = len(self.pipeline.global_map)
                if n == 0:
                    response.success, response.message = False, "the map is empty (no window processed yet)"
                    return response
                written = self.pipeline.global_map.save(path)
        except (OSError, ValueError) as exc:
            response.success, response.message = False, f"could not write {path}: {exc}"
            return response
        response.success, response.path, response.num_points = True, str(Path(written).resolve()), n
        response.message = f"wrote {n} points to {response.path}"
        self.get_logger().info(response.message)
        return response

    def _srv_export(
        self, request: ExportKeyframes.Request, response: ExportKeyframes.Response
    ) -> ExportKeyframes.Response:
        out = self._output_path(request.directory, f"export_{int(time.time())}")
        try:
            from vggt_ros.mapping.export.bundle import KeyframeBundle, write_bundle
            from vggt_ros.mapping.export.colmap import write_colmap
            from vggt_ros.mapping.export.trajectory import Trajectory, write_tum
        except ImportError as exc:
            response.success, response.message = False, f"exports unavailable: {exc}"
            return response
        with self._map_lock:
            poses = self.pipeline.keyframe_poses()
            scale = self.pipeline.scale
            ids = [k for k in self._keyframes if k in poses]
            records = [self._keyframes[k] for k in ids]
            cam_to_map = np.stack([poses[k] for k in ids]) if ids else np.zeros((0, 4, 4))
        if not ids:
            response.success, response.message = False, "no keyframes to export yet"
            return response
        try:
            import cv2

            out.mkdir(parents=True, exist_ok=True)
            order = np.argsort([r.stamp for r in records], kind="stable")
            records = [records[i] for i in order]
            ids = [ids[i] for i in order]
            cam_to_map = cam_to_map[order]
            images = None
            if len({r.image_hw for r in records}) == 1 and all(r.jpeg for r in records):
                images = np.stack(
                    [
                        cv2.cvtColor(
                            cv2.imdecode(np.frombuffer(r.jpeg, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB
                        )
                        for r in records
                    ]
                )
            bundle = KeyframeBundle(
                keyframe_ids=np.asarray(ids, np.int64),
                stamps=np.asarray([r.stamp for r in records]),
                camera_ids=np.asarray([r.camera_id for r in records]),
                cam_to_map=cam_to_map,
                intrinsics=np.stack([r.intrinsics for r in records]),
                image_hw=np.asarray([r.image_hw for r in records], np.int64),
                model_intrinsics=np.stack([r.model_intrinsics for r in records]),
                depth=np.stack([r.depth for r in records]),
                depth_conf=np.stack([r.depth_conf for r in records]),
                scale=np.array([scale.value, scale.sigma]),
                scale_metric=bool(scale.metric),
                scale_source=str(scale.source),
                images=images,
            )
            colmap_dir = out / "colmap"
            names = [f"{r.camera_id}_{int(round(r.stamp * 1e9))}.jpg" for r in records]
            write_colmap(colmap_dir, bundle, names=names, text=True)
            (colmap_dir / "images").mkdir(parents=True, exist_ok=True)
            for name, r in zip(names, records):
                if r.jpeg:
                    (colmap_dir / "images" / name).write_bytes(r.jpeg)
            ref = self.cameras[0].name
            sel = [i for i, r in enumerate(records) if r.camera_id == ref] or list(range(len(records)))
            tum = write_tum(
                out / "trajectory.tum",
                Trajectory(bundle.stamps[sel], cam_to_map[sel]),
                comment=f"vggt_ros keyframes of camera {records[sel[0]].camera_id}: optical frame in "
                f"{self._p['map_frame']} ({'metres' if scale.metric else 'normalized units'})",
            )
            write_bundle(out / "keyframes.npz", bundle)
        except Exception as exc:  # noqa: BLE001 - report any export failure to the caller
            response.success, response.message = False, f"export failed: {type(exc).__name__}: {exc}"
            return response
        response.success = True
        response.colmap_dir, response.tum_path = str(colmap_dir.resolve()), str(Path(tum).resolve())
        response.num_keyframes = len(ids)
        response.message = f"exported {len(ids)} keyframes to {out.resolve()}"
        self.get_logger().info(response.message)
        return response

    # --------------------------------------------------------------------------- diagnostics

    def _publish_diagnostics(self) -> None:
        counts, rates, values, lat = self.stats.snapshot()
        stamp = self.get_clock().now().to_msg()
        arr = DiagnosticArray()
        arr.header.stamp = stamp
        hw = str(self.predictor.device)

        def kv(pairs: Sequence[tuple[str, Any]]) -> list[KeyValue]:
            return [KeyValue(key=k, value=f"{v:.3f}" if isinstance(v, float) else str(v)) for k, v in pairs]

        for cam in self.cameras:
            p = f"input.{cam.name}."
            errors = sum(v for k, v in counts.items() if k.startswith(p) and k != p + "received")
            st = DiagnosticStatus(
                name=f"{self.get_fully_qualified_name()}: camera {cam.name}", hardware_id=hw
            )
            rate = rates.get(f"input.{cam.name}", 0.0)
            st.level = DiagnosticStatus.WARN if errors or rate == 0.0 else DiagnosticStatus.OK
            st.message = f"{rate:.1f} Hz, {errors} bad frame(s)" if rate else "no images"
            st.values = kv(
                [
                    ("topic", cam.topic),
                    ("transport", cam.transport),
                    ("frame_id", self._frame_ids.get(cam.name, "")),
                    ("rate_hz", rate),
                    ("received", counts.get(p + "received", 0)),
                    ("decode_errors", counts.get(p + "decode_error", 0)),
                    ("out_of_order", counts.get(p + "out_of_order", 0)),
                    ("repeated_stamps", counts.get(p + "repeated_stamp", 0)),
                    ("camera_info_size_mismatch", counts.get(p + "camera_info_size_mismatch", 0)),
                    ("other_errors", counts.get(p + "error", 0)),
                ]
            )
            arr.status.append(st)

        st = DiagnosticStatus(name=f"{self.get_fully_qualified_name()}: inference", hardware_id=hw)
        trained = bool(getattr(self.predictor, "weights", {}).get("trained", True))
        drops = counts.get("drop.queue_full", 0)
        failed = counts.get("windows.failed", 0)
        st.level = DiagnosticStatus.OK
        msgs = []
        if not trained:
            st.level, msgs = DiagnosticStatus.WARN, ["UNTRAINED WEIGHTS"]
        if drops:
            st.level = DiagnosticStatus.WARN
            msgs.append(f"{drops} window(s) dropped (queue full)")
        if failed:
            st.level = DiagnosticStatus.ERROR
            msgs.append(f"{failed} window(s) failed")
        if not self._worker.is_alive() and not self._stop.is_set():
            st.level = DiagnosticStatus.ERROR
            msgs.append("inference thread died")
        st.message = "; ".join(msgs) or "ok"
        pairs: list[tuple[str, Any]] = [
            ("model", self.model_description),
            ("weights_trained", trained),
            ("device", hw),
            ("precision", self._precision_name()),
            ("inference_backend", self._inference_backend()),
            ("tf_backend", self.tf.backend),
            ("inference_rate_hz", rates.get("inference", 0.0)),
            ("queue_depth", self.queue_depth()),
            ("queue_size", self._p["queue.size"]),
            ("dropped_windows_queue_full", drops),
            ("dropped_frames_total", sum(v for k, v in counts.items() if k.startswith("drop."))),
            ("windows_processed", counts.get("windows.processed", 0)),
            ("windows_accepted", counts.get("windows.accepted", 0)),
            ("windows_rejected", counts.get("windows.rejected", 0)),
            ("windows_failed", failed),
            ("latency_ms_last", lat[-1] * 1e3 if lat else float("nan")),
            ("latency_ms_mean", float(np.mean(lat)) * 1e3 if lat else float("nan")),
        ]
        pairs += sorted(values.items())
        pairs += self._gpu_memory()
        st.values = kv(pairs)
        arr.status.append(st)
        self.pub_diag.publish(arr)

    def _gpu_memory(self) -> list[tuple[str, Any]]:
        device = getattr(self.predictor, "device", None)
        if device is None or getattr(device, "type", "cpu") != "cuda":
            return [("gpu_memory_allocated_mb", "n/a (cpu)"), ("gpu_memory_peak_mb", "n/a (cpu)")]
        import torch

        return [
            ("gpu_memory_allocated_mb", torch.cuda.memory_allocated(device) / 2**20),
            ("gpu_memory_reserved_mb", torch.cuda.memory_reserved(device) / 2**20),
            ("gpu_memory_peak_mb", torch.cuda.max_memory_allocated(device) / 2**20),
        ]

    # ----------------------------------------------------------------------------- shutdown

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Stop the worker (after its current window) and release resources."""
        self._stop.set()
        with self._queue_cv:
            self._queue.clear()
            self._queue_cv.notify_all()
        self._worker.join(timeout_s)
        if self._worker.is_alive():
            self.get_logger().warning("inference thread still busy at shutdown; leaving it behind")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the node until SIGINT/SIGTERM; exit 0 on a clean shutdown, 2 on a refused parameter."""
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <pid>` dumps every thread's stack
    rclpy.init(args=argv)
    node = None
    executor = MultiThreadedExecutor(num_threads=4)
    try:
        try:
            node = PerceptionNode()
        except ConfigError as exc:
            rclpy.logging.get_logger(NODE_NAME).fatal(f"refused parameter: {exc}")
            return 2
        executor.add_node(node)
        try:
            executor.spin()
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        except Exception:
            # A SIGINT/SIGTERM that shuts the context down while the executor is building its
            # wait set makes rclpy raise (RCLError) instead of returning: still a clean stop.
            if rclpy.ok():
                raise
        return 0
    finally:
        if node is not None:
            node.shutdown()
            executor.shutdown(timeout_sec=1.0)
            node.destroy_node()
        if rclpy.ok():
            rclpy.try_shutdown()


if __name__ == "__main__":
    raise SystemExit(main())
