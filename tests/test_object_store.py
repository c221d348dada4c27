"""The job on a real S3-API server (moto, HTTP on 127.0.0.1) through Hadoop's S3A connector: plan, --output,
--in-place --purge --requests --hash-ids and verify on s3a:// tables; the erasure checked by listing the bucket
through the S3 API; verify fails when a purged file is put back, a deleted row comes back, or it cannot look."""
from __future__ import annotations

import io
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

import reference
from distunlearn import Unlearner
from distunlearn.cli import main
from distunlearn.spark.table import StorageUnreadable, table_files
from distunlearn.udfs.hashing import hmac_hex
from test_purge import DOMAINS, KEY, make_table

BUCKET = "lake"

# also on the second Spark/Delta stack (make test-alt)
pytestmark = pytest.mark.stacks


@pytest.fixture(scope="module")
def s3(s3_server):
    client = s3_server.client()
    client.create_bucket(Bucket=BUCKET)
    return client


def objects(s3, prefix: str) -> dict[str, bytes]:
    """Every object under ``prefix``, listed and read through the S3 API."""
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
            for o in page.get("Contents", [])]
    return {key: s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() for key in keys}


def ids_in(spark, uri) -> set[str]:
    return {r["id"] for r in spark.read.format("delta").load(uri).select("id").collect()}


def test_plan_output_in_place_purge_and_verify_on_s3(spark, s3, capsys, monkeypatch):
    monkeypatch.setenv("DISTUNLEARN_HASH_KEY", KEY)
    source = f"s3a://{BUCKET}/events"
    ids = make_table(spark, source, {"delta.enableDeletionVectors": "true", "delta.enableChangeDataFeed": "true"})
    spark.createDataFrame([(ids[70],), (ids[305],)], "id string").write.format("delta").save(f"s3a://{BUCKET}/requests")
    assert any(key.startswith("events/_delta_log/") for key in objects(s3, "events/"))   # it really is on S3

    # plan: the brute-force set of the table as stored
    table = spark.read.format("delta").load(source).toPandas()
    x = np.array(table["embedding"].tolist(), dtype=np.float32).astype(np.float64)
    x1, x2 = x[(table["topic"] == "unwanted").to_numpy()], x[(table["topic"] == "retained").to_numpy()]
    ids1 = table["id"][table["topic"] == "unwanted"].to_numpy(dtype=object)
    plan = Unlearner(rule="likelihood_ratio", **DOMAINS).plan(source, spark=spark)
    f, rows = reference.smallest_budget(x1, x2, ids1, "likelihood_ratio", plan.report.alpha, plan.report.epsilon)
    assert plan.deleted == f > 0
    assert {r["id"] for r in plan.deletion_set().collect()} == set(ids1[rows].tolist())

    # --output to a new s3a:// table; a second run to the same output is refused
    flags = ["--rule", "likelihood_ratio", "--quiet", "--unwanted", DOMAINS["unwanted"], "--retained", DOMAINS["retained"]]
    assert main(["unlearn", "--source", source, "--output", f"s3a://{BUCKET}/edited", *flags]) == 0
    assert ids_in(spark, f"s3a://{BUCKET}/edited") == set(ids) - set(ids1[rows].tolist())
    capsys.readouterr()
    assert main(["unlearn", "--source", source, "--output", f"s3a://{BUCKET}/edited", *flags]) == 1
    assert "already holds data" in capsys.readouterr().err

    # in place, with requests, hashed ids and a purge; then no deleted id in any object under the prefix
    before = objects(s3, "events/")
    args = ["unlearn", "--source", source, "--in-place", "--purge", "--retention-hours", "0", "--only-writer",
            "--requests", f"s3a://{BUCKET}/requests", "--hash-ids", "--run-id", "s3-purge-1", *flags]
    assert main(args) == 0
    deleted = set(ids) - ids_in(spark, source)
    assert {ids[70], ids[305]} <= deleted
    after = objects(s3, "events/")
    for key, body in after.items():
        if key.endswith(".parquet"):
            assert not deleted & set(pq.read_table(io.BytesIO(body), columns=["id"]).column("id").to_pylist()), key
        else:
            assert not [i for i in deleted if i.encode() in body], key
    assert not [k for k in after if k.startswith("events/_change_data/") and not k.endswith("/")]  # "/": a folder marker
    manifest = spark.read.format("delta").load(f"{source}_manifest").collect()
    assert {r["id"] for r in manifest} == {hmac_hex(KEY.encode(), i) for i in deleted}
    assert sorted(r["reason"] for r in manifest).count("request") == 2 and len(manifest) == len(deleted) > 2
    assert spark.read.format("delta").load(f"s3a://{BUCKET}/distunlearn_ledger").count() == 2

    verify = ["verify", "--source", source, "--run-id", "s3-purge-1"]
    capsys.readouterr()
    assert main(verify) == 0
    out = capsys.readouterr().out
    assert out.count("PASS") == 4 and " 0 of " in out and "of 0 files" not in out

    # a purged file put back fails the erasure check; a deleted row appended again fails the id check
    purged = sorted(k for k in set(before) - set(after) if k.endswith(".parquet"))
    assert purged
    s3.put_object(Bucket=BUCKET, Key=purged[0], Body=before[purged[0]])
    assert main(verify) == 1
    assert "FAIL purged files gone: 1 of" in capsys.readouterr().out
    s3.delete_object(Bucket=BUCKET, Key=purged[0])
    back = spark.read.format("delta").load(source).limit(1).withColumn("id", F.lit(sorted(deleted)[0])).collect()
    spark.createDataFrame(back, spark.read.format("delta").load(source).schema).write.format("delta") \
        .mode("append").save(source)
    assert main(verify) == 1
    assert "FAIL deleted ids absent: 1 of" in capsys.readouterr().out


def test_verify_exits_non_zero_when_it_cannot_look(spark, s3, tmp_path, capsys):
    assert main(["verify", "--source", f"s3a://{BUCKET}/no-such-table", "--run-id", "x", "--quiet"]) == 1
    assert capsys.readouterr().err.startswith("distunlearn: error:")
    with pytest.raises(StorageUnreadable, match="cannot list"):
        table_files(spark, f"s3a://no-such-bucket-{tmp_path.name.lower()}/t")
    with pytest.raises(StorageUnreadable, match="cannot list"):
        table_files(spark, "nosuchscheme://somewhere/t")
    assert json.dumps(sorted(table_files(spark, str(tmp_path)))) == "[]"     # empty but listable: no error
