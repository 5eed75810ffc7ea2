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


def __getattr__(name):
    if name in _SUBMODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
