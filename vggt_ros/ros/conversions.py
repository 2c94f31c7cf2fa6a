"""Message conversions: images, PointCloud2, TF, odometry, stamps. The only codec module.

Everything is vectorised numpy or OpenCV (no per-pixel Python); image pixels go through
:mod:`vggt_ros.engine.image_encodings`, the codec shared with the bag tools. Decoding never trusts a
message: wrong sizes, short buffers and unknown encodings raise :class:`DecodeError` with a
reason that the node logs and counts.

Conventions: images come out as HxWx3 uint8 RGB; 4x4 matrices are ``parent <- child``
(a point in the child frame maps into the parent frame); quaternions are (x, y, z, w).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Pose, PoseStamped, Transform, TransformStamped
from nav_msgs.msg import Odometry, Path
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField
from std_msgs.msg import Header

from vggt_ros.engine import image_encodings as encodings
from vggt_ros.geometry import quaternion_to_rotation_matrix, rotation_matrix_to_quaternion


class DecodeError(ValueError):
    """A message that cannot be turned into an image (the message says why)."""


# --------------------------------------------------------------------------------------- stamps


def stamp_to_sec(stamp: Time) -> float:
    """builtin_interfaces/Time -> float seconds."""
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


def sec_to_stamp(t: float) -> Time:
    """Float seconds (>= 0) -> builtin_interfaces/Time, rounded to the nanosecond."""
    ns = int(round(float(t) * 1e9))
    ns = max(ns, 0)
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def make_header(stamp: Time | float, frame_id: str) -> Header:
    """Header from a Time or float seconds."""
    return Header(stamp=stamp if isinstance(stamp, Time) else sec_to_stamp(stamp), frame_id=frame_id)


# --------------------------------------------------------------------------------------- images

# The codec itself is vggt_ros.engine.image_encodings (ROS-free, shared with the bag tools);
# these functions only move message fields in and out.
SUPPORTED_ENCODINGS: tuple[str, ...] = encodings.CAMERA_ENCODINGS


@contextmanager
def _decode_errors() -> Iterator[None]:
    try:
        yield
    except encodings.ImageEncodingError as exc:
        raise DecodeError(str(exc)) from exc


def image_to_rgb(msg: Image) -> np.ndarray:
    """sensor_msgs/Image in any common encoding -> HxWx3 uint8 RGB.

    Supported: rgb8, bgr8, rgba8, bgra8 (alpha dropped), rgb16/bgr16/rgba16/bgra16, mono8,
    mono16 (full 16-bit range scaled to 8 bits), 8UC1/8UC3 (BGR)/8UC4 (BGRA), 16UC1,
    yuv422/uyvy, yuv422_yuy2/yuyv, bayer_{rggb,bggr,gbrg,grbg}{8,16} (and 32FC1/64FC1 as
    [0, 1] gray); see :mod:`vggt_ros.engine.image_encodings`.

    Raises:
        DecodeError: unknown encoding, odd width for 4:2:2, short buffer, bad step.
    """
    with _decode_errors():
        return encodings.decode_image(
            str(msg.encoding), msg.height, msg.width, msg.step, msg.data, bool(msg.is_bigendian)
        )


def compressed_to_rgb(msg: CompressedImage) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg or png, as image_transport's compressed plugin writes
    it, e.g. format "rgb8; jpeg compressed bgr8" or plain "jpeg") -> HxWx3 uint8 RGB.

    Raises:
        DecodeError: compressedDepth or another unsupported format, empty or corrupt data.
    """
    with _decode_errors():
        return encodings.decode_compressed(msg.data, str(msg.format))


def rgb_to_image(rgb: np.ndarray, encoding: str, header: Header | None = None) -> Image:
    """HxWx3 uint8 RGB -> sensor_msgs/Image in ``encoding`` (the inverse of :func:`image_to_rgb`;
    used by the demo and tests to publish every encoding). Bayer encodings sample the pattern,
    4:2:2 encodings subsample chroma, so those round trips are lossy."""
    step, data = encodings.encode_image(rgb, encoding)
    h, w = np.shape(rgb)[:2]
    return Image(
        header=header or Header(), height=h, width=w, encoding=encoding, is_bigendian=0, step=step, data=data
    )


def rgb_to_compressed(rgb: np.ndarray, fmt: str = "jpeg", header: Header | None = None) -> CompressedImage:
    """HxWx3 uint8 RGB -> CompressedImage ("jpeg" or "png") as image_transport would publish it."""
    data = encodings.encode_compressed(rgb, fmt)
    return CompressedImage(header=header or Header(), format=f"rgb8; {fmt} compressed bgr8", data=data)


def float_image(values: np.ndarray, header: Header) -> Image:
    """HxW float -> 32FC1 sensor_msgs/Image (depth in metres or normalized units, confidence)."""
    arr = np.asarray(values, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"expected an HxW array, got shape {arr.shape}")
    encoding, step, data = encodings.encode_pixels(arr, "32FC1")
    h, w = arr.shape
    return Image(header=header, height=h, width=w, encoding=encoding, is_bigendian=0, step=step, data=data)


def image_to_float(msg: Image) -> np.ndarray:
    """Depth image -> HxW float32 metres, NaN where there is no depth: 32FC1/64FC1 (metres),
    16UC1/mono16 (millimetres, REP-118).

    Raises:
        DecodeError: another encoding, short buffer, bad step.
    """
    with _decode_errors():
        return encodings.decode_depth(
            str(msg.encoding), msg.height, msg.width, msg.step, msg.data, bool(msg.is_bigendian)
        )


def camera_info_intrinsics(msg: CameraInfo) -> np.ndarray:
    """3x3 K of a CameraInfo (float64). Raises DecodeError when K is all zero (uncalibrated)."""
    K = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
    if not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise DecodeError("camera_info has no valid K (uncalibrated camera)")
    return K


def camera_info(intrinsics: np.ndarray, height: int, width: int, header: Header) -> CameraInfo:
    """CameraInfo for a pinhole image of the given size (no distortion, P = [K | 0])."""
    K = np.asarray(intrinsics, dtype=np.float64).reshape(3, 3)
    P = np.zeros((3, 4))
    P[:, :3] = K
    return CameraInfo(
        header=header,
        height=int(height),
        width=int(width),
        distortion_model="plumb_bob",
        d=[0.0] * 5,
        k=K.reshape(-1).tolist(),
        r=np.eye(3).reshape(-1).tolist(),
        p=P.reshape(-1).tolist(),
    )


# ---------------------------------------------------------------------------------- PointCloud2

POINT_FIELDS: tuple[PointField, ...] = (
    PointField(name="x", offset=0, datatype=PointField.FLOAT32, count=1),
    PointField(name="y", offset=4, datatype=PointField.FLOAT32, count=1),
    PointField(name="z", offset=8, datatype=PointField.FLOAT32, count=1),
    PointField(name="rgb", offset=12, datatype=PointField.FLOAT32, count=1),
    PointField(name="confidence", offset=16, datatype=PointField.FLOAT32, count=1),
)
POINT_DTYPE = np.dtype(
    {
        "names": ["x", "y", "z", "rgb", "confidence"],
        "formats": ["<f4"] * 5,
        "offsets": [0, 4, 8, 12, 16],
        "itemsize": 20,
    }
)


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """[N, 3] uint8 -> [N] float32 holding 0x00RRGGBB (the PCL / RViz "rgb" convention)."""
    rgb = np.asarray(rgb, dtype=np.uint32).reshape(-1, 3)
    return ((rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]).astype(np.uint32).view(np.float32)


def unpack_rgb(packed: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pack_rgb`: [N] float32 -> [N, 3] uint8."""
    v = np.ascontiguousarray(packed, dtype=np.float32).view(np.uint32)
    return np.stack([(v >> 16) & 255, (v >> 8) & 255, v & 255], axis=1).astype(np.uint8)


def pointcloud2(
    xyz: np.ndarray, rgb: np.ndarray | None, confidence: np.ndarray | None, header: Header
) -> PointCloud2:
    """Unordered PointCloud2 with fields x y z rgb confidence (float32, 20-byte points).

    Points with a non-finite coordinate are dropped (``is_dense`` is then true).
    """
    xyz = np.asarray(xyz, dtype=np.float32).reshape(-1, 3)
    n = xyz.shape[0]
    rgb = np.full((n, 3), 255, np.uint8) if rgb is None else np.asarray(rgb).reshape(-1, 3)
    conf = np.ones(n, np.float32) if confidence is None else np.asarray(confidence, np.float32).reshape(-1)
    if rgb.shape[0] != n or conf.shape[0] != n:
        raise ValueError(f"xyz ({n}), rgb ({rgb.shape[0]}) and confidence ({conf.shape[0]}) sizes differ")
    keep = np.all(np.isfinite(xyz), axis=1)
    if not np.all(keep):
        xyz, rgb, conf = xyz[keep], rgb[keep], conf[keep]
        n = xyz.shape[0]
    cloud = np.empty(n, POINT_DTYPE)
    cloud["x"], cloud["y"], cloud["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    cloud["rgb"] = pack_rgb(rgb)
    cloud["confidence"] = conf
    return PointCloud2(
        header=header,
        height=1,
        width=n,
        fields=list(POINT_FIELDS),
        is_bigendian=False,
        point_step=POINT_DTYPE.itemsize,
        row_step=POINT_DTYPE.itemsize * n,
        data=cloud.tobytes(),
        is_dense=True,
    )


_PF_DTYPES = {
    PointField.INT8: "i1",
    PointField.UINT8: "u1",
    PointField.INT16: "i2",
    PointField.UINT16: "u2",
    PointField.INT32: "i4",
    PointField.UINT32: "u4",
    PointField.FLOAT32: "f4",
    PointField.FLOAT64: "f8",
}


def read_pointcloud2(msg: PointCloud2) -> np.ndarray:
    """PointCloud2 -> structured numpy array with one field per PointField (count 1 fields)."""
    order = ">" if msg.is_bigendian else "<"
    dtype = np.dtype(
        {
            "names": [f.name for f in msg.fields],
            "formats": [order + _PF_DTYPES[f.datatype] for f in msg.fields],
            "offsets": [f.offset for f in msg.fields],
            "itemsize": msg.point_step,
        }
    )
    n = int(msg.width) * int(msg.height)
    return np.frombuffer(memoryview(msg.data), dtype=dtype, count=n)


# ------------------------------------------------------------------------------- TF and poses


def matrix_to_transform(matrix: np.ndarray) -> Transform:
    """4x4 rigid matrix -> geometry_msgs/Transform."""
    T = np.asarray(matrix, dtype=np.float64)
    q = np.asarray(rotation_matrix_to_quaternion(T[:3, :3]), dtype=np.float64)
    out = Transform()
    out.translation.x, out.translation.y, out.translation.z = (float(v) for v in T[:3, 3])
    out.rotation.x, out.rotation.y, out.rotation.z, out.rotation.w = (float(v) for v in q)
    return out


def matrix_to_pose(matrix: np.ndarray) -> Pose:
    """4x4 rigid matrix -> geometry_msgs/Pose."""
    tf = matrix_to_transform(matrix)
    pose = Pose()
    pose.position.x, pose.position.y, pose.position.z = tf.translation.x, tf.translation.y, tf.translation.z
    pose.orientation = tf.rotation
    return pose


def _quat_matrix(x: float, y: float, z: float, w: float) -> np.ndarray:
    q = np.array([x, y, z, w], dtype=np.float64)
    norm = float(np.linalg.norm(q))
    if not math.isfinite(norm) or norm < 1e-9:
        raise ValueError("quaternion of zero length")
    return np.asarray(quaternion_to_rotation_matrix(q / norm), dtype=np.float64)


def transform_to_matrix(tf: Transform) -> np.ndarray:
    """geometry_msgs/Transform -> 4x4 (parent <- child)."""
    T = np.eye(4)
    T[:3, :3] = _quat_matrix(tf.rotation.x, tf.rotation.y, tf.rotation.z, tf.rotation.w)
    T[:3, 3] = (tf.translation.x, tf.translation.y, tf.translation.z)
    return T


def pose_to_matrix(pose: Pose) -> np.ndarray:
    """geometry_msgs/Pose -> 4x4."""
    T = np.eye(4)
    o = pose.orientation
    T[:3, :3] = _quat_matrix(o.x, o.y, o.z, o.w)
    T[:3, 3] = (pose.position.x, pose.position.y, pose.position.z)
    return T


def transform_stamped(matrix: np.ndarray, parent: str, child: str, stamp: Time | float) -> TransformStamped:
    """TransformStamped ``parent <- child`` from a 4x4 matrix."""
    return TransformStamped(
        header=make_header(stamp, parent), child_frame_id=child, transform=matrix_to_transform(matrix)
    )


def odometry(matrix: np.ndarray, frame_id: str, child_frame_id: str, stamp: Time | float) -> Odometry:
    """nav_msgs/Odometry with the pose ``frame_id <- child_frame_id`` (twist and covariances unknown:
    the pose covariance diagonal is left zero, twist covariance -1 marks "not estimated")."""
    msg = Odometry(header=make_header(stamp, frame_id), child_frame_id=child_frame_id)
    msg.pose.pose = matrix_to_pose(matrix)
    msg.twist.covariance = [-1.0] + [0.0] * 35
    return msg


def path_msg(poses: Sequence[tuple[float, np.ndarray]], frame_id: str, stamp: Time | float) -> Path:
    """nav_msgs/Path from [(stamp seconds, 4x4)]."""
    msg = Path(header=make_header(stamp, frame_id))
    msg.poses = [PoseStamped(header=make_header(t, frame_id), pose=matrix_to_pose(T)) for t, T in poses]
    return msg
