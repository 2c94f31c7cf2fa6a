"""TF output and static-TF lookup, with tf2_ros when installed and without it otherwise.

With tf2_ros (a normal ROS install) this uses ``TransformBroadcaster`` and a ``Buffer`` /
``TransformListener``. Without it (pip-wheel installs) it publishes ``tf2_msgs/TFMessage`` on
``/tf`` itself and subscribes to ``/tf_static`` (reliable, transient-local, as tf2 does), keeping
the static tree and composing chains of static transforms on request. Camera extrinsics are static
(URDF), so that is all the node needs.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

import numpy as np
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from vggt_ros.ros.conversions import transform_to_matrix

TF_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
TF_STATIC_QOS = QoSProfile(
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
    history=HistoryPolicy.KEEP_LAST,
)


def _import_tf2_ros() -> Any | None:
    try:
        import tf2_ros  # noqa: F401

        return tf2_ros
    except ImportError:
        return None


def _import_tfmessage() -> Any | None:
    try:
        from tf2_msgs.msg import TFMessage

        return TFMessage
    except ImportError:
        return None


class StaticTree:
    """Static transforms ``parent <- child`` keyed by child; composes chains between frames."""

    def __init__(self) -> None:
        self._parent: dict[str, tuple[str, np.ndarray]] = {}
        self._lock = threading.Lock()

    def add(self, parent: str, child: str, parent_from_child: np.ndarray) -> None:
        with self._lock:
            self._parent[child.lstrip("/")] = (parent.lstrip("/"), np.asarray(parent_from_child, np.float64))

    def _to_root(self, frame: str) -> list[tuple[str, np.ndarray]]:
        """[(frame, root <- frame)] for frame and every ancestor (guarded against cycles)."""
        chain = [(frame, np.eye(4))]
        seen = {frame}
        T = np.eye(4)
        while frame in self._parent:
            parent, T_pc = self._parent[frame]
            if parent in seen:
                break
            T = T_pc @ T  # parent <- original frame
            chain.append((parent, T.copy()))
            seen.add(parent)
            frame = parent
        return chain

    def lookup(self, target: str, source: str) -> np.ndarray | None:
        """``target <- source`` 4x4, or None when the frames are not connected."""
        target, source = target.lstrip("/"), source.lstrip("/")
        with self._lock:
            up_source = dict(self._to_root(source))  # ancestor -> (ancestor <- source)
            for frame, T_frame_target in self._to_root(target):
                if frame in up_source:
                    return np.linalg.inv(T_frame_target) @ up_source[frame]
        return None

    def frames(self) -> list[str]:
        with self._lock:
            return sorted(set(self._parent) | {p for p, _ in self._parent.values()})


class TfIO:
    """Sends transforms and answers static lookups (see the module docstring).

    Attributes:
        backend: "tf2_ros", "direct" (own /tf publisher and /tf_static reader) or "none" (no
            tf2_msgs at all: TF is off, the node says so in its log and diagnostics).
    """

    def __init__(self, node: Node, use_tf2_ros: bool = True, callback_group: Any = None) -> None:
        self._node = node
        self._tree = StaticTree()
        tf2_ros = _import_tf2_ros() if use_tf2_ros else None
        self._tfmsg = _import_tfmessage()
        if tf2_ros is not None:
            self.backend = "tf2_ros"
            self._broadcaster = tf2_ros.TransformBroadcaster(node)
            self._buffer = tf2_ros.Buffer()
            self._listener = tf2_ros.TransformListener(self._buffer, node, spin_thread=False)
        elif self._tfmsg is not None:
            self.backend = "direct"
            self._pub = node.create_publisher(self._tfmsg, "/tf", TF_QOS)
            self._sub = node.create_subscription(
                self._tfmsg, "/tf_static", self._on_static, TF_STATIC_QOS, callback_group=callback_group
            )
        else:
            self.backend = "none"
            node.get_logger().error(
                "neither tf2_ros nor tf2_msgs is importable: TF output and /tf_static lookups are off"
            )

    def _on_static(self, msg: Any) -> None:
        for tf in msg.transforms:
            try:
                self._tree.add(tf.header.frame_id, tf.child_frame_id, transform_to_matrix(tf.transform))
            except ValueError as exc:  # zero quaternion
                self._node.get_logger().warning(f"ignoring bad /tf_static entry {tf.child_frame_id}: {exc}")

    def send(self, transforms: Iterable[Any]) -> None:
        """Publish TransformStamped messages on /tf."""
        transforms = list(transforms)
        if not transforms:
            return
        if self.backend == "tf2_ros":
            self._broadcaster.sendTransform(transforms)
        elif self.backend == "direct":
            self._pub.publish(self._tfmsg(transforms=transforms))

    def lookup_static(self, target: str, source: str) -> np.ndarray | None:
        """``target <- source`` from static TF (latest), or None when unknown."""
        if target.lstrip("/") == source.lstrip("/"):
            return np.eye(4)
        if self.backend == "tf2_ros":
            from rclpy.time import Time

            try:
                tf = self._buffer.lookup_transform(target, source, Time())
            except Exception:  # noqa: BLE001 - tf2 raises several exception types
                return None
            return transform_to_matrix(tf.transform)
        return self._tree.lookup(target, source)
