"""MongoDB side of the sink: the client, the indexes, and one batch's idempotent bulk upsert.

Every document has a deterministic ``_id`` and is written with ``ReplaceOne(upsert=True)`` in an
unordered bulk write, so a re-delivered prediction replaces itself instead of adding a copy.
Errors are sorted in two kinds (``classify``):

- transient (network, not primary, timeouts, shutdown, write-concern failures, codes pymongo
  retries, an upsert race on ``_id``): raised as :class:`MongoUnavailable` so the caller retries
  with backoff and commits nothing meanwhile;
- per-document data errors (document too large, failed validation, bad field names): the
  document is *rejected* and handed back for the DLQ; the rest of the batch is written.

An error code known to neither list counts as transient: retrying an unknown fault is safer
than dead-lettering every document because of, say, a permission change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from bson.raw_bson import RawBSONDocument
from pymongo import AsyncMongoClient, ReplaceOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    ExecutionTimeout,
    OperationFailure,
    PyMongoError,
    WriteConcernError,
)
from pymongo.write_concern import WriteConcern

from streamscore.errors import ConfigError, TransientError
from streamscore.settings import MongoSettings

log = structlog.get_logger(__name__)

#: Codes that belong to one document; anything else is retried.
DATA_ERROR_CODES = frozenset(
    {
        2,  # BadValue
        4,  # NoSuchKey
        9,  # FailedToParse
        14,  # TypeMismatch
        22,  # InvalidBSON
        52,  # DollarPrefixedFieldName
        55,  # InvalidDBRef
        56,  # EmptyFieldName
        57,  # DottedFieldName
        61,  # ShardKeyNotFound
        66,  # ImmutableField
        121,  # DocumentValidationFailure
        10334,  # BSONObjectTooLarge
        17419,  # document too large after update
        17420,  # document too large after update (replacement)
    }
)

#: name → index keys, created at start (idempotent).
INDEXES: dict[str, list[tuple[str, int]]] = {
    "scored_at": [("scored_at", -1)],
    "event_time": [("event_time", -1)],
    "model_scored_at": [("model.name", 1), ("model.version", 1), ("scored_at", -1)],
    "record_id": [("record_id", 1)],
    "label_scored_at": [("label", 1), ("scored_at", -1)],
    "anomaly_scored_at": [("anomaly", 1), ("scored_at", -1)],
}


class MongoUnavailable(TransientError):
    """MongoDB did not acknowledge (part of) a write; retry with backoff."""


@dataclass(frozen=True)
class Rejected:
    """A document MongoDB (or the size check) refused for its content."""

    code: int | None
    message: str


def write_concern(value: str) -> WriteConcern:
    """``"majority"``, a tag set name, or a number of nodes ≥ 1 (w=0 would lose acks)."""
    w: int | str = int(value) if value.isdigit() else value
    if w == 0:
        raise ConfigError("STREAMSCORE_MONGO__WRITE_CONCERN", "w=0 is unacknowledged; use 1 or majority")
    return WriteConcern(w=w)


def is_transient(exc: PyMongoError) -> bool:
    """Whether retrying ``exc`` (not a BulkWriteError) can help."""
    if isinstance(exc, ConnectionFailure | ExecutionTimeout | WriteConcernError):
        return True
    if getattr(exc, "timeout", False):
        return True
    if exc.has_error_label("RetryableWriteError") or exc.has_error_label("TransientTransactionError"):
        return True
    if isinstance(exc, OperationFailure):
        return exc.code not in DATA_ERROR_CODES
    return False


def classify(code: int | None) -> str:
    """``"data"`` for a per-document error code, else ``"transient"``."""
    return "data" if code in DATA_ERROR_CODES else "transient"


@dataclass
class BulkUpsert:
    """One batch's upserts, kept across retries: what is pending, what was rejected.

    ``await attempt()`` writes what is pending; it raises MongoUnavailable while anything is left
    to retry, so ``retry_transient(batch.attempt, ...)`` drives it to the end.
    """

    collection: AsyncCollection[Any]
    pending: dict[int, RawBSONDocument]
    rejected: dict[int, Rejected] = field(default_factory=dict)
    written: int = 0

    async def attempt(self) -> int:
        if not self.pending:
            return self.written
        order = list(self.pending)
        docs = [self.pending[i] for i in order]
        requests: list[ReplaceOne[Any]] = [ReplaceOne({"_id": d["_id"]}, d, upsert=True) for d in docs]
        try:
            await self.collection.bulk_write(requests, ordered=False)
        except BulkWriteError as exc:
            self._settle(order, dict(exc.details))
            if self.pending:
                raise MongoUnavailable(f"{len(self.pending)} document(s) to retry: {_first(exc)}") from exc
            return self.written
        except PyMongoError as exc:
            if is_transient(exc):
                raise MongoUnavailable(f"{type(exc).__name__}: {exc}") from exc
            raise
        self.written += len(order)
        self.pending.clear()
        return self.written

    def _settle(self, order: list[int], details: dict[str, Any]) -> None:
        retry: set[int] = set()
        for err in details.get("writeErrors", []):
            batch_index = order[err["index"]]
            code = err.get("code")
            if classify(code) == "data":
                self.rejected[batch_index] = Rejected(code, str(err.get("errmsg", ""))[:2000])
            else:
                retry.add(batch_index)
        if details.get("writeConcernErrors"):
            # Applied but not acknowledged as configured: redo everything not rejected (idempotent).
            retry = {i for i in order if i not in self.rejected}
        self.written += len([i for i in order if i not in retry and i not in self.rejected])
        self.pending = {i: self.pending[i] for i in order if i in retry}


def _first(exc: BulkWriteError) -> str:
    errors = exc.details.get("writeErrors") or exc.details.get("writeConcernErrors") or [{}]
    return f"code {errors[0].get('code')}: {str(errors[0].get('errmsg', ''))[:200]}"


class MongoWriter:
    """The async client and the predictions collection."""

    def __init__(self, settings: MongoSettings, max_document_bytes: int | None = None) -> None:
        self.settings = settings
        self.client: AsyncMongoClient[Any] = AsyncMongoClient(
            settings.url.get_secret_value(),
            serverSelectionTimeoutMS=settings.timeout_ms,
            connectTimeoutMS=settings.timeout_ms,
            socketTimeoutMS=settings.timeout_ms * 6,
            appname="streamscore-sink",
        )
        self.collection: AsyncCollection[Any] = self.client[settings.database].get_collection(
            settings.collection, write_concern=write_concern(settings.write_concern)
        )
        self.max_document_bytes = max_document_bytes

    async def start(self) -> None:
        """Learn the server's document size limit and create the indexes. Raises MongoUnavailable."""
        try:
            hello = await self.client.admin.command("hello")
            if self.max_document_bytes is None:
                self.max_document_bytes = int(hello.get("maxBsonObjectSize", 16 * 1024 * 1024))
            await self.ensure_indexes()
        except PyMongoError as exc:
            if is_transient(exc):
                raise MongoUnavailable(f"{type(exc).__name__}: {exc}") from exc
            raise

    async def ensure_indexes(self) -> None:
        for name, keys in INDEXES.items():
            await self.collection.create_index(keys, name=name)

    async def ping(self) -> bool:
        try:
            await self.client.admin.command("ping")
        except PyMongoError:
            return False
        return True

    def upsert(self, docs: Sequence[RawBSONDocument]) -> BulkUpsert:
        """A bulk upsert of ``docs``; indexes in ``rejected`` refer to positions in ``docs``."""
        return BulkUpsert(self.collection, dict(enumerate(docs)))

    async def close(self) -> None:
        await self.client.close()
