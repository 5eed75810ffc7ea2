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
import random
import signal
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from medseg_course import losses as losses_module
from medseg_course import metrics as metrics_module
from medseg_course.utils import atomic_path, check_array, check_positive, check_writable_folder

__all__ = ["Augmentation", "make_dataset", "sample_patches", "compile_model", "reinitialize", "fit", "save_model", "RESUME_NAME"]


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
    # tf.data's autotuner is a background thread that keeps modelling the pipeline to size its
    # buffers and parallelism; on a 2-core machine it takes CPU from the training step.
    # Switching it off trained the book's 64x64 U-Nets 1.07-1.33x faster in paired runs, and
    # the 128x128 one of benchmarks/train_throughput.py 1.04x (arm "autotune"). The map then
    # runs on every core and two batches are prefetched. No value changes: the elements and
    # their order are the same (tests/test_training.py).
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.batch(batch_size).prefetch(2).with_options(options)


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


def sample_patches(images, masks, patch_size, patches_per_image=16, foreground_fraction=0.5, seed=0):
    """Random patches at native resolution, centred on foreground with a given probability.

    For large images with thin or small targets (vessels, small lesions), resizing the whole
    image to the model's input erases the target; training on native-resolution patches
    keeps it. A patch is centred on a random foreground pixel with probability
    ``foreground_fraction`` (MONAI's ``RandCropByPosNegLabel``, nnU-Net's foreground
    oversampling) and anywhere otherwise, so rare structures are seen often enough and the
    network still learns what background looks like. Predict with
    ``inference.predict_sliding_window``.

    Parameters
    ----------
    images : sequence of arrays (H_i, W_i, C), sizes may differ
    masks : sequence of arrays (H_i, W_i) or (H_i, W_i, 1), labels
    patch_size : (int, int)
    patches_per_image : int
    foreground_fraction : float in [0, 1]
    seed : int

    Returns
    -------
    (ndarray (N, ph, pw, C) float32, ndarray (N, ph, pw) uint8)
        Images smaller than a patch are zero-padded.
    """
    if len(images) != len(masks) or len(images) == 0:
        raise ValueError(
            f"images and masks must be non-empty sequences of equal length. Received: {len(images)} images, "
            f"{len(masks)} masks"
        )
    ph, pw = (int(v) for v in patch_size)
    check_positive(patches_per_image, "patches_per_image", integer=True)
    if not 0 <= foreground_fraction <= 1:
        raise ValueError(f"foreground_fraction must be in [0, 1]. Received: {foreground_fraction}")
    rng = np.random.default_rng(seed)
    out_images, out_masks = [], []
    for index, (image, mask) in enumerate(zip(images, masks)):
        image = check_array(image, f"images[{index}]", ndim=3, dtype_kind="biuf").astype(np.float32)
        mask = np.asarray(mask)
        mask = mask[..., 0] if mask.ndim == 3 else mask
        if mask.shape != image.shape[:2]:
            raise ValueError(f"masks[{index}] shape {mask.shape} differs from images[{index}] {image.shape[:2]}")
        pad = ((0, max(0, ph - image.shape[0])), (0, max(0, pw - image.shape[1])))
        image = np.pad(image, pad + ((0, 0),))
        mask = np.pad(mask, pad)
        foreground = np.argwhere(mask > 0)
        for _ in range(patches_per_image):
            if foreground.size and rng.random() < foreground_fraction:
                cy, cx = foreground[rng.integers(len(foreground))]
            else:
                cy, cx = rng.integers(image.shape[0]), rng.integers(image.shape[1])
            top = int(np.clip(cy - ph // 2, 0, image.shape[0] - ph))
            left = int(np.clip(cx - pw // 2, 0, image.shape[1] - pw))
            out_images.append(image[top : top + ph, left : left + pw])
            out_masks.append(mask[top : top + ph, left : left + pw])
    return np.stack(out_images), np.stack(out_masks).astype(np.uint8)


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
    # Adam's moments created now, eagerly, rather than inside the first training step: there
    # they make TensorFlow trace the step twice, which costs seconds per model on a CPU.
    # The values are the same zeros either way, so training is unchanged bit for bit.
    model.optimizer.build(model.trainable_variables)
    return model


def _seed_keeping_compiled_steps(seed):
    """``keras.utils.set_random_seed(seed)`` without clearing TensorFlow's kernel cache.

    ``tf.random.set_seed`` sets the global seed and then clears every cached kernel, so that
    stateful random ops run eagerly start their streams afresh. The cached kernels include
    the instantiated, graph-optimised training, validation and prediction steps of every
    model, and instantiating them again costs seconds: 3 epochs of an 8-filter U-Net on 192
    images of 64x64, then a prediction, took 10.5 s after ``tf.random.set_seed`` and 6.5 s
    without it, on 2 CPU cores, with the same weights. This sets the same state as
    ``keras.utils.set_random_seed`` (Keras's global seed and seed generator, Python's
    ``random``, NumPy's global generator, TensorFlow's global seed and its generator of
    operation seeds) and keeps the cache. Keras layers, ``tf.data`` shuffling and this
    package's augmentation draw with seeded or stateless ops, so what follows is the same,
    bit for bit (tests/test_training.py). A stateful TensorFlow random op that was already
    run eagerly in this process (``tf.random.uniform`` without a seed, say) continues its
    stream instead of restarting it; call ``keras.utils.set_random_seed`` for that.
    Falls back to ``keras.utils.set_random_seed`` where the internals it sets are missing.
    """
    try:
        from keras.src.backend.common import global_state  # noqa: PLC0415
        from keras.src.random.seed_generator import GLOBAL_SEED_GENERATOR  # noqa: PLC0415
        from keras.src.utils.rng_utils import GLOBAL_RANDOM_SEED  # noqa: PLC0415
        from tensorflow.python.eager import context  # noqa: PLC0415

        ctx = context.context()
        usable = tf.executing_eagerly() and hasattr(ctx, "_seed") and hasattr(ctx, "_rng")
    except ImportError:  # another Keras or TensorFlow moved them
        usable = False
    if not usable:  # seed the public way
        keras.utils.set_random_seed(seed)
        return
    global_state.set_global_attribute(GLOBAL_RANDOM_SEED, seed)
    global_state.set_global_attribute(GLOBAL_SEED_GENERATOR, None)
    random.seed(seed)
    np.random.seed(seed)
    ctx._seed = seed  # what tf.random.set_seed sets, less its TFE_ContextClearCaches
    ctx._rng = random.Random(seed)


def reinitialize(model, seed):
    """Draw fresh initial weights for a compiled model and reset its optimizer, in place.

    Comparing recipes over several seeds means training the same architecture many times.
    Building and compiling a new model each time makes TensorFlow trace and optimise the
    training step again, which costs about 5 s for a small U-Net on 2 CPU cores, often
    more than the training itself. Re-initialising keeps the traced step: the weights are
    replaced by those of a fresh clone drawn under ``seed`` (each layer's own initializer,
    batch-normalisation statistics back to 0 and 1) and the optimizer's step count and slot
    variables (Adam's moments) go back to zero, which is where Adam, SGD and RMSprop start.
    Training then repeats, bit for bit, what a model built under the same seed would do.
    The seeds are set as by ``keras.utils.set_random_seed``, except that TensorFlow's cache
    of compiled steps is kept (``tf.random.set_seed`` would clear it, and re-instantiating
    the steps costs another 3-4 s per run).

    Parameters
    ----------
    model : keras.Model
        Compiled (or not); its architecture is kept.
    seed : int
        Seed for the new weights; Python, NumPy, Keras and TensorFlow draws afterwards
        are seeded with it too (``tf.data`` shuffles and augmentation included).

    Returns
    -------
    keras.Model
        The same model object, ready to ``fit`` from scratch.
    """
    check_positive(seed, "seed", integer=True, allow_zero=True)
    _seed_keeping_compiled_steps(int(seed))
    fresh = keras.models.clone_model(model)
    # all variables, not only the weights: dropout's random-number state is one too, so a
    # re-initialised model drops the same units as a model freshly built under the seed
    for target, source in zip(model.variables, fresh.variables, strict=True):
        target.assign(source.value)
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None:
        learning_rate = getattr(optimizer, "_learning_rate", None)
        for variable in optimizer.variables:
            if variable is not learning_rate:
                variable.assign(np.zeros(variable.shape, dtype=variable.dtype))
    return model


class _EpochTimer(keras.callbacks.Callback):
    """Adds ``epoch_time_s`` (wall-clock seconds of each epoch) to the logs."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["epoch_time_s"] = time.perf_counter() - self._start


class _TimeBudget(keras.callbacks.Callback):
    """Stops training when the next epoch would end past the budget (seconds)."""

    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds

    def on_train_begin(self, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        elapsed = time.perf_counter() - self._start
        last = (logs or {}).get("epoch_time_s", 0.0)
        if elapsed + last > self.seconds:
            self.model.stop_training = True


#: The resume checkpoint ``fit`` writes after every epoch: every variable of the model and
#: its optimizer (weights, batch-norm statistics, dropout random state, Adam moments), the
#: best weights so far, the epoch count and the log, in one file replaced atomically.
RESUME_NAME = "resume.npz"
_RESUME_FORMAT = 1


def _values(variables):
    return [np.asarray(v.numpy() if hasattr(v, "numpy") else v) for v in variables]


def _assign(variables, values, what, path):
    if len(variables) != len(values) or any(tuple(v.shape) != a.shape for v, a in zip(variables, values)):
        raise ValueError(
            f"{path}: the checkpoint's {what} ({len(values)} arrays) do not match this model's ({len(variables)}); "
            "resume with the same model and settings as the interrupted run."
        )
    for variable, value in zip(variables, values):
        variable.assign(value)


class _RunKeeper(keras.callbacks.Callback):
    """Best weights, early stopping, the log and the checkpoints, kept in step.

    After every epoch: the best model (``best.keras``) when ``val_dice`` improved, then the
    resume checkpoint, then ``log.csv``; each is written to a temporary file and renamed, so
    a run killed at any moment leaves complete files. The resume checkpoint is the one
    source of truth: on ``resume`` the log is rewritten from it, so a kill between two
    writes loses at most the epoch in progress. Early stopping and the restoring of the best
    weights follow ``keras.callbacks.EarlyStopping(restore_best_weights=True)`` exactly
    (strict improvement, ``wait`` counted the same way), so results do not depend on
    whether a run was interrupted.
    """

    def __init__(self, monitor, patience, out_dir=None):
        super().__init__()
        self.monitor = monitor  # "val_dice" or None (no validation data)
        self.patience = patience
        self.out_dir = out_dir
        self.rows, self.best, self.best_weights, self.wait = [], None, None, 0

    # ---- state
    def load(self, model, path):
        """Restore model, optimizer and bookkeeping from a resume checkpoint; return its epoch count."""
        import json  # noqa: PLC0415

        try:
            with np.load(path, allow_pickle=False) as archive:
                meta = json.loads(str(archive["meta"]))
                arrays = {key: archive[key] for key in archive.files if key != "meta"}
        except (OSError, ValueError, KeyError) as err:
            raise ValueError(f"{path}: not a readable resume checkpoint ({type(err).__name__}); start without resume.") from None
        if meta.get("format") != _RESUME_FORMAT:
            raise ValueError(f"{path}: written by another version of medseg-course; start without resume.")

        def group(prefix):
            return [arrays[f"{prefix}/{i}"] for i in range(meta["counts"][prefix])]

        _assign(model.variables, group("model"), "model variables", path)
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        _assign(model.optimizer.variables, group("optimizer"), "optimizer variables", path)
        best = group("best")
        self.best_weights = best or None
        self.rows, self.best = meta["rows"], meta["best"]
        self.wait = meta["wait"]
        return meta["epoch"]

    def _save_state(self, epoch):
        import json  # noqa: PLC0415

        groups = {
            "model": _values(self.model.variables),
            "optimizer": _values(self.model.optimizer.variables),
            "best": [np.asarray(w) for w in self.best_weights] if self.best_weights is not None else [],
        }
        arrays = {f"{name}/{i}": value for name, values in groups.items() for i, value in enumerate(values)}
        meta = {
            "format": _RESUME_FORMAT,
            "epoch": epoch + 1,
            "rows": self.rows,
            "best": self.best,
            "wait": self.wait,
            "counts": {name: len(values) for name, values in groups.items()},
        }
        with atomic_path(self.out_dir / RESUME_NAME) as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, meta=np.array(json.dumps(meta)), **arrays)

    def write_log(self):
        import csv  # noqa: PLC0415

        if not self.rows:
            return
        keys = ["epoch"] + sorted({k for row in self.rows for k in row} - {"epoch"})
        with atomic_path(self.out_dir / "log.csv") as tmp:
            with open(tmp, "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=keys, restval="NA", lineterminator="\n")
                writer.writeheader()
                writer.writerows(self.rows)

    # ---- Keras hooks
    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        self.rows.append({"epoch": epoch, **{k: float(v) for k, v in logs.items()}})
        current = logs.get(self.monitor) if self.monitor else None
        improved = False
        if current is not None:
            current = float(current)
            if self.best_weights is None:
                self.best_weights = self.model.get_weights()
            self.wait += 1
            if self.best is None or current > self.best:
                self.best, self.wait, improved = current, 0, True
                self.best_weights = self.model.get_weights()
            elif self.patience is not None and self.wait >= self.patience and epoch > 0:
                self.model.stop_training = True
        if self.out_dir is not None:
            if improved:
                save_model(self.model, self.out_dir / "best.keras")
            self._save_state(epoch)
            self.write_log()

    def restore_best(self):
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)


def save_model(model, path):
    """Save a Keras model as ``path`` (``.keras``) atomically: a run killed while it is being
    written leaves the previous file or the complete new one, never a truncated zip."""
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)
    return Path(path)


def _checkpoint_bytes(model):
    """Disk a run folder needs: the resume file (model, best weights, two Adam moments), the
    best model, and a temporary copy of the largest while it is replaced, plus 10 MB."""
    weights = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in model.variables)
    return 7 * weights + 10_000_000


#: How many times Keras 3 iterates a data set of known length per epoch: its EpochIterator
#: opens an iterator at the start of each epoch and another, unused, at the end (measured
#: with Keras 3.15; ``tests/test_resume.py`` fails if a Keras version changes this).
_ITERATIONS_PER_EPOCH = 2


def _advance(dataset, epochs):
    """Draw the shuffle and augmentation seeds of ``epochs`` epochs from ``dataset``.

    ``make_dataset`` reshuffles and re-draws augmentation seeds each time the data set is
    iterated, so a resumed run must first make the draws of the epochs already done to see
    the same batches as an uninterrupted run. Only the first element of each iteration is
    computed.
    """
    for _ in range(_ITERATIONS_PER_EPOCH * epochs):
        iterator = iter(dataset)
        next(iterator, None)
        del iterator


class _InterruptGuard(keras.callbacks.Callback):
    """Makes one Ctrl-C stop training, even where TensorFlow swallows the KeyboardInterrupt.

    Under load, a SIGINT that arrives while TensorFlow's C++ runtime holds the main thread can
    be consumed without stopping ``fit`` (measured: 1 run in 3 with both cores busy trained to
    the end). While ``fit`` runs, the guard's handler records the signal before raising
    KeyboardInterrupt as Python's default handler does, and the callback raises it again at
    the next batch or epoch boundary if it was lost. Installed only in the main thread and
    only over Python's default handler, so a handler the user or Jupyter set is left alone.
    """

    def __init__(self):
        super().__init__()
        self.pending = False
        self._previous = None

    def _handler(self, signum, frame):
        self.pending = True
        raise KeyboardInterrupt

    def __enter__(self):
        if threading.current_thread() is threading.main_thread() and (
            signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
        return False

    def _check(self, *args, **kwargs):
        if self.pending:
            raise KeyboardInterrupt

    on_train_batch_end = on_test_batch_end = on_epoch_begin = on_epoch_end = _check


def fit(
    model,
    train_data,
    val_data=None,
    epochs=10,
    patience=None,
    out_dir=None,
    overwrite=False,
    verbose=0,
    time_budget_s=None,
    resume=False,
):
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
        Where to write ``best.keras`` (the best model by ``val_dice``), ``resume.npz``
        (everything needed to continue, after every epoch) and ``log.csv`` (one row per
        epoch). Each file is replaced atomically, so a run killed at any moment leaves
        complete files. Created if missing; checked for write access and free space first.
    overwrite : bool
        Replace the results of an earlier run in ``out_dir`` (they are deleted first).
    verbose : int
        Keras verbosity (0 silent, 2 one line per epoch).
    time_budget_s : float, optional
        Stop after the epoch that would otherwise end past this many seconds; the best
        weights are still restored.
    resume : bool
        Continue an interrupted run in ``out_dir`` from ``resume.npz``: weights, optimizer
        state, random state, best weights, early-stopping count and epoch are restored, and
        the data set skips the shuffles and augmentation draws of the epochs already done,
        so the resumed run ends where an uninterrupted one would (same seed and threads).
        Pass the same model, data and settings as the interrupted run.

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
    PermissionError, OSError
        If ``out_dir`` cannot be written to or lacks the space for the checkpoints.
    KeyboardInterrupt
        Re-raised after Ctrl-C, with the best weights so far restored in ``model``; the
        files in ``out_dir`` are those of the last completed epoch.
    """
    if getattr(model, "optimizer", None) is None or not getattr(model, "compiled", True):
        raise ValueError("model is not compiled; call mc.training.compile_model(model) first.")
    check_positive(epochs, "epochs", integer=True)
    if patience is not None:
        check_positive(patience, "patience", integer=True)
    if isinstance(train_data, (tuple, list)):
        train_data = make_dataset(*train_data)
    if isinstance(val_data, (tuple, list)):
        val_data = make_dataset(*val_data, shuffle=False)
    keeper = _RunKeeper("val_dice" if val_data is not None else None, patience, None)
    guard = _InterruptGuard()
    callbacks = [guard, _EpochTimer()]
    if time_budget_s is not None:
        callbacks.append(_TimeBudget(check_positive(time_budget_s, "time_budget_s")))
    callbacks.append(keeper)
    initial_epoch = 0
    if out_dir is not None:
        out_dir = keeper.out_dir = Path(out_dir)
        ours = [out_dir / name for name in ("best.keras", RESUME_NAME, "log.csv")]
        if resume:
            if not (out_dir / RESUME_NAME).is_file():
                raise FileNotFoundError(
                    f"Cannot resume: {out_dir} has no {RESUME_NAME} from an earlier run. Start without resume."
                )
            initial_epoch = keeper.load(model, out_dir / RESUME_NAME)
            keeper.write_log()  # the log as of the checkpoint (a kill may have left it one epoch ahead or behind)
            _advance(train_data, initial_epoch)
        else:
            existing = [p.name for p in ours if p.exists()]
            if existing and not overwrite:
                raise FileExistsError(
                    f"{out_dir} already holds {', '.join(existing)}; choose a new out_dir, pass "
                    "overwrite=True to replace them, or resume=True to continue that run."
                )
        check_writable_folder(out_dir, _checkpoint_bytes(model))
        if not resume:
            for path in ours:  # overwrite: nothing of the old run may mix with the new one
                path.unlink(missing_ok=True)
    elif resume:
        raise ValueError("resume=True needs the out_dir of the run to continue.")
    if initial_epoch >= epochs or (keeper.rows and _stopped_early(keeper, patience)):
        keeper.restore_best()
        return {}
    try:
        with guard:
            history = model.fit(
                train_data, validation_data=val_data, epochs=epochs, callbacks=callbacks, verbose=verbose,
                initial_epoch=initial_epoch,
                shuffle=False,  # make_dataset already shuffles, seeded
            )
    except KeyboardInterrupt:
        # Ctrl-C: keep the best weights in the model; the files on disk are complete
        keeper.restore_best()
        raise
    keeper.restore_best()
    if out_dir is not None and val_data is None:
        save_model(model, out_dir / "best.keras")
    return {key: [float(v) for v in values] for key, values in history.history.items()}


def _stopped_early(keeper, patience):
    """Whether the run being resumed had already stopped early (patience exhausted)."""
    return patience is not None and keeper.wait >= patience and len(keeper.rows) > 1
