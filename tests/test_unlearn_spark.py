"""The job on real Delta tables, checked against brute force and an independent Delta reader."""
from __future__ import annotations

import json
from pathlib import Path

import deltalake
import numpy as np
import pytest
from pyspark.sql import functions as F

import reference
from conftest import domain_table, write_delta
from distunlearn.cli import main
from distunlearn.config import UnlearnConfig
from distunlearn.errors import DistunlearnError
from distunlearn.job import run_unlearn
from distunlearn.run_report import RunReport
from distunlearn.spark.source import Source, labelled_rows
from distunlearn.spark import statistics
from distunlearn.spark.statistics import domain_statistics
from distunlearn.synthetic import gaussian_domains

REPO = Path(__file__).resolve().parents[1]
DOMAINS = dict(unwanted="topic = 'unwanted'", retained="topic = 'retained'")


def as_stored(x):
    """Vectors as the float32 column holds them."""
    return x.astype(np.float32).astype(np.float64)


@pytest.fixture(scope="module")
def generated(spark, tmp_path_factory):
    """60 unwanted, 240 retained and 30 rows in neither domain, 4 dims, Delta in 3 files."""
    x1, x2 = gaussian_domains(60, 240, 4, shift=0.8, seed=11, offset=3.0)
    x3 = np.random.default_rng(2).standard_normal((30, 4)) + 5.0
    table = domain_table(x1, x2, x_neither=x3, seed=5)
    path = write_delta(spark, table, tmp_path_factory.mktemp("src") / "events")
    ids = table.column("id").to_numpy()
    return dict(path=path, table=table, x1=as_stored(x1), x2=as_stored(x2), ids1=ids[:60], ids2=ids[60:300])


def manifest_ids(spark, path, run_id=None):
    df = spark.read.format("delta").load(path)
    if run_id:
        df = df.where(F.col("run_id") == run_id)
    return sorted(r["id"] for r in df.select("id").collect())


def edited_vectors(path):
    """Vectors per topic of the edited table, read by delta-rs (not Spark)."""
    table = deltalake.DeltaTable(path).to_pyarrow_table()
    topic = np.array(table.column("topic").to_pylist())
    x = np.array(table.column("embedding").to_pylist(), dtype=np.float64)
    return table, {t: x[topic == t] for t in ("unwanted", "retained", "other")}


@pytest.mark.parametrize("rule", ["distance_to_retained", "likelihood_ratio"])
def test_deleted_set_is_the_brute_force_smallest_and_edited_table_meets_thresholds(spark, generated, tmp_path, rule):
    out = str(tmp_path / "edited")
    config = UnlearnConfig(source=generated["path"], rule=rule, alpha_rel=0.5, epsilon_rel=1.0, output=out,
                           report=str(tmp_path / "report.json"), order_chunks=3, **DOMAINS)
    report = run_unlearn(spark, config)

    x1, x2, ids1 = generated["x1"], generated["x2"], generated["ids1"]
    f, rows = reference.smallest_budget(x1, x2, ids1, rule, report.alpha, report.epsilon)
    assert report.deleted == f and f > 0
    assert manifest_ids(spark, out + "_manifest") == sorted(ids1[rows].tolist())

    table, by_topic = edited_vectors(out)
    source_ids = set(generated["table"].column("id").to_pylist())
    assert set(table.column("id").to_pylist()) == source_ids - set(ids1[rows].tolist())
    assert table.schema.names == generated["table"].schema.names
    assert len(by_topic["other"]) == 30 and len(by_topic["retained"]) == 240
    sigma = reference.pooled_covariance(x1, x2)
    m_f = np.vstack([by_topic["retained"], by_topic["unwanted"]]).mean(0)
    removal, preservation = reference.kl(x1.mean(0), m_f, sigma), reference.kl(x2.mean(0), m_f, sigma)
    assert removal >= report.alpha and preservation <= report.epsilon
    assert report.kl_removal_after == pytest.approx(removal, rel=1e-6)
    assert report.kl_preservation_after == pytest.approx(preservation, rel=1e-6)
    assert RunReport.from_dict(json.loads(Path(tmp_path / "report.json").read_text())) == report


def test_report_figures_match_numpy(spark, generated, tmp_path):
    report = run_unlearn(spark, UnlearnConfig(source=generated["path"], rule="likelihood_ratio", alpha_rel=0.5,
                                              epsilon_rel=1.0, output=str(tmp_path / "o"), run_id="r-1", **DOMAINS))
    x1, x2 = generated["x1"], generated["x2"]
    sigma = reference.pooled_covariance(x1, x2)
    m0 = np.vstack([x1, x2]).mean(0)
    kappa = reference.kl(x1.mean(0), x2.mean(0), sigma)
    before1, before2 = reference.kl(x1.mean(0), m0, sigma), reference.kl(x2.mean(0), m0, sigma)
    assert (report.n_unwanted, report.n_retained, report.dims) == (60, 240, 4)
    assert report.kappa == pytest.approx(kappa, rel=1e-6)
    assert report.kl_removal_before == pytest.approx(before1, rel=1e-6)
    assert report.kl_preservation_before == pytest.approx(before2, rel=1e-6)
    assert report.alpha == pytest.approx(before1 + 0.5 * (kappa - before1), rel=1e-6)
    assert report.epsilon == pytest.approx(before2, rel=1e-6)
    assert report.alpha_max_at_epsilon == pytest.approx((np.sqrt(kappa) + np.sqrt(before2)) ** 2, rel=1e-6)
    assert (report.source_version, report.output_version, report.run_id) == (0, 0, "r-1")
    manifest = spark.read.format("delta").load(report.manifest)
    assert manifest.columns == ["run_id", "id", "reason", "rule", "score", "rank"]
    ranks = sorted(r["rank"] for r in manifest.collect())
    assert ranks == list(range(1, report.deleted + 1))
    history = spark.sql(f"DESCRIBE HISTORY delta.`{report.output}`").select("userMetadata").first()[0]
    assert json.loads(history) == {"distunlearn_run_id": "r-1"}


def test_auto_evaluates_every_rule_and_keeps_the_fewest(spark, generated, tmp_path):
    """One scan takes every rule (one chunk); each rule's budget is the brute-force smallest of its order."""
    report = run_unlearn(spark, UnlearnConfig(source=generated["path"], alpha_rel=0.5, epsilon_rel=1.0,
                                              output=str(tmp_path / "o"), **DOMAINS))
    needs = {rule: entry.deleted for rule, entry in report.rules.items() if entry.feasible}
    assert set(report.rules) == {"likelihood_ratio", "distance_to_retained", "mahalanobis_to_retained",
                                    "cosine_to_retained", "closest_to_unwanted", "ambiguous_first", "random"}
    assert report.deleted == min(needs.values()) == needs[report.rule]
    x1, x2, ids1 = generated["x1"], generated["x2"], generated["ids1"]
    keys = dict(spark.createDataFrame([(int(i),) for i in ids1], "id long")
                .select("id", F.xxhash64(F.lit(0), "id").cast("double")).collect())   # the random rule, seed 0
    for rule in report.rules:
        f, _ = reference.smallest_budget(x1, x2, ids1, rule, report.alpha, report.epsilon,
                                         random_keys=[keys[int(i)] for i in ids1])
        assert needs.get(rule) == f, rule
    rules = {r["rule"] for r in spark.read.format("delta").load(report.manifest).select("rule").collect()}
    assert rules == {report.rule}


def test_same_input_gives_the_same_set_whatever_the_chunking(spark, generated, tmp_path):
    manifest = str(tmp_path / "m")
    for i, chunks in enumerate((1, 7)):
        run_unlearn(spark, UnlearnConfig(source=generated["path"], rule="random", seed=3, alpha_rel=0.4,
                                         epsilon_rel=1.0, output=str(tmp_path / f"o{i}"), manifest=manifest,
                                         run_id=f"run-{i}", order_chunks=chunks, **DOMAINS))
    sets = [manifest_ids(spark, manifest, f"run-{i}") for i in range(2)]
    assert sets[0] and sets[0] == sets[1]


def test_dry_run_writes_no_table(spark, generated, tmp_path):
    out = tmp_path / "never"
    report = run_unlearn(spark, UnlearnConfig(source=generated["path"], rule="likelihood_ratio", dry_run=True,
                                              output=str(out), report=str(tmp_path / "r.json"), **DOMAINS))
    assert report.deleted > 0 and report.output_version is None
    assert not out.exists() and not Path(str(out) + "_manifest").exists()
    assert json.loads((tmp_path / "r.json").read_text())["dry_run"] is True


@pytest.mark.parametrize("id_type,vector_type", [("string", "double"), ("decimal", "ml"), ("long", "double")])
def test_id_and_vector_types(spark, tmp_path, id_type, vector_type):
    x1, x2 = gaussian_domains(30, 90, 3, shift=1.0, seed=21)
    table = domain_table(x1, x2, id_type=id_type, vector_type="double")
    df = spark.createDataFrame(table)
    if vector_type == "ml":
        from pyspark.ml.functions import array_to_vector

        df = df.withColumn("embedding", array_to_vector("embedding"))
    src = str(tmp_path / "src")
    df.write.format("delta").save(src)
    report = run_unlearn(spark, UnlearnConfig(source=src, rule="likelihood_ratio", output=str(tmp_path / "o"),
                                              **DOMAINS))
    ids1 = np.array(table.column("id").to_pylist()[:30], dtype=object)
    f, rows = reference.smallest_budget(x1, x2, ids1, "likelihood_ratio", report.alpha, report.epsilon)
    assert report.deleted == f
    assert manifest_ids(spark, report.manifest) == sorted(ids1[rows].tolist())


def test_parquet_source(spark, generated, tmp_path):
    src = str(tmp_path / "pq")
    spark.read.format("delta").load(generated["path"]).write.parquet(src)
    report = run_unlearn(spark, UnlearnConfig(source=src, format="parquet", rule="likelihood_ratio",
                                              output=str(tmp_path / "o"), **DOMAINS))
    assert report.source_version is None and report.deleted > 0
    assert spark.read.format("delta").load(str(tmp_path / "o")).count() == 330 - report.deleted


def test_statistics_pass_is_exact_with_a_large_offset(spark, tmp_path, monkeypatch):
    x1, x2 = gaussian_domains(200, 600, 3, shift=0.01, seed=4, offset=1e4)
    x1, x2 = x1 * 1.0, x2 * 1.0
    path = write_delta(spark, domain_table(x1, x2, vector_type="double"), tmp_path / "t", partitions=7)
    labelled = labelled_rows(Source.read(spark, path), "id", "embedding", **DOMAINS).repartition(40)
    # the driver merges the 40 partitions' partials; then a tree of merge tasks (fan-in 16: 3 levels) does
    for forced_tree in (False, True):
        if forced_tree:
            monkeypatch.setattr(statistics, "DRIVER_BYTES", 1)
            monkeypatch.setattr(statistics, "TASK_BYTES", 1)
        stats = domain_statistics(labelled, "id", "embedding")
        for moments, x in ((stats.unwanted, x1), (stats.retained, x2)):
            assert moments.n == len(x)
            np.testing.assert_allclose(moments.mean, x.mean(0), rtol=1e-14)
            np.testing.assert_allclose(moments.m2, (x - x.mean(0)).T @ (x - x.mean(0)), rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("id_type", ["long", "string"])
def test_ids_in_increasing_runs_need_no_shuffle_and_a_repeat_is_still_found(spark, monkeypatch, id_type):
    """Ids that increase within each partition, in ranges that do not meet, are unique without counting
    them by a shuffle; one repeated id (inside a partition or across two) sends the check to the shuffle,
    which rejects it."""
    shuffles = []
    count_by_shuffle = statistics._has_duplicates
    monkeypatch.setattr(statistics, "_has_duplicates", lambda df: shuffles.append(1) or count_by_shuffle(df))

    def stats_of(keys):
        ids = keys if id_type == "long" else [f"user-{k:05d}" for k in keys]
        rows = [(i, "unwanted" if n % 4 == 0 else "retained", [float(n % 7), float(n % 5), float(n % 3)])
                for n, i in enumerate(ids)]
        df = spark.createDataFrame(rows, f"id {id_type}, topic string, embedding array<double>")  # 4 ordered slices
        return domain_statistics(labelled_rows(Source.read(spark, df), "id", "embedding", **DOMAINS), "id", "embedding")

    assert stats_of(list(range(0, 300, 3))).unwanted.n == 25 and shuffles == []
    for repeated in (list(range(0, 60)) + list(range(59, 100)),          # across two slices
                     list(range(0, 30)) + [29] + list(range(30, 99))):    # inside one
        with pytest.raises(DistunlearnError, match="duplicate values"):
            stats_of(repeated)
    assert len(shuffles) == 2


def test_the_merge_tree_gives_the_moments_of_the_one_level_merge(spark, tmp_path, monkeypatch):
    """At 64 dims over 48 partitions: the tree (three levels of 12-way merge tasks, batches of one partial) and the
    driver's own merge of every partial give the same moments, to rounding."""
    x1, x2 = gaussian_domains(300, 900, 64, shift=0.3, seed=8, offset=2.0)
    path = write_delta(spark, domain_table(x1, x2, vector_type="double"), tmp_path / "t", partitions=4)
    labelled = labelled_rows(Source.read(spark, path), "id", "embedding", **DOMAINS).repartition(48)
    one_level = domain_statistics(labelled, "id", "embedding")
    assert statistics.merge_levels(3 * 48, 17_000) == []
    monkeypatch.setattr(statistics, "DRIVER_BYTES", 1)
    monkeypatch.setattr(statistics, "MIN_FAN_IN", 12)
    monkeypatch.setattr(statistics, "TASK_BYTES", 1)
    monkeypatch.setattr(statistics, "BATCH_BYTES", 1)
    assert statistics.merge_levels(3 * 48, 17_000) == [12, 3, 1]
    tree = domain_statistics(labelled, "id", "embedding")
    for a, b in ((one_level.unwanted, tree.unwanted), (one_level.retained, tree.retained)):
        assert a.n == b.n
        np.testing.assert_allclose(b.mean, a.mean, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(b.m2, a.m2, rtol=1e-12, atol=1e-12)


def test_demo_compares_the_papers_rule_and_likelihood_ratio_with_random(spark, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    assert main(["demo", "--lakehouse", str(tmp_path / "lake"), "--quiet"]) == 0
    out = capsys.readouterr().out
    for rule in ("distance_to_retained", "likelihood_ratio", "random"):
        assert rule in out
    report = json.loads((tmp_path / "lake" / "demo_report.json").read_text())
    rules = report["rules"]
    assert rules["likelihood_ratio"]["deleted"] < rules["distance_to_retained"]["deleted"] < rules["random"]["deleted"]
    assert deltalake.DeltaTable(str(tmp_path / "lake" / "demo_edited")).to_pyarrow_table().num_rows == \
        27000 - report["deleted"]


def test_requests_by_another_key_are_deleted_whatever_their_domain(spark, generated, tmp_path):
    table = generated["table"]
    payloads = table.column("payload").to_pylist()
    topics = table.column("topic").to_pylist()
    picked = {t: payloads[topics.index(t)] for t in ("retained", "other", "unwanted")}
    spark.createDataFrame([(p,) for p in picked.values()], "payload string").write.format("delta") \
        .save(str(tmp_path / "requests"))
    report = run_unlearn(spark, UnlearnConfig(source=generated["path"], rule="likelihood_ratio", output=str(tmp_path / "o"),
                                              requests=str(tmp_path / "requests"), request_key="payload", **DOMAINS))
    edited = spark.read.format("delta").load(str(tmp_path / "o"))
    assert edited.where(F.col("payload").isin(*picked.values())).count() == 0
    assert report.deleted_requested == 3
    assert edited.count() == 330 - 3 - report.deleted
    reasons = {r["reason"]: r["n"] for r in spark.read.format("delta").load(report.manifest)
               .groupBy("reason").agg(F.count("*").alias("n")).collect()}
    assert reasons == {"request": 3, "distributional": report.deleted}


def _plans_since(spark, execution_id: int) -> dict[int, str]:
    """Physical plans (final, after adaptive execution) of the SQL executions after ``execution_id``."""
    executions = spark._jsparkSession.sharedState().statusStore().executionsList()
    plans = {}
    for i in range(executions.size()):
        e = executions.apply(i)
        if e.executionId() > execution_id:
            plans[e.executionId()] = e.physicalPlanDescription()
    return plans


KEY_COLUMNS = ("__deleted_id", "__deleted_key", "__request_key")   # the anti-join's, the MERGE's, the requests'


def test_key_sets_are_broadcast_only_under_the_limit(spark, generated, tmp_path):
    """The deleted ids and the request keys, measured before their joins, are broadcast under
    ``broadcast_limit_mb`` (so neither the anti-join, the MERGE nor the requests join shuffles the table)
    and shuffled above it; nothing else is ever broadcast, and the session's own setting is untouched."""
    spark.createDataFrame([(int(generated["ids2"][0]),)], "id long").write.format("delta") \
        .save(str(tmp_path / "requests"))
    source = spark.read.format("delta").load(generated["path"])
    deleted = {}
    for limit in (64.0, 0.0):
        start = max(_plans_since(spark, -1), default=-1)
        copy = str(tmp_path / f"copy{limit}")
        source.write.format("delta").save(copy)
        edits = ({"output": str(tmp_path / "o")}, {"in_place": True, "source": copy}) if limit else \
            ({"in_place": True, "source": copy},)
        for extra in edits:
            report = run_unlearn(spark, UnlearnConfig(**{"source": generated["path"], "rule": "likelihood_ratio",
                                                         "requests": str(tmp_path / "requests"), **DOMAINS,
                                                         "broadcast_limit_mb": limit, **extra}))
            assert report.deleted > 0 and report.deleted_requested == 1
        plans = _plans_since(spark, start)
        key_joins = [p for p in plans.values() if any(k in p for k in KEY_COLUMNS)]
        broadcast = [p for p in plans.values() if "Broadcast" in p]
        if limit:
            assert sum("BroadcastHashJoin" in p for p in key_joins) >= 3
            assert not any("SortMergeJoin" in p for p in key_joins)
            assert all(any(k in p for k in KEY_COLUMNS) for p in broadcast)
        else:
            assert key_joins and any("SortMergeJoin" in p for p in key_joins) and not broadcast
        deleted[limit] = sorted(r["id"] for r in spark.read.format("delta").load(copy).select("id").collect())
    assert deleted[64.0] == deleted[0.0]
    assert spark.conf.get("spark.sql.autoBroadcastJoinThreshold") != "-1"  # the session's setting is back


def test_lineage_fail_event_on_a_failed_run(spark, generated, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TYPE", "file")
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__LOG_FILE_PATH", str(tmp_path / "events.jsonl"))
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__APPEND", "true")
    code = main(["unlearn", "--source", generated["path"], "--rule", "likelihood_ratio", "--alpha", "1000",
                 "--output", str(tmp_path / "o"), "--quiet", "--unwanted", DOMAINS["unwanted"]])
    assert code == 2
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [e["eventType"] for e in events] == ["START", "FAIL"]
    assert "best alpha" in events[1]["run"]["facets"]["errorMessage"]["message"]


def test_catalog_table_source(spark, generated, tmp_path):
    spark.read.format("delta").load(generated["path"]).write.format("delta") \
        .option("path", str(tmp_path / "managed")).saveAsTable("unlearn_events")
    try:
        report = run_unlearn(spark, UnlearnConfig(source="unlearn_events", rule="likelihood_ratio", dry_run=True,
                                                  **DOMAINS))
        by_path = run_unlearn(spark, UnlearnConfig(source=generated["path"], rule="likelihood_ratio", dry_run=True,
                                                   **DOMAINS))
        assert report.source_version == 0 and report.deleted == by_path.deleted > 0
    finally:
        spark.sql("DROP TABLE IF EXISTS unlearn_events")


def test_chunk_ids_survive_a_forced_coalesce(spark, generated):
    """Chunks are named by a frozen column, not by the task that reads them: coalescing the ordered rows
    (several chunks per task) gives the same budget and ranks; rows missing from a pass are an error."""
    from distunlearn.core.selection import Removed, Thresholds
    from distunlearn.pipeline import Domains, fit, order, read_labelled, score

    domains = Domains("id", "embedding", **DOMAINS)
    fitted = fit(read_labelled(spark, generated["path"], "delta", domains).rows, domains, 1e-6)
    ordering = order(score(fitted, ("likelihood_ratio",), 0, chunks=4), "likelihood_ratio", fitted)
    thresholds = Thresholds.resolve(fitted.kl, alpha_rel=0.5, epsilon_rel=1.0)
    nothing = Removed.nothing(fitted.model.dim)
    chosen = ordering.choose(fitted.kl, thresholds, nothing)
    ranks = sorted((r["rank"], r["id"]) for r in ordering.deleted(chosen.deleted).collect())
    f, rows = reference.smallest_budget(generated["x1"], generated["x2"], generated["ids1"], "likelihood_ratio",
                                        thresholds.alpha, thresholds.epsilon)
    assert chosen.deleted == f > 0 and [i for _, i in ranks] == generated["ids1"][rows].tolist()

    checkpointed = ordering.rows
    assert checkpointed.select("chunk").distinct().count() > 1
    ordering.rows = checkpointed.coalesce(1)
    assert ordering.choose(fitted.kl, thresholds, nothing) == chosen
    assert sorted((r["rank"], r["id"]) for r in ordering.deleted(chosen.deleted).collect()) == ranks
    ordering.rows = checkpointed.where(F.col("chunk") != F.lit(1))
    with pytest.raises(RuntimeError, match="ordered rows"):
        ordering.choose(fitted.kl, thresholds, nothing)


def test_selection_chunks_follow_the_data_not_the_slots(spark, generated, monkeypatch):
    """With the session's slots fixed (4), 60 unwanted rows of 4 dims at 320 bytes a chunk make 6 chunks (the
    data's count, where slots used to set 2 per slot), each a run of consecutive ranks; the budget still equals
    brute force."""
    from distunlearn.core.selection import Removed, Thresholds
    from distunlearn.pipeline import Domains, fit, read_labelled, score
    from distunlearn.spark import ordering as spark_ordering

    assert spark_ordering.chunk_count(4_000_000, 64) == 16 and spark_ordering.chunk_count(4_000_000, 1536) == 367
    assert spark_ordering.chunk_count(10**10, 1536) == spark_ordering.MAX_CHUNKS
    monkeypatch.setattr(spark_ordering, "CHUNK_BYTES", 320)
    assert spark.sparkContext.defaultParallelism == 4
    domains = Domains("id", "embedding", **DOMAINS)
    fitted = fit(read_labelled(spark, generated["path"], "delta", domains).rows, domains, 1e-6)
    scored = score(fitted, ("likelihood_ratio",), 0, chunks=6).frozen
    ordering = spark_ordering.RuleOrdering(scored, "likelihood_ratio", 60, fitted.model)
    assert ordering.chunks == 6 and ordering.rows.select("chunk").distinct().count() == 6
    thresholds = Thresholds.resolve(fitted.kl, alpha_rel=0.5, epsilon_rel=1.0)
    chosen = ordering.choose(fitted.kl, thresholds, Removed.nothing(4))
    f, rows = reference.smallest_budget(generated["x1"], generated["x2"], generated["ids1"], "likelihood_ratio",
                                        thresholds.alpha, thresholds.epsilon)
    assert chosen.deleted == f > 0
    ranks = sorted((r["rank"], r["id"]) for r in ordering.deleted(f).collect())
    assert [i for _, i in ranks] == generated["ids1"][rows].tolist()


def test_reliable_checkpoints_in_the_sessions_checkpoint_dir(spark, generated, tmp_path):
    """``checkpoint_dir`` freezes the scanned rows (and, with several chunks, the scored and ordered ones) as
    reliable checkpoints in the session's checkpoint directory (files appear there) with the same deletion
    set as local checkpoints;
    a directory the session does not use is refused before any work."""
    from distunlearn import Unlearner
    from distunlearn.errors import DistunlearnError

    directory = spark.conf.get("spark.checkpoint.dir")
    before = set(Path(directory).rglob("*"))
    unlearner = dict(unwanted=DOMAINS["unwanted"], retained=DOMAINS["retained"], rule="likelihood_ratio")
    local = Unlearner(**unlearner).plan(generated["path"], spark)
    reliable = Unlearner(**unlearner, checkpoint_dir=directory).plan(generated["path"], spark)
    assert [p for p in set(Path(directory).rglob("*")) - before if p.is_file()]
    assert reliable.deleted == local.deleted > 0
    ids = [sorted(r["id"] for r in plan.deletion_set().collect()) for plan in (local, reliable)]
    assert ids[0] == ids[1]
    with pytest.raises(DistunlearnError, match="checkpoints to"):
        Unlearner(**unlearner, checkpoint_dir=str(tmp_path / "elsewhere")).plan(generated["path"], spark)
