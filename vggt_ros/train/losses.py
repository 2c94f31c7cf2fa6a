"""The VGGT training losses (Wang et al., CVPR 2025, section 3.4), per window.

* Camera: Huber (smooth L1) distance between predicted and true pose encodings after every
  refinement iteration, iteration ``i`` of ``n`` weighted ``gamma ** (n - 1 - i)`` (the last
  weighs 1); translation, rotation and field-of-view parts weighted separately.
* Depth and points: aleatoric-uncertainty regression, ``conf * |error| - alpha * log(conf)``
  over valid pixels, plus the same confidence weighting applied to a multi-scale gradient term
  (differences of the error between neighbouring pixels), which sharpens edges.
* Tracks: L1 distance of the predicted track after every iteration (weighted like the camera
  loss) over frames where the point is visible, binary cross-entropy of the visibility, and of
  the confidence against "within ``conf_radius`` pixels".
* Match (ours, opt in with ``match`` > 0; 0 keeps the official recipe): an InfoNCE
  correspondence loss on the last aggregator layer's patch tokens. For each track query the
  token of its frame-0 patch must be most similar (cosine / ``match_temperature``) to the token
  of the patch the point lands in, among all patches of each later frame where it is visible.
  It supervises cross-view matching densely, the step a randomly initialised trunk never takes
  from the camera loss alone (docs/training.md, "Why poses are not learned").
* Attention match (ours, opt in with ``attention_match`` > 0): the same correspondences asked
  of the global attention itself (:mod:`vggt_ros.train.attention_match`).
* Flow (ours, opt in with ``flow`` > 0): where each patch of a later frame came from. For
  every track point visible in frame k, the first two channels of the global-block half of the
  frame-k patch token it lands in, at the second-to-last aggregator layer, must equal the
  point's displacement back to frame 0 in patch units (L1). A fixed readout, so no parameter is
  added to the model. Matching alone leaves the tokens without any readable displacement, and
  relative pose needs exactly that; the layer is one before the last so that the last layer's
  camera tokens can pool it.
* Depth log (ours, opt in with ``depth_log`` > 0): the scale-free error the model card scores.
  Per window, the log depth error minus its median over the window's valid pixels, in absolute
  value (``|log d - log d* - median|``, outliers above the quantile dropped). After one median
  scale per window this is close to AbsRel, which weighs near surfaces as much as far ones;
  the confidence-weighted L1 above is in units of depth and so weighs far surfaces most.

Every loss is averaged inside each window first and then over windows, so the loss of a batch
does not depend on how windows are split across processes (DDP averages per-process losses).
All arithmetic runs in float32 whatever the autocast precision of the network.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from vggt_ros.train.attention_match import attention_match_loss
from vggt_ros.train.targets import Targets, inside_grid, patch_cells

LOSS_NAMES = (
    "camera",
    "camera_T",
    "camera_R",
    "camera_FL",
    "depth_conf",
    "depth_grad",
    "depth_reg",
    "depth_log",
    "point_conf",
    "point_grad",
    "point_reg",
    "track",
    "track_vis",
    "track_conf",
    "match",
    "match_acc",
    "attention_match",
    "attention_match_p",
    "flow",
    "flow_px",
)


@dataclass(frozen=True)
class LossWeights:
    """Weights and constants of the losses: camera weight 5, gamma 0.6, focal weight 0.5,
    alpha 0.2, quantile 0.98 as the official training configuration; the track weight 0.05 as
    the paper (on all three track terms); the Huber delta is ours."""

    camera: float = 5.0
    camera_gamma: float = 0.6
    camera_huber_delta: float = 0.1
    translation: float = 1.0
    rotation: float = 1.0
    focal: float = 0.5
    depth: float = 1.0
    depth_log: float = 0.0
    point: float = 1.0
    alpha: float = 0.2
    gradient_scales: int = 3
    track: float = 0.05
    track_gamma: float = 0.8
    track_vis: float = 0.05
    track_conf: float = 0.05
    conf_radius: float = 3.0
    quantile: float = 0.98
    match: float = 0.0
    match_temperature: float = 0.1
    attention_match: float = 0.0
    flow: float = 0.0


def _window_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` [B, ...] over ``mask`` within each window -> [B] (0 where empty)."""
    dims = tuple(range(1, values.dim()))
    total = (values * mask).sum(dim=dims)
    count = mask.sum(dim=dims)
    return torch.where(count > 0, total / count.clamp_min(1), torch.zeros_like(total))


def _clip_quantile(values: Tensor, mask: Tensor, q: float) -> Tensor:
    """Mask without the largest (1 - q) share of each window's values (outliers), as the
    official ``valid_range``. q >= 1 keeps everything."""
    if q >= 1.0:
        return mask
    b = values.shape[0]
    flat = torch.where(mask, values, torch.full_like(values, float("nan"))).reshape(b, -1).detach()
    # torch.quantile takes at most 2**24 elements per call: windows in groups that fit.
    rows = max(1, (1 << 24) // flat.shape[1])
    threshold = torch.cat([torch.nanquantile(flat[i : i + rows], q, dim=1) for i in range(0, b, rows)])
    threshold = torch.nan_to_num(threshold, nan=float("inf"))
    return mask & (values <= threshold.view(b, *([1] * (values.dim() - 1))))


def camera_loss(pose_enc_list: list[Tensor], targets: Targets, w: LossWeights) -> dict[str, Tensor]:
    """Per-window camera losses [B] (see the module docstring)."""
    gt = targets.pose_enc
    mask = targets.frame_valid[..., None].float()
    n = len(pose_enc_list)
    parts = {"T": (slice(0, 3), w.translation), "R": (slice(3, 7), w.rotation), "FL": (slice(7, 9), w.focal)}
    out = {f"camera_{k}": torch.zeros(gt.shape[0], device=gt.device) for k in parts}
    for i, pred in enumerate(pose_enc_list):
        weight = w.camera_gamma ** (n - 1 - i)
        for name, (sl, _) in parts.items():
            err = F.smooth_l1_loss(
                pred[..., sl].float(), gt[..., sl], reduction="none", beta=w.camera_huber_delta
            )
            err = err.clamp(max=100.0)
            out[f"camera_{name}"] = (
                out[f"camera_{name}"] + weight * _window_mean(err, mask.expand_as(err)) / n
            )
    out["camera"] = sum(out[f"camera_{k}"] * wk for k, (_, wk) in parts.items())
    return out


def _gradient_term(error: Tensor, conf: Tensor, mask: Tensor, alpha: float, scales: int) -> Tensor:
    """Confidence-weighted multi-scale gradient of the error map, per window [B].

    ``error`` [B, S, H, W, C] (prediction - target), ``conf`` [B, S, H, W], ``mask`` bool.
    """
    total = torch.zeros(error.shape[0], device=error.device)
    for k in range(scales):
        step = 2**k
        e, c, m = error[:, :, ::step, ::step], conf[:, :, ::step, ::step], mask[:, :, ::step, ::step]
        gx = (e[:, :, :, 1:] - e[:, :, :, :-1]).abs().sum(-1).clamp(max=100.0)
        mx = m[:, :, :, 1:] & m[:, :, :, :-1]
        gy = (e[:, :, 1:] - e[:, :, :-1]).abs().sum(-1).clamp(max=100.0)
        my = m[:, :, 1:] & m[:, :, :-1]
        lx = c[:, :, :, 1:] * gx - alpha * torch.log(c[:, :, :, 1:])
        ly = c[:, :, 1:] * gy - alpha * torch.log(c[:, :, 1:])
        total = total + 0.5 * (_window_mean(lx, mx) + _window_mean(ly, my))
    return total / scales


def regression_loss(
    pred: Tensor, conf: Tensor, gt: Tensor, mask: Tensor, w: LossWeights, prefix: str
) -> dict[str, Tensor]:
    """Aleatoric regression + gradient term for depth ([B, S, H, W, 1]) or points ([..., 3])."""
    pred, conf = pred.float(), conf.float()
    error = pred - gt
    dist = error.norm(dim=-1)
    kept = _clip_quantile(dist, mask, w.quantile)
    conf_term = conf * dist.clamp(max=100.0) - w.alpha * torch.log(conf)
    return {
        f"{prefix}_conf": _window_mean(conf_term, kept),
        f"{prefix}_reg": _window_mean(dist, kept),
        f"{prefix}_grad": _gradient_term(error, conf, mask, w.alpha, w.gradient_scales),
    }


def log_depth_loss(pred: Tensor, gt: Tensor, mask: Tensor, w: LossWeights) -> Tensor:
    """Scale-free log depth error per window [B] (see the module docstring).

    ``pred``, ``gt`` [B, S, H, W] positive where ``mask`` (bool, same shape).
    """
    b = pred.shape[0]
    safe_gt = torch.where(mask, gt, torch.ones_like(gt))
    error = torch.log(pred.float().clamp_min(1e-6)) - torch.log(safe_gt.clamp_min(1e-6))
    # The window's median log ratio is the one scale the metric aligns away; detached, as the
    # alignment is not something the network should learn to move.
    flat = torch.where(mask, error, torch.full_like(error, float("nan"))).reshape(b, -1).detach()
    shift = torch.nan_to_num(torch.nanmedian(flat, dim=1).values, nan=0.0)
    residual = (error - shift.view(b, *([1] * (error.dim() - 1)))).abs()
    kept = _clip_quantile(residual, mask, w.quantile)
    return _window_mean(residual.clamp(max=100.0), kept)


def track_loss(
    tracks: list[Tensor], vis: Tensor, conf: Tensor, targets: Targets, w: LossWeights
) -> dict[str, Tensor]:
    """Per-window track losses [B]: iteration-weighted L1 on visible points, BCE of visibility
    and confidence. ``tracks`` one [B, S, N, 2] per iteration; ``vis``/``conf`` [B, S, N]."""
    gt, visible = targets.tracks, targets.track_visible
    n = len(tracks)
    l1 = torch.zeros(gt.shape[0], device=gt.device)
    for i, pred in enumerate(tracks):
        err = (pred.float() - gt).abs().mean(-1)
        l1 = l1 + (w.track_gamma ** (n - 1 - i)) * _window_mean(err, visible) / n
    with torch.autocast(device_type=gt.device.type, enabled=False):
        p_vis = vis.float().clamp(1e-6, 1 - 1e-6)
        p_conf = conf.float().clamp(1e-6, 1 - 1e-6)
        all_frames = torch.ones_like(visible)
        bce_vis = F.binary_cross_entropy(p_vis, visible.float(), reduction="none")
        close = ((tracks[-1].float() - gt).norm(dim=-1) < w.conf_radius).float()
        bce_conf = F.binary_cross_entropy(p_conf, close, reduction="none")
    return {
        "track": l1,
        "track_vis": _window_mean(bce_vis, all_frames),
        "track_conf": _window_mean(bce_conf, visible),
    }


def match_loss(
    tokens: Tensor, patch_start: int, patch_size: int, targets: Targets, w: LossWeights
) -> dict[str, Tensor]:
    """Correspondence loss of the trunk's patch tokens (see the module docstring).

    Args:
        tokens: [B, S, T, C] one aggregator layer; tokens ``patch_start:`` are the patches of a
            (H / patch_size) x (W / patch_size) grid, row-major.
        targets: with ``query_points`` [B, N, 2] (frame 0 pixels), ``tracks`` [B, S, N, 2] and
            ``track_visible`` [B, S, N].

    Returns:
        {"match": [B] cross-entropy, "match_acc": [B] share of visible points whose most similar
        patch is the right one (chance: one over the patches of a frame)}, per window.
    """
    b, s = tokens.shape[:2]
    h, wd = targets.images.shape[-2:]
    gh, gw = h // patch_size, wd // patch_size
    feats = F.normalize(tokens[:, :, patch_start : patch_start + gh * gw].float(), dim=-1)

    grid = (gh, gw)
    queries, tracks, visible = (
        targets.query_points.float(),
        targets.tracks[:, 1:].float(),
        targets.track_visible[:, 1:],
    )
    n = queries.shape[1]
    anchor = feats[:, 0].gather(
        1, patch_cells(queries, patch_size, grid)[..., None].expand(b, n, feats.shape[-1])
    )  # [B, N, C]
    logits = torch.einsum("bnc,bspc->bsnp", anchor, feats[:, 1:]) / w.match_temperature  # [B, S-1, N, P]
    target = patch_cells(tracks, patch_size, grid)
    ok = visible & inside_grid(tracks, patch_size, grid) & inside_grid(queries, patch_size, grid)[:, None]
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="none")
    ce = ce.reshape(b, s - 1, n)
    hit = (logits.argmax(dim=-1) == target).float()
    return {"match": _window_mean(ce, ok), "match_acc": _window_mean(hit, ok).detach()}


def flow_loss(tokens: Tensor, patch_start: int, patch_size: int, targets: Targets) -> dict[str, Tensor]:
    """Displacement readout of the trunk's patch tokens (see the module docstring).

    Args:
        tokens: [B, S, T, 2 * dim] one aggregator layer (frame half, then global half); tokens
            ``patch_start:`` are the patches of a (H / patch_size) x (W / patch_size) grid.
        targets: with ``query_points`` [B, N, 2] (frame 0 pixels), ``tracks`` [B, S, N, 2] and
            ``track_visible`` [B, S, N].

    Returns:
        {"flow": [B] L1 in patch units, "flow_px": [B] mean end-point error in pixels}, per
        window, over the visible points of frames 1.. that land inside the grid.
    """
    b, s = tokens.shape[:2]
    h, wd = targets.images.shape[-2:]
    grid = (h // patch_size, wd // patch_size)
    dim = tokens.shape[-1] // 2
    patches = slice(patch_start, patch_start + grid[0] * grid[1])
    readout = tokens[:, 1:, patches, dim : dim + 2].float()  # [B, S-1, P, 2]
    tracks, visible = targets.tracks[:, 1:].float(), targets.track_visible[:, 1:]
    cells = patch_cells(tracks, patch_size, grid)  # [B, S-1, N]
    predicted = readout.gather(2, cells[..., None].expand(*cells.shape, 2))  # [B, S-1, N, 2]
    truth = (targets.query_points.float()[:, None] - tracks) / patch_size
    ok = visible & inside_grid(tracks, patch_size, grid)
    error = (predicted - truth).abs().sum(-1)
    end_point = (predicted - truth).norm(dim=-1).detach() * patch_size
    return {"flow": _window_mean(error, ok), "flow_px": _window_mean(end_point, ok)}


def total_loss(
    outputs: dict[str, object], targets: Targets, w: LossWeights
) -> tuple[Tensor, dict[str, Tensor]]:
    """The training objective (a scalar) and every term averaged over windows (detached).

    ``outputs`` holds what the network predicted: ``pose_enc_list``, ``depth``/``depth_conf``,
    ``world_points``/``world_points_conf``, and for tracks ``track_list``, ``vis``, ``conf``.
    Terms whose targets are missing (no depth, no tracks) are skipped.
    """
    terms: dict[str, Tensor] = {}
    objective = torch.zeros((), device=targets.images.device)
    if "pose_enc_list" in outputs:
        terms.update(camera_loss(outputs["pose_enc_list"], targets, w))
        objective = objective + w.camera * terms["camera"].mean()
    if targets.depth is not None:
        mask = targets.valid & targets.frame_valid[..., None, None]
        if "depth" in outputs:
            d = regression_loss(
                outputs["depth"], outputs["depth_conf"], targets.depth[..., None], mask, w, "depth"
            )
            terms.update(d)
            objective = objective + w.depth * (d["depth_conf"] + d["depth_grad"]).mean()
            if w.depth_log > 0:
                terms["depth_log"] = log_depth_loss(outputs["depth"][..., 0], targets.depth, mask, w)
                objective = objective + w.depth_log * terms["depth_log"].mean()
        if "world_points" in outputs:
            p = regression_loss(
                outputs["world_points"], outputs["world_points_conf"], targets.world_points, mask, w, "point"
            )
            terms.update(p)
            objective = objective + w.point * (p["point_conf"] + p["point_grad"]).mean()
    if "track_list" in outputs and targets.tracks is not None:
        t = track_loss(outputs["track_list"], outputs["vis"], outputs["conf"], targets, w)
        terms.update(t)
        objective = objective + w.track * t["track"].mean() + w.track_vis * t["track_vis"].mean()
        objective = objective + w.track_conf * t["track_conf"].mean()
    if "match_tokens" in outputs and targets.tracks is not None and targets.images.shape[1] > 1:
        tokens, patch_start, patch_size = outputs["match_tokens"]
        m = match_loss(tokens, patch_start, patch_size, targets, w)
        terms.update(m)
        objective = objective + w.match * m["match"].mean()
    if "attention_taps" in outputs and targets.tracks is not None and targets.images.shape[1] > 1:
        records, patch_start, patch_size = outputs["attention_taps"]
        a = attention_match_loss(records, patch_start, patch_size, targets)
        terms.update(a)
        objective = objective + w.attention_match * a["attention_match"].mean()
    if "flow_tokens" in outputs and targets.tracks is not None and targets.images.shape[1] > 1:
        f = flow_loss(*outputs["flow_tokens"], targets)
        terms.update(f)
        objective = objective + w.flow * f["flow"].mean()
    return objective, {k: v.detach().mean() for k, v in terms.items()}
