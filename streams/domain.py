"""Cleaning rules of the demo source: a served JSON record → a typed, standardised Transaction.

The policy is ``docs/demo-data.md`` ("Cleaning policy"). Every rule that rejects a record raises
:class:`streamscore.errors.ValidationError` (DLQ stage ``validate``); every value the policy fills
in is listed in ``Transaction.imputed_fields``.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import pycountry
from pydantic import ValidationError as PydanticValidationError

from streamscore.contracts import Transaction
from streamscore.errors import ValidationError

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
OTHER = "other"
CATEGORY_ALIASES = {
    "groceries": "grocery",
    "supermarket": "grocery",
    "electronic": "electronics",
    "airline": "travel",
    "hotel": "travel",
    "restaurant": "restaurants",
    "food": "restaurants",
    "gas": "fuel",
    "petrol": "fuel",
    "clothing": "fashion",
    "apparel": "fashion",
    "casino": "gambling",
    "betting": "gambling",
    "digital": "digital_goods",
    "app_store": "digital_goods",
    "drugstore": "pharmacy",
    "movies": "entertainment",
} | {c: c for c in CATEGORIES}
CHANNEL_ALIASES = {
    "online": "online",
    "ecom": "online",
    "e-commerce": "online",
    "ecommerce": "online",
    "web": "online",
    "pos": "pos",
    "in_store": "pos",
    "store": "pos",
    "atm": "atm",
}
EUR_RATES = {"EUR": 1.0, "USD": 0.92, "GBP": 1.17, "CHF": 1.04, "PLN": 0.23, "SEK": 0.087}
MAX_AMOUNT = 1_000_000.0
ALPHA2 = frozenset(c.alpha_2 for c in pycountry.countries)
ALPHA3_TO_2 = {c.alpha_3: c.alpha_2 for c in pycountry.countries}
MILLIS_FROM = 100_000_000_000  # epochs at or above this are milliseconds (1e11 s is year 5138)
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)
_TRUE = {"true", "yes", "1"}
_FALSE = {"false", "no", "0"}


MAX_TEXT = 256
"""Longest identifier or code kept (characters): a longer one is invalid, not stored."""


def _text(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise ValidationError(f"{field}: expected a string, got {type(value).__name__}")
    text = value.strip()
    if not text:
        raise ValidationError(f"{field}: empty")
    if len(text) > MAX_TEXT:
        raise ValidationError(f"{field}: {len(text)} characters, more than {MAX_TEXT}")
    return text


def parse_payload(payload: str) -> dict[str, Any]:
    """The JSON object of a raw record's payload."""
    try:
        value = json.loads(payload)
    except (ValueError, RecursionError) as exc:
        raise ValidationError(f"payload is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValidationError(f"payload is a JSON {type(value).__name__}, not an object")
    return value


def category(value: Any) -> tuple[str, bool]:
    """(normalised category, imputed?): aliases mapped, anything unknown → ``other``."""
    if isinstance(value, str):
        key = "_".join(value.strip().lower().replace("-", "_").split())
        if key in CATEGORY_ALIASES:
            return CATEGORY_ALIASES[key], False
    return OTHER, True


def channel(value: Any) -> str:
    key = _text(value, "channel").lower()
    try:
        return CHANNEL_ALIASES[key]
    except KeyError:
        raise ValidationError(f"channel: unknown value {key!r}") from None


def amount(value: Any) -> float:
    """A positive, finite amount up to MAX_AMOUNT; numeric strings accepted."""
    if isinstance(value, bool) or value is None:
        raise ValidationError(f"amount: {value!r} is not a number")
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise ValidationError(f"amount: {value[:40]!r} is not numeric") from None
    elif isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:
            raise ValidationError("amount: out of range") from None
    else:
        raise ValidationError(f"amount: {type(value).__name__} is not a number")
    if not math.isfinite(number) or number <= 0 or number > MAX_AMOUNT:
        raise ValidationError(f"amount: {number!r} outside (0, {MAX_AMOUNT:.0f}]")
    return number


def currency(value: Any) -> str:
    code = _text(value, "currency").upper()
    if code not in EUR_RATES:
        raise ValidationError(f"currency: unknown code {code[:10]!r}")
    return code


def country(value: Any, field: str = "country") -> str:
    """ISO 3166-1 alpha-2 (alpha-3 converted); unknown codes are invalid."""
    code = _text(value, field).upper()
    if len(code) == 3 and code in ALPHA3_TO_2:
        return ALPHA3_TO_2[code]
    if code in ALPHA2:
        return code
    raise ValidationError(f"{field}: unknown country code {code[:10]!r}")


def card_present(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValidationError(f"card_present: {value!r} is not a boolean")


def _epoch(number: float) -> datetime:
    seconds = number / 1000 if abs(number) >= MILLIS_FROM else number
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        raise ValidationError(f"timestamp: epoch {number!r} out of range") from None


def timestamp(value: Any) -> datetime:
    """Event time in UTC from ISO 8601 (Z, offset or naive = UTC), epoch s/ms, or RFC 2822."""
    if isinstance(value, bool):
        raise ValidationError("timestamp: a boolean is not a time")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValidationError("timestamp: not finite")
        result = _epoch(value)
    elif isinstance(value, str):
        text = value.strip()
        result = _parse_time_text(text)
    else:
        raise ValidationError(f"timestamp: {type(value).__name__} is not a time")
    if not EARLIEST <= result < LATEST:
        raise ValidationError(f"timestamp: {result.isoformat()} outside 1970..2100")
    return result


def _parse_time_text(text: str) -> datetime:
    if text.isdigit():
        return _epoch(int(text))
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        try:
            parsed = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            raise ValidationError(f"timestamp: unknown format {text[:40]!r}") from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _missing(record: dict[str, Any], field: str) -> bool:
    return record.get(field) is None


def clean(
    record: dict[str, Any], *, source: str, record_id: str, fetched_at: datetime, trace_id: str
) -> Transaction:
    """Apply the cleaning policy to one served record; ValidationError if it cannot be kept."""
    imputed: list[str] = []
    if _missing(record, "id"):
        txn_id = record_id
        imputed.append("id")
    else:
        raw_id = record["id"]
        txn_id = (
            str(raw_id) if isinstance(raw_id, int) and not isinstance(raw_id, bool) else _text(raw_id, "id")
        )
    merchant_category, cat_imputed = category(record.get("merchant_category"))
    if cat_imputed:
        imputed.append("merchant_category")
    merchant_id = None if _missing(record, "merchant_id") else _text(record["merchant_id"], "merchant_id")
    chan = channel(record.get("channel"))
    if _missing(record, "card_present"):
        present = chan != "online"
        imputed.append("card_present")
    else:
        present = card_present(record["card_present"])
    if _missing(record, "timestamp"):
        event_time = fetched_at
        imputed.append("timestamp")
    else:
        event_time = timestamp(record["timestamp"])
    value = amount(record.get("amount"))
    code = currency(record.get("currency"))
    try:
        return Transaction(
            transaction_id=txn_id,
            source=source,
            customer_id=_text(record.get("customer_id"), "customer_id"),
            customer_country=country(record.get("customer_country"), "customer_country"),
            merchant_id=merchant_id,
            merchant_category=merchant_category,
            amount=value,
            currency=code,
            amount_eur=round(value * EUR_RATES[code], 6),
            country=country(record.get("country")),
            channel=chan,
            card_present=present,
            event_time=event_time,
            fetched_at=fetched_at,
            trace_id=trace_id,
            imputed_fields=imputed,
        )
    except PydanticValidationError as exc:
        raise ValidationError(f"transaction: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from None


def clean_raw(raw: dict[str, Any]) -> Transaction:
    """Clean a decoded ``RawRecord`` (its payload parsed and validated)."""
    return clean(
        parse_payload(raw["payload"]),
        source=raw["source"],
        record_id=raw["record_id"],
        fetched_at=raw["fetched_at"],
        trace_id=raw["trace_id"],
    )
