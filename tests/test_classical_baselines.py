"""mc.classical's baselines for chapters 10 and 14: classical_brain, pixel_features, random_forest."""

import numpy as np
import pytest

from medseg_course import classical


def _head(size=48):
    """A bright "brain" disc inside a dark rim and a bright ring of "scalp"."""
    yy, xx = np.mgrid[:size, :size] - size / 2
    r = np.hypot(yy, xx)
    brain = r < size * 0.25
    image = np.where(brain, 0.7, 0.05)
    image[(r > size * 0.35) & (r < size * 0.42)] = 0.8
    return image[..., None].astype(np.float32), brain


def test_classical_brain_finds_the_head_not_the_brain():
    image, brain = _head()
    mask = classical.classical_brain(image)
    assert mask.dtype == np.uint8 and mask.shape == brain.shape
    assert mask[brain].all()                     # the brain is inside it...
    assert mask.sum() > 1.5 * brain.sum()        # ...and so is the rim: the scalp ring encloses it
    np.testing.assert_array_equal(mask, classical.classical_brain(image[..., 0]))
    assert classical.classical_brain(np.ones((8, 8))).sum() == 0
    with pytest.raises(ValueError, match="greyscale"):
        classical.classical_brain(np.zeros((8, 8, 3)))


def test_pixel_features_shape_and_dtype():
    image = np.random.default_rng(0).uniform(size=(20, 24, 1)).astype(np.float32)
    table = classical.pixel_features(image, sigma_max=16)
    assert table.shape == (20 * 24, 20)
    assert classical.pixel_features(image, sigma_max=8).shape == (20 * 24, 16)
    with pytest.raises(ValueError, match="sigma_max must be at least 1"):
        classical.pixel_features(image, sigma_max=0.5)


def test_random_forest_learns_bright_blobs():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:32, :32]
    masks = np.stack([(yy - cy) ** 2 + (xx - cx) ** 2 <= 16 for cy, cx in rng.integers(8, 24, (6, 2))])
    images = (0.2 + 0.5 * masks + rng.normal(0, 0.05, masks.shape)).astype(np.float32)[..., None]
    pred = classical.random_forest(images[:4], masks[:4], images[4:], sigma_max=4, seed=0, n_jobs=1)
    assert pred.shape == (2, 32, 32, 1) and pred.dtype == bool
    dice = 2 * (pred[..., 0] & masks[4:]).sum() / (pred.sum() + masks[4:].sum())
    assert dice > 0.9
    np.testing.assert_array_equal(pred, classical.random_forest(images[:4], masks[:4], images[4:], sigma_max=4,
                                                                seed=0, n_jobs=1))
    with pytest.raises(ValueError, match="masks must match images"):
        classical.random_forest(images[:4], masks[:3], images[4:])
    with pytest.raises(ValueError, match="seed"):
        classical.random_forest(images[:4], masks[:4], images[4:], seed=-1)
