"""Data the course trains on: synthetic phantoms with exact masks, real brain MRI, and yours.

One name space over four modules:

* ``phantoms``: ``make_phantoms`` draws CT-like 2D cross-sections with exact masks.
* ``brain``: ``load_mni152_slices`` cuts axial slices from the MNI152 T1 template that
  nilearn ships (offline), with brain, grey- and white-matter masks; ``slab_split`` keeps
  neighbouring slices in one split.
* ``datasets``: your own data, ``load_paired_folders`` (``images/`` + ``masks/``) and
  ``load_msd`` (Decathlon layout), returning ``Case`` objects with each image's geometry;
  ``load_hippocampus`` reads the 208 patients' hippocampus MRI that ship with the package.
* ``downloads``: ``download_msd`` fetches a Decathlon task, verified by checksum (nothing in
  the book or tests downloads).

Images are channels-last float32 ``(N, H, W, 1)``; binary masks are float32
``(N, H, W, 1)`` in {0, 1}, multi-class masks are uint8 labels ``(N, H, W)``.
"""

from medseg_course.brain import (
    MNI152_TARGETS,
    MNI152_TISSUE_CLASSES,
    SliceSet,
    add_simulated_head,
    load_mni152_slices,
    slab_split,
)
from medseg_course.datasets import (
    MASK_SUFFIXES,
    Case,
    DataSetError,
    find_pairs,
    hippocampus_folder,
    load_hippocampus,
    load_msd,
    load_paired_folders,
    mask_to_labels,
    split_cases,
    volume_slices,
)
from medseg_course.downloads import MSD_BASE_URL, MSD_TASKS, data_home, download_msd, safe_extract
from medseg_course.phantoms import PHANTOM_CLASSES, PhantomSpec, make_phantoms

__all__ = [
    "PHANTOM_CLASSES",
    "MNI152_TARGETS",
    "MNI152_TISSUE_CLASSES",
    "PhantomSpec",
    "make_phantoms",
    "SliceSet",
    "load_mni152_slices",
    "add_simulated_head",
    "slab_split",
    "MASK_SUFFIXES",
    "DataSetError",
    "Case",
    "find_pairs",
    "mask_to_labels",
    "load_paired_folders",
    "load_msd",
    "load_hippocampus",
    "hippocampus_folder",
    "split_cases",
    "volume_slices",
    "MSD_TASKS",
    "MSD_BASE_URL",
    "data_home",
    "download_msd",
    "safe_extract",
]
