"""Sliding window over keyframe times, and the query points tracked through each window."""

from __future__ import annotations

from collections import deque

import cv2
import numpy as np

from vggt_ros.mapping.config import WindowConfig
from vggt_ros.mapping.types import Keyframe, WindowJob


class WindowBuilder:
    """Emits a window of the newest ``size`` keyframe times every ``stride`` new times.

    The first window is due once ``size`` times exist; later windows share ``size - stride``
    times with their predecessor (the chaining anchors).
    """

    def __init__(self, config: WindowConfig) -> None:
        self.config = config
        self.reset()

    def reset(self) -> None:
        self._times: deque[list[Keyframe]] = deque(maxlen=self.config.size)
        self._new_since_window = 0
        self._previous_ids: set[int] = set()
        self._next_window_id = 0

    @property
    def times(self) -> list[list[Keyframe]]:
        """The newest keyframe times (at most ``size``), oldest first."""
        return list(self._times)

    def add_time(self, keyframes: list[Keyframe]) -> WindowJob | None:
        """Add one keyframe time (all cameras); return the window job when one is due."""
        if not keyframes:
            raise ValueError("a keyframe time needs at least one keyframe")
        self._times.append(keyframes)
        self._new_since_window += 1
        first = self._next_window_id == 0
        if len(self._times) < self.config.size:
            return None
        if not first and self._new_since_window < self.config.stride:
            return None
        window = [kf for time in self._times for kf in time]
        ids = [kf.id for kf in window]
        job = WindowJob(self._next_window_id, window, [i for i in ids if i in self._previous_ids])
        self._previous_ids = set(ids)
        self._new_since_window = 0
        self._next_window_id += 1
        return job


def select_query_points(image: np.ndarray, count: int) -> np.ndarray:
    """[count, 2] float64 (x, y) pixels to track: well spread corners, topped up by a grid.

    Args:
        image: [H, W, 3] uint8 RGB (original size).
        count: number of points wanted (> 0).
    """
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    h, w = gray.shape
    # Corners track best; the spacing keeps them from clustering on one textured patch.
    spacing = max(2.0, 0.5 * np.sqrt(h * w / count))
    corners = cv2.goodFeaturesToTrack(gray, maxCorners=count, qualityLevel=0.01, minDistance=spacing)
    points = np.zeros((0, 2)) if corners is None else corners[:, 0].astype(np.float64)
    if len(points) < count:
        # A textureless image still gets its tracks: a regular grid fills the rest.
        n = int(np.ceil(np.sqrt(count)))
        gx, gy = np.meshgrid(np.linspace(0.1, 0.9, n) * (w - 1), np.linspace(0.1, 0.9, n) * (h - 1))
        grid = np.stack((gx.ravel(), gy.ravel()), axis=1)
        points = np.concatenate((points, grid[: count - len(points)]))
    return points[:count]
