"""Runs of strictly increasing ids, the cheap half of the duplicate-id check.

A partition's ids, in the order it reads them, split into runs that strictly increase. No id repeats
inside a run, so when every run of every partition covers an id range that no other run's range meets,
the ids are unique, proven without a shuffle. Tables written in id order (one run per file, in most
lakehouse tables) pass that way; when a partition has too many runs or ids of a type without an order
Spark and Arrow agree on, its scan says so and the caller counts ids by a shuffle instead.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Runs a partition may report before it gives up (the ranges of all partitions meet in one aggregate).
MAX_RUNS = 64
# Integer ids also start a new run where they jump by more than this many times the batch's median step:
# a partition reads pieces of several files one after the other, and a run spanning two pieces would
# cover the ids of the pieces other partitions read in between.
JUMP = 64


def variable_width(dtype: pa.DataType) -> bool:
    """Whether ids of this Arrow type are as long as their values (strings, binary)."""
    return pa.types.is_string(dtype) or pa.types.is_binary(dtype) or pa.types.is_large_string(dtype) \
        or pa.types.is_large_binary(dtype)


def orderable(dtype: pa.DataType) -> bool:
    """Id types that Spark and Arrow (and Python) order the same way: integers, strings and binary,
    the last two byte by byte."""
    return pa.types.is_integer(dtype) or variable_width(dtype)


class IdRuns:
    """The (first, last) id of each run of strictly increasing ids, over a partition's batches; ``runs``
    None once the partition gave up (too many runs, or an id type without a shared order)."""

    def __init__(self, id_type: pa.DataType):
        self.runs: list[list] | None = [] if orderable(id_type) else None

    def add(self, ids: pa.Array) -> None:
        if self.runs is None:
            return
        ids = ids.drop_null()   # null ids are rejected on their own
        n = len(ids)
        if n == 0:
            return
        falls = pc.less_equal(ids.slice(1), ids.slice(0, n - 1)).to_numpy(zero_copy_only=False) if n > 1 \
            else np.zeros(0, dtype=bool)
        gap = None
        if pa.types.is_integer(ids.type) and n > 1:
            steps = np.diff(ids.to_numpy().astype(np.float64))
            positive = steps[steps > 0]
            if len(positive):
                gap = JUMP * float(np.median(positive))
                falls = falls | (steps > gap)
        starts = [0, *(np.flatnonzero(falls) + 1).tolist()]
        ends = [*starts[1:], n]
        for start, end in zip(starts, ends):
            first, last = ids[start].as_py(), ids[end - 1].as_py()
            goes_on = self.runs and self.runs[-1][1] < first and (gap is None or first - self.runs[-1][1] <= gap)
            if start == 0 and goes_on:
                self.runs[-1][1] = last   # the batch goes on with the run the last batch ended
            else:
                self.runs.append([first, last])
        if len(self.runs) > MAX_RUNS:
            self.runs = None
