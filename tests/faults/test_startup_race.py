"""Found by the fault suite: processes of a new source starting together crashed on the registry.

Every process registers the contracts at start and first sets the subject's compatibility
(``PUT /config/<subject>``). Apicurio Registry answers a concurrent first PUT with 409 ("A rule
named 'COMPATIBILITY' already exists"), which the client took for a refused schema: the poller of a
pipeline started at once (``streamscore run``, the fault harness) exited. The client now accepts a
409 when the subject already has the wanted level. This test races the real registry.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from streamscore.registry import CONTENT_TYPE, SchemaRegistry
from streamscore.settings import load_settings
from tests.conftest import unique

pytestmark = [pytest.mark.faults, pytest.mark.usefixtures("stack"), pytest.mark.timeout(120)]
RACERS = 6


def _race(call: object) -> list[object]:
    barrier = threading.Barrier(RACERS)

    def one(_: int) -> object:
        barrier.wait()
        try:
            return call()  # type: ignore[operator]
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(RACERS) as pool:
        return list(pool.map(one, range(RACERS)))


def test_concurrent_first_compatibility_puts_all_succeed(tmp_path) -> None:
    settings = load_settings(registry={"cache_dir": str(tmp_path)})
    url = settings.registry.url

    def raw_put(subject: str) -> object:
        body = {"compatibility": "BACKWARD"}
        headers = {"Content-Type": CONTENT_TYPE}
        return httpx.put(f"{url}/config/{subject}", json=body, headers=headers, timeout=10).status_code

    # the registry's behaviour the client must live with (Confluent would answer 200 to all)
    statuses: list[object] = []
    for subject in [unique("race.raw") + "-value" for _ in range(3)]:
        statuses += _race(lambda s=subject: raw_put(s))
    print(f"raw concurrent PUT /config statuses: {sorted(map(str, statuses))}")

    subjects = [unique("race.client") + "-value" for _ in range(3)]
    for subject in subjects:
        results = _race(lambda s=subject: SchemaRegistry(settings.registry).set_compatibility(s, "BACKWARD"))
        errors = [r for r in results if isinstance(r, Exception)]
        assert not errors, f"{subject}: {errors[0]!r}"
        level = httpx.get(f"{url}/config/{subject}", timeout=10).json()["compatibilityLevel"]
        assert level == "BACKWARD"
