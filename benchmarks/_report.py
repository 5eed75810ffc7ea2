"""Shared output of the benchmark scripts: JSON to stdout, optionally saved with the machine."""

from __future__ import annotations

import json
import os
import platform


def machine():
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    flags = set()
    try:
        with open("/proc/cpuinfo") as handle:
            lines = handle.read().splitlines()
        cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), cpu)
        flags = set(next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), []))
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            # what mixed precision on this CPU would need (bfloat16 matrix units)
            "bf16_hardware": bool(flags & {"avx512_bf16", "amx_bf16"})}


def emit(report, save=None):
    """Print ``report`` as JSON and, if ``save`` is a path, write it there too."""
    text = json.dumps(report, indent=2)
    print(text)
    if save:
        save.parent.mkdir(parents=True, exist_ok=True)
        save.write_text(text + "\n")
