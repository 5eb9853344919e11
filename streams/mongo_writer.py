"""MongoDB side of the sink: the client, the indexes, and one batch's idempotent write.

Every document has a deterministic ``_id`` and is written with ``ReplaceOne(upsert=True)`` in
unordered bulk writes, so a re-delivered prediction replaces itself instead of adding a copy.
Two modes (``sink.write_mode``; ``auto`` picks by server):

- ``upsert`` (MongoDB): every document as an upsert.
- ``insert-first`` (FerretDB): an unordered ``insert_many``; only the documents refused as
  duplicates (a re-delivery) are then upserted. Same end state, but FerretDB 1.x's SQLite
  backend commits each upsert in its own transaction (~100/s) while an insert batch is one.

Upserts go out in bulks of at most ``sink.upsert_chunk`` operations (default 16 on FerretDB, 1000
on MongoDB): FerretDB 1.24 deadlocks once the ``update`` commands in flight match 100 or more
existing documents (each keeps one pooled SQLite connection per statement until the command
ends, and the server's pool holds 100), and an upsert of an existing document there costs time
proportional to the collection's size, so re-deliveries are slow on FerretDB whatever the chunk.

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

import itertools
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
from streamscore.settings import MongoSettings, SinkSettings

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

DUPLICATE_KEY = 11000
FERRETDB_CHUNK = 16
MONGODB_CHUNK = 1000

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
class BatchWrite:
    """One batch's writes, kept across retries: what is pending, what was rejected.

    Documents start in ``to_insert`` (insert-first mode) or ``to_replace`` (upsert mode). An insert
    refused as a duplicate moves the document to ``to_replace``; replacements go out as unordered
    ``ReplaceOne(upsert=True)`` bulks of at most ``chunk`` operations. ``await attempt()`` raises
    MongoUnavailable while anything is left to retry, so ``retry_transient(batch.attempt, ...)``
    drives it to the end; indexes are positions in the batch.
    """

    collection: AsyncCollection[Any]
    chunk: int
    to_insert: dict[int, RawBSONDocument] = field(default_factory=dict)
    to_replace: dict[int, RawBSONDocument] = field(default_factory=dict)
    rejected: dict[int, Rejected] = field(default_factory=dict)
    written: int = 0

    async def attempt(self) -> int:
        if self.to_insert:
            await self._run(self.to_insert, insert=True)
        while self.to_replace:
            part = dict(itertools.islice(self.to_replace.items(), self.chunk))
            await self._run(part, insert=False)
        return self.written

    async def _run(self, part: dict[int, RawBSONDocument], insert: bool) -> None:
        order = list(part)
        docs = [part[i] for i in order]
        retry: set[int] = set()
        moved: set[int] = set()
        first = ""
        try:
            if insert:
                await self.collection.insert_many(docs, ordered=False)
            else:
                ops: list[ReplaceOne[Any]] = [ReplaceOne({"_id": d["_id"]}, d, upsert=True) for d in docs]
                await self.collection.bulk_write(ops, ordered=False)
        except BulkWriteError as exc:
            retry, moved = self._settle(order, dict(exc.details), insert)
            first = _first(exc)
        except PyMongoError as exc:
            if is_transient(exc):
                raise MongoUnavailable(f"{type(exc).__name__}: {exc}") from exc
            raise
        source = self.to_insert if insert else self.to_replace
        for i in order:
            doc = source.pop(i)
            if i in retry:
                source[i] = doc
            elif i in moved:
                self.to_replace[i] = doc
            elif i not in self.rejected:
                self.written += 1
        if retry:
            raise MongoUnavailable(f"{len(retry)} document(s) to retry: {first}")

    def _settle(self, order: list[int], details: dict[str, Any], insert: bool) -> tuple[set[int], set[int]]:
        """Sort a BulkWriteError's documents: (to retry, to move from insert to replace)."""
        retry: set[int] = set()
        moved: set[int] = set()
        for err in details.get("writeErrors", []):
            index = order[err["index"]]
            code = err.get("code")
            if insert and code == DUPLICATE_KEY:
                moved.add(index)
            elif classify(code) == "data":
                self.rejected[index] = Rejected(code, str(err.get("errmsg", ""))[:2000])
            else:
                retry.add(index)
        if details.get("writeConcernErrors"):
            # Applied but not acknowledged as configured: redo all but the rejected (idempotent).
            retry = {i for i in order if i not in self.rejected} - moved
        return retry, moved


def _first(exc: BulkWriteError) -> str:
    errors = exc.details.get("writeErrors") or exc.details.get("writeConcernErrors") or [{}]
    return f"code {errors[0].get('code')}: {str(errors[0].get('errmsg', ''))[:200]}"


class MongoWriter:
    """The async client and the predictions collection."""

    def __init__(self, settings: MongoSettings, sink: SinkSettings) -> None:
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
        self.max_document_bytes = sink.max_document_bytes
        self.mode = sink.write_mode
        self.chunk: int | None = sink.upsert_chunk
        self.server = ""

    @property
    def insert_first(self) -> bool:
        return self.mode == "insert-first"

    async def start(self) -> None:
        """Learn the server (size limit, FerretDB or not), create the indexes. Raises MongoUnavailable."""
        try:
            hello = await self.client.admin.command("hello")
            if self.max_document_bytes is None:
                self.max_document_bytes = int(hello.get("maxBsonObjectSize", 16 * 1024 * 1024))
            info = await self.client.admin.command("buildInfo")
            ferret = info.get("ferretdbVersion")
            self.server = f"FerretDB {ferret}" if ferret else f"MongoDB {info.get('version')}"
            if self.mode == "auto":
                self.mode = "insert-first" if ferret else "upsert"
            if self.chunk is None:
                self.chunk = FERRETDB_CHUNK if ferret else MONGODB_CHUNK
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

    def batch(self, docs: Sequence[RawBSONDocument]) -> BatchWrite:
        """The writes of ``docs`` in this writer's mode; ``rejected`` keys are positions in ``docs``."""
        indexed = dict(enumerate(docs))
        chunk = self.chunk or FERRETDB_CHUNK
        if self.insert_first:
            return BatchWrite(self.collection, chunk, to_insert=indexed)
        return BatchWrite(self.collection, chunk, to_replace=indexed)

    async def close(self) -> None:
        await self.client.close()
