"""Track head: follows query pixels of the first frame through every frame of the window.

A DPT feature extractor turns the aggregated tokens into dense features at half resolution;
the correlation tracker (:mod:`vggt_ros.model.tracker`) then refines the point positions
iteratively from multi-scale feature correlations.
"""

from __future__ import annotations

from torch import Tensor, nn

from vggt_ros.model.aggregator import AggregatedTokens
from vggt_ros.model.config import VGGTConfig
from vggt_ros.model.dpt_head import DPTHead
from vggt_ros.model.tracker import CorrelationTracker


class TrackHead(nn.Module):
    """Tokens + query pixels [B, N, 2] -> per-iteration tracks [B, S, N, 2], vis and conf [B, S, N]."""

    def __init__(self, cfg: VGGTConfig) -> None:
        super().__init__()
        self.feature_extractor = DPTHead(
            cfg.dpt,
            dim_in=2 * cfg.embed_dim,
            patch_size=cfg.patch_size,
            features=cfg.track.features,
            feature_only=True,
            down_ratio=cfg.track.stride,
            position_embedding=False,
        )
        self.tracker = CorrelationTracker(cfg.track)

    def forward(
        self,
        layers: AggregatedTokens,
        image_hw: tuple[int, int],
        patch_start_idx: int,
        query_points: Tensor,
        iterations: int | None = None,
    ) -> tuple[list[Tensor], Tensor, Tensor]:
        feature_maps = self.features(layers, image_hw, patch_start_idx)
        return self.track(query_points, feature_maps, iterations)

    def features(self, layers: AggregatedTokens, image_hw: tuple[int, int], patch_start_idx: int) -> Tensor:
        """Dense track features [B, S, C, H / stride, W / stride] from the aggregated tokens."""
        return self.feature_extractor(layers, image_hw, patch_start_idx)

    def track(
        self, query_points: Tensor, feature_maps: Tensor, iterations: int | None = None
    ) -> tuple[list[Tensor], Tensor, Tensor]:
        """Query pixels [B, N, 2] through ``feature_maps``: per-iteration tracks, vis, conf."""
        # The tracker may keep a higher precision than the feature extractor (pixel coordinates).
        dtype = self.tracker.query_ref_token.dtype
        return self.tracker(query_points.to(dtype), feature_maps.to(dtype), iterations)
