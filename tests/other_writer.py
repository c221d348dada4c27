"""Another writer of a Delta table, in a process of its own, through the ``deltalake`` package (no Spark).

    python other_writer.py TABLE serve                     # one command a line on stdin, one JSON line back
    python other_writer.py TABLE loop EVERY COUNT PREFIX   # COUNT appends of one row, EVERY seconds apart

``serve`` takes ``append ID[,ID...]`` (one row per id, in one commit) and ``optimize`` (compaction), and
answers ``{"version": N}`` once the commit is in the log; ``quit`` ends it. ``loop`` prints each version
it committed. Rows have the test tables' columns (id, topic, payload, embedding). Appends are marked as
blind (``isBlindAppend``), as a streaming writer's are.
"""
from __future__ import annotations

import json
import sys
import time

import deltalake
import pyarrow as pa

BLIND = deltalake.CommitProperties(custom_metadata={"isBlindAppend": True})


def rows(ids: list[str]) -> pa.Table:
    return pa.table({"id": pa.array(ids, pa.string()), "topic": pa.array(["retained"] * len(ids), pa.string()),
                     "payload": pa.array(["appended"] * len(ids), pa.string()),
                     "embedding": pa.array([[0.0, 0.0, 0.0, 0.0]] * len(ids), pa.list_(pa.float32()))})


def append(path: str, ids: list[str]) -> int:
    deltalake.write_deltalake(path, rows(ids), mode="append", commit_properties=BLIND)
    return deltalake.DeltaTable(path).version()


def optimize(path: str) -> int:
    table = deltalake.DeltaTable(path)
    table.optimize.compact()
    return deltalake.DeltaTable(path).version()


def serve(path: str) -> None:
    for line in sys.stdin:
        command, _, arg = line.strip().partition(" ")
        if command == "quit":
            return
        version = append(path, arg.split(",")) if command == "append" else optimize(path)
        print(json.dumps({"version": version}), flush=True)


def loop(path: str, every: float, count: int, prefix: str) -> None:
    for k in range(count):
        print(json.dumps({"version": append(path, [f"{prefix}-{k}"]), "id": f"{prefix}-{k}"}), flush=True)
        time.sleep(every)


if __name__ == "__main__":
    table, mode = sys.argv[1], sys.argv[2]
    if mode == "serve":
        serve(table)
    else:
        loop(table, float(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
