"""The run report's schema: round trip, the previous format (the fixture, written by the release before
``schema_version``) and the one-line error for a version this release cannot read. No Spark."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from distunlearn.errors import DistunlearnError
from distunlearn.report import summary
from distunlearn.run_report import SCHEMA_VERSION, Purge, RunReport

FIXTURE = Path(__file__).parent / "fixtures" / "report_v1_in_place_purge.json"


def old_report(lake: str = "/lake") -> dict:
    """The report a real in-place purge wrote before ``schema_version`` existed, its folder set to ``lake``."""
    return json.loads(FIXTURE.read_text().replace("{lake}", lake))


def test_the_previous_format_reads_as_version_1_with_every_figure():
    data = old_report()
    assert "schema_version" not in data and "kl_contract" in data
    report = RunReport.from_dict(data)
    assert (report.run_id, report.rule, report.deleted, report.deleted_requested) == \
        (data["run_id"], data["rule"], data["deleted"], data["deleted_requested"])
    assert report.rules["likelihood_ratio"].deleted == data["rules"]["likelihood_ratio"]["deleted"]
    assert report.domains.unwanted == data["domains"]["unwanted"] and report.requests == "/lake/requests"
    assert report.requests_read.keys == data["requests_read"]["keys"]
    assert [c.version for c in report.commits] == [c["version"] for c in data["commits"]]
    assert report.purge.retention_applied() == "0 h from RETAIN" and report.purge.reorg_version is None
    assert report.removed_files == data["removed_files"] and report.manifest == "/lake/events_manifest"
    assert "purge: VACUUM (retain 0 h from RETAIN)" in summary(report)


def test_to_dict_writes_the_version_and_from_dict_reads_it_back():
    report = RunReport.from_dict(old_report())
    written = json.loads(json.dumps(report.to_dict()))
    assert written["schema_version"] == SCHEMA_VERSION and "kl_contract" not in written
    assert RunReport.from_dict(written) == report


def test_a_dataframe_of_requests_in_the_previous_format_is_no_location():
    report = RunReport.from_dict({**old_report(), "requests": "<DataFrame>"})
    assert report.requests is None and report.requests_read is not None
    assert "deletion requests: 2 rows" in summary(report)


@pytest.mark.parametrize("version", [SCHEMA_VERSION + 1, 0, "2"])
def test_a_version_this_release_cannot_read_is_one_line_naming_it(version):
    with pytest.raises(DistunlearnError) as exc:
        RunReport.from_dict({**old_report(), "schema_version": version})
    message = str(exc.value)
    assert "\n" not in message and f"schema version {version}" in message
    assert f"reads versions 1 to {SCHEMA_VERSION}" in message


def test_an_erasure_run_or_a_report_missing_a_figure_is_one_line():
    with pytest.raises(DistunlearnError, match="erasure run, not an unlearn run"):
        RunReport.from_dict({"kind": "erasure", "run_id": "e-1", "tables": {}})
    data = old_report()
    del data["alpha"], data["domains"]
    with pytest.raises(DistunlearnError, match="report lacks alpha, domains$"):
        RunReport.from_dict(data)


def test_a_purge_recorded_before_the_applied_retention_shows_the_one_asked_for():
    assert Purge.from_dict({"retention_hours": 12, "vacuum": {}}).retention_applied() == "12 h"
    assert Purge.from_dict({}).retention_applied() == "?"
