"""Rosbag reading and writing without ROS: rosbag2 (sqlite3, mcap) and ROS 1 bags via ``rosbags``.

Messages are built and decoded with the ``rosbags`` typestores (pure Python dataclasses), so
this module needs no ROS install. Conventions:

* Poses are [4, 4] float64 homogeneous matrices ``parent_from_child`` (a point in the child
  frame maps to the parent frame), the way TF publishes ``header.frame_id -> child_frame_id``.
* Quaternions in messages are (x, y, z, w).
* Stamps are float seconds in Python and (sec, nanosec) in messages; bag timestamps are ns.
* Colour images decode to [H, W, 3] uint8 RGB whatever their encoding; depth images decode to
  [H, W] float32 metres (16UC1/mono16 is millimetres by REP-118, 0 = no depth -> NaN); the
  codec is :mod:`vggt_ros.engine.image_encodings`, the one the ROS node uses.

A path ending in ``.bag`` is a ROS 1 bag; anything else is a rosbag2 directory whose storage
(sqlite3 or mcap) the reader detects and the writer takes as an argument.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from vggt_ros.engine import image_encodings

STORAGES = ("sqlite3", "mcap")
# tf2_msgs is missing from the ROS 1 store of rosbags; its definition is this one line.
_TF_MESSAGE_DEF = "geometry_msgs/TransformStamped[] transforms"
# Topics recorded with latched (transient-local, reliable) QoS, as ros2 bag record stores
# /tf_static, so ``ros2 bag play`` re-publishes them to late subscribers.
LATCHED_TOPICS = ("/tf_static",)


class BagError(ValueError):
    """A bag that cannot be read or written as asked (a user error: one line, exit 2)."""


# ------------------------------------------------------------------------------------------------
# Typestores
# ------------------------------------------------------------------------------------------------
@cache
def typestore(ros1: bool = False) -> Any:
    """The ``rosbags`` typestore for writing: ROS 2 Jazzy, or ROS 1 Noetic (+ tf2_msgs)."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    if not ros1:
        return get_typestore(Stores.ROS2_JAZZY)
    store = get_typestore(Stores.ROS1_NOETIC)
    store.register(get_types_from_msg(_TF_MESSAGE_DEF, "tf2_msgs/msg/TFMessage"))
    return store


def is_ros1(path: str | Path) -> bool:
    """ROS 1 bags are single ``.bag`` files; rosbag2 bags are directories (or their files)."""
    return Path(path).suffix == ".bag"


# ------------------------------------------------------------------------------------------------
# Stamps, headers, transforms
# ------------------------------------------------------------------------------------------------
def to_ns(stamp: float) -> int:
    """Seconds -> integer nanoseconds (rounded, so 0.1 s gives exactly 100000000)."""
    return int(round(float(stamp) * 1e9))


def stamp_of(msg: Any) -> float:
    """Seconds of a message's ``header.stamp`` (a TFMessage: its first transform's; a bare Time)."""
    if getattr(msg, "transforms", None):
        msg = msg.transforms[0]
    t = msg.header.stamp if hasattr(msg, "header") else msg
    return float(t.sec) + 1e-9 * float(t.nanosec)


def _time(store: Any, stamp: float) -> Any:
    ns = to_ns(stamp)
    return store.types["builtin_interfaces/msg/Time"](sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def header(store: Any, stamp: float, frame_id: str) -> Any:
    """A std_msgs/Header (with ``seq = 0`` in ROS 1)."""
    cls = store.types["std_msgs/msg/Header"]
    kwargs: dict[str, Any] = {"stamp": _time(store, stamp), "frame_id": frame_id}
    if "seq" in cls.__dataclass_fields__:
        kwargs["seq"] = 0
    return cls(**kwargs)


def matrix_from_tq(t: Any, q: Any) -> np.ndarray:
    """[4, 4] from a translation (x, y, z) and a quaternion (x, y, z, w) (need not be unit)."""
    T = np.eye(4)
    T[:3, :3] = Rotation.from_quat(np.asarray(q, np.float64)).as_matrix()
    T[:3, 3] = t
    return T


def tq_from_matrix(pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[4, 4] -> translation [3], quaternion [4] (x, y, z, w) with w >= 0."""
    T = np.asarray(pose, np.float64)
    q = Rotation.from_matrix(T[:3, :3]).as_quat()
    return T[:3, 3].copy(), q if q[3] >= 0 else -q


def matrix_from_msg(msg: Any) -> np.ndarray:
    """[4, 4] from a geometry_msgs Transform, Pose, TransformStamped, PoseStamped,
    PoseWithCovariance(Stamped) or nav_msgs/Odometry (its pose: ``frame_id <- child_frame_id``)."""
    for attr in ("transform", "pose"):
        while hasattr(msg, attr):  # Odometry.pose.pose, PoseStamped.pose, ...
            msg = getattr(msg, attr)
    if hasattr(msg, "translation"):
        p, q = msg.translation, msg.rotation
    elif hasattr(msg, "position"):
        p, q = msg.position, msg.orientation
    else:
        raise BagError(f"message of type {getattr(msg, '__msgtype__', type(msg).__name__)} carries no pose")
    return matrix_from_tq((p.x, p.y, p.z), (q.x, q.y, q.z, q.w))


def _vector3(store: Any, v: Iterable[float], name: str = "geometry_msgs/msg/Vector3") -> Any:
    x, y, z = (float(a) for a in v)
    return store.types[name](x=x, y=y, z=z)


def _quaternion(store: Any, q: Iterable[float]) -> Any:
    x, y, z, w = (float(a) for a in q)
    return store.types["geometry_msgs/msg/Quaternion"](x=x, y=y, z=z, w=w)


def _pose(store: Any, pose: np.ndarray) -> Any:
    t, q = tq_from_matrix(pose)
    return store.types["geometry_msgs/msg/Pose"](
        position=_vector3(store, t, "geometry_msgs/msg/Point"), orientation=_quaternion(store, q)
    )


def transform_stamped(store: Any, pose: np.ndarray, stamp: float, parent: str, child: str) -> Any:
    """geometry_msgs/TransformStamped ``parent <- child`` (``pose`` maps child points to the parent)."""
    t, q = tq_from_matrix(pose)
    tr = store.types["geometry_msgs/msg/Transform"](
        translation=_vector3(store, t), rotation=_quaternion(store, q)
    )
    return store.types["geometry_msgs/msg/TransformStamped"](
        header=header(store, stamp, parent), child_frame_id=child, transform=tr
    )


def tf_message(store: Any, transforms: list[Any]) -> Any:
    """tf2_msgs/TFMessage holding the given TransformStamped messages."""
    return store.types["tf2_msgs/msg/TFMessage"](transforms=list(transforms))


def pose_stamped(store: Any, pose: np.ndarray, stamp: float, frame_id: str) -> Any:
    """geometry_msgs/PoseStamped: the pose of some body in ``frame_id``."""
    return store.types["geometry_msgs/msg/PoseStamped"](
        header=header(store, stamp, frame_id), pose=_pose(store, pose)
    )


def odometry(
    store: Any,
    pose: np.ndarray,
    stamp: float,
    frame_id: str,
    child_frame_id: str,
    linear: Iterable[float] = (0.0, 0.0, 0.0),
    angular: Iterable[float] = (0.0, 0.0, 0.0),
) -> Any:
    """nav_msgs/Odometry: pose of ``child_frame_id`` in ``frame_id``, twist in the child frame."""
    types = store.types
    pose_cov = types["geometry_msgs/msg/PoseWithCovariance"](pose=_pose(store, pose), covariance=np.zeros(36))
    twist = types["geometry_msgs/msg/TwistWithCovariance"](
        twist=types["geometry_msgs/msg/Twist"](
            linear=_vector3(store, linear), angular=_vector3(store, angular)
        ),
        covariance=np.zeros(36),
    )
    return types["nav_msgs/msg/Odometry"](
        header=header(store, stamp, frame_id), child_frame_id=child_frame_id, pose=pose_cov, twist=twist
    )


def path_message(store: Any, stamps: Iterable[float], poses: Iterable[np.ndarray], frame_id: str) -> Any:
    """nav_msgs/Path of the given poses (stamped) in ``frame_id``; header stamp = last pose."""
    items = [pose_stamped(store, p, s, frame_id) for s, p in zip(stamps, poses)]
    last = stamp_of(items[-1]) if items else 0.0
    return store.types["nav_msgs/msg/Path"](header=header(store, last, frame_id), poses=items)


# ------------------------------------------------------------------------------------------------
# Images and camera info
# ------------------------------------------------------------------------------------------------
# The pixel codec is vggt_ros.engine.image_encodings (shared with the ROS node); these functions
# move message fields in and out and turn codec errors into BagError.
@contextmanager
def _codec_errors() -> Iterator[None]:
    try:
        yield
    except image_encodings.ImageEncodingError as exc:
        raise BagError(str(exc)) from exc


def image_message(
    store: Any, array: np.ndarray, stamp: float, frame_id: str, encoding: str | None = None
) -> Any:
    """sensor_msgs/Image from an array (rows packed, little-endian).

    Args:
        array: [H, W, 3] uint8 (default encoding rgb8), [H, W] uint8 (mono8), [H, W] uint16
            (16UC1, millimetres for depth), [H, W] float32 (32FC1, metres for depth).
        encoding: override, e.g. "bgr8" when the array already is BGR; it must match the
            array's dtype and channel count (ValueError otherwise).
    """
    encoding, step, data = image_encodings.encode_pixels(array, encoding)
    h, w = np.shape(array)[:2]
    return store.types["sensor_msgs/msg/Image"](
        header=header(store, stamp, frame_id),
        height=h,
        width=w,
        encoding=encoding,
        is_bigendian=0,
        step=step,
        data=np.frombuffer(data, np.uint8),
    )


def rgb_from_image(msg: Any) -> np.ndarray:
    """[H, W, 3] uint8 RGB from a sensor_msgs/Image of any supported colour or mono encoding
    (:data:`vggt_ros.engine.image_encodings.ENCODINGS`; 16-bit scaled to 8 bits over the full
    range, float images clipped from [0, 1])."""
    with _codec_errors():
        return image_encodings.decode_image(
            msg.encoding, msg.height, msg.width, msg.step, msg.data, bool(msg.is_bigendian)
        )


def depth_from_image(msg: Any, depth_scale: float | None = None) -> np.ndarray:
    """[H, W] float32 depth in metres from a depth image (16UC1, mono16, 32FC1, 64FC1); invalid
    pixels are NaN.

    Args:
        depth_scale: stored units per metre for integer images (default 1000: REP-118
            millimetres); float images are metres already.
    """
    with _codec_errors():
        return image_encodings.decode_depth(
            msg.encoding, msg.height, msg.width, msg.step, msg.data, bool(msg.is_bigendian), depth_scale
        )


def rgb_from_compressed(msg: Any) -> np.ndarray:
    """[H, W, 3] uint8 RGB from a sensor_msgs/CompressedImage (jpeg/png)."""
    with _codec_errors():
        return image_encodings.decode_compressed(msg.data, msg.format)


def compressed_message(store: Any, rgb: np.ndarray, stamp: float, frame_id: str, fmt: str = "jpeg") -> Any:
    """sensor_msgs/CompressedImage (jpeg or png) from [H, W, 3] uint8 RGB."""
    data = image_encodings.encode_compressed(rgb, fmt)
    return store.types["sensor_msgs/msg/CompressedImage"](
        header=header(store, stamp, frame_id), format=fmt, data=np.frombuffer(data, np.uint8)
    )


def camera_info_message(
    store: Any,
    intrinsics: np.ndarray,
    height: int,
    width: int,
    stamp: float,
    frame_id: str,
    distortion: Iterable[float] = (0.0, 0.0, 0.0, 0.0, 0.0),
    baseline_fx: float = 0.0,
) -> Any:
    """sensor_msgs/CameraInfo (plumb_bob, rectified: P = [K | (-fx b, 0, 0)], R = I).

    Args:
        intrinsics: [3, 3] pixel intrinsics (ROS pixels: the centre of the top-left pixel is (0, 0), as
            in this project).
        baseline_fx: for the right camera of a stereo pair, ``fx * baseline`` (so P[0, 3] =
            -fx * b), as REP-104 / camera_calibration store it.
    """
    K = np.asarray(intrinsics, np.float64)
    P = np.zeros((3, 4))
    P[:, :3] = K
    P[0, 3] = -float(baseline_fx)
    field = "d" if "d" in store.types["sensor_msgs/msg/CameraInfo"].__dataclass_fields__ else "D"
    lower = field == "d"
    kwargs = {
        "header": header(store, stamp, frame_id),
        "height": int(height),
        "width": int(width),
        "distortion_model": "plumb_bob",
        ("d" if lower else "D"): np.asarray(list(distortion), np.float64),
        ("k" if lower else "K"): K.ravel(),
        ("r" if lower else "R"): np.eye(3).ravel(),
        ("p" if lower else "P"): P.ravel(),
        "binning_x": 0,
        "binning_y": 0,
        "roi": store.types["sensor_msgs/msg/RegionOfInterest"](
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
        ),
    }
    return store.types["sensor_msgs/msg/CameraInfo"](**kwargs)


def intrinsics_from_camera_info(msg: Any) -> tuple[np.ndarray, tuple[int, int]]:
    """([3, 3] K, (H, W)) from a CameraInfo of ROS 2 (``k``) or ROS 1 (``K``)."""
    k = getattr(msg, "k", None)
    if k is None:
        k = msg.K
    K = np.asarray(k, np.float64).reshape(3, 3)
    if not (K[0, 0] > 0 and K[1, 1] > 0):
        raise BagError(f"camera_info of frame {msg.header.frame_id!r} has no focal length (K = {K.ravel()})")
    return K, (int(msg.height), int(msg.width))


# ------------------------------------------------------------------------------------------------
# Point clouds
# ------------------------------------------------------------------------------------------------
def pointcloud2_message(
    store: Any, xyz: np.ndarray, rgb: np.ndarray | None, conf: np.ndarray | None, stamp: float, frame_id: str
) -> Any:
    """sensor_msgs/PointCloud2 with fields x y z (float32), rgb (float32-packed 0x00RRGGBB, the
    PCL/RViz convention) and confidence (float32) when given; unorganized (height 1)."""
    xyz = np.asarray(xyz, np.float32).reshape(-1, 3)
    n = xyz.shape[0]
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if rgb is not None:
        fields.append(("rgb", "<u4"))
    if conf is not None:
        fields.append(("confidence", "<f4"))
    data = np.zeros(n, np.dtype(fields))
    for i, axis in enumerate("xyz"):
        data[axis] = xyz[:, i]
    if rgb is not None:
        c = np.asarray(rgb, np.uint32).reshape(-1, 3)
        data["rgb"] = (c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]
    if conf is not None:
        data["confidence"] = np.asarray(conf, np.float32).reshape(-1)
    Field = store.types["sensor_msgs/msg/PointField"]
    msg_fields = [
        Field(name=name, offset=data.dtype.fields[name][1], datatype=Field.FLOAT32, count=1)
        for name, _ in fields
    ]
    step = data.dtype.itemsize
    return store.types["sensor_msgs/msg/PointCloud2"](
        header=header(store, stamp, frame_id),
        height=1,
        width=n,
        fields=msg_fields,
        is_bigendian=False,
        point_step=step,
        row_step=step * n,
        data=np.frombuffer(data.tobytes(), np.uint8),
        is_dense=True,
    )


def arrays_from_pointcloud2(msg: Any) -> dict[str, np.ndarray]:
    """Decode a PointCloud2: {"xyz": [N, 3] float32, "rgb": [N, 3] uint8?, other fields [N]}."""
    kinds = {1: "i1", 2: "u1", 3: "<i2", 4: "<u2", 5: "<i4", 6: "<u4", 7: "<f4", 8: "<f8"}
    names, formats, offsets = [], [], []
    for f in msg.fields:
        names.append(f.name)
        fmt = kinds[f.datatype]
        formats.append(fmt.replace("<", ">") if msg.is_bigendian else fmt)
        offsets.append(f.offset)
    dtype = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": msg.point_step})
    n = int(msg.width) * int(msg.height)
    data = np.frombuffer(np.asarray(msg.data, np.uint8).tobytes(), dtype, count=n)
    out: dict[str, np.ndarray] = {"xyz": np.stack([data[a] for a in "xyz"], axis=-1).astype(np.float32)}
    for name in names:
        if name == "rgb":
            packed = (
                data["rgb"].view(np.uint32)
                if data["rgb"].dtype.kind == "f"
                else data["rgb"].astype(np.uint32)
            )
            out["rgb"] = np.stack([(packed >> s) & 0xFF for s in (16, 8, 0)], axis=-1).astype(np.uint8)
        elif name not in "xyz":
            out[name] = data[name].copy()
    return out


# ------------------------------------------------------------------------------------------------
# Writing and reading bags
# ------------------------------------------------------------------------------------------------
def _latched_qos() -> Any:
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    infinite = QosTime(2147483647, 4294967295)
    return Qos(
        QosHistory.KEEP_LAST,
        1,
        QosReliability.RELIABLE,
        QosDurability.TRANSIENT_LOCAL,
        infinite,
        infinite,
        QosLiveliness.AUTOMATIC,
        infinite,
        False,
    )


class BagWriter:
    """Write messages to a new bag; connections are created on first use of a topic.

    ``path`` ending in ``.bag`` writes ROS 1 (build messages with :attr:`store`, which is then
    the ROS 1 typestore); otherwise a rosbag2 directory with ``storage`` "sqlite3" or "mcap".

        with BagWriter("out_bag", storage="mcap") as bag:
            bag.write("/camera/image_raw", image_message(bag.store, rgb, t, "camera"), t)
    """

    def __init__(self, path: str | Path, storage: str = "sqlite3", compress: bool = False) -> None:
        """Args: ``compress`` zstd-compresses a rosbag2 file as a whole (readers unpack it)."""
        self.path = Path(path)
        if self.path.exists():
            raise BagError(f"{self.path} exists already; bags are never overwritten")
        self.ros1 = is_ros1(self.path)
        self.store = typestore(self.ros1)
        if self.ros1:
            from rosbags.rosbag1 import Writer as Writer1

            self._writer: Any = Writer1(self.path)
        else:
            from rosbags.rosbag2 import StoragePlugin, Writer

            if storage not in STORAGES:
                raise BagError(f"storage must be one of {STORAGES}, got {storage!r}")
            plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
            self._writer = Writer(self.path, version=9, storage_plugin=plugin)
            if compress:
                from rosbags.rosbag2 import CompressionFormat, CompressionMode

                self._writer.set_compression(CompressionMode.FILE, CompressionFormat.ZSTD)
        self._connections: dict[str, Any] = {}
        self.count = 0

    def __enter__(self) -> BagWriter:
        self._writer.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self._writer.close()

    def write(self, topic: str, msg: Any, stamp: float | None = None) -> None:
        """Write ``msg`` on ``topic`` with bag time ``stamp`` seconds (default: its header stamp)."""
        msgtype = msg.__msgtype__
        conn = self._connections.get(topic)
        if conn is None:
            if self.ros1:
                conn = self._writer.add_connection(
                    topic, msgtype, typestore=self.store, latching=int(topic in LATCHED_TOPICS)
                )
            else:
                qos = [_latched_qos()] if topic in LATCHED_TOPICS else []
                conn = self._writer.add_connection(
                    topic, msgtype, typestore=self.store, offered_qos_profiles=qos
                )
            self._connections[topic] = conn
        elif conn.msgtype != msgtype:
            raise BagError(f"topic {topic} already carries {conn.msgtype}, not {msgtype}")
        if self.ros1:
            data = self.store.serialize_ros1(msg, msgtype)
        else:
            data = self.store.serialize_cdr(msg, msgtype)
        self._writer.write(conn, to_ns(stamp_of(msg) if stamp is None else stamp), data)
        self.count += 1


@dataclass(frozen=True)
class TopicInfo:
    """One topic of a bag: its message type and number of messages."""

    msgtype: str
    count: int


def _open_reader(path: Path) -> Any:
    from rosbags.highlevel import AnyReader

    if not path.exists():
        raise BagError(f"bag not found: {path}")
    # A rosbag2 bag may be named by its directory or by its .db3/.mcap file.
    if path.is_file() and path.suffix in (".db3", ".mcap"):
        path = path.parent
    try:
        reader = AnyReader([path], default_typestore=typestore(is_ros1(path)))
        reader.open()
    except Exception as exc:  # rosbags raises several unrelated types for unreadable bags
        raise BagError(f"cannot read bag {path}: {' '.join(str(exc).split()) or type(exc).__name__}") from exc
    return reader


def bag_topics(path: str | Path) -> dict[str, TopicInfo]:
    """{topic: TopicInfo} of a bag (rosbag2 directory, its .db3/.mcap, or a ROS 1 .bag)."""
    reader = _open_reader(Path(path))
    try:
        return {t: TopicInfo(i.msgtype or "", int(i.msgcount)) for t, i in sorted(reader.topics.items())}
    finally:
        reader.close()


def read_messages(
    path: str | Path, topics: Iterable[str] | None = None
) -> Iterator[tuple[str, str, int, Any]]:
    """Yield (topic, msgtype, bag time ns, decoded message) in bag-time order.

    Raises:
        BagError: unreadable bag, or a requested topic that the bag lacks (the message lists
            the topics it has).
    """
    reader = _open_reader(Path(path))
    try:
        wanted = None if topics is None else set(topics)
        have = {c.topic for c in reader.connections}
        if wanted is not None and (missing := sorted(wanted - have)):
            raise BagError(
                f"topic(s) {', '.join(missing)} not in {path}; it has: {', '.join(sorted(have)) or 'nothing'}"
            )
        conns = [c for c in reader.connections if wanted is None or c.topic in wanted]
        if not conns:
            return
        for conn, t_ns, raw in reader.messages(connections=conns):
            try:
                msg = reader.deserialize(raw, conn.msgtype)
            except Exception as exc:
                raise BagError(f"cannot decode a {conn.msgtype} message on {conn.topic}: {exc}") from exc
            yield conn.topic, conn.msgtype, t_ns, msg
    finally:
        reader.close()
