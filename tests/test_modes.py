"""Plan, --output, --in-place --purge --requests --hash-ids, verify and evaluate in three modes: a classic
local session, a Spark Connect server on 127.0.0.1, and catalog names in a Hive metastore. Each mode must
delete the brute-force set; every table is real Delta, read back through Spark and delta-rs."""
from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from dataclasses import dataclass

import deltalake
import numpy as np
import pyarrow as pa
import pytest

import reference
from conftest import domain_table
from distunlearn import Unlearner
from distunlearn.cli import main
from distunlearn.config import EvaluateConfig
from distunlearn.core.curves import halving_thresholds
from distunlearn.core.gaussian import PooledGaussian
from distunlearn.core.moments import DomainMoments
from distunlearn.core.selection import EditedKL
from distunlearn.evaluate import evaluate
from distunlearn.synthetic import gaussian_domains
from distunlearn.udfs.hashing import hmac_hex
from distunlearn.verify import verify_run

KEY = "modes-hmac-key"
DOMAINS = dict(unwanted="topic = 'unwanted'", retained="topic = 'retained'")
MODES = ("classic", "connect", "catalog")
_names = itertools.count()

# also on the second Spark/Delta stack (make test-alt)
pytestmark = pytest.mark.stacks


@dataclass
class Mode:
    """How a mode names its tables: paths on the classic or the Connect session, or catalog names."""

    name: str
    spark: object
    root: object

    def table(self, arrow: pa.Table, stem: str, **options) -> str:
        """Write ``arrow`` as a new Delta table; return the reference the commands are given."""
        unique = f"{stem}_{next(_names)}"
        writer = self.spark.createDataFrame(arrow).repartition(3).write.format("delta")
        for key, value in options.items():
            writer = writer.option(key, value)
        if self.name == "catalog":
            writer.saveAsTable(f"modes.{unique}")
            return f"modes.{unique}"
        path = str(self.root / unique)
        writer.save(path)
        return path

    def new(self, stem: str) -> str:
        """A table reference where nothing exists yet."""
        unique = f"{stem}_{next(_names)}"
        return f"modes.{unique}" if self.name == "catalog" else str(self.root / unique)

    def ids(self, ref: str) -> set:
        df = self.spark.read.table(ref) if self.name == "catalog" else self.spark.read.format("delta").load(ref)
        return {r["id"] for r in df.select("id").collect()}

    def location(self, ref: str) -> str:
        return self.spark.sql(f"DESCRIBE DETAIL {ref if self.name == 'catalog' else f'delta.`{ref}`'}") \
            .first()["location"].removeprefix("file:")


@pytest.fixture(scope="module", params=MODES)
def mode(request, spark, tmp_path_factory):
    if request.param == "connect":
        session = request.getfixturevalue("connect_spark")
    else:
        session = spark
    if request.param == "catalog":
        spark.sql("CREATE DATABASE IF NOT EXISTS modes")
    yield Mode(request.param, session, tmp_path_factory.mktemp(request.param))


@pytest.fixture(autouse=True)
def connect_functions(request, monkeypatch):
    """pyspark builds Connect columns (``F.col``, ``F.expr``) only in a process marked as a Connect client:
    a Connect test marks this one, which also holds the suite's classic session, for its duration."""
    uses_connect = "connect_spark" in request.fixturenames or (
        "mode" in request.fixturenames and request.getfixturevalue("mode").name == "connect")
    if uses_connect:
        monkeypatch.setenv("SPARK_CONNECT_MODE_ENABLED", "1")


@pytest.fixture(scope="module")
def data():
    """50 unwanted, 200 retained and 20 rows in neither domain, 4 dims, string ids."""
    x1, x2 = gaussian_domains(50, 200, 4, shift=0.8, seed=7, offset=2.0)
    x3 = np.random.default_rng(3).standard_normal((20, 4)) + 4.0
    table = domain_table(x1, x2, x_neither=x3, id_type="string", seed=13)
    stored = lambda x: x.astype(np.float32).astype(np.float64)  # noqa: E731 - as the float column holds them
    ids = np.array(table.column("id").to_pylist(), dtype=object)
    return dict(table=table, x1=stored(x1), x2=stored(x2), ids1=ids[:50], ids=ids)


def test_plan_and_output_delete_the_brute_force_set(mode, data):
    source = mode.table(data["table"], "events")
    plan = Unlearner(rule="likelihood_ratio", **DOMAINS).plan(source, spark=mode.spark)
    f, rows = reference.smallest_budget(data["x1"], data["x2"], data["ids1"], "likelihood_ratio",
                                        plan.report.alpha, plan.report.epsilon)
    expected = set(data["ids1"][rows].tolist())
    assert plan.deleted == f > 0 and plan.budgets["likelihood_ratio"].deleted == f
    assert {r["id"] for r in plan.deletion_set().collect()} == expected
    assert "<table>" in plan._repr_html_() and "likelihood_ratio" in repr(plan)

    output = mode.new("edited")
    report = plan.apply(output=output)
    assert report.deleted == f and report.output_version == 0
    assert mode.ids(output) == set(data["ids"].tolist()) - expected
    assert set(deltalake.DeltaTable(mode.location(output)).to_pyarrow_table().column("id").to_pylist()) == \
        set(data["ids"].tolist()) - expected
    history = mode.spark.sql(f"DESCRIBE HISTORY {output if mode.name == 'catalog' else f'delta.`{output}`'}")
    assert json.loads(history.first()["userMetadata"]) == {"distunlearn_run_id": plan.run_id}


def test_dataframe_input_gives_the_same_plan_as_its_table(connect_spark, data, tmp_path, monkeypatch):
    """Over Connect (the classic path runs in the quickstart notebook); the DataFrame's moments go through
    the executors' merge tree (its own Connect session, the partials as a global temporary view)."""
    from distunlearn.spark import statistics

    mode = Mode("connect", connect_spark, tmp_path)
    source = mode.table(data["table"], "frame")
    df = mode.spark.read.format("delta").load(source).repartition(6)
    unlearner = Unlearner(rule="distance_to_retained", **DOMAINS)
    by_table = unlearner.plan(source, spark=mode.spark)
    monkeypatch.setattr(statistics, "DRIVER_BYTES", 1)
    monkeypatch.setattr(statistics, "MIN_FAN_IN", 4)
    by_frame = unlearner.plan(df)
    assert by_frame.deleted == by_table.deleted > 0 and by_frame.report.source_version is None
    assert {r["id"] for r in by_frame.deletion_set().collect()} == {r["id"] for r in by_table.deletion_set().collect()}


def test_in_place_purge_with_requests_and_hashed_ids_then_verify(mode, data, monkeypatch):
    monkeypatch.setenv("DISTUNLEARN_HASH_KEY", KEY)
    source = mode.table(data["table"], "purged", **{"delta.enableDeletionVectors": "true",
                                                    "delta.dataSkippingStatsColumns": "topic,payload"})
    requested = [data["ids"][60], data["ids"][260]]                    # a retained row and one in neither domain
    requests = mode.table(pa.table({"id": requested + ["no-such-id"]}), "requests")
    before = mode.ids(source)
    plan = Unlearner(rule="likelihood_ratio", requests=requests, **DOMAINS).plan(source, spark=mode.spark,
                                                                                 run_id=f"purge-{mode.name}")
    report = plan.apply(in_place=True, purge=True, retention_hours=0, only_writer=True, hash_ids=True)
    deleted = before - mode.ids(source)
    assert report.deleted_requested == 2 and set(requested) <= deleted
    distributional = deleted - set(requested)
    assert len(distributional) == report.deleted > 0

    # brute force with the retained request already out of the retained domain
    keep2 = data["ids"][50:250] != requested[0]
    x2 = data["x2"][keep2]
    sigma = reference.pooled_covariance(data["x1"], data["x2"])
    order = np.array(sorted(range(50), key=lambda i: (-reference.scores("likelihood_ratio", data["x1"], data["x2"],
                                                                        sigma)[i], data["ids1"][i])))
    removal = [reference.kl(data["x1"].mean(0), np.vstack([x2, np.delete(data["x1"], order[:f], 0)]).mean(0), sigma)
               for f in range(51)]
    preservation = [reference.kl(data["x2"].mean(0), np.vstack([x2, np.delete(data["x1"], order[:f], 0)]).mean(0),
                                 sigma) for f in range(51)]
    f = next(f for f in range(51) if removal[f] >= report.alpha and preservation[f] <= report.epsilon)
    assert distributional == set(data["ids1"][order[:f]].tolist())

    manifest = report.manifest
    rows = (mode.spark.read.table(manifest) if mode.name == "catalog" else
            mode.spark.read.format("delta").load(manifest)).collect()
    assert {r["id"] for r in rows} == {hmac_hex(KEY.encode(), i) for i in deleted}
    checks = verify_run(mode.spark, source, f"purge-{mode.name}", hash_key=KEY.encode())
    assert [c.name for c in checks if c.passed] == ["removal", "preservation", "deleted ids absent",
                                                     "purged files gone"], [c.line() for c in checks]
    assert "of 0 files" not in checks[-1].detail


def test_evaluate_halving_budget_matches_brute_force(mode, data):
    source = mode.table(data["table"], "evaluated")
    config = EvaluateConfig(source=source, rule=("likelihood_ratio",), budget_steps=10, **DOMAINS)
    report = evaluate(mode.spark, config)
    x1, x2 = data["x1"], data["x2"]
    model = PooledGaussian.fit(DomainMoments.from_rows(x1), DomainMoments.from_rows(x2), 1e-6)
    halving = halving_thresholds(EditedKL.from_model(model))
    f, _ = reference.smallest_budget(x1, x2, data["ids1"], "likelihood_ratio", halving.alpha, halving.epsilon)
    assert report["rules"]["likelihood_ratio"]["halving_budget"] == f > 0
    assert report["source_version"] == 0


def test_cli_over_connect(connect_server, connect_spark, data, tmp_path):
    """The console command as its own process against the server (``--remote``): an --output run by
    catalog name; its stdout and stderr carry only the command's own lines."""
    connect_spark.sql("CREATE DATABASE IF NOT EXISTS cli")
    connect_spark.createDataFrame(data["table"]).write.format("delta").saveAsTable("cli.events")
    env = {k: v for k, v in os.environ.items() if k not in ("SPARK_CONNECT_MODE_ENABLED", "PYSPARK_GATEWAY_PORT")}
    command = [sys.executable, "-m", "distunlearn"]
    unlearn = subprocess.run([*command, "unlearn", "--remote", connect_server.url, "--source", "cli.events",
                              "--rule", "likelihood_ratio", "--output", "cli.edited", "--run-id", "cli-1",
                              "--unwanted", DOMAINS["unwanted"], "--retained", DOMAINS["retained"]],
                             capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert unlearn.returncode == 0, unlearn.stderr
    assert all(line.startswith("[distunlearn ") for line in unlearn.stderr.splitlines()), unlearn.stderr
    f = connect_spark.read.table("cli.edited_manifest").count()
    assert connect_spark.read.table("cli.edited").count() == 270 - f and f > 0
    assert f"deleted {f:,} rows by likelihood_ratio" in unlearn.stdout


def test_four_forms_of_in_place_resolve_to_the_same_table(spark, data, tmp_path, monkeypatch, capsys):
    """A relative path, an absolute path, a file:// URI and a catalog name of four equal tables: each
    in-place run deletes the same rows, and its manifest and ledger land beside its table."""
    spark.sql("CREATE DATABASE IF NOT EXISTS forms")
    df = spark.createDataFrame(data["table"]).repartition(2)
    monkeypatch.chdir(tmp_path)
    for name in ("relative", "absolute", "uri"):
        df.write.format("delta").save(str(tmp_path / "lake" / name))
    df.write.format("delta").saveAsTable("forms.events")
    forms = {"relative": "lake/relative", "absolute": str(tmp_path / "lake" / "absolute"),
             "uri": (tmp_path / "lake" / "uri").as_uri(), "name": "forms.events"}
    kept = {}
    for form, ref in forms.items():
        args = ["unlearn", "--source", ref, "--in-place", "--rule", "likelihood_ratio", "--run-id", f"form-{form}",
                "--quiet", "--unwanted", DOMAINS["unwanted"], "--retained", DOMAINS["retained"]]
        assert main(args) == 0, capsys.readouterr().err
        table = spark.read.table(ref) if form == "name" else spark.read.format("delta").load(
            str(tmp_path / "lake" / form))
        kept[form] = {r["id"] for r in table.select("id").collect()}
    assert len({frozenset(v) for v in kept.values()}) == 1 and len(kept["name"]) < 270
    for form in ("relative", "absolute", "uri"):
        assert (tmp_path / "lake" / f"{form}_manifest" / "_delta_log").is_dir()
    assert (tmp_path / "lake" / "distunlearn_ledger" / "_delta_log").is_dir()
    assert spark.catalog.tableExists("forms.events_manifest") and spark.catalog.tableExists("forms.distunlearn_ledger")
    ledger = spark.read.format("delta").load(str(tmp_path / "lake" / "distunlearn_ledger"))
    assert {r["run_id"] for r in ledger.collect()} == {"form-relative", "form-absolute", "form-uri"}


@pytest.mark.parametrize("flags, words", [
    pytest.param(["--source", "forms.no_such_table", "--dry-run"], ("forms.no_such_table", "not found"),
                 id="name-does-not-exist"),
    pytest.param(["--source", "forms.plain_parquet", "--in-place"], ("not a Delta table",), id="name-not-delta"),
    pytest.param(["--source", "SOURCE", "--output", "no_such_db.edited"], ("no_such_db", "database"),
                 id="name-cannot-be-written"),
])
@pytest.mark.reliability("bad input")
def test_bad_catalog_names_fail_with_one_line(spark, data, tmp_path, capsys, flags, words):
    import reliability

    spark.sql("CREATE DATABASE IF NOT EXISTS forms")
    if not spark.catalog.tableExists("forms.plain_parquet"):
        spark.createDataFrame(data["table"]).write.format("parquet").saveAsTable("forms.plain_parquet")
    source = str(tmp_path / "source")
    spark.createDataFrame(data["table"]).write.format("delta").save(source)
    flags = [source if f == "SOURCE" else f for f in flags]
    tables = {t.name for t in spark.catalog.listTables("forms")}
    code = main(["unlearn", *flags, "--quiet", "--unwanted", DOMAINS["unwanted"]])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and err[0].startswith("distunlearn: error:"), err
    assert all(w in err[0] for w in words), err[0]
    assert {t.name for t in spark.catalog.listTables("forms")} == tables
    assert sorted(os.listdir(tmp_path)) == ["source"]
    reliability.record(None, f"exit {code}: {err[0]}", rows_checked=0, rows_lost=0)
