"""Does mixed bfloat16 keep the quality it buys speed with? One seed, float32 against bfloat16.

Trains the 16-filter U-Net (depth 4) at 128x128 on 256 phantoms (batch 16, the course's
default augmentation, Dice + CE) for 6 epochs, validating on 32 more, once in float32 and
once under Keras's ``mixed_bfloat16`` policy, each in its own process (the policy is
global). Prints one JSON object with, per arm, the seconds of each epoch, the validation
Dice after each, the first epoch (and the seconds of training up to it) whose validation
Dice passes 0.9, and the best validation Dice; and the per-epoch speed-up after the first
epoch (tracing). Only meaningful on a CPU with bfloat16 matrix instructions (AVX512-BF16 or
AMX; ``machine.bf16_hardware``); elsewhere bfloat16 is emulated and slow, and the script
says so and exits.

Usage: ``python benchmarks/mixed_precision.py [--save FILE] [--force]``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _cli_runs import seconds_to  # noqa: E402
from _report import emit, machine  # noqa: E402

SIZE, TRAIN, VAL, BATCH, EPOCHS, TARGET = 128, 256, 32, 16, 6, 0.9


def _worker(policy):
    import medseg_course as mc  # noqa: PLC0415

    mc.environment.setup(seed=0, threads=2)
    import keras  # noqa: PLC0415

    keras.config.set_dtype_policy(policy)
    images, masks = mc.data.make_phantoms(TRAIN + VAL, image_size=SIZE, seed=0)
    model = mc.models.build_unet((SIZE, SIZE, 1), depth=4, base_filters=16)
    mc.training.compile_model(model, loss="dice_ce")
    data = mc.training.make_dataset(images[:TRAIN], masks[:TRAIN], batch_size=BATCH,
                                    augment=mc.training.Augmentation(), seed=0)
    start = time.perf_counter()
    history = mc.training.fit(model, data, (images[TRAIN:], masks[TRAIN:]), epochs=EPOCHS)
    seconds = time.perf_counter() - start
    curve = {"seconds": [round(t, 1) for t in itertools.accumulate(history["epoch_time_s"])],
             "val_dice": history["val_dice"]}
    reached = seconds_to(curve, TARGET)
    first = None if reached is None else {"epoch": curve["seconds"].index(reached) + 1, "seconds": reached}
    print(json.dumps({
        "epoch_seconds": [round(s, 2) for s in history["epoch_time_s"]],
        "val_dice": [round(d, 4) for d in history["val_dice"]],
        f"first_val_dice_above_{TARGET}": first,
        "best_val_dice": round(max(history["val_dice"]), 4),
        "fit_seconds": round(seconds, 1),
    }))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--save", type=Path, help="also write the JSON to this file")
    parser.add_argument("--force", action="store_true", help="run on a CPU without bfloat16 instructions too")
    parser.add_argument("--worker", choices=("float32", "mixed_bfloat16"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(args.worker)
        return 0
    if not machine()["bf16_hardware"] and not args.force:
        print("This CPU has no bfloat16 matrix instructions (AVX512-BF16 or AMX): bfloat16 would be "
              "emulated. Pass --force to measure anyway.", file=sys.stderr)
        return 0
    arms = {}
    for policy in ("float32", "mixed_bfloat16"):
        done = subprocess.run([sys.executable, __file__, "--worker", policy], capture_output=True, text=True,
                              cwd=ROOT, check=True)
        arms[policy] = json.loads(done.stdout.strip().splitlines()[-1])
    per_epoch = {policy: sum(arm["epoch_seconds"][1:]) / (EPOCHS - 1) for policy, arm in arms.items()}
    emit({
        "machine": machine(),
        "setup": {"image_size": SIZE, "train_images": TRAIN, "val_images": VAL, "batch_size": BATCH,
                  "epochs": EPOCHS, "model": "build_unet(depth=4, base_filters=16)", "loss": "dice_ce",
                  "augmentation": "mc.training.Augmentation()", "seed": 0},
        **arms,
        "speedup_per_epoch_after_the_first": round(per_epoch["float32"] / per_epoch["mixed_bfloat16"], 2),
    }, args.save)
    return 0


if __name__ == "__main__":
    sys.exit(main())
