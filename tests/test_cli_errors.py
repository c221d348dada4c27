"""The console command on bad input: exit code, one last ``distunlearn: error:`` line, and nothing written.

Every test runs ``distunlearn.cli.main`` in-process on the suite's Spark session (``get_session``
returns the active one) against tiny Delta tables in ``tmp_path``.
"""
from __future__ import annotations

import math
import os
from collections import Counter
from pathlib import Path

import deltalake
import numpy as np
import pyarrow.parquet as pq
import pytest

import reliability
from conftest import domain_table, write_delta
from distunlearn.cli import main

UNWANTED = "topic = 'unwanted'"
ROWS_SCHEMA = "id long, topic string, embedding array<double>"


# ---------------------------------------------------------------- tables

def gaussian_table(n_unwanted: int = 12, n_retained: int = 20, dim: int = 3, shift: float = 1.5, seed: int = 0):
    """A valid two-domain table: the unwanted domain's mean is shifted by ``shift`` in every dimension."""
    rng = np.random.default_rng(seed)
    return domain_table(rng.standard_normal((n_unwanted, dim)) + shift, rng.standard_normal((n_retained, dim)),
                        seed=seed)


def base_rows(n_unwanted: int = 6, n_retained: int = 10, dim: int = 3) -> list[list]:
    """Mutable rows ``[id, topic, vector]`` of a small valid table, for building malformed variants."""
    rng = np.random.default_rng(3)
    topics = ["unwanted"] * n_unwanted + ["retained"] * n_retained
    return [[100 + i, topic, [float(v) for v in rng.standard_normal(dim) + (1.0 if topic == "unwanted" else 0.0)]]
            for i, topic in enumerate(topics)]


def write_rows(spark, rows, path, schema: str = ROWS_SCHEMA, partitions: int = 2) -> str:
    spark.createDataFrame(rows, schema).repartition(partitions).write.format("delta").save(str(path))
    return str(path)


def mutated(change):
    """A table writer: ``base_rows`` after ``change(rows)`` (which edits in place or returns new rows)."""
    def write(spark, path):
        rows = base_rows()
        rows = change(rows) or rows
        return write_rows(spark, rows, path)
    return write


def set_vector(index: int, value):
    def change(rows):
        rows[index][2] = value
    return change


def set_element(index: int, position: int, value: float):
    def change(rows):
        rows[index][2][position] = value
    return change


def set_id(index: int, value):
    def change(rows):
        rows[index][0] = value
    return change


def string_vectors(spark, path):
    rows = [[i, t, ",".join(map(str, v))] for i, t, v in base_rows()]
    return write_rows(spark, rows, path, schema="id long, topic string, embedding string")


def empty_table(spark, path):
    return write_rows(spark, [], path)


def plain_parquet(spark, path):
    spark.createDataFrame(gaussian_table()).write.parquet(str(path))
    return str(path)


def valid_delta(spark, path):
    return write_delta(spark, gaussian_table(), path, partitions=2)


# ---------------------------------------------------------------- running the command

def cli_args(source, output=None, **flags) -> list[str]:
    """``unlearn`` argv: defaults to --unwanted UNWANTED and --quiet; a flag set to None is left out."""
    values = {"source": str(source), "unwanted": UNWANTED, "output": None if output is None else str(output)}
    values.update(flags)
    argv = ["unlearn", "--quiet"]
    for name, value in values.items():
        if value is None:
            continue
        flag = "--" + name.replace("_", "-")
        argv += [flag] if value is True else [f"{flag}={value}"]
    return argv


def run(capsys, argv: list[str]) -> tuple[int, str, str]:
    capsys.readouterr()  # drop anything printed while the table was built
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines, "nothing on stderr"
    return lines[-1]


def assert_failed(code: int, err: str, *words: str, prefix: str = "distunlearn: error:", exit_code: int = 1) -> str:
    line = last_line(err)
    assert code == exit_code, f"exit code {code}, stderr: {err!r}"
    assert line.startswith(prefix), line
    for word in words:
        assert word in line, f"{word!r} not in {line!r}"
    return line


def tree(root: Path) -> dict[str, int]:
    """Every file under ``root`` with its size: a snapshot to compare before and after a run."""
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


def table_rows(*roots) -> Counter:
    """Every row of every table at or under ``roots`` as (table, repr of the row), read without Spark: Delta
    tables by delta-rs, plain Parquet folders by pyarrow. Missing paths hold no rows."""
    rows: Counter = Counter()
    for root in map(Path, roots):
        if not root.is_dir():
            continue
        delta = {p.parent for p in root.rglob("_delta_log")} | ({root} if (root / "_delta_log").is_dir() else set())
        parquet = {p.parent for p in root.rglob("*.parquet")
                   if not any(t == p.parent or t in p.parents for t in delta)}
        for table in delta | parquet:
            data = deltalake.DeltaTable(str(table)).to_pyarrow_table() if table in delta else pq.read_table(table)
            rows.update((str(table), repr(tuple(r.values()))) for r in data.to_pylist())
    return rows


def source_of(argv: list[str]) -> str | None:
    return next((a.split("=", 1)[1] for a in argv if a.startswith("--source=")), None)


class Untouched:
    """Rows of every table under the test folder and of the source, before and after a rejected run:
    ``lost`` counts the rows (with their multiplicity) that were there before and are gone."""

    def __init__(self, root: Path, argv: list[str]):
        self.roots = [root] + [s for s in [source_of(argv)] if s and not Path(s).is_relative_to(root)]
        self.before = table_rows(*self.roots)

    def lost(self) -> int:
        return sum((self.before - table_rows(*self.roots)).values())

    def record(self, outcome: str, case: str | None = None) -> None:
        lost = self.lost()
        reliability.record(case, outcome, rows_checked=sum(self.before.values()), rows_lost=lost)
        assert lost == 0, f"{lost} row(s) of the existing tables are gone"


def assert_nothing_written(root: Path, before: dict[str, int], output, output_existed: bool) -> None:
    """No file under ``root`` changed, and neither a new output table nor its default manifest appeared."""
    if output is not None:
        if not output_existed:
            assert not os.path.exists(output), f"{output} was created"
        assert not os.path.exists(str(output).rstrip("/") + "_manifest"), "the manifest was created"
    assert tree(root) == before, "files changed under the test folder"


def expect_error(capsys, tmp_path, argv, output, *words, case: str | None = None, **kw) -> str:
    """Run ``argv``, check the failure and its last stderr line, and that nothing was written nor lost
    (recorded as one bad input of the reliability summary)."""
    before, existed, rows = tree(tmp_path), output is not None and os.path.exists(output), Untouched(tmp_path, argv)
    code, _, err = run(capsys, argv)
    line = assert_failed(code, err, *words, **kw)
    assert_nothing_written(tmp_path, before, output, existed)
    rows.record(f"exit {code}: {line}", case)
    return line


@pytest.fixture(scope="module")
def valid_source(spark, tmp_path_factory) -> str:
    """One valid table, only ever read, shared by the cases that differ in flags alone."""
    return valid_delta(spark, tmp_path_factory.mktemp("valid") / "source")


# ---------------------------------------------------------------- the harness works

def test_valid_table_succeeds(spark, capsys, tmp_path, valid_source):
    output = tmp_path / "edited"
    code, out, err = run(capsys, cli_args(valid_source, output, rule="likelihood_ratio", alpha_rel=0.5,
                                          epsilon_rel=1.0))
    assert code == 0, err
    assert (output / "_delta_log").is_dir()
    assert (tmp_path / "edited_manifest" / "_delta_log").is_dir()
    assert "distunlearn: error" not in err
    assert out.strip()
    edited = spark.read.format("delta").load(str(output)).count()
    deleted = spark.read.format("delta").load(str(tmp_path / "edited_manifest")).count()
    assert deleted > 0 and edited + deleted == 32


# ---------------------------------------------------------------- bad source data

@pytest.mark.parametrize("write_source, words", [
    pytest.param(string_vectors, ("'embedding'", "string"), id="vector-of-type-string"),
    pytest.param(mutated(set_element(2, 1, math.nan)), ("NaN", "'embedding'", "1 row(s)"), id="nan-in-vector"),
    pytest.param(mutated(set_element(9, 0, math.inf)), ("Inf", "'embedding'", "1 row(s)"), id="inf-in-vector"),
    pytest.param(mutated(set_element(5, 1, 1e200)), ("too large", "'embedding'", "1e+200", "id 105", "rescale"),
                 id="value-whose-square-overflows"),
    pytest.param(mutated(lambda rows: rows[4][2].append(0.5)), ("ragged", "from 3 to 4"), id="ragged-vectors"),
    pytest.param(mutated(lambda rows: [[i, t, []] for i, t, _ in rows]), ("zero-length", "'embedding'"),
                 id="zero-length-vectors"),
    pytest.param(mutated(set_vector(7, None)), ("null vector", "'embedding'"), id="null-vector"),
    pytest.param(mutated(set_id(3, None)), ("null id", "'id'"), id="null-id"),
    pytest.param(mutated(set_id(12, 100)), ("duplicate", "'id'"), id="duplicate-ids"),
    pytest.param(empty_table, ("empty",), id="empty-table"),
])
@pytest.mark.reliability("bad input")
def test_bad_source_data(spark, capsys, tmp_path, write_source, words):
    source = write_source(spark, tmp_path / "source")
    output = tmp_path / "edited"
    expect_error(capsys, tmp_path, cli_args(source, output), output, *words)


# ---------------------------------------------------------------- bad flags on a valid table

@pytest.mark.parametrize("flags, words", [
    pytest.param({"id_col": "user_id"}, ("id column", "'user_id'"), id="missing-id-column"),
    pytest.param({"vector_col": "vec"}, ("vector column", "'vec'"), id="missing-vector-column"),
    pytest.param({"unwanted": "topic = 'nothing'"}, ("unwanted domain is empty",), id="empty-unwanted-domain"),
    pytest.param({"retained": "topic = 'nothing'"}, ("retained domain is empty",), id="empty-retained-domain"),
    pytest.param({"unwanted": "topic = = 'x' AND ("}, ("--unwanted", "not a valid SQL predicate"),
                 id="unparseable-predicate"),
    pytest.param({"unwanted": "no_such_column > 1"}, ("--unwanted", "not a valid SQL predicate", "no_such_column"),
                 id="unknown-column-in-predicate"),
    pytest.param({"retained": "no_such_column > 1"}, ("--retained", "not a valid SQL predicate", "no_such_column"),
                 id="unknown-column-in-retained"),
    pytest.param({"unwanted": "id + 1"}, ("--unwanted", "boolean", "bigint"), id="non-boolean-predicate"),
    pytest.param({"alpha": -1.0}, ("--alpha", ">= 0", "-1.0"), id="negative-alpha"),
    pytest.param({"epsilon": "nan"}, ("--epsilon", "finite", "nan"), id="nan-epsilon"),
    pytest.param({"alpha": 0.1, "alpha_rel": 0.5}, ("--alpha", "--alpha-rel", "only one"), id="alpha-and-alpha-rel"),
    pytest.param({"ridge": -1.0}, ("--ridge",), id="negative-ridge"),
    pytest.param({"spark_conf": "no-equals-sign"}, ("--spark-conf", "KEY=VALUE"), id="spark-conf-without-value"),
])
@pytest.mark.reliability("bad input")
def test_bad_flags(capsys, tmp_path, valid_source, flags, words):
    output = tmp_path / "edited"
    expect_error(capsys, tmp_path, cli_args(valid_source, output, **flags), output, *words)


@pytest.mark.reliability("bad input")
def test_no_output_and_no_dry_run(capsys, tmp_path, valid_source):
    expect_error(capsys, tmp_path, cli_args(valid_source), None, "--output", "--dry-run")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.reliability("bad input")
def test_unknown_config_key(capsys, tmp_path, valid_source):
    config = tmp_path / "job.toml"
    config.write_text(f'unwanted = "{UNWANTED}"\nrigde = 0.001\n')
    output = tmp_path / "edited"
    expect_error(capsys, tmp_path, cli_args(valid_source, output, config=config), output,
                 "unknown configuration key", "rigde")


# ---------------------------------------------------------------- singular covariance

@pytest.mark.reliability("bad input")
def test_singular_covariance_needs_ridge(spark, capsys, tmp_path):
    rng = np.random.default_rng(5)
    source = write_delta(spark, domain_table(rng.standard_normal((3, 8)) + 2.0, rng.standard_normal((3, 8))),
                         tmp_path / "source")
    output = tmp_path / "edited"
    expect_error(capsys, tmp_path, cli_args(source, output, ridge=0), output, "singular", "--ridge",
                 case="fewer rows than dimensions, --ridge 0")

    # the default ridge (1e-6 * trace/d) makes it invertible; one rule keeps the run short
    code, _, err = run(capsys, cli_args(source, output, rule="likelihood_ratio"))
    assert code == 0, err
    assert (output / "_delta_log").is_dir()


# ---------------------------------------------------------------- bad paths

@pytest.mark.parametrize("write_source, flags, words", [
    pytest.param(None, {}, ("not found", "missing"), id="delta-source-does-not-exist"),
    pytest.param(None, {"format": "parquet"}, ("not found", "missing"), id="parquet-source-does-not-exist"),
    pytest.param(plain_parquet, {}, ("not a Delta table",), id="parquet-folder-read-as-delta"),
])
@pytest.mark.reliability("bad input")
def test_bad_source_path(spark, capsys, tmp_path, write_source, flags, words):
    source = tmp_path / ("source" if write_source else "missing")
    if write_source:
        write_source(spark, source)
    output = tmp_path / "edited"
    expect_error(capsys, tmp_path, cli_args(source, output, **flags), output, *words)


@pytest.mark.reliability("bad input")
def test_output_already_holds_a_table(spark, capsys, tmp_path, valid_source):
    output = Path(valid_delta(spark, tmp_path / "existing"))
    expect_error(capsys, tmp_path, cli_args(valid_source, output), output, "--output", "already holds data")
    assert spark.read.format("delta").load(str(output)).count() == 32


@pytest.mark.reliability("bad input")
def test_output_is_the_source(spark, capsys, tmp_path):
    source = valid_delta(spark, tmp_path / "source")
    expect_error(capsys, tmp_path, cli_args(source, source), source, "--output", "is the source",
                 case="output is the source")
    expect_error(capsys, tmp_path, cli_args(source, source + "/"), source, "--output", "is the source",
                 case="output is the source + '/'")
    assert spark.read.format("delta").load(source).count() == 32


# ---------------------------------------------------------------- infeasible thresholds

@pytest.mark.reliability("bad input")
def test_infeasible_thresholds(capsys, tmp_path, valid_source):
    output = tmp_path / "edited"
    argv = cli_args(valid_source, output, alpha=1000, epsilon_rel=1.0, rule="likelihood_ratio")
    before, rows = tree(tmp_path), Untouched(tmp_path, argv)
    code, out, err = run(capsys, argv)
    line = assert_failed(code, err, "best alpha", "frontier", "1000", prefix="distunlearn: infeasible:",
                         exit_code=2)
    assert_nothing_written(tmp_path, before, output, output_existed=False)
    assert out.strip(), "the summary of how close each rule got is printed"
    rows.record(f"exit {code}: {line}", "infeasible thresholds (--alpha 1000)")


# ---------------------------------------------------------------- collisions and partition-level raggedness

@pytest.mark.reliability("bad input")
def test_ragged_vectors_across_partitions(spark, capsys, tmp_path):
    rng = np.random.default_rng(7)
    source = str(tmp_path / "source")
    for dim, first_id in ((3, 0), (4, 1000)):  # one file per commit, every vector of a file the same length
        table = domain_table(rng.standard_normal((6, dim)) + 1.0, rng.standard_normal((8, dim)), seed=dim)
        spark.createDataFrame(table).selectExpr(f"id + {first_id} AS id", "topic", "payload", "embedding") \
            .coalesce(1).write.format("delta").mode("append").save(source)
    if spark.read.format("delta").load(source).rdd.getNumPartitions() != 2:
        raise RuntimeError("precondition: each commit's file should be read as its own partition")
    output = tmp_path / "edited"
    expect_error(capsys, tmp_path, cli_args(source, output), output, "ragged", "from 3 to 4")


@pytest.mark.reliability("bad input")
def test_manifest_is_the_output(capsys, tmp_path, valid_source):
    output = tmp_path / "edited"
    argv = cli_args(valid_source, output, manifest=output, rule="likelihood_ratio")
    rows = Untouched(tmp_path, argv)
    code, _, err = run(capsys, argv)
    assert not output.exists(), "the edited table was written before the run failed"
    line = assert_failed(code, err, "manifest")
    rows.record(f"exit {code}: {line}", "--manifest equal to --output")


@pytest.mark.reliability("bad input")
def test_report_in_a_missing_folder(capsys, tmp_path, valid_source):
    output = tmp_path / "edited"
    argv = cli_args(valid_source, output, report=tmp_path / "no-such-dir" / "report.json", rule="likelihood_ratio")
    rows = Untouched(tmp_path, argv)
    code, _, err = run(capsys, argv)
    assert not output.exists(), "the edited table was written before the run failed"
    assert not (tmp_path / "edited_manifest").exists(), "the manifest was written before the run failed"
    line = assert_failed(code, err, "report")
    rows.record(f"exit {code}: {line}", "--report in a missing folder")


# ---------------------------------------------------------------- deletion requests of the wrong kind

@pytest.mark.parametrize("keys, schema, words", [
    pytest.param([(" 10 ",), ("013",), ("+16",)], "id string", ("--requests", "type string", "type bigint"),
                 id="string-keys-for-long-ids"),
    pytest.param([(10.0,)], "id double", ("--requests", "type double", "type bigint"), id="double-keys-for-long-ids"),
    pytest.param([(None,), (None,)], "id long", ("--requests", "no usable key", "2 row(s), 2 of them null"),
                 id="only-null-keys"),
    pytest.param([], "id long", ("--requests", "no usable key", "0 row(s)"), id="no-keys"),
])
@pytest.mark.reliability("bad input")
def test_bad_request_keys(spark, capsys, tmp_path, valid_source, keys, schema, words):
    """Request keys are never cast from another type (no trimming, no parsing of ' 42 ' or '017'), and a
    requests table without a usable key stops the run."""
    requests = str(tmp_path / "requests")
    spark.createDataFrame(keys, schema).write.format("delta").save(requests)
    output = tmp_path / "edited"
    expect_error(capsys, tmp_path, [*cli_args(valid_source, output), "--requests", requests], output, *words)


def test_null_request_keys_are_counted_and_integer_types_match(spark, capsys, tmp_path, valid_source):
    """Int keys match long ids (the same values); null keys are left out, counted in the report."""
    requests = str(tmp_path / "requests")
    spark.createDataFrame([(10,), (None,), (13,)], "id int").write.format("delta").save(requests)
    output, report = tmp_path / "edited", tmp_path / "report.json"
    code, _, err = run(capsys, [*cli_args(valid_source, output), "--requests", requests, "--report", str(report)])
    assert code == 0, err
    assert "1 row(s) with a null 'id' were left out" in err
    import json

    assert json.loads(report.read_text())["requests_read"]["null_keys"] == 1
    edited = {r["id"] for r in spark.read.format("delta").load(str(output)).select("id").collect()}
    assert not {10, 13} & edited and len(edited) < 30


# ---------------------------------------------------------------- old spellings of evaluate's flags and keys

def evaluate_args(source, *flags) -> list[str]:
    """``evaluate`` argv on ``source`` with the domain of the test tables, no report."""
    return ["evaluate", "--quiet", f"--source={source}", f"--unwanted={UNWANTED}", *flags]


@pytest.mark.parametrize("flags, line", [
    pytest.param(["--rules", "likelihood_ratio"],
                 "--rules is no longer taken: use --rule (a comma list of rules, as before)", id="rules"),
    pytest.param(["--points", "101"],
                 "--points is no longer taken: use --budget-steps, which counts steps between budgets: "
                 "--points 101 is --budget-steps 100", id="points"),
    pytest.param(["--downstream", "--label-col", "topic"],
                 "--downstream is no longer taken: use --objective downstream", id="downstream"),
])
@pytest.mark.reliability("bad input")
def test_old_evaluate_flags_name_the_new_ones(capsys, tmp_path, valid_source, flags, line):
    argv = evaluate_args(valid_source, *flags, f"--report={tmp_path / 'eval.json'}")
    got = expect_error(capsys, tmp_path, argv, None, exit_code=2, case=f"evaluate {flags[0]} (old spelling)")
    assert got == f"distunlearn: error: {line}"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("key, line", [
    pytest.param('rules = "random"', "key rules is no longer taken: use rule (a comma list of rules, as before)",
                 id="rules"),
    pytest.param("points = 11", "key points is no longer taken: use budget_steps, which counts steps between "
                                "budgets: points = 101 is budget_steps = 100", id="points"),
    pytest.param("downstream = true", 'key downstream is no longer taken: use objective = "downstream"',
                 id="downstream"),
])
@pytest.mark.reliability("bad input")
def test_old_evaluate_config_keys_name_the_new_ones(capsys, tmp_path, valid_source, key, line):
    config = tmp_path / "eval.toml"
    config.write_text(f'report = "{tmp_path / "eval.json"}"\n{key}\n')
    got = expect_error(capsys, tmp_path, evaluate_args(valid_source, f"--config={config}"), None, exit_code=2,
                       case=f"evaluate config key {key.split()[0]} (old spelling)")
    assert got == f"distunlearn: error: config file {config}: {line}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval.toml"]


def test_a_prefix_of_a_flag_is_not_taken_for_the_flag(capsys):
    """``unlearn --downstream 0.3`` is an error, not ``--downstream-target 0.3`` (no abbreviations)."""
    with pytest.raises(SystemExit) as stop:
        main(["unlearn", "--source", "x", "--unwanted", "a = 1", "--downstream", "0.3"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == "distunlearn: error: unrecognized arguments: --downstream 0.3"


def test_old_spellings_are_hidden_from_help(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = capsys.readouterr().out
    assert "--rule " in text and "--budget-steps" in text and "--objective" in text
    assert "--rules" not in text and "--points" not in text and "--downstream " not in text


# ---------------------------------------------------------------- core errors: flags in the CLI, keywords in the API

@pytest.fixture(scope="module")
def singular_source(spark, tmp_path_factory) -> str:
    """Fewer rows than dimensions: the pooled covariance is singular without a ridge."""
    rng = np.random.default_rng(5)
    return write_delta(spark, domain_table(rng.standard_normal((3, 8)) + 2.0, rng.standard_normal((3, 8))),
                       tmp_path_factory.mktemp("singular") / "source")


@pytest.mark.reliability("bad input")
def test_core_error_names_the_flag_in_the_cli(capsys, tmp_path, singular_source):
    output = tmp_path / "edited"
    line = expect_error(capsys, tmp_path, cli_args(singular_source, output, ridge=0), output,
                        case="singular covariance through the CLI")
    assert line == ("distunlearn: error: the pooled covariance is singular (6 rows, 8 dims): pass --ridge > 0 "
                    "(e.g. --ridge 1e-3)")
    line = expect_error(capsys, tmp_path, evaluate_args(singular_source, "--ridge=0"), None,
                        case="singular covariance through evaluate")
    assert line.endswith("pass --ridge > 0 (e.g. --ridge 1e-3)")
    line = expect_error(capsys, tmp_path, cli_args(singular_source, output, alpha=0.1, alpha_rel=0.5), output,
                        case="two removal thresholds through the CLI")
    assert line == "distunlearn: error: give only one of --alpha and --alpha-rel"


def test_core_error_names_the_keyword_in_the_api(spark, tmp_path, singular_source):
    from distunlearn.api import Unlearner
    from distunlearn.errors import ParameterError

    before = tree(tmp_path)
    with pytest.raises(ParameterError) as raised:
        Unlearner(unwanted=UNWANTED, ridge=0.0).plan(singular_source, spark=spark)
    assert str(raised.value) == ("the pooled covariance is singular (6 rows, 8 dims): pass ridge > 0 "
                                 "(e.g. ridge=1e-3)")
    assert raised.value.parameter == "ridge"
    with pytest.raises(ParameterError, match=r"^give only one of alpha and alpha_rel$"):
        Unlearner(unwanted=UNWANTED, alpha=0.1, alpha_rel=0.5)
    with pytest.raises(ParameterError, match=r"^covariance must be one of ridge, oas, got 'ledoit'$"):
        Unlearner(unwanted=UNWANTED, covariance="ledoit")
    with pytest.raises(ParameterError, match=r"^points is no longer taken: use budget_steps, .* "
                                             r"points=101 is budget_steps=100$"):
        Unlearner(unwanted=UNWANTED).evaluate(singular_source, spark=spark, points=11)
    assert tree(tmp_path) == before
