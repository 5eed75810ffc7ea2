"""Batch-norm momentum against early held-out Dice: why ``build_unet`` defaults to 0.5.

Trains the CLI's default recipe on its default phantom task (``medseg-course train --data
phantom``: an 8-filter, depth-3 U-Net at 128x128, Dice + CE, batch 8, 16 steps an epoch)
with the U-Net's batch norms at each ``--momenta`` value, under ``--seeds`` seeds, for
``--epochs`` epochs, and prints one JSON object with each run's held-out Dice after every
epoch, the seconds until it first reached ``--target``, its best Dice, and per momentum the
median of those.

Validation runs the network in inference mode, with the batch norms' moving statistics.
Those start at mean 0 and variance 1 and move by ``1 - momentum`` of the way to each batch's
statistics, so with Keras's 0.99 (or 0.9) they still lag far behind the weights after the
first epochs: the network trains well and validates badly.

Usage: ``python benchmarks/bn_momentum.py [--save FILE] [--momenta 0.9 0.7 0.5]
[--seeds 3] [--epochs 25]``.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _cli_runs import seconds_to, train_curve  # noqa: E402
from _report import emit, machine  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--save", type=Path)
    parser.add_argument("--momenta", type=float, nargs="+", default=[0.9, 0.7, 0.5])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--target", type=float, default=0.9)
    args = parser.parse_args(argv)
    import medseg_course as mc  # noqa: PLC0415

    default_build = mc.models.build_unet
    runs = {}
    try:
        for momentum in args.momenta:
            # the CLI builds its U-Net through mc.models.build_unet
            mc.models.build_unet = functools.partial(default_build, bn_momentum=momentum)
            for seed in range(args.seeds):
                curve = train_curve(["--data", "phantom", "--seed", seed], budget_min=10, max_epochs=args.epochs)
                reached = seconds_to(curve, args.target)
                runs.setdefault(str(momentum), {})[f"seed{seed}"] = {
                    "seconds_to_target": reached,
                    "first_epoch_val_dice": curve["val_dice"][0],
                    "best_val_dice": max(curve["val_dice"]),
                    **curve,
                }
                print(f"momentum {momentum} seed {seed}: {reached} s", file=sys.stderr, flush=True)
    finally:
        mc.models.build_unet = default_build

    def median(momentum, key):
        values = [run[key] for run in runs[momentum].values()]
        return None if None in values else round(statistics.median(values), 4)

    emit({
        "machine": {**machine(), "onednn": mc.environment.onednn_enabled()},
        "target_dice": args.target,
        "epochs": args.epochs,
        "medians": {momentum: {key: median(momentum, key)
                               for key in ("first_epoch_val_dice", "seconds_to_target", "best_val_dice")}
                    for momentum in runs},
        "runs": runs,
    }, args.save)


if __name__ == "__main__":
    main()
