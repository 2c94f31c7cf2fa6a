"""Similarity (Sim(3)) and rigid (SE(3)) alignment of corresponding 3D point sets.

``dst ~= s R src + t``: Umeyama's closed form (Umeyama 1991, "Least-squares estimation of
transformation parameters between two point patterns"), with per-point weights, and two robust
wrappers around it:

* IRLS: iteratively re-weighted least squares with Cauchy weights on the residual norm, the
  residual scale re-estimated from the weighted median absolute residual each round (no tuning
  to the data's units beyond an optional floor);
* RANSAC + IRLS: minimal 3-point hypotheses scored by the weighted inlier count, the best one
  refined with IRLS on its inliers. Use it when more than ~30 % of the correspondences can be
  wrong (IRLS alone starts from the all-points least-squares fit, which a large outlier share
  can pull too far).

Two scale estimators (``scale_estimator``):

* ``"forward"``: Umeyama's least-squares scale ``s = tr(D S) / var(src)``, right when only
  ``dst`` is noisy (aligning an estimate to ground truth). Noise in ``src`` inflates ``var(src)``
  and shrinks ``s`` (regression dilution): with 5 % depth noise on both sides it is ~1 % low,
  with 20 % ~14 % low, every time.
* ``"symmetric"``: ``s = sqrt(var(dst) / var(src))`` (Horn 1987, "Closed-form solution of
  absolute orientation using unit quaternions", sec. 2.D: the scale that treats both sets
  alike, and ``1 / s`` when the sets are swapped). Right when both sides are predictions with
  similar noise, as when chaining windows: the forward scale's bias compounds window after
  window and shrinks a long run's map towards a point.

The rotation does not depend on the scale; the translation follows from both.

Everything is float64 numpy; points are ``[N, 3]`` rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ROBUST_METHODS = ("irls", "ransac")
SCALE_ESTIMATORS = ("forward", "symmetric")
# Cauchy weights w = 1 / (1 + (r / c)^2) with c = CAUCHY_C * sigma reach 95 % efficiency on
# Gaussian residuals (Holland & Welsch).
CAUCHY_C = 2.3849
# 1.4826 * MAD estimates a Gaussian's standard deviation.
MAD_TO_SIGMA = 1.4826
# IRLS stops once a round moves the transform by less than this share of its largest entry:
# far below any network's depth noise (~1e-2). At 1e-7 a trained network's chaining alignments
# ran 13.5 of their 20 rounds on average; at 1e-5 9.1, with the result within 2e-4 degrees,
# 2e-5 in log scale and 4e-6 of the scene depth of running all 200 (docs/benchmarks.md,
# "Latency in the node": the chaining's IRLS tolerance).
IRLS_TOLERANCE = 1e-5
# RANSAC draws its 3-point hypotheses in blocks fitted and scored together (numpy's batched
# SVD): the first block holds the least number of hypotheses ever drawn, later ones this many.
RANSAC_BLOCK = 32
# Hypotheses are scored on at most this many correspondences (a fixed random subset): the share
# of inliers of a 6,000-pair chaining alignment is known to about +-1 % from 2,048 of them, and
# the winner is refitted on all of its inliers.
RANSAC_SCORE_POINTS = 2048


@dataclass(frozen=True)
class Sim3:
    """A similarity transform ``x -> scale * rotation @ x + translation``.

    Attributes:
        scale: s > 0 (1 for a rigid transform).
        rotation: [3, 3] proper rotation.
        translation: [3].
    """

    scale: float
    rotation: np.ndarray
    translation: np.ndarray

    @staticmethod
    def identity() -> Sim3:
        return Sim3(1.0, np.eye(3), np.zeros(3))

    @staticmethod
    def from_matrix(matrix: np.ndarray) -> Sim3:
        """From a [4, 4] matrix [[s R, t], [0, 1]] (s = cube root of the determinant)."""
        m = np.asarray(matrix, np.float64)
        s = float(np.cbrt(np.linalg.det(m[:3, :3])))
        if s <= 0:
            raise ValueError("matrix has a non-positive determinant: not a similarity transform")
        return Sim3(s, m[:3, :3] / s, m[:3, 3].copy())

    def matrix(self) -> np.ndarray:
        """[4, 4] homogeneous matrix [[s R, t], [0, 1]]."""
        m = np.eye(4)
        m[:3, :3] = self.scale * self.rotation
        m[:3, 3] = self.translation
        return m

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Transform points [..., 3] -> [..., 3]."""
        return self.scale * (np.asarray(points, np.float64) @ self.rotation.T) + self.translation

    def inverse(self) -> Sim3:
        r_inv = self.rotation.T
        return Sim3(1.0 / self.scale, r_inv, -(r_inv @ self.translation) / self.scale)

    def __matmul__(self, other: Sim3) -> Sim3:
        """Composition: ``(a @ b).apply(x) == a.apply(b.apply(x))``."""
        return Sim3(
            self.scale * other.scale,
            self.rotation @ other.rotation,
            self.scale * (self.rotation @ other.translation) + self.translation,
        )

    def transform_poses(self, poses: np.ndarray) -> np.ndarray:
        """Move rigid poses [..., 4, 4] (frame -> this transform's source frame) to its target.

        A camera pose ``[Rc | tc]`` (camera -> source) becomes ``[R Rc | s R tc + t]`` (camera ->
        target): the rotation composes, the position is transformed like a point; the result stays
        rigid (the scale only moves the camera, it does not scale its axes).
        """
        poses = np.asarray(poses, np.float64)
        out = poses.copy()
        out[..., :3, :3] = self.rotation @ poses[..., :3, :3]
        out[..., :3, 3] = self.apply(poses[..., :3, 3])
        return out


@dataclass(frozen=True)
class AlignmentResult:
    """Outcome of a robust alignment.

    Attributes:
        transform: the estimated Sim3 (scale 1 when estimated as SE(3)).
        residuals: [N] Euclidean residual ``|s R src + t - dst|`` of every correspondence, in
            dst units.
        inliers: [N] bool, residual below the inlier threshold used.
        weights: [N] final per-point weights (input weights times robust weights).
        rms: weighted root-mean-square residual over the inliers (dst units).
        inlier_threshold: the threshold that defined ``inliers`` (dst units).
        hypotheses: RANSAC hypotheses that counted (0 for IRLS alone).
        irls_rounds: IRLS re-weighting rounds run.
    """

    transform: Sim3
    residuals: np.ndarray
    inliers: np.ndarray
    weights: np.ndarray
    rms: float
    inlier_threshold: float
    hypotheses: int = 0
    irls_rounds: int = 0

    @property
    def inlier_ratio(self) -> float:
        """Share of correspondences that are inliers, in [0, 1]."""
        return float(self.inliers.mean()) if self.inliers.size else 0.0


def _check_pairs(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None) -> tuple[np.ndarray, ...]:
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    if src.ndim != 2 or src.shape[1] != 3 or src.shape != dst.shape:
        raise ValueError(f"src and dst must both be [N, 3], got {src.shape} and {dst.shape}")
    if weights is None:
        w = np.ones(len(src))
    else:
        w = np.asarray(weights, np.float64).reshape(-1)
        if w.shape[0] != src.shape[0]:
            raise ValueError(f"weights must have {src.shape[0]} entries, got {w.shape[0]}")
        if (w < 0).any() or not np.isfinite(w).all():
            raise ValueError("weights must be finite and non-negative")
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise ValueError("src and dst must be finite")
    return src, dst, w


def umeyama(
    src: np.ndarray,
    dst: np.ndarray,
    weights: np.ndarray | None = None,
    with_scale: bool = True,
    scale_estimator: str = "forward",
) -> Sim3:
    """Weighted least-squares similarity (or rigid) transform taking ``src`` onto ``dst``.

    Minimises ``sum_i w_i |dst_i - (s R src_i + t)|^2`` in closed form (``"forward"``), or
    takes the symmetric scale (``"symmetric"``, see the module docstring).

    Args:
        src: [N, 3] points in the source frame.
        dst: [N, 3] corresponding points in the target frame.
        weights: [N] non-negative weights (None = all 1).
        with_scale: estimate s (Sim(3)); False fixes s = 1 (SE(3)).
        scale_estimator: "forward" or "symmetric" (with_scale only).

    Returns:
        The Sim3 ``dst ~= s R src + t``.

    Raises:
        ValueError: bad shapes, non-finite input, fewer than 3 points with positive weight, or
            a degenerate configuration (all weighted source points coincide).
    """
    if scale_estimator not in SCALE_ESTIMATORS:
        raise ValueError(f"scale_estimator must be one of {SCALE_ESTIMATORS}, got {scale_estimator!r}")
    src, dst, w = _check_pairs(src, dst, weights)
    return _fit(src, dst, w, with_scale, scale_estimator)


def _fit(
    src: np.ndarray,
    dst: np.ndarray,
    w: np.ndarray,
    with_scale: bool,
    scale_estimator: str,
    sq_norms: tuple[np.ndarray, np.ndarray] | None = None,
) -> Sim3:
    """:func:`umeyama` on pairs already checked by :func:`_check_pairs` (the robust loops call
    it tens of times on the same validated arrays). ``sq_norms``: the rows' squared norms
    ``(|src_i|^2, |dst_i|^2)`` when the caller refits the same pairs again and again."""
    if int((w > 0).sum()) < 3:
        raise ValueError("umeyama needs at least 3 correspondences with positive weight")
    w = w / w.sum()
    # Weighted moments in one pass over each set (the robust loops refit ~20 times on 6,000
    # pairs): cov = sum_i w_i d_i s_i^T - mu_d mu_s^T, var_s = sum_i w_i |s_i|^2 - |mu_s|^2.
    # Cancellation costs ~eps |mu|^2 / var relative: 1e-12 for points 100 spreads from the
    # origin; coincident points far from it leave a variance of ~eps |mu|^2, hence the test.
    src_sq, dst_sq = sq_norms if sq_norms is not None else (np.einsum("ij,ij->i", src, src), None)
    wd = dst * w[:, None]
    mu_s, mu_d = w @ src, wd.sum(axis=0)
    var_s = float(w @ src_sq - mu_s @ mu_s)
    if var_s <= 1e-18 + 1e-14 * float(mu_s @ mu_s):
        raise ValueError("degenerate source points: all weighted points coincide")
    cov = wd.T @ src - np.outer(mu_d, mu_s)  # [3, 3] sum_i w_i xd_i xs_i^T
    U, D, Vt = np.linalg.svd(cov)
    S = np.eye(3)
    # Reflection guard: force det(R) = +1 (flip the axis of the smallest singular value).
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        S[2, 2] = -1.0
    R = U @ S @ Vt
    if not with_scale:
        s = 1.0
    elif scale_estimator == "symmetric":
        second = w @ dst_sq if dst_sq is not None else np.einsum("ij,ij->", wd, dst)
        var_d = float(second - mu_d @ mu_d)
        s = float(np.sqrt(max(var_d, 0.0) / var_s))
    else:
        s = float(np.trace(np.diag(D) @ S) / var_s)
    if with_scale and s <= 0:
        raise ValueError("degenerate configuration: estimated scale is not positive")
    t = mu_d - s * R @ mu_s
    return Sim3(s, R, t)


def _fit_triplets(
    src: np.ndarray, dst: np.ndarray, with_scale: bool, scale_estimator: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Unweighted Umeyama on B minimal samples at once (RANSAC's hypotheses).

    Args:
        src, dst: [B, 3, 3] three corresponding points per sample.

    Returns:
        scale [B], rotation [B, 3, 3], translation [B, 3] and ok [B] (False for a degenerate
        sample: coincident or collinear points, a non-positive or non-finite scale).
    """
    mu_s, mu_d = src.mean(axis=1), dst.mean(axis=1)
    xs, xd = src - mu_s[:, None], dst - mu_d[:, None]
    var_s = (xs * xs).sum(axis=(1, 2)) / 3.0
    cov = np.einsum("bki,bkj->bij", xd, xs) / 3.0
    U, D, Vt = np.linalg.svd(cov)
    flip = np.linalg.det(U) * np.linalg.det(Vt) < 0
    signs = np.ones((len(src), 3))
    signs[flip, 2] = -1.0
    R = (U * signs[:, None, :]) @ Vt
    safe_var = np.where(var_s > 1e-18, var_s, 1.0)
    if not with_scale:
        s = np.ones(len(src))
    elif scale_estimator == "symmetric":
        s = np.sqrt((xd * xd).sum(axis=(1, 2)) / 3.0 / safe_var)
    else:
        s = (D * signs).sum(axis=1) / safe_var
    # Three collinear points leave the rotation about their line undetermined: the second
    # singular value of the covariance vanishes.
    ok = (var_s > 1e-18) & (D[:, 1] > 1e-9 * np.maximum(D[:, 0], 1e-300)) & (s > 0) & np.isfinite(s)
    t = mu_d - s[:, None] * np.einsum("bij,bj->bi", R, mu_s)
    return s, R, t, ok


def _residuals(transform: Sim3, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """[N] distances |s R src_i + t - dst_i| (float64 src and dst, as checked)."""
    diff = src @ (transform.scale * transform.rotation.T) + (transform.translation - dst)
    return np.sqrt(np.einsum("ij,ij->i", diff, diff))


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    cum = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cum, 0.5 * cum[-1])])


def _cauchy_sigma(r: np.ndarray, w: np.ndarray, floor: float, ceiling: float) -> float:
    """``MAD_TO_SIGMA x`` the weighted median of ``r``, clamped to [floor, ceiling].

    The clamp usually decides (with a trained network's ~12 % inliers the median residual is an
    outlier's, far above the ceiling): two weighted counts settle those cases without the sort.
    """
    half = 0.5 * float(w.sum())
    if float(w @ (r < ceiling / MAD_TO_SIGMA)) < half:  # the median is >= ceiling / MAD
        return ceiling
    if float(w @ (r <= floor / MAD_TO_SIGMA)) >= half:  # the median is <= floor / MAD
        return floor
    return min(max(MAD_TO_SIGMA * _weighted_median(r, w), floor), ceiling)


def _irls(
    src: np.ndarray,
    dst: np.ndarray,
    w: np.ndarray,
    with_scale: bool,
    iterations: int,
    sigma_floor: float,
    initial: Sim3 | None,
    sigma_ceiling: float = np.inf,
    scale_estimator: str = "forward",
) -> tuple[Sim3, np.ndarray, int]:
    """Cauchy-weighted IRLS; returns the transform, the final robust weights (not times w) and
    the rounds run.

    ``sigma_ceiling`` (the inlier threshold, when known) bounds the Cauchy scale: with half or
    more outliers the median residual is an outlier's, and an unbounded scale would let the
    outliers pull a good RANSAC start away. Stops once a round moves the transform's matrix by
    less than :data:`IRLS_TOLERANCE` of its largest entry (at least 1)."""
    sq_norms = (np.einsum("ij,ij->i", src, src), np.einsum("ij,ij->i", dst, dst))
    transform = initial if initial is not None else _fit(src, dst, w, with_scale, scale_estimator, sq_norms)
    robust = np.ones(len(src))
    rounds = 0
    for rounds in range(1, iterations + 1):  # noqa: B007 - the count is returned
        r = _residuals(transform, src, dst)
        # Residual norms of 3-d Gaussian noise are chi-distributed; the MAD-style estimate
        # below is a robust stand-in for their spread, floored so an exact fit does not
        # give zero and turn every weight into 0/0.
        sigma = _cauchy_sigma(r, w, sigma_floor, max(sigma_ceiling, sigma_floor))
        robust = 1.0 / (1.0 + (r / (CAUCHY_C * sigma)) ** 2)
        updated = _fit(src, dst, w * robust, with_scale, scale_estimator, sq_norms)
        before = transform.matrix()
        change = np.abs(updated.matrix() - before).max()
        transform = updated
        if change <= IRLS_TOLERANCE * max(1.0, np.abs(before).max()):
            break
    return transform, robust, rounds


def robust_umeyama(
    src: np.ndarray,
    dst: np.ndarray,
    weights: np.ndarray | None = None,
    with_scale: bool = True,
    inlier_threshold: float | None = None,
    method: str = "irls",
    iterations: int = 20,
    ransac_iterations: int = 200,
    rng: np.random.Generator | int | None = 0,
    scale_estimator: str = "forward",
) -> AlignmentResult:
    """Outlier-robust, weighted Sim(3)/SE(3) alignment ``dst ~= s R src + t``.

    Args:
        src, dst: [N, 3] corresponding points.
        weights: [N] prior confidence of each correspondence (None = all 1).
        with_scale: Sim(3) when True, SE(3) when False.
        inlier_threshold: residual (dst units) below which a correspondence counts as an inlier
            (RANSAC scoring, the reported inlier mask and RMS). None: 3 x the robust residual
            spread of the final fit (data-adaptive; then also the IRLS sigma floor is 0).
        method: "irls" or "ransac" (RANSAC seeds IRLS; see the module docstring).
        iterations: IRLS rounds (stops early on convergence).
        ransac_iterations: minimal-sample hypotheses for "ransac".
        rng: generator or seed for RANSAC sampling (deterministic by default).
        scale_estimator: "forward" (least squares; ``dst`` is the reference) or "symmetric"
            (both sides noisy, see the module docstring).

    Returns:
        AlignmentResult with per-point residuals, inlier mask and weighted inlier RMS.

    Raises:
        ValueError: as :func:`umeyama`, or an unknown method / non-positive threshold.
    """
    if method not in ROBUST_METHODS:
        raise ValueError(f"method must be one of {ROBUST_METHODS}, got {method!r}")
    if inlier_threshold is not None and not inlier_threshold > 0:
        raise ValueError(f"inlier_threshold must be positive, got {inlier_threshold}")
    src, dst, w = _check_pairs(src, dst, weights)
    # The IRLS sigma never drops below a third of the inlier threshold: residuals well inside
    # the threshold keep nearly full weight however tight the current fit is.
    floor = inlier_threshold / 3.0 if inlier_threshold is not None else 1e-12
    initial, hypotheses = None, 0
    if method == "ransac":
        initial, hypotheses = _ransac(
            src, dst, w, with_scale, inlier_threshold, ransac_iterations, rng, scale_estimator
        )
    ceiling = inlier_threshold if inlier_threshold is not None else np.inf
    transform, robust, rounds = _irls(
        src, dst, w, with_scale, iterations, floor, initial, ceiling, scale_estimator
    )
    r = _residuals(transform, src, dst)
    threshold = inlier_threshold
    if threshold is None:
        threshold = max(3.0 * MAD_TO_SIGMA * _weighted_median(r, np.maximum(w, 1e-300)), 1e-12)
    inliers = r < threshold
    wi = w * inliers
    rms = float(np.sqrt((wi @ r**2) / wi.sum())) if wi.sum() > 0 else float("inf")
    return AlignmentResult(transform, r, inliers, w * robust, rms, float(threshold), hypotheses, rounds)


RANSAC_CONFIDENCE = 0.999
RANSAC_MIN_TRIALS = 10


def ransac_trials_needed(inlier_share: float, confidence: float = RANSAC_CONFIDENCE) -> int:
    """Hypotheses after which, with probability ``confidence``, one 3-point sample has been all
    inliers, given the best hypothesis' (weighted) inlier share so far (adaptive RANSAC, Hartley
    & Zisserman, Multiple View Geometry, sec. 4.7.1). Never below :data:`RANSAC_MIN_TRIALS`:
    a lucky early hypothesis must not end the search on a few samples."""
    all_inliers = float(np.clip(inlier_share, 0.0, 1.0)) ** 3
    if all_inliers >= 1.0:
        return RANSAC_MIN_TRIALS
    if all_inliers <= 0.0:
        return np.iinfo(np.int32).max
    return max(RANSAC_MIN_TRIALS, int(np.ceil(np.log1p(-confidence) / np.log1p(-all_inliers))))


def _ransac(
    src: np.ndarray,
    dst: np.ndarray,
    w: np.ndarray,
    with_scale: bool,
    threshold: float | None,
    iterations: int,
    rng: np.random.Generator | int | None,
    scale_estimator: str = "forward",
) -> tuple[Sim3, int]:
    """Best 3-point hypothesis by weighted inlier count, refit on its inliers; returns it and the
    hypotheses that counted.

    Samples are drawn with probability proportional to the weights, in blocks fitted and scored
    together (:data:`RANSAC_BLOCK`) on a fixed subset of at most :data:`RANSAC_SCORE_POINTS`
    correspondences. With a threshold, sampling stops as soon as enough hypotheses were drawn
    for the best inlier share seen (:func:`ransac_trials_needed`), at most ``iterations``: a
    window that agrees with the map costs ~10 hypotheses. LMedS (no threshold) always draws
    ``iterations`` and scores by the weighted median residual."""
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    candidates = np.flatnonzero(w > 0)
    if len(candidates) < 3:
        raise ValueError("umeyama needs at least 3 correspondences with positive weight")
    cdf = np.cumsum(w[candidates])
    scored = candidates
    if len(scored) > RANSAC_SCORE_POINTS:
        scored = np.sort(gen.choice(candidates, RANSAC_SCORE_POINTS, replace=False))
    # Scoring in float32 about halves its cost; relative to the inlier threshold its rounding
    # (~1e-7 of the coordinates) decides nothing. Fits and the refit stay float64.
    src_s, dst_s, w_s = src[scored].astype(np.float32), dst[scored].astype(np.float32), w[scored]
    total = float(w_s.sum())
    best: Sim3 | None = None
    best_score = -np.inf
    needed, counted = iterations, 0
    while counted < min(iterations, needed):
        block = min(RANSAC_BLOCK if counted else RANSAC_MIN_TRIALS, iterations - counted)
        picks = np.searchsorted(cdf, gen.random((block, 3)) * cdf[-1], side="right")
        idx = candidates[np.minimum(picks, len(candidates) - 1)]
        distinct = (idx[:, 0] != idx[:, 1]) & (idx[:, 0] != idx[:, 2]) & (idx[:, 1] != idx[:, 2])
        s_b, R_b, t_b, ok = _fit_triplets(src[idx], dst[idx], with_scale, scale_estimator)
        ok &= distinct
        # Squared residuals [block, n_scored]; matmul broadcasts over the block (BLAS).
        sR = (s_b[:, None, None] * R_b.transpose(0, 2, 1)).astype(np.float32)
        diff = src_s @ sR + (t_b[:, None, :].astype(np.float32) - dst_s)
        r2 = np.einsum("bnk,bnk->bn", diff, diff)
        if threshold is None:  # no threshold: least weighted median residual (LMedS)
            order = np.argsort(r2, axis=1)
            cum = np.cumsum(w_s[order], axis=1)
            at = (cum < 0.5 * cum[:, -1:]).sum(axis=1)
            scores = -np.take_along_axis(r2, order, axis=1)[np.arange(block), at]
        else:
            scores = (r2 < threshold * threshold) @ w_s
        # Hypotheses count in drawing order, as if drawn one by one, until enough were drawn.
        for j in range(block):
            if counted >= min(iterations, needed):
                break
            counted += 1
            if ok[j] and scores[j] > best_score:
                best, best_score = Sim3(float(s_b[j]), R_b[j].copy(), t_b[j].copy()), scores[j]
                if threshold is not None:
                    needed = ransac_trials_needed(best_score / total)
    if best is None:
        return _fit(src, dst, w, with_scale, scale_estimator), counted
    r = _residuals(best, src, dst)
    if threshold is not None:
        cut = threshold
    else:
        cut = 3.0 * MAD_TO_SIGMA * _weighted_median(r, np.maximum(w, 1e-300))
    keep = (r < max(cut, 1e-12)) & (w > 0)
    if keep.sum() >= 3:
        try:
            return _fit(src[keep], dst[keep], w[keep], with_scale, scale_estimator), counted
        except ValueError:
            pass
    return best, counted
