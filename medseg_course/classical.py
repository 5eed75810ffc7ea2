"""Classical segmentation: thresholding, region growing, edges, level sets.

The methods the source article lists as the state of the art before CNNs, with the same
array conventions as the rest of the package: a 2D greyscale image ``(H, W)`` (or
``(H, W, 1)``) in, a uint8 mask ``(H, W)`` in {0, 1} out. None of them learns; each
encodes one assumption about the image (the object is brighter; it is homogeneous; it is
bounded by strong edges; its regions have different mean intensities), and each fails where
that assumption does, which chapter 2 measures.

Two baselines built from them serve the later chapters: ``classical_brain``, a brain
extraction with no learning (chapters 10 and 14), and ``random_forest``, the classical
*learned* pipeline, a random forest on hand-designed features per pixel (chapter 14).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from medseg_course.utils import check_array, check_positive

__all__ = [
    "threshold",
    "threshold_otsu",
    "region_growing",
    "edge_segmentation",
    "chan_vese",
    "morphological_chan_vese",
    "geodesic_active_contour",
    "classical_brain",
    "pixel_features",
    "random_forest",
]


def _grey(image):
    return _plane(image).astype(np.float64)


def _plane(image):
    """The (H, W) plane of a greyscale image, in its own dtype."""
    image = check_array(image, "image", ndim=(2, 3), dtype_kind="biuf")
    if image.ndim == 3:
        if image.shape[-1] != 1:
            raise ValueError(
                "Classical methods here take a greyscale image (H, W) or (H, W, 1). "
                f"Received: image.shape={image.shape}; convert colour to grey first."
            )
        image = image[..., 0]
    return image


def _unit(image):
    low, high = image.min(), image.max()
    return (image - low) / (high - low) if high > low else np.zeros_like(image)


def threshold(image, low, high=np.inf):
    """Foreground where ``low <= image <= high`` (e.g. a HU range).

    Returns
    -------
    ndarray, shape (H, W), uint8 in {0, 1}
    """
    image = _grey(image)
    if not low <= high:
        raise ValueError(f"low must not exceed high. Received: low={low}, high={high}")
    return ((image >= low) & (image <= high)).astype(np.uint8)


def threshold_otsu(image, bright_foreground=True):
    """Otsu's threshold: the level that best separates two intensity classes.

    Chooses t maximising the between-class variance of the histogram, so it needs no
    parameter, and fails when the histogram is not bimodal (low contrast, or more than two
    tissues).

    Parameters
    ----------
    image : array, shape (H, W) or (H, W, 1)
    bright_foreground : bool
        Foreground is above (True) or below (False) the threshold.

    Returns
    -------
    ndarray, shape (H, W), uint8 in {0, 1}
    """
    from skimage.filters import threshold_otsu as otsu  # noqa: PLC0415

    image = _grey(image)
    if image.min() == image.max():
        return np.zeros(image.shape, np.uint8)
    level = otsu(image)
    mask = image > level if bright_foreground else image <= level
    return mask.astype(np.uint8)


def region_growing(image, seeds, tolerance):
    """Grow regions from seed points over connected pixels of similar intensity.

    A pixel joins if it is 4-connected to the region and its intensity is within
    ``tolerance`` of its seed's intensity (scikit-image's flood fill).

    Parameters
    ----------
    image : array, shape (H, W) or (H, W, 1)
    seeds : sequence of (row, column)
    tolerance : float
        Largest accepted intensity difference from the seed, in image units.

    Returns
    -------
    ndarray, shape (H, W), uint8 in {0, 1}
    """
    from skimage.segmentation import flood  # noqa: PLC0415

    image = _grey(image)
    check_positive(tolerance, "tolerance", allow_zero=True)
    seeds = [tuple(int(v) for v in seed) for seed in seeds]
    if not seeds:
        raise ValueError("seeds is empty; give at least one (row, column) inside the object.")
    mask = np.zeros(image.shape, bool)
    for seed in seeds:
        if not (0 <= seed[0] < image.shape[0] and 0 <= seed[1] < image.shape[1]):
            raise ValueError(f"seed {seed} lies outside the image of shape {image.shape}.")
        mask |= flood(image, seed, tolerance=tolerance, connectivity=1)
    return mask.astype(np.uint8)


def edge_segmentation(image, sigma=2.0, closing_radius=2, min_size=20):
    """Edges to regions: Canny edges, closed into contours, filled, small pieces dropped.

    Parameters
    ----------
    image : array, shape (H, W) or (H, W, 1)
    sigma : float
        Gaussian smoothing of the Canny detector (higher: fewer, smoother edges).
    closing_radius : int
        Disc radius that bridges gaps in the edge contours.
    min_size : int
        Regions smaller than this (pixels) are dropped.

    Returns
    -------
    ndarray, shape (H, W), uint8 in {0, 1}
    """
    from skimage.feature import canny  # noqa: PLC0415

    image = _unit(_grey(image))
    check_positive(sigma, "sigma")
    check_positive(closing_radius, "closing_radius", integer=True, allow_zero=True)
    edges = canny(image, sigma=sigma)
    if closing_radius:
        yy, xx = np.mgrid[-closing_radius : closing_radius + 1, -closing_radius : closing_radius + 1]
        edges = ndimage.binary_closing(edges, xx**2 + yy**2 <= closing_radius**2)
    filled = ndimage.binary_fill_holes(edges)
    labels, _ = ndimage.label(filled)
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_size
    keep[0] = False
    return keep[labels].astype(np.uint8)


def _bright_side(image, mask):
    """Flip a two-phase result so that the foreground is the brighter phase."""
    if mask.all() or not mask.any():
        return mask.astype(np.uint8)
    inside, outside = image[mask].mean(), image[~mask].mean()
    return (mask if inside >= outside else ~mask).astype(np.uint8)


def chan_vese(image, mu=0.25, max_iterations=200):
    """Chan-Vese level set: two regions, each as close as possible to its mean intensity.

    Minimises ``mu * length(C) + sum_in (I - c1)^2 + sum_out (I - c2)^2`` over the contour
    C (scikit-image). No edges needed, so it copes with blurred boundaries, but it assumes
    two roughly homogeneous regions. The brighter region is returned as foreground.

    Parameters
    ----------
    image : array, shape (H, W) or (H, W, 1); rescaled to [0, 1] internally
    mu : float
        Length penalty: higher gives smoother contours.
    max_iterations : int

    Returns
    -------
    ndarray, shape (H, W), uint8 in {0, 1}
    """
    from skimage.segmentation import chan_vese as cv  # noqa: PLC0415

    image = _unit(_grey(image))
    check_positive(mu, "mu", allow_zero=True)
    check_positive(max_iterations, "max_iterations", integer=True)
    mask = cv(image, mu=mu, max_num_iter=max_iterations)
    return _bright_side(image, np.asarray(mask, bool))


def morphological_chan_vese(image, iterations=100, smoothing=2, init=None):
    """Morphological Chan-Vese (Marquez-Neila et al.): a fast, stable level-set approximation.

    Parameters
    ----------
    image : array, shape (H, W) or (H, W, 1)
    iterations : int
    smoothing : int
        Smoothing steps per iteration.
    init : array (H, W) of {0, 1}, optional
        Initial region; a checkerboard by default.

    Returns
    -------
    ndarray, shape (H, W), uint8 in {0, 1}
    """
    from skimage.segmentation import morphological_chan_vese as mcv  # noqa: PLC0415

    image = _unit(_grey(image))
    check_positive(iterations, "iterations", integer=True)
    init_level_set = "checkerboard" if init is None else np.asarray(init, np.int8)
    mask = mcv(image, iterations, init_level_set=init_level_set, smoothing=smoothing)
    return _bright_side(image, np.asarray(mask, bool))


def geodesic_active_contour(image, init, iterations=200, balloon=-1, smoothing=1):
    """Morphological geodesic active contour: a curve pulled onto strong edges.

    Starts from ``init`` and moves, shrinking (``balloon < 0``) or growing (``> 0``), until
    it settles on edges of the inverse Gaussian gradient map.

    Parameters
    ----------
    image : array, shape (H, W) or (H, W, 1)
    init : array (H, W) of {0, 1}
        Initial region enclosing (to shrink) or inside (to grow) the object.
    iterations : int
    balloon : float
        Constant pressure; negative shrinks the contour.
    smoothing : int

    Returns
    -------
    ndarray, shape (H, W), uint8 in {0, 1}
    """
    from skimage.segmentation import inverse_gaussian_gradient, morphological_geodesic_active_contour  # noqa: PLC0415

    image = _unit(_grey(image))
    init = check_array(init, "init", ndim=2, dtype_kind="biuf")
    if init.shape != image.shape:
        raise ValueError(f"init must have the image's shape {image.shape}. Received: init.shape={init.shape}")
    speed = inverse_gaussian_gradient(image)
    mask = morphological_geodesic_active_contour(
        speed, iterations, init_level_set=init.astype(np.int8), smoothing=smoothing, balloon=balloon
    )
    return np.asarray(mask, np.uint8)


def classical_brain(image):
    """Brain extraction with no learning: Otsu threshold, fill holes, keep the largest component.

    On a T1 slice with the head around the brain (``mc.data.add_simulated_head``) it finds the
    head rather than the brain: the scalp is as bright as white matter and encloses it, which
    is the point chapters 10 and 14 make with it.

    Parameters
    ----------
    image : array, shape (H, W) or (H, W, 1)

    Returns
    -------
    ndarray, shape (H, W), uint8 in {0, 1}
        All zeros for a constant image.

    Raises
    ------
    ValueError
        For an image of another shape or dtype, or with NaN.
    """
    from medseg_course import postprocessing  # noqa: PLC0415

    mask = threshold_otsu(image)
    return postprocessing.keep_largest_component(postprocessing.fill_holes(mask))


def pixel_features(image, sigma_max=16):
    """Hand-designed features per pixel: intensity, edges and texture at Gaussian scales.

    scikit-image's ``multiscale_basic_features`` at scales from 1 to ``sigma_max`` pixels
    (20 features per pixel at ``sigma_max=16``, 16 at 8).

    Parameters
    ----------
    image : array, shape (H, W) or (H, W, 1)
    sigma_max : float
        Largest Gaussian scale in pixels (>= 1): the widest context a pixel's features see.

    Returns
    -------
    ndarray, shape (H * W, F), one row per pixel in row-major order

    Raises
    ------
    ValueError
        For an image of another shape or dtype, or a ``sigma_max`` below 1.
    """
    from skimage.feature import multiscale_basic_features  # noqa: PLC0415

    image = _plane(image)  # in its own dtype: the features of float32 and float64 differ in rounding
    check_positive(sigma_max, "sigma_max")
    if sigma_max < 1:
        raise ValueError(f"sigma_max must be at least 1 (the smallest scale). Received: sigma_max={sigma_max}")
    return multiscale_basic_features(image, sigma_min=1, sigma_max=sigma_max).reshape(
        image.shape[0] * image.shape[1], -1)


def random_forest(images, masks, test_images, sigma_max=16, seed=0, n_jobs=2):
    """Segment ``test_images`` with a random forest trained on the pixels of labelled images.

    Each pixel is one sample, described by ``pixel_features``; 100 trees with at least 2
    samples per leaf, the forest's probability thresholded at 0.5. The seed draws the trees'
    bootstrap samples and feature subsets.

    Parameters
    ----------
    images : array, shape (N, H, W, 1)
        Labelled training images.
    masks : array, shape (N, H, W, 1) or (N, H, W)
        Their binary masks (non-zero is foreground).
    test_images : array, shape (M, H', W', 1)
    sigma_max : float
        Largest feature scale in pixels (``pixel_features``).
    seed : int
    n_jobs : int
        Trees trained in parallel.

    Returns
    -------
    ndarray, shape (M, H', W', 1), bool

    Raises
    ------
    ValueError
        For images and masks that do not match, arrays of another rank, or a bad seed.
    """
    from sklearn.ensemble import RandomForestClassifier  # noqa: PLC0415

    images = check_array(images, "images", ndim=4, dtype_kind="biuf")
    masks = check_array(masks, "masks", ndim=(3, 4), dtype_kind="biuf")
    test_images = check_array(test_images, "test_images", ndim=4, dtype_kind="biuf")
    if masks.shape[:3] != images.shape[:3] or len(images) == 0:
        raise ValueError(
            "masks must match images in number, height and width, and hold at least one image. "
            f"Received: images.shape={images.shape}, masks.shape={masks.shape}"
        )
    check_positive(seed, "seed", integer=True, allow_zero=True)
    check_positive(n_jobs, "n_jobs", integer=True)
    table = np.concatenate([pixel_features(im, sigma_max) for im in images])
    forest = RandomForestClassifier(n_estimators=100, min_samples_leaf=2, n_jobs=n_jobs, random_state=seed)
    forest.fit(table, masks.reshape(-1) > 0)
    return np.stack([forest.predict_proba(pixel_features(im, sigma_max))[:, 1].reshape(im.shape[:2])
                     for im in test_images])[..., None] > 0.5
