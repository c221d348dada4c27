"""The ``distunlearn`` console command (its parser: ``distunlearn.arguments``); ``jobs/`` runs it under spark-submit."""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from pathlib import Path

from distunlearn.arguments import build_parser
from distunlearn.config import EvaluateConfig, UnlearnConfig
from distunlearn.embed import run_embed
from distunlearn.errors import DistunlearnError, InfeasibleError, flag, message

def config_from_args(args: argparse.Namespace, cls=UnlearnConfig):
    overrides = {k: v for k, v in vars(args).items()
                 if k not in ("command", "config", "spark_conf", "master", "remote", "quiet", "verbose", "spark_log", "lakehouse")}
    if args.spark_conf:
        overrides["spark_conf"] = spark_conf(args)
    return cls.load(args.config, **overrides)


def spark_conf(args: argparse.Namespace) -> dict:
    """``--spark-conf KEY=VALUE`` flags as a dict."""
    pairs = [item.split("=", 1) for item in getattr(args, "spark_conf", None) or []]
    if any(len(pair) != 2 for pair in pairs):
        raise DistunlearnError("--spark-conf takes KEY=VALUE")
    return dict(pairs)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "bundle":
        from distunlearn.bundle import write_bundle

        print(write_bundle(args.out))
        return 0
    _configure_logging(args.quiet)
    try:
        if args.command != "bundle":
            _choose_spark_log(args)
        if args.command == "verify":
            return _verify(args)
        if args.command in ("erase", "erasure-status"):
            return _erasure(args)
        if args.command == "evaluate":
            return _evaluate(args)
        if args.command == "embed":
            return run_embed(args)
        if args.command == "demo":
            _prepare_demo(args)
        config = config_from_args(args)
        from distunlearn.job import run_unlearn
        from distunlearn.report import summary

        report = run_unlearn(session(args, config.spark_conf, config), config)
        print(summary(report))
        return 0
    except InfeasibleError as exc:
        if exc.report:
            from distunlearn.report import summary

            print(summary(exc.report))
        print(f"distunlearn: infeasible: {exc}", file=sys.stderr)
        return exc.exit_code
    except DistunlearnError as exc:
        print(f"distunlearn: error: {message(exc, flag)}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - the last thing a user sees is one line, not a JVM trace
        from distunlearn.spark.table import first_line

        logging.getLogger("distunlearn").debug("failure", exc_info=True)
        print(f"distunlearn: error: {type(exc).__name__}: {first_line(exc)}", file=sys.stderr)
        return 1


def _evaluate(args: argparse.Namespace) -> int:
    from distunlearn.evaluate import evaluate, summary

    config = config_from_args(args, EvaluateConfig)
    print(summary(evaluate(session(args, config.spark_conf, config), config)))
    return 0


def _verify(args: argparse.Namespace) -> int:
    from distunlearn.config import HASH_KEY_ENV
    from distunlearn.verify import verify_run

    key = os.environ.get(HASH_KEY_ENV)
    run = _verify_tables(args)
    checks = verify_run(session(args, run["spark_conf"], argparse.Namespace(**run)), run["source"], args.run_id,
                        run["ledger"], run["manifest"], key.encode() if key else None, id_col=args.id_col,
                        vector_col=args.vector_col, unwanted=args.unwanted, retained=args.retained)
    for check in checks:
        print(check.line())
    failed = [c.name for c in checks if not c.passed]
    if failed:
        print(f"distunlearn: error: verify failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _erasure(args: argparse.Namespace) -> int:
    from distunlearn.erasure.config import ErasureConfig

    config = ErasureConfig.load(args.config, max_retries=getattr(args, "max_retries", None),
                                certificates=getattr(args, "certificates", None))
    spark = session(args, {**config.spark_conf, **spark_conf(args)}, config)
    if args.command == "erase":
        from distunlearn.erasure.run import run_erasure, summary

        print(summary(run_erasure(spark, config, args.run_id)))
        return 0
    from distunlearn.erasure.certificate import erasure_status

    status = erasure_status(spark, config, certificates=config.certificates)
    counts = ", ".join(f"{n} {s}" for s, n in status.counts.items())
    print(f"erasure requests at {status.at.isoformat(timespec='seconds')}: {sum(status.counts.values())} ({counts})")
    for line in status.lines:
        print(line)
    if status.certificates:
        print(f"{status.certificates} certificate(s) in {config.certificates}")
    for failed in status.failed_checks:
        print(f"FAIL {failed}")
    if status.failed_checks:
        print(f"distunlearn: error: {len(status.failed_checks)} erasure check(s) failed", file=sys.stderr)
        return 1
    if status.overdue:
        print(f"distunlearn: error: {status.overdue} erasure request(s) overdue", file=sys.stderr)
        return 4
    return 0


def _verify_tables(args: argparse.Namespace) -> dict:
    """The tables ``verify`` reads: flags first, then the run's ``--config`` (its edited table is the
    output, else the source), with that config's ``spark_conf`` under the flags' ``--spark-conf``."""
    from distunlearn.config import read_config_file

    config = read_config_file(args.config) if args.config else {}
    source = args.source or config.get("output") or config.get("source")
    if not source:
        raise DistunlearnError("verify needs --source, or --config with the run's source")
    manifest = args.manifest or config.get("manifest")
    ledger = args.ledger or config.get("ledger")
    return {"source": source, "manifest": manifest, "ledger": ledger,
            "spark_conf": {**(config.get("spark_conf") or {}), **spark_conf(args)}}


def _choose_spark_log(args: argparse.Namespace) -> None:
    """Decide where Spark's own console output goes: with ``--verbose`` to the terminal, else to a log
    file named on stderr (a session that already exists, or a Connect client, prints nothing of its own)."""
    args.spark_log = None
    if getattr(args, "verbose", False) or getattr(args, "remote", None) or os.environ.get("SPARK_REMOTE"):
        return
    from pyspark.sql import SparkSession

    if SparkSession.getActiveSession() is None and "PYSPARK_GATEWAY_PORT" not in os.environ:
        from distunlearn.spark.session import default_spark_log

        args.spark_log = default_spark_log()
        logging.getLogger("distunlearn").info("Spark's own output: %s", args.spark_log)


TABLE_FIELDS = ("source", "output", "manifest", "ledger", "requests")


def session(args: argparse.Namespace, conf: dict | None = None, config=None):
    """The command's Spark session (``--master``, ``--remote``, ``--spark-conf``); a local one gets the
    file system packages of the object stores its tables live on (``s3a://``, ``abfss://``, ``gs://``)."""
    from distunlearn.spark.session import get_session, object_store_packages

    tables = getattr(config, "locations", None) or \
        [getattr(config if config is not None else args, f, None) for f in TABLE_FIELDS]
    remote = getattr(args, "remote", None) or os.environ.get("SPARK_REMOTE")
    checkpoint_dir = getattr(config, "checkpoint_dir", None)
    if checkpoint_dir and not remote:
        from distunlearn.spark.checkpoints import session_conf_for

        conf = {**session_conf_for(checkpoint_dir), **(conf or {})}   # startup settings of a local session
    return get_session(master=getattr(args, "master", None), conf=conf, remote=getattr(args, "remote", None),
                       spark_log=getattr(args, "spark_log", None),
                       packages=[] if remote else object_store_packages(*tables))   # a Connect server has its own


def _configure_logging(quiet: bool) -> None:
    logger = logging.getLogger("distunlearn")
    for old in [h for h in logger.handlers if getattr(h, "distunlearn_cli", False)]:
        logger.removeHandler(old)
    handler = logging.StreamHandler(sys.stderr)  # the stderr of this call, also when tests capture it
    handler.distunlearn_cli = True
    handler.setFormatter(logging.Formatter("[distunlearn %(asctime)s] %(message)s", "%H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)


def _prepare_demo(args: argparse.Namespace) -> None:
    """Create the demo table once under ``--lakehouse``, clear the previous demo outputs, and point
    the run at them (``conf/demo.toml`` supplies the domains and thresholds)."""
    from distunlearn.synthetic import UNWANTED_TOPIC, demo_table

    if args.config is None and Path("conf/demo.toml").is_file():
        args.config = "conf/demo.toml"
    if args.config is None:
        args.unwanted = args.unwanted or f"topic = '{UNWANTED_TOPIC}'"
    lake = Path(args.lakehouse)
    table, output, report = lake / "demo_embeddings", lake / "demo_edited", lake / "demo_report.json"
    args.source, args.output, args.report = args.source or str(table), args.output or str(output), args.report or str(report)
    for stale in (Path(args.output), Path(args.output + "_manifest"), Path(args.report)):
        if stale.is_dir():
            shutil.rmtree(stale)
        elif stale.exists():
            stale.unlink()
    if not table.exists():
        spark = session(args, spark_conf(args))
        logging.getLogger("distunlearn").info("creating demo table %s", table)
        spark.createDataFrame(demo_table()).repartition(4).write.format("delta").save(str(table))
