"""The frames the environments show: a log's camera image fitted to the configured camera."""
from __future__ import annotations

import numpy as np

from sim.envs.frames import fit_image
from sim.render.camera import CameraConfig


def test_an_image_one_row_taller_than_the_camera_is_cropped_to_its_top_rows():
    """At the camera's width an image one row taller than the camera has no centre row to split: the crop starts at
    the first row and only the bottom row is dropped (no padding, no resampling)."""
    camera = CameraConfig(width=256, height=128)
    image = np.random.default_rng(0).integers(0, 256, (129, 256, 3), dtype=np.uint8)
    fitted = fit_image(image, camera)
    assert fitted.shape == (128, 256, 3) and fitted.flags.c_contiguous
    np.testing.assert_array_equal(fitted, image[:128])


def test_an_image_of_the_cameras_size_is_shown_unchanged():
    camera = CameraConfig(width=256, height=128)
    image = np.random.default_rng(1).integers(0, 256, (128, 256, 3), dtype=np.uint8)
    np.testing.assert_array_equal(fit_image(image, camera), image)
