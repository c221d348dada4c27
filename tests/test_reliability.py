"""The reliability summary plugin (``tests/reliability.py``) on made-up cases: what it counts, and that a
partial or failing run leaves ``docs/reliability.md`` alone."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

import reliability
from reliability import CATEGORIES, Case, ReliabilityLog


def complete_log(rows_lost: int = 0) -> ReliabilityLog:
    log = ReliabilityLog(config=SimpleNamespace(pluginmanager=SimpleNamespace(get_plugin=lambda name: None)))
    for i, category in enumerate(CATEGORIES):
        node = f"tests/test_x.py::test_{i}"
        log.marked[node] = category
        log.passed.add(node)
        log.cases.append(Case(category, node, f"case {i}", "exit 1: source not found: "
                              "/tmp/pytest-of-me/pytest-7/test_x0/missing", rows_checked=10, rows_lost=0))
    log.cases[-1].rows_lost = rows_lost
    log.collected = 9
    return log


def finish(log: ReliabilityLog, tmp_path, monkeypatch):
    out = tmp_path / "reliability.md"
    monkeypatch.setattr(reliability, "OUTPUT", out)
    log.pytest_sessionfinish(session=None, exitstatus=0)
    return out


def test_summary_counts_inputs_faults_and_rows(tmp_path, monkeypatch):
    out = finish(complete_log(), tmp_path, monkeypatch)
    text = out.read_text()
    inputs = sum(kind == "input" for kind, _ in CATEGORIES.values())
    faults = sum(kind == "fault" for kind, _ in CATEGORIES.values())
    assert f"**{inputs} bad or hostile inputs tried, {faults} faults injected, 1 cluster run; rows lost: 0.**" in text
    assert f"| **total** | | **{len(CATEGORIES)}** | **{10 * len(CATEGORIES)}** | **0** |" in text
    assert "<tmp>/missing" in text and "pytest-of-me" not in text


@pytest.mark.parametrize("change", ["category-missing", "deselected", "failed", "rows-lost"])
def test_partial_or_failing_run_writes_nothing(tmp_path, monkeypatch, change):
    log = complete_log(rows_lost=1 if change == "rows-lost" else 0)
    if change == "category-missing":
        node = next(n for n, c in log.marked.items() if c == "cluster")
        del log.marked[node]
    elif change == "deselected":
        log.deselected = 1
    elif change == "failed":
        log.passed.pop()
    assert not finish(log, tmp_path, monkeypatch).exists()


def test_record_outside_a_marked_test_is_an_error():
    with pytest.raises(RuntimeError, match="outside a test marked"):
        reliability.record("x", "y", rows_checked=0, rows_lost=0)
