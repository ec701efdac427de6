"""``python -m lightning_prune.report PATH``: write ``report.md`` and plots for a run or a sweep directory."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lightning_prune.report.write import write_report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lightning_prune.report",
        description="Write report.md and PNG plots from a run's summary.json and CSV log (nothing is re-run). "
        "On a Hydra sweep directory, also a comparison of its jobs and a Pareto plot.",
    )
    parser.add_argument("path", help="run directory (holds summary.json) or sweep directory (<job>/summary.json)")
    args = parser.parse_args(argv)
    try:
        report = write_report(args.path)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
