"""Volumes to the canonical grid and back: every axis order and direction, anisotropic and
resampled voxels; the way back is exact for labels."""

import itertools

import numpy as np
import pytest

from medseg_course import geometry
from medseg_course.io import MedicalImage


def affines(zooms=(1.0, 2.0, 0.5)):
    """All 48 axis permutations and flips of an anisotropic affine."""
    for perm in itertools.permutations(range(3)):
        for flips in itertools.product([1, -1], repeat=3):
            affine = np.eye(4)
            affine[:3, :3] = 0
            for axis, (world, flip) in enumerate(zip(perm, flips)):
                affine[world, axis] = flip * zooms[axis]
            affine[:3, 3] = (10.0, -20.0, 5.0)
            yield affine


def volume_image(array, affine):
    return MedicalImage(array.astype(np.float32), tuple(np.sqrt((affine[:3, :3] ** 2).sum(0))), affine, None, "nifti")


@pytest.mark.parametrize("spacing", [None, (0.5, 0.5, 0.5), (0.25, 0.5, 0.125)])  # finer: no voxel lost
def test_labels_return_exactly_to_every_orientation(spacing):
    labels = np.random.default_rng(0).integers(0, 3, (7, 9, 11)).astype(np.uint8)
    for affine in affines():
        image = volume_image(labels, affine)
        pixels, grid = geometry.prepare_volume(image, spacing_mm=spacing, order=0)
        prepared = geometry.prepare_labels(labels, grid)
        assert np.array_equal(prepared, pixels[..., 0].astype(np.uint8))
        assert np.array_equal(geometry.restore_labels(prepared, grid), labels)
        if spacing is not None:
            assert np.allclose(grid.spacing_mm, spacing)


@pytest.mark.parametrize("spacing", [None, (0.5, 0.25, 0.5)])
def test_canonical_axes_run_superior_right_anterior_and_the_affine_says_where(spacing):
    labels = np.random.default_rng(1).integers(0, 5, (6, 8, 10)).astype(np.uint8)
    for affine in affines():
        pixels, grid = geometry.prepare_volume(volume_image(labels, affine), spacing_mm=spacing, order=0)
        new_affine = geometry.canonical_affine(grid)
        # the prepared array's axes point to S, R, A with positive steps
        assert np.all(np.argmax(np.abs(new_affine[:3, :3]), axis=0) == [2, 0, 1])
        assert np.all(new_affine[[2, 0, 1], [0, 1, 2]] > 0)
        # every prepared voxel sits at the world position of the file voxel with its value
        index = np.argwhere(np.ones(pixels.shape[:3], bool))
        world = np.c_[index, np.ones(len(index))] @ new_affine.T
        source = np.floor(np.linalg.solve(affine, world.T).T[:, :3] + 0.5 - 1e-9).astype(int)  # the voxel it lies in
        assert np.array_equal(labels[tuple(source.T)], pixels[..., 0][tuple(index.T)])


def test_probabilities_return_to_the_original_grid():
    affine = next(affines())
    labels = np.zeros((9, 12, 10), np.uint8)
    labels[2:7, 3:9, 2:8] = 1
    _, grid = geometry.prepare_volume(volume_image(labels, affine), spacing_mm=(0.5, 0.5, 0.5))
    prepared = geometry.prepare_labels(labels, grid)
    probs = np.eye(2, dtype=np.float32)[prepared]
    back = geometry.restore_probabilities(probs, grid)
    assert back.shape == labels.shape + (2,)
    assert np.array_equal(np.argmax(back, -1), labels)


def test_a_two_dimensional_image_is_refused():
    image = MedicalImage(np.zeros((8, 8), np.float32), (1.0, 1.0), None, None, "raster")
    with pytest.raises(ValueError, match="3D volume"):
        geometry.prepare_volume(image)
