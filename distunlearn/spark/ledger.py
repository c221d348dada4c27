"""The run ledger: a Delta table with one row per run id, replaced atomically as the run moves on."""
from __future__ import annotations

import datetime as dt
import json

from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, LongType, StringType, StructField, StructType, TimestampType

from distunlearn.run_report import RunReport
from distunlearn.spark.delta_writer import replace_run_rows
from distunlearn.spark.table import TableRef

_DOUBLES = ("alpha", "epsilon", "kappa", "kl_removal_before", "kl_removal_after", "kl_preservation_before",
            "kl_preservation_after")
SCHEMA = StructType(
    [StructField(name, StringType()) for name in ("run_id", "status")]
    + [StructField(name, TimestampType()) for name in ("started_at", "updated_at")]
    + [StructField("source", StringType()), StructField("source_version_read", LongType()),
       StructField("source_version_written", LongType()), StructField("output", StringType()),
       StructField("output_version", LongType()), StructField("rule", StringType())]
    + [StructField(name, DoubleType()) for name in _DOUBLES]
    + [StructField(name, LongType()) for name in ("deleted_distributional", "deleted_requested")]
    + [StructField(name, StringType()) for name in ("config_hash", "model", "report", "error")])


class Ledger:
    """One row per run: status (planned, succeeded, failed), versions, thresholds, KLs,
    counts by reason, rule, config hash, the fitted model (for ``verify``) and the report as JSON.

    A run's row is read from the table once; after that this object returns the row it last wrote (only
    the run itself writes its row), so recording a step costs one commit and no read."""

    def __init__(self, spark: SparkSession, table: TableRef):
        self.spark, self.table = spark, table
        self._rows: dict[str, dict | None] = {}

    def get(self, run_id: str) -> dict | None:
        if run_id not in self._rows:
            row = self.table.read(self.spark).where(F.col("run_id") == run_id).first() \
                if self.table.is_delta(self.spark) else None
            self._rows[run_id] = None if row is None else row.asDict()
        return self._rows[run_id]

    def report(self, run_id: str) -> dict | None:
        """The run's report as stored (JSON): an erasure run's, or an unlearn run's of any schema version."""
        row = self.get(run_id)
        return None if row is None or not row["report"] else json.loads(row["report"])

    def run_report(self, run_id: str) -> RunReport | None:
        """An unlearn run's report, read whatever schema version wrote it (``RunReport.from_dict``)."""
        report = self.report(run_id)
        return None if report is None else RunReport.from_dict(report)

    def record(self, run_id: str, status: str, report: RunReport | dict | None = None, model: dict | None = None,
               config_hash: str | None = None, error: str | None = None) -> None:
        """Insert or replace this run's row (one atomic commit); fields not given keep their earlier values.
        ``report``: an unlearn run's, or an erasure run's JSON."""
        now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        values = dict(self.get(run_id) or {"started_at": now})
        values.update({"run_id": run_id, "status": status, "updated_at": now, "error": error})
        if isinstance(report, RunReport):
            report = report.to_dict()
        if report is not None:
            values.update({   # an erasure run's report has no source, rule or KLs of its own
                "source": report.get("source"), "source_version_read": report.get("source_version"),
                "source_version_written": report.get("source_version_written"), "output": report.get("output"),
                "output_version": report.get("output_version"), "rule": report.get("rule"),
                "deleted_distributional": report.get("deleted"), "deleted_requested": report.get("deleted_requested"),
                "report": json.dumps(report), **{k: report.get(k) for k in _DOUBLES}})
        if model is not None:
            values["model"] = json.dumps(model)
        if config_hash is not None:
            values["config_hash"] = config_hash
        row = self.spark.createDataFrame([tuple(values.get(f.name) for f in SCHEMA)], SCHEMA)
        replace_run_rows(self.table, row, run_id)
        self._rows[run_id] = {f.name: values.get(f.name) for f in SCHEMA}
