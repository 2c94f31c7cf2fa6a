"""The training loop: one process or several (``torchrun``, DistributedDataParallel).

    trainer = Trainer(TrainConfig(...), run_dir)
    result = trainer.run()          # resumes from run_dir's newest checkpoint when there is one

Each step draws ``batch_size`` windows (split evenly over the processes, see
:mod:`vggt_ros.train.data`), normalizes their ground truth (:mod:`.targets`), runs the network
under bf16 autocast on CUDA, takes the VGGT losses (:mod:`.losses`), clips the gradient norm,
steps AdamW and the warm-up + cosine schedule, and updates the EMA weights. Rank 0 logs every
loss to TensorBoard and ``log.jsonl``, validates on held-out procedural windows, and writes
checkpoints (periodically, at the time limit, on SIGINT/SIGTERM and at the end), so a run can
continue across separate time-limited jobs and come out the same as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from vggt_ros.engine.precision import resolve_device
from vggt_ros.eval.procedural import ProceduralSettings
from vggt_ros.eval.window_metrics import score_window, summarize
from vggt_ros.geometry import pose_encoding_to_extrinsics_intrinsics
from vggt_ros.model.checkpoint import load_model
from vggt_ros.model.vggt import VGGT
from vggt_ros.train.attention_match import GlobalAttentionTap
from vggt_ros.train.checkpoints import (
    ExponentialMovingAverage,
    TrainerState,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from vggt_ros.train.compile import compile_training_regions
from vggt_ros.train.config import TrainConfig
from vggt_ros.train.data import VALIDATION_STREAM, MixedSource, ProceduralSource, SequenceSource
from vggt_ros.train.losses import total_loss
from vggt_ros.train.render_process import RenderProcess
from vggt_ros.train.targets import Targets, WindowBatch, normalize_window

WINDOW_LENGTH_STREAM = 7  # the random stream that draws each step's window length (config.min_frames)

logger = logging.getLogger("vggt_ros.train")


class TrainingModel(nn.Module):
    """VGGT's forward for training: the heads being trained, with every refinement iteration.

    Returns ``pose_enc_list``, ``depth``/``depth_conf``, ``world_points``/``world_points_conf``
    and, with queries, ``track_list`` (one [B, S, N, 2] per iteration), ``vis``, ``conf``; with
    ``match``, ``match_tokens``: (last aggregator layer [B, S, T, 2 dim], patch start, patch size);
    with ``flow``, ``flow_tokens``: the same for the second-to-last layer.
    """

    def __init__(
        self,
        model: VGGT,
        heads: tuple[str, ...],
        match: bool = False,
        attention_match: bool = False,
        flow: bool = False,
    ) -> None:
        super().__init__()
        self.model = model
        self.heads = set(heads)
        self.match = match  # also return the last layer's tokens for the match loss
        self.flow = flow  # also return the second-to-last layer's tokens for the flow loss
        if flow and model.config.aggregator.depth < 2:
            raise ValueError("the flow loss reads the second-to-last aggregator layer: needs depth >= 2")
        # Record the global blocks' attention inputs for the attention-match loss.
        self.taps = GlobalAttentionTap(model.aggregator.global_blocks) if attention_match else None

    def forward(self, images: Tensor, query_points: Tensor | None = None) -> dict[str, Any]:
        m = self.model
        hw = (images.shape[-2], images.shape[-1])
        with_tracks = query_points is not None and "track" in self.heads and m.track_head is not None
        if self.taps is not None:
            self.taps.take()  # nothing of an earlier forward
        if self.flow:  # the heads' layers and the one the flow loss reads, not all of them
            keep = m.layers_needed(with_tracks) | {m.config.aggregator.depth - 2}
            layers = m.aggregator(images, keep_layers=keep)
        else:
            layers = m.aggregate(images, with_tracks)
        out: dict[str, Any] = {}
        if self.taps is not None and torch.is_grad_enabled():
            out["attention_taps"] = (self.taps.take(), m.aggregator.patch_start_idx, m.config.patch_size)
        if self.match:
            last = m.config.aggregator.depth - 1  # kept for the camera head, which every config has
            out["match_tokens"] = (layers[last], m.aggregator.patch_start_idx, m.config.patch_size)
        if self.flow:
            layer = layers[m.config.aggregator.depth - 2]
            out["flow_tokens"] = (layer, m.aggregator.patch_start_idx, m.config.patch_size)
        if "camera" in self.heads and m.camera_head is not None:
            out["pose_enc_list"] = m.predict_cameras(layers)
        if "depth" in self.heads and m.depth_head is not None:
            out["depth"], out["depth_conf"] = m.predict_depth(layers, hw)
        if "point" in self.heads and m.point_head is not None:
            out["world_points"], out["world_points_conf"] = m.predict_points(layers, hw)
        if with_tracks:
            out["track_list"], out["vis"], out["conf"] = m.predict_tracks(layers, hw, query_points)
        return out


def lr_factor(step: int, config: TrainConfig) -> float:
    """Linear warm-up to 1, then cosine decay to ``min_lr_ratio`` at ``steps``."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    span = max(1, config.steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: no weight decay on biases, norms, layer scales, tokens and position tables."""
    decay, plain = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = p.ndim <= 1 or "token" in name or name.endswith("pos_embed")
        (plain if no_decay else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


@dataclass
class RunResult:
    """How a :meth:`Trainer.run` call ended."""

    step: int
    samples: int
    stopped_by: str  # "steps", "time_limit" or "signal"
    checkpoint: Path | None
    last_losses: dict[str, float]
    validation: dict[str, float] | None
    seconds: float


@torch.no_grad()
def set_trunk_layer_scale(model: VGGT, value: float) -> int:
    """Set every layer-scale gain (``ls1``/``ls2.gamma``) of the aggregator's frame and global
    blocks and of the camera head's trunk to ``value``; returns how many vectors were set.

    Why: VGGT-1B starts these at 0.01, right for a trunk trained on top of a pretrained DINOv2.
    A small model trained from scratch with that start never used its trunk: after 1,400 steps
    of the compact recipe the gains had *shrunk* (global blocks 0.003-0.016, camera trunk
    0.001-0.002), so the heads read the per-frame encoder tokens almost unchanged and nothing
    related the frames (docs/training.md). The encoder's own blocks are left alone.
    """
    trunk = ("aggregator.frame_blocks", "aggregator.global_blocks", "camera_head.trunk")
    count = 0
    for prefix, module in model.named_modules():
        in_trunk = prefix.startswith(trunk)
        if in_trunk and hasattr(module, "gamma") and isinstance(module.gamma, torch.nn.Parameter):
            module.gamma.fill_(value)
            count += 1
    return count


class Trainer:
    """A training run in ``run_dir`` (see the module docstring)."""

    def __init__(self, config: TrainConfig, run_dir: str | Path, sources: Any = None) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
        if self.distributed and not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() and config.device != "cpu" else "gloo"
            dist.init_process_group(backend)
        self.rank = dist.get_rank() if self.distributed else 0
        self.world = dist.get_world_size() if self.distributed else 1
        if config.batch_size % self.world:
            raise ValueError(f"batch_size {config.batch_size} is not divisible by {self.world} processes")
        if self.distributed and torch.cuda.is_available() and config.device != "cpu":
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            self.device = torch.device("cuda", local)
        else:
            self.device = resolve_device(config.device)
        self._check_or_save_config()
        torch.manual_seed(config.seed)
        self.model = self._build_model()
        self.training_model = TrainingModel(
            self.model,
            config.heads,
            match=config.loss.match > 0,
            attention_match=config.loss.attention_match > 0,
            flow=config.loss.flow > 0,
        )
        if config.compile:
            # Block by block, not the whole forward (see vggt_ros.train.compile), and before
            # DDP wraps the model so every process compiles the same regions.
            counts = compile_training_regions(self.model)
            logger.info("torch.compile: %d blocks, %d dense heads", counts["blocks"], counts["dense_heads"])
        self.forward: nn.Module = self.training_model
        if self.distributed:
            from torch.nn.parallel import DistributedDataParallel

            self.forward = DistributedDataParallel(
                self.training_model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=False,
            )
        self.optimizer = torch.optim.AdamW(
            _param_groups(self.model, config.weight_decay),
            lr=config.lr,
            betas=config.betas,
            fused=self.device.type == "cuda",
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(s, config))
        self.ema = ExponentialMovingAverage(self.model, config.ema_decay) if config.ema_decay > 0 else None
        self.state = TrainerState()
        self.source = sources if sources is not None else self._build_source()
        self._stop_signal: str | None = None

    # -- setup ------------------------------------------------------------------------------
    def _check_or_save_config(self) -> None:
        path = self.run_dir / "config.json"
        if self.rank == 0:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        if path.is_file():
            saved = TrainConfig.load(path)
            diff = saved.differences(self.config)
            if diff:
                raise ValueError(
                    f"{self.run_dir} holds a run with other settings ({', '.join(diff)}); "
                    "resume with the same options or use a new --out"
                )
        if self.rank == 0:
            self.config.save(path)

    def _build_model(self) -> VGGT:
        c = self.config
        if c.init_checkpoint:
            model, info = load_model(c.init_checkpoint, config=c.model, device=str(self.device))
            logger.info("fine-tuning from %s", info)
        else:
            with self.device:
                model = VGGT(c.model)
        if c.position_init == "sincos":
            model.aggregator.patch_embed.init_sincos_positions()
            logger.info("encoder position table initialised with 2D sine-cosine")
        if c.layer_scale_init > 0:
            count = set_trunk_layer_scale(model, c.layer_scale_init)
            logger.info("%d trunk layer-scale gains set to %g", count, c.layer_scale_init)
        model.train()
        model.set_gradient_checkpointing(c.gradient_checkpointing)
        trained = set(c.heads)
        for name, head in (
            ("camera", model.camera_head),
            ("depth", model.depth_head),
            ("point", model.point_head),
            ("track", model.track_head),
        ):
            if head is not None and name not in trained:
                head.requires_grad_(False)
        if c.freeze_encoder:
            model.aggregator.patch_embed.requires_grad_(False)
        # Only masked-image pre-training reads the mask token; DDP needs every trained
        # parameter to take part in the loss.
        model.aggregator.patch_embed.mask_token.requires_grad_(False)
        return model

    def _build_source(self) -> Any:
        c = self.config
        sources, weights = [], []
        if c.procedural is not None:
            cuda = self.device.type == "cuda"
            workers = min(8, max(0, (os.cpu_count() or 2) // max(1, self.world) - 2)) if cuda else 0
            chunk = c.batch_size if cuda else 8
            share = 1.0 - c.bag_weight if c.bags else 1.0
            large = c.large_room_share
            for settings, weight in ((c.procedural, 1.0 - large), (c.procedural.large_rooms(), large)):
                if weight > 0:
                    source = ProceduralSource(settings, seed=c.seed, workers=workers, render_chunk=chunk)
                    sources.append(source)
                    weights.append(share * weight)
        if c.bags:
            hw = c.image_hw
            queries = c.procedural.track_queries if c.procedural and "track" in c.heads else 0
            bag_source = SequenceSource.from_bags(
                list(c.bags), hw, c.frames, max_gap=c.bag_max_gap, track_queries=queries, seed=c.seed
            )
            sources.append(bag_source)
            weights.append(c.bag_weight if c.procedural else 1.0)
        return sources[0] if len(sources) == 1 else MixedSource(sources, weights, seed=c.seed)

    def validation_source(self) -> ProceduralSource:
        """Held-out windows: another seed stream and the held-out scene settings."""
        p = self.config.procedural
        if p is None:  # bags only: validate at the bags' image size, without tracks
            h, w = self.source.image_hw
            p = ProceduralSettings(height=h, width=w, frames=self.config.frames, track_queries=0)
        settings = ProceduralSettings.held_out(
            height=p.height,
            width=p.width,
            frames=p.frames,
            track_queries=p.track_queries,
            supersample=p.supersample,
        )
        return ProceduralSource(settings, seed=self.config.validation_seed, stream=VALIDATION_STREAM)

    # -- steps ------------------------------------------------------------------------------
    def _indices(self, step: int) -> range:
        per = self.config.batch_size // self.world
        first = step * self.config.batch_size + self.rank * per
        return range(first, first + per)

    def _batch(self, step: int) -> WindowBatch:
        return self.source.windows(self._indices(step), self.device)

    def window_length(self, step: int) -> int:
        """Frames trained at ``step`` (``config.min_frames``): the full length without it, else
        drawn from the seed and the step alone, so every process and a resumed run agree."""
        c = self.config
        if not c.min_frames:
            return c.frames
        rng = np.random.default_rng([c.seed, step, WINDOW_LENGTH_STREAM])
        return int(rng.integers(c.min_frames, c.frames + 1))

    def _autocast(self) -> Any:
        enabled = self.config.bf16 and self.device.type == "cuda"
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def train_step(self, batch: WindowBatch) -> dict[str, float]:
        """One optimisation step on this process's windows; returns the losses (the mean over
        all processes' windows)."""
        targets = normalize_window(batch)
        queries = targets.query_points if "track" in self.config.heads else None
        with self._autocast():
            outputs = self.forward(targets.images, queries)
        objective, terms = total_loss(outputs, targets, self.config.loss)
        self.optimizer.zero_grad(set_to_none=True)
        objective.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(
            [p for p in self.model.parameters() if p.requires_grad], self.config.grad_clip
        )
        finite = bool(torch.isfinite(grad_norm))
        if finite:
            self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None and finite:
            self.ema.update(self.model)
        names = ["objective", *terms]
        values = torch.stack([objective.detach(), *terms.values()]).float()
        if self.distributed:  # every process reports the mean over all windows of the step
            dist.all_reduce(values)
            values /= self.world
        out = {name: float(v) for name, v in zip(names, values.tolist())}
        out["grad_norm"] = float(grad_norm)
        out["skipped"] = 0.0 if finite else 1.0
        return out

    # -- validation -------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self, windows: int | None = None, use_ema: bool = True) -> dict[str, float]:
        """Scores and losses on held-out windows (EMA weights when kept)."""
        n = windows or self.config.validation_windows
        model = self.model
        saved = None
        if use_ema and self.ema is not None:
            saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
            self.ema.copy_to(model)
        model.eval()
        source = self.validation_source()
        scores, losses = [], []
        try:
            for start in range(0, n, max(1, self.config.batch_size // self.world)):
                idx = range(start, min(n, start + max(1, self.config.batch_size // self.world)))
                batch = source.windows(idx, self.device)
                targets = normalize_window(batch)
                with self._autocast():
                    out = self.training_model(targets.images, targets.query_points)
                _, terms = total_loss(out, targets, self.config.loss)
                losses.append({k: float(v) for k, v in terms.items()})
                scores.extend(_score_batch(out, batch, targets))
        finally:
            if saved is not None:
                model.load_state_dict(saved)
            model.train()
        result = {f"val/{k}": v for k, v in summarize(scores).items()}
        for key in losses[0] if losses else []:
            result[f"val_loss/{key}"] = float(np.mean([row[key] for row in losses]))
        return result

    # -- the run ----------------------------------------------------------------------------
    def _install_signal_handlers(self) -> dict[int, Any]:
        previous = {}

        def handler(signum: int, _frame: Any) -> None:
            self._stop_signal = signal.Signals(signum).name

        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: no handlers
                previous[sig] = signal.signal(sig, handler)
        return previous

    def _save(self) -> Path | None:
        path = None
        if self.rank == 0:
            path = save_checkpoint(
                self.run_dir,
                self.model,
                self.optimizer,
                self.scheduler,
                self.state,
                self.ema,
                keep=self.config.keep_checkpoints,
                metadata={"config": self.config.model},
            )
        if self.distributed:
            dist.barrier()
        return path

    def resume(self) -> bool:
        """Load the newest checkpoint of the run directory, if any."""
        latest = latest_checkpoint(self.run_dir)
        if latest is None:
            return False
        self.state = load_checkpoint(latest, self.model, self.optimizer, self.scheduler, self.ema)
        logger.info(
            "resumed %s at step %d (%d windows seen)", self.run_dir, self.state.step, self.state.samples
        )
        return True

    def run(self, max_steps: int | None = None) -> RunResult:
        """Train until ``config.steps`` (or ``max_steps`` more steps), the time limit or a signal."""
        c = self.config
        self.resume()
        start_time = time.monotonic()
        start_elapsed = self.state.elapsed_seconds
        end = c.steps if max_steps is None else min(c.steps, self.state.step + max_steps)
        writer = _tensorboard(self.run_dir) if self.rank == 0 else None
        log = (self.run_dir / "log.jsonl").open("a") if self.rank == 0 else None
        previous = self._install_signal_handlers()
        bar = None
        if self.rank == 0 and c.progress:
            from tqdm import tqdm

            bar = tqdm(total=c.steps, initial=self.state.step, desc="train", unit="step", dynamic_ncols=True)
        stopped_by, losses, validation, checkpoint = "steps", {}, None, None
        saved_step = -1
        prefetch = _Prefetcher(self, enabled=c.dataloader_prefetch, process=c.render_process)
        try:
            last_log = time.monotonic()
            while self.state.step < end:
                batch = prefetch.get(
                    self.state.step, next_step=self.state.step + 1 if self.state.step + 1 < end else None
                )
                if c.min_frames:
                    batch = batch.first_frames(self.window_length(self.state.step))
                losses = self.train_step(batch)
                self.state.step += 1
                self.state.samples += c.batch_size
                self.state.elapsed_seconds = start_elapsed + time.monotonic() - start_time
                if self.rank == 0 and (self.state.step % c.log_every == 0 or self.state.step == end):
                    now = time.monotonic()
                    record = {
                        "step": self.state.step,
                        "samples": self.state.samples,
                        "lr": self.scheduler.get_last_lr()[0],
                        "elapsed_s": self.state.elapsed_seconds,
                        "steps_per_s": c.log_every / max(1e-9, now - last_log),
                        **losses,
                    }
                    last_log = now
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                    if writer is not None:
                        for k, v in record.items():
                            if k not in ("step",):
                                writer.add_scalar(f"train/{k}", v, self.state.step)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{losses['objective']:.3f}", cam=f"{losses.get('camera', 0):.3f}")
                if self.state.step % c.validate_every == 0 and self.rank == 0:
                    validation = self.validate()
                    _write_validation(writer, log, validation, self.state.step)
                if self.state.step % c.checkpoint_every == 0:
                    checkpoint, saved_step = self._save(), self.state.step
                if self._stop_signal is not None:
                    stopped_by = "signal"
                    break
                limit = c.time_limit_minutes * 60.0
                if limit > 0 and time.monotonic() - start_time >= limit:
                    stopped_by = "time_limit"
                    break
            if saved_step != self.state.step:  # the same decision on every process (barrier)
                checkpoint = self._save()
        finally:
            prefetch.close()
            for src in getattr(self.source, "sources", [self.source]):
                if hasattr(src, "close"):
                    src.close()
            if bar is not None:
                bar.close()
            if writer is not None:
                writer.close()
            if log is not None:
                log.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return RunResult(
            step=self.state.step,
            samples=self.state.samples,
            stopped_by=stopped_by,
            checkpoint=checkpoint,
            last_losses=losses,
            validation=validation,
            seconds=time.monotonic() - start_time,
        )


class _Prefetcher:
    """Draws the next step's windows while the current step trains: on a background thread
    (and CUDA stream), or with ``process`` in a separate process
    (:class:`~vggt_ros.train.render_process.RenderProcess`). Batches are a pure function of
    the step, so prefetching changes nothing."""

    def __init__(self, trainer: Trainer, enabled: bool, process: bool = False) -> None:
        self.trainer = trainer
        self.enabled = enabled
        self.process = RenderProcess(trainer.source, trainer.device) if enabled and process else None
        self.pool = ThreadPoolExecutor(max_workers=1) if enabled and self.process is None else None
        cuda = trainer.device.type == "cuda"
        self.stream = torch.cuda.Stream(trainer.device) if self.pool is not None and cuda else None
        self.pending: tuple[int, Any] | None = None

    def _get_from_process(self, step: int, next_step: int | None) -> WindowBatch:
        assert self.process is not None
        if step not in self.process.pending:
            self.process.request(step, self.trainer._indices(step))
        if next_step is not None and next_step not in self.process.pending:
            self.process.request(next_step, self.trainer._indices(next_step))
        return self.process.take(step)

    def _make(self, step: int) -> tuple[WindowBatch, Any]:
        if self.stream is None:
            return self.trainer._batch(step), None
        with torch.cuda.stream(self.stream):
            batch = self.trainer._batch(step)
            event = torch.cuda.Event()
            event.record(self.stream)
        return batch, event

    def get(self, step: int, next_step: int | None) -> WindowBatch:
        if self.process is not None:
            return self._get_from_process(step, next_step)
        if self.pending is not None and self.pending[0] == step:
            batch, event = self.pending[1].result()
        else:
            batch, event = self._make(step)
        self.pending = None
        if event is not None:
            current = torch.cuda.current_stream(self.trainer.device)
            current.wait_event(event)
            for t in vars(batch).values():
                if isinstance(t, torch.Tensor):
                    t.record_stream(current)
        if self.pool is not None and next_step is not None:
            self.pending = (next_step, self.pool.submit(self._make, next_step))
        return batch

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        if self.process is not None:
            self.process.close()


def _score_batch(out: dict[str, Any], batch: WindowBatch, targets: Targets) -> list:
    """Window scores of a batch's predictions (see :mod:`vggt_ros.eval.window_metrics`)."""
    hw = tuple(batch.images.shape[-2:])
    pose = out["pose_enc_list"][-1].float().cpu().numpy().astype(np.float64)
    scores = []
    for b in range(pose.shape[0]):
        extr, _ = pose_encoding_to_extrinsics_intrinsics(pose[b], hw)
        c2w = np.repeat(np.eye(4)[None], len(extr), 0)
        R, t = extr[:, :3, :3], extr[:, :3, 3]
        c2w[:, :3, :3] = np.transpose(R, (0, 2, 1))
        c2w[:, :3, 3] = -np.einsum("sji,sj->si", R, t)
        depth = out["depth"][b, ..., 0].float().cpu().numpy() if "depth" in out else None
        gt_depth = None if batch.depth is None else batch.depth[b].cpu().numpy()
        valid = None if targets.valid is None else targets.valid[b].cpu().numpy()
        scores.append(
            score_window(
                depth,
                gt_depth if depth is not None else None,
                c2w,
                batch.cam_to_world[b].cpu().numpy(),
                valid,
            )
        )
    return scores


def _tensorboard(run_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard not installed: logs still go to log.jsonl
        logger.warning("tensorboard is not installed (pip install tensorboard); logging to log.jsonl only")
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


def _write_validation(writer: Any, log: Any, validation: dict[str, float], step: int) -> None:
    if log is not None:
        log.write(json.dumps({"step": step, **validation}) + "\n")
        log.flush()
    if writer is not None:
        for k, v in validation.items():
            if isinstance(v, float) and math.isfinite(v):
                writer.add_scalar(k, v, step)
    logger.info(
        "step %d validation: depth AbsRel %.4f, rotation %.2f deg (identity %.2f), "
        "translation direction %.1f deg, baseline length error %.1f",
        step,
        validation.get("val/abs_rel", float("nan")),
        validation.get("val/rotation_deg_mean", float("nan")),
        validation.get("val/rotation_deg_identity", float("nan")),
        validation.get("val/translation_deg_mean", float("nan")),
        validation.get("val/baseline_error_pct", float("nan")),
    )
