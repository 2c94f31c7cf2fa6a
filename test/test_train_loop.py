"""The training loop (vggt_ros.train.trainer) on the tiny config, CPU: learning, exact resume,
DDP over two gloo processes, checkpoints, CLI and clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from train_fixtures import HEADS, SMALL, small_config

from vggt_ros.cli import main
from vggt_ros.eval.procedural import ProceduralSettings
from vggt_ros.model.checkpoint import CheckpointError, load_model
from vggt_ros.train.checkpoints import checkpoint_dirs, latest_checkpoint, load_checkpoint
from vggt_ros.train.config import TrainConfig
from vggt_ros.train.data import ProceduralSource
from vggt_ros.train.losses import total_loss
from vggt_ros.train.targets import normalize_window
from vggt_ros.train.trainer import Trainer

_config = small_config


@torch.no_grad()
def _losses(trainer: Trainer, windows: range) -> dict[str, float]:
    batch = trainer.source.windows(windows, "cpu")
    targets = normalize_window(batch)
    trainer.model.eval()
    out = trainer.training_model(targets.images, targets.query_points)
    trainer.model.train()
    return {k: float(v) for k, v in total_loss(out, targets, trainer.config.loss)[1].items()}


def test_short_training_lowers_every_loss(tmp_path: Path) -> None:
    settings = ProceduralSettings(height=140, width=140, frames=2, track_queries=16)
    config = _config(
        procedural=settings, heads=("camera", "depth", "point", "track"), steps=40, lr=2e-3, warmup_steps=5
    )
    trainer = Trainer(config, tmp_path / "run")
    held = range(10_000, 10_004)  # windows the run never trains on
    before = _losses(trainer, held)
    result = trainer.run()
    after = _losses(trainer, held)
    assert result.stopped_by == "steps" and result.step == 40
    for key in ("camera", "depth_reg", "point_reg", "track", "track_vis"):
        assert after[key] < before[key], (key, before[key], after[key])
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "objective" in r] == list(range(1, 41))
    assert {"objective", "camera", "depth_conf", "point_conf", "track", "lr", "grad_norm"} <= set(rows[-1])


def test_resume_reproduces_an_uninterrupted_run(tmp_path: Path) -> None:
    straight = Trainer(_config(), tmp_path / "straight")
    straight.run()
    first = Trainer(_config(), tmp_path / "split")
    assert first.run(max_steps=3).step == 3
    second = Trainer(_config(), tmp_path / "split")  # a fresh process picks up the checkpoint
    assert second.run().step == 6
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, second.model.state_dict()[key]), key
    for key, value in straight.ema.state_dict().items():
        assert torch.equal(value, second.ema.state_dict()[key]), key
    a, b = straight.optimizer.state_dict()["state"], second.optimizer.state_dict()["state"]
    assert all(torch.equal(a[i]["exp_avg_sq"], b[i]["exp_avg_sq"]) for i in a)
    assert second.scheduler.get_last_lr() == straight.scheduler.get_last_lr()
    # Only the newest `keep_checkpoints` remain, each complete.
    assert [p.name for p in checkpoint_dirs(tmp_path / "split")] == ["step_0000003", "step_0000006"]


def test_checkpoint_of_another_model_is_refused(tmp_path: Path) -> None:
    Trainer(_config(steps=1, checkpoint_every=1), tmp_path / "run").run()
    from vggt_ros.model.vggt import VGGT

    with pytest.raises(CheckpointError, match="does not fit the model"):
        load_checkpoint(latest_checkpoint(tmp_path / "run"), VGGT("vggt-compact"))
    with pytest.raises(ValueError, match="other settings"):
        Trainer(_config(model="vggt-small"), tmp_path / "run")


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    from vggt_ros.model.vggt import VGGT
    from vggt_ros.train.trainer import TrainingModel

    batch = ProceduralSource(SMALL).windows(range(2), "cpu")
    targets = normalize_window(batch)
    grads = []
    for recompute in (False, True):
        torch.manual_seed(0)
        model = VGGT("vggt-tiny")
        model.set_gradient_checkpointing(recompute)
        out = TrainingModel(model, HEADS)(targets.images)
        total_loss(out, targets, _config().loss)[0].backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-6, rtol=1e-5)


def test_frozen_encoder_does_not_move(tmp_path: Path) -> None:
    from vggt_ros.model.checkpoint import save_checkpoint
    from vggt_ros.model.vggt import VGGT

    torch.manual_seed(1)
    start = tmp_path / "start.safetensors"
    save_checkpoint(VGGT("vggt-tiny"), start)
    trainer = Trainer(_config(steps=2, init_checkpoint=str(start), freeze_encoder=True), tmp_path / "ft")
    trainer.run()
    initial = load_file(str(start))
    moved = {k for k, v in trainer.model.state_dict().items() if not torch.equal(v, initial[k])}
    assert moved and not any(k.startswith("aggregator.patch_embed.") for k in moved)
    with pytest.raises(ValueError, match="freeze_encoder needs init_checkpoint"):
        _config(freeze_encoder=True)


def test_ddp_two_gloo_processes_match_one_process(tmp_path: Path) -> None:
    """Two processes, each on half of the batch, take the same step as one process on all of it."""
    common = [
        "train", "--model", "vggt-tiny", "--size", "42x56", "--frames", "3", "--heads", "camera,depth,point",
        "--steps", "2", "--batch-size", "2", "--lr", "1e-3", "--warmup-steps", "1", "--ema-decay", "0",
        "--checkpoint-every", "2", "--validate-every", "1000", "--log-every", "1", "--device", "cpu", "-q",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    ddp = tmp_path / "ddp"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "vggt_ros.cli", *common, "--out", str(ddp)],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = tmp_path / "single"
    assert main([*common, "--out", str(single)]) == 0
    rows = {}
    for run in (ddp, single):
        rows[run.name] = [
            json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if "objective" in x
        ]
    for a, b in zip(rows["ddp"], rows["single"], strict=True):
        assert a["objective"] == pytest.approx(b["objective"], rel=1e-4), (a, b)
    w_ddp = load_file(str(latest_checkpoint(ddp) / "model.safetensors"))
    w_one = load_file(str(latest_checkpoint(single) / "model.safetensors"))
    for key in w_one:
        torch.testing.assert_close(w_ddp[key], w_one[key], atol=1e-5, rtol=1e-4)


def test_cli_trains_resumes_and_exports(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    args = [
        "train", "--out", str(run), "--model", "vggt-tiny", "--size", "42x56", "--frames", "3",
        "--heads", "camera,depth,point", "--steps", "3", "--batch-size", "2", "--checkpoint-every", "2",
        "--validate-every", "3", "--validation-windows", "2", "--device", "cpu", "-q",
    ]  # fmt: skip
    assert main(args) == 0
    assert main(args) == 2  # the run exists: refused without --resume
    assert "--resume" in capsys.readouterr().err
    assert main(["train", "--out", str(run), "--resume", "--steps", "4", "--device", "cpu", "-q"]) == 0
    assert latest_checkpoint(run).name == "step_0000004"
    # A resume that names no schedule keeps the saved one (4 steps, checkpoints every 2), not
    # the parser's defaults (10,000 steps): the run is complete and stops at once (the time
    # limit only bounds this test if that breaks).
    saved = json.loads((run / "config.json").read_text())
    assert main(["train", "--out", str(run), "--resume", "--time-limit", "0.1", "-q"]) == 0
    assert latest_checkpoint(run).name == "step_0000004"
    resumed = json.loads((run / "config.json").read_text())
    assert resumed["steps"] == saved["steps"] == 4
    assert resumed["checkpoint_every"] == 2 and resumed["validate_every"] == 3
    validation = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if "val/abs_rel" in x]
    assert validation and validation[0]["val/windows"] == 2
    out = tmp_path / "model.safetensors"
    assert main(["export-model", str(run), "--out", str(out), "-q"]) == 0
    model, info = load_model(out, config="vggt-tiny")
    assert info.trained and next(model.parameters()).dtype == torch.float32
    from safetensors import safe_open

    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
        assert f.get_tensor("camera_head.empty_pose_tokens").dtype == torch.float16
    assert meta["config"] == "vggt-tiny" and meta["weights"] == "ema"
    assert json.loads(meta["provenance"])["step"] == 4
    # The file names the width it was trained at, and tools load it there unless told otherwise.
    from vggt_ros.model.embedded import choose_model

    width = json.loads(meta["provenance"])["data"]["procedural"]["width"]
    assert meta["image_size"] == str(width)
    assert (
        choose_model(str(out)).image_size == width
        and f"trained at {width} px" in choose_model(str(out)).description
    )
    assert choose_model(str(out), image_size=518).image_size == 518
    # A restart from the exported weights with the same seed and scenes would see the same
    # windows again (window k is a function of the seed): named; another seed is not.
    from vggt_ros.train.checkpoints import repeated_windows_warning

    procedural = json.loads(meta["provenance"])["data"]["procedural"]
    warning = repeated_windows_warning(str(out), 0, procedural)
    assert warning and "--seed 0" in warning and "8 windows" in warning
    assert repeated_windows_warning(str(out), 1, procedural) is None
    assert repeated_windows_warning(str(out), 0, {**procedural, "boxes": [1, 2]}) is None
    assert repeated_windows_warning(str(tmp_path / "missing.safetensors"), 0, procedural) is None
    restart = [
        "train", "--model", "vggt-tiny", "--size", "42x56", "--frames", "3", "--heads", "camera,depth,point",
        "--steps", "1", "--batch-size", "2", "--validate-every", "5", "--validation-windows", "1",
        "--init-checkpoint", str(out),
        "--device", "cpu", "-q",
    ]  # fmt: skip
    capsys.readouterr()
    assert main([*restart, "--out", str(tmp_path / "same")]) == 0
    assert "draws the same windows again" in capsys.readouterr().err
    assert main([*restart, "--out", str(tmp_path / "other"), "--seed", "5"]) == 0
    assert "draws the same windows again" not in capsys.readouterr().err
    # Clear errors: a dataset without ground truth, a missing run.
    assert main(["train", "--out", str(tmp_path / "x"), "--resume", "-q"]) == 2
    assert (
        main(
            ["train", "--out", str(tmp_path / "y"), "--no-procedural", "--bag", str(tmp_path / "nope"), "-q"]
        )
        == 2
    )


def test_cli_curriculum_options_reach_the_run_config(tmp_path: Path) -> None:
    """--motions, --step-scale and --camera-weight (a pose curriculum) are saved with the run;
    bad values are refused with the reason; validation logs the identity baseline next to the
    model's rotation error."""
    from vggt_ros.eval.procedural.settings import MOTIONS
    from vggt_ros.train.config import TrainConfig

    run = tmp_path / "run"
    args = [
        "train", "--out", str(run), "--model", "vggt-tiny", "--size", "42x56", "--frames", "2",
        "--heads", "camera", "--steps", "1", "--batch-size", "2", "--validate-every", "1",
        "--validation-windows", "2", "--device", "cpu", "-q", "--motions", "turn=2,handheld",
        "--step-scale", "0.2,0.6", "--loss", "camera=20", "--loss", "focal=0", "--loss",
        "camera_huber_delta=0", "--validation-seed", "5",
    ]  # fmt: skip
    assert main(args) == 0
    config = TrainConfig.load(run / "config.json")
    assert config.validation_seed == 5
    weights = dict(zip(MOTIONS, config.procedural.motion_weights))
    assert weights["turn"] == 2.0 and weights["handheld"] == 1.0 and weights["drive"] == 0.0
    assert config.procedural.step_scale == (0.2, 0.6)
    assert (config.loss.camera, config.loss.focal, config.loss.camera_huber_delta) == (20.0, 0.0, 0.0)
    assert config.loss.rotation == 1.0  # the others keep their defaults
    validation = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if "val/windows" in x]
    assert validation[-1]["val/rotation_deg_identity"] > 0
    assert "val/baseline_error_pct" in validation[-1]  # NaN where no pair moved far enough
    bad = ["train", "--out", str(tmp_path / "bad"), "--device", "cpu", "-q"]
    assert main([*bad, "--motions", "teleport=1"]) == 2
    assert main([*bad, "--loss", "camera_weight=3"]) == 2
    assert main([*bad, "--loss", "camera=-1"]) == 2
    with pytest.raises(SystemExit):
        main([*bad, "--step-scale", "1.0,0.5"])


def test_runs_of_other_seeds_validate_on_the_same_windows(tmp_path: Path) -> None:
    """The validation windows come from ``validation_seed``, not the run's ``seed``: two runs of
    other seeds score the same held-out windows (their figures compare) while they train on
    other windows; a run saved before the option keeps validating on its own seed's windows."""
    one = Trainer(_config(seed=1), tmp_path / "one")
    two = Trainer(_config(seed=2), tmp_path / "two")
    other = Trainer(_config(seed=1, validation_seed=3), tmp_path / "other")
    held_out = [t.validation_source().windows(range(2), "cpu").images for t in (one, two, other)]
    assert torch.equal(held_out[0], held_out[1])
    assert not torch.equal(held_out[0], held_out[2])
    assert not torch.equal(
        one.source.windows(range(2), "cpu").images, two.source.windows(range(2), "cpu").images
    )
    saved = _config(seed=7).to_dict()
    del saved["validation_seed"]  # a config.json written before the option
    assert TrainConfig.from_dict(saved).validation_seed == 7


def test_cli_match_loss_keeps_track_targets_without_the_track_head(tmp_path: Path) -> None:
    """`--loss match=1` trains the correspondence loss from track targets even when the track
    head is not trained; without it, no track targets are rendered for a camera-only run."""
    from vggt_ros.train.config import TrainConfig

    def run(name: str, *extra: str) -> tuple[TrainConfig, dict]:
        args = [
            "train", "--out", str(tmp_path / name), "--model", "vggt-tiny", "--size", "42x56",
            "--frames", "2", "--heads", "camera", "--steps", "2", "--batch-size", "2",
            "--validate-every", "10", "--device", "cpu", "-q", "--track-queries", "8",
            "--log-every", "1", *extra,
        ]  # fmt: skip
        assert main(args) == 0
        log = [json.loads(x) for x in (tmp_path / name / "log.jsonl").read_text().splitlines()]
        return TrainConfig.load(tmp_path / name / "config.json"), log[-1]

    config, last = run("match", "--loss", "match=1")
    assert config.loss.match == 1.0 and config.procedural.track_queries == 8
    assert last["match"] > 0 and 0.0 <= last["match_acc"] <= 1.0
    config, last = run("plain")
    assert config.procedural.track_queries == 0 and "match" not in last


def test_trunk_initialisation_options_reach_the_model(tmp_path: Path) -> None:
    """--position-init sincos and --layer-scale-init set the encoder's position table and the
    trunk's layer-scale gains before the first step (the encoder's own gains untouched), are
    saved with the run, and are refused with the reason when invalid."""
    from vggt_ros.model.encoder import sincos_position_table

    trainer = Trainer(_config(position_init="sincos", layer_scale_init=0.5), tmp_path / "init")
    encoder = trainer.model.aggregator.patch_embed
    grid, dim = encoder.pos_embed_grid, encoder.pos_embed.shape[-1]
    assert torch.equal(encoder.pos_embed[0, 1:], sincos_position_table(grid, dim))
    gains = {name: p for name, p in trainer.model.named_parameters() if name.endswith("gamma")}
    trunk = [p for n, p in gains.items() if not n.startswith("aggregator.patch_embed")]
    assert trunk and all(torch.all(p == 0.5) for p in trunk)
    assert any(n.startswith("camera_head.trunk") for n in gains)
    assert all(torch.all(p == 1.0) for n, p in gains.items() if n.startswith("aggregator.patch_embed"))
    saved = TrainConfig.load(tmp_path / "init" / "config.json")
    assert (saved.position_init, saved.layer_scale_init) == ("sincos", 0.5)

    default = Trainer(_config(), tmp_path / "default").model
    assert not torch.equal(default.aggregator.patch_embed.pos_embed[0, 1:], sincos_position_table(grid, dim))
    assert torch.all(default.aggregator.global_blocks[0].ls1.gamma == 0.01)
    with pytest.raises(ValueError, match="position_init"):
        _config(position_init="learned")
    with pytest.raises(ValueError, match="layer_scale_init"):
        _config(layer_scale_init=-1.0)
    bad = ["train", "--out", str(tmp_path / "bad"), "--device", "cpu", "-q"]
    with pytest.raises(SystemExit):
        main([*bad, "--position-init", "learned"])


def test_sincos_position_table_is_readable_and_distinct() -> None:
    """Every patch of the table has norm sqrt(dim / 2) and a different code; a linear map reads
    its row and column back (R^2 > 0.9; what a trunk needs to tell where a match moved, and
    what the default random table of vggt-compact-v1 had lost: R^2 < 0)."""
    from vggt_ros.model.encoder import sincos_position_table

    grid, dim = 16, 128
    table = sincos_position_table(grid, dim).double()
    assert table.shape == (grid * grid, dim)
    norms = table.norm(dim=1)
    assert torch.allclose(norms, torch.full_like(norms, (dim / 2) ** 0.5))
    assert torch.cdist(table, table).add(torch.eye(grid * grid) * 1e3).min() > 0.1
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    target = torch.stack((rows.reshape(-1), cols.reshape(-1)), 1).double()
    design = torch.cat((table, torch.ones(grid * grid, 1, dtype=torch.float64)), 1)
    solution = torch.linalg.lstsq(design, target, rcond=1e-12, driver="gelsd").solution
    residual = ((design @ solution - target) ** 2).sum(0)
    r2 = 1 - residual / ((target - target.mean(0)) ** 2).sum(0)
    assert r2.min() > 0.9
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_position_table(4, 30)


def test_cli_flow_loss_renders_track_targets_without_the_track_head(tmp_path: Path) -> None:
    """`--loss flow=1` needs the track targets (each point's displacement) even when the track
    head is not trained: they are rendered and the loss is logged."""
    run = tmp_path / "flow"
    args = [
        "train", "--out", str(run), "--model", "vggt-tiny", "--size", "42x56", "--frames", "2",
        "--heads", "camera", "--steps", "2", "--batch-size", "2", "--validate-every", "10",
        "--device", "cpu", "-q", "--track-queries", "8", "--log-every", "1", "--loss", "flow=1",
    ]  # fmt: skip
    assert main(args) == 0
    config = TrainConfig.load(run / "config.json")
    assert config.loss.flow == 1.0 and config.procedural.track_queries == 8
    last = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()][-1]
    assert last["flow"] > 0 and last["flow_px"] > 0


def test_min_frames_trains_windows_of_varying_length(tmp_path: Path) -> None:
    """--min-frames: each step trains on the first S frames of its windows, S in
    [min_frames, frames] drawn from the seed and the step (so a resumed run and every process
    draw the same); without it every step sees the full window."""
    from dataclasses import replace

    settings = replace(SMALL, frames=5, track_queries=8)
    from vggt_ros.train.losses import LossWeights

    # The flow loss keeps track targets (cut with the window) without the track head.
    config = _config(
        procedural=settings, heads=("camera", "depth"), loss=LossWeights(flow=1.0), min_frames=2, steps=12
    )
    trainer = Trainer(config, tmp_path / "run")
    seen: list[tuple[int, int, int]] = []
    original = trainer.train_step

    def recording(batch):  # noqa: ANN001, ANN202
        seen.append((batch.images.shape[1], batch.tracks.shape[1], batch.query_points.shape[1]))
        return original(batch)

    trainer.train_step = recording
    assert trainer.run().step == 12
    lengths = [s for s, _, _ in seen]
    assert lengths == [trainer.window_length(step) for step in range(12)]
    assert set(lengths) <= {2, 3, 4, 5} and len(set(lengths)) >= 2, lengths
    assert all(tracks == s and queries == 8 for s, tracks, queries in seen)  # queries stay in frame 0
    again = Trainer(config, tmp_path / "again")
    assert [again.window_length(step) for step in range(12)] == lengths
    full = Trainer(_config(procedural=settings, heads=("camera", "depth")), tmp_path / "full")
    assert {full.window_length(step) for step in range(12)} == {5}
    with pytest.raises(ValueError, match="min_frames"):
        _config(procedural=settings, min_frames=6)
    with pytest.raises(ValueError, match="min_frames"):
        _config(procedural=settings, min_frames=1)


def test_cli_min_frames_reaches_the_run_config(tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = [
        "train", "--out", str(run), "--model", "vggt-tiny", "--size", "42x56", "--frames", "3",
        "--min-frames", "2", "--heads", "camera", "--steps", "1", "--batch-size", "2",
        "--validation-windows", "2", "--device", "cpu", "-q",
    ]  # fmt: skip
    assert main(args) == 0
    assert TrainConfig.load(run / "config.json").min_frames == 2
    bad = list(args)
    bad[2], bad[10] = str(tmp_path / "bad"), "4"
    assert bad[9:11] == ["--min-frames", "4"]
    assert main(bad) == 2  # longer than the window: refused with the reason
