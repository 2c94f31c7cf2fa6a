"""Benchmark VGGT inference modes side by side: per-stage median time, peak memory, accuracy.

Every mode runs in the same process on the same inputs and weights, so the ratio between the
``official`` baseline (float32 weights, bf16 autocast, heads in float32, all layers kept) and a
fast mode is measured, not assumed. Accuracy is the relative L2 error of each output against
the ``fp32`` mode: ``||out - ref|| / ||ref||``.

Each timed window runs the node's own path, :meth:`Predictor.predict`: ``preprocess`` (camera
frames of twice the model size, uint8, resized to it and uploaded), the network stage by stage
(``aggregator``, ``camera``, ``depth``, ``points``, ``tracks``; their sum with the gaps between
them is "total"), and ``postprocess`` (download, camera decoding, frames). "end-to-end" is the
wall time of the whole call.

Inputs are frames of the procedural scene renderer (real image statistics, not noise); weights
are the seeded recipe weights (realistic magnitudes, offline) unless a checkpoint is given.
"""

from __future__ import annotations

import gc
import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from vggt_ros.engine.modes import get_mode
from vggt_ros.engine.predictor import Predictor
from vggt_ros.engine.timing import StageTimer
from vggt_ros.model.config import VGGTConfig, get_config
from vggt_ros.model.vggt import VGGT

logger = logging.getLogger(__name__)

ACCURACY_KEYS = (
    "pose_enc",
    "depth",
    "depth_conf",
    "world_points",
    "world_points_conf",
    "track",
    "vis",
    "conf",
)


@dataclass(frozen=True)
class BenchCase:
    """One workload: ``frames`` images of ``height`` x ``width`` and ``tracks`` query points."""

    frames: int
    height: int
    width: int
    tracks: int = 0


@dataclass
class BenchRow:
    """Result of one (mode, backend, case)."""

    mode: str
    backend: str
    frames: int
    height: int
    width: int
    tracks: int
    total_ms: float
    stages_ms: dict[str, float]
    peak_gb: float
    first_call_s: float
    repeats: int
    error: str | None = None
    stage_peak_gb: dict[str, float] = field(default_factory=dict)
    end_to_end_ms: float = float("nan")
    stride: int = 0
    """Sliding windows advanced by this many new frames per call (0: the same window again)."""
    frame_cache: bool = False
    """Whether the runner reused encoder tokens of frames seen in earlier windows."""

    @property
    def per_keyframe_ms(self) -> float:
        """Network time per new keyframe in the steady state (total / stride)."""
        return self.total_ms / self.stride if self.stride else float("nan")


@dataclass
class BenchReport:
    device: str
    torch_version: str
    config: str
    weights: str
    rows: list[BenchRow] = field(default_factory=list)
    accuracy: dict[str, dict[str, float]] = field(default_factory=dict)
    accuracy_case: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def synthetic_frames(case: BenchCase, seed: int = 0) -> torch.Tensor:
    """[S, 3, H, W] float32 frames in [0, 1] from the scene renderer (distinct views, cycled)."""
    from vggt_ros.eval.synthetic import render_sequence

    unique = min(case.frames, 16)
    seq = render_sequence(num_frames=max(unique, 2), height=case.height, width=case.width, seed=seed)
    images = torch.from_numpy(seq.images[:unique]).permute(0, 3, 1, 2).float() / 255.0
    reps = -(-case.frames // unique)
    return images.repeat(reps, 1, 1, 1)[: case.frames].contiguous()


APPROXIMATE_OPTIONS = frozenset({"global_key_stride", "global_key_weighting"})
"""Runner options that change results on purpose (never applied to the float32 reference or to
the official baseline)."""

STAGE_ORDER = ("preprocess", "encoder", "aggregator", "camera", "depth", "points", "tracks", "postprocess")

CAMERA_SCALE = 2
"""Bench camera frames are rendered at this multiple of the model size and resized down by the
predictor's preprocessing, as a camera driver's frames would be (700x1036 for 350x518)."""


def camera_frames(case: BenchCase, seed: int = 0) -> list[np.ndarray]:
    """S uint8 RGB frames [CAMERA_SCALE * H, CAMERA_SCALE * W, 3] (distinct views, cycled)."""
    from vggt_ros.eval.synthetic import render_sequence

    unique = min(case.frames, 16)
    height, width = CAMERA_SCALE * case.height, CAMERA_SCALE * case.width
    seq = render_sequence(num_frames=max(unique, 2), height=height, width=width, seed=seed)
    return [seq.images[i % unique] for i in range(case.frames)]


def query_grid(n: int, height: int, width: int) -> torch.Tensor:
    """[n, 2] query pixels spread over the image (deterministic)."""
    g = torch.Generator().manual_seed(n)
    return torch.rand(n, 2, generator=g) * torch.tensor([width - 1.0, height - 1.0])


def relative_errors(out: dict[str, Any], ref: dict[str, Any]) -> dict[str, float]:
    """Relative L2 error per output present in both (computed in float64 on the CPU)."""
    errors = {}
    for key in ACCURACY_KEYS:
        if key in out and key in ref:
            a, b = out[key].detach().double().cpu(), ref[key].detach().double().cpu()
            errors[key] = float(torch.linalg.norm(a - b) / torch.linalg.norm(b).clamp_min(1e-30))
    return errors


def _peak_gb(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else float("nan")


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def stream_length(case: BenchCase, stride: int, repeats: int, warmup: int) -> int:
    """Frames a sliding-window run of ``time_case`` consumes (every call takes a new window)."""
    return case.frames + stride * (warmup + repeats + 1)


def time_case(
    predictor: Predictor,
    case: BenchCase,
    repeats: int,
    warmup: int,
    frames: list[np.ndarray] | None = None,
    stride: int = 0,
) -> BenchRow:
    """Median per-stage, network and end-to-end time of ``repeats`` windows after ``warmup``.

    With ``stride`` > 0, ``frames`` is a stream (:func:`stream_length` frames) and every call
    takes the next window of ``case.frames`` frames, ``stride`` of them new, with their stream
    positions as frame keys: a predictor with a frame cache then runs in its steady state, as
    in the node (window 8, stride 4: 4 of 8 frames already encoded).
    """
    device = predictor.device
    runner = predictor.runner
    assert runner is not None  # the bench builds VGGT predictors
    frames = frames if frames is not None else camera_frames(case)
    queries = None
    if case.tracks:  # spread over the model image, given in camera pixels
        queries = query_grid(case.tracks, case.height, case.width).numpy() * CAMERA_SCALE
    calls = 0

    def predict(timer: StageTimer | None = None) -> None:
        nonlocal calls
        if not stride:
            predictor.predict(frames, queries, timer=timer)
            return
        start = calls * stride
        window = frames[start : start + case.frames]
        if len(window) < case.frames:
            raise ValueError(f"the frame stream is too short for call {calls + 1} (see stream_length)")
        predictor.predict(window, queries, timer=timer, frame_keys=list(range(start, start + case.frames)))
        calls += 1

    _reset_peak(device)
    t0 = time.perf_counter()
    predict()  # returns numpy: the device is idle afterwards
    first_call_s = time.perf_counter() - t0
    for _ in range(max(warmup - 1, 0)):
        predict()
    memory = StageTimer(device, track_memory=True)  # one untimed pass: peak memory per stage
    predict(memory)
    memory.peak_gb.pop("inference", None)  # nested: it would repeat its last stage's peak
    _reset_peak(device)
    totals: list[float] = []
    end_to_end: list[float] = []
    stages: dict[str, list[float]] = {}
    for _ in range(repeats):
        timer = StageTimer(device)
        t0 = time.perf_counter()
        predict(timer)
        end_to_end.append(1000.0 * (time.perf_counter() - t0))
        for name, ms in timer.results().items():
            if name == "inference":
                totals.append(ms)
            else:
                stages.setdefault(name, []).append(ms)
    return BenchRow(
        mode=runner.mode.name,
        backend=runner.backend,
        frames=case.frames,
        height=case.height,
        width=case.width,
        tracks=case.tracks,
        total_ms=statistics.median(totals),
        stages_ms={k: statistics.median(v) for k, v in stages.items()},
        peak_gb=_peak_gb(device),
        first_call_s=first_call_s,
        repeats=repeats,
        stage_peak_gb=memory.peak_gb,
        end_to_end_ms=statistics.median(end_to_end),
        stride=stride,
        frame_cache=predictor.caches_frames,
    )


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_benchmark(
    config: str | VGGTConfig,
    weights: Callable[[], dict[str, torch.Tensor]] | None,
    cases: Sequence[BenchCase],
    runs: Sequence[tuple[str, str]],
    device: torch.device,
    repeats: int = 10,
    warmup: int = 3,
    accuracy_case: BenchCase | None = None,
    progress: Callable[[str], None] = lambda message: None,
    weights_label: str = "seeded",
    backend_options: dict[str, Any] | None = None,
    stride: int = 0,
) -> BenchReport:
    """Time every (mode, backend) run on every case; measure accuracy against fp32 on one case.

    Args:
        runs: (mode name, backend name) pairs, timed in this order.
        stride: > 0 times sliding windows (``stride`` new frames per window, see
            :func:`time_case`); every mode but ``official`` (the reference recipe, which has
            none) then reuses encoder tokens through a frame cache.
        weights: returns a CPU state dict for the model (called once), or None for the
            model's own random initialisation.
    """
    cfg = get_config(config)
    state = weights() if weights is not None else None
    report = BenchReport(str(device), torch.__version__, cfg.name, weights_label)
    if device.type == "cuda":
        report.device = f"{device} ({torch.cuda.get_device_name(device)})"

    options = dict(backend_options or {})

    def build(mode: str, backend: str, cache_frames: int = 0, exact: bool = False) -> Predictor:
        if state is None:
            model = VGGT(cfg)
        else:
            with torch.device("meta"):
                model = VGGT(cfg)
            model.load_state_dict(state, strict=True, assign=True)
            model.reset_non_persistent_buffers()
        return Predictor(
            model,
            device=device,
            inference_mode=get_mode(mode).name,
            backend=backend,
            runner_options={
                **{k: v for k, v in options.items() if not (exact and k in APPROXIMATE_OPTIONS)},
                "frame_cache": cache_frames,
            },
        )

    frames_cache: dict[BenchCase, list[np.ndarray]] = {}
    longest = max((c.frames for c in cases), default=1)
    for mode, backend in runs:  # one model per run, every case on it
        # The official baseline is the official recipe: no frame cache and no approximate option,
        # so every speed-up in the table is against exact inference.
        baseline = mode == "official"
        predictor = build(mode, backend, 2 * longest if stride and not baseline else 0, exact=baseline)
        runner = predictor.runner
        assert runner is not None
        for case in cases:
            progress(f"{mode}/{runner.backend} {case.frames}x{case.height}x{case.width} tracks={case.tracks}")
            if stride:
                stream = BenchCase(stream_length(case, stride, repeats, warmup), case.height, case.width)
                frames = frames_cache.setdefault(stream, camera_frames(stream))
            else:
                frames = frames_cache.setdefault(case, camera_frames(case))
            # Camera frames are CAMERA_SCALE x the case's size: this resizes them to exactly it.
            predictor.target_size = max(case.height, case.width)
            try:
                row = time_case(predictor, case, repeats, warmup, frames, stride=stride)
            except Exception as exc:  # noqa: BLE001 - one failing case (OOM, compile error) must not end the run
                logger.warning("bench case failed: %s", exc)
                row = BenchRow(
                    mode,
                    runner.backend,
                    case.frames,
                    case.height,
                    case.width,
                    case.tracks,
                    float("nan"),
                    {},
                    float("nan"),
                    float("nan"),
                    0,
                    error=f"{type(exc).__name__}: {exc}"[:300],
                )
            report.rows.append(row)
        del predictor, runner
        _free(device)

    if accuracy_case is not None:
        report.accuracy_case = asdict(accuracy_case)
        images = synthetic_frames(accuracy_case)
        queries = (
            query_grid(accuracy_case.tracks, accuracy_case.height, accuracy_case.width)
            if accuracy_case.tracks
            else None
        )
        # The network's own outputs: post-processing is the same for every mode.
        # The reference is exact whatever --option asks of the timed runs.
        reference_runner = build("fp32", "eager", exact=True).runner
        assert reference_runner is not None
        reference = {
            k: v.float().cpu() for k, v in reference_runner.run(images, queries).items() if torch.is_tensor(v)
        }
        del reference_runner
        _free(device)
        for mode, backend in runs:
            if mode == "fp32" and not APPROXIMATE_OPTIONS & set(options):
                continue  # identical to the reference
            runner = build(mode, backend).runner
            assert runner is not None
            out = runner.run(images, queries)
            report.accuracy[f"{mode}/{runner.backend}"] = relative_errors(out, reference)
            del runner, out
            _free(device)
    return report


def format_table(report: BenchReport) -> str:
    """Markdown tables of timings and accuracy."""
    stage_names: list[str] = []
    for row in report.rows:
        stage_names += [s for s in row.stages_ms if s not in stage_names]
    sliding = any(r.stride for r in report.rows)
    # Run order (rows without tracks must not push the tracks column after postprocess).
    stage_names.sort(key=lambda s: STAGE_ORDER.index(s) if s in STAGE_ORDER else len(STAGE_ORDER))
    head = [
        "mode",
        "backend",
        "frames",
        "HxW",
        "tracks",
        *(["stride", "frame cache"] if sliding else []),
        *[f"{s} ms" for s in stage_names],
        "total ms",
        *(["per new keyframe ms"] if sliding else []),
        "end-to-end ms",
        "peak GB",
        "stage peaks GB",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in report.rows:
        cells = [r.mode, r.backend, str(r.frames), f"{r.height}x{r.width}", str(r.tracks)]
        if sliding:
            cells += [str(r.stride), "yes" if r.frame_cache else "no"]
        cells += [f"{r.stages_ms.get(s, float('nan')):.1f}" for s in stage_names]
        cells.append(f"{r.total_ms:.1f}" if r.error is None else "failed")
        if sliding:
            cells.append(f"{r.per_keyframe_ms:.1f}")
        cells.append(f"{r.end_to_end_ms:.1f}")
        cells.append(f"{r.peak_gb:.2f}")
        cells.append(" ".join(f"{k[:3]}:{v:.2f}" for k, v in r.stage_peak_gb.items()) or "-")
        lines.append("| " + " | ".join(cells) + " |")
    if report.accuracy:
        keys = sorted({k for errs in report.accuracy.values() for k in errs}, key=ACCURACY_KEYS.index)
        lines += ["", "| mode vs fp32 | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 1)]
        for name, errs in report.accuracy.items():
            lines.append(f"| {name} | " + " | ".join(f"{errs.get(k, float('nan')):.2e}" for k in keys) + " |")
    return "\n".join(lines)


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """'350x518,518x518' -> [(350, 518), (518, 518)] (height x width)."""
    sizes = []
    for item in text.split(","):
        try:
            h, w = (int(v) for v in item.lower().split("x"))
        except ValueError:
            raise ValueError(f"bad size {item!r}; expected HEIGHTxWIDTH like 350x518") from None
        sizes.append((h, w))
    return sizes


def summarize_ratio(report: BenchReport, baseline: str = "official") -> list[str]:
    """Speed-up and memory ratio of each mode against the baseline mode, per case."""
    base = {(r.frames, r.height, r.width, r.tracks): r for r in report.rows if r.mode == baseline}
    lines = []
    for r in report.rows:
        b = base.get((r.frames, r.height, r.width, r.tracks))
        if r.mode == baseline or b is None or r.error or b.error:
            continue
        lines.append(
            f"{r.mode}/{r.backend} {r.frames} frames {r.height}x{r.width}: "
            f"{b.total_ms / r.total_ms:.2f}x faster, {r.peak_gb:.2f} GB vs {b.peak_gb:.2f} GB peak"
        )
    return lines


def _nan_to_none(values: Any) -> Any:
    if isinstance(values, float) and not np.isfinite(values):
        return None
    if isinstance(values, dict):
        return {k: _nan_to_none(v) for k, v in values.items()}
    if isinstance(values, list):
        return [_nan_to_none(v) for v in values]
    return values


def report_json(report: BenchReport) -> dict[str, Any]:
    """The report as strict JSON (NaN -> null)."""
    return _nan_to_none(report.to_dict())
