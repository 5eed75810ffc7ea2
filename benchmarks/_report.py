"""Shared output of the benchmark scripts: JSON to stdout, optionally saved with the machine."""

from __future__ import annotations

import json
import os
import platform

from medseg_course.environment import bf16_hardware, cpu_name


def machine():
    """What the figures were measured on."""
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
            # what mixed precision on this CPU would need (bfloat16 matrix units)
            "bf16_hardware": bf16_hardware()}


def emit(report, save=None):
    """Print ``report`` as JSON and, if ``save`` is a path, write it there too."""
    text = json.dumps(report, indent=2)
    print(text)
    if save:
        save.parent.mkdir(parents=True, exist_ok=True)
        save.write_text(text + "\n")
