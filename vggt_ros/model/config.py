"""Named VGGT configurations.

Every size, depth, width and head count of the network comes from a :class:`VGGTConfig`, so the
same code builds the full VGGT-1B model (checkpoint compatible with the official release) and
small models for CPU tests and constrained devices.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass(frozen=True)
class EncoderConfig:
    """DINOv2-style ViT that turns each frame into patch tokens (``aggregator.patch_embed``).

    ``pos_embed_grid`` is the side, in patches, of the learned position table (37 for 518 / 14);
    the table is interpolated (bicubic, antialiased) to other grids.
    """

    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_register_tokens: int = 4
    init_values: float = 1.0
    pos_embed_grid: int = 37


@dataclass(frozen=True)
class AggregatorConfig:
    """Alternating frame / global attention over all frames' tokens."""

    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_register_tokens: int = 4
    rope_frequency: float = 100.0
    init_values: float = 0.01


@dataclass(frozen=True)
class CameraHeadConfig:
    """Iterative camera-token trunk predicting the 9-d pose encoding."""

    trunk_depth: int = 4
    num_heads: int = 16
    mlp_ratio: float = 4.0
    init_values: float = 0.01
    iterations: int = 4


@dataclass(frozen=True)
class DPTHeadConfig:
    """DPT decoder shared by the depth, point and track-feature heads.

    ``layer_indices`` are the aggregator layers the dense heads read; ``out_channels`` the
    widths of the four reassembled feature maps; ``features`` the fusion width.
    """

    features: int = 256
    out_channels: tuple[int, int, int, int] = (256, 512, 1024, 1024)
    layer_indices: tuple[int, int, int, int] = (4, 11, 17, 23)
    frames_chunk_size: int = 8


@dataclass(frozen=True)
class TrackHeadConfig:
    """Track head: a DPT feature extractor plus the iterative correlation tracker."""

    features: int = 128
    iterations: int = 4
    stride: int = 2
    corr_levels: int = 7
    corr_radius: int = 4
    hidden_size: int = 384
    depth: int = 6
    num_heads: int = 8
    num_virtual_tracks: int = 64
    max_scale: int = 518


@dataclass(frozen=True)
class VGGTConfig:
    """The whole network. ``embed_dim`` is the token width (the heads see ``2 * embed_dim``)."""

    name: str = "vggt-1b"
    img_size: int = 518
    patch_size: int = 14
    embed_dim: int = 1024
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    aggregator: AggregatorConfig = field(default_factory=AggregatorConfig)
    camera: CameraHeadConfig = field(default_factory=CameraHeadConfig)
    dpt: DPTHeadConfig = field(default_factory=DPTHeadConfig)
    track: TrackHeadConfig = field(default_factory=TrackHeadConfig)
    enable_camera: bool = True
    enable_depth: bool = True
    enable_point: bool = True
    enable_track: bool = True

    def __post_init__(self) -> None:
        head_dim = self.embed_dim // self.aggregator.num_heads
        if self.embed_dim % self.aggregator.num_heads or head_dim % 4:
            raise ValueError(
                f"config {self.name!r}: embed_dim {self.embed_dim} / {self.aggregator.num_heads} heads must "
                "give a head dimension divisible by 4 (2D rotary embedding)"
            )
        if self.encoder.embed_dim != self.embed_dim:
            raise ValueError(f"config {self.name!r}: encoder.embed_dim must equal embed_dim")
        if max(self.dpt.layer_indices) >= self.aggregator.depth:
            raise ValueError(
                f"config {self.name!r}: dpt.layer_indices {self.dpt.layer_indices} exceed aggregator depth "
                f"{self.aggregator.depth}"
            )
        if self.img_size % self.patch_size:
            raise ValueError(f"config {self.name!r}: img_size must be a multiple of patch_size")

    def replace(self, **changes: object) -> VGGTConfig:
        """A copy with top-level fields changed (e.g. ``enable_track=False``)."""
        return dataclasses.replace(self, **changes)


VGGT_1B = VGGTConfig()

# About 1.9 M parameters: every code path and head of VGGT-1B, sized for CPU tests.
VGGT_TINY = VGGTConfig(
    name="vggt-tiny",
    embed_dim=64,
    encoder=EncoderConfig(embed_dim=64, depth=2, num_heads=4, num_register_tokens=4),
    aggregator=AggregatorConfig(depth=4, num_heads=4, num_register_tokens=4),
    camera=CameraHeadConfig(trunk_depth=1, num_heads=4),
    dpt=DPTHeadConfig(features=32, out_channels=(16, 32, 64, 64), layer_indices=(0, 1, 2, 3)),
    track=TrackHeadConfig(features=32, hidden_size=64, depth=1, num_heads=4, num_virtual_tracks=8),
)

# About 30 M parameters: a ViT-S sized model for constrained devices and quick experiments.
VGGT_SMALL = VGGTConfig(
    name="vggt-small",
    embed_dim=384,
    encoder=EncoderConfig(embed_dim=384, depth=12, num_heads=6),
    aggregator=AggregatorConfig(depth=12, num_heads=6),
    camera=CameraHeadConfig(trunk_depth=2, num_heads=6),
    dpt=DPTHeadConfig(features=128, out_channels=(96, 192, 384, 384), layer_indices=(2, 5, 8, 11)),
    track=TrackHeadConfig(features=64, hidden_size=192, depth=3, num_heads=4, num_virtual_tracks=32),
)

# About 6.8 M parameters (13.5 MB as fp16): the embedded default model, trained from scratch on
# procedural scenes (docs/model_card_compact.md). Every head of VGGT-1B at a width of 128, four
# encoder blocks and six frame/global pairs; runs at 182 px (140x182 for 4:3 frames), where an
# 8-frame window takes about 0.3 s on two CPU cores.
VGGT_COMPACT = VGGTConfig(
    name="vggt-compact",
    img_size=182,
    embed_dim=128,
    encoder=EncoderConfig(embed_dim=128, depth=4, num_heads=4, pos_embed_grid=16),
    aggregator=AggregatorConfig(depth=6, num_heads=4),
    camera=CameraHeadConfig(trunk_depth=1, num_heads=4),
    dpt=DPTHeadConfig(features=48, out_channels=(32, 64, 128, 128), layer_indices=(1, 2, 4, 5)),
    track=TrackHeadConfig(
        features=32, hidden_size=64, depth=2, num_heads=4, num_virtual_tracks=16, max_scale=182
    ),
)

# About 7.2 M parameters (14.4 MB as fp16): an A/B capacity experiment against vggt-compact
# within the same 15 MB budget. The mapping pipeline unprojects depth and never reads the point
# head, so its parameters go to three more frame/global pairs (nine). The dense heads read layers
# (1, 4, 6, 8): VGGT-1B's (4, 11, 17, 23) of 23 scaled to the last layer and rounded, the rule that
# also gives vggt-compact's (1, 2, 4, 5) and vggt-small's (2, 5, 8, 11).
VGGT_COMPACT_DEEP = VGGT_COMPACT.replace(
    name="vggt-compact-deep",
    aggregator=dataclasses.replace(VGGT_COMPACT.aggregator, depth=9),
    dpt=dataclasses.replace(VGGT_COMPACT.dpt, layer_indices=(1, 4, 6, 8)),
    enable_point=False,
)

CONFIGS: dict[str, VGGTConfig] = {
    cfg.name: cfg for cfg in (VGGT_1B, VGGT_SMALL, VGGT_COMPACT, VGGT_COMPACT_DEEP, VGGT_TINY)
}


def get_config(name_or_config: str | VGGTConfig) -> VGGTConfig:
    """Look up a named configuration (``vggt-1b``, ``vggt-small``, ``vggt-compact``,
    ``vggt-compact-deep``, ``vggt-tiny``)."""
    if isinstance(name_or_config, VGGTConfig):
        return name_or_config
    try:
        return CONFIGS[name_or_config]
    except KeyError:
        raise ValueError(
            f"unknown VGGT configuration {name_or_config!r}; known: {', '.join(sorted(CONFIGS))}"
        ) from None
