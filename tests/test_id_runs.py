"""The runs of increasing ids a scan reports: what proves ids unique without a shuffle."""
from __future__ import annotations

import pyarrow as pa

from distunlearn.udfs.id_runs import MAX_RUNS, IdRuns


def runs_of(*batches, id_type=pa.int64()):
    runs = IdRuns(id_type)
    for batch in batches:
        runs.add(pa.array(batch, id_type))
    return runs.runs


def test_sorted_batches_make_one_run_and_falls_start_new_ones():
    assert runs_of([1, 2, 5], [7, 9]) == [[1, 9]]
    assert runs_of([1, 2, 5], [5, 9]) == [[1, 5], [5, 9]]           # a repeat at a batch edge starts a run
    assert runs_of([4, 5, 1, 2, 2, 3]) == [[4, 5], [1, 2], [2, 3]]  # a repeat inside a batch too
    assert runs_of([3, None, 4], [], [None]) == [[3, 4]]            # null ids are rejected elsewhere


def test_integer_ids_start_a_run_where_they_jump():
    # pieces of two files read one after the other: 1..8 then 101..108 (a jump of 93 steps of 1)
    assert runs_of(list(range(1, 9)) + list(range(101, 109))) == [[1, 8], [101, 108]]
    assert runs_of(list(range(1, 9)), list(range(101, 109))) == [[1, 8], [101, 108]]
    assert runs_of(list(range(0, 800, 100)), [900, 1000]) == [[0, 1000]]     # sparse but even: one run


def test_strings_and_binary_runs_follow_byte_order():
    assert runs_of(["a", "b", "ba", "c"], id_type=pa.string()) == [["a", "c"]]
    # UTF-8 bytes order 'é' (C3 A9) after 'z' (7A), as Spark orders strings
    assert runs_of(["b", "a", "é", "z"], id_type=pa.string()) == [["b", "b"], ["a", "é"], ["z", "z"]]
    assert runs_of([b"\x01", b"\xff", b"\x00"], id_type=pa.binary()) == [[b"\x01", b"\xff"], [b"\x00", b"\x00"]]


def test_too_many_runs_or_an_unordered_type_give_up():
    assert runs_of(list(range(MAX_RUNS + 1, 0, -1))) is None
    assert runs_of(list(range(MAX_RUNS, 0, -1))) is not None
    assert runs_of([1.0, 2.0], id_type=pa.float64()) is None
