"""Dice against training time for variants of the CLI's default recipe, on two data sets.

Each recipe is the CLI's defaults with one change (image size, depth, width, loss, learning
rate, augmentation, batch size), trained through ``medseg-course train`` with a time budget;
the curve is the held-out Dice Keras logs after each epoch against cumulative training
seconds (validation and the first epoch's tracing included). The data sets:

* ``phantom``: ``--data phantom`` (160 phantoms of 128x128, organ masks, 32 held out);
* ``mni152_gm``: grey matter on the MNI152 template's axial slices (nilearn ships the
  volume and its tissue maps), written to a paired folder (16-bit PNG images, PNG masks)
  and read back as a user's data would be. One brain: held-out slices neighbour training
  slices, so absolute Dice is optimistic; the comparison between recipes is the point.

Prints JSON: per data set and recipe the curve, the Dice reached by 30 s, 60 s and the end,
and the CLI's final validation Dice. Usage: ``python benchmarks/recipes.py [--save FILE]
[--budget MIN] [--recipes NAME ...] [--data phantom mni152_gm]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _cli_runs import dice_at, train_curve  # noqa: E402
from _report import emit, machine  # noqa: E402

RECIPES = {
    "default": [],
    "no_augment": ["--no-augment"],
    "lr_3e-3": ["--learning-rate", "3e-3"],
    "filters_8": ["--base-filters", "8"],
    "filters_16": ["--base-filters", "16"],
    "filters_32": ["--base-filters", "32"],
    "depth_3": ["--depth", "3"],
    "depth_4": ["--depth", "4"],
    "loss_dice": ["--loss", "dice"],
    "size_96": ["--image-size", "96"],
    "size_64": ["--image-size", "64"],
    "batch_8": ["--batch-size", "8"],
    "batch_16": ["--batch-size", "16"],
    "batch_8_depth_3": ["--batch-size", "8", "--depth", "3"],
}


def write_mni152_folder(root):
    """Grey-matter slices of MNI152 as a paired folder: images/*.png (16 bit), masks/*.png."""
    import medseg_course as mc  # noqa: PLC0415

    slices = mc.data.load_mni152_slices("gm", image_size=128)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for image, mask, index in zip(slices.images, slices.masks, slices.slice_index):
        scaled = np.round(np.clip(image[..., 0] / max(float(slices.images.max()), 1e-6), 0, 1) * 65535)
        mc.io.write_png(scaled.astype(np.uint16), root / "images" / f"slice_{int(index):03d}.png")
        mc.io.write_png(mask[..., 0] > 0.5, root / "masks" / f"slice_{int(index):03d}.png")
    return len(slices.images)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--save", type=Path)
    parser.add_argument("--budget", type=float, default=1.25, help="minutes per run")
    parser.add_argument("--recipes", nargs="*", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--data", nargs="*", default=["phantom", "mni152_gm"], choices=["phantom", "mni152_gm"])
    args = parser.parse_args(argv)

    results = {}
    with tempfile.TemporaryDirectory(prefix="medseg_recipes_") as tmp:
        sources = {}
        if "phantom" in args.data:
            sources["phantom"] = ["--data", "phantom"]
        if "mni152_gm" in args.data:
            folder = Path(tmp) / "mni152_gm"
            count = write_mni152_folder(folder)
            print(f"mni152_gm: {count} slices written to {folder}", file=sys.stderr, flush=True)
            sources["mni152_gm"] = ["--data", folder]
        for data_name, data_args in sources.items():
            results[data_name] = {}
            for name in args.recipes:
                curve = train_curve([*data_args, *RECIPES[name]], args.budget)
                results[data_name][name] = {
                    "dice_by_15s": dice_at(curve, 15),
                    "dice_by_30s": dice_at(curve, 30),
                    "dice_by_60s": dice_at(curve, 60),
                    "dice_at_end": max(curve["val_dice"], default=0.0),
                    "seconds_at_end": curve["seconds"][-1] if curve["seconds"] else 0.0,
                    "epochs": len(curve["seconds"]),
                    "final_val_dice": curve["final_val_dice"],
                    "curve_seconds": curve["seconds"],
                    "curve_val_dice": curve["val_dice"],
                }
                print(data_name, name, {k: v for k, v in results[data_name][name].items() if not k.startswith("curve")},
                      file=sys.stderr, flush=True)
    import medseg_course as mc  # noqa: PLC0415

    emit({"machine": {**machine(), "onednn": mc.environment.onednn_enabled()}, "budget_min": args.budget,
          "recipes": {name: " ".join(RECIPES[name]) or "(the CLI's defaults)" for name in args.recipes},
          **results}, args.save)


if __name__ == "__main__":
    main()
