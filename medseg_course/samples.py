"""From cases to training samples, as ``medseg-course train`` prepares them.

A case (an image with its mask, from ``data.load_paired_folders``, ``data.load_msd`` or the
built-in sources) becomes normalised slices, slices first (``prepare_case``). ``choose_mode``
picks between resizing whole slices into the model's input and sampling patches at native
resolution; ``training_arrays`` makes the arrays a model trains on. ``inference.segment``
prepares images the same way, so a model sees at prediction what it saw in training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medseg_course import brain, datasets, phantoms
from medseg_course.inference import match_channels
from medseg_course.patches import sample_patches
from medseg_course.preprocessing import fit_to_shape, normalise_percentiles

__all__ = ["SliceCase", "prepare_case", "training_cases", "choose_mode", "training_arrays"]


@dataclass
class SliceCase:
    """A case ready for a 2D model: normalised slices ``(Z, H, W, C)`` float32, labels
    ``(Z, H, W)`` uint8 (None without a mask), the spacing in the same order (None where
    unknown) and the ``MedicalImage`` it came from (None for built-in data)."""

    name: str
    slices: np.ndarray
    masks: np.ndarray | None = None
    spacing_mm: tuple | None = None
    image: object = None


def prepare_case(case):
    """A ``data.Case`` as a ``SliceCase``: slices first (``MedicalImage.to_slices``), normalised
    over the whole image or volume (``preprocessing.normalise_percentiles``)."""
    image = case.image
    masks = None if case.mask is None else image.to_slices(case.mask).astype(np.uint8)
    return SliceCase(case.name, normalise_percentiles(image.to_slices()), masks, image.slice_spacing_mm, image)


def training_cases(source, target="organ", num_images=64, image_size=128, val_fraction=0.2, layout="auto",
                   invert_masks=False, allow_unmatched=False, seed=0, test_fraction=0.0):
    """The training, validation and test cases of ``medseg-course train --data SOURCE``.

    Parameters
    ----------
    source : str or Path
        ``"phantom"`` (``num_images`` phantoms of ``image_size``), ``"mni152"`` (the template
        brain's slices, split in slabs), ``"hippocampus"`` (the MRI volumes that ship with
        the package, slice by slice), or a data folder: ``images/`` + ``masks/``
        (``layout="folders"``) or a Decathlon task (``layout="msd"``); ``"auto"`` tells them
        apart.
    target : str
        What the built-in sources label (``make_phantoms``/``load_mni152_slices``).
    val_fraction, test_fraction : float
        Shares of the cases held out for validation (choosing the checkpoint) and for test
        (scored once at the end), split by case, or by subject where the data name one
        (``datasets.split_cases``). Test cases need a data folder or ``"hippocampus"``.

    Returns
    -------
    (list of SliceCase, list of SliceCase, list of SliceCase, dict)
        Training, validation and test cases (empty without ``test_fraction``), and where they
        came from (for ``config.json``).

    Raises
    ------
    DataSetError
        A missing folder, an unknown layout, or fewer than 2 cases.
    """

    def built_in(names, images, masks):
        labels = masks[..., 0].astype(np.uint8) if masks.ndim == 4 else masks
        return [SliceCase(name, normalise_percentiles(images[i : i + 1]), labels[i : i + 1])
                for i, name in enumerate(names)]

    if test_fraction and source in ("phantom", "mni152"):
        raise datasets.DataSetError(f"--test-fraction holds out cases of a data folder or 'hippocampus'; {source} "
                                    "is generated or one template. Leave --test-fraction out.")
    if source == "phantom":
        images, masks = phantoms.make_phantoms(num_images, image_size=image_size, target=target, seed=seed)
        n_val = max(1, round(val_fraction * len(images)))
        cases = built_in([f"phantom_{i:04d}" for i in range(len(images))], images, masks)
        return cases[n_val:], cases[:n_val], [], {"source": "phantom", "spacing_mm": None}
    if source == "mni152":
        slices = brain.load_mni152_slices("brain" if target == "organ" else target, image_size=image_size)
        split = brain.slab_split(slices.slice_index, seed=seed)
        make = lambda idx: built_in([f"mni152_z{slices.slice_index[i]:03d}" for i in idx],  # noqa: E731
                                    slices.images[idx], slices.masks[idx])
        return make(split["train"]), make(split["val"]), [], {"source": "mni152", "spacing_mm": list(slices.spacing_mm)}
    root = datasets.hippocampus_folder() if source == "hippocampus" else Path(source)
    if not root.exists():
        raise datasets.DataSetError(f"{root}: no such folder. Give a data folder, or 'phantom' or 'mni152'.")
    if not root.is_dir():
        raise datasets.DataSetError(f"{root}: not a folder; --data takes a data folder (images/ and masks/, or a Decathlon task).")
    if layout == "auto":
        if (root / "dataset.json").is_file():
            layout = "msd"
        elif (root / "images").is_dir() and (root / "masks").is_dir():
            layout = "folders"
        else:
            raise datasets.DataSetError(
                f"{root}: unknown layout: expected images/ and masks/ (--layout folders) or dataset.json with "
                "imagesTr/ and labelsTr/ (--layout msd)."
            )
    if layout == "msd":
        cases, _ = datasets.load_msd(root)
    else:
        cases = datasets.load_paired_folders(root, invert=invert_masks, allow_unmatched=allow_unmatched)
    needed = 3 if test_fraction else 2
    if len(cases) < needed:
        raise datasets.DataSetError(f"{root}: {len(cases)} case(s); training needs at least {needed} (one for "
                                    f"validation{', one for test' if test_fraction else ''}).")
    try:
        split = datasets.split_cases([c.name for c in cases], val_fraction=val_fraction, test_fraction=test_fraction,
                                     seed=seed, groups={c.name: c.subject for c in cases if c.subject})
    except ValueError as error:
        raise datasets.DataSetError(f"{root}: {error}") from None
    prepared = {c.name: prepare_case(c) for c in cases}
    train, val, test = ([prepared[n] for n in split[part]] for part in ("train", "val", "test"))
    return train, val, test, {"source": str(root.resolve()), "layout": layout}


def choose_mode(slice_stacks, image_size):
    """``"patch"`` when the median slice's longer side exceeds twice ``image_size`` (resizing
    would lose detail), else ``"resize"``."""
    longest = np.median([max(stack.shape[1:3]) for stack in slice_stacks])
    return "patch" if longest > 2 * image_size else "resize"


def _targets(masks, num_classes):
    """Model targets: (N, H, W, 1) float32 for binary, (N, H, W) uint8 labels otherwise."""
    if num_classes == 1:
        return (masks > 0).astype(np.float32)[..., None]
    return masks.astype(np.uint8)


def training_arrays(stacks, mask_stacks, mode, size, num_classes, channels, patches_per_image=16, seed=0):
    """Images ``(N, size, size, channels)`` and targets from slice stacks and their masks.

    ``"resize"`` fits every slice into ``size x size`` (``fit_to_shape``, aspect kept, zero
    padded); ``"patch"`` samples ``patches_per_image`` patches per slice, half centred on
    foreground (``sample_patches``). Targets are float32 ``(N, H, W, 1)`` for a binary
    model (``num_classes`` 1) and uint8 labels ``(N, H, W)`` otherwise.
    """
    images = [match_channels(stack, channels) for stack in stacks]
    if mode == "resize":
        x = np.concatenate([np.stack([fit_to_shape(im, (size, size))[0] for im in stack]) for stack in images])
        y = np.concatenate([np.stack([fit_to_shape(m, (size, size), is_mask=True)[0] for m in masks])
                            for masks in mask_stacks])
        x = x.astype(np.float32)
    else:
        flat_images = [s for stack in images for s in stack]
        flat_masks = [m for stack in mask_stacks for m in stack]
        x, y = sample_patches(flat_images, flat_masks, (size, size), patches_per_image, 0.5, seed)
    return x, _targets(y, num_classes)
