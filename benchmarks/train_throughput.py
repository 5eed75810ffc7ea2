"""Training throughput on this machine, and the time the quick-tour chapter takes.

Prints one JSON object: images per second of training (after a warm-up epoch that absorbs
tracing and graph compilation) for

* the 16-filter U-Net (depth 4) at 128x128, through the package's tf.data + fit path;
* the article's encoder-decoder (64-512 filters) at 128x128, the same way;
* the 16-filter U-Net through the package's path against a plain ``model.fit`` on NumPy
  arrays, timed in alternation in the same run (the ratio is what the performance issue
  asks to raise to 1.5);

each as the median of three timed runs (single runs on the 2-core machine vary by up to
~40 %, so one sample is not a measurement);

and the wall-clock seconds of executing ``book/00_quick_tour.ipynb`` in a fresh kernel.

Usage: ``python benchmarks/train_throughput.py [--save results/train_throughput.json]
[--skip-tour]``. Threads are pinned to 2 (``mc.utils.setup``), as in the book.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import medseg_course as mc  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _report import emit, machine  # noqa: E402


def training_rate(model, images, masks, batch_size, epochs, repeats=3):
    """Images/s of ``repeats`` timed runs of ``epochs`` epochs, after one warm-up epoch."""
    mc.training.compile_model(model, loss="dice_ce", learning_rate=1e-3)
    data = mc.training.make_dataset(images, masks, batch_size=batch_size, seed=0)
    mc.training.fit(model, data, epochs=1)  # warm-up: tracing and compilation
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        mc.training.fit(model, data, epochs=epochs)
        rates.append(len(images) * epochs / (time.perf_counter() - start))
    return {
        "images_per_s": round(statistics.median(rates), 2),
        "images_per_s_runs": [round(r, 2) for r in rates],
        "images_per_run": len(images) * epochs,
        "batch_size": batch_size,
        "parameters": model.count_params(),
    }


def against_plain_fit(images, masks, batch_size=16, epochs=2, rounds=3):
    """The package's path (make_dataset + fit) against Keras' model.fit on NumPy arrays.

    Same architecture, loss, optimizer and batch size, no augmentation on either side, two
    separately compiled models, timed in alternation (package, plain, package, ...) so that
    drifts in the machine's speed hit both alike. Returns images/s of each and their ratio.
    """
    import keras  # noqa: PLC0415

    def build():
        keras.utils.set_random_seed(0)
        model = mc.models.build_unet(images.shape[1:], depth=4, base_filters=16)
        return mc.training.compile_model(model, loss="dice_ce", learning_rate=1e-3)

    ours, plain = build(), build()
    data = mc.training.make_dataset(images, masks, batch_size=batch_size, seed=0)
    mc.training.fit(ours, data, epochs=1)
    plain.fit(images, masks, batch_size=batch_size, epochs=1, shuffle=True, verbose=0)
    rates = {"package": [], "plain_fit": []}
    for _ in range(rounds):
        start = time.perf_counter()
        mc.training.fit(ours, data, epochs=epochs)
        rates["package"].append(len(images) * epochs / (time.perf_counter() - start))
        start = time.perf_counter()
        plain.fit(images, masks, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=0)
        rates["plain_fit"].append(len(images) * epochs / (time.perf_counter() - start))
    medians = {name: statistics.median(values) for name, values in rates.items()}
    return {
        "package_images_per_s": round(medians["package"], 2),
        "plain_fit_images_per_s": round(medians["plain_fit"], 2),
        "ratio": round(medians["package"] / medians["plain_fit"], 3),
        "package_runs": [round(r, 2) for r in rates["package"]],
        "plain_fit_runs": [round(r, 2) for r in rates["plain_fit"]],
        "batch_size": batch_size,
    }


def quick_tour_seconds():
    """Execute the quick tour in a fresh kernel on a temporary copy; return wall seconds."""
    notebook = ROOT / "book" / "00_quick_tour.ipynb"
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / notebook.name
        copy.write_bytes(notebook.read_bytes())
        start = time.perf_counter()
        subprocess.run(
            [str(Path(sys.executable).with_name("jupyter-execute")), "--timeout=600", str(copy)],
            check=True,
            capture_output=True,
            cwd=ROOT / "book",
        )
        return round(time.perf_counter() - start, 1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--save", type=Path, help="also write the JSON to this file")
    parser.add_argument("--skip-tour", action="store_true", help="do not time the quick tour")
    args = parser.parse_args(argv)

    info = mc.utils.setup(seed=0, threads=2)
    images, masks = mc.data.make_phantoms(64, image_size=128, seed=0)
    unet = mc.models.build_unet((128, 128, 1), depth=4, base_filters=16)
    article = mc.models.build_seed_encoder_decoder((128, 128, 1))
    result = {
        "machine": {
            **machine(),
            "threads": info.threads,
            "device": info.device,
            "tensorflow": info.versions.get("tensorflow-cpu", info.versions.get("tensorflow")),
        },
        "unet16_128": training_rate(unet, images, masks, batch_size=16, epochs=2),
        "article_128": training_rate(article, images[:16], masks[:16], batch_size=8, epochs=1),
        "unet16_128_vs_plain_fit": against_plain_fit(images, masks),
    }
    if not args.skip_tour:
        result["quick_tour_seconds"] = quick_tour_seconds()
    emit(result, args.save)


if __name__ == "__main__":
    main()
