"""Keyframe selection for one camera: parallax, odometry motion, elapsed time, blur.

Each frame is reduced to a small gray image (``flow_image_width`` wide, INTER_AREA). At every
keyframe Shi-Tomasi corners are detected on it; later frames track those corners with pyramidal
Lucas-Kanade flow, and the median displacement (scaled back to original pixels) is the
parallax. Tracking against the keyframe (not frame to frame) means slow drift still adds up,
and no corners are detected on ordinary frames, which keeps the per-frame cost to one resize,
one LK call and, with blur rejection, one Laplacian (measured in docs/mapping.md).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np

from vggt_ros.mapping.config import KeyframeConfig
from vggt_ros.mapping.types import Frame

_LK_PARAMS = {
    "winSize": (15, 15),
    "maxLevel": 3,
    "criteria": (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03),
}
# LK tracks whose forward error is large are unreliable; in small-image pixels.
_MAX_LK_ERROR = 12.0


@dataclass(frozen=True)
class KeyframeDecision:
    """Why a frame is or is not a keyframe.

    Attributes:
        is_keyframe: the verdict.
        reason: "first", "parallax", "tracking_lost", "translation", "rotation", "elapsed", or for
            refusals "min_interval", "no_motion", "blurred".
        parallax_px: median flow since the last keyframe (original pixels; NaN if not measured).
        tracked_ratio: share of the keyframe's corners still tracked (NaN if not measured).
        translation_m, rotation_deg: odometry motion since the last keyframe (NaN without odom).
        sharpness: variance of the Laplacian of the small gray image (NaN unless blur rejection).
    """

    is_keyframe: bool
    reason: str
    parallax_px: float = float("nan")
    tracked_ratio: float = float("nan")
    translation_m: float = float("nan")
    rotation_deg: float = float("nan")
    sharpness: float = float("nan")


def small_gray(image: np.ndarray, width: int) -> np.ndarray:
    """[H, W, 3] uint8 RGB -> [h, width] uint8 gray with the same aspect (area-averaged)."""
    h, w = image.shape[:2]
    height = max(1, int(round(h * width / w)))
    # Resize the colour image first: INTER_AREA on the full image is the expensive step, and
    # converting fewer pixels to gray afterwards is cheaper than the other way round.
    small = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)


def _rotation_angle_deg(rotation: np.ndarray) -> float:
    cos = np.clip((np.trace(rotation) - 1.0) / 2.0, -1.0, 1.0)
    return float(np.degrees(np.arccos(cos)))


class KeyframeSelector:
    """Decides, frame by frame, whether one camera's frame is a keyframe.

    ``evaluate`` only measures and decides; ``accept`` makes a frame the new reference (the
    pipeline calls it for every frame that ends up in a keyframe time, including frames that
    joined a rig time triggered by another camera).
    """

    def __init__(self, config: KeyframeConfig) -> None:
        self.config = config
        self._sharpness: deque[float] = deque(maxlen=config.blur_history)
        self.reset()

    def reset(self) -> None:
        self._kf_stamp: float | None = None
        self._kf_odom: np.ndarray | None = None
        self._kf_corners: np.ndarray | None = None  # [N, 1, 2] float32, small-image pixels
        self._kf_gray: np.ndarray | None = None
        self._last: tuple[float, np.ndarray] | None = None  # (stamp, gray) of the last evaluated frame
        self._sharpness.clear()

    @property
    def last_keyframe_stamp(self) -> float | None:
        return self._kf_stamp

    def _gray(self, frame: Frame) -> np.ndarray:
        if self._last is not None and self._last[0] == frame.stamp:
            return self._last[1]
        gray = small_gray(frame.image, self.config.flow_image_width)
        self._last = (frame.stamp, gray)
        return gray

    def evaluate(self, frame: Frame, last_keyframe_stamp: float | None = None) -> KeyframeDecision:
        """Measure ``frame`` against this camera's last keyframe and decide.

        Args:
            frame: the new frame of this camera.
            last_keyframe_stamp: stamp of the newest keyframe time of the whole rig (the minimum
                interval applies to it); defaults to this camera's last keyframe.
        """
        cfg = self.config
        gray = self._gray(frame)
        sharpness = float("nan")
        blurred = False
        if cfg.reject_blur:
            sharpness = float(cv2.Laplacian(gray, cv2.CV_32F).var())
            if len(self._sharpness) >= 3:
                blurred = sharpness < cfg.blur_ratio * float(np.median(self._sharpness))
            self._sharpness.append(sharpness)
        if self._kf_stamp is None:
            if blurred:
                return KeyframeDecision(False, "blurred", sharpness=sharpness)
            return KeyframeDecision(True, "first", sharpness=sharpness)

        ref_stamp = (
            self._kf_stamp if last_keyframe_stamp is None else max(last_keyframe_stamp, self._kf_stamp)
        )
        elapsed = frame.stamp - ref_stamp
        if elapsed < cfg.min_interval_s:
            return KeyframeDecision(False, "min_interval", sharpness=sharpness)

        translation = rotation = float("nan")
        reason = ""
        if frame.odom_pose is not None and self._kf_odom is not None:
            delta = np.linalg.inv(self._kf_odom) @ frame.odom_pose
            translation = float(np.linalg.norm(delta[:3, 3]))
            rotation = _rotation_angle_deg(delta[:3, :3])
            if cfg.min_translation_m > 0 and translation >= cfg.min_translation_m:
                reason = "translation"
            elif cfg.min_rotation_deg > 0 and rotation >= cfg.min_rotation_deg:
                reason = "rotation"

        parallax = tracked = float("nan")
        if not reason:
            parallax, tracked = self._parallax(gray, frame.width)
            if tracked < cfg.min_tracked_ratio:
                reason = "tracking_lost"
            elif cfg.min_parallax_px > 0 and parallax >= cfg.min_parallax_px:
                reason = "parallax"
        if not reason and cfg.max_interval_s > 0 and elapsed >= cfg.max_interval_s:
            reason = "elapsed"
        if reason and blurred:
            reason, keyframe = "blurred", False
        else:
            keyframe = bool(reason)
        return KeyframeDecision(
            keyframe, reason or "no_motion", parallax, tracked, translation, rotation, sharpness
        )

    def _parallax(self, gray: np.ndarray, original_width: int) -> tuple[float, float]:
        """(median flow in original pixels, tracked share) from the keyframe's corners to ``gray``."""
        corners = self._kf_corners
        if corners is None or len(corners) == 0 or self._kf_gray is None:
            # A textureless keyframe gives no flow evidence either way; odometry and elapsed time
            # still apply. (Calling it "lost" would emit a keyframe at every minimum interval.)
            return 0.0, 1.0
        if gray.shape != self._kf_gray.shape:  # image size changed: treat as a new view
            return float("inf"), 0.0
        moved, status, err = cv2.calcOpticalFlowPyrLK(self._kf_gray, gray, corners, None, **_LK_PARAMS)
        ok = (status[:, 0] == 1) & (err[:, 0] < _MAX_LK_ERROR)
        h, w = gray.shape
        inside = (moved[:, 0, 0] >= 0) & (moved[:, 0, 0] < w) & (moved[:, 0, 1] >= 0) & (moved[:, 0, 1] < h)
        ok &= inside
        tracked = float(ok.mean())
        if not ok.any():
            return float("inf"), 0.0
        flow = np.linalg.norm(moved[ok, 0] - corners[ok, 0], axis=1)
        return float(np.median(flow)) * original_width / w, tracked

    def accept(self, frame: Frame) -> None:
        """Make ``frame`` this camera's reference keyframe (corners detected on it now)."""
        gray = self._gray(frame)
        self._kf_stamp = frame.stamp
        self._kf_odom = frame.odom_pose
        self._kf_gray = gray
        # Corners spread over the image (minDistance ~ 1/20 of the width) so one textured
        # object does not dominate the median flow.
        corners = cv2.goodFeaturesToTrack(
            gray,
            maxCorners=self.config.max_flow_features,
            qualityLevel=0.01,
            minDistance=max(3, gray.shape[1] // 20),
            blockSize=5,
        )
        self._kf_corners = None if corners is None else corners.astype(np.float32)
