"""perception_node with a drifting ground-truth fake predictor, for the loop-closure node test.

Run as its own process by ``test/test_ros_loops.py``; everything but the predictor is the real
node (``vggt_ros.ros.main.main``). The fake (``test_mapping_fakes.FakePredictor``) knows the
rendered orbit the test publishes and answers like a VGGT window whose chaining drifts.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_mapping_fakes import FakePredictor, sequence_tuple  # noqa: E402

from vggt_ros.eval.synthetic import render_sequence  # noqa: E402
from vggt_ros.ros import main as main_module  # noqa: E402
from vggt_ros.ros import node as node_module  # noqa: E402

SEQUENCE = {"num_frames": 130, "height": 120, "width": 160, "seed": 1, "path": "orbit"}


def _fake(self):  # noqa: ANN001, ANN202 - replaces PerceptionCore._load_predictor
    self.model_description = "ground-truth fake predictor (tests)"
    seq = render_sequence(**SEQUENCE)
    fake = FakePredictor([sequence_tuple(seq)], seed=5, drift_scale=0.08, drift_rotation_deg=0.8)
    fake.device, fake.dtype, fake.weights = "cpu", "float32", {"source": "fake", "trained": True}
    return fake


node_module.PerceptionCore._load_predictor = _fake
node_module.PerceptionCore._warm_up = lambda self: None  # the fake knows only the orbit's images
node_module.install_interrupt_hooks = lambda model, flag: []
node_module.PerceptionCore._model = lambda self: None

if __name__ == "__main__":
    sys.exit(main_module.main())
