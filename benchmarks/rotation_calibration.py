"""Does the model's relative rotation keep up with the true one? Predicted against true angle.

Renders procedural windows (training settings, held-out settings, or held-out settings with one
group put back to training's), runs a model on them (CPU by default) and bins every frame pair
(0, k) of every window by its true relative rotation angle. Per bin it prints the mean true and
predicted angle, their median ratio and the mean absolute error. A calibrated model keeps the
ratio near 1 in every bin; one that saturates falls behind in the large bins.

    python benchmarks/rotation_calibration.py                      # the embedded model
    python benchmarks/rotation_calibration.py --checkpoint X.safetensors --config vggt-compact \\
        --scenes train,held_out,held_out+train_rooms --windows 48

Figures: docs/training.md ("sixteenth session").
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from vggt_ros.eval.procedural import ProceduralSettings
from vggt_ros.eval.procedural.settings import MOTIONS
from vggt_ros.geometry.pose_encoding import pose_encoding_to_extrinsics_intrinsics
from vggt_ros.model.checkpoint import load_model
from vggt_ros.model.embedded import DEFAULT_MODEL
from vggt_ros.train.data import TRAIN_STREAM, VALIDATION_STREAM, ProceduralSource
from vggt_ros.train.targets import normalize_window

BINS_DEG = (0, 5, 10, 20, 30, 40, 60, 90, 180)

# Groups of held-out settings that "held_out+train_<group>" puts back to the training values.
GROUPS = {
    "rooms": ("room_x", "room_y", "room_z", "corridor_prob"),
    "objects": ("boxes", "spheres", "cylinders"),
    "lenses": ("fov_deg",),
    "light": ("ambient", "noise_sigma"),
    "motions": ("motion_weights",),
}


def scene_settings(
    name: str, height: int, width: int, frames: int, motion: str | None = None
) -> tuple[ProceduralSettings, int]:
    """Settings and seed stream of a scene name: ``train``, ``train_large_rooms``, ``held_out``
    or ``held_out+train_<group>[+train_<group>...]`` (groups: :data:`GROUPS`); ``motion`` keeps
    only that camera motion."""
    size: dict = dict(height=height, width=width, frames=frames, track_queries=0)
    if motion is not None:
        if motion not in MOTIONS:
            raise ValueError(f"unknown motion {motion!r}; expected one of {', '.join(MOTIONS)}")
        size["motion_weights"] = tuple(float(m == motion) for m in MOTIONS)
    train = ProceduralSettings(**size)
    if name == "train":
        return train, TRAIN_STREAM
    if name == "train_large_rooms":
        return train.large_rooms(), TRAIN_STREAM
    base, *groups = name.split("+")
    if base != "held_out":
        raise ValueError(f"unknown scene {name!r}")
    changes = {}
    for group in groups:
        fields = GROUPS.get(group.removeprefix("train_"))
        if not group.startswith("train_") or fields is None:
            raise ValueError(f"unknown group {group!r}; expected train_<{'|'.join(GROUPS)}>")
        changes.update({f: getattr(train, f) for f in fields if f not in size})
    return ProceduralSettings.held_out(**size, **changes), VALIDATION_STREAM


def angle_deg(rotation: np.ndarray) -> np.ndarray:
    """Rotation angle of [..., 3, 3] matrices, degrees."""
    cos = (np.trace(rotation, axis1=-2, axis2=-1) - 1.0) / 2.0
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


@torch.no_grad()
def angle_pairs(model: torch.nn.Module, source: ProceduralSource, windows: int, chunk: int) -> np.ndarray:
    """[P, 2] (true, predicted) rotation angles in degrees of every pair (0, k) of ``windows``."""
    pairs = []
    for start in range(0, windows, chunk):
        batch = source.windows(range(start, min(windows, start + chunk)), "cpu")
        images = normalize_window(batch).images
        out = model(images)
        pose = out["pose_enc"].float().numpy().astype(np.float64)  # the camera head's last iteration
        hw = tuple(images.shape[-2:])
        for b in range(pose.shape[0]):
            extr, _ = pose_encoding_to_extrinsics_intrinsics(pose[b], hw)
            R = np.asarray(extr)[:, :3, :3]  # camera-from-world
            truth = batch.cam_to_world[b].numpy().astype(np.float64)[:, :3, :3]  # world-from-camera
            predicted = angle_deg(R[:1] @ np.transpose(R[1:], (0, 2, 1)))
            true = angle_deg(np.transpose(truth[:1], (0, 2, 1)) @ truth[1:])
            pairs.append(np.stack([true, predicted], 1))
    return np.concatenate(pairs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", help="weights (default: the embedded model)")
    p.add_argument("--config", default=None, help="named config of --checkpoint")
    p.add_argument("--scenes", default="train,held_out", help="comma-separated scene names")
    p.add_argument("--windows", type=int, default=32, help="windows per scene")
    p.add_argument("--size", default="140x182", help="HxW")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--motion", default=None, help=f"only this camera motion ({', '.join(MOTIONS)})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    height, width = (int(v) for v in args.size.split("x"))
    if args.checkpoint:
        model, info = load_model(args.checkpoint, config=args.config or "vggt-compact", device="cpu")
    else:
        model, info = load_model(DEFAULT_MODEL.path, config=DEFAULT_MODEL.config, device="cpu")
    print(f"weights: {info}")
    for name in args.scenes.split(","):
        settings, stream = scene_settings(name.strip(), height, width, args.frames, args.motion)
        pairs = angle_pairs(model, ProceduralSource(settings, seed=args.seed, stream=stream), args.windows, 8)
        true, predicted = pairs[:, 0], pairs[:, 1]
        error = np.abs(predicted - true)
        print(f"\n{name}: {len(pairs)} pairs, |angle error| mean {error.mean():.2f} deg")
        print("| true angle (deg) | pairs | true mean | predicted mean | median ratio | mean abs error |")
        print("|---|---|---|---|---|---|")
        for lo, hi in zip(BINS_DEG[:-1], BINS_DEG[1:]):
            m = (true >= lo) & (true < hi)
            if m.any():
                ratio = np.median(predicted[m] / np.maximum(true[m], 1e-6))
                print(
                    f"| {lo}-{hi} | {m.sum()} | {true[m].mean():.1f} | {predicted[m].mean():.1f} "
                    f"| {ratio:.2f} | {error[m].mean():.1f} |"
                )


if __name__ == "__main__":
    main()
