"""Inference speed: slices per second at 256x256 with and without test-time augmentation,
and the seconds a sliding-window prediction of a 1024x1024 image takes.

The model is the course's default U-Net (depth 4, 16 filters), untrained: speed does not
depend on the weights. Each figure is the median of three timed runs after one warm-up run
(which absorbs tracing), with threads pinned to 2 as in the book.

Prints one JSON object. Usage: ``python benchmarks/inference.py [--save FILE]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

import medseg_course as mc  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _report import emit, machine  # noqa: E402


def median_seconds(run, repeats=3):
    run()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--save", type=Path)
    parser.add_argument("--slices", type=int, default=32, help="slices per timed run at 256x256")
    args = parser.parse_args(argv)
    info = mc.environment.setup(seed=0, threads=2)
    rng = np.random.default_rng(0)
    results = {"machine": {**machine(), "device": info.device, "threads": info.threads}}

    slices = rng.random((args.slices, 256, 256, 1), dtype=np.float32)
    model = mc.models.build_unet((256, 256, 1), depth=4, base_filters=16)
    for label, tta in (("plain", False), ("tta_flips", True)):
        seconds, runs = median_seconds(lambda tta=tta: mc.inference.predict(model, slices, batch_size=8, tta=tta))
        results[f"slices_per_s_256_{label}"] = round(args.slices / seconds, 2)
        results[f"runs_s_256_{label}"] = [round(r, 3) for r in runs]
    results["tta_slowdown"] = round(results["slices_per_s_256_plain"] / results["slices_per_s_256_tta_flips"], 2)

    image = rng.random((1024, 1024, 1), dtype=np.float32)
    patch_model = mc.models.build_unet((256, 256, 1), depth=4, base_filters=16)
    seconds, runs = median_seconds(
        lambda: mc.inference.predict_sliding_window(patch_model, image, (256, 256), overlap=0.5, batch_size=8)
    )
    results["sliding_window_1024_s"] = round(seconds, 2)
    results["sliding_window_1024_runs_s"] = [round(r, 3) for r in runs]
    results["sliding_window_patches"] = len(mc.inference._tile_starts(1024, 256, 128)) ** 2
    results["parameters"] = model.count_params()
    emit(results, args.save)


if __name__ == "__main__":
    main()
