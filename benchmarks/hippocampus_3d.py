"""The hippocampus MRI through ``medseg-course train --data hippocampus``: test Dice per
label after a time budget, over seeds, for the 3D default and variants of it.

Each run is the command line itself (``python -m medseg_course.cli train``) with
``--time-budget`` minutes; the seed draws the split of the subjects (train 70 %, validation
10 %, test 20 %; a subject's files stay together), the initial weights and the patches. The
figures are the test files' mean Dice per label from ``metrics.json`` (the checkpoint was
chosen on the validation files), the epochs run and the seconds of the whole command, with
peak memory; each test file's scores and volumes are kept (``CASE_KEYS``).

Usage: ``python benchmarks/hippocampus_3d.py [--budget MIN] [--seeds 0 1 2] [--recipes default ...]
[--save FILE] [--keep DIR]``; ``--collect DIR`` reads finished run folders kept there instead of
training; ``--rescore RUN_DIR`` scores a kept run's test files with and without flip TTA and the
largest-structure clean-up, and times ``predict`` on 50 volumes. A recipe is the default
command line plus the options in ``RECIPES``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _report import emit, machine  # noqa: E402

#: The 2D and 2.5D runs: the 3D runs' split (validation 10 %, test 20 % of the subjects), as
#: many epochs as the budget allows, no augmentation (as the 3D default; the 2D flips would
#: swap the labelled head and tail), slices fitted into 64x64 (the hippocampus crops are about
#: 35x50 voxels), 16 filters, batch 16.
SLICES = ["--val-fraction", "0.1", "--test-fraction", "0.2", "--epochs", "1000", "--no-augment", "--image-size", "64",
          "--base-filters", "16", "--batch-size", "16"]

RECIPES = {
    "default": [],
    "filters_8": ["--base-filters", "8"],
    "lr_3e-3": ["--learning-rate", "3e-3"],
    "mirror": ["--augment", "mirror"],
    "anatomy": ["--augment", "anatomy"],
    "patch_32": ["--patch-shape", "32", "32", "48", "--batch-size", "4"],
    "2d": ["--dims", "2", *SLICES],
    "2.5d": ["--dims", "2.5", *SLICES],
}

#: The per-patient figures kept for each test case and label (the case-study chapter reads them).
CASE_KEYS = ("case", "label", "dice", "hd95", "assd", "true_volume_ml", "pred_volume_ml")


def run(recipe, seed, budget, keep=None):
    with tempfile.TemporaryDirectory() as tmp:
        out = (keep / f"{recipe}_seed{seed}") if keep else Path(tmp) / "run"
        command = [sys.executable, "-m", "medseg_course.cli", "train", "--data", "hippocampus", "--out", str(out),
                   "--time-budget", str(budget), "--seed", str(seed), *RECIPES[recipe]]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"{recipe} seed {seed}: {done.stderr.strip()[-2000:]}")
        peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e6
        return {**collect(out, recipe, seed), "command_seconds": round(seconds, 1),
                "peak_memory_gb_so_far": round(peak_gb, 2)}


def collect(out, recipe, seed):
    """A finished run folder's figures: test Dice per label, validation Dice, epochs, the
    test files' rows (``CASE_KEYS``) and the validation files' Dice per label."""
    metrics = json.loads((Path(out) / "metrics.json").read_text())
    val = metrics.get("val", metrics)  # a 2D run's metrics.json holds the validation rows at the top
    cases = [{key: (round(row[key], 4) if isinstance(row[key], float) else row[key]) for key in CASE_KEYS}
             for row in metrics["test"]["per_case"]]
    return {"recipe": recipe, "seed": seed, "test": metrics["test"]["per_label"],
            "val_dice": val["summary"]["dice"], "epochs_run": metrics["epochs_run"],
            "train_seconds": metrics["train_seconds"], "test_cases": cases,
            "val_cases": [{"case": row["case"], "label": row["label"], "dice": round(row["dice"], 4)}
                          for row in val["per_case"]]}


def rescore(run_dir):
    """The run's test patients scored with and without flip TTA and the largest-structure
    clean-up: mean Dice per label, and the seconds each scoring took."""
    import numpy as np  # noqa: PLC0415

    import medseg_course as mc  # noqa: PLC0415
    from medseg_course import inference, volume_runs  # noqa: PLC0415

    mc.environment.setup(seed=0)
    model, config = inference.load_run(run_dir)
    by_name = {c.name: c for c in mc.data.load_hippocampus()[0]}
    test = [volume_runs.prepare_volume_case(by_name[n], config["spacing_mm"]) for n in config["split"]["test"]]
    table = []
    for tta in (False, True):
        for largest in (False, True):
            start = time.perf_counter()
            rows = volume_runs.score_cases(model, {**config, "tta": tta, "largest_structure": largest}, test)
            table.append({"tta": tta, "largest_structure": largest, "seconds": round(time.perf_counter() - start, 1),
                          "dice": {str(label): round(float(np.mean([r["dice"] for r in rows if r["label"] == label])), 4)
                                   for label in (1, 2)}})
    return table


def predict_timing(run_dir, count=50):
    """Seconds of ``medseg-course predict`` on a folder of ``count`` hippocampus volumes
    (the whole command, TensorFlow's start-up included), with and without ``--tta``."""
    import shutil  # noqa: PLC0415

    from medseg_course.datasets import hippocampus_folder  # noqa: PLC0415

    timings = {}
    with tempfile.TemporaryDirectory() as tmp:
        inputs = Path(tmp) / "in"
        inputs.mkdir()
        for path in sorted((hippocampus_folder() / "imagesTr").iterdir())[:count]:
            shutil.copy(path, inputs / path.name)
        for name, extra in (("plain", []), ("tta", ["--tta"])):
            command = [sys.executable, "-m", "medseg_course.cli", "predict", "--model", str(run_dir), "--input",
                       str(inputs), "--out", str(Path(tmp) / name), *extra]
            start = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
            timings[name] = round(time.perf_counter() - start, 1)
    return {"volumes": count, "seconds": timings}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=15.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--recipes", nargs="+", default=["default"], choices=sorted(RECIPES))
    parser.add_argument("--save", type=Path)
    parser.add_argument("--keep", type=Path, help="keep the run folders here (NAME_seedN)")
    parser.add_argument("--rescore", type=Path, metavar="RUN_DIR",
                        help="instead of training: score a kept run's test patients with/without TTA and clean-up, "
                             "and time predict on 50 volumes")
    parser.add_argument("--collect", type=Path, metavar="KEEP_DIR",
                        help="instead of training: read the finished run folders RECIPE_seedN kept there")
    args = parser.parse_args()
    if args.collect:
        runs = [collect(args.collect / f"{recipe}_seed{seed}", recipe, seed) for recipe in args.recipes
                for seed in args.seeds if (args.collect / f"{recipe}_seed{seed}" / "metrics.json").is_file()]
        emit({"machine": machine(), "budget_min": args.budget, "runs": runs}, args.save)
        return
    if args.rescore:
        emit({"machine": machine(), "run": str(args.rescore), "rescore": rescore(args.rescore),
              "predict": predict_timing(args.rescore)}, args.save)
        return
    runs = []
    for recipe in args.recipes:
        for seed in args.seeds:
            runs.append(run(recipe, seed, args.budget, args.keep))
            print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    emit({"machine": machine(), "budget_min": args.budget, "runs": runs}, args.save)


if __name__ == "__main__":
    main()
