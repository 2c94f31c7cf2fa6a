"""Camera head: predicts each frame's 9-d pose encoding from its camera token.

Encoding: translation (3), rotation quaternion xyzw (4), field of view (fov_h, fov_w), with the
camera-from-world convention and the first frame at the identity. The head refines its guess
``iterations`` times: the current guess modulates the normalized camera tokens (adaptive layer
norm: shift, scale and gate), a small transformer trunk runs over the frames, and an MLP
predicts an update that is added to the guess.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vggt_ros.model.aggregator import AggregatedTokens
from vggt_ros.model.config import CameraHeadConfig
from vggt_ros.model.layers import Mlp, TransformerBlock

POSE_ENCODING_DIM = 9


def activate_pose_encoding(raw: Tensor) -> Tensor:
    """Translation and quaternion are linear; the fields of view go through ReLU (positive)."""
    return torch.cat((raw[..., :7], F.relu(raw[..., 7:])), dim=-1)


class CameraHead(nn.Module):
    """Camera tokens of the last aggregator layer -> pose encodings, one per refinement step."""

    def __init__(self, cfg: CameraHeadConfig, dim_in: int) -> None:
        super().__init__()
        self.iterations = cfg.iterations
        self.trunk = nn.Sequential(
            *(
                TransformerBlock(dim_in, cfg.num_heads, cfg.mlp_ratio, layer_scale=cfg.init_values)
                for _ in range(cfg.trunk_depth)
            )
        )
        self.token_norm = nn.LayerNorm(dim_in)
        self.trunk_norm = nn.LayerNorm(dim_in)
        # The "no guess yet" encoding fed in at the first iteration.
        self.empty_pose_tokens = nn.Parameter(torch.zeros(1, 1, POSE_ENCODING_DIM))
        self.embed_pose = nn.Linear(POSE_ENCODING_DIM, dim_in)
        self.poseLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim_in, 3 * dim_in))
        self.adaln_norm = nn.LayerNorm(dim_in, elementwise_affine=False, eps=1e-6)
        self.pose_branch = Mlp(dim_in, dim_in // 2, POSE_ENCODING_DIM)

    def forward(
        self, layers: AggregatedTokens, last_layer: int, iterations: int | None = None
    ) -> list[Tensor]:
        """Returns the activated pose encoding [B, S, 9] after each refinement step."""
        # Cast to the head's own precision (the trunk may run in another one).
        tokens = layers[last_layer][:, :, 0].to(self.token_norm.weight.dtype)
        return self.refine(tokens, iterations or self.iterations)

    def refine(self, camera_tokens: Tensor, iterations: int) -> list[Tensor]:
        """Raw camera tokens [B, S, dim_in] -> pose encodings [B, S, 9] after each step.

        A fixed sequence of small kernels on a fixed-size input: the engine may replay it as a
        CUDA graph, where launch latency would otherwise dominate.
        """
        camera_tokens = self.token_norm(camera_tokens)
        b, s, _ = camera_tokens.shape
        normalized = self.adaln_norm(camera_tokens)
        raw: Tensor | None = None
        encodings: list[Tensor] = []
        for _ in range(iterations):
            guess = self.empty_pose_tokens.expand(b, s, -1) if raw is None else raw.detach()
            shift, scale, gate = self.poseLN_modulation(self.embed_pose(guess)).chunk(3, dim=-1)
            modulated = gate * (normalized * (1 + scale) + shift) + camera_tokens
            # The guess accumulates in the tokens' precision (float32), also when the trunk's
            # matrix products run in bf16: a bf16 sum would quantise translations to ~1 %.
            delta = self.pose_branch(self.trunk_norm(self.trunk(modulated))).to(camera_tokens.dtype)
            raw = delta if raw is None else raw + delta
            encodings.append(activate_pose_encoding(raw))
        return encodings
