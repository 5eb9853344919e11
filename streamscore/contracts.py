"""pydantic mirrors of the Avro contracts in ``schemas/avro/``.

They are strict (no extra fields, aware UTC datetimes) and their ``to_avro`` output is exactly the
field set of the schema; ``tests/unit/test_contracts.py`` keeps the two in step.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


# validated on the datetime fields only: a model-wide "*" validator ran for every field of every
# record (a visible share of the processor's CPU)
UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]


class _Contract(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    avro_name: ClassVar[str]

    def to_avro(self) -> dict[str, Any]:
        return self.model_dump()


class RawRecord(_Contract):
    avro_name: ClassVar[str] = "RawRecord"
    source: str
    record_id: str = Field(min_length=1)
    fetched_at: UtcDatetime
    cursor: str | None = None
    payload: str
    trace_id: str


class Transaction(_Contract):
    avro_name: ClassVar[str] = "Transaction"
    transaction_id: str = Field(min_length=1)
    source: str
    customer_id: str = Field(min_length=1)
    customer_country: str = Field(pattern=r"^[A-Z]{2}$")
    merchant_id: str | None = None
    merchant_category: str = Field(min_length=1)
    amount: float = Field(gt=0, allow_inf_nan=False)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    amount_eur: float = Field(gt=0, allow_inf_nan=False)
    country: str = Field(pattern=r"^[A-Z]{2}$")
    channel: str = Field(pattern=r"^(online|pos|atm)$")
    card_present: bool
    event_time: UtcDatetime
    fetched_at: UtcDatetime
    trace_id: str
    imputed_fields: list[str] = Field(default_factory=list)


class Prediction(_Contract):
    avro_name: ClassVar[str] = "Prediction"
    record_id: str = Field(min_length=1)
    source: str
    event_time: UtcDatetime
    model_name: str
    model_version: str
    variant: str = Field(pattern=r"^(primary|candidate|shadow)$")
    score: float = Field(ge=0, le=1, allow_inf_nan=False)
    label: str = Field(pattern=r"^(fraud|legit)$")
    confidence: float = Field(ge=0.5, le=1, allow_inf_nan=False)
    low_confidence: bool
    anomaly: bool
    reasons: list[str] = Field(default_factory=list)
    customer_id: str | None = None
    amount_eur: float | None = None
    fetched_at: UtcDatetime
    scored_at: UtcDatetime
    trace_id: str


CONTRACTS: dict[str, type[_Contract]] = {m.avro_name: m for m in (RawRecord, Transaction, Prediction)}
