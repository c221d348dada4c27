"""``distunlearn verify``: check a finished run against the table as it is now."""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
from dataclasses import dataclass
import numpy as np
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from distunlearn.config import default_ledger
from distunlearn.core.gaussian import PooledGaussian
from distunlearn.core.moments import DomainMoments
from distunlearn.core.selection import Thresholds
from distunlearn.errors import DistunlearnError
from distunlearn.pipeline import read_labelled, statistics
from distunlearn.run_report import RunReport
from distunlearn.spark.ledger import Ledger
from distunlearn.spark.keys import SHUFFLE_JOIN
from distunlearn.spark.table import TableRef, first_line, table_files

@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str

    def line(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'} {self.name}: {self.detail}"


def verify_run(spark: SparkSession, source, run_id: str, ledger=None, manifest=None,
               hash_key: bytes | None = None, **domain_overrides) -> list[Check]:
    """Recompute the KLs with the run's model and thresholds, look for deleted ids in the table, and
    (after a purge) for the files that held them. Tables are paths, URIs or catalog names; the ledger
    defaults as for ``unlearn``: ``distunlearn_ledger`` beside the manifest, given or ``<source>_manifest``;
    the manifest read defaults to the one the run recorded in the ledger."""
    table = TableRef.parse(source)
    ledger = TableRef.parse(ledger) if ledger else default_ledger(
        TableRef.parse(manifest) if manifest else table.child("_manifest"))
    entries = Ledger(spark, ledger)
    record = entries.get(run_id)
    if record is None or record["status"] != "succeeded":
        raise DistunlearnError(f"run {run_id} has no succeeded entry in the ledger {ledger.text}")
    report = entries.run_report(run_id)
    domains = dataclasses.replace(report.domains, **{k: v for k, v in domain_overrides.items() if v is not None})
    labelled = read_labelled(spark, table, "delta", domains)
    stats = statistics(labelled.rows, domains, keep_unwanted=False)
    checks = _kl_checks(json.loads(record["model"]), report, stats.unwanted, stats.retained)
    manifest = TableRef.parse(manifest or report.manifest)
    checks.append(_absent_ids(spark, labelled.rows, manifest, run_id, report.hash_ids, hash_key))
    if report.purge and report.in_place:
        checks.append(_purged_files(spark, table, report))
    return checks


def _kl_checks(model: dict, report: RunReport, unwanted: DomainMoments, retained: DomainMoments) -> list[Check]:
    dim = len(model["mu1"])
    run_model = PooledGaussian.from_parameters(report.n_unwanted, report.n_retained, model["mu1"],
                                               model["mu2"], np.reshape(model["sigma"], (dim, dim)))
    edited = unwanted.merge(retained)
    removal, preservation = run_model.kl(run_model.mu1, edited.mean), run_model.kl(run_model.mu2, edited.mean)
    alpha, epsilon = report.alpha, report.epsilon
    thresholds = Thresholds(alpha, epsilon)
    return [
        Check("removal", bool(thresholds.removal_met(removal)),
              f"KL(p1||p_f) = {removal:.6g} nats, alpha = {alpha:.6g} ({edited.n:,} rows in the domains now)"),
        Check("preservation", bool(thresholds.preservation_met(preservation)),
              f"KL(p2||p_f) = {preservation:.6g} nats, epsilon = {epsilon:.6g}"),
    ]


def _absent_ids(spark, labelled, manifest: TableRef, run_id: str, hashed: bool, hash_key: bytes | None) -> Check:
    deleted = manifest.read(spark).where(F.col("run_id") == run_id).select("id")
    ids = labelled.select("id")
    if hashed:
        if hash_key is None:
            raise DistunlearnError("the run's manifest holds hashed ids: set DISTUNLEARN_HASH_KEY to verify them")
        from distunlearn.udfs.hashing import id_hasher

        ids = ids.mapInArrow(id_hasher(hash_key), StructType([StructField("id", StringType())]))
    remaining = ids.join(deleted.hint(SHUFFLE_JOIN), "id", "left_semi").count()
    total = deleted.count()
    return Check("deleted ids absent", remaining == 0,
                 f"{remaining} of the run's {total} deleted {'id hashes' if hashed else 'ids'} are still in the table")


def _purged_files(spark: SparkSession, table: TableRef, report: RunReport) -> Check:
    """Every file the run's own commits removed, or wrote as change data (``removed_files``, recorded by
    the run), is gone from storage, whatever others committed or compacted since and after the log's
    cleanup. Storage is listed through Spark, so any file system Spark reaches is checked; a check that
    cannot look fails, saying why."""
    files = report.removed_files
    if files is None:
        return Check("purged files gone", False, "UNKNOWN: the run recorded no list of the files its commits "
                                                 "removed (a run of an older distunlearn)")
    if not files:
        deleted = (report.deleted_committed or 0) + report.deleted_requested
        return Check("purged files gone", deleted == 0, "the run deleted no row: no file held a deleted row"
                     if deleted == 0 else f"UNKNOWN: the run deleted {deleted} rows but recorded no file")
    try:
        stored = table_files(spark, table.require_delta(spark, "{source}")["location"])
    except Exception as exc:  # noqa: BLE001 - a check that cannot look must not pass
        return Check("purged files gone", False, f"UNKNOWN: cannot list {table.text}: {first_line(exc)}")
    left = set(files) & stored
    erasable = report.purge.erasable_from
    if left and erasable and dt.datetime.now(dt.timezone.utc) < dt.datetime.fromisoformat(erasable):
        return Check("purged files gone", True,
                     f"not yet, as the table's retention asks: {len(left)} of {len(files)} files removed or written "
                     f"by the run's commits stay on storage until {erasable[:19]} UTC; the first VACUUM after that "
                     f"(a later purge or 'distunlearn erase') removes them")
    return Check("purged files gone", not left,
                 f"{len(left)} of {len(files)} files removed or written by the run's commits are still on storage"
                 + (f", past their retention (erasable from {erasable[:19]} UTC): run a purge" if left and erasable
                    else ""))
