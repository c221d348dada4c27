"""Scoring the unwanted rows once, then finding each rule's smallest budget in chunked order."""
from __future__ import annotations

import math

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, LongType, StructField, StructType

from distunlearn.core.curves import Curve
from distunlearn.core.gaussian import PooledGaussian
from distunlearn.core.selection import BudgetChoice, ChunkScan, EditedKL, Removed, Thresholds, choose_budget
from distunlearn.spark.checkpoints import freeze
from distunlearn.udfs.ordering import (CURVE_SCHEMA, SCAN_SCHEMA, TOTALS_SCHEMA, chunk_curve, chunk_scanner,
                                      chunk_totals, ranked_rows)
from distunlearn.udfs.scoring import score_column, scorer

# Chunks (= tasks of every pass in deletion order) are sized by the data, not by the cluster's slots at plan
# time: one per CHUNK_BYTES of rows as float64, at most MAX_CHUNKS (the driver holds chunks x dims numbers).
# One chunk is scored and sorted in the memory of its one task (about four copies of CHUNK_BYTES at most) and
# needs no checkpoint, sampling job, shuffle or pass for chunk totals; more chunks are sorted by Spark (which
# spills) and streamed through Python, so their size needs no hard bound.
CHUNK_BYTES = 128 * 1024 * 1024
MAX_CHUNKS = 4096


def chunk_count(n_unwanted: int, dim: int) -> int:
    """Chunks for ``n_unwanted`` rows of ``dim`` float64 numbers each."""
    return max(1, min(MAX_CHUNKS, math.ceil(n_unwanted * dim * 8 / CHUNK_BYTES)))


def keyed_rows(rows: DataFrame, seed: int) -> DataFrame:
    """The unwanted rows ``(id, vec)`` with ``random_key``, the ``random`` rule's score (a seeded hash of the id)."""
    return rows.select("id", "vec", F.xxhash64(F.lit(seed), F.col("id")).cast("double").alias("random_key"))


def score_unwanted(keyed: DataFrame, model: PooledGaussian, rules: tuple[str, ...]) -> DataFrame:
    """The unwanted rows ``(id, vec, random_key)`` as (id, vec, score_<rule>...), not yet computed: freeze
    them before reading them twice, so that every pass sees bit-identical scores."""
    id_type = keyed.schema["id"].dataType
    schema = StructType([StructField("id", id_type), StructField("vec", keyed.schema["vec"].dataType)]
                        + [StructField(score_column(r), DoubleType()) for r in rules])
    return keyed.mapInArrow(scorer(model, rules), schema)


class RuleOrdering:
    """One rule's unwanted rows in deletion order, (score desc, id asc), in chunks of consecutive ranks.

    One chunk (``rows``: the kept rows ``id, vec, random_key``, computed from frozen rows): every pass scores
    and sorts the rows in its one task, with nothing stored, and reports a digest of the order; the
    digests must agree, and ``deleted`` fails rather than rank rows in another order than the budget was
    chosen on. More chunks (``rows``: the frozen scores ``id, vec, score_<rule>...``): a range partition
    each, sorted by Spark and frozen with its chunk id (column ``chunk``), so a later re-planning of the
    partitions cannot hand a chunk another's offsets. Per-chunk row counts are checked against ``n_rows``
    on every pass that counts them.

    Only per-chunk counts, whitened sums (chunks x dims numbers) and digests reach the driver.
    """

    def __init__(self, rows: DataFrame, rule: str, n_rows: int, model: PooledGaussian, chunks: int | None = None,
                 reliable: bool = False):
        self.rule, self.n_rows, self.model = rule, n_rows, model
        dim = model.dim
        self.chunks = chunks or chunk_count(n_rows, dim)
        self.digest: str | None = None
        if self.chunks == 1:
            self.in_task = rule
            self.rows = rows.select("id", "vec", "random_key").coalesce(1).withColumn("chunk", F.lit(0))
            totals = {0: (n_rows, np.zeros(dim))}
        else:
            self.in_task = None
            order = [F.col("score").desc(), F.col("id").asc()]
            ranged = rows.select("id", "vec", F.col(score_column(rule)).alias("score")) \
                .repartitionByRange(self.chunks, *order).sortWithinPartitions(*order)
            self.rows = freeze(ranged.withColumn("chunk", F.spark_partition_id()), reliable)
            totals = {r["chunk"]: (r["n"], np.asarray(r["z"])) for r in
                      self.rows.mapInArrow(chunk_totals(model), TOTALS_SCHEMA).collect()}
            self._check_rows(sum(n for n, _ in totals.values()), "chunk totals")
        self.before: dict[int, tuple[int, np.ndarray]] = {}
        count, z = 0, np.zeros(dim)
        for chunk in sorted(totals):
            self.before[chunk] = (count, z)
            count, z = count + totals[chunk][0], z + totals[chunk][1]

    def _check_rows(self, counted: int, what: str) -> None:
        if counted != self.n_rows:
            raise RuntimeError(f"{self.rule}: the {what} count {counted} of {self.n_rows} ordered rows; "
                               "the deletion order was read incompletely")

    def _check_digest(self, digests) -> None:
        """Passes that sort in the task must all see one order: the first one seen."""
        seen = {d for d in digests if d is not None}
        if self.in_task is None or not seen:
            return
        self.digest = self.digest or next(iter(seen))
        if seen != {self.digest}:
            raise RuntimeError(f"{self.rule}: the deletion order differs between two passes over the same rows "
                               f"(digests {sorted(seen | {self.digest})})")

    def choose(self, kl: EditedKL, thresholds: Thresholds, removed: Removed) -> BudgetChoice:
        """The smallest budget of this rule after the ``removed`` rows, from one scan of every chunk."""
        return choose_budgets([self], kl, thresholds, removed)[0]

    def _choice(self, kl: EditedKL, thresholds: Thresholds, removed: Removed, rows) -> BudgetChoice:
        """The budget from this rule's scan rows (one per chunk), after checking their counts and digests."""
        self._check_rows(sum(r["rows"] for r in rows), "scanned")
        self._check_digest(r["digest"] for r in rows)
        scans = [ChunkScan(r["first_feasible"], r["removal"], r["preservation"], r["best_alpha"]) for r in rows]
        return choose_budget(self.rule, kl, thresholds, scans, removed)

    def curve(self, kl: EditedKL, grid: np.ndarray) -> Curve:
        """KL(p1||p_f) and KL(p2||p_f) at the ``grid`` budgets, from one scan of every chunk."""
        return sample_curves([self], kl, grid)[0]

    def _curve(self, kl: EditedKL, grid: np.ndarray, rows) -> Curve:
        """The curve from this rule's sampled rows, after checking their digests."""
        self._check_digest(r["digest"] for r in rows)
        removal0, preservation0 = kl.before
        sampled = Curve(np.array([r["f"] for r in rows], dtype=np.int64), np.array([r["removal"] for r in rows]),
                        np.array([r["preservation"] for r in rows]))
        start = Curve(np.array([0]), np.array([removal0]), np.array([preservation0]))
        return Curve.concat([start, sampled] if 0 in grid else [sampled])

    def deleted(self, budget: int) -> DataFrame:
        """(id, score, rank) of the first ``budget`` rows in deletion order (the order the earlier passes saw)."""
        id_type = self.rows.schema["id"].dataType
        schema = StructType([StructField("id", id_type), StructField("score", DoubleType()),
                             StructField("rank", LongType())])
        rows_before = {chunk: n for chunk, (n, _) in self.before.items()}
        return self.rows.mapInArrow(ranked_rows(rows_before, budget, self.model, self.in_task, self.digest), schema)


def _passes(orderings: list[RuleOrdering], pass_udf, schema: str) -> dict[str, list]:
    """Each ordering's rows of one pass (``pass_udf(before, model, rules)``: a mapInArrow function). Orderings
    sorted in the task (of one ``pipeline.score``: the same rows) share one pass, which whitens the rows once
    and handles every rule's order (``rules``); each other ordering passes over its own chunks (no rules)."""
    shared = [o for o in orderings if o.in_task is not None]
    groups = [[o] for o in orderings if o.in_task is None] + ([shared] if shared else [])
    rows_of = {}
    for group in groups:
        first = group[0]
        rules = tuple(o.rule for o in group) if first.in_task is not None else ()
        rows = first.rows.mapInArrow(pass_udf(first.before, first.model, rules), schema).collect()
        for ordering in group:
            rows_of[ordering.rule] = [r for r in rows if r["rule"] in (ordering.rule, None)]
    return rows_of


def choose_budgets(orderings: list[RuleOrdering], kl: EditedKL, thresholds: Thresholds,
                   removed: Removed) -> list[BudgetChoice]:
    """Each ordering's smallest budget after the ``removed`` rows, from one scan of every chunk (shared by
    the orderings sorted in the task, ``_passes``)."""
    def scanner(before, model, rules):
        shifted = {chunk: (n + removed.count, z + removed.z) for chunk, (n, z) in before.items()}
        return chunk_scanner(kl, thresholds, shifted, model, rules)

    rows = _passes(orderings, scanner, SCAN_SCHEMA)
    return [o._choice(kl, thresholds, removed, rows[o.rule]) for o in orderings]


def sample_curves(orderings: list[RuleOrdering], kl: EditedKL, grid: np.ndarray) -> list[Curve]:
    """Each ordering's KL curve at the ``grid`` budgets, from one scan of every chunk (shared by the
    orderings sorted in the task, ``_passes``)."""
    rows = _passes(orderings, lambda before, model, rules: chunk_curve(kl, before, grid, model, rules),
                   CURVE_SCHEMA)
    return [o._curve(kl, grid, rows[o.rule]) for o in orderings]
