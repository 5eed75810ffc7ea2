"""Command line: ``medseg-course plan | train | predict | evaluate | info``.

``plan`` fingerprints a data set and prints the recipe ``train`` would use, each choice
with its reason (``planning``); ``train`` adds what it measures when it starts (the step
time, hence the epochs a budget holds, and the memory estimate) and keeps the plan. ``train`` turns a data set (your folders, a Decathlon task, or the built-in phantoms or
MNI152 brain) into a run folder (``run_folder.RUN_FILES``): ``config.json`` (every setting,
the split, how inputs are prepared), ``log.csv``, ``model.keras`` (the best validation Dice,
loadable by plain Keras), ``best.keras``, ``resume.npz`` (for ``--resume``),
``metrics.json`` and ``overlays/``. Files are written atomically; a run folder is never
reused without ``--overwrite`` or ``--resume``; Ctrl-C keeps the best model so far.
``predict`` runs ``inference.segment`` on each image and writes masks on each image's grid
(PNG for photographs and PNG inputs, NIfTI otherwise); ``evaluate`` scores masks against
references (``evaluation.score_case``), in millimetres where the files carry a spacing.
This module parses arguments, calls the package and turns errors into one line on stderr
(exit status 2; 130 after Ctrl-C; 3 for a bug, "internal error"); input folders are only
ever read. Models load in Keras's ``safe_mode``;
legacy HDF5 and SavedModel files need ``--allow-legacy-model``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from medseg_course import run_folder
from medseg_course.run_folder import MODEL_NAME

__all__ = ["main", "build_parser"]


class CLIError(Exception):
    """A problem the user can fix; printed as one line."""


# --------------------------------------------------------------------------- helpers


def _progress(iterable, total, description):
    from tqdm import tqdm  # noqa: PLC0415

    return tqdm(iterable, total=total, desc=description, unit="case", disable=not sys.stderr.isatty(), file=sys.stderr)


class CLIInterrupted(Exception):
    """Ctrl-C during a command; the message says what was kept."""


# ------------------------------------------------------------------------- train


def _load_plan(path):
    """A plan saved by ``medseg-course plan --json`` or a run folder's plan.json."""
    try:
        plan = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CLIError(f"{path}: not a readable plan ({type(err).__name__}); give a plan.json from a run folder or "
                       "from medseg-course plan --json.") from None
    if not (isinstance(plan, dict) and isinstance(plan.get("choices"), dict) and plan.get("dims") in (2, 2.5, 3)
            and all(isinstance(c, dict) and "value" in c for c in plan["choices"].values())):
        raise CLIError(f"{path}: not a plan (it needs dims 2, 2.5 or 3 and choices with values); give a plan.json from "
                       "a run folder or from medseg-course plan --json.")
    return plan


def _plan_from_config(out):
    """The plan of a run folder written before plans existed, from its ``config.json``, so
    that ``--resume`` continues it with the settings it started with (None for 3D runs,
    whose defaults have not changed)."""
    from medseg_course.planning import PLAN_RECORDED  # noqa: PLC0415

    try:
        config = json.loads((out / run_folder.CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # check_resumable reports the unreadable file
    if not isinstance(config, dict) or config.get("dims") == 3 or config.get("mode") not in ("resize", "patch"):
        return None
    size_key = "image_size" if config["mode"] == "resize" else "patch_size"
    values = {"mode": config["mode"], size_key: config.get("input_size"), **{k: config.get(k) for k in PLAN_RECORDED}}
    return {"dims": config.get("dims", 2), "choices": {k: {"value": v, "by": "run", "reason": "the run's config.json"}
                                                       for k, v in values.items() if v is not None}}


def _settings(args, dims):
    settings = {key: getattr(args, key, None) for key in (
        "data", "layout", "target", "num_images", "image_size", "val_fraction", "test_fraction", "invert_masks",
        "allow_unmatched",
        "seed", "mode", "patch_size", "patches_per_image", "precision", "model", "depth", "base_filters", "width",
        "loss", "learning_rate", "batch_size", "epochs", "threads", "patience", "patch_shape", "steps_per_epoch",
        "bn_momentum", "augment_3d", "memory_limit_gb", "normalisation")}
    settings.update(augment=not getattr(args, "no_augment", False), no_augment=getattr(args, "no_augment", False),
                    time_budget_min=args.time_budget, verbose=1 if sys.stdout.isatty() else 2,
                    context=1 if dims == 2.5 else 0)
    return settings


def _dims(args, plan=None):
    from medseg_course import volume_runs  # noqa: PLC0415

    if plan is not None and args.dims == "auto":
        return plan["dims"]
    return volume_runs.choose_dims(args.data, args.layout) if args.dims == "auto" else float(args.dims)


def _cmd_plan(args):
    from medseg_course import planning, run_plans  # noqa: PLC0415

    dims = _dims(args)
    plan = run_plans.plan_for(_settings(args, dims), dims)
    print(json.dumps(plan, indent=2) if args.json else planning.format_plan(plan))
    return 0


def _cmd_train(args):
    out = Path(args.out)
    run_folder.check_run_folder(out, args.data, args.overwrite, args.resume)
    plan_path = args.plan or (out / "plan.json" if args.resume and (out / "plan.json").is_file() else None)
    plan = _load_plan(plan_path) if plan_path else None
    if plan is None and args.resume:  # a run from before plans: its config.json says what it trained
        plan = _plan_from_config(out)
    dims = _dims(args, plan)
    if plan is not None and plan["dims"] != dims:
        raise CLIError(f"{plan_path}: a {plan['dims']:g}D plan, but this run is {dims:g}D; leave --dims out or match it.")
    if args.augment_3d and dims != 3:
        raise CLIError(f"--augment {args.augment_3d} chooses a 3D augmentation; this run is {dims:g}D. "
                       "Leave it out (2D runs augment unless --no-augment).")
    settings = {**_settings(args, dims), "plan": plan}
    if dims == 3:
        from medseg_course.volume_runs import train_run  # noqa: PLC0415
    else:
        from medseg_course.slice_runs import train_run  # noqa: PLC0415
    try:
        metrics = train_run(settings, out, resume=args.resume, overwrite=args.overwrite,
                            report=lambda line: print(line, file=sys.stderr),
                            progress=lambda cases: _progress(cases, len(cases), "scoring"))
    except KeyboardInterrupt:
        raise CLIInterrupted(
            f"interrupted after {run_folder.epochs_logged(out)} complete epoch(s); the best model so far is "
            f"{out / MODEL_NAME} and the log {out / 'log.csv'}. Continue with the same command and --resume."
        ) from None
    val = metrics.get("val", metrics)  # a 2D run's metrics.json holds the validation rows at the top
    result = {"run": str(out), **({"dims": 3} if dims == 3 else {}), "val_dice": val["summary"].get("dice")}
    if "test" in metrics:
        result["test_dice"] = {label: v["dice"] for label, v in metrics["test"]["per_label"].items()}
    print(json.dumps({**result, "train_seconds": metrics["train_seconds"], "epochs_run": metrics["epochs_run"]}))
    return 0


# ------------------------------------------------------------------------ predict


def _cmd_predict(args):
    from medseg_course import environment, utils  # noqa: PLC0415
    from medseg_course.datasets import prediction_inputs  # noqa: PLC0415
    from medseg_course.inference import load_run, segment  # noqa: PLC0415
    from medseg_course.io import image_suffix, read_image, write_mask  # noqa: PLC0415
    from medseg_course.viz import save_overlay  # noqa: PLC0415

    given = Path(args.input)
    input_path = given.resolve()
    out = Path(args.out).resolve()
    if out == input_path or (input_path.is_dir() and input_path in out.parents):
        raise CLIError(f"--out {out} is inside the input folder; write predictions elsewhere so the input stays untouched.")
    files = prediction_inputs(given)
    stems = [path.name[: -len(image_suffix(path))] if image_suffix(path) else path.name for path in files]
    existing = [out / f"{stem}_mask{ext}" for stem in stems for ext in (".png", ".nii.gz")
                if (out / f"{stem}_mask{ext}").exists()]
    if existing and not args.overwrite:
        raise CLIError(f"{existing[0]}: already exists ({len(existing)} mask(s) in --out would be replaced); "
                       "choose another --out or pass --overwrite.")
    environment.setup(seed=0, threads=args.threads)
    model, config = load_run(args.model, allow_legacy=args.allow_legacy_model)
    utils.check_writable_folder(out)
    (out / "overlays").mkdir(exist_ok=True)
    given = args.min_size is not None or args.fill_holes or args.largest or args.no_clean
    clean = {"min_size": args.min_size or 0, "fill": args.fill_holes, "largest": args.largest} if given else None
    written = []
    for path, stem in _progress(list(zip(files, stems)), len(files), "predicting"):
        image = read_image(path)
        mask = segment(model, image, config, tta=args.tta or None, clean=clean)  # None: the run's choice
        target = out / f"{stem}_mask{'.png' if image.format == 'raster' else '.nii.gz'}"
        write_mask(mask, target, like=image, overwrite=args.overwrite)
        labels = image.to_slices(mask)
        middle = int(np.argmax(labels.reshape(len(labels), -1).sum(1)))
        save_overlay(image.to_slices()[middle], None, labels[middle], out / "overlays" / f"{stem}.png", stem)
        written.append(str(target))
    print(json.dumps({"masks": written}))
    return 0


# ----------------------------------------------------------------------- evaluate


def _cmd_evaluate(args):
    import pandas as pd  # noqa: PLC0415

    from medseg_course.datasets import masks_by_case  # noqa: PLC0415
    from medseg_course.evaluation import score_files, summarise  # noqa: PLC0415

    out = Path(args.out)
    if out.is_dir():
        raise CLIError(f"--out {out} is a folder; give a file name for the CSV, e.g. {out / 'evaluation.csv'}.")
    if out.exists() and not args.overwrite:
        raise CLIError(f"{out} exists; choose another --out or pass --overwrite.")
    preds, pred_others = masks_by_case(args.pred, "pred")
    truths, truth_others = masks_by_case(args.truth, "truth")
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
        rows.extend(score_files(key, truths[key], preds[key], invert_truth=args.invert_truth))
    frame = pd.DataFrame(rows)
    from medseg_course.utils import atomic_path, check_writable_folder  # noqa: PLC0415

    check_writable_folder(out.parent)
    with atomic_path(out) as tmp:
        frame.to_csv(tmp, index=False, errors="backslashreplace")  # file names need not be UTF-8
    summary = summarise(rows)
    summary_path = out.with_name(out.stem + "_summary.json")
    run_folder.write_json(summary_path, summary)
    print(json.dumps({"cases": len(keys), "csv": str(out), "summary": str(summary_path),
                      "dice": summary.get("dice"), "dice_median": summary.get("dice_median"),
                      "dice_std": summary.get("dice_std"), "hd95": summary.get("hd95")}))
    return 0


# --------------------------------------------------------------------------- info


def _cmd_info(args):
    from medseg_course import environment  # noqa: PLC0415
    from medseg_course.data import MSD_TASKS, data_home  # noqa: PLC0415

    info = environment.setup(seed=0, threads=args.threads)
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


def _data_options(parser):
    """The options ``plan`` and ``train`` share: the data, the split and every recipe choice
    (left out, the plan decides; given, it wins and the plan says so)."""
    add = parser.add_argument
    add("--layout", choices=("auto", "folders", "msd"), default="auto",
        help="folders: images/ + masks/; msd: Decathlon dataset.json")
    add("--dims", choices=("auto", "2", "2.5", "3"), default="auto",
        help="2: slice by slice; 2.5: each slice with its two neighbours as channels; 3: a 3D U-Net on volumes (auto: 3 "
             "when the first volumes have 16 or more voxels along each axis)")
    add("--mode", choices=("auto", "resize", "patch"), default="auto",
        help="2D: resize whole images, or train on native-resolution patches (auto: the plan measures what resizing "
             "would cost a perfect model and resizes only if it loses at most 0.02 Dice)")
    add("--image-size", type=int, default=None,
        help="2D: model input side in resize mode (default: planned; built-in phantoms are drawn at this size, 128)")
    add("--patch-size", type=int, default=None, help="2D: patch side in patch mode (default: planned, 128-256)")
    add("--patch-shape", type=int, nargs=3, default=None, metavar=("Z", "H", "W"),
        help="3D: patch in voxels (default: the median volume, rounded up to a multiple of 8)")
    add("--patches-per-image", type=int, default=None, help="2D: patches drawn per image in patch mode (default: planned)")
    add("--steps-per-epoch", type=int, default=None, help="3D: batches per epoch (default 100)")
    add("--model", choices=("unet", "seed"), default="unet", help="U-Net, or the article's encoder-decoder")
    add("--depth", type=int, default=None, help="U-Net poolings (default: planned; 3D 3)")
    add("--base-filters", type=int, default=None, help="U-Net filters at the first level (default: planned; 3D 16)")
    add("--width", type=float, default=0.25, help="filter multiplier of the article's model")
    add("--loss", default=None, help="bce, weighted_bce, dice, dice_ce, focal, tversky, focal_tversky (default dice_ce)")
    add("--epochs", type=int, default=None,
        help="this many epochs (default: 15, or with --time-budget as many as the plan measures to fit)")
    add("--patience", type=int, default=None, help="early stopping patience (epochs)")
    add("--batch-size", type=int, default=None, help="images or patches per step (default: planned; 2D 8, 3D 2)")
    add("--learning-rate", type=float, default=None, help="Adam's learning rate (default 1e-3)")
    add("--bn-momentum", type=float, default=None,
        help="batch norm: share of the old moving statistics kept each step (default 0.5)")
    add("--precision", choices=("float32", "bfloat16"), default="float32",
        help="bfloat16: mixed precision; measure first (benchmarks/README.md): with AMX it trained a 16-filter U-Net "
             "1.9x faster and an 8-filter one 3x slower")
    add("--memory-limit", dest="memory_limit_gb", type=float, default=None, metavar="GB",
        help="refuse recipes whose estimated peak memory exceeds this (default 3; the plan halves its batch to fit)")
    add("--val-fraction", type=float, default=None,
        help="share of cases (of subjects, where the data name them) for validation, which picks the checkpoint and "
             "the clean-up (2D 0.2; 3D 0.1)")
    add("--test-fraction", type=float, default=None,
        help="share of cases held out for test, scored once after training (2D 0; 3D 0.2)")
    add("--seed", type=int, default=0)
    add("--threads", type=int, default=2, help="CPU threads (results repeat at a fixed count)")
    add("--time-budget", type=float, default=None, metavar="MIN",
        help="minutes of training: training stops at it; in 2D the plan measures a few steps and fits whole epochs "
             "into 90 %% of it")
    add("--normalisation", choices=("auto", "percentiles"), default="auto",
        help="2D: auto (the plan: one window for CT in Hounsfield units, else each image's 0.5-99.5 percentiles "
             "rescaled to [0, 1]) or percentiles for every kind of image")
    add("--no-augment", action="store_true", help="turn augmentation off")
    add("--augment", dest="augment_3d", choices=("off", "mirror", "anatomy"), default=None,
        help="3D: off (default: the mirror did not help in a 15-minute CPU budget), mirror (left-right only; "
             "predictions then average the mirror), anatomy (mirror, rotation, zoom, intensity, gamma)")
    add("--invert-masks", action="store_true", help="masks mark the foreground with 0")
    add("--allow-unmatched", action="store_true", help="skip unmatched files with a warning")
    add("--num-images", type=int, default=160, help="phantom: number of images")
    add("--target", default="organ", help="phantom: organ, lesion or multiclass; mni152: organ (brain), gm, wm, tissue")


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

    plan = sub.add_parser("plan", help="fingerprint a data set and print the recipe train would use",
                          formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    plan.add_argument("data", help="data folder, or 'phantom' / 'mni152' / 'hippocampus' (built in)")
    plan.add_argument("--json", action="store_true", help="print the plan (with the fingerprint) as JSON")
    train = sub.add_parser("train", help="train a model; writes a run folder",
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    train.add_argument("--data", required=True,
                       help="data folder, or 'phantom' / 'mni152' (2D) or 'hippocampus' (3D MRI) built in")
    train.add_argument("--out", required=True, help="run folder to create")
    train.add_argument("--overwrite", action="store_true", help="reuse a non-empty run folder")
    train.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    train.add_argument("--plan", default=None, metavar="PLAN_JSON",
                       help="train this plan (a run folder's plan.json, or plan --json) instead of planning afresh; "
                            "a 2D run repeats with the same data, seed, threads and other options (3D: without "
                            "--time-budget)")
    for sub_parser in (plan, train):
        _data_options(sub_parser)
    train.set_defaults(handler=_cmd_train)
    plan.set_defaults(handler=_cmd_plan)

    predict = sub.add_parser("predict", help="segment images with a trained model")
    predict.add_argument("--model", required=True, help="RUN_DIR/model.keras (or RUN_DIR)")
    predict.add_argument("--input", required=True, help="an image file, a DICOM series folder, or a folder of images")
    predict.add_argument("--out", required=True, help="folder for the masks and overlays")
    predict.add_argument("--tta", action="store_true",
                         help="average over flipped copies (2D: 4x slower; 3D runs mirror left-right by default)")
    predict.add_argument("--min-size", type=int, default=None,
                         help="binary 2D: remove components smaller than this (pixels); any clean-up option replaces "
                              "the one the run chose on its validation cases (config.json postprocess)")
    predict.add_argument("--fill-holes", action="store_true", help="binary 2D: fill enclosed holes")
    predict.add_argument("--largest", action="store_true", help="binary 2D: keep only the largest component")
    predict.add_argument("--no-clean", action="store_true", help="binary 2D: no clean-up, whatever the run chose")
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
