"""Data the course trains on: synthetic phantoms with exact masks, and real brain MRI.

Two sources, both available offline:

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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from medseg_course.utils import check_positive

__all__ = [
    "PHANTOM_CLASSES",
    "MNI152_TARGETS",
    "PhantomSpec",
    "make_phantoms",
    "SliceSet",
    "load_mni152_slices",
    "slab_split",
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

