"""Sim(3) pose graph of keyframes, optimised incrementally with GTSAM's iSAM2.

Why Sim(3): a VGGT window has no metric scale, and chaining windows lets the scale drift as much
as the position (the dominant failure of VGGT-based SLAM). Each keyframe is a node
``X_k = (s_k, R_k, t_k)``: camera (in the node's *local units*) -> global frame G, as
``x -> s_k R_k x + t_k`` (:class:`vggt_ros.geometry.alignment.Sim3`). A node's local unit is the
unit of the window that first mapped it, so its initial scale is that window's chaining scale.

Edges are relative similarities ``Z_ab ~ X_a^-1 X_b``:

* odometry edges from every window's relative poses (:func:`window_relative`), with standard
  deviations that grow with the window's alignment residual;
* loop edges from verification windows aligned on the old keyframes (same formula), with a
  Cauchy robust kernel so a bad one cannot drag the whole graph;
* odometry-sensor edges (wheel or visual-inertial odometry, metres) between consecutive
  reference keyframes once the metric scale is known (:meth:`PoseGraph.add_sensor_odometry`):
  they constrain the rigid motion between two keyframes in metres, so they pull back the scale
  drift that window edges cannot see;
* a prior fixes the first keyframe (the gauge).

GTSAM is imported only here. Its ``Similarity3(R, t, s)`` maps ``p -> s (R p + t)``; the
conversions below translate to and from our ``s R p + t``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from vggt_ros.geometry.alignment import Sim3

logger = logging.getLogger(__name__)

try:
    import gtsam
except ImportError as _exc:  # optional: only the loop-closure back end needs it
    gtsam = None
    _GTSAM_IMPORT_ERROR: ImportError | None = _exc
else:
    _GTSAM_IMPORT_ERROR = None


def require_gtsam() -> None:
    """Raise a clear ImportError when GTSAM is missing (everything but the pose graph runs
    without it: inference, chaining, the map, benchmarks and training)."""
    if gtsam is None:
        raise ImportError(
            "the loop-closure back end needs GTSAM (pip install gtsam); "
            "install it, or turn loop closure off (node parameter loop.enabled:=false, "
            "vggt-ros eval --param loop.enabled=false)"
        ) from _GTSAM_IMPORT_ERROR


def to_gtsam(s: Sim3) -> gtsam.Similarity3:
    """Our Sim3 (``s R p + t``) as GTSAM's Similarity3 (``s (R p + t')``, t' = t / s)."""
    return gtsam.Similarity3(
        gtsam.Rot3(np.asarray(s.rotation, np.float64)), np.asarray(s.translation) / s.scale, s.scale
    )


def from_gtsam(g: gtsam.Similarity3) -> Sim3:
    scale = float(g.scale())
    return Sim3(
        scale, np.asarray(g.rotation().matrix(), np.float64), np.asarray(g.translation(), np.float64) * scale
    )


def node_sim3(window_to_g: Sim3, pose_in_window: np.ndarray, node_scale: float) -> Sim3:
    """``X_k`` implied by a window: the keyframe's rigid pose in the window (``[4, 4]``, window
    units), moved to G by the window's similarity, in the node's local units (``node_scale``).

    ``X_k = S_W  o  W_k  o  D(node_scale / s_W)`` with ``D(c)`` a pure scaling.
    """
    rigid = Sim3(
        1.0, np.asarray(pose_in_window[:3, :3], np.float64), np.asarray(pose_in_window[:3, 3], np.float64)
    )
    unit = Sim3(node_scale / window_to_g.scale, np.eye(3), np.zeros(3))
    return window_to_g @ rigid @ unit


def interpolate_correction(correction: Sim3, fraction: float) -> Sim3:
    """``exp(fraction * log(correction))``: the share ``fraction`` (0 = identity, 1 = all) of
    a G <- G similarity along its geodesic in Sim(3)."""
    require_gtsam()
    xi = gtsam.Similarity3.Logmap(to_gtsam(correction))
    return from_gtsam(gtsam.Similarity3.Expmap(float(fraction) * xi))


def window_relative(
    window_to_g: Sim3, pose_a: np.ndarray, pose_b: np.ndarray, scale_a: float, scale_b: float
) -> Sim3:
    """The relative similarity ``Z_ab = X_a^-1 X_b`` a window measures between two of its
    keyframes (their poses in the window, rigid, window units) for nodes of local scales
    ``scale_a``, ``scale_b``. It depends on the window's alignment only through its scale."""
    return node_sim3(window_to_g, pose_a, scale_a).inverse() @ node_sim3(window_to_g, pose_b, scale_b)


@dataclass(frozen=True)
class EdgeSigmas:
    """Standard deviations of an edge: rotation (rad), translation (local units of the first
    node, i.e. about a window's mean scene depth), log of the relative scale."""

    rotation: float = 0.02
    translation: float = 0.05
    log_scale: float = 0.03

    def scaled(self, factor: float) -> EdgeSigmas:
        return EdgeSigmas(self.rotation * factor, self.translation * factor, self.log_scale * factor)

    def noise(self) -> gtsam.noiseModel.Base:
        # GTSAM's Similarity3 tangent order: rotation (3), translation (3), log scale (1).
        sigmas = np.array([self.rotation] * 3 + [self.translation] * 3 + [self.log_scale], np.float64)
        return gtsam.noiseModel.Diagonal.Sigmas(sigmas)


@dataclass(frozen=True)
class SensorSigmas:
    """Standard deviations of an odometry-sensor edge: rotation (rad), and translation in metres
    as ``floor + share * distance`` (wheel odometry errs in proportion to the distance driven)."""

    rotation: float = float(np.radians(0.5))
    translation_share: float = 0.02
    translation_floor: float = 0.005

    def noise(self, distance_m: float) -> gtsam.noiseModel.Base:
        translation = self.translation_floor + self.translation_share * float(distance_m)
        sigmas = np.array([self.rotation] * 3 + [translation] * 3, np.float64)
        return gtsam.noiseModel.Diagonal.Sigmas(sigmas)


def _rotation_log(rotation: np.ndarray) -> np.ndarray:
    return np.asarray(gtsam.Rot3.Logmap(gtsam.Rot3(rotation)), np.float64)


def sensor_residual(x_a: Sim3, x_b: Sim3, measured: np.ndarray, metres_per_unit: float) -> np.ndarray:
    """[6] error of an odometry-sensor edge: rotation (rad, axis-angle of
    ``R_meas^T R_a^T R_b``) and translation (metres, ``m R_a^T (t_b - t_a) - t_meas``).

    ``x_a``, ``x_b`` are the nodes (camera -> G); ``measured`` the rigid [4, 4] camera b ->
    camera a in metres; ``metres_per_unit`` the size of one G unit in metres. The nodes' scales
    (their local depth units) are not observed by odometry and do not enter.
    """
    rel_R = x_a.rotation.T @ x_b.rotation
    rel_t = x_a.rotation.T @ (x_b.translation - x_a.translation) * metres_per_unit
    return np.concatenate((_rotation_log(measured[:3, :3].T @ rel_R), rel_t - measured[:3, 3]))


def _sensor_factor(
    a: int, b: int, metric_key: int, measured: np.ndarray, noise: gtsam.noiseModel.Base
) -> gtsam.CustomFactor:
    """GTSAM factor of :func:`sensor_residual` on the nodes ``a``, ``b`` and the graph's one
    metres-per-G-unit variable ``metric_key`` (a 1-vector). Jacobians by central differences in
    each variable's own tangent space (``retract``), so they follow GTSAM's conventions exactly."""
    measured = np.asarray(measured, np.float64).copy()
    step = 1e-6

    def residual_of(g_a: gtsam.Similarity3, g_b: gtsam.Similarity3, metres: float) -> np.ndarray:
        return sensor_residual(from_gtsam(g_a), from_gtsam(g_b), measured, metres)

    def error(_factor: gtsam.CustomFactor, values: gtsam.Values, jacobians: list | None) -> np.ndarray:
        g_a, g_b = values.atSimilarity3(a), values.atSimilarity3(b)
        metres = float(values.atVector(metric_key)[0])
        residual = residual_of(g_a, g_b, metres)
        if jacobians is not None:
            for slot, moved in ((0, "a"), (1, "b")):
                J = np.zeros((6, 7))
                for k in range(7):
                    delta = np.zeros(7)
                    delta[k] = step
                    cols = []
                    for sign in (1.0, -1.0):
                        ga = g_a.retract(sign * delta) if moved == "a" else g_a
                        gb = g_b.retract(sign * delta) if moved == "b" else g_b
                        cols.append(residual_of(ga, gb, metres))
                    J[:, k] = (cols[0] - cols[1]) / (2 * step)
                jacobians[slot] = J
            dm = step * max(1.0, abs(metres))
            jacobians[2] = (
                (residual_of(g_a, g_b, metres + dm) - residual_of(g_a, g_b, metres - dm)) / (2 * dm)
            )[:, None]
        return residual

    return gtsam.CustomFactor(noise, [a, b, metric_key], error)


@dataclass
class PoseGraphStats:
    keyframes: int = 0
    odometry_edges: int = 0
    loop_edges: int = 0
    sensor_edges: int = 0
    updates: int = 0
    failed_updates: int = 0  # iSAM2 steps that failed and were recovered by a restart
    last_update_ms: float = 0.0
    update_ms: list[float] = field(default_factory=list)


class PoseGraph:
    """Keyframe Sim(3) pose graph with incremental (iSAM2) optimisation.

    Keyframe ids are the node keys; one extra variable (``METRIC_KEY``, a key no keyframe id
    reaches) holds the metres per G unit once odometry-sensor edges exist.

    Args:
        relinearize_threshold, relinearize_skip: iSAM2 settings (defaults suit graphs whose
            poses move little per update).
        loop_kernel: Cauchy parameter of loop edges (in standard deviations).
        history: update times kept for the statistics.
    """

    def __init__(
        self,
        relinearize_threshold: float = 0.01,
        relinearize_skip: int = 1,
        loop_kernel: float = 1.0,
        history: int = 1000,
    ) -> None:
        require_gtsam()
        params = gtsam.ISAM2Params()
        params.setRelinearizeThreshold(relinearize_threshold)
        params.relinearizeSkip = relinearize_skip
        self._isam = gtsam.ISAM2(params)
        self._params = params
        self._pending_graph = gtsam.NonlinearFactorGraph()
        self._pending_values = gtsam.Values()
        # Every factor ever added, for a batch re-optimisation from a new starting point
        # (:meth:`reoptimize_from`); bounded because the back end re-seeds large graphs.
        self._all_factors = gtsam.NonlinearFactorGraph()
        self._estimate: dict[int, Sim3] = {}
        self._scales: dict[int, float] = {}
        self._loop_kernel = loop_kernel
        self._history = history
        self._has_metric = False
        self._weak_priors: set[int] = set()  # nodes given a gauge prior by a restart
        self.stats = PoseGraphStats()

    METRIC_KEY = 7854277750134145024  # gtsam.symbol("m", 0): above any keyframe id

    def __contains__(self, kf_id: int) -> bool:
        return kf_id in self._scales

    def __len__(self) -> int:
        return len(self._scales)

    def node_scale(self, kf_id: int) -> float:
        """The local scale the node was created with (its unit)."""
        return self._scales[kf_id]

    def units(self) -> np.ndarray:
        """[N] the nodes' units in creation order: how big each new keyframe's window was mapped
        against the first one. Their drift is the scale drift of a long run (docs/soak.md)."""
        return np.fromiter(self._scales.values(), float, len(self._scales))

    def add_keyframe(self, kf_id: int, pose: Sim3, fixed: bool = False, unit: float | None = None) -> None:
        """A new node with its initial pose; ``fixed`` pins it (a tight prior: the gauge).
        ``unit`` is the node's local unit (default: the pose's scale; a re-seeded graph passes
        the unit the node was created with)."""
        if kf_id in self._scales:
            raise ValueError(f"keyframe {kf_id} is already in the pose graph")
        self._scales[kf_id] = float(unit if unit is not None else pose.scale)
        self._pending_values.insert(kf_id, to_gtsam(pose))
        if fixed:
            prior = gtsam.noiseModel.Isotropic.Sigma(7, 1e-6)
            self._pending_graph.add(gtsam.PriorFactorSimilarity3(kf_id, to_gtsam(pose), prior))
        self.stats.keyframes += 1

    def add_odometry(self, a: int, b: int, relative: Sim3, sigmas: EdgeSigmas = EdgeSigmas()) -> None:
        """An edge ``X_a^-1 X_b ~ relative`` from a window."""
        self._between(a, b, relative, sigmas.noise())
        self.stats.odometry_edges += 1

    def add_loop(self, a: int, b: int, relative: Sim3, sigmas: EdgeSigmas = EdgeSigmas()) -> None:
        """A loop edge, under a Cauchy robust kernel."""
        robust = gtsam.noiseModel.Robust.Create(
            gtsam.noiseModel.mEstimator.Cauchy.Create(self._loop_kernel), sigmas.noise()
        )
        self._between(a, b, relative, robust)
        self.stats.loop_edges += 1

    def add_sensor_odometry(
        self,
        a: int,
        b: int,
        measured: np.ndarray,
        metres_per_unit: float,
        sigmas: SensorSigmas = SensorSigmas(),
    ) -> None:
        """An odometry-sensor edge: camera b -> camera a measured as the rigid [4, 4]
        ``measured`` in metres (from the odom poses of the two keyframes). See
        :func:`sensor_residual`.

        The size of a G unit in metres is one variable of the graph shared by every such edge
        (a scale estimate that changes over the run would otherwise bend the trajectory);
        ``metres_per_unit`` is its initial value, taken by the first edge (with a weak prior,
        half its value as standard deviation) and ignored by later ones.
        """
        for k in (a, b):
            if k not in self._scales:
                raise KeyError(f"keyframe {k} is not in the pose graph")
        if not np.isfinite(metres_per_unit) or metres_per_unit <= 0:
            raise ValueError(f"metres_per_unit must be positive, got {metres_per_unit}")
        if not self._has_metric:
            guess = np.array([float(metres_per_unit)])
            self._pending_values.insert(self.METRIC_KEY, guess)
            prior = gtsam.noiseModel.Isotropic.Sigma(1, 0.5 * float(metres_per_unit))
            self._pending_graph.add(gtsam.PriorFactorVector(self.METRIC_KEY, guess, prior))
            self._has_metric = True
        noise = sigmas.noise(float(np.linalg.norm(np.asarray(measured)[:3, 3])))
        self._pending_graph.add(_sensor_factor(a, b, self.METRIC_KEY, measured, noise))
        self.stats.sensor_edges += 1

    def metres_per_unit(self) -> float | None:
        """The graph's estimate of a G unit in metres (None before any odometry-sensor edge)."""
        if not self._has_metric:
            return None
        if self._pending_values.exists(self.METRIC_KEY):
            return float(self._pending_values.atVector(self.METRIC_KEY)[0])
        return float(self._isam.calculateEstimateVector(self.METRIC_KEY)[0])

    def _between(self, a: int, b: int, relative: Sim3, noise: gtsam.noiseModel.Base) -> None:
        for k in (a, b):
            if k not in self._scales:
                raise KeyError(f"keyframe {k} is not in the pose graph")
        self._pending_graph.add(gtsam.BetweenFactorSimilarity3(a, b, to_gtsam(relative), noise))

    def update(self, extra_iterations: int = 0) -> None:
        """Add what is pending to iSAM2 (``extra_iterations`` more iSAM2 steps, e.g. after a
        loop closure moved many poses). Cost per call stays bounded as the graph grows: estimates
        are read back lazily, per keyframe (:meth:`pose`) or all at once (:meth:`poses`)."""
        t0 = time.perf_counter()
        self._all_factors.push_back(self._pending_graph)
        try:
            self._isam.update(self._pending_graph, self._pending_values)
            for _ in range(extra_iterations):
                self._isam.update()
        except RuntimeError as exc:  # GTSAM: an indeterminate or ill-conditioned linear system
            self._recover(exc)
        finally:
            # Even when the recovery fails too (the window fails, the caller counts it): what
            # was pending is in _all_factors and maybe in iSAM2 already, and handing it to the
            # next update again would fail on 'key already exists' for every later window.
            self._pending_graph = gtsam.NonlinearFactorGraph()
            self._pending_values = gtsam.Values()
            self._estimate = {}  # stale: read back on demand
        self._count_update(t0)

    def _recover(self, exc: RuntimeError) -> None:
        """Restart iSAM2 after a failed step, which leaves its state half-updated (the new
        values inserted, the solution not): the next update would fail again on the same keys
        and every later window with it (a 30-minute soak lost 190 windows that way).

        Batch Levenberg-Marquardt (its damping copes with a near-singular system) over every
        factor from the last estimates, then a fresh iSAM2 from the result; if the system is
        still indeterminate, every node also gets a weak prior at that result (10 units and
        radians of standard deviation: it fixes the gauge, not the poses)."""
        self.stats.failed_updates += 1
        reason = " ".join(str(exc).split())[:160]  # GTSAM's messages span several lines
        logger.warning("pose graph update failed (%s); restarting it from a batch solve", reason)
        initial = self._isam.calculateEstimate()  # holds the failed step's new values too
        for key in self._pending_values.keys():  # noqa: SIM118 - gtsam.Values is not iterable
            if not initial.exists(key):  # not inserted before the step failed
                initial.insert(key, self._pending_values.atSimilarity3(key))
        params = gtsam.LevenbergMarquardtParams()
        params.setMaxIterations(50)
        optimised = gtsam.LevenbergMarquardtOptimizer(self._all_factors, initial, params).optimize()
        self._restart_isam(optimised)

    def _restart_isam(self, values: gtsam.Values) -> None:
        """A fresh iSAM2 over every factor from ``values``; when that system is indeterminate,
        every node also gets a weak prior at ``values`` (see :meth:`_recover`)."""
        self._isam = gtsam.ISAM2(self._params)
        try:
            self._isam.update(self._all_factors, values)
        except RuntimeError:
            weak = gtsam.noiseModel.Isotropic.Sigma(7, 10.0)
            for k in self._scales.keys() - self._weak_priors:  # once per node: bounded
                self._all_factors.add(gtsam.PriorFactorSimilarity3(k, values.atSimilarity3(k), weak))
                self._weak_priors.add(k)
            self._isam = gtsam.ISAM2(self._params)
            self._isam.update(self._all_factors, values)

    def _count_update(self, t0: float) -> None:
        """Statistics of an update that started at ``t0`` (``time.perf_counter``)."""
        ms = (time.perf_counter() - t0) * 1e3
        self.stats.updates += 1
        self.stats.last_update_ms = ms
        self.stats.update_ms.append(ms)
        del self.stats.update_ms[: -self._history]

    def reoptimize_from(self, moved: dict[int, Sim3], max_iterations: int = 50) -> None:
        """Optimise the whole graph, pending edges included, in batch (Levenberg-Marquardt)
        starting from the current estimates with ``moved``'s nodes replaced, and restart iSAM2
        from the result.

        Why: iSAM2 relinearises around its current estimate. After a loop whose correction is
        large (tens of degrees after a long lap), the new loop edges start hundreds of standard
        deviations off, their robust kernel gives them almost no weight, and the optimisation
        stays where chaining put the poses. Starting from poses that already carry the
        correction (:func:`interpolate_correction` along the loop) lets the loop edges count.
        Add the loop edges first: without them the batch solve returns to the chain.

        Only the moved nodes (and new or metric variables) are optimised, the others held at
        their estimates (the nodes a loop leaves behind are where the chain and earlier loops
        put them; iSAM2 refines everything from there): the batch solve costs what the loop's
        span costs, not the whole graph's (which a long run pays at every loop: about 0.3 s on
        two CPU cores at 1,800 keyframes). Then iSAM2 restarts over every factor (linear in
        the graph, bounded by the back end's ``max_keyframes``).
        """
        t0 = time.perf_counter()
        for k in moved:
            if k not in self._scales:
                raise KeyError(f"keyframe {k} is not in the pose graph")
        self._all_factors.push_back(self._pending_graph)
        initial = self._isam.calculateEstimate()
        initial.insert(self._pending_values)
        for k, pose in moved.items():
            initial.update(k, to_gtsam(pose))
        free = set(moved) | set(self._pending_values.keys())
        if self._has_metric:
            free.add(self.METRIC_KEY)
        local, local_initial = self._local_problem(free, initial)
        params = gtsam.LevenbergMarquardtParams()
        params.setMaxIterations(max_iterations)
        optimised = gtsam.LevenbergMarquardtOptimizer(local, local_initial, params).optimize()
        for k in free:
            if not optimised.exists(k):
                continue
            if k == self.METRIC_KEY:
                initial.update(k, optimised.atVector(k))
            else:
                initial.update(k, optimised.atSimilarity3(k))
        self._restart_isam(initial)
        self._pending_graph = gtsam.NonlinearFactorGraph()
        self._pending_values = gtsam.Values()
        self._estimate = {}
        self._count_update(t0)

    def _local_problem(
        self, free: set[int], values: gtsam.Values
    ) -> tuple[gtsam.NonlinearFactorGraph, gtsam.Values]:
        """The factors touching a ``free`` variable, with every other variable they touch held
        at its value by a tight prior; and the starting values of every variable in them (from
        ``values``)."""
        local = gtsam.NonlinearFactorGraph()
        keys: set[int] = set()
        for i in range(self._all_factors.size()):
            factor = self._all_factors.at(i)
            if factor is None:
                continue
            factor_keys = factor.keys()
            if any(k in free for k in factor_keys):
                local.add(factor)
                keys.update(factor_keys)
        start = gtsam.Values()
        tight = gtsam.noiseModel.Isotropic.Sigma(7, 1e-6)
        for k in keys:
            if k == self.METRIC_KEY:
                start.insert(k, values.atVector(k))
                continue
            start.insert(k, values.atSimilarity3(k))
            if k not in free:
                local.add(gtsam.PriorFactorSimilarity3(k, values.atSimilarity3(k), tight))
        return local, start

    def pose(self, kf_id: int) -> Sim3:
        """Current estimate of ``X_k`` (its initial value until the next :meth:`update`)."""
        if kf_id not in self._estimate:
            if kf_id not in self._scales:
                raise KeyError(f"keyframe {kf_id} is not in the pose graph")
            if self._pending_values.exists(kf_id):
                return from_gtsam(self._pending_values.atSimilarity3(kf_id))
            self._estimate[kf_id] = from_gtsam(self._isam.calculateEstimateSimilarity3(kf_id))
        return self._estimate[kf_id]

    def poses(self) -> dict[int, Sim3]:
        """Every node's current estimate (one pass over the whole graph)."""
        values = self._isam.calculateEstimate()
        out = {}
        for k in self._scales:
            if self._pending_values.exists(k):
                out[k] = from_gtsam(self._pending_values.atSimilarity3(k))
            else:
                out[k] = from_gtsam(values.atSimilarity3(k))
        self._estimate = dict(out)
        return out
