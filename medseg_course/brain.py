"""Real brain MRI offline: the MNI152 template that nilearn ships, cut into slices.

``load_mni152_slices`` cuts axial slices from the MNI152 T1 template with its brain, grey-
and white-matter masks; ``add_simulated_head`` puts a scalp and skull around them; and
``slab_split`` splits slices so that neighbouring slices never fall into different splits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from medseg_course.utils import check_array, check_positive

__all__ = ["MNI152_TARGETS", "MNI152_TISSUE_CLASSES", "SliceSet", "load_mni152_slices", "add_simulated_head", "slab_split"]


#: Targets of ``load_mni152_slices``.
MNI152_TARGETS = ("brain", "gm", "wm", "tissue")
#: Label values of ``load_mni152_slices(target="tissue")``.
MNI152_TISSUE_CLASSES = {0: "background", 1: "grey matter", 2: "white matter", 3: "CSF/other"}


@dataclass(frozen=True)
class SliceSet:
    """2D slices cut from a volume, with where they came from.

    Attributes
    ----------
    images : ndarray, shape (N, H, W, 1), float32 in [0, 1]
    masks : ndarray, shape (N, H, W, 1) float32 in {0, 1}, or (N, H, W) uint8 labels
    slice_index : ndarray, shape (N,), int
        Index of each slice along the cut axis of the source volume.
    spacing_mm : (float, float)
        Pixel size (rows, columns) in millimetres after resampling.
    """

    images: np.ndarray
    masks: np.ndarray
    slice_index: np.ndarray
    spacing_mm: tuple

    def __len__(self):
        return len(self.images)

    def subset(self, indices):
        """Return the slices at ``indices`` (an index array or boolean mask) as a SliceSet."""
        indices = np.asarray(indices)
        return SliceSet(
            self.images[indices], self.masks[indices], self.slice_index[indices], self.spacing_mm
        )


def load_mni152_slices(target="brain", image_size=128, resolution=2, min_foreground=0.02):
    """Axial slices of nilearn's bundled MNI152 T1 template and its tissue masks.

    No download: the template (ICBM 2009a, 1 mm) and its grey/white-matter probability maps
    ship inside nilearn. Slices are rotated so anterior is up, padded to a square and
    resampled to ``image_size`` (linear for the image, nearest for the mask).

    Parameters
    ----------
    target : {"brain", "gm", "wm", "tissue"}
        Binary brain, grey-matter or white-matter mask, or tissue labels (0 background,
        1 grey matter, 2 white matter, 3 other brain, mostly CSF).
    image_size : int
        Output height and width (>= 32).
    resolution : {1, 2}
        Resolution in mm at which nilearn provides the volume before resampling.
    min_foreground : float
        Keep only slices whose brain mask covers at least this fraction of the slice.

    Returns
    -------
    SliceSet
        Images in [0, 1] (divided by the volume's maximum), masks, slice indices (z) and
        the in-plane spacing in mm.

    Raises
    ------
    ValueError
        For an unknown ``target`` or ``resolution``, or a too small ``image_size``.
    """
    if target not in MNI152_TARGETS:
        raise ValueError(f"target must be one of {MNI152_TARGETS}. Received: target={target!r}")
    if resolution not in (1, 2):
        raise ValueError(f"resolution must be 1 or 2 (mm). Received: resolution={resolution!r}")
    check_positive(image_size, "image_size", integer=True)
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32. Received: image_size={image_size}")
    from nilearn import datasets  # noqa: PLC0415  (slow import, only needed here)

    t1 = datasets.load_mni152_template(resolution=resolution)
    volume = np.asarray(t1.dataobj, dtype=np.float32)
    volume /= volume.max()
    brain = np.asarray(datasets.load_mni152_brain_mask(resolution=resolution).dataobj) > 0
    if target == "brain":
        labels = brain.astype(np.uint8)
    elif target in ("gm", "wm"):
        loader = datasets.load_mni152_gm_mask if target == "gm" else datasets.load_mni152_wm_mask
        labels = (np.asarray(loader(resolution=resolution).dataobj) > 0).astype(np.uint8)
    else:
        gm = np.asarray(datasets.load_mni152_gm_template(resolution=resolution).dataobj)
        wm = np.asarray(datasets.load_mni152_wm_template(resolution=resolution).dataobj)
        labels = np.where(gm >= wm, 1, 2).astype(np.uint8)
        labels[np.maximum(gm, wm) < 0.2] = 3
        labels[~brain] = 0
    spacing = float(t1.header.get_zooms()[0])
    keep = [z for z in range(volume.shape[2]) if brain[:, :, z].mean() >= min_foreground]
    images, masks = [], []
    for z in keep:
        # Axial slice is (x, y); rot90 puts anterior at the top, the radiological view.
        images.append(_fit_square(np.rot90(volume[:, :, z]), image_size, order=1))
        masks.append(_fit_square(np.rot90(labels[:, :, z]), image_size, order=0))
    side = max(volume.shape[0], volume.shape[1])
    pixel_mm = spacing * side / image_size
    images = np.clip(np.stack(images), 0, 1).astype(np.float32)[..., None]
    masks = np.stack(masks).astype(np.uint8)
    if target != "tissue":
        masks = masks[..., None].astype(np.float32)
    return SliceSet(images, masks, np.asarray(keep), (pixel_mm, pixel_mm))


def add_simulated_head(images, brain_masks, pixel_mm, seed=0):
    """Wrap skull-stripped brain slices in a simulated CSF rim, skull and scalp.

    nilearn's MNI152 template ships skull-stripped, so brain extraction on it is trivial
    (everything non-zero is brain). This adds, outside each slice's brain mask and at
    physical thicknesses, the layers a T1-weighted head scan shows: a dark CSF/meninges rim
    (0-2 mm), dark cortical bone (2-7 mm) and bright scalp fat (7-13 mm, brightness drawn per
    slice from 0.55-0.9 with a mild texture). The brain pixels are not changed.

    Parameters
    ----------
    images : array, shape (N, H, W, 1), float in [0, 1]
    brain_masks : array, shape (N, H, W) or (N, H, W, 1), non-zero inside the brain
    pixel_mm : float
        In-plane pixel size in mm (``SliceSet.spacing_mm[0]``).
    seed : int

    Returns
    -------
    ndarray, float32, same shape as ``images``

    Raises
    ------
    ValueError
        For mismatched shapes or a non-positive ``pixel_mm``.
    """
    images = check_array(images, "images", ndim=4, dtype_kind="f")
    brain = check_array(brain_masks, "brain_masks", ndim=(3, 4), dtype_kind="biuf")
    brain = (brain[..., 0] if brain.ndim == 4 else brain) > 0
    if brain.shape != images.shape[:3]:
        raise ValueError(
            "brain_masks must match images in number, height and width. "
            f"Received: images.shape={images.shape}, brain_masks.shape={np.shape(brain_masks)}"
        )
    check_positive(pixel_mm, "pixel_mm")
    rng = np.random.default_rng(seed)
    out = images.astype(np.float32).copy()
    for i in range(len(out)):
        mm = ndimage.distance_transform_edt(~brain[i]) * pixel_mm
        plane = out[i, ..., 0]
        plane[(mm > 0) & (mm <= 2)] = 0.08
        plane[(mm > 2) & (mm <= 7)] = 0.03
        scalp = (mm > 7) & (mm <= 13)
        texture = ndimage.gaussian_filter(rng.normal(0, 1, plane.shape), 1.5)
        plane[scalp] = rng.uniform(0.55, 0.9) + 0.05 * texture[scalp] / max(texture.std(), 1e-6)
    return np.clip(out, 0, 1)


def _fit_square(plane, size, order):
    """Zero-pad a 2D array to a centred square, then resample it to ``size`` x ``size``."""
    side = max(plane.shape)
    pad = [((side - n) // 2, side - n - (side - n) // 2) for n in plane.shape]
    square = np.pad(plane, pad)
    if side == size:
        return square
    zoom = size / side
    out = ndimage.zoom(square.astype(np.float32), zoom, order=order, grid_mode=True, mode="grid-constant")
    return out[:size, :size]


def slab_split(slice_index, slab_size=8, gap=2, fractions=(0.6, 0.2, 0.2), seed=0):
    """Split slices of one volume into train/val/test by contiguous slabs.

    Neighbouring slices are nearly identical, so a random slice-wise split leaks the test
    set into training. Here slices are grouped into slabs of ``slab_size`` consecutive
    indices, whole slabs are assigned to splits, and ``gap`` slices are dropped on each side
    of every boundary between slabs of different splits, so no test slice has a training
    slice closer than ``gap + 1`` positions.

    Parameters
    ----------
    slice_index : array_like of int, shape (N,)
        Position of each slice along the cut axis (``SliceSet.slice_index``).
    slab_size : int
        Slices per slab.
    gap : int
        Slices dropped at each side of a boundary between different splits.
    fractions : (float, float, float)
        Share of slabs for train, val and test; each split gets at least one slab.
    seed : int
        Seed for assigning slabs to splits.

    Returns
    -------
    dict of str to ndarray
        ``{"train": idx, "val": idx, "test": idx}``: positions into ``slice_index``.

    Raises
    ------
    ValueError
        If there are fewer than three slabs or the fractions do not sum to 1.
    """
    slice_index = np.asarray(slice_index)
    check_positive(slab_size, "slab_size", integer=True)
    check_positive(gap, "gap", integer=True, allow_zero=True)
    fractions = np.asarray(fractions, dtype=float)
    if fractions.shape != (3,) or np.any(fractions <= 0) or not np.isclose(fractions.sum(), 1):
        raise ValueError(
            f"fractions must be three positive numbers summing to 1. Received: {fractions}"
        )
    slab_of = (slice_index - slice_index.min()) // slab_size
    slabs = np.unique(slab_of)
    if len(slabs) < 3:
        raise ValueError(
            f"Only {len(slabs)} slabs of {slab_size} slices: need at least 3 for "
            "train/val/test. Lower slab_size."
        )
    counts = np.maximum(1, np.round(fractions * len(slabs)).astype(int))
    counts[0] = len(slabs) - counts[1:].sum()
    order = np.random.default_rng(seed).permutation(len(slabs))
    split_of_slab = np.empty(len(slabs), int)
    split_of_slab[order] = np.repeat([0, 1, 2], counts)
    split = split_of_slab[np.searchsorted(slabs, slab_of)]
    keep = np.ones(len(slice_index), bool)
    for i, (pos, s) in enumerate(zip(slice_index, split)):
        near = np.abs(slice_index - pos) <= gap
        if np.any(split[near] != s):
            keep[i] = False
    names = ("train", "val", "test")
    return {name: np.flatnonzero(keep & (split == k)) for k, name in enumerate(names)}



# ------------------------------------------------------------------ user data sets
