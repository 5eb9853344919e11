"""Issue 3: pagination strategies, Link header parsing and the no-progress guard."""

from __future__ import annotations

import pytest

from producers.pagination import NoProgressGuard, Step, parse_link_header, strategy_for
from streamscore.settings import SourceSettings

URL = "http://api.test/transactions"


def src(**kw) -> SourceSettings:
    return SourceSettings(name="s", url=URL, page_size=100, **kw)


def test_body_cursor_sends_the_cursor_and_reads_the_next_one_at_its_path():
    s = strategy_for(
        src(pagination="cursor", cursor_path="meta.next", cursor_param="after", params={"x": "1"})
    )
    assert s.request(None).params == {"x": "1", "limit": "100"}
    assert s.request("abc").params == {"x": "1", "limit": "100", "after": "abc"}
    assert s.step("abc", {"meta": {"next": "def"}}, {}, 100, URL) == Step("def", False)
    # no cursor in the body: the API says this was the end; stay and ask again later
    assert s.step("abc", {"meta": {}}, {}, 3, URL) == Step("abc", True)
    assert s.step("abc", {"meta": {"next": None}}, {}, 0, URL) == Step("abc", True)
    assert s.step(None, {"meta": {"next": 42}}, {}, 100, URL) == Step("42", False)


def test_link_header_follows_rel_next_and_resolves_relative_urls():
    s = strategy_for(src(pagination="link"))
    assert s.request(None).url == URL and s.request(None).params == {"limit": "100"}
    nxt = "http://api.test/transactions?cursor=zz&limit=100"
    assert s.request(nxt).url == nxt and s.request(nxt).params == {}
    headers = {"Link": '<http://api.test/t?p=1>; rel="prev", </transactions?cursor=zz&limit=100>; rel="next"'}
    assert s.step(None, {}, headers, 100, URL) == Step(nxt, False)
    assert s.step(nxt, {}, {}, 10, nxt) == Step(nxt, True)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('<https://a/x?page=2>; rel="next"', {"next": "https://a/x?page=2"}),
        ("<https://a/x?page=2>; rel=next", {"next": "https://a/x?page=2"}),
        (
            '<https://a/1>; rel="prev first", <https://a/3>; title="t"; rel="next"',
            {"prev": "https://a/1", "first": "https://a/1", "next": "https://a/3"},
        ),
        ("", {}),
        ("garbage", {}),
    ],
)
def test_link_header_parsing(value, expected):
    assert parse_link_header(value) == expected


def test_page_number_moves_on_after_a_full_page_only():
    s = strategy_for(src(pagination="page", page_param="p", first_page=1))
    assert s.request(None).params == {"limit": "100", "p": "1"}
    assert s.step(None, {}, {}, 100, URL) == Step("2", False)
    assert s.step("2", {}, {}, 40, URL) == Step("2", True)
    assert s.request("2").params["p"] == "2"


def test_offset_limit_moves_by_page_size_after_a_full_page_only():
    s = strategy_for(src(pagination="offset", offset_param="skip", limit_param="take"))
    assert s.request(None).params == {"take": "100", "skip": "0"}
    # an overlapping page carries more than page_size records: still advance by page_size
    assert s.step("200", {}, {}, 105, URL) == Step("300", False)
    assert s.step("300", {}, {}, 7, URL) == Step("300", True)


def test_guard_refuses_a_cursor_that_does_not_advance():
    guard = NoProgressGuard(page_size=100)
    assert guard.check("c1", Step("c2", False), ("a", "b", 100)) is None
    guard.accept("c1", ("a", "b", 100))
    assert "did not advance" in guard.check("c2", Step("c2", False), ("c", "d", 100))
    # an empty page at the end is being caught up, not stuck
    assert guard.check("c2", Step("c2", False), (None, None, 0)) is None


def test_guard_lets_a_partial_page_keep_its_cursor():
    guard = NoProgressGuard(page_size=100)
    guard.accept("c1", ("a", "b", 100))
    # caught up: nothing newer, or only a stray bad record (no id), and the same cursor back
    assert guard.check("c2", Step("c2", False), (None, None, 1)) is None
    assert guard.check("c2", Step("c2", False), ("x", "y", 40)) is None


def test_guard_refuses_a_cursor_that_comes_back():
    guard = NoProgressGuard(page_size=100)
    for pos, nxt, fp in [("c1", "c2", ("a", "b", 10)), ("c2", "c3", ("c", "d", 10))]:
        assert guard.check(pos, Step(nxt, False), fp) is None
        guard.accept(pos, fp)
    assert "already visited" in guard.check("c3", Step("c1", False), ("e", "f", 10))


def test_guard_refuses_a_page_that_repeats_the_previous_one():
    guard = NoProgressGuard(page_size=100)
    guard.accept("1", ("a", "b", 100))
    # page 2 answered with page 1's records: moving on to 3 would skip page 2
    assert "repeats" in guard.check("2", Step("3", False), ("a", "b", 100))
    assert guard.check("2", Step("3", False), ("c", "d", 100)) is None


def test_guard_lets_the_same_partial_page_be_reread():
    guard = NoProgressGuard(page_size=100)
    guard.accept("5", ("a", "b", 40))
    assert guard.check("5", Step("5", True), ("a", "b", 40)) is None
    guard.reset()
    assert guard.last_fingerprint is None
