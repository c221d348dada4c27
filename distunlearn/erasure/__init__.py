"""Erasure requests as an operation: every table holding a subject's rows, retention-safe purges, a
status per (request, table) and a certificate per request.

    from distunlearn.erasure import ErasureConfig, erasure_status, run_erasure

    config = ErasureConfig.load("conf/nightly-erasure.toml")
    report = run_erasure(spark, config, run_id="erase-2026-12-07")
    status = erasure_status(spark, config, certificates="certificates/")   # status.counts, status.lines
"""
from distunlearn.erasure.certificate import ErasureStatus, erasure_status
from distunlearn.erasure.config import ErasedTable, ErasureConfig
from distunlearn.erasure.run import run_erasure

__all__ = ["ErasedTable", "ErasureConfig", "ErasureStatus", "erasure_status", "run_erasure"]
