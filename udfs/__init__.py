"""Arrow functions that run on the executors (``DataFrame.mapInArrow``).

Each module builds a closure around the small model the driver fitted (centroids, whitening
matrix, thresholds), so the model reaches every task once with the function itself and the
job needs no RDD API or ``sc.broadcast`` (it also runs under Spark Connect). Installed as
``distunlearn.udfs``.
"""
