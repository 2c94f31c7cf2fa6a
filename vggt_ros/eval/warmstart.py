"""SLAM warm-start exports of a replay: keyframe bundle, COLMAP model, TUM trajectory, PLY map.

Layout written by :func:`export_warm_start` into ``out_dir``::

    keyframes.npz      KeyframeBundle (layout in vggt_ros.mapping.export.bundle)
    colmap/            cameras, images, points3D (+ rigs, frames) .bin, readable by pycolmap
    images/            the keyframe images under the names the COLMAP model uses
    trajectory.tum     reference camera keyframe poses (optical frame -> map)
    map.ply            the global voxel map (x y z rgb confidence)
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from vggt_ros.eval.exports import write_ply
from vggt_ros.eval.replay import ReplayResult
from vggt_ros.mapping.export.bundle import KeyframeBundle, write_bundle
from vggt_ros.mapping.export.colmap import write_colmap
from vggt_ros.mapping.export.trajectory import write_tum


def bundle_from_replay(result: ReplayResult) -> KeyframeBundle:
    """Keyframe bundle of every keyframe in an accepted window (newest depth, final pose)."""
    recs = sorted(result.keyframes.values(), key=lambda r: (r.stamp, r.keyframe_id))
    if not recs:
        raise ValueError("no keyframe was mapped; nothing to export")
    shapes = {r.image.shape for r in recs}
    depth_shapes = {r.depth.shape for r in recs}
    if len(depth_shapes) != 1:
        raise ValueError(f"keyframe depth maps differ in size ({sorted(depth_shapes)}); cannot stack them")
    obs = _tracks(result, {r.keyframe_id for r in recs})
    scale = result.scale
    return KeyframeBundle(
        keyframe_ids=np.array([r.keyframe_id for r in recs], np.int64),
        stamps=np.array([r.stamp for r in recs]),
        camera_ids=np.array([r.camera_id for r in recs]),
        cam_to_map=np.stack([r.cam_to_map for r in recs]),
        intrinsics=np.stack([r.intrinsics for r in recs]),
        image_hw=np.array([r.image.shape[:2] for r in recs], np.int64),
        model_intrinsics=np.stack([r.model_intrinsics for r in recs]),
        depth=np.stack([r.depth for r in recs]),
        depth_conf=np.stack([r.depth_conf for r in recs]),
        scale=np.array([float(getattr(scale, "value", 1.0)), float(getattr(scale, "sigma", 0.0))]),
        scale_metric=result.metric,
        scale_source=str(getattr(scale, "source", "none")),
        images=np.stack([r.image for r in recs]) if len(shapes) == 1 else None,
        **obs,
    )


def _tracks(result: ReplayResult, mapped: set[int]) -> dict[str, np.ndarray]:
    """Flatten the tracks of accepted windows into the bundle's observation arrays."""
    points, q_kf, q_px = [], [], []
    o_t, o_k, o_p, o_v, o_c = [], [], [], [], []
    for res in result.window_results:
        tr = getattr(res, "tracks", None)
        if not res.accepted or tr is None:
            continue
        base = len(points)
        n = tr.pixels.shape[1]
        points.extend(np.asarray(tr.points_map, np.float32).reshape(n, 3))
        q_kf.extend([int(tr.query_keyframe_id)] * n)
        q_px.extend(np.asarray(tr.query_pixels, np.float32).reshape(n, 2))
        for f, kf in enumerate(tr.keyframe_ids):
            if int(kf) not in mapped:
                continue
            o_t.extend(range(base, base + n))
            o_k.extend([int(kf)] * n)
            o_p.extend(np.asarray(tr.pixels[f], np.float32))
            o_v.extend(np.asarray(tr.visibility[f], np.float32))
            o_c.extend(np.asarray(tr.confidence[f], np.float32))
    return {
        "track_points": np.asarray(points, np.float32).reshape(-1, 3),
        "track_query_keyframe": np.asarray(q_kf, np.int64),
        "track_query_pixel": np.asarray(q_px, np.float32).reshape(-1, 2),
        "obs_track": np.asarray(o_t, np.int64),
        "obs_keyframe": np.asarray(o_k, np.int64),
        "obs_pixel": np.asarray(o_p, np.float32).reshape(-1, 2),
        "obs_visibility": np.asarray(o_v, np.float32),
        "obs_confidence": np.asarray(o_c, np.float32),
    }


def export_warm_start(
    result: ReplayResult, out_dir: str | Path, points_per_keyframe: int = 500
) -> dict[str, Path]:
    """Write the files of the module docstring; returns {kind: path}."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bundle = bundle_from_replay(result)
    paths = {"bundle": write_bundle(out / "keyframes.npz", bundle)}
    names = [f"kf{int(k):06d}.png" for k in bundle.keyframe_ids]
    paths["colmap"] = write_colmap(out / "colmap", bundle, names, points_per_keyframe)
    (out / "images").mkdir(exist_ok=True)
    for k, name in enumerate(names):
        rec = result.keyframes[int(bundle.keyframe_ids[k])]
        if rec.image.size:
            cv2.imwrite(str(out / "images" / name), cv2.cvtColor(rec.image, cv2.COLOR_RGB2BGR))
    paths["images"] = out / "images"
    scale_note = "metres" if result.metric else "normalized units (no metric scale)"
    comment = f"vggt_ros keyframe trajectory: optical frame -> map (z-up), {scale_note}"
    paths["tum"] = write_tum(out / "trajectory.tum", result.estimate, comment)
    xyz, rgb, conf = result.points
    paths["ply"] = write_ply(
        out / "map.ply",
        np.asarray(xyz).reshape(-1, 3),
        np.asarray(rgb, np.uint8).reshape(-1, 3),
        np.asarray(conf).reshape(-1),
    )
    return paths
