"""Node inputs: camera images (raw or compressed) with camera_info, odometry and metric depth.

Callbacks only decode, check stamps, build a :class:`vggt_ros.mapping.Frame` and call
``PerceptionPipeline.add_frame`` (the cheap keyframe test); a due window goes to the inference
worker's queue (:mod:`vggt_ros.ros.node_worker`). Every bad message is logged (throttled), counted
for /diagnostics and dropped; a callback never raises.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from nav_msgs.msg import Odometry
from sensor_msgs.msg import Image

from vggt_ros.ros import conversions as conv
from vggt_ros.ros.node_parameters import CameraConfig

ODOM_MATCH_S = 0.1  # odometry within this many seconds of a frame is used for it
DEPTH_MATCH_S = 0.02  # metric depth within this many seconds of a frame is used for it


class InputsMixin:
    """Subscriptions and their callbacks."""

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
        self.stats.stage("callback", (time.monotonic() - received) * 1e3)

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
