"""Command line: ``medseg-course train | predict | evaluate | info``.

``train`` turns a data set (your folders, a Decathlon task, or the built-in phantoms or
MNI152 brain) into a run folder::

    RUN_DIR/config.json    every setting, the data split and how inputs are preprocessed
    RUN_DIR/log.csv        one row per epoch (loss, Dice, validation loss and Dice, time)
    RUN_DIR/model.keras    the model of the best validation Dice
    RUN_DIR/best.keras     the same, written during training whenever validation Dice improved
    RUN_DIR/resume.npz     model, optimizer and random state after the last epoch (--resume)
    RUN_DIR/metrics.json   validation metrics per case and their summary
    RUN_DIR/overlays/      a few validation cases with truth and prediction contours

Every file is written to a temporary name and renamed, so a run killed at any moment
(power cut, ``kill -9``) leaves complete files, and ``--resume`` continues from the last
completed epoch to the result an uninterrupted run would have reached. Ctrl-C stops after
saving the best model so far. A run folder is never reused without ``--overwrite`` (which
replaces only the files listed here) or ``--resume``.

``predict`` applies a run's model to new images and writes masks at each image's original
size and geometry (PNG for photographs and PNG inputs, NIfTI for NIfTI and DICOM inputs).
``evaluate`` compares predicted masks with reference masks, in millimetres where the files
carry a spacing. Errors are one line on stderr with a non-zero exit code; input folders are
only ever read. Models are loaded with Keras' ``safe_mode`` (a ``.keras`` file cannot run
code); legacy HDF5 and SavedModel files, which can, need ``--allow-legacy-model``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["main", "build_parser"]

CONFIG_NAME = "config.json"
#: What ``train`` writes into a run folder (``--overwrite`` deletes these and nothing else).
RUN_FILES = ("config.json", "log.csv", "model.keras", "best.keras", "resume.npz", "metrics.json", "overlays")
#: Settings that must match for ``--resume`` to continue a run.
RESUME_KEYS = ("data", "mode", "input_size", "channels", "num_classes", "model", "depth", "base_filters", "width",
               "loss", "batch_size", "learning_rate", "augment", "seed", "threads", "split", "precision")
#: What a run folder written before a setting existed used (its config.json lacks the key).
RESUME_DEFAULTS = {"precision": "float32"}
LEGACY_MODEL_SUFFIXES = (".h5", ".hdf5", ".pb")
#: Tolerance of the surface Dice, in ``distance_unit`` (mm where the spacing is known).
SURFACE_TOLERANCE = 1.0
MODEL_NAME = "model.keras"


class CLIError(Exception):
    """A problem the user can fix; printed as one line."""


# --------------------------------------------------------------------------- helpers


def _normalise(pixels):
    """Clip to the 0.5-99.5 percentiles of the whole image or volume, rescale to [0, 1].

    The same rule for training and prediction, so a model sees inputs on the scale it
    learned, whatever the scanner's units (HU, MR arbitrary units, 8 or 16 bit).
    """
    from medseg_course.preprocessing import clip_percentiles  # noqa: PLC0415

    arr = np.asarray(pixels, dtype=np.float32)
    flat = arr.reshape(-1, arr.shape[-2], arr.shape[-1]) if arr.ndim > 3 else arr
    return clip_percentiles(flat).reshape(arr.shape)


def _case_slices(case):
    """A case as normalised 2D slices (Z, H, W, C) float32 and masks (Z, H, W) uint8 (or None)."""
    image, mask = case.image, case.mask
    pixels = np.asarray(image.pixels, dtype=np.float32)
    if image.format == "dicom-series":  # already (Z, H, W), slices first
        images, masks = pixels[..., None], mask
    elif image.format == "nifti":  # nibabel (i, j, k[, channel]): slices along k
        while pixels.ndim < 4:
            pixels = pixels[..., None]
        if mask is not None and mask.ndim == 2:
            mask = mask[..., None]
        images = np.moveaxis(pixels, 2, 0)
        masks = None if mask is None else np.moveaxis(mask, 2, 0)
    else:  # one 2D image, grey or colour
        images = (pixels[..., None] if pixels.ndim == 2 else pixels)[None]
        masks = None if mask is None else mask[None]
    return _normalise(images), masks


def _match_channels(images, channels):
    if images.shape[-1] == channels:
        return images
    if images.shape[-1] == 1:
        return np.repeat(images, channels, axis=-1)
    raise CLIError(
        f"images have {images.shape[-1]} channels but the model takes {channels}; convert the images "
        "(e.g. colour to greyscale) to match the training data."
    )


def _fit_all(images, masks, size):
    from medseg_course.preprocessing import fit_to_shape  # noqa: PLC0415

    fitted_images = np.stack([fit_to_shape(im, (size, size))[0] for im in images])
    fitted_masks = None if masks is None else np.stack([fit_to_shape(m, (size, size), is_mask=True)[0] for m in masks])
    return fitted_images.astype(np.float32), fitted_masks


def _as_targets(masks, num_classes):
    """Model targets: (N, H, W, 1) float32 for binary, (N, H, W) uint8 labels otherwise."""
    if num_classes == 1:
        return (masks > 0).astype(np.float32)[..., None]
    return masks.astype(np.uint8)


def _progress(iterable, total, description):
    from tqdm import tqdm  # noqa: PLC0415

    return tqdm(iterable, total=total, desc=description, unit="case", disable=not sys.stderr.isatty(), file=sys.stderr)


class CLIInterrupted(Exception):
    """Ctrl-C during a command; the message says what was kept."""


def _write_json(path, payload):
    from medseg_course.utils import atomic_path  # noqa: PLC0415

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2))


def _epochs_logged(out):
    log = out / "log.csv"
    return max(0, len(log.read_text().splitlines()) - 1) if log.is_file() else 0


def _check_run_folder(out, args):
    """Refuse to mix a new run into an old one, or to write into the data folder."""
    if args.overwrite and args.resume:
        raise CLIError("--overwrite and --resume contradict each other; pass one of them.")
    if args.data not in ("phantom", "mni152"):
        data = Path(args.data).resolve()
        target = out.resolve()
        if target == data or data in target.parents:
            raise CLIError(f"--out {out} is inside the data folder {data}; write runs elsewhere so the data stay untouched.")
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out} is a file, not a folder; choose a folder name for the run.")
    if args.resume:
        if not (out / CONFIG_NAME).is_file():
            raise CLIError(f"{out / CONFIG_NAME}: not found, so there is no run to resume in {out}; start without --resume.")
        return
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise CLIError(f"{out} exists and is not empty; choose a new --out, or pass --overwrite or --resume.")
    if args.overwrite and out.is_dir():
        foreign = [p.name for p in out.iterdir() if p.name not in RUN_FILES]
        if foreign:
            raise CLIError(
                f"{out} holds files that are not from a medseg-course run ({', '.join(sorted(foreign)[:3])}); "
                "--overwrite only replaces run folders. Choose another --out."
            )


def _clear_run_folder(out):
    import shutil  # noqa: PLC0415

    for name in RUN_FILES:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def _check_resumable(out, config):
    try:
        saved = json.loads((out / CONFIG_NAME).read_text())
    except (OSError, ValueError) as err:
        raise CLIError(f"{out / CONFIG_NAME}: not readable ({type(err).__name__}); cannot resume this run.") from None
    changed = [key for key in RESUME_KEYS
               if saved.get(key, RESUME_DEFAULTS.get(key)) != json.loads(json.dumps(config.get(key)))]
    if changed:
        raise CLIError(
            f"{out / CONFIG_NAME}: the run was started with other settings ({', '.join(changed)}); "
            "resume with the original command line, or start a new run."
        )


# ------------------------------------------------------------------------- train


def _load_training_data(args):
    """Return (train_cases, val_cases, info) where cases are lists of (name, slices, masks, image)."""
    from medseg_course import data  # noqa: PLC0415

    source = args.data
    if source == "phantom":
        images, masks = data.make_phantoms(args.num_images, image_size=args.image_size, target=args.target, seed=args.seed)
        labels = masks[..., 0].astype(np.uint8) if masks.ndim == 4 else masks
        n_val = max(1, round(args.val_fraction * len(images)))
        cases = [(f"phantom_{i:04d}", _normalise(images[i : i + 1]), labels[i : i + 1], None) for i in range(len(images))]
        return cases[n_val:], cases[:n_val], {"source": "phantom", "spacing_mm": None}
    if source == "mni152":
        slices = data.load_mni152_slices("brain" if args.target == "organ" else args.target, image_size=args.image_size)
        split = data.slab_split(slices.slice_index, seed=args.seed)
        labels = slices.masks[..., 0].astype(np.uint8) if slices.masks.ndim == 4 else slices.masks
        make = lambda idx: [  # noqa: E731
            (f"mni152_z{slices.slice_index[i]:03d}", _normalise(slices.images[i : i + 1]), labels[i : i + 1], None)
            for i in idx
        ]
        return make(split["train"]), make(split["val"]), {"source": "mni152", "spacing_mm": list(slices.spacing_mm)}
    root = Path(source)
    if not root.exists():
        raise CLIError(f"{root}: no such folder. Give a data folder, or 'phantom' or 'mni152'.")
    if not root.is_dir():
        raise CLIError(f"{root}: not a folder; --data takes a data folder (images/ and masks/, or a Decathlon task).")
    layout = args.layout
    if layout == "auto":
        if (root / "dataset.json").is_file():
            layout = "msd"
        elif (root / "images").is_dir() and (root / "masks").is_dir():
            layout = "folders"
        else:
            raise CLIError(
                f"{root}: unknown layout: expected images/ and masks/ (--layout folders) or dataset.json with "
                "imagesTr/ and labelsTr/ (--layout msd)."
            )
    if layout == "msd":
        cases, _ = data.load_msd(root)
    else:
        cases = data.load_paired_folders(root, invert=args.invert_masks, allow_unmatched=args.allow_unmatched)
    if len(cases) < 2:
        raise CLIError(f"{root}: {len(cases)} case(s); training needs at least 2 (one for validation).")
    split = data.split_cases([c.name for c in cases], val_fraction=args.val_fraction, seed=args.seed)
    prepared = {c.name: (c.name, *_case_slices(c), c.image) for c in cases}
    train = [prepared[n] for n in split["train"]]
    val = [prepared[n] for n in split["val"]]
    return train, val, {"source": str(root.resolve()), "layout": layout}


def _choose_mode(args, cases):
    if args.mode != "auto":
        return args.mode
    longest = np.median([max(slices.shape[1:3]) for _, slices, _, _ in cases])
    return "patch" if longest > 2 * args.image_size else "resize"


def _training_arrays(cases, mode, size, num_classes, channels, patches_per_image, seed):
    from medseg_course.training import sample_patches  # noqa: PLC0415

    images = [_match_channels(s, channels) for _, s, _, _ in cases]
    masks = [m for _, _, m, _ in cases]
    if mode == "resize":
        pairs = [_fit_all(im, m, size) for im, m in zip(images, masks)]
        x = np.concatenate([p[0] for p in pairs])
        y = np.concatenate([p[1] for p in pairs])
    else:
        flat_images = [s for stack in images for s in stack]
        flat_masks = [m for stack in masks for m in stack]
        x, y = sample_patches(flat_images, flat_masks, (size, size), patches_per_image, 0.5, seed)
    return x, _as_targets(y, num_classes)


def _build_model(args, size, channels, num_classes):
    """The model ``args`` asks for; under ``--precision bfloat16`` its layers compute in
    bfloat16 (Keras's ``mixed_bfloat16``: float32 weights, loss and head). The policy is set
    only while the layers are made, so the caller's global policy is left as it was."""
    import keras  # noqa: PLC0415

    from medseg_course import models, utils  # noqa: PLC0415

    previous = keras.config.dtype_policy()
    if args.precision == "bfloat16":
        if not utils.bf16_hardware():
            print("warning: this CPU has no bfloat16 instructions (AVX512-BF16 or AMX); bfloat16 is emulated "
                  "and trains slower than float32 here. Use --precision float32.", file=sys.stderr)
        keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        if args.model == "seed":
            return models.build_seed_encoder_decoder((size, size, channels), num_classes=num_classes, width=args.width)
        return models.build_unet((size, size, channels), num_classes=num_classes, depth=args.depth,
                                 base_filters=args.base_filters)
    finally:
        keras.config.set_dtype_policy(previous)


def _cmd_train(args):
    from medseg_course import utils  # noqa: PLC0415

    out = Path(args.out)
    _check_run_folder(out, args)
    info_env = utils.setup(seed=args.seed, threads=args.threads)
    from medseg_course import losses, training  # noqa: PLC0415

    start = time.perf_counter()
    train_cases, val_cases, source_info = _load_training_data(args)
    all_cases = train_cases + val_cases
    num_labels = int(max(int(m.max()) for _, _, m, _ in all_cases)) + 1
    num_classes = 1 if num_labels <= 2 else num_labels
    channels = max(s.shape[-1] for _, s, _, _ in all_cases)
    mode = _choose_mode(args, all_cases)
    size = args.image_size if mode == "resize" else args.patch_size
    x_train, y_train = _training_arrays(train_cases, mode, size, num_classes, channels, args.patches_per_image, args.seed)
    x_val, y_val = _training_arrays(val_cases, mode, size, num_classes, channels, args.patches_per_image, args.seed + 1)
    model = _build_model(args, size, channels, num_classes)
    if args.loss not in losses.LOSS_NAMES:
        raise CLIError(f"unknown --loss {args.loss!r}; choose one of {', '.join(losses.LOSS_NAMES)}.")
    if num_classes > 1 and args.loss in ("bce", "weighted_bce"):
        raise CLIError(f"--loss {args.loss} is for binary masks; these masks have {num_classes} labels. Use dice_ce.")
    training.compile_model(model, loss=args.loss, learning_rate=args.learning_rate)
    augment = None if args.no_augment else training.Augmentation()
    train_ds = training.make_dataset(x_train, y_train, batch_size=args.batch_size, augment=augment, seed=args.seed)
    val_ds = training.make_dataset(x_val, y_val, batch_size=args.batch_size, shuffle=False)
    config = {
        "command": "train",
        "data": source_info,
        "mode": mode,
        "input_size": size,
        "channels": int(channels),
        "num_classes": num_classes,
        "labels": list(range(num_labels)),
        "model": args.model,
        "depth": args.depth,
        "base_filters": args.base_filters,
        "width": args.width,
        "loss": args.loss,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "augment": not args.no_augment,
        "precision": args.precision,
        "seed": args.seed,
        "threads": args.threads,
        "time_budget_min": args.time_budget,
        "normalisation": "per image/volume: clip to 0.5-99.5 percentiles, rescale to [0, 1]",
        "split": {"train": [c[0] for c in train_cases], "val": [c[0] for c in val_cases]},
        "training_samples": int(len(x_train)),
        "validation_samples": int(len(x_val)),
        "device": info_env.device,
        "versions": info_env.versions,
    }
    if args.resume:
        _check_resumable(out, config)
    else:
        if args.overwrite:
            _clear_run_folder(out)
        utils.check_writable_folder(out)
        _write_json(out / CONFIG_NAME, config)
    print(
        f"training {model.name} ({model.count_params():,} parameters) on {len(x_train)} {mode} samples "
        f"of {size}x{size}x{channels}, validating on {len(x_val)}; run folder {out}",
        file=sys.stderr,
    )
    try:
        training.fit(
            model, train_ds, val_ds, epochs=args.epochs, patience=args.patience, out_dir=out,
            overwrite=args.overwrite, verbose=1 if sys.stdout.isatty() else 2,
            time_budget_s=None if args.time_budget is None else args.time_budget * 60, resume=args.resume,
        )
    except KeyboardInterrupt:
        training.save_model(model, out / MODEL_NAME)  # fit restored the best weights so far
        epochs_done = _epochs_logged(out)
        raise CLIInterrupted(
            f"interrupted after {epochs_done} complete epoch(s); the best model so far is {out / MODEL_NAME} "
            f"and the log {out / 'log.csv'}. Continue with the same command and --resume."
        ) from None
    training.save_model(model, out / MODEL_NAME)
    train_seconds = time.perf_counter() - start
    metrics = _validation_metrics(model, config, val_cases, out)
    metrics["train_seconds"] = round(train_seconds, 1)
    metrics["epochs_run"] = _epochs_logged(out)
    _write_json(out / "metrics.json", metrics)
    summary = metrics["summary"]
    print(json.dumps({"run": str(out), "val_dice": summary.get("dice"), "train_seconds": metrics["train_seconds"],
                      "epochs_run": metrics["epochs_run"]}))
    return 0


def _predict_case(model, config, slices, tta=False, clean=None):
    """Label map (Z, H, W) uint8 for one case's normalised slices (Z, H, W, C) at native size.

    ``clean``: optional dict of ``postprocessing.postprocess`` options (binary models only).
    """
    from medseg_course.inference import predict, predict_sliding_window  # noqa: PLC0415
    from medseg_course.postprocessing import postprocess  # noqa: PLC0415
    from medseg_course.preprocessing import fit_to_shape, restore_shape  # noqa: PLC0415

    slices = _match_channels(slices, config["channels"])
    size = config["input_size"]
    out = []
    for image in slices:
        if config["mode"] == "patch":
            probs = predict_sliding_window(model, image, (size, size), tta=tta)
        else:
            fitted, fit_info = fit_to_shape(image, (size, size))
            probs = restore_shape(predict(model, fitted, tta=tta), fit_info)
            probs = probs[..., None] if probs.ndim == 2 else probs
        if config["num_classes"] == 1:
            labels = postprocess(probs, **(clean or {}))[..., 0]
        else:
            labels = np.argmax(probs, axis=-1)
        out.append(labels.astype(np.uint8))
    return np.stack(out)


def _validation_metrics(model, config, val_cases, out):
    rows = []
    overlay_dir = out / "overlays"
    overlay_dir.mkdir(exist_ok=True)
    for index, (name, slices, masks, image) in enumerate(_progress(val_cases, len(val_cases), "validating")):
        pred = _predict_case(model, config, slices)
        spacing = None if image is None or image.spacing_mm is None else image.spacing_mm
        rows.extend(_score(name, masks, pred, spacing, config["num_classes"]))
        if index < 4:
            middle = int(np.argmax(masks.reshape(len(masks), -1).sum(1)))
            _save_overlay(slices[middle], masks[middle], pred[middle], overlay_dir / f"{name}.png", name)
    return {"per_case": rows, "summary": _summarise(rows)}


def _score(name, truth, pred, spacing, num_classes):
    """Metric rows for one case: truth and pred label arrays (Z, H, W), Z = 1 for a 2D image."""
    from medseg_course.metrics import evaluate_labels  # noqa: PLC0415

    volume = truth.shape[0] > 1
    spacing_axes = None
    if spacing is not None:
        if volume and len(spacing) >= 3:
            spacing_axes = (spacing[2], spacing[0], spacing[1])  # slices first
        elif not volume:
            spacing_axes = tuple(spacing[:2])
    t, p = (truth, pred) if volume else (truth[0], pred[0])
    labels = [1] if num_classes == 1 else list(range(1, num_classes))
    rows = evaluate_labels(t, p, labels, spacing_axes, SURFACE_TOLERANCE)
    return [{"case": name, **{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}}
            for row in rows]


def _summarise(rows):
    import pandas as pd  # noqa: PLC0415

    frame = pd.DataFrame(rows)
    numeric = frame.drop(columns=["case", "label", "distance_unit"], errors="ignore").apply(pd.to_numeric, errors="coerce")
    summary = {}
    for column in numeric.columns:
        values = numeric[column].dropna()
        summary[column] = None if values.empty else round(float(values.mean()), 4)
        summary[f"{column}_median"] = None if values.empty else round(float(values.median()), 4)
        summary[f"{column}_std"] = None if len(values) < 2 else round(float(values.std()), 4)
        summary[f"{column}_n_undefined"] = int(numeric[column].isna().sum())
    return summary


def _save_overlay(image, truth, pred, path, title):
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    from medseg_course.viz import overlay  # noqa: PLC0415

    display = image[..., 0] if image.shape[-1] == 1 else image
    ax = overlay(display, truth, pred, title=_printable(title))
    ax.figure.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(ax.figure)


# ------------------------------------------------------------------------ predict


def _load_run(model_path, allow_legacy=False):
    import zipfile  # noqa: PLC0415

    import keras  # noqa: PLC0415

    import medseg_course.losses  # noqa: F401, PLC0415  (registers the custom losses)
    import medseg_course.metrics as metrics_module  # noqa: PLC0415

    metrics_module.DiceMetric  # noqa: B018  (registers the metric class)
    path = Path(model_path)
    if path.is_dir() and not (path / MODEL_NAME).is_file() and (path / "saved_model.pb").is_file():
        legacy = True  # a TensorFlow SavedModel folder
    else:
        if path.is_dir():
            path = path / MODEL_NAME
        legacy = path.suffix.lower() in LEGACY_MODEL_SUFFIXES
    config_path = (path if path.is_dir() else path.parent) / CONFIG_NAME
    if not path.exists():
        raise CLIError(f"{path}: no such model file. Point --model to RUN_DIR/model.keras from medseg-course train.")
    if legacy and not allow_legacy:
        raise CLIError(
            f"{path}: legacy model format ({path.suffix or 'SavedModel'}), which can run arbitrary code when loaded; "
            "re-save it as .keras, or pass --allow-legacy-model if you trust its source."
        )
    if not legacy and path.suffix.lower() != ".keras":
        raise CLIError(f"{path}: not a .keras model file. Point --model to RUN_DIR/model.keras from medseg-course train.")
    if not config_path.is_file():
        raise CLIError(f"{config_path}: missing; the model's run folder must keep config.json (it says how to preprocess).")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        for key in ("mode", "input_size", "channels", "num_classes"):
            config[key]  # noqa: B018
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CLIError(f"{config_path}: not a run configuration from medseg-course train ({type(err).__name__}: {err}).") from None
    if not legacy and not zipfile.is_zipfile(path):
        raise CLIError(f"{path}: not a Keras model file (a .keras file is a zip archive; this one is not, or it is "
                       "truncated). Re-train or re-copy it.")
    import medseg_course.models  # noqa: F401, PLC0415  (registers FusedBatchNormalization for loading)

    try:
        # safe_mode: a .keras file whose config asks to deserialise Python code (a Lambda
        # layer's bytecode) is refused instead of run
        model = keras.models.load_model(path, compile=False, safe_mode=not legacy)
    except Exception as err:  # keras raises ValueError, OSError, zipfile errors
        if "arbitrary code execution" in str(err):
            raise CLIError(
                f"{path}: the model carries Python code (a Lambda layer), which Keras' safe_mode refuses to run; "
                "rebuild it without Lambda layers, or load it yourself with safe_mode=False only if you trust its source."
            ) from None
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise CLIError(f"{path}: not a loadable Keras model ({type(err).__name__}: {first[:200]}). Re-train or re-copy it.") from None
    return model, config


def _inputs(path):
    from medseg_course.io import ImageReadError, list_image_files  # noqa: PLC0415

    path = Path(path)
    if path.is_file() or (path.is_symlink() and not path.exists()):
        return [path]  # read_image names what is wrong with it, a broken link included
    if not path.is_dir():
        raise CLIError(f"{path}: no such file or folder.")
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
        raise CLIError(f"{path}: {len(others)} non-image file(s) ({', '.join(p.name for p in others[:3])}); move them out.")
    if not files and not dicom_dirs:
        raise CLIError(f"{path}: the folder holds no images.")
    return files + dicom_dirs


def _cmd_predict(args):
    from medseg_course import utils  # noqa: PLC0415
    from medseg_course.data import Case  # noqa: PLC0415
    from medseg_course.io import image_suffix, read_image, write_mask  # noqa: PLC0415

    given = Path(args.input)
    input_path = given.resolve()
    out = Path(args.out).resolve()
    if out == input_path or (input_path.is_dir() and input_path in out.parents):
        raise CLIError(f"--out {out} is inside the input folder; write predictions elsewhere so the input stays untouched.")
    files = _inputs(given)
    stems = [path.name[: -len(image_suffix(path))] if image_suffix(path) else path.name for path in files]
    existing = [out / f"{stem}_mask{ext}" for stem in stems for ext in (".png", ".nii.gz")
                if (out / f"{stem}_mask{ext}").exists()]
    if existing and not args.overwrite:
        raise CLIError(f"{existing[0]}: already exists ({len(existing)} mask(s) in --out would be replaced); "
                       "choose another --out or pass --overwrite.")
    utils.setup(seed=0, threads=args.threads)
    model, config = _load_run(args.model, allow_legacy=args.allow_legacy_model)
    utils.check_writable_folder(out)
    (out / "overlays").mkdir(exist_ok=True)
    written = []
    for path, stem in _progress(list(zip(files, stems)), len(files), "predicting"):
        image = read_image(path)
        slices, _ = _case_slices(Case(path.name, image, None))
        clean = {"min_size": args.min_size, "fill": args.fill_holes, "largest": args.largest}
        try:
            labels = _predict_case(model, config, slices, tta=args.tta, clean=clean)
        except CLIError as err:
            raise CLIError(f"{path}: {err}") from None
        if image.format == "raster":
            target, mask = out / f"{stem}_mask.png", labels[0]
        elif image.format == "dicom":
            target, mask = out / f"{stem}_mask.nii.gz", labels[0]
        elif image.format == "dicom-series":
            target, mask = out / f"{stem}_mask.nii.gz", labels  # (Z, H, W), the series' own order
        else:
            mask = np.moveaxis(labels, 0, 2)  # back to nibabel's (i, j, k)
            mask = mask[..., 0] if image.pixels.ndim == 2 else mask
            target = out / f"{stem}_mask.nii.gz"
        write_mask(mask, target, like=image, overwrite=args.overwrite)
        middle = int(np.argmax(labels.reshape(len(labels), -1).sum(1)))
        _save_overlay(slices[middle], None, labels[middle], out / "overlays" / f"{stem}.png", stem)
        written.append(str(target))
    print(json.dumps({"masks": written}))
    return 0


# ----------------------------------------------------------------------- evaluate


def _mask_files(folder, role):
    from medseg_course.data import _pair_key, _stem  # noqa: PLC0415
    from medseg_course.io import list_image_files  # noqa: PLC0415

    folder = Path(folder)
    if not folder.is_dir():
        raise CLIError(f"{folder}: no such folder (--{role}).")
    files, others = list_image_files(folder)
    if not files:
        raise CLIError(f"{folder}: no mask files in the folder (--{role}).")
    keyed = {}
    for path in files:
        key = _pair_key(_stem(path))
        if key in keyed:
            raise CLIError(f"{path}: {keyed[key].name} and {path.name} are both masks of case {key!r}; keep one.")
        keyed[key] = path
    return keyed, others


def _cmd_evaluate(args):
    import pandas as pd  # noqa: PLC0415

    from medseg_course.data import mask_to_labels  # noqa: PLC0415
    from medseg_course.io import read_image  # noqa: PLC0415

    out = Path(args.out)
    if out.is_dir():
        raise CLIError(f"--out {out} is a folder; give a file name for the CSV, e.g. {out / 'evaluation.csv'}.")
    if out.exists() and not args.overwrite:
        raise CLIError(f"{out} exists; choose another --out or pass --overwrite.")
    preds, pred_others = _mask_files(args.pred, "pred")
    truths, truth_others = _mask_files(args.truth, "truth")
    unmatched = sorted(set(preds) ^ set(truths))
    if (unmatched or pred_others or truth_others) and not args.allow_unmatched:
        paths = [preds.get(k) or truths.get(k) for k in unmatched] + pred_others + truth_others
        more = f" (and {len(paths) - 1} more: {', '.join(p.name for p in paths[1:4])})" if len(paths) > 1 else ""
        raise CLIError(
            f"{paths[0]}: {len(unmatched)} mask(s) without a counterpart and {len(pred_others) + len(truth_others)} "
            f"non-mask file(s){more}. Add or remove them, or pass --allow-unmatched."
        )
    rows = []
    keys = sorted(set(preds) & set(truths))
    if not keys:
        raise CLIError("no predicted mask matches a reference mask by name.")
    for key in _progress(keys, len(keys), "evaluating"):
        truth_image, pred_image = read_image(truths[key]), read_image(preds[key])
        truth = mask_to_labels(truth_image.pixels, truths[key], invert=args.invert_truth, colour=truth_image.is_colour)
        pred = mask_to_labels(pred_image.pixels, preds[key], colour=pred_image.is_colour)
        if truth.shape != pred.shape:
            raise CLIError(f"{preds[key]}: shape {pred.shape} differs from the reference {truth.shape} ({truths[key].name}).")
        if truth_image.affine is not None and pred_image.affine is not None and not np.allclose(
            truth_image.affine, pred_image.affine, atol=1e-3
        ):
            raise CLIError(
                f"{preds[key]}: orientation/position (affine) differs from the reference {truths[key].name}; "
                "resample the prediction onto the reference grid."
            )
        spacing = truth_image.spacing_mm or pred_image.spacing_mm
        if truth.ndim == 3 and truth.shape[-1] == 1:
            truth, pred = truth[..., 0], pred[..., 0]
        if truth.ndim == 3:  # a volume in nibabel (i, j, k) order -> slices first
            truth, pred = np.moveaxis(truth, 2, 0), np.moveaxis(pred, 2, 0)  # _score reorders the spacing
        else:
            truth, pred = truth[None], pred[None]
        num_classes = 1 if max(truth.max(), pred.max()) <= 1 else int(max(truth.max(), pred.max())) + 1
        rows.extend(_score(key, truth, pred, spacing, num_classes))
    frame = pd.DataFrame(rows)
    from medseg_course.utils import atomic_path, check_writable_folder  # noqa: PLC0415

    check_writable_folder(out.parent)
    with atomic_path(out) as tmp:
        frame.to_csv(tmp, index=False, errors="backslashreplace")  # file names need not be UTF-8
    summary = _summarise(rows)
    summary_path = out.with_name(out.stem + "_summary.json")
    _write_json(summary_path, summary)
    print(json.dumps({"cases": len(keys), "csv": str(out), "summary": str(summary_path),
                      "dice": summary.get("dice"), "dice_median": summary.get("dice_median"),
                      "dice_std": summary.get("dice_std"), "hd95": summary.get("hd95")}))
    return 0


# --------------------------------------------------------------------------- info


def _cmd_info(args):
    from medseg_course import utils  # noqa: PLC0415
    from medseg_course.data import MSD_TASKS, data_home  # noqa: PLC0415

    info = utils.setup(seed=0, threads=args.threads)
    home = data_home()
    report = {
        "device": info.device,
        "threads": info.threads,
        "python": info.python,
        "versions": info.versions,
        "data_home": str(home),
        "MEDSEG_DATA": os.environ.get("MEDSEG_DATA"),
        "downloaded_tasks": sorted(t for t in MSD_TASKS if (home / t / "dataset.json").is_file()),
        "built_in_data": ["phantom", "mni152"],
    }
    print(json.dumps(report, indent=2) if args.json else f"{info} | data home {home}")
    return 0


# ------------------------------------------------------------------------- parser


def build_parser():
    """The argument parser (exposed for tests and documentation)."""
    parser = argparse.ArgumentParser(
        prog="medseg-course",
        description="Train, apply and evaluate CNN segmentation models (medseg-course).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    info = sub.add_parser("info", help="versions, device and data folders")
    info.add_argument("--json", action="store_true", help="print JSON instead of one line")
    info.add_argument("--threads", type=int, default=2, help="CPU threads to pin (default 2)")
    info.set_defaults(handler=_cmd_info)

    train = sub.add_parser("train", help="train a model; writes a run folder",
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    train.add_argument("--data", required=True, help="data folder, or 'phantom' / 'mni152' for the built-in sets")
    train.add_argument("--layout", choices=("auto", "folders", "msd"), default="auto",
                       help="folders: images/ + masks/; msd: Decathlon dataset.json")
    train.add_argument("--out", required=True, help="run folder to create")
    train.add_argument("--mode", choices=("auto", "resize", "patch"), default="auto",
                       help="resize whole images, or train on native-resolution patches (auto: patches when "
                            "images are over twice --image-size)")
    train.add_argument("--image-size", type=int, default=128, help="model input side in resize mode")
    train.add_argument("--patch-size", type=int, default=128, help="patch side in patch mode")
    train.add_argument("--patches-per-image", type=int, default=16, help="patches drawn per image (patch mode)")
    train.add_argument("--model", choices=("unet", "seed"), default="unet", help="U-Net, or the article's encoder-decoder")
    # Depth 3, 8 filters, batch 8: chosen with benchmarks/recipes.py and time_to_dice.py (1-minute
    # runs through this CLI, oneDNN, 2 cores; benchmarks/results/). Against depth 4 / 16 filters /
    # batch 16, 8 filters reached held-out Dice 0.97 on the phantom task by 30 s (0.19) and 0.921 on
    # MNI152 grey matter by 15 s (0.731); then batch 8 and depth 3 on top of 8 filters reached Dice
    # 0.90 on the phantoms in 20.2 and 15.4 s (seeds 0, 1; depth 4 / batch 16 / 8 filters: not within
    # 36 s) and gave grey matter 0.930 / 0.931 / 0.947 by 15 / 30 / 60 s (0.915 / 0.921 / 0.931).
    train.add_argument("--depth", type=int, default=3, help="U-Net poolings (default 3)")
    train.add_argument("--base-filters", type=int, default=8, help="U-Net filters at the first level (default 8)")
    train.add_argument("--width", type=float, default=0.25, help="filter multiplier of the article's model")
    train.add_argument("--loss", default="dice_ce", help="bce, weighted_bce, dice, dice_ce, focal, tversky, focal_tversky")
    train.add_argument("--epochs", type=int, default=15)
    train.add_argument("--patience", type=int, default=None, help="early stopping patience (epochs)")
    train.add_argument("--batch-size", type=int, default=8, help="images per step (default 8)")
    train.add_argument("--learning-rate", type=float, default=1e-3)
    train.add_argument("--precision", choices=("float32", "bfloat16"), default="float32",
                       help="bfloat16: mixed precision; measure first (README): with AMX it trained a "
                            "16-filter U-Net 1.9x faster and the default 8-filter one 3x slower")
    train.add_argument("--val-fraction", type=float, default=0.2, help="share of cases for validation (split by case)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--threads", type=int, default=2, help="CPU threads (results repeat at a fixed count)")
    train.add_argument("--time-budget", type=float, default=None, metavar="MIN",
                       help="stop after this many minutes, keeping the best checkpoint")
    train.add_argument("--no-augment", action="store_true", help="turn augmentation off")
    train.add_argument("--invert-masks", action="store_true", help="masks mark the foreground with 0")
    train.add_argument("--allow-unmatched", action="store_true", help="skip unmatched files with a warning")
    train.add_argument("--num-images", type=int, default=160, help="phantom: number of images")
    train.add_argument("--target", default="organ", help="phantom: organ, lesion or multiclass; mni152: organ (brain), gm, wm, tissue")
    train.add_argument("--overwrite", action="store_true", help="reuse a non-empty run folder")
    train.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    train.set_defaults(handler=_cmd_train)

    predict = sub.add_parser("predict", help="segment images with a trained model")
    predict.add_argument("--model", required=True, help="RUN_DIR/model.keras (or RUN_DIR)")
    predict.add_argument("--input", required=True, help="an image file, a DICOM series folder, or a folder of images")
    predict.add_argument("--out", required=True, help="folder for the masks and overlays")
    predict.add_argument("--tta", action="store_true", help="average over flipped copies (4x slower)")
    predict.add_argument("--min-size", type=int, default=0, help="binary: remove components smaller than this (pixels)")
    predict.add_argument("--fill-holes", action="store_true", help="binary: fill enclosed holes")
    predict.add_argument("--largest", action="store_true", help="binary: keep only the largest component")
    predict.add_argument("--threads", type=int, default=2)
    predict.add_argument("--overwrite", action="store_true", help="replace existing mask files")
    predict.add_argument("--allow-legacy-model", action="store_true",
                         help="load an HDF5 (.h5) or SavedModel model, formats that can run code: trusted files only")
    predict.set_defaults(handler=_cmd_predict)

    evaluate = sub.add_parser("evaluate", help="compare predicted masks with reference masks")
    evaluate.add_argument("--pred", required=True, help="folder of predicted masks")
    evaluate.add_argument("--truth", required=True, help="folder of reference masks (matched by file stem)")
    evaluate.add_argument("--out", default="evaluation.csv", help="per-case CSV (a _summary.json goes beside it)")
    evaluate.add_argument("--invert-truth", action="store_true", help="reference masks mark the foreground with 0")
    evaluate.add_argument("--allow-unmatched", action="store_true", help="skip masks without a counterpart")
    evaluate.add_argument("--overwrite", action="store_true")
    evaluate.set_defaults(handler=_cmd_evaluate)
    return parser


def main(argv=None):
    """Entry point of the ``medseg-course`` console script; returns the exit status."""
    from medseg_course.data import DataSetError  # noqa: PLC0415
    from medseg_course.io import ImageReadError  # noqa: PLC0415

    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 2
    try:
        return args.handler(args)
    except CLIInterrupted as err:
        print(f"medseg-course {args.command}: {err}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"medseg-course {args.command}: interrupted; nothing was left half-written.", file=sys.stderr)
        return 130
    except (CLIError, DataSetError, ImageReadError, ValueError, FileExistsError, RuntimeError) as err:
        print(f"medseg-course {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except OSError as err:  # permissions, a full disk, a file that vanished
        where = f"{err.filename}: " if err.filename else ""
        print(f"medseg-course {args.command}: error: {_printable(where + (err.strerror or _one_line(err)))}",
              file=sys.stderr)
        return 2
    except Exception as err:  # a bug: say so in one line, with the traceback on request
        if os.environ.get("MEDSEG_DEBUG"):
            raise
        print(
            f"medseg-course {args.command}: internal error ({type(err).__name__}: {_one_line(err)}); this is a bug, "
            "please report it with the output of the same command run with MEDSEG_DEBUG=1.",
            file=sys.stderr,
        )
        return 3


def _one_line(err):
    text = str(err).strip()
    return _printable(text.splitlines()[0] if text else type(err).__name__)


def _printable(text):
    """``text`` with the undecodable bytes of non-UTF-8 file names escaped, so it can be printed."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
