"""Per-phase progress lines on the ``distunlearn`` logger (stderr in the console command)."""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager

log = logging.getLogger("distunlearn")


@contextmanager
def phase(name: str):
    """Log the start and end of a phase; the caller may add a detail (e.g. row counts) to the end line."""
    start = time.perf_counter()
    log.info("%s ...", name)
    detail: dict = {}
    yield detail
    extra = ", ".join(f"{k} {v}" for k, v in detail.items())
    log.info("%s done in %.1f s%s", name, time.perf_counter() - start, f" ({extra})" if extra else "")
