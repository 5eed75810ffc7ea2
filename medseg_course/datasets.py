"""Your own data in standard layouts, read with each image's geometry.

``load_paired_folders`` reads ``images/`` + ``masks/`` matched by file stem (``find_pairs``
says which files pair), ``load_msd`` the Medical Segmentation Decathlon's ``dataset.json``
+ ``imagesTr/`` + ``labelsTr/``. Both return ``Case`` objects; ``split_cases`` splits them
by case, and ``volume_slices`` cuts a 3D case into 2D slices.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["MASK_SUFFIXES", "DataSetError", "Case", "find_pairs", "mask_to_labels", "load_paired_folders",
           "load_msd", "split_cases", "volume_slices", "prediction_inputs", "masks_by_case", "SAMPLE_DATA",
           "hippocampus_folder", "load_hippocampus", "load_nuclei"]


#: Suffixes that mark a mask file's stem (``case_mask.png`` pairs with ``case.png``).
MASK_SUFFIXES = ("_mask", "_masks", "_seg", "_segmentation", "_label", "_labels", "_gt", "_manual1", "-mask", "-seg")


class DataSetError(ValueError):
    """A data set folder is not usable; the message names the file(s) and the fix."""


@dataclass
class Case:
    """One image with its mask.

    Attributes
    ----------
    name : str
        The case's name (the shared file stem, or the Decathlon case name).
    image : medseg_course.io.MedicalImage
        Pixels and geometry.
    mask : ndarray or None
        uint8 labels with the image's spatial shape (0 background; 1 foreground for binary
        masks); ``None`` for unlabelled images.
    mask_path : Path or None
    subject : str or None
        The person the image shows, where the data say (a Decathlon entry's ``"subject"``);
        splits keep a subject's cases together. ``None``: the case is its own subject.
    """

    name: str
    image: object
    mask: np.ndarray | None
    mask_path: object = None
    subject: str | None = None


def _pair_key(stem):
    lowered = stem.lower()
    for suffix in MASK_SUFFIXES:
        if lowered.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return stem


def _stem(path):
    from medseg_course.io import image_suffix  # noqa: PLC0415

    return path.name[: -len(image_suffix(path))] if image_suffix(path) else path.stem


def find_pairs(root, image_dir="images", mask_dir="masks", allow_unmatched=False):
    """Match images to masks by file stem in ``root/images`` and ``root/masks``.

    ``case7.png`` pairs with ``case7.png``, ``case7_mask.png``, ``case7_segmentation.png``
    and the other ``MASK_SUFFIXES``; file types may differ (``.jpg`` image, ``.png`` mask).
    Hidden files (``.DS_Store``, ``._case7.png``) are ignored.

    Parameters
    ----------
    root : str or Path
    image_dir, mask_dir : str
        Sub-folder names.
    allow_unmatched : bool
        Skip (with a warning listing them) images without masks, masks without images and
        non-image files, instead of stopping.

    Returns
    -------
    list of (str, Path, Path)
        (case name, image path, mask path), sorted by name.

    Raises
    ------
    DataSetError
        Missing or empty folders, ambiguous matches, or (unless ``allow_unmatched``)
        unmatched or non-image files, naming them.
    """
    import warnings  # noqa: PLC0415

    from medseg_course.io import ImageReadError, list_image_files  # noqa: PLC0415

    root = Path(root)
    folders = {}
    for role, name in (("images", image_dir), ("masks", mask_dir)):
        folder = root / name
        if not folder.is_dir():
            raise DataSetError(
                f"{folder}: folder not found. A paired data set needs {root}/{image_dir}/ and "
                f"{root}/{mask_dir}/ (or --layout msd for the Decathlon layout)."
            )
        try:
            files, others = list_image_files(folder, inside=root)
        except ImageReadError as err:
            raise DataSetError(str(err)) from None
        if not files:
            raise DataSetError(f"{folder}: no image files in the folder. Put the {role} there.")
        folders[role] = (files, others)
    images = {_stem(p): p for p in folders["images"][0]}
    masks = {}
    for path in folders["masks"][0]:
        key = _stem(path) if _stem(path) in images else _pair_key(_stem(path))
        if key in masks:
            raise DataSetError(
                f"{path}: both {masks[key].name} and {path.name} match image {key!r}. Keep one mask per image."
            )
        masks[key] = path
    problems = []
    no_mask = sorted(set(images) - set(masks))
    no_image = sorted(set(masks) - set(images))
    if no_mask:
        problems.append(f"{len(no_mask)} image(s) without a mask: " + ", ".join(images[k].name for k in no_mask[:5]))
    if no_image:
        problems.append(f"{len(no_image)} mask(s) without an image: " + ", ".join(masks[k].name for k in no_image[:5]))
    for role in ("images", "masks"):
        if folders[role][1]:
            names = ", ".join(p.name for p in folders[role][1][:5])
            problems.append(f"{len(folders[role][1])} non-image file(s) in {role}/: {names}")
    if problems:
        message = f"{root}: " + "; ".join(problems)
        if not allow_unmatched:
            raise DataSetError(
                message + ". Add the missing files or remove the extra ones, or pass "
                "allow_unmatched=True (--allow-unmatched) to skip them."
            )
        warnings.warn(message + " (skipped)", stacklevel=2)
    common = sorted(set(images) & set(masks))
    if not common:
        raise DataSetError(f"{root}: no image has a matching mask. Check the file names (see MASK_SUFFIXES).")
    return [(key, images[key], masks[key]) for key in common]


def mask_to_labels(pixels, path="mask", invert=False, colour=None):
    """Convert a mask as stored to uint8 labels.

    Accepted forms: 0/1 (any dtype), 0/255 (8-bit masks), small integer labels 0..K (K < 64),
    and 8-bit masks with JPEG compression noise (all but <= 1 % of pixels within 10 of 0 or
    255), which are thresholded at 128. A colour mask whose three channels agree is read
    as grey.

    Parameters
    ----------
    pixels : array, shape (H, W), (H, W, 3) or 3D
    path : str or Path
        Named in error messages.
    invert : bool
        The file marks the foreground with 0 and the background with 1/255 (binary masks
        only).
    colour : bool, optional
        Whether the last axis holds colour channels. ``None`` guesses from the array (an
        8-bit (H, W, 3) or (H, W, 4) array is colour); pass ``image.is_colour`` for a mask
        read with ``io.read_image``, so a 3D label volume of 3 or 4 slices is not taken for
        a colour image.

    Returns
    -------
    ndarray, uint8, spatial shape of ``pixels``

    Raises
    ------
    DataSetError
        Colour masks with different channels, negative, fractional or too many values.
    """
    arr = np.asarray(pixels)
    if colour is None:
        colour = arr.ndim == 3 and arr.shape[-1] in (3, 4) and arr.dtype == np.uint8
    if colour:
        if not (np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 1], arr[..., 2])):
            raise DataSetError(
                f"{path}: colour mask with different channels; save masks as greyscale 0/255 or label images."
            )
        arr = arr[..., 0]
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise DataSetError(f"{path}: mask contains NaN or infinite values; re-export it.")
    values = np.unique(arr)
    if np.all(np.isin(values, (0, 1))):
        labels = arr.astype(np.uint8)
    elif np.all(np.isin(values, (0, 255))):
        labels = (arr == 255).astype(np.uint8)
    elif arr.dtype.kind in "ui" or (arr.dtype.kind == "f" and np.all(values == np.round(values))):
        if values.min() < 0 or values.max() >= 256:
            raise DataSetError(f"{path}: mask values {values.min()}..{values.max()} are not labels 0..255.")
        near_extremes = np.mean((arr <= 10) | (arr >= 245))
        if arr.dtype == np.uint8 and values.max() >= 245 and near_extremes >= 0.99:
            labels = (arr >= 128).astype(np.uint8)  # JPEG-compressed binary mask
        elif values.max() < 64:
            labels = arr.astype(np.uint8)
        else:
            raise DataSetError(
                f"{path}: mask has {values.size} distinct values ({values.min()}..{values.max()}); expected "
                "0/1, 0/255 or labels 0..63. Re-export it as a label image."
            )
    else:
        raise DataSetError(f"{path}: mask has fractional values; expected 0/1, 0/255 or integer labels.")
    if invert:
        if labels.max() > 1:
            raise DataSetError(f"{path}: invert applies to binary masks; this one has labels up to {labels.max()}.")
        labels = 1 - labels
    return labels


def _check_mask_geometry(image, mask, mask_image, mask_path):
    spatial = image.pixels.shape[:2] if image.format in ("raster", "dicom") else image.pixels.shape[:3]
    if mask.shape != tuple(spatial):
        raise DataSetError(
            f"{mask_path}: mask shape {mask.shape} differs from its image's {tuple(spatial)} "
            f"({image.path.name}). Masks must be drawn on the image grid; resample the mask."
        )
    if image.affine is not None and mask_image.affine is not None and not np.allclose(image.affine, mask_image.affine, atol=1e-3):
        raise DataSetError(
            f"{mask_path}: mask orientation/position (affine) differs from its image's ({image.path.name}). "
            "Resample the mask onto the image grid (e.g. in 3D Slicer)."
        )


def _squeeze_channel(mask, image):
    """Drop a trailing length-1 axis a mask has and its image lacks ((H, W, 1) for (H, W))."""
    spatial_ndim = 2 if image.format in ("raster", "dicom") else min(image.pixels.ndim, 3)
    if mask.ndim == spatial_ndim + 1 and mask.shape[-1] == 1:
        return mask[..., 0]
    return mask


def load_paired_folders(root, image_dir="images", mask_dir="masks", invert=False, allow_unmatched=False):
    """Read a paired-folder data set: ``root/images/*`` with ``root/masks/*``.

    Parameters
    ----------
    root : str or Path
    image_dir, mask_dir : str
    invert : bool
        Masks mark the foreground with 0 (see ``mask_to_labels``).
    allow_unmatched : bool
        See ``find_pairs``.

    Returns
    -------
    list of Case
        Images with their geometry, masks as uint8 labels of the same spatial shape.

    Raises
    ------
    DataSetError
        For any file that cannot be used, naming it and the fix. Files are only read.
    """
    from medseg_course.io import ImageReadError, read_image  # noqa: PLC0415

    cases = []
    for name, image_path, mask_path in find_pairs(root, image_dir, mask_dir, allow_unmatched):
        try:
            image = read_image(image_path)
            mask_image = read_image(mask_path)
        except ImageReadError as err:
            raise DataSetError(str(err)) from None
        mask = _squeeze_channel(mask_to_labels(mask_image.pixels, mask_path, invert, mask_image.is_colour), image)
        _check_mask_geometry(image, mask, mask_image, mask_path)
        cases.append(Case(name, image, mask, mask_path))
    return cases


def load_msd(root):
    """Read a Medical Segmentation Decathlon task folder (``dataset.json``, ``imagesTr/``, ``labelsTr/``).

    Parameters
    ----------
    root : str or Path
        The task folder, e.g. ``Task04_Hippocampus``.

    Returns
    -------
    (list of Case, dict)
        3D cases (image pixels in nibabel order, 4D multi-modal images keep their last
        axis as channels), and the parsed ``dataset.json`` with ``labels`` as ``{int: name}``.

    Raises
    ------
    DataSetError
        A missing or malformed ``dataset.json``, or one that lists files that do not exist
        or whose image and label grids differ.
    """
    import json  # noqa: PLC0415

    from medseg_course.io import ImageReadError, read_nifti  # noqa: PLC0415

    root = Path(root)
    manifest_path = root / "dataset.json"
    if not manifest_path.is_file():
        raise DataSetError(
            f"{manifest_path}: not found. A Decathlon task folder holds dataset.json, imagesTr/ and labelsTr/."
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        entries = manifest["training"]
        labels = {int(k): str(v) for k, v in manifest["labels"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise DataSetError(
            f"{manifest_path}: not a valid Decathlon dataset.json ({type(err).__name__}: {err}); it needs "
            "'labels' and 'training' entries."
        ) from None
    if not isinstance(entries, list):
        raise DataSetError(f"{manifest_path}: 'training' must be a list of {{'image': ..., 'label': ...}} entries.")
    if not entries:
        raise DataSetError(f"{manifest_path}: the 'training' list is empty.")
    boundary = root.resolve()
    cases = []
    for entry in entries:
        try:
            image_path = (root / entry["image"]).resolve()
            label_path = (root / entry["label"]).resolve()
        except (KeyError, TypeError):
            raise DataSetError(f"{manifest_path}: training entry {entry!r} lacks 'image' or 'label'.") from None
        for key, path in (("image", image_path), ("label", label_path)):
            if boundary not in path.parents:
                raise DataSetError(
                    f"{manifest_path}: training entry points outside the task folder ({entry[key]!r}). "
                    "Keep every file under the folder that holds dataset.json."
                )
        for path in (image_path, label_path):
            if not path.is_file():
                raise DataSetError(
                    f"{path}: listed in dataset.json but missing. Restore the file or remove its entry."
                )
        try:
            image = read_nifti(image_path)
            label_image = read_nifti(label_path)
        except ImageReadError as err:
            raise DataSetError(str(err)) from None
        mask = _squeeze_channel(mask_to_labels(label_image.pixels, label_path, colour=False), image)
        unknown = sorted(set(np.unique(mask).tolist()) - set(labels))
        if unknown:
            raise DataSetError(
                f"{label_path}: labels {unknown} are not declared in dataset.json's labels {labels}. "
                "Fix the label map or the 'labels' entry."
            )
        _check_mask_geometry(image, mask, label_image, label_path)
        name = Path(entry["image"]).name.split(".")[0]
        subject = entry.get("subject") if isinstance(entry, dict) else None
        cases.append(Case(name, image, mask, label_path, None if subject is None else str(subject)))
    manifest["labels"] = labels
    return cases, manifest


def split_cases(names, val_fraction=0.2, test_fraction=0.0, seed=0, groups=None):
    """Split case names into train/val/test, by case (never by slice), or by subject.

    Parameters
    ----------
    names : list of str
    val_fraction, test_fraction : float
        Shares of the cases (of the subjects, with ``groups``) for validation and test.
    seed : int
    groups : dict of str to str, optional
        Each case's subject: the cases of one subject (both sides of one head, follow-up
        scans) land in the same part, so no test subject was seen in training.

    Returns
    -------
    dict of str to list of str
        ``{"train": [...], "val": [...], "test": [...]}``; val and test get at least one
        case each when their fraction is positive.
    """
    names = sorted(set(names))
    for label, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= value < 1:
            raise ValueError(f"{label} must be in [0, 1). Received: {label}={value}")
    subject_of = {name: (groups or {}).get(name) or name for name in names}
    subjects = sorted(set(subject_of.values()))
    order = [subjects[i] for i in np.random.default_rng(seed).permutation(len(subjects))]
    n_val = max(1, round(val_fraction * len(subjects))) if val_fraction > 0 else 0
    n_test = max(1, round(test_fraction * len(subjects))) if test_fraction > 0 else 0
    if n_val + n_test >= len(subjects):
        unit = "subjects" if len(subjects) < len(names) else "cases"
        raise ValueError(
            f"{len(subjects)} {unit} cannot give {n_val} validation and {n_test} test {unit} and still leave "
            "training ones. Add cases or lower the fractions."
        )
    members = {subject: [] for subject in subjects}
    for name in names:
        members[subject_of[name]].append(name)
    parts = {"val": order[:n_val], "test": order[n_val : n_val + n_test], "train": order[n_val + n_test :]}
    return {part: [name for subject in chosen for name in members[subject]] for part, chosen in parts.items()}


def volume_slices(case, axis=2):
    """The 2D slices of a 3D case along ``axis``: (images (Z, H, W, C), masks (Z, H, W)).

    4D images (multi-modal Decathlon tasks) keep their last axis as channels.
    """
    pixels = np.asarray(case.image.pixels, dtype=np.float32)
    if pixels.ndim == 3:
        pixels = pixels[..., None]
    if pixels.ndim != 4:
        raise DataSetError(f"{case.image.path}: expected a 3D volume (or 4D multi-modal); got shape {pixels.shape}.")
    images = np.moveaxis(pixels, axis, 0)
    masks = np.moveaxis(case.mask, axis, 0)
    return images, masks


# ------------------------------------------------------------------------ downloads


def prediction_inputs(path):
    """The images ``path`` names: itself (a file, or a folder holding one DICOM series), or
    a folder's image files and DICOM series sub-folders. A folder with other files, or none,
    is a ``DataSetError``."""
    from medseg_course.io import ImageReadError, list_image_files  # noqa: PLC0415

    path = Path(path)
    if path.is_file() or (path.is_symlink() and not path.exists()):
        return [path]  # read_image names what is wrong with it, a broken link included
    if not path.is_dir():
        raise DataSetError(f"{path}: no such file or folder.")
    files, others = list_image_files(path, inside=path)
    dicom_dirs = [p for p in sorted(path.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    if others and not files and not dicom_dirs:
        try:  # a folder of one DICOM series whose files have no suffix
            from medseg_course.io import read_dicom_series  # noqa: PLC0415

            read_dicom_series(path)
            return [path]
        except ImageReadError:
            pass
    if others:
        raise DataSetError(f"{path}: {len(others)} non-image file(s) ({', '.join(p.name for p in others[:3])}); move them out.")
    if not files and not dicom_dirs:
        raise DataSetError(f"{path}: the folder holds no images.")
    return files + dicom_dirs


def masks_by_case(folder, role="masks"):
    """``({case key: mask file}, [other files])`` of a folder of masks, keyed as ``find_pairs``
    pairs names; two masks of one case are a ``DataSetError``."""
    from medseg_course.io import list_image_files  # noqa: PLC0415

    folder = Path(folder)
    if not folder.is_dir():
        raise DataSetError(f"{folder}: no such folder (--{role}).")
    files, others = list_image_files(folder)
    if not files:
        raise DataSetError(f"{folder}: no mask files in the folder (--{role}).")
    keyed = {}
    for path in files:
        key = _pair_key(_stem(path))
        if key in keyed:
            raise DataSetError(f"{path}: {keyed[key].name} and {path.name} are both masks of case {key!r}; keep one.")
        keyed[key] = path
    return keyed, others


# ------------------------------------------------------------------ data in the package

#: Where the data sets that ship with the package live.
SAMPLE_DATA = Path(__file__).resolve().parent / "sample_data"


def hippocampus_folder():
    """The folder of the hippocampus MRI that ships with the package (208 patients of the
    Medical Segmentation Decathlon's Task04, CC BY-SA 4.0; its README gives provenance and
    citation)."""
    folder = SAMPLE_DATA / "hippocampus"
    if not (folder / "dataset.json").is_file():
        raise DataSetError(
            f"{folder}: the hippocampus data is missing from this installation; reinstall medseg-course "
            "(the data ships with the package), or pass a Decathlon folder of your own."
        )
    return folder


def load_hippocampus():
    """The 208 hippocampus MRI volumes with their labels (1 anterior, 2 posterior), offline.

    ``load_msd`` on ``hippocampus_folder()``: a list of ``Case`` (T1 volumes in nibabel
    order with their geometry; labels uint8) and the parsed ``dataset.json``.
    """
    return load_msd(hippocampus_folder())


def load_nuclei():
    """The fluorescence microscopy image of cell nuclei that ships with the package (from the
    2018 Data Science Bowl via ``stardist``; its README gives provenance, licence and
    citation): ``(image (512, 512) uint8, labels (512, 512) uint16)``, one integer per
    nucleus."""
    from skimage import io as skio  # noqa: PLC0415

    folder = SAMPLE_DATA / "nuclei"
    try:
        return skio.imread(folder / "nuclei_image.png"), skio.imread(folder / "nuclei_labels.png")
    except (OSError, ValueError):
        raise DataSetError(f"{folder}: the nuclei image is missing from this installation; reinstall "
                           "medseg-course (the data ships with the package).") from None
