"""distunlearn benchmark: the job against plain Spark scans and single-process numpy runs on the same files.

    .venv/bin/python benchmarks/run.py [--rows 1000000] [--dims 64] [--unwanted-fraction 0.1]
                                       [--scale-rows 4000000] [--out docs/benchmarks] [--quick]
                                       [--dims-cases 384:200000,1536:50000] [--partitions-cases 1536:2000,64:2000]
                                       [--selection-case 4000000:0.8]

The parent process generates the Delta tables (in chunks), then runs one fresh worker process per
table, so every table gets its own Spark JVM and its own memory figures:

* ``--worker`` (``worker.py``): a Spark session, a warm-up on a tiny table, then the job's plan
  (``dry_run``), the plain Spark scans and the job's applies; per measurement its wall time, the job's
  own phases (``distunlearn.job.phase`` wrapped at run time), Spark metrics per phase, bytes read from
  the table's files and sampled memory (``measure.py``).
* ``--numpy-worker`` and ``--lean-numpy-worker`` (``baselines.py``): the same algorithm in one Python
  process over the same Parquet files, started by the Spark worker after each of the plan's repeats.
* ``--cluster-measure``: the plan again at both sizes on a standalone cluster on this machine.
* the cases: plans at larger dims, over thousands of small files (not coalesced), and with many
  unwanted rows, each in its own worker.

Writes ``<out>/results.json`` and ``<out>/results.md`` (``verdicts.py``, ``report.py``). See
``benchmarks/README.md``.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling modules, also under ``python -m``

from common import REPO, UNWANTED_PREDICATE, WARMUP_ROWS, log, run_child  # noqa: E402
from data import FILE_BYTES, ROW_GROUP_ROWS, SHIFT, ensure_table, table_path  # noqa: E402
from measure import peak_rss_mib  # noqa: E402
from report import render_markdown  # noqa: E402
from verdicts import TARGETS, verdicts  # noqa: E402

FULL_CASES = {"dims_cases": "384:200000,1536:50000", "partitions_cases": "1536:2000,64:2000",
              "rows_per_file": 25, "selection_case": "4000000:0.8"}
QUICK_CASES = {"dims_cases": "384:20000,1536:5000", "partitions_cases": "1536:200,64:200",
               "rows_per_file": 20, "selection_case": "200000:0.8"}


def machine_info() -> dict:
    import importlib.metadata as md

    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError):
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    versions = {"python": platform.python_version()}
    for pkg in ("pyspark", "delta-spark", "numpy", "pyarrow", "pandas", "deltalake"):
        with contextlib.suppress(md.PackageNotFoundError):
            versions[pkg] = md.version(pkg)
    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()
    versions["java"] = java[0] if java else None
    load = os.getloadavg()
    git = {}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        git["commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                                       text=True).stdout.strip()
        git["modified"] = [line[3:] for line in subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True,
            text=True).stdout.splitlines()]
    return {"git": git, "nproc": os.cpu_count(), "memory_gib": round(mem_kib / 2**20, 1), "cpu_model": cpu,
            "kernel": platform.release(), "load_average_at_start": [round(x, 2) for x in load], "versions": versions}


def measure_on_cluster(args, tables: dict, results: dict) -> None:
    """``--cluster-measure`` at both sizes with the driver on its own: a standalone master and two one-core
    workers on 127.0.0.1 (the test suite's ``tests/cluster.py``), one fresh cluster and driver per size."""
    sys.path.insert(0, str(REPO / "tests"))
    from cluster import StandaloneCluster

    for rows in (args.rows, args.scale_rows):
        spark_json = args.work_dir / f"spark_cluster_{rows}.json"
        spark_json.unlink(missing_ok=True)
        with StandaloneCluster(args.work_dir / f"cluster_{rows}", workers=2) as cluster:
            results["sizes"][str(rows)]["spark_cluster"] = run_child(
                args, "--worker", tables[rows]["path"], rows, spark_json,
                ["--measure", args.cluster_measure, "--repeats", "1", "--master", cluster.url,
                 "--warmup-table", tables[WARMUP_ROWS]["path"], "--sample-interval", str(args.sample_interval)],
                args.timeout)

def _pairs(text: str) -> list[tuple[str, str]]:
    return [tuple(item.split(":", 1)) for item in (text or "").split(",") if item.strip()]


def case_specs(args) -> list[dict]:
    """The cases as (name, table parameters, worker flags), from ``--dims-cases``, ``--partitions-cases``
    and ``--selection-case``."""
    cases = []
    for dims, rows in _pairs(args.dims_cases):
        cases.append({"name": f"dims_{dims}", "kind": "dims", "dims": int(dims), "rows": int(rows),
                      "fraction": args.unwanted_fraction, "rows_per_file": None, "flags": []})
    for dims, files in _pairs(args.partitions_cases):
        cases.append({"name": f"partitions_{dims}x{files}", "kind": "partitions", "dims": int(dims),
                      "rows": int(files) * args.rows_per_file, "fraction": args.unwanted_fraction,
                      "rows_per_file": args.rows_per_file, "files": int(files),
                      "flags": ["--no-coalesce", "--file-partitions"]})
    for unwanted, fraction in _pairs(args.selection_case):
        cases.append({"name": f"selection_{unwanted}_unwanted", "kind": "selection", "dims": args.dims,
                      "rows": round(int(unwanted) / float(fraction)), "fraction": float(fraction),
                      "rows_per_file": None, "flags": []})
    return cases


def run_cases(args, warmup_table: str, results: dict, out: Path) -> None:
    """One plan per case, each on its own table and in its own worker."""
    for case in case_specs(args):
        path = table_path(args.work_dir, case["rows"], case["dims"], case["fraction"], args.seed,
                          case["rows_per_file"])
        table = ensure_table(path, case["rows"], case["dims"], case["fraction"], args.seed, case["rows_per_file"])
        spark_json = args.work_dir / f"spark_{case['name']}.json"
        spark_json.unlink(missing_ok=True)
        spark = run_child(args, "--worker", table["path"], case["rows"], spark_json,
                          ["--measure", "plan_likelihood_ratio", "--repeats", "1", "--warmup-table", warmup_table,
                           "--sample-interval", str(args.sample_interval), *case["flags"]], args.timeout)
        results["cases"][case["name"]] = {"kind": case["kind"], "dims": case["dims"], "rows": case["rows"],
                                          "files": table["files"], "table": table, "spark": spark}
        (out / "results.json").write_text(json.dumps(results, indent=1, default=str))


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dims", type=int, default=64)
    ap.add_argument("--unwanted-fraction", type=float, default=0.1)
    ap.add_argument("--scale-rows", type=int, default=4_000_000)
    ap.add_argument("--out", default=None, help="results folder (default docs/benchmarks; docs/benchmarks/quick with --quick)")
    ap.add_argument("--quick", action="store_true",
                    help=f"smoke run: 100k rows, scale 400k, tiny cases ({QUICK_CASES})")
    ap.add_argument("--work-dir", default=None, help="where the tables go (default /tmp/distunlearn-bench)")
    ap.add_argument("--repeats", type=int, default=2, help="runs of each scan and of the likelihood_ratio plan (best kept)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--measure", default="plan_likelihood_ratio,scan_size,scan_aggregate,scan_arrow_count,plan_auto,"
                                         "apply_output,apply_in_place_dv")
    ap.add_argument("--scale-measure", default="plan_likelihood_ratio,scan_size,scan_aggregate,scan_arrow_count")
    ap.add_argument("--scale-repeats", type=int, default=1, help="runs of each measurement at --scale-rows")
    ap.add_argument("--sample-interval", type=float, default=0.2)
    ap.add_argument("--cluster-measure", default="plan_likelihood_ratio",
                    help="measurements at both sizes on a standalone cluster on this machine (master + 2 one-core "
                         "workers), so that the driver JVM holds no executor; empty: skip")
    ap.add_argument("--dims-cases", default=None,
                    help=f"DIMS:ROWS,... plans at larger dims (default {FULL_CASES['dims_cases']}; empty: skip)")
    ap.add_argument("--partitions-cases", default=None,
                    help=f"DIMS:FILES,... plans over that many small files, one scan partition each, the source not "
                         f"coalesced (default {FULL_CASES['partitions_cases']}; empty: skip)")
    ap.add_argument("--rows-per-file", type=int, default=None,
                    help=f"rows per file of the partitions cases (default {FULL_CASES['rows_per_file']})")
    ap.add_argument("--selection-case", default=None,
                    help=f"UNWANTED_ROWS:FRACTION, a plan with that many unwanted rows (default "
                         f"{FULL_CASES['selection_case']}; empty: skip)")
    ap.add_argument("--only-cases", action="store_true", help="skip the two sizes and the cluster; run the cases")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per worker process")
    ap.add_argument("--render-only", action="store_true",
                    help="recompute the verdicts and results.md from an existing results.json")
    # internal: worker modes
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--numpy-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--lean-numpy-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--table", help=argparse.SUPPRESS)
    ap.add_argument("--warmup-table", help=argparse.SUPPRESS)
    ap.add_argument("--json", help=argparse.SUPPRESS)
    ap.add_argument("--rule", default="likelihood_ratio", help=argparse.SUPPRESS)
    ap.add_argument("--master", default="local[2]", help=argparse.SUPPRESS)
    ap.add_argument("--numpy-interleaved", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--no-coalesce", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--file-partitions", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        if "--rows" not in sys.argv:
            args.rows = 100_000
        if "--scale-rows" not in sys.argv:
            args.scale_rows = 400_000
    for key, value in (QUICK_CASES if args.quick else FULL_CASES).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.work_dir = Path(args.work_dir or "/tmp/distunlearn-bench")
    return args


def _out_dir(args) -> Path:
    out = Path(args.out or ("docs/benchmarks/quick" if args.quick else "docs/benchmarks"))
    return out if out.is_absolute() else REPO / out


def main() -> None:
    args = parse_args()
    if args.render_only:
        out = _out_dir(args)
        results = json.loads((out / "results.json").read_text())
        par = results["parameters"]
        args.rows, args.scale_rows = par["rows"], par["scale_rows"]
        results["verdicts"] = verdicts(results, args)
        (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
        (out / "results.md").write_text(render_markdown(results, args))
        log(f"re-rendered {out / 'results.md'}")
        return
    if args.worker:
        from worker import spark_worker

        return spark_worker(args)
    if args.numpy_worker or args.lean_numpy_worker:
        from baselines import lean_numpy_worker, numpy_worker

        return (numpy_worker if args.numpy_worker else lean_numpy_worker)(args)

    out = _out_dir(args)
    out.mkdir(parents=True, exist_ok=True)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.timezone.utc)
    results = {"started_at": started.isoformat(), "machine": machine_info(),
               "parameters": {"rows": args.rows, "scale_rows": args.scale_rows, "dims": args.dims,
                              "unwanted_fraction": args.unwanted_fraction, "unwanted": UNWANTED_PREDICATE,
                              "thresholds": {"alpha_rel": 0.5, "epsilon_rel": 1.0}, "master": "local[2]",
                              "repeats": args.repeats, "scale_repeats": args.scale_repeats, "quick": args.quick, "seed": args.seed,
                              "shift": SHIFT, "file_bytes_target": FILE_BYTES, "row_group_rows": ROW_GROUP_ROWS,
                              "cluster_measure": args.cluster_measure, "dims_cases": args.dims_cases,
                              "partitions_cases": args.partitions_cases, "rows_per_file": args.rows_per_file,
                              "selection_case": args.selection_case, "only_cases": args.only_cases},
               "targets": TARGETS, "tables": {}, "sizes": {}, "cases": {}}

    tables = {}
    for rows in (WARMUP_ROWS,) if args.only_cases else (WARMUP_ROWS, args.rows, args.scale_rows):
        path = table_path(args.work_dir, rows, args.dims, args.unwanted_fraction, args.seed)
        tables[rows] = ensure_table(path, rows, args.dims, args.unwanted_fraction, args.seed)
        results["tables"][str(rows)] = tables[rows]
    results["generator_peak_rss_mib"] = peak_rss_mib()
    log(f"generator peak RSS {results['generator_peak_rss_mib']:.0f} MiB")

    for rows, measure, repeats in () if args.only_cases else (
            (args.rows, args.measure, args.repeats), (args.scale_rows, args.scale_measure, args.scale_repeats)):
        table = tables[rows]["path"]
        size = {"rows": rows}
        spark_json = args.work_dir / f"spark_{rows}.json"
        spark_json.unlink(missing_ok=True)
        size["spark"] = run_child(args, "--worker", table, rows, spark_json,
                                  ["--measure", measure, "--repeats", str(repeats), "--numpy-interleaved",
                                   "--seed", str(args.seed), "--warmup-table", tables[WARMUP_ROWS]["path"],
                                   "--sample-interval", str(args.sample_interval)], args.timeout)
        for name in ("numpy_likelihood_ratio", "lean_numpy_likelihood_ratio"):
            size[name] = size["spark"].pop(name, {})
        if "plan_auto" in measure:
            np_json = args.work_dir / f"numpy_{rows}_auto.json"
            np_json.unlink(missing_ok=True)
            size["numpy_auto"] = run_child(args, "--numpy-worker", table, rows, np_json,
                                           ["--rule", "auto", "--seed", str(args.seed)], args.timeout)
        results["sizes"][str(rows)] = size
        (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    if args.cluster_measure and not args.only_cases:
        measure_on_cluster(args, tables, results)
        (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    run_cases(args, tables[WARMUP_ROWS]["path"], results, out)
    results["finished_at"] = dt.datetime.now(dt.timezone.utc).isoformat()
    results["verdicts"] = verdicts(results, args)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    (out / "results.md").write_text(render_markdown(results, args))
    log(f"wrote {out / 'results.json'} and {out / 'results.md'}")


if __name__ == "__main__":
    main()
