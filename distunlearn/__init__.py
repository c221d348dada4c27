"""distunlearn: make a lakehouse table forget a whole domain of data with the fewest deletions.

``from distunlearn import Unlearner`` is the Python API (``distunlearn.api``); it imports Spark on first use.
"""

__version__ = "0.1.0"
__all__ = ["Plan", "Unlearner"]


def __getattr__(name: str):
    if name in __all__:
        from distunlearn.spark.stack import require_pyspark

        require_pyspark()   # one line naming the extra rather than an ImportError deep in the API
        from distunlearn import api

        return getattr(api, name)
    raise AttributeError(f"module 'distunlearn' has no attribute {name!r}")
