"""Mirror averaging of the depth map: the runner option ``mirror_depth``.

With the option on, the runner also runs the network on the window's images flipped left-right
and averages the two depth estimates of every pixel. A network's errors on a scene and on its
mirror image are partly independent (it has no reason to prefer one handedness), so the average
is more accurate; the price is a second pass through the network. Only depth and its
confidence change: the cameras, the point map and the tracks stay those of the unflipped pass,
whose own depth the runner also returns (``depth_unflipped``): the mapping pipeline's pose
refinement measures poses by PnP on it, so window poses are exactly those without the option
(PnP on the average pulled rotations off by 0.16 degrees on the wider held-out set). Frames
padded to the window's size are padded centred (``preprocess``), so their content mirrors onto
itself; an odd padding leaves the mirrored depth one pixel off there.

On the embedded ``vggt-compact-v10`` (CPU, 2026-12-08, docs/model_card_compact.md, "Depth
averaged with the mirror image"): window depth AbsRel 0.1231 -> 0.1203 on the card's ten
held-out sequences, 0.1448 -> 0.1420 on the wider fourteen (window rotation unchanged, APE 3.85
-> 3.63 % through the chaining's scale) and 0.164 -> 0.158 on the 24 demo-room sequences. The
price is a second network pass (H100, VGGT-1B, 8 frames: 105 -> 217 ms): hence opt in.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["MIRROR_KEY", "mirror_average_depth", "mirror_images", "mirror_keys", "mirror_query_points"]

# Tag that keeps a mirrored frame's cached encoder tokens apart from the frame's own.
MIRROR_KEY = "mirrored"


def mirror_images(images: Tensor) -> Tensor:
    """Images [..., 3, H, W] flipped left-right (the last axis)."""
    return torch.flip(images, dims=[-1])


def mirror_query_points(query_points: Tensor, width: int) -> Tensor:
    """Query pixels [..., N, 2] (x, y) of an image ``width`` pixels wide, in its mirror image:
    pixel column j lands on column W - 1 - j."""
    mirrored = query_points.clone()
    mirrored[..., 0] = (width - 1) - mirrored[..., 0]
    return mirrored


def mirror_keys(frame_keys: list | tuple | None) -> list | None:
    """Frame-cache identities for the mirrored frames (distinct from the frames' own)."""
    return None if frame_keys is None else [(MIRROR_KEY, key) for key in frame_keys]


def mirror_average_depth(
    depth: Tensor, depth_conf: Tensor, mirrored_depth: Tensor, mirrored_conf: Tensor
) -> tuple[Tensor, Tensor]:
    """Average a window's depth with the depth predicted for its mirror image.

    The mirrored prediction is flipped back, brought to the unflipped prediction's scale (the
    median depth ratio over the window's finite, positive pixels: VGGT normalises each call's
    scale, and the two passes may differ slightly), then averaged pixel by pixel, each estimate
    weighted by its confidence.

    Args:
        depth: [B, S, H, W, 1] depth of the unflipped pass (camera z, normalised scale).
        depth_conf: [B, S, H, W] its confidence (> 0; >= 1 for trained weights).
        mirrored_depth: [B, S, H, W, 1] depth of the pass on the left-right flipped images.
        mirrored_conf: [B, S, H, W] its confidence.

    Returns:
        (depth [B, S, H, W, 1], depth_conf [B, S, H, W]) in the inputs' dtypes: the weighted
        mean, and the mean of the two confidences.
    """
    if depth.shape != mirrored_depth.shape or depth_conf.shape != mirrored_conf.shape:
        raise ValueError(
            f"mirrored outputs {tuple(mirrored_depth.shape)} / {tuple(mirrored_conf.shape)} do not match "
            f"{tuple(depth.shape)} / {tuple(depth_conf.shape)}"
        )
    d1 = depth.float()
    d2 = torch.flip(mirrored_depth, dims=[-2]).float()  # W is the second-last axis of depth
    c1 = depth_conf.float().unsqueeze(-1)
    c2 = torch.flip(mirrored_conf, dims=[-1]).float().unsqueeze(-1)
    ratio = d1 / d2
    usable = torch.isfinite(ratio) & (d1 > 0) & (d2 > 0)
    ratio = torch.where(usable, ratio, torch.full_like(ratio, float("nan")))
    scale = torch.nanmedian(ratio.flatten(1), dim=1).values  # [B]
    scale = torch.where(torch.isfinite(scale), scale, torch.ones_like(scale))
    d2 = d2 * scale.view(-1, *([1] * (d2.dim() - 1)))
    weights = (c1 + c2).clamp_min(torch.finfo(torch.float32).tiny)
    averaged = (c1 * d1 + c2 * d2) / weights
    conf = 0.5 * (c1 + c2).squeeze(-1)
    return averaged.to(depth.dtype), conf.to(depth_conf.dtype)
