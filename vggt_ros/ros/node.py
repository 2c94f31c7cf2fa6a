"""``perception_node``: camera streams in; TF, depth, points, map, tracks, odometry out.

Threads:

* the executor's callback threads decode images, check stamps, build a ``Frame`` and call
  ``PerceptionPipeline.add_frame`` (cheap: keyframe test and window bookkeeping); a due window is
  put on a bounded queue. Callbacks never wait for the GPU (:mod:`.node_inputs`);
* one worker thread takes windows off the queue, runs ``PerceptionPipeline.process`` (VGGT,
  chaining, scale, map) and publishes the outputs (:mod:`.node_worker`, :mod:`.node_outputs`).

When the queue is full, ``queue.drop_policy`` drops the oldest or the newest window; every dropped
window, undecodable image, out-of-order or repeated stamp and mismatching camera_info is logged
(throttled) and counted in /diagnostics (:mod:`.node_diagnostics`). The mapping logic itself lives
in ``vggt_ros.mapping``; the node only wires ROS to it.

Two node classes share all of this (:class:`PerceptionCore`): :class:`PerceptionNode`, a plain
node that configures and activates itself on construction (the default), and
``vggt_ros.ros.lifecycle_node.PerceptionLifecycleNode``, a managed lifecycle node for Nav2-style
bring-up (``--lifecycle``; the executable is :mod:`vggt_ros.ros.main`). Stages:

* configure: read and check the parameters (refusing combinations that would fail on the first
  window), load and warm the model (the slow part, logged with its duration), create the
  services and diagnostics;
* activate: create the subscriptions, output publishers and TF timer, start the worker;
* deactivate: stop the worker (a window being inferred is interrupted and dropped), destroy the
  subscriptions; the map, trajectory and keyframes stay (services keep working);
* cleanup: free the model (and the GPU memory it held) and the map;
* shutdown (SIGINT/SIGTERM or the lifecycle transition): all of the above at once; the process
  exits within a second whatever the worker is doing, with status 0.
"""

from __future__ import annotations

import gc
import threading
import time
from collections import OrderedDict, deque
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import Odometry
from nav_msgs.msg import Path as PathMsg
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_srvs.srv import Trigger
from visualization_msgs.msg import MarkerArray

from vggt_ros.mapping import interpreter
from vggt_ros.msg import KeypointTracks
from vggt_ros.ros.node_diagnostics import DiagnosticsMixin
from vggt_ros.ros.node_inputs import InputsMixin
from vggt_ros.ros.node_outputs import MAP_QOS, OUTPUT_QOS, KeyframeRecord, OutputsMixin
from vggt_ros.ros.node_parameters import CameraConfig, ConfigError, ParametersMixin
from vggt_ros.ros.node_services import ServicesMixin
from vggt_ros.ros.node_worker import WorkerMixin, install_interrupt_hooks
from vggt_ros.ros.params import NODE_PARAMS
from vggt_ros.ros.stats import Stats
from vggt_ros.ros.tf import TfIO
from vggt_ros.srv import ExportKeyframes, SaveMap

__all__ = ["ConfigError", "CameraConfig", "PerceptionCore", "PerceptionNode"]

NODE_NAME = "vggt_perception"
TRACK_MIN_MODEL_SIDE = 128  # the track head's correlation pyramid (vggt_ros.engine.predictor)
SHUTDOWN_WAIT_S = 0.5  # how long shutdown waits for an interrupted window before leaving it


class PerceptionCore(
    ParametersMixin, InputsMixin, WorkerMixin, OutputsMixin, ServicesMixin, DiagnosticsMixin
):
    """Everything both node classes share; the host class is an rclpy ``Node`` or ``LifecycleNode``.

    Raises:
        ConfigError: (from :meth:`_configure`) a parameter is missing, mistyped, out of range, or
            combined with another so that the first window would fail (the message says why).
    """

    predictor: Any = None
    pipeline: Any = None
    model_description = "no model loaded (unconfigured)"
    lifecycle_state = "active"

    def _init_core(self) -> None:
        """State that exists in every lifecycle state; parameters declared (not yet read)."""
        self.stats = Stats()
        self._mapping_keys: list[str] = []
        self._sensor_group = MutuallyExclusiveCallbackGroup()
        self._service_group = MutuallyExclusiveCallbackGroup()
        self._timer_group = MutuallyExclusiveCallbackGroup()
        self._pipeline_lock = threading.Lock()  # add_frame / reset
        self._map_lock = threading.Lock()  # process / map readers (services)
        self._generation = 0
        self._queue: deque[tuple[int, Any, float]] = deque()  # (generation, job, queued at)
        self._queue_cv = threading.Condition()
        self._stop = threading.Event()
        self._interrupt = threading.Event()
        self._worker: threading.Thread | None = None
        self._interrupt_hooks: list[Any] = []
        # (Not ``_services`` / ``_timers``: rclpy's Node keeps its own lists under those names.)
        self._input_subs: list[Any] = []
        self._own_services: list[Any] = []
        self._active_timers: list[Any] = []
        self._publishers_made = False
        self._log_times: dict[str, float] = {}
        self._declare()
        self.add_on_set_parameters_callback(self._on_set_parameters)

    # ------------------------------------------------------------------------------ stages

    def _configure(self) -> float:
        """Read and check parameters, load and warm the model, create services and diagnostics.

        Returns the seconds the model took to load and warm up.
        """
        self._p = {name: self._value(name) for name in NODE_PARAMS}
        if self._p["gil_switch_interval_ms"] > 0:
            interpreter.set_switch_interval_ms(self._p["gil_switch_interval_ms"])
        self.cameras = self._read_cameras()
        self._pipeline_cfg = self._mapping_config()
        self._check_combinations()
        t0 = time.monotonic()
        try:
            self.predictor = self._load_predictor()
        except (ValueError, OSError, RuntimeError) as exc:  # checkpoint, device or precision refused
            raise ConfigError(f"cannot load the model: {exc}") from exc
        self._warm_up()
        load_s = time.monotonic() - t0
        self._interrupt_hooks = install_interrupt_hooks(self._model(), self._interrupt)
        from vggt_ros.mapping import PerceptionPipeline

        self.pipeline = PerceptionPipeline(self._pipeline_cfg, self.predictor)
        self._reset_buffers()
        self.tf = TfIO(self, use_tf2_ros=bool(self._p["use_tf2_ros"]), callback_group=self._sensor_group)
        self._make_services()
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(
            float(self._p["diagnostics_period_s"]),
            self._publish_diagnostics,
            callback_group=self._timer_group,
        )
        self.get_logger().info(
            f"configured: {self.model_description}, loaded and warmed up in {load_s:.1f} s"
        )
        return load_s

    def _activate(self) -> None:
        """Subscriptions, output publishers and the TF timer; start the worker."""
        if not self._publishers_made:
            self._make_publishers()
            self._publishers_made = True
        self._make_subscriptions()
        if self._p["tf_republish_period_s"] > 0:
            self._active_timers.append(
                self.create_timer(
                    float(self._p["tf_republish_period_s"]),
                    self._republish_tf,
                    callback_group=self._timer_group,
                )
            )
        self._start_worker()
        topics = [self.resolve_topic_name(c.topic) for c in self.cameras]
        self.get_logger().info(
            f"ready: {len(self.cameras)} camera(s) {topics}, {self.model_description} on "
            f"{self.predictor.device} ({self._precision_name()}, {self._inference_backend()} backend), "
            f"TF backend {self.tf.backend}"
        )

    def _deactivate(self, wait_s: float = SHUTDOWN_WAIT_S) -> bool:
        """Stop taking images and inferring; keep the map. Returns True if the worker ended."""
        stopped = self._stop_worker(wait_s)
        for sub in self._input_subs:
            self.destroy_subscription(sub)
        self._input_subs = []
        for timer in self._active_timers:
            self.destroy_timer(timer)
        self._active_timers = []
        return stopped

    def _cleanup(self) -> None:
        """Free the model (and the GPU memory it held) and the map; back to unconfigured."""
        self._deactivate()
        for handle in self._interrupt_hooks:
            handle.remove()
        self._interrupt_hooks = []
        for srv in self._own_services:
            self.destroy_service(srv)
        self._own_services = []
        if getattr(self, "_diag_timer", None) is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None
        self.pipeline = None
        self.predictor = None
        if hasattr(self, "_keyframes"):
            self._keyframes.clear()
        interpreter.thaw()  # the model was frozen after the warm-up: its cycles are collectable again
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:  # pragma: no cover - torch is a dependency
            pass
        self.model_description = "no model loaded (unconfigured)"

    def stop(self, wait_s: float = SHUTDOWN_WAIT_S) -> bool:
        """Stop everything now (shutdown): returns True when the worker thread has ended; when it
        is still inside a network call that ignores interrupts the caller should exit anyway."""
        stopped = self._stop_worker(wait_s)
        if not stopped:
            self.get_logger().warning("shutdown: the window being inferred was dropped")
        return stopped

    def shutdown(self, timeout_s: float = SHUTDOWN_WAIT_S) -> None:
        """Stop the worker (compatibility name of :meth:`stop`)."""
        self.stop(timeout_s)

    # ------------------------------------------------------------------------------- setup

    def _reset_buffers(self) -> None:
        self._last_stamp_ns: dict[str, int] = {}
        self._camera_info: dict[str, CameraInfo] = {}
        self._frame_ids: dict[str, str] = {c.name: c.frame_id for c in self.cameras}
        self._camera_to_base: dict[str, np.ndarray] = {}
        self._stamps: OrderedDict[tuple[str, float], tuple[Time, float]] = OrderedDict()
        self._odom: deque[tuple[float, np.ndarray]] = deque(maxlen=400)
        self._depth: deque[tuple[float, np.ndarray]] = deque(maxlen=10)
        self._keyframes: OrderedDict[int, KeyframeRecord] = OrderedDict()
        self._last_map_pub = 0.0
        self._last_map_to_odom: np.ndarray | None = None

    def _check_combinations(self) -> None:
        """Refuse parameter combinations that would fail on the first window (say what works)."""
        from vggt_ros.model.embedded import choose_model

        p, cfg = self._p, self._pipeline_cfg
        try:
            choice = choose_model(
                p["model.checkpoint"].strip() or None,
                p["model.config"] or None,
                int(p["model.image_size"]) or None,
                bool(p["model.untrained"]),
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        self._model_choice = choice
        if cfg.window.num_track_queries > 0 and choice.image_size < TRACK_MIN_MODEL_SIDE:
            raise ConfigError(
                f"model.image_size {choice.image_size} is below the {TRACK_MIN_MODEL_SIDE} px the track head "
                f"needs while tracks are on (window.num_track_queries = {cfg.window.num_track_queries}): "
                f"use model.image_size >= {TRACK_MIN_MODEL_SIDE} (the model's own size: 0) or "
                "window.num_track_queries:=0"
            )
        source = cfg.scale.source
        if source == "odometry" and not p["odom_topic"]:
            raise ConfigError("scale.source = odometry needs odom_topic (a nav_msgs/Odometry topic)")
        if source == "depth" and not p["metric_depth_topic"]:
            raise ConfigError("scale.source = depth needs metric_depth_topic (a metric depth image topic)")
        if source == "rig" and len(self.cameras) < 2:
            raise ConfigError(
                "scale.source = rig needs two or more cameras in `cameras` (a rig with known extrinsics)"
            )
        try:
            self._frame_cache_frames()
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        names = {c.name for c in self.cameras}
        unknown = [c for c in (cfg.window.rig_cameras or []) if c not in names]
        if unknown:
            raise ConfigError(f"window.rig_cameras names {unknown}, which are not in cameras {sorted(names)}")

    def _frame_cache_frames(self) -> int:
        """model.frame_cache resolved: -1 (the default) keeps two windows of every camera."""
        from vggt_ros.engine.frame_cache import resolve_frame_cache

        window_frames = self._pipeline_cfg.window.size * len(self.cameras)
        return resolve_frame_cache(self._p["model.frame_cache"], window_frames, "model.frame_cache")

    def _load_predictor(self) -> Any:
        from vggt_ros.engine import Predictor

        choice = self._model_choice
        self.model_description = choice.description
        predictor = Predictor.from_checkpoint(
            choice.source,
            config=choice.config,
            device=self._p["model.device"],
            precision=self._p["model.precision"],
            target_size=choice.image_size,
            backend=self._p["model.backend"],
            runner_options={
                "frame_cache": self._frame_cache_frames(),
                "global_key_stride": int(self._p["model.global_key_stride"]),
                "global_key_weighting": bool(self._p["model.global_key_weighting"]),
                "point_head": False,  # the mapping pipeline unprojects depth, never the point map
                "mirror_depth": bool(self._p["model.mirror_depth"]),
            },
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

    def _model(self) -> Any:
        runner = getattr(self.predictor, "runner", None)
        return runner.model if runner is not None else self.predictor.model

    def _warm_up(self) -> None:
        """One tiny window through the network, so the first real window pays no start-up cost
        (allocator, kernels, lazily built tables); a failure here is a configuration error."""
        size = max(TRACK_MIN_MODEL_SIDE, 14)
        frames = [np.zeros((size, size, 3), np.uint8)] * 2
        try:
            self.predictor.predict(frames)
        except Exception as exc:  # noqa: BLE001 - report any failure as a refused configuration
            raise ConfigError(f"the model failed its warm-up window: {type(exc).__name__}: {exc}") from exc

    def _precision_name(self) -> str:
        return str(getattr(self.predictor, "dtype", "?")).replace("torch.", "")

    def _inference_backend(self) -> str:
        """The compiled-section backend the model runs with (after any fallback)."""
        runner = getattr(self.predictor, "runner", None)
        return runner.backend if runner is not None else "eager"

    def _output_publisher(self, msg_type: Any, topic: str, qos: Any) -> Any:
        """A publisher of outputs (the lifecycle node makes lifecycle publishers instead)."""
        return self.create_publisher(msg_type, topic, qos)

    def _make_publishers(self) -> None:
        pub = self._output_publisher
        self.pub_depth = pub(Image, "~/depth/image", OUTPUT_QOS)
        self.pub_depth_info = pub(CameraInfo, "~/depth/camera_info", OUTPUT_QOS)
        self.pub_conf = pub(Image, "~/depth/confidence", OUTPUT_QOS)
        self.pub_points = pub(PointCloud2, "~/points", OUTPUT_QOS)
        self.pub_map = pub(PointCloud2, "~/map", MAP_QOS)
        self.pub_tracks = pub(KeypointTracks, "~/tracks", OUTPUT_QOS)
        self.pub_track_markers = (
            pub(MarkerArray, "~/tracks/markers", OUTPUT_QOS) if self._p["publish_track_markers"] else None
        )
        self.pub_loop_markers = pub(MarkerArray, "~/loops/markers", MAP_QOS)
        self.pub_odom = pub(Odometry, "~/odometry", OUTPUT_QOS)
        self.pub_path = pub(PathMsg, "~/path", OUTPUT_QOS)

    def _subscribe_sensor(self, msg_type: Any, topic: str, callback: Any) -> None:
        """Subscribe with the sensor-data QoS (best effort, keep last 5), which the standard
        ``qos_overrides./<topic>.subscription.{reliability,history,depth}`` parameters can
        change: a bag replayed faster than the node takes frames then loses none with
        ``reliability: reliable`` and a deep ``depth``."""
        qos = QoSProfile(
            history=qos_profile_sensor_data.history,
            depth=qos_profile_sensor_data.depth,
            reliability=qos_profile_sensor_data.reliability,
            durability=qos_profile_sensor_data.durability,
        )  # a copy: rclpy writes the overrides into the profile it is given
        self._input_subs.append(
            self.create_subscription(
                msg_type,
                topic,
                callback,
                qos,
                callback_group=self._sensor_group,
                qos_overriding_options=QoSOverridingOptions.with_default_policies(),
            )
        )

    def _make_subscriptions(self) -> None:
        for cam in self.cameras:
            compressed = cam.transport == "compressed"
            cb = lambda msg, c=cam, z=compressed: self._on_image(c, msg, compressed=z)  # noqa: E731
            self._subscribe_sensor(CompressedImage if compressed else Image, cam.topic, cb)
            if cam.camera_info_topic:
                info_cb = lambda msg, c=cam: self._camera_info.__setitem__(c.name, msg)  # noqa: E731
                self._subscribe_sensor(CameraInfo, cam.camera_info_topic, info_cb)
        if self._p["odom_topic"]:
            self._input_subs.append(
                self.create_subscription(
                    Odometry, self._p["odom_topic"], self._on_odom, 50, callback_group=self._sensor_group
                )
            )
        if self._p["metric_depth_topic"]:
            self._subscribe_sensor(Image, self._p["metric_depth_topic"], self._on_depth)

    def _make_services(self) -> None:
        group = self._service_group
        self._own_services = [
            self.create_service(Trigger, "~/reset", self._srv_reset, callback_group=group),
            self.create_service(SaveMap, "~/save_map", self._srv_save_map, callback_group=group),
            self.create_service(
                ExportKeyframes, "~/export_keyframes", self._srv_export, callback_group=group
            ),
        ]


class PerceptionNode(PerceptionCore, Node):
    """The VGGT perception node, configured and active from construction (see the module doc).

    Raises:
        ConfigError: a parameter is refused (the message says which and why).
    """

    def __init__(self, **kwargs: Any) -> None:
        Node.__init__(self, NODE_NAME, **kwargs)
        self._init_core()
        self._configure()
        self._activate()
