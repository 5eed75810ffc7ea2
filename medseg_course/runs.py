"""Run folders: the checkpoint ``training.fit`` keeps, exact resume, and a clean Ctrl-C.

After every epoch ``fit`` replaces one resume file (``RESUME_NAME``) holding every variable
of the model and its optimizer, the best weights so far, the epoch count and the log, so a
run killed at any moment resumes to the same weights, bit for bit, as one never stopped.
``save_model`` writes a ``.keras`` file atomically, in a form plain Keras loads.
"""

from __future__ import annotations

import signal
import threading
import weakref
from pathlib import Path

import keras
import numpy as np

from medseg_course.models import portable
from medseg_course.utils import atomic_path

__all__ = ["RESUME_NAME", "save_model"]


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
            # the log first: once the resume file of an epoch exists, so does its log row
            self.write_log()
            self._save_state(epoch)

    def restore_best(self):
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)


def save_model(model, path):
    """Save ``model`` as ``path`` (``.keras``) in the form plain Keras loads (``models.portable``:
    Keras's own layers, not compiled), atomically: a run killed while it is being written
    leaves the previous file or the complete new one, never a truncated zip."""
    twin = _PORTABLE_TWINS.get(model)
    if twin is None:  # cloning costs about as much as saving: once per model, then copy weights
        twin = _PORTABLE_TWINS[model] = portable(model)
    else:
        twin.set_weights(model.get_weights())
    with atomic_path(path, suffix=".keras") as tmp:
        twin.save(tmp)
    return Path(path)


#: ``models.portable`` copy of each model ``save_model`` has saved (dropped with the model).
_PORTABLE_TWINS = weakref.WeakKeyDictionary()


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
