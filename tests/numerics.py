"""Does this machine reproduce the committed notebook outputs bit for bit?

The chapters' outputs were computed on one CPU. nbval compares a re-run with them exactly,
which only makes sense where the arithmetic is the same: the same instruction set for the
kernels TensorFlow and NumPy pick at run time, oneDNN on or off, the same threads and
versions. ``medseg_course.utils.numerics_fingerprint()`` hashes a short training run with
those settings; ``numerics_reference.json`` holds the hash of the machine that made the
committed outputs (``make notebooks`` records it).

The root ``conftest.py`` uses ``compare()``: where the fingerprints agree, nbval compares
every output; where they differ, it runs every cell and every ``assert`` (the bounds each
chapter's claims rest on) without comparing printed numbers, as ``--nbval-lax`` does, and
says so in the report header.

    python tests/numerics.py            # this machine's fingerprint against the reference
    python tests/numerics.py --record   # store this machine's as the reference

The reference says whether the outputs were executed under the AVX2 caps of
``reproducible_environment()``; the fingerprint is compared, and the notebooks run, in the
same setting. ``make notebooks`` executes them with the CPU's own kernels and records that.
"""

import argparse
import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

#: The committed run's fingerprint; MEDSEG_NUMERICS_REFERENCE names another file (for tests).
REFERENCE = Path(os.environ.get("MEDSEG_NUMERICS_REFERENCE") or Path(__file__).with_name("numerics_reference.json"))

_PROGRAM = (
    "import medseg_course as mc; mc.utils.setup(seed=0, threads=2); "
    "print(mc.utils.numerics_fingerprint())"
)


def reproducible_environment():
    """Environment variables that make an AVX-512 CPU compute what an AVX2 one does.

    For outputs executed on an AVX2 CPU (a reference with ``avx2_caps``). Libraries that
    pick SIMD kernels at run time round differently with AVX-512 ones: oneDNN
    (TensorFlow's matrix products go through its sgemm even with
    ``TF_ENABLE_ONEDNN_OPTS=0``), NumPy's ufuncs and OpenCV.
    Capping each at AVX2 may give the same bits; on a 2-core Intel Xeon with AVX-512 and
    AMX it did not (the fingerprint changed with the caps, but not to the AMD EPYC's), and
    it cost 17 % of a training's speed, so ``conftest.py`` keeps the caps for the notebooks
    only where the capped fingerprint matches. Only features the CPU has are named: OpenCV
    prints a line for each one it lacks. Variables already set win.
    """
    env = {"ONEDNN_MAX_CPU_ISA": "AVX2", "DNNL_MAX_CPU_ISA": "AVX2"}
    _, flags = _cpuinfo()
    if "avx512f" in flags:
        try:
            from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
        except ImportError:  # another NumPy layout: leave its kernels alone
            __cpu_dispatch__, __cpu_features__ = (), {}
        wide = [f for f in __cpu_dispatch__ if f in ("X86_V4", "AVX512_ICL", "AVX512_SPR") and __cpu_features__.get(f)]
        if wide:
            env["NPY_DISABLE_CPU_FEATURES"] = " ".join(wide)
        if {"avx512bw", "avx512dq", "avx512vl", "avx512cd"} <= flags:
            env["OPENCV_CPU_DISABLE"] = "AVX512-SKX"
    return {key: value for key, value in env.items() if key not in os.environ}


def _cpuinfo():
    """``(model name, set of flags)`` of the first CPU in /proc/cpuinfo (unknown elsewhere)."""
    model, flags = "unknown CPU", set()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return model, flags
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model == "unknown CPU":
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    return model, flags


def fingerprint_here(timeout=600, capped=True):
    """This machine's fingerprint, computed in a fresh process (TensorFlow's settings are
    fixed per process, and the caller's must not be touched), under
    ``reproducible_environment()`` if ``capped``, else in this process's environment."""
    env = dict(os.environ, **(reproducible_environment() if capped else {}))
    result = subprocess.run([sys.executable, "-c", _PROGRAM], capture_output=True, text=True,
                            env=env, timeout=timeout, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"computing the numerics fingerprint failed:\n{result.stderr[-2000:]}")
    return result.stdout.strip().splitlines()[-1]


def cpu_description():
    """The CPU's model name and the vector extensions that change kernel choice."""
    model, flags = _cpuinfo()
    vector = sorted(f for f in flags if f.startswith(("avx", "amx", "fma")))
    return f"{model} ({' '.join(vector) or 'no AVX'}), {os.cpu_count()} cores"


def reference():
    """The stored reference: ``{"fingerprint", "machine", "recorded", "avx2_caps"}``.

    ``avx2_caps``: whether the outputs were computed under ``reproducible_environment()``'s
    caps (true for references older than the flag: on their AVX2 CPU the caps changed
    nothing), and so whether a machine must compute its fingerprint, and run the notebooks,
    under them to reproduce the outputs.
    """
    ref = json.loads(REFERENCE.read_text())
    ref.setdefault("avx2_caps", True)
    return ref


def compare(ref=None):
    """``(same, here, reference_dict)`` for this machine against the committed outputs'
    (``ref``, if the caller has read the reference already)."""
    ref = ref or reference()
    here = fingerprint_here(capped=ref["avx2_caps"])
    return here == ref["fingerprint"], here, ref


def record(capped=False):
    """Store this machine's fingerprint as the committed outputs' reference: computed in this
    process's environment, as ``make notebooks`` executes the chapters, or under the AVX2
    caps if ``capped`` (for outputs executed under them)."""
    entry = {
        "fingerprint": fingerprint_here(capped=capped),
        "machine": cpu_description(),
        "recorded": datetime.date.today().isoformat(),
        "avx2_caps": capped,
    }
    REFERENCE.write_text(json.dumps(entry, indent=2) + "\n")
    return entry


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--record", action="store_true",
                        help="store this machine's fingerprint as the reference")
    parser.add_argument("--avx2-caps", action="store_true",
                        help="with --record: the notebooks were executed under the AVX2 caps")
    args = parser.parse_args(argv)
    if args.record:
        print(json.dumps(record(capped=args.avx2_caps)))
        return 0
    same, here, ref = compare()
    print(f"this machine: {here} ({cpu_description()})")
    print(f"reference:    {ref['fingerprint']} ({ref['machine']}, {ref['recorded']})")
    print("outputs reproduce bit for bit" if same else "outputs will differ in their digits")
    return 0


if __name__ == "__main__":
    sys.exit(main())
