"""Filters per level on a multi-class task: chapter 10's brain tissues with 8 and 16 filters.

The CLI's default width (8 filters) was chosen by ``recipes.py`` on binary tasks. This runs
chapter 10's training exactly (MNI152 at 64x64 with a simulated head, split by slab; a U-Net
of depth 3 with four classes; Dice + cross-entropy, batch 8, the default augmentation, 30
epochs, the epoch chosen by validation Dice) at both widths and prints, per width, the
held-out Dice per tissue (per-slice mean, as the chapter reports it), the predicted volumes
and the training seconds; the true volumes once. The 16-filter row reproduces the chapter's table.

Usage: ``python benchmarks/tissue_width.py [--save results/tissue_width.json] [--epochs 30]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

import medseg_course as mc  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import emit, machine  # noqa: E402

NAMES = {1: "grey matter", 2: "white matter", 3: "CSF"}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--save", type=Path)
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args(argv)
    info = mc.environment.setup(seed=0)
    tissue = mc.data.load_mni152_slices("tissue", image_size=64, resolution=1)
    pixel_mm = tissue.spacing_mm[0]
    images = mc.data.add_simulated_head(tissue.images, tissue.masks > 0, pixel_mm=pixel_mm, seed=0)
    labels = tissue.masks
    split = mc.data.slab_split(tissue.slice_index, slab_size=8, gap=2, seed=0)
    test_x, test_labels = images[split["test"]], labels[split["test"]]
    voxel_ml = pixel_mm * pixel_mm / 1000  # slices 1 mm apart
    results = {"machine": {**machine(), "device": info.device, "threads": info.threads},
               "task": "chapter 10: MNI152 tissues at 64x64, 4 classes, depth 3, batch 8, "
                       f"{args.epochs} epochs, default augmentation, Dice + CE",
               "true_ml": {name: round(float((test_labels == k).sum() * voxel_ml), 2) for k, name in NAMES.items()}}
    for filters in (16, 8):
        mc.environment.setup(seed=0)  # as chapter 10's train(): the same initial draws at every width
        model = mc.models.build_unet((64, 64, 1), num_classes=4, depth=3, base_filters=filters)
        mc.training.compile_model(model, loss="dice_ce")
        # a new dataset per run: a dataset's shuffling and augmentation draws go on from
        # where its last iteration stopped
        train = mc.training.make_dataset(images[split["train"]], labels[split["train"]], batch_size=8,
                                         augment=mc.training.Augmentation())
        start = time.perf_counter()
        mc.training.fit(model, train, (images[split["val"]], labels[split["val"]]), epochs=args.epochs)
        seconds = time.perf_counter() - start
        predicted = mc.inference.predict(model, test_x).argmax(axis=-1).astype(np.uint8)
        per_slice = mc.metrics.dice_per_class(test_labels, predicted, num_classes=4)
        results[f"filters_{filters}"] = {
            "train_seconds": round(seconds, 1),
            "parameters": int(model.count_params()),
            **{f"dice {name}": round(float(per_slice[:, k - 1].mean()), 3) for k, name in NAMES.items()},
            **{f"predicted mL {name}": round(float((predicted == k).sum() * voxel_ml), 2) for k, name in NAMES.items()},
        }
        print(filters, results[f"filters_{filters}"], file=sys.stderr, flush=True)
    results["time_ratio_16_to_8"] = round(results["filters_16"]["train_seconds"] / results["filters_8"]["train_seconds"], 2)
    emit(results, args.save)


if __name__ == "__main__":
    main()
