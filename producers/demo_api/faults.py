"""Which fault (if any) the demo API injects into the ``n``-th data request.

Rules are checked in a fixed order and the first that fires wins, so one request carries at most
one fault. Deterministic rules (``every``/``burst``/``after``) make tests exact; probabilities use
one seeded random stream.
"""

from __future__ import annotations

import random

from streamscore.settings import DemoFaults, FaultRule

KINDS = (
    "throttle",
    "error",
    "drop",
    "truncate",
    "slow",
    "repeat",
    "overlap",
    "non_object",
    "missing_id",
)


def fires(rule: FaultRule, n: int, rng: random.Random) -> bool:
    """Whether ``rule`` fires on request ``n`` (1-based)."""
    if rule.every > 0 and n > rule.after and (n - rule.after - 1) % rule.every < rule.burst:
        return True
    return rule.probability > 0 and rng.random() < rule.probability


class FaultPlan:
    def __init__(self, faults: DemoFaults) -> None:
        self.faults = faults
        self.rng = random.Random(faults.seed)
        self.rules: list[tuple[str, FaultRule]] = [(k, getattr(faults, k)) for k in KINDS]
        self.active = [(k, r) for k, r in self.rules if r.every > 0 or r.probability > 0]

    def pick(self, n: int) -> str | None:
        for kind, rule in self.active:
            if fires(rule, n, self.rng):
                return kind
        return None
