"""The course's reproducible set-up and the record of what it ran on.

``setup`` is the one call a chapter makes before anything else: it silences TensorFlow's
C++ logs, pins the CPU thread count (results repeat bit for bit only at a fixed thread
count), seeds Python, NumPy and TensorFlow, and reports the device and versions.
``footer`` is the line a chapter ends with: versions, seed, device and wall time.
``import_tensorflow`` imports TensorFlow without its start-up lines; ``onednn_enabled`` and
``bf16_hardware`` say which CPU kernels it runs.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import random
import sys
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
    "import_tensorflow",
    "onednn_enabled",
    "bf16_hardware",
    "cpu_name",
    "cpu_flags",
    "numpy_simd_targets",
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


def cpu_flags():
    """The CPU's feature flags from ``/proc/cpuinfo`` (``avx2``, ``avx512f``, ...); empty where
    that cannot be read."""
    return _cpuinfo()[1]


def numpy_simd_targets():
    """NumPy's run-time SIMD targets this CPU runs (``X86_V3`` = AVX2/FMA, ``X86_V4`` =
    AVX-512, ...); ``NPY_DISABLE_CPU_FEATURES`` takes these names. Empty for another NumPy."""
    try:
        from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__  # noqa: PLC0415
    except ImportError:
        return []
    return [name for name in __cpu_dispatch__ if __cpu_features__.get(name)]


def cpu_name():
    """The CPU's model name (from ``/proc/cpuinfo``, or ``platform`` where that cannot be read)."""
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
            "footer() reports what mc.environment.setup() configured and the time since it ran, "
            "but setup() has not been called in this process: call mc.environment.setup(seed=0) "
            "at the top of the notebook."
        )
    info, started = _LAST_SETUP
    return Footer(info=info, seconds=time.perf_counter() - started, cpu=cpu_name(), cores=os.cpu_count() or 1)


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
            f"threads={threads} cannot take effect. Call mc.environment.setup() before building "
            "any model (restart the kernel to change it)."
        ) from err
