"""Where a table is: a path, a URI or a catalog name, and what Spark can tell about it.

Every flag that takes a table takes one of these. Everything goes through Spark SQL and the
DataFrame reader/writer (no ``os.path``, no ``DeltaTable``, no JVM handle), so it works the same on a
classic session, over Spark Connect and on any file system Spark reaches.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from distunlearn.errors import DistunlearnError, labelled

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def first_line(exc: BaseException) -> str:
    """An error as one line that names its cause (``delta_errors.root_cause``)."""
    from distunlearn.spark.delta_errors import root_cause

    return root_cause(exc)


def _quote_name(name: str) -> str:
    """A catalog name as SQL: each part in backticks (a part may already be quoted)."""
    parts = re.findall(r"`(?:[^`]|``)*`|[^.]+", name)
    if not parts or "".join(parts).replace("`", "") == "" or len(".".join(parts)) != len(name):
        raise DistunlearnError(f"not a table name: {name!r}")
    return ".".join(p if p.startswith("`") else f"`{p}`" for p in parts)


@dataclass(frozen=True)
class TableRef:
    """A table given as a path (``lake/events``, ``/lake/events``), a URI (``file:///lake/events``,
    ``s3a://bucket/events``) or a catalog name (``events``, ``db.events``, ``cat.db.events``).

    Relative and ``file://`` paths resolve to the same absolute path on the machine that runs the
    command, so every form of one table compares equal. A word without ``/`` is a catalog name:
    write ``./events`` for a folder of that name.
    """

    text: str
    location: str           # an absolute path, a URI, or the name as given
    is_name: bool

    @classmethod
    def parse(cls, text: str | os.PathLike) -> "TableRef":
        text = os.fspath(text)
        if not isinstance(text, str) or not text.strip():
            raise DistunlearnError(f"a table is a path, a URI or a catalog name; got {text!r}")
        text = text.strip()
        if text.lower().startswith("file:"):
            path = re.sub(r"^file:(//localhost(?=/)|//(?=/))?", "", text, flags=re.IGNORECASE)
            return cls(text, os.path.normpath(path), False)
        if _SCHEME.match(text):
            return cls(text, text.rstrip("/"), False)
        if "/" in text or "\\" in text or text.startswith((".", "~")):
            return cls(text, os.path.normpath(os.path.abspath(os.path.expanduser(text))), False)
        _quote_name(text)
        return cls(text, text, True)

    def __str__(self) -> str:
        return self.location

    @property
    def sql(self) -> str:
        """The table in SQL: ``delta.`<path>``` or the quoted catalog name."""
        if self.is_name:
            return _quote_name(self.location)
        return "delta.`" + self.location.replace("`", "``") + "`"

    def child(self, suffix: str) -> "TableRef":
        """A sibling table named after this one (``<path><suffix>`` or ``<name><suffix>``)."""
        return TableRef.parse(self.location + suffix) if not self.is_name else TableRef(
            self.text + suffix, self.location + suffix, True)

    def beside(self, name: str) -> "TableRef":
        """A table ``name`` next to this one: in the same folder, or the same database."""
        if self.is_name:
            parts = re.findall(r"`(?:[^`]|``)*`|[^.]+", self.location)
            full = ".".join([*parts[:-1], name])
            return TableRef(full, full, True)
        head = self.location.rstrip("/").rsplit("/", 1)[0] if "/" in self.location else "."
        return TableRef.parse(head + "/" + name)

    # ---------------------------------------------------------------- reading

    def read(self, spark: SparkSession, fmt: str = "delta", version: int | None = None) -> DataFrame:
        if self.is_name:
            return spark.read.option("versionAsOf", version).table(self.location) if version is not None \
                else spark.read.table(self.location)
        reader = spark.read.format(fmt)
        if version is not None:
            reader = reader.option("versionAsOf", version)
        return reader.load(self.location)

    def detail(self, spark: SparkSession) -> dict | None:
        """``DESCRIBE DETAIL`` of the table (format, location, properties, ...): None when no Delta table
        is at a path or no table has the name; a catalog table of another format keeps its ``format``."""
        if self.is_name and not self.exists_in_catalog(spark):
            return None
        try:
            row = spark.sql(f"DESCRIBE DETAIL {self.sql}").first()
        except Exception as exc:  # noqa: BLE001 - "not a Delta table" and "path does not exist" alike
            return {"format": None, "error": first_line(exc)} if self.is_name else None
        detail = row.asDict() if row is not None else None
        if self.is_name or (detail and str(detail.get("format", "")).lower() == "delta"):
            return detail
        return None

    def exists_in_catalog(self, spark: SparkSession) -> bool:
        try:
            return bool(spark.catalog.tableExists(self.location))
        except Exception:  # noqa: BLE001 - e.g. a catalog part that does not exist
            return False

    def is_delta(self, spark: SparkSession) -> bool:
        detail = self.detail(spark)
        return detail is not None and str(detail.get("format", "")).lower() == "delta"

    def holds_data(self, spark: SparkSession) -> bool:
        """Whether anything is stored here: a catalog table of this name, a Delta table, or any file."""
        if self.is_name:
            return self.exists_in_catalog(spark)
        if self.is_delta(spark):
            return True
        try:
            files = spark.read.format("binaryFile").option("recursiveFileLookup", "true").load(self.location)
            return files.select("path").limit(1).count() > 0
        except Exception as exc:  # noqa: BLE001 - nothing stored, or storage that cannot be listed
            if _missing(exc):
                return False
            raise StorageUnreadable(f"cannot list {self.text}: {first_line(exc)}") from None

    def history(self, spark: SparkSession, since: int) -> DataFrame:
        """``DESCRIBE HISTORY`` of the commits from version ``since`` on (bounded: ``LIMIT`` the number of
        versions since then, never the whole log)."""
        latest = self.latest_version(spark)
        count = max(latest - since + 1, 1)
        return spark.sql(f"DESCRIBE HISTORY {self.sql} LIMIT {count}").where(F.col("version") >= since)

    def latest_version(self, spark: SparkSession) -> int:
        return int(spark.sql(f"DESCRIBE HISTORY {self.sql} LIMIT 1").select("version").first()[0])

    def commit_actions(self, spark: SparkSession, location: str, versions: list[int]) -> DataFrame:
        """The actions of the commit files of ``versions`` in the log at ``location`` (a Delta table's
        storage root, from ``DESCRIBE DETAIL``): one JSON line each, with its ``version``."""
        paths = [f"{location.rstrip('/')}/_delta_log/{v:020d}.json" for v in versions]
        return spark.read.text(paths).select(
            F.regexp_extract(F.input_file_name(), r"(\d+)\.json$", 1).cast("long").alias("version"),
            F.col("value"))

    def require_delta(self, spark: SparkSession, label: str) -> dict:
        """DESCRIBE DETAIL of the Delta table, or one clear error naming ``label`` (a parameter as
        ``"{source}"``, or a label such as ``tables.posts``: ``errors.labelled``)."""
        detail = self.detail(spark)
        if detail is None and self.is_name:
            hint = "" if "." in self.text else f" (a word without '/' is a catalog name: write ./{self.text} for a folder)"
            raise labelled(f"{label} not found in the catalog: {self.text}{hint}", label)
        if detail is None and not self.holds_data(spark):
            raise labelled(f"{label} not found: {self.text}", label)
        if detail is None or str(detail.get("format", "")).lower() != "delta":
            why = f" ({detail['error']})" if detail and detail.get("error") else ""
            raise labelled(f"{label} {self.text} is not a Delta table{why}", label)
        return detail

    # ---------------------------------------------------------------- writing

    def check_writable(self, spark: SparkSession, label: str) -> None:
        """A new table by name needs its database (schema) to exist; one clear error otherwise."""
        if not self.is_name:
            return
        parts = re.findall(r"`(?:[^`]|``)*`|[^.]+", self.location)
        if len(parts) < 2:
            return
        database = ".".join(parts[:-1])
        try:
            exists = spark.catalog.databaseExists(database.replace("`", ""))
        except Exception:  # noqa: BLE001 - a catalog part the session does not know
            exists = False
        if not exists:
            raise labelled(f"{label} {self.text} cannot be written: database {database} does not exist", label)

    def save(self, df: DataFrame, mode: str, **options) -> None:
        """Write ``df`` as Delta here; options (``userMetadata``, ``replaceWhere``, ...) go with this write only.

        A new table by name is created by ``CREATE TABLE ... AS SELECT`` in a session of its own, where the
        commit's ``userMetadata`` is set (Delta takes no writer options for a table it creates by name)."""
        if self.is_name and (mode == "error" or not self.exists_in_catalog(df.sparkSession)):
            self._create_as(df, options.get("userMetadata"))
            return
        writer = df.write.format("delta").mode(mode)
        for key, value in options.items():
            writer = writer.option(key, value)
        if self.is_name:
            writer.saveAsTable(self.location)
        else:
            writer.save(self.location)

    def _create_as(self, df: DataFrame, user_metadata: str | None) -> None:
        from distunlearn.spark.session import run_session_reading

        conf = {} if user_metadata is None else {"spark.databricks.delta.commitInfo.userMetadata": user_metadata}
        with run_session_reading(df, conf, "distunlearn_rows") as (session, view):
            session.sql(f"CREATE TABLE {self.sql} USING delta AS SELECT * FROM {view}").collect()

    def same_as(self, other: "TableRef", spark: SparkSession | None = None) -> bool:
        """Whether two references are one table (a name is compared by its storage location if known)."""
        if self.location.rstrip("/") == other.location.rstrip("/"):
            return True
        if spark is None or self.is_name == other.is_name:
            return False
        return _storage(self, spark) == _storage(other, spark) is not None


def _storage(ref: TableRef, spark: SparkSession) -> str | None:
    if not ref.is_name:
        return ref.location
    try:
        detail = ref.detail(spark)
    except DistunlearnError:
        return None
    location = (detail or {}).get("location")
    return TableRef.parse(location).location if location else None


class StorageUnreadable(DistunlearnError):
    """Spark could not list or read a table's storage (no access, unknown scheme, missing connector)."""


def _missing(exc: BaseException) -> bool:
    text = str(exc)
    return "PATH_NOT_FOUND" in text or "does not exist" in text.lower()


def table_files(spark: SparkSession, location: str) -> set[str]:
    """Data files under a table's location and its ``_change_data`` folder, as paths relative to it,
    listed through Spark's file system (any scheme Spark reaches). Raises ``StorageUnreadable`` when the
    location cannot be listed; a missing ``_change_data`` folder is no error."""
    root = location.rstrip("/")
    found: set[str] = set()
    for folder in (root, root + "/_change_data"):
        try:
            paths = spark.read.format("binaryFile").option("recursiveFileLookup", "true").load(folder) \
                .select(F.col("path")).collect()
        except Exception as exc:  # noqa: BLE001 - examined below
            if folder != root and _missing(exc):
                continue
            raise StorageUnreadable(f"cannot list {folder}: {first_line(exc)}") from None
        found.update(_relative(r["path"], root) for r in paths)
    return found


def _relative(path: str, root: str) -> str:
    from urllib.parse import unquote

    bare = lambda p: re.sub(r"^file:(//)?", "", unquote(p))  # noqa: E731
    path, root = bare(path), bare(root)
    return path[len(root):].lstrip("/") if path.startswith(root) else path
