"""Training batches from a separate process (``vggt-ros train --render-process``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from train_fixtures import SMALL, small_config

from vggt_ros.cli import build_parser
from vggt_ros.train import trainer as trainer_module
from vggt_ros.train.checkpoints import latest_checkpoint
from vggt_ros.train.commands import config_from_args
from vggt_ros.train.config import TrainConfig
from vggt_ros.train.data import ProceduralSource
from vggt_ros.train.render_process import RenderProcess, RenderProcessError
from vggt_ros.train.trainer import Trainer


def _config(**changes) -> TrainConfig:
    # prefetch on (the thread or the process), 3 steps, a checkpoint at the end
    return small_config(**{"steps": 3, "warmup_steps": 1, "dataloader_prefetch": True, **changes})


def _losses(run: Path) -> list[float]:
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return [row["objective"] for row in rows if "objective" in row]


def test_render_process_trains_exactly_like_the_thread(tmp_path: Path, monkeypatch) -> None:
    started = []

    class CountedRenderProcess(RenderProcess):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            started.append(self)

    monkeypatch.setattr(trainer_module, "RenderProcess", CountedRenderProcess)
    for name, process in (("thread", False), ("process", True)):
        result = Trainer(_config(render_process=process), tmp_path / name).run()
        assert result.stopped_by == "steps"
    assert len(started) == 1 and not started[0].process.is_alive()  # used, then stopped
    assert len(_losses(tmp_path / "thread")) == 3
    assert _losses(tmp_path / "process") == _losses(tmp_path / "thread")
    weights = [
        load_file(str(latest_checkpoint(tmp_path / n) / "model.safetensors")) for n in ("thread", "process")
    ]
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key


def test_render_process_returns_the_requested_windows_in_order() -> None:
    # workers=2 as on a GPU machine: the daemonic batch process must draw scenes without a pool
    source = ProceduralSource(SMALL, seed=3, workers=2)
    worker = RenderProcess(source, torch.device("cpu"))
    try:
        worker.request("a", range(0, 2))
        worker.request("b", range(2, 4))
        first, second = worker.take("a"), worker.take("b")
    finally:
        worker.close()
    assert not worker.process.is_alive()
    try:
        for got, indices in ((first, range(0, 2)), (second, range(2, 4))):
            expected = source.windows(indices, "cpu")
            for field in ("images", "cam_to_world", "intrinsics", "depth"):
                assert torch.equal(getattr(got, field), getattr(expected, field)), field
    finally:
        source.close()  # this process's copy started a real pool of 2
    with pytest.raises(KeyError):
        worker.take("never requested")


class _FailingSource:
    """Raises on the second request (a bad window in a dataset)."""

    def __init__(self) -> None:
        self.inner = ProceduralSource(SMALL)
        self.calls = 0

    def windows(self, indices, device):
        self.calls += 1
        if self.calls == 2:
            raise ValueError("window 7 has no ground truth")
        return self.inner.windows(indices, device)


class _DyingSource:
    def windows(self, indices, device):
        os._exit(3)


def test_render_process_reports_a_failure_with_its_traceback() -> None:
    worker = RenderProcess(_FailingSource(), torch.device("cpu"))
    try:
        worker.request(0, range(0, 1))
        worker.request(1, range(1, 2))
        assert worker.take(0).images.shape[0] == 1
        with pytest.raises(RenderProcessError, match="window 7 has no ground truth"):
            worker.take(1)
    finally:
        worker.close()


def test_render_process_that_dies_is_an_error_not_a_hang() -> None:
    worker = RenderProcess(_DyingSource(), torch.device("cpu"))
    try:
        worker.request(0, range(0, 1))
        with pytest.raises(RenderProcessError, match="exited"):
            worker.take(0)
    finally:
        worker.close()


def test_cli_render_process_option_reaches_the_config(tmp_path: Path) -> None:
    args = build_parser().parse_args(["train", "--out", str(tmp_path / "r"), "--render-process"])
    assert config_from_args(args).render_process is True
    args = build_parser().parse_args(["train", "--out", str(tmp_path / "r")])
    assert config_from_args(args).render_process is False


def _orphan_check(ready) -> None:
    """Child that starts a batch process, reports its pid, then dies without closing it."""
    worker = RenderProcess(ProceduralSource(SMALL), torch.device("cpu"))
    ready.put(worker.process.pid)
    ready.close()
    ready.join_thread()  # flush the pid before dying
    os._exit(0)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_batch_process_exits_when_the_trainer_is_killed() -> None:
    import multiprocessing
    import time

    context = multiprocessing.get_context("spawn")
    ready = context.Queue()
    trainer = context.Process(target=_orphan_check, args=(ready,))
    trainer.start()
    pid = ready.get(timeout=60)
    trainer.join(timeout=60)
    deadline = time.monotonic() + 30
    status = Path(f"/proc/{pid}/status")
    while time.monotonic() < deadline:
        try:
            state = next(line for line in status.read_text().splitlines() if line.startswith("State:"))
        except (FileNotFoundError, ProcessLookupError):
            return  # gone
        if "zombie" in state:  # exited; nobody reaps orphans in some containers
            return
        time.sleep(0.5)
    os.kill(pid, 9)
    pytest.fail("the batch process outlived its trainer by 30 s")


def test_cli_mosaic_option_reaches_the_procedural_settings(tmp_path: Path) -> None:
    args = build_parser().parse_args(["train", "--out", str(tmp_path / "r"), "--mosaic-prob", "0.3"])
    assert config_from_args(args).procedural.mosaic_prob == 0.3
    args = build_parser().parse_args(["train", "--out", str(tmp_path / "r")])
    assert config_from_args(args).procedural.mosaic_prob == 0.0


def test_cli_near_objects_option_reaches_the_procedural_settings(tmp_path: Path) -> None:
    args = build_parser().parse_args(["train", "--out", str(tmp_path / "r"), "--near-objects", "0.25"])
    assert config_from_args(args).procedural.near_object_prob == 0.25
    args = build_parser().parse_args(["train", "--out", str(tmp_path / "r")])
    assert config_from_args(args).procedural.near_object_prob == 0.0
    args = build_parser().parse_args(["train", "--out", str(tmp_path / "r"), "--near-objects", "2"])
    with pytest.raises(ValueError, match="near_object_prob"):
        config_from_args(args)
