"""The benchmark's Delta tables: generated chunk by chunk from ``distunlearn.synthetic``, reused when present."""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from common import log

CHUNK_ROWS = 131_072          # generator chunk at 64 dims: 131072 x 64 float64 = 64 MiB per matrix
FILE_BYTES = 64 * 1024 * 1024  # target Parquet file size of the generated tables
ROW_GROUP_ROWS = 32_768        # at 64 dims, so that Spark can split every file
SHIFT = 0.5                    # distance between the domain means (as gaussian_domains' default)


def chunk_rows(dims: int, rows_at_64: int = CHUNK_ROWS) -> int:
    """Rows per chunk (or row group) holding as many values as ``rows_at_64`` rows of 64 dims."""
    return max(1024, rows_at_64 * 64 // dims)


def table_files(path: str) -> list[str]:
    """Absolute local paths of the live data files of the Delta table at ``path``."""
    import deltalake

    return [u[len("file://"):] if u.startswith("file://") else u for u in deltalake.DeltaTable(path).file_uris()]


def table_bytes(path: str) -> int:
    return sum(os.path.getsize(f) for f in table_files(path))


def _batches(rows: int, dims: int, unwanted_fraction: float, seed: int):
    """Record batches (id long, topic string, embedding list<float>), one chunk each.

    Each chunk comes from ``distunlearn.synthetic.gaussian_domains`` (own seed per chunk, shift 0, so
    every chunk is centred at 0 with a near-identity correlated covariance); the unwanted rows get the
    same mean shift of norm ``SHIFT`` along (1, ..., 1)/sqrt(d) in every chunk.
    """
    import numpy as np
    import pyarrow as pa

    from distunlearn.synthetic import RETAINED_TOPICS, UNWANTED_TOPIC, gaussian_domains

    n_unwanted_total = int(round(rows * unwanted_fraction))
    done_rows, done_unwanted, chunk = 0, 0, 0
    while done_rows < rows:
        n = min(chunk_rows(dims), rows - done_rows)
        n_u = min(n, int(round((done_rows + n) * unwanted_fraction)) - done_unwanted)
        n_u = min(n_u, n_unwanted_total - done_unwanted)
        unwanted, retained = gaussian_domains(n_u, n - n_u, dims, shift=0.0, seed=seed + chunk)
        unwanted += SHIFT / np.sqrt(dims)
        rng = np.random.default_rng(10_000 + seed + chunk)
        x = np.vstack([unwanted, retained]).astype(np.float32)
        topics = np.concatenate([np.full(n_u, UNWANTED_TOPIC, dtype=object),
                                 rng.choice(np.array(RETAINED_TOPICS, dtype=object), n - n_u)])
        order = rng.permutation(n)
        ids = np.arange(done_rows + 1, done_rows + n + 1, dtype=np.int64)
        embedding = pa.FixedSizeListArray.from_arrays(pa.array(x[order].ravel()), dims).cast(pa.list_(pa.float32()))
        yield pa.RecordBatch.from_arrays([pa.array(ids), pa.array(topics[order], pa.string()), embedding],
                                         schema=_schema())
        done_rows, done_unwanted, chunk = done_rows + n, done_unwanted + n_u, chunk + 1


def _schema():
    import pyarrow as pa

    return pa.schema([("id", pa.int64()), ("topic", pa.string()), ("embedding", pa.list_(pa.float32()))])


def _write_streamed(path: Path, batches, dims: int) -> None:
    """deltalake streams the batches into ~64 MiB files (only one chunk is ever in memory)."""
    import deltalake
    import pyarrow as pa

    reader = pa.RecordBatchReader.from_batches(_schema(), batches)
    deltalake.write_deltalake(str(path), reader, mode="error", target_file_size=FILE_BYTES,
                              writer_properties=deltalake.WriterProperties(
                                  max_row_group_size=chunk_rows(dims, ROW_GROUP_ROWS), compression="SNAPPY"))


def _write_many_files(path: Path, batches, rows_per_file: int) -> None:
    """One small Parquet file per ``rows_per_file`` rows, then one Delta commit adding them all
    (``deltalake.convert_to_deltalake``)."""
    import deltalake
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.mkdir(parents=True)
    n = 0
    for batch in batches:
        table = pa.Table.from_batches([batch])
        for start in range(0, len(table), rows_per_file):
            pq.write_table(table.slice(start, rows_per_file), path / f"part-{n:06d}.snappy.parquet",
                           compression="snappy")
            n += 1
    deltalake.convert_to_deltalake(str(path))


def generate_table(path: Path, rows: int, dims: int, unwanted_fraction: float, seed: int,
                   rows_per_file: int | None = None) -> dict:
    """A Delta table (id long, topic string, embedding array<float>): ~64 MiB files, or, with
    ``rows_per_file``, many small files."""
    start = time.perf_counter()
    batches = _batches(rows, dims, unwanted_fraction, seed)
    if rows_per_file:
        _write_many_files(path, batches, rows_per_file)
    else:
        _write_streamed(path, batches, dims)
    files = table_files(str(path))
    meta = {"path": str(path), "rows": rows, "dims": dims, "unwanted_fraction": unwanted_fraction,
            "unwanted_rows": int(round(rows * unwanted_fraction)), "seed": seed, "rows_per_file": rows_per_file,
            "files": len(files), "bytes": sum(os.path.getsize(f) for f in files),
            "seconds": round(time.perf_counter() - start, 2)}
    (path / "_benchmark.json").write_text(json.dumps(meta))
    return meta


def ensure_table(path: Path, rows: int, dims: int, unwanted_fraction: float, seed: int,
                 rows_per_file: int | None = None) -> dict:
    """The table at ``path`` if it was generated with these parameters, else a new one there."""
    meta_file = path / "_benchmark.json"
    if meta_file.exists():
        meta = json.loads(meta_file.read_text())
        if (meta["rows"], meta["dims"], meta["unwanted_fraction"], meta["seed"], meta.get("rows_per_file")) == \
                (rows, dims, unwanted_fraction, seed, rows_per_file):
            log(f"reusing {path} ({rows:,} rows)")
            return {**meta, "reused": True}
    if path.exists():
        shutil.rmtree(path)
    log(f"generating {path}: {rows:,} x {dims}" + (f" in files of {rows_per_file} rows" if rows_per_file else "")
        + " ...")
    meta = generate_table(path, rows, dims, unwanted_fraction, seed, rows_per_file)
    log(f"generated {meta['files']} files, {meta['bytes'] / 2**20:.0f} MiB in {meta['seconds']} s")
    return meta


def table_path(work_dir: Path, rows: int, dims: int, unwanted_fraction: float, seed: int,
               rows_per_file: int | None = None) -> Path:
    suffix = f"_files{rows_per_file}" if rows_per_file else ""
    return work_dir / f"events_{rows}x{dims}_{unwanted_fraction}_{seed}{suffix}"
