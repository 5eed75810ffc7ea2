"""Find the chapter cells whose outputs depend on the CPU's arithmetic, and tag them.

nbval compares every notebook output on every machine except those of cells tagged
``depends-on-cpu`` (``conftest.py``). This script finds those cells: it runs the chapters
under ``pytest --nbval --compare-outputs=all`` with arithmetic that rounds differently from
the committed run's (oneDNN off, one thread, NumPy's, OpenBLAS's and OpenCV's wider SIMD
kernels off), and every cell whose printed output changes there is CPU-dependent. A cell whose
``assert`` fails there is reported as such: that is a claim to fix, not a cell to tag.

    python tests/cpu_tags.py book/*.ipynb           # report the cells
    python tests/cpu_tags.py --apply book/*.ipynb   # and add the tag to them (never removes one)
    python tests/cpu_tags.py --count book/*.ipynb   # cells with outputs nbval compares everywhere

A perturbed run changes at least the digits another CPU changes in the cells it touches;
a cell can still escape it (NumPy's float64 exp and log have AVX-512 kernels only, which
an AVX2 machine cannot switch off), so the tags are reviewed on each CPU type CI meets.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

from medseg_course.environment import cpu_flags, numpy_simd_targets

ROOT = Path(__file__).resolve().parents[1]
TAG = "depends-on-cpu"


def perturbed_environment():
    """Settings under which the chapters' arithmetic rounds differently from a default run:
    TensorFlow without oneDNN on one thread, NumPy's ufuncs on their baseline kernels,
    OpenBLAS's SSE3 kernels, OpenCV without AVX2/FMA (and AVX-512)."""
    flags = cpu_flags()
    opencv_off = [name for name, flag in (("AVX512-SKX", "avx512bw"), ("AVX2", "avx2"), ("FMA3", "fma"))
                  if flag in flags]
    env = {"TF_ENABLE_ONEDNN_OPTS": "0", "MEDSEG_THREADS": "1", "OPENBLAS_CORETYPE": "Prescott"}
    if numpy_simd_targets():
        env["NPY_DISABLE_CPU_FEATURES"] = " ".join(numpy_simd_targets())
    if opencv_off:
        env["OPENCV_CPU_DISABLE"] = ",".join(opencv_off)
    return env


def differing_cells(notebooks, env):
    """``{notebook: {"outputs": [code cell numbers], "errors": [...]}}`` under ``env``."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "junit.xml"  # pytest's report: which cells failed, and why
        subprocess.run(
            [sys.executable, "-m", "pytest", *map(str, notebooks), "--nbval", "--compare-outputs=all",
             "--nbval-current-env", "--nbval-cell-timeout=900", "--nbval-sanitize-with", "tests/nbval_sanitize.cfg",
             "-p", "no:cacheprovider", "-q", f"--junitxml={report}"],
            cwd=ROOT, env={**os.environ, **env}, check=False)
        found = {}
        for case in ET.parse(report).getroot().iter("testcase"):
            failure = case.find("failure")
            if failure is None:
                continue
            match = re.search(r"Cell (\d+)", case.get("name", ""))
            classname = case.get("classname", "")  # "book.05_loss_functions.ipynb"
            notebook = next(str(p) for p in notebooks if classname.endswith(Path(p).name))
            text = (failure.get("message") or "") + (failure.text or "")
            kind = "outputs" if "Cell outputs differ" in text else "errors"
            found.setdefault(notebook, {"outputs": [], "errors": []})[kind].append(int(match.group(1)))
    return found


def apply_tags(notebook, cells):
    path = Path(notebook)
    nb = json.loads(path.read_text())
    code = [cell for cell in nb["cells"] if cell["cell_type"] == "code"]
    for number in cells:
        tags = code[number].setdefault("metadata", {}).setdefault("tags", [])
        if TAG not in tags:
            tags.append(TAG)
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def compared_counts(notebook):
    """``(compared, with_outputs)``: code cells with outputs, and those of them nbval compares
    on every machine (not tagged ``depends-on-cpu``, ``nbval-ignore-output`` or skipped)."""
    nb = json.loads(Path(notebook).read_text())
    cells = [c for c in nb["cells"] if c["cell_type"] == "code" and c.get("outputs")]
    skipped = {TAG, "nbval-ignore-output", "nbval-skip"}
    return sum(not skipped & set(c.get("metadata", {}).get("tags", [])) for c in cells), len(cells)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--apply", action="store_true", help=f"add the {TAG!r} tag to the cells found")
    parser.add_argument("--count", action="store_true", help="only count the cells compared on every machine")
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.notebooks if not p.is_file()]
    if missing:
        print(f"cpu_tags: error: no such notebook: {missing[0]}", file=sys.stderr)
        return 2
    if args.count:
        total = [0, 0]
        for notebook in args.notebooks:
            compared, cells = compared_counts(notebook)
            total = [total[0] + compared, total[1] + cells]
            print(f"{notebook.name}: {compared} of {cells} code cells with outputs compared on every machine")
        print(f"book: {total[0]} of {total[1]} ({100 * total[0] / max(total[1], 1):.0f} %)")
        return 0
    env = perturbed_environment()
    print("perturbed:", " ".join(f"{k}={v}" for k, v in env.items()))
    found = differing_cells(args.notebooks, env)
    print(json.dumps(found))
    for notebook, kinds in sorted(found.items()):
        print(f"{notebook}: outputs differ in cells {kinds['outputs']}; failed in cells {kinds['errors']}")
        if args.apply and kinds["outputs"]:
            apply_tags(notebook, kinds["outputs"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
