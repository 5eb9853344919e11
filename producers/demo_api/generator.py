"""The seeded generator of demo card transactions (the contract is ``docs/demo-data.md``).

``generate(n, seed)`` yields ``(record, is_fraud)``: the same records, in the same order, for the
same arguments, on every machine (only :class:`random.Random` is used). The demo API serves the
records; ``streamscore train`` learns ``is_fraud`` from them, which the API never serves.

Fraud (~2 %) is drawn first, from the hour of the event (more likely 00-05 UTC); the other fields
are then drawn from the fraud or the legit profile. Event times advance monotonically: by default
at a simulated pace with daytime peaks (mean ``interval_s`` = 30 s, so 100k records span about a
month), or at a fixed ``interval_s`` when the caller passes one (the live demo API does, to follow
the wall clock). ``dirty`` scales every documented dirty-variant share (0 = perfectly clean).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime
from functools import cache
from itertools import accumulate
from typing import Any

CATEGORIES = (
    "grocery",
    "electronics",
    "travel",
    "restaurants",
    "fuel",
    "fashion",
    "gambling",
    "digital_goods",
    "pharmacy",
    "entertainment",
)
CATEGORY_ALIASES: dict[str, tuple[str, ...]] = {
    "grocery": ("groceries", "supermarket"),
    "electronics": ("electronic",),
    "travel": ("airline", "hotel"),
    "restaurants": ("restaurant", "food"),
    "fuel": ("gas", "petrol"),
    "fashion": ("clothing", "apparel"),
    "gambling": ("casino", "betting"),
    "digital_goods": ("digital", "app_store"),
    "pharmacy": ("drugstore",),
    "entertainment": ("movies",),
}
COUNTRIES = ("DE", "FR", "GB", "US", "ES", "IT", "NL", "PL", "SE", "CH", "NG", "RU", "BR", "CN", "IN")
ALPHA3 = {
    "DE": "DEU", "FR": "FRA", "GB": "GBR", "US": "USA", "ES": "ESP", "IT": "ITA", "NL": "NLD",
    "PL": "POL", "SE": "SWE", "CH": "CHE", "NG": "NGA", "RU": "RUS", "BR": "BRA", "CN": "CHN",
    "IN": "IND",
}  # fmt: skip
CURRENCY_OF = {"GB": "GBP", "US": "USD", "CH": "CHF", "PL": "PLN", "SE": "SEK"}
EURO = ("DE", "FR", "ES", "IT", "NL")
HOME_COUNTRIES = ("DE", "FR", "GB", "US", "ES", "IT", "NL", "PL", "SE", "CH")
HOME_WEIGHTS = (20, 14, 14, 16, 9, 9, 6, 5, 4, 3)
CHANNEL_ALIASES = {"online": ("ecom", "e-commerce", "web"), "pos": ("in_store", "store")}

LEGIT_CATEGORY_WEIGHTS = (25, 5, 5, 15, 12, 10, 2, 8, 8, 10)
FRAUD_CATEGORY_WEIGHTS = (3, 26, 14, 3, 2, 7, 16, 24, 2, 3)
LEGIT_CHANNEL = (("online", 35), ("pos", 55), ("atm", 10))
FRAUD_CHANNEL = (("online", 75), ("pos", 13), ("atm", 12))

N_CUSTOMERS = 5000
N_MERCHANTS_PER_CATEGORY = 400
DEFAULT_START = datetime(2025, 1, 6, tzinfo=UTC)
DEFAULT_INTERVAL_S = 30.0
FRAUD_P_NIGHT = 0.08  # 00-05 UTC
FRAUD_P_DAY = 0.015

# Dirty-variant shares at dirty=1.0 (docs/demo-data.md).
P_CUSTOMER_COUNTRY_LOWER = 0.02
P_MERCHANT_NULL = 0.01
P_CATEGORY_VARIANT = 0.05
P_CATEGORY_UNKNOWN = 0.005
P_AMOUNT_STRING = 0.02
P_AMOUNT_INVALID = 0.003
P_CURRENCY_VARIANT = 0.03
P_CURRENCY_UNKNOWN = 0.002
P_COUNTRY_LOWER = 0.02
P_COUNTRY_ALPHA3 = 0.02
P_CHANNEL_VARIANT = 0.05
P_CARD_PRESENT_MISSING = 0.02
P_TIMESTAMP_MISSING = 0.01
TIME_FORMATS = (
    ("iso_z", 30),
    ("iso_offset", 15),
    ("epoch_s", 15),
    ("epoch_ms", 15),
    ("naive", 15),
    ("rfc2822", 10),
)
PLUS_TWO = timezone(timedelta(hours=2))
_CATEGORY_INDEX = range(len(CATEGORIES))
_CUM = {w: list(accumulate(w)) for w in (LEGIT_CATEGORY_WEIGHTS, FRAUD_CATEGORY_WEIGHTS)}


def record_id(seq: int) -> str:
    """The id of the ``seq``-th record (1-based)."""
    return f"txn_{seq:012d}"


def _pace(hour: int) -> float:
    """Relative gap between events at this hour: short by day (peaks), long at night."""
    if hour < 6:
        return 2.5
    if 9 <= hour < 21:
        return 0.6
    return 1.0


@cache
def _table(pairs: tuple[tuple[str, int], ...]) -> tuple[list[str], list[int]]:
    """Population and cumulative weights (the same draws as ``weights=``, computed once)."""
    return [p[0] for p in pairs], list(accumulate(p[1] for p in pairs))


def _weighted(rng: random.Random, pairs: tuple[tuple[str, int], ...]) -> str:
    population, cum = _table(pairs)
    return rng.choices(population, cum_weights=cum)[0]


def format_time(at: datetime, fmt: str) -> str | int:
    """``at`` (UTC) in one of the served timestamp formats."""
    if fmt == "iso_z":
        return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"
    if fmt == "iso_offset":
        return at.astimezone(PLUS_TWO).isoformat(timespec="seconds")
    if fmt == "epoch_s":
        return int(at.timestamp())
    if fmt == "epoch_ms":
        return int(at.timestamp() * 1000)
    if fmt == "naive":
        return at.strftime("%Y-%m-%d %H:%M:%S")
    return format_datetime(at.replace(microsecond=0))


class _Profile:
    """Customers and merchants, fixed for a seed."""

    def __init__(self, seed: int) -> None:
        rng = random.Random(f"profile-{seed}")
        self.home = [rng.choices(HOME_COUNTRIES, weights=HOME_WEIGHTS)[0] for _ in range(N_CUSTOMERS)]
        self.merchant_country = [
            rng.choice(HOME_COUNTRIES) if rng.random() < 0.85 else rng.choice(COUNTRIES[10:])
            for _ in range(N_MERCHANTS_PER_CATEGORY * len(CATEGORIES))
        ]


class _Maker:
    """Draws one record after another from one random stream."""

    def __init__(self, seed: int, dirty: float) -> None:
        self.rng = random.Random(seed)
        self.dirty = dirty
        self.profile = _Profile(seed)

    def chance(self, share: float) -> bool:
        return self.dirty > 0 and self.rng.random() < share * self.dirty

    def record(self, seq: int, at: datetime, fraud: bool) -> dict[str, Any]:
        rng, profile = self.rng, self.profile
        customer = rng.randrange(N_CUSTOMERS)
        home = profile.home[customer]
        weights = FRAUD_CATEGORY_WEIGHTS if fraud else LEGIT_CATEGORY_WEIGHTS
        cat_index = rng.choices(_CATEGORY_INDEX, cum_weights=_CUM[weights])[0]
        category = CATEGORIES[cat_index]
        channel = _weighted(rng, FRAUD_CHANNEL if fraud else LEGIT_CHANNEL)
        merchant = rng.randrange(N_MERCHANTS_PER_CATEGORY) * len(CATEGORIES) + cat_index
        foreign = rng.random() < (0.7 if fraud else 0.12)
        if foreign or (channel == "online" and rng.random() < 0.2):
            country = profile.merchant_country[merchant]
            if country == home:
                country = rng.choice([c for c in COUNTRIES if c != home])
        else:
            country = home
        amount = self.amount(fraud, channel)
        card_present = channel != "online" and not (fraud and rng.random() < 0.4)
        currency = CURRENCY_OF.get(country, "EUR" if country in EURO else "USD")
        time_fmt = _weighted(rng, TIME_FORMATS)
        record: dict[str, Any] = {
            "id": record_id(seq),
            "customer_id": f"cus_{customer:05d}",
            "customer_country": home.lower() if self.chance(P_CUSTOMER_COUNTRY_LOWER) else home,
            "merchant_id": None if self.chance(P_MERCHANT_NULL) else f"mer_{merchant:05d}",
            "merchant_category": self.category(category),
            "amount": self.dirty_amount(amount),
            "currency": self.currency(currency),
            "country": self.country(country),
            "channel": self.channel(channel),
            "card_present": card_present,
            "timestamp": format_time(at, time_fmt),
        }
        if self.chance(P_CARD_PRESENT_MISSING):
            del record["card_present"]
        if self.chance(P_TIMESTAMP_MISSING):
            del record["timestamp"]
        return record

    def amount(self, fraud: bool, channel: str) -> float:
        mu, sigma = (math.log(280.0), 1.0) if fraud else (math.log(38.0), 0.9)
        value = min(self.rng.lognormvariate(mu, sigma), 50_000.0)
        if channel == "atm":
            return float(max(20, round(value / 10) * 10))
        return max(0.5, round(value, 2))

    def dirty_amount(self, amount: float) -> Any:
        if self.chance(P_AMOUNT_INVALID):
            return None if self.rng.random() < 0.5 else -amount
        if self.chance(P_AMOUNT_STRING):
            return f"{amount:.2f}"
        return amount

    def category(self, category: str) -> str:
        rng = self.rng
        if self.chance(P_CATEGORY_UNKNOWN):
            return "misc"
        if not self.chance(P_CATEGORY_VARIANT):
            return category
        kind = rng.randrange(4)
        if kind == 0:
            return rng.choice(CATEGORY_ALIASES[category])
        if kind == 1:
            return category.upper()
        if kind == 2:
            return category.title()
        return f"  {category} "

    def currency(self, currency: str) -> str:
        if self.chance(P_CURRENCY_UNKNOWN):
            return "XXX"
        if self.chance(P_CURRENCY_VARIANT):
            return currency.lower() if self.rng.random() < 0.5 else f" {currency} "
        return currency

    def country(self, country: str) -> str:
        if self.chance(P_COUNTRY_ALPHA3):
            return ALPHA3[country]
        if self.chance(P_COUNTRY_LOWER):
            return country.lower()
        return country

    def channel(self, channel: str) -> str:
        if not self.chance(P_CHANNEL_VARIANT):
            return channel
        aliases = CHANNEL_ALIASES.get(channel)
        if aliases and self.rng.random() < 0.6:
            return self.rng.choice(aliases)
        return channel.upper()


def generate(
    n: int | None,
    seed: int,
    *,
    dirty: float = 1.0,
    start: datetime | None = None,
    interval_s: float | None = None,
) -> Iterator[tuple[dict[str, Any], bool]]:
    """Yield ``n`` (or, with ``n=None``, endless) ``(record, is_fraud)`` pairs for ``seed``.

    Record ``k`` (1-based) has id ``txn_<k:012d>``. ``start`` is the event time of the first record
    (default 2025-01-06 UTC); ``interval_s`` fixes the gap between events (default: a simulated
    pace averaging 30 s with daytime peaks).
    """
    maker = _Maker(seed, dirty)
    rng = maker.rng
    at = (start or DEFAULT_START).astimezone(UTC)
    seq = 0
    while n is None or seq < n:
        seq += 1
        night = at.hour < 6
        fraud = rng.random() < (FRAUD_P_NIGHT if night else FRAUD_P_DAY)
        yield maker.record(seq, at, fraud), fraud
        if interval_s is None:
            gap = rng.expovariate(1.0) * DEFAULT_INTERVAL_S * _pace(at.hour) / 0.9
        else:
            gap = interval_s
        at += timedelta(seconds=gap)
