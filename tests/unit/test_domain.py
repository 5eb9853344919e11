"""Each cleaning rule and missing-value policy of docs/demo-data.md."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from streams import domain
from streams.domain import clean, parse_payload
from streamscore.errors import ValidationError
from tests.unit.conftest_processor import FETCHED, good_payload


def run(**changes: Any) -> Any:
    return clean(good_payload(**changes), source="demo", record_id="rid", fetched_at=FETCHED, trace_id="tr")


def test_a_clean_record_passes_unchanged() -> None:
    txn = run()
    assert txn.transaction_id == "txn_000000000001"
    assert (txn.customer_country, txn.country, txn.currency, txn.channel) == ("DE", "DE", "EUR", "pos")
    assert txn.amount == txn.amount_eur == 42.5
    assert txn.event_time == datetime(2025, 3, 1, 10, 15, tzinfo=UTC)
    assert txn.imputed_fields == []
    assert (txn.source, txn.trace_id, txn.fetched_at) == ("demo", "tr", FETCHED)


@pytest.mark.parametrize(
    ("served", "expected"),
    [
        ("grocery", "grocery"),
        ("GROCERY", "grocery"),
        ("  Travel ", "travel"),
        ("Digital_Goods", "digital_goods"),
        ("digital goods", "digital_goods"),
        ("groceries", "grocery"),
        ("supermarket", "grocery"),
        ("electronic", "electronics"),
        ("airline", "travel"),
        ("hotel", "travel"),
        ("restaurant", "restaurants"),
        ("food", "restaurants"),
        ("gas", "fuel"),
        ("petrol", "fuel"),
        ("clothing", "fashion"),
        ("apparel", "fashion"),
        ("casino", "gambling"),
        ("betting", "gambling"),
        ("digital", "digital_goods"),
        ("app_store", "digital_goods"),
        ("drugstore", "pharmacy"),
        ("Movies", "entertainment"),
    ],
)
def test_categories_are_normalised_and_aliases_mapped(served: str, expected: str) -> None:
    txn = run(merchant_category=served)
    assert txn.merchant_category == expected
    assert "merchant_category" not in txn.imputed_fields


@pytest.mark.parametrize("served", ["misc", "", 7, None, ...])
def test_unknown_or_missing_category_becomes_other_and_is_imputed(served: Any) -> None:
    txn = run(merchant_category=served)
    assert txn.merchant_category == "other"
    assert "merchant_category" in txn.imputed_fields


@pytest.mark.parametrize("field", ["id", "customer_id", "merchant_id"])
def test_identifiers_longer_than_the_cap_are_invalid(field: str) -> None:
    cap = domain.MAX_TEXT
    at_cap = run(**{field: "x" * cap})
    kept = {"id": at_cap.transaction_id, "customer_id": at_cap.customer_id, "merchant_id": at_cap.merchant_id}
    assert kept[field] == "x" * cap
    with pytest.raises(ValidationError, match=f"{field}: {cap + 1} characters, more than {cap}"):
        run(**{field: "x" * (cap + 1)})


@pytest.mark.parametrize("served", [None, ...])
def test_missing_merchant_id_is_kept_as_null(served: Any) -> None:
    txn = run(merchant_id=served)
    assert txn.merchant_id is None
    assert txn.imputed_fields == []


@pytest.mark.parametrize(
    ("served", "expected"),
    [
        (42.5, 42.5),
        (10, 10.0),
        ("12.30", 12.3),
        (" 7 ", 7.0),
        (1_000_000, 1_000_000.0),
    ],
)
def test_valid_amounts(served: Any, expected: float) -> None:
    assert run(amount=served).amount == expected


@pytest.mark.parametrize(
    "served",
    [None, ..., -12.5, 0, 0.0, "abc", "", "NaN", "Infinity", float("nan"), 1_000_000.01, True, [1], {}],
)
def test_invalid_amounts_are_rejected(served: Any) -> None:
    with pytest.raises(ValidationError, match="amount"):
        run(amount=served)


@pytest.mark.parametrize(("code", "rate"), sorted(domain.EUR_RATES.items()))
def test_amount_eur_uses_the_reference_rates(code: str, rate: float) -> None:
    txn = run(amount=100.0, currency=f" {code.lower()} ")
    assert txn.currency == code
    assert txn.amount_eur == pytest.approx(100.0 * rate)


@pytest.mark.parametrize("served", ["XXX", "usdollar", "", None, 5])
def test_unknown_currency_is_invalid(served: Any) -> None:
    with pytest.raises(ValidationError, match="currency"):
        run(currency=served)


@pytest.mark.parametrize(("served", "expected"), [("fr", "FR"), (" DEU ", "DE"), ("gbr", "GB"), ("AT", "AT")])
def test_country_codes_are_upper_alpha2(served: str, expected: str) -> None:
    assert run(country=served).country == expected
    assert run(customer_country=served).customer_country == expected


@pytest.mark.parametrize("served", ["XX", "ZZZ", "Germany", "", None, 49])
def test_unknown_country_codes_are_invalid(served: Any) -> None:
    with pytest.raises(ValidationError, match="country"):
        run(country=served)
    with pytest.raises(ValidationError, match="customer_country"):
        run(customer_country=served)


@pytest.mark.parametrize(
    ("served", "expected"),
    [
        ("online", "online"),
        ("ONLINE", "online"),
        ("ecom", "online"),
        ("e-commerce", "online"),
        ("web", "online"),
        ("pos", "pos"),
        ("in_store", "pos"),
        ("store", "pos"),
        ("ATM", "atm"),
    ],
)
def test_channels_and_aliases(served: str, expected: str) -> None:
    assert run(channel=served).channel == expected


@pytest.mark.parametrize("served", ["mail", "", None, 1])
def test_unknown_channel_is_invalid(served: Any) -> None:
    with pytest.raises(ValidationError, match="channel"):
        run(channel=served)


@pytest.mark.parametrize(("chan", "expected"), [("pos", True), ("atm", True), ("online", False)])
def test_missing_card_present_is_derived_from_channel(chan: str, expected: bool) -> None:
    txn = run(channel=chan, card_present=...)
    assert txn.card_present is expected
    assert txn.imputed_fields == ["card_present"]


def test_card_present_given_is_kept_and_bad_values_rejected() -> None:
    assert run(channel="online", card_present=True).card_present is True
    assert run(card_present="false").card_present is False
    with pytest.raises(ValidationError, match="card_present"):
        run(card_present="maybe")


WHEN = datetime(2025, 3, 1, 10, 15, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "served",
    [
        "2025-03-01T10:15:00Z",
        "2025-03-01T10:15:00.000Z",
        "2025-03-01T12:15:00+02:00",
        "2025-03-01T05:15:00-05:00",
        int(WHEN.timestamp()),
        int(WHEN.timestamp() * 1000),
        str(int(WHEN.timestamp())),
        "2025-03-01 10:15:00",
        "2025-03-01T10:15:00",
        "Sat, 01 Mar 2025 10:15:00 +0000",
        "Sat, 01 Mar 2025 11:15:00 +0100",
    ],
)
def test_timestamps_in_every_served_format_become_utc(served: Any) -> None:
    event_time = run(timestamp=served).event_time
    assert event_time == WHEN
    assert event_time.utcoffset() is not None and event_time.utcoffset().total_seconds() == 0


@pytest.mark.parametrize("served", [None, ...])
def test_missing_timestamp_is_fetched_at_and_imputed(served: Any) -> None:
    txn = run(timestamp=served)
    assert txn.event_time == FETCHED
    assert txn.imputed_fields == ["timestamp"]


@pytest.mark.parametrize(
    "served", ["yesterday", "2025-13-01T00:00:00Z", "", True, [1], -(10**20), 10**30, float("inf")]
)
def test_unparseable_timestamps_are_invalid(served: Any) -> None:
    with pytest.raises(ValidationError, match="timestamp"):
        run(timestamp=served)


def test_missing_id_falls_back_to_the_raw_record_id() -> None:
    txn = run(id=...)
    assert txn.transaction_id == "rid"
    assert txn.imputed_fields == ["id"]


@pytest.mark.parametrize(
    "field", ["customer_id", "customer_country", "country", "channel", "currency", "amount"]
)
def test_required_fields_missing_are_invalid(field: str) -> None:
    with pytest.raises(ValidationError):
        run(**{field: ...})


@pytest.mark.parametrize("text", ["", "not json", "[1, 2]", '"a string"', "42", "null", "{"])
def test_payload_must_be_a_json_object(text: str) -> None:
    with pytest.raises(ValidationError, match="payload"):
        parse_payload(text)


def test_several_imputations_are_all_listed() -> None:
    txn = run(merchant_category="misc", card_present=None, timestamp=None)
    assert txn.imputed_fields == ["merchant_category", "card_present", "timestamp"]
