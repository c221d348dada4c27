"""The ``embed`` command: a new Delta table holding a source's rows plus an all-MiniLM-L6-v2 embedding
of their text, for sources that hold raw text rather than vectors.

An optional extra (onnxruntime, tokenizers and the two model packages, see ``udfs/embedding.py``),
needed on the driver and on every executor. Spark is imported only when a command runs, so that
the console command's parser stays cheap to build.
"""
from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING

from distunlearn.errors import DistunlearnError, ParameterError
from distunlearn.progress import phase

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

# About 6 ms per text per core: spread the texts over tasks of this many rows, whatever the source's file layout.
ROWS_PER_TASK = 1024


def add_embedding(df: DataFrame, text_col: str, vector_col: str = "embedding") -> DataFrame:
    """``df`` plus ``vector_col``: the unit-norm 384-d embedding of the string column ``text_col`` as
    ``array<float>``. Lazy; a null text fails its task (``embed_table`` checks for nulls first)."""
    from distunlearn.spark.source import col
    from distunlearn.udfs.embedding import embedding_udf

    _check_columns(df, text_col, vector_col)
    return df.withColumn(vector_col, embedding_udf()(col(text_col)))


def _check_columns(df: DataFrame, text_col: str, vector_col: str) -> None:
    from pyspark.sql.types import StringType

    if text_col not in df.columns:
        raise DistunlearnError(f"text column {text_col!r} not in the source (columns: {', '.join(df.columns)})")
    if not isinstance(df.schema[text_col].dataType, StringType):
        raise DistunlearnError(f"text column {text_col!r} has type {df.schema[text_col].dataType.simpleString()}; "
                               "expected string")
    if vector_col in df.columns:
        raise ParameterError(f"vector column {vector_col!r} already in the source; choose another {{vector_col}}",
                             "vector_col")


def embed_table(spark: SparkSession, source: str, text_col: str, output: str, vector_col: str = "embedding",
                format: str = "delta") -> int:
    """Write ``output``, a new Delta table of every row and column of ``source`` plus ``vector_col``;
    return its row count.

    Nothing is written when the output already holds data, a column is wrong, or any text is null:
    a null text has no embedding, and a made-up one (that of "") would enter the domain statistics
    of a later unlearn run, so the user filters or fills those rows first.
    """
    from pyspark.sql import functions as F

    from distunlearn.spark.delta_writer import check_targets
    from distunlearn.spark.source import Source, col
    from distunlearn.spark.table import TableRef

    target = TableRef.parse(output)
    check_targets(spark, TableRef.parse(source), target, None, None)
    with phase("read source") as done:
        df = Source.read(spark, source, format).df
        _check_columns(df, text_col, vector_col)
        rows, nulls = df.agg(F.count(F.lit(1)), F.count_if(col(text_col).isNull())).first()
        done["rows"] = f"{rows:,}"
    if nulls:
        raise DistunlearnError(f"{nulls:,} of {rows:,} rows have a null {text_col!r}, which has no embedding; "
                               "filter or fill them first")
    tasks = max(1, -(-rows // ROWS_PER_TASK))
    with phase("embed and write") as done:
        start = time.perf_counter()
        target.save(add_embedding(df.repartition(tasks), text_col, vector_col), "error")
        done["rows"] = f"{rows:,}"
        done["texts/s"] = f"{rows / (time.perf_counter() - start):,.0f}"
    return rows


def add_embed_parser(subparsers) -> argparse.ArgumentParser:
    """The ``embed`` subcommand and its flags."""
    p = subparsers.add_parser("embed", help="add a sentence embedding of a text column (new Delta table)")
    p.add_argument("--source", required=True, help="Delta/Parquet path or catalog table name")
    p.add_argument("--format", choices=("delta", "parquet"), default="delta", help="source format (default delta)")
    p.add_argument("--text-col", default="text", help="string column to embed (default text)")
    p.add_argument("--vector-col", default="embedding", help="new array<float> column (default embedding)")
    p.add_argument("--output", required=True, help="path or catalog name of the new Delta table (must not exist)")
    from distunlearn.arguments import add_session_arguments

    add_session_arguments(p)
    return p


def run_embed(args: argparse.Namespace) -> int:
    """Run ``embed`` and print one summary line; exit code 0 (errors raise ``DistunlearnError``)."""
    from distunlearn.cli import session, spark_conf
    from distunlearn.udfs.embedding import DIM

    rows = embed_table(session(args, spark_conf(args)), args.source, args.text_col, args.output,
                       args.vector_col, args.format)
    print(f"embedded {rows:,} rows of {args.source} into {args.output} (column {args.vector_col}, {DIM} floats)")
    return 0
