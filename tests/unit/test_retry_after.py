"""Issue 3: Retry-After in both forms (delta-seconds and HTTP-date)."""

from __future__ import annotations

import asyncio
import time
from email.utils import formatdate

import pytest

from producers.http_client import RetryAfterGate, parse_retry_after

NOW = 1_764_000_000.0


def test_delta_seconds():
    assert parse_retry_after("120", NOW) == 120.0
    assert parse_retry_after(" 0 ", NOW) == 0.0


def test_http_date_is_relative_to_now():
    assert parse_retry_after(formatdate(NOW + 30, usegmt=True), NOW) == pytest.approx(30.0)
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", NOW) == 0.0  # in the past: go now


@pytest.mark.parametrize("value", [None, "", "soon", "-5", "1.5e3", "Wed, 99 Foo 2015 07:28:00"])
def test_invalid_values_are_ignored(value):
    assert parse_retry_after(value, NOW) is None


async def test_gate_holds_requests_until_the_deadline():
    gate = RetryAfterGate()
    gate.push(0.3)
    gate.push(0.1)  # a shorter ask never shortens the wait
    start = time.monotonic()
    waited = await gate.wait()
    assert time.monotonic() - start >= 0.3 - 0.01
    assert waited >= 0.29
    assert await asyncio.wait_for(gate.wait(), 0.05) == 0.0
