"""Wall time and peak memory of every chapter, each executed in a fresh kernel.

Prints JSON: per notebook the seconds ``jupyter-execute`` takes (kernel start included) and
the peak resident memory of the kernel process, and the total; and the machine's speed before
and after the chapters (``speed_probe``: TensorFlow's import time, and a small training's
first epoch and rate), since this VM's speed drifts by 20-70 % and the chapters' times
drift with it. Notebooks run on temporary copies, so the committed outputs are untouched
unless ``--write-back`` asks to replace each notebook with its executed copy (what ``make
notebooks`` does, timed in the same pass).

Usage: ``python benchmarks/notebook_times.py [--save FILE] [--update] [--write-back] [NOTEBOOK ...]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _report import emit, machine  # noqa: E402

# Runs jupyter-execute and reports the peak RSS of its descendants (the kernel) in KiB.
_PROBE = (
    "import resource, subprocess, sys; "
    "r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
    "sys.stderr.write(r.stderr[-2000:] if r.returncode else ''); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)"
)


def time_notebook(notebook, write_back=False):
    # the copy lives under the repository (in _build/), so a chapter that looks for the
    # repository's files from its working folder (ch12 reads requirements.txt) finds them
    (ROOT / "_build").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=ROOT / "_build", prefix="notebook_times_") as tmp:
        copy = Path(tmp) / notebook.name
        copy.write_bytes(notebook.read_bytes())
        command = [sys.executable, "-c", _PROBE, str(Path(sys.executable).with_name("jupyter-execute")),
                   "--inplace", "--timeout=600", str(copy)]
        start = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True, cwd=notebook.parent,
                                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        seconds = time.perf_counter() - start
        if result.returncode:
            raise RuntimeError(f"{notebook.name} failed:\n{result.stderr}")
        if write_back:
            os.replace(copy, notebook)  # same file system (_build/ is in the repository)
    return {"seconds": round(seconds, 1), "peak_memory_mb": round(int(result.stdout.split()[-1]) / 1024, 0)}


# The same small probe before and after the chapters, in a fresh process each time: the VM's
# speed drifts by 20-70 % between hours and days, so a chapter time means little without the
# speed the machine ran at. The drift hits single-threaded Python (imports, tracing a model's
# training step) harder than a training step's kernels, so the probe times both.
_SPEED_PROBE = """
import json, time
start = time.perf_counter()
import medseg_course as mc
mc.environment.setup(seed=0)
import keras
imported = time.perf_counter()
from train_throughput import training_rate
x, y = mc.data.make_phantoms(64, image_size=64, seed=0, target="lesion")
rate = training_rate(mc, mc.models.build_unet((64, 64, 1), depth=3, base_filters=16), x, y,
                     batch_size=8, epochs=5, repeats=1)
print(json.dumps({"train_img_per_s": round(rate["images_per_s"], 1), "import_s": round(imported - start, 2),
                  "first_epoch_s": rate["first_epoch_s"]}))
"""


def speed_probe():
    """This machine's speed now, in a fresh process: TensorFlow's import (seconds), the first
    epoch of a 16-filter U-Net at 64x64 (seconds, mostly tracing) and its training rate after
    that (images per second, batch 8)."""
    result = subprocess.run([sys.executable, "-c", _SPEED_PROBE], capture_output=True, text=True, check=True,
                            cwd=ROOT / "benchmarks", env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    return json.loads(result.stdout.splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every book/*.ipynb")
    parser.add_argument("--save", type=Path)
    parser.add_argument("--update", action="store_true",
                        help="keep the other notebooks' figures already in the --save file")
    parser.add_argument("--write-back", action="store_true",
                        help="replace each notebook with its executed copy (its outputs updated)")
    args = parser.parse_args(argv)
    notebooks = args.notebooks or sorted((ROOT / "book").glob("*.ipynb"))
    results = {}
    if args.update and args.save and args.save.is_file():
        results = json.loads(args.save.read_text())["notebooks"]
    speed_before = speed_probe()
    print("speed probe before:", speed_before, file=sys.stderr, flush=True)
    for notebook in notebooks:
        results[notebook.name] = time_notebook(notebook.resolve(), args.write_back)
        print(notebook.name, results[notebook.name], file=sys.stderr, flush=True)
    speed_after = speed_probe()
    report = {
        "machine": machine(),
        "speed_probe": {"before": speed_before, "after": speed_after,
                        "what": "fresh process, threads as in the chapters: import of medseg_course, TensorFlow "
                                "and Keras (s); first epoch of a 16-filter depth-3 U-Net at 64x64, batch 8, "
                                "8 steps, mostly tracing (s); then training images per second over 40 steps"},
        "notebooks": dict(sorted(results.items())),
        "total_seconds": round(sum(r["seconds"] for r in results.values()), 1),
        "max_peak_memory_mb": max(r["peak_memory_mb"] for r in results.values()),
    }
    emit(report, args.save)


if __name__ == "__main__":
    main()
