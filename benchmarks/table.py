"""Print the committed benchmark results (``benchmarks/results/*.json``) as one table.

Each row is one figure: the benchmark, the figure's name (nested keys joined by ``.``) and
its value; lists (the single runs behind a median) are left out of the rows, and
the machine each file was measured on is printed under its name.

Usage: ``python benchmarks/table.py [RESULTS_DIR]``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def rows(prefix, value):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from rows(f"{prefix}.{key}" if prefix else key, item)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield prefix, value


def _is_grid(value):
    return (isinstance(value, dict) and len(value) > 1 and all(isinstance(v, dict) for v in value.values())
            and len({tuple(v) for v in value.values()}) == 1
            and not any(isinstance(x, dict) for v in value.values() for x in v.values()))


def _cell(value):
    if value is None:
        return f"{'-':>16}"
    return f"{value:>16,.4g}" if isinstance(value, float) else f"{value:>16,}"


def print_grid(title, grid):
    # scalar columns only: lists (curves, single runs) stay in the JSON
    first = next(iter(grid.values()))
    columns = [c for c in first if all(v[c] is None or isinstance(v[c], (int, float)) for v in grid.values())]
    width = max(len(name) for name in grid)
    print(f"  {title:<{width}}  " + "  ".join(f"{c:>16}" for c in columns))
    for name, values in grid.items():
        print(f"  {name:<{width}}  " + "  ".join(_cell(values[c]) for c in columns))


def _print_grids(prefix, report):
    """Print and remove every grid in ``report``, however deep (e.g. recipes.json's rounds)."""
    for key, value in list(report.items()):
        name = f"{prefix}.{key}" if prefix else key
        if _is_grid(value):  # e.g. notebooks: one row per notebook, one column per figure
            print_grid(name, report.pop(key))
        elif isinstance(value, dict):
            _print_grids(name, value)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    folder = Path(argv[0]) if argv else RESULTS
    files = sorted(folder.glob("*.json"))
    if not files:
        print(f"{folder}: no benchmark results; run `make bench` first.", file=sys.stderr)
        return 1
    for path in files:
        report = json.loads(path.read_text())
        machine = report.pop("machine", {})
        print(f"\n{path.stem}  ({', '.join(f'{k} {v}' for k, v in machine.items())})")
        _print_grids("", report)
        entries = list(rows("", report))
        width = max((len(name) for name, _ in entries), default=10)
        for name, value in entries:
            print(f"  {name:<{width}}  {value:>12,.2f}" if isinstance(value, float) else f"  {name:<{width}}  {value:>12,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
