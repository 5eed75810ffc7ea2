"""The planner's development suite: the data users bring, each task against a plain U-Net.

Every task is written as a user would hand it over, an ``images/`` + ``masks/`` folder of
files, split by case (by subject for the MRI) into ``train/`` (what both recipes see) and
``test/`` (scored once, at native resolution, by ``medseg-course evaluate``):

- ``nuclei``: real fluorescence microscopy (the image that ships with the package, from the
  2018 Data Science Bowl), cut into 16 tiles of 128x128; grey, small round objects.
- ``vessels``: fundus-like colour photographs, 512x512, thin branching vessels that
  resizing erases (``phantoms.make_vessel_images``).
- ``skin``: dermoscopy-like colour photographs, 576x768, one lesion of 3-98 % of the frame
  (``phantoms.make_lesion_photos``): structures that patches cannot see whole.
- ``lesions``: CT-like grey phantoms, 256x256, small lesions (radius 1-3 % of the width).
- ``brain_gm``: grey matter of the MNI152 template at 1 mm, axial slabs of 8 slices (NIfTI)
  separated by 4-slice gaps so no test slice has a training neighbour.
- ``hippocampus``: the real 3D MRI of 208 hippocampi (two labels), split by subject.

Each task runs ``medseg-course train`` with its defaults and a time budget (``--test-fraction
0``: the suite holds out its own test folder), ``predict`` and ``evaluate``; and beside it
the plain recipe (``plain_unet.py``) with the same cases and budget, on the same CPU, in the
same process run. Dice is per case (per label, then averaged), mean over the test cases.
Times: the CLI's ``train_command_s`` is the train command (loading, planning, training,
scoring the validation cases) and ``predict_s`` its predict command; the plain recipe's
``command_s`` is its one command (loading, training, predicting). Peak memory is each
command's maximum resident set.

Usage: ``python benchmarks/plan_suite.py [--tasks ...] [--seeds 0] [--save FILE] [--work DIR]``;
``--build-only`` writes the task folders and prints their fingerprints.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

#: Task: minutes of training for each recipe, and test share of the cases.
TASKS = {
    "nuclei": {"budget_min": 2, "test_fraction": 0.2},
    "vessels": {"budget_min": 3, "test_fraction": 0.2},
    "skin": {"budget_min": 3, "test_fraction": 0.2},
    "lesions": {"budget_min": 3, "test_fraction": 0.2},
    "brain_gm": {"budget_min": 2, "test_fraction": 0.2},
    "hippocampus": {"budget_min": 8, "test_fraction": 0.2},
}


def _write_png_pair(root, name, image, mask):
    from medseg_course.writers import write_png  # noqa: PLC0415

    write_png(image, root / "images" / f"{name}.png")
    write_png(mask.astype(np.uint8), root / "masks" / f"{name}.png")


def _split(names, test_fraction, groups=None):
    from medseg_course.datasets import split_cases  # noqa: PLC0415

    split = split_cases(names, val_fraction=0.0, test_fraction=test_fraction, seed=1234, groups=groups)
    return set(split["test"])


def build_task(task, folder):
    """Write task ``task`` into ``folder/train`` and ``folder/test`` (images/ + masks/)."""
    from medseg_course import datasets, phantoms  # noqa: PLC0415

    folder = Path(folder)
    for part in ("train", "test"):
        for sub in ("images", "masks"):
            (folder / part / sub).mkdir(parents=True, exist_ok=True)
    fraction = TASKS[task]["test_fraction"]
    if task == "hippocampus":
        cases, _ = datasets.load_hippocampus()
        test = _split([c.name for c in cases], fraction, {c.name: c.subject for c in cases if c.subject})
        source = datasets.hippocampus_folder()
        for case in cases:
            part = "test" if case.name in test else "train"
            image_path = Path(case.image.path)
            shutil.copy(image_path, folder / part / "images" / image_path.name)
            shutil.copy(source / "labelsTr" / image_path.name, folder / part / "masks" / image_path.name)
        return
    if task == "brain_gm":
        import nibabel as nib  # noqa: PLC0415
        from nilearn import datasets as templates  # noqa: PLC0415

        t1 = templates.load_mni152_template(resolution=1)
        gm = np.asarray(templates.load_mni152_gm_mask(resolution=1).dataobj) > 0
        image = np.asarray(t1.dataobj, dtype=np.float32)
        filled = np.flatnonzero(gm.any(axis=(0, 1)))
        starts = range(int(filled[0]), int(filled[-1]) - 7, 12)  # 8 slices, then a gap of 4
        names = [f"slab_z{z:03d}" for z in starts]
        test = _split(names, fraction)
        for name, z in zip(names, starts):
            part = "test" if name in test else "train"
            affine = t1.affine.copy()
            affine[:3, 3] = (t1.affine @ [0, 0, z, 1])[:3]
            nib.save(nib.Nifti1Image(image[..., z : z + 8], affine), folder / part / "images" / f"{name}.nii.gz")
            nib.save(nib.Nifti1Image(gm[..., z : z + 8].astype(np.uint8), affine),
                     folder / part / "masks" / f"{name}.nii.gz")
        return
    if task == "nuclei":
        image, labels = datasets.load_nuclei()
        pairs = {f"tile_{r}{c}": (image[r * 128 : (r + 1) * 128, c * 128 : (c + 1) * 128],
                                  labels[r * 128 : (r + 1) * 128, c * 128 : (c + 1) * 128] > 0)
                 for r in range(4) for c in range(4)}
    elif task == "vessels":
        images, masks = phantoms.make_vessel_images(25, seed=11)
        pairs = {f"fundus_{i:02d}": (images[i], masks[i]) for i in range(len(images))}
    elif task == "skin":
        images, masks = phantoms.make_lesion_photos(100, seed=12)
        pairs = {f"lesion_{i:03d}": (images[i], masks[i]) for i in range(len(images))}
    elif task == "lesions":
        spec = phantoms.PhantomSpec(lesion_radius=(0.01, 0.03), max_lesions=4)
        images, masks = phantoms.make_phantoms(120, image_size=256, spec=spec, target="lesion", seed=13)
        grey = (np.clip(images[..., 0] / 1.3, 0, 1) * 255).round().astype(np.uint8)
        pairs = {f"ct_{i:03d}": (grey[i], masks[i, ..., 0]) for i in range(len(images))}
    else:
        raise ValueError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    test = _split(sorted(pairs), fraction)
    for name, (image, mask) in pairs.items():
        _write_png_pair(folder / ("test" if name in test else "train"), name, image, mask)


def _run(argv, log):
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *map(str, argv)], capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    log.write(f"$ {' '.join(map(str, argv))}\n{done.stdout[-3000:]}{done.stderr[-3000:]}\n")
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} failed ({done.returncode}): {done.stderr[-1500:]}")
    return done.stdout, seconds



def _dice(csv_path):
    import pandas as pd  # noqa: PLC0415

    rows = pd.read_csv(csv_path)
    per_label = rows.groupby("label")["dice"].mean()
    per_case = rows.groupby("case")["dice"].mean()
    return {"dice": round(float(per_case.mean()), 4), "dice_median": round(float(per_case.median()), 4),
            "per_label": {str(k): round(float(v), 4) for k, v in per_label.items()}, "cases": int(len(per_case)),
            "per_case": {str(k): round(float(v), 4) for k, v in per_case.items()}}


def run_task(task, folder, seed, log, budget=None):
    """Both recipes on one task; returns their test scores, times and peak memory."""
    budget = budget or TASKS[task]["budget_min"]
    folder = Path(folder)
    result = {"budget_min": budget}
    timed = [str(ROOT / "benchmarks" / "peak_memory.py")]
    run = folder / f"cli_seed{seed}"
    for path in (run, folder / f"cli_pred{seed}", folder / f"plain_seed{seed}", folder / f"plain_pred{seed}"):
        shutil.rmtree(path, ignore_errors=True)
    out, seconds = _run([*timed, "-m", "medseg_course.cli", "train", "--data", folder / "train", "--out", run,
                         "--time-budget", budget, "--test-fraction", "0", "--seed", seed], log)
    train_line = json.loads(out.strip().splitlines()[-2])
    peak = json.loads(out.strip().splitlines()[-1])["peak_rss_gb"]
    _, predict_s = _run(["-m", "medseg_course.cli", "predict", "--model", run, "--input", folder / "test" / "images",
                         "--out", folder / f"cli_pred{seed}"], log)
    _run(["-m", "medseg_course.cli", "evaluate", "--pred", folder / f"cli_pred{seed}", "--truth",
          folder / "test" / "masks", "--out", folder / f"cli_eval{seed}.csv", "--overwrite"], log)
    plan = json.loads((run / "plan.json").read_text())
    result["cli"] = {**_dice(folder / f"cli_eval{seed}.csv"), "train_command_s": round(seconds, 1),
                     "epochs_run": train_line.get("epochs_run"), "predict_s": round(predict_s, 1),
                     "peak_memory_gb": peak, "plan": {k: v["value"] for k, v in plan["choices"].items()},
                     "estimate": plan.get("estimate"), "postprocess": plan.get("postprocess", {}).get("value")}
    out, seconds = _run([*timed, str(ROOT / "benchmarks" / "plain_unet.py"), folder / "train", folder / "test" / "images",
                         folder / f"plain_pred{seed}", "--minutes", budget, "--seed", seed,
                         "--size", 64 if task == "hippocampus" else 128], log)
    plain_line = json.loads(out.strip().splitlines()[-2])
    peak = json.loads(out.strip().splitlines()[-1])["peak_rss_gb"]
    _run(["-m", "medseg_course.cli", "evaluate", "--pred", folder / f"plain_pred{seed}", "--truth",
          folder / "test" / "masks", "--out", folder / f"plain_eval{seed}.csv", "--overwrite"], log)
    result["plain"] = {**_dice(folder / f"plain_eval{seed}.csv"), "command_s": round(seconds, 1),
                       "epochs_run": plain_line.get("epochs_run"), "peak_memory_gb": peak}
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--work", default="/tmp/medseg_plan_suite", help="where the task folders and runs go")
    parser.add_argument("--save", default=None, help="JSON file for the results")
    parser.add_argument("--build-only", action="store_true", help="write the tasks and print their fingerprints")
    parser.add_argument("--budget", type=float, default=None, help="minutes for every task (a quick check)")
    args = parser.parse_args(argv)
    from _report import emit, machine  # noqa: PLC0415

    work = Path(args.work)
    for task in args.tasks:
        if not (work / task / "train" / "images").is_dir():
            build_task(task, work / task)
    if args.build_only:
        from medseg_course import fingerprint, samples  # noqa: PLC0415

        for task in args.tasks:
            train, val, _, _ = samples.training_cases(str(work / task / "train"), val_fraction=0.2)
            print(task, json.dumps(fingerprint.fingerprint(train + val)))
        return 0
    results = {"machine": machine(), "tasks": {}}
    with open(work / "suite.log", "a") as log:
        for task in args.tasks:
            results["tasks"][task] = {str(seed): run_task(task, work / task, seed, log, args.budget)
                                      for seed in args.seeds}
            print(task, json.dumps({s: {k: r[k]["dice"] for k in ("cli", "plain")}
                                    for s, r in results["tasks"][task].items()}), flush=True)
    emit(results, Path(args.save) if args.save else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
