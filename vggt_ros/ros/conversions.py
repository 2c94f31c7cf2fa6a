"""Message conversions: images, PointCloud2, TF, odometry, stamps. The only codec module.

Everything is vectorised numpy or OpenCV (no per-pixel Python). Decoding never trusts a
message: wrong sizes, short buffers and unknown encodings raise :class:`DecodeError` with a
reason that the node logs and counts.

Conventions: images come out as HxWx3 uint8 RGB; 4x4 matrices are ``parent <- child``
(a point in the child frame maps into the parent frame); quaternions are (x, y, z, w).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Pose, PoseStamped, Transform, TransformStamped
from nav_msgs.msg import Odometry, Path
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField
from std_msgs.msg import Header

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

# encoding -> (channels, numpy dtype) of the raw buffer, for plain (non-packed) encodings.
_PLAIN: dict[str, tuple[int, np.dtype]] = {
    "rgb8": (3, np.dtype(np.uint8)),
    "bgr8": (3, np.dtype(np.uint8)),
    "rgba8": (4, np.dtype(np.uint8)),
    "bgra8": (4, np.dtype(np.uint8)),
    "rgb16": (3, np.dtype(np.uint16)),
    "bgr16": (3, np.dtype(np.uint16)),
    "rgba16": (4, np.dtype(np.uint16)),
    "bgra16": (4, np.dtype(np.uint16)),
    "mono8": (1, np.dtype(np.uint8)),
    "8UC1": (1, np.dtype(np.uint8)),
    "8UC3": (3, np.dtype(np.uint8)),  # OpenCV's default channel order: BGR
    "8UC4": (4, np.dtype(np.uint8)),
    "mono16": (1, np.dtype(np.uint16)),
    "16UC1": (1, np.dtype(np.uint16)),
}
# Bayer patterns, named by their top-left 2x2 block; OpenCV names them by the second row's
# first two pixels, hence the apparent mismatch (the mapping cv_bridge uses).
_BAYER = {
    "rggb": cv2.COLOR_BayerBG2RGB,
    "bggr": cv2.COLOR_BayerRG2RGB,
    "gbrg": cv2.COLOR_BayerGR2RGB,
    "grbg": cv2.COLOR_BayerGB2RGB,
}
# 4:2:2 packed YUV: ROS "yuv422" and "uyvy" are U Y0 V Y1; "yuv422_yuy2" and "yuyv" are Y0 U Y1 V.
_YUV422 = {
    "yuv422": cv2.COLOR_YUV2RGB_UYVY,
    "uyvy": cv2.COLOR_YUV2RGB_UYVY,
    "yuv422_yuy2": cv2.COLOR_YUV2RGB_YUY2,
    "yuyv": cv2.COLOR_YUV2RGB_YUY2,
}

SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(
    sorted(list(_PLAIN) + list(_YUV422) + [f"bayer_{p}{bits}" for p in _BAYER for bits in (8, 16)])
)


def _rows(msg: Image, bytes_per_pixel: int) -> np.ndarray:
    """The message's pixel bytes as [H, W * bytes_per_pixel] uint8 (row padding removed)."""
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise DecodeError(f"empty image ({w}x{h})")
    row = w * bytes_per_pixel
    if step < row:
        raise DecodeError(f"step {step} is smaller than width {w} x {bytes_per_pixel} bytes per pixel")
    buf = np.frombuffer(memoryview(msg.data), dtype=np.uint8)
    need = step * (h - 1) + row
    if buf.size < need:
        raise DecodeError(f"truncated data: {buf.size} bytes for {w}x{h} {msg.encoding} (need {need})")
    if step == row and buf.size >= h * row:
        return buf[: h * row].reshape(h, row)
    padded = np.zeros(h * step, np.uint8)
    padded[: min(buf.size, h * step)] = buf[: h * step]
    return padded.reshape(h, step)[:, :row]


def _to8(values: np.ndarray) -> np.ndarray:
    """uint16 -> uint8 over the full 16-bit range (65535 -> 255)."""
    return ((values.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def image_to_rgb(msg: Image) -> np.ndarray:
    """sensor_msgs/Image in any common encoding -> HxWx3 uint8 RGB (a new, contiguous array).

    Supported: rgb8, bgr8, rgba8, bgra8 (alpha dropped), rgb16/bgr16/rgba16/bgra16, mono8,
    mono16 (full 16-bit range scaled to 8 bits), 8UC1/8UC3 (BGR)/8UC4 (BGRA), 16UC1,
    yuv422/uyvy, yuv422_yuy2/yuyv, bayer_{rggb,bggr,gbrg,grbg}{8,16}.

    Raises:
        DecodeError: unknown encoding, odd width for 4:2:2, short buffer, bad step.
    """
    enc = str(msg.encoding)
    h, w = int(msg.height), int(msg.width)
    if enc in _PLAIN:
        ch, dtype = _PLAIN[enc]
        raw = _rows(msg, ch * dtype.itemsize)
        if dtype.itemsize == 2:
            order = ">" if msg.is_bigendian else "<"
            px = raw.view(np.dtype(f"{order}u2")).reshape(h, w, ch)
            px = _to8(px)
        else:
            px = raw.reshape(h, w, ch)
        if ch == 1:
            return np.repeat(px, 3, axis=2)
        if enc.startswith("bgr") or enc in ("8UC3", "8UC4"):
            px = px[..., 2::-1]
        return np.ascontiguousarray(px[..., :3])
    if enc in _YUV422:
        if w % 2:
            raise DecodeError(f"{enc} needs an even width, got {w}")
        raw = _rows(msg, 2).reshape(h, w, 2)
        return cv2.cvtColor(np.ascontiguousarray(raw), _YUV422[enc])
    if enc.startswith("bayer_") and enc[6:10] in _BAYER and enc[10:] in ("8", "16"):
        sixteen = enc.endswith("16")
        raw = _rows(msg, 2 if sixteen else 1)
        if sixteen:
            order = ">" if msg.is_bigendian else "<"
            mosaic = _to8(raw.view(np.dtype(f"{order}u2")).reshape(h, w))
        else:
            mosaic = raw.reshape(h, w)
        if h < 2 or w < 2:
            raise DecodeError(f"a bayer image needs at least 2x2 pixels, got {w}x{h}")
        return cv2.cvtColor(np.ascontiguousarray(mosaic), _BAYER[enc[6:10]])
    raise DecodeError(f"unsupported encoding {enc!r} (supported: {', '.join(SUPPORTED_ENCODINGS)})")


def compressed_to_rgb(msg: CompressedImage) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg or png, as image_transport's compressed plugin writes
    it, e.g. format "rgb8; jpeg compressed bgr8" or plain "jpeg") -> HxWx3 uint8 RGB.

    Raises:
        DecodeError: compressedDepth or another unsupported format, empty or corrupt data.
    """
    fmt = str(msg.format).lower()
    if "compresseddepth" in fmt:
        raise DecodeError(f"compressedDepth images are not camera images (format {msg.format!r})")
    if fmt and not any(k in fmt for k in ("jpeg", "jpg", "png")):
        raise DecodeError(f"unsupported compressed format {msg.format!r} (expected jpeg or png)")
    buf = np.frombuffer(memoryview(msg.data), dtype=np.uint8)
    if buf.size == 0:
        raise DecodeError("empty compressed image")
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise DecodeError(f"corrupt or undecodable {msg.format or 'compressed'} data ({buf.size} bytes)")
    if img.dtype == np.uint16:
        img = _to8(img)
    if img.ndim == 2:
        return np.repeat(img[..., None], 3, axis=2)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def rgb_to_image(rgb: np.ndarray, encoding: str, header: Header | None = None) -> Image:
    """HxWx3 uint8 RGB -> sensor_msgs/Image in ``encoding`` (the inverse of :func:`image_to_rgb`;
    used by the demo and tests to publish every encoding). Bayer encodings sample the pattern,
    4:2:2 encodings subsample chroma, so those round trips are lossy."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w = rgb.shape[:2]
    msg = Image(header=header or Header(), height=h, width=w, encoding=encoding, is_bigendian=0)
    if encoding in ("rgb8", "bgr8", "rgba8", "bgra8", "8UC3", "8UC4"):
        px = rgb[..., ::-1] if encoding in ("bgr8", "bgra8", "8UC3", "8UC4") else rgb
        if encoding.endswith("a8") or encoding == "8UC4":
            px = np.concatenate([px, np.full((h, w, 1), 255, np.uint8)], axis=2)
        data = np.ascontiguousarray(px)
    elif encoding in ("mono8", "8UC1"):
        data = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    elif encoding in ("mono16", "16UC1"):
        data = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257
    elif encoding in ("rgb16", "bgr16", "rgba16", "bgra16"):
        px = rgb[..., ::-1] if encoding.startswith("bgr") else rgb
        if encoding.endswith("a16"):
            px = np.concatenate([px, np.full((h, w, 1), 255, np.uint8)], axis=2)
        data = np.ascontiguousarray(px).astype(np.uint16) * 257
    elif encoding in _YUV422:
        if w % 2:
            raise ValueError(f"{encoding} needs an even width, got {w}")
        # BT.601 video range, the inverse of OpenCV's YUV2RGB_UYVY / _YUY2.
        f = rgb.astype(np.float32) / 255.0
        y = 16 + 65.481 * f[..., 0] + 128.553 * f[..., 1] + 24.966 * f[..., 2]
        cb = 128 - 37.797 * f[..., 0] - 74.203 * f[..., 1] + 112.0 * f[..., 2]
        cr = 128 + 112.0 * f[..., 0] - 93.786 * f[..., 1] - 18.214 * f[..., 2]
        u = 0.5 * (cb[:, 0::2] + cb[:, 1::2])
        v = 0.5 * (cr[:, 0::2] + cr[:, 1::2])
        packed = np.empty((h, w // 2, 4), np.float32)
        if encoding in ("yuv422", "uyvy"):
            packed[..., 0], packed[..., 1], packed[..., 2], packed[..., 3] = u, y[:, 0::2], v, y[:, 1::2]
        else:
            packed[..., 0], packed[..., 1], packed[..., 2], packed[..., 3] = y[:, 0::2], u, y[:, 1::2], v
        data = np.clip(np.round(packed), 0, 255).astype(np.uint8).reshape(h, w * 2)
    elif encoding.startswith("bayer_") and encoding[6:10] in _BAYER:
        pattern = encoding[6:10]
        chan = {"r": 0, "g": 1, "b": 2}
        mosaic = np.empty((h, w), np.uint8)
        for dy in (0, 1):
            for dx in (0, 1):
                mosaic[dy::2, dx::2] = rgb[dy::2, dx::2, chan[pattern[2 * dy + dx]]]
        data = mosaic.astype(np.uint16) * 257 if encoding.endswith("16") else mosaic
    else:
        raise ValueError(f"cannot encode {encoding!r}")
    data = np.ascontiguousarray(data)
    msg.step = int(data.nbytes // h)
    msg.data = data.tobytes()
    return msg


def rgb_to_compressed(rgb: np.ndarray, fmt: str = "jpeg", header: Header | None = None) -> CompressedImage:
    """HxWx3 uint8 RGB -> CompressedImage ("jpeg" or "png") as image_transport would publish it."""
    ext = {"jpeg": ".jpg", "jpg": ".jpg", "png": ".png"}[fmt]
    ok, buf = cv2.imencode(ext, cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"OpenCV could not encode {fmt}")
    return CompressedImage(
        header=header or Header(), format=f"rgb8; {fmt} compressed bgr8", data=buf.tobytes()
    )


def float_image(values: np.ndarray, header: Header) -> Image:
    """HxW float -> 32FC1 sensor_msgs/Image (depth in metres or normalized units, confidence)."""
    arr = np.ascontiguousarray(values, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"expected an HxW array, got shape {arr.shape}")
    h, w = arr.shape
    return Image(
        header=header, height=h, width=w, encoding="32FC1", is_bigendian=0, step=4 * w, data=arr.tobytes()
    )


def image_to_float(msg: Image) -> np.ndarray:
    """32FC1 / 16UC1 (millimetres, REP-118) / mono16 depth image -> HxW float32 (metres for 16UC1)."""
    h, w = int(msg.height), int(msg.width)
    if msg.encoding == "32FC1":
        order = ">" if msg.is_bigendian else "<"
        return _rows(msg, 4).view(np.dtype(f"{order}f4")).reshape(h, w).astype(np.float32)
    if msg.encoding in ("16UC1", "mono16"):
        order = ">" if msg.is_bigendian else "<"
        mm = _rows(msg, 2).view(np.dtype(f"{order}u2")).reshape(h, w).astype(np.float32)
        out = mm / 1000.0
        out[mm == 0] = np.nan
        return out
    raise DecodeError(f"unsupported depth encoding {msg.encoding!r} (expected 32FC1 or 16UC1)")


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
