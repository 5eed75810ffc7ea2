"""Simulated scanners: the same anatomy as another scanner would show it.

A model trained on one scanner meets others in use. What changes between them is mostly
the picture, not the anatomy: blur (the point-spread function), a smooth multiplicative bias
field (coil inhomogeneity), the overall gain, the intensity curve (contrast between tissues)
and the noise. ``simulate_scanner`` applies these, in that order, to a batch of images with
fixed, stated strengths, so that a test set can be shown "as another scanner would" and a
denoiser or a model can be measured on it against the clean truth (chapters 7, 10 and 13).
The random, per-image versions used while training are ``mc.training.Augmentation``.

NumPy and SciPy only: importing this module starts no TensorFlow.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from medseg_course.utils import check_array, check_positive

__all__ = ["NOISE_KINDS", "add_noise", "bias_ramp", "simulate_scanner"]

#: Noise models of ``add_noise``: additive Gaussian, Rician (the magnitude of complex
#: Gaussian noise, as in magnitude MRI), multiplicative speckle (ultrasound), or none.
NOISE_KINDS = ("gaussian", "rician", "speckle", "none")


def _generator(seed):
    if isinstance(seed, np.random.Generator):
        return seed
    check_positive(seed, "seed", integer=True, allow_zero=True)
    return np.random.default_rng(seed)


def add_noise(images, level, kind="rician", seed=0):
    """Add noise of standard deviation ``level`` to an array of any shape.

    Parameters
    ----------
    images : array, float
    level : float
        Standard deviation on the images' scale (0.05 on a 0-1 scale is 5 %); 0 returns
        ``images`` unchanged.
    kind : {"gaussian", "rician", "speckle", "none"}
        ``"gaussian"`` adds N(0, level); ``"rician"`` returns |images + n1 + i n2| with n1, n2
        drawn from N(0, level) in that order (the noise floor of magnitude MRI: the mean
        rises where the signal is low); ``"speckle"`` multiplies by 1 + N(0, level);
        ``"none"`` returns ``images`` unchanged.
    seed : int or numpy.random.Generator
        A generator is drawn from and advanced, so successive calls draw new noise.

    Returns
    -------
    ndarray
        ``images`` with noise, in float64 for float32 input (NumPy's promotion with the
        float64 draws); cast it if you need another precision.

    Raises
    ------
    ValueError
        For an unknown ``kind``, a negative ``level``, non-float or non-finite images, or a
        bad ``seed``.
    """
    images = check_array(images, "images", dtype_kind="f")
    check_positive(level, "level", allow_zero=True)
    if kind not in NOISE_KINDS:
        raise ValueError(f"kind must be one of {NOISE_KINDS}. Received: kind={kind!r}")
    rng = _generator(seed)
    if kind == "none" or level == 0:
        return images
    if kind == "gaussian":
        return images + rng.normal(0, level, images.shape)
    if kind == "rician":
        real = images + rng.normal(0, level, images.shape)
        imag = rng.normal(0, level, images.shape)
        return np.hypot(real, imag)
    return images * (1 + rng.normal(0, level, images.shape))


def bias_ramp(shape, strength, direction=(0.8, 0.6)):
    """A linear multiplicative bias field across an image: ``1 + strength * ramp``.

    ``ramp = direction[0] * u + direction[1] * v``, where u runs from -1 to 1 across the
    columns (left to right) and v from -1 to 1 across the rows (top to bottom). With the
    default direction the field rises by ``strength`` from the centre to the middle of the
    bottom-right edges and by 1.4 ``strength`` to the corner.

    Parameters
    ----------
    shape : (int, int)
        Height and width.
    strength : float
        Relative amplitude (0.2: about +-20 %); negative flips the ramp.
    direction : (float, float)
        Weights of the column and row ramps.

    Returns
    -------
    ndarray, float64, shape ``shape``

    Raises
    ------
    ValueError
        For a bad shape, a non-finite strength or direction, or a field that is not positive
        everywhere (a multiplicative field must not reach zero).
    """
    if len(shape) != 2:
        raise ValueError(f"shape must be (height, width). Received: shape={shape}")
    for size, name in zip(shape, ("height", "width"), strict=True):
        check_positive(size, name, integer=True)
    if not np.isfinite(strength) or not np.all(np.isfinite(direction)) or len(direction) != 2:
        raise ValueError(
            f"strength must be a finite number and direction two finite weights. "
            f"Received: strength={strength}, direction={direction}"
        )
    rows, cols = np.mgrid[-1 : 1 : shape[0] * 1j, -1 : 1 : shape[1] * 1j]
    field = 1 + strength * (direction[0] * cols + direction[1] * rows)
    if field.min() <= 0:
        raise ValueError(
            "The bias field must stay positive; lower strength or the direction's weights. "
            f"Received: strength={strength}, direction={direction} (field down to {field.min():.3g})"
        )
    return field


def simulate_scanner(images, *, blur=0.0, bias=0.0, bias_direction=(0.8, 0.6), gain=1.0, clip=None, gamma=1.0,
                     noise=0.0, noise_kind="rician", seed=0):
    """``images`` as another scanner might show them: fixed blur, bias, gain, contrast, noise.

    Applied in the order a scanner forms the picture, each step skipped at its neutral value:

    1. ``blur``: a Gaussian of ``blur`` pixels within each image (the point-spread function);
    2. ``bias``: multiplication by ``bias_ramp((H, W), bias, bias_direction)``, the same
       field for every image;
    3. ``gain``: multiplication by ``gain``;
    4. ``clip``: intensities clipped to ``(low, high)``;
    5. ``gamma``: the intensity curve x ** gamma (below 1 brightens dark tissue and lowers
       the contrast between bright tissues);
    6. ``noise``: ``add_noise(..., noise, noise_kind, seed)``.

    The arithmetic is NumPy's (float32 images meet the float64 field and noise in float64);
    the result is cast to float32 once, at the end.

    Parameters
    ----------
    images : array, shape (N, H, W) or (N, H, W, C), float
    blur : float
        Gaussian sigma in pixels; 0 for none.
    bias, bias_direction : float, (float, float)
        Strength and direction of the linear bias ramp (``bias_ramp``); 0 for none.
    gain : float
        Global intensity scale (> 0).
    clip : (float, float) or None
        Range to clip to after bias and gain (before ``gamma``); None keeps every value.
    gamma : float
        Exponent of the intensity curve (> 0); 1 for none. Needs non-negative intensities
        (clip to ``(0, 1)`` first).
    noise : float
        Noise standard deviation on the images' scale; 0 for none.
    noise_kind : {"rician", "gaussian", "speckle", "none"}
    seed : int or numpy.random.Generator
        Seeds the noise (a generator is advanced, so successive calls draw new noise).

    Returns
    -------
    ndarray
        The simulated scan, float32, in the shape of ``images``.

    Raises
    ------
    ValueError
        For images of another rank or not float, a negative ``blur`` or ``noise``, a
        non-positive ``gain`` or ``gamma``, a ``clip`` with low >= high, a bias field that
        is not positive, negative intensities under ``gamma != 1``, or an unknown
        ``noise_kind``.
    """
    x = check_array(images, "images", ndim=(3, 4), dtype_kind="f")
    check_positive(blur, "blur", allow_zero=True)
    check_positive(gain, "gain")
    check_positive(gamma, "gamma")
    check_positive(noise, "noise", allow_zero=True)
    if noise_kind not in NOISE_KINDS:
        raise ValueError(f"noise_kind must be one of {NOISE_KINDS}. Received: noise_kind={noise_kind!r}")
    if clip is not None and (len(clip) != 2 or not clip[0] < clip[1]):
        raise ValueError(f"clip must be None or (low, high) with low < high. Received: clip={clip}")
    if blur:
        x = ndimage.gaussian_filter(x, (0, blur, blur) + (0,) * (x.ndim - 3))
    if bias:
        field = bias_ramp(x.shape[1:3], bias, bias_direction)
        x = x * (field if x.ndim == 3 else field[..., None])
    if gain != 1:
        x = x * gain
    if clip is not None:
        x = np.clip(x, *clip)
    if gamma != 1:
        if x.min() < 0:
            raise ValueError(
                f"gamma={gamma} needs non-negative intensities (the smallest is {x.min():.3g}); "
                "pass clip=(0, 1) or shift the images first."
            )
        x = x**gamma
    return np.asarray(add_noise(x, noise, noise_kind, seed), dtype=np.float32)
