"""Zero-copy conversion of Arrow list columns to numpy matrices."""
from __future__ import annotations

import numpy as np
import pyarrow as pa


def list_lengths(column: pa.Array) -> np.ndarray:
    """Length of each list; -1 for a null list."""
    return column.value_lengths().fill_null(-1).to_numpy(zero_copy_only=False)


def to_matrix(column: pa.Array, dim: int, dtype=np.float64) -> np.ndarray:
    """Rows of a list<float|double> column of equal length ``dim`` as an (n, dim) ``dtype`` matrix (None:
    as stored, float32 or float64).

    Reshapes the flat child buffer instead of building one numpy object per row; null elements
    become NaN.
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    flat = column.flatten().to_numpy(zero_copy_only=False)
    return (flat if dtype is None else np.asarray(flat, dtype=dtype)).reshape(len(column), dim)


def from_matrix(matrix: np.ndarray) -> pa.Array:
    """An (n, d) matrix as a list<double> column."""
    n, d = matrix.shape
    offsets = np.arange(0, (n + 1) * d, d, dtype=np.int32) if n else np.zeros(1, dtype=np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(np.ascontiguousarray(matrix, dtype=np.float64).ravel()))
