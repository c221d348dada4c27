"""spark-submit entry point: the same flags as ``distunlearn unlearn``.

    spark-submit --properties-file conf/spark-defaults.conf --py-files dist/distunlearn.zip \
        --packages "$(python -m distunlearn.spark.stack --packages)" \
        jobs/unlearn.py --source ... --unwanted ... --output ...
"""
import sys

from distunlearn.cli import main

if __name__ == "__main__":
    sys.exit(main(["unlearn", *sys.argv[1:]]))
