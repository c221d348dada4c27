"""Errors the job reports to users as one line, each with its exit code."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from distunlearn.run_report import RunReport


class DistunlearnError(Exception):
    """Bad input or a failed precondition; the job stops before writing anything."""

    exit_code = 1


class InfeasibleError(DistunlearnError):
    """No deletion set of the evaluated rules meets both thresholds; ``report`` says how close each got."""

    exit_code = 2

    def __init__(self, message: str, report: RunReport | None = None):
        super().__init__(message)
        self.report = report


class ConflictError(DistunlearnError):
    """Delta reported a conflict with another writer at every try of the edit; nothing of the run committed."""

    exit_code = 3
