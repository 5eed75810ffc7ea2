"""3D building blocks: sliding windows, patch sampling, augmentation, normalisation, 2.5D."""

import numpy as np
import pytest

from medseg_course import volumes


def identity(batch):
    return np.asarray(batch, np.float32)


@pytest.mark.parametrize("shape", [(20, 30, 26, 2), (8, 9, 10, 1), (16, 16, 16, 1)])
@pytest.mark.parametrize("flip", [False, True])
def test_sliding_window_of_an_identity_model_returns_the_volume_exactly(shape, flip):
    volume = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    out = volumes.predict_volume(identity, volume, patch_shape=(16, 16, 16), overlap=0.5, flip=flip)
    assert out.shape == volume.shape and out.dtype == np.float32
    assert np.array_equal(out, volume)


def test_gaussian_weights_peak_in_the_centre():
    weights = volumes.gaussian_weights_nd((9, 7, 5))
    assert weights.shape == (9, 7, 5) and weights.max() == 1.0 == weights[4, 3, 2] and weights.min() >= 1e-3


@pytest.mark.parametrize("rate", [0.0, 0.33, 1.0])
def test_patches_hit_foreground_at_the_requested_rate(rate):
    rng = np.random.default_rng(0)
    labels = np.zeros((40, 40, 40), np.uint8)
    labels[30:34, 5:9, 20:23] = 2  # 48 of 64,000 voxels: uniform patches rarely hold any
    image = rng.normal(size=labels.shape + (1,)).astype(np.float32)
    images, masks, centred = volumes.sample_patches_3d([image], [labels], (16, 16, 16), 3000, rate, rng)
    assert images.shape == (3000, 16, 16, 16, 1) and masks.shape == (3000, 16, 16, 16)
    assert abs(centred.mean() - rate) < 0.03
    assert (masks[centred] > 0).any(axis=(1, 2, 3)).all()  # a centred patch holds foreground
    holds = (masks > 0).any(axis=(1, 2, 3)).mean()
    assert holds >= rate


def test_augmentation_never_swaps_anterior_and_posterior():
    rng = np.random.default_rng(0)
    label = np.zeros((20, 24, 32), np.uint8)
    label[8:12, 4:10, 22:28] = 1  # anterior part: high axis-2 index (towards A)
    label[8:12, 4:10, 6:14] = 2
    image = label[..., None].astype(np.float32)
    for _ in range(40):
        img, lab = volumes.augment_volume(image, label, rng)
        assert img.shape == image.shape and lab.shape == label.shape
        front = np.argwhere(lab == 1)[:, 2].mean()
        back = np.argwhere(lab == 2)[:, 2].mean()
        assert front > back
        assert set(np.unique(lab)) <= {0, 1, 2}


def test_normalise_volume_ignores_scale():
    rng = np.random.default_rng(0)
    volume = rng.gamma(2.0, size=(10, 12, 14)).astype(np.float32)
    volume[0, 0, 0] = 1e6  # one hot voxel
    a = volumes.normalise_volume(volume)
    b = volumes.normalise_volume(volume * 1000.0)
    assert np.allclose(a, b, atol=1e-4)
    assert abs(a.mean()) < 1e-4 and abs(a.std() - 1) < 1e-3 and a.max() < 10


def test_pad_and_crop_round_trip():
    array = np.arange(5 * 6 * 7).reshape(5, 6, 7)
    padded, window = volumes.pad_to(array, (8, 6, 9))
    assert padded.shape == (8, 6, 9)
    assert np.array_equal(volumes.crop_to(padded, window), array)


def test_neighbour_slices_centre_channel_is_the_slice():
    volume = np.arange(4 * 3 * 2, dtype=np.float32).reshape(4, 3, 2)
    stacked = volumes.neighbour_slices(volume, context=1)
    assert stacked.shape == (4, 3, 2, 3)
    assert np.array_equal(stacked[..., 1], volume)
    assert np.array_equal(stacked[0, ..., 0], volume[0]) and np.array_equal(stacked[2, ..., 2], volume[3])


def test_training_and_prediction_pad_with_each_channels_minimum():
    volume = np.stack([np.full((4, 5, 6), 2.0), np.full((4, 5, 6), -3.0)], -1).astype(np.float32)
    volume[0, 0, 0] = (-1.0, -7.0)
    padded, window = volumes.pad_to(volume, (8, 5, 6), value="minimum")
    assert padded.shape == (8, 5, 6, 2)
    assert np.array_equal(padded[0, :, :, 0], np.full((5, 6), -1.0)) and np.all(padded[-1, ..., 1] == -7.0)
    assert np.array_equal(volumes.crop_to(padded, window), volume)
    same, _ = volumes.pad_to(volume, (4, 5, 6), value="minimum")
    assert same is volume  # nothing to pad: no copy

    seen = []

    def record(batch):
        seen.append(np.asarray(batch).copy())
        return np.asarray(batch, np.float32)

    volumes.predict_volume(record, volume, patch_shape=(8, 8, 8))
    assert seen[0][0, 0, 0, 0, 1] == -7.0  # the padded border as training saw it


def test_a_multichannel_volume_is_a_volume():
    from medseg_course import geometry
    from medseg_course.io import MedicalImage

    image = MedicalImage(np.zeros((6, 7, 8, 2), np.float32), (1.0, 1.0, 1.0), np.eye(4), None, "nifti")
    assert geometry.is_volume(image)
    pixels, grid = geometry.prepare_volume(image)
    assert pixels.shape == (8, 6, 7, 2)
