"""medseg_course: the pipeline taught by the course *CNNs for medical image segmentation*.

One module per pipeline stage, data flowing left to right::

    io / data -> preprocessing -> models + losses (training) -> inference
              -> postprocessing -> metrics / viz

Submodules are imported on first use (``mc.losses`` imports Keras, ``mc.metrics`` does
not), so ``import medseg_course as mc`` is instant and starts no TensorFlow runtime.

Examples
--------
>>> import medseg_course as mc
>>> info = mc.utils.setup(seed=0)          # doctest: +SKIP
>>> images, masks = mc.data.make_phantoms(8, image_size=64, seed=0)
>>> images.shape, masks.shape
((8, 64, 64, 1), (8, 64, 64, 1))
"""

import importlib
import os

# TensorFlow's C++ logger must be quietened before TensorFlow is first imported; level 2
# still lets error-level lines through (they break nbval). setdefault keeps a user's choice.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# oneDNN's CPU kernels (TF_ENABLE_ONEDNN_OPTS=1, set before TensorFlow is imported) train the
# course's U-Net 1.25-1.7x faster on an AVX2 CPU (benchmarks/train_throughput.py), but are
# off unless asked for, also on the CPUs where TensorFlow would turn them on by itself
# (AVX512-VNNI, BF16, AMX): their results depend on the CPU's instruction set, and a re-run
# of chapter 10 with them did not repeat the previous run bit for bit. The default kernels
# give the committed outputs' bits on any AVX CPU with the same versions. See the README
# ("CPU speed"). setdefault keeps a user's choice.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

__version__ = "0.1.0"

_SUBMODULES = (
    "classical",
    "cli",
    "data",
    "inference",
    "io",
    "losses",
    "metrics",
    "models",
    "postprocessing",
    "preprocessing",
    "training",
    "utils",
    "viz",
)

__all__ = [*_SUBMODULES, "__version__"]


#: Submodules that import TensorFlow when they load.
_TENSORFLOW_SUBMODULES = ("losses", "models", "training")


def __getattr__(name):
    if name in _SUBMODULES:
        if name in _TENSORFLOW_SUBMODULES:
            from medseg_course.utils import import_tensorflow  # noqa: PLC0415

            import_tensorflow()  # quietly, before the submodule does it loudly
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
