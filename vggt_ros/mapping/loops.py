"""Loop candidates: place recognition over keyframe images, with ORB features (OpenCV) or the
model's own encoder tokens.

ORB (:class:`OrbPlaceRecognizer`, ``loop.place_recognition: orb``):

Each keyframe of the reference camera gets ORB descriptors of a small grey image and a
bag-of-words vector over a vocabulary of binary words (k-means on the first keyframes'
descriptors, tf-idf weighted, as DBoW does). A new keyframe is scored against every stored
keyframe at least ``min_gap`` keyframes older (the recent ones are neighbours, not loops) by the
cosine of their word vectors, one matrix product however many keyframes are stored; the best
``shortlist`` are checked geometrically (Hamming matching with Lowe's ratio test, then a
fundamental-matrix RANSAC), and those with at least ``min_matches`` consistent matches are the
candidates. The database is bounded (``max_keyframes``, oldest evicted).

Encoder (:class:`EncoderPlaceRecognizer`, ``loop.place_recognition: encoder``): each keyframe's
descriptor is the mean of its encoder patch tokens (``Predictor.frame_descriptors``); a new
keyframe is scored against the same older keyframes by the cosine of the descriptors centred on
the mean of those stored (what every keyframe of one scene shares would otherwise dominate the
cosine), and those above ``min_similarity`` are the candidates, best first. No geometric check:
the recall is higher and so is the share of look-alikes, which verification has to reject.

Candidates are only candidates: :mod:`vggt_ros.mapping.loop_closure` verifies each with a VGGT
window before it becomes a pose-graph edge.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class LoopCandidate:
    """A stored keyframe that looks like the query: its id, the number of RANSAC-consistent ORB
    matches (0 for the encoder) and the descriptor cosine (encoder; NaN for ORB)."""

    keyframe_id: int
    matches: int
    similarity: float = float("nan")


@dataclass
class _Entry:
    order: int
    keypoints: np.ndarray  # [N, 2] pixel positions in the small image
    descriptors: np.ndarray  # [N, 32] uint8
    words: np.ndarray | None = None  # [V] word counts (None until there is a vocabulary)


def _bits(descriptors: np.ndarray) -> np.ndarray:
    """[N, 32] uint8 ORB descriptors -> [N, 256] float32 of 0/1 bits."""
    return np.unpackbits(descriptors, axis=1).astype(np.float32)


class BinaryVocabulary:
    """Visual words: k-means centres of ORB descriptors' bits, rounded back to bits."""

    def __init__(self, descriptors: np.ndarray, words: int = 256, seed: int = 0) -> None:
        bits = _bits(descriptors)
        k = int(min(words, len(bits)))
        cv2.setRNGSeed(seed)
        criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 0.5)
        _, _, centres = cv2.kmeans(bits, k, None, criteria, 2, cv2.KMEANS_PP_CENTERS)
        self.centres = (centres > 0.5).astype(np.float32)  # [K, 256]
        self.size = k

    def counts(self, descriptors: np.ndarray) -> np.ndarray:
        """[K] how many descriptors fall to each word (nearest in Hamming distance)."""
        if len(descriptors) == 0:
            return np.zeros(self.size, np.float32)
        bits = _bits(descriptors)
        # Hamming distance = |a| + |b| - 2 a.b for 0/1 vectors.
        dist = bits.sum(1, keepdims=True) + self.centres.sum(1)[None] - 2.0 * bits @ self.centres.T
        return np.bincount(dist.argmin(axis=1), minlength=self.size).astype(np.float32)


class OrbPlaceRecognizer:
    """ORB place recognition over stored keyframes (see the module docstring).

    Args:
        image_width: keyframes are resized to this width (grey) before feature extraction.
        features: ORB features per keyframe.
        fast_threshold: FAST corner threshold (grey levels). OpenCV's default, 20, finds almost
            no corners in dim, low-contrast rooms (3 per keyframe in a generated held-out
            figure-eight); ORB keeps the ``features`` strongest corners, so a lower threshold
            changes nothing in textured images and still finds corners in plain ones.
        ratio: Lowe's ratio test threshold.
        min_matches: fewest RANSAC-consistent matches of a candidate.
        min_gap: a candidate is at least this many stored keyframes older than the query.
        max_keyframes: keyframes kept (the oldest are evicted).
        shortlist: keyframes with the best word scores that get the geometric check.
        vocabulary_keyframes: keyframes whose descriptors train the vocabulary (matching is
            brute force until then).
    """

    def __init__(
        self,
        image_width: int = 320,
        features: int = 500,
        fast_threshold: int = 20,
        ratio: float = 0.8,
        min_matches: int = 40,
        min_gap: int = 10,
        max_keyframes: int = 2000,
        shortlist: int = 8,
        vocabulary_keyframes: int = 30,
    ) -> None:
        self.image_width = image_width
        self.ratio = ratio
        self.min_matches = min_matches
        self.min_gap = min_gap
        self.max_keyframes = max_keyframes
        self._orb = cv2.ORB_create(nfeatures=features, fastThreshold=fast_threshold)
        self._matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
        self.shortlist = shortlist
        self.vocabulary_keyframes = vocabulary_keyframes
        self.vocabulary: BinaryVocabulary | None = None
        self._entries: OrderedDict[int, _Entry] = OrderedDict()
        self._count = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, keyframe_id: int) -> bool:
        return keyframe_id in self._entries

    def _features(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h, w = image.shape[:2]
        scale = self.image_width / w
        small = cv2.resize(image, (self.image_width, max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY) if small.ndim == 3 else small
        keypoints, descriptors = self._orb.detectAndCompute(grey, None)
        if descriptors is None:
            return np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8)
        return np.array([k.pt for k in keypoints], np.float32), descriptors

    def add(self, keyframe_id: int, image: np.ndarray) -> None:
        """Store a keyframe ([H, W, 3] uint8 RGB or [H, W] grey)."""
        keypoints, descriptors = self._features(image)
        entry = _Entry(self._count, keypoints, descriptors)
        self._entries[keyframe_id] = entry
        self._count += 1
        while len(self._entries) > self.max_keyframes:
            self._entries.popitem(last=False)
        if self.vocabulary is None and len(self._entries) >= self.vocabulary_keyframes:
            stacked = np.concatenate([e.descriptors for e in self._entries.values()])
            if len(stacked) >= 64:
                self.vocabulary = BinaryVocabulary(stacked)
                for e in self._entries.values():
                    e.words = self.vocabulary.counts(e.descriptors)
        elif self.vocabulary is not None:
            entry.words = self.vocabulary.counts(descriptors)

    def describe_pending(self, describe: Callable[[list[np.ndarray]], np.ndarray]) -> None:
        """Nothing to do: ORB describes a keyframe when it is added (the encoder's interface)."""

    def discard(self, keyframe_id: int) -> None:
        """Forget a keyframe (no longer a loop candidate)."""
        self._entries.pop(keyframe_id, None)

    def _consistent_matches(self, a: _Entry, b: _Entry) -> int:
        if len(a.descriptors) < 8 or len(b.descriptors) < 8:
            return 0
        pairs = self._matcher.knnMatch(a.descriptors, b.descriptors, k=2)
        good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < self.ratio * p[1].distance]
        if len(good) < max(8, self.min_matches // 2):
            return len(good) if len(good) < 8 else 0
        src = a.keypoints[[m.queryIdx for m in good]]
        dst = b.keypoints[[m.trainIdx for m in good]]
        fundamental, mask = cv2.findFundamentalMat(src, dst, cv2.FM_RANSAC, 1.5, 0.99)
        # Where RANSAC finds no model OpenCV returns no matrix and a mask it never wrote to
        # (seen: 831 "inliers" of 24 matches): only a found model has inliers.
        if fundamental is None or mask is None:
            return 0
        return int(np.count_nonzero(mask))

    def _shortlist(self, query: _Entry, older: list[tuple[int, _Entry]]) -> list[tuple[int, _Entry]]:
        """The stored keyframes whose words are most like the query's (tf-idf cosine)."""
        if self.vocabulary is None or query.words is None or len(older) <= self.shortlist:
            return older
        counts = np.stack([e.words for _, e in older])  # [M, K]
        seen = (counts > 0).sum(axis=0)
        idf = np.log((1.0 + len(older)) / (1.0 + seen))
        vectors = counts * idf
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-9
        q = query.words * idf
        q /= np.linalg.norm(q) + 1e-9
        best = np.argsort(-(vectors @ q))[: self.shortlist]
        return [older[i] for i in best]

    def candidates(self, keyframe_id: int, limit: int = 3) -> list[LoopCandidate]:
        """Loop candidates of a stored keyframe, best first (at most ``limit``)."""
        query = self._entries.get(keyframe_id)
        if query is None:
            raise KeyError(f"keyframe {keyframe_id} is not stored")
        older = [(k, e) for k, e in self._entries.items() if query.order - e.order >= self.min_gap]
        found = []
        for other_id, entry in self._shortlist(query, older):
            n = self._consistent_matches(query, entry)
            if n >= self.min_matches:
                found.append(LoopCandidate(other_id, n))
        found.sort(key=lambda c: -c.matches)
        return found[:limit]


class EncoderPlaceRecognizer:
    """Place recognition by the model's encoder tokens (see the module docstring).

    Keyframes are added with their image; their descriptors are computed in batches by
    :meth:`describe_pending` (it needs the network, which the caller holds), and only described
    keyframes are stored (``in``) and searched.

    Args:
        min_similarity: fewest centred cosine of a candidate.
        min_gap: a candidate is at least this many stored keyframes older than the query.
        max_keyframes: keyframes kept (the oldest are evicted).
    """

    MAX_PENDING = 64

    def __init__(self, min_similarity: float = 0.5, min_gap: int = 10, max_keyframes: int = 2000) -> None:
        self.min_similarity = min_similarity
        self.min_gap = min_gap
        self.max_keyframes = max_keyframes
        self._pending: OrderedDict[int, np.ndarray] = OrderedDict()
        self._ids: list[int] = []  # stored keyframes, oldest first
        self._order: dict[int, int] = {}
        self._descriptors: dict[int, np.ndarray] = {}  # [C] float64, as computed (not centred)
        self._count = 0

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, keyframe_id: int) -> bool:
        return keyframe_id in self._order

    def add(self, keyframe_id: int, image: np.ndarray) -> None:
        """Queue a keyframe ([H, W, 3] uint8 RGB) for :meth:`describe_pending` (at most
        ``MAX_PENDING``: if describing keeps failing, the oldest are dropped)."""
        self._pending[keyframe_id] = image
        while len(self._pending) > self.MAX_PENDING:
            self._pending.popitem(last=False)

    def describe_pending(self, describe: Callable[[list[np.ndarray]], np.ndarray]) -> None:
        """Compute the queued keyframes' descriptors with ``describe`` (N images -> [N, C]) and
        store them, oldest first."""
        if not self._pending:
            return
        ids, images = list(self._pending), list(self._pending.values())
        descriptors = np.asarray(describe(images), np.float64)
        if descriptors.ndim != 2 or len(descriptors) != len(ids) or not np.isfinite(descriptors).all():
            raise ValueError(
                f"frame descriptors must be finite [{len(ids)}, C], got shape {descriptors.shape}"
            )
        self._pending.clear()
        for keyframe_id, descriptor in zip(ids, descriptors):
            self._ids.append(keyframe_id)
            self._order[keyframe_id] = self._count
            self._descriptors[keyframe_id] = descriptor
            self._count += 1
        while len(self._ids) > self.max_keyframes:
            self.discard(self._ids[0])

    def discard(self, keyframe_id: int) -> None:
        """Forget a keyframe (no longer a loop candidate)."""
        self._pending.pop(keyframe_id, None)
        if keyframe_id in self._order:
            self._ids.remove(keyframe_id)
            del self._order[keyframe_id], self._descriptors[keyframe_id]

    def similarities(self, keyframe_id: int) -> dict[int, float]:
        """Centred cosine of the query against every stored keyframe at least ``min_gap`` older."""
        if keyframe_id not in self._order:
            raise KeyError(f"keyframe {keyframe_id} is not stored")
        query_order = self._order[keyframe_id]
        older = [k for k in self._ids if query_order - self._order[k] >= self.min_gap]
        if not older:
            return {}
        stored = np.stack([self._descriptors[k] for k in self._ids])
        mean = stored.mean(axis=0)
        vectors = np.stack([self._descriptors[k] for k in older]) - mean
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-12
        q = self._descriptors[keyframe_id] - mean
        q /= np.linalg.norm(q) + 1e-12
        return dict(zip(older, (vectors @ q).tolist()))

    def candidates(self, keyframe_id: int, limit: int = 3) -> list[LoopCandidate]:
        """Loop candidates of a stored keyframe, most similar first (at most ``limit``)."""
        scores = self.similarities(keyframe_id)
        found = [LoopCandidate(k, 0, v) for k, v in scores.items() if v >= self.min_similarity]
        found.sort(key=lambda c: -c.similarity)
        return found[:limit]
