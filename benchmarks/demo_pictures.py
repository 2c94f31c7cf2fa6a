"""Pictures of what `make demo` produced, for the README: the saved map and one keyframe's depth.

    make demo && python benchmarks/demo_pictures.py [--demo out/demo_node] [--out docs/images]

Reads the demo's ``map.ply`` (the node's ~/save_map) and ``export/keyframes.npz`` (its
~/export_keyframes bundle) and draws them with matplotlib (no display needed).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from vggt_ros.eval.exports import read_ply  # noqa: E402
from vggt_ros.mapping.export.bundle import read_bundle  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo", type=Path, default=Path("out/demo_node"))
    ap.add_argument("--out", type=Path, default=Path("docs/images"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    ply = read_ply(args.demo / "map.ply")
    xyz, rgb = ply["xyz"], ply["rgb"].astype(np.float32) / 255.0
    bundle = read_bundle(args.demo / "export" / "keyframes.npz")

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    centres = bundle.cam_to_map[:, :3, 3]
    for ax, (a, b, name) in zip(axes, ((0, 1, "top view (x, y)"), (0, 2, "side view (x, z)"))):
        ax.scatter(xyz[:, a], xyz[:, b], c=rgb, s=5, linewidths=0)
        ax.plot(centres[:, a], centres[:, b], "r.-", lw=1, ms=4, label="keyframe cameras")
        ax.set_aspect("equal")
        ax.set_title(name)
        ax.set_xlabel("xyz"[a] + " (map)")
        ax.set_ylabel("xyz"[b] + " (map)")
    axes[0].legend(loc="upper right", fontsize=8)
    fig.suptitle(f"demo map: {len(xyz)} voxel points, {len(centres)} keyframes (~/map, map frame, z up)")
    fig.tight_layout()
    fig.savefig(args.out / "demo_map.png", dpi=110)
    plt.close(fig)

    k = len(bundle.depth) // 2
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    if bundle.images is not None:
        axes[0].imshow(bundle.images[k])
    axes[0].set_title(f"keyframe {int(bundle.keyframe_ids[k])} ({bundle.camera_ids[k]})")
    im = axes[1].imshow(bundle.depth[k], cmap="turbo")
    axes[1].set_title("~/depth/image (normalized units)")
    fig.colorbar(im, ax=axes[1], fraction=0.046)
    im = axes[2].imshow(bundle.depth_conf[k], cmap="viridis")
    axes[2].set_title("~/depth/confidence")
    fig.colorbar(im, ax=axes[2], fraction=0.046)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(args.out / "demo_depth.png", dpi=110)
    plt.close(fig)
    print(f"wrote {args.out / 'demo_map.png'} and {args.out / 'demo_depth.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
