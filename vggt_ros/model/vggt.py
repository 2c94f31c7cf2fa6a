"""The VGGT network: aggregator trunk plus camera, depth, point and track heads."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vggt_ros.model.aggregator import AggregatedTokens, Aggregator
from vggt_ros.model.camera_head import CameraHead
from vggt_ros.model.config import VGGTConfig, get_config
from vggt_ros.model.dpt_head import DPTHead
from vggt_ros.model.track_head import TrackHead


class VGGT(nn.Module):
    """Visual Geometry Grounded Transformer (Wang et al., CVPR 2025).

    ``VGGT()`` builds VGGT-1B, whose ``state_dict`` matches the official checkpoints
    (``facebook/VGGT-1B``); ``VGGT("vggt-tiny")`` builds a small model with the same code paths.

    Outputs (``forward``), all in the frame of the first camera and at a normalized scale:
      - ``pose_enc`` [B, S, 9]: translation, quaternion xyzw, fov_h, fov_w (camera-from-world,
        OpenCV axes); ``pose_enc_list``: the same after each refinement step.
      - ``depth`` [B, S, H, W, 1] and ``depth_conf`` [B, S, H, W].
      - ``world_points`` [B, S, H, W, 3] and ``world_points_conf`` [B, S, H, W].
      - with ``query_points`` (x, y pixels in frame 0): ``track`` [B, S, N, 2] (pixels in every
        frame), ``vis`` and ``conf`` [B, S, N] in [0, 1].
      - ``images``: the input [B, S, 3, H, W] (in eval mode, as the reference returns it).
    """

    def __init__(self, config: VGGTConfig | str = "vggt-1b") -> None:
        super().__init__()
        cfg = get_config(config)
        self.config = cfg
        dim_in = 2 * cfg.embed_dim
        self.aggregator = Aggregator(cfg)
        self.camera_head = CameraHead(cfg.camera, dim_in) if cfg.enable_camera else None
        self.point_head = (
            DPTHead(cfg.dpt, dim_in, cfg.patch_size, output_dim=4, activation="inv_log")
            if cfg.enable_point
            else None
        )
        self.depth_head = (
            DPTHead(cfg.dpt, dim_in, cfg.patch_size, output_dim=2, activation="exp")
            if cfg.enable_depth
            else None
        )
        self.track_head = TrackHead(cfg) if cfg.enable_track else None

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Training: recompute the encoder's and the aggregator's block activations in the
        backward pass (memory for compute). No effect on inference."""
        self.aggregator.gradient_checkpointing = enabled
        self.aggregator.patch_embed.gradient_checkpointing = enabled

    def reset_non_persistent_buffers(self) -> None:
        """Refill buffers that checkpoints do not carry (after building on the ``meta`` device)."""
        self.aggregator.reset_non_persistent_buffers()

    def layers_needed(self, with_tracks: bool) -> set[int]:
        """Aggregator layers the enabled heads read; the rest need not be kept."""
        needed: set[int] = set()
        if self.camera_head is not None:
            needed.add(self.config.aggregator.depth - 1)
        if self.depth_head is not None or self.point_head is not None or (with_tracks and self.track_head):
            needed.update(self.config.dpt.layer_indices)
        return needed

    # The stages below are what ``forward`` runs; the engine calls them one by one to time
    # them, to run them in different precisions and to compile them separately.
    def aggregate(
        self,
        images: Tensor | None,
        with_tracks: bool,
        keep_all_layers: bool = False,
        keep_dtype: torch.dtype | None = None,
        patches: Tensor | None = None,
        image_hw: tuple[int, int] | None = None,
    ) -> AggregatedTokens:
        """Aggregator layers [B, S, T, 2 * dim] that the enabled heads read (or all of them),
        stored in ``keep_dtype`` when given. With ``patches`` [B, S, P, dim] (the encoder's
        tokens, :meth:`encode_frames`) the encoder is skipped."""
        keep = None if keep_all_layers else self.layers_needed(with_tracks)
        return self.aggregator(
            images, keep_layers=keep, keep_dtype=keep_dtype, patches=patches, image_hw=image_hw
        )

    def encode_frames(self, images: Tensor) -> Tensor:
        """Per-frame encoder tokens: images [N, 3, H, W] in [0, 1] -> [N, P, dim] (see
        :meth:`Aggregator.encode`)."""
        return self.aggregator.encode(images)

    def predict_cameras(self, layers: AggregatedTokens) -> list[Tensor]:
        """Pose encodings [B, S, 9], one per refinement step (the last is the prediction)."""
        return self.camera_head(layers, last_layer=self.config.aggregator.depth - 1)

    def predict_depth(self, layers: AggregatedTokens, image_hw: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """Depth [B, S, H, W, 1] and its confidence [B, S, H, W]."""
        return self.depth_head(layers, image_hw, self.aggregator.patch_start_idx)

    def predict_points(self, layers: AggregatedTokens, image_hw: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """World points [B, S, H, W, 3] and their confidence [B, S, H, W]."""
        return self.point_head(layers, image_hw, self.aggregator.patch_start_idx)

    def predict_tracks(
        self, layers: AggregatedTokens, image_hw: tuple[int, int], query_points: Tensor
    ) -> tuple[list[Tensor], Tensor, Tensor]:
        """Per-iteration tracks [B, S, N, 2], visibility and confidence [B, S, N]."""
        return self.track_head(layers, image_hw, self.aggregator.patch_start_idx, query_points)

    @staticmethod
    def batched_inputs(images: Tensor, query_points: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Add the batch dimension where missing and check the shapes."""
        if images.dim() == 4:
            images = images.unsqueeze(0)
        if images.dim() != 5:
            raise ValueError(f"images must be [S, 3, H, W] or [B, S, 3, H, W], got {tuple(images.shape)}")
        if query_points is not None:
            if query_points.dim() == 2:
                query_points = query_points.unsqueeze(0)
            if query_points.dim() != 3 or query_points.shape[-1] != 2:
                raise ValueError(f"query_points must be [N, 2] or [B, N, 2], got {tuple(query_points.shape)}")
            query_points = query_points.to(images.dtype)
        return images, query_points

    def forward(self, images: Tensor, query_points: Tensor | None = None) -> dict[str, Tensor | list[Tensor]]:
        """Run the network.

        Args:
            images: [S, 3, H, W] or [B, S, 3, H, W], RGB in [0, 1], H and W multiples of 14.
            query_points: [N, 2] or [B, N, 2] pixel coordinates (x, y) in the first frame.
        """
        images, query_points = self.batched_inputs(images, query_points)
        with_tracks = query_points is not None and self.track_head is not None
        image_hw = (images.shape[-2], images.shape[-1])
        layers = self.aggregate(images, with_tracks)
        out: dict[str, Tensor | list[Tensor]] = {}
        if self.camera_head is not None:
            encodings = self.predict_cameras(layers)
            out["pose_enc"] = encodings[-1]
            out["pose_enc_list"] = encodings
        if self.depth_head is not None:
            out["depth"], out["depth_conf"] = self.predict_depth(layers, image_hw)
        if self.point_head is not None:
            out["world_points"], out["world_points_conf"] = self.predict_points(layers, image_hw)
        if with_tracks:
            tracks, vis, conf = self.predict_tracks(layers, image_hw, query_points)
            out["track"], out["vis"], out["conf"] = tracks[-1], vis, conf
        if not self.training:
            out["images"] = images
        return out

    @torch.no_grad()
    def count_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
