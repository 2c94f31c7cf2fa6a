"""Procedural indoor scenes with exact ground truth, rendered by ray casting in torch (CPU or GPU).

The training data of the shipped compact model and the held-out sequences it is measured on:
random rooms with boxes, spheres and cylinders, textured and lit, seen along robot-like camera
motions (:mod:`.motion`), rendered in batches of windows on any torch device (:mod:`.render`).

    from vggt_ros.eval.procedural import ProceduralSettings, render_windows, window_seeds
    batch = render_windows(ProceduralSettings(), window_seeds(0, range(16)), device="cuda")

The older single-room generator used by the demo and the tests is :mod:`vggt_ros.eval.synthetic`.
"""

from vggt_ros.eval.procedural.render import RenderedWindows, render_scenes, render_sequence, render_windows
from vggt_ros.eval.procedural.scene import SceneBatch, sample_scenes, window_seeds
from vggt_ros.eval.procedural.settings import MOTIONS, ProceduralSettings

__all__ = [
    "MOTIONS",
    "ProceduralSettings",
    "RenderedWindows",
    "SceneBatch",
    "render_scenes",
    "render_sequence",
    "render_windows",
    "sample_scenes",
    "window_seeds",
]
