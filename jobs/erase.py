"""spark-submit entry point: the same flags as ``distunlearn erase`` (one run over every erasure request).

    spark-submit --properties-file build/spark-defaults.conf --py-files dist/distunlearn.zip \
        jobs/erase.py --config conf/nightly-erasure.toml --run-id erase-2026-12-07
"""
import sys

from distunlearn.cli import main

if __name__ == "__main__":
    sys.exit(main(["erase", *sys.argv[1:]]))
