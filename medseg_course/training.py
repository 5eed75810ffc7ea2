"""Training: a ``tf.data`` pipeline with paired augmentation, and a ``fit`` helper.

Augmentation must move image and mask together: a rotated image with an unrotated mask
teaches the network the wrong boundary. ``make_dataset`` draws one random transform per
example and applies it to both (bilinear for the image, nearest-neighbour for the mask, the
same reflection at the borders), then changes intensity and adds noise to the image only.
Random draws are stateless and seeded, so a run repeats exactly for a given seed (and
thread count), while each epoch still sees new transforms.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from medseg_course import losses as losses_module
from medseg_course import metrics as metrics_module
from medseg_course.utils import check_array, check_positive

__all__ = ["Augmentation", "make_dataset", "compile_model", "fit"]


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
    """

    flip: bool = True
    rotation_deg: float = 10.0
    scale: float = 0.1
    translate: float = 0.05
    intensity: float = 0.1
    noise: float = 0.02

    def __post_init__(self):
        for name, value in asdict(self).items():
            if name != "flip":
                check_positive(value, name, allow_zero=True)
        if self.scale >= 1:
            raise ValueError(f"scale must be below 1. Received: scale={self.scale}")


def _check_pair(images, masks):
    images = check_array(images, "images", ndim=4, dtype_kind="biuf")
    masks = check_array(masks, "masks", ndim=(3, 4), dtype_kind="biuf")
    if masks.shape[:3] != images.shape[:3]:
        raise ValueError(
            "images and masks must have the same number of images, height and width. "
            f"Received: images.shape={images.shape}, masks.shape={masks.shape}"
        )
    return images.astype(np.float32), masks


def make_dataset(images, masks, batch_size=16, shuffle=True, augment=None, seed=0):
    """A batched, prefetched ``tf.data.Dataset`` of (image, mask) pairs.

    Parameters
    ----------
    images : array, shape (N, H, W, C), float
    masks : array, shape (N, H, W, 1) binary, or (N, H, W) integer labels
    batch_size : int
        Images per batch (the last batch may be smaller).
    shuffle : bool
        Reshuffle every epoch (seeded).
    augment : Augmentation or None
        Random transforms applied on the fly; ``None`` for validation and test data.
    seed : int
        Seed for shuffling and augmentation.

    Returns
    -------
    tf.data.Dataset
        Yields ``(image (B, H, W, C) float32, mask (B, H, W, 1) float32 or (B, H, W) uint8)``.

    Raises
    ------
    ValueError
        For arrays of mismatched size, bad rank, NaN, or a bad ``batch_size``.
    """
    images, masks = _check_pair(images, masks)
    check_positive(batch_size, "batch_size", integer=True)
    if augment is not None and not isinstance(augment, Augmentation):
        raise ValueError(
            f"augment must be an Augmentation or None. Received: {type(augment).__name__}"
        )
    dataset = tf.data.Dataset.from_tensor_slices((images, masks))
    if shuffle:
        dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    if augment is not None:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        dataset = tf.data.Dataset.zip(dataset, seeds).map(
            lambda pair, s: _augment(pair[0], pair[1], s, augment),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


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
    if aug.noise:
        sigma = tf.random.stateless_uniform([], seeds[7], 0.0, aug.noise)
        image = image + sigma * tf.random.stateless_normal(tf.shape(image), seeds[7][::-1])
    mask = tf.cast(mask_f[..., 0], mask.dtype) if is_labels else tf.cast(mask_f, mask.dtype)
    return image, mask


def compile_model(model, loss="dice_ce", learning_rate=1e-3, jit_compile="auto"):
    """Compile with Adam, a loss by name (or instance) and the Dice metric.

    Parameters
    ----------
    model : keras.Model
    loss : str or keras.losses.Loss
        ``"bce"``, ``"weighted_bce"``, ``"dice"``, ``"dice_ce"`` (see ``losses.get_loss``),
        or a Keras loss instance.
    learning_rate : float
        Adam's learning rate.
    jit_compile : bool or "auto"
        XLA compilation, passed to ``model.compile``.

    Returns
    -------
    keras.Model
        The same model, compiled, with metric ``dice`` (``val_dice`` on validation data).
    """
    check_positive(learning_rate, "learning_rate")
    loss_fn = losses_module.get_loss(loss) if isinstance(loss, str) else loss
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=loss_fn,
        metrics=[metrics_module.DiceMetric()],
        jit_compile=jit_compile,
    )
    return model


class _EpochTimer(keras.callbacks.Callback):
    """Adds ``epoch_time_s`` (wall-clock seconds of each epoch) to the logs."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["epoch_time_s"] = time.perf_counter() - self._start


def fit(model, train_data, val_data=None, epochs=10, patience=None, out_dir=None, overwrite=False, verbose=0):
    """Train a compiled model, keeping the weights of the best validation Dice.

    Parameters
    ----------
    model : keras.Model
        Compiled, e.g. by ``compile_model`` (it must log a ``dice`` metric).
    train_data : tf.data.Dataset or (images, masks)
        Arrays are wrapped by ``make_dataset`` (batch 16, shuffled, not augmented).
    val_data : tf.data.Dataset or (images, masks), optional
        Used to choose the best epoch by ``val_dice``; without it the last epoch is kept.
    epochs : int
        Maximum number of epochs.
    patience : int, optional
        Stop after this many epochs without a better ``val_dice`` (early stopping).
    out_dir : str or Path, optional
        Where to write ``best.keras`` (best model by ``val_dice``) and ``log.csv``
        (one row per epoch). Created if missing.
    overwrite : bool
        Allow writing into an ``out_dir`` that already holds a model or log.
    verbose : int
        Keras verbosity (0 silent, 2 one line per epoch).

    Returns
    -------
    dict of str to list
        Per-epoch ``loss``, ``dice``, ``val_loss``, ``val_dice`` (with validation data) and
        ``epoch_time_s``.

    Raises
    ------
    ValueError
        If the model is not compiled, or ``epochs``/``patience`` are not positive.
    FileExistsError
        If ``out_dir`` already holds results and ``overwrite`` is False.
    """
    if getattr(model, "optimizer", None) is None or not getattr(model, "compiled", True):
        raise ValueError("model is not compiled; call mc.training.compile_model(model) first.")
    check_positive(epochs, "epochs", integer=True)
    if isinstance(train_data, (tuple, list)):
        train_data = make_dataset(*train_data)
    if isinstance(val_data, (tuple, list)):
        val_data = make_dataset(*val_data, shuffle=False)
    callbacks = [_EpochTimer()]
    if val_data is not None:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_dice",
                mode="max",
                patience=epochs if patience is None else check_positive(patience, "patience", integer=True),
                restore_best_weights=True,
            )
        )
    if out_dir is not None:
        out_dir = Path(out_dir)
        existing = [p.name for p in (out_dir / "best.keras", out_dir / "log.csv") if p.exists()]
        if existing and not overwrite:
            raise FileExistsError(
                f"{out_dir} already holds {', '.join(existing)}; choose a new out_dir or pass "
                "overwrite=True to replace them."
            )
        out_dir.mkdir(parents=True, exist_ok=True)
        if not os.access(out_dir, os.W_OK):
            raise PermissionError(f"Cannot write to out_dir={out_dir}; choose a writable folder.")
        callbacks.append(keras.callbacks.CSVLogger(str(out_dir / "log.csv")))
        if val_data is not None:
            callbacks.append(
                keras.callbacks.ModelCheckpoint(
                    str(out_dir / "best.keras"), monitor="val_dice", mode="max", save_best_only=True
                )
            )
    history = model.fit(
        train_data, validation_data=val_data, epochs=epochs, callbacks=callbacks, verbose=verbose,
        shuffle=False,  # make_dataset already shuffles, seeded
    )
    if out_dir is not None and val_data is None:
        model.save(out_dir / "best.keras")
    return {key: [float(v) for v in values] for key, values in history.history.items()}
