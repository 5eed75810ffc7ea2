import numpy as np
import pytest

import medseg_course as mc


def test_phantoms_shapes_dtypes_and_determinism():
    images, masks = mc.data.make_phantoms(6, image_size=48, seed=3)
    assert images.shape == (6, 48, 48, 1) and images.dtype == np.float32
    assert masks.shape == (6, 48, 48, 1) and masks.dtype == np.float32
    assert set(np.unique(masks)) <= {0.0, 1.0}
    again, _ = mc.data.make_phantoms(6, image_size=48, seed=3)
    np.testing.assert_array_equal(images, again)
    prefix, _ = mc.data.make_phantoms(3, image_size=48, seed=3)
    np.testing.assert_array_equal(images[:3], prefix)  # image i depends on (seed, i) only
    other, _ = mc.data.make_phantoms(3, image_size=48, seed=4)
    assert not np.array_equal(prefix, other)


def test_targets_are_consistent():
    _, organ = mc.data.make_phantoms(4, 64, target="organ", seed=0)
    _, lesion = mc.data.make_phantoms(4, 64, target="lesion", seed=0)
    _, labels = mc.data.make_phantoms(4, 64, target="multiclass", seed=0)
    assert labels.shape == (4, 64, 64) and labels.dtype == np.uint8
    assert set(np.unique(labels)) <= set(mc.data.PHANTOM_CLASSES)
    np.testing.assert_array_equal(organ[..., 0], labels >= 1)
    assert np.all(lesion.sum(axis=(1, 2, 3)) > 0)  # lesion target guarantees a lesion
    assert np.all(lesion <= organ)  # lesions lie inside the organ


def test_mask_is_exact_for_a_noise_free_phantom():
    spec = mc.data.PhantomSpec(noise="none", blur_sigma=0, bias_strength=0, texture=0,
                               intensity_scale=(1, 1), max_lesions=0)
    images, masks = mc.data.make_phantoms(3, 64, spec=spec, seed=1)
    organ_level = 0.35 + spec.organ_contrast
    np.testing.assert_array_equal(np.isclose(images, organ_level), masks.astype(bool))


def test_lesion_radius_is_the_imbalance_dial():
    small = mc.data.PhantomSpec(lesion_radius=(0.02, 0.025))
    large = mc.data.PhantomSpec(lesion_radius=(0.08, 0.09))
    _, m_small = mc.data.make_phantoms(8, 64, spec=small, target="lesion", seed=0)
    _, m_large = mc.data.make_phantoms(8, 64, spec=large, target="lesion", seed=0)
    assert m_small.mean() < m_large.mean() / 4


@pytest.mark.parametrize("noise", ["gaussian", "rician", "speckle"])
def test_noise_models_raise_noise(noise):
    quiet = mc.data.PhantomSpec(noise="none")
    noisy = mc.data.PhantomSpec(noise=noise, noise_level=0.1)
    a, _ = mc.data.make_phantoms(2, 64, spec=quiet, seed=0)
    b, _ = mc.data.make_phantoms(2, 64, spec=noisy, seed=0)
    assert 0.01 < np.std(b - a) < 0.2


def test_rician_noise_is_non_negative():
    images, _ = mc.data.make_phantoms(2, 64, spec=mc.data.PhantomSpec(noise="rician", noise_level=0.2), seed=0)
    assert images.min() >= 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_images": 0}, "num_images"),
        ({"num_images": 2, "image_size": 16}, "image_size"),
        ({"num_images": 2, "target": "liver"}, "target"),
        ({"num_images": 2, "spec": {"noise": "gaussian"}}, "PhantomSpec"),
    ],
)
def test_bad_phantom_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        mc.data.make_phantoms(**kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"noise": "poisson"}, "noise"), ({"lesion_radius": (0.1, 0.6)}, "0.5"),
     ({"noise_level": -1}, "noise_level"), ({"intensity_scale": (2, 1)}, "low <= high")],
)
def test_bad_spec(kwargs, message):
    with pytest.raises(ValueError, match=message):
        mc.data.PhantomSpec(**kwargs)


@pytest.fixture(scope="module")
def mni_brain():
    return mc.data.load_mni152_slices("brain", image_size=64)


def test_mni152_slices(mni_brain):
    s = mni_brain
    assert s.images.shape[1:] == (64, 64, 1) and s.images.dtype == np.float32
    assert s.masks.shape == s.images.shape and set(np.unique(s.masks)) == {0.0, 1.0}
    assert 0 <= s.images.min() and s.images.max() <= 1
    assert np.all(np.diff(s.slice_index) > 0)
    # 2 mm voxels, 117-voxel wide square resampled to 64 pixels
    assert s.spacing_mm[0] == pytest.approx(2 * 117 / 64)
    # the brain is brighter than what surrounds it
    assert s.images[s.masks > 0].mean() > 2 * s.images[s.masks == 0].mean()


def test_mni152_tissue_labels():
    s = mc.data.load_mni152_slices("tissue", image_size=64)
    assert s.masks.ndim == 3 and s.masks.dtype == np.uint8
    assert set(np.unique(s.masks)) == {0, 1, 2, 3}
    brain = mc.data.load_mni152_slices("brain", image_size=64)
    np.testing.assert_array_equal(s.masks > 0, brain.masks[..., 0] > 0)


def test_slab_split_separates_neighbours(mni_brain):
    split = mc.data.slab_split(mni_brain.slice_index, slab_size=8, gap=2, seed=0)
    z = {k: mni_brain.slice_index[v] for k, v in split.items()}
    assert all(len(v) > 0 for v in z.values())
    for a in z:
        for b in z:
            if a != b:
                assert np.abs(z[a][:, None] - z[b][None, :]).min() > 2
    allocated = np.concatenate(list(split.values()))
    assert len(np.unique(allocated)) == len(allocated)  # no slice in two splits


def test_slab_split_errors():
    with pytest.raises(ValueError, match="at least 3"):
        mc.data.slab_split(np.arange(10), slab_size=8)
    with pytest.raises(ValueError, match="fractions"):
        mc.data.slab_split(np.arange(40), fractions=(0.5, 0.5, 0.5))


def test_mni152_bad_arguments():
    with pytest.raises(ValueError, match="target"):
        mc.data.load_mni152_slices("csf")
    with pytest.raises(ValueError, match="resolution"):
        mc.data.load_mni152_slices(resolution=3)


def test_add_simulated_head_keeps_brain_and_adds_bright_scalp():
    images = np.zeros((2, 64, 64, 1), np.float32)
    brain = np.zeros((2, 64, 64), np.uint8)
    brain[:, 20:44, 20:44] = 1
    images[brain.astype(bool)] = 0.5
    out = mc.data.add_simulated_head(images, brain, pixel_mm=1.0, seed=0)
    assert out.shape == images.shape and out.dtype == np.float32
    np.testing.assert_array_equal(out[brain.astype(bool)], 0.5)
    # 10 mm outside the brain lies in the scalp (7-13 mm): bright; 4 mm out is bone: dark
    assert out[0, 32, 20 - 10, 0] > 0.4 and out[0, 32, 20 - 4, 0] < 0.1
    assert out[0, 0, 0, 0] == 0  # far outside the head stays air


def test_add_simulated_head_rejects_mismatched_masks():
    with pytest.raises(ValueError, match="brain_masks must match"):
        mc.data.add_simulated_head(np.zeros((2, 32, 32, 1), np.float32), np.zeros((3, 32, 32)), pixel_mm=1.0)
    with pytest.raises(ValueError, match="pixel_mm"):
        mc.data.add_simulated_head(np.zeros((1, 32, 32, 1), np.float32), np.zeros((1, 32, 32)), pixel_mm=0)
