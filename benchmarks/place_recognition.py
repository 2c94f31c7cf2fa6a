"""Which place recognition finds more true loops: ORB bag-of-words (the back end's
``OrbPlaceRecognizer``) or a global descriptor pooled from the model's own encoder tokens?

Renders held-out procedural sequences with loop-rich motions (``lap``, ``figure_eight``,
``there_and_back``), takes every ``--every``-th frame as a keyframe, and for every keyframe asks
each method for its best match among the keyframes at least ``--min-gap`` keyframes older:

* **ORB**: ``OrbPlaceRecognizer.candidates`` (tf-idf shortlist, ratio test, fundamental-matrix
  RANSAC, at least ``min_matches`` consistent matches), best candidate;
* **encoder**: the model's DINOv2 patch tokens of the keyframe (``VGGT.encode_frames``, the
  same tokens the frame cache keeps), mean-pooled, centred on the mean descriptor of the
  keyframes stored so far (what is common to every view of the run says nothing about place)
  and L2-normalised; best cosine among the older keyframes, accepted above ``--threshold``
  (``encoder``) or always (``encoder-top1``);
* **encoder+orb**: the encoder's ``--shortlist`` best older keyframes, each checked with the ORB
  recognizer's geometric test (ratio test + fundamental-matrix RANSAC, ``min_matches``); the one
  with the most consistent matches.

A match is true when the two cameras are within ``--radius`` metres and their optical axes within
``--angle`` degrees (ground truth). Per method it prints the queries that have a true revisit,
the matches returned, how many are true (precision) and the share of revisit queries that got a
true match (recall):

    python benchmarks/place_recognition.py                  # embedded model, CPU, 3 sequences
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from vggt_ros.eval.procedural import ProceduralSettings
from vggt_ros.eval.procedural.render import render_sequence
from vggt_ros.mapping.config import LoopConfig
from vggt_ros.mapping.loops import OrbPlaceRecognizer
from vggt_ros.model.checkpoint import load_model
from vggt_ros.model.embedded import choose_model

MOTIONS = ("lap", "figure_eight", "there_and_back")


def encoder_descriptors(model, images: np.ndarray, size: tuple[int, int]) -> np.ndarray:  # noqa: ANN001
    """[N, dim] mean of the encoder's patch tokens of [N, H, W, 3] uint8 images."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    out = []
    with torch.no_grad():
        for chunk in x.split(16):
            tokens = model.encode_frames(chunk)  # [n, P, dim]
            out.append(tokens.mean(dim=1))
    return torch.cat(out).numpy()


def true_revisit(poses: np.ndarray, i: int, j: int, radius: float, angle_deg: float) -> bool:
    """Cameras i and j (cam-to-world [4, 4]) within ``radius`` m and ``angle_deg`` of each other."""
    close = np.linalg.norm(poses[i][:3, 3] - poses[j][:3, 3]) <= radius
    cos = float(poses[i][:3, 2] @ poses[j][:3, 2])
    return bool(close and cos >= np.cos(np.radians(angle_deg)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--config", default=None)
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--every", type=int, default=4, help="keyframe every N frames")
    ap.add_argument("--min-gap", type=int, default=15)
    ap.add_argument(
        "--orb-fast-threshold",
        type=int,
        default=None,
        help="ORB's FAST threshold (default: loop.orb_fast_threshold)",
    )
    ap.add_argument("--radius", type=float, default=1.0)
    ap.add_argument("--angle", type=float, default=30.0)
    ap.add_argument("--threshold", type=float, default=0.5, help="encoder cosine to accept a match")
    ap.add_argument("--seed", type=int, default=3000)
    ap.add_argument("--shortlist", type=int, default=3, help="encoder+orb: candidates checked")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    fast_threshold = args.orb_fast_threshold or LoopConfig().orb_fast_threshold
    choice = choose_model(args.checkpoint, args.config)
    model, _ = load_model(choice.source, config=choice.config, device="cpu")
    model.eval()
    settings = ProceduralSettings.held_out(height=140, width=182)
    methods = ("orb", "encoder", "encoder-top1", "encoder+orb")
    totals = {m: {"revisit_queries": 0, "returned": 0, "true": 0, "found": 0} for m in methods}
    rows = []
    for k, motion in enumerate(MOTIONS):
        seq = render_sequence(settings, args.seed + k, args.frames, motion)
        keys = list(range(0, seq.num_frames, args.every))
        poses = seq.cam_to_world[keys]
        images = seq.images[keys]
        orb = OrbPlaceRecognizer(min_gap=args.min_gap, fast_threshold=fast_threshold)
        desc = encoder_descriptors(model, images, (140, 182))
        per = {m: {"revisit_queries": 0, "returned": 0, "true": 0, "found": 0} for m in totals}
        for q in range(len(keys)):
            orb.add(q, images[q])
            older = list(range(0, q - args.min_gap + 1))
            if not older:
                continue
            has_revisit = any(true_revisit(poses, q, o, args.radius, args.angle) for o in older)
            found = orb.candidates(q, limit=1)
            orb_best = found[0].keyframe_id if found else None
            centred = desc[: q + 1] - desc[: q + 1].mean(axis=0)  # only what is stored so far
            centred /= np.linalg.norm(centred, axis=1, keepdims=True) + 1e-9
            scores = centred[older] @ centred[q]
            top = older[int(np.argmax(scores))]
            enc_best = top if scores.max() >= args.threshold else None
            verified = []
            for i in np.argsort(-scores)[: args.shortlist]:
                n = orb._consistent_matches(orb._entries[q], orb._entries[older[int(i)]])
                if n >= orb.min_matches:
                    verified.append((n, older[int(i)]))
            both = max(verified)[1] if verified else None
            methods_best = (
                ("orb", orb_best),
                ("encoder", enc_best),
                ("encoder-top1", top),
                ("encoder+orb", both),
            )
            for method, best in methods_best:
                r = per[method]
                r["revisit_queries"] += has_revisit
                if best is not None:
                    r["returned"] += 1
                    ok = true_revisit(poses, q, best, args.radius, args.angle)
                    r["true"] += ok
                    r["found"] += ok and has_revisit
        for method, r in per.items():
            rows.append({"sequence": motion, "method": method, **r})
            for key in r:
                totals[method][key] += r[key]
    print(f"model: {choice.description}")
    print("| sequence | method | queries with a revisit | matches returned | true | precision | recall |")
    print("|---|---|---|---|---|---|---|")
    for r in rows + [{"sequence": "all", "method": m, **t} for m, t in totals.items()]:
        precision = r["true"] / r["returned"] if r["returned"] else float("nan")
        recall = r["found"] / r["revisit_queries"] if r["revisit_queries"] else float("nan")
        print(
            f"| {r['sequence']} | {r['method']} | {r['revisit_queries']} | {r['returned']} | "
            f"{r['true']} | {precision:.2f} | {recall:.2f} |"
        )
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "totals": totals}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
