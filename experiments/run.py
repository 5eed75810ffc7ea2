"""Run one of the book's comparative experiments over many seeds and store the records.

    python experiments/run.py lesion_lab --seeds 8 --save experiments/results/lesion_lab.json
    python experiments/run.py recipes --seeds 8 --save experiments/results/recipes.json
    python experiments/run.py losses --seeds 10 --save experiments/results/losses.json

and likewise leakage (chapter 6), models (8), scanner (10) and brain_methods (14). Chapters
5, 6, 8, 10, 13 and 14 run one or three seeds live and read these files for their intervals; ``experiments/README.md`` lists every comparative
claim with its interval, n and assert. The file is rewritten after every seed, so an
interrupted run keeps what it finished; an existing file is replaced only with --replace.
"""

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# name on the command line (and of the results file) -> class in medseg_course.experiments
EXPERIMENTS = {"losses": "LossLab", "leakage": "Leakage", "models": "ArticleVersusUNet",
               "scanner": "ScannerAugmentation", "lesion_lab": "LesionLab", "recipes": "RecipeExperiment",
               "brain_methods": "BrainMethods"}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", choices=sorted(EXPERIMENTS))
    parser.add_argument("--seeds", type=int, default=8, help="seeds 0 .. N-1 (default 8)")
    parser.add_argument("--save", type=Path, required=True, help="JSON file for the records")
    parser.add_argument("--replace", action="store_true", help="replace an existing --save file")
    args = parser.parse_args(argv)
    if args.seeds < 2:
        parser.exit(2, f"run.py: --seeds must be at least 2 for an interval, got {args.seeds}\n")
    if args.save.exists() and not args.replace:
        parser.exit(2, f"run.py: {args.save} exists; pass --replace to overwrite it or choose another --save\n")
    if not args.save.parent.is_dir():
        parser.exit(2, f"run.py: folder {args.save.parent} does not exist; create it or choose another --save\n")

    import medseg_course as mc  # noqa: PLC0415

    mc.environment.setup(seed=0)
    experiment = getattr(mc.experiments, EXPERIMENTS[args.experiment])()
    result = {"experiment": args.experiment, "machine": mc.experiments.machine(),
              "recorded": datetime.date.today().isoformat(),
              "command": "python experiments/run.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "records": []}
    start = time.perf_counter()
    for seed in range(args.seeds):
        result["records"].extend(experiment.run(seed))
        result["seconds"] = round(time.perf_counter() - start, 1)
        tmp = args.save.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=1) + "\n")
        tmp.replace(args.save)
        print(f"seed {seed} done, {result['seconds']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
