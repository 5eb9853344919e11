"""pydantic mirrors of the Avro contracts in ``schemas/avro/``.

They are strict (no extra fields, aware UTC datetimes) and their ``to_avro`` output is exactly the
field set of the schema; ``tests/unit/test_contracts.py`` keeps the two in step.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator


class _Contract(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    avro_name: ClassVar[str]

    @field_validator("*", mode="after")
    @classmethod
    def _utc(cls, value: Any) -> Any:
        if isinstance(value, datetime):
            return value.astimezone(UTC)
        return value

    def to_avro(self) -> dict[str, Any]:
        return self.model_dump()


class RawRecord(_Contract):
    avro_name: ClassVar[str] = "RawRecord"
    source: str
    record_id: str = Field(min_length=1)
    fetched_at: AwareDatetime
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
    event_time: AwareDatetime
    fetched_at: AwareDatetime
    trace_id: str
    imputed_fields: list[str] = Field(default_factory=list)


class Prediction(_Contract):
    avro_name: ClassVar[str] = "Prediction"
    record_id: str = Field(min_length=1)
    source: str
    event_time: AwareDatetime
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
    fetched_at: AwareDatetime
    scored_at: AwareDatetime
    trace_id: str


CONTRACTS: dict[str, type[_Contract]] = {m.avro_name: m for m in (RawRecord, Transaction, Prediction)}
