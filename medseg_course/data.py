"""Data the course trains on: synthetic phantoms with exact masks, real brain MRI, and yours.

Built-in sources, both available offline:

* ``make_phantoms`` draws CT-like 2D cross-sections: a body outline, a bright bone, an
  organ of random smooth shape with texture, and lesions inside the organ, then degrades
  the picture the way scanners do (partial-volume blur, a smooth bias field, intensity
  scale shifts and Gaussian, Rician or speckle noise). The masks come from the geometry
  before any degradation, so they are exact.
* ``load_mni152_slices`` cuts axial slices from the MNI152 T1 template that nilearn ships,
  with its brain, grey- and white-matter masks, and ``slab_split`` splits them so that
  neighbouring slices never fall into different splits.

Both return channels-last float32 images ``(N, H, W, 1)``; binary masks are float32
``(N, H, W, 1)`` in {0, 1}, multi-class masks are uint8 labels ``(N, H, W)``.

Your own data, in standard layouts: ``load_paired_folders`` (``images/`` + ``masks/``
matched by file stem) and ``load_msd`` (the Medical Segmentation Decathlon's
``dataset.json`` + ``imagesTr/`` + ``labelsTr/``), which return ``Case`` objects keeping
each image's geometry; ``split_cases`` splits them by case. ``download_msd`` fetches a
Decathlon task, verified by checksum (nothing in the book or tests downloads).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from medseg_course.utils import check_array, check_positive

__all__ = [
    "PHANTOM_CLASSES",
    "MNI152_TARGETS",
    "PhantomSpec",
    "make_phantoms",
    "SliceSet",
    "load_mni152_slices",
    "slab_split",
    "MASK_SUFFIXES",
    "DataSetError",
    "Case",
    "find_pairs",
    "mask_to_labels",
    "load_paired_folders",
    "load_msd",
    "split_cases",
    "volume_slices",
    "MSD_TASKS",
    "data_home",
    "download_msd",
    "safe_extract",
]

#: Label values of ``make_phantoms(..., target="multiclass")``.
PHANTOM_CLASSES = {0: "background", 1: "organ", 2: "lesion"}
_PHANTOM_TARGETS = ("organ", "lesion", "multiclass")
_NOISE_KINDS = ("gaussian", "rician", "speckle", "none")


@dataclass(frozen=True)
class PhantomSpec:
    """How phantoms look. Every field has a realistic default; change one to run a study.

    Intensities are on a 0-1 scale before scale shifts and noise (body 0.35).

    Attributes
    ----------
    organ_contrast : float
        Organ intensity minus body intensity (0.25 by default; near 0 makes the organ
        hard to see).
    lesion_contrast : float
        Lesion intensity minus organ intensity; negative for hypo-intense lesions.
    lesion_radius : (float, float)
        Range of lesion radii as a fraction of the image width. This is the class
        imbalance dial: lesions of radius 0.02 cover ~0.1 % of the image.
    max_lesions : int
        Each image gets 0 to ``max_lesions`` lesions (at least one if ``target="lesion"``).
    noise : {"gaussian", "rician", "speckle", "none"}
        Noise model: additive Gaussian (CT), Rician (magnitude MRI), multiplicative
        speckle (ultrasound).
    noise_level : float
        Standard deviation of the noise on the 0-1 scale.
    blur_sigma : float
        Gaussian blur in pixels, a stand-in for the scanner's point-spread function and
        partial-volume effect.
    bias_strength : float
        Peak amplitude of the smooth multiplicative bias field (0.2 = +-20 %).
    intensity_scale : (float, float)
        Range of a global gain applied per image (scanner/protocol shifts).
    texture : float
        Amplitude of the smooth tissue texture inside body and organ.
    """

    organ_contrast: float = 0.25
    lesion_contrast: float = 0.2
    lesion_radius: tuple = (0.03, 0.07)
    max_lesions: int = 3
    noise: str = "gaussian"
    noise_level: float = 0.05
    blur_sigma: float = 1.0
    bias_strength: float = 0.15
    intensity_scale: tuple = (0.9, 1.1)
    texture: float = 0.04

    def __post_init__(self):
        if self.noise not in _NOISE_KINDS:
            raise ValueError(
                f"noise must be one of {_NOISE_KINDS}. Received: noise={self.noise!r}"
            )
        for name in ("noise_level", "blur_sigma", "bias_strength", "texture"):
            check_positive(getattr(self, name), name, allow_zero=True)
        check_positive(self.max_lesions, "max_lesions", integer=True, allow_zero=True)
        low, high = _check_range(self.lesion_radius, "lesion_radius")
        if high >= 0.5:
            raise ValueError(
                "lesion_radius is a fraction of the image width and must stay below 0.5. "
                f"Received: lesion_radius={self.lesion_radius}"
            )
        _check_range(self.intensity_scale, "intensity_scale")


def _check_range(value, name):
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must be a (low, high) pair of numbers. Received: {name}={value!r}"
        ) from None
    if not (0 < low <= high and np.isfinite(high)):
        raise ValueError(f"{name} must satisfy 0 < low <= high. Received: {name}={value!r}")
    return low, high


def make_phantoms(num_images, image_size=128, spec=None, target="organ", seed=0):
    """Draw synthetic CT-like cross-sections with exact segmentation masks.

    Image ``i`` depends only on ``seed`` and ``i``: ``make_phantoms(10, seed=0)[0][:5]``
    equals ``make_phantoms(5, seed=0)[0]``.

    Parameters
    ----------
    num_images : int
        Number of images N (>= 1).
    image_size : int
        Height and width H = W in pixels (>= 32).
    spec : PhantomSpec, optional
        Appearance; ``PhantomSpec()`` by default.
    target : {"organ", "lesion", "multiclass"}
        ``"organ"``: binary mask of the organ including its lesions; ``"lesion"``: binary
        mask of the lesions; ``"multiclass"``: labels 0 background, 1 organ, 2 lesion.
    seed : int
        Seed; same seed, same images.

    Returns
    -------
    images : ndarray, shape (N, H, W, 1), float32
        Roughly in [0, 1.3]; not clipped, so intensity shifts stay visible.
    masks : ndarray, shape (N, H, W, 1) float32 in {0, 1}, or (N, H, W) uint8 labels
        Binary targets are float32 with a channel axis; ``"multiclass"`` gives labels.

    Raises
    ------
    ValueError
        For a non-positive ``num_images``, ``image_size < 32`` or an unknown ``target``.

    Examples
    --------
    >>> images, masks = make_phantoms(4, image_size=64, seed=1)
    >>> images.dtype, masks.shape
    (dtype('float32'), (4, 64, 64, 1))
    """
    check_positive(num_images, "num_images", integer=True)
    check_positive(image_size, "image_size", integer=True)
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32. Received: image_size={image_size}")
    if target not in _PHANTOM_TARGETS:
        raise ValueError(
            f"target must be one of {_PHANTOM_TARGETS}. Received: target={target!r}"
        )
    spec = PhantomSpec() if spec is None else spec
    if not isinstance(spec, PhantomSpec):
        raise ValueError(
            f"spec must be a PhantomSpec. Received: spec of type {type(spec).__name__}"
        )
    children = np.random.SeedSequence(int(seed)).spawn(int(num_images))
    images = np.empty((num_images, image_size, image_size, 1), np.float32)
    labels = np.empty((num_images, image_size, image_size), np.uint8)
    for i, child in enumerate(children):
        rng = np.random.default_rng(child)
        images[i, ..., 0], labels[i] = _draw_phantom(rng, image_size, spec, target)
    if target == "multiclass":
        return images, labels
    foreground = labels >= 1 if target == "organ" else labels == 2
    return images, foreground[..., None].astype(np.float32)


def _smooth_field(rng, size, sigma):
    """Zero-mean, unit-peak smooth random field."""
    field_ = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma)
    return field_ / (np.abs(field_).max() + 1e-12)


def _draw_phantom(rng, size, spec, target):
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    y = (yy + 0.5) / size * 2 - 1  # pixel centres in [-1, 1]
    x = (xx + 0.5) / size * 2 - 1
    # Body: an ellipse like an abdominal cross-section.
    ay, ax = rng.uniform(0.62, 0.75), rng.uniform(0.8, 0.92)
    body = (y / ay) ** 2 + (x / ax) ** 2 <= 1
    # Bone: a bright disc near the back of the body (vertebra), outside the organ.
    by, bx, br = ay * 0.68, rng.uniform(-0.08, 0.08), rng.uniform(0.09, 0.12)
    bone = (y - by) ** 2 + (x - bx) ** 2 <= br**2
    # Organ: a blob whose radius varies smoothly with angle (harmonics 2-4).
    cy, cx = rng.uniform(-0.25, 0.05), rng.uniform(-0.3, 0.3)
    r0 = rng.uniform(0.28, 0.4)
    theta = np.arctan2(y - cy, x - cx)
    radius = np.full_like(theta, r0)
    for k in (2, 3, 4):
        radius += r0 * rng.uniform(0, 0.15 / (k - 1)) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    organ = (np.hypot(y - cy, x - cx) <= radius) & body & ~bone
    # Lesions: discs inside the organ; at least one when they are the target.
    num_lesions = int(rng.integers(0, spec.max_lesions + 1))
    if target == "lesion":
        num_lesions = max(num_lesions, 1)
    lesions = np.zeros_like(organ)
    inside = np.argwhere(ndimage.binary_erosion(organ, iterations=max(1, size // 32)))
    if inside.size == 0:
        inside = np.argwhere(organ)
    for _ in range(num_lesions):
        py, px = inside[rng.integers(len(inside))]
        lr = rng.uniform(*spec.lesion_radius) * size
        lesions |= (yy - py) ** 2 + (xx - px) ** 2 <= lr**2
    lesions &= organ
    labels = np.zeros((size, size), np.uint8)
    labels[organ] = 1
    labels[lesions] = 2
    # Intensities, then the scanner: texture, blur, bias field, gain, noise.
    body_level = 0.35
    image = np.zeros((size, size))
    image[body] = body_level
    image[bone] = 0.95
    image[organ] = body_level + spec.organ_contrast
    image[lesions] = body_level + spec.organ_contrast + spec.lesion_contrast
    image += spec.texture * _smooth_field(rng, size, size / 40) * body
    if spec.blur_sigma > 0:
        image = ndimage.gaussian_filter(image, spec.blur_sigma * size / 128)
    if spec.bias_strength > 0:
        coeffs = rng.uniform(-1, 1, 4)
        bias = coeffs[0] * x + coeffs[1] * y + coeffs[2] * x * y + coeffs[3] * (x**2 - y**2)
        bias /= np.abs(bias).max() + 1e-12
        image *= 1 + spec.bias_strength * bias
    image *= rng.uniform(*spec.intensity_scale)
    image = _add_noise(rng, image, spec.noise, spec.noise_level)
    return image.astype(np.float32), labels


def _add_noise(rng, image, kind, level):
    if kind == "none" or level == 0:
        return image
    if kind == "gaussian":
        return image + rng.normal(0, level, image.shape)
    if kind == "rician":
        real = image + rng.normal(0, level, image.shape)
        imag = rng.normal(0, level, image.shape)
        return np.hypot(real, imag)
    return image * (1 + rng.normal(0, level, image.shape))  # speckle


# ----------------------------------------------------------------------------- MNI152

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

#: Suffixes that mark a mask file's stem (``case_mask.png`` pairs with ``case.png``).
MASK_SUFFIXES = ("_mask", "_masks", "_seg", "_segmentation", "_label", "_labels", "_gt", "_manual1", "-mask", "-seg")


class DataSetError(ValueError):
    """A data set folder is not usable; the message names the file(s) and the fix."""


@dataclass
class Case:
    """One image with its mask.

    Attributes
    ----------
    name : str
        The case's name (the shared file stem, or the Decathlon case name).
    image : medseg_course.io.MedicalImage
        Pixels and geometry.
    mask : ndarray or None
        uint8 labels with the image's spatial shape (0 background; 1 foreground for binary
        masks); ``None`` for unlabelled images.
    mask_path : Path or None
    """

    name: str
    image: object
    mask: np.ndarray | None
    mask_path: object = None


def _pair_key(stem):
    lowered = stem.lower()
    for suffix in MASK_SUFFIXES:
        if lowered.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return stem


def _stem(path):
    from medseg_course.io import image_suffix  # noqa: PLC0415

    return path.name[: -len(image_suffix(path))] if image_suffix(path) else path.stem


def find_pairs(root, image_dir="images", mask_dir="masks", allow_unmatched=False):
    """Match images to masks by file stem in ``root/images`` and ``root/masks``.

    ``case7.png`` pairs with ``case7.png``, ``case7_mask.png``, ``case7_segmentation.png``
    and the other ``MASK_SUFFIXES``; file types may differ (``.jpg`` image, ``.png`` mask).
    Hidden files (``.DS_Store``, ``._case7.png``) are ignored.

    Parameters
    ----------
    root : str or Path
    image_dir, mask_dir : str
        Sub-folder names.
    allow_unmatched : bool
        Skip (with a warning listing them) images without masks, masks without images and
        non-image files, instead of stopping.

    Returns
    -------
    list of (str, Path, Path)
        (case name, image path, mask path), sorted by name.

    Raises
    ------
    DataSetError
        Missing or empty folders, ambiguous matches, or (unless ``allow_unmatched``)
        unmatched or non-image files, naming them.
    """
    import warnings  # noqa: PLC0415

    from medseg_course.io import ImageReadError, list_image_files  # noqa: PLC0415

    root = Path(root)
    folders = {}
    for role, name in (("images", image_dir), ("masks", mask_dir)):
        folder = root / name
        if not folder.is_dir():
            raise DataSetError(
                f"{folder}: folder not found. A paired data set needs {root}/{image_dir}/ and "
                f"{root}/{mask_dir}/ (or --layout msd for the Decathlon layout)."
            )
        try:
            files, others = list_image_files(folder, inside=root)
        except ImageReadError as err:
            raise DataSetError(str(err)) from None
        if not files:
            raise DataSetError(f"{folder}: no image files in the folder. Put the {role} there.")
        folders[role] = (files, others)
    images = {_stem(p): p for p in folders["images"][0]}
    masks = {}
    for path in folders["masks"][0]:
        key = _stem(path) if _stem(path) in images else _pair_key(_stem(path))
        if key in masks:
            raise DataSetError(
                f"{path}: both {masks[key].name} and {path.name} match image {key!r}. Keep one mask per image."
            )
        masks[key] = path
    problems = []
    no_mask = sorted(set(images) - set(masks))
    no_image = sorted(set(masks) - set(images))
    if no_mask:
        problems.append(f"{len(no_mask)} image(s) without a mask: " + ", ".join(images[k].name for k in no_mask[:5]))
    if no_image:
        problems.append(f"{len(no_image)} mask(s) without an image: " + ", ".join(masks[k].name for k in no_image[:5]))
    for role in ("images", "masks"):
        if folders[role][1]:
            names = ", ".join(p.name for p in folders[role][1][:5])
            problems.append(f"{len(folders[role][1])} non-image file(s) in {role}/: {names}")
    if problems:
        message = f"{root}: " + "; ".join(problems)
        if not allow_unmatched:
            raise DataSetError(
                message + ". Add the missing files or remove the extra ones, or pass "
                "allow_unmatched=True (--allow-unmatched) to skip them."
            )
        warnings.warn(message + " (skipped)", stacklevel=2)
    common = sorted(set(images) & set(masks))
    if not common:
        raise DataSetError(f"{root}: no image has a matching mask. Check the file names (see MASK_SUFFIXES).")
    return [(key, images[key], masks[key]) for key in common]


def mask_to_labels(pixels, path="mask", invert=False, colour=None):
    """Convert a mask as stored to uint8 labels.

    Accepted forms: 0/1 (any dtype), 0/255 (8-bit masks), small integer labels 0..K (K < 64),
    and 8-bit masks with JPEG compression noise (all but <= 1 % of pixels within 10 of 0 or
    255), which are thresholded at 128. A colour mask whose three channels agree is read
    as grey.

    Parameters
    ----------
    pixels : array, shape (H, W), (H, W, 3) or 3D
    path : str or Path
        Named in error messages.
    invert : bool
        The file marks the foreground with 0 and the background with 1/255 (binary masks
        only).
    colour : bool, optional
        Whether the last axis holds colour channels. ``None`` guesses from the array (an
        8-bit (H, W, 3) or (H, W, 4) array is colour); pass ``image.is_colour`` for a mask
        read with ``io.read_image``, so a 3D label volume of 3 or 4 slices is not taken for
        a colour image.

    Returns
    -------
    ndarray, uint8, spatial shape of ``pixels``

    Raises
    ------
    DataSetError
        Colour masks with different channels, negative, fractional or too many values.
    """
    arr = np.asarray(pixels)
    if colour is None:
        colour = arr.ndim == 3 and arr.shape[-1] in (3, 4) and arr.dtype == np.uint8
    if colour:
        if not (np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 1], arr[..., 2])):
            raise DataSetError(
                f"{path}: colour mask with different channels; save masks as greyscale 0/255 or label images."
            )
        arr = arr[..., 0]
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise DataSetError(f"{path}: mask contains NaN or infinite values; re-export it.")
    values = np.unique(arr)
    if np.all(np.isin(values, (0, 1))):
        labels = arr.astype(np.uint8)
    elif np.all(np.isin(values, (0, 255))):
        labels = (arr == 255).astype(np.uint8)
    elif arr.dtype.kind in "ui" or (arr.dtype.kind == "f" and np.all(values == np.round(values))):
        if values.min() < 0 or values.max() >= 256:
            raise DataSetError(f"{path}: mask values {values.min()}..{values.max()} are not labels 0..255.")
        near_extremes = np.mean((arr <= 10) | (arr >= 245))
        if arr.dtype == np.uint8 and values.max() >= 245 and near_extremes >= 0.99:
            labels = (arr >= 128).astype(np.uint8)  # JPEG-compressed binary mask
        elif values.max() < 64:
            labels = arr.astype(np.uint8)
        else:
            raise DataSetError(
                f"{path}: mask has {values.size} distinct values ({values.min()}..{values.max()}); expected "
                "0/1, 0/255 or labels 0..63. Re-export it as a label image."
            )
    else:
        raise DataSetError(f"{path}: mask has fractional values; expected 0/1, 0/255 or integer labels.")
    if invert:
        if labels.max() > 1:
            raise DataSetError(f"{path}: invert applies to binary masks; this one has labels up to {labels.max()}.")
        labels = 1 - labels
    return labels


def _check_mask_geometry(image, mask, mask_image, mask_path):
    spatial = image.pixels.shape[:2] if image.format in ("raster", "dicom") else image.pixels.shape[:3]
    if mask.shape != tuple(spatial):
        raise DataSetError(
            f"{mask_path}: mask shape {mask.shape} differs from its image's {tuple(spatial)} "
            f"({image.path.name}). Masks must be drawn on the image grid; resample the mask."
        )
    if image.affine is not None and mask_image.affine is not None and not np.allclose(image.affine, mask_image.affine, atol=1e-3):
        raise DataSetError(
            f"{mask_path}: mask orientation/position (affine) differs from its image's ({image.path.name}). "
            "Resample the mask onto the image grid (e.g. in 3D Slicer)."
        )


def _squeeze_channel(mask, image):
    """Drop a trailing length-1 axis a mask has and its image lacks ((H, W, 1) for (H, W))."""
    spatial_ndim = 2 if image.format in ("raster", "dicom") else min(image.pixels.ndim, 3)
    if mask.ndim == spatial_ndim + 1 and mask.shape[-1] == 1:
        return mask[..., 0]
    return mask


def load_paired_folders(root, image_dir="images", mask_dir="masks", invert=False, allow_unmatched=False):
    """Read a paired-folder data set: ``root/images/*`` with ``root/masks/*``.

    Parameters
    ----------
    root : str or Path
    image_dir, mask_dir : str
    invert : bool
        Masks mark the foreground with 0 (see ``mask_to_labels``).
    allow_unmatched : bool
        See ``find_pairs``.

    Returns
    -------
    list of Case
        Images with their geometry, masks as uint8 labels of the same spatial shape.

    Raises
    ------
    DataSetError
        For any file that cannot be used, naming it and the fix. Files are only read.
    """
    from medseg_course.io import ImageReadError, read_image  # noqa: PLC0415

    cases = []
    for name, image_path, mask_path in find_pairs(root, image_dir, mask_dir, allow_unmatched):
        try:
            image = read_image(image_path)
            mask_image = read_image(mask_path)
        except ImageReadError as err:
            raise DataSetError(str(err)) from None
        mask = _squeeze_channel(mask_to_labels(mask_image.pixels, mask_path, invert, mask_image.is_colour), image)
        _check_mask_geometry(image, mask, mask_image, mask_path)
        cases.append(Case(name, image, mask, mask_path))
    return cases


def load_msd(root):
    """Read a Medical Segmentation Decathlon task folder (``dataset.json``, ``imagesTr/``, ``labelsTr/``).

    Parameters
    ----------
    root : str or Path
        The task folder, e.g. ``Task04_Hippocampus``.

    Returns
    -------
    (list of Case, dict)
        3D cases (image pixels in nibabel order, 4D multi-modal images keep their last
        axis as channels), and the parsed ``dataset.json`` with ``labels`` as ``{int: name}``.

    Raises
    ------
    DataSetError
        A missing or malformed ``dataset.json``, or one that lists files that do not exist
        or whose image and label grids differ.
    """
    import json  # noqa: PLC0415

    from medseg_course.io import ImageReadError, read_nifti  # noqa: PLC0415

    root = Path(root)
    manifest_path = root / "dataset.json"
    if not manifest_path.is_file():
        raise DataSetError(
            f"{manifest_path}: not found. A Decathlon task folder holds dataset.json, imagesTr/ and labelsTr/."
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        entries = manifest["training"]
        labels = {int(k): str(v) for k, v in manifest["labels"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise DataSetError(
            f"{manifest_path}: not a valid Decathlon dataset.json ({type(err).__name__}: {err}); it needs "
            "'labels' and 'training' entries."
        ) from None
    if not isinstance(entries, list):
        raise DataSetError(f"{manifest_path}: 'training' must be a list of {{'image': ..., 'label': ...}} entries.")
    if not entries:
        raise DataSetError(f"{manifest_path}: the 'training' list is empty.")
    boundary = root.resolve()
    cases = []
    for entry in entries:
        try:
            image_path = (root / entry["image"]).resolve()
            label_path = (root / entry["label"]).resolve()
        except (KeyError, TypeError):
            raise DataSetError(f"{manifest_path}: training entry {entry!r} lacks 'image' or 'label'.") from None
        for key, path in (("image", image_path), ("label", label_path)):
            if boundary not in path.parents:
                raise DataSetError(
                    f"{manifest_path}: training entry points outside the task folder ({entry[key]!r}). "
                    "Keep every file under the folder that holds dataset.json."
                )
        for path in (image_path, label_path):
            if not path.is_file():
                raise DataSetError(
                    f"{path}: listed in dataset.json but missing. Restore the file or remove its entry."
                )
        try:
            image = read_nifti(image_path)
            label_image = read_nifti(label_path)
        except ImageReadError as err:
            raise DataSetError(str(err)) from None
        mask = _squeeze_channel(mask_to_labels(label_image.pixels, label_path, colour=False), image)
        unknown = sorted(set(np.unique(mask).tolist()) - set(labels))
        if unknown:
            raise DataSetError(
                f"{label_path}: labels {unknown} are not declared in dataset.json's labels {labels}. "
                "Fix the label map or the 'labels' entry."
            )
        _check_mask_geometry(image, mask, label_image, label_path)
        name = Path(entry["image"]).name.split(".")[0]
        cases.append(Case(name, image, mask, label_path))
    manifest["labels"] = labels
    return cases, manifest


def split_cases(names, val_fraction=0.2, test_fraction=0.0, seed=0):
    """Split case names into train/val/test, by case (never by slice).

    Returns
    -------
    dict of str to list of str
        ``{"train": [...], "val": [...], "test": [...]}``; val and test get at least one
        case each when their fraction is positive.
    """
    names = sorted(set(names))
    for label, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= value < 1:
            raise ValueError(f"{label} must be in [0, 1). Received: {label}={value}")
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    n_val = max(1, round(val_fraction * len(names))) if val_fraction > 0 else 0
    n_test = max(1, round(test_fraction * len(names))) if test_fraction > 0 else 0
    if n_val + n_test >= len(names):
        raise ValueError(
            f"{len(names)} cases cannot give {n_val} validation and {n_test} test cases and still leave "
            "training cases. Add cases or lower the fractions."
        )
    return {"val": order[:n_val], "test": order[n_val : n_val + n_test], "train": order[n_val + n_test :]}


def volume_slices(case, axis=2):
    """The 2D slices of a 3D case along ``axis``: (images (Z, H, W, C), masks (Z, H, W)).

    4D images (multi-modal Decathlon tasks) keep their last axis as channels.
    """
    pixels = np.asarray(case.image.pixels, dtype=np.float32)
    if pixels.ndim == 3:
        pixels = pixels[..., None]
    if pixels.ndim != 4:
        raise DataSetError(f"{case.image.path}: expected a 3D volume (or 4D multi-modal); got shape {pixels.shape}.")
    images = np.moveaxis(pixels, axis, 0)
    masks = np.moveaxis(case.mask, axis, 0)
    return images, masks


# ------------------------------------------------------------------------ downloads

#: Decathlon tasks: archive address (MONAI's mirror) and published MD5 checksum.
MSD_TASKS = {
    "Task01_BrainTumour": "240a19d752f0d9e9101544901065d872",
    "Task02_Heart": "06ee59366e1e5124267b774dbd654057",
    "Task03_Liver": "a90ec6c4aa7f6a3d087205e23d4e6397",
    "Task04_Hippocampus": "9d24dba78a72977dbd1d2e110310f31b",
    "Task05_Prostate": "35138f08b1efaef89d7424d2bcc928db",
    "Task06_Lung": "8afd997733c7fc0432f71255ba4e52dc",
    "Task07_Pancreas": "4f7080cfca169fa8066d17ce6eb061e4",
    "Task08_HepaticVessel": "641d79e80ec66453921d997fbf12a29c",
    "Task09_Spleen": "410d4a301da4e5b2f6f86ec3ddba524e",
    "Task10_Colon": "bad7a188931dc2f6acf72b08eb6202d0",
}
MSD_BASE_URL = "https://msd-for-monai.s3-us-west-2.amazonaws.com/"


def data_home(cache_dir=None):
    """Where downloads go: ``cache_dir``, else ``$MEDSEG_DATA``, else the user cache folder."""
    import os  # noqa: PLC0415

    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get("MEDSEG_DATA"):
        return Path(os.environ["MEDSEG_DATA"]).expanduser()
    import pooch  # noqa: PLC0415

    return Path(pooch.os_cache("medseg-course"))


def download_msd(task, cache_dir=None, base_url=MSD_BASE_URL, md5=None, progress=True):
    """Download and unpack a Decathlon task, verified against its published checksum.

    The archive is fetched with pooch into ``data_home(cache_dir)``, checked against the
    MD5 in ``MSD_TASKS`` (a mismatch deletes the file and raises), and unpacked next to it
    by ``safe_extract``, which refuses absolute paths, ``..`` and links out of the folder.
    A task already unpacked is reused without any network access.

    Parameters
    ----------
    task : str
        A key of ``MSD_TASKS``, e.g. ``"Task04_Hippocampus"`` (27 MB) or ``"Task09_Spleen"``
        (1.5 GB).
    cache_dir : str or Path, optional
    base_url : str
        Where ``<task>.tar`` is served (tests point this at a local server).
    md5 : str, optional
        Override the expected checksum (for mirrors of other archives).
    progress : bool
        Show a progress bar.

    Returns
    -------
    Path
        The unpacked task folder, ready for ``load_msd``.
    """
    import pooch  # noqa: PLC0415

    if task not in MSD_TASKS and md5 is None:
        raise ValueError(f"Unknown Decathlon task {task!r}. Choose one of {sorted(MSD_TASKS)}.")
    home = data_home(cache_dir)
    target = home / task
    if (target / "dataset.json").is_file():
        return target
    home.mkdir(parents=True, exist_ok=True)
    expected = md5 or MSD_TASKS[task]
    try:
        archive = pooch.retrieve(
            url=base_url.rstrip("/") + f"/{task}.tar",
            known_hash=f"md5:{expected}",
            fname=f"{task}.tar",
            path=home,
            progressbar=progress,
        )
    except ValueError as err:  # pooch: hash mismatch (it deletes the download)
        raise DataSetError(f"{task}.tar: checksum mismatch, download deleted ({err}). Try again later.") from None
    import shutil  # noqa: PLC0415

    # unpack beside the cache, then move into place: an interrupted unpack leaves no half task
    staging = home / f".{task}.unpacking"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        safe_extract(archive, staging)
        if (staging / task).is_dir():
            if target.exists():
                raise DataSetError(f"{target}: exists without dataset.json; move it away and run again.")
            os.replace(staging / task, target)
    except DataSetError:  # a ValueError too, but already names the problem
        raise
    except (OSError, ValueError, EOFError) as err:
        raise DataSetError(f"{archive}: cannot unpack ({type(err).__name__}: {err}); delete it and download again.") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not (target / "dataset.json").is_file():
        raise DataSetError(f"{archive}: the archive did not contain {task}/dataset.json.")
    return target


def _unsafe_reason(name, link_target=None, hard=False):
    """Why an archive member may not be extracted, or None.

    A symbolic link's target is resolved from the member's folder, a hard link's from the
    archive's root; either must stay inside the folder being unpacked into.
    """
    import posixpath  # noqa: PLC0415

    def escapes(path):
        path = path.replace("\\", "/")
        if path.startswith("/") or (len(path) > 1 and path[1] == ":"):
            return "an absolute path"
        return "a '..' component" if ".." in path.split("/") else None

    reason = escapes(name)
    if reason or link_target is None:
        return reason
    base = "" if hard else posixpath.dirname(name.replace("\\", "/"))
    resolved = posixpath.normpath(posixpath.join(base, link_target.replace("\\", "/")))
    if escapes(link_target) == "an absolute path" or resolved == ".." or resolved.startswith("../"):
        return f"a link to {link_target!r}, outside the folder"
    return None


def safe_extract(archive, destination):
    """Unpack a .tar (.tar.gz, .tgz, .tar.bz2) or .zip archive, refusing anything unsafe.

    Every member is checked before anything is written: absolute paths, ``..`` components
    and links (symbolic or hard) that point outside ``destination`` stop the extraction, so
    a crafted archive cannot write outside the folder or plant a link to elsewhere. Links in
    zip archives are refused outright (``zipfile`` would write them as plain files holding
    the target's path). Tar members are also extracted with Python's ``"data"`` filter (no
    device files, no set-uid bits). Existing files are never replaced: a member that would
    overwrite one stops the extraction.

    Parameters
    ----------
    archive : str or Path
    destination : str or Path
        Created if missing.

    Returns
    -------
    list of Path
        The extracted files and folders.

    Raises
    ------
    DataSetError
        Naming the archive and the first unsafe member.
    """
    import stat  # noqa: PLC0415
    import tarfile  # noqa: PLC0415
    import zipfile  # noqa: PLC0415

    archive, destination = Path(archive), Path(destination)
    destination.mkdir(parents=True, exist_ok=True)

    def check(name, link_target=None, hard=False):
        reason = _unsafe_reason(name, link_target, hard)
        if reason:
            raise DataSetError(f"{archive}: refusing unsafe archive member {name!r} ({reason}); nothing was extracted.")
        if (destination / name).exists() and not (destination / name).is_dir():
            raise DataSetError(f"{destination / name}: already exists; the archive would replace it. Move it away first.")

    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as handle:
            members = handle.infolist()
            for member in members:
                is_link = stat.S_ISLNK(member.external_attr >> 16)
                check(member.filename, handle.read(member).decode("utf-8", "replace") if is_link else None)
                if is_link:
                    raise DataSetError(f"{archive}: refusing link member {member.filename!r} in a zip archive; nothing was extracted.")
            handle.extractall(destination, members=members)
            return [destination / m.filename for m in members]
    try:
        handle = tarfile.open(archive)
    except tarfile.TarError as err:
        raise DataSetError(f"{archive}: not a tar or zip archive ({err}); delete it and download again.") from None
    with handle:
        members = handle.getmembers()
        for member in members:
            check(member.name, member.linkname if (member.issym() or member.islnk()) else None, hard=member.islnk())
        handle.extractall(destination, members=members, filter="data")
        return [destination / m.name for m in members]
