"""Tests for vggt_ros.geometry.alignment: Umeyama Sim(3)/SE(3), weights, robust variants."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from vggt_ros.geometry import alignment
from vggt_ros.geometry.alignment import Sim3, ransac_trials_needed, robust_umeyama, umeyama


def random_sim3(rng: np.random.Generator, scale: float | None = None) -> Sim3:
    s = float(rng.uniform(0.2, 5.0)) if scale is None else scale
    return Sim3(s, Rotation.random(random_state=rng).as_matrix(), rng.normal(0, 3, 3))


def test_umeyama_exact_sim3_and_se3() -> None:
    rng = np.random.default_rng(1)
    src = rng.normal(size=(50, 3))
    truth = random_sim3(rng)
    est = umeyama(src, truth.apply(src))
    assert est.scale == pytest.approx(truth.scale, rel=1e-12)
    np.testing.assert_allclose(est.rotation, truth.rotation, atol=1e-12)
    np.testing.assert_allclose(est.translation, truth.translation, atol=1e-10)
    rigid = random_sim3(rng, scale=1.0)
    est = umeyama(src, rigid.apply(src), with_scale=False)
    assert est.scale == 1.0
    np.testing.assert_allclose(est.matrix(), rigid.matrix(), atol=1e-10)


def test_umeyama_never_returns_a_reflection() -> None:
    rng = np.random.default_rng(2)
    src = rng.normal(size=(20, 3))
    mirrored = src * np.array([1.0, 1.0, -1.0])
    est = umeyama(src, mirrored)
    assert np.linalg.det(est.rotation) == pytest.approx(1.0)


def test_weights_select_the_trusted_points() -> None:
    rng = np.random.default_rng(3)
    src = rng.normal(size=(40, 3))
    truth = random_sim3(rng)
    dst = truth.apply(src)
    dst[:10] += rng.normal(0, 5, (10, 3))  # wrong correspondences ...
    w = np.ones(40)
    w[:10] = 0.0  # ... that carry no weight
    np.testing.assert_allclose(umeyama(src, dst, w).matrix(), truth.matrix(), atol=1e-9)


def test_sim3_algebra() -> None:
    rng = np.random.default_rng(4)
    a, b = random_sim3(rng), random_sim3(rng)
    x = rng.normal(size=(7, 3))
    np.testing.assert_allclose((a @ b).apply(x), a.apply(b.apply(x)), atol=1e-9)
    np.testing.assert_allclose(a.inverse().apply(a.apply(x)), x, atol=1e-9)
    np.testing.assert_allclose(Sim3.from_matrix(a.matrix()).matrix(), a.matrix(), atol=1e-12)
    pose = np.eye(4)
    pose[:3, :3] = Rotation.random(random_state=rng).as_matrix()
    pose[:3, 3] = rng.normal(size=3)
    moved = a.transform_poses(pose)
    # The camera centre moves like a point; the camera axes stay orthonormal.
    np.testing.assert_allclose(moved[:3, 3], a.apply(pose[:3, 3]), atol=1e-12)
    np.testing.assert_allclose(moved[:3, :3] @ moved[:3, :3].T, np.eye(3), atol=1e-12)


@pytest.mark.parametrize("method", ["irls", "ransac"])
def test_robust_alignment_with_noise_and_outliers(method: str) -> None:
    rng = np.random.default_rng(5)
    n = 400
    src = rng.uniform(-2, 2, (n, 3))
    truth = random_sim3(rng)
    dst = truth.apply(src) + rng.normal(0, 0.01, (n, 3))
    share = 0.25 if method == "irls" else 0.5
    bad = rng.random(n) < share
    dst[bad] = rng.uniform(-20, 20, (int(bad.sum()), 3))
    result = robust_umeyama(src, dst, inlier_threshold=0.05, method=method)
    est = result.transform
    assert est.scale == pytest.approx(truth.scale, rel=5e-3)
    angle = np.linalg.norm(Rotation.from_matrix(est.rotation @ truth.rotation.T).as_rotvec())
    assert np.degrees(angle) < 0.2
    # Inlier mask recovers the corruption almost exactly.
    assert (result.inliers == ~bad).mean() > 0.97
    assert result.rms < 0.03
    assert result.inlier_ratio == pytest.approx(1 - bad.mean(), abs=0.03)


def test_ransac_trials_follow_the_inlier_share() -> None:
    # log(1 - 0.999) / log(1 - 0.5^3) = 51.7: half inliers need 52 three-point samples.
    assert ransac_trials_needed(0.5) == 52
    assert ransac_trials_needed(0.95) == alignment.RANSAC_MIN_TRIALS  # never below the floor
    assert ransac_trials_needed(1.0) == alignment.RANSAC_MIN_TRIALS
    assert ransac_trials_needed(0.0) > 10**6  # nothing agrees: the caller's cap applies
    assert ransac_trials_needed(0.3) > ransac_trials_needed(0.5)


@pytest.mark.parametrize(("share", "most"), [(0.0, 12), (0.5, 200)])
def test_ransac_stops_once_the_best_hypothesis_is_trusted(share: float, most: int) -> None:
    """Clean data (a window that agrees with the map) ends after ~10 hypotheses instead of 200;
    half outliers still draw enough and find the transform."""
    rng = np.random.default_rng(11)
    src = rng.uniform(-2, 2, (3000, 3))
    truth = random_sim3(rng)
    dst = truth.apply(src) + rng.normal(0, 0.005, (3000, 3))
    bad = rng.random(3000) < share
    dst[bad] = rng.uniform(-20, 20, (int(bad.sum()), 3))
    result = robust_umeyama(src, dst, inlier_threshold=0.05, method="ransac")
    assert alignment.RANSAC_MIN_TRIALS <= result.hypotheses <= most
    if share:
        assert result.hypotheses >= 40  # log(0.001) / log(1 - 0.5^3) = 52 expected
    assert result.transform.scale == pytest.approx(truth.scale, rel=2e-3)
    assert robust_umeyama(src, dst, inlier_threshold=0.05, method="irls").hypotheses == 0


def test_ransac_finds_a_small_inlier_share_among_many_pairs() -> None:
    """A trained network's chaining alignments have ~12 % inliers among 6,000 pairs: RANSAC
    then draws its whole budget, scored on a subset of the pairs, and still finds the
    transform; IRLS stops once converged rather than running every round."""
    rng = np.random.default_rng(12)
    n = 6000
    src = rng.uniform(-2, 2, (n, 3))
    truth = random_sim3(rng)
    dst = truth.apply(src) + rng.normal(0, 0.005, (n, 3))
    bad = rng.random(n) > 0.12
    dst[bad] = truth.apply(src[bad]) + rng.normal(0, 1.0, (int(bad.sum()), 3))
    result = robust_umeyama(src, dst, inlier_threshold=0.05, method="ransac")
    assert result.hypotheses == 200
    assert n > alignment.RANSAC_SCORE_POINTS
    assert result.transform.scale == pytest.approx(truth.scale, rel=2e-3)
    angle = np.linalg.norm(Rotation.from_matrix(result.transform.rotation @ truth.rotation.T).as_rotvec())
    assert np.degrees(angle) < 0.2
    assert result.inliers[~bad].mean() > 0.95
    assert result.irls_rounds < 20


def test_degenerate_samples_do_not_become_hypotheses() -> None:
    """Collinear or repeated points fix no rotation: the batched minimal fit flags them."""
    line = np.array([[[0.0, 0, 0], [1, 0, 0], [2, 0, 0]]])
    same = np.zeros((1, 3, 3))
    good = np.array([[[0.0, 0, 0], [1, 0, 0], [0, 1, 0]]])
    src = np.concatenate([line, same, good])
    truth = Sim3(2.0, np.eye(3), np.array([1.0, 2.0, 3.0]))
    dst = truth.apply(src)
    for estimator in alignment.SCALE_ESTIMATORS:
        scale, rotation, translation, ok = alignment._fit_triplets(src, dst, True, estimator)
        assert ok.tolist() == [False, False, True]
        assert scale[2] == pytest.approx(2.0)
        np.testing.assert_allclose(rotation[2], np.eye(3), atol=1e-12)
        np.testing.assert_allclose(translation[2], [1.0, 2.0, 3.0], atol=1e-12)


def test_batched_minimal_fit_matches_the_single_fit() -> None:
    rng = np.random.default_rng(13)
    src = rng.normal(size=(50, 3, 3))
    dst = rng.normal(size=(50, 3, 3))
    for estimator in alignment.SCALE_ESTIMATORS:
        for with_scale in (True, False):
            scale, rotation, translation, ok = alignment._fit_triplets(src, dst, with_scale, estimator)
            for b in range(50):
                try:
                    single = umeyama(src[b], dst[b], with_scale=with_scale, scale_estimator=estimator)
                except ValueError:  # a non-positive forward scale
                    assert not ok[b]
                    continue
                assert ok[b]
                assert scale[b] == pytest.approx(single.scale, rel=1e-9)
                np.testing.assert_allclose(rotation[b], single.rotation, atol=1e-9)
                np.testing.assert_allclose(translation[b], single.translation, atol=1e-9)


def test_plain_least_squares_is_pulled_by_outliers() -> None:
    # Why the robust variant exists: the same data breaks the closed form.
    rng = np.random.default_rng(6)
    src = rng.uniform(-2, 2, (200, 3))
    truth = random_sim3(rng, scale=1.0)
    dst = truth.apply(src)
    dst[:60] += rng.uniform(5, 10, (60, 3))
    assert abs(umeyama(src, dst).scale - 1.0) > 0.05
    assert robust_umeyama(src, dst, method="ransac").transform.scale == pytest.approx(1.0, abs=1e-6)


def test_adaptive_threshold_without_units() -> None:
    rng = np.random.default_rng(7)
    src = rng.normal(size=(300, 3))
    truth = random_sim3(rng)
    dst = truth.apply(src) + rng.normal(0, 1e-3, (300, 3))
    dst[:30] += 3.0
    result = robust_umeyama(src, dst)
    assert not result.inliers[:30].any()
    assert result.inliers[30:].mean() > 0.95


def test_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match=r"\[N, 3\]"):
        umeyama(np.zeros((5, 2)), np.zeros((5, 2)))
    with pytest.raises(ValueError, match="at least 3"):
        umeyama(np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="degenerate"):
        umeyama(np.ones((5, 3)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="weights"):
        umeyama(np.eye(3), np.eye(3), weights=np.array([1.0, -1.0, 1.0]))
    with pytest.raises(ValueError, match="method"):
        robust_umeyama(np.eye(3), np.eye(3), method="lsq")
    with pytest.raises(ValueError, match="inlier_threshold"):
        robust_umeyama(np.eye(3), np.eye(3), inlier_threshold=0.0)


def test_symmetric_scale_is_exact_and_swaps_to_its_inverse() -> None:
    rng = np.random.default_rng(11)
    src = rng.normal(size=(60, 3))
    truth = random_sim3(rng)
    w = rng.uniform(0.5, 2.0, 60)
    est = umeyama(src, truth.apply(src), w, scale_estimator="symmetric")
    np.testing.assert_allclose(est.matrix(), truth.matrix(), atol=1e-9)
    noisy = truth.apply(src) + rng.normal(0, 0.3 * truth.scale, src.shape)
    there = umeyama(src, noisy, w, scale_estimator="symmetric").scale
    back = umeyama(noisy, src, w, scale_estimator="symmetric").scale
    assert there * back == pytest.approx(1.0, rel=1e-12)
    # The forward (least-squares) scale is not symmetric under noise.
    assert umeyama(src, noisy, w).scale * umeyama(noisy, src, w).scale < 0.99
    with pytest.raises(ValueError, match="scale_estimator"):
        umeyama(src, noisy, scale_estimator="median")


def test_symmetric_scale_is_unbiased_when_both_sides_are_noisy() -> None:
    """Two predictions of the same scene, each with 20 % multiplicative depth noise along the
    rays (a compact network's windows): the forward scale comes out ~14 % low (regression
    dilution), every time; the symmetric one within a percent. Chaining compounds the forward
    bias window after window."""
    rng = np.random.default_rng(12)
    scene = rng.uniform([-2.0, -1.0, 1.0], [2.0, 1.0, 5.0], (4000, 3))
    forward, symmetric = [], []
    for _ in range(10):
        src = scene * (1.0 + 0.2 * rng.standard_normal((len(scene), 1)))
        dst = 2.0 * scene * (1.0 + 0.2 * rng.standard_normal((len(scene), 1)))
        forward.append(robust_umeyama(src, dst, method="irls").transform.scale / 2.0)
        symmetric.append(
            robust_umeyama(src, dst, method="irls", scale_estimator="symmetric").transform.scale / 2.0
        )
    assert np.mean(symmetric) == pytest.approx(1.0, abs=0.02)
    assert np.mean(forward) < 0.92
    assert robust_umeyama(
        src, dst, method="ransac", inlier_threshold=1.0, scale_estimator="symmetric"
    ).transform.scale == pytest.approx(2.0, rel=0.05)


def test_clamped_cauchy_scale_equals_the_sorted_weighted_median() -> None:
    """The IRLS scale skips the sort when the clamp decides; it must give what the sort gives."""
    rng = np.random.default_rng(14)
    for _ in range(300):
        r = np.abs(rng.normal(0.0, rng.uniform(0.01, 2.0), 500))
        w = rng.random(500)
        floor = rng.uniform(0.0, 0.5)
        ceiling = floor + rng.uniform(0.0, 1.0)
        expected = min(max(alignment.MAD_TO_SIGMA * alignment._weighted_median(r, w), floor), ceiling)
        assert alignment._cauchy_sigma(r, w, floor, ceiling) == pytest.approx(expected, rel=1e-12)


def test_irls_tolerance_stops_where_running_every_round_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    """The IRLS stopping rule saves rounds (chaining latency) without moving the fit: on a
    chaining-like problem (6,000 pairs, a quarter inliers) the default tolerance ends within
    1e-3 degrees, 1e-4 in log scale and 1e-4 of the scene of a fit run for 200 rounds."""
    rng = np.random.default_rng(15)
    n = 6000
    src = rng.uniform(-2, 2, (n, 3)) + np.array([0.0, 0.0, 6.0])
    truth = random_sim3(rng)
    dst = truth.apply(src) + rng.normal(0, 0.02, (n, 3))
    bad = rng.random(n) > 0.25
    dst[bad] = truth.apply(src[bad] * rng.uniform(0.6, 1.4, (int(bad.sum()), 1)))
    weights = rng.uniform(0.5, 2.0, n)
    threshold = 0.05 * 6.0 * truth.scale

    def fit(iterations: int) -> alignment.AlignmentResult:
        return robust_umeyama(
            src, dst, weights, inlier_threshold=threshold, method="ransac", iterations=iterations, rng=3
        )

    early = fit(20)
    monkeypatch.setattr(alignment, "IRLS_TOLERANCE", 0.0)
    full = fit(200)
    assert full.irls_rounds == 200
    assert early.irls_rounds < 20
    relative = early.transform.rotation @ full.transform.rotation.T
    assert np.degrees(np.linalg.norm(Rotation.from_matrix(relative).as_rotvec())) < 1e-3
    assert abs(np.log(early.transform.scale / full.transform.scale)) < 1e-4
    scene = 6.0 * truth.scale
    assert np.linalg.norm(early.transform.translation - full.transform.translation) < 1e-4 * scene
