"""medseg_course: the pipeline taught by the course *CNNs for medical image segmentation*.

Modules by pipeline stage. Each imports only modules on its own line or the lines above
(``utils``, argument checks and safe writes, imports none)::

    utils
    image, scanner, deidentification, viz, stats, environment
    readers, writers, io | phantoms, brain, datasets, downloads, data
    preprocessing, postprocessing, metrics, boundaries, classical | geometry, volumes
    models, losses | augmentation, patches, run_folder, runs, training, volume_training
    inference (load_run, segment) | samples, fingerprint | planning | evaluation | recipes, experiments
    slice_runs, volume_runs (what ``medseg-course train`` does, in 2D and 3D)
    run_plans (the plan of a ``plan`` or ``train`` command, 2D or 3D)
    cli (parses arguments, calls the package, reports errors in one line)

Submodules are imported on first use (``mc.losses`` imports Keras, ``mc.metrics`` does
not), so ``import medseg_course as mc`` is instant and starts no TensorFlow runtime.

Examples
--------
>>> import medseg_course as mc
>>> info = mc.environment.setup(seed=0)          # doctest: +SKIP
>>> images, masks = mc.data.make_phantoms(8, image_size=64, seed=0)
>>> images.shape, masks.shape
((8, 64, 64, 1), (8, 64, 64, 1))
"""

import importlib
import os

# TensorFlow's C++ logger must be quietened before TensorFlow is first imported; level 2
# still lets error-level lines through (they break nbval). setdefault keeps a user's choice.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# oneDNN's CPU kernels train the course's small U-Nets 1.25-2.5x faster than TensorFlow's
# default ones on a 2-core AVX2 CPU (benchmarks/train_throughput.py; 2.5x for the 8-filter
# U-Net at 64x64 of chapter 5), and repeat bit for bit from run to run on one machine with
# the same threads. TensorFlow alone turns them on only for CPUs with AVX512-VNNI, BF16 or AMX,
# so the package asks for them everywhere: the same kernels on every x86 machine, and the
# book's chapters within CI's time. They are read once, when TensorFlow is first imported.
# TF_ENABLE_ONEDNN_OPTS=0 before importing keeps TensorFlow's default kernels (setdefault
# keeps a user's choice). Measurements: benchmarks/README.md ("oneDNN").
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

__version__ = "0.1.0"

_SUBMODULES = (
    "augmentation",
    "boundaries",
    "brain",
    "classical",
    "cli",
    "data",
    "datasets",
    "deidentification",
    "downloads",
    "environment",
    "evaluation",
    "experiments",
    "fingerprint",
    "geometry",
    "image",
    "inference",
    "io",
    "losses",
    "metrics",
    "models",
    "patches",
    "phantoms",
    "planning",
    "postprocessing",
    "preprocessing",
    "readers",
    "recipes",
    "run_folder",
    "run_plans",
    "runs",
    "samples",
    "scanner",
    "slice_runs",
    "stats",
    "training",
    "utils",
    "viz",
    "volume_runs",
    "volume_training",
    "volumes",
    "writers",
)

__all__ = [*_SUBMODULES, "__version__"]


#: Submodules that import TensorFlow when they load (under the default, TensorFlow, Keras backend).
_TENSORFLOW_SUBMODULES = ("augmentation", "experiments", "losses", "models", "recipes", "runs", "training",
                          "volume_training")


def __getattr__(name):
    if name in _SUBMODULES:
        # models, losses and the Dice metric are written with keras.ops and run on any Keras 3
        # backend (benchmarks/gpu.py runs them on JAX); only the TensorFlow one is imported here
        if name in _TENSORFLOW_SUBMODULES and os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
            from medseg_course.environment import import_tensorflow  # noqa: PLC0415

            import_tensorflow()  # quietly, before the submodule does it loudly
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
