"""Run a script or ``-m module`` in this process, then print its peak memory as a JSON line.

Usage: ``python benchmarks/peak_memory.py [-m module | script.py] ARGS...``; the last stdout
line is ``{"peak_rss_gb": ...}`` (the process's maximum resident set, ``getrusage``), after
the command's own output. The command's exit status is kept.
"""

import json
import resource
import runpy
import sys

if __name__ == "__main__":
    if sys.argv[1] == "-m":
        target, sys.argv = sys.argv[2], [sys.argv[2], *sys.argv[3:]]
        run = lambda: runpy.run_module(target, run_name="__main__", alter_sys=True)  # noqa: E731
    else:
        target, sys.argv = sys.argv[1], sys.argv[1:]
        run = lambda: runpy.run_path(target, run_name="__main__")  # noqa: E731
    status = 0
    try:
        run()
    except SystemExit as exit_:
        status = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    sys.stdout.flush()
    print(json.dumps({"peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)}))
    sys.exit(status)
