"""The window pose refinement's image-only work, and the cache that does it while the network runs.

What the refinement (``pose_refine.py``) needs from the images alone: each frame's SIFT
keypoints, the ratio-tested matches between the frames of a pair, and Shi-Tomasi corners tracked
from one frame into the other by forward-backward Lucas-Kanade. None of these read the
network's depth or poses, so :class:`FeatureCache` computes them from the model input images as
soon as those exist (``Predictor.predict(on_model_inputs=...)``), in background threads while
the network runs, and keeps them for the next windows: at window 8 / stride 4 half the frames
and three of the seven pairs come back in the next window. What is left for after the network
is the perspective-n-point placement on the depth.

Every entry is keyed by a digest of the bytes it was computed from (image, mask, corner count),
never by a frame id: equal content gives equal results, nothing else is trusted, so a cached
refinement equals an uncached one bit for bit.

Images: the model-resolution frame (``Prediction.colors``) is converted to grey and downscaled by
an integer factor to at most ``MAX_WIDTH`` pixels ("small": corners are tracked there), and SIFT
sees that image whole when it was not downscaled, else a copy at most ``SIFT_MAX_WIDTH`` pixels
wide (it doubles its input internally).
Pixel centres sit at integers at every size.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

import cv2
import numpy as np

# Forward-backward Lucas-Kanade: a track is kept when tracking it back lands this close (px).
BACK_TRACK_PX = 0.5
# Shi-Tomasi corners: quality relative to the strongest corner, and spacing (px). The low
# quality keeps corners in dim, low-contrast images (the held-out procedural rooms).
CORNER_QUALITY = 0.005
CORNER_SPACING_PX = 4
LK_WINDOW = (15, 15)
LK_LEVELS = 3
# SIFT: keypoints per image, contrast threshold (low: the dim held-out rooms) and Lowe's ratio.
SIFT_FEATURES = 800
SIFT_CONTRAST = 0.004
SIFT_RATIO = 0.8
MAX_WIDTH = 320  # larger model images are downscaled by an integer factor first
# SIFT doubles its input internally. Model images of at most MAX_WIDTH pixels (the compact
# models' 182, 252 or 294) reach it as they are: halving the 252-pixel ones cost a model trained
# at 252 0.14 deg of rotation and 0.2 % APE on the model card. Larger images, already downscaled
# to ``small``, go at most this wide: 350x518 at a quarter (129 px) instead of the 259-pixel small
# image, which took a window's refinement 168 -> 76 ms on 2 CPU cores.
SIFT_MAX_WIDTH = 256

Pixels = tuple[np.ndarray, np.ndarray]  # corresponding pixels (x, y) of two images: ([M, 2], [M, 2])


@dataclass
class FrameFeatures:
    """SIFT keypoints of one (downscaled) image.

    Attributes:
        pixels: [N, 2] float64 keypoint positions (x, y).
        descriptors: [N, 128] float32, or None when the image has no keypoints.
    """

    pixels: np.ndarray
    descriptors: np.ndarray | None


def sift_features(gray: np.ndarray, usable: np.ndarray) -> FrameFeatures:
    """SIFT keypoints of ``gray`` ([H, W] uint8) on the ``usable`` ([H, W] bool) pixels."""
    detector = cv2.SIFT_create(nfeatures=SIFT_FEATURES, contrastThreshold=SIFT_CONTRAST)
    keypoints, descriptors = detector.detectAndCompute(gray, usable.astype(np.uint8) * 255)
    pixels = np.array([kp.pt for kp in keypoints], np.float64).reshape(-1, 2)
    return FrameFeatures(pixels, descriptors if len(keypoints) else None)


def match_features(a: FrameFeatures, b: FrameFeatures) -> Pixels:
    """Nearest-neighbour descriptor matches a -> b that pass Lowe's ratio test: ([M, 2], [M, 2])."""
    if a.descriptors is None or b.descriptors is None or len(b.pixels) < 2:
        return np.zeros((0, 2)), np.zeros((0, 2))
    pairs = cv2.BFMatcher(cv2.NORM_L2).knnMatch(a.descriptors, b.descriptors, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < SIFT_RATIO * p[1].distance]
    return (
        a.pixels[[m.queryIdx for m in good]].reshape(-1, 2),
        b.pixels[[m.trainIdx for m in good]].reshape(-1, 2),
    )


def track_corners(gray_a: np.ndarray, gray_b: np.ndarray, usable_a: np.ndarray, max_corners: int) -> Pixels:
    """Shi-Tomasi corners of a on ``usable_a`` tracked into b by forward-backward pyramidal
    Lucas-Kanade: (pixels in a [M, 2], pixels in b [M, 2]) of the tracks that come back."""
    corners = cv2.goodFeaturesToTrack(
        gray_a, max_corners, CORNER_QUALITY, CORNER_SPACING_PX, mask=usable_a.astype(np.uint8) * 255
    )
    if corners is None:
        return np.zeros((0, 2)), np.zeros((0, 2))
    tracked, status, _ = cv2.calcOpticalFlowPyrLK(
        gray_a, gray_b, corners, None, winSize=LK_WINDOW, maxLevel=LK_LEVELS
    )
    back, status_back, _ = cv2.calcOpticalFlowPyrLK(
        gray_b, gray_a, tracked, None, winSize=LK_WINDOW, maxLevel=LK_LEVELS
    )
    error = np.linalg.norm((back - corners).reshape(-1, 2), axis=1)
    good = (status.ravel() == 1) & (status_back.ravel() == 1) & (error < BACK_TRACK_PX)
    return corners.reshape(-1, 2)[good].astype(np.float64), tracked.reshape(-1, 2)[good].astype(np.float64)


def downscaled_gray(gray: np.ndarray, factor: int) -> np.ndarray:
    """The image ([H, W] uint8) at 1/``factor`` of its size (area average; a trailing partial
    block is dropped)."""
    if factor == 1:
        return gray
    h, w = gray.shape[0] // factor, gray.shape[1] // factor
    return cv2.resize(gray[: h * factor, : w * factor], (w, h), interpolation=cv2.INTER_AREA)


def downscaled_intrinsics(intrinsics: np.ndarray, factor: int) -> np.ndarray:
    """[3, 3] intrinsics of an image downscaled by ``factor`` (pixel centres at integers kept
    exact at both sizes)."""
    k = np.asarray(intrinsics, np.float64).copy()
    if factor == 1:
        return k
    k[:2, :2] /= factor
    k[:2, 2] = (k[:2, 2] + 0.5) / factor - 0.5
    return k


def block_centres(values: np.ndarray, factor: int) -> np.ndarray:
    """A map at 1/``factor`` of its size, each block's centre pixel (no mixing across edges)."""
    if factor == 1:
        return values
    h, w = values.shape[0] // factor, values.shape[1] // factor
    first = factor // 2
    return values[first : first + h * factor : factor, first : first + w * factor : factor]  # a view


def small_factor(width: int) -> int:
    """Integer downscale of a model image ``width`` pixels wide to at most ``MAX_WIDTH``."""
    return max(1, int(np.ceil(width / MAX_WIDTH)))


def _digest(*arrays: np.ndarray) -> bytes:
    """Digest of the arrays' shapes and bytes (booleans packed)."""
    digest = hashlib.blake2b(digest_size=16)
    for array in arrays:
        digest.update(np.asarray(array.shape, np.int64).tobytes())
        if array.dtype == bool:
            digest.update(np.packbits(array).tobytes())
        else:
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.digest()


@dataclass
class FrameImages:
    """One model image as the refinement sees it, with the digests that key its cached work.

    Attributes:
        small: [h, w] uint8 grey image at 1/``factor`` of the model image (corners tracked here).
        factor: integer downscale from the model image to ``small``.
        content: [h, w] bool, False on padding (block centres of the model image's mask).
        sift_image: [hs, ws] uint8, ``small`` at 1/``sift_factor``: what SIFT sees.
        sift_mask: [hs, ws] bool, where SIFT looks for keypoints.
        sift_factor: integer downscale from ``small`` to ``sift_image``.
        sift_key: digest of ``sift_image`` and ``sift_mask`` (keys keypoints and matches).
        small_key: digest of ``small`` (keys tracked corners, with the usable mask's digest).
    """

    small: np.ndarray
    factor: int
    content: np.ndarray
    sift_image: np.ndarray
    sift_mask: np.ndarray
    sift_factor: int
    sift_key: bytes
    small_key: bytes

    def to_small_pixels(self, sift_pixels: np.ndarray) -> np.ndarray:
        """[N, 2] SIFT-image pixels -> ``small`` pixels (pixel centres at integers at both sizes)."""
        return (sift_pixels + 0.5) * self.sift_factor - 0.5


def frame_images(color: np.ndarray, content: np.ndarray) -> FrameImages:
    """:class:`FrameImages` of a model image ``color`` ([H, W, 3] uint8 RGB) whose padding is
    False in ``content`` ([H, W] bool)."""
    gray = cv2.cvtColor(np.ascontiguousarray(color), cv2.COLOR_RGB2GRAY)
    factor = small_factor(gray.shape[1])
    small = downscaled_gray(gray, factor)
    content_small = block_centres(np.asarray(content, bool), factor)
    sift_factor = small_factor_for_sift(small.shape[1], factor)
    sift_image = downscaled_gray(small, sift_factor)
    sift_mask = block_centres(content_small, sift_factor)
    return FrameImages(
        small,
        factor,
        content_small,
        sift_image,
        sift_mask,
        sift_factor,
        _digest(sift_image, sift_mask),
        _digest(small),
    )


def small_factor_for_sift(width: int, factor: int) -> int:
    """Integer downscale of a ``small`` image ``width`` pixels wide, itself 1/``factor`` of the
    model image, for SIFT: none for a model image SIFT can take whole (``factor`` 1), else to at
    most ``SIFT_MAX_WIDTH``."""
    if factor == 1:
        return 1
    return max(1, int(np.ceil(width / SIFT_MAX_WIDTH)))


def window_pairs(count: int, camera_ids: list[str] | None) -> list[tuple[int, int]]:
    """The refinement's frame pairs (j, k) of a window of ``count`` frames: each frame k > 0
    with the previous frame j of its camera (of the window, when ``camera_ids`` is None)."""
    last_of_camera: dict[str, int] = {}
    pairs = []
    for k in range(count):
        camera = camera_ids[k] if camera_ids is not None else ""
        if camera in last_of_camera:
            pairs.append((last_of_camera[camera], k))
        last_of_camera[camera] = k
    return pairs


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _Memo(Generic[K, V]):
    """Bounded least-recently-used map computed on demand, safe from several threads: a key being
    computed by one thread is waited for, not computed again, by the others."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[K, V] = OrderedDict()
        self._in_flight: dict[K, threading.Event] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K, compute: Callable[[], V]) -> V:
        while True:
            with self._lock:
                if key in self._entries:
                    self._entries.move_to_end(key)
                    self.hits += 1
                    return self._entries[key]
                running = self._in_flight.get(key)
                if running is None:
                    done = self._in_flight[key] = threading.Event()
                    break
            running.wait()  # another thread computes it; then it is an entry (or it failed)
        try:
            value = compute()  # outside the lock: other keys go on meanwhile
            with self._lock:
                self.misses += 1
                self._entries[key] = value
                while len(self._entries) > self.capacity:
                    self._entries.popitem(last=False)
        finally:
            with self._lock:
                del self._in_flight[key]
            done.set()
        return value


class FeatureCache:
    """The refinement's image-only work (keypoints, matches, tracked corners), computed once per
    distinct content and kept for the next windows (module docstring).

    :meth:`prefetch_window` starts a window's keypoints and its pairs' matches in background
    threads as soon as the model's input images exist, so that they are found while the network
    runs (the mapping pipeline does this through the predictor's ``on_model_inputs``); the
    pairs' tracked corners too while half or more of the last refined window's pairs needed them
    (:attr:`prefetch_tracks`: the refinement falls back to them where SIFT's placement is not
    used, which is rare with a trained network and every pair with random weights).

    Args:
        capacity: frames whose keypoints are kept, and pairs whose matches and tracks are (the
            least recently used are evicted first).
        threads: background threads of :meth:`prefetch_window` (``refine.threads``).
        max_corners: corners :meth:`prefetch_window` tracks per pair (``refine.max_corners``).
        sift: whether :meth:`prefetch_window` finds keypoints and matches (``refine.sift``).

    Attributes:
        hits, misses: keypoint lookups answered from the cache / computed.
        prefetch_tracks: whether :meth:`prefetch_window` also tracks corners (set by
            ``refine_window_poses``: True when half or more of the last window's pairs used them).
    """

    def __init__(
        self, capacity: int = 64, threads: int = 4, max_corners: int = 400, sift: bool = True
    ) -> None:
        if capacity < 1:
            raise ValueError(f"feature cache capacity must be >= 1, got {capacity}")
        if threads < 1:
            raise ValueError(f"feature cache threads must be >= 1, got {threads}")
        self.capacity = int(capacity)
        self.threads = int(threads)
        self._keypoints: _Memo[bytes, FrameFeatures] = _Memo(self.capacity)
        self._matches: _Memo[tuple[bytes, bytes], Pixels] = _Memo(self.capacity)
        self._tracks: _Memo[tuple[bytes, bytes, bytes, int], Pixels] = _Memo(self.capacity)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self.prefetch_tracks = False
        self.max_corners = int(max_corners)
        self.sift = bool(sift)
        # The last prefetched window's frames: (colour, content mask, future FrameImages) each,
        # so the refinement takes the grey and downscaled images instead of making them again.
        self._window: list[tuple[np.ndarray, np.ndarray, Future]] = []
        # The last prefetched window's tasks, when each finished (perf_counter), and whether it
        # tracked corners: prefetch_status().
        self._window_tasks: list[Future] = []
        self._window_finished: list[float] = []
        self._window_tracks = False

    def __len__(self) -> int:
        return len(self._keypoints)

    @property
    def hits(self) -> int:
        return self._keypoints.hits

    @property
    def misses(self) -> int:
        return self._keypoints.misses

    def counts(self) -> dict[str, int]:
        """Lookups answered from the cache and computed, per kind of work."""
        memos = {"keypoints": self._keypoints, "matches": self._matches, "tracks": self._tracks}
        kinds = ("hits", "misses")
        return {f"{name}_{kind}": getattr(memo, kind) for name, memo in memos.items() for kind in kinds}

    def frame_images(self, index: int, color: np.ndarray, content: np.ndarray) -> FrameImages:
        """:func:`frame_images` of ``color`` ([H, W, 3] uint8) and ``content`` ([H, W] bool):
        the ones :meth:`prefetch_window` made for frame ``index`` of the last window where its
        inputs there are equal to these (compared, not trusted: about 0.03 ms a frame against
        the 0.2-0.4 ms of making them), else made now."""
        with self._pool_lock:
            entry = self._window[index] if 0 <= index < len(self._window) else None
        if entry is not None:
            prefetched_color, prefetched_content, future = entry
            if np.array_equal(prefetched_color, color) and np.array_equal(prefetched_content, content):
                try:
                    return future.result()
                except Exception:  # noqa: BLE001 - made again below, where the error shows
                    pass
        return frame_images(color, content)

    def features(self, frame: FrameImages) -> FrameFeatures:
        """SIFT keypoints of ``frame``'s SIFT image, in that image's pixels."""
        return self._keypoints.get(frame.sift_key, lambda: sift_features(frame.sift_image, frame.sift_mask))

    def matches(self, a: FrameImages, b: FrameImages) -> Pixels:
        """SIFT matches a -> b (:func:`match_features`), in the ``small`` images' pixels."""

        def compute() -> Pixels:
            pixels_a, pixels_b = match_features(self.features(a), self.features(b))
            return a.to_small_pixels(pixels_a), b.to_small_pixels(pixels_b)

        return self._matches.get((a.sift_key, b.sift_key), compute)

    def tracks(self, a: FrameImages, b: FrameImages, usable_a: np.ndarray, max_corners: int) -> Pixels:
        """Corners of ``a.small`` on ``usable_a`` ([h, w] bool) tracked into ``b.small``
        (:func:`track_corners`)."""
        key = (a.small_key, b.small_key, _digest(np.asarray(usable_a, bool)), int(max_corners))
        return self._tracks.get(key, lambda: track_corners(a.small, b.small, usable_a, max_corners))

    def prefetch_window(
        self, colors: np.ndarray, content: np.ndarray, camera_ids: list[str] | None = None
    ) -> list[Future]:
        """Start a window's image-only work in background threads; returns at once.

        Args:
            colors: [S, H, W, 3] uint8 RGB model inputs (``Prediction.colors``).
            content: [S, H, W] bool, False on padding (the transforms' content masks).
            camera_ids: per frame, its camera (pairs stay within one camera, as in the
                refinement); None: one camera.

        Returns:
            One future per frame, then one per pair (callers may ignore them: the refinement
            waits for work still in flight rather than doing it again). Tracked corners are
            prefetched on the frame's content; the refinement uses them where its usable mask
            (content with depth) is the same, which is everywhere a network's depth is finite.
        """
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="refine-prefetch")
        # Frames first: the pool runs tasks in order, so a pair's task starts only after its
        # frames' tasks have (and then waits for them, never for a queued task).
        sift, tracks, max_corners = self.sift, self.prefetch_tracks, self.max_corners
        finished: list[float] = []  # perf_counter as each task ends (before its future is done)

        def submit(task: Callable[..., V], *args: object) -> Future:
            def timed() -> V:
                try:
                    return task(*args)
                finally:
                    finished.append(time.perf_counter())

            return self._pool.submit(timed)

        frames = [submit(self._prefetch_frame, color, mask, sift) for color, mask in zip(colors, content)]
        pairs = [
            submit(self._prefetch_pair, frames[j], frames[k], sift, tracks, max_corners)
            for j, k in window_pairs(len(colors), camera_ids)
        ]
        with self._pool_lock:
            self._window = list(zip(colors, content, frames))
            self._window_tasks, self._window_finished, self._window_tracks = frames + pairs, finished, tracks
        return frames + pairs

    def prefetch_status(self) -> dict[str, float]:
        """The last prefetched window's background work, for the latency report: "left" (tasks
        not finished yet), "finished_at" (``time.perf_counter()`` when its last task finished;
        only once all have) and "tracks" (1.0 when it tracked corners too, else 0.0). Empty
        when nothing was prefetched."""
        with self._pool_lock:
            tasks, finished, tracks = self._window_tasks, list(self._window_finished), self._window_tracks
        if not tasks:
            return {}
        status = {"left": float(sum(not task.done() for task in tasks)), "tracks": float(tracks)}
        if status["left"] == 0 and len(finished) == len(tasks):
            status["finished_at"] = max(finished)
        return status

    def _prefetch_frame(self, color: np.ndarray, content: np.ndarray, sift: bool) -> FrameImages:
        frame = frame_images(color, content)
        if sift:
            self.features(frame)
        return frame

    def _prefetch_pair(self, a: Future, b: Future, sift: bool, tracks: bool, max_corners: int) -> None:
        frame_a, frame_b = a.result(), b.result()
        if sift:
            self.matches(frame_a, frame_b)
        if tracks:
            self.tracks(frame_a, frame_b, frame_a.content, max_corners)
