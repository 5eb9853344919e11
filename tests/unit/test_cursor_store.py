"""Issue 3: the cursor record and resuming from it."""

from __future__ import annotations

import orjson
import pytest

from producers.cursor_store import StoredCursor, decode_cursor, encode_cursor, start_position
from producers.publisher import PageBatch
from streamscore.errors import ConfigError
from streamscore.settings import SourceSettings


def test_cursor_round_trips_as_json_keyed_by_source():
    cursor = StoredCursor("tx", "cursor", "czoxMDA", 100, "2026-01-01T00:00:00.000+00:00")
    key, value = encode_cursor(cursor)
    assert key == b"tx"
    assert orjson.loads(value)["position"] == "czoxMDA"
    assert decode_cursor(value) == cursor
    assert decode_cursor(encode_cursor(StoredCursor("tx", "page", None))[1]).position is None


def test_resume_from_the_stored_cursor_or_from_the_start():
    source = SourceSettings(name="tx", pagination="offset")
    assert start_position(source, None) == StoredCursor("tx", "offset", None)
    stored = StoredCursor("tx", "offset", "3000", 3000)
    assert start_position(source, stored) is stored


def test_a_cursor_of_another_pagination_kind_stops_the_poller():
    with pytest.raises(ConfigError, match="stored cursor is for pagination 'cursor'"):
        start_position(SourceSettings(name="tx", pagination="page"), StoredCursor("tx", "cursor", "abc"))


def test_merged_pages_carry_the_later_cursor():
    first = PageBatch(StoredCursor("tx", "cursor", "a", 2), [(b"1", b"x"), (b"2", b"y")])
    second = PageBatch(StoredCursor("tx", "cursor", "b", 3), [(b"3", b"z")])
    merged = first.merge(second)
    assert merged.cursor.position == "b" and [k for k, _ in merged.records] == [b"1", b"2", b"3"]
