"""spark-submit entry point: the same flags as ``distunlearn evaluate``.

    spark-submit --properties-file conf/spark-defaults.conf --py-files dist/distunlearn.zip \
        --packages "$(python -m distunlearn.spark.stack --packages)" \
        jobs/evaluate.py --source ... --unwanted ... --report out/eval.json
"""
import sys

from distunlearn.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
