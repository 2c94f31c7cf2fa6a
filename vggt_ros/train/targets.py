"""Ground truth of a window in the frame and scale VGGT predicts (the training targets).

VGGT predicts everything in the first camera's frame at a normalized scale. The targets follow
the official recipe: cameras and points are re-expressed in camera 0's optical frame (camera 0
becomes the identity), then divided by the mean distance of the window's valid points to
camera 0's centre, so the average point sits at distance 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vggt_ros.geometry import extrinsics_intrinsics_to_pose_encoding

MIN_VALID_PIXELS = 100  # a frame with fewer valid depth pixels takes no camera/depth loss


@dataclass
class WindowBatch:
    """Raw ground truth of B windows of S frames (any world frame, metres).

    Attributes:
        images: [B, S, 3, H, W] float32 RGB in [0, 1].
        cam_to_world: [B, S, 4, 4] float32 camera (OpenCV optical) -> world.
        intrinsics: [B, S, 3, 3] float32 pixel intrinsics of the images.
        depth: [B, S, H, W] float32 z-depth, or None when the source has no depth.
        depth_valid: [B, S, H, W] bool where ``depth`` is trustworthy, or None.
        query_points: [B, N, 2] (x, y) pixels in frame 0, or None.
        tracks: [B, S, N, 2] pixels of the queries' points in every frame, or None.
        track_visible: [B, S, N] bool, or None.
    """

    images: Tensor
    cam_to_world: Tensor
    intrinsics: Tensor
    depth: Tensor | None = None
    depth_valid: Tensor | None = None
    query_points: Tensor | None = None
    tracks: Tensor | None = None
    track_visible: Tensor | None = None

    @property
    def batch_size(self) -> int:
        return int(self.images.shape[0])

    def to(self, device: torch.device | str) -> WindowBatch:
        return WindowBatch(**{k: None if v is None else v.to(device) for k, v in vars(self).items()})

    def select(self, index: slice) -> WindowBatch:
        return WindowBatch(**{k: None if v is None else v[index] for k, v in vars(self).items()})

    def first_frames(self, frames: int) -> WindowBatch:
        """The same windows cut to their first ``frames`` frames (frame 0, the reference, and
        the track queries, which live in frame 0, are kept)."""
        return WindowBatch(
            **{k: v if v is None or k == "query_points" else v[:, :frames] for k, v in vars(self).items()}
        )


@dataclass
class Targets:
    """Normalized targets of B windows (camera 0 = identity, unit mean point distance).

    Attributes:
        images: [B, S, 3, H, W].
        extrinsics: [B, S, 3, 4] camera-from-world with the world = camera 0.
        intrinsics: [B, S, 3, 3].
        pose_enc: [B, S, 9] the encoding VGGT predicts (translation, quaternion xyzw, fovs).
        depth: [B, S, H, W] normalized z-depth (zeros where invalid), or None.
        world_points: [B, S, H, W, 3] points in camera 0's frame, normalized, or None.
        valid: [B, S, H, W] bool valid depth/points, or None.
        frame_valid: [B, S] bool frames with enough valid pixels (all True without depth).
        scale: [B] the metres per normalized unit of each window.
        query_points, tracks, track_visible: as in :class:`WindowBatch` (pixels need no
            normalization).
    """

    images: Tensor
    extrinsics: Tensor
    intrinsics: Tensor
    pose_enc: Tensor
    depth: Tensor | None
    world_points: Tensor | None
    valid: Tensor | None
    frame_valid: Tensor
    scale: Tensor
    query_points: Tensor | None = None
    tracks: Tensor | None = None
    track_visible: Tensor | None = None


def unproject_depth(depth: Tensor, intrinsics: Tensor) -> Tensor:
    """Camera-frame points [..., H, W, 3] from z-depth [..., H, W] (pixel centres at integers)."""
    h, w = depth.shape[-2:]
    v, u = torch.meshgrid(
        torch.arange(h, device=depth.device, dtype=depth.dtype),
        torch.arange(w, device=depth.device, dtype=depth.dtype),
        indexing="ij",
    )
    K = intrinsics[..., None, None, :, :]
    x = (u - K[..., 0, 2]) / K[..., 0, 0] * depth
    y = (v - K[..., 1, 2]) / K[..., 1, 1] * depth
    return torch.stack((x, y, depth), dim=-1)


def normalize_window(batch: WindowBatch) -> Targets:
    """Express a batch of windows the way VGGT predicts it (see the module docstring).

    Without depth the scale comes from the camera centres (mean distance to camera 0), so a
    pose-only source (e.g. EuRoC) still trains the camera head.
    """
    T = batch.cam_to_world.double()
    first_inv = torch.linalg.inv(T[:, :1])  # camera0-from-world [B, 1, 4, 4]
    rel = first_inv @ T  # camera k -> camera 0
    world_from_cam = rel
    extr = torch.linalg.inv(world_from_cam)[..., :3, :]  # camera-from-"world = camera 0"
    b, s = T.shape[:2]

    depth = points = valid = None
    if batch.depth is not None:
        valid = batch.depth_valid if batch.depth_valid is not None else torch.isfinite(batch.depth)
        valid = valid & torch.isfinite(batch.depth) & (batch.depth > 0)
        depth64 = torch.where(valid, batch.depth, torch.zeros_like(batch.depth)).double()
        cam_points = unproject_depth(depth64, batch.intrinsics.double())
        R, t = world_from_cam[..., :3, :3], world_from_cam[..., :3, 3]
        points = torch.einsum("bsij,bshwj->bshwi", R, cam_points) + t[:, :, None, None]
        dist = points.norm(dim=-1)
        count = valid.sum(dim=(1, 2, 3))
        scale = (dist * valid).sum(dim=(1, 2, 3)) / count.clamp_min(1)
        # Windows without any valid pixel (a depth-less source mixed into the batch) keep their
        # camera loss on every frame and take the camera-centre scale.
        has_depth = count > 0
        frame_valid = (valid.sum(dim=(2, 3)) > MIN_VALID_PIXELS) | ~has_depth[:, None]
        centres = world_from_cam[..., :3, 3].norm(dim=-1).mean(dim=1)
        scale = torch.where(has_depth, scale, centres)
    else:
        scale = world_from_cam[..., :3, 3].norm(dim=-1).mean(dim=1)
        frame_valid = torch.ones((b, s), dtype=torch.bool, device=T.device)
    scale = scale.clamp_min(1e-6)
    extr = extr.clone()
    extr[..., :3, 3] = extr[..., :3, 3] / scale[:, None, None]
    if points is not None:
        points = (points / scale[:, None, None, None, None]).float()
        depth = (depth64 / scale[:, None, None, None]).float()
    hw = tuple(batch.images.shape[-2:])
    pose_enc = extrinsics_intrinsics_to_pose_encoding(extr, batch.intrinsics.double(), hw).float()
    return Targets(
        images=batch.images,
        extrinsics=extr.float(),
        intrinsics=batch.intrinsics,
        pose_enc=pose_enc,
        depth=depth,
        world_points=points,
        valid=valid,
        frame_valid=frame_valid,
        scale=scale.float(),
        query_points=batch.query_points,
        tracks=batch.tracks,
        track_visible=batch.track_visible,
    )


def patch_cells(xy: Tensor, patch: int, grid_hw: tuple[int, int]) -> Tensor:
    """Pixels (x, y) [..., 2] -> row-major index [...] of the patch of a ``grid_hw`` grid of
    ``patch``-pixel patches that holds them (clamped to the grid)."""
    gh, gw = grid_hw
    col = torch.div(xy[..., 0], patch, rounding_mode="floor").clamp(0, gw - 1)
    row = torch.div(xy[..., 1], patch, rounding_mode="floor").clamp(0, gh - 1)
    return (row * gw + col).long()


def inside_grid(xy: Tensor, patch: int, grid_hw: tuple[int, int]) -> Tensor:
    """Pixels (x, y) [..., 2] -> bool [...]: inside the image the patch grid covers."""
    gh, gw = grid_hw
    x, y = xy[..., 0], xy[..., 1]
    return (x >= 0) & (x < gw * patch) & (y >= 0) & (y < gh * patch)
