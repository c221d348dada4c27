"""What a failed Delta command says, as one line: Delta's concurrent-modification conflicts (which the edit
retries) with the other writer's operation and version, and storage failures with their cause.

Works on the error text alone (classic PySpark and Spark Connect raise different types for one error).
"""
from __future__ import annotations

import json
import re

_CONFLICT_CLASSES = ("DELTA_CONCURRENT", "DELTA_METADATA_CHANGED", "DELTA_PROTOCOL_CHANGED")
_CONFLICT_NAMES = ("ConcurrentAppendException", "ConcurrentDeleteReadException", "ConcurrentDeleteDeleteException",
                   "ConcurrentTransactionException", "ConcurrentWriteException", "MetadataChangedException",
                   "ProtocolChangedException")
# Causes of a storage failure worth naming, most specific first (Hadoop S3A/ABFS/GCS and the AWS SDK).
_STORAGE_CAUSES = ("ApiCallTimeoutException", "ApiCallAttemptTimeoutException", "SocketTimeoutException",
                   "ConnectTimeoutException", "AccessDeniedException", "AWSBadRequestException",
                   "NoSuchBucketException", "UnknownHostException", "ConnectException", "AbfsRestOperationException",
                   "FileNotFoundException")
_CAUSE = re.compile(r"(?:^|\n)(?:Caused by: |: )?((?:[\w$]+\.)+(\w+(?:Exception|Error))): ?([^\n]*)")


def error_text(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def is_conflict(exc: BaseException) -> bool:
    """Whether ``exc`` is Delta's concurrent-modification error (another writer committed first)."""
    condition = getattr(exc, "getCondition", getattr(exc, "getErrorClass", lambda: None))() or ""
    if condition.startswith(_CONFLICT_CLASSES):
        return True
    head = error_text(exc)[:600]
    return any(c in head for c in _CONFLICT_CLASSES) or any(n in head for n in _CONFLICT_NAMES)


def conflict_line(exc: BaseException, version: int | None = None) -> str:
    """The conflict's kind and the other writer's commit: operation, version (Delta's, else ``version``)
    and engine."""
    text = error_text(exc)
    kind = next((n for n in _CONFLICT_NAMES if n in text), "a concurrent commit")
    other = conflicting_commit(exc)
    if not other:
        return kind
    parts = [other.get("operation") or "an unknown operation"]
    if other.get("version", version) is not None:
        parts.append(f"version {other.get('version', version)}")
    engine = other.get("engineInfo") or other.get("clientVersion")
    if engine:
        parts.append(f"by {engine}")
    return f"{kind} with {', '.join(parts)}"


def conflicting_commit(exc: BaseException) -> dict | None:
    """The other writer's commitInfo, which Delta prints after ``Conflicting commit:`` (its JSON may not
    parse, ``{"mode":Append}``: then the fields are read one by one); None when the error names none."""
    text = error_text(exc)
    match = re.search(r"Conflicting commit: (\{.*)", text)
    if not match:
        return None
    blob = match.group(1)
    try:
        return json.loads(blob)
    except ValueError:
        fields = {}
        for key in ("operation", "engineInfo", "clientVersion"):
            found = re.search(rf'"{key}":"([^"]*)"', blob)
            if found:
                fields[key] = found.group(1)
        for key in ("version", "timestamp"):
            found = re.search(rf'"{key}":(\d+)', blob)
            if found:
                fields[key] = int(found.group(1))
        return fields


def root_cause(exc: BaseException) -> str:
    """One line that says what failed: a named storage cause if there is one, else the deepest Java
    exception of a JVM error (never ``An error occurred while calling oNNN.sql``), else the first line."""
    text = error_text(exc).strip()
    causes = [(m.group(2), m.group(3).strip()) for m in _CAUSE.finditer(text)]
    for name in _STORAGE_CAUSES:
        for short, message in causes:
            if short == name:
                return f"{short}: {message}" if message else short
    first = text.splitlines()[0] if text else type(exc).__name__
    if first.startswith("An error occurred while calling") and causes:
        short, message = causes[-1]
        return f"{short}: {message}" if message else short
    return first


def is_storage_failure(exc: BaseException) -> bool:
    text = error_text(exc)
    return any(name in text for name in _STORAGE_CAUSES)
