"""Post-processing: from probabilities to clean masks.

Each function takes one 2D mask ``(H, W)`` (a trailing channel axis of 1 is accepted and
kept) or, where it says so, a batch or a 3D label map; it returns a new array and never
changes its input.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from medseg_course.utils import check_array, check_binary_mask, check_positive, check_probability

__all__ = [
    "binarize",
    "argmax_labels",
    "remove_small_components",
    "fill_holes",
    "keep_largest_component",
    "keep_largest_structure",
    "smooth_edges",
    "postprocess",
]


def binarize(probabilities, threshold=0.5):
    """Foreground where probability >= threshold.

    Parameters
    ----------
    probabilities : array, any shape, float in [0, 1]
    threshold : float in [0, 1]

    Returns
    -------
    ndarray of uint8 in {0, 1}, same shape
    """
    probabilities = check_array(probabilities, "probabilities", dtype_kind="biuf")
    check_probability(threshold, "threshold")
    return (probabilities >= threshold).astype(np.uint8)


def argmax_labels(probabilities):
    """Labels of the most probable class: ``(..., K)`` probabilities to ``(...)`` uint8 labels."""
    probabilities = check_array(probabilities, "probabilities", ndim=(3, 4), dtype_kind="f")
    if probabilities.shape[-1] < 2:
        raise ValueError(
            "argmax_labels needs K >= 2 class channels; for a single sigmoid channel use "
            f"binarize. Received: probabilities.shape={probabilities.shape}"
        )
    return np.argmax(probabilities, axis=-1).astype(np.uint8)


def _plane(mask):
    """Return (bool 2D plane, function restoring the input's shape and dtype)."""
    arr = check_binary_mask(mask, "mask")
    squeeze = arr.ndim == 3 and arr.shape[-1] == 1
    plane = arr[..., 0] if squeeze else arr
    if plane.ndim != 2:
        raise ValueError(
            "mask must be one 2D mask, (H, W) or (H, W, 1); loop over a batch or use "
            f"postprocess. Received: mask.shape={np.shape(mask)}"
        )
    dtype = np.asarray(mask).dtype

    def restore(result):
        result = result[..., None] if squeeze else result
        return result.astype(dtype)

    return plane, restore


def remove_small_components(mask, min_size=20, connectivity=2):
    """Delete connected foreground components smaller than ``min_size`` pixels.

    Parameters
    ----------
    mask : array, shape (H, W) or (H, W, 1), values in {0, 1}
    min_size : int
        Components with fewer pixels are removed.
    connectivity : {1, 2}
        1: pixels touch by edges (4-connected); 2: also by corners (8-connected).

    Returns
    -------
    ndarray, same shape and dtype
    """
    plane, restore = _plane(mask)
    check_positive(min_size, "min_size", integer=True, allow_zero=True)
    labels, count = ndimage.label(plane, _structure(connectivity))
    if count == 0:
        return restore(plane)
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_size
    keep[0] = False
    return restore(keep[labels])


def _structure(connectivity):
    if connectivity not in (1, 2):
        raise ValueError(f"connectivity must be 1 or 2. Received: connectivity={connectivity!r}")
    return ndimage.generate_binary_structure(2, connectivity)


def fill_holes(mask):
    """Fill background regions completely enclosed by foreground.

    Parameters
    ----------
    mask : array, shape (H, W) or (H, W, 1), values in {0, 1}

    Returns
    -------
    ndarray, same shape and dtype
    """
    plane, restore = _plane(mask)
    return restore(ndimage.binary_fill_holes(plane))


def keep_largest_component(mask, connectivity=2):
    """Keep only the largest connected component (for a structure known to be in one piece).

    Parameters
    ----------
    mask : array, shape (H, W) or (H, W, 1), values in {0, 1}
    connectivity : {1, 2}

    Returns
    -------
    ndarray, same shape and dtype; all zeros if the mask is empty
    """
    plane, restore = _plane(mask)
    labels, count = ndimage.label(plane, _structure(connectivity))
    if count <= 1:
        return restore(plane)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return restore(labels == int(np.argmax(sizes)))


def smooth_edges(mask, radius=1):
    """Smooth a jagged boundary: morphological opening then closing with a disc.

    Opening removes spurs and one-pixel bridges thinner than the disc; closing fills notches
    and small gaps. Structures thinner than the disc disappear, so keep the radius small.

    Parameters
    ----------
    mask : array, shape (H, W) or (H, W, 1), values in {0, 1}
    radius : int
        Disc radius in pixels (0 returns the mask unchanged).

    Returns
    -------
    ndarray, same shape and dtype
    """
    plane, restore = _plane(mask)
    check_positive(radius, "radius", integer=True, allow_zero=True)
    if radius == 0:
        return restore(plane)
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    disc = xx**2 + yy**2 <= radius**2
    padded = np.pad(plane, radius + 1)  # so closing does not stick to the border
    opened = ndimage.binary_opening(padded, disc)
    closed = ndimage.binary_closing(opened, disc)
    return restore(closed[radius + 1 : -radius - 1, radius + 1 : -radius - 1])


def postprocess(probabilities, threshold=0.5, min_size=0, fill=False, largest=False, smooth_radius=0):
    """Threshold a batch of probabilities and apply the chosen clean-up steps to each mask.

    Steps run in this order: threshold, remove small components, fill holes, keep the
    largest component, smooth edges.

    Parameters
    ----------
    probabilities : array, shape (N, H, W, 1) or (H, W, 1) / (H, W), float in [0, 1]
    threshold : float
    min_size : int
        Remove components smaller than this (0 keeps all).
    fill : bool
        Fill enclosed holes.
    largest : bool
        Keep only the largest component.
    smooth_radius : int
        Opening/closing disc radius (0 skips).

    Returns
    -------
    ndarray of uint8 in {0, 1}, same shape as ``probabilities``
    """
    probabilities = check_array(probabilities, "probabilities", ndim=(2, 3, 4), dtype_kind="biuf")
    single = probabilities.ndim < 4
    batch = probabilities[None] if single else probabilities
    if batch.ndim == 3:
        batch = batch[..., None]
    if batch.shape[-1] != 1:
        raise ValueError(
            "postprocess handles one foreground channel (N, H, W, 1); for multi-class use "
            f"argmax_labels per class. Received: probabilities.shape={probabilities.shape}"
        )
    out = np.empty(batch.shape, np.uint8)
    for i, probs in enumerate(batch):
        mask = binarize(probs[..., 0], threshold)
        if min_size:
            mask = remove_small_components(mask, min_size)
        if fill:
            mask = fill_holes(mask)
        if largest:
            mask = keep_largest_component(mask)
        if smooth_radius:
            mask = smooth_edges(mask, smooth_radius)
        out[i, ..., 0] = mask
    return out.reshape(probabilities.shape)


def keep_largest_structure(labels, connectivity=1):
    """Keep the largest connected piece of a label map's foreground, all labels together.

    For a structure known to be in one piece whose parts carry different labels (the
    hippocampus head and body touch), the foreground (every label > 0) is split into
    connected components in 2D or 3D and everything outside the largest is set to 0;
    inside it, labels are kept.

    Parameters
    ----------
    labels : array of int, shape (H, W) or (Z, H, W)
    connectivity : int
        1: neighbours share a face (6-connected in 3D); up to ``labels.ndim``: also edges and
        corners.

    Returns
    -------
    ndarray, same shape and dtype
    """
    labels = check_array(labels, "labels", ndim=(2, 3), dtype_kind="biu")
    if not 1 <= connectivity <= labels.ndim:
        raise ValueError(f"connectivity must be 1..{labels.ndim}. Received: connectivity={connectivity!r}")
    components, count = ndimage.label(labels > 0, ndimage.generate_binary_structure(labels.ndim, connectivity))
    if count <= 1:
        return labels.copy()
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    return np.where(components == int(np.argmax(sizes)), labels, 0).astype(labels.dtype)
