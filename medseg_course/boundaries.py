"""Where segmentation errors lie: distances to a mask's boundary and errors near it.

Most of a good model's errors sit at the boundary of a structure (chapters 0, 8, 13 and 14).
For small structures that alone says little, since most of their pixels lie near an edge
anyway; ``boundary_errors`` therefore returns the share of errors near the boundary together
with the same share among all the pixels of the structures, the reference to compare it with.
NumPy and SciPy only.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["boundary_distance", "boundary_errors", "edge_sharpness"]


def boundary_distance(truth):
    """Per-pixel distance (px) to the boundary of ``truth`` ((B, H, W) bool): inside a
    structure the distance to the nearest background pixel, outside to the nearest
    structure pixel; 1 for the pixels next to the boundary on either side."""
    return np.stack([np.where(t, ndimage.distance_transform_edt(t), ndimage.distance_transform_edt(~t))
                     for t in truth])


def boundary_errors(truth, pred, distance=None, within=2):
    """Share (%) of wrong pixels within ``within`` px of the true boundary, and its reference.

    The reference is the same share among all pixels that truth or prediction calls
    foreground: for small structures most of those lie near a boundary anyway (a disc of
    radius 3 has nearly all its pixels within 2 px of its edge), so "most errors are at the
    boundary" means something only if the errors are nearer the boundary than that.

    Returns
    -------
    (float, float)
        ``(errors_near, reference_near)`` in per cent.
    """
    distance = boundary_distance(truth) if distance is None else distance
    near = distance <= within
    wrong = pred != truth
    region = pred | truth
    return (float(100 * (wrong & near).sum() / max(wrong.sum(), 1)),
            float(100 * (region & near).sum() / max(region.sum(), 1)))


def edge_sharpness(probabilities, truth):
    """Mean |gradient| of a probability map ((B, H, W, 1)) on the true boundary of
    ``truth`` (same shape): a sharp edge jumps from 0 to 1 across it."""
    gy, gx = np.gradient(probabilities[..., 0], axis=(1, 2))
    inside = truth[..., 0].astype(bool)
    boundary = inside & ~ndimage.binary_erosion(inside, structure=np.ones((1, 3, 3)))
    return float(np.hypot(gy, gx)[boundary].mean())
