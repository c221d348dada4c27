"""The console command's parser: every command, its flags and help groups (``docs/cli.md`` is its output)."""
from __future__ import annotations

import argparse

from distunlearn.config import OBJECTIVES, RULE_CHOICES
from distunlearn.core.gaussian import COVARIANCES
from distunlearn.core.rules import DOWNSTREAM_RULES, RULE_HELP, RULES
from distunlearn.embed import add_embed_parser

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
