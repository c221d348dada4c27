"""``distunlearn verify``: check a finished run against the table as it is now."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from urllib.parse import unquote

import numpy as np
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from distunlearn.core.gaussian import PooledGaussian
from distunlearn.core.moments import DomainMoments
from distunlearn.errors import DistunlearnError
from distunlearn.spark.ledger import Ledger
from distunlearn.spark.session import without_broadcast_joins
from distunlearn.spark.source import Source, labelled_rows
from distunlearn.spark.statistics import domain_statistics

TOLERANCE = 1e-9


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str

    def line(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'} {self.name}: {self.detail}"


@without_broadcast_joins
def verify_run(spark: SparkSession, source: str, run_id: str, ledger_path: str, manifest_path: str | None = None,
               hash_key: bytes | None = None, **domain_overrides) -> list[Check]:
    """Recompute the KLs with the run's model and thresholds, look for deleted ids in the table, and
    (after a purge) for the files that held them."""
    record = Ledger(spark, ledger_path).get(run_id)
    if record is None or record["status"] != "succeeded":
        raise DistunlearnError(f"run {run_id} has no succeeded entry in the ledger {ledger_path}")
    report = json.loads(record["report"])
    domains = {**report["domains"], **{k: v for k, v in domain_overrides.items() if v is not None}}
    current = Source.read(spark, source)
    labelled = labelled_rows(current, domains["id_col"], domains["vector_col"], domains["unwanted"],
                             domains["retained"])
    stats = domain_statistics(labelled, domains["id_col"], domains["vector_col"])
    checks = _kl_checks(json.loads(record["model"]), report, stats.unwanted, stats.retained)
    manifest = manifest_path or report["manifest"]
    checks.append(_absent_ids(spark, labelled, manifest, run_id, report.get("hash_ids"), hash_key))
    if report.get("purge") and report.get("in_place"):
        checks.append(_purged_files(source, report["source_version_written"]))
    return checks


def _kl_checks(model: dict, report: dict, unwanted: DomainMoments, retained: DomainMoments) -> list[Check]:
    dim = len(model["mu1"])
    run_model = PooledGaussian.from_parameters(report["n_unwanted"], report["n_retained"], model["mu1"],
                                               model["mu2"], np.reshape(model["sigma"], (dim, dim)))
    edited = unwanted.merge(retained)
    removal, preservation = run_model.kl(run_model.mu1, edited.mean), run_model.kl(run_model.mu2, edited.mean)
    alpha, epsilon = report["alpha"], report["epsilon"]
    return [
        Check("removal", removal >= alpha * (1 - TOLERANCE),
              f"KL(p1||p_f) = {removal:.6g} nats, alpha = {alpha:.6g} ({edited.n:,} rows in the domains now)"),
        Check("preservation", preservation <= epsilon * (1 + TOLERANCE) + TOLERANCE,
              f"KL(p2||p_f) = {preservation:.6g} nats, epsilon = {epsilon:.6g}"),
    ]


def _absent_ids(spark, labelled, manifest: str, run_id: str, hashed: bool, hash_key: bytes | None) -> Check:
    deleted = spark.read.format("delta").load(manifest).where(F.col("run_id") == run_id).select("id")
    ids = labelled.select("id")
    if hashed:
        if hash_key is None:
            raise DistunlearnError("the run's manifest holds hashed ids: set DISTUNLEARN_HASH_KEY to verify them")
        from distunlearn.udfs.hashing import id_hasher

        ids = ids.mapInArrow(id_hasher(hash_key), StructType([StructField("id", StringType())]))
    remaining = ids.join(deleted, "id", "left_semi").count()
    total = deleted.count()
    return Check("deleted ids absent", remaining == 0 and total > 0,
                 f"{remaining} of the run's {total} deleted {'id hashes' if hashed else 'ids'} are still in the table")


def _purged_files(path: str, merge_version: int) -> Check:
    """Every data or change-data file removed or written by the run's commits is gone from storage."""
    log_dir = os.path.join(path, "_delta_log")
    files, version = [], merge_version
    while os.path.exists(os.path.join(log_dir, f"{version:020d}.json")):
        with open(os.path.join(log_dir, f"{version:020d}.json")) as fh:
            for line in fh:
                action = json.loads(line)
                if "remove" in action:
                    files.append(unquote(action["remove"]["path"]))
                elif "cdc" in action and version == merge_version:
                    files.append(unquote(action["cdc"]["path"]))
        version += 1
    left = [f for f in files if os.path.exists(os.path.join(path, f))]
    return Check("purged files gone", not left,
                 f"{len(left)} of {len(files)} files removed or written by the run's commits are still on storage")
