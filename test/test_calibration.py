"""camera_info intrinsics instead of the network's field of view (vggt_ros.mapping.calibration).

The unit test maps a known K through a resize-and-pad transform; the end-to-end test runs the
pipeline on a rendered turning walk with a network double whose depth and poses are good but
whose focal length is 1.6 times too long (as the compact model's is on turning sequences).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from vggt_ros.engine.predictor import Prediction
from vggt_ros.eval.synthetic import render_sequence
from vggt_ros.geometry.intrinsics import ImageTransform
from vggt_ros.mapping import Frame, KeyframeConfig, PerceptionPipeline, PipelineConfig, WindowConfig
from vggt_ros.mapping.calibration import calibrated_prediction


def _prediction(frames: int) -> Prediction:
    """A window of 40x60 model maps from 80x100 originals (scale 0.5, 5 px of padding on top)."""
    h, w = 40, 60
    transform = ImageTransform((70, 120), (h, w), (0.5, 0.5), (0.0, 5.0), (0, 5, 60, 40))
    guess = np.array([[90.0, 0, 29.5], [0, 90.0, 19.5], [0, 0, 1]])
    return Prediction(
        cam_to_world=np.repeat(np.eye(4)[None], frames, 0),
        extrinsics=np.repeat(np.eye(4)[None, :3], frames, 0),
        intrinsics=np.repeat(transform.intrinsics_to_original(guess)[None], frames, 0),
        model_intrinsics=np.repeat(guess[None], frames, 0),
        depth=np.ones((frames, h, w), np.float32),
        depth_conf=np.ones((frames, h, w), np.float32),
        world_points=None,
        world_points_conf=None,
        valid_mask=np.ones((frames, h, w), bool),
        colors=None,
        model_hw=(h, w),
        original_sizes=[(70, 120)] * frames,
        transforms=[transform] * frames,
    )


def test_known_intrinsics_replace_the_networks_at_both_resolutions() -> None:
    prediction = _prediction(3)
    K = np.array([[100.0, 0, 59.5], [0, 100.0, 34.5], [0, 0, 1]])
    calibrated, replaced = calibrated_prediction(prediction, [K, None, K])
    assert replaced == 2
    np.testing.assert_allclose(calibrated.intrinsics[[0, 2]], [K, K])
    # model pixels: x' = 0.5 (x + 0.5) - 0.5, y' = 0.5 (y + 0.5) - 0.5 + 5
    expected = np.array([[50.0, 0, 29.5], [0, 50.0, 5.0 + 17.0], [0, 0, 1]])
    np.testing.assert_allclose(calibrated.model_intrinsics[0], expected)
    np.testing.assert_array_equal(calibrated.model_intrinsics[1], prediction.model_intrinsics[1])
    assert prediction.model_intrinsics[0, 0, 0] == 90.0  # the input is not modified
    same, none = calibrated_prediction(prediction, [None] * 3)
    assert same is prediction and none == 0
    with pytest.raises(ValueError, match="2 intrinsics for a window of 3"):
        calibrated_prediction(prediction, [K, K])


class LongFocal:
    """A network double with good depth and poses whose intrinsics say a 1.6x longer focal
    length (a narrower field of view) than the camera's."""

    def __init__(self, fake) -> None:  # noqa: ANN001
        self.fake = fake

    def predict(self, images, query_points=None):  # noqa: ANN001, ANN201
        prediction = self.fake.predict(images, query_points)
        model, original = np.array(prediction.model_intrinsics), np.array(prediction.intrinsics)
        model[:, :2, :2] *= 1.6
        original[:, :2, :2] *= 1.6
        return replace(prediction, model_intrinsics=model, intrinsics=original)


def test_the_pipeline_maps_with_camera_info_instead_of_a_wrong_field_of_view() -> None:
    """A turning walk: with the wrong focal length the refinement measures the turns short and
    the chained path bends; with camera_info's the path keeps its shape."""
    from test_mapping_fakes import FakePredictor, path_error_of_extent, sequence_tuple

    seq = render_sequence(30, 120, 160, seed=4, path="orbit")
    errors, calibrated = {}, {}
    for use in (True, False):
        config = PipelineConfig(
            window=WindowConfig(size=6, stride=3, calibrated_intrinsics=use),
            keyframe=KeyframeConfig(min_parallax_px=4.0),
        )
        fake = FakePredictor([sequence_tuple(seq)], seed=2, outlier_share=0.0)
        pipeline = PerceptionPipeline(config, LongFocal(fake))
        for i in range(len(seq.images)):
            frame = Frame(seq.stamps[i], "cam", seq.images[i], intrinsics=seq.intrinsics)
            if (job := pipeline.add_frame(frame)) is not None:
                pipeline.process(job)
        errors[use] = path_error_of_extent(pipeline.path(), seq)
        calibrated[use] = pipeline.stats["frames_calibrated"]
    assert calibrated[False] == 0 and calibrated[True] > 0
    assert errors[True] < 0.3 * errors[False], errors  # measured 0.25 % and 2.3 % of the extent
