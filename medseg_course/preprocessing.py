"""Preprocessing: denoise, enhance, normalise, resize.

Pure array functions with explicit parameters. Each takes one image, ``(H, W)`` or
``(H, W, C)`` (channels processed independently), and returns float32 of the same shape
unless it says otherwise. ``apply_to_batch`` maps any of them over ``(N, H, W, C)``.

Intensity conventions: filters work on any float scale; the 8-bit based methods
(bilateral, CLAHE, histogram equalisation) rescale internally and return values in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from medseg_course.utils import check_array, check_positive, check_probability, import_cv2

__all__ = [
    "normalise_percentiles",
    "normalise_window",
    "normalise_for",
    "denoise_gaussian",
    "denoise_median",
    "denoise_bilateral",
    "denoise_nlm",
    "estimate_noise_sigma",
    "equalize_histogram",
    "clahe",
    "normalize_minmax",
    "normalize_zscore",
    "window_intensity",
    "clip_percentiles",
    "resize_image",
    "resize_mask",
    "FitInfo",
    "fit_to_shape",
    "restore_shape",
    "article_preprocess",
    "apply_to_batch",
]


def _image(image, name="image"):
    return check_array(image, name, ndim=(2, 3), dtype_kind="biuf").astype(np.float32)


def _per_channel(fn, image):
    """Apply a 2D function to each channel of an (H, W) or (H, W, C) float32 image."""
    if image.ndim == 2:
        return fn(image).astype(np.float32)
    return np.stack([fn(image[..., c]) for c in range(image.shape[-1])], axis=-1).astype(
        np.float32
    )


def _to_unit(plane):
    """Min-max scale a 2D plane to [0, 1] (constant planes become 0)."""
    low, high = float(plane.min()), float(plane.max())
    return (plane - low) / (high - low) if high > low else np.zeros_like(plane)


# --------------------------------------------------------------------------- denoise


def denoise_gaussian(image, sigma=1.0):
    """Gaussian smoothing.

    Parameters
    ----------
    image : array, shape (H, W) or (H, W, C)
    sigma : float
        Standard deviation of the kernel in pixels (> 0).

    Returns
    -------
    ndarray, float32, same shape
    """
    image = _image(image)
    check_positive(sigma, "sigma")
    return _per_channel(lambda p: ndimage.gaussian_filter(p, sigma), image)


def denoise_median(image, size=3):
    """Median filter: removes salt-and-pepper noise, keeps edges better than Gaussian.

    Parameters
    ----------
    image : array, shape (H, W) or (H, W, C)
    size : int
        Side of the square window in pixels (odd, >= 3).

    Returns
    -------
    ndarray, float32, same shape
    """
    image = _image(image)
    check_positive(size, "size", integer=True)
    if size < 3 or size % 2 == 0:
        raise ValueError(f"size must be an odd int >= 3. Received: size={size}")
    return _per_channel(lambda p: ndimage.median_filter(p, size=size), image)


def denoise_bilateral(image, sigma_color=0.1, sigma_spatial=3.0):
    """Bilateral filter (OpenCV): smooths within regions, not across strong edges.

    Parameters
    ----------
    image : array, shape (H, W) or (H, W, C)
        Rescaled to [0, 1] per channel first.
    sigma_color : float
        Intensity difference (on the [0, 1] scale) over which pixels stop being averaged.
    sigma_spatial : float
        Spatial standard deviation in pixels.

    Returns
    -------
    ndarray, float32 in [0, 1], same shape
    """
    cv2 = import_cv2()
    image = _image(image)
    check_positive(sigma_color, "sigma_color")
    check_positive(sigma_spatial, "sigma_spatial")
    diameter = int(2 * round(2 * sigma_spatial) + 1)
    return _per_channel(
        lambda p: cv2.bilateralFilter(_to_unit(p).astype(np.float32), diameter, sigma_color, sigma_spatial),
        image,
    )


def estimate_noise_sigma(image):
    """Standard deviation of additive Gaussian noise, by Immerkaer's method (1996).

    Convolves with a kernel that cancels smooth image content (the difference of two
    Laplacians) and averages the absolute response:
    ``sigma = sqrt(pi / 2) / (6 (H - 2) (W - 2)) * sum |I * N|``.

    Parameters
    ----------
    image : array, shape (H, W), H, W >= 3

    Returns
    -------
    float
        Estimated noise standard deviation, in the image's units.
    """
    image = check_array(image, "image", ndim=2, dtype_kind="biuf").astype(np.float64)
    if min(image.shape) < 3:
        raise ValueError(f"image must be at least 3x3. Received: image.shape={image.shape}")
    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float64)
    response = ndimage.convolve(image, kernel)[1:-1, 1:-1]
    height, width = image.shape
    return float(np.sqrt(np.pi / 2) * np.abs(response).sum() / (6 * (height - 2) * (width - 2)))


def denoise_nlm(image, h=None, patch_size=5, patch_distance=6):
    """Non-local means (scikit-image): averages pixels whose neighbourhoods look alike.

    Parameters
    ----------
    image : array, shape (H, W) or (H, W, C)
    h : float, optional
        Filter strength; by default 0.8 x the noise standard deviation estimated from the
        image (``estimate_noise_sigma``).
    patch_size : int
        Side of the compared patches in pixels.
    patch_distance : int
        Search radius in pixels.

    Returns
    -------
    ndarray, float32, same shape
    """
    from skimage.restoration import denoise_nl_means  # noqa: PLC0415

    image = _image(image)
    check_positive(patch_size, "patch_size", integer=True)
    check_positive(patch_distance, "patch_distance", integer=True)
    if h is not None:
        check_positive(h, "h")

    def one(plane):
        sigma = estimate_noise_sigma(plane)
        strength = 0.8 * sigma if h is None else h
        if strength == 0:
            return plane
        return denoise_nl_means(
            plane, h=strength, sigma=sigma, patch_size=patch_size,
            patch_distance=patch_distance, fast_mode=True,
        )

    return _per_channel(one, image)


# --------------------------------------------------------------------------- enhance


def equalize_histogram(image, num_bins=256):
    """Global histogram equalisation (scikit-image); output in [0, 1].

    Parameters
    ----------
    image : array, shape (H, W) or (H, W, C)
    num_bins : int
        Histogram bins.

    Returns
    -------
    ndarray, float32 in [0, 1], same shape
    """
    from skimage import exposure  # noqa: PLC0415

    image = _image(image)
    check_positive(num_bins, "num_bins", integer=True)
    return _per_channel(lambda p: exposure.equalize_hist(p, nbins=num_bins), image)


def clahe(image, clip_limit=0.01, tile_size=8):
    """Contrast-limited adaptive histogram equalisation (scikit-image); output in [0, 1].

    Parameters
    ----------
    image : array, shape (H, W) or (H, W, C)
        Rescaled to [0, 1] per channel first.
    clip_limit : float
        Contrast limit in (0, 1]; higher gives more contrast and more noise.
    tile_size : int
        Side of the contextual regions in pixels.

    Returns
    -------
    ndarray, float32 in [0, 1], same shape
    """
    from skimage import exposure  # noqa: PLC0415

    image = _image(image)
    check_probability(clip_limit, "clip_limit")
    check_positive(tile_size, "tile_size", integer=True)
    return _per_channel(
        lambda p: exposure.equalize_adapthist(_to_unit(p), kernel_size=tile_size, clip_limit=clip_limit),
        image,
    )


# ------------------------------------------------------------------------- normalise


def normalize_minmax(image):
    """Rescale to [0, 1] over the whole image; a constant image becomes all zeros.

    Parameters
    ----------
    image : array, shape (H, W) or (H, W, C)

    Returns
    -------
    ndarray, float32 in [0, 1], same shape
    """
    image = _image(image)
    return _to_unit(image).astype(np.float32)


def normalize_zscore(image, mask=None):
    """Subtract the mean and divide by the standard deviation.

    Parameters
    ----------
    image : array, shape (H, W) or (H, W, C)
    mask : array of bool, shape (H, W), optional
        Compute mean and std inside this region only (e.g. the body or brain), so the
        empty background does not dominate.

    Returns
    -------
    ndarray, float32, same shape; zero mean and unit std inside ``mask``.

    Raises
    ------
    ValueError
        If the image (or region) is constant, or the mask is empty or of another size.
    """
    image = _image(image)
    if mask is None:
        values = image
    else:
        mask = check_array(mask, "mask", ndim=2, dtype_kind="biuf").astype(bool)
        if mask.shape != image.shape[:2]:
            raise ValueError(
                f"mask must cover the image plane. Received: mask.shape={mask.shape}, "
                f"image.shape={image.shape}"
            )
        if not mask.any():
            raise ValueError("mask is empty; z-score statistics need at least one pixel.")
        values = image[mask]
    std = float(values.std())
    # checked on the values, not the std: float32 rounding leaves a constant image a tiny,
    # spurious std that would blow its pixels up to arbitrary values
    if np.ptp(values) == 0 or std == 0:
        raise ValueError(
            "image is constant (std 0) where the statistics are taken; z-score is undefined. "
            "Use normalize_minmax or check the input."
        )
    return ((image - float(values.mean())) / std).astype(np.float32)


def window_intensity(image, level, width):
    """CT window/level: map [level - width/2, level + width/2] to [0, 1], clipping outside.

    Parameters
    ----------
    image : array, shape (H, W) or (H, W, C)
        Usually Hounsfield units.
    level : float
        Window centre (e.g. 40 HU for soft tissue, 400 for bone, -600 for lung).
    width : float
        Window width (> 0; e.g. 400 HU soft tissue, 1500 lung).

    Returns
    -------
    ndarray, float32 in [0, 1], same shape
    """
    image = _image(image)
    check_positive(width, "width")
    if not np.isfinite(level):
        raise ValueError(f"level must be a finite number. Received: level={level!r}")
    low = level - width / 2
    return np.clip((image - low) / width, 0, 1).astype(np.float32)


def clip_percentiles(image, lower=0.5, upper=99.5):
    """Clip intensities to the [lower, upper] percentiles, then rescale to [0, 1].

    Robust to a few extreme pixels (metal, hot spots) that would squash min-max scaling.

    Parameters
    ----------
    image : array, shape (H, W) or (H, W, C)
    lower, upper : float
        Percentiles with ``0 <= lower < upper <= 100``.

    Returns
    -------
    ndarray, float32 in [0, 1], same shape
    """
    image = _image(image)
    if not (0 <= lower < upper <= 100):
        raise ValueError(
            f"Percentiles must satisfy 0 <= lower < upper <= 100. Received: "
            f"lower={lower}, upper={upper}"
        )
    low, high = np.percentile(image, [lower, upper])
    if high <= low:
        return np.zeros_like(image)
    return np.clip((image - low) / (high - low), 0, 1).astype(np.float32)


def normalise_percentiles(pixels):
    """Clip a whole image or volume to its 0.5-99.5 percentiles and rescale to [0, 1].

    The rule ``medseg-course`` applies for training and prediction alike, so a model sees
    inputs on the scale it learned whatever the scanner's units (HU, MR arbitrary units, 8 or
    16 bit). Unlike ``clip_percentiles`` on one slice, the percentiles come from every slice
    of the stack ``(Z, H, W, C)`` together, so slices keep their relative brightness.
    """
    arr = np.asarray(pixels, dtype=np.float32)
    flat = arr.reshape(-1, arr.shape[-2], arr.shape[-1]) if arr.ndim > 3 else arr
    return clip_percentiles(flat).reshape(arr.shape)


def normalise_window(pixels, low, high, mean, std):
    """Clip to a fixed window ``[low, high]`` and standardise with a fixed ``mean`` and ``std``.

    nnU-Net's rule for CT: Hounsfield units mean the same tissue everywhere, so one window
    and one scale, taken from the training set's foreground, serve every scan, and a scan's
    own contrast is not stretched away as per-image percentiles would.
    """
    if not (np.isfinite([low, high, mean, std]).all() and high > low and std > 0):
        raise ValueError(f"a window needs low < high and std > 0. Received: low={low}, high={high}, std={std}")
    arr = np.asarray(pixels, dtype=np.float32)
    return ((np.clip(arr, low, high) - mean) / std).astype(np.float32)


def normalise_for(pixels, scheme=None):
    """Normalise pixels by a run's scheme: ``None`` or ``{"scheme": "percentiles"}``
    (``normalise_percentiles``), or ``{"scheme": "window", "low", "high", "mean", "std"}``
    (``normalise_window``; the planner's choice for CT)."""
    if not scheme or scheme.get("scheme", "percentiles") == "percentiles":
        return normalise_percentiles(pixels)
    if scheme.get("scheme") == "window":
        return normalise_window(pixels, scheme["low"], scheme["high"], scheme["mean"], scheme["std"])
    raise ValueError(f"unknown normalisation scheme {scheme.get('scheme')!r}; expected 'percentiles' or 'window'.")


# ---------------------------------------------------------------------------- resize


def _size(shape, name="shape"):
    try:
        height, width = (int(v) for v in shape)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be (height, width). Received: {name}={shape!r}") from None
    if height < 1 or width < 1:
        raise ValueError(f"{name} must be positive. Received: {name}={shape!r}")
    return height, width


def resize_image(image, shape):
    """Resize an image with linear interpolation (and anti-aliasing when shrinking).

    Parameters
    ----------
    image : array, shape (H, W) or (H, W, C)
    shape : (int, int)
        Output (height, width).

    Returns
    -------
    ndarray, float32, shape ``shape`` (+ channels)
    """
    from skimage.transform import resize  # noqa: PLC0415

    image = _image(image)
    height, width = _size(shape)
    out_shape = (height, width) + image.shape[2:]
    shrinking = height < image.shape[0] or width < image.shape[1]
    return resize(image, out_shape, order=1, anti_aliasing=shrinking, preserve_range=True).astype(
        np.float32
    )


def resize_mask(mask, shape):
    """Resize a mask or label map with nearest-neighbour interpolation: no new labels.

    Linear interpolation would invent fractional labels along every boundary (a 1 next to a
    3 becomes a 2), which is why masks need their own resize.

    Parameters
    ----------
    mask : array, shape (H, W) or (H, W, 1), integer, bool or float labels
    shape : (int, int)
        Output (height, width).

    Returns
    -------
    ndarray, same dtype as ``mask``, shape ``shape`` (+ channel)
    """
    from skimage.transform import resize  # noqa: PLC0415

    mask = check_array(mask, "mask", ndim=(2, 3), dtype_kind="biuf")
    height, width = _size(shape)
    out_shape = (height, width) + mask.shape[2:]
    out = resize(mask.astype(np.float32), out_shape, order=0, anti_aliasing=False, preserve_range=True)
    return out.astype(mask.dtype)


@dataclass(frozen=True)
class FitInfo:
    """How ``fit_to_shape`` changed an image, so ``restore_shape`` can undo it.

    Attributes
    ----------
    original_shape : (int, int)
        (H, W) before fitting.
    resized_shape : (int, int)
        (h, w) after scaling, before padding.
    offset : (int, int)
        Rows and columns of padding above and to the left.
    scale : float
        Output pixels per input pixel; spacing after fitting is spacing / scale.
    """

    original_shape: tuple
    resized_shape: tuple
    offset: tuple
    scale: float


def fit_to_shape(image, shape, is_mask=False):
    """Scale an image to fit inside ``shape`` keeping its aspect ratio, then zero-pad it.

    Any image or mask can then feed a model of fixed input size; ``restore_shape`` maps a
    prediction back to the original grid (and so the original spacing).

    Parameters
    ----------
    image : array, shape (H, W) or (H, W, C)
    shape : (int, int)
        Model input (height, width).
    is_mask : bool
        Nearest-neighbour resampling (labels stay labels) instead of linear.

    Returns
    -------
    (ndarray, FitInfo)
        The fitted array, shape ``shape`` (+ channels), and what was done.

    Raises
    ------
    ValueError
        For an image shrunk more than 100-fold whose short side would end below 2 pixels (a
        32 x 1,000,000 strip, say), which would take minutes to resample into a line.
    """
    arr = check_array(image, "image", ndim=(2, 3), dtype_kind="biuf")
    height, width = _size(shape)
    scale = min(height / arr.shape[0], width / arr.shape[1])
    if scale < 0.01 and min(arr.shape[:2]) * scale < 2:  # resampling it would take minutes, into a line
        raise ValueError(
            f"an image of {arr.shape[0]}x{arr.shape[1]} pixels is too elongated to fit {height}x{width}: its short "
            "side would shrink below 2 pixels. Crop it to the region of interest, or use patches (sliding window)."
        )
    resized_shape = (max(1, round(arr.shape[0] * scale)), max(1, round(arr.shape[1] * scale)))
    resized = resize_mask(arr, resized_shape) if is_mask else resize_image(arr, resized_shape)
    top, left = (height - resized_shape[0]) // 2, (width - resized_shape[1]) // 2
    pad = [(top, height - resized_shape[0] - top), (left, width - resized_shape[1] - left)]
    pad += [(0, 0)] * (resized.ndim - 2)
    fitted = np.pad(resized, pad)
    return fitted, FitInfo(tuple(arr.shape[:2]), resized_shape, (top, left), float(scale))


def restore_shape(array, info, is_mask=False):
    """Undo ``fit_to_shape``: crop the padding and resample to the original (H, W).

    Parameters
    ----------
    array : array, shape ``shape`` (+ channels): a prediction on the fitted grid
    info : FitInfo
    is_mask : bool
        Nearest-neighbour for labels; linear for probabilities.

    Returns
    -------
    ndarray, shape ``info.original_shape`` (+ channels)
    """
    arr = check_array(array, "array", ndim=(2, 3), dtype_kind="biuf")
    if not isinstance(info, FitInfo):
        raise ValueError(f"info must be the FitInfo returned by fit_to_shape. Received: {type(info).__name__}")
    top, left = info.offset
    cropped = arr[top : top + info.resized_shape[0], left : left + info.resized_shape[1]]
    if is_mask:
        return resize_mask(cropped, info.original_shape)
    return resize_image(cropped, info.original_shape)


# ------------------------------------------------------------------------- pipelines


def article_preprocess(image):
    """The article's steps: divide an 8-bit greyscale image by 255, add batch and channel axes.

    Parameters
    ----------
    image : array, shape (H, W), uint8 (as ``cv2.imread(path, cv2.IMREAD_GRAYSCALE)`` gives)

    Returns
    -------
    ndarray, shape (1, H, W, 1), float32 in [0, 1]

    Raises
    ------
    ValueError
        If the image is not 2D uint8 (a colour image or a 16-bit DICOM would be scaled
        wrongly by 255).
    """
    image = check_array(image, "image", ndim=2)
    if image.dtype != np.uint8:
        raise ValueError(
            "article_preprocess expects an 8-bit greyscale image (uint8, as "
            f"cv2.IMREAD_GRAYSCALE gives). Received: image.dtype={image.dtype}. For 16-bit "
            "or HU data use window_intensity or normalize_minmax instead."
        )
    return (image.astype(np.float32) / 255.0)[None, :, :, None]


def apply_to_batch(fn, images, **params):
    """Apply a per-image function to a batch ``(N, H, W, C)``.

    Parameters
    ----------
    fn : callable
        One of this module's functions, e.g. ``denoise_median``.
    images : array, shape (N, H, W, C)
    **params
        Passed to ``fn``.

    Returns
    -------
    ndarray, float32, shape (N, H', W', C)
    """
    images = check_array(images, "images", ndim=4, dtype_kind="biuf")
    return np.stack([fn(image, **params) for image in images]).astype(np.float32)
