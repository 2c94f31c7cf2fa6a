"""Reading frames from image folders and video files as RGB uint8 arrays."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".jp2")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")


class MediaError(ValueError):
    """An input that cannot be read (missing, unreadable, empty); the message says which."""


@dataclass(frozen=True)
class FrameSource:
    """What an input path is and how to read it.

    Attributes:
        kind: "images" (a folder or a single image) or "video".
        path: the input path.
        image_paths: the image files in reading order (empty for videos).
    """

    kind: str
    path: Path
    image_paths: tuple[Path, ...] = ()


def _natural_key(path: Path) -> list[object]:
    # frame2.png before frame10.png: numbered exports rarely zero-pad.
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside ``folder`` (by extension), in natural sort order."""
    folder = Path(folder)
    paths = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(paths, key=_natural_key)


def open_source(path: str | Path) -> FrameSource:
    """Classify an input path: a folder of images, a single image or a video file.

    Raises:
        MediaError: the path does not exist, or a folder holds no images.
    """
    path = Path(path)
    if not path.exists():
        raise MediaError(f"input not found: {path}")
    if path.is_dir():
        images = list_images(path)
        if not images:
            raise MediaError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in folder {path}")
        return FrameSource("images", path, tuple(images))
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return FrameSource("images", path, (path,))
    # Anything else is handed to the video decoder, which says whether it can read it.
    return FrameSource("video", path)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as [H, W, 3] uint8 RGB (grey is expanded, alpha dropped, 16-bit scaled).

    Raises:
        MediaError: the file is missing or cannot be decoded.
    """
    path = Path(path)
    # imdecode of the bytes instead of imread(path): works with non-ASCII paths on every OS.
    try:
        buffer = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise MediaError(f"cannot read image {path}: {exc.strerror or exc}") from None
    image = cv2.imdecode(buffer, cv2.IMREAD_COLOR) if buffer.size else None
    if image is None:
        raise MediaError(f"cannot decode image {path} (corrupt or unsupported format)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def iter_video(
    path: str | Path, every: int = 1, max_frames: int | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """Decode a video, yielding (frame index, [H, W, 3] uint8 RGB) for every ``every``-th frame.

    Raises:
        MediaError: the file cannot be opened as a video or holds no frames.
    """
    if every < 1:
        raise MediaError(f"frame stride must be >= 1, got {every}")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise MediaError(f"cannot open {path} as a video (unknown format or missing codec)")
    try:
        index = yielded = 0
        while max_frames is None or yielded < max_frames:
            ok, frame = capture.read()
            if not ok:
                break
            if index % every == 0:
                yield index, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                yielded += 1
            index += 1
        if index == 0:
            raise MediaError(f"video {path} has no decodable frames")
    finally:
        capture.release()


def video_frame_count(path: str | Path) -> int | None:
    """The container's frame count (may be approximate), or None when unknown."""
    capture = cv2.VideoCapture(str(path))
    try:
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
    finally:
        capture.release()
    return count if count > 0 else None


def _unique_names(stems: list[str]) -> list[str]:
    # a.jpg and a.png in one folder would otherwise overwrite each other's outputs.
    seen: dict[str, int] = {}
    names = []
    for stem in stems:
        count = seen.get(stem, 0)
        names.append(stem if count == 0 else f"{stem}_{count}")
        seen[stem] = count + 1
    return names


def load_frames(
    path: str | Path,
    every: int = 1,
    max_frames: int | None = None,
    progress: Callable[[int | None], Callable[[], None]] | None = None,
) -> tuple[list[str], list[np.ndarray]]:
    """Read all frames of an input (folder, image or video) into memory.

    Args:
        path: folder of images (natural sort order), a single image, or a video file.
        every: keep every N-th image or video frame.
        max_frames: stop after this many kept frames.
        progress: optional factory called with the expected count (or None), returning a
            callable invoked once per frame read (e.g. a tqdm bar's update).

    Returns:
        (names, frames): output names (image stems, or ``frame_000123`` for video frame 123) and
        [H, W, 3] uint8 RGB frames.

    Raises:
        MediaError: missing or unreadable input.
    """
    if every < 1:
        raise MediaError(f"frame stride must be >= 1, got {every}")
    if max_frames is not None and max_frames < 1:
        raise MediaError(f"max frames must be >= 1, got {max_frames}")
    source = open_source(path)
    names: list[str] = []
    frames: list[np.ndarray] = []
    if source.kind == "images":
        chosen = list(source.image_paths[::every])[:max_frames]
        tick = progress(len(chosen)) if progress else None
        for image_path in chosen:
            frames.append(read_image(image_path))
            names.append(image_path.stem)
            if tick:
                tick()
        return _unique_names(names), frames

    total = video_frame_count(source.path)
    expected = None if total is None else -(-total // every)
    if expected is not None and max_frames is not None:
        expected = min(expected, max_frames)
    tick = progress(expected) if progress else None
    for index, frame in iter_video(source.path, every, max_frames):
        names.append(f"frame_{index:06d}")
        frames.append(frame)
        if tick:
            tick()
    return names, frames
