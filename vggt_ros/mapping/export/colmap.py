"""COLMAP model export of a keyframe bundle (cameras, images, points3D with tracks) via pycolmap.

The model is a SLAM / SfM warm start: one PINHOLE camera per keyframe (VGGT predicts
intrinsics per frame), the keyframe poses, and 3D points with multi-view tracks so a bundle
adjuster has something to optimise. Points come from two sources:

* the pipeline's keypoint tracks (each track's 3D point, observed wherever it is visible);
* dense depth: confidence-filtered pixels of each keyframe's depth, subsampled, unprojected to
  the map and kept as observations in every other keyframe where the point projects inside the
  image and agrees with that keyframe's own depth (relative difference below ``depth_tol``), so
  tracks are multi-view and occluded views are left out.

Pixel conventions differ: this project puts the centre of the top-left pixel at (0, 0); COLMAP
at (0.5, 0.5). The export adds 0.5 to principal points and keypoints; :func:`read_colmap`
subtracts it again. COLMAP poses are ``cam_from_world`` (the inverse of ``cam_to_map``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vggt_ros.mapping.export.bundle import KeyframeBundle

COLMAP_PIXEL_OFFSET = 0.5


@dataclass
class ColmapModel:
    """What :func:`read_colmap` returns (this project's pixel convention).

    Attributes:
        names: [N] image names, sorted by image id.
        cam_to_world: [N, 4, 4] float64 optical frame -> world.
        intrinsics: [N, 3, 3] float64; sizes: [N, 2] (height, width).
        xyz: [P, 3] float64 points; rgb: [P, 3] uint8.
        tracks: per point a list of (image index into ``names``, x, y).
    """

    names: list[str]
    cam_to_world: np.ndarray
    intrinsics: np.ndarray
    sizes: np.ndarray
    xyz: np.ndarray
    rgb: np.ndarray
    tracks: list[list[tuple[int, float, float]]]


def _sample_pixels(conf: np.ndarray, valid: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Flat indices of up to ``count`` valid pixels, drawn with probability proportional to confidence."""
    idx = np.flatnonzero(valid)
    if len(idx) <= count:
        return idx
    w = conf.ravel()[idx].astype(np.float64)
    w = np.clip(w - w.min(), 0, None) + 1e-6
    return np.sort(rng.choice(idx, size=count, replace=False, p=w / w.sum()))


def dense_tracks(
    bundle: KeyframeBundle,
    points_per_keyframe: int = 500,
    conf_percentile: float = 50.0,
    depth_tol: float = 0.05,
    seed: int = 0,
) -> tuple[np.ndarray, list[list[tuple[int, float, float]]]]:
    """Multi-view points from the dense depth maps (see the module docstring).

    Returns:
        xyz [P, 3] map points and per point its observations (keyframe index, x, y) in
        ORIGINAL pixels (first observation: the keyframe it was sampled from).
    """
    rng = np.random.default_rng(seed)
    K = bundle.num_keyframes
    world_to_cam = np.linalg.inv(bundle.cam_to_map)
    xyz_all: list[np.ndarray] = []
    tracks: list[list[tuple[int, float, float]]] = []
    for k in range(K):
        depth, conf = bundle.depth[k].astype(np.float64), bundle.depth_conf[k]
        valid = np.isfinite(depth) & (depth > 0)
        if not valid.any():
            continue
        valid &= conf >= np.percentile(conf[valid], conf_percentile)
        flat = _sample_pixels(conf, valid, points_per_keyframe, rng)
        v, u = np.divmod(flat, depth.shape[1])
        z = depth.ravel()[flat]
        Km = bundle.model_intrinsics[k]
        # Model pixel -> camera ray -> map (same arithmetic as vggt_ros.geometry.depth_to_camera_points).
        y_n = (v - Km[1, 2]) / Km[1, 1]
        x_n = (u - Km[0, 2] - Km[0, 1] * y_n) / Km[0, 0]
        cam = np.stack((x_n * z, y_n * z, z), axis=-1)
        pts = cam @ bundle.cam_to_map[k][:3, :3].T + bundle.cam_to_map[k][:3, 3]
        obs: list[list[tuple[int, float, float]]] = [[] for _ in range(len(pts))]
        for j in range(K):
            pc = pts @ world_to_cam[j][:3, :3].T + world_to_cam[j][:3, 3]
            zj = pc[:, 2]
            front = zj > 1e-9
            Kj, Kmj = bundle.intrinsics[j], bundle.model_intrinsics[j]
            with np.errstate(divide="ignore", invalid="ignore"):
                xo, yo = (
                    Kj[0, 0] * pc[:, 0] / zj + Kj[0, 1] * pc[:, 1] / zj + Kj[0, 2],
                    Kj[1, 1] * pc[:, 1] / zj + Kj[1, 2],
                )
                xm, ym = (
                    Kmj[0, 0] * pc[:, 0] / zj + Kmj[0, 1] * pc[:, 1] / zj + Kmj[0, 2],
                    Kmj[1, 1] * pc[:, 1] / zj + Kmj[1, 2],
                )
            h, w = bundle.image_hw[j]
            hm, wm = bundle.depth[j].shape
            ui, vi = np.rint(xm).astype(np.int64, copy=False), np.rint(ym).astype(np.int64, copy=False)
            inside = front & (xo >= -0.5) & (xo <= w - 0.5) & (yo >= -0.5) & (yo <= h - 0.5)
            inside &= (ui >= 0) & (ui < wm) & (vi >= 0) & (vi < hm)
            if j != k:
                dj = np.full(len(pts), np.nan)
                dj[inside] = bundle.depth[j][vi[inside], ui[inside]]
                with np.errstate(invalid="ignore"):
                    inside &= np.abs(dj - zj) <= depth_tol * zj
            for p in np.flatnonzero(inside):
                obs[p].append((j, float(xo[p]), float(yo[p])))
        for p, o in enumerate(obs):
            # The sampling keyframe first; points seen once still help as a map, COLMAP keeps them.
            o.sort(key=lambda item: item[0] != k)
            if o:
                xyz_all.append(pts[p])
                tracks.append(o)
    xyz = np.stack(xyz_all) if xyz_all else np.zeros((0, 3))
    return xyz, tracks


def bundle_tracks(
    bundle: KeyframeBundle, min_visibility: float = 0.5
) -> tuple[np.ndarray, list[list[tuple[int, float, float]]]]:
    """Points of the pipeline's keypoint tracks with a known 3D point, observed where visible."""
    xyz, tracks = [], []
    kf_index = bundle.index_of(bundle.obs_keyframe)
    for t in range(len(bundle.track_points)):
        if not np.isfinite(bundle.track_points[t]).all():
            continue
        sel = np.flatnonzero(
            (bundle.obs_track == t) & (bundle.obs_visibility >= min_visibility) & (kf_index >= 0)
        )
        obs = [(int(kf_index[i]), float(bundle.obs_pixel[i, 0]), float(bundle.obs_pixel[i, 1])) for i in sel]
        # One observation per image (COLMAP allows a point once per image).
        seen: dict[int, tuple[int, float, float]] = {}
        for o in obs:
            seen.setdefault(o[0], o)
        if seen:
            xyz.append(bundle.track_points[t].astype(np.float64))
            tracks.append(list(seen.values()))
    return (np.stack(xyz) if xyz else np.zeros((0, 3))), tracks


def _colors(bundle: KeyframeBundle, tracks: list[list[tuple[int, float, float]]]) -> np.ndarray:
    rgb = np.full((len(tracks), 3), 128, np.uint8)
    if bundle.images is None:
        return rgb
    for p, obs in enumerate(tracks):
        k, x, y = obs[0]
        h, w = bundle.images.shape[1:3]
        rgb[p] = bundle.images[k, int(np.clip(round(y), 0, h - 1)), int(np.clip(round(x), 0, w - 1))]
    return rgb


def write_colmap(
    out_dir: str | Path,
    bundle: KeyframeBundle,
    names: list[str] | None = None,
    points_per_keyframe: int = 500,
    text: bool = False,
    seed: int = 0,
) -> Path:
    """Write the bundle as a COLMAP model (binary, or text with ``text``) into ``out_dir``.

    Args:
        names: image names (default ``<camera>_<stamp in ns>.png``, ready for an images folder).
        points_per_keyframe: dense samples per keyframe (0 = only the keypoint tracks).

    Returns:
        ``out_dir``.
    """
    import pycolmap

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    K = bundle.num_keyframes
    if names is None:
        names = [
            f"{str(c).strip('/').replace('/', '_')}_{int(round(s * 1e9))}.png"
            for c, s in zip(bundle.camera_ids, bundle.stamps)
        ]
    xyz_t, tracks_t = bundle_tracks(bundle)
    xyz_d, tracks_d = (
        dense_tracks(bundle, points_per_keyframe, seed=seed)
        if points_per_keyframe
        else (np.zeros((0, 3)), [])
    )
    xyz = np.concatenate([xyz_t, xyz_d]) if len(xyz_d) else xyz_t
    tracks = tracks_t + tracks_d
    rgb = _colors(bundle, tracks)

    # Keypoints of each image: every observation gets its own 2D point.
    keypoints: list[list[tuple[float, float]]] = [[] for _ in range(K)]
    elements: list[list[tuple[int, int]]] = []
    for obs in tracks:
        el = []
        for k, x, y in obs:
            el.append((k + 1, len(keypoints[k])))
            keypoints[k].append((x + COLMAP_PIXEL_OFFSET, y + COLMAP_PIXEL_OFFSET))
        elements.append(el)

    rec = pycolmap.Reconstruction()
    world_to_cam = np.linalg.inv(bundle.cam_to_map)
    for k in range(K):
        Kk = bundle.intrinsics[k]
        h, w = (int(v) for v in bundle.image_hw[k])
        params = [Kk[0, 0], Kk[1, 1], Kk[0, 2] + COLMAP_PIXEL_OFFSET, Kk[1, 2] + COLMAP_PIXEL_OFFSET]
        rec.add_camera_with_trivial_rig(
            pycolmap.Camera(model="PINHOLE", width=w, height=h, params=params, camera_id=k + 1)
        )
        kp = np.asarray(keypoints[k], np.float64).reshape(-1, 2)
        image = pycolmap.Image(name=names[k], keypoints=kp, camera_id=k + 1, image_id=k + 1)
        rec.add_image_with_trivial_frame(image, pycolmap.Rigid3d(world_to_cam[k][:3, :4]))
    for p in range(len(tracks)):
        track = pycolmap.Track()
        for image_id, idx in elements[p]:
            track.add_element(image_id, idx)
        rec.add_point3D(xyz[p], track, rgb[p])
    if text:
        rec.write_text(str(out))
    else:
        rec.write(str(out))
    return out


def read_colmap(model_dir: str | Path) -> ColmapModel:
    """Read a COLMAP model (binary or text) back with pycolmap, in this project's conventions."""
    import pycolmap

    rec = pycolmap.Reconstruction(str(model_dir))
    image_ids = sorted(rec.images)
    index = {iid: n for n, iid in enumerate(image_ids)}
    names, poses, Ks, sizes = [], [], [], []
    for iid in image_ids:
        image = rec.images[iid]
        cfw = image.cam_from_world() if callable(image.cam_from_world) else image.cam_from_world
        T = np.eye(4)
        T[:3, :4] = cfw.matrix()
        poses.append(np.linalg.inv(T))
        cam = rec.cameras[image.camera_id]
        Kc = np.asarray(cam.calibration_matrix(), np.float64).copy()
        Kc[0, 2] -= COLMAP_PIXEL_OFFSET
        Kc[1, 2] -= COLMAP_PIXEL_OFFSET
        Ks.append(Kc)
        sizes.append((cam.height, cam.width))
        names.append(image.name)
    xyz, rgb, tracks = [], [], []
    for pid in sorted(rec.points3D):
        point = rec.points3D[pid]
        xyz.append(np.asarray(point.xyz, np.float64))
        rgb.append(np.asarray(point.color, np.uint8))
        obs = []
        for el in point.track.elements:
            xy = rec.images[el.image_id].points2D[el.point2D_idx].xy
            obs.append(
                (index[el.image_id], float(xy[0]) - COLMAP_PIXEL_OFFSET, float(xy[1]) - COLMAP_PIXEL_OFFSET)
            )
        tracks.append(obs)
    return ColmapModel(
        names,
        np.stack(poses) if poses else np.zeros((0, 4, 4)),
        np.stack(Ks) if Ks else np.zeros((0, 3, 3)),
        np.asarray(sizes, np.int64).reshape(-1, 2),
        np.stack(xyz) if xyz else np.zeros((0, 3)),
        np.stack(rgb) if rgb else np.zeros((0, 3), np.uint8),
        tracks,
    )
