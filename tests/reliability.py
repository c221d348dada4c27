"""The reliability summary (``docs/reliability.md``), written by the test suite itself when asked
(``make reliability`` sets ``DISTUNLEARN_RELIABILITY_REPORT``), so that ``make test`` leaves the checkout as it was.

Tests that try bad input or inject a fault carry ``@pytest.mark.reliability(CATEGORY)`` and call
``record(case, outcome, rows_checked=..., rows_lost=...)`` once per input tried or fault injected, with
``rows_lost`` measured from the row sets the test compares (never a constant). At the end of a session
the summary is written only if the run covered every category (every marked test collected, none
deselected) and every marked test passed having recorded its cases; any narrower run (one file, ``-k``,
``-m``) leaves the file alone.
"""
from __future__ import annotations

import datetime as dt
import os
import platform
import re
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OUTPUT = Path(os.environ["DISTUNLEARN_RELIABILITY_REPORT"]) if os.environ.get("DISTUNLEARN_RELIABILITY_REPORT") \
    else None

# category -> (kind of case, what one case is)
CATEGORIES = {
    "bad input": ("input", "invalid input or flags: exit 1 (or 2, infeasible) with one line, nothing written"),
    "hostile input": ("input", "valid but degenerate input: the brute-force answer, the edited table exactly "
                               "the source minus it"),
    "driver kill": ("fault", "a driver crash mid-run, then a rerun with the same run id: one run SIGKILLed "
                             "(whole process group, JVM included) at its last point, and frozen (SIGSTOP) at the "
                             "earlier ones to copy the files a SIGKILL would leave there"),
    "worker kill": ("fault", "SIGKILL of a Python worker mid-task; Spark retries the task"),
    "concurrent writer": ("fault", "another writer commits to the source while the job plans"),
    "cluster": ("environment", "spark-submit to a standalone master and two workers, package only in "
                               "--py-files, compared with local mode"),
}


@dataclass
class Case:
    category: str
    test: str
    case: str
    outcome: str
    rows_checked: int
    rows_lost: int


@dataclass
class ReliabilityLog:
    """The pytest plugin: marked tests collected, cases recorded, and the summary at session end."""

    config: pytest.Config
    marked: dict[str, str] = field(default_factory=dict)        # nodeid -> category
    deselected: int = 0
    collected: int = 0
    passed: set[str] = field(default_factory=set)
    cases: list[Case] = field(default_factory=list)
    current: pytest.Item | None = None
    started: float = field(default_factory=time.monotonic)

    # -------------------------------------------------------------- hooks

    def pytest_deselected(self, items):
        self.deselected += sum(1 for item in items if item.get_closest_marker("reliability"))

    def pytest_collection_finish(self, session):
        self.collected = len(session.items)
        for item in session.items:
            marker = item.get_closest_marker("reliability")
            if marker:
                category = marker.args[0]
                if category not in CATEGORIES:
                    raise pytest.UsageError(f"{item.nodeid}: unknown reliability category {category!r}")
                self.marked[item.nodeid] = category

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item):
        self.current, before = item, len(self.cases)
        try:
            result = yield
        finally:
            self.current = None
        if item.nodeid in self.marked and len(self.cases) == before:
            raise AssertionError(f"{item.nodeid} is marked reliability but recorded no case")
        return result

    def pytest_runtest_logreport(self, report):
        if report.nodeid in self.marked and report.when == "call" and report.passed:
            self.passed.add(report.nodeid)

    def pytest_sessionfinish(self, session, exitstatus):
        missing = set(CATEGORIES) - set(self.marked.values())
        if OUTPUT is None or missing or self.deselected or not self.marked:
            return                                          # a partial run: leave the summary alone
        failed = sorted(set(self.marked) - self.passed)
        lost = [c for c in self.cases if c.rows_lost]
        if failed or lost:
            self._say(f"{OUTPUT} not written: {len(failed)} reliability test(s) did not pass, "
                      f"{len(lost)} case(s) lost rows")
            return
        OUTPUT.parent.mkdir(parents=True, exist_ok=True)
        OUTPUT.write_text(self.markdown(time.monotonic() - self.started))
        self._say(f"{OUTPUT} written: {len(self.cases)} cases, rows lost 0")

    def _say(self, line: str) -> None:
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(line)

    # -------------------------------------------------------------- recording

    def record(self, case: str | None, outcome: str, rows_checked: int, rows_lost: int) -> None:
        item = self.current
        if item is None or item.nodeid not in self.marked:
            raise RuntimeError("reliability.record() called outside a test marked @pytest.mark.reliability")
        if case is None:                                    # the parameter id, else the test's name
            callspec = getattr(item, "callspec", None)
            case = callspec.id if callspec else item.originalname.removeprefix("test_").replace("_", " ")
        self.cases.append(Case(self.marked[item.nodeid], item.nodeid, case, outcome, int(rows_checked),
                               int(rows_lost)))

    # -------------------------------------------------------------- the summary

    def markdown(self, seconds: float) -> str:
        now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        by_category = {c: [case for case in self.cases if case.category == c] for c in CATEGORIES}
        kinds = Counter()
        for category, cases in by_category.items():
            kinds[CATEGORIES[category][0]] += len(cases)
        total_lost = sum(c.rows_lost for c in self.cases)
        lines = [
            "# Reliability summary",
            "",
            "Generated by the test suite (`tests/reliability.py`) at the end of a full `make test` run; "
            "do not edit by hand. Every number below is counted from cases the tests ran, and *rows lost* "
            "is measured by each test from the row sets it compares (the source before and after a rejected "
            "run; the edited table against the brute-force answer, an uninterrupted run or local mode).",
            "",
            f"- generated: {now}; {len(self.marked)} reliability tests among {self.collected} tests run; "
            f"session time {seconds / 60:.1f} min",
            f"- versions: {versions()}",
            "",
            f"**{kinds['input']} bad or hostile inputs tried, {kinds['fault']} faults injected, "
            f"{kinds['environment']} cluster run{'s' if kinds['environment'] != 1 else ''}; rows lost: {total_lost}.**",
            "",
            "| category | what one case is | cases | rows checked | rows lost |",
            "|---|---|---:|---:|---:|",
        ]
        for category, cases in by_category.items():
            lines.append(f"| {category} | {CATEGORIES[category][1]} | {len(cases)} | "
                         f"{sum(c.rows_checked for c in cases):,} | {sum(c.rows_lost for c in cases)} |")
        lines += [f"| **total** | | **{len(self.cases)}** | **{sum(c.rows_checked for c in self.cases):,}** | "
                  f"**{total_lost}** |", "", "## Cases", ""]
        for category, cases in by_category.items():
            lines += [f"### {category}", "", "| case | outcome | rows checked | rows lost | test |",
                      "|---|---|---:|---:|---|"]
            for c in cases:
                lines.append(f"| {_cell(c.case)} | {_cell(c.outcome)} | {c.rows_checked:,} | {c.rows_lost} | "
                             f"`{c.test.split('::', 1)[-1]}` |")
            lines.append("")
        return "\n".join(lines)


TMP_PATH = re.compile(r"\S*/pytest-of-[^/\s]+/pytest-\d+/[^/\s]+")


def _cell(text: str) -> str:
    """A table cell: one line, pipes escaped, the run's temporary folders shown as ``<tmp>``."""
    return TMP_PATH.sub("<tmp>", text).replace("|", "\\|").replace("\n", " ")


def versions() -> str:
    parts = [f"Python {platform.python_version()}"]
    for dist in ("distunlearn", "pyspark", "delta-spark", "numpy", "pandas", "pyarrow", "deltalake"):
        try:
            parts.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            pass
    try:
        java = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=30).stderr
        parts.append(java.splitlines()[0].replace('"', ""))
    except (OSError, IndexError, subprocess.SubprocessError):
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                text=True, timeout=30).stdout.strip()
        if commit:
            parts.append(f"commit {commit}")
    except (OSError, subprocess.SubprocessError):
        pass
    return ", ".join(parts)


_LOG: ReliabilityLog | None = None


def install(config: pytest.Config) -> None:
    global _LOG
    _LOG = ReliabilityLog(config)
    config.pluginmanager.register(_LOG, "distunlearn-reliability")


def record(case: str | None, outcome: str, *, rows_checked: int, rows_lost: int) -> None:
    """One input tried or fault injected by the running test (``case`` None: named after the test or its
    parameters), with how many rows it compared and how many of them it found missing."""
    if _LOG is None:
        raise RuntimeError("the reliability plugin is not installed (tests/conftest.py)")
    _LOG.record(case, outcome, rows_checked, rows_lost)
