"""Training windows from ground-truth bags (vggt_ros.eval.sequences, vggt_ros.train.data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vggt_ros.cli import main
from vggt_ros.eval import bags
from vggt_ros.eval.generate import generate_bag
from vggt_ros.eval.procedural import ProceduralSettings
from vggt_ros.eval.sequences import crop_resize_intrinsics, read_bag_sequence
from vggt_ros.model.checkpoint.formats import saved_image_size
from vggt_ros.train.config import TrainConfig
from vggt_ros.train.data import (
    DataSourceError,
    MixedSource,
    ProceduralSource,
    SequenceSource,
    tracks_from_depth,
)


@pytest.fixture(scope="module")
def room_bag(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    path = tmp_path_factory.mktemp("bags") / "room"
    return generate_bag(path, num_frames=10, height=60, width=80, seed=2, trajectory="orbit")


def test_bag_sequence_has_resized_images_and_exact_ground_truth(room_bag) -> None:
    path, seq = room_bag
    got = read_bag_sequence(path, (42, 56))
    assert got.images.shape == (10, 42, 56, 3) and got.depth.shape == (10, 42, 56)
    np.testing.assert_allclose(got.cam_to_world, seq.cam_to_world, atol=1e-6)
    K, box = crop_resize_intrinsics(seq.intrinsics, (60, 80), (42, 56))
    np.testing.assert_allclose(got.intrinsics, K)
    assert box == (0, 0, 80, 60)  # same aspect ratio: nothing cropped
    # Nearest-neighbour depth: every value is one of the full-resolution depths of that frame.
    assert np.isin(got.depth[3], seq.depth[3]).all()


def test_windows_are_deterministic_and_track_targets_follow_the_depth(room_bag) -> None:
    path, _ = room_bag
    source = SequenceSource.from_bags([path], (42, 56), frames=3, max_gap=2, track_queries=12, seed=5)
    a, b = source.windows([4, 9], "cpu"), source.windows([4, 9], "cpu")
    for name, value in vars(a).items():
        assert torch.equal(value, getattr(b, name)), name
    assert a.images.shape == (2, 3, 3, 42, 56) and a.tracks.shape == (2, 3, 12, 2)
    assert bool((a.depth > 0).all()) and bool(a.track_visible[:, 0].all())
    assert bool(a.track_visible[:, 1:].any())  # the orbit keeps most points in view


def test_tracks_from_depth_projects_and_checks_occlusion() -> None:
    # Two fronto-parallel planes: frame 1 moved right; a point near the image edge leaves the view.
    K = torch.tensor([[50.0, 0, 31.5], [0, 50.0, 23.5], [0, 0, 1]]).expand(2, 3, 3)
    depth = torch.full((2, 48, 64), 4.0)
    poses = torch.eye(4).repeat(2, 1, 1)
    poses[1, 0, 3] = 1.0  # 1 m to the right: points shift 12.5 px left
    queries = torch.tensor([[32, 24], [5, 10]])
    q, tracks, visible = tracks_from_depth(depth, poses, K, queries)
    torch.testing.assert_close(tracks[1, 0], torch.tensor([19.5, 24.0]))
    assert visible[1, 0] and not visible[1, 1]  # the second one leaves the image on the left
    depth[1] = 2.0  # now something nearer hides everything in frame 1
    _, _, visible = tracks_from_depth(depth, poses, K, queries)
    assert not visible[1].any() and visible[0].all()


def test_bags_without_ground_truth_or_intrinsics_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "plain"
    with bags.BagWriter(path) as w:
        for k in range(3):
            t = 100.0 + k * 0.1
            w.write(
                "/camera/image_raw", bags.image_message(w.store, np.zeros((8, 8, 3), np.uint8), t, "cam"), t
            )
    with pytest.raises(DataSourceError, match="no ground-truth camera poses"):
        SequenceSource.from_bags([path], (14, 14), frames=2)
    assert main(["train", "--out", str(tmp_path / "run"), "--no-procedural", "--bag", str(path), "-q"]) == 2


def test_mixed_source_draws_each_window_from_one_source(room_bag) -> None:
    path, _ = room_bag
    bag_source = SequenceSource.from_bags([path], (42, 56), frames=3, seed=1)
    procedural = ProceduralSource(ProceduralSettings(height=42, width=56, frames=3, track_queries=0))
    mixed = MixedSource([procedural, bag_source], [0.5, 0.5], seed=3)
    batch = mixed.windows(range(8), "cpu")
    assert batch.images.shape == (8, 3, 3, 42, 56)
    # (rendering alone may differ from rendering in a batch by float rounding in batched products)
    from_bag = [
        bool(torch.allclose(batch.images[i], bag_source.windows([i], "cpu").images[0])) for i in range(8)
    ]
    from_procedural = [
        bool(torch.allclose(batch.images[i], procedural.windows([i], "cpu").images[0], atol=1e-5))
        for i in range(8)
    ]
    assert all(a != b for a, b in zip(from_bag, from_procedural)) and any(from_bag) and any(from_procedural)


def test_cli_fine_tunes_on_a_bag(room_bag, tmp_path: Path) -> None:
    path, _ = room_bag
    run = tmp_path / "ft"
    args = ["train", "--out", str(run), "--model", "vggt-tiny", "--no-procedural", "--bag", str(path),
            "--size", "42x56", "--frames", "3", "--heads", "camera,depth,point", "--steps", "2",
            "--batch-size", "2", "--validate-every", "100", "--device", "cpu", "-q"]  # fmt: skip
    assert main(args) == 0
    assert (run / "checkpoints" / "step_0000002" / "model.safetensors").is_file()
    # Without procedural data --size and --frames still set the windows (they once fell back to
    # 140x182 and 8 frames), and the exported file says which width it was trained at.
    config = TrainConfig.load(run / "config.json")
    assert config.image_hw == (42, 56) and config.frames == 3
    out = tmp_path / "ft.safetensors"
    assert main(["export-model", str(run), "--out", str(out), "-q"]) == 0
    assert saved_image_size(out) == 56


def test_mixed_sources_with_and_without_depth(room_bag, tmp_path: Path) -> None:
    """A depth-less source (EuRoC-like) mixed with a depth source: its windows keep the camera
    loss on every frame, take the camera-centre scale, and the batch drops track targets."""
    from vggt_ros.train.targets import normalize_window

    path, _ = room_bag
    with_depth = ProceduralSource(ProceduralSettings(height=42, width=56, frames=3, track_queries=4))
    poses_only = SequenceSource.from_bags([path], (42, 56), frames=3, seed=2, depth_topic="")
    assert poses_only.windows([0], "cpu").depth is None
    batch = MixedSource([with_depth, poses_only], [0.5, 0.5], seed=0).windows(range(8), "cpu")
    assert batch.tracks is None and batch.depth is not None
    no_depth = ~batch.depth_valid.flatten(1).any(dim=1)
    assert bool(no_depth.any()) and not bool(no_depth.all())
    targets = normalize_window(batch)
    assert bool(targets.frame_valid[no_depth].all())
    assert bool(torch.isfinite(targets.pose_enc).all()) and bool((targets.scale > 0).all())


def test_large_rooms_are_bigger_than_every_held_out_room() -> None:
    """The large-room preset must leave the held-out floor plans unseen (they sit in between)."""
    train = ProceduralSettings()
    large, held_out = train.large_rooms(), ProceduralSettings.held_out()
    for axis in ("room_x", "room_y"):
        assert getattr(large, axis)[0] > getattr(held_out, axis)[1], axis
    # everything but the room and the object counts is the base settings' own
    same = ("height", "width", "frames", "fov_deg", "motion_weights", "step_scale", "ambient", "noise_sigma")
    assert all(getattr(large, k) == getattr(train, k) for k in same)


def test_a_share_of_training_windows_is_rendered_in_large_rooms(tmp_path: Path) -> None:
    from train_fixtures import SMALL, small_config

    from vggt_ros.train.trainer import Trainer

    trainer = Trainer(small_config(large_room_share=0.5), tmp_path / "run")
    source = trainer.source
    assert isinstance(source, MixedSource)
    assert [s.settings for s in source.sources] == [SMALL, SMALL.large_rooms()]
    assert np.allclose(source.p, [0.5, 0.5])
    # the large source's scenes are bigger: its cameras see farther (mean of the farthest depth)
    far = [float(s.windows(range(8), "cpu").depth.flatten(1).amax(1).mean()) for s in source.sources]
    assert far[1] > 1.3 * far[0], far
    with pytest.raises(ValueError, match="large_room_share"):
        small_config(large_room_share=1.5)
    with pytest.raises(ValueError, match="large_room_share needs procedural"):
        small_config(large_room_share=0.3, procedural=None, bags=("x.mcap",))
