"""pytest set-up for the whole repository: which notebook outputs nbval compares.

A chapter's outputs are of two kinds. Most do not depend on the CPU: parameter counts,
shapes, closed-form maths, tables computed from fixed data, error messages. nbval compares
those on every machine. Outputs of training, and of anything else whose digits change with
the CPU's instruction set, oneDNN or the thread count, carry the cell tag ``depends-on-cpu``
(``CPU_TAG``): their cells run and their asserts are checked everywhere, but their printed
numbers are compared only with ``--compare-outputs=all``, for the machine that executed the
committed outputs. The tag is found by running the chapters under arithmetic that rounds
differently (``make cpu-tags``); a cell whose output changed there is tagged.
"""

CPU_TAG = "depends-on-cpu"


def pytest_addoption(parser):
    parser.addoption(
        "--compare-outputs", choices=("portable", "all"), default="portable",
        help=f"portable (default): compare every notebook output except those of cells tagged {CPU_TAG!r}, "
             "whose digits depend on the CPU; all: compare those too (on the machine that recorded them)",
    )


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
    return ["notebook outputs: cells tagged 'depends-on-cpu' run and assert but are compared only with "
            "--compare-outputs=all"] if getattr(config.option, "nbval", False) else []


def pytest_terminal_summary(terminalreporter, config):
    line = getattr(config, "_medseg_outputs", None)
    if line:
        terminalreporter.write_line(line)
