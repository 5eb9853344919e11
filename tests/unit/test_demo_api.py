"""Issue 3: the demo API (in-process, no stack): pagination modes, incremental reads, auth, faults."""

from __future__ import annotations

import asyncio
import json
from email.utils import parsedate_to_datetime

import aiohttp
import pytest

from producers.demo_api.faults import fires
from producers.demo_api.generator import generate, record_id
from producers.demo_api.server import serving
from producers.demo_api.store import decode_cursor, encode_cursor
from producers.pagination import parse_link_header
from streamscore.settings import DemoApiSettings, FaultRule


def cfg(**kw) -> DemoApiSettings:
    return DemoApiSettings(port=0, backlog=kw.pop("backlog", 250), **kw)


async def get(http: aiohttp.ClientSession, url: str, **params) -> tuple[int, dict, bytes]:
    async with http.get(url, params={k: str(v) for k, v in params.items()}) as resp:
        return resp.status, dict(resp.headers), await resp.read()


def ids(body: bytes) -> list[str]:
    return [r["id"] for r in json.loads(body)["data"]]


def test_generator_is_deterministic_and_follows_the_contract():
    a = list(generate(500, 11))
    assert a == list(generate(500, 11)) and a != list(generate(500, 12))
    assert [r["id"] for r, _ in a[:3]] == ["txn_000000000001", "txn_000000000002", "txn_000000000003"]
    fraud = sum(f for _, f in generate(20_000, 3)) / 20_000
    assert 0.01 < fraud < 0.035
    assert all("is_fraud" not in r for r, _ in a)


def test_generator_output_is_pinned():
    """The demo model is trained on this stream: a change must be deliberate (update the hash)."""
    import hashlib

    digest = hashlib.sha256()
    for record, fraud in generate(2000, 42):
        digest.update(json.dumps(record, sort_keys=True).encode())
        digest.update(b"1" if fraud else b"0")
    assert digest.hexdigest() == "3b49d2647486081c3084b7a5162d83574141d1e0de6b94c05ddf47390120c156"


def test_cursor_tokens_round_trip():
    assert decode_cursor(encode_cursor(1234)) == 1234
    with pytest.raises(ValueError):
        decode_cursor("not-a-cursor")


def test_fault_rules_fire_every_nth_in_bursts():
    import random

    rng = random.Random(0)
    rule = FaultRule(every=5, burst=2, after=10)
    assert [n for n in range(1, 31) if fires(rule, n, rng)] == [11, 12, 16, 17, 21, 22, 26, 27]


async def test_the_three_modes_page_through_the_same_records():
    async with serving(cfg()) as (api, url), aiohttp.ClientSession() as http:
        got = {}
        for mode in ("cursor", "page", "offset"):
            seen: list[str] = []
            position: dict = {}
            for i in range(10):
                status, headers, body = await get(http, f"{url}/transactions", limit=100, **position)
                assert status == 200
                data = json.loads(body)
                seen += ids(body)
                if not data["has_more"]:
                    break
                position = {
                    "cursor": {"cursor": data["next_cursor"]},
                    "page": {"page": i + 2},
                    "offset": {"offset": (i + 1) * 100},
                }[mode]
                link = parse_link_header(headers["Link"])["next"]
                assert f"cursor={data['next_cursor']}" in link
            got[mode] = seen
        assert got["cursor"] == got["page"] == got["offset"] == [record_id(i) for i in range(1, 251)]
        assert api.ledger.ids() == got["cursor"]


async def test_since_returns_only_newer_records_as_they_appear():
    live = cfg(backlog=10, rate_per_s=200, max_records=60)
    async with serving(live) as (_, url), aiohttp.ClientSession() as http:
        _, _, body = await get(http, f"{url}/transactions", limit=1000)
        first = json.loads(body)
        assert 10 <= len(first["data"]) < 60
        await asyncio.sleep(0.5)
        _, _, body = await get(http, f"{url}/transactions", since=first["next_cursor"], limit=1000)
        newer = ids(body)
        assert newer and newer[0] == record_id(len(first["data"]) + 1)
        assert record_id(60) == newer[-1]  # capped by max_records
        _, _, body = await get(http, f"{url}/transactions", since=json.loads(body)["next_cursor"])
        assert ids(body) == []


async def test_token_auth():
    async with serving(cfg(token="s3cret")) as (_, url), aiohttp.ClientSession() as http:
        assert (await get(http, f"{url}/transactions"))[0] == 401
        async with http.get(f"{url}/transactions", headers={"Authorization": "Bearer s3cret"}) as r:
            assert r.status == 200
        async with http.get(f"{url}/transactions", headers={"X-API-Key": "s3cret"}) as r:
            assert r.status == 200
        async with http.get(f"{url}/transactions", headers={"X-API-Key": "wrong"}) as r:
            assert r.status == 401


@pytest.mark.parametrize("form", ["seconds", "http-date"])
async def test_throttle_answers_429_with_retry_after(form):
    faults = {"throttle": {"every": 2, "after": 1}, "retry_after_s": 3, "retry_after_form": form}
    async with serving(cfg(faults=faults)) as (api, url), aiohttp.ClientSession() as http:
        assert (await get(http, f"{url}/transactions"))[0] == 200
        status, headers, _ = await get(http, f"{url}/transactions")
        assert status == 429
        value = headers["Retry-After"]
        if form == "seconds":
            assert value == "3"
        else:
            assert parsedate_to_datetime(value).tzinfo is not None
        assert api.ledger.faults == {"throttle": 1}


async def test_errors_drops_and_truncation():
    faults = {
        "truncate": {"every": 100, "after": 2},
        "error": {"every": 100, "after": 3},
        "drop": {"every": 100, "after": 4},
    }
    async with serving(cfg(faults=faults)) as (api, url), aiohttp.ClientSession() as http:
        assert (await get(http, f"{url}/transactions"))[0] == 200  # n=1
        assert (await get(http, f"{url}/transactions"))[0] == 200  # n=2
        status, _, body = await get(http, f"{url}/transactions")  # n=3: truncated
        assert status == 200
        with pytest.raises(json.JSONDecodeError):
            json.loads(body)
        assert (await get(http, f"{url}/transactions"))[0] == 503  # n=4
        # n=5: the connection closes without a response (raw socket: aiohttp would retry the GET)
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /transactions HTTP/1.1\r\nHost: x\r\n\r\n")
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        assert api.ledger.summary()["count"] == 100  # only complete pages count as served


async def test_repeat_overlap_and_bad_records():
    faults = {
        "repeat": {"every": 10, "after": 1},
        "overlap": {"every": 10, "after": 2},
        "non_object": {"every": 10, "after": 3},
        "missing_id": {"every": 10, "after": 4},
        "overlap_records": 5,
    }
    async with serving(cfg(faults=faults)) as (api, url), aiohttp.ClientSession() as http:
        _, _, body = await get(http, f"{url}/transactions", limit=20)
        page1 = json.loads(body)
        _, _, body = await get(http, f"{url}/transactions", limit=20, cursor=page1["next_cursor"])
        repeated = json.loads(body)
        assert ids(body) == ids(json.dumps(page1).encode())
        assert repeated["next_cursor"] == page1["next_cursor"]  # the cursor does not advance
        _, _, body = await get(http, f"{url}/transactions", limit=20, cursor=page1["next_cursor"])
        assert ids(body) == [record_id(i) for i in range(16, 41)]  # 5 overlapping + 20
        _, _, body = await get(http, f"{url}/transactions", limit=20, cursor=encode_cursor(40))
        data = json.loads(body)["data"]
        assert sum(not isinstance(r, dict) for r in data) == 1 and len(data) == 21
        _, _, body = await get(http, f"{url}/transactions", limit=20, cursor=encode_cursor(60))
        data = json.loads(body)["data"]
        assert sum("id" not in r for r in data) == 1 and len(data) == 21
        assert api.ledger.bad_records == {"non_object": 1, "missing_id": 1}
        assert api.ledger.ids() == [record_id(i) for i in range(1, 81)]


async def test_slow_responses_are_slow():
    slow = cfg(faults={"slow": {"every": 1}, "slow_s": 0.3})
    async with serving(slow) as (_, url), aiohttp.ClientSession() as http:
        loop = asyncio.get_running_loop()
        start = loop.time()
        assert (await get(http, f"{url}/transactions"))[0] == 200
        assert loop.time() - start >= 0.29


async def test_ledger_endpoint():
    async with serving(cfg()) as (_, url), aiohttp.ClientSession() as http:
        await get(http, f"{url}/transactions", limit=7)
        _, _, body = await get(http, f"{url}/_ledger", ids=1)
        ledger = json.loads(body)
        assert ledger["count"] == 7 and ledger["ids"] == [record_id(i) for i in range(1, 8)]
        _, _, body = await get(http, f"{url}/_requests")
        assert json.loads(body)[0]["query"] == {"limit": "7"}
