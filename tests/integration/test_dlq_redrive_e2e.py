"""`streamscore dlq redrive` of a record whose cause was fixed brings it into MongoDB.

The cause: the sink runs with a document limit too small for one prediction, which it dead-letters
(stage ``sink-data``) while storing the rest. The fix: the sink restarts with the default limit.
The redrive puts the letter's original bytes back on ``predictions.<source>``; the sink stores it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import unique
from tests.integration.sink_support import (
    Predictions,
    SinkRun,
    collection,
    committed_all,
    dead_letters,
    prediction,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("stack"), pytest.mark.timeout(240)]
STREAMSCORE = str(Path(sys.executable).with_name("streamscore"))


def test_redrive_after_fix_lands_in_mongodb(make_settings) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(unique("redrive"))
    source = settings.sources[0].name
    database, group = unique("redrivedb_"), unique("streamscore-sink-redrive-")
    feed = Predictions(settings)
    records = [prediction(source, i) for i in range(5)]
    big = prediction(source, 99, reasons=[f"reason-{i}-" + "x" * 60 for i in range(60)])  # ~4 KiB doc
    feed.send([feed.encode(r) for r in [*records[:3], big, *records[3:]]])
    coll = collection(database)

    strict = SinkRun(settings, database, group, STREAMSCORE_SINK__MAX_DOCUMENT_BYTES="2048").start()
    try:
        wait_until("5 documents", lambda: coll.count_documents({}) >= 5, 120, strict)
        wait_until("committed", lambda: committed_all(settings, group, feed.topic), 60, strict)
        [letter] = dead_letters(settings, expected=1)
        assert letter["stage"] == "sink-data" and letter["record.id"] == big["record_id"]
        assert coll.count_documents({"record_id": big["record_id"]}) == 0
    finally:
        assert strict.stop() == 0, strict.log()

    fixed = SinkRun(settings, database, group).start()  # the fix: default document limit
    try:
        out = subprocess.run(
            [STREAMSCORE, "dlq", "redrive", "--stage", "sink-data", "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            env=os.environ
            | {
                "STREAMSCORE_SOURCES": json.dumps([{"name": source}]),
                "STREAMSCORE_REGISTRY__CACHE_DIR": str(settings.registry.cache_dir),
            },
        )
        assert out.returncode == 0, out.stdout + out.stderr
        [result] = json.loads(out.stdout)
        assert (result["record_id"], result["topic"], result["skipped"]) == (big["record_id"], feed.topic, "")

        wait_until("the redriven document", lambda: coll.count_documents({}) == 6, 120, fixed)
        doc = coll.find_one({"record_id": big["record_id"]})
        assert doc is not None and doc["_id"] == f"{source}:{big['record_id']}:fraud-gbt:1"
        assert doc["reasons"] == big["reasons"]
        assert doc["kafka"]["offset"] == result["offset"]  # stored from the redriven record
        wait_until("committed", lambda: committed_all(settings, group, feed.topic), 60, fixed)
        assert len(dead_letters(settings, expected=1)) == 1  # it did not fail again
    finally:
        assert fixed.stop() == 0, fixed.log()
        coll.database.client.drop_database(database)
