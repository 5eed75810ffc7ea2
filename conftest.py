"""pytest set-up for the whole repository: which notebook outputs nbval compares.

The committed notebook outputs come from one CPU. Where this machine's arithmetic differs
(another instruction set, oneDNN on, a GPU, other versions; see ``tests/numerics.py``),
trained numbers differ in their digits, so comparing them says nothing about the course.
There, nbval still runs every cell and every ``assert`` (each chapter asserts the bounds
its claims rest on) but does not compare printed outputs, and the report header says so.
``--compare-outputs=always`` compares them anyway. Where the reference says the outputs were
executed with the kernels that round differently capped at AVX2 (``reproducible_environment``,
for outputs from an AVX2 CPU), the fingerprint is computed under the caps, so that an AVX-512
CPU may reproduce them; the notebooks run with those caps only where it does (or with
``--compare-outputs=always``). Elsewhere the caps would buy nothing and cost speed (17 % of a
training's images per second on a 2-core Intel Xeon with AVX-512 and AMX, whose capped
fingerprint still differed from an AMD EPYC's), so the notebooks run with the kernels the CPU
has.
"""

import importlib.util
import os
from pathlib import Path

_HERE = Path(__file__).parent


def pytest_addoption(parser):
    parser.addoption(
        "--compare-outputs", choices=("auto", "always"), default="auto",
        help="auto (default): compare notebook outputs only where this machine reproduces the "
             "committed run's arithmetic (tests/numerics.py); always: compare them anyway",
    )


def _load_numerics():
    spec = importlib.util.spec_from_file_location("_medseg_numerics", _HERE / "tests" / "numerics.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_numerics = _load_numerics()


def pytest_configure(config):
    option = config.option
    if not getattr(option, "nbval", False) or getattr(option, "nbval_lax", False):
        return
    # Notebook kernels inherit this process's environment: the caps go there only when the
    # outputs are compared.
    ref = _numerics.reference()
    caps = _numerics.reproducible_environment() if ref["avx2_caps"] else {}
    if option.compare_outputs == "always":
        os.environ.update(caps)
        config._medseg_outputs = "notebook outputs: compared (--compare-outputs=always)"
        return
    same, here, ref = _numerics.compare(ref)  # computed under the caps if the reference was
    if same:
        os.environ.update(caps)
        config._medseg_outputs = (f"notebook outputs: compared bit for bit; this machine reproduces "
                                  f"the committed run (numerics fingerprint {here})")
    else:
        option.nbval_lax = True  # read when each notebook is collected
        config._medseg_outputs = (
            f"notebook outputs: NOT compared; this machine's numerics fingerprint {here} differs "
            f"from the committed run's {ref['fingerprint']} ({ref['machine']}), so trained numbers "
            "differ in their digits. Every cell and every assert still runs"
            + (f", with the CPU's own kernels ({', '.join(sorted(caps))} left unset)." if caps else "."))


def pytest_report_header(config):
    line = getattr(config, "_medseg_outputs", None)
    return [line] if line else []
