"""Iterative correlation tracker of VGGT's track head.

Given query points in the first frame and per-frame feature maps, the tracker starts every track
at its query position in all frames and refines it for a fixed number of iterations. Each
iteration looks up how well the track's current appearance descriptor correlates with a window
of the feature maps around the current estimate (at several scales), encodes that together with
the motion so far, and lets :class:`~vggt_ros.model.tracker_blocks.TrackUpdateTransformer`
predict a position correction and a descriptor update for every track and frame. Visibility and
confidence are read from the final descriptors.

Parameter names (``corr_mlp``, ``updateformer``, ``fmap_norm``, ``ffeat_norm``,
``ffeat_updater.0``, ``vis_predictor.0``, ``conf_predictor.0``, ``query_ref_token``) are fixed by
the official VGGT checkpoints (``track_head.tracker.*``) and must not change.

Numerical conditioning: the motion embedding uses sin/cos of the displacement with frequencies
up to ~1000 rad per feature pixel, so a last-bit change of a track coordinate changes those
channels by ~1e-3 and, with the seeded random weights of the parity fixtures, the final tracks by
orders of magnitude more (measured with the upstream code itself: a 1e-7 relative perturbation of
the feature maps moves 4-iteration tracks by ~3e-3 relative L2 and vis/conf by 1e-2..1e-1). We
therefore mirror the upstream order of operations and kernels (full correlation volumes,
``nn.MultiheadAttention`` calls, the same reshapes / copies before each linear layer); on CPU in
float32 the outputs are bit-identical to upstream for identical inputs.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from vggt_ros.model.config import TrackHeadConfig
from vggt_ros.model.layers import Mlp
from vggt_ros.model.tracker_blocks import (
    TrackUpdateTransformer,
    correlation_window_offsets,
    displacement_embedding,
    sample_at_pixels,
    sample_point_features,
    sincos_grid_embedding,
)


class CorrelationPyramid:
    """Multi-scale correlation lookups between track descriptors and feature maps.

    Level 0 is the feature map itself; each further level halves it with 2x2 average pooling
    (odd sizes round down). A lookup at level ``l`` correlates a descriptor with every pixel of
    the level (dot product / sqrt(C)) and reads that correlation map bilinearly on a
    (2r+1) x (2r+1) window of unit steps centred on ``coords / 2**l``, with zeros outside the map.

    Interpolating features first and correlating only the window cells would be the same
    function at a fraction of the memory, but it rounds differently, and the refinement loop
    amplifies rounding differences (see the module docstring); so, like upstream, each level's
    full volume is built, sampled and dropped.
    """

    def __init__(self, fmaps: Tensor, levels: int, radius: int) -> None:
        """``fmaps`` [B, S, C, H, W]."""
        batch, frames, channels, height, width = fmaps.shape
        if min(height, width) >> (levels - 1) < 1:
            raise ValueError(
                f"feature maps of {height}x{width} are too small for a {levels}-level correlation "
                f"pyramid (each side must be at least {2 ** (levels - 1)})"
            )
        self.levels: list[Tensor] = [fmaps]
        for _ in range(levels - 1):
            pooled = nn.functional.avg_pool2d(
                self.levels[-1].reshape(batch * frames, channels, *self.levels[-1].shape[-2:]), 2, stride=2
            )
            self.levels.append(pooled.reshape(batch, frames, channels, *pooled.shape[-2:]))
        side = 2 * radius + 1
        self.offsets = correlation_window_offsets(radius, fmaps.device, fmaps.dtype).reshape(1, side, side, 2)
        self.norm = math.sqrt(channels)

    def lookup(self, descriptors: Tensor, coords: Tensor) -> Tensor:
        """Correlation features.

        Args:
            descriptors: [B, S, N, C], one descriptor per track and frame.
            coords: [B, S, N, 2], window centres (x, y) in level-0 pixels.

        Returns:
            [B, S, N, levels * (2r+1)^2]: level-major, then window cell (see
            :func:`correlation_window_offsets`).
        """
        batch, frames, num_tracks, _ = descriptors.shape
        centres = coords.reshape(batch * frames * num_tracks, 1, 1, 2)
        per_level = []
        for index, features in enumerate(self.levels):
            channels, height, width = features.shape[-3:]
            volume = torch.matmul(descriptors, features.reshape(batch, frames, channels, height * width))
            volume = (volume / self.norm).reshape(batch * frames * num_tracks, 1, height, width)
            window = centres / (2**index) + self.offsets.to(coords.dtype)  # [B*S*N, 2r+1, 2r+1, 2]
            sampled = sample_at_pixels(volume, window, padding_mode="zeros")  # [B*S*N, 1, 2r+1, 2r+1]
            per_level.append(sampled.reshape(batch, frames, num_tracks, -1))
        return torch.cat(per_level, dim=-1)


class CorrelationTracker(nn.Module):
    """Tracks query points of frame 0 through all frames by iterative correlation refinement.

    Built from :class:`~vggt_ros.model.config.TrackHeadConfig`: ``features`` (descriptor width
    C, must equal the feature maps' channels), ``iterations``, ``stride`` (feature-map
    downsampling relative to the image), ``corr_levels``, ``corr_radius``, ``hidden_size``,
    ``depth``, ``num_heads``, ``num_virtual_tracks``, ``max_scale``.
    """

    def __init__(self, cfg: TrackHeadConfig) -> None:
        super().__init__()
        latent = cfg.features
        if latent % 4:
            raise ValueError(f"track features {latent} must be divisible by 4 (sin/cos embeddings)")
        self.latent_dim = latent
        self.iterations = cfg.iterations
        self.stride = cfg.stride
        self.corr_levels = cfg.corr_levels
        self.corr_radius = cfg.corr_radius
        self.max_scale = cfg.max_scale
        # Transformer input: motion embedding (C + 4), correlation features (C), descriptor (C).
        self.token_dim = 3 * latent + 4
        # (H, W, device, dtype) -> fixed grid embedding; derived from sizes only, never from weights.
        self._grid_cache: dict[tuple, Tensor] = {}

        window = (2 * cfg.corr_radius + 1) ** 2
        self.corr_mlp = Mlp(cfg.corr_levels * window, cfg.hidden_size, latent)
        # Learned offsets telling the transformer which frame holds the query ([0]) and which
        # frames are searched ([1]).
        self.query_ref_token = nn.Parameter(torch.randn(1, 2, self.token_dim))
        self.updateformer = TrackUpdateTransformer(
            in_dim=self.token_dim,
            hidden_dim=cfg.hidden_size,
            out_dim=latent + 2,
            depth=cfg.depth,
            num_heads=cfg.num_heads,
            num_virtual=cfg.num_virtual_tracks,
        )
        self.fmap_norm = nn.LayerNorm(latent)
        self.ffeat_norm = nn.GroupNorm(1, latent)
        self.ffeat_updater = nn.Sequential(nn.Linear(latent, latent), nn.GELU())
        self.vis_predictor = nn.Sequential(nn.Linear(latent, 1))
        self.conf_predictor = nn.Sequential(nn.Linear(latent, 1))

    def _grid_embedding(self, height: int, width: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        """The fixed per-pixel embedding [token_dim, H, W], built once per size, device and dtype.

        It is computed in float64 on the CPU; rebuilding and uploading it on every call was a
        synchronous 70 MB host-to-device copy per window at 518 px.
        """
        key = (height, width, device, dtype)
        table = self._grid_cache.get(key)
        if table is None:
            table = sincos_grid_embedding(self.token_dim, height, width).to(device, dtype)
            self._grid_cache[key] = table
        return table

    def _frame_tokens(self, frames: int, dtype: torch.dtype) -> Tensor:
        """Query-frame / search-frame marker per frame: [S, token_dim]."""
        query_token, search_token = self.query_ref_token[0].to(dtype).unbind(0)
        return torch.cat([query_token[None], search_token[None].expand(frames - 1, -1)], dim=0)

    def forward(
        self, query_points: Tensor, fmaps: Tensor, iterations: int | None = None
    ) -> tuple[list[Tensor], Tensor, Tensor]:
        """Track ``query_points`` through the frames of ``fmaps``.

        Args:
            query_points: [B, N, 2] (x, y) in image pixels of frame 0 (the image the feature maps
                were computed from, i.e. ``stride`` times the feature-map resolution).
            fmaps: [B, S, C, H', W'] per-frame features at 1/``stride`` of the image resolution.
            iterations: refinement steps; ``cfg.iterations`` when None.

        Returns:
            ``(tracks, vis, conf)``: ``tracks`` holds one [B, S, N, 2] tensor of (x, y) image
            pixels per iteration (the last is the final estimate; frame 0 always equals the
            query); ``vis`` and ``conf`` [B, S, N] are probabilities in (0, 1) from the final
            iteration.
        """
        if iterations is None:
            iterations = self.iterations
        batch, num_tracks, _ = query_points.shape
        _, frames, channels, height, width = fmaps.shape
        if channels != self.latent_dim:
            raise ValueError(f"feature maps have {channels} channels, the tracker expects {self.latent_dim}")
        latent = self.latent_dim

        fmaps = self.fmap_norm(fmaps.permute(0, 1, 3, 4, 2)).permute(0, 1, 4, 2, 3)
        queries = query_points / float(self.stride)  # feature-map pixels [B, N, 2]
        # Every track starts at its query position in every frame.
        coords = queries[:, None].repeat(1, frames, 1, 1)  # [B, S, N, 2]
        # Descriptors [B, S, N, C] start as the query frame's features at the query points.
        query_feats = sample_point_features(fmaps[:, 0], queries)
        descriptors = query_feats[:, None].repeat(1, frames, 1, 1)

        pyramid = CorrelationPyramid(fmaps, self.corr_levels, self.corr_radius)

        # Iteration-invariant token parts, laid out [B*N, S, token_dim] like the transformer input:
        # the fixed position embedding of each query (interpolated from the per-pixel table) and
        # the query/search frame markers.
        grid_embedding = self._grid_embedding(height, width, fmaps.device, fmaps.dtype)
        query_position = sample_point_features(grid_embedding[None].expand(batch, -1, -1, -1), queries)
        query_position = query_position.reshape(batch * num_tracks, 1, self.token_dim)
        frame_tokens = self._frame_tokens(frames, fmaps.dtype)  # [S, D]

        predictions: list[Tensor] = []
        for _ in range(iterations):
            # The next step sees the current estimate as a fixed input (no gradient through
            # earlier refinement steps).
            coords = coords.detach()
            corr = pyramid.lookup(descriptors, coords)  # [B, S, N, L]
            # Per-track sequences over frames: [B*N, S, .] (copies, as the kernels below expect).
            corr_feats = self.corr_mlp(corr.transpose(1, 2).reshape(batch * num_tracks, frames, -1))
            motion = (coords - coords[:, :1]).transpose(1, 2).reshape(batch * num_tracks, frames, 2)
            scaled_motion = motion / self.max_scale
            motion_feats = torch.cat(
                [displacement_embedding(motion, latent // 2).to(motion.dtype), scaled_motion, scaled_motion],
                dim=-1,
            )
            track_descriptors = descriptors.transpose(1, 2).reshape(batch * num_tracks * frames, latent)
            tokens = torch.cat(
                [motion_feats, corr_feats, track_descriptors.reshape(batch * num_tracks, frames, latent)],
                dim=-1,
            )
            tokens = tokens + query_position + frame_tokens

            update = self.updateformer(tokens.reshape(batch, num_tracks, frames, self.token_dim))
            step = update[..., :2]  # [B, N, S, 2]
            descriptor_update = self.ffeat_norm(update[..., 2:].reshape(-1, latent))
            track_descriptors = self.ffeat_updater(descriptor_update) + track_descriptors
            descriptors = track_descriptors.reshape(batch, num_tracks, frames, latent).transpose(1, 2)

            coords = coords + step.transpose(1, 2)
            # Frame 0 is where the query was given: it stays pinned there.
            coords = torch.cat([queries[:, None], coords[:, 1:]], dim=1)
            predictions.append(coords * self.stride)

        flat = descriptors.reshape(batch * frames * num_tracks, latent)
        vis = torch.sigmoid(self.vis_predictor(flat).reshape(batch, frames, num_tracks))
        conf = torch.sigmoid(self.conf_predictor(flat).reshape(batch, frames, num_tracks))
        return predictions, vis, conf


__all__ = ["CorrelationPyramid", "CorrelationTracker"]
