"""Failed Delta commands as one line: the conflict's other commit, a storage failure's cause, never a bare
``An error occurred while calling oNNN.sql``. The texts are as classic PySpark prints them."""
from __future__ import annotations

from distunlearn.spark.delta_errors import conflict_line, conflicting_commit, is_conflict, root_cause

CONFLICT = """An error occurred while calling o50.sql.
: io.delta.exceptions.ConcurrentAppendException: [DELTA_CONCURRENT_APPEND] ConcurrentAppendException: Files were added to the root of the table by a concurrent update. Please try the operation again.
Conflicting commit: {"timestamp":1796618759241,"operation":"WRITE","operationParameters":{"mode":Append},"operationMetrics":{"num_added_rows":"200"},"engineInfo":"delta-rs:py-1.6.6"}
Refer to https://docs.delta.io/latest/concurrency-control.html for more details.
\tat org.apache.spark.sql.delta.DeltaErrorsBase.concurrentAppendException(DeltaErrors.scala:2552)"""

TIMEOUT = """An error occurred while calling o655.sql.
: org.apache.spark.SparkException: Job aborted due to stage failure: Task 0 in stage 12.0 failed 1 times
\tat org.apache.spark.scheduler.DAGScheduler.failJobAndIndependentStages(DAGScheduler.scala:2856)
Caused by: java.io.InterruptedIOException: getFileStatus on s3a://lake/events/part-0.parquet: software.amazon.awssdk.core.exception.ApiCallTimeoutException: Client execution did not complete before the specified timeout configuration: 60000 millis
\tat org.apache.hadoop.fs.s3a.S3AUtils.translateInterruptedException(S3AUtils.java:395)
Caused by: software.amazon.awssdk.core.exception.ApiCallTimeoutException: Client execution did not complete before the specified timeout configuration: 60000 millis
\tat software.amazon.awssdk.core.exception.ApiCallTimeoutException$BuilderImpl.build(ApiCallTimeoutException.java:97)"""

JVM_ONLY = """An error occurred while calling o633.sql.
: java.lang.IllegalStateException: the table changed its schema
\tat org.apache.spark.sql.delta.Foo.bar(Foo.scala:1)"""


class JavaError(Exception):
    pass


def test_a_conflict_names_the_other_commit():
    exc = JavaError(CONFLICT)
    assert is_conflict(exc)
    assert conflicting_commit(exc)["timestamp"] == 1796618759241
    assert conflict_line(exc, 212) == "ConcurrentAppendException with WRITE, version 212, by delta-rs:py-1.6.6"
    assert conflict_line(exc) == "ConcurrentAppendException with WRITE, by delta-rs:py-1.6.6"


def test_a_storage_failure_names_its_cause():
    exc = JavaError(TIMEOUT)
    assert not is_conflict(exc)
    assert root_cause(exc) == ("ApiCallTimeoutException: Client execution did not complete before the specified "
                               "timeout configuration: 60000 millis")


def test_a_jvm_error_names_its_exception_not_the_call():
    assert root_cause(JavaError(JVM_ONLY)) == "IllegalStateException: the table changed its schema"
    assert root_cause(ValueError("plain message\nmore")) == "plain message"
