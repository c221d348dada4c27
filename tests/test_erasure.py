"""Erasure requests over a small lakehouse: posts (change data feed), embeddings keyed by post id through
posts (with a distributional part) and events (deletion vectors), and a requests table of user ids.

The first run removes the subjects from every table's current version and leaves their files to the
tables' retention; once the retention has passed the next run erases them, checked by reading the
storage itself. A request received 31 days ago and not erased is overdue. A run killed between two
tables' commits is finished by a rerun that edits no table twice."""
from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from conftest import SMALL_DRIVER_FLAGS
from distunlearn.cli import main
from distunlearn.udfs.hashing import hmac_hex

KEY = "erasure-test-key"
RUN = "erase-1"
USERS = [f"u-{i:03d}" for i in range(24)]
REQUESTED = {"u-003": 2, "u-011": 5, "u-020": 31}   # user -> days since the request was received
REQUEST_IDS = {"u-003": "req-1", "u-011": "req-2", "u-020": "req-3"}
TABLES = ("posts", "embeddings", "events")
KILL_AT = "table posts ..."   # the second table's phase: embeddings (keyed through posts) has committed


@pytest.fixture(scope="module", autouse=True)
def hash_key():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DISTUNLEARN_HASH_KEY", KEY)
        yield


def create(spark, path: Path, schema: str, properties: dict, rows: list[tuple], parts: int = 3) -> None:
    """A Delta table made with its properties before any row, so no commit ever held statistics of a key."""
    props = ", ".join(f"'{k}' = '{v}'" for k, v in properties.items())
    spark.sql(f"CREATE TABLE delta.`{path}` ({schema}) USING delta TBLPROPERTIES ({props})")
    spark.createDataFrame(rows, schema).repartition(parts).write.format("delta").mode("append").save(str(path))


def build_lake(spark, lake: Path) -> dict:
    """The three tables and the requests; returns each requested user's post ids."""
    rng = np.random.default_rng(7)
    posts, embeddings, events = [], [], []
    for i in range(240):
        user, post = USERS[i % len(USERS)], f"p-{i:04d}"
        topic = "spam" if i % 4 == 0 else "news"
        posts.append((post, user, topic, i))
        shift = 2.0 if topic == "spam" else 0.0
        embeddings.append((post, topic, [float(x) for x in rng.normal(shift, 1.0, 4)]))
    for i in range(300):
        events.append((f"e-{i:04d}", USERS[(i * 7) % len(USERS)], i))
    create(spark, lake / "posts", "post_id STRING, author_id STRING, topic STRING, n INT",
           {"delta.enableChangeDataFeed": "true", "delta.dataSkippingStatsColumns": "n"}, posts)
    create(spark, lake / "embeddings", "post_id STRING, topic STRING, embedding ARRAY<DOUBLE>",
           {"delta.dataSkippingStatsColumns": "topic"}, embeddings)
    create(spark, lake / "events", "event_id STRING, user_id STRING, n INT",
           {"delta.enableDeletionVectors": "true", "delta.dataSkippingStatsColumns": "n"}, events)
    now = dt.datetime.now(dt.timezone.utc)
    spark.createDataFrame([(REQUEST_IDS[u], u, now - dt.timedelta(days=d)) for u, d in REQUESTED.items()],
                          "request_id STRING, user_id STRING, received_at TIMESTAMP") \
        .write.format("delta").save(str(lake / "requests"))
    return {u: {p for p, a, _, _ in posts if a == u} for u in REQUESTED}


def write_config(lake: Path) -> Path:
    config = lake / "erasure.toml"
    config.write_text(f'''
requests = "{lake / 'requests'}"
subject_col = "user_id"
request_id_col = "request_id"
ledger = "{lake / 'audit' / 'distunlearn_ledger'}"
certificates = "{lake / 'certificates'}"

[tables.posts]
source = "{lake / 'posts'}"
key = "author_id"

[tables.embeddings]
source = "{lake / 'embeddings'}"
key = "post_id"
via = "posts"

[tables.embeddings.unlearn]
id_col = "post_id"
vector_col = "embedding"
unwanted = "topic = 'spam'"
alpha_rel = 0.3
rule = "likelihood_ratio"

[tables.events]
source = "{lake / 'events'}"
key = "user_id"
''')
    return config


def rows_of(spark, path: Path, column: str) -> set:
    return {r[0] for r in spark.read.format("delta").load(str(path)).select(column).collect()}


def status_rows(spark, lake: Path) -> dict:
    rows = spark.read.format("delta").load(str(lake / "audit" / "distunlearn_erasure_status")).collect()
    return {(r["subject"], r["table"]): r for r in rows}


def stored_values(table: Path) -> tuple[set, bytes]:
    """Every string value of every Parquet file under the table (data, change data, checkpoints) and the
    bytes of every other file (log entries, deletion vectors), read from storage, not through Delta."""
    values, raw = set(), b""
    for path in table.rglob("*"):
        if not path.is_file():
            continue
        if path.suffix == ".parquet":
            for column in pq.read_table(path).columns:
                values.update(v for v in column.to_pylist() if isinstance(v, str))
        raw += path.read_bytes()
    return values, raw


def vacuum_retentions(spark, path: Path) -> list[tuple]:
    """(specified, table default) retention of every VACUUM the table's history records, in ms."""
    rows = spark.sql(f"DESCRIBE HISTORY delta.`{path}`").where(F.col("operation") == "VACUUM START").collect()
    return [(r["operationParameters"].get("specifiedRetentionMillis"),
             r["operationParameters"].get("defaultRetentionMillis")) for r in rows]


@pytest.fixture(scope="module")
def pristine(spark, tmp_path_factory):
    lake = tmp_path_factory.mktemp("erasure-pristine")
    return lake, build_lake(spark, lake)


def copy_lake(pristine, tmp_path_factory, name: str) -> Path:
    lake = tmp_path_factory.mktemp(name)
    for item in pristine[0].iterdir():
        shutil.copytree(item, lake / item.name)
    write_config(lake)
    return lake


STATUS_FIELDS = ("status", "removed_version", "removed_by_run", "request_id", "erased_at")


@pytest.fixture(scope="module")
def first_run(spark, pristine, tmp_path_factory):
    """One undisturbed run with the tables' default retention; its status as it left it."""
    lake = copy_lake(pristine, tmp_path_factory, "erasure-lake")
    assert main(["erase", "--config", str(lake / "erasure.toml"), "--run-id", RUN, "--quiet"]) == 0
    return lake, {k: tuple(r[f] for f in STATUS_FIELDS) for k, r in status_rows(spark, lake).items()}


def test_first_run_removes_every_subject_and_waits_for_the_retention(spark, pristine, first_run):
    lake, posts_of = first_run[0], pristine[1]
    requested_posts = set().union(*posts_of.values())
    assert not rows_of(spark, lake / "posts", "author_id") & set(REQUESTED)
    assert not rows_of(spark, lake / "posts", "post_id") & requested_posts
    assert not rows_of(spark, lake / "embeddings", "post_id") & requested_posts
    assert not rows_of(spark, lake / "events", "user_id") & set(REQUESTED)
    # other users' rows stay, but for the spam the embeddings' distributional part deleted
    assert rows_of(spark, lake / "events", "user_id") == set(USERS) - set(REQUESTED)
    kept_posts = rows_of(spark, lake / "posts", "post_id")
    assert len(kept_posts) == 240 - len(requested_posts)
    embedded = rows_of(spark, lake / "embeddings", "post_id")
    assert embedded <= kept_posts
    unlearned = kept_posts - embedded                 # the distributional part: spam only, and some of it
    assert unlearned and all(int(p[2:]) % 4 == 0 for p in unlearned)

    status = status_rows(spark, lake)
    subjects = {hmac_hex(KEY.encode(), u): u for u in REQUESTED}
    assert set(status) == {(s, t) for s in subjects for t in TABLES}
    for (subject, table), row in status.items():
        assert row["removed_at"] is not None and row["erased_at"] is None
        assert row["status"] == ("overdue" if subjects[subject] == "u-020" else "removed")
        # the table's retention (Delta's 7 days) from when the run's commits removed the files
        assert abs((row["erasable_from"] - row["tombstoned_at"]).total_seconds() - 7 * 86400) < 1
        assert row["request_id"] == REQUEST_IDS[subjects[subject]]
    assert not any(u.encode() in json.dumps([r.asDict() for r in status.values()], default=str).encode()
                   for u in REQUESTED)                # the status holds HMACs only
    for table in TABLES:                              # every VACUUM kept the table's own retention
        retentions = vacuum_retentions(spark, lake / table)
        assert retentions and all(s is None and int(d) == 7 * 86400 * 1000 for s, d in retentions)
    values, _ = stored_values(lake / "posts")
    assert set(REQUESTED) & values                    # the removed rows' files wait for the retention


def test_status_names_the_overdue_request_and_exits_4(spark, first_run, capsys):
    capsys.readouterr()
    code = main(["erasure-status", "--config", str(first_run[0] / "erasure.toml"), "--quiet"])
    out = capsys.readouterr()
    assert code == 4, out.err
    assert "1 overdue" in out.out and "2 removed" in out.out
    lines = [line for line in out.out.splitlines() if line.startswith("OVERDUE")]
    assert len(lines) == 1 and "request req-3" in lines[0] and "erasable from" in lines[0]
    assert out.out.index("OVERDUE") < out.out.index("REMOVED")
    assert "1 erasure request(s) overdue" in out.err


@pytest.mark.stacks   # VACUUM's retention differs between Delta lines: on every tested stack
def test_after_the_retention_the_next_run_erases_from_storage(spark, pristine, first_run, capsys):
    lake, posts_of = first_run[0], pristine[1]
    for table in TABLES:   # nobody else writes these tables: their retention may be shortened
        spark.sql(f"ALTER TABLE delta.`{lake / table}` SET TBLPROPERTIES "
                  "('delta.deletedFileRetentionDuration' = 'interval 1 seconds')")
    time.sleep(2)
    assert main(["erase", "--config", str(lake / "erasure.toml"), "--run-id", "erase-2", "--quiet"]) == 0
    status = status_rows(spark, lake)
    assert {r["status"] for r in status.values()} == {"erased"}
    assert {r["erased_by_run"] for r in status.values()} == {"erase-2"}
    assert {r["removed_by_run"] for r in status.values()} == {RUN}
    requested = set(REQUESTED) | set().union(*posts_of.values())
    for table in TABLES:
        values, raw = stored_values(lake / table)
        assert not requested & values, table
        assert not [v for v in requested if v.encode() in raw], table
        assert all(s is None for s, _ in vacuum_retentions(spark, lake / table))
    capsys.readouterr()
    code = main(["erasure-status", "--config", str(lake / "erasure.toml"), "--quiet"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "3 erased" in out and "FAIL" not in out
    certificate = json.loads((lake / "certificates" / f"erasure-{hmac_hex(KEY.encode(), 'u-020')[:32]}.json")
                             .read_text())
    assert certificate["status"] == "erased" and certificate["request_id"] == "req-3"
    assert {t["table"] for t in certificate["tables"]} == set(TABLES)
    assert all(c["passed"] for c in certificate["checks"])
    assert {c["name"] for c in certificate["checks"]} >= {"no row in the current version",
                                                          "files that held the rows gone from storage"}
    assert (lake / "certificates" / f"erasure-{hmac_hex(KEY.encode(), 'u-020')[:32]}.md").read_text() \
        .count("PASS") == len(certificate["checks"])


def test_a_rerun_after_a_kill_between_tables_edits_each_table_once(spark, pristine, first_run, tmp_path_factory):
    first_run_status = first_run[1]
    lake = copy_lake(pristine, tmp_path_factory, "erasure-killed")
    args = [sys.executable, "-m", "distunlearn", "erase", "--config", str(lake / "erasure.toml"), "--run-id", RUN,
            *SMALL_DRIVER_FLAGS]
    proc = subprocess.Popen(args, cwd=lake, env=dict(os.environ, PYSPARK_PYTHON=sys.executable), text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    killed = False
    try:
        for line in proc.stderr:
            if KILL_AT in line:
                os.killpg(proc.pid, signal.SIGKILL)
                killed = True
                break
    finally:
        if proc.poll() is None and not killed:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=300)
    assert killed, "the run ended before its second table"
    assert rows_of(spark, lake / "posts", "author_id") >= set(REQUESTED)   # the second table was not edited yet
    assert main(["erase", "--config", str(lake / "erasure.toml"), "--run-id", RUN, "--quiet"]) == 0
    for table, run in (("posts", RUN), ("embeddings", f"{RUN}.embeddings"), ("events", RUN)):
        merges = spark.sql(f"DESCRIBE HISTORY delta.`{lake / table}`").where(
            (F.col("operation") == "MERGE") & (F.col("userMetadata") == json.dumps({"distunlearn_run_id": run}))) \
            .count()
        assert merges == 1, table
    resumed = {k: tuple(r[f] for f in STATUS_FIELDS) for k, r in status_rows(spark, lake).items()}
    assert resumed == first_run_status


@pytest.mark.parametrize("setting, changed, message", [
    ('key = "user_id"', 'key = "uid"', "tables.events /"),
    ('subject_col = "user_id"', 'subject_col = "user_id"\nreceived_col = "when"', "received_col"),
])
def test_a_missing_column_stops_the_run_before_anything_is_written(spark, pristine, tmp_path_factory, capsys,
                                                                   setting, changed, message):
    lake = copy_lake(pristine, tmp_path_factory, "erasure-bad-column")
    config = lake / "erasure.toml"
    config.write_text(config.read_text().replace(setting, changed))
    missing = changed.split('"')[-2]
    versions = {t: spark.sql(f"DESCRIBE HISTORY delta.`{lake / t}` LIMIT 1").first()["version"] for t in TABLES}
    capsys.readouterr()
    assert main(["erase", "--config", str(config), "--run-id", "bad-1", "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and f"has no column {missing!r}" in err[0], err
    assert not (lake / "audit").exists()
    assert versions == {t: spark.sql(f"DESCRIBE HISTORY delta.`{lake / t}` LIMIT 1").first()["version"] for t in TABLES}
