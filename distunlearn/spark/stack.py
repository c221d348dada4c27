"""The Spark and Delta stacks distunlearn runs on, and the Maven jars that match the installed one.

Spark is provided: distunlearn does not depend on pyspark or delta-spark (``distunlearn[local]`` brings
both). A local session asks Maven Central for Delta's jar and the object-store connectors of the
pyspark and delta-spark that are installed, never for fixed versions: Delta's artifact follows the
Spark line, Hadoop's connectors follow the Hadoop that Spark ships (``pyspark/jars/hadoop-client-api-*``).

``SPARK_LINES`` below is the one table of supported combinations (mirrored in docs/operations.md, section
"Supported Spark and Delta versions"); nothing else in the code names a Spark, Delta or Hadoop version.
This module imports no Spark, so it can explain what is missing when Spark is not installed.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from distunlearn.errors import DistunlearnError

SCALA = "2.13"


@dataclass(frozen=True)
class SparkLine:
    """One Spark line: the Hadoop its pip wheel ships and the delta-spark releases built for it (jars on
    Maven Central)."""

    spark: str                 # major.minor
    min_pyspark: str           # oldest pyspark release of the line that is supported
    hadoop: str                # hadoop-client-api in the wheel's jars (when the jar cannot be read)
    delta: tuple[str, ...]     # delta-spark releases with jars for this line


# THE table of supported combinations (Delta's compatibility matrix, delta-spark's pip pins and the jars
# Maven Central serves; pyspark 4.0.0 is left out: REORG ... APPLY (PURGE) needs Spark 4.0.1).
SPARK_LINES = (
    SparkLine("4.0", min_pyspark="4.0.1", hadoop="3.4.1", delta=("4.0.1", "4.1.0", "4.2.0", "4.3.0", "4.3.1", "4.4.0")),
    SparkLine("4.1", min_pyspark="4.1.0", hadoop="3.4.2", delta=("4.1.0", "4.2.0", "4.3.0", "4.3.1", "4.4.0")),
    SparkLine("4.2", min_pyspark="4.2.0", hadoop="3.5.0", delta=("4.4.0",)),
)
# The (pyspark, delta-spark) pairs `make test` runs: the whole suite on the first, a subset on the second.
TESTED = (("4.0.1", "4.0.1"), ("4.2.0", "4.4.0"))

# Google's GCS connector is built for Hadoop 3 as a whole, not per Hadoop release.
GCS_CONNECTOR = "com.google.cloud.bigdataoss:gcs-connector:hadoop3-2.2.25"
# Delta releases from which the Maven artifact carries the Spark line (delta-spark_4.1_2.13)
PER_LINE_ARTIFACT_FROM = "4.1.0"
# Delta releases from which VACUUM ... RETAIN N HOURS ignores N unless N is 0
RETAIN_IGNORED_FROM = "4.1.0"

LOCAL_EXTRA = "pip install 'distunlearn[local]'"


def version_tuple(version: str) -> tuple[int, ...]:
    """``"4.1.0"`` -> ``(4, 1, 0)``; suffixes such as ``.dev0`` or ``rc1`` are dropped."""
    return tuple(int(part) for part in re.findall(r"\d+", version.split("+")[0])[:3])


def spark_line(version: str) -> str:
    return ".".join(str(part) for part in version_tuple(version)[:2])


def require_pyspark():
    """``pyspark``, or one line saying how to get it."""
    try:
        import pyspark
    except ImportError as exc:
        raise DistunlearnError(f"no pyspark is importable ({exc}): distunlearn runs on the Spark you install; "
                               f"{LOCAL_EXTRA} brings a local Spark with Delta, 'distunlearn[connect]' the "
                               "Spark Connect client's libraries beside your pyspark") from None
    return pyspark


def installed_version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def supported_text() -> str:
    return "; ".join(f"Spark {line.spark} (pyspark>={line.min_pyspark}) with delta-spark {', '.join(line.delta)}"
                     for line in SPARK_LINES)


@dataclass(frozen=True)
class Stack:
    """The installed pair and the jars that match it."""

    pyspark: str
    delta: str
    line: SparkLine
    hadoop: str

    @property
    def delta_package(self) -> str:
        if version_tuple(self.delta) >= version_tuple(PER_LINE_ARTIFACT_FROM):
            return f"io.delta:delta-spark_{self.line.spark}_{SCALA}:{self.delta}"
        return f"io.delta:delta-spark_{SCALA}:{self.delta}"

    @property
    def dynamodb_log_store_package(self) -> str:
        return f"io.delta:delta-storage-s3-dynamodb:{self.delta}"

    @property
    def object_store_packages(self) -> dict[str, str]:
        """Hadoop's file system of each object-store scheme, for this Hadoop."""
        azure = f"org.apache.hadoop:hadoop-azure:{self.hadoop}"
        return {"s3a": f"org.apache.hadoop:hadoop-aws:{self.hadoop}", "abfs": azure, "abfss": azure,
                "gs": GCS_CONNECTOR}

    @property
    def vacuum_ignores_retain(self) -> bool:
        return version_tuple(self.delta) >= version_tuple(RETAIN_IGNORED_FROM)

    @property
    def tested(self) -> bool:
        return (self.pyspark, self.delta) in TESTED


def find_line(pyspark_version: str, delta_version: str) -> SparkLine:
    """The row of ``SPARK_LINES`` that holds this pair; an unsupported pair is one line naming the supported."""
    for line in SPARK_LINES:
        if spark_line(pyspark_version) == line.spark:
            if version_tuple(pyspark_version) >= version_tuple(line.min_pyspark) and delta_version in line.delta:
                return line
            break
    raise DistunlearnError(f"pyspark {pyspark_version} with delta-spark {delta_version} is not a supported "
                           f"combination; supported: {supported_text()}")


def spark_home() -> Path:
    """The Spark that a local session starts: ``$SPARK_HOME`` if set, else the pip pyspark's folder."""
    if os.environ.get("SPARK_HOME"):
        return Path(os.environ["SPARK_HOME"])
    return Path(require_pyspark().__file__).resolve().parent


def shipped_hadoop(home: Path | None = None) -> str | None:
    """The Hadoop release Spark ships, from its ``jars/hadoop-client-api-<version>.jar``."""
    jars = (home or spark_home()) / "jars"
    for jar in sorted(jars.glob("hadoop-client-api-*.jar")) if jars.is_dir() else ():
        found = re.fullmatch(r"hadoop-client-api-(\d+\.\d+\.\d+)\.jar", jar.name)
        if found:
            return found.group(1)
    return None


def installed_hadoop() -> str:
    """The Hadoop of the Spark a local session starts: its ``hadoop-client-api`` jar, else the table's entry
    for the installed pyspark's line (delta-spark is not needed: a cluster's driver may have only Delta's jars)."""
    shipped = shipped_hadoop()
    if shipped:
        return shipped
    version = require_pyspark().__version__
    for line in SPARK_LINES:
        if spark_line(version) == line.spark:
            return line.hadoop
    raise DistunlearnError(f"no Hadoop jar in {spark_home() / 'jars'} and pyspark {version} is on no supported "
                           f"Spark line; supported: {supported_text()}")


def object_store_packages() -> dict[str, str]:
    """Hadoop's file system of each object-store scheme, for the Hadoop of the installed Spark."""
    azure = f"org.apache.hadoop:hadoop-azure:{installed_hadoop()}"
    return {"s3a": f"org.apache.hadoop:hadoop-aws:{installed_hadoop()}", "abfs": azure, "abfss": azure,
            "gs": GCS_CONNECTOR}


def installed_stack() -> Stack:
    """The installed pyspark and delta-spark, checked against ``SPARK_LINES``, with the jars they need."""
    pyspark = require_pyspark()
    delta = installed_version("delta-spark")
    if delta is None:
        raise DistunlearnError(f"a local Spark session needs delta-spark beside pyspark {pyspark.__version__}: "
                               f"{LOCAL_EXTRA}, or pip install the delta-spark of your Spark line "
                               f"(supported: {supported_text()})")
    line = find_line(pyspark.__version__, delta)
    return Stack(pyspark.__version__, delta, line, shipped_hadoop() or line.hadoop)


def describe(stack: Stack) -> dict:
    """What a report records of the stack."""
    return {"pyspark": stack.pyspark, "delta_spark": stack.delta, "hadoop": stack.hadoop,
            "delta_package": stack.delta_package, "tested": stack.tested}


def stack_for(pyspark_version: str | None = None, delta_version: str | None = None) -> Stack:
    """The installed stack, or the one of the versions given (a cluster's, without installing them)."""
    if pyspark_version is None and delta_version is None:
        return installed_stack()
    pyspark_version = pyspark_version or require_pyspark().__version__
    delta_version = delta_version or installed_version("delta-spark") or ""
    line = find_line(pyspark_version, delta_version)
    return Stack(pyspark_version, delta_version, line, line.hadoop)


DELTA_POM = """<?xml version="1.0" encoding="UTF-8"?>
<!-- Delta's jars for an air-gapped cluster on Spark {line} (pyspark {pyspark}, delta-spark {delta}), written by
     python -m distunlearn.spark.stack --pom; fetch them with
       mvn -q -f delta-jars.pom dependency:copy-dependencies -DoutputDirectory=jars
     then list every jar in jars/ in spark.jars (see conf/spark-defaults.conf). -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>distunlearn</groupId>
  <artifactId>delta-jars</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>{group}</groupId>
      <artifactId>{artifact}</artifactId>
      <version>{delta}</version>
      <exclusions>
        <!-- Spark brings its own Scala library -->
        <exclusion><groupId>org.scala-lang</groupId><artifactId>scala-library</artifactId></exclusion>
      </exclusions>
    </dependency>
  </dependencies>
</project>
"""


def main(argv: list[str] | None = None) -> int:
    """``python -m distunlearn.spark.stack``: the supported combinations and the jars of a stack."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m distunlearn.spark.stack",
                                     description="Supported Spark/Delta combinations and the Maven jars of one "
                                                 "(default: the installed pyspark and delta-spark).")
    parser.add_argument("--pyspark", help="a cluster's Spark version instead of the installed pyspark's")
    parser.add_argument("--delta", help="a cluster's Delta version instead of the installed delta-spark's")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--packages", nargs="*", metavar="SCHEME",
                      help="print spark.jars.packages: Delta and the connectors of these schemes (s3a, abfss, gs)")
    what.add_argument("--properties", metavar="FILE",
                      help="print FILE (a spark-submit properties file) with the matching spark.jars.packages")
    what.add_argument("--pom", action="store_true", help="print a Maven POM of Delta's jars (air-gapped clusters)")
    args = parser.parse_args(argv)
    try:
        if args.packages is None and args.properties is None and not args.pom:
            for line in SPARK_LINES:
                print(f"Spark {line.spark}: pyspark>={line.min_pyspark}, Hadoop {line.hadoop}, "
                      f"delta-spark {', '.join(line.delta)}")
            print("tested by make test: " + "; ".join(f"pyspark {p} + delta-spark {d}" for p, d in TESTED))
            try:
                stack = stack_for(args.pyspark, args.delta)
            except DistunlearnError as exc:
                print(f"this stack: {exc}")
                return 1
            print(f"this stack: pyspark {stack.pyspark} + delta-spark {stack.delta} (Hadoop {stack.hadoop}): "
                  f"{stack.delta_package}")
            return 0
        stack = stack_for(args.pyspark, args.delta)
        if args.pom:
            group, artifact = stack.delta_package.split(":")[:2]
            print(DELTA_POM.format(line=stack.line.spark, pyspark=stack.pyspark, delta=stack.delta, group=group,
                                   artifact=artifact), end="")
            return 0
        schemes = args.packages or []
        unknown = [s for s in schemes if s not in stack.object_store_packages]
        if unknown:
            raise DistunlearnError(f"unknown scheme {unknown[0]!r}; known: {', '.join(stack.object_store_packages)}")
        packages = ",".join(dict.fromkeys([stack.delta_package, *(stack.object_store_packages[s] for s in schemes)]))
        if args.properties:
            with open(args.properties, encoding="utf-8") as f:
                text = f.read()
            print(f"# Spark {stack.line.spark} (pyspark {stack.pyspark}) with delta-spark {stack.delta}: written by "
                  f"python -m distunlearn.spark.stack --properties {args.properties}")
            print(f"spark.jars.packages                 {packages}")
            print(text, end="")
            return 0
        print(packages)
        return 0
    except DistunlearnError as exc:
        print(f"distunlearn: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
