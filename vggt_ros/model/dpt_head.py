"""DPT dense head (Ranftl et al., "Vision Transformers for Dense Prediction").

Four aggregator layers are reassembled into a feature pyramid at 4x, 2x, 1x and 1/2x the
patch grid, fused coarse-to-fine by residual refinement blocks, and upsampled to the image
(or to ``1 / down_ratio`` of it). VGGT uses it three times: depth (exp activation), world
points (signed ``expm1`` activation), and, without the output layers, as the feature
extractor of the track head. Frames are processed in chunks so memory stays flat as the
window grows.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vggt_ros.model.aggregator import AggregatedTokens
from vggt_ros.model.config import DPTHeadConfig


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize with corner alignment, split over the batch where PyTorch's kernel
    would overflow 32-bit indexing (very long windows at full resolution)."""
    limit = 1_610_612_736
    elements = size[0] * size[1] * x.shape[0] * x.shape[1]
    if elements <= limit:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=True)
    parts = x.chunk(elements // limit + 1, dim=0)
    return torch.cat([F.interpolate(p, size=size, mode="bilinear", align_corners=True) for p in parts])


def sincos_position_map(
    grid_hw: tuple[int, int], channels: int, aspect: float, device: torch.device, dtype: torch.dtype
) -> Tensor:
    """Fixed 2D sin/cos position map [channels, gh, gw] added to DPT features.

    Coordinates span the image plane normalized by its diagonal (x in ``[-a, a]``, y in
    ``[-b, b]`` with ``a / b`` the image aspect ratio and ``a^2 + b^2 = 1``), sampled at cell
    centres. The first half of the channels encode x, the second half y, each as
    ``[sin(p * w_k), cos(p * w_k)]`` with ``w_k = 100 ** (-k / (channels / 4))``.

    It depends only on shapes: each head caches what it adds (see ``DPTHead._add_positions``).
    Coordinates are evaluated in float32 for reduced-precision heads (a bf16 ``linspace`` is
    too coarse) and in the feature dtype otherwise, as the reference does.
    """
    coord_dtype = dtype if dtype in (torch.float32, torch.float64) else torch.float32
    gh, gw = grid_hw
    diag = math.sqrt(aspect**2 + 1.0)
    span_x, span_y = aspect / diag, 1.0 / diag
    xs = torch.linspace(-span_x * (gw - 1) / gw, span_x * (gw - 1) / gw, gw, dtype=coord_dtype, device=device)
    ys = torch.linspace(-span_y * (gh - 1) / gh, span_y * (gh - 1) / gh, gh, dtype=coord_dtype, device=device)
    quarter = channels // 4
    # The reference evaluates the angles in float64 from coordinates in the feature dtype.
    freqs = 1.0 / 100.0 ** (torch.arange(quarter, dtype=torch.float64, device=device) / quarter)

    def encode(coords: Tensor) -> Tensor:  # [n] -> [n, channels / 2]
        angles = coords.double()[:, None] * freqs[None, :]
        return torch.cat((angles.sin(), angles.cos()), dim=-1).float()

    ex = encode(xs)[None, :, :].expand(gh, gw, 2 * quarter)
    ey = encode(ys)[:, None, :].expand(gh, gw, 2 * quarter)
    return torch.cat((ex, ey), dim=-1).permute(2, 0, 1)


class ResidualConvUnit(nn.Module):
    """``conv2(relu(conv1(relu(x)))) + relu(x)``.

    The skip adds the *activated* input: the reference applies an in-place ReLU to ``x`` before
    its skip connection, and the released weights were trained with that behaviour.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(x)
        return self.conv2(F.relu(self.conv1(x))) + x


class FusionBlock(nn.Module):
    """Adds a refined skip feature (if any), refines, upsamples, then mixes with a 1x1 conv."""

    def __init__(self, channels: int, has_skip: bool = True) -> None:
        super().__init__()
        self.out_conv = nn.Conv2d(channels, channels, 1)
        if has_skip:
            self.resConfUnit1 = ResidualConvUnit(channels)
        self.resConfUnit2 = ResidualConvUnit(channels)
        self.has_skip = has_skip

    def forward(self, x: Tensor, skip: Tensor | None = None, size: tuple[int, int] | None = None) -> Tensor:
        if self.has_skip:
            if skip is None:
                raise ValueError("this fusion block needs a skip feature")
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        x = _resize(x, size or (x.shape[-2] * 2, x.shape[-1] * 2))
        return self.out_conv(x)


class DPTHead(nn.Module):
    """Aggregated tokens -> dense prediction.

    With ``output_dim`` set: returns (values [B, S, H, W, output_dim - 1], confidence
    [B, S, H, W]), the last channel being the confidence (``1 + exp``). With
    ``feature_only=True``: returns features [B, S, features, H / down, W / down].
    """

    def __init__(
        self,
        cfg: DPTHeadConfig,
        dim_in: int,
        patch_size: int,
        output_dim: int = 0,
        activation: str = "exp",
        features: int | None = None,
        feature_only: bool = False,
        down_ratio: int = 1,
        position_embedding: bool = True,
    ) -> None:
        super().__init__()
        if activation not in ("exp", "inv_log"):
            raise ValueError(f"unknown DPT activation {activation!r}")
        if not feature_only and output_dim < 2:
            raise ValueError("a prediction head needs output_dim >= 2 (values + confidence)")
        features = features or cfg.features
        ch = cfg.out_channels
        self.patch_size = patch_size
        self.layer_indices = tuple(cfg.layer_indices)
        self.frames_chunk_size = cfg.frames_chunk_size
        # Windows longer than one chunk may use smaller chunks (set by the engine): the
        # full-resolution tail of each chunk is the peak memory of a long window.
        self.long_window_chunk_size: int | None = None
        # (grid, channels, aspect, device, dtype) -> 0.1 x position map in that dtype.
        self._position_cache: dict[tuple, Tensor] = {}
        self.activation = activation
        self.feature_only = feature_only
        self.down_ratio = down_ratio
        self.position_embedding = position_embedding

        self.norm = nn.LayerNorm(dim_in)
        self.projects = nn.ModuleList(nn.Conv2d(dim_in, c, 1) for c in ch)
        self.resize_layers = nn.ModuleList(
            (
                nn.ConvTranspose2d(ch[0], ch[0], kernel_size=4, stride=4),  # 4x the patch grid
                nn.ConvTranspose2d(ch[1], ch[1], kernel_size=2, stride=2),  # 2x
                nn.Identity(),  # 1x
                nn.Conv2d(ch[3], ch[3], kernel_size=3, stride=2, padding=1),  # 1/2x
            )
        )
        self.scratch = nn.Module()
        for i, c in enumerate(ch, start=1):
            setattr(self.scratch, f"layer{i}_rn", nn.Conv2d(c, features, 3, padding=1, bias=False))
        self.scratch.refinenet1 = FusionBlock(features)
        self.scratch.refinenet2 = FusionBlock(features)
        self.scratch.refinenet3 = FusionBlock(features)
        self.scratch.refinenet4 = FusionBlock(features, has_skip=False)
        if feature_only:
            self.scratch.output_conv1 = nn.Conv2d(features, features, 3, padding=1)
        else:
            self.scratch.output_conv1 = nn.Conv2d(features, features // 2, 3, padding=1)
            self.scratch.output_conv2 = nn.Sequential(
                nn.Conv2d(features // 2, 32, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(32, output_dim, 1),
            )

    def forward(self, layers: AggregatedTokens, image_hw: tuple[int, int], patch_start_idx: int):
        """Run the head over all frames in chunks of ``frames_chunk_size``.

        Each chunk's result is written into outputs allocated once for the window (no list of
        chunk results plus a concatenated copy).
        """
        frames = layers[self.layer_indices[0]].shape[1]
        chunk = self.frames_chunk_size if self.frames_chunk_size > 0 else frames
        if self.long_window_chunk_size and frames > chunk:
            chunk = self.long_window_chunk_size
        outputs: list[Tensor] = []
        for start in range(0, frames, chunk):
            stop = min(start + chunk, frames)
            tokens = [layers[i][:, start:stop, patch_start_idx:] for i in self.layer_indices]
            result = self.forward_chunk(tokens, image_hw)
            if stop - start == frames:
                return result
            parts = [result] if self.feature_only else list(result)
            if not outputs:
                outputs = [p.new_empty((p.shape[0], frames, *p.shape[2:])) for p in parts]
            for out, part in zip(outputs, parts, strict=True):
                out[:, start:stop] = part
        return outputs[0] if self.feature_only else tuple(outputs)

    def _add_positions(self, x: Tensor, image_hw: tuple[int, int]) -> Tensor:
        """``x`` [N, C, h, w] plus 0.1 x the sin/cos position map, cast to ``x``'s dtype."""
        h, w = image_hw
        key = (tuple(x.shape[-2:]), x.shape[1], w / h, x.device, x.dtype)
        if torch.compiler.is_dynamo_compiling():
            # Traced by torch.compile: built inline, Inductor folds the table into the addition
            # (a cache lookup would make Dynamo guard on the cache's contents).
            return x + (sincos_position_map(*key) * 0.1).to(x.dtype)
        table = self._position_cache.get(key)
        if table is None:
            # Per head, so it is freed with the model (a process-wide cache kept every size and
            # dtype ever seen, 93 MB each at full resolution).
            table = (sincos_position_map(*key) * 0.1).to(x.dtype)
            self._position_cache[key] = table
        return x + table

    def forward_chunk(self, tokens: list[Tensor], image_hw: tuple[int, int]):
        """One chunk of frames.

        Args:
            tokens: the patch tokens [B, s, P, 2 * dim] of each layer in ``layer_indices``.
            image_hw: the model input size (H, W).

        This is the unit the engine compiles: one compiled call per chunk keeps one chunk's
        intermediates alive (compiling ``forward`` would unroll the chunk loop, and Inductor
        may then keep several chunks' buffers at once).
        """
        h, w = image_hw
        gh, gw = h // self.patch_size, w // self.patch_size
        pyramid: list[Tensor] = []
        for level, layer_tokens in enumerate(tokens):
            # Cast to the head's own precision: the trunk may run in another one.
            layer_tokens = layer_tokens.to(self.norm.weight.dtype)
            b, s = layer_tokens.shape[:2]
            x = self.norm(layer_tokens.reshape(b * s, gh * gw, -1))
            x = x.transpose(1, 2).reshape(b * s, -1, gh, gw)
            x = self.projects[level](x)
            if self.position_embedding:
                x = self._add_positions(x, image_hw)
            pyramid.append(self.resize_layers[level](x))

        sc = self.scratch
        l1, l2, l3, l4 = (getattr(sc, f"layer{i}_rn")(f) for i, f in enumerate(pyramid, start=1))
        out = sc.refinenet4(l4, size=tuple(l3.shape[-2:]))
        out = sc.refinenet3(out, l3, size=tuple(l2.shape[-2:]))
        out = sc.refinenet2(out, l2, size=tuple(l1.shape[-2:]))
        out = sc.refinenet1(out, l1)
        out = sc.output_conv1(out)
        out = _resize(out, (gh * self.patch_size // self.down_ratio, gw * self.patch_size // self.down_ratio))
        if self.position_embedding:
            out = self._add_positions(out, image_hw)
        if self.feature_only:
            return out.reshape(b, s, *out.shape[1:])

        out = sc.output_conv2(out).permute(0, 2, 3, 1)  # [B*s, H, W, output_dim]
        values, conf = out[..., :-1], out[..., -1]
        if self.activation == "exp":
            values = values.exp()
        else:  # signed expm1 keeps large coordinates in range
            values = values.sign() * values.abs().expm1()
        conf = 1 + conf.exp()
        return values.reshape(b, s, *values.shape[1:]), conf.reshape(b, s, *conf.shape[1:])
