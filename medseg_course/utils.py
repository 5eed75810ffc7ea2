"""Reproducible set-up, environment report and the argument checks every module shares.

``setup`` is the one call a chapter makes before anything else: it silences TensorFlow's
C++ logs, pins the CPU thread count (results repeat bit for bit only at a fixed thread
count), seeds Python, NumPy and TensorFlow, and reports the device and versions.

The ``check_*`` helpers raise ``ValueError`` messages that name the argument, what was
received and what was expected, so bad input stops at the boundary of the package instead
of deep inside NumPy or TensorFlow.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.metadata
import os
import platform
import random
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "EnvironmentInfo",
    "setup",
    "Footer",
    "footer",
    "package_versions",
    "check_array",
    "check_same_shape",
    "check_binary_mask",
    "check_positive",
    "check_probability",
    "atomic_path",
    "check_writable_folder",
    "import_tensorflow",
    "onednn_enabled",
    "bf16_hardware",
    "numerics_fingerprint",
]

#: Packages whose versions ``setup`` reports (distribution names on PyPI).
REPORTED_PACKAGES = (
    "medseg-course",
    "tensorflow-cpu",
    "tensorflow",
    "keras",
    "numpy",
    "scipy",
    "scikit-image",
    "opencv-python-headless",
    "nibabel",
    "pydicom",
    "nilearn",
)


@dataclass(frozen=True)
class EnvironmentInfo:
    """What ``setup`` configured: seed, threads, device and package versions."""

    seed: int
    threads: int | None
    device: str
    deterministic: bool
    python: str
    versions: dict = field(default_factory=dict)
    onednn: bool = False

    def __str__(self):
        packages = ", ".join(f"{k} {v}" for k, v in self.versions.items())
        threads = "all" if self.threads is None else self.threads
        return (
            f"seed={self.seed} threads={threads} device={self.device} "
            f"deterministic={self.deterministic} onednn={self.onednn} | Python {self.python} | {packages}"
        )


def package_versions(names=REPORTED_PACKAGES):
    """Return ``{distribution: version}`` for the installed ones among ``names``."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def setup(seed=0, threads=2, deterministic=True):
    """Seed everything, pin CPU threads, silence TensorFlow logs and report the device.

    Call it once, first, before any model is built: TensorFlow fixes its thread pools
    when its runtime starts.

    Parameters
    ----------
    seed : int
        Seed for Python's ``random``, NumPy's global generator and TensorFlow.
    threads : int or None
        CPU threads, for both of TensorFlow's pools: intra-op (the threads one kernel
        splits its work over) and inter-op (how many independent kernels run at once).
        Training losses repeat bit for bit at the same thread count, not across counts, so
        the course pins 2 (the CI machine's core count). ``None`` leaves TensorFlow's
        default (all cores). The inter-op pool changes no value, only which kernel starts
        first: with an inter-op pool of 1 a 16-filter U-Net trained about 8 % slower on a
        2-core Intel Xeon, to the same weights bit for bit. The environment variable
        ``MEDSEG_THREADS``, when set, overrides this argument (``make test-robust`` uses it
        to run the chapters under another thread count, which rounds differently).
    deterministic : bool
        Ask TensorFlow for deterministic kernels. Applied on CPU only: on a GPU some
        kernels the models use have no deterministic implementation.

    Returns
    -------
    EnvironmentInfo
        Seed, threads, ``"CPU"`` or ``"GPU:<name>"``, package versions, and whether
        oneDNN's CPU kernels are on (see ``onednn_enabled``).

    Raises
    ------
    ValueError
        If ``seed`` is not a non-negative int or ``threads`` is not a positive int/None.

    Examples
    --------
    >>> info = setup(seed=0, threads=2)   # doctest: +SKIP
    >>> info.device                      # doctest: +SKIP
    'CPU'
    """
    started = time.perf_counter()
    override = os.environ.get("MEDSEG_THREADS", "").strip()
    if override:
        if not override.isdigit() or int(override) < 1:
            raise ValueError(f"MEDSEG_THREADS must be a positive integer (or unset). Received: {override!r}")
        threads = int(override)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int. Received: seed={seed!r}")
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1
    ):
        raise ValueError(
            f"threads must be a positive int or None. Received: threads={threads!r}"
        )
    # Must be set before TensorFlow is first imported; 2 still leaks error-level lines.
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    # tqdm warns in notebooks without ipywidgets whenever a library imports tqdm.auto;
    # it is noise for readers and would be compared by nbval.
    warnings.filterwarnings("ignore", message="IProgress not found")
    tf = import_tensorflow()
    import keras  # noqa: PLC0415

    # TensorFlow's Python logger warns about tf.function retracing whenever a notebook
    # builds and evaluates several models in a loop: expected here, and noise for readers.
    tf.get_logger().setLevel("ERROR")
    if threads is not None:
        _pin_threads(tf, int(threads))
    from medseg_course.viz import use_colourblind_palette  # noqa: PLC0415

    use_colourblind_palette()  # figures readable with colour blindness (Okabe-Ito)
    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(int(seed))
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        device = f"GPU:{details.get('device_name', gpus[0].name)}"
    else:
        device = "CPU"
    use_determinism = bool(deterministic) and not gpus
    if use_determinism:
        tf.config.experimental.enable_op_determinism()
    info = EnvironmentInfo(
        seed=int(seed),
        threads=threads,
        device=device,
        deterministic=use_determinism,
        python=platform.python_version(),
        versions=package_versions(),
        onednn=onednn_enabled(),
    )
    global _LAST_SETUP
    # the info of the latest call; the time of the first (a chapter may call setup again
    # to re-seed part-way, and its wall time still starts at the top)
    _LAST_SETUP = (info, _LAST_SETUP[1] if _LAST_SETUP else started)
    return info


# (EnvironmentInfo of the latest ``setup`` call, perf_counter at the first) in this process.
_LAST_SETUP = None


def _cpuinfo():
    """``(model name, set of flags)`` of the first CPU in ``/proc/cpuinfo`` (the name from
    ``platform`` and no flags where that cannot be read)."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return name, flags
    name = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), name)
    flags = set(next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), []))
    return name, flags


def bf16_hardware():
    """Whether this CPU multiplies bfloat16 matrices in hardware (AVX512-BF16 or AMX, from
    ``/proc/cpuinfo``; False where that cannot be read). Elsewhere bfloat16 is emulated,
    and mixed bfloat16 trains slower than float32."""
    return bool({"avx512_bf16", "amx_bf16"} & _cpuinfo()[1])


def _cpu_name():
    return _cpuinfo()[0]


@dataclass(frozen=True, repr=False)
class Footer:
    """A chapter's reproducibility record; shows as one line of Markdown in a notebook."""

    info: EnvironmentInfo
    seconds: float
    cpu: str
    cores: int

    def _items(self):
        versions = self.info.versions
        tensorflow = versions.get("tensorflow-cpu") or versions.get("tensorflow", "?")
        device = self.info.device if self.info.device != "CPU" else f"CPU ({self.cpu}, {self.cores} cores)"
        threads = "all" if self.info.threads is None else self.info.threads
        return [
            f"medseg-course {versions.get('medseg-course', '?')}",
            f"Python {self.info.python}",
            f"TensorFlow {tensorflow}, Keras {versions.get('keras', '?')}, NumPy {versions.get('numpy', '?')}",
            f"seed {self.info.seed}",
            f"{device}, {threads} threads, oneDNN {'on' if self.info.onednn else 'off'}",
            f"chapter wall time {self.seconds:.0f} s",
        ]

    def __str__(self):
        return "Reproducibility: " + " · ".join(self._items())

    __repr__ = __str__  # plain-text front ends show the line, not the fields

    def _repr_markdown_(self):
        return "**Reproducibility:** " + " · ".join(self._items())


def footer():
    """The reproducibility footer a chapter ends with: package versions, seed, device and
    the wall time since the chapter first called ``setup`` (in this process).

    Returns a ``Footer``, which a notebook shows as one line of Markdown (and ``str`` as
    plain text). Its time differs from run to run, so chapters tag its cell
    ``nbval-ignore-output``.

    Raises
    ------
    RuntimeError
        If ``setup`` has not been called in this process: the footer reports what ``setup``
        configured, and the time since it ran.

    Examples
    --------
    >>> info = setup(seed=0)        # doctest: +SKIP
    >>> footer()                    # doctest: +SKIP
    **Reproducibility:** medseg-course 0.1.0 · Python 3.11.7 · ... · chapter wall time 98 s
    """
    if _LAST_SETUP is None:
        raise RuntimeError(
            "footer() reports what mc.utils.setup() configured and the time since it ran, "
            "but setup() has not been called in this process: call mc.utils.setup(seed=0) "
            "at the top of the notebook."
        )
    info, started = _LAST_SETUP
    return Footer(info=info, seconds=time.perf_counter() - started, cpu=_cpu_name(), cores=os.cpu_count() or 1)


def onednn_enabled():
    """Whether TensorFlow runs its CPU convolutions with oneDNN in this process.

    On unless ``TF_ENABLE_ONEDNN_OPTS=0`` is in the environment before TensorFlow is
    imported: the package sets ``1`` when the variable is unset (1.25-2.5x faster training on
    the course's 2-core AVX2 machine), where TensorFlow alone would use oneDNN only on CPUs
    with AVX512-VNNI, BF16 or AMX. It is read once, when TensorFlow is imported.
    """
    try:
        from tensorflow.python.util import _pywrap_util_port  # noqa: PLC0415
    except ImportError:  # a TensorFlow build without the query: report it off
        return False
    return bool(_pywrap_util_port.IsMklEnabled())


def numerics_fingerprint():
    """A short hash of this machine's training arithmetic, to tell whether it reproduces a run.

    The chapters' outputs were computed on one machine; the same code repeats them bit for
    bit on another only where every kernel adds its floating-point numbers in the same
    order. That depends on the CPU's instruction set (oneDNN and NumPy choose their kernels
    at run time), on oneDNN being on, on the thread count and on the versions installed.
    This function makes 16 phantoms, trains a 3-level, 16-filter U-Net on them for three
    steps with the chapters' loss and optimiser, and hashes the images, the weights and
    the predictions, NumPy's elementwise functions and OpenCV's bilateral filter on fixed
    inputs, and the settings that change the arithmetic. Two machines
    with the same fingerprint gave the same bits here; with different fingerprints, expect
    the chapters' trained numbers to differ in their later digits, and sometimes in the
    second (a network's training amplifies rounding differences).

    Call ``setup()`` first (it fixes the seed, threads and determinism). Takes about 2 s
    after TensorFlow's import. The test suite compares it with the committed outputs'
    (``tests/numerics_reference.json``) to decide whether to compare outputs bit for bit.

    Returns
    -------
    str
        16 hexadecimal digits.
    """
    import hashlib  # noqa: PLC0415

    import keras  # noqa: PLC0415

    from medseg_course import data, models, preprocessing, training  # noqa: PLC0415

    tf = import_tensorflow()
    keras.utils.set_random_seed(0)
    images, masks = data.make_phantoms(16, image_size=64, seed=0)
    model = models.build_unet(input_shape=(64, 64, 1), depth=3, base_filters=16)
    training.compile_model(model, loss="dice_ce", learning_rate=1e-3)
    for _ in range(3):
        model.train_on_batch(images, masks)
    digest = hashlib.sha256()
    settings = (
        tf.__version__,
        np.__version__,
        tf.config.threading.get_intra_op_parallelism_threads(),
        onednn_enabled(),
        bool(tf.config.list_physical_devices("GPU")),
    )
    digest.update(repr(settings).encode())
    for array in (images, masks, *model.get_weights(), model.predict_on_batch(images)):
        digest.update(np.ascontiguousarray(array, dtype=np.float32).tobytes())
    # NumPy and OpenCV also pick SIMD kernels by CPU (float64 exp and log, for one, have
    # AVX-512 versions only); the chapters use these functions outside TensorFlow.
    x = np.linspace(-3.0, 3.0, 4097)
    for v in (x.astype(np.float32), x):
        for values in (np.exp(v), np.log1p(np.abs(v)), np.sin(v), np.cos(v), np.tanh(v),
                       np.sqrt(np.abs(v)), np.arctan2(v, v[::-1])):
            digest.update(values.tobytes())
    digest.update(preprocessing.denoise_bilateral(images[0, ..., 0]).tobytes())
    return digest.hexdigest()[:16]


def import_tensorflow():
    """Import TensorFlow (~5 s) without the start-up lines it writes past its log level.

    With oneDNN on, TensorFlow's C++ start-up writes an informational "oneDNN custom
    operations are on" line straight to the process's stderr, twice, whatever
    ``TF_CPP_MIN_LOG_LEVEL`` says. Notebook kernels capture that stream into the first
    cell's output, and the CLI's one-line errors would gain four lines. While
    ``TF_CPP_MIN_LOG_LEVEL`` asks for quiet (>= 1; the package sets 3), the first import
    runs with the native stderr pointed at the null device; Python exceptions still
    propagate. Set ``TF_CPP_MIN_LOG_LEVEL=0`` to see everything.
    """
    try:
        if "tensorflow" in sys.modules or os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") in ("", "0"):
            import tensorflow as tf  # noqa: PLC0415

            return tf
        with _native_stderr_silenced():
            import tensorflow as tf  # noqa: PLC0415
        return tf
    except ModuleNotFoundError as error:
        if error.name != "tensorflow":
            raise
        raise ModuleNotFoundError(
            "TensorFlow is not installed, and the course's models need it: install the package "
            "with its CPU build, pip install \"medseg-course[cpu]\" (or pip install -r "
            "requirements.txt for the tested pins), or with \"medseg-course[gpu]\" for an NVIDIA GPU.",
            name="tensorflow",
        ) from error


@contextlib.contextmanager
def _native_stderr_silenced():
    """Point file descriptor 2 at the null device for the duration (C++ writes included)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable fd 2: nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _pin_threads(tf, threads):
    """Set TF thread pools; tolerate a second call with the same values."""
    current = (
        tf.config.threading.get_intra_op_parallelism_threads(),
        tf.config.threading.get_inter_op_parallelism_threads(),
    )
    if current == (threads, threads):
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError as err:
        raise RuntimeError(
            f"TensorFlow already started with intra-op threads={current[0]}, so "
            f"threads={threads} cannot take effect. Call mc.utils.setup() before building "
            "any model (restart the kernel to change it)."
        ) from err


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
