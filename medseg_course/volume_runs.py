"""``medseg-course train --dims 3``: volumes in, a run folder out, its test Dice measured on
patients that chose nothing.

A data set of volumes (a Decathlon task, paired NIfTI folders, or the built-in
``hippocampus``) is split by patient into training, validation and test cases. Each volume
is brought to one grid (``geometry.prepare_volume``: canonical orientation, the data set's
median voxel size) and normalised on its own (``volumes.normalise_volume``). A 3D U-Net
trains on patches (``volume_training.VolumePatches``) within a time budget or a number of
epochs, with ``training.fit``'s checkpoints, exact resume and Ctrl-C handling; the
validation volumes pick the checkpoint; the test volumes are then predicted on their own
grid exactly as ``medseg-course predict`` would (``inference.segment_volume``) and scored
per label in millimetres and millilitres.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medseg_course import datasets, geometry, volumes
from medseg_course.datasets import DataSetError

__all__ = ["VolumeCase", "MIN_SLICES_3D", "DEFAULTS_3D", "AUGMENTATIONS_3D", "choose_dims", "load_volume_cases",
           "prepare_volume_case", "median_spacing", "default_patch_shape", "split_volume_cases", "score_cases", "train_run"]

#: ``--dims auto`` trains a 3D model when the first volumes have at least this many voxels
#: along each axis; thinner stacks are segmented slice by slice.
MIN_SLICES_3D = 16


@dataclass
class VolumeCase:
    """A volume ready for a 3D model: normalised pixels ``(Z, H, W, C)`` and labels
    ``(Z, H, W)`` on the common grid (``grid`` leads back to the file's own), the
    ``data.Case`` it came from (``case.image``, ``case.mask`` on the file's grid)."""

    name: str
    pixels: np.ndarray
    labels: np.ndarray | None
    grid: geometry.VolumeGrid
    case: datasets.Case


def choose_dims(source, layout="auto", min_slices=MIN_SLICES_3D):
    """``--dims auto``: 3 for the built-in hippocampus and for data folders whose first
    images (NIfTI headers, read without the pixels) are volumes with at least
    ``min_slices`` voxels along each axis; 2 otherwise (the 2D path then reports any
    problem with the folder)."""
    import json  # noqa: PLC0415

    import nibabel as nib  # noqa: PLC0415

    if source == "hippocampus":
        return 3
    root = Path(source)
    if source in ("phantom", "mni152") or not root.is_dir():
        return 2
    try:
        if (root / "dataset.json").is_file() and layout in ("auto", "msd"):
            entries = json.loads((root / "dataset.json").read_text(encoding="utf-8"))["training"][:3]
            paths = [root / entry["image"] for entry in entries]
        else:
            paths = sorted(p for p in (root / "images").iterdir() if p.name.endswith((".nii", ".nii.gz")))[:3]
        shapes = [nib.load(path).shape for path in paths]
    except Exception:  # noqa: BLE001  (unreadable: the 2D path names the problem)
        return 2
    return 3 if shapes and all(len(s) >= 3 and min(s[:3]) >= min_slices for s in shapes) else 2


def load_volume_cases(source, layout="auto"):
    """The labelled cases of ``--data SOURCE`` for a 3D run: ``"hippocampus"`` (built in), a
    Decathlon task folder or ``images/`` + ``masks/`` of NIfTI volumes. Returns
    ``(cases, info)``; a 2D data set is a ``DataSetError`` naming a 2D case."""
    if source == "hippocampus":
        cases, _ = datasets.load_hippocampus()
        info = {"source": "hippocampus", "layout": "msd"}
    else:
        root = Path(source)
        if not root.is_dir():
            raise DataSetError(f"{root}: no such folder. Give a data folder, or 'hippocampus'.")
        if layout == "auto":
            layout = "msd" if (root / "dataset.json").is_file() else "folders"
        cases = datasets.load_msd(root)[0] if layout == "msd" else datasets.load_paired_folders(root)
        info = {"source": str(root.resolve()), "layout": layout}
    flat = [c for c in cases if not geometry.is_volume(c.image)]
    if flat:
        raise DataSetError(
            f"{flat[0].image.path}: a 2D image (shape {np.shape(flat[0].image.pixels)}); --dims 3 needs volumes "
            "(NIfTI or DICOM series). Use --dims 2 for 2D images."
        )
    if len(cases) < 3:
        raise DataSetError(f"{source}: {len(cases)} case(s); a 3D run needs at least 3 (training, validation, test).")
    return cases, info


def median_spacing(cases):
    """The median voxel size of the cases along the canonical axes (S, R, A), in mm."""
    spacings = [geometry.canonical_spacing_mm(c.image.affine) for c in cases]
    return tuple(float(v) for v in np.median(np.asarray(spacings), axis=0))


def prepare_volume_case(case, spacing_mm=None):
    """A ``data.Case`` on the common grid (reoriented, resampled to ``spacing_mm``),
    normalised, with its labels brought along (nearest neighbour)."""
    pixels, grid = geometry.prepare_volume(case.image, spacing_mm)
    labels = None if case.mask is None else geometry.prepare_labels(case.mask, grid).astype(np.uint8)
    return VolumeCase(case.name, volumes.normalise_volume(pixels), labels, grid, case)


def default_patch_shape(shapes, depth=3, largest=(64, 96, 96)):
    """A patch that holds the median volume: its shape rounded up to a multiple of
    ``2**depth`` per axis, at most ``largest`` (larger volumes are tiled)."""
    factor = 2**depth
    median = np.median(np.asarray([s[:3] for s in shapes]), axis=0)
    return [int(min(cap, -(-int(np.ceil(m)) // factor) * factor)) for m, cap in zip(median, largest)]


def split_volume_cases(names, val_fraction=0.1, test_fraction=0.2, seed=0, groups=None):
    """Training, validation and test case names, split by subject where ``groups`` names
    each case's (``datasets.split_cases``), else by case: validation picks the checkpoint,
    test is scored once at the end."""
    return datasets.split_cases(names, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed,
                                groups=groups)


#: ``--augment NAME`` for 3D runs: keyword arguments of ``volumes.augment_volume`` (``None``: off).
#: ``anatomy``: left-right mirror, rotation about the long axis, zoom, brightness and gamma;
#: ``mirror``: the left-right mirror alone (what flip TTA needs the model to have seen).
AUGMENTATIONS_3D = {"anatomy": {}, "mirror": {"rotate_deg": 0.0, "scale": None, "intensity": 0.0, "gamma": None},
                    "off": None}

#: The 3D recipe ``medseg-course train --dims 3`` uses unless told otherwise. No augmentation:
#: in 15 minutes on 2 CPU cores (about a thousand steps) a hippocampus model was still fitting,
#: and on one split's validation people the mirror did not help (``benchmarks/README.md``, "The
#: hippocampus in 3D"), so the simpler recipe is the default; longer runs may want ``--augment``.
DEFAULTS_3D = {"depth": 3, "base_filters": 16, "batch_size": 2, "learning_rate": 1e-3, "steps_per_epoch": 100,
               "foreground_rate": 0.33, "val_fraction": 0.1, "test_fraction": 0.2, "bn_momentum": 0.5,
               "augment_3d": "off"}


def score_cases(model, config, cases, tta=None, progress=None):
    """Per case and label, every metric of ``evaluation.score_case`` for the prediction
    ``inference.segment_volume`` makes on the file's own grid, in mm and mL (``tta``: None
    follows ``config["tta"]``, as ``medseg-course predict`` does)."""
    from medseg_course.evaluation import score_case  # noqa: PLC0415
    from medseg_course.inference import segment_volume  # noqa: PLC0415

    rows = []
    for case in progress(cases) if progress else cases:
        image = case.case.image
        pred = segment_volume(model, image, config, tta=tta)
        truth = np.asarray(case.case.mask, np.uint8)
        rows.extend(score_case(case.name, image.to_slices(truth), image.to_slices(pred), image.slice_spacing_mm,
                               config["num_classes"]))
    return rows


def train_run(settings, out, resume=False, overwrite=False, report=print, progress=None):
    """Train a 3D U-Net as ``medseg-course train --dims 3`` does and fill the run folder.

    Parameters
    ----------
    settings : dict
        ``data`` (and ``layout``), ``epochs``, ``time_budget_min``, ``seed``, ``threads``,
        ``augment`` (False: none, whatever ``augment_3d`` says), ``loss``, and optionally the keys
        of ``DEFAULTS_3D`` (``augment_3d``: a name of ``AUGMENTATIONS_3D``) and ``patch_shape``.
    out : Path
        The run folder (checked by ``run_folder.check_run_folder`` beforehand).
    report : callable
        Receives one line saying what is being trained.

    Returns
    -------
    dict
        ``metrics.json``'s content: validation and test rows per case and label, their
        summaries, ``train_seconds`` and ``epochs_run``.
    """
    import time  # noqa: PLC0415

    from medseg_course import environment, evaluation, models, planning, run_folder, training  # noqa: PLC0415
    from medseg_course import volume_training  # noqa: PLC0415

    given = settings  # what the command line set: it overrides the plan
    settings = {**settings, **{k: v for k, v in DEFAULTS_3D.items() if settings.get(k) is None}}
    if settings.get("epochs") is None:  # a time budget decides, else 15 epochs
        settings["epochs"] = 1000 if settings.get("time_budget_min") else 15
    info_env = environment.setup(seed=settings["seed"], threads=settings.get("threads", 2))
    start = time.perf_counter()
    saved = settings.get("plan")
    saved_spacing = saved["choices"].get("spacing_mm", {}).get("value") if saved else None
    train, val, test, split, source_info = prepared_split(settings, tuple(saved_spacing) if saved_spacing else None)
    if saved:  # it must describe volumes like these
        planning.check_plan_fits(saved, volume_fingerprint(train, val, settings.get("data")), settings.get("data"))
    plan = saved or plan_volumes(train, val, settings)
    planning.apply_overrides(plan, given)
    settings.update({k: v for k, v in planning.settings_from_plan(plan).items()
                     if k in DEFAULTS_3D or k in ("patch_shape", "loss", "learning_rate")})
    spacing = tuple(plan["choices"]["spacing_mm"]["value"]) if plan["choices"]["spacing_mm"]["value"] else None
    labels = sorted({int(v) for c in train + val + test for v in np.unique(c.labels)})
    num_classes = 1 if max(labels) <= 1 else max(labels) + 1
    channels = int(train[0].pixels.shape[-1])
    patch = settings["patch_shape"]
    if any(int(v) % 2 ** settings["depth"] for v in patch):  # a saved plan's patch, another --depth
        patch = default_patch_shape([c.pixels.shape for c in train], settings["depth"])
        plan["choices"]["patch_shape"] = {"value": patch, "by": "plan", "reason": f"the median volume rounded up to "
                                          f"a multiple of {2 ** settings['depth']} for --depth {settings['depth']}"}
    augment = settings["augment_3d"] if settings.get("augment", True) else "off"  # --no-augment wins
    config = {
        "command": "train", "data": source_info, "dims": 3, "mode": "volume", "patch_shape": [int(v) for v in patch],
        "spacing_mm": list(spacing), "channels": channels, "num_classes": num_classes, "labels": labels,
        "model": "unet", **{k: settings[k] for k in ("depth", "base_filters", "batch_size", "learning_rate",
                                                      "steps_per_epoch", "foreground_rate", "bn_momentum")},
        "loss": settings.get("loss", "dice_ce"), "epochs": settings["epochs"],
        "augment": augment, "tta": augment != "off",  # flip TTA only for a model trained on mirrored volumes
        "seed": settings["seed"], "threads": settings.get("threads", 2),
        "time_budget_min": settings.get("time_budget_min"), "largest_structure": _one_piece(train),
        "normalisation": "per volume: clip to 0.5-99.5 percentiles, then z-score",
        "orientation": "reoriented to RAS+, slices first (S, R, A); predictions written on each input's grid",
        "split": split, "device": info_env.device, "versions": info_env.versions,
    }
    run_folder.start_run(out, config, resume, overwrite)
    run_folder.write_json(out / planning.PLAN_NAME, plan)
    if num_classes > 1 and config["loss"] in ("bce", "weighted_bce"):
        raise ValueError(f"--loss {config['loss']} is for binary masks; these masks have {num_classes} labels. "
                         "Use dice_ce.")
    model = models.build_unet((*config["patch_shape"], channels), num_classes, settings["depth"],
                              settings["base_filters"], bn_momentum=settings["bn_momentum"])
    training.compile_model(model, loss=config["loss"], learning_rate=settings["learning_rate"])
    report(f"training {model.name} ({model.count_params():,} parameters) on patches of "
           f"{'x'.join(map(str, config['patch_shape']))} voxels from {len(train)} volumes, validating on {len(val)}, "
           f"testing on {len(test)}; run folder {out}")
    patches = volume_training.VolumePatches([(c.pixels, c.labels) for c in train], config["patch_shape"],
                                            settings["batch_size"], settings["steps_per_epoch"],
                                            settings["foreground_rate"], AUGMENTATIONS_3D[config["augment"]],
                                            settings["seed"])
    budget = None if settings.get("time_budget_min") is None else settings["time_budget_min"] * 60
    try:
        training.fit(model, patches.dataset, epochs=settings["epochs"], patience=settings.get("patience"), out_dir=out,
                     overwrite=overwrite, time_budget_s=budget, resume=resume, verbose=settings.get("verbose", 2),
                     val_callback=volume_training.VolumeValidation([(c.pixels, c.labels) for c in val],
                                                                   config["patch_shape"]),
                     callbacks=[patches, volume_training.PolyDecay(settings["learning_rate"], settings["epochs"],
                                                                   budget)])
    except KeyboardInterrupt:  # fit restored the best weights so far: keep them
        training.save_model(model, out / run_folder.MODEL_NAME)
        raise
    training.save_model(model, out / run_folder.MODEL_NAME)
    train_seconds = time.perf_counter() - start
    val_rows = score_cases(model, config, val, progress=progress)
    test_rows = score_cases(model, config, test, progress=progress)
    metrics = {"val": {"per_case": val_rows, "summary": evaluation.summarise(val_rows)},
               "test": {"per_case": test_rows, "summary": evaluation.summarise(test_rows),
                        "per_label": evaluation.per_label(test_rows)},
               "train_seconds": round(train_seconds, 1), "epochs_run": run_folder.epochs_logged(out)}
    run_folder.write_json(out / "metrics.json", metrics)
    return metrics


def prepared_split(settings, spacing_mm=None):
    """The cases of a 3D run, split (by subject where named) and prepared on ``spacing_mm``
    (by default the training cases' median spacing): ``(train, val, test, split,
    source_info)`` of ``VolumeCase``."""
    settings = {**{k: v for k, v in DEFAULTS_3D.items()}, **{k: v for k, v in settings.items() if v is not None}}
    cases, source_info = load_volume_cases(settings["data"], settings.get("layout", "auto"))
    split = split_volume_cases([c.name for c in cases], settings["val_fraction"], settings["test_fraction"],
                               settings.get("seed", 0), groups={c.name: c.subject for c in cases if c.subject})
    training_names = set(split["train"])
    spacing = spacing_mm or median_spacing([c for c in cases if c.name in training_names])  # test cases: nothing
    prepared = {c.name: prepare_volume_case(c, spacing) for c in cases}
    train, val, test = ([prepared[n] for n in split[part]] for part in ("train", "val", "test"))
    return train, val, test, split, source_info


def volume_fingerprint(train, val, where=None):
    """``fingerprint.fingerprint`` of the training and validation volumes on the grid they
    were prepared on."""
    from medseg_course import fingerprint  # noqa: PLC0415
    from medseg_course.samples import SliceCase  # noqa: PLC0415

    fp = fingerprint.fingerprint([SliceCase(c.name, c.pixels, c.labels, tuple(c.grid.spacing_mm), c.case.image)
                                  for c in train + val], where)
    fp["spacing_mm"] = [round(float(v), 4) for v in train[0].grid.spacing_mm]
    return fp


def plan_volumes(train, val, settings):
    """The 3D plan (``planning.plan_3d``) from the fingerprint of the training and validation
    volumes (``volume_fingerprint``)."""
    from medseg_course import planning  # noqa: PLC0415

    fp = volume_fingerprint(train, val, settings.get("data"))
    depth = settings.get("depth") or DEFAULTS_3D["depth"]
    return planning.plan_3d(fp, DEFAULTS_3D, settings.get("time_budget_min"),
                            default_patch_shape([c.pixels.shape for c in train], depth))


def _one_piece(cases, share=0.9):
    """Whether the foreground of at least ``share`` of the training label maps is one
    connected structure (then predictions keep only their largest structure); data sets
    with several organs, lesions or vessel trees are left as predicted."""
    from scipy import ndimage  # noqa: PLC0415

    counts = [ndimage.label(c.labels > 0)[1] for c in cases]
    return bool(np.mean([n == 1 for n in counts]) >= share)

