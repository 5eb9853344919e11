"""Issue 3: records are cut out of the page text exactly as received."""

from __future__ import annotations

import json

import pytest

from producers.extract import PageParseError, get_path, parse_page, record_time, split_path


def test_payload_is_the_exact_text_of_each_record():
    recs = ['{"id": "a", "amount": 12.30}', '{ "id":"b","n":1e3,"s":"\\u00e9"}', '{"id":"c","dup":1,"dup":2}']
    body = '{"meta": {"next": "x"},\n "data" : [ ' + " ,\n".join(recs) + ' ], "has_more": false}'
    decoded, items = parse_page(body.encode(), ("data",))
    assert [i.text for i in items] == recs  # number format, escapes, duplicate keys: all kept
    assert [i.value["id"] for i in items] == ["a", "b", "c"]
    assert decoded["meta"]["next"] == "x" and decoded["has_more"] is False
    assert decoded["data"][1]["s"] == "é"


def test_nested_records_path_and_top_level_array():
    _, items = parse_page(b'{"result": {"items": [1, "x", {"id": 2}]}}', split_path("result.items"))
    assert [i.text for i in items] == ["1", '"x"', '{"id": 2}']
    _, items = parse_page(b'[{"id": 1}, {"id": 2}]', ())
    assert [i.value for i in items] == [{"id": 1}, {"id": 2}]
    _, items = parse_page(b'{"data": null}', ("data",))
    assert items == []


@pytest.mark.parametrize(
    "body",
    [
        b'{"data": [{"id": 1}, {"id": 2}',  # truncated
        b'{"data": [{"id": 1}], "next": "a"',  # truncated after the records
        b'{"data": [{"id": 1}]} trailing',
        b'{"data": {"id": 1}}',  # not an array
        b'{"items": []}',  # records path missing
        b"<html>502 Bad Gateway</html>",
        b"",
        b'{"data": [{"id": 1},]}',
        b"\xff\xfe",
    ],
)
def test_broken_pages_raise(body):
    with pytest.raises(PageParseError):
        parse_page(body, ("data",))


def test_agrees_with_json_loads_on_generated_pages():
    from producers.demo_api.generator import generate

    recs = [json.dumps(r) for r, _ in generate(300, 5)]
    body = '{"data": [' + ", ".join(recs) + '], "next_cursor": "abc"}'
    decoded, items = parse_page(body, ("data",))
    assert decoded == json.loads(body)
    assert [i.text for i in items] == recs


def test_get_path():
    assert get_path({"a": {"b": 3}}, ("a", "b")) == 3
    assert get_path({"a": [1]}, ("a", "b")) is None
    assert get_path({"a": None}, ("a", "b")) is None


@pytest.mark.parametrize(
    "value",
    [
        "2025-01-06T10:00:00Z",
        "2025-01-06T10:00:00.000Z",
        "2025-01-06T12:00:00+02:00",
        1736157600,
        1736157600000,
        "1736157600",
        "2025-01-06 10:00:00",
        "Mon, 06 Jan 2025 10:00:00 +0000",
    ],
)
def test_record_time_reads_every_served_format(value):
    assert record_time(value) == 1736157600.0


@pytest.mark.parametrize("value", [None, True, "", "yesterday", {"t": 1}])
def test_record_time_of_garbage_is_none(value):
    assert record_time(value) is None
