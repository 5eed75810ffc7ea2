"""Training 3D models with ``training.fit``: patch batches, whole-volume validation, and a
learning rate that decays to the end of the run.

``VolumePatches`` draws each epoch's patches (``volumes.sample_patches_3d``) and their
augmentation (``volumes.augment_volume``) from a generator seeded by the seed and the
epoch, so ``training.fit``'s exact resume, time budget, checkpoints and Ctrl-C handling work
unchanged. ``VolumeValidation`` scores whole validation volumes by sliding window after each
epoch and logs ``val_dice`` (the mean Dice over foreground labels and volumes), which
``training.fit`` uses to keep the best weights. ``PolyDecay`` sets the learning rate each
epoch to ``lr * (1 - epoch / epochs) ** 0.9`` (nnU-Net's schedule).
"""

from __future__ import annotations

import time

import keras
import numpy as np

from medseg_course.utils import check_positive
from medseg_course.volumes import augment_volume, pad_to, predict_volume, sample_patches_3d

__all__ = ["VolumePatches", "VolumeValidation", "PolyDecay", "validation_dice", "test_scores"]


class VolumePatches(keras.callbacks.Callback):
    """Batches of 3D patches for ``training.fit``, drawn afresh each epoch, reproducibly.

    Each epoch yields ``steps_per_epoch`` batches; epoch ``e`` draws its patches
    (``volumes.sample_patches_3d``) and augmentation (``volumes.augment_volume``) from
    ``default_rng([seed, e])``, so a run resumed at epoch ``e`` sees the batches an
    uninterrupted run would. Pass the object itself among ``fit``'s callbacks (it learns
    the epoch there) and ``.dataset`` as the training data.

    Parameters
    ----------
    cases : list of (ndarray (Z, H, W, C), ndarray (Z, H, W))
        Prepared, normalised volumes and label maps; smaller ones are padded (each channel
        with its minimum, labels with 0) to the patch, as ``volumes.predict_volume`` pads.
    patch_shape : (int, int, int)
    batch_size, steps_per_epoch : int
    foreground_rate : float
        Share of patches centred on a foreground voxel.
    augment : bool or dict
        ``volumes.augment_volume`` on every patch (a dict: its keyword arguments); False
        or None: none.
    seed : int
    """

    def __init__(self, cases, patch_shape, batch_size=2, steps_per_epoch=50, foreground_rate=0.33, augment=True,
                 seed=0):
        super().__init__()
        check_positive(batch_size, "batch_size", integer=True)
        check_positive(steps_per_epoch, "steps_per_epoch", integer=True)
        self.patch = tuple(int(v) for v in patch_shape)
        self.volumes = [pad_to(image, self.patch, value="minimum")[0] for image, _ in cases]
        self.labels = [pad_to(label, self.patch)[0] for _, label in cases]
        self.batch_size, self.steps_per_epoch = int(batch_size), int(steps_per_epoch)
        self.foreground_rate, self.augment, self.seed = foreground_rate, augment, int(seed)
        self.epoch = 0
        self.dataset = self._make_dataset()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = int(epoch)

    def batches(self, epoch):
        """The batches of ``epoch``: (patches (B, *patch, C) float32, labels (B, *patch) uint8)."""
        rng = np.random.default_rng([self.seed, epoch])
        for _ in range(self.steps_per_epoch):
            images, masks, _ = sample_patches_3d(self.volumes, self.labels, self.patch, self.batch_size,
                                                 self.foreground_rate, rng)
            if self.augment is not None and self.augment is not False:
                options = self.augment if isinstance(self.augment, dict) else {}
                pairs = [augment_volume(i, m, rng, **options) for i, m in zip(images, masks)]
                images, masks = np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
            yield images, masks

    def _make_dataset(self):
        import tensorflow as tf  # noqa: PLC0415

        channels = int(self.volumes[0].shape[-1])
        signature = (tf.TensorSpec((self.batch_size, *self.patch, channels), tf.float32),
                     tf.TensorSpec((self.batch_size, *self.patch), tf.uint8))
        # the epoch is read when an iteration starts, after fit's on_epoch_begin
        dataset = tf.data.Dataset.from_generator(lambda: self.batches(self.epoch), output_signature=signature)
        return dataset.apply(tf.data.experimental.assert_cardinality(self.steps_per_epoch)).prefetch(2)


def validation_dice(model, cases, patch_shape=None, flip=False):
    """Mean over volumes of the mean Dice over foreground labels, by sliding window."""
    return float(np.mean([np.mean(row) for row in test_scores(model, cases, patch_shape, flip)]))


def test_scores(model, cases, patch_shape=None, flip=False):
    """Per volume, the Dice of each foreground label (``metrics.dice`` over the whole
    volume; 1.0 where truth and prediction are both empty) of the arg-max (threshold 0.5
    for one class) of ``volumes.predict_volume``: a list of lists."""
    from medseg_course.metrics import dice  # noqa: PLC0415

    num_classes = int(model.output_shape[-1])
    labels = [1] if num_classes == 1 else list(range(1, num_classes))
    scores = []
    for image, label in cases:
        probs = predict_volume(model, image, patch_shape, flip=flip)
        pred = (probs[..., 0] >= 0.5) if num_classes == 1 else np.argmax(probs, axis=-1)
        scores.append([float(dice(label == k, pred == k, per_image=False)) for k in labels])
    return scores


class VolumeValidation(keras.callbacks.Callback):
    """Logs ``val_dice`` over whole validation volumes after each epoch: pass it as
    ``training.fit``'s ``val_callback``, which makes ``fit`` keep the best epoch by it."""

    def __init__(self, cases, patch_shape=None):
        super().__init__()
        self.cases, self.patch_shape = cases, patch_shape

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["val_dice"] = validation_dice(self.model, self.cases, self.patch_shape)


class PolyDecay(keras.callbacks.Callback):
    """Learning rate ``initial * (1 - progress) ** 0.9`` at the start of each epoch, where
    progress is the larger of ``epoch / epochs`` and the share of ``time_budget_s`` spent
    since training began (with a budget, a run's last epochs train at a small rate
    whatever the CPU's speed; without one the schedule depends on the epoch only, so an
    interrupted run resumes exactly)."""

    def __init__(self, initial, epochs, time_budget_s=None):
        super().__init__()
        self.initial, self.epochs, self.time_budget_s = float(initial), int(epochs), time_budget_s

    def on_train_begin(self, logs=None):
        self._start = time.perf_counter()

    def rate(self, epoch, elapsed_s=0.0):
        progress = epoch / self.epochs
        if self.time_budget_s:
            progress = max(progress, elapsed_s / self.time_budget_s)
        return self.initial * max(0.0, 1 - progress) ** 0.9

    def on_epoch_begin(self, epoch, logs=None):
        rate = self.rate(epoch, time.perf_counter() - self._start)
        self.model.optimizer.learning_rate.assign(rate)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["lr"] = float(np.asarray(self.model.optimizer.learning_rate))
