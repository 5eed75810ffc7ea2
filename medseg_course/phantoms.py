"""Synthetic CT-like phantoms with exact masks.

``make_phantoms`` draws 2D cross-sections: a body outline, a bright bone, an organ of random
smooth shape with texture, and lesions inside the organ, then degrades the picture the way
scanners do (partial-volume blur, a smooth bias field, intensity scale shifts and Gaussian,
Rician or speckle noise). The masks come from the geometry before any degradation, so they
are exact. Images are channels-last float32 ``(N, H, W, 1)``; binary masks float32
``(N, H, W, 1)`` in {0, 1}, multi-class masks uint8 labels ``(N, H, W)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from medseg_course.scanner import NOISE_KINDS, add_noise
from medseg_course.utils import check_positive

__all__ = ["PHANTOM_CLASSES", "PhantomSpec", "make_phantoms"]


#: Label values of ``make_phantoms(..., target="multiclass")``.
PHANTOM_CLASSES = {0: "background", 1: "organ", 2: "lesion"}
_PHANTOM_TARGETS = ("organ", "lesion", "multiclass")


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
        if self.noise not in NOISE_KINDS:
            raise ValueError(
                f"noise must be one of {NOISE_KINDS}. Received: noise={self.noise!r}"
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
    image = add_noise(image, spec.noise_level, spec.noise, seed=rng)
    return image.astype(np.float32), labels


# ----------------------------------------------------------------- other regimes
# Two more kinds of picture users bring, for the planner's development suite
# (benchmarks/plan_suite.py): thin branching structures that resizing erases, and large
# structures in large colour photographs that patches cannot see whole.


def _draw_photos(draw, num_images, shape, seed):
    """``num_images`` colour photographs and masks from ``draw(rng, height, width)``; image
    ``i`` depends only on ``seed`` and ``i``."""
    check_positive(num_images, "num_images", integer=True)
    height, width = (int(v) for v in shape)
    if min(height, width) < 128:
        raise ValueError(f"shape must be at least 128 x 128. Received: shape={shape}")
    images = np.empty((num_images, height, width, 3), np.uint8)
    masks = np.empty((num_images, height, width), np.uint8)
    for i, child in enumerate(np.random.SeedSequence(int(seed)).spawn(int(num_images))):
        images[i], masks[i] = draw(np.random.default_rng(child), height, width)
    return images, masks


def make_vessel_images(num_images, shape=(512, 512), seed=0):
    """Fundus-like colour photographs of branching vessels, with exact vessel masks.

    Each image has a circular field of view with uneven lighting; vessel trees grow from a
    disc near one side and branch, from about 7 pixels wide down to about 1.5, darker than
    the background in proportion to their width (thin vessels are faint), most visible in
    the green channel, then the picture is blurred and noised.

    Parameters
    ----------
    num_images : int
    shape : (int, int)
        Height and width in pixels (each >= 128).
    seed : int

    Returns
    -------
    images : ndarray, shape (N, H, W, 3), uint8
    masks : ndarray, shape (N, H, W), uint8 in {0, 1}
    """
    return _draw_photos(_draw_vessels, num_images, shape, seed)


def _draw_vessels(rng, height, width):
    import cv2  # noqa: PLC0415

    scale = 4  # draw at 4x and average down: widths below a pixel stay partial, as in a camera
    depth = np.zeros((height * scale, width * scale), np.float32)
    disc = np.array([height * rng.uniform(0.4, 0.6), width * rng.choice([0.25, 0.75])])
    stack = [(disc, rng.uniform(0, 2 * np.pi), rng.uniform(6.0, 7.5), 0) for _ in range(int(rng.integers(3, 5)))]
    segments = 0
    while stack and segments < 400:
        point, angle, vessel_width, level = stack.pop()
        for _ in range(int(rng.integers(8, 16))):
            angle += rng.normal(0, 0.25)
            step = rng.uniform(8, 14)
            nxt = point + step * np.array([np.sin(angle), np.cos(angle)])
            thickness = max(1, int(round(vessel_width * scale)))
            cv2.line(depth, tuple(int(v) for v in (point[::-1] * scale)), tuple(int(v) for v in (nxt[::-1] * scale)),
                     float(vessel_width), thickness)
            point, segments = nxt, segments + 1
            if not (0 <= point[0] < height and 0 <= point[1] < width):
                break
            if level < 5 and rng.random() < 0.12:
                stack.append((point.copy(), angle + rng.choice([-1, 1]) * rng.uniform(0.4, 0.9),
                              max(1.5, vessel_width * rng.uniform(0.65, 0.8)), level + 1))
                vessel_width = max(1.5, vessel_width * rng.uniform(0.8, 0.95))
    coverage = depth.reshape(height, scale, width, scale)
    share = (coverage > 0).mean(axis=(1, 3))  # fraction of the pixel a vessel covers
    widest = coverage.max(axis=(1, 3))
    mask = (share >= 0.5).astype(np.uint8)
    yy, xx = np.mgrid[0:height, 0:width]
    cy, cx, radius = height / 2, width / 2, 0.48 * min(height, width) * 1.1
    fov = np.hypot(yy - cy, xx - cx) <= radius
    mask &= fov
    light = 0.75 + 0.25 * _smooth_field(rng, max(height, width), max(height, width) / 6)[:height, :width]
    light *= np.exp(-(np.hypot(yy - disc[0], xx - disc[1]) / (0.9 * max(height, width))) ** 2 * 1.5) + 0.3
    contrast = share * np.clip(widest / 7.0, 0.25, 1.0) * rng.uniform(0.35, 0.5)
    base = np.array([rng.uniform(0.75, 0.9), rng.uniform(0.35, 0.45), rng.uniform(0.12, 0.2)])
    vessel_loss = np.array([0.35, 1.0, 0.6])  # vessels absorb green most
    image = base * light[..., None] * (1 - contrast[..., None] * vessel_loss)
    image = ndimage.gaussian_filter(image, (0.8, 0.8, 0)) + rng.normal(0, 0.015, image.shape)
    image *= fov[..., None]
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8), mask


def make_lesion_photos(num_images, shape=(576, 768), seed=0):
    """Dermoscopy-like colour photographs of one skin lesion each, with exact lesion masks.

    The lesion is a smooth irregular blob covering from a few per cent to nearly all of the
    frame, brown with darker blotches and a soft border, on skin of a random tone with
    lighting gradients, a dark vignette and hairs (dark curves that cross lesion and skin
    and are not part of the mask).

    Returns
    -------
    images : ndarray, shape (N, H, W, 3), uint8
    masks : ndarray, shape (N, H, W), uint8 in {0, 1}
    """
    return _draw_photos(_draw_lesion_photo, num_images, shape, seed)


def _draw_lesion_photo(rng, height, width):
    import cv2  # noqa: PLC0415

    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    side = min(height, width)
    cy, cx = height * rng.uniform(0.35, 0.65), width * rng.uniform(0.35, 0.65)
    r0 = side * np.exp(rng.uniform(np.log(0.1), np.log(0.75)))
    theta = np.arctan2(yy - cy, xx - cx)
    radius = np.full_like(theta, r0)
    for k in range(2, 7):
        radius += r0 * rng.uniform(0, 0.2 / (k - 1)) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    distance = np.hypot(yy - cy, xx - cx)
    mask = (distance <= radius).astype(np.uint8)
    inside = np.clip((radius - distance) / (0.08 * r0), 0, 1)  # a soft edge, as lesions fade into skin
    skin = np.array([rng.uniform(0.75, 0.95), rng.uniform(0.55, 0.75), rng.uniform(0.45, 0.65)])
    lesion = np.array([rng.uniform(0.35, 0.6), rng.uniform(0.2, 0.35), rng.uniform(0.12, 0.25)])
    blotches = 0.5 + 0.5 * _smooth_field(rng, max(height, width), side / 25)[:height, :width]
    colour = lesion * (1 - 0.45 * blotches[..., None])
    image = skin * (1 - inside[..., None]) + colour * inside[..., None]
    image *= (1 + 0.08 * _smooth_field(rng, max(height, width), side / 60)[:height, :width])[..., None]
    gradient = 1 + 0.15 * ((xx / width - 0.5) * rng.uniform(-1, 1) + (yy / height - 0.5) * rng.uniform(-1, 1))
    vignette = 1 - 0.5 * np.clip(np.hypot((yy - height / 2) / height, (xx - width / 2) / width) * 1.6 - 0.45, 0, 1)
    image *= (gradient * vignette)[..., None]
    hairs = np.zeros((height, width), np.float32)
    for _ in range(int(rng.integers(0, 12))):
        point = np.array([rng.uniform(0, height), rng.uniform(0, width)])
        angle = rng.uniform(0, 2 * np.pi)
        for _ in range(int(rng.integers(10, 30))):
            angle += rng.normal(0, 0.08)
            nxt = point + 12 * np.array([np.sin(angle), np.cos(angle)])
            cv2.line(hairs, (int(point[1]), int(point[0])), (int(nxt[1]), int(nxt[0])), 1.0, int(rng.integers(1, 3)))
            point = nxt
    image *= 1 - 0.7 * ndimage.gaussian_filter(hairs, 0.7)[..., None]
    image = ndimage.gaussian_filter(image, (1.0, 1.0, 0)) + rng.normal(0, 0.02, image.shape)
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8), mask
