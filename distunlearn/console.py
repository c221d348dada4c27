"""The ``distunlearn`` console command (and ``python -m distunlearn``): one line naming what to install when
no pyspark is importable (distunlearn runs on the Spark its users provide), else ``distunlearn.cli``."""
from __future__ import annotations

import sys

from distunlearn.errors import DistunlearnError
from distunlearn.spark.stack import require_pyspark


def main(argv: list[str] | None = None) -> int:
    try:
        require_pyspark()
    except DistunlearnError as exc:
        print(f"distunlearn: error: {exc}", file=sys.stderr)
        return exc.exit_code
    from distunlearn.cli import main as cli_main

    return cli_main(argv)
