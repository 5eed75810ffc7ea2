"""Training: a ``tf.data`` pipeline with paired augmentation, and a ``fit`` helper.

``make_dataset`` batches images and masks, applying an ``Augmentation`` (module
``augmentation``) to each pair; ``compile_model`` compiles with Adam, a loss by name and the
Dice metric; ``fit`` trains with validation, early stopping, a time budget and a run folder
that resumes exactly (module ``runs``). ``sample_patches`` (module ``patches``) and
``save_model`` are re-exported here.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from medseg_course import losses as losses_module
from medseg_course import metrics as metrics_module
from medseg_course.augmentation import Augmentation, _augment
from medseg_course.patches import sample_patches
from medseg_course.runs import RESUME_NAME, _advance, _checkpoint_bytes, _InterruptGuard, _RunKeeper, save_model
from medseg_course.utils import check_array, check_positive, check_writable_folder

__all__ = ["Augmentation", "make_dataset", "sample_patches", "compile_model", "reinitialize", "time_steps", "fit", "save_model", "RESUME_NAME"]


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


def time_steps(model, images, masks, batch_size, steps=8):
    """Seconds of one training step of a compiled ``model`` on batches of ``batch_size``:
    ``(median of the steps after the first two, the first)``; the first includes tracing,
    the second is often still slow.

    The steps change the model's weights and optimizer: ``reinitialize`` it afterwards (as
    ``slice_runs.train_run`` does) to train from the seed's initial weights.
    """
    picks = np.arange(batch_size) % len(images)
    x, y = np.asarray(images[picks], np.float32), masks[picks]
    times = []
    for _ in range(max(3, steps)):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    return float(np.median(times[2:])), float(times[0])


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
    val_callback=None,
    callbacks=(),
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
    val_callback : keras.callbacks.Callback, optional
        Instead of ``val_data``: a callback that adds ``val_dice`` to each epoch's logs
        (``volume_training.VolumeValidation`` scores whole volumes).
    callbacks : sequence of keras.callbacks.Callback
        More callbacks, run before the best weights and checkpoints are kept (e.g. a
        learning-rate schedule).

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
    validated = val_data is not None or val_callback is not None
    keeper = _RunKeeper("val_dice" if validated else None, patience, None)
    guard = _InterruptGuard()
    callbacks = [guard, _EpochTimer(), *callbacks] + ([val_callback] if val_callback is not None else [])
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
    if out_dir is not None and not validated:
        save_model(model, out_dir / "best.keras")
    return {key: [float(v) for v in values] for key, values in history.history.items()}


def _stopped_early(keeper, patience):
    """Whether the run being resumed had already stopped early (patience exhausted)."""
    return patience is not None and keeper.wait >= patience and len(keeper.rows) > 1
