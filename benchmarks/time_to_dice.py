"""Time to quality: training seconds until held-out Dice reaches 0.90 on the default phantom
task, for the package's recommended recipe (the CLI's defaults) against the source article's
recipe (its encoder-decoder with 64-512 filters, binary cross-entropy, Adam at 1e-3, batch 8,
no augmentation), in the same run.

The task is ``medseg-course train --data phantom``'s: 160 phantoms of 128x128, organ masks,
the first 32 held out. Both arms run through the CLI with a time budget, and the seconds
are read from the run's ``log.csv`` (cumulative epoch times, validation and the first
epoch's tracing included). The package arm runs under ``--seeds`` seeds and the ratio uses
its slowest; the article arm gets ``--factor`` times that slowest time, so if it does not
reach the target the ratio is reported as a lower bound ("ratio_at_least": the seconds it
trained without reaching the target over the package's slowest time).

Usage: ``python benchmarks/time_to_dice.py [--save FILE] [--target 0.9] [--seeds 2]``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _cli_runs import seconds_to, train_curve  # noqa: E402
from _report import emit, machine  # noqa: E402

ARTICLE = ["--model", "seed", "--width", "1.0", "--loss", "bce", "--learning-rate", "1e-3",
           "--batch-size", "8", "--no-augment"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--save", type=Path)
    parser.add_argument("--target", type=float, default=0.90)
    parser.add_argument("--seeds", type=int, default=2, help="seeds of the package's recipe")
    parser.add_argument("--budget", type=float, default=2.0, help="minutes per package run")
    parser.add_argument("--factor", type=float, default=12.0, help="article budget / package's slowest time")
    args = parser.parse_args(argv)

    package = {}
    for seed in range(args.seeds):
        curve = train_curve(["--data", "phantom", "--seed", seed], args.budget)
        package[f"seed{seed}"] = {"seconds_to_target": seconds_to(curve, args.target), **curve}
        print(f"package seed {seed}: {package[f'seed{seed}']['seconds_to_target']} s", file=sys.stderr, flush=True)
    times = [run["seconds_to_target"] for run in package.values()]
    if None in times:
        raise SystemExit(f"the package's recipe did not reach Dice {args.target} in {args.budget} min: {times}")
    slowest = max(times)
    article_budget_min = round(args.factor * slowest / 60, 2)
    curve = train_curve(["--data", "phantom", "--seed", 0, *ARTICLE], article_budget_min)
    article_time = seconds_to(curve, args.target)
    print(f"article: {article_time} s (budget {article_budget_min} min)", file=sys.stderr, flush=True)
    import medseg_course as mc  # noqa: PLC0415  (imported by the runs above)

    result = {
        "machine": {**machine(), "onednn": mc.utils.onednn_enabled()},
        "target_dice": args.target,
        "package_seconds": times,
        "package_slowest_seconds": slowest,
        "article_seconds": article_time,
        "article_budget_seconds": round(article_budget_min * 60, 1),
        "article_best_dice_in_budget": max(curve["val_dice"], default=0.0),
    }
    if article_time is None:  # a bound from the training it did get (the CLI stops before an
        # epoch that would overrun the budget, so that can be less than the budget)
        result["article_trained_seconds"] = max(curve["seconds"], default=0.0)
        result["ratio_at_least"] = round(result["article_trained_seconds"] / slowest, 1)
    else:
        result["ratio"] = round(article_time / slowest, 1)
    result["curves"] = {"package": package, "article": curve}
    emit(result, args.save)


if __name__ == "__main__":
    main()
