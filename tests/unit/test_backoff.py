"""Issue 3: exponential backoff with full jitter stays within its bounds."""

from __future__ import annotations

import random

import pytest

from producers.http_client import backoff_delay


@pytest.mark.parametrize("attempt", [1, 2, 3, 5, 8, 20, 60])
def test_delay_is_between_zero_and_the_capped_exponential(attempt):
    rng = random.Random(attempt)
    ceiling = min(10.0, 0.2 * 2 ** (attempt - 1))
    delays = [backoff_delay(attempt, 0.2, 10.0, rng.random) for _ in range(500)]
    assert all(0.0 <= d <= ceiling for d in delays)
    # full jitter: spread over the whole range, not bunched at the ceiling
    assert min(delays) < 0.1 * ceiling and max(delays) > 0.9 * ceiling


def test_extremes_of_the_random_draw():
    assert backoff_delay(3, 0.5, 30.0, lambda: 0.0) == 0.0
    assert backoff_delay(3, 0.5, 30.0, lambda: 1.0) == 2.0
    assert backoff_delay(100, 0.5, 30.0, lambda: 1.0) == 30.0
