"""Command line: ``medseg-course``.

``medseg-course info`` prints the package, its dependencies' versions and the device
TensorFlow sees.
"""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["main"]


def _info(args):
    from medseg_course import utils  # noqa: PLC0415

    info = utils.setup(seed=0, threads=args.threads)
    report = {
        "device": info.device,
        "threads": info.threads,
        "python": info.python,
        "versions": info.versions,
    }
    print(json.dumps(report, indent=2) if args.json else str(info))
    return 0


def build_parser():
    """The argument parser (exposed for tests and documentation)."""
    parser = argparse.ArgumentParser(
        prog="medseg-course",
        description="Tools of the medseg-course package (CNN medical image segmentation).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    info = sub.add_parser("info", help="print versions and the device TensorFlow uses")
    info.add_argument("--json", action="store_true", help="print JSON instead of one line")
    info.add_argument("--threads", type=int, default=2, help="CPU threads to pin (default 2)")
    info.set_defaults(handler=_info)
    return parser


def main(argv=None):
    """Entry point of the ``medseg-course`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 2
    try:
        return args.handler(args)
    except ValueError as err:
        print(f"medseg-course {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
