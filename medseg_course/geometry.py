"""Volumes on a common grid: one orientation, one voxel size, and the exact way back.

Scanners store volumes in any axis order and direction, with any voxel size. A 3D model
learns anatomy in the orientation and at the scale it was trained on, so every volume is
brought to the same grid before it reaches the model:

* **orientation**: the array axes are permuted and flipped (no interpolation, so nothing
  is lost) until they run towards the patient's Right, Anterior and Superior (RAS+, the
  closest canonical orientation of the image's affine, as nibabel's ``as_closest_canonical``);
* **voxel size**: optionally resampled to a target spacing, images with linear (or cubic)
  interpolation and labels with nearest neighbour.

The array is then laid out slices first, ``(S, R, A)``, the package's convention for volumes
(``MedicalImage.to_slices``): axis 0 runs inferior to superior, axis 1 left to right, axis 2
posterior to anterior. ``VolumeGrid`` remembers every step, so ``restore_labels`` and
``restore_probabilities`` put a prediction back on the image's own grid: same shape, same
axis order, same affine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medseg_course.utils import check_array

__all__ = ["VolumeGrid", "is_volume", "to_canonical", "canonical_spacing_mm", "resample", "prepare_volume", "prepare_labels", "restore_labels",
           "restore_probabilities", "canonical_affine"]


@dataclass(frozen=True)
class VolumeGrid:
    """The steps from a volume's own grid to the model's grid.

    Attributes
    ----------
    shape : tuple of int
        The pixels' spatial shape in the file's axis order.
    affine : ndarray (4, 4)
        The file's voxel-to-world (RAS+ mm) matrix.
    orientation : ndarray (3, 2)
        nibabel's orientation transform from the file's axes to RAS+.
    canonical_spacing_mm : tuple of float
        Voxel size along the slices-first canonical axes (S, R, A) before resampling.
    spacing_mm : tuple of float
        Voxel size of the prepared array, the same order.
    shape_canonical : tuple of int
        Spatial shape after reorientation (slices first), before resampling.
    shape_prepared : tuple of int
        Spatial shape of the prepared array (after resampling).
    """

    shape: tuple
    affine: np.ndarray
    orientation: np.ndarray
    canonical_spacing_mm: tuple
    spacing_mm: tuple
    shape_canonical: tuple
    shape_prepared: tuple


def is_volume(image):
    """Whether ``image`` (a ``MedicalImage``) is a 3D volume with an orientation: pixels
    ``(X, Y, Z)`` or multi-channel ``(X, Y, Z, C)`` with more than one voxel along each of the
    three axes, and an affine."""
    shape = np.shape(image.pixels)
    return image.affine is not None and len(shape) in (3, 4) and min(shape[:3]) > 1


def _orientation(affine):
    import nibabel as nib  # noqa: PLC0415

    return nib.orientations.io_orientation(np.asarray(affine, dtype=float))


def to_canonical(array, affine):
    """Permute and flip an array's first three axes so they run towards R, A, S.

    Parameters
    ----------
    array : ndarray, shape (X, Y, Z) or (X, Y, Z, C)
        Indexed like ``affine``'s columns.
    affine : ndarray (4, 4)

    Returns
    -------
    (ndarray, ndarray)
        The reoriented array (a view where possible) and its affine.
    """
    import nibabel as nib  # noqa: PLC0415

    ornt = _orientation(affine)
    out = nib.orientations.apply_orientation(np.asarray(array), ornt)
    new_affine = np.asarray(affine, float) @ nib.orientations.inv_ornt_aff(ornt, np.shape(array)[:3])
    return out, new_affine


def canonical_affine(grid):
    """The affine of the prepared array (slices first, canonical, resampled): its voxel
    indices ``(z, h, w)`` to RAS+ world millimetres."""
    import nibabel as nib  # noqa: PLC0415

    affine = np.asarray(grid.affine, float) @ nib.orientations.inv_ornt_aff(grid.orientation, grid.shape)
    affine = affine[:, [2, 0, 1, 3]]  # columns (i, j, k) -> (k, i, j): slices first
    # resampling keeps the extent: old index = (new index + 0.5) * factor - 0.5, per axis
    factors = np.asarray(grid.shape_canonical, float) / np.asarray(grid.shape_prepared, float)
    step = np.eye(4)
    step[:3, :3] = np.diag(factors)
    step[:3, 3] = (factors - 1) / 2
    return affine @ step


def canonical_spacing_mm(affine):
    """The voxel size along the canonical axes (S, R, A), in mm, from an affine alone."""
    ornt = _orientation(affine)
    zooms = np.sqrt((np.asarray(affine, float)[:3, :3] ** 2).sum(0))  # mm per file axis
    ras = [float(zooms[int(np.flatnonzero(ornt[:, 0] == target)[0])]) for target in range(3)]
    return (ras[2], ras[0], ras[1])


def resample(array, shape, order=1):
    """Resample an array's leading three axes to ``shape`` (voxel centres aligned, as a
    change of voxel size keeps the volume's extent).

    Parameters
    ----------
    array : ndarray, shape (Z, H, W) or (Z, H, W, C)
    shape : (int, int, int)
    order : int
        0 nearest neighbour (labels), 1 linear, 3 cubic.

    Returns
    -------
    ndarray of ``shape`` (+ channels), the input's dtype for ``order=0``, float32 otherwise.
    """
    from scipy import ndimage  # noqa: PLC0415

    array = np.asarray(array)
    shape = tuple(int(v) for v in shape)
    if tuple(array.shape[:3]) == shape:
        return array if order == 0 else array.astype(np.float32)
    factors = [new / old for new, old in zip(shape, array.shape[:3])]
    source = array if order == 0 else array.astype(np.float32)
    if array.ndim == 4:
        channels = [ndimage.zoom(source[..., c], factors, order=order, mode="nearest", grid_mode=True)
                    for c in range(array.shape[3])]
        return np.stack(channels, axis=-1)
    return ndimage.zoom(source, factors, order=order, mode="nearest", grid_mode=True)


def prepare_volume(image, spacing_mm=None, order=1):
    """A volume's pixels on the model's grid, and the ``VolumeGrid`` that leads back.

    Parameters
    ----------
    image : medseg_course.io.MedicalImage
        A 3D image with an affine (NIfTI or a DICOM series).
    spacing_mm : (float, float, float), optional
        Target voxel size along (S, R, A); by default the image's own (no resampling).
    order : int
        Interpolation of the image: 1 linear, 3 cubic.

    Returns
    -------
    (ndarray, VolumeGrid)
        float32 pixels ``(Z, H, W, C)`` slices first in canonical orientation, and the grid.
    """
    if image.affine is None or np.ndim(image.pixels) < 3:
        raise ValueError(
            f"{image.path or 'image'}: a 3D volume with an orientation (NIfTI or a DICOM series) is needed; "
            f"got a {image.format} image of shape {np.shape(image.pixels)}."
        )
    pixels = np.asarray(image.pixels)
    if pixels.ndim == 3:
        pixels = pixels[..., None]
    check_array(pixels, "pixels", ndim=4, dtype_kind="biuf")
    ornt = _orientation(image.affine)
    canonical, _ = to_canonical(pixels, image.affine)
    canonical = np.moveaxis(canonical, 2, 0)  # (R, A, S, C) -> (S, R, A, C)
    canonical_spacing = canonical_spacing_mm(image.affine)
    target = canonical_spacing if spacing_mm is None else tuple(float(v) for v in spacing_mm)
    shape_canonical = canonical.shape[:3]
    new_shape = tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape_canonical, canonical_spacing, target))
    spacing = tuple(s * n / m for s, n, m in zip(canonical_spacing, shape_canonical, new_shape))
    prepared = resample(canonical, new_shape, order=order).astype(np.float32)
    grid = VolumeGrid(tuple(pixels.shape[:3]), np.asarray(image.affine, float), ornt, canonical_spacing,
                      spacing, tuple(shape_canonical), new_shape)
    return prepared, grid


def prepare_labels(labels, grid):
    """A label map on the image's own grid (file order) brought to the grid of
    ``prepare_volume`` (nearest neighbour)."""
    canonical, _ = to_canonical(np.asarray(labels), grid.affine)
    canonical = np.moveaxis(canonical, 2, 0)
    return resample(canonical, grid.shape_prepared, order=0)


_RAS = np.array([[0, 1], [1, 1], [2, 1]], float)


def _back_to_file(array, grid):
    import nibabel as nib  # noqa: PLC0415

    ras = np.moveaxis(array, 0, 2)  # (S, R, A, ...) -> (R, A, S, ...)
    to_file = nib.orientations.ornt_transform(_RAS, grid.orientation)
    return np.ascontiguousarray(nib.orientations.apply_orientation(ras, to_file))


def restore_labels(labels, grid):
    """A label map ``(Z, H, W)`` on the prepared grid back on the image's own grid: nearest
    neighbour to the canonical voxel size, then the inverse permutation and flips."""
    labels = np.asarray(labels)
    return _back_to_file(resample(labels, grid.shape_canonical, order=0), grid)


def restore_probabilities(probabilities, grid):
    """Probabilities ``(Z, H, W, K)`` on the prepared grid back on the image's own grid
    (linear interpolation, then the inverse permutation and flips); take the arg-max (or
    threshold) afterwards, so that labels are decided at the image's own resolution."""
    probabilities = np.asarray(probabilities, dtype=np.float32)
    return _back_to_file(resample(probabilities, grid.shape_canonical, order=1), grid)
