"""Train through the CLI in this process and read back the run's Dice-against-time curve."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import tempfile
import time
from pathlib import Path


def train_curve(arguments, budget_min, max_epochs=500):
    """Run ``medseg-course train`` with ``arguments`` for ``budget_min`` minutes.

    Returns ``{"seconds": [...], "val_dice": [...], "final_val_dice", "wall_s"}``: after each
    epoch, the cumulative training seconds (validation included, the first epoch's tracing
    too) and the held-out Dice Keras logged; and the CLI's own validation Dice of the
    saved (best) model.
    """
    import medseg_course as mc  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="medseg_bench_") as tmp:
        out = Path(tmp) / "run"
        argv = ["train", *map(str, arguments), "--out", str(out), "--epochs", str(max_epochs),
                "--time-budget", str(budget_min)]
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
            status = mc.cli.main(argv)
        wall = time.perf_counter() - start
        if status != 0:
            raise RuntimeError(f"medseg-course {' '.join(argv)} failed ({status}): {err.getvalue()[-2000:]}")
        with open(out / "log.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        summary = json.loads((out / "metrics.json").read_text())["summary"]
    seconds, total = [], 0.0
    for row in rows:
        total += float(row["epoch_time_s"])
        seconds.append(round(total, 1))
    return {
        "seconds": seconds,
        "val_dice": [round(float(row["val_dice"]), 4) for row in rows],
        "final_val_dice": summary.get("dice"),
        "wall_s": round(wall, 1),
    }


def seconds_to(curve, target):
    """Training seconds at the first epoch whose held-out Dice reaches ``target``, or None."""
    for seconds, dice in zip(curve["seconds"], curve["val_dice"]):
        if dice >= target:
            return seconds
    return None


def dice_at(curve, seconds):
    """The best held-out Dice logged by ``seconds`` of training (0 if no epoch ended by then)."""
    reached = [d for s, d in zip(curve["seconds"], curve["val_dice"]) if s <= seconds]
    return max(reached, default=0.0)
