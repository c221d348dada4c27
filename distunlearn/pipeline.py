"""The one pipeline of every command: read -> label -> statistics -> model -> score -> order.

``unlearn`` stops at each rule's smallest budget and writes; ``evaluate`` samples the curves of the same
orderings; ``verify`` reruns the first three steps on the table as it is now.
"""
from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession

from distunlearn.core.gaussian import PooledGaussian
from distunlearn.core.selection import EditedKL
from distunlearn.domains import Domains
from distunlearn.progress import phase
from distunlearn.spark.checkpoints import freeze
from distunlearn.spark.ordering import RuleOrdering, chunk_count, keyed_rows, score_unwanted
from distunlearn.spark.source import Source, labelled_rows
from distunlearn.spark.statistics import DomainStatistics, domain_statistics


@dataclass(frozen=True)
class Labelled:
    """The source and its rows as (id, domain, vec, requested[, label])."""

    source: Source
    rows: DataFrame


@dataclass(frozen=True)
class Fitted:
    """Domain statistics, the pooled Gaussian model and its edited-KL calculator; ``reliable``: later steps
    checkpoint to the checkpoint directory instead of the executors."""

    stats: DomainStatistics
    model: PooledGaussian
    kl: EditedKL
    reliable: bool = False


def read_labelled(spark: SparkSession, data, fmt: str, domains: Domains, requests: DataFrame | None = None,
                  request_key: str | None = None, label_col: str | None = None) -> Labelled:
    """Read the source (a table pinned at its latest version, or a DataFrame) and label its rows."""
    source = Source.read(spark, data, fmt)
    return Labelled(source, labelled_rows(source, domains.id_col, domains.vector_col, domains.unwanted,
                                          domains.retained, requests, request_key, label_col))


def statistics(rows: DataFrame, domains: Domains, keep_unwanted: bool, reliable: bool = False) -> DomainStatistics:
    """One pass: both domains' moments, the input checks and (``keep_unwanted``) the rows to score."""
    with phase("statistics pass") as detail:
        stats = domain_statistics(rows, domains.id_col, domains.vector_col, keep_unwanted, reliable)
        detail.update(unwanted=stats.unwanted.n, retained=stats.retained.n, dims=stats.unwanted.dim)
    return stats


def fit(rows: DataFrame, domains: Domains, ridge: float, reliable: bool = False,
        covariance: str = "ridge") -> Fitted:
    """The statistics pass (keeping the unwanted rows for scoring), then the model."""
    stats = statistics(rows, domains, keep_unwanted=True, reliable=reliable)
    model = PooledGaussian.fit(stats.unwanted, stats.retained, ridge, covariance)
    return Fitted(stats, model, EditedKL.from_model(model), reliable)


@dataclass(frozen=True)
class Scored:
    """The kept unwanted rows as (id, vec, random_key), how many there are (counted by the statistics pass)
    and the chunks of every rule's order; with more than one chunk, every rule's scores of the rows,
    computed once and frozen (``frozen``)."""

    keyed: DataFrame
    n: int
    chunks: int
    frozen: DataFrame | None = None


def score(fitted: Fitted, rules: tuple[str, ...], seed: int, chunks: int | None = None) -> Scored:
    """The kept unwanted rows, ready for each of ``rules``: one chunk (``chunk_count`` of the rows, unless
    ``chunks`` is given) is scored by every pass in its task; more are scored here once and frozen."""
    keyed = keyed_rows(fitted.stats.unwanted_rows, seed)
    n = fitted.stats.kept
    chunks = chunks or chunk_count(n, fitted.model.dim)
    if chunks == 1:
        return Scored(keyed, n, chunks)
    with phase("scoring pass") as detail:
        frozen = freeze(score_unwanted(keyed, fitted.model, rules), fitted.reliable)
        detail.update(rules=len(rules), rows=n)
    return Scored(keyed, n, chunks, frozen)


def order(scored: Scored, rule: str, fitted: Fitted) -> RuleOrdering:
    """One rule's deletion order in ``scored.chunks`` chunks of consecutive ranks."""
    rows = scored.keyed if scored.chunks == 1 else scored.frozen
    return RuleOrdering(rows, rule, scored.n, fitted.model, scored.chunks, fitted.reliable)
