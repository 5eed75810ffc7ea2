"""Paired augmentation in TensorFlow ops, for ``training.make_dataset``.

Augmentation must move image and mask together: a rotated image with an unrotated mask
teaches the network the wrong boundary. One random transform is drawn per example and
applied to both (bilinear for the image, nearest-neighbour for the mask, the same
reflection at the borders); intensity changes and noise then touch the image only. Random
draws are stateless and seeded, so a run repeats exactly for a given seed (and thread
count), while each epoch still sees new transforms.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import tensorflow as tf

from medseg_course.utils import check_positive

__all__ = ["Augmentation"]


@dataclass(frozen=True)
class Augmentation:
    """Strength of each random transform; 0 turns a transform off.

    Attributes
    ----------
    flip : bool
        Random left-right and up-down flips (each with probability 0.5).
    rotation_deg : float
        Rotation drawn from [-rotation_deg, rotation_deg] degrees.
    scale : float
        Zoom factor drawn from [1 - scale, 1 + scale].
    translate : float
        Shift drawn from [-translate, translate] times the image size.
    intensity : float
        Gain drawn from [1 - intensity, 1 + intensity] and offset from
        [-intensity / 2, intensity / 2] (image only).
    noise : float
        Gaussian noise with a standard deviation drawn from [0, noise] (image only).
    elastic : float
        Elastic deformation: a smooth random displacement field (4x4 control points,
        bicubic) with a standard deviation of ``elastic`` times the image size; image and
        mask warped together. Off by default.
    gamma : float
        Contrast change: intensities mapped through x**g on their per-image [min, max]
        range, with log g drawn from [-gamma, gamma] (image only). Off by default.
    bias_field : float
        Multiplicative smooth field 1 + b, |b| <= bias_field, of low-order polynomial
        shape, like MRI coil inhomogeneity (image only). Off by default.
    resolution : float
        Simulated lower resolution: downsample by a factor drawn from
        [1, 1 + resolution] and upsample back (image only). Off by default.
    """

    flip: bool = True
    rotation_deg: float = 10.0
    scale: float = 0.1
    translate: float = 0.05
    intensity: float = 0.1
    noise: float = 0.02
    elastic: float = 0.0
    gamma: float = 0.0
    bias_field: float = 0.0
    resolution: float = 0.0

    def __post_init__(self):
        for name, value in asdict(self).items():
            if name != "flip":
                check_positive(value, name, allow_zero=True)
        if self.scale >= 1:
            raise ValueError(f"scale must be below 1. Received: scale={self.scale}")


def _affine_matrix(height, width, angle, zoom, shift_y, shift_x):
    """Projective transform (8 numbers) mapping output pixel (x, y) to input pixel."""
    cos, sin = tf.cos(angle) / zoom, tf.sin(angle) / zoom
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    a2 = cx - cos * cx + sin * cy + shift_x
    b2 = cy - sin * cx - cos * cy + shift_y
    zero = tf.zeros_like(cos)
    return tf.stack([cos, -sin, a2, sin, cos, b2, zero, zero])[None, :]


def _transform(image, matrix, interpolation):
    shape = tf.shape(image)[:2]
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None],
        transforms=matrix,
        output_shape=shape,
        interpolation=interpolation,
        fill_mode="REFLECT",
        fill_value=0.0,
    )
    return out[0]


def _augment(image, mask, seed, aug):
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=8)

    def uniform(i, low, high):
        return tf.random.stateless_uniform([], seeds[i], low, high)

    is_labels = mask.shape.rank == 2
    mask_f = tf.cast(mask[..., None] if is_labels else mask, tf.float32)
    if aug.flip:
        if uniform(0, 0.0, 1.0) < 0.5:
            image, mask_f = tf.reverse(image, [1]), tf.reverse(mask_f, [1])
        if uniform(1, 0.0, 1.0) < 0.5:
            image, mask_f = tf.reverse(image, [0]), tf.reverse(mask_f, [0])
    if aug.rotation_deg or aug.scale or aug.translate:
        height = tf.cast(tf.shape(image)[0], tf.float32)
        width = tf.cast(tf.shape(image)[1], tf.float32)
        angle = uniform(2, -aug.rotation_deg, aug.rotation_deg + 1e-9) * (math.pi / 180)
        zoom = uniform(3, 1 - aug.scale, 1 + aug.scale + 1e-9)
        shift_y = uniform(4, -aug.translate, aug.translate + 1e-9) * height
        shift_x = uniform(5, -aug.translate, aug.translate + 1e-9) * width
        matrix = _affine_matrix(height, width, angle, zoom, shift_y, shift_x)
        image = _transform(image, matrix, "BILINEAR")
        mask_f = _transform(mask_f, matrix, "NEAREST")
    if aug.intensity:
        gain_offset = tf.random.stateless_uniform([2], seeds[6], -1.0, 1.0)
        image = image * (1 + aug.intensity * gain_offset[0]) + aug.intensity / 2 * gain_offset[1]
    extra = tf.random.experimental.stateless_split(seeds[0][::-1], num=4)
    if aug.elastic:
        image, mask_f = _elastic(image, mask_f, extra[0], aug.elastic)
    if aug.gamma:
        image = _gamma(image, extra[1], aug.gamma)
    if aug.bias_field:
        image = _bias_field(image, extra[2], aug.bias_field)
    if aug.resolution:
        image = _lower_resolution(image, extra[3], aug.resolution)
    if aug.noise:
        sigma = tf.random.stateless_uniform([], seeds[7], 0.0, aug.noise)
        image = image + sigma * tf.random.stateless_normal(tf.shape(image), seeds[7][::-1])
    mask = tf.cast(mask_f[..., 0], mask.dtype) if is_labels else tf.cast(mask_f, mask.dtype)
    return image, mask


def _warp(image, rows, cols, nearest):
    """Sample ``image`` (H, W, C) at float coordinates (H, W), clamped to the border."""
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    rows = tf.clip_by_value(rows, 0.0, tf.cast(height - 1, tf.float32))
    cols = tf.clip_by_value(cols, 0.0, tf.cast(width - 1, tf.float32))
    if nearest:
        index = tf.stack([tf.cast(tf.round(rows), tf.int32), tf.cast(tf.round(cols), tf.int32)], -1)
        return tf.gather_nd(image, index)
    r0, c0 = tf.floor(rows), tf.floor(cols)
    fr, fc = (rows - r0)[..., None], (cols - c0)[..., None]
    r0, c0 = tf.cast(r0, tf.int32), tf.cast(c0, tf.int32)
    r1, c1 = tf.minimum(r0 + 1, height - 1), tf.minimum(c0 + 1, width - 1)

    def at(r, c):
        return tf.gather_nd(image, tf.stack([r, c], -1))

    top = at(r0, c0) * (1 - fc) + at(r0, c1) * fc
    bottom = at(r1, c0) * (1 - fc) + at(r1, c1) * fc
    return top * (1 - fr) + bottom * fr


def _elastic(image, mask, seed, strength):
    shape = tf.shape(image)[:2]
    size = tf.cast(tf.reduce_max(shape), tf.float32)
    coarse = tf.random.stateless_normal([4, 4, 2], seed) * strength * size
    flow = tf.image.resize(coarse[None], shape, method="bicubic")[0]
    grid_r, grid_c = tf.meshgrid(
        tf.range(tf.cast(shape[0], tf.float32)), tf.range(tf.cast(shape[1], tf.float32)), indexing="ij"
    )
    rows, cols = grid_r + flow[..., 0], grid_c + flow[..., 1]
    return _warp(image, rows, cols, nearest=False), _warp(mask, rows, cols, nearest=True)


def _gamma(image, seed, strength):
    log_g = tf.random.stateless_uniform([], seed, -strength, strength)
    low, high = tf.reduce_min(image), tf.reduce_max(image)
    span = tf.maximum(high - low, 1e-6)
    return low + span * tf.pow((image - low) / span, tf.exp(log_g))


def _bias_field(image, seed, strength):
    shape = tf.shape(image)[:2]
    rows = tf.linspace(-1.0, 1.0, shape[0])[:, None]
    cols = tf.linspace(-1.0, 1.0, shape[1])[None, :]
    c = tf.random.stateless_uniform([5], seed, -1.0, 1.0)
    field = c[0] * rows + c[1] * cols + c[2] * rows * cols + c[3] * rows**2 + c[4] * cols**2
    field = field / tf.maximum(tf.reduce_max(tf.abs(field)), 1e-6)
    return image * (1 + strength * field)[..., None]


def _lower_resolution(image, seed, strength):
    shape = tf.shape(image)[:2]
    factor = tf.random.stateless_uniform([], seed, 1.0, 1.0 + strength)
    small = tf.cast(tf.round(tf.cast(shape, tf.float32) / factor), tf.int32)
    reduced = tf.image.resize(image, tf.maximum(small, 1), method="area")
    return tf.image.resize(reduced, shape, method="bilinear")
