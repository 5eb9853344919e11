"""Issue 7: replay and tail against the real Kafka and Apicurio registry of the local stack."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from typer.testing import CliRunner

from streamscore.analyst.tail import TailRequest, tail
from streamscore.avro import AvroCodec
from streamscore.cli import app
from streamscore.kafka_config import admin_config, consumer_config
from streamscore.registry import SchemaRegistry
from streamscore.topics import clean_topic
from tests.integration.conftest_analyst import (
    analyst_settings,
    cli_env,
    create_topic,
    ms,
    produce,
    transaction,
    utc_ms,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("stack")]
runner = CliRunner()
BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
FROM, TO = BASE + timedelta(seconds=3), BASE + timedelta(seconds=8)


@pytest.fixture(scope="module")
def topic_data(tmp_path_factory, stack):
    """clean.<source> with 3 partitions: record i at BASE + i s in partition i % 3, plus one record
    with an earlier timestamp (BASE + 1.5 s) written into partition 0 between i=3 and i=6."""
    source = f"rp{uuid.uuid4().hex[:10]}"
    settings = analyst_settings(tmp_path_factory.mktemp("replay"), source)
    topic = clean_topic(source)
    create_topic(settings, topic)
    codec = AvroCodec.for_topic(SchemaRegistry(settings.registry), topic, "Transaction")
    txns = [transaction(i, source, BASE + timedelta(seconds=i)) for i in range(12)]
    late = transaction(99, source, BASE)
    order = [*txns[:6], late, *txns[6:]]
    times = {t["transaction_id"]: ms(BASE) + 1000 * i for i, t in enumerate(txns)} | {
        late["transaction_id"]: ms(BASE) + 1500
    }
    parts = {t["transaction_id"]: i % 3 for i, t in enumerate(txns)} | {late["transaction_id"]: 0}
    produce(
        settings,
        topic,
        [
            (t["transaction_id"], codec.encode(t), parts[t["transaction_id"]], times[t["transaction_id"]])
            for t in order
        ],
    )
    return settings, topic, txns, times


def _window_ids(txns, times, start, end):
    return {t["transaction_id"] for t in txns if ms(start) <= times[t["transaction_id"]] < ms(end)}


def test_time_window_is_exact_and_pipeline_offsets_are_untouched(topic_data, tmp_path):
    settings, topic, txns, times = topic_data
    group = f"pipeline-{uuid.uuid4().hex[:8]}"
    committed_before = [TopicPartition(topic, 0, 2), TopicPartition(topic, 1, 1), TopicPartition(topic, 2, 3)]
    pipeline = Consumer(consumer_config(settings, group, "test"))
    pipeline.commit(offsets=committed_before, asynchronous=False)
    pipeline.close()

    out = tmp_path / "window.jsonl"
    args = ["replay", topic, "--from", FROM.isoformat(), "--to", TO.isoformat(), "--out", str(out), "-q"]
    result = runner.invoke(app, args, env=cli_env(settings))
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]

    assert {r["transaction_id"] for r in rows} == _window_ids(txns, times, FROM, TO)  # --from in, --to out
    assert len(rows) == 5
    for r in rows:
        assert r["_timestamp"] == utc_ms(times[r["_key"]]).isoformat(timespec="milliseconds")
        assert r["_key"] == r["transaction_id"]
    by_partition = {}
    for r in rows:
        by_partition.setdefault(r["_partition"], []).append(r["_offset"])
    assert all(offsets == sorted(offsets) for offsets in by_partition.values())

    check = Consumer(consumer_config(settings, group, "test"))
    after = check.committed([TopicPartition(topic, p) for p in range(3)], timeout=10)
    check.close()
    assert [(tp.partition, tp.offset) for tp in after] == [
        (tp.partition, tp.offset) for tp in committed_before
    ]
    groups = AdminClient(admin_config(settings)).list_consumer_groups(request_timeout=10).result()
    assert not [g.group_id for g in groups.valid if g.group_id.startswith("_streamscore-replay")]


def test_parquet_keeps_the_avro_types(topic_data, tmp_path):
    settings, topic, txns, times = topic_data
    out = tmp_path / "all.parquet"
    args = ["replay", topic, "--from", "0", "--format", "parquet", "--out", str(out), "-q"]
    result = runner.invoke(app, args, env=cli_env(settings))
    assert result.exit_code == 0, result.output
    table = pq.read_table(out)
    assert table.num_rows == len(txns) + 1
    schema = table.schema
    assert schema.field("event_time").type == pa.timestamp("ms", tz="UTC")
    assert schema.field("_timestamp").type == pa.timestamp("ms", tz="UTC")
    lists = schema.field("imputed_fields").type
    assert pa.types.is_list(lists) and lists.value_type == pa.string()
    assert schema.field("amount").type == pa.float64()
    assert schema.field("card_present").type == pa.bool_()
    assert schema.field("_offset").type == pa.int64()
    rows = {r["transaction_id"]: r for r in table.to_pylist()}
    for t in txns:
        got = rows[t["transaction_id"]]
        assert got["event_time"] == t["event_time"] and got["imputed_fields"] == t["imputed_fields"]
        assert got["merchant_id"] == t["merchant_id"] and got["_timestamp"] == utc_ms(
            times[t["transaction_id"]]
        )


def test_offset_bounds_partition_and_key(topic_data):
    settings, topic, txns, _ = topic_data
    args = ["replay", topic, "--from", "1", "--to", "3", "--partition", "1", "-q"]
    result = runner.invoke(app, args, env=cli_env(settings))
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["_partition"], r["_offset"]) for r in rows] == [(1, 1), (1, 2)]
    assert [r["transaction_id"] for r in rows] == [txns[4]["transaction_id"], txns[7]["transaction_id"]]

    key = txns[10]["transaction_id"]  # settings of another source: no contract, the writer schema decodes
    other = cli_env(settings) | {"STREAMSCORE_SOURCES": '[{"name": "elsewhere"}]'}
    result = runner.invoke(app, ["replay", topic, "--from", "0", "--key", key, "-f", "csv", "-q"], env=other)
    assert result.exit_code == 0, result.output
    header, line = result.stdout.splitlines()
    assert header.startswith("_partition,_offset,_timestamp,_key,transaction_id") and key in line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["replay", "no.such.{u}", "--from", "-1h"], "unknown topic"),
        (["replay", "{topic}", "--from", "2999-01-01T00:00:00Z"], "in the future"),
        (["replay", "{topic}", "--from", "-1h", "--to", "-2h"], "must be before --to"),
        (["replay", "{topic}", "--from", "-1h", "--format", "xml"], "'xml' is not one of"),
        (["replay", "{topic}", "--from", "next tuesday"], "neither an offset"),
        (["replay", "{topic}", "--from", "0", "--partition", "7"], "has no partition 7"),
        (["tail", "no.such.{u}"], "unknown topic"),
    ],
)
def test_bad_input_exits_non_zero_and_writes_nothing(topic_data, tmp_path, args, message):
    settings, topic, _, _ = topic_data
    out = tmp_path / "out.parquet"
    argv = [a.format(topic=topic, u=uuid.uuid4().hex[:6]) for a in args]
    if argv[0] == "replay":
        argv += ["--out", str(out), "--format", "parquet"] if "--format" not in argv else ["--out", str(out)]
    result = runner.invoke(app, argv, env=cli_env(settings))
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert list(tmp_path.iterdir()) == []


def test_tail_shows_new_records_only(topic_data):
    settings, topic, _, _ = topic_data
    codec = AvroCodec.for_topic(SchemaRegistry(settings.registry), topic, "Transaction")
    fresh = [
        transaction(200 + i, settings.sources[0].name, datetime.now(UTC).replace(microsecond=0))
        for i in range(2)
    ]
    out = io.StringIO()

    def produce_fresh() -> None:
        produce(
            settings,
            topic,
            [(t["transaction_id"], codec.encode(t), i, ms(t["event_time"])) for i, t in enumerate(fresh)],
        )

    assert tail(settings, TailRequest(topic, limit=2), out=out, on_ready=produce_fresh) == 2
    shown = [json.loads(line)["transaction_id"] for line in out.getvalue().splitlines()]
    assert sorted(shown) == sorted(t["transaction_id"] for t in fresh)


def test_tail_ctrl_c_exits_zero(topic_data):
    settings, topic, _, _ = topic_data
    env = os.environ | cli_env(settings)
    cmd = [sys.executable, "-m", "streamscore.cli", "tail", topic, "--from-beginning"]
    child = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_default_sigint
    )
    try:
        first = json.loads(child.stdout.readline())  # records are flowing: the consumer is running
        assert first["_offset"] == 0
        child.send_signal(signal.SIGINT)
        assert child.wait(timeout=15) == 0, child.stderr.read()
    finally:
        child.kill()


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # background shells start children with SIGINT ignored
