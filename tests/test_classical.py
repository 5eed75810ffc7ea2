import numpy as np
import pytest

import medseg_course as mc
from medseg_course import classical


@pytest.fixture(scope="module")
def disc():
    """A bright disc on a dark background with mild noise: every method should find it."""
    yy, xx = np.mgrid[0:64, 0:64]
    truth = ((yy - 32) ** 2 + (xx - 30) ** 2 <= 14**2).astype(np.uint8)
    image = 0.2 + 0.6 * truth + np.random.default_rng(0).normal(0, 0.05, truth.shape)
    return image, truth


def test_threshold_hand_values():
    image = np.array([[-1000.0, 40.0], [80.0, 700.0]])
    np.testing.assert_array_equal(classical.threshold(image, 0, 100), [[0, 1], [1, 0]])
    with pytest.raises(ValueError, match="low must not exceed high"):
        classical.threshold(image, 10, 0)


def test_otsu_on_bimodal_values():
    image = np.array([[0.1, 0.12, 0.9], [0.88, 0.11, 0.91]])
    np.testing.assert_array_equal(classical.threshold_otsu(image), [[0, 0, 1], [1, 0, 1]])
    np.testing.assert_array_equal(classical.threshold_otsu(image, bright_foreground=False), [[1, 1, 0], [0, 1, 0]])
    assert classical.threshold_otsu(np.ones((3, 3))).sum() == 0


@pytest.mark.parametrize(
    "method",
    [
        lambda im: classical.threshold_otsu(im),
        lambda im: classical.region_growing(im, [(32, 30)], tolerance=0.3),
        lambda im: classical.edge_segmentation(im, sigma=2),
        lambda im: classical.chan_vese(im),
        lambda im: classical.morphological_chan_vese(im, 60),
        lambda im: classical.geodesic_active_contour(im, np.pad(np.ones((56, 56)), 4), 150),
    ],
)
def test_methods_find_the_disc(disc, method):
    image, truth = disc
    mask = method(image)
    assert mask.shape == truth.shape and mask.dtype == np.uint8
    assert mc.metrics.dice(truth, mask) > 0.9


def test_region_growing_stays_connected():
    image = np.zeros((5, 7))
    image[:, 0:2] = 1.0
    image[:, 5:7] = 1.0  # a second bright region, not connected to the seed's
    mask = classical.region_growing(image, [(2, 0)], tolerance=0.1)
    assert mask[:, :2].all() and not mask[:, 5:].any()


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: classical.region_growing(np.zeros((4, 4)), [], 0.1), "seeds is empty"),
        (lambda: classical.region_growing(np.zeros((4, 4)), [(9, 9)], 0.1), "outside"),
        (lambda: classical.threshold_otsu(np.zeros((4, 4, 3))), "greyscale"),
        (lambda: classical.geodesic_active_contour(np.zeros((4, 4)), np.ones((3, 3))), "init"),
        (lambda: classical.chan_vese(np.full((4, 4), np.nan)), "NaN"),
    ],
)
def test_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()
