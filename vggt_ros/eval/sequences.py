"""Read a bag into memory as a camera sequence with ground truth (for training and analysis).

:func:`read_bag_sequence` takes the same topic conventions and ground-truth sources as
``vggt-ros eval`` (bags from ``vggt-ros generate`` and ``vggt-ros convert-dataset`` work as they
are) and returns every frame of the reference camera that has a ground-truth pose, resized to a
fixed size (centre crop to the aspect ratio, then area resize), with the intrinsics mapped the
same way and, when the bag has one, the ground-truth depth resized with nearest neighbours.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from vggt_ros.eval import bags
from vggt_ros.eval.replay import (
    GroundTruthSpec,
    ReplayOptions,
    _decode_image,
    _read_context,
    resolve_options,
)
from vggt_ros.eval.tf import TfError
from vggt_ros.mapping.export.trajectory import Trajectory, associate, interpolate

logger = logging.getLogger(__name__)


class SequenceError(ValueError):
    """A bag that cannot serve as a ground-truth sequence (the message says what is missing)."""


@dataclass
class GroundTruthSequence:
    """One camera's frames with ground truth, all at one size.

    Attributes:
        images: [N, H, W, 3] uint8 RGB.
        cam_to_world: [N, 4, 4] float64 camera optical frame -> ground-truth world.
        intrinsics: [3, 3] float64 of the resized images (pixel centres at integers).
        depth: [N, H, W] float32 metres (NaN or 0 where unknown), or None.
        stamps: [N] float64 seconds.
        name: where it came from.
    """

    images: np.ndarray
    cam_to_world: np.ndarray
    intrinsics: np.ndarray
    depth: np.ndarray | None
    stamps: np.ndarray
    name: str

    def __len__(self) -> int:
        return int(self.images.shape[0])


def crop_resize_intrinsics(
    K: np.ndarray,  # noqa: N803 (the usual name of a camera matrix)
    src_hw: tuple[int, int],
    dst_hw: tuple[int, int],
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Intrinsics after a centre crop of ``src_hw`` to the aspect of ``dst_hw`` and a resize.

    Returns:
        the new [3, 3] intrinsics and the crop box (x0, y0, width, height) in source pixels.
    """
    (h, w), (th, tw) = src_hw, dst_hw
    scale = min(h / th, w / tw)
    ch, cw = round(th * scale), round(tw * scale)
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    sx, sy = tw / cw, th / ch
    K2 = np.array(K, np.float64).copy()
    # Pixel centres at integers: x' + 0.5 = (x - x0 + 0.5) * s.
    K2[0, 0] *= sx
    K2[0, 1] *= sx
    K2[0, 2] = (K[0, 2] - x0 + 0.5) * sx - 0.5
    K2[1, 1] *= sy
    K2[1, 2] = (K[1, 2] - y0 + 0.5) * sy - 0.5
    return K2, (x0, y0, cw, ch)


def _crop_resize(
    image: np.ndarray, box: tuple[int, int, int, int], dst_hw: tuple[int, int], nearest: bool
) -> np.ndarray:
    x0, y0, cw, ch = box
    crop = image[y0 : y0 + ch, x0 : x0 + cw]
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_AREA
    return cv2.resize(crop, (dst_hw[1], dst_hw[0]), interpolation=interp)


def read_bag_sequence(
    path: str | Path,
    size: tuple[int, int],
    image_topic: str | None = None,
    camera_info_topic: str | None = None,
    depth_topic: str | None = None,
    ground_truth: GroundTruthSpec | None = None,
    max_frames: int | None = None,
    every: int = 1,
    stamp_tolerance: float = 0.02,
    progress: Callable[[int], object] | None = None,
) -> GroundTruthSequence:
    """The reference camera of a bag with its ground truth (see the module docstring).

    Args:
        path: rosbag2 folder (sqlite3 or mcap) or ROS 1 bag.
        size: (H, W) of the returned images.
        image_topic, camera_info_topic, depth_topic, ground_truth: as ``vggt-ros eval``'s
            options (defaults follow ``vggt-ros generate`` bags); ``depth_topic=""`` skips depth.
        max_frames: keep at most this many frames (after ``every``).
        every: keep every N-th image.

    Raises:
        SequenceError: no ground-truth poses, no camera_info, or no frame with a pose.
        bags.BagError: unreadable bag or missing topics.
    """
    path = Path(path)
    if not path.exists():
        raise SequenceError(f"bag not found: {path}")
    topics = {t: i.msgtype for t, i in bags.bag_topics(path).items()}
    options = resolve_options(
        ReplayOptions(
            image_topics=[image_topic] if image_topic else None,
            camera_info_topics=[camera_info_topic] if camera_info_topic else None,
            depth_gt_topic=depth_topic,
            odom_topic="",
            ground_truth=ground_truth,
            stamp_tolerance=stamp_tolerance,
        ),
        topics,
    )
    ctx = _read_context(path, options, topics)
    if ctx.gt_raw is None or len(ctx.gt_raw) == 0:
        raise SequenceError(
            f"{path} has no ground-truth camera poses (no {options.ground_truth.describe()} data): "
            "training needs them; pass --gt tum:FILE, /pose_topic or tf:WORLD:BODY"
        )
    info_topic = options.camera_info_topics[0]
    if not info_topic or info_topic not in ctx.camera_info:
        raise SequenceError(
            f"{path} has no camera_info for {options.image_topics[0]}: training needs the intrinsics "
            "(give --camera-info-topic)"
        )
    K, src_hw, _ = ctx.camera_info[info_topic]
    K2, box = crop_resize_intrinsics(K, src_hw, size)

    images, stamps, frame_id = [], [], None
    index = 0
    for _, msgtype, _, msg in bags.read_messages(path, [options.image_topics[0]]):
        index += 1
        if (index - 1) % every:
            continue
        rgb = _decode_image(msgtype, msg)
        if rgb.shape[:2] != src_hw:
            raise SequenceError(
                f"image of {rgb.shape[1]}x{rgb.shape[0]} does not match camera_info {src_hw[1]}x{src_hw[0]}"
            )
        images.append(_crop_resize(rgb, box, size, nearest=False))
        stamps.append(bags.stamp_of(msg))
        frame_id = frame_id or msg.header.frame_id
        if progress:
            progress(1)
        if max_frames and len(images) >= max_frames:
            break
    if not images:
        raise SequenceError(f"{path}: no images on {options.image_topics[0]}")
    stamps_arr = np.asarray(stamps, np.float64)

    gt: Trajectory = ctx.gt_raw
    if ctx.gt_body and frame_id and ctx.gt_body.lstrip("/") != frame_id.lstrip("/"):
        try:
            gt = gt.transformed(right=ctx.tf.lookup(ctx.gt_body, frame_id, float(gt.stamps[0])))
        except TfError as exc:
            raise SequenceError(
                f"ground truth describes {ctx.gt_body!r} and no static TF links it to camera "
                f"{frame_id!r}: {exc}"
            ) from exc
    poses, ok = interpolate(gt, stamps_arr, max_gap=0.2)
    if not ok.any():
        i, j = associate(stamps_arr, gt.stamps, stamp_tolerance)
        ok = np.zeros(len(stamps_arr), bool)
        ok[i] = True
        pose_arr = np.repeat(np.eye(4)[None], len(stamps_arr), 0)
        pose_arr[i] = gt.poses[j]
    else:
        pose_arr = np.asarray(poses.poses)
        full = np.repeat(np.eye(4)[None], len(stamps_arr), 0)
        full[ok] = pose_arr
        pose_arr = full
    if not ok.any():
        raise SequenceError(f"{path}: no image stamp has a ground-truth pose within {stamp_tolerance} s")

    depth = None
    if options.depth_gt_topic:
        depth_stamps, depth_maps = [], []
        for _, _, _, msg in bags.read_messages(path, [options.depth_gt_topic]):
            depth_stamps.append(bags.stamp_of(msg))
            depth_maps.append(msg)
        i, j = associate(stamps_arr, np.asarray(depth_stamps), stamp_tolerance)
        depth = np.full((len(stamps_arr), *size), np.nan, np.float32)
        for a, b in zip(i, j):
            d = bags.depth_from_image(depth_maps[b]).astype(np.float32)
            if d.shape[:2] != src_hw:  # depth registered to the image at another resolution
                d = cv2.resize(d, (src_hw[1], src_hw[0]), interpolation=cv2.INTER_NEAREST)
            depth[a] = _crop_resize(d, box, size, nearest=True)
    keep = np.flatnonzero(ok)
    logger.info("%s: %d frames with ground truth of %d read", path, len(keep), len(images))
    return GroundTruthSequence(
        images=np.stack(images)[keep],
        cam_to_world=pose_arr[keep],
        intrinsics=K2,
        depth=None if depth is None else depth[keep],
        stamps=stamps_arr[keep],
        name=str(path),
    )
