"""The verdicts: each target of the issue as a ratio of figures taken in the same run."""
from __future__ import annotations

from pyspark.sql.types import LongType

from distunlearn.spark.keys import key_row_bytes

TARGETS = {
    "plan_vs_numpy": 2.0,
    "plan_vs_scan": 4.0,
    "plan_full_passes": 2,
    "driver_memory_growth": 0.10,
    "time_growth": 4.4,
    "plan_vs_lean_numpy": 3.0,
    "plan_vs_arrow_scan": 2.0,
    "apply_extra_scan_equivalents": 1.5,
    "merge_shuffle_vs_key_set": 1.0,
}
EDIT_PHASES = ("writing manifest", "committing the edit")
ID_BYTES = key_row_bytes(LongType())   # a long key as the job sizes it (distunlearn.spark.keys)


def _m(results, rows, name, run="spark"):
    """A measurement at ``rows`` of the ``run`` (``spark``: local[2]; ``spark_cluster``: standalone), named
    without the repeat suffix (the best repeat is kept)."""
    m = results["sizes"].get(str(rows), {}).get(run, {}).get("measurements", {}).get(name)
    return None if m is None else {**m, "name": name}


def _verdict(target, value, limit, met, measured, reason="") -> dict:
    return {"target": target, "value": value, "limit": limit, "met": met, "measured": measured,
            "reason": "" if met else reason}


def verdicts(results: dict, args) -> list[dict]:
    base, scale = args.rows, args.scale_rows
    out = []
    plan = _m(results, base, "plan_likelihood_ratio")
    plan_auto = _m(results, base, "plan_auto")
    np_lr = results["sizes"].get(str(base), {}).get("numpy_likelihood_ratio", {})
    scan = _m(results, base, "scan_aggregate")
    scan_arrow = _m(results, base, "scan_arrow_count")
    scan_size = _m(results, base, "scan_size")

    def add(*fields, **kw):
        out.append(_verdict(*fields, **kw))

    if plan and np_lr.get("seconds"):
        r = plan["seconds"] / np_lr["seconds"]
        add("plan time <= 2x single-process numpy (likelihood_ratio)", round(r, 2), TARGETS["plan_vs_numpy"],
            r <= TARGETS["plan_vs_numpy"],
            f"plan {plan['seconds']} s vs numpy {np_lr['seconds']} s", _why_slow(plan))
    scans = [m for m in (scan_size, scan, scan_arrow) if m]
    floor = min(scans, key=lambda m: m["seconds"]) if scans else None
    if plan and floor:
        r = plan["seconds"] / floor["seconds"]
        others = "; ".join(f"vs {m['name']} {m['seconds']} s: {plan['seconds'] / m['seconds']:.2f}x" for m in scans)
        add("plan time <= 4x the plain Spark scan of the vector column (floor: fastest of the scans)", round(r, 2),
            TARGETS["plan_vs_scan"], r <= TARGETS["plan_vs_scan"],
            f"plan {plan['seconds']} s vs {floor['name']} {floor['seconds']} s ({others})", _why_slow(plan))
    for m in (plan, plan_auto):
        if not m:
            continue
        passes = m["totals"].get("source_vector_scans", 0)
        eq = m["scan_equivalents"]
        add(f"at most 2 full passes over the data to plan ({m['name']})", passes, TARGETS["plan_full_passes"],
            passes <= TARGETS["plan_full_passes"],
            f"{passes} scans of the table that read the vector column, {m['totals'].get('source_scans')} file scans "
            f"in all, {eq} scan-equivalents of bytes read from the table's files",
            "; ".join(f"{p['phase']}: {p.get('source_vector_scans', 0)} vector scans / {p['scan_equivalents']} "
                      f"scan-eq" for p in m["phases"] if p.get("source_scans")))
    plan_scale = _m(results, scale, "plan_likelihood_ratio")
    if plan and plan_scale:
        a, b = plan["memory"]["driver_jvm_rss_mib"], plan_scale["memory"]["driver_jvm_rss_mib"]
        growth = b / a - 1 if a else float("nan")
        pa_, pb = plan["memory"]["python_driver_rss_mib"], plan_scale["memory"]["python_driver_rss_mib"]
        add(f"driver peak memory grows <= 10% from {base:,} to {scale:,} rows (plan, likelihood_ratio)",
            round(growth, 3), TARGETS["driver_memory_growth"], growth <= TARGETS["driver_memory_growth"],
            f"driver JVM peak RSS {a:.0f} -> {b:.0f} MiB; JVM heap used {plan['memory'].get('jvm_heap_used_mib')} -> "
            f"{plan_scale['memory'].get('jvm_heap_used_mib')} MiB (committed {plan['memory'].get('jvm_heap_committed_mib')}"
            f" -> {plan_scale['memory'].get('jvm_heap_committed_mib')}); checkpoint block storage "
            f"{plan['memory'].get('block_storage_mib')} -> {plan_scale['memory'].get('block_storage_mib')} MiB; "
            f"Python driver {pa_:.0f} -> {pb:.0f} MiB",
            "in local mode the driver JVM is also the executor: the local checkpoints of the kept unwanted rows "
            "(and, with several chunks, of the scores and orderings; MEMORY_AND_DISK block storage, O(unwanted rows "
            "x dims) numbers), the Arrow batches and the shuffle "
            "buffers live in its heap, which G1 grows towards -Xmx (spark.driver.memory) under that pressure")
    alone, alone_scale = _m(results, base, "plan_likelihood_ratio", "spark_cluster"), \
        _m(results, scale, "plan_likelihood_ratio", "spark_cluster")
    if alone and alone_scale:
        a, b = alone["memory"]["driver_jvm_rss_mib"], alone_scale["memory"]["driver_jvm_rss_mib"]
        growth = b / a - 1 if a else float("nan")
        add(f"driver peak memory grows <= 10% from {base:,} to {scale:,} rows, driver JVM alone (standalone "
            f"cluster, executors in their own JVMs; plan, likelihood_ratio)", round(growth, 3),
            TARGETS["driver_memory_growth"], growth <= TARGETS["driver_memory_growth"],
            f"driver JVM peak RSS {a:.0f} -> {b:.0f} MiB; JVM heap used {alone['memory'].get('jvm_heap_used_mib')} -> "
            f"{alone_scale['memory'].get('jvm_heap_used_mib')} MiB (committed "
            f"{alone['memory'].get('jvm_heap_committed_mib')} -> {alone_scale['memory'].get('jvm_heap_committed_mib')});"
            f" heap after a full GC {alone['memory'].get('jvm_live_heap_after_gc_mib')} -> "
            f"{alone_scale['memory'].get('jvm_live_heap_after_gc_mib')} MiB;"
            f" Python driver {alone['memory']['python_driver_rss_mib']:.0f} -> "
            f"{alone_scale['memory']['python_driver_rss_mib']:.0f} MiB; plan {alone['seconds']} -> "
            f"{alone_scale['seconds']} s", "the peak includes garbage not yet collected: G1 grows the young "
            "generation with the allocation rate of the work the driver schedules (4x the tasks at 4x the rows); "
            "the heap after a full GC is what the driver still holds")
    if plan and plan_scale:
        t = plan_scale["seconds"] / plan["seconds"]
        add(f"plan time grows <= 4.4x from {base:,} to {scale:,} rows", round(t, 2), TARGETS["time_growth"],
            t <= TARGETS["time_growth"], f"{plan['seconds']} s -> {plan_scale['seconds']} s "
            f"(aggregate scan {scan['seconds'] if scan else '?'} s -> "
            f"{(_m(results, scale, 'scan_aggregate') or {}).get('seconds', '?')} s)",
            "see the per-phase growth in results.md")
    out += _new_verdicts(results, args, plan, scans, floor, scan_arrow)
    return out


def _why_slow(m: dict) -> str:
    ph = sorted(m["phases"], key=lambda p: -p["seconds"])[:3]
    return "most expensive phases: " + "; ".join(
        f"{p['phase']} {p['seconds']} s ({p.get('jobs', 0)} jobs, {p['scan_equivalents']} scan-eq, "
        f"shuffle write {p.get('shuffle_write_bytes', 0) / 2**20:.0f} MiB)" for p in ph)


def _phase(m: dict, name: str) -> dict:
    return next((p for p in m["phases"] if p["phase"] == name), {})


def bytes_scan_equivalents(m: dict, table_bytes: int) -> float:
    """(bytes read from the table's files + shuffle bytes written) / the table's bytes."""
    return (m["fs_bytes_read"] + m["totals"].get("shuffle_write_bytes", 0)) / table_bytes


def packed_partial_bytes(d: int) -> int:
    """One packed partial of the moments: the upper triangle of d x d doubles and a mean of d."""
    return d * (d + 1) // 2 * 8 + d * 8


def _new_verdicts(results: dict, args, plan, scans, floor, scan_arrow) -> list[dict]:
    base = args.rows
    size = results["sizes"].get(str(base), {})
    out = []
    lean = size.get("lean_numpy_likelihood_ratio", {})
    if plan and lean.get("seconds"):
        r = plan["seconds"] / lean["seconds"]
        out.append(_verdict("plan time <= 3x the lean single-process numpy run (likelihood_ratio)", round(r, 2),
                            TARGETS["plan_vs_lean_numpy"], r <= TARGETS["plan_vs_lean_numpy"],
                            f"plan {plan['seconds']} s vs lean numpy {lean['seconds']} s ({lean.get('phases')})",
                            _why_slow(plan)))
    if plan and scan_arrow:
        r = plan["seconds"] / scan_arrow["seconds"]
        out.append(_verdict("plan time <= 2x the Arrow-to-Python scan (scan_arrow_count)", round(r, 2),
                            TARGETS["plan_vs_arrow_scan"], r <= TARGETS["plan_vs_arrow_scan"],
                            f"plan {plan['seconds']} s vs scan_arrow_count {scan_arrow['seconds']} s", _why_slow(plan)))
    out += _deletion_counts(results, args, plan)
    table_bytes = size.get("spark", {}).get("table_bytes")
    for name, label in (("apply_in_place_dv", "--in-place apply with deletion vectors"),
                        ("apply_output", "--output apply")):
        m = _m(results, base, name)
        if plan and m and floor and table_bytes:
            out.append(_apply_verdict(label, m, plan, scans, floor, table_bytes))
    inplace = _m(results, base, "apply_in_place_dv")
    if inplace and (inplace.get("result") or {}).get("deleted") is not None:
        deleted = inplace["result"]["deleted"]
        shuffle = _phase(inplace, "committing the edit").get("shuffle_write_bytes", 0)
        keys = deleted * ID_BYTES
        r = shuffle / keys if keys else float("inf")
        out.append(_verdict("the MERGE's shuffle bytes <= the key set's size (deleted rows x 16 bytes: a long id as a Spark row)", round(r, 2),
                            TARGETS["merge_shuffle_vs_key_set"], r <= TARGETS["merge_shuffle_vs_key_set"],
                            f"shuffle write of 'committing the edit' {shuffle:,} bytes vs key set {deleted:,} deleted "
                            f"rows x {ID_BYTES} bytes = {keys:,} bytes",
                            "the MERGE shuffles more than the ids it deletes: "
                            + _phase_line(_phase(inplace, "committing the edit"))))
    out += _partition_verdicts(results)
    return out


def _deletion_counts(results: dict, args, plan) -> list[dict]:
    """The numpy runs delete exactly as many rows as the job, at every size."""
    out = []
    for rows, m in ((args.rows, plan), (args.scale_rows, _m(results, args.scale_rows, "plan_likelihood_ratio"))):
        job = ((m or {}).get("result") or {}).get("deleted")
        size = results["sizes"].get(str(rows), {})
        counts = {k: size.get(f"{k}_likelihood_ratio", {}).get("deleted") for k in ("numpy", "lean_numpy")}
        if job is None or not size.get("lean_numpy_likelihood_ratio"):
            continue
        met = all(v == job for v in counts.values())
        out.append(_verdict(f"the numpy and lean numpy runs delete as many rows as the plan ({rows:,} rows)",
                            counts["lean_numpy"], job, met, f"plan {job}, numpy {counts['numpy']}, "
                            f"lean numpy {counts['lean_numpy']} (likelihood_ratio)", "the counts differ"))
    return out


def _apply_verdict(label: str, m: dict, plan: dict, scans: list, floor: dict, table_bytes: int) -> dict:
    """Bytes beyond the plan as scan-equivalents (the verdict), and the apply-only time against the scans.

    The apply-only time is its own phases plus the extra work outside phases (ledger, history, checks);
    the plan part of the apply is not subtracted as a whole because it is as noisy as any run."""
    extra = bytes_scan_equivalents(m, table_bytes) - bytes_scan_equivalents(plan, table_bytes)
    own = [p for p in m["phases"] if p["phase"] in EDIT_PHASES]
    outside, plan_outside = _phase(m, "(outside phases)"), _phase(plan, "(outside phases)")
    extra_s = sum(p["seconds"] for p in own) + outside["seconds"] - plan_outside["seconds"]
    vs = "; ".join(f"{extra_s / s['seconds']:.2f} x {s['name']}" for s in scans)
    merge = m.get("merge_metrics") or {}
    return _verdict(
        f"{label} costs <= 1.5 scan-equivalents beyond the plan (bytes read from the table's files + shuffle "
        "bytes written, / table bytes)", round(extra, 2), TARGETS["apply_extra_scan_equivalents"],
        extra <= TARGETS["apply_extra_scan_equivalents"],
        f"apply {bytes_scan_equivalents(m, table_bytes):.2f} vs plan {bytes_scan_equivalents(plan, table_bytes):.2f}"
        f" scan-equivalents (files read {m['scan_equivalents'] - plan['scan_equivalents']:+.2f}, shuffle written "
        f"{(m['totals'].get('shuffle_write_bytes', 0) - plan['totals'].get('shuffle_write_bytes', 0)) / table_bytes:+.2f});"
        f" time (a figure, not the verdict): apply-only work {extra_s:.1f} s = {extra_s / floor['seconds']:.2f} "
        f"x the scan floor ({vs}); whole apply {m['seconds']} s vs plan {plan['seconds']} s; "
        f"{m['totals'].get('jobs', 0) - plan['totals'].get('jobs', 0):+d} Spark jobs",
        "; ".join(_phase_line(p) for p in own + [outside])
        + (f"; MERGE metrics: executionTimeMs {merge.get('executionTimeMs')}, scanTimeMs {merge.get('scanTimeMs')}, "
           f"rewriteTimeMs {merge.get('rewriteTimeMs')}" if merge else ""))


def _phase_line(p: dict) -> str:
    return (f"{p.get('phase')} {p.get('seconds')} s ({p.get('jobs', 0)} jobs, {p.get('scan_equivalents')} scan-eq, "
            f"shuffle write {p.get('shuffle_write_bytes', 0) / 2**20:.0f} MiB)")


def partition_figures(case: dict) -> dict | None:
    """Scan partitions, the statistics pass and its largest Python worker against one packed partial."""
    m = (case.get("spark", {}).get("measurements") or {}).get("plan_likelihood_ratio")
    if not m:
        return None
    stats = _phase(m, "statistics pass")
    partial = packed_partial_bytes(case["dims"])
    peak = stats.get("peak_worker_rss_mib") or 0.0
    return {"partitions": case["spark"].get("scan_partitions"), "seconds": m["seconds"],
            "statistics_seconds": stats.get("seconds"), "statistics_tasks": stats.get("tasks"),
            "peak_worker_rss_mib": peak, "packed_partial_bytes": partial,
            "multiple": round(peak * 2**20 / partial, 1)}


def _partition_verdicts(results: dict) -> list[dict]:
    cases = [c for c in results.get("cases", {}).values() if c.get("kind") == "partitions"]
    if not cases:
        return []
    big = max(cases, key=lambda c: c["dims"])
    fig = partition_figures(big)
    others = "; ".join(f"d = {c['dims']}: {f['partitions']} partitions, plan {f['seconds']} s, statistics pass "
                       f"largest worker {f['peak_worker_rss_mib']} MiB = {f['multiple']} x its packed partial "
                       f"({f['packed_partial_bytes']:,} bytes)"
                       for c in cases if c is not big and (f := partition_figures(c)))
    measured = "did not finish" if fig is None else (
        f"{fig['partitions']} scan partitions ({big['files']} files), no coalescing (as for a DataFrame source); plan "
        f"{fig['seconds']} s, statistics pass {fig['statistics_seconds']} s over {fig['statistics_tasks']} tasks; "
        f"merge tasks' peak memory (largest Python worker RSS in the statistics pass) {fig['peak_worker_rss_mib']} "
        f"MiB = {fig['multiple']} x one packed partial ({fig['packed_partial_bytes']:,} bytes)")
    return [_verdict(f"plan at d = {big['dims']:,} over {big['files']:,} input files (one partition each) finishes",
                     "finished" if fig else "failed", "finishes", fig is not None,
                     measured + (f"; for comparison {others}" if others else ""),
                     f"worker exit code {big.get('spark', {}).get('returncode')}; see the worker's log")]
