"""The ``distunlearn`` console command; ``jobs/unlearn.py`` runs the same parser under spark-submit."""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from pathlib import Path

from distunlearn.config import OBJECTIVES, RULE_CHOICES, EvaluateConfig, UnlearnConfig
from distunlearn.core.gaussian import COVARIANCES
from distunlearn.core.rules import DOWNSTREAM_RULES, RULE_HELP, RULES
from distunlearn.embed import add_embed_parser, run_embed
from distunlearn.errors import DistunlearnError, InfeasibleError, flag, message

EXIT_CODES = ("exit codes: 0 done, 1 bad input or failure, 2 thresholds infeasible (or a usage error: a flag the "
              "command does not take), 3 the edit kept conflicting with other writers (nothing of the run "
              "committed), 4 erasure requests overdue (erasure-status)")
EVALUATE_EXIT_CODES = ("exit codes: 0 done, 1 bad input or failure, 2 a usage error: a flag the command does not "
                       "take, or the old spelling of a flag or config key")


def add_source_arguments(p: argparse.ArgumentParser) -> None:
    """The source and domain flags shared by ``unlearn`` and ``evaluate``; each also reads from ``--config``
    under the same name (``_`` for ``-``)."""
    p.add_argument("--config", help="TOML or JSON file with the same keys as the flags (flags win)")
    p.add_argument("--source", help="Delta/Parquet path or catalog table name")
    p.add_argument("--format", choices=("delta", "parquet"), help="source format (default delta)")
    p.add_argument("--id-col", help="unique, non-null row id column (default id)")
    p.add_argument("--vector-col", help="array<float>, array<double> or ML vector column (default embedding)")
    p.add_argument("--unwanted", help="SQL predicate selecting the domain to forget")
    p.add_argument("--retained", help="SQL predicate of the domain to keep close to (default: NOT unwanted)")
    p.add_argument("--seed", type=int, help="seed of the random rule and of the downstream test split (default 0)")
    p.add_argument("--ridge", type=float, help="ridge lambda: adds lambda*trace(Sigma)/d*I (default 1e-6)")
    p.add_argument("--covariance", choices=COVARIANCES,
                   help="pooled covariance: ridge = as estimated, plus the --ridge term; oas = first shrunk "
                        "towards trace(Sigma)/d*I by the Oracle Approximating Shrinkage weight, then the --ridge "
                        "term (default ridge)")
    p.add_argument("--order-chunks", type=int, help="chunks of the ordered unwanted rows (default: by size)")
    p.add_argument("--checkpoint-dir",
                   help="reliable checkpoints in this directory (survive a lost executor); the session must use it "
                        "as spark.checkpoint.dir, which a local session does (default: local checkpoints)")
    p.add_argument("--report", help="path of the JSON report")
    add_session_arguments(p)


def downstream_group(p: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """The flags of the downstream objective (``--objective downstream``), shared by ``unlearn`` and
    ``evaluate``, in a help group of their own; each command adds its own to the group it returns."""
    g = p.add_argument_group("downstream objective", "used only with --objective downstream: a classifier "
                                                     "retrained on the edited rows")
    g.add_argument("--label-col", help="class label the classifier learns (numeric 0, 1, ... or string); required "
                                       "by --objective downstream")
    g.add_argument("--test-fraction", type=float, help="share of rows held out by id hash for the downstream "
                                                       "metrics (default 0.2)")
    g.add_argument("--classifier", help="pyspark.ml classifier, by class name or dotted path (default "
                                        "LogisticRegression); its params: config key classifier_params")
    g.add_argument("--max-iter", type=int, help="classifier's maxIter (logistic regression default 100; an error "
                                                "for a classifier without it)")
    g.add_argument("--reg-param", type=float, help="classifier's regParam (logistic regression L2 strength, default "
                                                   "1e-4; an error for a classifier without it)")
    g.add_argument("--rounds", type=int, help="rounds of refitting of the retrain rules (retrain_margin, retrain_influence; default 10)")
    return g


def add_session_arguments(p: argparse.ArgumentParser) -> None:
    """Where Spark runs and how much the command says."""
    p.add_argument("--spark-conf", action="append", metavar="KEY=VALUE", help="extra Spark setting (repeatable)")
    p.add_argument("--master", help="Spark master when not under spark-submit (default local[*])")
    p.add_argument("--remote", help="Spark Connect endpoint, e.g. sc://host:15002 (default $SPARK_REMOTE)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("--verbose", action="store_true",
                   help="show Spark's and Ivy's own console output (default: into a log file the command names)")


def add_unlearn_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``unlearn``."""
    add_source_arguments(p)
    p.add_argument("--objective", choices=OBJECTIVES,
                   help="kl (default): meet the KL thresholds; downstream: the fewest deletions at which a "
                        "classifier retrained on the edited rows forgets the domain (needs --label-col)")
    kl = p.add_argument_group("KL thresholds", "the removal target (--objective kl) and the preservation bound "
                                               "(both objectives); one of each pair")
    kl.add_argument("--alpha", type=float, help="removal target KL(p1||p_f) >= alpha, nats")
    kl.add_argument("--alpha-rel", type=float,
                    help="alpha relative to doing nothing (0) and full removal (1); default 0.5")
    kl.add_argument("--epsilon", type=float, help="preservation bound KL(p2||p_f) <= epsilon, nats")
    kl.add_argument("--epsilon-rel", type=float, help="epsilon relative to KL(p2||p_0) today; default 1.0")
    down = downstream_group(p)
    down.add_argument("--downstream-target", type=float,
                      help="forget-domain accuracy this far from the all-data model's to the full-removal model's "
                           "(default 0.5: halfway)")
    down.add_argument("--retained-tolerance", type=float,
                      help="largest drop of the retained-domain accuracy (default 0.01)")
    down.add_argument("--budget-steps", type=int, metavar="N",
                      help="the budget is chosen among the N+1 budgets 0, 1/N, ..., 1 of the unwanted rows "
                           "(default 100)")
    p.add_argument("--rule", choices=RULE_CHOICES,
                   help="scoring rule (default auto: evaluate all, keep the fewest deletions). "
                        + "; ".join(f"{k}: {v}" for k, v in RULE_HELP.items()))
    p.add_argument("--output", help="path of the edited Delta table (must not exist)")
    p.add_argument("--manifest", help="Delta table of deleted rows shared by runs: a run's rows replace that run's earlier "
                        "rows (default <output>_manifest, in place <source>_manifest)")
    p.add_argument("--dry-run", action="store_true", default=None, help="plan and report, write no table")
    p.add_argument("--run-id", help="run id recorded everywhere (default: a new UUID)")
    p.add_argument("--in-place", action="store_true", default=None,
                   help="delete from the source Delta table itself (MERGE join against the deletion set)")
    p.add_argument("--requests", help="Delta table of deletion requests: their rows are deleted whatever their domain")
    p.add_argument("--request-key", help="source column matched against the same-named requests column (default --id-col)")
    p.add_argument("--purge", action="store_true", default=None,
                   help="after an in-place delete, erase physically: REORG ... APPLY (PURGE) and VACUUM")
    p.add_argument("--retention-hours", type=float, help="VACUUM retention of --purge (default: the table's delta.deletedFileRetentionDuration, "
                        "7 days unless set); less than the table's needs --only-writer")
    p.add_argument("--only-writer", action="store_true", default=None,
                   help="the opt-in for a --retention-hours below the table's: no other process writes the table "
                        "or reads its older versions while the purge runs (Delta's retention check is lowered for "
                        "that VACUUM only)")
    p.add_argument("--hash-ids", action="store_true", default=None,
                   help="manifest stores HMAC-SHA256(DISTUNLEARN_HASH_KEY, str(id)) instead of the raw id")
    p.add_argument("--ledger", help="Delta run ledger (default distunlearn_ledger beside the manifest)")
    p.add_argument("--max-retries", type=int, help="times the in-place MERGE starts again after Delta reports a conflict with another "
                        "writer, pausing 1, 2, 4, ... s (at most 30) between tries (default 5)")
    p.add_argument("--broadcast-limit-mb", type=float,
                   help="broadcast the deleted ids and request keys to their joins when they take at most this "
                        "many MiB (measured first), else shuffle (default 64; 0: always shuffle)")


def add_evaluate_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``evaluate``."""
    add_source_arguments(p)
    p.add_argument("--rule", metavar="RULE[,RULE...]",
                   help=f"comma list of rules to compare (default all: {', '.join(RULES)}; "
                        f"{', '.join(DOWNSTREAM_RULES)} with --objective downstream)")
    p.add_argument("--budget-steps", type=int, metavar="N",
                   help="each curve is sampled at the N+1 budgets 0, 1/N, ..., 1 of the unwanted rows (default 100)")
    p.add_argument("--objective", choices=OBJECTIVES,
                   help="kl (default): the KL curves, halving budgets and frontier; downstream: also retrain the "
                        "classifier at the budgets of --downstream-grid per rule (needs --label-col)")
    down = downstream_group(p)
    down.add_argument("--downstream-grid", help="fractions of the unwanted rows deleted (default "
                                                "0,0.1,0.25,0.5,0.75,0.9,1)")
    # the old spellings: read only to stop with one line naming the new one (config.RENAMED)
    p.add_argument("--rules", help=argparse.SUPPRESS)
    p.add_argument("--points", help=argparse.SUPPRESS)
    p.add_argument("--downstream", action="store_true", default=None, help=argparse.SUPPRESS)


def add_erasure_parsers(sub) -> None:
    """``erase`` and ``erasure-status``: both read the erasure config (requests, [tables.NAME], status)."""
    erase = sub.add_parser("erase", help="erase the subjects of every erasure request from every table that holds "
                                         "them; physical erasure follows each table's retention",
                           epilog="exit codes: 0 done, 1 bad input or failure, 3 an edit kept conflicting with "
                                  "other writers (rerun with the same --run-id)")
    erase.add_argument("--config", required=True, help="TOML/JSON erasure config: requests, subject_col, "
                                                       "[tables.NAME] with source and key (or via), status, ledger")
    erase.add_argument("--run-id", help="run id recorded on every table's commits (default: a new UUID); a rerun "
                                        "with the same id finishes a run that died, editing no table twice")
    erase.add_argument("--max-retries", type=int, help="times each table's MERGE starts again after a conflict "
                                                       "(default 5)")
    add_session_arguments(erase)
    status = sub.add_parser("erasure-status", help="each erasure request's status, checked against the tables now, "
                                                   "and a certificate per request",
                            epilog="exit codes: 0 no request overdue and every check passed, 1 a check failed or "
                                   "bad input, 4 a request is overdue")
    status.add_argument("--config", required=True, help="the erasure config of the runs (as erase)")
    status.add_argument("--certificates", help="folder for a certificate per request, JSON and markdown "
                                               "(default: the config's certificates; none if unset)")
    add_session_arguments(status)


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distunlearn", description="Forget a data domain with the fewest deletions.",
                                     epilog=EXIT_CODES)
    sub = parser.add_subparsers(dest="command", required=True)
    add_unlearn_arguments(sub.add_parser("unlearn", help="plan and apply a distributional deletion",
                                         epilog=EXIT_CODES))
    add_evaluate_arguments(sub.add_parser("evaluate", help="budget curves, halving budgets and frontier of every rule",
                                          epilog=EVALUATE_EXIT_CODES))
    add_embed_parser(sub)
    demo = sub.add_parser("demo", help="create a demo lakehouse table and run unlearn on it")
    add_unlearn_arguments(demo)
    demo.add_argument("--lakehouse", default="lakehouse", help="folder of the demo tables (default ./lakehouse)")
    verify = sub.add_parser("verify", help="check a finished run against the table as it is now",
                            epilog="exit codes: 0 every check passed, 1 a check failed or bad input")
    verify.add_argument("--config", help="the run's TOML/JSON config: its tables (output, else source), "
                                         "manifest, ledger and spark_conf; flags override it")
    verify.add_argument("--source",
                        help="the edited Delta table, path or catalog name (the source of an in-place run); "
                             "required without --config")
    verify.add_argument("--run-id", required=True)
    verify.add_argument("--ledger", help="run ledger (default: distunlearn_ledger beside --manifest when given, "
                                         "else in the folder or database of --source, beside its default "
                                         "<source>_manifest, as unlearn)")
    verify.add_argument("--manifest", help="manifest the deleted ids are read from (default: the one the run "
                                           "recorded in the ledger); the default ledger is looked for beside it")
    for option in ("--id-col", "--vector-col", "--unwanted", "--retained"):
        verify.add_argument(option, help="default: as the run recorded it")
    add_session_arguments(verify)
    add_erasure_parsers(sub)
    bundle = sub.add_parser("bundle", help="zip the package for spark-submit --py-files")
    bundle.add_argument("--out", default="dist/distunlearn.zip")
    for command in (parser, *sub.choices.values()):
        command.allow_abbrev = False    # a prefix is an error, never another flag (--downstream is not --downstream-target)
    return parser


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
