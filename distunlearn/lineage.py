"""OpenLineage START / COMPLETE / FAIL events through the openlineage-python client.

On only when the client is configured the client's own way (``OPENLINEAGE_CONFIG``, ``openlineage.yml``,
``OPENLINEAGE_URL`` or ``OPENLINEAGE__...`` variables); events carry dataset versions and a
``distunlearn`` run facet with thresholds, KLs and counts — never a row id.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import uuid
from pathlib import Path

from distunlearn.run_report import RunReport

log = logging.getLogger("distunlearn")
PRODUCER = "https://pypi.org/project/distunlearn"
FACET_KEYS = ("run_id", "rule", "alpha", "epsilon", "kappa", "kl_removal_before", "kl_removal_after",
              "kl_preservation_before", "kl_preservation_after", "n_unwanted", "n_retained", "deleted",
              "deleted_requested", "feasible")


def configured() -> bool:
    if os.environ.get("OPENLINEAGE_DISABLED", "").lower() in ("1", "true"):
        return False
    env = os.environ.get("OPENLINEAGE_CONFIG") or os.environ.get("OPENLINEAGE_URL") or any(
        k.startswith("OPENLINEAGE__") for k in os.environ)
    return bool(env) or Path("openlineage.yml").is_file() or (Path.home() / ".openlineage" / "openlineage.yml").is_file()


def _dataset(cls, path: str, version):
    from openlineage.client.generated.dataset_version_dataset import DatasetVersionDatasetFacet

    if "://" in path:
        namespace, _, name = path.partition("://")
    else:  # an absolute path (as the job resolves every path), or a catalog table's name
        namespace, name = ("file", path) if path.startswith("/") else ("spark_catalog", path)
    facets = {} if version is None else {"version": DatasetVersionDatasetFacet(datasetVersion=str(version))}
    return cls(namespace=namespace, name=name, facets=facets)


class Lineage:
    """Emits the run's events; every method is a no-op when OpenLineage is not configured."""

    def __init__(self, run_id: str, job_name: str = "distunlearn.unlearn"):
        self.client = None
        self.run_id = run_id
        self.job_name = job_name
        self.namespace = os.environ.get("OPENLINEAGE_NAMESPACE", "distunlearn")
        if not configured():
            return
        try:
            from openlineage.client import OpenLineageClient
        except ImportError:
            log.warning("OpenLineage is configured but openlineage-python is not installed: no lineage events")
            return
        self.client = OpenLineageClient()

    @property
    def lineage_run_id(self) -> str:
        """OpenLineage wants a UUID: the run id itself, or a UUID derived from it."""
        try:
            return str(uuid.UUID(self.run_id))
        except ValueError:
            return str(uuid.uuid5(uuid.NAMESPACE_URL, "distunlearn:" + self.run_id))

    def _emit(self, state: str, inputs=(), outputs=(), report: RunReport | None = None, error: str | None = None):
        if self.client is None:
            return
        import attr
        from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
        from openlineage.client.facet_v2 import RunFacet, error_message_run

        @attr.define
        class DistunlearnRunFacet(RunFacet):
            stats: dict = attr.field(factory=dict)

        facets = {}
        if report is not None:
            facets["distunlearn"] = DistunlearnRunFacet(stats={k: getattr(report, k) for k in FACET_KEYS})
        if error is not None:
            facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(message=error, programmingLanguage="python")
        event = RunEvent(
            eventType=getattr(RunState, state), eventTime=dt.datetime.now(dt.timezone.utc).isoformat(),
            run=Run(runId=self.lineage_run_id, facets=facets), job=Job(namespace=self.namespace, name=self.job_name),
            producer=PRODUCER, inputs=[_dataset(InputDataset, p, v) for p, v in inputs],
            outputs=[_dataset(OutputDataset, p, v) for p, v in outputs])
        try:
            self.client.emit(event)
        except Exception as exc:  # noqa: BLE001 - lineage must never fail the purge itself
            log.warning("OpenLineage %s event not sent: %s", state, exc)

    def start(self, source: str):
        self._emit("START", inputs=[(source, None)])

    def complete(self, report: RunReport):
        inputs = [(report.source, report.source_version)]
        written = report.source_version_written if report.in_place else report.output_version
        outputs = [(p, v) for p, v in ((report.output, written), (report.manifest, report.manifest_version)) if p]
        self._emit("COMPLETE", inputs, outputs, report=report)

    def fail(self, source: str, error: str):
        self._emit("FAIL", inputs=[(source, None)], error=error)
