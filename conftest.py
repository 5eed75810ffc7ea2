"""pytest set-up for the whole repository: which notebook outputs nbval compares.

A chapter's outputs are of two kinds. Most do not depend on the CPU: parameter counts,
shapes, closed-form maths, tables computed from fixed data, error messages. nbval compares
those on every machine. Outputs of training, and of anything else whose digits change with
the CPU's instruction set, oneDNN or the thread count, carry the cell tag ``depends-on-cpu``
(``CPU_TAG``): their cells run and their asserts are checked everywhere, but their printed
numbers are compared only with ``--compare-outputs=all``, for the machine that executed the
committed outputs. The tag is found by running the chapters under arithmetic that rounds
differently (``make cpu-tags``); a cell whose output changed there is tagged.

The committed outputs come from an AVX2 CPU. On a CPU with AVX-512, NumPy, OpenBLAS and
OpenCV would pick wider kernels, which add in another order, for the untagged cells too; so
there the notebook kernels run them with their AVX2 kernels (``avx2_kernels``: NumPy's
``X86_V4``/AVX-512 targets off, OpenBLAS's Haswell kernels, OpenCV without AVX-512).
TensorFlow's oneDNN is left alone: the cells it changes are tagged, and capping it would
slow every training by about 17 %.
"""

import os

CPU_TAG = "depends-on-cpu"


def avx2_kernels():
    """Environment for NumPy, OpenBLAS and OpenCV to use AVX2 kernels on an AVX-512 CPU
    (empty elsewhere, and for variables already set)."""
    from medseg_course.environment import cpu_flags, numpy_simd_targets  # noqa: PLC0415  (no TensorFlow at import)

    flags = cpu_flags()
    if "avx512f" not in flags:
        return {}
    env = {"OPENBLAS_CORETYPE": "Haswell"}
    wide = [name for name in numpy_simd_targets() if name in ("X86_V4", "AVX512_ICL", "AVX512_SPR")]
    if wide:
        env["NPY_DISABLE_CPU_FEATURES"] = " ".join(wide)
    if {"avx512bw", "avx512dq", "avx512vl", "avx512cd"} <= flags:
        env["OPENCV_CPU_DISABLE"] = "AVX512-SKX"
    return {key: value for key, value in env.items() if key not in os.environ}


def pytest_addoption(parser):
    parser.addoption(
        "--compare-outputs", choices=("portable", "all"), default="portable",
        help=f"portable (default): compare every notebook output except those of cells tagged {CPU_TAG!r}, "
             "whose digits depend on the CPU; all: compare those too (on the machine that recorded them)",
    )


def pytest_configure(config):
    option = config.option
    if getattr(option, "nbval", False) and not getattr(option, "nbval_lax", False):
        caps = avx2_kernels()
        os.environ.update(caps)  # notebook kernels inherit this process's environment
        config._medseg_caps = caps


def pytest_collection_modifyitems(config, items):
    if not getattr(config.option, "nbval", False) or getattr(config.option, "nbval_lax", False):
        return
    compare_all = config.option.compare_outputs == "all"
    compared = uncompared = 0
    for item in items:
        cell = getattr(item, "cell", None)
        if cell is None or not hasattr(item, "options"):
            continue
        if CPU_TAG in cell.get("metadata", {}).get("tags", []) and not compare_all:
            item.options["check"] = False
        if item.options.get("check") and cell.get("outputs"):
            compared += 1
        elif cell.get("outputs"):
            uncompared += 1
    config._medseg_outputs = (
        f"notebook outputs: {compared} cells with outputs compared, {uncompared} not compared "
        + ("(--compare-outputs=all)" if compare_all else f"(tagged {CPU_TAG!r} or nbval-ignore-output)")
    )


def pytest_report_header(config):
    if not getattr(config.option, "nbval", False):
        return []
    caps = getattr(config, "_medseg_caps", {})
    return ["notebook outputs: cells tagged 'depends-on-cpu' run and assert but are compared only with "
            "--compare-outputs=all" + (f"; AVX2 kernels for NumPy/OpenBLAS/OpenCV ({', '.join(caps)})" if caps else "")]


def pytest_terminal_summary(terminalreporter, config):
    line = getattr(config, "_medseg_outputs", None)
    if line:
        terminalreporter.write_line(line)
