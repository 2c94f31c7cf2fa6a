"""Per-frame encoder tokens reused across overlapping windows.

A robot runs window ``W`` with stride ``s``: each window shares ``W - s`` frames with the one
before. Everything VGGT computes from one frame alone, up to the first operation that mixes
frames, is the DINOv2 patch encoder (the aggregator's first frame-attention block already sees
the first-frame camera token, so it depends on the frame's place in the window). This cache
keeps the encoder's tokens of recent frames, keyed by the caller's frame identity (the node's
keyframe ids), so a window encodes only its new frames.

Exactness: a frame's tokens do not depend on the other frames nor on how many are encoded
together, so a window from cached tokens equals the uncached window bit for bit (float32 on the
CPU; the tests check it). On a GPU a library may pick another kernel for another batch size, so
there the two can differ in the last bits, like any two batch sizes do.

Safety: the key is the caller's promise; each entry also stores a fingerprint of the frame's
model-input pixels (per-channel sums and a strided sample), so a reused key with other content
(a restarted pipeline numbering keyframes from 0 again) is re-encoded and counted as ``stale``
instead of silently giving another frame's tokens.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

# ``frame_cache`` setting that sizes the cache from the window (the node's and the replay tools'
# default): two windows of every camera, one being used and the next one's overlap.
AUTO = -1


def resolve_frame_cache(requested: int, window_frames: int, name: str = "frame_cache") -> int:
    """Frames the cache holds for a ``requested`` setting: ``AUTO`` (-1) keeps two windows of
    ``window_frames`` (window size x cameras), 0 turns the cache off, N keeps N.

    Raises:
        ValueError: below -1, or a cache that cannot hold one window (``name`` in the message).
    """
    requested = int(requested)
    if requested < AUTO:
        raise ValueError(f"{name} = {requested}: use -1 (two windows), 0 (off) or a number of frames")
    frames = 2 * int(window_frames) if requested == AUTO else requested
    if 0 < frames < window_frames:
        raise ValueError(
            f"{name} = {requested} cannot hold one window ({window_frames} frames: window.size x "
            "cameras); use -1 (two windows), 0 (off) or a larger value"
        )
    return frames


@dataclass
class FrameCacheStats:
    """Lookups since the cache was made (``clear`` keeps them)."""

    hits: int = 0
    misses: int = 0
    stale: int = 0
    evictions: int = 0


def _fingerprints(images: Tensor) -> list[tuple[float, ...]]:
    """Cheap content signatures of frames [S, 3, H, W]: per-channel sums and a strided sample
    of pixels (one device -> host copy for the whole window)."""
    s = images.shape[0]
    flat = images.reshape(s, 3, -1)
    step = max(1, flat.shape[-1] // 61)
    summary = torch.cat((flat.double().sum(dim=-1), flat[:, :, ::step].double().reshape(s, -1)), dim=1)
    return [tuple(row) for row in summary.cpu().tolist()]


class FrameTokenCache:
    """Bounded least-recently-used map: frame key -> encoder tokens [P, dim] on the device.

    Args:
        capacity: frames kept (the oldest unused ones are evicted first); at least one window.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"frame cache capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self._entries: OrderedDict[Hashable, tuple[tuple[float, ...], Tensor]] = OrderedDict()
        self.stats = FrameCacheStats()

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()

    def usage_since(self, before: FrameCacheStats) -> dict[str, int]:
        """{"frames": capacity, "hits", "misses", "stale", "evictions"} since the ``before``
        snapshot (a ``dataclasses.replace(cache.stats)`` copy), e.g. the lookups of a replay
        without its warm-up's."""
        now = dataclasses.asdict(self.stats)
        return {"frames": self.capacity, **{k: v - getattr(before, k) for k, v in now.items()}}

    def window_tokens(
        self, images: Tensor, keys: Sequence[Hashable], encode: Callable[[Tensor], Tensor]
    ) -> Tensor:
        """Encoder tokens [1, S, P, dim] of one window, encoding only the frames not cached.

        Args:
            images: [1, S, 3, H, W] the window's model-input images.
            keys: S frame identities (hashable, distinct within the window).
            encode: images [N, 3, H, W] -> tokens [N, P, dim] (``VGGT.encode_frames``), called
                once with every missing frame.
        """
        if images.dim() != 5 or images.shape[0] != 1:
            raise ValueError(f"the frame cache takes one window [1, S, 3, H, W], got {tuple(images.shape)}")
        frames = images[0]
        if len(keys) != frames.shape[0]:
            raise ValueError(f"{len(keys)} frame keys for {frames.shape[0]} frames")
        if len(set(keys)) != len(keys):
            raise ValueError("frame keys must be distinct within a window")
        hw = tuple(frames.shape[-2:])
        full_keys = [(key, hw, frames.dtype) for key in keys]
        prints = _fingerprints(frames)
        missing = []
        for i, (key, fp) in enumerate(zip(full_keys, prints)):
            entry = self._entries.get(key)
            if entry is None:
                self.stats.misses += 1
                missing.append(i)
            elif entry[0] != fp:
                self.stats.stale += 1
                missing.append(i)
            else:
                self.stats.hits += 1
                self._entries.move_to_end(key)
        if missing:
            encoded = encode(frames[missing])
            for j, i in enumerate(missing):
                # A copy of its own: an entry must not keep the whole batch's storage alive.
                self._entries[full_keys[i]] = (prints[i], encoded[j].clone())
                self._entries.move_to_end(full_keys[i])
        window = torch.stack([self._entries[key][1] for key in full_keys])[None]
        # Least recently used first; a window larger than the cache (anchor keyframes added to
        # a full window) still runs, only its oldest frames are not kept.
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
            self.stats.evictions += 1
        return window
