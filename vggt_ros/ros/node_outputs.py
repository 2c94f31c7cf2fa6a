"""Node outputs: depth images, point clouds, the map, tracks (and their markers), odometry,
path and TF, published from the inference worker after each window.

Frames follow REP-103/105: points, map, path and odometry in ``map_frame`` (z up); depth images in
the source image's optical frame with its stamp.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from vggt_ros.msg import KeypointTracks
from vggt_ros.ros import conversions as conv

MAP_QOS = QoSProfile(
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
    history=HistoryPolicy.KEEP_LAST,
)
OUTPUT_QOS = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)


@dataclass
class KeyframeRecord:
    """What the node keeps per keyframe for export_keyframes (bounded by ``export.max_keyframes``)."""

    stamp: float
    camera_id: str
    intrinsics: np.ndarray
    image_hw: tuple[int, int]
    model_intrinsics: np.ndarray
    depth: np.ndarray
    depth_conf: np.ndarray
    jpeg: bytes | None


def track_markers(tracks: KeypointTracks) -> MarkerArray:
    """RViz view of a tracks message (RViz cannot draw custom messages).

    One POINTS marker (namespace ``vggt_tracks``, id 0, replaced by every window) with the 3D
    point of every track whose depth is known, in the message's frame and stamp, coloured by the
    track's mean visibility over the window's frames (red never seen again .. green always).
    """
    n, f = int(tracks.num_tracks), int(tracks.num_frames)
    points = np.asarray(tracks.points, np.float32).reshape(n, 3)
    has = np.asarray(tracks.has_point, bool)
    vis = np.asarray(tracks.visibility, np.float32).reshape(n, f).mean(axis=1) if f else np.zeros(n)
    marker = Marker(header=tracks.header, ns="vggt_tracks", id=0, type=Marker.POINTS, action=Marker.ADD)
    marker.pose.orientation.w = 1.0
    marker.scale.x = marker.scale.y = 0.03
    for xyz, v in zip(points[has], vis[has]):
        marker.points.append(Point(x=float(xyz[0]), y=float(xyz[1]), z=float(xyz[2])))
        marker.colors.append(ColorRGBA(r=float(1.0 - v), g=float(v), b=0.1, a=1.0))
    return MarkerArray(markers=[marker])


def loop_markers(pipeline: Any, frame_id: str, stamp: Time) -> MarkerArray:
    """Accepted loop closures as one LINE_LIST (namespace ``vggt_loops``): a line between the
    camera centres of the old and the new keyframe of every accepted loop, at their current
    (optimised) poses in ``frame_id``."""
    poses = pipeline.keyframe_poses()
    marker = Marker(ns="vggt_loops", id=0, type=Marker.LINE_LIST, action=Marker.ADD)
    marker.header.frame_id, marker.header.stamp = frame_id, stamp
    marker.pose.orientation.w = 1.0
    marker.scale.x = 0.02
    marker.color = ColorRGBA(r=1.0, g=0.2, b=1.0, a=1.0)
    for event in pipeline.loops:
        if event.accepted and event.query_id in poses and event.candidate_id in poses:
            for k in (event.candidate_id, event.query_id):
                p = poses[k][:3, 3]
                marker.points.append(Point(x=float(p[0]), y=float(p[1]), z=float(p[2])))
    return MarkerArray(markers=[marker])


class OutputsMixin:
    """Publishers and what they publish."""

    def _source_stamp(self, camera_id: str, stamp: float) -> tuple[Time, float | None]:
        hit = self._stamps.get((camera_id, float(stamp)))
        return (hit[0], hit[1]) if hit else (conv.sec_to_stamp(stamp), None)

    def _publish_result(self, job: Any, r: Any, poses_published: bool = False) -> None:
        """Every output of a processed window; TF, odometry and path only when
        ``poses_published`` is False (the worker normally sends them from the pipeline's
        ``on_poses``, before the map stage) or when the back end corrected them afterwards."""
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
        newest = _newest_keyframes(r)
        ref = self._reference_camera(newest)
        ref_stamp, _ = self._source_stamp(ref, r.stamps[newest[ref]])
        if not poses_published or r.poses_corrected:
            # Sent before the map stage, unless the back end moved the keyframes since.
            self._publish_poses(r)

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

        if r.tracks is not None:
            tracks = self._tracks_msg(r, map_frame, ref_stamp)
            self.pub_tracks.publish(tracks)
            if self.pub_track_markers is not None:
                self.pub_track_markers.publish(track_markers(tracks))

        period = float(self._p["map_publish_period_s"])
        now = time.monotonic()
        # A loop closure moved the keyframes and rebuilt the map: everyone sees it at once.
        if period == 0 or now - self._last_map_pub >= period or r.map_rebuilt:
            self._publish_map(ref_stamp)
            self._last_map_pub = now
        if r.loops:
            for event in r.loops:
                verdict = "closed" if event.accepted else "rejected"
                self.get_logger().info(
                    f"loop {event.query_id} -> {event.candidate_id} {verdict}: {event.reason} "
                    f"(correction {event.correction_m:.3f}, path {event.path_since_m:.3f})"
                )
            self.pub_loop_markers.publish(loop_markers(self.pipeline, map_frame, ref_stamp))

    def _reference_camera(self, newest: dict[str, int]) -> str:
        """The first configured camera when the window has it, else the window's first camera."""
        return self.cameras[0].name if self.cameras[0].name in newest else next(iter(newest))

    def _publish_poses(self, r: Any) -> None:
        """TF (map -> odom, or map -> camera without odometry), odometry and path of an accepted
        window: what planners wait for. ``r`` is a WindowPoses or a WindowResult."""
        map_frame = self._p["map_frame"]
        newest = _newest_keyframes(r)
        ref = self._reference_camera(newest)
        ref_stamp, ref_received = self._source_stamp(ref, r.stamps[newest[ref]])
        t_publish = time.monotonic()
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
        if ref_received is not None:
            # Image in -> TF out: what a planner waiting for the pose sees.
            self.stats.stage("image_to_tf", (time.monotonic() - ref_received) * 1e3)
        child, T_ref = self._tf_child(ref, np.asarray(r.cam_to_map[newest[ref]]))
        self.pub_odom.publish(conv.odometry(T_ref, map_frame, child, ref_stamp))
        try:
            path = self.pipeline.path()
        except Exception:  # noqa: BLE001
            path = []
        self.pub_path.publish(conv.path_msg(path, map_frame, ref_stamp))
        self.stats.stage("publish", (time.monotonic() - t_publish) * 1e3)

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
            self._keyframes[kid] = KeyframeRecord(
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


def _newest_keyframes(r: Any) -> dict[str, int]:
    """{camera id: index of its newest keyframe} in a window's per-keyframe arrays."""
    newest: dict[str, int] = {}
    for i, (cam, s) in enumerate(zip(r.camera_ids, r.stamps)):
        if cam not in newest or s > r.stamps[newest[cam]]:
            newest[cam] = i
    return newest
