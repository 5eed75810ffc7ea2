"""The argument checks every module shares, and safe writes.

The ``check_*`` helpers raise ``ValueError`` messages that name the argument, what was
received and what was expected, so bad input stops at the boundary of the package instead
of deep inside NumPy or TensorFlow. ``atomic_path`` and ``check_writable_folder`` make a
write either complete or absent, and say at once when a folder cannot take it.
``import_cv2`` imports OpenCV with its logger silenced. This module imports no other module
of the package.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

__all__ = [
    "check_array",
    "check_same_shape",
    "check_binary_mask",
    "check_positive",
    "check_probability",
    "atomic_path",
    "check_writable_folder",
    "import_cv2",
]


def import_cv2():
    """OpenCV with its own logger silenced (its warnings would add lines to one-line errors
    and to notebook outputs that nbval compares)."""
    os.environ.setdefault("OPENCV_LOG_LEVEL", "OFF")
    import cv2  # noqa: PLC0415

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    return cv2


# ----------------------------------------------------------------------------- checks


def check_array(x, name, ndim=None, dtype_kind=None, allow_nan=False):
    """Return ``x`` as an ndarray after checking rank, dtype kind and finiteness.

    Parameters
    ----------
    x : array_like
        The argument to check.
    name : str
        The argument's name, used in the error message.
    ndim : int or tuple of int, optional
        Accepted ranks.
    dtype_kind : str, optional
        Accepted ``numpy.dtype.kind`` letters, e.g. ``"biuf"`` (bool, int, uint, float).
    allow_nan : bool
        Whether NaN/Inf values are accepted (floating arrays only).

    Returns
    -------
    numpy.ndarray

    Raises
    ------
    ValueError
        Naming ``name``, what was received and what was expected.
    """
    if x is None:
        raise ValueError(f"{name} is None; expected an array.")
    try:
        arr = np.asarray(x)
    except (ValueError, TypeError):
        arr = np.empty(0, dtype=object)
    if arr.dtype == object:
        raise ValueError(
            f"{name} could not be converted to a numeric array (ragged or mixed types). "
            f"Received: type={type(x).__name__}"
        )
    if ndim is not None:
        ranks = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if arr.ndim not in ranks:
            raise ValueError(
                f"{name} must have rank {' or '.join(map(str, ranks))}. "
                f"Received: {name}.shape={arr.shape}"
            )
    if dtype_kind is not None and arr.dtype.kind not in dtype_kind:
        raise ValueError(
            f"{name} must have a dtype of kind {dtype_kind!r} "
            f"(b=bool, i=int, u=uint, f=float). Received: {name}.dtype={arr.dtype}"
        )
    if arr.size == 0:
        raise ValueError(f"{name} is empty. Received: {name}.shape={arr.shape}")
    if not allow_nan and arr.dtype.kind in "fc" and not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(
            f"{name} contains {bad} NaN or infinite values; clean or mask them first "
            f"(e.g. np.nan_to_num). Received: {name}.shape={arr.shape}"
        )
    return arr


def check_same_shape(a, b, name_a, name_b):
    """Raise ``ValueError`` unless ``a`` and ``b`` have the same shape."""
    if np.shape(a) != np.shape(b):
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape. Received: "
            f"{name_a}.shape={np.shape(a)}, {name_b}.shape={np.shape(b)}"
        )


def check_binary_mask(mask, name):
    """Return ``mask`` as a bool array, raising if it holds values other than 0 and 1."""
    arr = check_array(mask, name, dtype_kind="biuf")
    if arr.dtype != bool:
        values = np.unique(arr)
        if not np.all(np.isin(values, (0, 1))):
            shown = ", ".join(map(str, values[:6])) + (" ..." if values.size > 6 else "")
            raise ValueError(
                f"{name} must be a binary mask with values 0 and 1. Received values: "
                f"{shown}. Threshold probabilities first (mc.postprocessing.binarize) or "
                "divide a 0/255 mask by 255."
            )
    return arr.astype(bool)


def check_positive(value, name, integer=False, allow_zero=False):
    """Raise ``ValueError`` unless ``value`` is a positive (or non-negative) number."""
    kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    ok = isinstance(value, kinds) and not isinstance(value, bool) and np.isfinite(value)
    ok = ok and (value >= 0 if allow_zero else value > 0)
    if not ok:
        what = "int" if integer else "number"
        sign = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{name} must be a {sign} {what}. Received: {name}={value!r}")
    return value


def check_probability(value, name, inclusive=True):
    """Raise ``ValueError`` unless ``0 <= value <= 1`` (or strictly inside if not inclusive)."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, bool
    )
    ok = ok and (0 <= value <= 1 if inclusive else 0 < value < 1)
    if not ok:
        bounds = "[0, 1]" if inclusive else "(0, 1)"
        raise ValueError(f"{name} must be in {bounds}. Received: {name}={value!r}")
    return float(value)


# ------------------------------------------------------------------------ safe writing


@contextlib.contextmanager
def atomic_path(path, suffix=None):
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one step.

    Whatever is written to the temporary path becomes ``path`` only when the ``with`` block
    ends without an error (``os.replace`` after an ``fsync``), so a reader, or a run killed
    half-way through a write, sees either the old file or the complete new one, never a
    truncated file. On an error the temporary file is removed and the old file is kept.

    Parameters
    ----------
    path : str or Path
        The file to (re)write.
    suffix : str, optional
        Suffix of the temporary name (writers such as Keras' ``save`` insist on
        ``.keras``); defaults to ``path``'s own suffix.

    Raises
    ------
    OSError
        Re-raised with the file's name and the fix when the disk is full.

    Examples
    --------
    >>> with atomic_path("log.csv") as tmp:        # doctest: +SKIP
    ...     tmp.write_text("epoch,loss\\n0,0.5\\n")
    """
    path = Path(path)
    suffix = path.suffix if suffix is None else suffix
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".partial{suffix}", dir=path.parent)
    os.close(handle)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if err.errno == errno.ENOSPC:
            raise OSError(
                errno.ENOSPC,
                f"{path}: no space left on the disk while writing it (the previous version is kept); "
                "free some space or choose another output folder",
            ) from None
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check_writable_folder(folder, needed_bytes=0):
    """Create ``folder`` if needed and check, by writing to it, that it can hold ``needed_bytes``.

    Called before long work starts, so a read-only or full disk stops it at once with a
    clear message rather than after an hour of training.

    Returns
    -------
    Path

    Raises
    ------
    PermissionError
        The folder cannot be created or written to.
    OSError
        Less free space than ``needed_bytes`` (``errno.ENOSPC``).
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder) as probe:
            probe.write(b"0")
            probe.flush()
    except OSError as err:
        raise PermissionError(
            f"{folder}: cannot write there ({err.strerror or type(err).__name__}); choose a writable output folder"
        ) from None
    free = shutil.disk_usage(folder).free
    if free < needed_bytes:
        raise OSError(
            errno.ENOSPC,
            f"{folder}: only {free / 1e6:.0f} MB free, and the checkpoints need about {needed_bytes / 1e6:.0f} MB; "
            "free some space or choose another output folder",
        )
    return folder
