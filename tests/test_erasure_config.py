"""The erasure config, checked before any Spark work: one clear line for each mistake; and the table
retention read from a Delta property."""
from __future__ import annotations

import pytest

from distunlearn.erasure.config import ErasureConfig
from distunlearn.errors import DistunlearnError
from distunlearn.spark.purge import table_retention_hours

BASE = '''
requests = "/lake/requests"
[tables.posts]
source = "/lake/posts"
key = "author_id"
'''


def load(tmp_path, text: str) -> ErasureConfig:
    path = tmp_path / "erasure.toml"
    path.write_text(text)
    return ErasureConfig.load(str(path))


def test_defaults_and_order(tmp_path):
    config = load(tmp_path, BASE + '''
[tables.embeddings]
source = "/lake/embeddings"
key = "post_id"
via = "posts"
[tables.events]
source = "/lake/events"
key = "user_id"
''')
    assert [t.name for t in config.order] == ["embeddings", "posts", "events"]   # keyed through posts: first
    assert config.table("embeddings").via_column == "post_id"
    assert config.ledger_table.location == "/lake/distunlearn_ledger"
    assert config.status_table.location == "/lake/distunlearn_erasure_status"
    assert (config.subject_col, config.received_col, config.due_days) == ("user_id", "received_at", 30)


@pytest.mark.parametrize("extra, message", [
    ('[tables.e]\nsource = "/lake/e"\nkey = "k"\nvia = "nowhere"\n', "tables.e.via names 'nowhere'"),
    ('[tables.e]\nsource = "/lake/e"\nkey = "k"\nvia = "e"\n', "tables.e.via names 'e'"),
    ('[tables.e]\nsource = "/lake/e"\nkey = "k"\nvia = "posts"\n[tables.f]\nsource = "/lake/f"\nkey = "k"\nvia = "e"\n',
     "one join is supported"),
    ('[tables.e]\nsource = "/lake/e"\n', "tables.e needs key"),
    ('[tables.e]\nsource = "/lake/e"\nkey = "k"\nretention_hours = 0\n', "only_writer = true"),
    ('[tables.e]\nsource = "/lake/e"\nkey = "k"\nretention_hours = -1\nonly_writer = true\n', "a number >= 0"),
    ('[tables.e]\nsource = "/lake/e"\nkey = "k"\ncolour = "red"\n', "unknown key(s): colour"),
    ('[tables.e]\nsource = "/lake/e"\nkey = "k"\n[tables.e.unlearn]\nalpha_rel = 0.5\n', "needs unwanted"),
])
def test_config_mistakes_are_one_line(tmp_path, extra, message):
    with pytest.raises(DistunlearnError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load(tmp_path, BASE + extra)


def test_missing_requests_or_tables(tmp_path):
    with pytest.raises(DistunlearnError, match="needs requests"):
        load(tmp_path, BASE.replace('requests = "/lake/requests"', ""))
    with pytest.raises(DistunlearnError, match=r"\[tables.NAME\]"):
        load(tmp_path, 'requests = "/lake/requests"\n')
    with pytest.raises(DistunlearnError, match="unknown erasure configuration key"):
        load(tmp_path, 'due = 3\n' + BASE)
    with pytest.raises(DistunlearnError, match="due_days"):
        load(tmp_path, 'due_days = 0\n' + BASE)


def test_an_opt_in_lower_retention_is_accepted_with_its_condition(tmp_path):
    config = load(tmp_path, BASE + '[tables.e]\nsource = "/lake/e"\nkey = "k"\nretention_hours = 0\nonly_writer = true\n')
    assert config.table("e").retention_hours == 0


def test_hash_key_is_required(tmp_path, monkeypatch):
    monkeypatch.delenv("DISTUNLEARN_HASH_KEY", raising=False)
    with pytest.raises(DistunlearnError, match="DISTUNLEARN_HASH_KEY"):
        load(tmp_path, BASE).hash_key()


@pytest.mark.parametrize("value, hours", [(None, 168), ("interval 7 days", 168), ("interval 30 days", 720),
                                          ("interval 1 day 12 hours", 36), ("interval 1 seconds", 1 / 3600),
                                          ("INTERVAL 2 WEEKS", 336), ("interval 90 minutes", 1.5)])
def test_table_retention_from_its_property(value, hours):
    properties = {} if value is None else {"delta.deletedFileRetentionDuration": value}
    assert table_retention_hours(properties) == pytest.approx(hours)
