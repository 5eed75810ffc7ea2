"""Run folders of ``medseg-course train``: what they hold, and the checks that keep them safe.

A run folder is never mixed with another run, never placed inside the data it learns from,
and never reused without ``--overwrite`` (which replaces only the files a run writes) or
``--resume`` (which must be given the settings the run started with).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from medseg_course.utils import atomic_path, check_writable_folder

__all__ = ["CONFIG_NAME", "MODEL_NAME", "RUN_FILES", "RESUME_KEYS", "RunFolderError", "check_run_folder", "clear_run_folder", "check_resumable", "start_run",
           "epochs_logged", "write_json"]

#: A run folder's configuration (how inputs were prepared) and its model.
CONFIG_NAME = "config.json"
MODEL_NAME = "model.keras"
#: What ``train`` writes into a run folder (``--overwrite`` deletes these and nothing else).
RUN_FILES = ("config.json", "plan.json", "log.csv", "model.keras", "best.keras", "resume.npz", "metrics.json", "overlays")
#: Settings that must match for ``--resume`` to continue a run.
RESUME_KEYS = ("data", "mode", "input_size", "channels", "num_classes", "model", "depth", "base_filters", "width",
               "loss", "batch_size", "learning_rate", "augment", "seed", "threads", "split", "precision",
               "dims", "context", "patch_shape", "spacing_mm", "steps_per_epoch", "foreground_rate", "bn_momentum")
#: What a run folder written before a setting existed used (its config.json lacks the key).
RESUME_DEFAULTS = {"precision": "float32", "bn_momentum": 0.5}


class RunFolderError(ValueError):
    """A run folder that cannot be used as asked; the message says what to do instead."""


def write_json(path, payload):
    """Write ``payload`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2))


def epochs_logged(out):
    """Complete epochs in the run's ``log.csv`` (0 without one)."""
    log = out / "log.csv"
    return max(0, len(log.read_text().splitlines()) - 1) if log.is_file() else 0


def check_run_folder(out, data, overwrite=False, resume=False):
    """Refuse to mix a new run into an old one, or to write into the data folder ``data``
    (a path, or a built-in source's name)."""
    out = Path(out)
    if overwrite and resume:
        raise RunFolderError("--overwrite and --resume contradict each other; pass one of them.")
    if data not in ("phantom", "mni152", "hippocampus"):
        data = Path(data).resolve()
        target = out.resolve()
        if target == data or data in target.parents:
            raise RunFolderError(f"--out {out} is inside the data folder {data}; write runs elsewhere so the data stay untouched.")
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"--out {out} is a file, not a folder; choose a folder name for the run.")
    if resume:
        if not (out / CONFIG_NAME).is_file():
            raise RunFolderError(f"{out / CONFIG_NAME}: not found, so there is no run to resume in {out}; start without --resume.")
        return
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise RunFolderError(f"{out} exists and is not empty; choose a new --out, or pass --overwrite or --resume.")
    if overwrite and out.is_dir():
        foreign = [p.name for p in out.iterdir() if p.name not in RUN_FILES]
        if foreign:
            raise RunFolderError(
                f"{out} holds files that are not from a medseg-course run ({', '.join(sorted(foreign)[:3])}); "
                "--overwrite only replaces run folders. Choose another --out."
            )


def clear_run_folder(out):
    """Delete the files a run writes (``RUN_FILES``), and nothing else."""
    for name in RUN_FILES:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def start_run(out, config, resume=False, overwrite=False):
    """Open the run folder for training: on ``resume`` check that ``config`` matches the
    run's (``check_resumable``); otherwise clear an old run's files (``overwrite``), check
    that the folder can be written and write ``config.json``."""
    if resume:
        check_resumable(out, config)
        return
    if overwrite:
        clear_run_folder(out)
    check_writable_folder(out)
    write_json(out / CONFIG_NAME, config)


def check_resumable(out, config):
    """Refuse to resume a run whose ``config.json`` was written with other settings."""
    try:
        saved = json.loads((out / CONFIG_NAME).read_text())
    except (OSError, ValueError) as err:
        raise RunFolderError(f"{out / CONFIG_NAME}: not readable ({type(err).__name__}); cannot resume this run.") from None
    changed = [key for key in RESUME_KEYS
               if saved.get(key, RESUME_DEFAULTS.get(key)) != json.loads(json.dumps(config.get(key)))]
    if changed:
        raise RunFolderError(
            f"{out / CONFIG_NAME}: the run was started with other settings ({', '.join(changed)}); "
            "resume with the original command line, or start a new run."
        )
