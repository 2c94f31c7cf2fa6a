"""Loop closure end to end (vggt_ros.mapping.loops, .backend, the pipeline) on rendered sequences
with a drifting ground-truth-derived fake predictor (test_mapping_fakes)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from scipy.spatial.transform import Rotation
from test_mapping_fakes import FakePredictor, sequence_tuple, trajectory_error

from vggt_ros.eval.report import loop_report
from vggt_ros.eval.synthetic import render_sequence
from vggt_ros.geometry.alignment import Sim3
from vggt_ros.mapping import Frame, KeyframeConfig, PerceptionPipeline, PipelineConfig, WindowConfig
from vggt_ros.mapping.backend import BackEnd
from vggt_ros.mapping.config import ChainingConfig, LoopConfig, RefineConfig
from vggt_ros.mapping.loops import EncoderPlaceRecognizer, LoopCandidate, OrbPlaceRecognizer

FPS = 10.0


@pytest.fixture(scope="module")
def revisit():
    """1.3 turns of the orbit: the end comes back past the start."""
    return render_sequence(130, 120, 160, seed=1, path="orbit")


def _run(pipeline: PerceptionPipeline, seq) -> list:
    results = []
    for i in range(seq.num_frames):
        job = pipeline.add_frame(Frame(seq.stamps[i], "cam", seq.images[i], intrinsics=seq.intrinsics))
        if job is not None:
            results.append(pipeline.process(job))
    return results


def _ape(seq, path) -> float:
    stamps = np.array([s for s, _ in path])
    est = np.stack([T for _, T in path])[:, :3, 3]
    truth = seq.cam_to_world[np.rint(stamps * FPS).astype(int), :3, 3]
    return trajectory_error(est, truth, with_scale=True)


def _orbit_config(**sections) -> PipelineConfig:  # noqa: ANN003
    """Windows of 6 keyframes, stride 3, a keyframe per 12 px of parallax (the revisit orbit);
    ``sections`` override the other PipelineConfig sections (chaining=..., loop=...)."""
    return PipelineConfig(
        window=WindowConfig(size=6, stride=3), keyframe=KeyframeConfig(min_parallax_px=12.0), **sections
    )


def test_orb_retrieval_finds_the_revisits_and_nothing_else(revisit) -> None:
    places = OrbPlaceRecognizer(min_gap=20)
    pos = revisit.cam_to_world[:, :3, 3]
    found = {}
    for k in range(0, revisit.num_frames, 2):
        places.add(k, revisit.images[k])
        found[k] = places.candidates(k)
    hits = [(k, c.keyframe_id) for k, cands in found.items() for c in cands]
    assert any(k >= 100 for k, _ in hits), "the revisit was not retrieved"
    # Every candidate is a true revisit: the two cameras stand within 1 m of each other.
    assert all(np.linalg.norm(pos[k] - pos[o]) < 1.0 for k, o in hits), hits
    assert places.vocabulary is not None  # retrieval ran on the word vectors, not brute force


def test_orb_finds_the_revisits_in_a_dim_low_contrast_room(revisit) -> None:
    """The same orbit at 15 % of its contrast (a dim, plain room): OpenCV's default FAST
    threshold finds almost no corners and no loop; the default ``loop.orb_fast_threshold``
    finds the revisits, and still only true ones."""
    pos = revisit.cam_to_world[:, :3, 3]

    def hits(places: OrbPlaceRecognizer) -> list[tuple[int, int]]:
        found = []
        for k in range(0, revisit.num_frames, 2):
            image = np.asarray(revisit.images[k], np.float32)
            dim = np.clip(90 + 0.15 * (image - image.mean()), 0, 255).astype(np.uint8)
            places.add(k, dim)
            found += [(k, c.keyframe_id) for c in places.candidates(k)]
        return found

    assert hits(OrbPlaceRecognizer(min_gap=20, fast_threshold=20)) == []
    found = hits(OrbPlaceRecognizer(min_gap=20, fast_threshold=LoopConfig().orb_fast_threshold))
    assert len(found) >= 3 and all(k >= 100 for k, _ in found), found
    assert all(np.linalg.norm(pos[k] - pos[o]) < 1.0 for k, o in found), found


def test_orb_counts_no_inliers_where_ransac_finds_no_model(revisit, monkeypatch) -> None:
    """Where RANSAC finds no fundamental matrix OpenCV returns None and a mask it never wrote
    (its memory's leftovers: seen as 831 "inliers" of 24 matches, a false candidate)."""
    from vggt_ros.mapping import loops

    places = OrbPlaceRecognizer()
    places.add(0, revisit.images[0])
    places.add(1, revisit.images[1])
    a, b = places._entries[0], places._entries[1]
    assert places._consistent_matches(a, b) >= places.min_matches  # neighbours: a real model

    def no_model(src, dst, *args):  # noqa: ANN001, ANN002, ANN202
        return None, np.full((len(src), 1), 255, np.uint8)

    monkeypatch.setattr(loops.cv2, "findFundamentalMat", no_model)
    assert places._consistent_matches(a, b) == 0


def _thumbnails(images) -> np.ndarray:  # noqa: ANN001
    """A stand-in for encoder tokens: [N, 192] 8x8 colour thumbnails (image content only)."""
    import cv2

    return np.stack(
        [cv2.resize(np.asarray(im), (8, 8), interpolation=cv2.INTER_AREA).ravel() for im in images]
    )


class _DescribingFake(FakePredictor):
    """The drifting fake predictor with frame descriptors (thumbnails instead of encoder means)."""

    __test__ = False

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self.described = 0

    def frame_descriptors(self, frames):  # noqa: ANN001, ANN201
        self.described += len(frames)
        return _thumbnails(frames).astype(np.float32)


def test_encoder_retrieval_finds_the_revisits_and_respects_the_gap(revisit) -> None:
    places = EncoderPlaceRecognizer(min_similarity=0.8, min_gap=20)
    pos = revisit.cam_to_world[:, :3, 3]
    hits = []
    for k in range(0, revisit.num_frames, 2):
        places.add(k, revisit.images[k])
        assert k not in places  # not searchable before it is described
        places.describe_pending(_thumbnails)
        assert k in places
        hits += [(k, c.keyframe_id, c.similarity) for c in places.candidates(k)]
    assert any(k >= 100 for k, _, _ in hits), "the revisit was not retrieved"
    assert all(k - o >= 40 for k, o, _ in hits)  # 20 stored keyframes of every second frame
    assert all(s >= 0.8 for _, _, s in hits)
    true = [np.linalg.norm(pos[k] - pos[o]) < 1.0 for k, o, _ in hits]
    assert sum(true) >= 0.8 * len(true), hits
    # Bounded, and a discarded keyframe is never a candidate again.
    places.discard(hits[0][1])
    assert hits[0][1] not in places
    assert all(c.keyframe_id != hits[0][1] for c in places.candidates(hits[0][0], limit=100))


def test_encoder_descriptors_that_fail_are_retried_and_bounded() -> None:
    places = EncoderPlaceRecognizer(min_gap=2, max_keyframes=3)
    image = np.zeros((8, 8, 3), np.uint8)
    places.add(0, image)
    with pytest.raises(ValueError, match="finite"):
        places.describe_pending(lambda images: np.full((len(images), 4), np.nan))
    places.describe_pending(lambda images: np.ones((len(images), 4)))  # kept, so retried
    assert 0 in places
    for k in range(1, 5 + EncoderPlaceRecognizer.MAX_PENDING):
        places.add(k, image)
    assert len(places._pending) == EncoderPlaceRecognizer.MAX_PENDING
    places.describe_pending(lambda images: np.random.default_rng(len(images)).random((len(images), 4)))
    assert len(places) == 3


def test_loop_closure_with_encoder_place_recognition(revisit) -> None:
    fake = _DescribingFake([sequence_tuple(revisit)], seed=5, drift_scale=0.08, drift_rotation_deg=0.8)
    config = _orbit_config(
        chaining=TIGHT_CHAINING, loop=LoopConfig(place_recognition="encoder", encoder_min_similarity=0.8)
    )
    pipeline = PerceptionPipeline(config, fake)
    _run(pipeline, revisit)
    accepted = [e for e in pipeline.loops if e.accepted]
    assert accepted, [e.reason for e in pipeline.loops]
    assert fake.described >= len(pipeline._backend.reference_order)  # every reference keyframe
    assert all(e.similarity >= 0.8 and e.matches == 0 for e in pipeline.loops)
    pos = revisit.cam_to_world[:, :3, 3]
    for e in accepted:
        a, b = (int(round(pipeline.keyframe(k).stamp * FPS)) for k in (e.query_id, e.candidate_id))
        assert np.linalg.norm(pos[a] - pos[b]) < 1.0
    chained, optimised = _ape(revisit, pipeline.chained_path()), _ape(revisit, pipeline.path())
    assert optimised < 0.7 * chained, (chained, optimised)


def test_encoder_place_recognition_without_descriptors_logs_and_goes_on(revisit, caplog) -> None:
    fake = FakePredictor([sequence_tuple(revisit)], seed=5)  # no frame_descriptors
    config = _orbit_config(loop=LoopConfig(place_recognition="encoder"))
    pipeline = PerceptionPipeline(config, fake)
    results = _run(pipeline, revisit)
    assert results and any(r.accepted for r in results) and not pipeline.loops
    assert "place recognition failed" in caplog.text


# Chaining tests for a predictor whose windows agree to about 2 % (this fake), not a network's
# 6-21 %: here they refuse the one window whose depth and poses drifted apart (residual 0.032),
# which the defaults (median disagreement <= 0.3 only) would chain, doubling the chained APE.
TIGHT_CHAINING = ChainingConfig(max_residual=0.03, min_inlier_ratio=0.6, max_center_residual=0.05)


def test_loop_closure_corrects_the_drift_and_the_map(revisit) -> None:
    fake = FakePredictor([sequence_tuple(revisit)], seed=5, drift_scale=0.08, drift_rotation_deg=0.8)
    config = _orbit_config(chaining=TIGHT_CHAINING)
    pipeline = PerceptionPipeline(config, fake)
    results = _run(pipeline, revisit)
    loops = pipeline.loops
    accepted = [e for e in loops if e.accepted]
    assert accepted, [e.reason for e in loops]
    pos = revisit.cam_to_world[:, :3, 3]
    stamps = {kf: pipeline.keyframe(kf).stamp for e in accepted for kf in (e.query_id, e.candidate_id)}
    for e in accepted:  # every accepted loop joins two views of the same place
        a, b = (int(round(stamps[k] * FPS)) for k in (e.query_id, e.candidate_id))
        assert np.linalg.norm(pos[a] - pos[b]) < 1.0
    chained, optimised = _ape(revisit, pipeline.chained_path()), _ape(revisit, pipeline.path())
    assert optimised < 0.7 * chained, (chained, optimised)
    assert any(r.map_rebuilt for r in results) and pipeline.stats["map_rebuilds"] >= 1
    # Poses handed out before the loop closed are stale: the windows that closed one say so.
    closing = [r for r in results if any(e.accepted for e in r.loops)]
    assert closing and all(r.poses_corrected for r in closing)
    assert not any(r.poses_corrected for r in results if not r.loops)
    stats = pipeline.back_end_stats
    assert stats["loops_accepted"] == len(accepted) and stats["graph_loop_edges"] == 2 * len(accepted)
    # A rebuild makes the map from the keyframes' stored points at their corrected poses only
    # (later windows then add theirs).
    with pipeline._lock:
        pipeline._apply_back_end()
    xyz, _, _ = pipeline._backend.cloud()
    assert 0 < len(pipeline.global_map) <= len(xyz)


class _MisplacingVerifications(FakePredictor):
    """A fake network that guesses wrong how a loop's views stand to each other: in every
    verification window (the new keyframe first, so frame 0 is later than frame 1) it turns the
    old keyframes (frames 2 and on) by ``turn_deg`` about frame 1's camera, as a network does
    between views it cannot relate. Pipeline windows come out as the base fake's."""

    __test__ = False

    def __init__(self, seq, turn_deg: float, **kwargs) -> None:  # noqa: ANN001, ANN003
        super().__init__([sequence_tuple(seq)], **kwargs)
        self.seq = seq
        self.turn = Rotation.from_euler("y", turn_deg, degrees=True).as_matrix()
        self.misplaced = 0

    def _index(self, image: np.ndarray) -> int:
        pose = self._find(image)[1]
        return int(np.argmin(np.abs(self.seq.cam_to_world - pose).sum(axis=(1, 2))))

    def predict(self, frames, query_points=None):  # noqa: ANN001, ANN201
        prediction = super().predict(frames, query_points)
        order = [self._index(f) for f in frames]
        if len(order) > 2 and order[0] > order[1]:
            pivot = prediction.cam_to_world[1].copy()
            about = (
                pivot
                @ np.block([[self.turn, np.zeros((3, 1))], [np.zeros((1, 3)), 1.0]])
                @ np.linalg.inv(pivot)
            )
            prediction.cam_to_world[2:] = about @ prediction.cam_to_world[2:]
            prediction.extrinsics[2:] = np.linalg.inv(prediction.cam_to_world[2:])[:, :3, :]
            self.misplaced += 1
        return prediction


@pytest.mark.parametrize("refine_verification", [True, False])
def test_loops_are_measured_by_the_refined_verification_window(revisit, refine_verification: bool) -> None:
    """loop.refine_verification: the verification window's poses are re-measured by PnP like every
    window's, so a network that misjudges how the new keyframe stands to the old ones by 8
    degrees still gives loop edges within a degree of the truth; without it the edges carry the
    network's error."""
    fake = _MisplacingVerifications(revisit, turn_deg=8.0, seed=5, drift_scale=0.08, drift_rotation_deg=0.8)
    config = _orbit_config(chaining=TIGHT_CHAINING, loop=LoopConfig(refine_verification=refine_verification))
    pipeline = PerceptionPipeline(config, fake)
    _run(pipeline, revisit)
    accepted = [e for e in pipeline.loops if e.accepted]
    assert fake.misplaced >= len(pipeline.loops) > 0 and accepted, [e.reason for e in pipeline.loops]
    stamps = {kf: pipeline.keyframe(kf).stamp for e in accepted for kf in (e.query_id, e.candidate_id)}
    errors = []
    for e in accepted:
        old, new = (revisit.cam_to_world[int(round(stamps[k] * FPS))] for k in (e.candidate_id, e.query_id))
        truth = old[:3, :3].T @ new[:3, :3]  # the new camera's rotation in the old one's
        errors.append(np.degrees(Rotation.from_matrix(truth.T @ e.offset[:3, :3]).magnitude()))
        assert (e.refined_frames is not None) == refine_verification
    if refine_verification:
        assert max(errors) < 1.5, errors
        assert all(e.refined_frames >= 2 for e in accepted)
    else:
        assert min(errors) > 5.0, errors


def test_map_rebuilds_after_loops_are_rate_limited_and_flushed_on_demand(revisit) -> None:
    """loop.map_rebuild_min_windows: loops move the keyframes at once either way; the map is
    rebuilt at once only when the last rebuild is that many windows old, else later, and
    refresh_map() (before a save) rebuilds a map that still waits."""

    def run(min_windows: int) -> tuple[PerceptionPipeline, list]:
        fake = FakePredictor([sequence_tuple(revisit)], seed=5, drift_scale=0.08, drift_rotation_deg=0.8)
        loop = LoopConfig(map_rebuild_min_windows=min_windows)
        pipeline = PerceptionPipeline(_orbit_config(chaining=TIGHT_CHAINING, loop=loop), fake)
        return pipeline, _run(pipeline, revisit)

    every, every_results = run(1)
    closing = [r for r in every_results if any(e.accepted for e in r.loops)]
    assert closing and all(r.map_rebuilt and r.poses_corrected for r in closing)
    assert every.stats["map_rebuilds"] == len(closing) and not every.refresh_map()

    never, never_results = run(10_000)
    closing = [r for r in never_results if any(e.accepted for e in r.loops)]
    assert len(closing) == len([r for r in every_results if any(e.accepted for e in r.loops)])
    assert all(r.poses_corrected for r in closing) and not any(r.map_rebuilt for r in never_results)
    assert "map_rebuilds" not in never.stats
    # The poses are the optimised ones already; the map follows on demand.
    assert _ape(revisit, never.path()) == pytest.approx(_ape(revisit, every.path()), rel=1e-6)
    assert never.refresh_map() and never.stats["map_rebuilds"] == 1 and not never.refresh_map()
    xyz, _, _ = never._backend.cloud()
    assert 0 < len(never.global_map) <= len(xyz)  # only the stored keyframe points, re-placed
    with pytest.raises(ValueError, match="map_rebuild_min_windows"):
        LoopConfig(map_rebuild_min_windows=0)


class _WindowSeededFake(FakePredictor):
    """The drifting fake whose noise depends on the window's frames, not on the call order: a
    run with loop closure (its verification windows are extra calls) sees the same windows as
    a run without."""

    __test__ = False

    def predict(self, frames, query_points=None):  # noqa: ANN001, ANN201
        import zlib

        self.rng = np.random.default_rng([5, len(frames), zlib.crc32(np.asarray(frames[0]).tobytes())])
        return super().predict(frames, query_points)


def test_chained_path_is_chaining_alone_also_after_a_loop(revisit) -> None:
    def run(loops: bool) -> PerceptionPipeline:
        fake = _WindowSeededFake([sequence_tuple(revisit)], drift_scale=0.08, drift_rotation_deg=0.8)
        # Refinement off: the fake's drift lives in its poses over exact depth, which PnP removes.
        config = _orbit_config(
            chaining=TIGHT_CHAINING, loop=LoopConfig(enabled=loops), refine=RefineConfig(enabled=False)
        )
        pipeline = PerceptionPipeline(config, fake)
        _run(pipeline, revisit)
        return pipeline

    with_loops, without = run(True), run(False)
    closed = [e for e in with_loops.loops if e.accepted]
    assert closed, [e.reason for e in with_loops.loops]
    alone = dict(without.path())
    chained, corrected = dict(with_loops.chained_path()), dict(with_loops.path())
    after = [t for t in chained if t > with_loops.keyframe(closed[0].query_id).stamp and t in alone]
    assert len(after) >= 3, "no keyframe mapped after the loop"

    def gap(a: dict, stamps: list[float]) -> float:
        return max(float(np.linalg.norm(a[t][:3, 3] - alone[t][:3, 3])) for t in stamps)

    length = float(np.linalg.norm(np.diff([alone[t][:3, 3] for t in sorted(alone)], axis=0), axis=1).sum())
    # After the loop the corrected path leaves chaining alone; the chained path stays with it.
    # (Measured: the corrected path 0.29 off chaining alone, 1.7 % of the 17.2-unit path; the
    # chained path 0.010 off, where it was the corrected path itself before it was fixed.)
    assert gap(corrected, after) > 0.01 * length
    assert gap(chained, after) < 0.2 * gap(corrected, after), (gap(chained, after), gap(corrected, after))


class _Echo:
    """A verification 'network' for look-alike places: it sees the old and the new keyframes as
    the same place (identity relative pose, same depth), as VGGT would for identical rooms.

    ``x_steps``: the frames' positions along x instead (metres, one per frame, in the order
    ``verify`` passes them: query, its predecessor, candidate, its successor); e.g.
    ``CONSISTENT_ECHO`` keeps the corridor's 0.5 m spacing within each pair, so the window agrees
    with the map on the old keyframes and only the place is mistaken."""

    def __init__(
        self,
        depth: np.ndarray,
        intrinsics: np.ndarray,
        x_steps: tuple[float, ...] = (),
        depth_factors: tuple[float, ...] = (),
    ) -> None:
        self.depth, self.K, self.x_steps, self.depth_factors = depth, intrinsics, x_steps, depth_factors

    def predict(self, frames):  # noqa: ANN001, ANN201
        from vggt_ros.engine import Prediction
        from vggt_ros.geometry import ImageTransform

        s = len(frames)
        h, w = self.depth.shape
        t = ImageTransform((h, w), (h, w), (1.0, 1.0), (0.0, 0.0), (0, 0, w, h))
        cam_to_world = np.repeat(np.eye(4)[None], s, 0)
        if self.x_steps:
            cam_to_world[:, 0, 3] = self.x_steps[:s]
        return Prediction(
            cam_to_world=cam_to_world,
            extrinsics=np.linalg.inv(cam_to_world)[:, :3],
            intrinsics=np.repeat(self.K[None], s, 0),
            model_intrinsics=np.repeat(self.K[None], s, 0),
            depth=(
                np.repeat(self.depth[None], s, 0)
                * np.asarray(self.depth_factors or (1.0,) * s)[:s, None, None]
            ).astype(np.float32),
            depth_conf=np.full((s, h, w), 3.0, np.float32),
            world_points=None,
            world_points_conf=None,
            valid_mask=np.ones((s, h, w), bool),
            colors=np.zeros((s, h, w, 3), np.uint8),
            model_hw=(h, w),
            original_sizes=[(h, w)] * s,
            transforms=[t] * s,
        )


CORRIDOR_K = np.array([[50.0, 0, 31.5], [0, 50.0, 23.5], [0, 0, 1]])
CORRIDOR_DEPTH = np.full((48, 64), 3.0, np.float32)
CORRIDOR_IMAGE = (np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)
CONSISTENT_ECHO = (0.0, -0.5, 0.0, 0.5)  # _Echo positions: the query at the candidate's place


class _Window:
    """Two cameras 0.5 m apart along x, looking at a uniform wall 3 m away (a corridor step)."""

    def __init__(self, first: int) -> None:
        h, w = CORRIDOR_DEPTH.shape
        self.cam_to_world = np.stack([np.eye(4), np.eye(4)])
        self.cam_to_world[1, 0, 3] = 0.5  # 0.5 m steps along x
        self.depth = np.stack([CORRIDOR_DEPTH, CORRIDOR_DEPTH])
        self.depth_conf = np.full((2, h, w), 3.0, np.float32)
        self.valid_mask = np.ones((2, h, w), bool)
        self.colors = np.stack([CORRIDOR_IMAGE, CORRIDOR_IMAGE])
        self.model_intrinsics = np.stack([CORRIDOR_K, CORRIDOR_K])


class _Kf:
    def __init__(self, i: int) -> None:
        self.id, self.stamp, self.camera_id = i, float(i), "cam"
        self.frame = type("F", (), {"image": CORRIDOR_IMAGE})()


def test_window_edges_loosen_with_the_windows_disagreement() -> None:
    """Edge standard deviations x (1 + d / odometry_sigma_disagreement), at most 10x: d = 0.1
    doubles them, a window placed without alignment (residual inf) gets 10x, the first window
    (residual 0, no dense correspondences) 1x."""
    config = LoopConfig(odometry_sigma_disagreement=0.1)
    backend = BackEnd(config, ChainingConfig())
    base = np.radians(config.odometry_rotation_sigma_deg)
    cases = [
        (0.0, float("nan"), 1.0),
        (0.05, 0.1, 2.0),
        (0.05, 0.45, 5.5),
        (0.05, 5.0, 10.0),
        (np.inf, 0.1, 10.0),
    ]
    for start, (residual, disagreement, factor) in enumerate(cases):
        to_g = Sim3(1.0, np.eye(3), np.array([0.5 * 2 * start, 0.0, 0.0]))
        kfs = [_Kf(2 * start), _Kf(2 * start + 1)]
        backend.add_window(_Window(0), kfs, to_g, residual, "cam", disagreement=disagreement)
        sigmas = backend._edges[-1][3]
        assert sigmas.rotation == pytest.approx(base * factor), (residual, disagreement)
        assert sigmas.translation == pytest.approx(config.odometry_translation_sigma * factor)


def test_a_wrong_loop_between_look_alike_places_is_rejected() -> None:
    """A corridor 10 m long whose two ends look the same: the verification window agrees with
    itself perfectly, but closing the loop would move the robot by the whole corridor."""
    depth, K = CORRIDOR_DEPTH, CORRIDOR_K
    backend = BackEnd(LoopConfig(min_gap_keyframes=3, min_matches=8), ChainingConfig())

    for start in range(0, 20):
        to_g = Sim3(1.0, np.eye(3), np.array([0.5 * start, 0.0, 0.0]))
        backend.add_window(_Window(start), [_Kf(start), _Kf(start + 1)], to_g, 0.0, "cam")
    event = backend.verify(20, LoopCandidate(0, 100), _Echo(depth, K))
    assert not event.accepted and "implied jump" in event.reason, event
    assert event.correction_m == pytest.approx(10.0, rel=0.05) and event.path_since_m == pytest.approx(
        10.0, rel=0.05
    )
    assert backend.graph.stats.loop_edges == 0  # nothing entered the graph


def test_a_verification_whose_pose_refinement_fails_is_refused(monkeypatch) -> None:
    """loop.refine_verification: a refinement that raises leaves the loop unmeasured, so it is
    refused with the reason (a false loop costs more than a missed one) and nothing enters the graph."""
    import vggt_ros.mapping.backend as backend_module

    backend = BackEnd(LoopConfig(min_gap_keyframes=3, min_matches=8), ChainingConfig(), refine=RefineConfig())
    for start in range(0, 20):
        to_g = Sim3(1.0, np.eye(3), np.array([0.5 * start, 0.0, 0.0]))
        backend.add_window(_Window(start), [_Kf(start), _Kf(start + 1)], to_g, 0.0, "cam")

    def broken(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise RuntimeError("no keypoints")

    monkeypatch.setattr(backend_module, "refined_prediction", broken)
    event = backend.verify(20, LoopCandidate(0, 100), _Echo(CORRIDOR_DEPTH, CORRIDOR_K))
    assert not event.accepted and "pose refinement failed: RuntimeError: no keypoints" in event.reason
    assert event.refined_frames is None and backend.graph.stats.loop_edges == 0


def test_eval_reports_loops_and_ape_before_and_after(revisit, tmp_path) -> None:
    from vggt_ros.eval.generate import write_sequence_bag
    from vggt_ros.eval.replay import replay_bag
    from vggt_ros.eval.report import LOOP_TRUE_OVERLAP, write_report

    bag = write_sequence_bag(revisit, tmp_path / "revisit")
    fake = FakePredictor([sequence_tuple(revisit)], seed=5, drift_scale=0.08, drift_rotation_deg=0.8)
    config = PipelineConfig(
        window=WindowConfig(size=6, stride=3), keyframe=KeyframeConfig(min_parallax_px=12.0)
    )
    result = replay_bag(bag, PerceptionPipeline(config, fake))
    report = write_report(tmp_path / "report", result, str(bag), plots=False)
    loops = report["loops"]
    assert (
        loops["accepted"] >= 1
        and loops["true_accepted"] == loops["accepted"]
        and loops["false_accepted"] == 0
    )
    assert all(e["true"] for e in loops["events"] if e["accepted"])
    # Truth is the ground-truth view overlap (the bag has depth and camera_info); the distance
    # is reported beside it.
    for e in loops["events"]:
        assert e["true"] == (e["ground_truth_overlap"] >= LOOP_TRUE_OVERLAP), e
        assert e["ground_truth_distance_m"] >= 0 and 0 <= e["view_overlap"] <= 1, e
    # The report carries both numbers. (On this replay the three loops correct little: their
    # verification windows are as noisy as the chained ones; the pipeline test above and
    # test_pose_graph show the gains when the loop is better than the accumulated drift.)
    assert report["trajectory"]["ape_trans_m"]["rmse"] <= 1.05 * loops["chained_ape_rmse_m"]
    assert loops["chained_ape_percent_of_length"] > 0
    text = (tmp_path / "report" / "report.md").read_text()
    assert "## Loop closure" in text and "as chained" in text
    assert "views share (window / truth)" in text and "accepted (true)" in text


def test_loop_rich_procedural_paths_come_back() -> None:
    from vggt_ros.eval.procedural import ProceduralSettings, render_sequence

    settings = ProceduralSettings(height=28, width=42)
    for motion, frames in (("lap", 60), ("figure_eight", 60), ("there_and_back", 41)):
        seq = render_sequence(settings, 5, frames, motion=motion)
        pos = seq.cam_to_world[:, :3, 3]
        length = float(np.linalg.norm(np.diff(pos, axis=0), axis=1).sum())
        # Some late pose stands within 10 % of the path length of an early one.
        late, early = pos[frames * 3 // 4 :], pos[: frames // 4]
        closest = np.min(np.linalg.norm(late[:, None] - early[None], axis=-1))
        assert closest < 0.1 * length, (motion, closest, length)
        assert seq.path == f"procedural:{motion}"


def test_back_end_stays_bounded_by_reseeding(revisit) -> None:
    fake = FakePredictor([sequence_tuple(revisit)], seed=2)
    config = _orbit_config(loop=LoopConfig(max_keyframes=20))
    pipeline = PerceptionPipeline(config, fake)
    sizes = []
    for i in range(revisit.num_frames):
        job = pipeline.add_frame(
            Frame(revisit.stamps[i], "cam", revisit.images[i], intrinsics=revisit.intrinsics)
        )
        if job is not None:
            pipeline.process(job)
            sizes.append(pipeline.back_end_stats["graph_keyframes"])
    backend = pipeline._backend
    assert backend.reseeds >= 2 and len(backend.graph) <= 20 and len(backend.points) <= 20
    assert set(backend.points) <= set(backend.graph.poses()) and len(backend.places) <= 20
    # Every keyframe keeps a pose (the dropped ones where they were last optimised).
    assert len(pipeline.path()) == pipeline.stats["keyframes"] - sum(
        1 for k in range(pipeline.stats["keyframes"]) if pipeline.keyframe(k) is None
    )


def test_odometry_sensor_edges_correct_the_drift_without_loops(revisit) -> None:
    """With wheel odometry (here the true camera motion, 1 cm noise per frame) and a metric scale
    from it, every new reference keyframe gets an odometry-sensor edge; keyframes follow the
    optimised graph after each window, so the drifting chain (no loop may close) stays near the
    truth; the map is rebuilt every loop.sensor_map_rebuild_windows windows."""
    from vggt_ros.mapping.config import ScaleConfig

    rng = np.random.default_rng(3)
    walk = np.cumsum(rng.normal(size=(revisit.num_frames, 3)) * 0.002, axis=0)  # odometry drifts too

    def run(sensor: bool, **loop):
        fake = FakePredictor([sequence_tuple(revisit)], seed=5, drift_scale=0.08, drift_rotation_deg=0.8)
        config = PipelineConfig(
            window=WindowConfig(size=6, stride=3),
            keyframe=KeyframeConfig(min_parallax_px=12.0),
            # the fake's planted drift lives in its cameras: refinement would re-measure them
            refine=RefineConfig(enabled=False),
            scale=ScaleConfig(source="odometry"),
            loop=LoopConfig(
                max_verifications=0, sensor_odometry=sensor, sensor_map_rebuild_windows=4, **loop
            ),
        )
        pipeline = PerceptionPipeline(config, fake)
        results = []
        for i in range(revisit.num_frames):
            odom = revisit.cam_to_world[i].copy()
            odom[:3, 3] += walk[i]
            frame = Frame(
                revisit.stamps[i], "cam", revisit.images[i], intrinsics=revisit.intrinsics,
                odom_pose=odom, camera_to_base=np.eye(4),
            )  # fmt: skip
            job = pipeline.add_frame(frame)
            if job is not None:
                results.append(pipeline.process(job))
        return pipeline, results

    plain, _ = run(sensor=False)
    assert plain.back_end_stats["graph_sensor_edges"] == 0
    pipeline, results = run(sensor=True)
    stats = pipeline.back_end_stats
    assert stats["loops_accepted"] == 0 and stats["graph_loop_edges"] == 0
    assert stats["graph_sensor_edges"] >= 20
    chained, corrected = _ape(revisit, plain.path()), _ape(revisit, pipeline.path())
    assert corrected < 0.25 * chained, (chained, corrected)  # measured 8.6 mm against 110 mm
    assert pipeline.stats["map_rebuilds"] >= 2 and any(r.map_rebuilt for r in results)
    assert len(pipeline.global_map) > 0
    # A bounded graph re-seeds with its newest half and keeps their odometry-sensor edges. Here
    # it spans only a few windows, so keyframes that left it keep their poses as last corrected
    # and drift accumulates across re-seeds (78 mm against 110 mm chained, 8 mm unbounded).
    bounded, _ = run(sensor=True, max_keyframes=12)
    assert bounded._backend.reseeds >= 2
    assert bounded._backend.graph.stats.sensor_edges >= 4
    assert _ape(revisit, bounded.path()) < chained


def test_a_verification_window_whose_depth_disagrees_is_rejected() -> None:
    """The verification window applies chaining's median test: a window whose depth is off by
    factors of 0.1-5 per pixel against the old keyframes' stored points is refused for it."""
    backend = BackEnd(LoopConfig(min_gap_keyframes=3, min_matches=8), ChainingConfig())
    for start in range(0, 20):
        to_g = Sim3(1.0, np.eye(3), np.array([0.5 * start, 0.0, 0.0]))
        backend.add_window(_Window(start), [_Kf(start), _Kf(start + 1)], to_g, 0.0, "cam")
    scrambled = CORRIDOR_DEPTH * np.random.default_rng(1).uniform(0.1, 5.0, CORRIDOR_DEPTH.shape)
    event = backend.verify(20, LoopCandidate(0, 100), _Echo(scrambled.astype(np.float32), CORRIDOR_K))
    assert not event.accepted and "points disagree by" in event.reason, event
    assert event.median_relative_residual > ChainingConfig().max_median_relative_residual
    assert backend.graph.stats.loop_edges == 0


def _corridor_back_end(keyframes: int, **loop: float) -> BackEnd:
    """Keyframes 0.5 m apart along x (chained windows of two), every one a loop-search entry."""
    backend = BackEnd(LoopConfig(min_gap_keyframes=3, min_matches=8, **loop), ChainingConfig())
    for start in range(0, keyframes - 1):
        to_g = Sim3(1.0, np.eye(3), np.array([0.5 * start, 0.0, 0.0]))
        backend.add_window(_Window(start), [_Kf(start), _Kf(start + 1)], to_g, 0.0, "cam")
    return backend


@pytest.mark.parametrize("min_overlap", [0.4, 0.0])
def test_a_loop_between_views_that_share_little_is_rejected(min_overlap: float) -> None:
    """``loop.min_view_overlap``: a verification window that places the query 2.5 m along the
    wall from the candidate (each sees 3.84 m of it: they share 35 %) agrees with the map in
    every other respect, and is refused for that alone; 1.5 m apart (61 % shared) it is closed."""
    far = _corridor_back_end(21, min_view_overlap=min_overlap)
    event = far.verify(20, LoopCandidate(15, 100), _Echo(CORRIDOR_DEPTH, CORRIDOR_K, (2.5, 2.0, 0.0, 0.5)))
    assert event.view_overlap == pytest.approx(1 - 2.5 / 3.84, abs=0.05)  # every 4th pixel
    assert event.correction_m == pytest.approx(0.0, abs=0.05)  # the map agrees: only the overlap fails
    if min_overlap:
        assert not event.accepted and "views share 0.3" in event.reason, event
        assert far.graph.stats.loop_edges == 0
    else:
        assert event.accepted, event
    near = _corridor_back_end(21, min_view_overlap=min_overlap)
    event = near.verify(20, LoopCandidate(17, 100), _Echo(CORRIDOR_DEPTH, CORRIDOR_K, (1.5, 1.0, 0.0, 0.5)))
    assert event.accepted and event.view_overlap == pytest.approx(1 - 1.5 / 3.84, abs=0.06), event


def test_large_corrections_need_a_second_loop_that_implies_the_same() -> None:
    """With ``loop.confirmation_keyframes``, a loop refused only for the size of its correction
    is held; a later one that implies the same correction, closing on another old keyframe,
    accepts both; one that implies another replaces it, and one too old to pair with it or
    closing on the same old keyframe does not confirm it. The echo network puts each
    query where its candidate is: query k with candidate k - 20 implies -10 m along x."""
    echo = _Echo(CORRIDOR_DEPTH, CORRIDOR_K, CONSISTENT_ECHO)
    # Within 10 % of the path: this degenerate scene (a flat wall) aligns to about 5 %.
    confirm = {
        "confirmation_keyframes": 3,
        "confirmation_max_ratio": 0.1,
        "confirmed_max_correction_ratio": 2.0,
    }

    off = _corridor_back_end(24, confirmation_keyframes=0)
    assert not off.verify(20, LoopCandidate(0, 100), echo).held  # 0 turns it off: refused outright

    backend = _corridor_back_end(24, **confirm)
    first = backend.verify(20, LoopCandidate(0, 100), echo)
    assert first.held and not first.accepted and "implied jump" in first.reason, first
    assert backend.graph.stats.loop_edges == 0
    before = backend.graph.pose(21).translation.copy()
    second = backend.verify(21, LoopCandidate(1, 100), echo)
    assert second.accepted and first.accepted and second.confirmed_by == 20, second
    assert second.edges and first.edges and backend.graph.stats.loop_edges == 4
    assert backend.stats["loops_confirmed"] == 1
    # vggt-ros eval's report says which loop was held and which confirmed it, and by how much
    # their corrections differ.
    replay = SimpleNamespace(
        loops=[first, second], ground_truth=None, keyframe_stamps={}, chained_estimate=None
    )
    held_row, confirming_row = loop_report(replay, "sim3", 1)["events"]
    assert held_row["held"] and held_row["accepted"] and held_row["confirmed_by"] is None
    assert held_row["confirmation_apart"] is None
    assert confirming_row["confirmed_by"] == 20 and not confirming_row["held"]
    apart = confirming_row["confirmation_apart"]
    assert apart["units"] == pytest.approx(second.confirmation_apart[0]) and 0.0 <= apart["deg"] < 30.0
    # The graph moved it back (a little: here the odometry edges are exact and stiff, and the
    # loop edges robust).
    assert backend.graph.pose(21).translation[0] < before[0] - 0.1

    disagreeing = _corridor_back_end(24, **confirm)
    disagreeing.verify(20, LoopCandidate(0, 100), echo)
    other = disagreeing.verify(21, LoopCandidate(6, 100), echo)  # implies -7.5 m, not -10 m
    assert other.held and not other.accepted and "disagrees with the loop of keyframe 20" in other.reason
    assert disagreeing.graph.stats.loop_edges == 0
    third = disagreeing.verify(22, LoopCandidate(7, 100), echo)  # agrees with the held one (21)
    assert third.accepted and third.confirmed_by == 21

    stale = _corridor_back_end(24, **confirm)
    stale.verify(18, LoopCandidate(0, 100), echo)  # implies -9 m
    late = stale.verify(23, LoopCandidate(5, 100), echo)  # also -9 m, but 5 keyframes later
    assert late.held and not late.accepted and "5 keyframes old" in late.reason, late

    # A second loop to the same old keyframe repeats the first one's evidence (a look-alike
    # view seen again from the next keyframe): it replaces the held loop, it does not confirm it.
    same = _corridor_back_end(24, **confirm)
    same.verify(20, LoopCandidate(0, 100), echo)
    again = same.verify(21, LoopCandidate(0, 100), echo)  # implies -10.5 m: would agree
    assert again.held and not again.accepted and "closes on keyframe 0 as the held loop does" in again.reason
    assert same.graph.stats.loop_edges == 0
    other_old = same.verify(22, LoopCandidate(2, 100), echo)
    assert other_old.accepted and other_old.confirmed_by == 21, other_old

    bounded = _corridor_back_end(24, confirmation_keyframes=3, confirmed_max_correction_ratio=0.5)
    refused = bounded.verify(20, LoopCandidate(0, 100), echo)  # a jump as long as the path
    assert not refused.held and "too large to confirm" in refused.reason, refused
    assert not bounded.verify(21, LoopCandidate(1, 100), echo).accepted


def test_place_recognition_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="place_recognition"):
        LoopConfig(place_recognition="netvlad")
    with pytest.raises(ValueError, match="encoder_min_similarity"):
        LoopConfig(encoder_min_similarity=1.5)


def test_confirmation_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="confirmation_keyframes"):
        LoopConfig(confirmation_keyframes=-1)
    with pytest.raises(ValueError, match="confirmation_max_deg"):
        LoopConfig(confirmation_max_deg=0.0)


def test_an_accepted_loop_restarts_the_optimisation_from_its_spread_correction() -> None:
    """``loop.spread_correction`` (on by default): with the loop edges in the graph, the
    optimisation restarts from every keyframe after the old one moved by a growing share of the
    loop's correction, all of it at the new keyframe (test_pose_graph.py shows why: far-off
    robust loop edges are otherwise ignored). The echo network implies -10 m for keyframe 21."""
    echo = _Echo(CORRIDOR_DEPTH, CORRIDOR_K, CONSISTENT_ECHO)
    confirm = {
        "confirmation_keyframes": 3,
        "confirmation_max_ratio": 0.1,
        "confirmed_max_correction_ratio": 2.0,
    }
    for spread in (True, False):
        backend = _corridor_back_end(24, spread_correction=spread, **confirm)
        calls = []
        real = backend.graph.reoptimize_from

        def spy(moved, real=real, calls=calls, backend=backend):  # noqa: ANN001, ANN202
            assert backend.graph.stats.loop_edges == 4  # the loop edges come first
            calls.append({k: s.translation.copy() for k, s in moved.items()})
            return real(moved)

        backend.graph.reoptimize_from = spy
        before = {k: backend.graph.pose(k).translation.copy() for k in range(24)}
        backend.verify(20, LoopCandidate(0, 100), echo)
        assert backend.verify(21, LoopCandidate(1, 100), echo).accepted
        if not spread:
            assert calls == []
            continue
        assert len(calls) == 1 and sorted(calls[0]) == list(range(1, 24))
        moved = calls[0]
        shift = {k: moved[k][0] - before[k][0] for k in moved}
        assert shift[21] == pytest.approx(-10.0, abs=0.6)  # all of it at the new keyframe ...
        assert shift[23] == pytest.approx(shift[21], abs=1e-6)  # ... and after it
        assert shift[11] == pytest.approx(shift[21] * 11 / 21, abs=0.1)  # half-way: about half
        assert abs(shift[1]) < 0.6


def test_a_reseed_keeps_the_anchors_of_later_map_segments() -> None:
    """A window that shares no keyframe with the graph (a new map segment) is anchored by a
    prior on its first keyframe. The re-seed used to fix only the oldest kept node, so a kept
    segment that no edge ties to it floated free: GTSAM found the system indeterminate (a
    failed, restarted update). Now kept anchors stay fixed and the segment keeps its poses."""
    backend = BackEnd(
        LoopConfig(min_gap_keyframes=3, min_matches=8, max_keyframes=12, keep_places=False), ChainingConfig()
    )
    for start in range(0, 9):  # segment 1: keyframes 0-9 along x
        to_g = Sim3(1.0, np.eye(3), np.array([0.5 * start, 0.0, 0.0]))
        backend.add_window(_Window(start), [_Kf(start), _Kf(start + 1)], to_g, 0.0, "cam")
    for start in (100, 101):  # segment 2: keyframes 100-102, 5 m off, no shared keyframe
        to_g = Sim3(1.0, np.eye(3), np.array([0.5 * (start - 100), 5.0, 0.0]))
        backend.add_window(_Window(start), [_Kf(start), _Kf(start + 1)], to_g, 0.0, "cam")
    # 13 nodes > 12: the newest 6 (7, 8, 9 of segment 1; 100, 101, 102 of segment 2) stay.
    assert backend.reseeds == 1 and sorted(backend.graph.poses()) == [7, 8, 9, 100, 101, 102]
    assert backend.graph.stats.failed_updates == 0
    np.testing.assert_allclose(backend.graph.pose(102).translation, [1.0, 5.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(backend.graph.pose(9).translation, [4.5, 0.0, 0.0], atol=1e-6)


def _corridor_run(backend: BackEnd, first: int, last: int) -> None:
    """Windows of two keyframes along the corridor (0.5 m apart) from ``first`` to ``last``."""
    for start in range(first, last):
        to_g = Sim3(1.0, np.eye(3), np.array([0.5 * start, 0.0, 0.0]))
        backend.add_window(_Window(start), [_Kf(start), _Kf(start + 1)], to_g, 0.0, "cam")


def test_a_reseed_keeps_one_keyframe_per_place_of_what_it_drops() -> None:
    """``loop.keep_places``: a re-seed keeps, besides the newest half, the first keyframe of
    every place of the part it drops (a cell of ``place_cell`` x the scene depth, here 0.5 x
    3 m: three keyframes of the corridor per cell) with its successor, fixed where they were,
    with their points and place entries, up to a quarter of ``max_keyframes`` (6 here)."""
    config = LoopConfig(min_gap_keyframes=3, min_matches=8, max_keyframes=24)
    backend = BackEnd(config, ChainingConfig())
    _corridor_run(backend, 0, 24)  # keyframes 0-24: 25 > 24 nodes, one re-seed
    places = [0, 1, 3, 4, 6, 7]  # cells x < 1.5, 1.5-3 and 3-4.5 m; 9-10 would pass the budget
    recent = list(range(13, 25))
    assert backend.reseeds == 1 and sorted(backend.graph.poses()) == places + recent
    assert sorted(backend.points) == places + recent and all(k in backend.places for k in places)
    assert backend.graph.stats.failed_updates == 0
    for k in places:  # fixed where they were
        np.testing.assert_allclose(backend.graph.pose(k).translation, [0.5 * k, 0.0, 0.0], atol=1e-6)
    # A kept place's verification window gets its successor, not a keyframe of another time.
    assert backend._neighbour(0, +1) == 1 and backend._neighbour(1, +1) is None
    assert backend._neighbour(13, -1) is None and backend._neighbour(14, -1) == 13
    # The map a rebuild makes still covers the dropped part of the corridor.
    xyz, _, _ = backend.cloud()
    assert xyz[:, 0].min() < 0.0 and len(xyz) == len(places + recent) * config.points_per_keyframe
    # The next re-seed keeps the places the first one kept (the budget is full: no new ones).
    _corridor_run(backend, 24, 31)
    assert backend.reseeds == 2
    assert sorted(backend.graph.poses()) == places + list(range(20, 32))

    without = BackEnd(
        LoopConfig(min_gap_keyframes=3, min_matches=8, max_keyframes=24, keep_places=False), ChainingConfig()
    )
    _corridor_run(without, 0, 24)
    assert sorted(without.graph.poses()) == recent and sorted(without.points) == recent


@pytest.mark.parametrize("current", [True, False])
def test_window_edges_take_the_shared_keyframes_current_unit(current: bool) -> None:
    """A later window is aligned on the map as the back end moved it. Here a (tight) loop edge
    has doubled keyframe 1's unit since it was created; the next window sees it as the map
    holds it (alignment scale 2). With ``loop.odometry_current_unit`` the edge to the new
    keyframe 2 takes keyframe 1 at its current unit (relative scale 1, the window's 0.5 m step
    in keyframe 1's units); with the creation unit it restates the correction as a doubling
    of scale and distance, which compounds window after window."""
    from vggt_ros.mapping.pose_graph import EdgeSigmas

    config = LoopConfig(min_gap_keyframes=3, min_matches=8, odometry_current_unit=current)
    backend = BackEnd(config, ChainingConfig())
    backend.add_window(_Window(0), [_Kf(0), _Kf(1)], Sim3.identity(), 0.0, "cam")
    doubled = Sim3(2.0, np.eye(3), np.array([0.5, 0.0, 0.0]))
    backend.graph.add_loop(0, 1, doubled, EdgeSigmas(rotation=1e-3, translation=1e-3, log_scale=1e-3))
    backend.graph.reoptimize_from({1: doubled})
    assert backend.graph.pose(1).scale == pytest.approx(2.0, rel=0.01)
    to_g = Sim3(2.0, np.eye(3), np.array([0.5, 0.0, 0.0]))
    backend.add_window(_Window(1), [_Kf(1), _Kf(2)], to_g, 0.01, "cam")
    a, b, relative, _, loop = backend._edges[-1]
    assert (a, b, loop) == (1, 2, False)
    expected = 1.0 if current else 2.0
    assert relative.scale == pytest.approx(expected, rel=0.01)
    np.testing.assert_allclose(relative.translation, [0.5 * expected, 0.0, 0.0], atol=0.01)


def test_place_keys_split_positions_and_viewing_directions() -> None:
    from vggt_ros.mapping.backend import place_key

    def pose(x: float, yaw_deg: float) -> Sim3:
        c, s = np.cos(np.radians(yaw_deg)), np.sin(np.radians(yaw_deg))
        turn = np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])  # about the camera's y (down)
        return Sim3(1.0, turn, np.array([x, 0.0, 0.0]))

    assert place_key(pose(0.2, 5.0), 1.0) == place_key(pose(0.9, 30.0), 1.0)  # one cell, one sector
    assert place_key(pose(0.2, 5.0), 1.0) != place_key(pose(1.2, 5.0), 1.0)  # the next cell
    assert place_key(pose(0.2, 5.0), 1.0) != place_key(pose(0.2, 185.0), 1.0)  # looking back
    looking_down = Sim3(1.0, np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]]), np.zeros(3))
    assert place_key(looking_down, 1.0)[-1] != place_key(pose(0.0, 0.0), 1.0)[-1]


def test_keep_places_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="place_cell"):
        LoopConfig(place_cell=0.0)
    with pytest.raises(ValueError, match="keep_places"):
        LoopConfig(keep_places="yes")
    with pytest.raises(ValueError, match="refine_verification"):
        LoopConfig(refine_verification="yes")


@pytest.mark.parametrize("measured", [True, False])
def test_loops_measure_the_scale_of_the_new_keyframes(measured: bool) -> None:
    """The verification window sees the new keyframes' depth twice their stored depth (chaining
    had shrunk their units by half): with ``loop.measured_scale`` the loop edges carry that
    ratio and the correction the new scale, so the graph grows the new keyframes' units; without
    it a loop restates the creation units and leaves the scale where chaining put it."""
    echo = _Echo(CORRIDOR_DEPTH, CORRIDOR_K, CONSISTENT_ECHO, depth_factors=(2.0, 2.0, 1.0, 1.0))
    confirm = {
        "confirmation_keyframes": 3,
        "confirmation_max_ratio": 0.1,
        "confirmed_max_correction_ratio": 2.0,
    }
    # min_view_overlap off: this echo's frames see walls at 6 and 3 m from one spot, which no
    # real window would (their surfaces do not overlap); the units are what is tested here.
    backend = _corridor_back_end(24, measured_scale=measured, min_view_overlap=0.0, **confirm)
    backend.verify(20, LoopCandidate(0, 100), echo)
    assert backend.verify(21, LoopCandidate(1, 100), echo).accepted
    scale = backend.graph.pose(21).scale
    if measured:
        assert scale > 1.5, scale
    else:
        assert scale == pytest.approx(1.0, abs=0.05)
