"""Alternating-attention aggregator: the VGGT trunk.

Every frame is encoded to patch tokens by the DINOv2 encoder; a camera token and register
tokens are prepended (one learned set for the first frame, which anchors the world frame, and
one for all other frames). Then ``depth`` pairs of blocks alternate between *frame* attention
(tokens attend within their own frame) and *global* attention (all tokens of all frames
attend to each other). The output of layer ``i`` is the concatenation of the frame-block and
global-block outputs of pair ``i``: [B, S, T, 2 * dim].
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from vggt_ros.model.config import VGGTConfig
from vggt_ros.model.encoder import PatchEncoder
from vggt_ros.model.layers import SparseKeys, TransformerBlock
from vggt_ros.model.rope import RotaryEmbedding2D

# ImageNet statistics the DINOv2 encoder was trained with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

AggregatedTokens = dict[int, Tensor]
"""Aggregator layer index -> tokens [B, S, T, 2 * dim]; only the layers somebody reads."""


def _first_and_rest(token: Tensor, batch: int, frames: int) -> Tensor:
    """Learned [1, 2, X, C] tokens -> [B * S, X, C]: slot 0 for frame 0, slot 1 for the others."""
    first = token[:, :1].expand(batch, 1, *token.shape[2:])
    rest = token[:, 1:].expand(batch, frames - 1, *token.shape[2:])
    return torch.cat((first, rest), dim=1).reshape(batch * frames, *token.shape[2:])


_SPARSE_KEYS: dict[tuple[int, int, int, int, bool, str], SparseKeys] = {}


def global_sparse_keys(
    frames: int, tokens: int, patch_start: int, stride: int, device: torch.device, weighted: bool = True
) -> SparseKeys:
    """The keys sparse global attention keeps (positions into the S * T global sequence): all T
    tokens of frame 0 and every frame's special tokens (camera, registers), kept whole and
    listed first; then, for frame f > 0, its patch tokens p with (p + f) % stride == 0.

    ``weighted``: each sampled patch key stands for the ``stride`` keys of its frame it was
    drawn from, so its logit gets + ln(stride) (``SparseKeys.sample_log_weight``). Without it a
    sampled frame weighs 1 / stride of what it would in exact attention against frame 0 and the
    special tokens. Cached per shape and device (a CUDA graph replays the same tensors).
    """
    key = (frames, tokens, patch_start, stride, weighted, str(device))
    cached = _SPARSE_KEYS.get(key)
    if cached is None:
        position = torch.arange(frames * tokens).view(frames, tokens)
        frame = torch.arange(frames)[:, None]
        patch = torch.arange(tokens)[None, :] - patch_start
        whole = (frame == 0) | (patch < 0)
        sampled = ~whole & ((patch + frame) % stride == 0)
        index = torch.cat((position[whole], position[sampled])).to(device)
        log_weight = math.log(stride) if weighted else 0.0
        cached = _SPARSE_KEYS[key] = SparseKeys(index, int(whole.sum()), log_weight)
    return cached


class Aggregator(nn.Module):
    """Images [B, S, 3, H, W] in [0, 1] -> per-layer tokens [B, S, T, 2 * dim].

    ``T = 1 + num_registers + (H / patch) * (W / patch)``; patch tokens start at
    :attr:`patch_start_idx`. Token 0 of every frame is its camera token.
    """

    # Training only: recompute each block's activations in the backward pass instead of keeping
    # them (less memory, about a third more compute). Set through VGGT.set_gradient_checkpointing.
    gradient_checkpointing: bool = False
    # Inference only, approximate (opt in for long windows): in the global blocks every token
    # attends to all tokens of the first frame, to the camera and register tokens of every
    # frame, and to one patch token in ``global_key_stride`` of the other frames (a different
    # phase per frame, so together the frames cover every patch position). Attention cost falls
    # from (S T)^2 to about S T (T + (S - 1) T / stride). 0 or 1: exact. Set by the engine.
    global_key_stride: int = 0
    # With global_key_stride: add ln(stride) to the logit of each sampled patch key, which stands
    # for the stride keys it was drawn from (``global_sparse_keys``). Set by the engine.
    global_key_weighting: bool = True

    def __init__(self, cfg: VGGTConfig) -> None:
        super().__init__()
        agg = cfg.aggregator
        dim = cfg.embed_dim
        self.patch_size = cfg.patch_size
        self.depth = agg.depth
        self.patch_embed = PatchEncoder(cfg.encoder, cfg.patch_size)
        self.rope = RotaryEmbedding2D(dim // agg.num_heads, agg.rope_frequency)

        def make_block() -> TransformerBlock:
            return TransformerBlock(
                dim, agg.num_heads, agg.mlp_ratio, layer_scale=agg.init_values, qk_norm=True, rope=self.rope
            )

        self.frame_blocks = nn.ModuleList(make_block() for _ in range(agg.depth))
        self.global_blocks = nn.ModuleList(make_block() for _ in range(agg.depth))
        self.camera_token = nn.Parameter(torch.randn(1, 2, 1, dim) * 1e-6)
        self.register_token = nn.Parameter(torch.randn(1, 2, agg.num_register_tokens, dim) * 1e-6)
        self.patch_start_idx = 1 + agg.num_register_tokens
        self.register_buffer("image_mean", torch.tensor(IMAGENET_MEAN).view(1, 1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(IMAGENET_STD).view(1, 1, 3, 1, 1), persistent=False)

    def reset_non_persistent_buffers(self) -> None:
        """Refill the normalization constants (needed after building on the ``meta`` device)."""
        device = self.camera_token.device
        self.image_mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 1, 3, 1, 1)
        self.image_std = torch.tensor(IMAGENET_STD, device=device).view(1, 1, 3, 1, 1)

    def encode(self, images: Tensor) -> Tensor:
        """The per-frame part of the trunk: images [N, 3, H, W] in [0, 1] -> patch tokens
        [N, P, dim] (ImageNet normalization, then the DINOv2 encoder), P = (H / patch) * (W / patch).

        Nothing here mixes frames, so a frame's tokens do not depend on the window it is in nor
        on how many frames are encoded together (bit for bit in float32 on the CPU, which the
        tests check): the engine may encode each frame once and reuse its tokens in every
        window that contains it (``vggt_ros.engine.frame_cache``).
        """
        n, c, h, w = images.shape
        if c != 3:
            raise ValueError(f"expected 3 colour channels, got {c}")
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {self.patch_size}")
        mean = self.image_mean.to(images.dtype).view(1, 3, 1, 1)
        std = self.image_std.to(images.dtype).view(1, 3, 1, 1)
        return self.patch_embed((images - mean) / std)

    def forward(
        self,
        images: Tensor | None,
        keep_layers: Iterable[int] | None = None,
        keep_dtype: torch.dtype | None = None,
        patches: Tensor | None = None,
        image_hw: tuple[int, int] | None = None,
    ) -> AggregatedTokens:
        """Run the trunk.

        Args:
            images: [B, S, 3, H, W] in [0, 1]; H and W multiples of the patch size. May be None
                when ``patches`` are given.
            keep_layers: layer indices whose outputs to return (all when None). Keeping only
                what the heads read saves most of the trunk's activation memory.
            keep_dtype: store the returned layers in this dtype (None: as computed).
            patches: [B, S, P, dim] patch tokens from :meth:`encode` (e.g. cached per frame):
                the encoder is skipped. Needs ``image_hw`` when ``images`` is None.
            image_hw: (H, W) of the images the patches come from.
        """
        if patches is None:
            if images is None:
                raise ValueError("give images or patches")
            b, s, _, h, w = images.shape
            patches = self.encode(images.reshape(b * s, *images.shape[2:]))
        else:
            b, s = patches.shape[:2]
            h, w = image_hw if image_hw is not None else tuple(images.shape[-2:])
            patches = patches.reshape(b * s, *patches.shape[2:])
        return self._trunk(patches, b, s, (h, w), keep_layers, keep_dtype)

    def _trunk(
        self,
        patches: Tensor,
        b: int,
        s: int,
        image_hw: tuple[int, int],
        keep_layers: Iterable[int] | None,
        keep_dtype: torch.dtype | None,
    ) -> AggregatedTokens:
        """Patch tokens [B * S, P, dim] -> the kept layers (see :meth:`forward`)."""
        h, w = image_hw
        keep = set(range(self.depth)) if keep_layers is None else set(keep_layers)
        tokens = torch.cat(
            (
                _first_and_rest(self.camera_token, b, s).to(patches.dtype),
                _first_and_rest(self.register_token, b, s).to(patches.dtype),
                patches,
            ),
            dim=1,
        )
        del patches
        t, dim = tokens.shape[1], tokens.shape[2]
        grid_hw = (h // self.patch_size, w // self.patch_size)
        frame_rope = self.rope.tables(grid_hw, self.patch_start_idx, tokens.device, tokens.dtype)
        global_rope = (frame_rope[0].repeat(s, 1), frame_rope[1].repeat(s, 1))

        # Memory: a block's input is never read after the block has run, so the engine may let
        # blocks update their input in place (TransformerBlock.inplace_residual); a kept layer's
        # frame half is therefore stored before the global block runs. Kept layers are written
        # straight into their [B, S, T, 2 * dim] buffer (cast on copy, same rounding as
        # ``.to``), so no float32 half or concatenation copy outlives a layer.
        recompute = self.gradient_checkpointing and torch.is_grad_enabled()

        def run(block: nn.Module, x: Tensor, rope: tuple[Tensor, Tensor]) -> Tensor:
            return checkpoint(block, x, rope, use_reentrant=False) if recompute else block(x, rope)

        sparse_keys = None
        if self.global_key_stride > 1 and s > 1 and not torch.is_grad_enabled():
            sparse_keys = global_sparse_keys(
                s, t, self.patch_start_idx, self.global_key_stride, tokens.device, self.global_key_weighting
            )

        outputs: AggregatedTokens = {}
        for i in range(self.depth):
            tokens = run(self.frame_blocks[i], tokens.reshape(b * s, t, dim), frame_rope)
            if i in keep:
                kept = tokens.new_empty((b, s, t, 2 * dim), dtype=keep_dtype or tokens.dtype)
                kept[..., :dim].copy_(tokens.reshape(b, s, t, dim))
                outputs[i] = kept
            if sparse_keys is None:
                tokens = run(self.global_blocks[i], tokens.reshape(b, s * t, dim), global_rope)
            else:
                tokens = self.global_blocks[i](tokens.reshape(b, s * t, dim), global_rope, sparse_keys)
            if i in keep:
                outputs[i][..., dim:].copy_(tokens.reshape(b, s, t, dim))
        return outputs
