"""Shared by the benchmark modules: the repository root on ``sys.path``, constants, logging."""
from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

UNWANTED_PREDICATE = "topic = 'celebrity_gossip'"
WARMUP_ROWS = 20_000


def log(msg: str) -> None:
    print(f"[{dt.datetime.now().strftime('%H:%M:%S')}] {msg}", flush=True)


def run_child(args, mode: str, table: str, rows: int, json_path: Path, extra: list[str], timeout: float) -> dict:
    """``benchmarks/run.py <mode>`` in a fresh process; its JSON result with the process's wall time."""
    import subprocess
    import time

    cmd = [sys.executable, str(Path(__file__).with_name("run.py")), mode, "--table", table, "--rows", str(rows),
           "--json", str(json_path), "--work-dir", str(args.work_dir), *extra]
    log("running " + " ".join(cmd[2:]))
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=str(REPO), timeout=timeout)
    out = json.loads(json_path.read_text()) if json_path.exists() else {}
    out["process_seconds"] = round(time.perf_counter() - start, 2)
    out["returncode"] = proc.returncode
    return out
